#!/usr/bin/env python3
"""mailbridge doctor against Microsoft 365 stand-ins: test_doctor.py BINARY [TEST-NAME...]

One identity platform (tests/peers/idp), one Graph stand-in (tests/peers/graph) and one
Exchange SMTP stand-in (tests/peers/smtp) run for the whole run over TLS with a test CA made
here; their state is reset before each test. No daemon is needed: doctor works on the config
and the store. Delegated connections sign in with `auth login NAME --device`, approved through
the IdP's control API.

Covered (issue 6, "Proof", doctor part): a healthy Graph setup (delegated and app-only) and a
healthy microsoft-smtp setup pass; then each of the seed guide's five errors injected on
purpose, and the output names the guide's fix:
- Error 1 "cURL error 28": graph_url at a port that accepts and never answers (timeout,
  network fix) and no default connection (the Default Connection fix);
- Error 2 "Not Found": the sender's mailbox unlicensed (MailboxNotEnabledForRESTAPI, licence
  fix), and a default connection that is a plain SMTP server;
- Error 3 admin consent missing: AADSTS65001 / 90094 on refresh (consent + owners fix);
- Error 4 "unverified": an informational line saying it is not a blocker;
- Error 5 token expired / invalid: invalid_grant (re-authorize with `mailbridge auth login
  NAME`); a merely expired access token is refreshed by itself (pass);
plus SMTP AUTH disabled (535 5.7.139, the PowerShell fix), an expired and an expiring client
secret, missing permissions, and no token or secret in any output.

The API (POST/GET /api/v1/doctor on a running daemon): credentials required; POST runs doctor
in a child process and answers the same report as `mailbridge doctor --json` (same items, same
statuses), using the daemon's token rather than a refresh of its own; two POSTs at once share
one run; GET answers the last report; an unknown connection is 404.

Skipped (not failed) only when `node` is not installed.
"""
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mbtest  # noqa: E402
from mbtest import (CLIENT_ID, CLIENT_SECRET, USER, Daemon, SkipTest, check,  # noqa: E402
                    check_item as expect, cleanup_all, on_cleanup, run, tempdir, wait_until)

CODE_RE = re.compile(r"enter the code ([A-Z0-9-]+)")
BUDGET = 170  # seconds for the whole run (watchdog)

IDP = GRAPH = SMTP = None
CA = None
OUTPUTS = []  # everything doctor printed, for the secrets check
ISSUED = set()  # every token the IdP issued during the run


class Blackhole:
    """A TCP port that accepts connections and never answers (the guide's Error 1)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = False
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        on_cleanup(self.close)

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except OSError:
                continue

    def close(self):
        self.stop = True
        for c in self.conns:
            c.close()
        self.sock.close()


class Setup:
    """A config with [connection NAME] sections (stand-ins' URLs filled in) and a data_dir."""

    def __init__(self, binary, name, conns, server=None):
        self.binary = binary
        self.tmp = tempdir("mb-it-doctor-%s-" % name)
        self.secret_file = mbtest.secret_file(self.tmp, CLIENT_SECRET)
        self.d = Daemon(binary, self.tmp, name="mb", server=server)  # never started
        self.conf = self.d.conf
        self.db = os.path.join(self.d.data_dir, "mailbridge.db")
        mbtest.append_peer_conns(self.conf, conns, self.secret_file, IDP, GRAPH, CA)

    def cli(self, *args, timeout=60):
        r = run([self.binary] + list(args) + ["-c", self.conf], timeout=timeout)
        out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
        OUTPUTS.append(out + err)
        return r.returncode, out, err

    def doctor(self, *args, timeout=60):
        """(rc, text, {id: item}) — the text run, then the same with --json."""
        rc, out, err = self.cli("doctor", *args, timeout=timeout)
        check(rc in (0, 1), "doctor %s: rc=%d %s %s", args, rc, out, err)
        rc2, js, err2 = self.cli("doctor", "--json", *args, timeout=timeout)
        check(rc2 == rc, "doctor --json rc=%d, text rc=%d: %s", rc2, rc, err2)
        items = json.loads(js)
        check(isinstance(items, list) and items, "doctor --json: %r", js[:300])
        return rc, out, {i["id"]: i for i in items}

    def device_login(self, conn, username=USER):
        p = subprocess.Popen([self.binary, "auth", "login", conn, "--device", "-c", self.conf],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        on_cleanup(lambda: p.poll() is None and (p.kill(), p.wait(10)))
        out = []
        t = threading.Thread(target=lambda: out.extend(iter(p.stdout.readline, b"")),
                             daemon=True)
        t.start()
        m = wait_until(lambda: CODE_RE.search(b"".join(out).decode("utf-8", "replace")) or
                       (p.poll() is not None and ("exited", p.returncode)), 15,
                       "auth login --device to print its code")
        if isinstance(m, tuple):
            raise AssertionError("auth login --device exited %r: %s %s"
                                 % (p.returncode, b"".join(out), p.stderr.read()))
        IDP.control("POST", "device/approve", {"user_code": m.group(1), "username": username})
        rc = p.wait(20)
        t.join(5)
        check(rc == 0, "auth login %s --device: rc=%d %s", conn, rc, b"".join(out))


def graph_conn(sender=USER, auth="delegated", **kw):
    c = {"provider": "microsoft-graph", "sender": sender, "auth": auth}
    c.update(kw)
    return c


def mssmtp_conn(sender=USER, auth="delegated", **kw):
    c = {"provider": "microsoft-smtp", "sender": sender, "auth": auth, "smtp_url": SMTP.url}
    c.update(kw)
    return c


def status(items, iid):
    check(iid in items, "no item %s in %s", iid, sorted(items))
    return items[iid]["status"]


def no_failures(rc, out, items):
    bad = {k: v for k, v in items.items() if v["status"] == "fail"}
    check(rc == 0 and not bad, "doctor failed: rc=%d %s\n%s", rc, bad, out)


# ---- the healthy setups ----

def test_healthy_graph_delegated(binary):
    s = Setup(binary, "okd", [("office365", graph_conn(default="yes"))],
              server={"public_url": "https://mail.example.test"})
    s.device_login("office365")
    rc, out, items = s.doctor()
    no_failures(rc, out, items)
    for iid in ("config", "token", "scopes", "consent", "account", "mailbox", "reach_login",
                "reach_graph", "clock", "default"):
        expect(items, iid, "pass")
    expect(items, "scopes", "pass", "Mail.Send", "User.Read")
    expect(items, "account", "pass", USER)
    expect(items, "mailbox", "pass", "ErrorInvalidRecipients", "nothing was sent")
    expect(items, "redirect_uri", "unknown", "https://mail.example.test/oauth/callback")
    expect(items, "secret_expiry", "unknown")
    check(GRAPH.messages() == [], "the mailbox probe sent something: %r", GRAPH.messages())
    # the text form: one line per item, PASS/FAIL/WARN/???? + title + evidence
    for line in out.splitlines()[1:-1]:
        check(re.match(r"^(PASS|FAIL|WARN|\?\?\?\?|INFO)  \S.* — |^      fix: ", line),
              "bad line: %r", line)
    check(re.search(r"^PASS  mailbox enabled for Graph — ", out, re.M), "%s", out)
    check(re.search(r"^\?\?\?\?  redirect URI registered — ", out, re.M), "%s", out)


def test_healthy_graph_app_only(binary):
    s = Setup(binary, "oka", [("app", graph_conn(auth="app-only", default="yes"))])
    rc, out, items = s.doctor("app")
    no_failures(rc, out, items)
    expect(items, "token", "pass", "client-credentials")
    expect(items, "scopes", "pass", "Mail.Send")
    expect(items, "mailbox", "pass", "/v1.0/users/")
    expect(items, "account", "unknown")
    expect(items, "redirect_uri", "pass")


def test_healthy_smtp(binary):
    s = Setup(binary, "oks", [("ms", mssmtp_conn(default="yes"))])
    s.device_login("ms")
    rc, out, items = s.doctor()
    no_failures(rc, out, items)
    expect(items, "smtp_auth", "pass", "235", "nothing sent")
    expect(items, "scopes", "pass", "SMTP.Send")
    expect(items, "reach_smtp", "pass", "STARTTLS")
    expect(items, "account", "pass", USER)
    check("mailbox" not in items, "a Graph mailbox probe for microsoft-smtp: %r", items)


# ---- the seed guide's five errors, on purpose ----

def test_error1_timeout(binary):
    hole = Blackhole()
    s = Setup(binary, "e1", [("office365", graph_conn(default="yes"))])
    s.device_login("office365")
    with open(s.conf) as f:
        conf = f.read().replace("graph_url = %s" % GRAPH.base,
                                "graph_url = https://127.0.0.1:%d" % hole.port)
    with open(s.conf, "w") as f:
        f.write(conf)
    t0 = time.monotonic()
    rc, out, items = s.doctor("--timeout", "2")
    check(time.monotonic() - t0 < 40, "doctor took %.0f s", time.monotonic() - t0)
    check(rc == 1, "rc=%d\n%s", rc, out)
    expect(items, "reach_graph", "fail", "timeout", "cURL error 28", "firewall",
           "default connection")
    expect(items, "mailbox", "fail", "cURL error 28")
    expect(items, "reach_login", "pass")
    expect(items, "token", "pass")
    check(re.search(r"^FAIL  Graph host reachable — .*\n      fix: ", out, re.M), "%s", out)


def test_error1_no_default(binary):
    s = Setup(binary, "e1d", [("office365", graph_conn())])
    s.device_login("office365")
    rc, out, items = s.doctor()  # the only connection is checked
    check(rc == 1, "rc=%d\n%s", rc, out)
    expect(items, "default", "fail", "no default connection",
           "mailbridge connection default office365", "Errors 1 and 2")
    expect(items, "token", "pass")
    # the fix works
    rc, o, e = s.cli("connection", "default", "office365")
    check(rc == 0, "connection default: %d %s %s", rc, o, e)
    rc, out, items = s.doctor()
    no_failures(rc, out, items)
    expect(items, "default", "pass", "office365")


def test_error2_not_found(binary):
    s = Setup(binary, "e2", [("office365", graph_conn(default="yes"))])
    s.device_login("office365")
    GRAPH.control("POST", "mailboxes/" + USER, {"licensed": False})
    rc, out, items = s.doctor()
    check(rc == 1, "rc=%d\n%s", rc, out)
    expect(items, "mailbox", "fail", "MailboxNotEnabledForRESTAPI", "licence")
    expect(items, "default", "fail", "does not work", "mailbox enabled for Graph")
    # the other "Not Found": the default connection is some other SMTP server
    s2 = Setup(binary, "e2b", [("office365", graph_conn()),
                               ("relay", {"provider": "smtp", "sender": USER,
                                          "smtp_url": SMTP.url, "default": "yes"})])
    s2.device_login("office365")
    GRAPH.control("POST", "mailboxes/" + USER, {"licensed": True})
    rc, out, items = s2.doctor("office365")
    expect(items, "default", "warn", "plain SMTP", "Error 2", "connection default")


def test_error3_consent(binary):
    s = Setup(binary, "e3", [("office365", graph_conn(default="yes"))])
    s.device_login("office365")
    for code in (65001, 90094):
        IDP.fail_next(error="invalid_grant", code=code, grant_type="refresh_token", count=2)
        rc, out, items = s.doctor()
        check(rc == 1, "rc=%d\n%s", rc, out)
        expect(items, "token", "fail", "AADSTS%d" % code, "admin consent", "owners")
        expect(items, "consent", "fail", "Grant admin consent", "owners")
        IDP.control("DELETE", "failures")


def test_error4_unverified(binary):
    s = Setup(binary, "e4", [("app", graph_conn(auth="app-only", default="yes"))])
    rc, out, items = s.doctor()
    expect(items, "unverified", "info", "not a blocker")
    check(re.search(r"^INFO  \"Application is unverified\" — .*not a blocker", out, re.M),
          "%s", out)
    no_failures(rc, out, items)


def test_error5_token(binary):
    IDP.control("POST", "settings", {"access_token_ttl": 2})
    s = Setup(binary, "e5", [("office365", graph_conn(default="yes"))])
    s.device_login("office365")
    time.sleep(3)  # the access token is now expired: refreshed by itself
    rc, out, items = s.doctor()
    no_failures(rc, out, items)
    expect(items, "token", "pass", "refreshes them itself")
    # a dead grant: only a new sign-in helps
    IDP.fail_next(error="invalid_grant", code=700082, grant_type="refresh_token", count=2)
    rc, out, items = s.doctor()
    check(rc == 1, "rc=%d\n%s", rc, out)
    expect(items, "token", "fail", "invalid_grant" if "invalid_grant" in out else "AADSTS700082",
           "mailbridge auth login office365")
    check("fix: Sign in again with `mailbridge auth login office365`" in out, "%s", out)


# ---- more of the checklist ----

def test_smtp_auth_disabled(binary):
    s = Setup(binary, "sad", [("ms", mssmtp_conn(default="yes"))])
    s.device_login("ms")
    SMTP.control("POST", "faults", {"stage": "auth", "reply": "auth_disabled_mailbox",
                                    "count": -1})
    rc, out, items = s.doctor()
    check(rc == 1, "rc=%d\n%s", rc, out)
    expect(items, "smtp_auth", "fail", "5.7.139",
           "Set-CASMailbox -Identity %s -SmtpClientAuthenticationDisabled $false" % USER)
    expect(items, "reach_smtp", "pass")


def test_secret_expiry(binary):
    # a store-made connection (config ones are mirrored afresh on every run)
    s = Setup(binary, "sec", [])
    rc, o, e = s.cli("connection", "add", "app", "--provider", "microsoft-graph", "--auth",
                     "app-only", "--sender", USER, "--tenant", "contoso.test", "--client-id",
                     CLIENT_ID, "--client-secret-file", s.secret_file, "--login-url", IDP.base,
                     "--graph-url", GRAPH.base, "--ca-file", CA, "--default")
    check(rc == 0, "connection add: %d %s %s", rc, o, e)
    rc, out, items = s.doctor()
    expect(items, "secret_expiry", "unknown", "can't tell")
    db = sqlite3.connect(s.db)
    cols = [r[1] for r in db.execute("PRAGMA table_info(connections)")]
    check("secret_expires_at" in cols, "columns: %r", cols)
    now = int(time.time() * 1000)
    for when, want, word in ((now - 86400000, "fail", "expired"),
                             (now + 10 * 86400000, "warn", "in 9 days"),
                             (now + 400 * 86400000, "pass", "in 39")):
        db.execute("UPDATE connections SET secret_expires_at = ? WHERE name = 'app'", (when,))
        db.commit()
        rc, out, items = s.doctor()
        expect(items, "secret_expiry", want, word)
        check((rc == 1) == (want == "fail"), "rc=%d for %s\n%s", rc, want, out)
    db.close()


# ---- the API ----

def api_call(port, method, path, body=None, token=None, timeout=70):
    """(status, JSON answer); the answer is kept for the secrets test."""
    st, _, j, raw = mbtest.http_request(port, method, path, body, timeout=timeout,
                                        headers={"Authorization": "Bearer " + token}
                                        if token else None)
    OUTPUTS.append(raw.decode("utf-8", "replace"))
    return st, j


def test_api_doctor(binary):
    s = Setup(binary, "api", [("office365", graph_conn(default="yes")),
                              ("second", graph_conn(sender="second@contoso.test"))])
    s.device_login("office365")
    port = s.d.http_port
    s.d.start()
    token = s.d.create_token("doctor-test")
    st, j = api_call(port, "POST", "/api/v1/doctor", {})
    check(st == 401, "POST without credentials: %d %r", st, j)
    st, j = api_call(port, "GET", "/api/v1/doctor", token=token)
    check(st == 404 and j["error"]["code"] == "not_found", "GET before any run: %d %r", st, j)
    st, j = api_call(port, "POST", "/api/v1/doctor", {"connection": "nope"}, token=token)
    check(st == 404, "unknown connection: %d %r", st, j)
    # two at once: one run, one answer
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(
        api_call(port, "POST", "/api/v1/doctor", None, token=token))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(80)
    check(len(answers) == 2 and all(a[0] == 200 for a in answers), "answers %r", answers)
    check(answers[0][1] == answers[1][1], "two POSTs got different reports")
    check(s.d.log_tail(20000).count("admin: doctor started") == 1, "not one run:\n%s",
          s.d.log_tail())
    items = {i["id"]: i for i in answers[0][1]}
    expect(items, "token", "pass", "the daemon's token manager holds", "no")
    expect(items, "mailbox", "pass")
    for iid in ("app", "permissions", "admin_consent", "owners", "app_secret"):
        expect(items, iid, "unknown", "mailbridge doctor office365 --admin")
    # the CLI's report: the same items with the same statuses
    rc, js, err = s.cli("doctor", "--json", "--no-refresh")
    cli_items = {i["id"]: i for i in json.loads(js)}
    check({k: v["status"] for k, v in cli_items.items()} ==
          {k: v["status"] for k, v in items.items()}, "API %r\nCLI %r",
          {k: v["status"] for k, v in items.items()},
          {k: v["status"] for k, v in cli_items.items()})
    # GET: the last report; an explicit connection works too
    st, j = api_call(port, "GET", "/api/v1/doctor", token=token)
    check(st == 200 and j == answers[0][1], "GET: %d", st)
    st, j = api_call(port, "POST", "/api/v1/doctor", {"connection": "office365"}, token=token)
    check(st == 200 and isinstance(j, list) and j[0]["connection"] == "office365",
          "POST with the connection: %d %r", st, j)
    # another connection while a run goes on: 409. The Graph stand-in holds the run's first
    # POST (the mailbox probe) for 5 s, and the second POST goes once the run has started.
    GRAPH.fault(kind="delay", delay_ms=5000, method="POST", count=1)
    runs = s.d.log_tail(20000).count("admin: doctor started")
    first = []
    t = threading.Thread(target=lambda: first.append(
        api_call(port, "POST", "/api/v1/doctor", {"connection": "office365"}, token=token)))
    t.start()
    mbtest.wait_until(lambda: s.d.log_tail(20000).count("admin: doctor started") > runs, 20,
                      "the doctor run to start")
    st, j = api_call(port, "POST", "/api/v1/doctor", {"connection": "second"}, token=token)
    check(st == 409 and j["error"]["code"] == "conflict" and j["error"]["fix"],
          "another connection during a run: %d %r", st, j)
    t.join(80)
    check(first and first[0][0] == 200, "the held run: %r", first)
    s.d.check_clean_stop()


def collect_issued():
    """The tokens the IdP issued so far (before its reset forgets them)."""
    issued = IDP.control("GET", "issued")
    rows = issued.get("issued", issued.get("tokens", [])) if isinstance(issued, dict) else issued
    for t in rows:
        for k in ("access_token", "refresh_token", "id_token"):
            if isinstance(t, dict) and t.get(k):
                ISSUED.add(t[k])


def test_no_secrets_in_output(binary):
    collect_issued()
    blob = "\n".join(OUTPUTS)
    check(CLIENT_SECRET not in blob, "the client secret is in doctor's output")
    check(len(ISSUED) > 5, "too few issued tokens seen: %d", len(ISSUED))
    for t in ISSUED:
        check(t not in blob, "a token is in doctor's output")
    check(len(OUTPUTS) > 10, "too few outputs to check: %d", len(OUTPUTS))


TESTS = [
    ("healthy_graph_delegated", test_healthy_graph_delegated),
    ("healthy_graph_app_only", test_healthy_graph_app_only),
    ("healthy_smtp", test_healthy_smtp),
    ("error1_timeout", test_error1_timeout),
    ("error1_no_default", test_error1_no_default),
    ("error2_not_found", test_error2_not_found),
    ("error3_consent", test_error3_consent),
    ("error4_unverified", test_error4_unverified),
    ("error5_token", test_error5_token),
    ("smtp_auth_disabled", test_smtp_auth_disabled),
    ("secret_expiry", test_secret_expiry),
    ("api_doctor", test_api_doctor),
    ("no_secrets_in_output", test_no_secrets_in_output),
]


def _start_peers(d, binary, session):
    global IDP, GRAPH, SMTP, CA
    CA, IDP, GRAPH, SMTP = mbtest.start_idp_graph(d, session, smtp=True)


def _before_each(name):
    if name != "no_secrets_in_output":
        collect_issued()
        IDP.reset(device_interval=1)
        GRAPH.reset()
        SMTP.reset()


def main():
    return mbtest.run_with_peers(TESTS, BUDGET, "doctor", mbtest.PEER_MODULES,
                                 _start_peers, _before_each)

if __name__ == "__main__":
    sys.exit(main())
