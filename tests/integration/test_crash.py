#!/usr/bin/env python3
"""Crash test: test_crash.py BINARY [ROUNDS]

Each round: 10 client threads send up to 200 messages in total (distinct bodies, 1-6 KB)
to one daemon; when a random number (50-150) of them has been acknowledged, the daemon gets
SIGKILL. Every queue id that got `250 ... queued as ID` before the kill is recorded. The daemon
is restarted on the same data_dir; it must come up cleanly, every acknowledged message (this
round's and earlier rounds') must be in the store, byte-exact with a Received: header
prepended, it must take a new message, and it must stop cleanly on SIGTERM (exit 0).
The data_dir is shared across rounds, so later rounds also restart on a bigger store.
"""
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mbtest import (QUEUED_RE, Daemon, SMTPConn, check, cleanup_all, start_watchdog,  # noqa
                    strip_received, tempdir)

CLIENTS = 10
MESSAGES = 200
ROUNDS = 3


def make_body(rnd, round_no, n):
    words = [b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"..dot", b"foxtrot"]
    lines = [b"Subject: crash round %d message %d" % (round_no, n),
             b"X-Test-Id: %d-%d" % (round_no, n), b""]
    size = rnd.randint(1000, 6000)
    total = 0
    while total < size:
        line = b" ".join(rnd.choice(words) for _ in range(rnd.randint(1, 12)))
        lines.append(line)
        total += len(line) + 2
    return b"\r\n".join(lines) + b"\r\n"


def unstuff(body):
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in body.split(b"\r\n"))


class Round:
    def __init__(self, port, round_no, seed):
        self.port = port
        self.round_no = round_no
        self.rnd = random.Random(seed)
        self.lock = threading.Condition()
        self.next_n = 0
        self.acked = {}  # id -> expected stored content (without Received:)
        self.sent = {}  # message number -> expected stored content
        self.client_errors = []
        self.protocol_errors = []
        self.stop = False

    def take(self):
        with self.lock:
            if self.stop or self.next_n >= MESSAGES:
                return None
            n = self.next_n
            self.next_n += 1
            body = make_body(self.rnd, self.round_no, n)
            self.sent[n] = unstuff(body)
            return n, body

    def client(self, k):
        try:
            c = SMTPConn(self.port, timeout=15)
        except OSError as e:
            self.client_errors.append("client %d: connect: %s" % (k, e))
            return
        try:
            if not c.reply()[0].startswith("220"):
                return
            c.cmd("EHLO client%d.test" % k)
            while True:
                job = self.take()
                if job is None:
                    break
                n, body = job
                # one pipelined group: MAIL, RCPT, DATA (RFC 2920)
                c.send(b"MAIL FROM:<c%d@example.test>\r\nRCPT TO:<r%d@example.test>\r\nDATA\r\n"
                       % (k, n))
                r = [c.reply()[0] for _ in range(3)]
                if not (r[0].startswith("250") and r[1].startswith("250")
                        and r[2].startswith("354")):
                    self.protocol_errors.append("client %d msg %d: %r" % (k, n, r))
                    return
                c.send(body + b".\r\n")
                final = c.reply()[0]
                m = QUEUED_RE.match(final)
                if not m:
                    self.protocol_errors.append("client %d msg %d: %r" % (k, n, final))
                    return
                with self.lock:
                    self.acked[m.group(1)] = unstuff(body)
                    self.lock.notify_all()
            c.cmd("QUIT")
        except (OSError, ConnectionError) as e:
            # expected once the daemon is killed
            self.client_errors.append("client %d: %s" % (k, e))
        finally:
            c.close()


def run_round(binary, tmp, data_dir, round_no, all_acked):
    seed = random.randrange(1 << 30)
    kill_at = random.Random(seed).randint(50, 150)
    d = Daemon(binary, tmp, data_dir=data_dir, name="crash%d" % round_no).start()
    rd = Round(d.smtp_port, round_no, seed)
    threads = [threading.Thread(target=rd.client, args=(k,), daemon=True)
               for k in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    with rd.lock:
        while len(rd.acked) < kill_at and time.monotonic() < deadline:
            if not any(t.is_alive() for t in threads):
                break
            rd.lock.wait(0.05)
        acked_at_kill = len(rd.acked)
        d.kill9()  # SIGKILL by PID
        rd.stop = True
    for t in threads:
        t.join(30)
    check(not any(t.is_alive() for t in threads), "client threads hang after the kill")
    check(not rd.protocol_errors, "unexpected replies before the kill: %r", rd.protocol_errors)
    check(acked_at_kill >= kill_at, "only %d messages acknowledged before the deadline (want %d)",
          acked_at_kill, kill_at)
    acked = dict(rd.acked)  # includes 250s read while the SIGKILL was being delivered
    print("  round %d: seed %d, kill after %d acks (target %d), %d acked in all, %d of %d "
          "handed out" % (round_no, seed, acked_at_kill, kill_at, len(acked), rd.next_n,
                          MESSAGES), flush=True)
    check(len(acked) < MESSAGES, "all %d messages were acknowledged before the kill: "
          "the kill was not mid-way", MESSAGES)
    all_acked.update(acked)

    # restart on the same data_dir: it must come up, keep every acknowledged message
    t0 = time.monotonic()
    d2 = Daemon(binary, tmp, data_dir=data_dir, name="crash%d-restart" % round_no)
    d2.start(wait=20)
    print("  round %d: restarted in %.2f s" % (round_no, time.monotonic() - t0), flush=True)
    stored = {m["id"] for m in d2.queue_list()}
    missing = sorted(set(all_acked) - stored)
    check(not missing, "round %d: %d acknowledged messages are missing after the restart: %r",
          round_no, len(missing), missing[:10])
    for qid in acked:  # this round's messages, byte for byte
        raw = d2.queue_raw(qid)
        check(raw is not None, "queue show %s failed", qid)
        check(strip_received(raw) == acked[qid], "message %s differs from what was sent", qid)
    # messages stored without a 250 (the reply was lost with the kill) are allowed, but they
    # must be whole: each is exactly one of the messages a client sent
    extra = [m for m in d2.queue_list()
             if m["id"] not in all_acked and (m["subject"] or "").startswith(
                 "crash round %d " % round_no)]
    for m in extra:
        n = int(m["subject"].rsplit(" ", 1)[1])
        raw = d2.queue_raw(m["id"])
        check(raw is not None and strip_received(raw) == rd.sent.get(n),
              "unacknowledged stored message %s (%s) is not what was sent", m["id"], m["subject"])
    if extra:
        print("  round %d: %d whole messages were stored but not acknowledged (allowed: the "
              "reply was lost with the kill)" % (round_no, len(extra)), flush=True)
    # the restarted daemon works and stops cleanly
    c = SMTPConn(d2.smtp_port)
    try:
        c.reply()
        c.cmd("EHLO after.test")
        c.cmd("MAIL FROM:<after@example.test>")
        c.cmd("RCPT TO:<bob@example.test>")
        c.cmd("DATA")
        r = c.cmd("Subject: after restart %d\r\n\r\nok\r\n." % round_no)
        check(QUEUED_RE.match(r[0]), "the restarted daemon refused a message: %r", r)
        all_acked[QUEUED_RE.match(r[0]).group(1)] = b"Subject: after restart %d\r\n\r\nok\r\n" \
            % round_no
        c.cmd("QUIT")
    finally:
        c.close()
    rc = d2.stop()
    check(rc == 0, "the restarted daemon exited %r on SIGTERM\n%s", rc, d2.log_tail())


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 64
    binary = os.path.abspath(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else ROUNDS
    start_watchdog(500)
    passed = failed = 0
    try:
        tmp = tempdir("mb-crash-")
        data_dir = os.path.join(tmp, "var")
        all_acked = {}
        for i in range(1, rounds + 1):
            t0 = time.monotonic()
            try:
                run_round(binary, tmp, data_dir, i, all_acked)
                passed += 1
                print("ok   crash round %d (%.1fs)" % (i, time.monotonic() - t0), flush=True)
            except Exception as e:
                failed += 1
                print("FAIL crash round %d: %s" % (i, e), flush=True)
                break  # later rounds build on this one's store
    finally:
        cleanup_all()
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
