#!/usr/bin/env python3
"""Microsoft sign-in against a real OAuth server, on loopback: test_oauth.py BINARY [TEST-NAME...]

The identity platform is tests/peers/idp (oidc-provider behind Microsoft's paths and error
shape), started once for the run over HTTPS with a CA and server certificate made here with the
openssl CLI; mailbridge gets the CA through `ca_file`. Each test starts its own `mailbridge
serve` (free loopback ports, temp data_dir) and stops it by PID; the IdP's state (settings,
failures, counters) is reset before each test. The token manager is driven by tm_probe
($MB_TM_PROBE, else build/tests/tm_probe next to BINARY).

Covered (issue 3, "Proof"): the authorization-code flow end to end through our /oauth/callback
(the IdP's login and consent forms driven with urllib and a cookie jar); callback replay, an
unknown state and an error= redirect; the device flow (pending then approved, slow_down,
declined, expired); client credentials; refresh with rotation persisted and restarts keeping
tokens; single flight; refresh-ahead; invalid_grant AADSTS700082; invalid_client 7000215 and
7000222; a 500, a reset connection and a real timeout (transient, refresh token kept); no secret
or token in clear text in any output, log or database file; the key file's permissions.

Skipped (not failed) only when `node` is not installed. Needs `npm ci` in tests/peers/idp
(scripts/install-peers.sh, run by `make test`).
"""
import html
import html.parser
import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mbtest  # noqa: E402
from mbtest import (CLIENT_ID, CLIENT_SECRET, USER, Browser, Daemon, check,  # noqa: E402
                    free_port, on_cleanup, tempdir, wait_until)

PASSWORD = "UserPass1!"
CONN, APP = "office365", "app"
# enum oauth_class in src/oauth/oauth.h
CLASS_TRANSIENT, CLASS_REAUTHORIZE, CLASS_CONFIG, CLASS_USER = 0, 1, 2, 3
URL_RE = re.compile(r"https://127\.0\.0\.1:\d+/\S+/oauth2/v2\.0/authorize\?\S+")
CODE_RE = re.compile(r"enter the code ([A-Z0-9-]+)")

# Everything mailbridge wrote during the run (CLI and tm_probe output, daemon logs, database
# files): the secrets test greps all of it. Tokens the IdP issued are collected before each
# reset of its issued list.
CORPUS = []        # (label, bytes)
ISSUED = set()     # access and refresh tokens, clear text
IDP = None         # the IdP of this run
PROBE = None       # the tm_probe binary


def remember(label, data):
    if data:
        CORPUS.append((label, data if isinstance(data, bytes) else data.encode()))


def strip_tags(page):
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]*>", " ", page)))


# ---- the identity platform ----

class Forms(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms, self.cur = {}, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.cur = a.get("id") or a.get("action")
            self.forms[self.cur] = {"action": a.get("action"), "fields": {}}
        elif tag == "input" and self.cur and a.get("name") and a.get("type") == "hidden":
            self.forms[self.cur]["fields"][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag):
        if tag == "form":
            self.cur = None


def forms_of(page):
    p = Forms()
    p.feed(page)
    return p.forms


class IdP(mbtest.IdP):
    """mbtest's IdP; reset() first collects the tokens it issued into ISSUED."""

    def harvest(self):
        for t in self.control("GET", "issued"):
            for k in ("access_token", "refresh_token"):
                if t.get(k):
                    ISSUED.add(t[k])

    def reset(self, **settings):
        self.harvest()
        mbtest.IdP.reset(self, **settings)


# ---- a gateway with the two connections ----

class CLI:
    """A CLI command running in the background (auth login waits)."""

    def __init__(self, cmd, label):
        self.label = label
        self.out, self.err = [], []
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.threads = [threading.Thread(target=self._pump, args=(s, b), daemon=True)
                        for s, b in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self.threads:
            t.start()
        on_cleanup(self.kill)

    @staticmethod
    def _pump(stream, buf):
        for line in iter(stream.readline, b""):
            buf.append(line)

    @property
    def stdout(self):
        return b"".join(self.out).decode("utf-8", "replace")

    @property
    def stderr(self):
        return b"".join(self.err).decode("utf-8", "replace")

    def wait_for(self, regex, timeout=15):
        return wait_until(lambda: (regex.search(self.stdout) or
                                   (self.proc.poll() is not None and
                                    self._died(regex))), timeout,
                          "%s to print %s" % (self.label, regex.pattern))

    def _died(self, regex):
        time.sleep(0.2)
        m = regex.search(self.stdout)
        if m:
            return m
        raise AssertionError("%s exited with %d before printing %s:\n%s%s" % (
            self.label, self.proc.returncode, regex.pattern, self.stdout, self.stderr))

    def wait(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running after %.0f s:\n%s%s"
                                 % (self.label, timeout, self.stdout, self.stderr))
        for t in self.threads:
            t.join(5)
        remember(self.label + " stdout", self.stdout)
        remember(self.label + " stderr", self.stderr)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class Gateway:
    """A data_dir, a config with [connection office365] (delegated, default) and
    [connection app] (app-only, same confidential client), and `mailbridge serve`."""

    def __init__(self, binary, name):
        self.binary = binary
        self.tmp = tempdir("mb-it-oauth-%s-" % name)
        on_cleanup(self.snapshot)  # runs after the daemon is stopped, before rmtree
        self.secret_file = mbtest.secret_file(self.tmp, CLIENT_SECRET)
        self.http_port = free_port()
        self.public_url = "http://127.0.0.1:%d" % self.http_port
        self.d = Daemon(binary, self.tmp, name="mb", server={
            "http_listen": "127.0.0.1:%d" % self.http_port, "public_url": self.public_url})
        self.conf = self.d.conf
        self.data_dir = self.d.data_dir
        self.db = os.path.join(self.data_dir, "mailbridge.db")
        common = ("provider = microsoft-graph\nsender = %s\ntenant = contoso.test\n"
                  "client_id = %s\nclient_secret_file = %s\nlogin_url = %s\nca_file = %s\n"
                  % (USER, CLIENT_ID, self.secret_file, IDP.base, IDP.ca))
        with open(self.conf, "a") as f:
            f.write("\n[connection %s]\n%sdefault = yes\n" % (CONN, common))
            f.write("\n[connection %s]\n%sauth = app-only\n" % (APP, common))

    def start(self):
        self.d.start()
        return self

    def stop(self):
        return self.d.stop()

    def snapshot(self):
        """The database files while the daemon runs (with its -wal) and after it stopped,
        and its log, into CORPUS."""
        for when in ("live", "stopped"):
            if when == "stopped":
                self.d.stop()
            for suffix in ("", "-wal", "-journal"):
                try:
                    with open(self.db + suffix, "rb") as f:
                        remember("%s%s (%s)" % (self.db, suffix, when), f.read())
                except OSError:
                    pass
        remember(self.tmp + " daemon log", self.d.log_tail(10 ** 8))

    # ---- the CLI ----

    def cli(self, args, timeout=30):
        r = mbtest.run([self.binary] + args + ["-c", self.conf], timeout=timeout)
        label = "mailbridge " + " ".join(args)
        remember(label + " stdout", r.stdout)
        remember(label + " stderr", r.stderr)
        return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8",
                                                                                  "replace")

    def cli_bg(self, args):
        return CLI([self.binary] + args + ["-c", self.conf], "mailbridge " + " ".join(args))

    def status(self, name=CONN):
        rc, out, err = self.cli(["auth", "status", name, "--json"])
        check(rc == 0, "auth status %s --json: rc=%d %s", name, rc, err)
        arr = json.loads(out)
        check(len(arr) == 1 and arr[0]["name"] == name, "auth status %s: %r", name, arr)
        return arr[0]

    def probe(self, conn, n, *opts, timeout=60):
        r = mbtest.run([PROBE, "-c", self.conf, conn, "graph", str(n)] + list(opts),
                       timeout=timeout)
        label = "tm_probe %s %d %s" % (conn, n, " ".join(opts))
        remember(label + " stdout", r.stdout)
        remember(label + " stderr", r.stderr)
        check(r.returncode == 0, "%s: rc=%d %s", label, r.returncode, r.stderr)
        return json.loads(r.stdout)

    def tokens(self):
        """{(resource, kind): (ciphertext, expires_at, updated_at)} from the store."""
        db = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True, timeout=10)
        try:
            rows = db.execute("SELECT resource, kind, ciphertext, expires_at, updated_at "
                              "FROM tokens WHERE connection = ?", (CONN,)).fetchall()
        finally:
            db.close()
        return {(r[0], r[1]): (bytes(r[2]), r[3], r[4]) for r in rows}

    # ---- sign-in ----

    def browser_login(self, cancel_consent=False):
        """auth login --browser, driven through the IdP's forms. Returns (cli, callback URL
        not yet requested)."""
        p = self.cli_bg(["auth", "login", CONN, "--browser"])
        url = p.wait_for(URL_RE).group(0)
        return p, drive_authorize(url, self.public_url, cancel_consent)

    def callback(self, url):
        st, _, page = Browser(IDP.ca).request("GET", url)
        remember("callback page", page)
        return st, strip_tags(page)

    def sign_in(self):
        p, cb = self.browser_login()
        st, text = self.callback(cb)
        check(st == 200, "callback: HTTP %d %s", st, text)
        rc = p.wait(15)
        check(rc == 0, "auth login --browser: rc=%d %s%s", rc, p.stdout, p.stderr)
        return text


def drive_authorize(url, public_url, cancel_consent=False):
    """GET the authorize URL, fill the login form, accept (or cancel) consent; returns the
    redirect to our callback."""
    b = Browser(IDP.ca)
    method, form, logged_in = "GET", None, False
    for _ in range(15):
        st, loc, page = b.request(method, url, form=form)
        if st in (301, 302, 303, 307) and loc:
            loc = urllib.parse.urljoin(url, loc)
            if loc.startswith(public_url + "/"):
                return loc
            url, method, form = loc, "GET", None
            continue
        check(st == 200, "authorize step %s %s: HTTP %d %s", method, url, st, page[:500])
        fs = forms_of(page)
        if "login-form" in fs:
            check(not logged_in, "the login form came back: %s", strip_tags(page)[:500])
            logged_in = True
            f = fs["login-form"]
            form = dict(f["fields"], login=USER, password=PASSWORD)
        elif "accept-form" in fs:
            f = fs["cancel-form"] if cancel_consent else fs["accept-form"]
            form = dict(f["fields"], **({"cancel": "yes"} if cancel_consent else
                                        {"accept": "yes"}))
        else:
            raise AssertionError("unexpected page at %s: %s" % (url, strip_tags(page)[:500]))
        url, method = urllib.parse.urljoin(url, f["action"]), "POST"
    raise AssertionError("the authorize flow did not reach %s in 15 steps" % public_url)


def device_start(g):
    p = g.cli_bg(["auth", "login", CONN, "--device"])
    code = p.wait_for(CODE_RE).group(1)
    return p, code


def grant_count(c, grant):
    return c.get("token_by_grant_type", {}).get(grant, 0)


DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


# ---- 1, 2: authorization code through our callback ----

def test_auth_code(binary):
    IDP.reset()
    g = Gateway(binary, "code").start()
    check(g.status()["state"] == "not authorized", "state before sign-in: %r", g.status())
    p, cb = g.browser_login()
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(cb).query))
    check("code" in q and "state" in q, "the redirect lacks code/state: %s", cb)
    check(p.proc.poll() is None, "the CLI did not wait for the callback")
    st, text = g.callback(cb)
    check(st == 200, "callback: HTTP %d %s", st, text)
    check("Connected as %s" % USER in text, "the callback page does not say 'Connected as "
          "%s': %s", USER, text)
    rc = p.wait(15)
    check(rc == 0, "auth login --browser: rc=%d\n%s%s", rc, p.stdout, p.stderr)
    check("Connected as %s." % USER in p.stdout, "CLI output: %r", p.stdout)
    s = g.status()
    check(s["state"] == "authorized", "state %r", s["state"])
    check(s["account"] == USER, "account %r", s["account"])
    check(s["graph_token_valid_min"] is not None and s["graph_token_valid_min"] >= 55,
          "graph token validity %r", s["graph_token_valid_min"])
    check("Mail.Send" in (s["scopes"] or ""), "scopes %r", s["scopes"])
    c = IDP.counters()
    check(grant_count(c, "authorization_code") == 1, "IdP counters: %r", c)


def test_callback_refusals(binary):
    IDP.reset()
    g = Gateway(binary, "refuse").start()
    g.sign_in()
    # the same callback URL again
    p, cb = g.browser_login()
    st, text = g.callback(cb)
    check(st == 200, "first callback: HTTP %d %s", st, text)
    check(p.wait(15) == 0, "auth login: %s%s", p.stdout, p.stderr)
    st, text = g.callback(cb)
    check(st == 400, "replayed callback: HTTP %d (want 400) %s", st, text)
    check("already used" in text, "the replay page does not say 'already used': %s", text)
    # a made-up state
    st, text = g.callback(g.public_url + "/oauth/callback?code=madeup&state=madeupstate123")
    check(st == 400, "unknown state: HTTP %d (want 400) %s", st, text)
    check("not valid" in text or "unknown" in text, "unknown-state page: %s", text)
    # no state at all
    st, text = g.callback(g.public_url + "/oauth/callback?code=madeup")
    check(st == 400, "no state: HTTP %d (want 400) %s", st, text)
    c = IDP.counters()
    check(grant_count(c, "authorization_code") == 2,
          "a refused callback reached the token endpoint: %r", c)
    # the user cancels consent: error=access_denied, AADSTS65004, with the valid state
    p, cb = g.browser_login(cancel_consent=True)
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(cb).query))
    check(q.get("error") == "access_denied" and
          q.get("error_description", "").startswith("AADSTS65004:") and q.get("state"),
          "the IdP's cancel redirect: %s", cb)
    st, text = g.callback(cb)
    check(st == 400, "error callback: HTTP %d (want 400) %s", st, text)
    check("AADSTS65004" in text and "declined" in text, "the page does not show the cause: %s",
          text)
    m = re.search(r"Fix (.*)", text)
    check(m and "mailbridge auth login" in m.group(1), "the page shows no fix: %s", text)
    rc = p.wait(15)
    check(rc != 0, "the CLI waiting on the refused sign-in exited 0:\n%s", p.stdout)
    check("declined" in p.stderr and "access_denied" in p.stderr,
          "the CLI does not explain the refusal: %r", p.stderr)
    check("mailbridge auth login" in p.stderr, "the CLI's message has no fix: %r", p.stderr)
    # the earlier sign-in is still in place
    check(g.status()["state"] == "authorized", "state after a refused sign-in: %r", g.status())


# ---- 3: device code ----

def test_device_approved(binary):
    IDP.reset(device_interval=1)
    g = Gateway(binary, "dev-ok").start()
    p, code = device_start(g)
    check("devicelogin" in p.stdout, "Microsoft's message is not printed: %r", p.stdout)
    # authorization_pending at least twice before the approval
    wait_until(lambda: grant_count(IDP.counters(), DEVICE_GRANT) >= 2, 10, "two pending polls")
    check(p.proc.poll() is None, "the CLI stopped while pending: %s%s", p.stdout, p.stderr)
    IDP.control("POST", "device/approve", {"user_code": code, "username": USER})
    rc = p.wait(15)
    check(rc == 0, "auth login --device: rc=%d\n%s%s", rc, p.stdout, p.stderr)
    check("Connected as %s." % USER in p.stdout, "CLI output: %r", p.stdout)
    s = g.status()
    check(s["state"] == "authorized" and s["account"] == USER, "status %r", s)
    c = IDP.counters()
    check(c.get("token_errors_by_error", {}).get("authorization_pending", 0) >= 2,
          "no authorization_pending served: %r", c)


def test_device_slow_down(binary):
    IDP.reset(device_interval=1)
    g = Gateway(binary, "dev-slow").start()
    p, code = device_start(g)
    IDP.control("POST", "device/slow_down", {"count": 1})
    wait_until(lambda: IDP.counters().get("slow_down_served", 0) >= 1, 10, "a slow_down")
    t0 = time.monotonic()
    polls0 = grant_count(IDP.counters(), DEVICE_GRANT)
    IDP.control("POST", "device/approve", {"user_code": code, "username": USER})
    rc = p.wait(20)
    elapsed = time.monotonic() - t0
    check(rc == 0, "auth login --device after slow_down: rc=%d\n%s%s", rc, p.stdout, p.stderr)
    c = IDP.counters()
    polls = grant_count(c, DEVICE_GRANT) - polls0
    # interval 1 s + 5 s after slow_down: the next poll comes ~6 s later, and only one
    check(elapsed >= 4.5, "the poll after slow_down came %.1f s later (want ~6 s)", elapsed)
    check(polls == 1, "%d polls after slow_down (want 1): %r", polls, c)
    check(c.get("slow_down_served") == 1, "slow_down served %r times (the IdP enforces the "
          "grown interval): %r", c.get("slow_down_served"), c)


def test_device_declined(binary):
    IDP.reset(device_interval=1)
    g = Gateway(binary, "dev-deny").start()
    p, code = device_start(g)
    IDP.control("POST", "device/deny", {"user_code": code})
    rc = p.wait(15)
    check(rc != 0, "a declined device code exited 0:\n%s", p.stdout)
    check("declined" in p.stderr, "the message does not name the decline: %r", p.stderr)
    check(g.status()["state"] == "not authorized", "state %r", g.status())


def test_device_expired(binary):
    IDP.reset(device_interval=1, device_code_ttl=3)
    g = Gateway(binary, "dev-exp").start()
    t0 = time.monotonic()
    p, code = device_start(g)
    rc = p.wait(20)
    check(rc != 0, "an expired device code exited 0:\n%s", p.stdout)
    check("expired" in p.stderr, "the message does not say it expired: %r", p.stderr)
    check(time.monotonic() - t0 < 10, "stopping took %.1f s for a 3 s code",
          time.monotonic() - t0)
    check(g.status()["state"] == "not authorized", "state %r", g.status())


# ---- 4: client credentials ----

def test_client_credentials(binary):
    IDP.reset()
    g = Gateway(binary, "app").start()
    rc, out, err = g.cli(["auth", "login", APP])
    check(rc == 0, "auth login %s: rc=%d %s%s", APP, rc, out, err)
    check("app-only graph token" in out, "output: %r", out)
    s = g.status(APP)
    check(s["state"] == "authorized", "state %r", s)
    c = IDP.counters()
    check(grant_count(c, "client_credentials") == 1 and c.get("token_requests") == 1,
          "IdP counters after auth login: %r", c)
    # the stored token is used as is
    r = g.probe(APP, 3)
    check(r["ok"] == 3 and r["requests"] == 0, "tm_probe (stored token): %r", r)
    # a new one (no refresh token for app-only: client credentials again)
    IDP.control("POST", "counters/reset")
    r = g.probe(APP, 5, "--force")
    check(r["ok"] == 5 and r["failed"] == 0 and r["requests"] == 1 and len(r["tokens"]) == 1,
          "tm_probe --force: %r", r)
    c = IDP.counters()
    check(c.get("token_requests") == 1 and grant_count(c, "client_credentials") == 1,
          "IdP counters: %r", c)
    issued = IDP.control("GET", "issued")
    check(any(t.get("grant_type") == "client_credentials" for t in issued),
          "no client_credentials token issued: %r", [t.get("grant_type") for t in issued])
    rc, out, err = g.cli(["auth", "login", APP, "--browser"])
    check(rc != 0 or "app-only" in out, "--browser on an app-only connection: rc=%d %s%s",
          rc, out, err)


# ---- 5, 6, 7: refresh ----

def test_refresh_rotation(binary):
    # strict rotation: a refresh token works once, so every later refresh proves that the
    # rotated one was stored
    IDP.reset(refresh_rotation="strict")
    g = Gateway(binary, "rotate").start()
    g.sign_in()
    t0 = g.tokens()
    check(("all", "refresh") in t0 and ("graph", "access") in t0, "stored tokens: %r",
          list(t0))
    time.sleep(0.01)
    r1 = g.probe(CONN, 1, "--force")
    check(r1["ok"] == 1 and r1["requests"] == 1, "tm_probe --force: %r", r1)
    t1 = g.tokens()
    check(t1[("all", "refresh")][0] != t0[("all", "refresh")][0] and
          t1[("all", "refresh")][2] > t0[("all", "refresh")][2],
          "the stored refresh token did not change (rotation not persisted)")
    check(t1[("graph", "access")][0] != t0[("graph", "access")][0],
          "the stored access token did not change")
    r2 = g.probe(CONN, 1, "--force")
    check(r2["ok"] == 1 and r2["requests"] == 1,
          "the second refresh failed (the rotated refresh token was not used): %r", r2)
    t2 = g.tokens()
    check(t2[("all", "refresh")][0] != t1[("all", "refresh")][0],
          "the refresh token did not change again")
    c = IDP.counters()
    check(grant_count(c, "refresh_token") == 2 and c.get("token_error", 0) == 0,
          "IdP counters: %r", c)
    # "restart keeps tokens": a new token manager uses the stored access token
    r3 = g.probe(CONN, 1)
    check(r3["ok"] == 1 and r3["requests"] == 0, "tm_probe without --force: %r", r3)
    check(r3["tokens"] == r2["tokens"], "not the stored token: %r vs %r", r3, r2)
    g.stop()
    g.start()
    s = g.status()
    check(s["state"] == "authorized" and s["account"] == USER, "status after restart: %r", s)
    check(s["graph_token_valid_min"] >= 55, "token validity after restart: %r", s)
    r4 = g.probe(CONN, 1)
    check(r4["ok"] == 1 and r4["requests"] == 0, "tm_probe after restart: %r", r4)


def test_single_flight(binary):
    IDP.reset()
    g = Gateway(binary, "flight").start()
    g.sign_in()
    IDP.control("POST", "counters/reset")
    r = g.probe(CONN, 20, "--force")
    check(r["ok"] == 20 and r["failed"] == 0 and r["requests"] == 1 and len(r["tokens"]) == 1,
          "tm_probe 20 --force: %r", r)
    c = IDP.counters()
    check(grant_count(c, "refresh_token") == 1 and c.get("token_requests") == 1,
          "20 concurrent callers sent %r token requests: %r", c.get("token_requests"), c)


def test_refresh_ahead(binary):
    # a 20 s lifetime: refresh ahead when min(10 min, 20 %) = 4 s remain, i.e. at 16 s
    IDP.reset(access_token_ttl=20)
    g = Gateway(binary, "ahead").start()
    g.sign_in()
    IDP.control("POST", "counters/reset")
    t0 = time.monotonic()
    r = g.probe(CONN, 1, "--force", "--run-ms", "19000")
    check(time.monotonic() - t0 < 25, "tm_probe took %.1f s", time.monotonic() - t0)
    check(r["ok"] == 1, "tm_probe: %r", r)
    check(r["requests"] == 2, "%d token requests in 19 s of a 20 s token (want 2: the "
          "background refresh ahead of expiry): %r", r["requests"], r)
    c = IDP.counters()
    check(grant_count(c, "refresh_token") == 2 and c.get("token_success") == 2,
          "IdP counters: %r", c)
    t = g.tokens()[("graph", "access")]
    remaining = t[1] - int(time.time() * 1000)
    check(remaining > 10000, "the stored access token was not renewed ahead of expiry "
          "(%d ms left)", remaining)


# ---- 8, 9: errors that name the fix ----

def test_invalid_grant(binary):
    IDP.reset()
    g = Gateway(binary, "grant").start()
    g.sign_in()
    IDP.fail_next(error="invalid_grant", code=700082, grant_type="refresh_token")
    r = g.probe(CONN, 1, "--force")
    check(r["failed"] == 1 and r.get("class") == CLASS_REAUTHORIZE and
          r.get("aadsts") == 700082, "tm_probe: %r", r)
    s = g.status()
    check(s["state"] == "needs re-authorization", "state %r", s)
    check("AADSTS700082" in (s["reason"] or ""), "reason %r", s["reason"])
    check("mailbridge auth login" in (s["fix"] or ""), "fix %r", s["fix"])
    rc, out, err = g.cli(["auth", "status", CONN])
    check("needs re-authorization" in out and "AADSTS700082" in out and
          "mailbridge auth login" in out, "auth status (text): %s", out)
    # signing in again clears it
    g.sign_in()
    s = g.status()
    check(s["state"] == "authorized", "state after a new sign-in: %r", s)


def test_invalid_client(binary):
    IDP.reset()
    g = Gateway(binary, "client").start()
    g.sign_in()
    IDP.fail_next(error="invalid_client", code=7000215, grant_type="refresh_token")
    r = g.probe(CONN, 1, "--force")
    check(r["failed"] == 1 and r.get("aadsts") == 7000215 and r.get("class") == CLASS_CONFIG,
          "tm_probe 7000215: %r", r)
    s = g.status()
    # a wrong secret is the app's problem, not the grant's: signing in again would not help,
    # so the state stays and the error and its fix say what to change
    check(s["state"] == "authorized" and s["last_error"] and "secret" in s["fix"],
          "status after a wrong secret (want authorized, with the error and fix): %r", s)
    text = " ".join(str(s[k]) for k in ("reason", "last_error", "fix"))
    check("7000215" in text and "secret ID" in text and "Value" in text,
          "7000215 is not explained as 'the secret ID instead of its Value': %r", s)
    IDP.fail_next(error="invalid_client", code=7000222, grant_type="refresh_token")
    r = g.probe(CONN, 1, "--force")
    check(r["failed"] == 1 and r.get("aadsts") == 7000222, "tm_probe 7000222: %r", r)
    s = g.status()
    text = " ".join(str(s[k]) for k in ("reason", "last_error", "fix"))
    check("7000222" in text and "expired" in text and "new client secret" in text,
          "7000222 is not explained as an expired secret: %r", s)
    # the app-only sign-in explains it too
    IDP.fail_next(error="invalid_client", code=7000215, grant_type="client_credentials")
    rc, out, err = g.cli(["auth", "login", APP])
    check(rc != 0 and "7000215" in err and "secret ID" in err, "auth login %s: rc=%d %s",
          APP, rc, err)
    # once the secret is right again, the refresh token still works
    r = g.probe(CONN, 1, "--force")
    check(r["ok"] == 1, "refresh after the secret was fixed: %r", r)
    s = g.status()
    check(s["state"] == "authorized" and s["last_error"] is None and s["reason"] is None,
          "status after a successful refresh: %r", s)


# ---- 10: transient failures keep the refresh token ----

def test_transient(binary):
    IDP.reset()
    g = Gateway(binary, "transient").start()
    g.sign_in()
    rt = g.tokens()[("all", "refresh")]
    # a 500: reported as transient, retried in the background after the back-off (2.5-7.5 s)
    IDP.control("POST", "counters/reset")
    IDP.fail_next(status=500, grant_type="refresh_token")
    r = g.probe(CONN, 1, "--force", "--run-ms", "9000")
    check(r["failed"] == 1 and r.get("class") == CLASS_TRANSIENT, "tm_probe (500): %r", r)
    check(r["requests"] == 2, "the 500 was not retried within 9 s: %r", r)
    c = IDP.counters()
    check(grant_count(c, "refresh_token") == 2 and c.get("token_success") == 1,
          "IdP counters: %r", c)
    s = g.status()
    check(s["state"] == "authorized", "state after a 500: %r", s)
    # the connection is reset after a pause (the IdP hangs, then closes)
    IDP.fail_next(hang_ms=1500, grant_type="refresh_token")
    r = g.probe(CONN, 1, "--force")
    check(r["failed"] == 1 and r.get("class") == CLASS_TRANSIENT, "tm_probe (reset): %r", r)
    check(("all", "refresh") in g.tokens(), "the refresh token was deleted")
    s = g.status()
    check(s["state"] == "authorized" and s["last_error"] and s["fix"],
          "status after a reset connection (want authorized, with the error and fix): %r", s)
    r = g.probe(CONN, 1, "--force")
    check(r["ok"] == 1, "the refresh after a reset failed: %r", r)
    # a real timeout: no answer for longer than the manager's 30 s
    IDP.fail_next(hang_ms=45000, grant_type="refresh_token")
    t0 = time.monotonic()
    r = g.probe(CONN, 1, "--force", timeout=50)
    took = time.monotonic() - t0
    check(r["failed"] == 1 and r.get("class") == CLASS_TRANSIENT, "tm_probe (timeout): %r", r)
    check(25 < took < 40, "the timeout took %.1f s (the manager's is 30 s)", took)
    check("time" in (r.get("cause", "") + r.get("fix", "")).lower(),
          "the timeout is not named: %r", r)
    check(("all", "refresh") in g.tokens(), "the refresh token was deleted after a timeout")
    check(g.status()["state"] == "authorized", "state after a timeout: %r", g.status())
    r = g.probe(CONN, 1, "--force")
    check(r["ok"] == 1 and r["requests"] == 1, "the refresh after a timeout failed: %r", r)
    s = g.status()
    check(s["state"] == "authorized" and s["last_error"] is None,
          "status after a successful refresh: %r", s)
    check(g.tokens()[("all", "refresh")][0] != rt[0], "the refresh token never rotated")


# ---- 11, 12: secrets ----

def test_no_secrets_leak(binary):
    """Everything of this run so far, plus one more of every flow."""
    IDP.reset(device_interval=1)
    g = Gateway(binary, "leak").start()
    g.sign_in()
    p, code = device_start(g)
    IDP.control("POST", "device/approve", {"user_code": code, "username": USER})
    check(p.wait(15) == 0, "device login: %s%s", p.stdout, p.stderr)
    check(g.cli(["auth", "login", APP])[0] == 0, "app-only login")
    g.probe(CONN, 3, "--force")
    g.probe(APP, 3, "--force")
    IDP.fail_next(error="invalid_grant", code=70000, grant_type="refresh_token")
    g.probe(CONN, 1, "--force")
    for args in (["auth", "status"], ["auth", "status", "--json"], ["connection", "list"],
                 ["connection", "show", CONN, "--json"]):
        g.cli(args)
    g.snapshot()  # the daemon is stopped; its log and the database files are in CORPUS
    IDP.harvest()
    check(len(ISSUED) >= 6, "only %d tokens issued?", len(ISSUED))
    labels = [label for label, _ in CORPUS]
    check(len(CORPUS) > 20 and any(l.endswith("daemon log") for l in labels) and
          any("mailbridge.db-wal" in l for l in labels) and
          any("mailbridge.db (stopped)" in l for l in labels),
          "too little was collected: %r", labels)
    with open(g.secret_file, "rb") as f:  # the grep finds what it looks for
        check(CLIENT_SECRET.encode() in f.read(), "the secret file does not hold the secret")
    secrets = [("the client secret", CLIENT_SECRET.encode())]
    for t in ISSUED:
        kind = "an access token" if t.count(".") == 2 else "a refresh token"
        secrets.append((kind, t.encode()))
        if t.count(".") == 2 and len(t.rsplit(".", 1)[1]) >= 20:
            secrets.append(("an access token's signature", t.rsplit(".", 1)[1].encode()))
    leaks = []
    for label, data in CORPUS:
        for what, s in secrets:
            if s in data:
                leaks.append("%s in %s" % (what, label))
    check(not leaks, "secrets in clear text:\n  %s", "\n  ".join(sorted(set(leaks))[:30]))


def test_key_permissions(binary):
    IDP.reset()
    g = Gateway(binary, "key").start()
    g.stop()
    key = os.path.join(g.data_dir, "secret.key")
    mode = stat.S_IMODE(os.stat(key).st_mode)
    check(mode == 0o600, "%s was created with mode %04o (want 0600)", key, mode)
    for bad in (0o644, 0o640, 0o604):
        os.chmod(key, bad)
        r = mbtest.run([binary, "serve", "-c", g.conf], timeout=15)
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        remember("serve with key %04o" % bad, out)
        check(r.returncode != 0, "serve started with the key at mode %04o:\n%s", bad, out)
        check(key in out and "chmod 600" in out, "mode %04o: the message does not name %s "
              "and chmod 600: %s", bad, key, out)
        rc, out, err = g.cli(["auth", "status"])
        check(rc != 0 and "chmod 600" in err, "auth status with the key at mode %04o: rc=%d "
              "%s", bad, rc, err)
    os.chmod(key, 0o600)
    g.start()


TESTS = [
    ("auth_code", test_auth_code),
    ("callback_refusals", test_callback_refusals),
    ("device_approved", test_device_approved),
    ("device_slow_down", test_device_slow_down),
    ("device_declined", test_device_declined),
    ("device_expired", test_device_expired),
    ("client_credentials", test_client_credentials),
    ("refresh_rotation", test_refresh_rotation),
    ("single_flight", test_single_flight),
    ("refresh_ahead", test_refresh_ahead),
    ("invalid_grant", test_invalid_grant),
    ("invalid_client", test_invalid_client),
    ("transient", test_transient),
    ("key_permissions", test_key_permissions),
    ("no_secrets_leak", test_no_secrets_leak),
]


def _start_idp(d, binary, session):
    global IDP, PROBE
    PROBE = os.environ.get("MB_TM_PROBE") or os.path.join(
        os.path.dirname(binary), "tests", "tm_probe")
    if not os.access(PROBE, os.X_OK):
        raise RuntimeError("tm_probe not found at %s: build it (cmake --build build "
                           "--target tm_probe) or set MB_TM_PROBE" % PROBE)
    ca, cert, key = mbtest.make_certs(d)
    IDP = IdP(d, ca, cert, key)
    session.append(IDP.stop)


def main():
    return mbtest.run_with_peers(TESTS, 400, "oauth", {"idp": mbtest.PEER_MODULES["idp"]},
                                 _start_idp)


if __name__ == "__main__":
    sys.exit(main())
