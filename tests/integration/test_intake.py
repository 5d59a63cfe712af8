#!/usr/bin/env python3
"""Intake against real clients, on loopback: test_intake.py BINARY [TEST-NAME...]

Each test starts its own `mailbridge serve` (free loopback ports, temp data_dir) and stops it
by PID. Covered: swaks (byte-exact store), Python smtplib (several recipients, 8BITMIME,
SMTPUTF8), PHP mail() through `mailbridge sendmail -t -i`, sendmail's exit code 75, STARTTLS
with AUTH PLAIN/LOGIN (and a wrong password), STARTTLS command injection, smtp_auth =
required, the open-relay refusal, a store failure on a full disk (451 4.3.0), the session
limit (421 4.3.2), the idle timeout (421 4.4.2), and the CLI option order of `queue`.
"""
import base64
import os
import re
import smtplib
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mbtest import (QUEUED_RE, Daemon, SkipTest, SMTPConn, check, dot_unstuff, free_port,  # noqa
                    hash_password, main, on_cleanup, run, strip_received, tempdir,
                    write_config)

PASSWORD = "secret-pass"


def assert_stored(d, qid, want, what):
    raw = d.queue_raw(qid)
    check(raw is not None, "%s: queue show %s --raw failed", what, qid)
    body = strip_received(raw)
    check(body is not None, "%s: the stored message does not start with Received:\n%r", what, raw)
    check(body == want, "%s: stored message differs\n  sent:   %r\n  stored: %r", what, want, body)
    check(not body.startswith(b"Received: "), "%s: more than one Received: was added", what)
    return raw


# ---- swaks ----

def test_swaks_exact(binary):
    tmp = tempdir("mb-it-swaks-")
    d = Daemon(binary, tmp).start()
    # What swaks sends, byte for byte (--no-data-fixup): CRLF lines, dot-stuffed, and the
    # final "." (swaks adds the CRLF after it).
    content = (b"From: Swaks <swaks@example.test>\r\n"
               b"To: bob@example.test\r\n"
               b"Subject: swaks byte-exact\r\n"
               b"Message-ID: <swaks-1@example.test>\r\n"
               b"\r\n"
               b"first line\r\n"
               b"..a line that starts with a dot\r\n"
               b"...two dots\r\n"
               b"..\r\n"
               b"  indented line, trailing spaces   \r\n"
               b"\tTAB\r\n"
               b"\r\n"
               b"last line\r\n")
    data_file = os.path.join(tmp, "data.eml")
    with open(data_file, "wb") as f:
        f.write(content + b".")
    r = run(["swaks", "--server", "127.0.0.1:%d" % d.smtp_port, "--helo", "swaks.test",
             "--from", "swaks@example.test", "--to", "bob@example.test",
             "--data", "@" + data_file, "--no-data-fixup", "--timeout", "10"], timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    check(r.returncode == 0, "swaks failed rc=%d\n%s%s", r.returncode, out, r.stderr)
    ids = QUEUED_RE.findall(out)
    check(len(ids) == 1, "no 'queued as' in swaks output:\n%s", out)
    raw = assert_stored(d, ids[0], dot_unstuff(content), "swaks")
    check(re.match(rb"Received: from swaks\.test \(\[127\.0\.0\.1\]\)\r\n"
                   rb"\tby mx\.test \(mailbridge\) with ESMTP id " + ids[0].encode() +
                   rb"\r\n\tfor <bob@example\.test>; ", raw),
          "unexpected Received: header: %r", raw[:300])
    j = d.queue_json(ids[0])
    check(j["sender"] == "swaks@example.test", "sender %r", j["sender"])
    check(j["recipients"] == ["bob@example.test"], "recipients %r", j["recipients"])
    check(j["state"] == "queued", "state %r", j["state"])
    check([m["id"] for m in d.queue_pending()] == ids, "queue list does not show %s", ids[0])
    # `mailbridge log` shows it too
    r = d.cli("log", ["--json", "--status", "queued"])
    check(r.returncode == 0 and ids[0] in r.stdout.decode(), "log does not list %s: %r %r",
          ids[0], r.stdout, r.stderr)


# ---- Python smtplib ----

def test_smtplib(binary):
    tmp = tempdir("mb-it-smtplib-")
    d = Daemon(binary, tmp).start()
    rcpts = ["r1@example.test", "r2@example.test", "r3@example.test"]
    # 8-bit body: UTF-8 text and a raw Latin-1 byte; a dot-leading line that smtplib stuffs.
    msg = (b"From: py@example.test\r\nTo: r1@example.test, r2@example.test\r\n"
           b"Subject: 8bit\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           b"Gr\xc3\xbc\xc3\x9fe, \xe2\x9c\x93 \xf0\x9f\x93\xa8\r\n"
           b".leading dot\r\nlatin-1 byte: \xe9\r\nend\r\n")
    with smtplib.SMTP("127.0.0.1", d.smtp_port, local_hostname="py.test", timeout=10) as s:
        code, _ = s.ehlo()
        check(code == 250, "EHLO %d", code)
        check(s.has_extn("8bitmime") and s.has_extn("smtputf8") and s.has_extn("pipelining")
              and s.has_extn("size") and s.has_extn("enhancedstatuscodes"),
              "missing extensions: %r", s.esmtp_features)
        check(not s.has_extn("starttls"), "STARTTLS offered without tls_cert")
        check(not s.has_extn("auth"), "AUTH offered without users")
        s.mail("py@example.test", ["BODY=8BITMIME", "SIZE=%d" % len(msg)])
        for r in rcpts:
            code, resp = s.rcpt(r)
            check(code == 250, "RCPT %s: %d %r", r, code, resp)
        code, resp = s.data(msg)
        check(code == 250, "DATA: %d %r", code, resp)
        qid = QUEUED_RE.search("250 " + resp.decode()).group(1)

        # SMTPUTF8: UTF-8 addresses in the envelope, and in the headers
        umsg = ("From: Jörg <jörg@exämple.test>\r\nTo: ünï@exämple.test\r\n"
                "Subject: grüße\r\n\r\nHallo ✓\r\n").encode()
        refused = s.sendmail("jörg@exämple.test", ["ünï@exämple.test", "plain@example.test"],
                             umsg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        check(refused == {}, "refused %r", refused)
    # smtplib's sendmail() does not return the queue id: find the message by sender
    assert_stored(d, qid, msg, "smtplib 8bit")
    msgs = {m["id"]: m for m in d.queue_list()}
    check(msgs[qid]["recipients"] == rcpts, "recipients %r", msgs[qid]["recipients"])
    check(msgs[qid]["sender"] == "py@example.test", "sender %r", msgs[qid]["sender"])
    utf = [m for m in msgs.values() if m["sender"] == "jörg@exämple.test"]
    check(len(utf) == 1, "the SMTPUTF8 message is not stored once: %r", msgs)
    check(utf[0]["recipients"] == ["ünï@exämple.test", "plain@example.test"],
          "recipients %r", utf[0]["recipients"])
    raw = assert_stored(d, utf[0]["id"], umsg, "smtplib SMTPUTF8")
    check(b" with UTF8SMTP id " in raw, "Received: does not say UTF8SMTP: %r", raw[:300])
    check(len(msgs) == 2, "expected 2 messages, store has %d", len(msgs))


# ---- PHP mail() through sendmail_path ----

PHP_SCRIPT = r"""
$ok = mail("to@example.test", "PHP mail test", "Hello from PHP.\nSecond line.\n.dot line\n",
           "From: php@example.test\r\nBcc: hidden@example.test\r\nCc: cc@example.test");
echo $ok ? "MAIL-OK" : "MAIL-FAILED";
"""


def test_php_mail(binary):
    tmp = tempdir("mb-it-php-")
    d = Daemon(binary, tmp).start()
    env = dict(os.environ, MAILBRIDGE_SMTP="127.0.0.1:%d" % d.smtp_port)
    env.pop("MAILBRIDGE_CONFIG", None)
    r = run(["php", "-n", "-d", 'sendmail_path=%s sendmail -t -i' % binary, "-r", PHP_SCRIPT],
            env=env, timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    check("MAIL-OK" in out, "php mail() failed rc=%d\n%s\n%s", r.returncode, out,
          r.stderr.decode("utf-8", "replace"))
    msgs = d.queue_list()
    check(len(msgs) == 1, "expected 1 stored message, got %r", msgs)
    m = msgs[0]
    check(sorted(m["recipients"]) == ["cc@example.test", "hidden@example.test",
                                      "to@example.test"],
          "envelope recipients %r (the Bcc recipient must be there)", m["recipients"])
    raw = d.queue_raw(m["id"])
    check(raw is not None, "queue show --raw failed")
    head, _, body = raw.partition(b"\r\n\r\n")
    check(not re.search(rb"(?im)^bcc:", head), "a Bcc: header was stored:\n%r", head)
    check(b"hidden@example.test" not in raw, "the Bcc address leaked into the message:\n%r", raw)
    check(re.search(rb"(?im)^subject: PHP mail test\r?$", head), "no Subject: %r", head)
    check(re.search(rb"(?im)^to: to@example\.test\r?$", head), "no To: %r", head)
    check(re.search(rb"(?im)^cc: cc@example\.test\r?$", head), "no Cc: %r", head)
    # PHP ends the message with one more line separator of its own
    check(body == b"Hello from PHP.\r\nSecond line.\r\n.dot line\r\n\r\n",
          "body differs (LF must become CRLF, -i keeps the dot line): %r", body)
    check(b"\n" not in raw.replace(b"\r\n", b""), "bare LF stored: %r", raw)
    check(m["sender"] != "", "empty envelope sender")


# ---- sendmail when the daemon is down ----

def test_sendmail_tempfail(binary):
    tmp = tempdir("mb-it-tempfail-")
    port = free_port()  # nothing listens there
    msg = b"Subject: nobody listens\n\nbody\n"
    env = dict(os.environ, MAILBRIDGE_SMTP="127.0.0.1:%d" % port)
    env.pop("MAILBRIDGE_CONFIG", None)
    r = run([binary, "sendmail", "-i", "to@example.test"], input=msg, stdin=None, env=env)
    check(r.returncode == 75, "MAILBRIDGE_SMTP: exit %d (want 75)\n%s", r.returncode, r.stderr)
    # the same through -C CONFIG (first loopback smtp_listen)
    conf = os.path.join(tmp, "down.conf")
    write_config(conf, {"data_dir": os.path.join(tmp, "var"),
                        "smtp_listen": "127.0.0.1:%d" % port,
                        "http_listen": "127.0.0.1:%d" % free_port()})
    env = dict(os.environ)
    env.pop("MAILBRIDGE_SMTP", None)
    env.pop("MAILBRIDGE_CONFIG", None)
    r = run([binary, "sendmail", "-C", conf, "-t", "-i"],
            input=b"To: to@example.test\n" + msg, stdin=None, env=env)
    check(r.returncode == 75, "-C: exit %d (want 75)\n%s", r.returncode, r.stderr)
    env["MAILBRIDGE_CONFIG"] = conf
    r = run([binary, "sendmail", "-i", "to@example.test"], input=msg, stdin=None, env=env)
    check(r.returncode == 75, "$MAILBRIDGE_CONFIG: exit %d (want 75)\n%s", r.returncode, r.stderr)


# ---- STARTTLS + AUTH ----

def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    r = run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
             "-days", "2", "-subj", "/CN=mx.test"], timeout=30)
    check(r.returncode == 0, "openssl failed: %s", r.stderr)
    return cert, key


def swaks_auth(d, mech, password, subject):
    r = run(["swaks", "--server", "127.0.0.1:%d" % d.smtp_port, "--helo", "swaks.test",
             "--tls", "--auth", mech, "--auth-user", "alice", "--auth-password", password,
             "--from", "alice@example.test", "--to", "bob@example.test",
             "--header", "Subject: %s" % subject, "--timeout", "10"], timeout=30)
    return r.returncode, r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")


def test_starttls_auth(binary):
    tmp = tempdir("mb-it-tls-")
    cert, key = make_cert(tmp)
    d = Daemon(binary, tmp, server={"tls_cert": cert, "tls_key": key},
               users={"alice": hash_password(binary, PASSWORD)}).start()
    acked = []
    for round_ in (1, 2):
        for mech in ("PLAIN", "LOGIN"):
            rc, out = swaks_auth(d, mech, PASSWORD, "%s right %d" % (mech, round_))
            # swaks' exit status is not checked here: it also reflects the reply to QUIT,
            # which test tls_quit_reply covers on its own
            check("235 2.7.0" in out, "%s: no 235:\n%s", mech, out)
            ids = QUEUED_RE.findall(out)
            check(len(ids) == 1, "%s: not queued:\n%s", mech, out)
            acked.append(ids[0])
            n_before = len(d.queue_list())
            rc, out = swaks_auth(d, mech, PASSWORD + "x", "%s wrong %d" % (mech, round_))
            check(rc != 0, "%s with a wrong password: swaks succeeded\n%s", mech, out)
            check("535 5.7.8" in out, "%s wrong password: no 535 5.7.8:\n%s", mech, out)
            check(not QUEUED_RE.search(out), "%s wrong password: queued!\n%s", mech, out)
            check(len(d.queue_list()) == n_before, "%s wrong password: a message was stored",
                  mech)
    stored = {m["id"] for m in d.queue_list()}
    check(stored == set(acked), "stored %r, acknowledged %r", stored, acked)
    raw = d.queue_raw(acked[0])
    check(b" with ESMTPSA id " in raw and b"\t(using TLS" in raw,
          "Received: does not show TLS + AUTH: %r", raw[:400])
    check("auth=alice" in d.queue_json(acked[0])["client"], "client does not record the user")


def test_starttls_injection(binary):
    """Commands pipelined after STARTTLS in plaintext are discarded (CVE-2011-0411)."""
    tmp = tempdir("mb-it-inject-")
    cert, key = make_cert(tmp)
    d = Daemon(binary, tmp, server={"tls_cert": cert, "tls_key": key}).start()
    c = SMTPConn(d.smtp_port)
    try:
        check(c.reply()[0].startswith("220 "), "no greeting")
        ehlo = c.cmd("EHLO inject.test")
        check("250-STARTTLS" in ehlo, "STARTTLS not offered: %r", ehlo)
        c.send(b"STARTTLS\r\nMAIL FROM:<evil@example.test>\r\n")
        r = c.line()
        check(r.startswith("220 "), "STARTTLS answered %r", r)
        check(c.buf == b"", "more plaintext after 220: %r", c.buf)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c.sock = ctx.wrap_socket(c.sock, server_hostname="mx.test")
        # the injected MAIL must not have been run: the first reply in TLS is EHLO's
        ehlo = c.cmd("EHLO inject.test")
        check(ehlo[0] == "250-mx.test", "first reply after TLS: %r", ehlo)
        check("250-STARTTLS" not in ehlo, "STARTTLS offered again inside TLS")
        r = c.cmd("RCPT TO:<bob@example.test>")
        check(r[0].startswith("503"), "injected MAIL survived STARTTLS: RCPT got %r", r)
    finally:
        c.close()


def test_tls_quit_reply(binary):
    """Inside TLS, QUIT is answered 221 before the server closes (RFC 5321 4.1.1.10)."""
    tmp = tempdir("mb-it-tlsquit-")
    cert, key = make_cert(tmp)
    d = Daemon(binary, tmp, server={"tls_cert": cert, "tls_key": key}).start()
    c = SMTPConn(d.smtp_port)
    try:
        c.reply()
        c.cmd("EHLO quit.test")
        check(c.cmd("STARTTLS")[0].startswith("220 "), "STARTTLS refused")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c.sock = ctx.wrap_socket(c.sock, server_hostname="mx.test")
        check(c.cmd("EHLO quit.test")[0] == "250-mx.test", "EHLO in TLS")
        check(c.cmd("NOOP")[0].startswith("250"), "NOOP in TLS")
        c.send(b"QUIT\r\n")
        try:
            out = c.read_until_close()
        except (OSError, ssl.SSLError) as e:
            out = c.buf + (" [%s]" % e).encode()
        check(out == b"221 2.0.0 Bye\r\n", "QUIT inside TLS: got %r instead of 221", out)
    finally:
        c.close()


def test_auth_required(binary):
    tmp = tempdir("mb-it-required-")
    d = Daemon(binary, tmp, server={"smtp_auth": "required"},
               users={"alice": hash_password(binary, PASSWORD)}).start()
    c = SMTPConn(d.smtp_port)
    try:
        c.reply()
        ehlo = c.cmd("EHLO req.test")
        check("250-AUTH PLAIN LOGIN" in ehlo, "AUTH not offered on loopback: %r", ehlo)
        r = c.cmd("MAIL FROM:<alice@example.test>")
        check(r[0].startswith("530 5.7.0"), "MAIL without AUTH: %r", r)
        bad = base64.b64encode(b"\0alice\0wrong-pass").decode()
        r = c.cmd("AUTH PLAIN " + bad)
        check(r[0].startswith("535 5.7.8"), "wrong password: %r", r)
        r = c.cmd("MAIL FROM:<alice@example.test>")
        check(r[0].startswith("530"), "MAIL after a failed AUTH: %r", r)
        good = base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()
        r = c.cmd("AUTH PLAIN " + good)
        check(r[0].startswith("235 2.7.0"), "right password: %r", r)
        check(c.cmd("MAIL FROM:<alice@example.test>")[0].startswith("250"), "MAIL after AUTH")
        check(c.cmd("RCPT TO:<bob@example.test>")[0].startswith("250"), "RCPT")
        check(c.cmd("DATA")[0].startswith("354"), "DATA")
        r = c.cmd("Subject: authed\r\n\r\nhi\r\n.")
        check(QUEUED_RE.search(r[0]), "not queued: %r", r)
        c.cmd("QUIT")
    finally:
        c.close()
    check(len(d.queue_list()) == 1, "store should hold exactly the authenticated message")


# ---- the open-relay rule ----

def test_open_relay_refused(binary):
    tmp = tempdir("mb-it-relay-")
    conf = os.path.join(tmp, "relay.conf")
    port = free_port()
    write_config(conf, {"data_dir": os.path.join(tmp, "var"),
                        "http_listen": "127.0.0.1:%d" % free_port(),
                        "smtp_listen": "0.0.0.0:%d" % port})
    with open(conf) as f:
        line = 1 + [i for i, l in enumerate(f) if l.startswith("smtp_listen")][0]
    # serve must refuse quickly; no traffic is ever sent to 0.0.0.0
    p = subprocess.Popen([binary, "serve", "-c", conf], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    on_cleanup(lambda: (p.poll() is None and p.kill(), p.wait(10)))
    try:
        out, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)
        raise AssertionError("serve with an open-relay config kept running")
    err = err.decode("utf-8", "replace")
    check(p.returncode != 0, "serve exited 0 on an open-relay config")
    check("open relay" in err, "stderr does not explain the open relay: %r", err)
    r = run([binary, "config", "-c", conf, "check"])
    cerr = r.stderr.decode("utf-8", "replace")
    check(r.returncode != 0, "config check accepted an open relay")
    check("%s:%d" % (conf, line) in cerr, "config check does not name %s:%d: %r", conf, line,
          cerr)
    check("open relay" in cerr, "config check does not say open relay: %r", cerr)
    # the same listener with an allow-list is accepted
    write_config(conf, {"data_dir": os.path.join(tmp, "var"),
                        "http_listen": "127.0.0.1:%d" % free_port(),
                        "smtp_listen": "0.0.0.0:%d" % port, "smtp_allow": "192.0.2.0/24"})
    r = run([binary, "config", "-c", conf, "check"])
    check(r.returncode == 0, "config check refused smtp_allow: %s", r.stderr)


# ---- a store failure ----

def test_disk_full_451(binary):
    if os.geteuid() != 0:
        raise SkipTest("needs root to mount a tmpfs")
    tmp = tempdir("mb-it-full-")
    mnt = os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    r = run(["mount", "-t", "tmpfs", "-o", "size=600k,mode=0700", "tmpfs", mnt])
    if r.returncode != 0:
        raise SkipTest("cannot mount a tmpfs: %s" % r.stderr.decode().strip())

    def umount():
        for _ in range(50):
            if run(["umount", mnt]).returncode == 0:
                return
            time.sleep(0.1)
        run(["umount", "-l", mnt])
    on_cleanup(umount)  # registered before the daemon: runs after it stopped
    d = Daemon(binary, tmp, data_dir=os.path.join(mnt, "var")).start()
    acked = {}
    first_failure = None
    c = SMTPConn(d.smtp_port)
    try:
        c.reply()
        c.cmd("EHLO full.test")
        for i in range(200):
            body = (b"Subject: fill %d\r\n\r\n" % i) + \
                   b"".join(b"%04d %s\r\n" % (j, b"x" * 70) for j in range(500))  # ~38 KB
            r1 = c.cmd("MAIL FROM:<fill@example.test>")
            r2 = c.cmd("RCPT TO:<bob@example.test>")
            r3 = c.cmd("DATA")
            check(r1[0].startswith("250") and r2[0].startswith("250") and
                  r3[0].startswith("354"), "message %d: %r %r %r", i, r1, r2, r3)
            c.send(body + b".\r\n")
            r = c.reply()[0]
            m = QUEUED_RE.match(r)
            if m:
                acked[m.group(1)] = body
                continue
            first_failure = r
            break
        check(first_failure is not None, "the 600k tmpfs never filled up (%d messages acked)",
              len(acked))
        check(first_failure.startswith("451 4.3.0"), "first failure is not 451 4.3.0: %r",
              first_failure)
        check(len(acked) > 0, "no message was acknowledged before the disk was full")
        print("     disk full after %d acknowledged messages: %s" % (len(acked), first_failure))
        # the session survives a store failure
        r = c.cmd("NOOP")
        check(r[0].startswith("250"), "NOOP after 451: %r", r)
        c.cmd("QUIT")
    finally:
        c.close()
    # every acknowledged message is in the store (read while still mounted)
    stored = {m["id"] for m in d.queue_list()}
    missing = set(acked) - stored
    check(not missing, "acknowledged but not stored: %r", missing)
    for qid, body in acked.items():
        assert_stored(d, qid, body, "disk-full " + qid)
    refused = [m for m in d.queue_list() if m["subject"] == "fill %d" % len(acked)]
    check(not refused, "the message answered 451 was stored anyway: %r", refused)
    rc = d.stop()
    check(rc == 0, "the daemon exited %r after a store failure\n%s", rc, d.log_tail())
    stored = {m["id"] for m in d.queue_list()}
    check(not (set(acked) - stored), "after stop, acknowledged but not stored: %r",
          set(acked) - stored)


# ---- limits ----

def test_max_sessions(binary):
    tmp = tempdir("mb-it-sessions-")
    d = Daemon(binary, tmp, server={"smtp_max_sessions": "2"}).start()
    time.sleep(0.2)  # let the start-up probe's session go away
    a, b = SMTPConn(d.smtp_port), SMTPConn(d.smtp_port)
    try:
        check(a.reply()[0].startswith("220 "), "first session")
        check(b.reply()[0].startswith("220 "), "second session")
        c = SMTPConn(d.smtp_port)
        try:
            out = c.read_until_close().decode()
        finally:
            c.close()
        check(out == "421 4.3.2 mx.test Too many sessions, try again later\r\n",
              "third session got %r", out)
        check(a.cmd("NOOP")[0].startswith("250"), "first session still works")
        a.cmd("QUIT")
        a.close()
        deadline = time.monotonic() + 5
        while True:  # the freed slot is usable again
            c = SMTPConn(d.smtp_port)
            first = c.reply()[0]
            c.close()
            if first.startswith("220 "):
                break
            check(time.monotonic() < deadline, "the slot was not freed: %r", first)
            time.sleep(0.1)
    finally:
        a.close()
        b.close()


def test_idle_timeout(binary):
    tmp = tempdir("mb-it-timeout-")
    d = Daemon(binary, tmp, server={"smtp_timeout": "1s"}).start()
    c = SMTPConn(d.smtp_port, timeout=10)
    try:
        c.reply()
        t0 = time.monotonic()
        out = c.read_until_close().decode()
        took = time.monotonic() - t0
    finally:
        c.close()
    check(out == "421 4.4.2 mx.test Error: timeout exceeded\r\n", "idle session got %r", out)
    check(0.5 < took < 5, "timeout after %.1f s (smtp_timeout = 1s)", took)


# ---- the CLI ----

def test_cli_option_order(binary):
    """The documented forms `queue show ID --raw -c FILE` and `queue list --json -c FILE`."""
    tmp = tempdir("mb-it-cli-")
    d = Daemon(binary, tmp).start()
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=10) as s:
        s.sendmail("a@example.test", ["b@example.test"], b"Subject: cli\r\n\r\nx\r\n")
    qid = d.queue_list()[0]["id"]
    r = run([binary, "queue", "list", "--json", "-c", d.conf])
    check(r.returncode == 0 and qid in r.stdout.decode(),
          "`queue list --json -c FILE` failed: rc=%d %s", r.returncode, r.stderr)
    r = run([binary, "queue", "show", qid, "--raw", "-c", d.conf])
    check(r.returncode == 0 and r.stdout.startswith(b"Received: "),
          "`queue show ID --raw -c FILE` failed: rc=%d %s", r.returncode, r.stderr)
    r = run([binary, "config", "check", "-c", d.conf])
    check(r.returncode == 0, "`config check -c FILE` (as in the issue) failed: rc=%d %s",
          r.returncode, r.stderr)


TESTS = [
    ("swaks_exact", test_swaks_exact),
    ("smtplib", test_smtplib),
    ("php_mail", test_php_mail),
    ("sendmail_tempfail", test_sendmail_tempfail),
    ("starttls_auth", test_starttls_auth),
    ("starttls_injection", test_starttls_injection),
    ("tls_quit_reply", test_tls_quit_reply),
    ("auth_required", test_auth_required),
    ("open_relay_refused", test_open_relay_refused),
    ("disk_full_451", test_disk_full_451),
    ("max_sessions", test_max_sessions),
    ("idle_timeout", test_idle_timeout),
    ("cli_option_order", test_cli_option_order),
]

if __name__ == "__main__":
    sys.exit(main(TESTS, budget=500))
