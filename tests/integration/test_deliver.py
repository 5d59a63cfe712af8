#!/usr/bin/env python3
"""Delivery to Microsoft 365 stand-ins, on loopback: test_deliver.py BINARY [TEST-NAME...]

One identity platform (tests/peers/idp), one Microsoft Graph stand-in (tests/peers/graph) and
one Exchange SMTP stand-in (tests/peers/smtp) run for the whole run, over TLS with a test CA
made here; their state is reset before each test. Each test starts its own `mailbridge serve`
(free loopback ports, temp data_dir, retry_schedule = 1s,2s) and stops it by PID. Connections
sign in with client credentials (app-only) or the device flow (delegated: `auth login NAME
--device`, approved through the IdP's control API).

Covered (issue 4, "Proof"): swaks -> mailbridge -> Graph with the MIME compared byte for byte
and through the stand-in's mailparser fields, the Graph request-id in the attempt; a Bcc-only
envelope recipient; a 6 MB attachment (upload session; large_messages = fail; = smtp); the
per-mailbox caps (4 Graph requests, 3 SMTP sessions) under 60 messages; no retry before
Retry-After; fallback when the default connection's grant is dead (and `mailbridge test` not
using it); microsoft-smtp (XOAUTH2) and plain smtp end to end; every error row (Graph 401,
403 ErrorSendAsDenied, 404 MailboxNotEnabledForRESTAPI, 503, 413, ErrorMessageSizeExceeded, a
reset connection; SMTP 535 5.7.139, 432 4.3.2) with its state and explanation; kill -9 during
delivery then restart (at least once); "no connection"; `mailbridge test`, `queue retry`,
`log resend`; the alert webhook (one POST per minute per cause).

Not covered: Graph's "no answer in time" row (cURL error 28): the Graph request timeout is a
fixed 60 s in deliver_sched.c, too long for this run; the reset connection covers the
transport-error row instead.

Skipped (not failed) only when `node` is not installed. Needs `npm ci` in tests/peers/idp,
tests/peers/graph and tests/peers/smtp (scripts/install-peers.sh, run by `make test`).
"""
import base64
import email
import email.policy
import hashlib
import http.server
import json
import os
import re
import shutil
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mbtest  # noqa: E402
from mbtest import (QUEUED_RE, Daemon, SkipTest, check, cleanup_all,  # noqa: E402
                    dot_unstuff, on_cleanup, run, strip_received, tempdir, wait_until)

for _v in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_v, None)  # loopback only
os.environ.pop("MAILBRIDGE_CONFIG", None)
os.environ.pop("CREDENTIALS_DIRECTORY", None)

CLIENT_ID = "00001111-aaaa-2222-bbbb-3333cccc4444"
CLIENT_SECRET = "Zx8Q~test.secret_value-1234567890abcdefghij"
USER = "user@contoso.test"          # the IdP's user; a Graph mailbox
ALICE = "alice@contoso.test"
ADMIN = "admin@contoso.test"
PRINTER, PRINTER_PASSWORD = "printer@contoso.test", "PrinterPass1!"  # SMTP stand-in user
CODE_RE = re.compile(r"enter the code ([A-Z0-9-]+)")
BUDGET = 420  # seconds for the whole run (watchdog)

IDP = GRAPH = SMTP = None  # the peers of this run
CA = None


# ---- a gateway: config with connections, the daemon, its CLI ----

def graph_conn(sender, auth="app-only", **kw):
    c = {"provider": "microsoft-graph", "sender": sender, "auth": auth}
    c.update(kw)
    return c


def mssmtp_conn(sender, auth="app-only", **kw):
    c = {"provider": "microsoft-smtp", "sender": sender, "auth": auth, "smtp_url": SMTP.url}
    c.update(kw)
    return c


class Gateway:
    """A data_dir, a config with the given [connection NAME] sections (the OAuth keys and the
    stand-ins' URLs filled in), and `mailbridge serve`."""

    def __init__(self, binary, name, conns, server=None):
        self.binary = binary
        self.tmp = tempdir("mb-it-deliver-%s-" % name)
        self.secret_file = mbtest.secret_file(self.tmp, CLIENT_SECRET)
        srv = {"retry_schedule": "1s,2s", "log_level": "info"}
        srv.update(server or {})
        self.d = Daemon(binary, self.tmp, name="mb", server=srv)
        self.conf = self.d.conf
        self.db = os.path.join(self.d.data_dir, "mailbridge.db")
        mbtest.append_peer_conns(self.conf, conns, self.secret_file, IDP, GRAPH, CA)

    def start(self):
        self.d.start()
        return self

    @property
    def port(self):
        return self.d.smtp_port

    def cli(self, *args, timeout=60):
        r = run([self.binary] + list(args) + ["-c", self.conf], timeout=timeout)
        return (r.returncode, r.stdout.decode("utf-8", "replace"),
                r.stderr.decode("utf-8", "replace"))

    def device_login(self, conn):
        """auth login CONN --device, approved at the IdP as USER."""
        p = subprocess.Popen([self.binary, "auth", "login", conn, "--device", "-c", self.conf],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        on_cleanup(lambda: p.poll() is None and (p.kill(), p.wait(10)))
        out, err = [], []
        pumps = [threading.Thread(target=lambda s=s, b=b: b.extend(iter(s.readline, b"")),
                                  daemon=True) for s, b in ((p.stdout, out), (p.stderr, err))]
        for t in pumps:
            t.start()

        def text():
            return (b"".join(out) + b"".join(err)).decode("utf-8", "replace")
        m = wait_until(lambda: CODE_RE.search(b"".join(out).decode("utf-8", "replace")) or
                       (p.poll() is not None and ("exited", p.returncode)), 15,
                       "auth login --device to print its code")
        check(not isinstance(m, tuple), "auth login --device exited %r: %s", p.returncode,
              text())
        IDP.control("POST", "device/approve", {"user_code": m.group(1), "username": USER})
        try:
            rc = p.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError("auth login --device still running 20 s after the approval: "
                                 "%s" % text())
        for t in pumps:
            t.join(5)
        check(rc == 0, "auth login %s --device: rc=%d %s", conn, rc, text())

    def msg(self, qid):
        return self.d.queue_json(qid)

    def wait_state(self, qid, states, timeout=20, what=None):
        states = (states,) if isinstance(states, str) else tuple(states)
        last = {}

        def probe():
            last["m"] = self.msg(qid)
            return last["m"]["state"] in states and last["m"]
        try:
            return wait_until(probe, timeout, what or "%s to be %s" % (qid, "/".join(states)),
                              step=0.2)
        except AssertionError as e:
            raise AssertionError("%s; the message: %s\ndaemon log:\n%s" % (
                e, json.dumps({k: v for k, v in last.get("m", {}).items() if k != "message"}),
                self.d.log_tail(2500))) from None

    def attempts(self, qid):
        """The attempt rows of a message: (result, connection, detail, upstream_id, at)."""
        db = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True, timeout=10)
        try:
            return db.execute("SELECT result, connection, detail, upstream_id, at FROM attempts"
                              " WHERE message_id = ? ORDER BY id", (qid,)).fetchall()
        finally:
            db.close()

    def next_attempt_ms(self, qid):
        db = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True, timeout=10)
        try:
            return db.execute("SELECT next_attempt_at FROM messages WHERE id = ?",
                              (qid,)).fetchone()[0]
        finally:
            db.close()


# ---- messages ----

def make_msg(frm, to, subject, body="Hello.\r\n", cc=None, headers=(), msgid=None):
    msgid = msgid or "<%s@test.example>" % hashlib.sha1(os.urandom(8)).hexdigest()[:16]
    h = ["From: %s" % frm, "To: %s" % to]
    if cc:
        h.append("Cc: %s" % cc)
    h += ["Subject: %s" % subject, "Date: Thu, 01 Jan 2026 12:00:00 +0000",
          "Message-ID: %s" % msgid] + list(headers)
    return ("\r\n".join(h) + "\r\n\r\n").encode() + (body.encode()
                                                     if isinstance(body, str) else body)


class Submit:
    """One SMTP session to the gateway; send() returns the queue id."""

    def __init__(self, port):
        self.s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30)
        self.s.ehlo()

    def send(self, env_from, rcpts, data):
        code, resp = self.s.mail(env_from)
        check(code == 250, "MAIL: %d %r", code, resp)
        for r in rcpts:
            code, resp = self.s.rcpt(r)
            check(code == 250, "RCPT %s: %d %r", r, code, resp)
        code, resp = self.s.data(data)
        m = QUEUED_RE.search("%d %s" % (code, resp.decode("utf-8", "replace")))
        check(code == 250 and m, "DATA: %d %r", code, resp)
        return m.group(1)

    def close(self):
        try:
            self.s.quit()
        except (smtplib.SMTPException, OSError):
            pass


def submit(g, env_from, rcpts, data):
    s = Submit(g.port)
    try:
        return s.send(env_from, rcpts, data)
    finally:
        s.close()


def graph_msg_by_mid(msgid, mailbox=None):
    """The stand-in's recorded messages with this Message-ID."""
    mid = msgid.strip("<>")
    return [m for m in GRAPH.messages(omit_mime=1)
            if (m.get("message_id") or "").strip("<>") == mid and
            (mailbox is None or m.get("mailbox") == mailbox)]


def wait_graph(msgid, n=1, timeout=20):
    return wait_until(lambda: len(graph_msg_by_mid(msgid)) >= n and graph_msg_by_mid(msgid),
                      timeout, "the Graph stand-in to record %s" % msgid, step=0.2)


def err_of(m):
    return m.get("last_error") or ""


# ---- 1, 2: the MIME through Graph; a Bcc-only recipient ----

def test_swaks_graph_mime(binary):
    g = Gateway(binary, "mime", [("app", graph_conn(USER, default="yes"))]).start()
    attachment = bytes(range(256)) * 40
    att_b64 = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    content = (b"From: Test User <user@contoso.test>\r\n"
               b"To: Bob <bob@contoso.test>\r\n"
               b"Cc: carol@contoso.test\r\n"
               b"Subject: =?UTF-8?B?R3LDvMOfZSB2aWEgR3JhcGg=?=\r\n"
               b"Date: Thu, 01 Jan 2026 12:00:00 +0000\r\n"
               b"Message-ID: <swaks-graph-1@client.test>\r\n"
               b"X-Custom:  kept   as is\r\n"
               b"MIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
               b"\r\n"
               b"preamble\r\n"
               b"--b1\r\n"
               b"Content-Type: text/plain; charset=utf-8\r\n"
               b"Content-Transfer-Encoding: 8bit\r\n"
               b"\r\n"
               b"Gr\xc3\xbc\xc3\x9fe \xe2\x9c\x93\r\n"
               b"..a line that starts with a dot\r\n"
               b"  trailing spaces   \r\n"
               b"--b1\r\n"
               b"Content-Type: application/octet-stream\r\n"
               b"Content-Disposition: attachment; filename=\"bytes.bin\"\r\n"
               b"Content-Transfer-Encoding: base64\r\n"
               b"\r\n" + att_b64 +
               b"--b1--\r\n")
    data_file = os.path.join(g.tmp, "data.eml")
    with open(data_file, "wb") as f:
        f.write(content + b".")
    r = run(["swaks", "--server", "127.0.0.1:%d" % g.port, "--helo", "swaks.test",
             "--from", USER, "--to", "bob@contoso.test,carol@contoso.test",
             "--data", "@" + data_file, "--no-data-fixup", "--timeout", "10"], timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    check(r.returncode == 0, "swaks failed rc=%d\n%s%s", r.returncode, out, r.stderr)
    ids = QUEUED_RE.findall(out)
    check(len(ids) == 1, "no 'queued as' in swaks output:\n%s", out)
    qid = ids[0]
    submitted = dot_unstuff(content)
    stored = g.d.queue_raw(qid)
    check(strip_received(stored) == submitted, "the store does not hold what swaks sent")
    g.wait_state(qid, "sent")
    m = [x for x in g.d.queue_list() if x["id"] == qid]  # `log --json`
    check(len(m) == 1 and m[0]["state"] == "sent", "log --json: %r", m)
    m = m[0]
    check(m["connection"] == "app" and m["attempts"] == 1 and m["last_error"] is None,
          "log entry: %r", {k: v for k, v in m.items() if k != "message"})
    rec = wait_graph("<swaks-graph-1@client.test>")
    check(len(rec) == 1, "recorded %d times", len(rec))
    rec = rec[0]
    check(rec["via"] == "sendMail-mime" and rec["auth"] == "app" and rec["mailbox"] == USER,
          "recorded as %r", {k: rec.get(k) for k in ("via", "auth", "mailbox")})
    # byte for byte: what was submitted, with our Received: in front and nothing else
    mime = GRAPH.mime(rec["id"])
    check(mime == stored, "the MIME at Graph differs from the stored message:\n  stored: %r\n"
          "  graph:  %r", stored[:400], mime[:400])
    check(strip_received(mime) == submitted, "the MIME at Graph is not the submitted message "
          "plus one Received:")
    check(re.match(rb"Received: from swaks\.test \(\[127\.0\.0\.1\]\)\r\n\tby mx\.test "
                   rb"\(mailbridge\) with ESMTP id " + qid.encode(), mime),
          "Received: %r", mime[:200])
    # Python's parser agrees, part by part
    a = email.message_from_bytes(submitted, policy=email.policy.default)
    b = email.message_from_bytes(strip_received(mime), policy=email.policy.default)
    check(list(a.items()) == list(b.items()), "headers differ: %r vs %r", a.items(), b.items())
    pa = [(p.get_content_type(), p.get_payload(decode=True)) for p in a.walk()
          if not p.is_multipart()]
    pb = [(p.get_content_type(), p.get_payload(decode=True)) for p in b.walk()
          if not p.is_multipart()]
    check(pa == pb, "parts differ")
    # the stand-in's mailparser fields
    check(rec["subject"] == "Grüße via Graph", "subject %r", rec["subject"])
    check(rec["from"] == USER, "from %r", rec["from"])
    check(rec["recipients"] == {"to": ["bob@contoso.test"], "cc": ["carol@contoso.test"],
                                "bcc": []}, "recipients %r", rec["recipients"])
    check(rec["message_id"] == "<swaks-graph-1@client.test>", "message_id %r",
          rec["message_id"])
    att = [x for x in rec["attachments"] if x.get("name") == "bytes.bin"]
    check(len(att) == 1 and att[0]["sha256"] == hashlib.sha256(attachment).hexdigest(),
          "attachment %r", rec["attachments"])
    # the request-id Graph gave is the attempt's upstream id and in the log line
    reqs = [q for q in GRAPH.requests() if q["path"].endswith("/sendMail")]
    check(len(reqs) == 1 and reqs[0]["status"] == 202, "sendMail requests: %r", reqs)
    rid = reqs[0]["request_id"]
    check(rec["request_id"] == rid, "request ids %r %r", rec["request_id"], rid)
    at = g.attempts(qid)
    check(len(at) == 1 and at[0][0] == "sent" and at[0][1] == "app" and at[0][3] == rid,
          "attempt rows: %r (want upstream_id %s)", at, rid)
    check(re.search(r"deliver: sent: id=%s connection=app result=sent upstream=%s " % (qid, rid),
                    g.d.log_tail(10 ** 6)),
          "no 'deliver: sent: id=%s ... upstream=%s' line in the daemon log:\n%s", qid, rid,
          g.d.log_tail())


def test_bcc_only(binary):
    g = Gateway(binary, "bcc", [("app", graph_conn(USER, default="yes"))]).start()
    data = make_msg(USER, "to@contoso.test", "bcc only", cc="cc@contoso.test",
                    msgid="<bcc-1@client.test>")
    qid = submit(g, USER, ["to@contoso.test", "cc@contoso.test", "hidden@contoso.test"], data)
    g.wait_state(qid, "sent")
    rec = wait_graph("<bcc-1@client.test>")[0]
    check(sorted(rec["all_recipients"]) == ["cc@contoso.test", "hidden@contoso.test",
                                            "to@contoso.test"],
          "recipients at Graph: %r", rec["all_recipients"])
    check(rec["recipients"]["bcc"] == ["hidden@contoso.test"], "bcc %r", rec["recipients"])
    check("hidden@contoso.test" not in rec["recipients"]["to"] + rec["recipients"]["cc"],
          "the Bcc-only recipient is visible in To/Cc: %r", rec["recipients"])
    mime = GRAPH.mime(rec["id"])
    p = email.message_from_bytes(mime, policy=email.policy.default)
    vis = " ".join(str(p.get_all(h, [])) for h in ("To", "Cc"))
    check("hidden" not in vis, "hidden in To/Cc headers: %s", vis)
    check(b"hidden@contoso.test" not in mime.split(b"\r\n\r\n", 1)[1],
          "the address leaked into the body")


# ---- 3: a 6 MB attachment ----

def big_message(frm, to, msgid, blob):
    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    return make_msg(frm, to, "big " + msgid, msgid=msgid, headers=(
        "MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="big-b"'),
        body=b"--big-b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee the attachment\r\n"
             b"--big-b\r\nContent-Type: application/octet-stream\r\n"
             b"Content-Disposition: attachment; filename=\"big.bin\"\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--big-b--\r\n")


def test_large_attachment(binary):
    # big: delegated (device flow), upload sessions (Mail.ReadWrite is requested for it);
    # nobig: large_messages = fail (the default); viasmtp: large_messages = smtp
    g = Gateway(binary, "large", [
        ("big", graph_conn(USER, auth="delegated", large_messages="upload-session",
                           default="yes")),
        ("nobig", graph_conn(ALICE, large_messages="fail")),
        ("viasmtp", graph_conn(ADMIN, large_messages="smtp", smtp_url=SMTP.url)),
    ])
    g.device_login("big")
    g.start()
    blob = os.urandom(6 * 1024 * 1024)
    digest = hashlib.sha256(blob).hexdigest()
    s = Submit(g.port)
    try:
        q_big = s.send(USER, ["to@contoso.test"], big_message(USER, "to@contoso.test",
                                                              "<big-1@client.test>", blob))
        q_fail = s.send(ALICE, ["to@contoso.test"], big_message(ALICE, "to@contoso.test",
                                                                "<big-2@client.test>", blob))
        q_smtp = s.send(ADMIN, ["to@contoso.test"], big_message(ADMIN, "to@contoso.test",
                                                                "<big-3@client.test>", blob))
    finally:
        s.close()
    failures = []

    def part(what, fn):
        try:
            fn()
        except AssertionError as e:
            failures.append("%s: %s" % (what, e))

    def upload():
        m = g.wait_state(q_big, ("sent", "failed"), timeout=60)
        check(m["state"] == "sent", "upload-session: %s", err_of(m))
        rec = wait_graph("<big-1@client.test>")[0]
        check(rec["via"] == "draft-send" and rec["auth"] == "delegated", "recorded as %r",
              {k: rec.get(k) for k in ("via", "auth", "mailbox")})
        up = [a for a in rec["attachments"] if a.get("source") == "upload"]
        check(len(up) == 1 and up[0]["name"] == "big.bin" and up[0]["size"] == len(blob) and
              up[0]["sha256"] == digest, "attachments at Graph: %r", rec["attachments"])
        raw = GRAPH.raw("messages/%s/attachments/%d" % (rec["id"],
                                                        rec["attachments"].index(up[0])))
        check(hashlib.sha256(raw).hexdigest() == digest, "the downloaded attachment differs")
        puts = [q for q in GRAPH.requests() if q["method"] == "PUT"]
        check(len(puts) >= 2 and all(q["status"] in (200, 201) for q in puts),
              "upload PUTs: %r", [(q["status"], q["bytes_in"]) for q in puts])
        check(rec["subject"] == "big <big-1@client.test>" and rec["all_recipients"] ==
              ["to@contoso.test"], "draft fields %r %r", rec["subject"], rec["all_recipients"])

    def fail():
        m = g.wait_state(q_fail, ("sent", "failed"), timeout=30)
        check(m["state"] == "failed", "large_messages = fail: state %s", m["state"])
        check("large_messages" in err_of(m), "the reason does not name large_messages: %r",
              err_of(m))
        check(not graph_msg_by_mid("<big-2@client.test>"), "it reached Graph anyway")

    def via_smtp():
        m = g.wait_state(q_smtp, ("sent", "failed"), timeout=60)
        check(m["state"] == "sent", "large_messages = smtp: %s", err_of(m))
        recs = [x for x in SMTP.messages() if x["parsed"]["message_id"] ==
                "<big-3@client.test>"]
        check(len(recs) == 1, "SMTP stand-in recorded %d", len(recs))
        r = recs[0]
        check(r["mailbox"] == ADMIN and r["auth_mechanism"] == "XOAUTH2" and r["tls"],
              "SMTP session: %r", {k: r.get(k) for k in ("mailbox", "auth_mechanism", "tls")})
        att = r["parsed"]["attachments"]
        check(len(att) == 1 and att[0]["sha256"] == digest, "attachments: %r", att)
        check(not graph_msg_by_mid("<big-3@client.test>"), "it went to Graph too")

    part("upload-session", upload)
    part("large_messages = fail", fail)
    part("large_messages = smtp", via_smtp)
    check(not failures, "\n".join(failures))


def test_large_smtp_delegated(binary):
    """A delegated Graph connection with large_messages = smtp sends a big message through
    its SMTP transport: the sign-in must have asked for SMTP.Send too."""
    g = Gateway(binary, "lsd", [("d", graph_conn(USER, auth="delegated", large_messages="smtp",
                                                 smtp_url=SMTP.url, default="yes"))])
    g.device_login("d")
    g.start()
    blob = os.urandom(4 * 1024 * 1024)
    qid = submit(g, USER, ["to@contoso.test"],
                 big_message(USER, "to@contoso.test", "<lsd-1@client.test>", blob))
    m = g.wait_state(qid, ("sent", "failed", "deferred"), timeout=30)
    rc, out, err = g.cli("auth", "status", "d")
    scopes = re.search(r"scopes: *(.*)", out)
    check(m["state"] == "sent", "state %s, last_error %r; the connection's scopes: %s",
          m["state"], err_of(m), scopes.group(1) if scopes else out)
    recs = [x for x in SMTP.messages() if x["parsed"]["message_id"] == "<lsd-1@client.test>"]
    check(len(recs) == 1 and recs[0]["auth_kind"] == "delegated" and
          recs[0]["parsed"]["attachments"][0]["sha256"] == hashlib.sha256(blob).hexdigest(),
          "at the SMTP stand-in: %r", recs)


# ---- 4: per-mailbox caps ----

def test_caps_graph(binary):
    g = Gateway(binary, "capsg", [("app", graph_conn(USER, default="yes"))]).start()
    GRAPH.control("POST", "settings", {"latency_ms": 300})
    s = Submit(g.port)
    ids = {}
    try:
        for i in range(60):
            mid = "<cap-%d@client.test>" % i
            ids[s.send(USER, ["to@contoso.test"],
                       make_msg(USER, "to@contoso.test", "cap %d" % i, msgid=mid))] = mid
    finally:
        s.close()
    wait_until(lambda: all(m["state"] == "sent" for m in g.d.queue_list()
                           if m["id"] in ids), 60, "60 messages sent", step=0.5)
    got = {m["message_id"] for m in GRAPH.messages(omit_mime=1)}
    check(got >= set(ids.values()), "missing at Graph: %r", set(ids.values()) - got)
    inf = GRAPH.inflight()["mailboxes"][USER]
    check(inf["max"] <= 4, "%d Graph requests in flight for %s at once (cap 4)", inf["max"], USER)
    check(inf["max"] >= 2, "the requests never overlapped (max %d): the test proves nothing",
          inf["max"])
    over = [q for q in GRAPH.requests() if (q.get("in_flight_at_start") or 0) > 4]
    check(not over, "requests that started with more than 4 in flight: %r", over[:3])


def test_caps_smtp(binary):
    g = Gateway(binary, "capss", [("ms", mssmtp_conn(ALICE, default="yes"))]).start()
    SMTP.control("POST", "settings", {"max_sessions_per_mailbox": 3})
    SMTP.fault(stage="mail", delay_ms=250, count=-1)  # slow MAIL FROM: sessions overlap
    s = Submit(g.port)
    ids = []
    try:
        for i in range(30):
            ids.append(s.send(ALICE, ["to@contoso.test"],
                              make_msg(ALICE, "to@contoso.test", "smtp cap %d" % i,
                                       msgid="<scap-%d@client.test>" % i)))
    finally:
        s.close()
    wait_until(lambda: all(m["state"] in ("sent", "failed") for m in g.d.queue_list()
                           if m["id"] in ids), 60, "30 messages delivered", step=0.5)
    st = SMTP.stats()
    mb = st["mailboxes"].get(ALICE, {})
    bad = [m for m in g.d.queue_list() if m["state"] != "sent"]
    check(not bad, "not sent: %r", [(m["id"], m["state"], m["last_error"]) for m in bad][:3])
    check(mb.get("messages") == 30, "the SMTP stand-in has %r messages for %s", mb.get("messages"),
          ALICE)
    check(mb.get("max_seen", 99) <= 3 and mb.get("max_attempted", 99) <= 3,
          "SMTP sessions for %s: max_seen %r, max_attempted %r (cap 3)", ALICE,
          mb.get("max_seen"), mb.get("max_attempted"))
    check(mb.get("limit_rejections", 0) == 0 and st.get("limit_rejections", 0) == 0,
          "432s served: %r", st)
    check(not any(str(k).startswith("432") for k in st.get("replies_by_code", {})),
          "replies: %r", st.get("replies_by_code"))
    check(mb.get("max_seen", 0) >= 2, "the sessions never overlapped (max_seen %r)",
          mb.get("max_seen"))


# ---- 5: Retry-After ----

def iso_s(t):
    """The stand-in's ISO time (2026-01-01T12:00:00.123Z) as seconds."""
    import datetime
    return datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def test_retry_after(binary):
    g = Gateway(binary, "ra", [("app", graph_conn(USER, default="yes"))]).start()
    GRAPH.fault(kind="throttle", retry_after=3, count=1)
    qid = submit(g, USER, ["to@contoso.test"], make_msg(USER, "to@contoso.test", "throttled",
                                                        msgid="<ra-1@client.test>"))
    m = g.wait_state(qid, "deferred", timeout=10)
    check("throttling" in err_of(m) and "429" in err_of(m), "last_error: %r", err_of(m))
    g.wait_state(qid, "sent", timeout=15)
    reqs = [q for q in GRAPH.requests() if q["path"].endswith("/sendMail")]
    check([q["status"] for q in reqs] == [429, 202], "sendMail statuses: %r",
          [(q["status"], q["time"]) for q in reqs])
    gap = iso_s(reqs[1]["time"]) - (iso_s(reqs[0]["time"]) + reqs[0]["duration_ms"] / 1000.0)
    check(gap >= 3.0, "retried %.2f s after the 429 with Retry-After: 3", gap)
    check(gap < 6.0, "retried only %.2f s after a 3 s Retry-After", gap)


def test_timeout(binary):
    """Graph does not answer within request_timeout: deferred with the guide's "cURL error 28"
    explanation, then sent once Graph answers again."""
    g = Gateway(binary, "to", [("app", graph_conn(USER, default="yes",
                                                  request_timeout="2s"))]).start()
    GRAPH.fault(kind="hang", delay_ms=10000, count=1, path_prefix="/v1.0/users")
    t0 = time.time()
    qid = submit(g, USER, ["to@contoso.test"], make_msg(USER, "to@contoso.test", "slow",
                                                        msgid="<to-1@client.test>"))
    m = g.wait_state(qid, "deferred", timeout=15)
    e = err_of(m)
    check("cURL error 28" in e and "Fix:" in e, "last_error: %r", e)
    check(time.time() - t0 < 9, "the 2 s request_timeout took %.1f s", time.time() - t0)
    g.wait_state(qid, "sent", timeout=20)


# ---- 6: fallback ----

def test_fallback(binary):
    g = Gateway(binary, "fb", [
        ("primary", graph_conn(USER, auth="delegated", default="yes", fallback="backup",
                               fallback_after="3")),
        ("backup", graph_conn(ALICE)),
    ])
    g.device_login("primary")
    g.start()
    GRAPH.control("POST", "mailboxes/%s" % ALICE, {"send_as": [USER]})
    # the grant dies: Graph refuses the access token, the refresh gets AADSTS700082
    IDP.fail_next(error="invalid_grant", code=700082, grant_type="refresh_token", count=-1)
    GRAPH.fault(kind="unauthorized", mailbox=USER, count=-1)
    t0 = time.monotonic()
    q1 = submit(g, USER, ["to@contoso.test"], make_msg(USER, "to@contoso.test", "fallback 1",
                                                       msgid="<fb-1@client.test>"))
    m = g.wait_state(q1, ("deferred", "sent", "failed"), timeout=10)
    if m["state"] == "deferred":
        check(m["connection"] == "primary" and "AADSTS700082" in err_of(m) and
              "auth login" in err_of(m), "the first attempt: %r", m)
    # a message that comes while the primary is known to be down goes to the backup at once
    q2 = submit(g, USER, ["to@contoso.test"], make_msg(USER, "to@contoso.test", "fallback 2",
                                                       msgid="<fb-2@client.test>"))
    m2 = g.wait_state(q2, ("sent", "failed"), timeout=10)
    check(m2["state"] == "sent" and m2["connection"] == "backup", "the second message: %s "
          "through %s (%s)", m2["state"], m2["connection"], err_of(m2))
    rec = wait_graph("<fb-2@client.test>")
    check(len(rec) == 1 and rec[0]["mailbox"] == ALICE and rec[0]["auth"] == "app",
          "recorded %r", [(r["mailbox"], r["auth"]) for r in rec])
    # the Email Test does not fall back
    n = len(GRAPH.messages(omit_mime=1))
    rc, out, err = g.cli("test", "--to", "x@contoso.test", "--connection", "primary")
    check(rc != 0, "mailbridge test --connection primary succeeded: %s", out)
    check("not delivered" in err and "auth login" in err and "AADSTS700082" in err,
          "the error is not explained: %s%s", out, err)
    check(len(GRAPH.messages(omit_mime=1)) == n, "mailbridge test used another connection")
    # the message whose attempt found the grant dead goes through the backup too, soon
    try:
        m = g.wait_state(q1, "sent", timeout=12)
    except AssertionError:
        m = g.msg(q1)
        raise AssertionError(
            "the message whose first attempt found the primary's grant dead was not delivered "
            "through the fallback within %.0f s: state %s, connection %s, attempts %d, next "
            "attempt in %.0f s (retry_schedule = 1s,2s), last_error %r\ndaemon log:\n%s" % (
                time.monotonic() - t0, m["state"], m["connection"], m["attempts"],
                (g.next_attempt_ms(q1) - time.time() * 1000) / 1000.0, err_of(m),
                g.d.log_tail(1500))) from None
    check(m["connection"] == "backup", "sent through %r", m["connection"])
    at = g.attempts(q1)
    check(at[0][1] == "primary" and at[0][0] == "tempfail" and at[-1][1] == "backup",
          "attempts %r", at)


# ---- 7: the SMTP transports ----

def test_smtp_transports(binary):
    pw = None
    g = Gateway(binary, "smtp", [
        ("ms", mssmtp_conn(USER, auth="delegated", default="yes")),
        ("msapp", mssmtp_conn(ALICE)),
        ("plain", {"provider": "smtp", "sender": PRINTER, "smtp_url": SMTP.url,
                   "username": PRINTER, "password_file": "PWFILE", "tls": "required"}),
    ])
    pw = os.path.join(g.tmp, "smtp-password")
    with open(pw, "w") as f:
        f.write(PRINTER_PASSWORD + "\n")
    os.chmod(pw, 0o600)
    with open(g.conf) as f:
        conf = f.read().replace("PWFILE", pw)
    with open(g.conf, "w") as f:
        f.write(conf)
    g.device_login("ms")
    g.start()
    s = Submit(g.port)
    try:
        sent = {
            "ms": (s.send(USER, ["to@contoso.test", "bcc@contoso.test"],
                          make_msg(USER, "to@contoso.test", "xoauth2 delegated",
                                   msgid="<sm-1@client.test>")), USER, "delegated"),
            "msapp": (s.send(ALICE, ["to@contoso.test"],
                             make_msg(ALICE, "to@contoso.test", "xoauth2 app",
                                      msgid="<sm-2@client.test>")), ALICE, "app"),
            "plain": (s.send(PRINTER, ["to@contoso.test"],
                             make_msg(PRINTER, "to@contoso.test", "plain smtp",
                                      msgid="<sm-3@client.test>")), PRINTER, "password"),
        }
    finally:
        s.close()
    problems = []
    for conn, (qid, mailbox, kind) in sent.items():
        m = g.wait_state(qid, ("sent", "failed"), timeout=20)
        if m["state"] != "sent":
            problems.append("%s: %s %s" % (conn, m["state"], err_of(m)))
            continue
        check(m["connection"] == conn, "%s went through %s", qid, m["connection"])
        recs = [x for x in SMTP.messages() if x["mailbox"] == mailbox]
        if len(recs) != 1:
            problems.append("%s: %d messages at the SMTP stand-in" % (conn, len(recs)))
            continue
        r = recs[0]
        want_mech = "XOAUTH2" if kind != "password" else r["auth_mechanism"]
        if not (r["auth_kind"] == kind and r["auth_mechanism"] == want_mech and r["tls"] and
                r["envelope_from"] == mailbox):
            problems.append("%s: session %r" % (conn, {k: r.get(k) for k in (
                "auth_kind", "auth_mechanism", "auth_identity", "tls", "envelope_from")}))
        if sorted(r["recipients"]) != sorted(g.msg(qid)["recipients"]):
            problems.append("%s: recipients %r" % (conn, r["recipients"]))
        if base64.b64decode(r["raw_b64"]) != g.d.queue_raw(qid):
            problems.append("%s: the bytes at the SMTP stand-in differ from the stored message"
                            % conn)
    check(not problems, "\n".join(problems))
    st = SMTP.stats()
    fails = {k: v for k, v in (st.get("auth_failures_by_reason") or {}).items()}
    check(set(fails) <= {"wrong_audience"}, "auth failures at the SMTP stand-in: %r", fails)


def test_mssmtp_signin_token(binary):
    """After `auth login --device` of a delegated microsoft-smtp connection, the first XOAUTH2
    uses a token for Outlook (not one for Graph that Exchange refuses)."""
    g = Gateway(binary, "smtptok", [("ms", mssmtp_conn(USER, auth="delegated",
                                                       default="yes"))])
    g.device_login("ms")
    g.start()
    qid = submit(g, USER, ["to@contoso.test"], make_msg(USER, "to@contoso.test", "first"))
    m = g.wait_state(qid, ("sent", "failed"))
    check(m["state"] == "sent", "state %s %s", m["state"], err_of(m))
    st = SMTP.stats()
    check(st.get("auth_failures", 0) == 0,
          "the first AUTH XOAUTH2 after the sign-in was refused: %r (%r): the token stored for "
          "the outlook resource after the device-code sign-in is the Graph one",
          st.get("auth_failures_by_reason"), st.get("last_auth_failure"))


# ---- 8: every error row ----

def test_error_rows(binary):
    g = Gateway(binary, "rows", [("g", graph_conn(USER, default="yes")),
                                 ("s", mssmtp_conn(ALICE))]).start()
    n = [0]
    problems = []

    def send(frm=USER, subject="row"):
        n[0] += 1
        mid = "<row-%d@client.test>" % n[0]
        return submit(g, frm, ["to@contoso.test"], make_msg(frm, "to@contoso.test",
                                                            "%s %d" % (subject, n[0]),
                                                            msgid=mid)), mid

    def row(name, fn):
        try:
            fn()
        except AssertionError as e:
            problems.append("%s: %s" % (name, e))
        GRAPH.control("DELETE", "faults")
        SMTP.control("DELETE", "faults")

    def graph_statuses_since(seq0):
        return [q["status"] for q in GRAPH.requests(since=seq0)
                if q["path"].endswith("/sendMail")]

    def last_seq():
        r = GRAPH.requests()
        return r[-1]["seq"] if r else 0

    # warm-up: the Graph token is fetched once (not for SMTP: the 535 row needs the first
    # SMTP session, as libcurl keeps an authenticated session open for the next message)
    qid, _ = send()
    g.wait_state(qid, "sent")

    def r401():
        IDP.control("POST", "counters/reset")
        s0 = last_seq()
        GRAPH.fault(kind="unauthorized", count=1)
        qid, mid = send()
        m = g.wait_state(qid, ("sent", "failed"))
        check(m["state"] == "sent", "state %s %s", m["state"], err_of(m))
        check(graph_statuses_since(s0) == [401, 202], "sendMail statuses %r",
              graph_statuses_since(s0))
        c = IDP.counters()
        check(c.get("token_requests") == 1 and
              c.get("token_by_grant_type", {}).get("client_credentials") == 1,
              "token requests for one 401: %r (want exactly one refresh)", c)
        check(len(g.attempts(qid)) == 1, "attempts %r", g.attempts(qid))

    def r401_twice():
        s0 = last_seq()
        GRAPH.fault(kind="unauthorized", count=4)  # two attempts: refresh, refused again
        qid, _ = send()
        m = g.wait_state(qid, ("deferred", "failed", "sent"), timeout=10)
        check(m["state"] == "deferred", "state %s (a token refused after its refresh)",
              m["state"])
        check("access token was refused" in err_of(m) and "auth login" in err_of(m),
              "last_error %r", err_of(m))
        m = g.wait_state(qid, ("sent", "failed"), timeout=15)
        check(m["state"] == "sent", "state %s %s", m["state"], err_of(m))
        check(graph_statuses_since(s0) == [401, 401, 401, 401, 202], "statuses %r",
              graph_statuses_since(s0))

    def r403():
        GRAPH.fault(kind="send_as_denied", count=1)
        qid, _ = send()
        m = g.wait_state(qid, ("failed", "sent", "deferred"))
        check(m["state"] == "failed", "state %s", m["state"])
        e = err_of(m)
        check("may not send as the From address" in e and "Send As" in e and
              "Add-RecipientPermission" in e and "ErrorSendAsDenied" in e, "last_error %r", e)

    def r404():
        GRAPH.fault(kind="mailbox_not_enabled", count=1)
        qid, _ = send()
        m = g.wait_state(qid, ("deferred", "failed", "sent"))
        check(m["state"] == "deferred", "state %s", m["state"])
        e = err_of(m)
        check("no Exchange Online licence" in e and "assign an Exchange Online licence" in e and
              "MailboxNotEnabledForRESTAPI" in e, "last_error %r", e)
        wait_s = (g.next_attempt_ms(qid) - time.time() * 1000) / 1000
        check(wait_s > 1800, "next attempt in %.0f s (the row says after 1 h)", wait_s)

    def r503():
        s0 = last_seq()
        GRAPH.fault(kind="unavailable", count=2)
        qid, _ = send()
        m = g.wait_state(qid, ("deferred", "failed", "sent"), timeout=10)
        check(m["state"] == "deferred", "state %s", m["state"])
        check("temporarily unavailable" in err_of(m) and "503" in err_of(m),
              "last_error %r", err_of(m))
        m = g.wait_state(qid, ("sent", "failed"), timeout=15)
        check(m["state"] == "sent", "state %s %s", m["state"], err_of(m))
        check(graph_statuses_since(s0) == [503, 503, 202], "statuses %r",
              graph_statuses_since(s0))

    def r413():
        GRAPH.fault(kind="too_large", count=1)
        qid, _ = send()
        m = g.wait_state(qid, ("failed", "sent", "deferred"))
        check(m["state"] == "failed", "state %s", m["state"])
        check("too big for one Microsoft Graph request" in err_of(m) and
              "large_messages = upload-session" in err_of(m), "last_error %r", err_of(m))

    def rsize():
        GRAPH.fault(kind="size_exceeded", count=1)
        qid, _ = send()
        m = g.wait_state(qid, ("failed", "sent", "deferred"))
        check(m["state"] == "failed", "state %s", m["state"])
        check("MaxSendSize" in err_of(m) and "ErrorMessageSizeExceeded" in err_of(m),
              "last_error %r", err_of(m))

    def rreset():
        s0 = last_seq()
        GRAPH.fault(kind="reset", count=2)
        qid, _ = send()
        m = g.wait_state(qid, ("deferred", "failed", "sent"), timeout=10)
        check(m["state"] == "deferred", "state %s", m["state"])
        check("could not reach Microsoft Graph" in err_of(m), "last_error %r", err_of(m))
        m = g.wait_state(qid, ("sent", "failed"), timeout=15)
        check(m["state"] == "sent", "state %s %s", m["state"], err_of(m))
        check(graph_statuses_since(s0) == ["reset", "reset", 202], "statuses %r",
              graph_statuses_since(s0))

    def r535():
        SMTP.fault(stage="auth", reply="auth_disabled_tenant", count=1)
        qid, _ = send(ALICE)
        m = g.wait_state(qid, ("deferred", "failed", "sent"))
        check(m["state"] == "deferred", "state %s %s", m["state"], err_of(m))
        e = err_of(m)
        check("SMTP AUTH is disabled for the tenant" in e and "Set-TransportConfig" in e and
              "Set-CASMailbox" in e and "5.7.139" in e, "last_error %r", e)
        wait_s = (g.next_attempt_ms(qid) - time.time() * 1000) / 1000
        check(wait_s > 1800, "next attempt in %.0f s (the row says after 1 h)", wait_s)

    def r432():
        SMTP.fault(stage="data", reply="thread_limit", count=1)
        qid, mid = send(ALICE)
        m = g.wait_state(qid, ("deferred", "failed", "sent"))
        check(m["state"] == "deferred", "state %s %s", m["state"], err_of(m))
        e = err_of(m)
        check("too many concurrent SMTP sessions" in e and "4.3.2" in e, "last_error %r", e)
        wait_s = (g.next_attempt_ms(qid) - time.time() * 1000) / 1000
        check(40 < wait_s <= 75, "next attempt in %.0f s (the row says after 1 min)", wait_s)
        # the retry itself, without waiting a minute
        rc, out, err = g.cli("queue", "retry", qid)
        check(rc == 0, "queue retry: %s", err)
        m = g.wait_state(qid, ("sent", "failed"))
        check(m["state"] == "sent", "after the retry: %s %s", m["state"], err_of(m))
        check(len([x for x in SMTP.messages() if x["parsed"]["message_id"] == mid]) == 1,
              "not at the SMTP stand-in")

    for name, fn in (("Graph 401", r401), ("Graph 401 after the refresh too", r401_twice), ("Graph 403 ErrorSendAsDenied", r403),
                     ("Graph 404 MailboxNotEnabledForRESTAPI", r404), ("Graph 503", r503),
                     ("Graph 413", r413), ("Graph ErrorMessageSizeExceeded", rsize),
                     ("Graph reset connection", rreset), ("SMTP 535 5.7.139", r535),
                     ("SMTP 432 4.3.2", r432)):
        row(name, fn)
    check(not problems, "%d rows wrong:\n%s", len(problems), "\n".join(problems))


# ---- 9: kill -9 during delivery ----

def test_kill9(binary):
    g = Gateway(binary, "kill", [("app", graph_conn(USER, default="yes"))]).start()
    GRAPH.control("POST", "settings", {"latency_ms": 1500})
    s = Submit(g.port)
    mids = set()
    try:
        for i in range(24):
            mid = "<k9-%d@client.test>" % i
            s.send(USER, ["to@contoso.test"], make_msg(USER, "to@contoso.test", "k9 %d" % i,
                                                       msgid=mid))
            mids.add(mid)
    finally:
        s.close()
    wait_until(lambda: GRAPH.messages(omit_mime=1) and
               GRAPH.inflight()["mailboxes"].get(USER, {}).get("current", 0) > 0, 15,
               "deliveries in flight after the first was recorded")
    g.d.kill9()
    before = {m["message_id"] for m in GRAPH.messages(omit_mime=1)}
    check(before < mids, "everything was delivered before the kill")
    GRAPH.control("POST", "settings", {"latency_ms": 200})
    g.d.start()

    def done():
        got = [m["message_id"] for m in GRAPH.messages(omit_mime=1)]
        return set(got) >= mids and got
    got = wait_until(done, 40, "all 24 Message-IDs at Graph after the restart", step=0.5)
    wait_until(lambda: all(m["state"] == "sent" for m in g.d.queue_list()), 20,
               "every message marked sent")
    dups = len(got) - len(set(got))
    check(set(got) == mids, "unexpected messages %r", set(got) - mids)
    print("     %d delivered before the kill, %d duplicates after the restart" % (
        len(before), dups))


# ---- 10: no connection ----

def test_no_connection(binary):
    g = Gateway(binary, "noconn", [("other", graph_conn(ALICE))]).start()
    qid = submit(g, "app@elsewhere.test", ["to@contoso.test"],
                 make_msg("App <app@elsewhere.test>", "to@contoso.test", "no route"))
    m = wait_until(lambda: (lambda m: m["last_error"] and m)(g.msg(qid)), 10,
                   "the scheduler to look at the message")
    check(m["state"] == "queued", "state %s", m["state"])
    e = err_of(m)
    check(e.startswith("no connection"), "last_error %r", e)
    check("default connection" in e and "mailbridge connection default" in e,
          "the fix is not named: %r", e)
    time.sleep(2.5)
    m = g.msg(qid)
    check(m["state"] == "queued" and m["attempts"] == 0, "later: %s, %d attempts", m["state"],
          m["attempts"])
    check(not GRAPH.messages(omit_mime=1), "something reached Graph")


# ---- 11: mailbridge test, queue retry, log resend ----

def test_cli_test_send(binary):
    g = Gateway(binary, "clitest", [("app", graph_conn(USER, default="yes"))]).start()
    rc, out, err = g.cli("test", "--to", "x@contoso.test")
    check(rc == 0, "mailbridge test: rc=%d %s%s", rc, out, err)
    m = re.search(r"delivered in (\d+) ms", out)
    check(m, "no 'delivered in N ms': %r", out)
    recs = GRAPH.messages(omit_mime=1)
    check(len(recs) == 1 and recs[0]["all_recipients"] == ["x@contoso.test"] and
          recs[0]["mailbox"] == USER, "at Graph: %r",
          [(r["mailbox"], r["all_recipients"]) for r in recs])
    check("mailbridge test through app" in (recs[0]["subject"] or ""), "subject %r",
          recs[0]["subject"])
    # the line names Graph's request-id, on one line
    check(re.search(r"^delivered in \d+ ms \(request-id %s\)$" % re.escape(
        recs[0]["request_id"]), out, re.M),
          "the result line is garbled (cli_test.c prints the request-id, a newline, then "
          "\"\\b)\"): %r", out)


def test_queue_retry(binary):
    g = Gateway(binary, "retry", [("app", graph_conn(USER, default="yes"))]).start()
    GRAPH.fault(kind="send_as_denied", count=1)
    qid = submit(g, USER, ["to@contoso.test"], make_msg(USER, "to@contoso.test", "retry me",
                                                        msgid="<qr-1@client.test>"))
    m = g.wait_state(qid, ("failed", "sent"))
    check(m["state"] == "failed", "state %s", m["state"])
    rc, out, err = g.cli("queue", "retry", qid)
    check(rc == 0 and "queued again" in out, "queue retry: rc=%d %s%s", rc, out, err)
    m = g.wait_state(qid, ("sent", "failed"), timeout=15,
                     what="the retried message to be sent again")
    # a failed message's state changes; wait for sent specifically
    m = g.wait_state(qid, "sent", timeout=15)
    check(len(wait_graph("<qr-1@client.test>")) == 1, "not at Graph")


def test_log_resend(binary):
    g = Gateway(binary, "resend", [("app", graph_conn(USER, default="yes"))]).start()
    qid = submit(g, USER, ["to@contoso.test"], make_msg(USER, "to@contoso.test", "resend me",
                                                        msgid="<rs-1@client.test>"))
    g.wait_state(qid, "sent")
    rc, out, err = g.cli("log", "resend", qid, "--to", "other@contoso.test")
    m = re.search(r"queued (\S+), a copy of %s" % qid, out)
    check(rc == 0 and m, "log resend: rc=%d %s%s", rc, out, err)
    new = m.group(1)
    c = g.wait_state(new, ("sent", "failed"))
    check(c["state"] == "sent" and c["recipients"] == ["other@contoso.test"],
          "the copy: %r", {k: v for k, v in c.items() if k != "message"})
    recs = wait_graph("<rs-1@client.test>", n=2)
    check(len(recs) == 2, "%d copies at Graph", len(recs))
    copy = recs[1]
    check("other@contoso.test" in copy["all_recipients"], "the copy's recipients at Graph: %r",
          copy["all_recipients"])
    check(copy["all_recipients"] == ["other@contoso.test"],
          "`log resend %s --to other@contoso.test` delivered the copy to %r: Graph sends to "
          "every To/Cc/Bcc of the MIME, so the original recipients got it again",
          qid, copy["all_recipients"])


# ---- 12: alerts ----

class Hook(http.server.BaseHTTPRequestHandler):
    posts = []

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        Hook.posts.append((time.monotonic(), self.path, self.headers.get("Content-Type"),
                           self.rfile.read(n)))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


def test_alerts(binary):
    Hook.posts = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    on_cleanup(lambda: (srv.shutdown(), srv.server_close()))
    hook = "http://127.0.0.1:%d/hook" % srv.server_address[1]
    g = Gateway(binary, "alert", [("app", graph_conn(USER, default="yes"))],
                server={"alert_webhook": hook}).start()
    GRAPH.fault(kind="send_as_denied", count=2)
    s = Submit(g.port)
    try:
        a1 = s.send(USER, ["to@contoso.test"], make_msg(USER, "to@contoso.test", "alert 1"))
        g.wait_state(a1, "failed")
        a2 = s.send(USER, ["to@contoso.test"], make_msg(USER, "to@contoso.test", "alert 2"))
        g.wait_state(a2, "failed")
        wait_until(lambda: Hook.posts, 10, "the webhook POST")
        time.sleep(1.5)
        check(len(Hook.posts) == 1, "%d POSTs for two failures with the same cause (want 1): "
              "%r", len(Hook.posts), Hook.posts)
        _, path, ctype, body = Hook.posts[0]
        j = json.loads(body)
        check(path == "/hook" and ctype.startswith("application/json") and
              list(j) == ["text"], "the POST: %s %s %r", path, ctype, body)
        check("Send As" in j["text"], "text %r", j["text"])
        # another cause gets its own alert
        GRAPH.fault(kind="size_exceeded", count=1)
        a3 = s.send(USER, ["to@contoso.test"], make_msg(USER, "to@contoso.test", "alert 3"))
        g.wait_state(a3, "failed")
        wait_until(lambda: len(Hook.posts) >= 2, 10, "the second cause's POST")
        check("MaxSendSize" in json.loads(Hook.posts[1][3])["text"], "second alert %r",
              Hook.posts[1][3])
        time.sleep(1)
        check(len(Hook.posts) == 2, "%d POSTs", len(Hook.posts))
    finally:
        s.close()


# ---- the run ----

TESTS = [
    ("swaks_graph_mime", test_swaks_graph_mime),
    ("bcc_only", test_bcc_only),
    ("large_attachment", test_large_attachment),
    ("large_smtp_delegated", test_large_smtp_delegated),
    ("caps_graph", test_caps_graph),
    ("caps_smtp", test_caps_smtp),
    ("retry_after", test_retry_after),
    ("timeout", test_timeout),
    ("fallback", test_fallback),
    ("smtp_transports", test_smtp_transports),
    ("mssmtp_signin_token", test_mssmtp_signin_token),
    ("error_rows", test_error_rows),
    ("kill9", test_kill9),
    ("no_connection", test_no_connection),
    ("cli_test_send", test_cli_test_send),
    ("queue_retry", test_queue_retry),
    ("log_resend", test_log_resend),
    ("alerts", test_alerts),
]


def _start_peers(d, binary, session):
    global IDP, GRAPH, SMTP, CA
    CA, IDP, GRAPH, SMTP = mbtest.start_idp_graph(d, session, smtp=True)


def _before_each(name):
    IDP.reset(device_interval=1)
    GRAPH.reset()
    SMTP.reset()


def main():
    return mbtest.run_with_peers(TESTS, BUDGET, "deliver", mbtest.PEER_MODULES,
                                 _start_peers, _before_each, need=("swaks",))

if __name__ == "__main__":
    sys.exit(main())
