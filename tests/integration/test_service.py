#!/usr/bin/env python3
"""mailbridge as a service, on loopback: test_service.py BINARY [TEST-NAME...]

Each test starts its own `mailbridge serve` (free loopback ports, temp data_dir) and stops it by
PID. The tests that deliver share one identity platform (tests/peers/idp) and one Graph stand-in
(tests/peers/graph) over TLS with a test CA made here, started on first use; their state is
reset before each test. Connections sign in app-only (`mailbridge auth login NAME`).

Covered (issue 7, "Proof"):
  reload       SIGHUP with a good config while a client is mid-transaction (its next RCPT obeys
               the new smtp_max_recipients), then with a duplicate key and with an unknown key
               (refused, logged with file:line and the reason, the old limit stays in force, the
               session survives and its message is queued);
  sigterm      SIGTERM while ~10 deliveries are in flight at a slow Graph: an idle client gets
               421, a client in DATA gets its 250 and then 421, no new sessions, exit 0 within
               20 s; after a restart every message ends "sent" and Graph got each Message-ID;
  metrics      /metrics passes `promtool check metrics` and its counters move as mail flows;
               /healthz 200; /readyz 503 without a usable connection, 200 once signed in;
  backup       `mailbridge backup FILE` of a live store while a sender keeps getting 250s, then
               the restore steps of docs/backup.md into a new data_dir: the same queue, the
               same bytes.
Retention (store_writer_prune) is covered by tests/unit/test_store.c (test_prune): the daemon
runs it 60 s after start, too long for this run.

Skips the delivering tests (not fails) only when `node` is not installed, the metrics format
check when promtool is missing and cannot be installed (not root).
"""
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mbtest  # noqa: E402
from mbtest import (QUEUED_RE, Daemon, Graph, IdP, SkipTest, SMTPConn, check,  # noqa: E402
                    cleanup_all, free_port, http_get, on_cleanup, parse_prom, prom_value, run,
                    strip_received, tempdir, wait_until)

for _v in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_v, None)  # loopback only
os.environ.pop("MAILBRIDGE_CONFIG", None)
os.environ.pop("CREDENTIALS_DIRECTORY", None)

CLIENT_ID = "00001111-aaaa-2222-bbbb-3333cccc4444"
CLIENT_SECRET = "Zx8Q~test.secret_value-1234567890abcdefghij"
USER = "user@contoso.test"  # a Graph mailbox; the connection's sender
BUDGET = 170  # seconds for the whole run (watchdog)
ROOT = mbtest.ROOT


# ---- the peers: started on first use, for the rest of the run ----

class Peers:
    idp = graph = ca = None
    error = None
    _session = []

    @classmethod
    def get(cls):
        """(IdP, Graph, CA file), reset for this test; SkipTest without node."""
        if shutil.which("node") is None:
            raise SkipTest("node is not installed (scripts/install-deps.sh --test installs it)")
        if cls.error:
            raise RuntimeError(cls.error)
        if cls.idp is None:
            missing = [p for p, mod in (("idp", "oidc-provider"), ("graph", "mailparser"))
                       if not os.path.isdir(os.path.join(mbtest.PEERS_DIR, p, "node_modules",
                                                         mod))]
            if missing:
                cls.error = ("tests/peers/{%s}/node_modules is missing: run "
                             "scripts/install-peers.sh" % ",".join(missing))
                raise RuntimeError(cls.error)
            d = tempfile.mkdtemp(prefix="mb-it-service-peers-")
            cls._session.append(lambda: shutil.rmtree(d, ignore_errors=True))
            try:
                cls.ca, cert, key = mbtest.make_certs(d)
                cls.idp = IdP(d, cls.ca, cert, key)
                cls._session.append(cls.idp.stop)
                cls.graph = Graph(d, cls.ca, cert, key, cls.idp.jwks_uri)
                cls._session.append(cls.graph.stop)
            except Exception as e:
                cls.error = "cannot start the stand-ins: %s" % e
                raise
        cls.idp.reset()
        cls.graph.reset()
        cls.graph.latency(0)
        return cls.idp, cls.graph, cls.ca

    @classmethod
    def stop(cls):
        while cls._session:
            try:
                cls._session.pop()()
            except Exception as e:  # keep stopping
                print("stopping: %s" % e)


# ---- a gateway: a Daemon, optionally with one app-only Graph connection ----

class Gateway:
    def __init__(self, binary, name, graph_conn=None, server=None, data_dir=None):
        """graph_conn: None, or dict(name=..., default=bool) with the peers from Peers.get()."""
        self.binary = binary
        self.tmp = tempdir("mb-it-service-%s-" % name)
        self.http_port = free_port()
        srv = {"http_listen": "127.0.0.1:%d" % self.http_port, "log_level": "info",
               "retry_schedule": "1s,2s"}
        srv.update(server or {})
        self.d = Daemon(binary, self.tmp, name="mb", server=srv, data_dir=data_dir)
        self.conf = self.d.conf
        self.base_conf = open(self.conf).read()
        self.conn = None
        if graph_conn:
            idp, graph, ca = Peers.get()
            self.conn = graph_conn["name"]
            secret = os.path.join(self.tmp, "client-secret")
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, (CLIENT_SECRET + "\n").encode())
            os.close(fd)
            kv = {"provider": "microsoft-graph", "sender": USER, "auth": "app-only",
                  "tenant": "contoso.test", "client_id": CLIENT_ID,
                  "client_secret_file": secret, "login_url": idp.base, "ca_file": ca,
                  "graph_url": graph.base}
            if graph_conn.get("default"):
                kv["default"] = "yes"
            self.base_conf += "\n[connection %s]\n" % self.conn + "".join(
                "%s = %s\n" % x for x in kv.items())
            with open(self.conf, "w") as f:
                f.write(self.base_conf)

    @property
    def port(self):
        return self.d.smtp_port

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.http_port

    def start(self):
        self.d.start()
        return self

    def login(self):
        r = run([self.binary, "auth", "login", self.conn, "-c", self.conf], timeout=60)
        check(r.returncode == 0, "auth login %s: rc=%d %s %s", self.conn, r.returncode,
              r.stdout, r.stderr)

    def log_json(self):
        return {m["id"]: m for m in self.d.queue_list()}

    def metrics(self):
        st, body = http_get(self.url + "/metrics")
        check(st == 200, "/metrics: HTTP %d %r", st, body[:300])
        return body.decode("utf-8")


def make_msg(subject, msgid, frm=USER, to="bob@contoso.test", body=None):
    body = body or ("Hello from %s.\r\n" % subject)
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: Thu, 01 Jan 2026 12:00:00 +0000\r\n"
            "Message-ID: %s\r\n\r\n%s" % (frm, to, subject, msgid, body)).encode()


def submit(port, env_from, rcpts, data, timeout=30):
    """One message in its own session; returns the queue id."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=timeout) as s:
        code, resp = s.ehlo()
        check(code == 250, "EHLO %d %r", code, resp)
        code, resp = s.mail(env_from)
        check(code == 250, "MAIL: %d %r", code, resp)
        for r in rcpts:
            code, resp = s.rcpt(r)
            check(code == 250, "RCPT %s: %d %r", r, code, resp)
        code, resp = s.data(data)
        m = QUEUED_RE.search("%d %s" % (code, resp.decode("utf-8", "replace")))
        check(code == 250 and m, "DATA: %d %r", code, resp)
        return m.group(1)


def open_txn(port, rcpts):
    """A raw session with MAIL and these RCPTs accepted."""
    c = SMTPConn(port)
    on_cleanup(c.close)
    check(c.reply()[0].startswith("220 "), "no greeting")
    r = c.cmd("EHLO client.test")
    check(r[-1].startswith("250 "), "EHLO: %r", r)
    r = c.cmd("MAIL FROM:<sender@client.test>")
    check(r[0].startswith("250 "), "MAIL: %r", r)
    for a in rcpts:
        r = c.cmd("RCPT TO:<%s>" % a)
        check(r[0].startswith("250 "), "RCPT %s: %r", a, r)
    return c


def log_has(d, pattern, start=0):
    with open(d.log_path, "rb") as f:
        text = f.read().decode("utf-8", "replace")[start:]
    return re.search(pattern, text)


def log_size(d):
    try:
        return os.path.getsize(d.log_path)
    except OSError:
        return 0


# ---- 1: SIGHUP with a good and a bad config, a client mid-transaction ----

def test_reload(binary):
    g = Gateway(binary, "reload", server={"smtp_max_recipients": "5"}).start()
    d = g.d
    pid = d.pid
    c = open_txn(g.port, ["r1@example.test", "r2@example.test"])

    # a good config: the limit goes from 5 to 3
    with open(g.conf, "w") as f:
        f.write(g.base_conf.replace("smtp_max_recipients = 5", "smtp_max_recipients = 3"))
    mark = log_size(d)
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: log_has(d, r"daemon: reloaded ", mark), 10, "'daemon: reloaded' in the log")
    r = c.cmd("RCPT TO:<r3@example.test>")
    check(r[0].startswith("250 "), "3rd RCPT after the reload to 3: %r", r)
    r = c.cmd("RCPT TO:<r4@example.test>")
    check(r[0].startswith("452 "), "4th RCPT after the reload to 3 (the old limit was 5, the new "
          "one is 3): expected 452, got %r", r)
    check("at most 3" in r[0], "the 452 does not name the new limit: %r", r)

    # bad configs: each is refused with file:line and the reason; the limit stays 3
    lines = g.base_conf.replace("smtp_max_recipients = 5", "smtp_max_recipients = 10").split("\n")
    first = lines.index("smtp_max_recipients = 10")
    dup = lines[:first + 1] + ["smtp_max_recipients = 10"] + lines[first + 1:]
    typo = lines[:first + 1] + ["smtp_max_recipents = 10"] + lines[first + 1:]
    cases = [
        ("a duplicate key", dup,
         r"%s:%d: smtp_max_recipients is set twice \(first on line %d\)"
         % (re.escape(g.conf), first + 2, first + 1)),
        ("an unknown key", typo,
         r"%s:%d: unknown key 'smtp_max_recipents' in \[server\]" % (re.escape(g.conf),
                                                                     first + 2)),
    ]
    for what, text, want in cases:
        with open(g.conf, "w") as f:
            f.write("\n".join(text))
        mark = log_size(d)
        os.kill(pid, signal.SIGHUP)
        m = wait_until(lambda: log_has(d, r"daemon: reload[^\n]*", mark), 10,
                       "a reload line in the log after SIGHUP with %s" % what)
        line = m.group(0)
        check(re.search(r"reload refused", line), "SIGHUP with %s: not refused: %r\n%s", what,
              line, d.log_tail())
        check(re.search(want, line), "SIGHUP with %s: the log line lacks file:line and the "
              "reason (want /%s/):\n%r", what, want, line)
        check(d.proc.poll() is None, "the daemon exited after SIGHUP with %s", what)
        # the old config (3) stays in force, for this session and for new ones
        r = c.cmd("RCPT TO:<r-%s@example.test>" % what.split()[-2])
        check(r[0].startswith("452 ") and "at most 3" in r[0],
              "RCPT after the refused reload (%s): expected 452 (limit 3), got %r", what, r)
        c2 = open_txn(g.port, ["n1@example.test", "n2@example.test", "n3@example.test"])
        r = c2.cmd("RCPT TO:<n4@example.test>")
        check(r[0].startswith("452 "), "a new session after the refused reload (%s) accepted a "
              "4th RCPT: %r", what, r)
        c2.cmd("QUIT")
        c2.close()

    # the session survived both and its message is queued
    r = c.cmd("DATA")
    check(r[0].startswith("354 "), "DATA: %r", r)
    body = b"From: sender@client.test\r\nSubject: across reloads\r\n\r\nstill here\r\n"
    c.send(body + b".\r\n")
    r = c.reply()
    m = QUEUED_RE.search(r[0])
    check(m, "end of DATA: %r", r)
    c.cmd("QUIT")
    c.close()
    with open(g.conf, "w") as f:  # a good config again, for the CLI
        f.write(g.base_conf)
    j = d.queue_json(m.group(1))
    check(j["recipients"] == ["r1@example.test", "r2@example.test", "r3@example.test"],
          "recipients %r", j["recipients"])
    check(strip_received(d.queue_raw(m.group(1))) == body, "the stored body differs")
    check(d.pid == pid and d.proc.poll() is None, "the daemon restarted or exited")
    check(d.stop() == 0, "exit status after SIGTERM: %r", d.proc.returncode)


# ---- 2: SIGTERM during delivery ----

def test_sigterm_delivery(binary):
    g = Gateway(binary, "sigterm", graph_conn={"name": "app", "default": True}).start()
    graph = Peers.graph
    d = g.d
    g.login()
    graph.latency(2000)
    n = 10
    mids = ["<sigterm-%d@client.test>" % i for i in range(n)]
    ids = [submit(g.port, USER, ["bob@contoso.test"], make_msg("sigterm %d" % i, mids[i]))
           for i in range(n)]
    wait_until(lambda: graph.inflight()["global"]["current"] >= 1, 15,
               "Graph requests in flight")
    # one client in the middle of DATA, one idle after EHLO
    busy = open_txn(g.port, ["carol@contoso.test"])
    r = busy.cmd("DATA")
    check(r[0].startswith("354 "), "DATA: %r", r)
    busy_mid = "<sigterm-data@client.test>"
    busy_msg = make_msg("in DATA at SIGTERM", busy_mid, to="carol@contoso.test")
    half = len(busy_msg) // 2
    busy.send(busy_msg[:half])
    idle = SMTPConn(g.port)
    on_cleanup(idle.close)
    check(idle.reply()[0].startswith("220 "), "no greeting")
    check(idle.cmd("EHLO idle.test")[-1].startswith("250 "), "EHLO")
    inflight_at_term = graph.inflight()["global"]["current"]
    check(inflight_at_term >= 1, "nothing in flight at SIGTERM")
    t0 = time.monotonic()
    os.kill(d.pid, signal.SIGTERM)
    # the idle client: 421 and the connection closed
    idle_rest = idle.read_until_close().decode("utf-8", "replace")
    check(idle_rest.startswith("421 4.3.2 "), "idle client at SIGTERM: got %r", idle_rest)
    # no new sessions
    time.sleep(0.3)
    refused = False
    try:
        x = socket.create_connection(("127.0.0.1", g.port), timeout=2)
        x.settimeout(2)
        try:
            refused = not x.recv(512).startswith(b"220")
        except OSError:
            refused = True
        x.close()
    except OSError:
        refused = True
    check(refused, "a new session was greeted after SIGTERM")
    # the client in DATA finishes: 250, then 421
    busy.send(busy_msg[half:] + b"\r\n.\r\n")
    r = busy.reply()
    m = QUEUED_RE.search(r[0])
    check(m, "the client in DATA at SIGTERM: expected 250 queued, got %r", r)
    busy_id = m.group(1)
    rest = busy.read_until_close().decode("utf-8", "replace")
    check(rest.startswith("421 4.3.2 "), "after its 250, the client in DATA got %r (want 421)",
          rest)
    try:
        rc = d.proc.wait(25)
    except subprocess.TimeoutExpired:
        raise AssertionError("still running %.0f s after SIGTERM:\n%s"
                             % (time.monotonic() - t0, d.log_tail()))
    took = time.monotonic() - t0
    check(rc == 0, "exit status %d after SIGTERM:\n%s", rc, d.log_tail())
    check(took <= 20, "stopping took %.1f s (at most 20)", took)

    # state at rest: nothing lost, nothing sent twice by accident
    msgs = g.log_json()
    for qid in ids + [busy_id]:
        check(qid in msgs, "message %s is missing from the store after SIGTERM", qid)
    states = {qid: msgs[qid]["state"] for qid in ids + [busy_id]}
    if os.environ.get("MB_VERBOSE"):
        print("  sigterm: %d in flight at SIGTERM, stopped in %.1f s, states %r"
              % (inflight_at_term, took, sorted(states.values())))
    check(all(s in ("sent", "queued", "deferred") for s in states.values()),
          "states after SIGTERM (none may be left 'sending'): %r", states)

    # restart without the latency: everything ends "sent", Graph got every Message-ID
    graph.latency(0)
    d.start()
    wait_until(lambda: all(m["state"] == "sent" for qid, m in g.log_json().items()
                           if qid in states), 30,
               "every message to be sent after the restart")
    got = {}
    for rec in graph.messages(omit_mime=1):
        got[(rec.get("message_id") or "")] = got.get(rec.get("message_id") or "", 0) + 1
    for mid in mids + [busy_mid]:
        check(got.get(mid, 0) >= 1, "Graph never received %s (received: %r)", mid, got)
    check(d.stop() == 0, "exit status after the second SIGTERM: %r", d.proc.returncode)


def test_sigterm_grace(binary):
    """Deliveries that do not finish within the 15 s grace go back to the queue, the daemon
    exits 0, and they are sent after the restart (at least once)."""
    g = Gateway(binary, "grace", graph_conn={"name": "app", "default": True}).start()
    graph = Peers.graph
    d = g.d
    g.login()
    graph.latency(40000)  # longer than the grace
    mids = ["<grace-%d@client.test>" % i for i in range(3)]
    ids = [submit(g.port, USER, ["bob@contoso.test"], make_msg("grace %d" % i, mids[i]))
           for i in range(3)]
    wait_until(lambda: graph.inflight()["global"]["current"] >= 1, 15,
               "Graph requests in flight")
    mark = log_size(d)
    t0 = time.monotonic()
    os.kill(d.pid, signal.SIGTERM)
    try:
        rc = d.proc.wait(25)
    except subprocess.TimeoutExpired:
        raise AssertionError("still running %.0f s after SIGTERM:\n%s"
                             % (time.monotonic() - t0, d.log_tail()))
    took = time.monotonic() - t0
    check(rc == 0, "exit status %d after SIGTERM:\n%s", rc, d.log_tail())
    check(13 <= took <= 20, "stopping took %.1f s (want the 15 s grace, at most 20)", took)
    check(log_has(d, r"deliveries still open after 15 s; deliveries go back to the queue",
                  mark), "no 'go back to the queue' line in the log:\n%s", d.log_tail())
    msgs = g.log_json()
    states = {q: msgs[q]["state"] for q in ids}
    if os.environ.get("MB_VERBOSE"):
        print("  grace: stopped in %.1f s, states %r" % (took, sorted(states.values())))
    check(all(st in ("queued", "deferred") for st in states.values()),
          "after the grace the deliveries in flight should be back in the queue: %r", states)
    graph.latency(0)
    d.start()
    wait_until(lambda: all(m["state"] == "sent" for q, m in g.log_json().items() if q in ids),
               30, "every message to be sent after the restart")
    got = [(r.get("message_id") or "") for r in graph.messages(omit_mime=1)]
    for mid in mids:
        check(mid in got, "Graph never received %s", mid)
    check(d.stop() == 0, "exit status after the second SIGTERM: %r", d.proc.returncode)


# ---- 3: /metrics, /healthz, /readyz ----

def promtool():
    p = shutil.which("promtool")
    if p:
        return p
    if os.geteuid() != 0:
        return None
    r = run(["apt-get", "install", "-y", "--no-install-recommends", "prometheus"], timeout=300,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if r.returncode != 0:
        print("apt-get install prometheus failed: %s" % r.stderr.decode()[-500:])
    return shutil.which("promtool")


def promtool_check(tool, text, what):
    r = run([tool, "check", "metrics"], input=text.encode(), stdin=None, timeout=30)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    check(r.returncode == 0, "promtool check metrics (%s): rc=%d\n%s\n--- the text:\n%s",
          what, r.returncode, out, text)


def test_metrics(binary):
    tool = promtool()
    # the connection has no default: mail From: others is left queued ("no connection")
    g = Gateway(binary, "metrics", graph_conn={"name": "app"}).start()
    st, body = http_get(g.url + "/healthz")
    check(st == 200, "/healthz: HTTP %d %r", st, body)
    st, body = http_get(g.url + "/readyz")
    check(st == 503 and b"connections: none usable" in body and b"store: ok" in body,
          "/readyz with no connection signed in: HTTP %d %r (want 503, none usable)", st, body)
    text0 = g.metrics()
    if tool:
        promtool_check(tool, text0, "at start")
    m0 = parse_prom(text0)

    def val(samples, name, **labels):
        v = prom_value(samples, name, **labels)
        check(v is not None, "no sample %s%r in /metrics", name, labels)
        return v

    for state in ("queued", "sending", "deferred", "sent", "failed"):
        check(val(m0, "mailbridge_messages", state=state) == 0, "mailbridge_messages{%s} at "
              "start: %r", state, val(m0, "mailbridge_messages", state=state))
    # 2 messages that match no connection: they stay queued
    for i in range(2):
        submit(g.port, "other@elsewhere.test", ["x@elsewhere.test"],
               make_msg("no route %d" % i, "<noroute-%d@client.test>" % i,
                        frm="other@elsewhere.test"))
    wait_until(lambda: val(parse_prom(g.metrics()), "mailbridge_messages", state="queued") == 2,
               10, "mailbridge_messages{state=queued} to be 2")
    m1 = parse_prom(g.metrics())
    check(val(m1, "mailbridge_smtp_messages_total", outcome="queued") ==
          val(m0, "mailbridge_smtp_messages_total", outcome="queued") + 2,
          "smtp_messages_total{queued}: %r -> %r",
          val(m0, "mailbridge_smtp_messages_total", outcome="queued"),
          val(m1, "mailbridge_smtp_messages_total", outcome="queued"))
    check(val(m1, "mailbridge_queue_depth") == 2, "queue_depth %r",
          val(m1, "mailbridge_queue_depth"))
    check(val(m1, "mailbridge_queue_oldest_seconds") > 0, "queue_oldest_seconds %r",
          val(m1, "mailbridge_queue_oldest_seconds"))

    # sign in: ready, and mail From: the connection's sender is delivered
    g.login()
    st, body = wait_until(lambda: (lambda r: r[0] == 200 and r)(http_get(g.url + "/readyz")),
                          10, "/readyz to answer 200 after auth login")
    check(b"connections: ok" in body, "/readyz body %r", body)
    m2 = parse_prom(g.metrics())
    check(val(m2, "mailbridge_connection_up", connection="app") == 1,
          "mailbridge_connection_up{app} after auth login: %r",
          prom_value(m2, "mailbridge_connection_up", connection="app"))
    k = 3
    ids = [submit(g.port, USER, ["bob@contoso.test"],
                  make_msg("metrics %d" % i, "<metrics-%d@client.test>" % i)) for i in range(k)]
    wait_until(lambda: all(g.log_json()[q]["state"] == "sent" for q in ids), 20,
               "the %d messages to be sent" % k)

    def settled():
        s = parse_prom(g.metrics())
        return (val(s, "mailbridge_messages", state="sent") == k and
                val(s, "mailbridge_delivery_seconds_count", transport="graph",
                    connection="app") >= k and s)
    m3 = wait_until(settled, 10, "the metrics to show %d sent" % k)
    text3 = g.metrics()
    if tool:
        promtool_check(tool, text3, "after mail flowed")
    d_q = (val(m3, "mailbridge_smtp_messages_total", outcome="queued") -
           val(m0, "mailbridge_smtp_messages_total", outcome="queued"))
    check(d_q == 2 + k, "smtp_messages_total{queued} went up by %r (want %d)", d_q, 2 + k)
    check(val(m3, "mailbridge_messages", state="queued") == 2,
          "mailbridge_messages{queued} %r (want 2)", val(m3, "mailbridge_messages",
                                                         state="queued"))
    for state in ("sending", "deferred", "failed"):
        check(val(m3, "mailbridge_messages", state=state) == 0, "mailbridge_messages{%s} %r",
              state, val(m3, "mailbridge_messages", state=state))
    d_sent = (val(m3, "mailbridge_deliveries_total", connection="app", result="sent") -
              val(m0, "mailbridge_deliveries_total", connection="app", result="sent"))
    check(d_sent == k, "deliveries_total{app,sent} went up by %r (want %d)", d_sent, k)
    d_cnt = (val(m3, "mailbridge_delivery_seconds_count", transport="graph", connection="app") -
             val(m0, "mailbridge_delivery_seconds_count", transport="graph", connection="app"))
    check(d_cnt == k, "delivery_seconds_count{graph,app} went up by %r (want %d)", d_cnt, k)
    inf = val(m3, "mailbridge_delivery_seconds_bucket", transport="graph", connection="app",
              le="+Inf")
    check(inf == val(m3, "mailbridge_delivery_seconds_count", transport="graph",
                     connection="app"), "the +Inf bucket differs from the count")
    check(val(m3, "mailbridge_delivery_seconds_sum", transport="graph", connection="app") > 0,
          "delivery_seconds_sum is 0")
    check(val(m3, "mailbridge_queue_depth") == 2, "queue_depth %r",
          val(m3, "mailbridge_queue_depth"))
    check(val(m3, "mailbridge_smtp_sessions") >= 0 and
          val(m3, "mailbridge_deliveries_in_flight", connection="app") == 0,
          "smtp_sessions / deliveries_in_flight samples")
    check(g.d.stop() == 0, "exit status %r", g.d.proc.returncode)
    if not tool:
        raise SkipTest("the counters move, but promtool is missing and cannot be installed "
                       "(not root): the format was not checked")


# ---- 4: backup -> restore -> the queue is intact ----

def restore_steps():
    """The restore commands of docs/backup.md (the ```sh block under "## Restore")."""
    with open(os.path.join(ROOT, "docs", "backup.md")) as f:
        doc = f.read()
    m = re.search(r"^## Restore\n(.*?)(?=^## |\Z)", doc, re.S | re.M)
    check(m, "docs/backup.md has no '## Restore' section")
    blocks = re.findall(r"```sh\n(.*?)```", m.group(1), re.S)
    check(len(blocks) == 1, "docs/backup.md: expected one sh block under Restore, found %d",
          len(blocks))
    return blocks[0]


def test_backup_restore(binary):
    g = Gateway(binary, "backup").start()  # no connection: everything stays queued
    d = g.d
    before = []
    # ~20 MB of queue: small messages and 1 MB ones, so the copy takes many backup steps
    big = "".join("line %06d ....................................................\r\n" % k
                  for k in range(16000))
    for i in range(int(os.environ.get("MB_BACKUP_N", "60"))):
        rcpts = ["r%d-%d@example.test" % (i, j) for j in range(1 + i % 3)]
        body = big if i % 2 else "message %d\r\n" % i
        before.append(submit(g.port, "s%d@example.test" % i, rcpts,
                             make_msg("backup %d" % i, "<backup-%d@client.test>" % i,
                                      frm="s%d@example.test" % i, to=rcpts[0], body=body)))
    # concurrent senders: must keep getting 250s (fast) while the backup runs
    stop = threading.Event()
    sent, errors, slowest = [], [], [0.0]  # sent: (started, answered, queue id)

    def sender(n):
        i = 0
        while not stop.is_set():
            t = time.monotonic()
            try:
                qid = submit(g.port, "live@example.test", ["live%d-%d@example.test" % (n, i)],
                             make_msg("live %d-%d" % (n, i), "<live-%d-%d@client.test>" % (n, i),
                                      frm="live@example.test"), timeout=10)
                sent.append((t, time.monotonic(), qid))
            except Exception as e:
                errors.append(repr(e))
            slowest[0] = max(slowest[0], time.monotonic() - t)
            i += 1
    threads = [threading.Thread(target=sender, args=(n,), daemon=True) for n in range(3)]
    for th in threads:
        th.start()
    wait_until(lambda: len(sent) >= 10 or errors, 10, "the concurrent senders to get going")
    backup_file = os.path.join(g.tmp, "backup", "mailbridge-backup.db")
    os.makedirs(os.path.dirname(backup_file))
    t0 = time.monotonic()
    try:
        r = d.cli("backup", args=[backup_file], timeout=30)
    except subprocess.TimeoutExpired:
        stop.set()
        raise AssertionError("`mailbridge backup` of a %.0f MB store did not finish within 30 s "
                             "while 3 clients sent mail (%d accepted meanwhile)"
                             % (os.path.getsize(os.path.join(d.data_dir, "mailbridge.db")) / 1e6,
                                len(sent)))
    t1 = time.monotonic()
    n_during = sum(1 for s0, s1, _ in sent if s0 >= t0 and s1 <= t1)
    time.sleep(0.5)  # more mail after the backup: it must not be in the restored queue
    stop.set()
    for th in threads:
        th.join(15)
    if os.environ.get("MB_VERBOSE"):
        print("  backup: %.2f s, %d accepted during it, slowest %.2f s"
              % (t1 - t0, n_during, slowest[0]))
    check(r.returncode == 0, "backup: rc=%d %s %s", r.returncode, r.stdout, r.stderr)
    check(b"secret.key" in r.stdout, "backup does not say to keep the key file: %r", r.stdout)
    check(not errors, "the concurrent senders failed during the backup: %s", errors[:3])
    check(n_during > 0 or t1 - t0 < 0.3, "no mail was accepted during the %.1f s backup",
          t1 - t0)
    check(slowest[0] < 5, "a message took %.1f s to be accepted during the backup", slowest[0])
    check(t1 - t0 < 15, "the backup took %.1f s", t1 - t0)
    check(d.stop() == 0, "exit status %r", d.proc.returncode)
    sent_ids = [q for _, _, q in sent]
    answered_before = [q for _, s1, q in sent if s1 < t0]
    started_after = [q for s0, _, q in sent if s0 > t1]

    # what the old store holds (the daemon has stopped; its CLI still reads it)
    old = {m["id"]: m for m in d.queue_pending()}
    check(set(before) | set(sent_ids) <= set(old), "the original store lost messages")

    # restore, exactly as docs/backup.md says, into a new data_dir
    new_dir = os.path.join(g.tmp, "restored-var")
    script = restore_steps()
    env = dict(os.environ, BACKUP=backup_file, KEY=os.path.join(d.data_dir, "secret.key"),
               DATA_DIR=new_dir)
    r = run(["sh", "-eu", "-c", script], env=env, timeout=30)
    check(r.returncode == 0, "the restore steps of docs/backup.md failed: rc=%d %s %s\n%s",
          r.returncode, r.stdout, r.stderr, script)
    d2 = Daemon(binary, g.tmp, name="restored", data_dir=new_dir,
                server={"http_listen": "127.0.0.1:%d" % free_port()})
    d2.start()
    new = {m["id"]: m for m in d2.queue_pending()}
    # a consistent snapshot: everything queued before the backup, nothing after it
    missing = [q for q in before + answered_before if q not in new]
    check(not missing, "the restored queue lacks %s", missing)
    extra = [q for q in new if q not in old]
    check(not extra, "the restored queue has messages the original never had: %s", extra)
    late = [q for q in started_after if q in new]
    check(not late, "messages accepted after the backup finished are in it: %s", late)
    for qid in before + sorted(set(new) - set(before))[:20]:
        m, o = new[qid], old[qid]
        for k in ("recipients", "sender", "state", "size", "subject"):
            check(m.get(k) == o.get(k), "%s: %s differs: %r (restored) vs %r", qid, k, m.get(k),
                  o.get(k))
        a, b = d2.queue_raw(qid), d.queue_raw(qid)
        check(a is not None and a == b, "%s: queue show --raw differs after the restore", qid)
    # the restored daemon takes mail too
    submit(d2.smtp_port, "after@example.test", ["after@example.test"],
           make_msg("after restore", "<after@client.test>", frm="after@example.test"))
    check(d2.stop() == 0, "exit status of the restored daemon %r", d2.proc.returncode)


TESTS = [
    ("reload", test_reload),
    ("sigterm_delivery", test_sigterm_delivery),
    ("metrics", test_metrics),
    ("backup_restore", test_backup_restore),
    ("sigterm_grace", test_sigterm_grace),  # last: the stand-in still holds its slow requests
]


def main():
    if len(sys.argv) < 2:
        print("usage: %s BINARY [TEST-NAME...]" % sys.argv[0])
        return 64
    binary = os.path.abspath(sys.argv[1])
    only = sys.argv[2:]

    def watchdog():
        print("WATCHDOG: the run took more than %d s; cleaning up and giving up" % BUDGET,
              flush=True)
        cleanup_all()
        Peers.stop()
        os._exit(3)
    timer = threading.Timer(BUDGET, watchdog)
    timer.daemon = True
    timer.start()
    runner = mbtest.Runner()
    try:
        for name, fn in TESTS:
            if not only or name in only:
                runner.run(name, fn, binary)
    finally:
        cleanup_all()
        Peers.stop()
        timer.cancel()
    return runner.finish()


if __name__ == "__main__":
    sys.exit(main())
