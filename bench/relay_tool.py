#!/usr/bin/env python3
"""Helpers for bench/relay (not meant to be run by hand): waiting, latency joins, one SMTP client.

  relay_tool.py field KEY                      < JSON line   -> prints the value of KEY
  relay_tool.py wait-standin BASE CA N TIMEOUT  poll BASE/_test/stats until messages >= N
  relay_tool.py wait-lines FILE N TIMEOUT       until FILE has N lines (nginx access log)
  relay_tool.py join ...                        per-message latency, mailbridge DB x upstream log
  relay_tool.py postfix-delays MAILLOG          Postfix's own delay= of every status=sent line
  relay_tool.py client PORT COUNT SIZE FROM TO  one SMTP session, COUNT messages one at a time,
                                                time from the final "." to the 250 reply

Every command prints one JSON object (or a bare value for `field`) on stdout. Waits are bounded:
exit 0 when the count was reached, 3 on timeout.
"""
import datetime
import http.client
import json
import math
import os
import socket
import sqlite3
import ssl
import statistics
import sys
import time


def summary(values):
    """n, mean, p50, p90, p99, max (nearest-rank percentiles), in the unit given, 1 decimal."""
    v = sorted(values)
    if not v:
        return None

    def pct(p):
        return v[max(0, math.ceil(p / 100.0 * len(v)) - 1)]

    r = lambda x: round(float(x), 2)  # noqa: E731
    return {"n": len(v), "mean": r(statistics.fmean(v)), "p50": r(statistics.median(v)),
            "p90": r(pct(90)), "p99": r(pct(99)), "max": r(v[-1]), "min": r(v[0])}


def cmd_field(key):
    line = sys.stdin.readline()
    print(json.loads(line)[key])


def cmd_wait_standin(base, ca, n, timeout):
    n, deadline = int(n), time.monotonic() + float(timeout)
    host, port = base.split("//", 1)[1].split(":")
    ctx = ssl.create_default_context(cafile=ca)
    conn, count, polls = None, 0, 0
    while True:
        try:
            if conn is None:
                conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=5)
            conn.request("GET", "/_test/stats")
            stats = json.loads(conn.getresponse().read())
            count = stats.get("messages", 0)
            polls += 1
        except (OSError, http.client.HTTPException, ValueError):
            conn = None
        if count >= n:
            print(json.dumps({"reached": True, "messages": count, "polls": polls}))
            return 0
        if time.monotonic() > deadline:
            print(json.dumps({"reached": False, "messages": count, "polls": polls}))
            return 3
        time.sleep(0.1)


def cmd_wait_lines(path, n, timeout):
    n, deadline = int(n), time.monotonic() + float(timeout)
    count = 0
    while True:
        try:
            with open(path, "rb") as f:
                count = f.read().count(b"\n")
        except OSError:
            count = 0
        if count >= n:
            print(json.dumps({"reached": True, "lines": count}))
            return 0
        if time.monotonic() > deadline:
            print(json.dumps({"reached": False, "lines": count}))
            return 3
        time.sleep(0.1)


def iso_ms(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000.0


def cmd_join(args):
    """join --db DB (--standin REQUESTS.json | --nginx ACCESS.log) --t0 EPOCH_S

    For each message mailbridge marked sent, the upstream request that carried it is found by
    the request-id mailbridge stored (attempts.upstream_id = the response's request-id header).
    upstream_done_ms: when the upstream finished answering it (stand-in: start + duration_ms of
    its request-log entry; nginx: $msec, written when the response has been sent).
    """
    opts = dict(zip(args[::2], args[1::2]))
    t0_ms = float(opts["--t0"]) * 1000.0
    upstream = {}  # request-id -> (start_ms or None, done_ms, status)
    total_requests = 0
    conns = set()
    max_at_start = None
    if "--standin" in opts:
        with open(opts["--standin"]) as f:
            log = json.load(f)["requests"]
        for e in log:
            if not e["path"].endswith("/sendMail"):
                continue
            total_requests += 1
            start = iso_ms(e["time"])
            upstream[e["request_id"]] = (start, start + (e["duration_ms"] or 0), str(e["status"]))
            if e.get("in_flight_at_start") is not None:
                max_at_start = max(max_at_start or 0, e["in_flight_at_start"])
    else:
        with open(opts["--nginx"]) as f:
            for line in f:
                p = line.split()
                if len(p) < 4 or p[3] != "POST":
                    continue
                total_requests += 1
                done = float(p[0]) * 1000.0
                upstream[p[1]] = (done - float(p[4]) * 1000.0 if len(p) > 4 else None, done, p[2])
                if len(p) > 5:
                    conns.add(p[5])
    db = sqlite3.connect("file:%s?mode=ro" % opts["--db"], uri=True)
    rows = db.execute(
        "SELECT m.id, m.received_at, m.state, a.at, a.upstream_id, a.latency_ms, a.result "
        "FROM messages m LEFT JOIN attempts a ON a.message_id = m.id ORDER BY m.id, a.id").fetchall()
    msgs = {}
    attempts = 0
    for mid, received, state, at, upid, lat, result in rows:
        m = msgs.setdefault(mid, {"received": received, "state": state, "sent": None})
        if at is not None:
            attempts += 1
        if result == "sent":
            m["sent"] = (at, upid, lat)
    e2e, e2e_start, recorded, http_ms, queue_ms, unmatched = [], [], [], [], [], 0
    received_ms = [m["received"] for m in msgs.values()]
    done_times = []
    for m in msgs.values():
        if m["sent"] is None:
            continue
        at, upid, lat = m["sent"]
        recorded.append(at - m["received"])
        if lat is not None:
            http_ms.append(lat)
            queue_ms.append(at - m["received"] - lat)
        u = upstream.get(upid)
        if u is None:
            unmatched += 1
            continue
        start, done, _status = u
        e2e.append(done - m["received"])
        done_times.append(done)
        if start is not None:
            e2e_start.append(start - m["received"])
    states = {}
    for m in msgs.values():
        states[m["state"]] = states.get(m["state"], 0) + 1
    ok_upstream = [u for u in upstream.values() if u[2] in ("202", "200")]
    last_done = max((u[1] for u in ok_upstream), default=None)
    first_done = min((u[1] for u in ok_upstream), default=None)
    # most requests open at once, from the upstream's own start/end times (ms resolution)
    ev = sorted([(u[0], 1) for u in upstream.values() if u[0] is not None] +
                [(u[1], -1) for u in upstream.values() if u[0] is not None],
                key=lambda x: (x[0], x[1]))
    cur = peak = 0
    for _t, d in ev:
        cur += d
        peak = max(peak, cur)
    out = {
        "messages_in_db": len(msgs),
        "states": states,
        "attempts": attempts,
        "upstream_requests": total_requests,
        "upstream_accepted": len(ok_upstream),
        "sent_without_upstream_match": unmatched,
        "max_concurrent_requests": peak if ev else None,
        "max_in_flight_at_start": max_at_start,
        "upstream_connections": len(conns) if conns else None,
        "first_received_ms_after_t0": round(min(received_ms) - t0_ms, 1) if received_ms else None,
        "last_received_ms_after_t0": round(max(received_ms) - t0_ms, 1) if received_ms else None,
        "first_upstream_done_s_after_t0": round((first_done - t0_ms) / 1000.0, 3) if first_done else None,
        "last_upstream_done_s_after_t0": round((last_done - t0_ms) / 1000.0, 3) if last_done else None,
        # end of DATA at mailbridge -> upstream finished answering the request that carried it
        "e2e_ms": summary(e2e),
        # end of DATA -> upstream started reading the request
        "e2e_to_request_start_ms": summary(e2e_start),
        # end of DATA -> mailbridge recorded "sent" (attempts.at)
        "mailbridge_recorded_ms": summary(recorded),
        # one HTTP request as mailbridge timed it (attempts.latency_ms)
        "http_request_ms": summary(http_ms),
        # recorded - http: time in the queue (waiting for a slot / claim) plus the result commit
        "queue_ms": summary(queue_ms),
    }
    print(json.dumps(out))
    return 0


def cmd_postfix_delays(path):
    """delay= of every status=sent line: Postfix's own arrival -> delivered time. Postfix prints it
    with 2 significant digits (e.g. 0.05, 1.3, 12); "arrival" is when smtpd/cleanup created the
    queue file, i.e. during the SMTP transaction (MAIL FROM), a little before the end of DATA."""
    delays = []
    with open(path, errors="replace") as f:
        for line in f:
            if "status=sent" not in line:
                continue
            for part in line.split(", "):
                part = part.strip()
                if part.startswith("delay="):
                    try:
                        delays.append(float(part[6:]) * 1000.0)
                    except ValueError:
                        pass
    print(json.dumps({"sent": len(delays), "delay_ms": summary(delays)}))
    return 0


def smtp_reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), lines


def cmd_client(port, count, size, mail_from, rcpt_to):
    """One session, COUNT messages one after the other (like a web app calling wp_mail in a loop
    over one kept-alive connection). Timed: from just before writing the final ".\\r\\n" until the
    whole 250 reply line has been read. The body is written before the timer starts."""
    count, size = int(count), int(size)
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    code, _ = smtp_reply(f)
    assert code == 220, code
    s.sendall(b"EHLO bench-client.localdomain\r\n")
    code, _ = smtp_reply(f)
    assert code == 250, code
    line = b"x" * 76 + b"\r\n"
    times, failures = [], 0
    t_first = time.time()
    for i in range(count):
        hdr = ("From: <%s>\r\nTo: <%s>\r\nSubject: bench client %d\r\nMessage-ID: <c%d.%d@bench>\r\n"
               "Date: %s\r\n\r\n" % (mail_from, rcpt_to, i, i, os.getpid(),
                                     time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())))
        body = hdr.encode() + line * max(1, (size - len(hdr)) // len(line))
        s.sendall(b"MAIL FROM:<%s>\r\n" % mail_from.encode())
        code, _ = smtp_reply(f)
        if code != 250:
            failures += 1
            continue
        s.sendall(b"RCPT TO:<%s>\r\n" % rcpt_to.encode())
        code, _ = smtp_reply(f)
        if code != 250:
            failures += 1
            s.sendall(b"RSET\r\n")
            smtp_reply(f)
            continue
        s.sendall(b"DATA\r\n")
        code, _ = smtp_reply(f)
        if code != 354:
            failures += 1
            continue
        s.sendall(body)
        t0 = time.perf_counter()
        s.sendall(b".\r\n")
        code, _ = smtp_reply(f)
        t1 = time.perf_counter()
        if code != 250:
            failures += 1
            continue
        times.append((t1 - t0) * 1000.0)
    t_last = time.time()
    s.sendall(b"QUIT\r\n")
    try:
        smtp_reply(f)
    except (OSError, ConnectionError):
        pass
    s.close()
    print(json.dumps({"messages": count, "accepted": len(times), "failures": failures,
                      "start": round(t_first, 3), "end": round(t_last, 3),
                      "reply_ms": summary(times)}))
    return 0 if failures == 0 else 1


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "field":
        return cmd_field(*args)
    if cmd == "wait-standin":
        return cmd_wait_standin(*args)
    if cmd == "wait-lines":
        return cmd_wait_lines(*args)
    if cmd == "join":
        return cmd_join(args)
    if cmd == "postfix-delays":
        return cmd_postfix_delays(*args)
    if cmd == "client":
        return cmd_client(*args)
    print("relay_tool.py: unknown command %s" % cmd, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv) or 0)
