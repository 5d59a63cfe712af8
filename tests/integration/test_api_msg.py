#!/usr/bin/env python3
"""The JSON API's messages, log, test send and stats, on loopback: test_api_msg.py BINARY [TEST...]

One identity platform (tests/peers/idp) and one Microsoft Graph stand-in (tests/peers/graph) run
for the whole run over TLS with a test CA made here; their state is reset before each test. Each
test starts its own `mailbridge serve` (free loopback ports, temp data_dir, retry_schedule = 1s,2s)
with an app-only Graph connection "app" (default = yes unless said otherwise), an admin password
and an API token, and stops it by PID.

Covered:
  access         every route: 401 without credentials; 403 csrf from a session without
                 X-CSRF-Token on state-changing ones; a session with it and a token work
  list_filters   state (one, several, all), q over subject / recipient / sender / From (case-
                 insensitive; % and _ are literal), from/to as dates and ISO times, limit/offset
                 pages with total; bad filter values -> 400 invalid with a fix
  view           headers (RFC 2047 decoded), preview of an HTML-only message without its tags,
                 <script> or <style>, html flag, plain part preferred in multipart/alternative,
                 attempts with Graph's request-id; 404 unknown id, 400 malformed id
  resend         to the original recipients and to another (the Graph stand-in records who got
                 it), bulk resend with bad and unknown ids among good ones, bad bodies
  retry_delete   retry of a failed message (sent after), retry of a sent one -> 409; delete;
                 delete while it is being sent -> 409
  test_send      POST test: 200 with Graph's request-id, in the log with its attempt; html;
                 Graph fault -> 502 not_delivered with a fix, kept as failed; unknown
                 connection 404; no default connection 409 with the fix; bad fields 400
  stats          days=7 and 30: every UTC day, oldest first, today's sent/failed right; queue;
                 connection health; bad days -> 400

Skipped (not failed) only when `node` is not installed. Needs `npm ci` in tests/peers/idp and
tests/peers/graph (scripts/install-peers.sh).
"""
import base64
import datetime
import http.client
import json
import os
import signal
import smtplib
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mbtest  # noqa: E402
from mbtest import (ADMIN_PASSWORD as PASSWORD, CLIENT_ID, CLIENT_SECRET,  # noqa: E402
                    USER, check, check_error, wait_until)

BUDGET = 420

IDP = GRAPH = CA = None


class GW(mbtest.ApiDaemon):
    """A gateway with one Graph connection, an admin password and an API token."""

    def __init__(self, binary, name, default=True):
        conn = {"provider": "microsoft-graph", "auth": "app-only", "sender": USER,
                "tenant": "contoso.test", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "login_url": IDP.base, "graph_url": GRAPH.base, "ca_file": CA}
        if default:
            conn["default"] = "yes"
        super().__init__(binary, "apimsg-" + name,
                         server={"retry_schedule": "1s,2s", "log_level": "info"},
                         conns=[("app", conn)], password=PASSWORD, token="t")

    def msg(self, qid):
        return self.ok("GET", "messages/" + qid)

    def wait_state(self, qid, states, timeout=20):
        states = (states,) if isinstance(states, str) else tuple(states)
        last = {}

        def probe():
            st, j, raw = self.api("GET", "messages/" + qid)
            last["m"] = j
            return st == 200 and j["state"] in states and j
        try:
            return wait_until(probe, timeout, "%s to be %s" % (qid, "/".join(states)), step=0.1)
        except AssertionError as e:
            raise AssertionError("%s; last: %r\nlog:\n%s" % (e, last.get("m"),
                                                             self.d.log_tail(2000))) from None

    def submit(self, frm, rcpts, data):
        with smtplib.SMTP("127.0.0.1", self.d.smtp_port, local_hostname="client.test",
                          timeout=30) as s:
            s.ehlo()
            s.mail(frm)
            for r in rcpts:
                code, resp = s.rcpt(r)
                check(code == 250, "RCPT %s: %d %r", r, code, resp)
            code, resp = s.data(data)
            m = mbtest.QUEUED_RE.search("%d %s" % (code, resp.decode()))
            check(m, "DATA: %d %r", code, resp)
            return m.group(1)


def mail(frm, to, subject, body="Hello.\r\n", headers=(), msgid=None):
    msgid = msgid or "<%s@client.test>" % base64.b32encode(os.urandom(10)).decode().lower()
    h = ["From: %s" % frm, "To: %s" % to, "Subject: %s" % subject,
         "Date: Thu, 01 Jan 2026 12:00:00 +0000", "Message-ID: %s" % msgid] + list(headers)
    return ("\r\n".join(h) + "\r\n\r\n").encode() + (body.encode() if isinstance(body, str)
                                                     else body)


def graph_by_mid(msgid):
    mid = msgid.strip("<>")
    return [m for m in GRAPH.messages(omit_mime=1)
            if (m.get("message_id") or "").strip("<>") == mid]


def today_utc():
    return datetime.datetime.now(datetime.timezone.utc).date()


# ---- access ----

FAKE_ID = "0000000000AAAAAA"  # well-formed, absent

ROUTES = [("GET", "messages", None), ("GET", "messages/" + FAKE_ID, None),
          ("POST", "messages/%s/resend" % FAKE_ID, {}),
          ("POST", "messages/resend", {"ids": [FAKE_ID]}),
          ("POST", "messages/%s/retry" % FAKE_ID, None), ("DELETE", "messages/" + FAKE_ID, None),
          ("POST", "test", {"to": "x@contoso.test"}), ("GET", "stats", None)]


def test_access(binary):
    g = GW(binary, "access")
    cookie, csrf = g.session()
    for method, path, body in ROUTES:
        for hdrs in ({}, {"Authorization": "Bearer mbt_forged"},
                     {"Cookie": "mb_session=forged"}):
            st, j, raw = g.api(method, path, body, headers=hdrs)
            check_error(st, j, raw, 401, "unauthorized")
        if method != "GET":
            st, j, raw = g.api(method, path, body, headers={"Cookie": cookie})
            check_error(st, j, raw, 403, "csrf")
            st, j, raw = g.api(method, path, body,
                                   headers={"Cookie": cookie, "X-CSRF-Token": csrf + "x"})
            check_error(st, j, raw, 403, "csrf")
        hdrs = {"Cookie": cookie, "X-CSRF-Token": csrf}
        st, j, raw = g.api(method, path, body, headers=hdrs)
        check(st not in (401, 403, 405), "%s %s with a session and CSRF: %d %r", method, path,
              st, raw)
        st, j, raw = g.api(method, path, body)
        check(st not in (401, 403, 405), "%s %s with a token: %d %r", method, path, st, raw)


# ---- the list ----

def test_list_filters(binary):
    g = GW(binary, "list")
    ids = {}
    ids["hello"] = g.submit(USER, ["bob@contoso.test"],
                            mail(USER, "bob@contoso.test", "Hello World"))
    ids["pct"] = g.submit(USER, ["carol@contoso.test"],
                          mail("Carol Sender <%s>" % USER, "carol@contoso.test",
                               "100% sure_thing"))
    ids["other"] = g.submit(USER, ["dave@contoso.test", "erin@contoso.test"],
                            mail(USER, "dave@contoso.test, erin@contoso.test", "report"))
    for k in ids:
        g.wait_state(ids[k], "sent")
    GRAPH.fault(kind="send_as_denied", count=1)
    ids["fail"] = g.submit(USER, ["frank@contoso.test"],
                           mail(USER, "frank@contoso.test", "will fail"))
    g.wait_state(ids["fail"], "failed")

    def listed(qs):
        j = g.ok("GET", "messages" + qs)
        return [m["id"] for m in j["messages"]], j["total"], j

    got, total, j = listed("")
    check(total == 4 and len(got) == 4 and j["limit"] == 50 and j["offset"] == 0,
          "all: %r", j)
    check(got == [ids["fail"], ids["other"], ids["pct"], ids["hello"]],
          "not newest first: %r vs %r", got, ids)
    m = j["messages"][1]
    for k in ("id", "state", "sender", "from", "to", "subject", "size", "received", "updated",
              "attempts", "next_attempt", "connection", "last_error", "fix"):
        check(k in m, "summary lacks %s: %r", k, m)
    check(m["to"] == ["dave@contoso.test", "erin@contoso.test"] and m["subject"] == "report" and
          m["connection"] == "app" and m["attempts"] == 1 and m["received"].endswith("Z"),
          "summary %r", m)
    f = j["messages"][0]
    check(f["state"] == "failed" and f["last_error"] and f["fix"] and
          "Fix:" not in f["last_error"], "failed summary %r", f)

    check(listed("?state=failed")[0] == [ids["fail"]], "state=failed")
    check(listed("?state=sent")[1] == 3, "state=sent")
    check(listed("?state=all")[1] == 4, "state=all")
    check(listed("?state=queued,deferred")[1] == 0, "state=queued,deferred")
    check(set(listed("?state=sent,failed")[0]) == set(ids.values()), "state=sent,failed")
    # q: subject, recipient, sender, From display name; case-insensitive; % and _ literal
    check(listed("?q=hello%20WORLD")[0] == [ids["hello"]], "q subject")
    check(listed("?q=ERIN@")[0] == [ids["other"]], "q recipient")
    check(listed("?q=carol%20sender")[0] == [ids["pct"]], "q From header")
    check(listed("?q=" + USER.upper())[1] == 4, "q sender")
    check(listed("?q=%25")[0] == [ids["pct"]], "q %% is a wildcard")
    check(listed("?q=_")[0] == [ids["pct"]], "q _ is a wildcard")
    check(listed("?q=nothing-like-this")[1] == 0, "q no match")
    check(listed("?q=report&state=failed")[1] == 0, "q and state")
    # dates
    today = today_utc()
    yday = today - datetime.timedelta(days=1)
    tomorrow = today + datetime.timedelta(days=1)
    if listed("")[1] == 4 and today == today_utc():
        check(listed("?from=%s" % today)[1] == 4, "from today")
        check(listed("?to=%s" % today)[1] == 4, "to today (its end included)")
        check(listed("?to=%s" % yday)[1] == 0, "to yesterday")
        check(listed("?from=%s" % tomorrow)[1] == 0, "from tomorrow")
        later = (datetime.datetime.now(datetime.timezone.utc) +
                 datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        check(listed("?from=" + later)[1] == 0, "from in an hour")
        check(listed("?to=" + later.replace("Z", "%2B00:00"))[1] == 4, "to in an hour (+00:00)")
    # pages
    p1, t1, _ = listed("?limit=3")
    p2, t2, j2 = listed("?limit=3&offset=3")
    check(t1 == t2 == 4 and len(p1) == 3 and len(p2) == 1 and not set(p1) & set(p2) and
          j2["offset"] == 3 and j2["limit"] == 3, "pages %r %r", p1, p2)
    check(listed("?offset=10")[0] == [], "past the end")
    # bad values
    for qs, field in (("state=bogus", "state"), ("state=sent,bogus", "state"),
                      ("limit=0", "limit"), ("limit=201", "limit"), ("limit=abc", "limit"),
                      ("offset=-1", "offset"), ("from=2026-13-01", "from"),
                      ("from=2026-02-30", "from"), ("from=27.11.2026", "from"),
                      ("to=2026-11-27T25:00:00Z", "to"), ("to=2026-11-27T10:00:00", "to"),
                      ("from=2026-11-27&to=2026-11-01", "to"), ("q=" + "x" * 201, "q")):
        st, j, raw = g.api("GET", "messages?" + qs)
        e = check_error(st, j, raw, 400, "invalid")
        check(e["message"].startswith(field), "%s: message %r", qs, e)


# ---- one message ----

HTML_BODY = ("<html><head><title>T</title><style>p { color: red }</style></head><body>"
             "<script>alert('owned')</script><p>Hello <b>HTML</b> &amp; friends</p>"
             "<!-- secret comment --><div>Second&nbsp;line</div></body></html>")


def test_view(binary):
    g = GW(binary, "view")
    qp = HTML_BODY.replace("=", "=3D")
    qid = g.submit(USER, ["bob@contoso.test"], mail(
        USER, "bob@contoso.test", "=?utf-8?b?%s?=" % base64.b64encode(
            "Grüße".encode()).decode(), body=qp + "\r\n",
        headers=("MIME-Version: 1.0", "Content-Type: text/html; charset=utf-8",
                 "Content-Transfer-Encoding: quoted-printable",
                 "X-Folded: first\r\n  second")))
    m = g.wait_state(qid, "sent")
    names = [h["name"] for h in m["headers"]]
    check("Received" in names and "Subject" in names and "X-Folded" in names,
          "headers %r", names)
    hv = {h["name"]: h["value"] for h in m["headers"]}
    check(hv["Subject"] == "Grüße", "Subject not decoded: %r", hv["Subject"])
    check(hv["X-Folded"] == "first  second", "not unfolded: %r", hv["X-Folded"])
    check(m["subject"] == "Grüße", "summary subject %r", m["subject"])
    p = m["preview"]
    check(m["html"] is True, "html flag %r", m["html"])
    check("Hello HTML & friends" in p and "Second line" in p, "preview %r", p)
    for bad in ("<", "script", "alert", "color", "secret comment", "=3D"):
        check(bad not in p, "preview has %r: %r", bad, p)
    a = m["attempts"]
    rec = wait_until(lambda: graph_by_mid(hv["Message-ID"]), 10, "Graph's record")
    check(len(a) == 1 and a[0]["result"] == "sent" and a[0]["connection"] == "app" and
          a[0]["upstream_id"] == rec[0]["request_id"] and isinstance(a[0]["ms"], int) and
          a[0]["at"].endswith("Z"), "attempts %r", a)
    # multipart/alternative: the plain part is the preview
    alt = ("--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain words here.\r\n"
           "--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html words</p>\r\n"
           "--b1--\r\n")
    q2 = g.submit(USER, ["bob@contoso.test"], mail(
        USER, "bob@contoso.test", "alt", body=alt,
        headers=("MIME-Version: 1.0", 'Content-Type: multipart/alternative; boundary="b1"')))
    m2 = g.wait_state(q2, "sent")
    check(m2["preview"] == "Plain words here." and m2["html"] is True, "alt preview %r",
          m2["preview"])
    # a big plain message: the preview stops at 4 KB
    q3 = g.submit(USER, ["bob@contoso.test"], mail(USER, "bob@contoso.test", "big",
                                                    body="é" * 5000 + "\r\n"))
    m3 = g.msg(q3)
    check(len(m3["preview"].encode()) <= 4096 and m3["preview_truncated"] is True and
          m3["html"] is False, "big preview: %d bytes", len(m3["preview"].encode()))
    st, j, raw = g.api("GET", "messages/" + FAKE_ID)
    check_error(st, j, raw, 404, "not_found")
    for bad in ("abc", "..%2F..%2Fetc", "0000000000AAAAA%27", "x" * 300):
        st, j, raw = g.api("GET", "messages/" + bad)
        check(st == 400 and j["error"]["code"] == "invalid", "id %r: %d %r", bad, st, raw)


# ---- resend ----

def test_resend(binary):
    g = GW(binary, "resend")
    mid = "<resend-1@client.test>"
    qid = g.submit(USER, ["bob@contoso.test"], mail(USER, "bob@contoso.test", "resend me",
                                                    msgid=mid))
    g.wait_state(qid, "sent")
    j = g.ok("POST", "messages/%s/resend" % qid, want=201)
    c1 = g.wait_state(j["id"], "sent")
    check(c1["to"] == ["bob@contoso.test"] and j["id"] != qid, "copy %r", c1)
    j = g.ok("POST", "messages/%s/resend" % qid, {"to": ["other@contoso.test"]}, want=201)
    c2 = g.wait_state(j["id"], "sent")
    check(c2["to"] == ["other@contoso.test"], "copy to other: %r", c2["to"])
    recs = wait_until(lambda: len(graph_by_mid(mid)) >= 3 and graph_by_mid(mid), 15,
                      "three copies at Graph")
    check([r["all_recipients"] for r in recs] ==
          [["bob@contoso.test"], ["bob@contoso.test"], ["other@contoso.test"]],
          "at Graph: %r", [r["all_recipients"] for r in recs])
    # bad bodies
    for body in ({"to": []}, {"to": ["not an address"]}, {"to": "a@b@"}, {"to": [1]},
                 {"to": ["x@contoso.test"] * 101}):
        st, jj, raw = g.api("POST", "messages/%s/resend" % qid, body)
        check_error(st, jj, raw, 400, "invalid")
    st, jj, raw = g.api("POST", "messages/%s/resend" % FAKE_ID, {})
    check_error(st, jj, raw, 404, "not_found")
    # bulk: good ones, a malformed id and an unknown one
    n0 = len(graph_by_mid(mid))
    q2 = g.submit(USER, ["zed@contoso.test"], mail(USER, "zed@contoso.test", "second",
                                                   msgid="<resend-2@client.test>"))
    g.wait_state(q2, "sent")
    j = g.ok("POST", "messages/resend", {"ids": [qid, "bad!", q2, FAKE_ID]})
    check([r["id"] for r in j["resent"]] == [qid, q2], "resent %r", j)
    check([(e["id"], e["code"]) for e in j["errors"]] ==
          [("bad!", "invalid"), (FAKE_ID, "not_found")], "errors %r", j["errors"])
    check(all(e["message"] and e["fix"] for e in j["errors"]), "errors %r", j["errors"])
    for r in j["resent"]:
        g.wait_state(r["new_id"], "sent")
    check(len(graph_by_mid(mid)) == n0 + 1 and len(graph_by_mid("<resend-2@client.test>")) == 2,
          "bulk copies at Graph")
    for body in ({"ids": []}, {"ids": [qid] * 101}, {"ids": "x"}, {}):
        st, jj, raw = g.api("POST", "messages/resend", body)
        check_error(st, jj, raw, 400, "invalid")
    st, jj, raw = g.api("POST", "messages/resend", data=b"{not json",
                        headers=dict(g.bearer, **{"Content-Type": "application/json"}))
    check(st == 400, "bad JSON: %d", st)


# ---- retry and delete ----

def test_retry_delete(binary):
    g = GW(binary, "retry")
    GRAPH.fault(kind="send_as_denied", count=1)
    qid = g.submit(USER, ["bob@contoso.test"], mail(USER, "bob@contoso.test", "retry me",
                                                    msgid="<retry-1@client.test>"))
    m = g.wait_state(qid, "failed")
    check("Send As" in (m["last_error"] or "") + (m["fix"] or "") or m["fix"],
          "failed: %r", m)
    j = g.ok("POST", "messages/%s/retry" % qid)
    check(j["id"] == qid and j["state"] in ("queued", "sending", "sent"), "retry: %r", j)
    m = g.wait_state(qid, "sent")
    check([a["result"] for a in m["attempts"]] == ["permfail", "sent"], "attempts %r",
          m["attempts"])
    st, jj, raw = g.api("POST", "messages/%s/retry" % qid)
    check_error(st, jj, raw, 409, "conflict")
    st, jj, raw = g.api("POST", "messages/%s/retry" % FAKE_ID)
    check_error(st, jj, raw, 404, "not_found")
    # delete
    j = g.ok("DELETE", "messages/" + qid)
    check(j == {"deleted": qid}, "delete: %r", j)
    st, jj, raw = g.api("GET", "messages/" + qid)
    check_error(st, jj, raw, 404, "not_found")
    st, jj, raw = g.api("DELETE", "messages/" + qid)
    check_error(st, jj, raw, 404, "not_found")
    # while it is being sent: 409
    GRAPH.latency(4000)
    q2 = g.submit(USER, ["bob@contoso.test"], mail(USER, "bob@contoso.test", "slow"))
    g.wait_state(q2, "sending")
    st, jj, raw = g.api("DELETE", "messages/" + q2)
    check_error(st, jj, raw, 409, "conflict")
    GRAPH.latency(0)
    g.wait_state(q2, "sent")
    g.ok("DELETE", "messages/" + q2)


# ---- POST test ----

def test_test_send(binary):
    g = GW(binary, "testsend")
    t0 = time.monotonic()
    j = g.ok("POST", "test", {"to": "x@contoso.test"})
    check(j["result"] == "sent" and j["connection"] == "app" and isinstance(j["ms"], int),
          "test: %r", j)
    recs = [r for r in GRAPH.messages(omit_mime=1) if r["all_recipients"] == ["x@contoso.test"]]
    check(len(recs) == 1 and recs[0]["subject"] == "mailbridge test email" and
          recs[0]["mailbox"] == USER and recs[0]["request_id"] == j["upstream_id"],
          "at Graph: %r", recs)
    m = g.msg(j["id"])
    check(m["state"] == "sent" and m["subject"] == "mailbridge test email" and
          m["to"] == ["x@contoso.test"] and m["sender"] == USER and m["html"] is False and
          len(m["attempts"]) == 1 and m["attempts"][0]["upstream_id"] == j["upstream_id"],
          "in the log: %r", m)
    check(time.monotonic() - t0 < 30, "slow")
    # html, own subject and body, another from
    j = g.ok("POST", "test", {"to": "y@contoso.test", "html": True, "subject": "Hi there",
                              "body": "<p>Custom <i>body</i></p><script>x()</script>",
                              "connection": "app"})
    m = g.msg(j["id"])
    check(m["html"] is True and m["subject"] == "Hi there" and
          m["preview"] == "Custom body", "html test: %r", m["preview"])
    # a Graph fault: 502 with the cause and the fix; kept as failed
    GRAPH.fault(kind="send_as_denied", count=1)
    st, j, raw = g.api("POST", "test", {"to": "z@contoso.test"})
    e = check_error(st, j, raw, 502, "not_delivered")
    check("Send As" in e["message"] + e["fix"] and j.get("id"), "502: %r", j)
    m = g.msg(j["id"])
    check(m["state"] == "failed" and m["last_error"] and m["fix"] == e["fix"] and
          m["attempts"][0]["result"] == "permfail" and
          m["attempts"][0]["code"] == "403 ErrorSendAsDenied", "failed test in the log: %r", m)
    st, jl, raw = g.api("GET", "messages?q=z@contoso.test")
    check(jl["total"] == 1, "the failed test is not in the log: %r", jl)
    # unknown connection, bad fields
    st, j, raw = g.api("POST", "test", {"to": "x@contoso.test", "connection": "nope"})
    check_error(st, j, raw, 404, "not_found")
    for body in ({}, {"to": "not-an-address"}, {"to": "x@contoso.test", "html": "yes"},
                 {"to": "x@contoso.test", "subject": "a\r\nBcc: evil@x.test"},
                 {"to": "x@contoso.test", "from": "a b@c"}, {"to": ["x@contoso.test"]}):
        st, j, raw = g.api("POST", "test", body)
        check_error(st, j, raw, 400, "invalid")
    # no default connection: 409 with the guide's fix
    g2 = GW(binary, "testsend-nodef", default=False)
    st, j, raw = g2.api("POST", "test", {"to": "x@contoso.test"})
    e = check_error(st, j, raw, 409, "no_connection")
    check("default connection" in e["fix"], "fix %r", e)
    j = g2.ok("POST", "test", {"to": "x@contoso.test", "connection": "app"})
    check(j["result"] == "sent", "named connection: %r", j)


def test_send_gone(binary):
    """The client leaves before the outcome; the daemon stops at once mid-test."""
    g = GW(binary, "gone")
    GRAPH.latency(1500)
    c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
    c.request("POST", "/api/v1/test", body=json.dumps({"to": "gone@contoso.test"}).encode(),
              headers=dict(g.bearer, **{"Content-Type": "application/json"}))
    wait_until(lambda: GRAPH.inflight()["global"]["current"] >= 1, 10, "the send at Graph")
    c.close()  # the client leaves
    j = wait_until(lambda: (lambda j: j["total"] == 1 and j["messages"][0]["state"] == "sent"
                            and j)(g.ok("GET", "messages?q=gone@contoso.test")), 15,
                   "the left test in the log")
    check(j["messages"][0]["subject"] == "mailbridge test email", "log %r", j)
    check(g.ok("GET", "stats")["days"][-1]["sent"] == 1, "the daemon is fine after it")
    # a second SIGTERM stops at once: the admin goes while the test is at Graph
    GRAPH.latency(5000)
    box = {}

    def call():
        try:
            box["r"] = g.api("POST", "test", {"to": "stop@contoso.test"}, timeout=20)
        except OSError as e:
            box["r"] = e
    t = threading.Thread(target=call, daemon=True)
    t.start()
    wait_until(lambda: GRAPH.inflight()["global"]["current"] >= 1, 10, "the send at Graph")
    os.kill(g.d.pid, signal.SIGTERM)
    time.sleep(0.2)  # not a timing assertion: lets the first signal be handled alone
    os.kill(g.d.pid, signal.SIGTERM)
    rc = g.d.proc.wait(20)
    t.join(20)
    check(rc == 0, "exit status %r after a stop during a test send:\n%s", rc,
          g.d.log_tail(int(os.environ.get("MB_LOG_TAIL", "3000"))))
    check("r" in box, "the client got nothing at all")


# ---- stats ----

def test_stats(binary):
    g = GW(binary, "stats")
    day0 = today_utc()
    for i in range(3):
        g.ok("POST", "test", {"to": "s%d@contoso.test" % i})
    GRAPH.fault(kind="send_as_denied", count=1)
    st, j, raw = g.api("POST", "test", {"to": "f@contoso.test"})
    check(st == 502, "the failing test: %d %r", st, raw)
    GRAPH.latency(4000)
    q = g.submit(USER, ["bob@contoso.test"], mail(USER, "bob@contoso.test", "waiting"))
    g.wait_state(q, "sending")
    for days in (7, 30):
        j = g.ok("GET", "stats?days=%d" % days)
        d = j["days"]
        dates = [x["date"] for x in d]
        check(len(d) == days, "%d days: %r", days, dates)
        want = [str(day0 - datetime.timedelta(days=days - 1 - i)) for i in range(days)]
        if today_utc() == day0:
            check(dates == want, "dates %r, want %r", dates, want)
            check(d[-1]["sent"] == 3 and d[-1]["failed"] == 1, "today %r", d[-1])
            check(all(x["sent"] == 0 and x["failed"] == 0 for x in d[:-1]), "earlier %r", d)
        check(j["queue"] == 1 and j["messages"]["sending"] == 1 and
              j["messages"]["sent"] == 3 and j["messages"]["failed"] == 1, "counts %r", j)
        c = j["connections"]
        check(len(c) == 1 and c[0]["name"] == "app" and c[0]["ok"] is True and
              c[0]["state"] == "authorized" and isinstance(c[0]["token_valid_min"], int) and
              c[0]["token_valid_min"] > 0, "connections %r", c)
        check(j["usable_connections"] == 1, "usable %r", j)
    check(len(g.ok("GET", "stats")["days"]) == 7, "default days")
    for bad in ("0", "91", "abc", "-3", "7.5"):
        st, j, raw = g.api("GET", "stats?days=" + bad)
        check_error(st, j, raw, 400, "invalid")
    GRAPH.latency(0)
    g.wait_state(q, "sent")


TESTS = mbtest.named(test_access, test_list_filters, test_view, test_resend, test_retry_delete,
                     test_test_send, test_send_gone, test_stats)


def _started(ca, idp, graph):
    global CA, IDP, GRAPH
    CA, IDP, GRAPH = ca, idp, graph


if __name__ == "__main__":
    sys.exit(mbtest.run_with_idp_graph(TESTS, BUDGET, "apimsg", _started))
