"""Shared helpers for the integration tests (not a test itself: CTest runs test_*.py).

Everything is bounded: sockets have timeouts, subprocesses have timeouts, daemons are stopped
by PID (SIGTERM, then SIGKILL after a bounded wait), and a watchdog ends the whole run (after
cleaning up) if it takes longer than its budget.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HOSTNAME = "mx.test"
QUEUED_RE = re.compile(r"250 2\.0\.0 Ok: queued as ([0-9A-Za-z]+)")

_cleanups = []  # callables, run last-in first-out by cleanup_all()
_cleanup_lock = threading.Lock()


def on_cleanup(fn):
    with _cleanup_lock:
        _cleanups.append(fn)
    return fn


def cleanup_all():
    while True:
        with _cleanup_lock:
            if not _cleanups:
                return
            fn = _cleanups.pop()
        try:
            fn()
        except Exception:  # keep cleaning up
            traceback.print_exc()


def start_watchdog(seconds):
    """Cleans up and exits with status 3 if the run is still going after `seconds`."""
    def fire():
        print("WATCHDOG: the run took more than %d s; cleaning up and giving up" % seconds,
              flush=True)
        cleanup_all()
        os._exit(3)
    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    return t


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tempdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def strip_received(raw):
    """The message without its first header field, which must be one Received: (with folded
    continuation lines). None if the message does not start with Received:."""
    if not raw.startswith(b"Received: "):
        return None
    pos = raw.find(b"\r\n") + 2
    while raw[pos:pos + 1] in (b" ", b"\t"):
        pos = raw.find(b"\r\n", pos) + 2
    return raw[pos:]


def dot_unstuff(content):
    """content: CRLF lines as sent inside DATA (without the final "."), returns the message."""
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in content.split(b"\r\n"))


def write_config(path, server, users=None, extra=""):
    """server: dict of [server] keys. users: {name: password_hash}."""
    lines = ["[server]"] + ["%s = %s" % (k, v) for k, v in server.items()]
    for name, h in (users or {}).items():
        lines += ["", "[user %s]" % name, "password_hash = %s" % h]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + extra)


def run(cmd, timeout=30, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(cmd, timeout=timeout, **kw)


def hash_password(binary, password):
    r = run([binary, "hash-password"], input=(password + "\n").encode(), stdin=None)
    if r.returncode != 0:
        raise RuntimeError("hash-password failed: %r" % r.stderr)
    return r.stdout.decode().strip()


class Daemon:
    """One `mailbridge serve` on free loopback ports with its own config and data_dir."""

    def __init__(self, binary, tmp, server=None, users=None, data_dir=None, name="daemon",
                 extra=""):
        """extra: text appended to the config file (e.g. conn_section()s)."""
        self.binary = binary
        self.tmp = tmp
        self.name = name
        self.smtp_port = free_port()
        self.data_dir = data_dir or os.path.join(tmp, name + "-var")
        self.conf = os.path.join(tmp, name + ".conf")
        cfg = {
            "data_dir": self.data_dir,
            "smtp_listen": "127.0.0.1:%d" % self.smtp_port,
            "http_listen": "127.0.0.1:%d" % free_port(),
            "smtp_hostname": HOSTNAME,
        }
        cfg.update(server or {})
        port = str(cfg["http_listen"]).rsplit(":", 1)[-1]
        self.http_port = int(port) if port.isdigit() else None
        # the browser's way in, and so the OAuth redirect URI: {public_url}/oauth/callback
        cfg.setdefault("public_url", "http://%s" % cfg["http_listen"])
        write_config(self.conf, cfg, users, extra)
        self.proc = None
        self.log_path = os.path.join(tmp, name + ".log")
        on_cleanup(self.stop)

    def start(self, wait=10.0):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "serve", "-c", self.conf],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + wait
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %d at start-up:\n%s"
                                   % (self.name, self.proc.returncode, self.log_tail()))
            try:
                with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=2) as s:
                    s.settimeout(2)
                    if s.recv(512).startswith(b"220 "):
                        s.sendall(b"QUIT\r\n")
                        s.recv(512)
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("%s did not listen within %.0f s:\n%s"
                                   % (self.name, wait, self.log_tail()))
            time.sleep(0.05)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL after `timeout`. Returns the exit status (None if not run)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        return self.proc.returncode

    def check_clean_stop(self):
        """Stops the daemon; fails unless it exits with status 0."""
        rc = self.stop()
        check(rc == 0, "%s did not stop cleanly (exit status %r):\n%s", self.name, rc,
              self.log_tail())

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def log_tail(self, n=3000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-n:]
        except OSError:
            return ""

    # ---- the CLI on this daemon's config; options go before the verb ----

    def cli(self, command, opts=(), args=(), timeout=30, **kw):
        return run([self.binary, command, "-c", self.conf] + list(opts) + list(args),
                   timeout=timeout, **kw)

    def admin(self, *args, stdin_text=None):
        """`mailbridge admin -c CONF ARGS...`: (rc, stdout, stderr) as text."""
        kw = {"input": stdin_text.encode(), "stdin": None} if stdin_text is not None else {}
        r = run([self.binary, "admin", "-c", self.conf] + list(args), timeout=30, **kw)
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    def set_admin_password(self, password):
        """`admin password`; returns what it printed (stdout + stderr)."""
        rc, out, err = self.admin("password", stdin_text=password + "\n")
        check(rc == 0, "admin password failed: rc=%d %s", rc, err)
        return out + err

    def create_token(self, name):
        """`admin token create NAME`: the new API token."""
        rc, out, err = self.admin("token", "create", name)
        check(rc == 0, "token create: rc=%d %s", rc, err)
        return out.strip()

    def queue_list(self):
        """Every stored message, whatever its state (`log` lists all states; `queue list`
        only the pending ones, which is the same while nothing delivers)."""
        r = self.cli("log", ["--json", "--limit", "1000000"])
        if r.returncode != 0:
            raise AssertionError("log failed: rc=%d %s" % (r.returncode, r.stderr))
        return json.loads(r.stdout)

    def queue_pending(self):
        r = self.cli("queue", ["--json"], ["list"])
        if r.returncode != 0:
            raise AssertionError("queue list failed: rc=%d %s" % (r.returncode, r.stderr))
        return json.loads(r.stdout)

    def queue_raw(self, qid):
        """The stored message, or None when `queue show` fails."""
        r = self.cli("queue", ["--raw"], ["show", qid])
        return r.stdout if r.returncode == 0 else None

    def queue_json(self, qid):
        r = self.cli("queue", ["--json"], ["show", qid])
        if r.returncode != 0:
            raise AssertionError("queue show %s failed: rc=%d %s" % (qid, r.returncode, r.stderr))
        return json.loads(r.stdout)


class SMTPConn:
    """A minimal raw SMTP client (for exact control over bytes and replies)."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed; partial: %r" % self.buf)
            self.buf += chunk
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l.decode("utf-8", "replace")

    def reply(self):
        """One reply (all lines of a multi-line one), as a list of lines."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def cmd(self, text):
        self.sock.sendall(text.encode("utf-8") + b"\r\n")
        return self.reply()

    def send(self, data):
        self.sock.sendall(data)

    def read_until_close(self):
        out = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        except ConnectionResetError:
            pass
        return self.buf + out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Runner:
    """Runs test functions in order; prints one line each and a closing summary."""

    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def run(self, name, fn, *args):
        t0 = time.monotonic()
        try:
            try:
                fn(*args)
            finally:
                cleanup_all()  # stop this test's daemons, unmount, remove its temp dirs
        except SkipTest as e:
            self.skipped += 1
            print("skip %s: %s" % (name, e), flush=True)
            return
        except Exception:
            self.failed += 1
            print("FAIL %s (%.1fs)\n%s" % (name, time.monotonic() - t0,
                                           traceback.format_exc()), flush=True)
            return
        self.passed += 1
        print("ok   %s (%.1fs)" % (name, time.monotonic() - t0), flush=True)

    def finish(self):
        print("%d passed, %d failed, %d skipped" % (self.passed, self.failed, self.skipped),
              flush=True)
        return 1 if self.failed else 0


class SkipTest(Exception):
    pass


def check(cond, msg, *args):
    if not cond:
        raise AssertionError(msg % args if args else msg)


def isolate_env():
    """Loopback only: no proxy for the tests' clients nor for the daemons they start (libcurl
    reads *_proxy), and no configuration or credentials from the caller's environment."""
    for v in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
              "ALL_PROXY", "MAILBRIDGE_CONFIG", "CREDENTIALS_DIRECTORY"):
        os.environ.pop(v, None)


def named(*fns):
    """[(name, fn)] for main() / run_with_peers(), in the order given; a test's name is its
    function's name without the "test_" prefix."""
    for fn in fns:
        assert fn.__name__.startswith("test_"), fn.__name__
    return [(fn.__name__[len("test_"):], fn) for fn in fns]


def main(tests, budget):
    """tests: list of (name, fn(binary)). budget: seconds for the whole run."""
    isolate_env()
    if len(sys.argv) < 2:
        print("usage: %s BINARY [TEST-NAME...]" % sys.argv[0])
        return 64
    binary = os.path.abspath(sys.argv[1])
    only = sys.argv[2:]
    start_watchdog(budget)
    runner = Runner()
    try:
        for name, fn in tests:
            if only and name not in only:
                continue
            runner.run(name, fn, binary)
    finally:
        cleanup_all()
    return runner.finish()


# ---- shared by the tests that talk to the peers under tests/peers (Node stand-ins) ----
#
# make_certs / Browser / NodePeer / IdP / Graph / Smtp: one version for every test file.

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS_DIR = os.path.join(ROOT, "tests", "peers")


def wait_until(fn, timeout, what, step=0.1):
    """Calls fn until it returns something true (returned), or fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(step)


def make_certs(d):
    """A test CA and a server certificate for 127.0.0.1/localhost signed by it, made with the
    openssl CLI in directory d. Returns (ca.pem, server.pem, server.key)."""
    ca_key, ca_pem = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    key, csr, pem = (os.path.join(d, n) for n in ("server.key", "server.csr", "server.pem"))
    ext = os.path.join(d, "ext.cnf")
    steps = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out",
         ca_pem, "-days", "2", "-subj", "/CN=mailbridge test CA", "-addext",
         "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
         "-CAcreateserial", "-out", pem, "-days", "2", "-extfile", ext],
    ]
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n")
    for cmd in steps:
        r = run(cmd, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("%s failed: %s" % (" ".join(cmd[:3]), r.stderr.decode()))
    return ca_pem, pem, key


class Browser:
    """urllib with a cookie jar and our CA, no proxy; redirects are not followed."""

    def __init__(self, ca_file=None):
        import http.cookiejar
        import ssl
        import urllib.request

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **kw):
                return None

        handlers = [urllib.request.ProxyHandler({}),
                    urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect()]
        if ca_file:
            self.ctx = ssl.create_default_context(cafile=ca_file)
            handlers.append(urllib.request.HTTPSHandler(context=self.ctx))
        self.opener = urllib.request.build_opener(*handlers)

    def request(self, method, url, form=None, body=None, timeout=15, raw=False):
        """(status, Location, text) — or the body as bytes when raw."""
        import urllib.error
        import urllib.parse
        import urllib.request
        headers = {}
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self.opener.open(req, timeout=timeout) as r:
                out = r.read()
                return r.status, r.headers.get("Location"), out if raw else out.decode(
                    "utf-8", "replace")
        except urllib.error.HTTPError as e:
            out = e.read()
            return e.code, e.headers.get("Location"), out if raw else out.decode(
                "utf-8", "replace")


class NodePeer:
    """A stand-in under tests/peers/NAME started with node; it prints one JSON ready line on
    stdout. Not registered with on_cleanup: a peer lives for the whole run; stop() by PID."""

    def __init__(self, name, args, tmp, ready_timeout=30):
        self.name = name
        self.dir = os.path.join(PEERS_DIR, name)
        self.log_path = os.path.join(tmp, name + ".log")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["node", os.path.join(self.dir, "server.js")] + list(args),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=log, cwd=self.dir)
        log.close()
        self.ready = None
        t = threading.Thread(target=self._read_ready, daemon=True)
        t.start()
        t.join(ready_timeout)
        if self.ready is None:
            self.stop()
            raise RuntimeError("the %s stand-in did not print its ready line within %d s:\n%s"
                               % (name, ready_timeout, self.log_tail()))

    def _read_ready(self):
        line = self.proc.stdout.readline()
        try:
            self.ready = json.loads(line)
        except ValueError:
            pass

    def log_tail(self, n=3000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-n:]
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class ControlAPI:
    """JSON calls to a stand-in's /_test/ control API."""

    def __init__(self, base, ca_file=None):
        self.base = base
        self.api = Browser(ca_file)

    def control(self, method, path, body=None):
        st, _, text = self.api.request(method, self.base + "/_test/" + path, body=body)
        check(st in (200, 201, 204), "control %s %s: HTTP %d %s", method, path, st, text[:300])
        return json.loads(text) if text.strip() else {}

    def raw(self, path):
        st, _, data = self.api.request("GET", self.base + "/_test/" + path, raw=True)
        check(st == 200, "control GET %s: HTTP %d %r", path, st, data[:300])
        return data


class IdP(NodePeer, ControlAPI):
    """tests/peers/idp over HTTPS with a certificate signed by `ca` (see make_certs)."""

    def __init__(self, tmp, ca, cert, key):
        NodePeer.__init__(self, "idp", ["--port", "0", "--cert", cert, "--key", key], tmp)
        ControlAPI.__init__(self, self.ready["base_url"], ca)
        self.ca = ca
        self.jwks_uri = self.ready["jwks_uri"]

    def reset(self, **settings):
        self.control("POST", "reset")
        if settings:
            self.control("POST", "settings", settings)

    def counters(self):
        return self.control("GET", "counters")

    def fail_next(self, **spec):
        self.control("POST", "failures", spec)


class Graph(NodePeer, ControlAPI):
    """tests/peers/graph over HTTPS (certificate from make_certs), trusting the IdP's JWKS."""

    def __init__(self, tmp, ca, cert, key, jwks_uri, extra_args=()):
        NodePeer.__init__(self, "graph", ["--port", "0", "--cert", cert, "--key", key,
                                          "--jwks-url", jwks_uri, "--ca", ca] + list(extra_args),
                          tmp)
        ControlAPI.__init__(self, self.ready["base_url"], ca)

    def reset(self):
        self.control("POST", "reset")

    def messages(self, **q):
        qs = "&".join("%s=%s" % kv for kv in q.items())
        return self.control("GET", "messages" + ("?" + qs if qs else ""))["messages"]

    def mime(self, mid):
        return self.raw("messages/%s/mime" % mid)

    def requests(self, **q):
        qs = "&".join("%s=%s" % kv for kv in q.items())
        r = self.control("GET", "requests" + ("?" + qs if qs else ""))
        return r["requests"] if isinstance(r, dict) else r

    def fault(self, **spec):
        self.control("POST", "faults", spec)

    def latency(self, ms):
        self.control("POST", "latency", {"latency_ms": ms})

    def inflight(self):
        return self.control("GET", "inflight")


class Smtp(NodePeer, ControlAPI):
    """tests/peers/smtp (certificate from make_certs), trusting the IdP's JWKS; its control
    API is plain HTTP."""

    def __init__(self, tmp, ca, cert, key, jwks_uri):
        NodePeer.__init__(self, "smtp", ["--port", "0", "--control-port", "0", "--cert", cert,
                                         "--key", key, "--jwks-url", jwks_uri, "--ca", ca], tmp)
        ControlAPI.__init__(self, self.ready["control_url"])
        self.port = self.ready["smtp_port"]
        self.url = "smtp://127.0.0.1:%d" % self.port

    def reset(self):
        self.control("POST", "reset")

    def messages(self):
        r = self.control("GET", "messages")
        return r["messages"] if isinstance(r, dict) else r

    def stats(self):
        return self.control("GET", "stats")

    def fault(self, **spec):
        self.control("POST", "faults", spec)


# the npm module that shows a peer's `npm ci` has run (run_with_peers' `peers`)
PEER_MODULES = {"idp": "oidc-provider", "graph": "mailparser", "smtp": "smtp-server"}


def start_idp_graph(d, session, smtp=False):
    """A test CA and server certificate in d (make_certs), then the IdP, the Graph stand-in
    and, when smtp, the SMTP stand-in on it, each one's stop appended to session (a
    run_with_peers() start function's arguments). Returns (ca, idp, graph, smtp or None)."""
    ca, cert, key = make_certs(d)
    idp = IdP(d, ca, cert, key)
    session.append(idp.stop)
    graph = Graph(d, ca, cert, key, idp.jwks_uri)
    session.append(graph.stop)
    peer = None
    if smtp:
        peer = Smtp(d, ca, cert, key, idp.jwks_uri)
        session.append(peer.stop)
    return ca, idp, graph, peer


# ---- the admin HTTP listener (/healthz, /readyz, /metrics) ----

def http_get(url, timeout=10):
    """(status, body bytes) of a plain-HTTP GET, without proxies."""
    import urllib.error
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


_PROM_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_PROM_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse_prom(text):
    """Prometheus text format -> {(name, frozenset(labels.items())): float}. A lenient reader
    for looking values up (the format itself is checked with promtool)."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _PROM_LINE.match(line)
        if not m:
            raise AssertionError("not a Prometheus sample line: %r" % line)
        labels = {}
        if m.group(3):
            labels = dict(_PROM_LABEL.findall(m.group(3)))
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(4))
    return out


def prom_value(samples, name, **labels):
    """The value of one sample (None when absent)."""
    return samples.get((name, frozenset(labels.items())))


# ---- a run of tests that share npm stand-ins ----

def _raise(e):
    raise e


def run_with_peers(tests, budget, label, peers, start, before_each=None, need=()):
    """The main() of a test file whose tests share stand-ins (tests/peers/<name>).

    tests: [(name, fn(binary))]; budget: seconds for the whole run (a watchdog cleans up
    and exits past it); label: names the temp directory; peers: {peer dir: npm module that
    must be installed}; start(tmpdir, binary, session): starts the peers, appending a stop
    function per peer to session (they outlive each test's cleanup); before_each(name):
    resets the peers before a test; need: further programs that must be on the PATH.
    Without node or a needed program every test is skipped; peers that cannot start fail
    every test with the reason. Returns the exit status."""
    isolate_env()
    if len(sys.argv) < 2:
        print("usage: %s BINARY [TEST-NAME...]" % sys.argv[0])
        return 64
    binary = os.path.abspath(sys.argv[1])
    only = sys.argv[2:]
    selected = [(n, f) for n, f in tests if not only or n in only]
    runner = Runner()
    skip = None
    if shutil.which("node") is None:
        skip = "node is not installed (scripts/install-deps.sh --test installs it)"
    for prog in need:
        if skip is None and shutil.which(prog) is None:
            skip = "%s is not installed" % prog
    session = []

    def stop_session():
        while session:
            try:
                session.pop()()
            except Exception as e:  # keep stopping
                print("stopping: %s" % e)

    def watchdog():
        print("WATCHDOG: the run took more than %d s; cleaning up and giving up" % budget,
              flush=True)
        cleanup_all()
        stop_session()
        os._exit(3)
    timer = threading.Timer(budget, watchdog)
    timer.daemon = True
    timer.start()
    setup_error = None
    try:
        if skip is None:
            missing = [p for p, mod in sorted(peers.items())
                       if not os.path.isdir(os.path.join(PEERS_DIR, p, "node_modules", mod))]
            if missing:
                setup_error = ("tests/peers/{%s}/node_modules is missing: run "
                               "scripts/install-peers.sh" % ",".join(missing))
            else:
                d = tempfile.mkdtemp(prefix="mb-it-%s-peers-" % label)
                session.append(lambda: shutil.rmtree(d, ignore_errors=True))
                try:
                    start(d, binary, session)
                except Exception as e:  # reported as every test's failure
                    v = run(["node", "--version"]).stdout.decode().strip()
                    setup_error = "cannot start the stand-ins with node %s: %s" % (v, e)
        for name, fn in selected:
            if skip:
                runner.run(name, _raise, SkipTest(skip))
            elif setup_error:
                runner.run(name, _raise, RuntimeError(setup_error))
            else:
                if before_each:
                    before_each(name)
                runner.run(name, fn, binary)
    finally:
        cleanup_all()
        stop_session()
        timer.cancel()
    return runner.finish()



def run_with_idp_graph(tests, budget, label, started, idp_settings=None, need=(),
                       prepare=None):
    """run_with_peers() for a test file whose tests share the identity platform and the Graph
    stand-in (tests/peers/idp and tests/peers/graph over TLS, with a test CA made here). Both
    are reset before each test, the IdP with idp_settings. started(ca, idp, graph) hands them
    to the test file once they run; prepare(), when given, runs before they start (it raises
    to fail every test with its reason, e.g. a missing dependency)."""
    peers = {}

    def start(d, binary, session):
        if prepare:
            prepare()
        ca, peers["idp"], peers["graph"], _ = start_idp_graph(d, session)
        started(ca, peers["idp"], peers["graph"])

    def before_each(name):
        peers["idp"].reset(**(idp_settings or {}))
        peers["graph"].reset()

    return run_with_peers(tests, budget, label,
                          {p: PEER_MODULES[p] for p in ("idp", "graph")},
                          start, before_each, need)


# ---- the daemon's HTTP listener and its JSON API (/api/v1) ----

ADMIN_PASSWORD = "correct horse battery staple"
CLIENT_ID = "00001111-aaaa-2222-bbbb-3333cccc4444"  # the IdP stand-in's confidential client
CLIENT_SECRET = "Zx8Q~test.secret_value-1234567890abcdefghij"  # and its secret
USER, ALICE = "user@contoso.test", "alice@contoso.test"  # mailboxes the stand-ins know


def secret_file(d, secret, name="secret"):
    """Writes secret (and a newline) to d/name with mode 0600; returns the path."""
    path = os.path.join(d, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, (secret + "\n").encode())
    finally:
        os.close(fd)
    return path


def conn_section(name, keys):
    """A [connection NAME] section of the config file; keys: {key: value}, in order."""
    return "\n[connection %s]\n" % name + "".join("%s = %s\n" % kv for kv in keys.items())


def append_peer_conns(conf, conns, secret_file, idp, graph, ca):
    """Appends a [connection NAME] section to the config file conf for each (name, {key:
    value}) of conns: the stand-ins' keys first (tenant, client_id, client_secret_file and
    login_url of the IdP, unless provider = smtp; ca_file, graph_url), then its own."""
    with open(conf, "a") as f:
        for cname, kv in conns:
            c = {}
            if kv.get("provider") != "smtp":
                c.update({"tenant": "contoso.test", "client_id": CLIENT_ID,
                          "client_secret_file": secret_file, "login_url": idp.base})
            c.update({"ca_file": ca, "graph_url": graph.base})
            c.update(kv)
            f.write(conn_section(cname, c))


def http_request(port, method, path, body=None, data=None, headers=None, source=None,
                 timeout=10):
    """One request to 127.0.0.1:port (from the loopback address source when given). body is
    sent as JSON with its Content-Type, data (bytes or text) as it is. Returns (status,
    headers {lowercase name: value, a repeated one's values joined by newlines}, the parsed
    JSON answer or None, the raw answer)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                   source_address=(source, 0) if source else None)
    try:
        h = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        hdrs = {}
        for k, v in r.getheaders():
            k = k.lower()
            hdrs[k] = hdrs[k] + "\n" + v if k in hdrs else v
        try:
            j = json.loads(raw) if raw else None
        except ValueError:
            j = None
        return r.status, hdrs, j, raw
    finally:
        c.close()


def check_error(st, j, raw, want_status, want_code, field=None):
    """An /api/v1 error answer: the status, {"error": {code, message, fix}} with the code, a
    message and a fix; the message names field when given. Returns the error object."""
    check(st == want_status, "want %d %s, got %d %r", want_status, want_code, st, raw[:500])
    check(isinstance(j, dict) and isinstance(j.get("error"), dict), "not an error JSON: %r", raw)
    e = j["error"]
    check(e.get("code") == want_code, "want code %s, got %r", want_code, e)
    check(e.get("message") and e.get("fix"), "error without message or fix: %r", e)
    if field:
        check(field in e["message"], "the message does not name %s: %r", field, e["message"])
    return e


def check_item(items, iid, want, *words):
    """A doctor report ({id: item}): item iid has status want, and its evidence + fix
    mention every word (case-insensitive)."""
    it = items.get(iid)
    check(it is not None, "no item %s in %s", iid, sorted(items))
    check(it["status"] == want, "%s: %s, wanted %s: %s", iid, it["status"], want, it)
    text = (it["evidence"] or "") + " " + (it["fix"] or "")
    for w in words:
        check(w.lower() in text.lower(), "%s does not mention %r: %s", iid, w, text)


class ApiDaemon:
    """One `mailbridge serve` for the API tests (the API client): connections in its config
    file, optionally an admin password and an API token, and requests to its HTTP listener."""

    answers = None  # a list that gets every raw /api/v1 answer (set by a subclass)

    def __init__(self, binary, label, server=None, conns=(), password=None, token=None,
                 start=True):
        """label names the temp dir; conns: [(name, {key: value})], where a client_secret
        is written to a 0600 file and given as client_secret_file; password: the admin
        password, set after the start; token: the name of an API token made after the start
        (self.token, sent by api() unless it is given headers)."""
        self.binary = binary
        self.tmp = tempdir("mb-it-%s-" % label)
        extra = ""
        for name, keys in conns:
            section = {}
            for k, v in keys.items():
                if k == "client_secret":
                    k, v = "client_secret_file", secret_file(self.tmp, v, "secret-" + name)
                section[k] = v
            extra += conn_section(name, section)
        self.d = Daemon(binary, self.tmp, name="mb", server=server, extra=extra)
        self.port = self.d.http_port
        self.token = None
        self.password, self.token_name = password, token
        if start:
            self.start()

    def start(self):
        self.d.start()
        if self.password:
            self.d.set_admin_password(self.password)
        if self.token_name and not self.token:
            self.token = self.d.create_token(self.token_name)
        return self

    @property
    def bearer(self):
        return {"Authorization": "Bearer " + self.token}

    def admin(self, *args, stdin_text=None):
        return self.d.admin(*args, stdin_text=stdin_text)

    def set_password(self, pw=ADMIN_PASSWORD):
        return self.d.set_admin_password(pw)

    def request(self, method, path, body=None, data=None, headers=None, source=None,
                timeout=10):
        """http_request() to this daemon: (status, headers, JSON or None, raw)."""
        r = http_request(self.port, method, path, body, data, headers, source, timeout)
        if self.answers is not None and path.startswith("/api/v1/"):
            self.answers.append(r[3])
        return r

    def api(self, method, path, body=None, headers=None, data=None, timeout=40):
        """/api/v1/PATH with the API token unless headers are given: (status, JSON, raw)."""
        st, _, j, raw = self.request(method, "/api/v1/" + path, body, data,
                                     self.bearer if headers is None else headers,
                                     timeout=timeout)
        return st, j, raw

    def ok(self, method, path, body=None, want=200):
        """api() that must answer want: its JSON."""
        st, j, raw = self.api(method, path, body)
        check(st == want, "%s %s: want %d, got %d %r", method, path, want, st, raw[:600])
        return j

    def login(self, pw=ADMIN_PASSWORD, source=None):
        return self.request("POST", "/api/v1/login", {"password": pw}, source=source)

    def session(self, pw=ADMIN_PASSWORD):
        """Logs in: (cookie header value, CSRF token)."""
        st, h, j, raw = self.login(pw)
        check(st == 200, "login failed: %d %r", st, raw)
        return h["set-cookie"].split(";")[0], j["csrf"]
