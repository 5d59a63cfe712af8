#!/usr/bin/env python3
"""The JSON API's connections, sign-in and settings, on loopback: test_api_conn.py BINARY [TEST...]

The identity platform is tests/peers/idp and Microsoft Graph tests/peers/graph (started once
for the run over HTTPS with a CA made here); each test starts its own `mailbridge serve` with
one [connection cfgconn] in its config file, and calls /api/v1 with an API token (and with a
session where CSRF is the point). Every answer is kept, and the secrets test greps them all.

Covered:
  auth_csrf        every route answers 401 without credentials; with a session, every
                   state-changing route answers 403 csrf without X-CSRF-Token
  crud             create (201), read, list, update (sender, senders, force_from, a new secret
                   changes the fingerprint), delete; 409 exists; 404 for an unknown name
  validation       a field-specific 400 "invalid" for each bad field, on POST and PATCH
  config_readonly  a config-file connection is shown (source config, editable false) but
                   PATCH and DELETE answer 422 read_only, whose fix names the config file
  no_secrets       no answer of the whole run holds a client secret, sealed or not
  browser_signin   the authorize URL has state, an S256 code_challenge and redirect_uri =
                   the callback_url ({public_url}/oauth/callback)
  device_signin    device code against the IdP, end to end: pending, approved, connected,
                   the connection authorized with its account and a token; a declined one
  default_change   POST .../default: GET shows it, and the next message sent over SMTP goes
                   through the new default (Graph stand-in), without a restart
  settings         GET/PATCH settings: sources, validation, read_only for a key set in the
                   config file, stored values survive a restart
"""
import json
import os
import smtplib
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mbtest  # noqa: E402
from mbtest import (ADMIN_PASSWORD as PASSWORD, ALICE, CLIENT_ID, CLIENT_SECRET,  # noqa: E402
                    USER, check, check_error, wait_until)

OTHER_SECRET = "Qq7W~another.secret-value_0987654321ZYXWVU"
CFG_SECRET = "Cf9Z~config.file.secret-value_1122334455"
BUDGET = 420

IDP = GRAPH = CA = None
ANSWERS = []  # every raw answer of the run, for the secrets test

ROUTES = [("GET", "connections"), ("POST", "connections"), ("GET", "connections/x"),
          ("PATCH", "connections/x"), ("DELETE", "connections/x"),
          ("POST", "connections/x/default"), ("POST", "connections/x/signin"),
          ("GET", "connections/x/signin"), ("GET", "settings"), ("PATCH", "settings")]


class API(mbtest.ApiDaemon):
    """One daemon with [connection cfgconn] in its config file, and an API token."""

    answers = ANSWERS

    def __init__(self, binary, name, server=None, cfg_default=False):
        cfg = {"provider": "microsoft-graph", "sender": "cfg@contoso.test",
               "tenant": "contoso.test", "client_id": CLIENT_ID, "client_secret": CFG_SECRET,
               "login_url": IDP.base, "ca_file": CA}
        if cfg_default:
            cfg["default"] = "yes"
        super().__init__(binary, "apiconn-" + name, server=server, conns=[("cfgconn", cfg)],
                         token="tests")

    def create(self, name, **fields):
        body = dict(name=name, provider="microsoft-graph", tenant="contoso.test",
                    client_id=CLIENT_ID, client_secret=CLIENT_SECRET, sender=USER,
                    login_url=IDP.base, graph_url=GRAPH.base, ca_file=CA)
        body.update(fields)
        return self.ok("POST", "connections", body, 201)


def test_auth_csrf(binary):
    a = API(binary, "auth")
    for method, path in ROUTES:
        st, j, raw = a.api(method, path, body={} if method != "GET" else None, headers={})
        check_error(st, j, raw, 401, "unauthorized")
    a.set_password(PASSWORD)
    st, j, raw = a.api("POST", "login", {"password": PASSWORD}, headers={})
    check(st == 200, "login: %d %r", st, raw)
    cookie, csrf = a.session(PASSWORD)
    a.create("victim")
    for method, path in ROUTES:
        if method == "GET":
            continue
        path = path.replace("/x", "/victim")
        st, j, raw = a.api(method, path, body={"sender": "evil@contoso.test"},
                           headers={"Cookie": cookie})
        check_error(st, j, raw, 403, "csrf")
    st, j, raw = a.api("GET", "connections/victim", headers={"Cookie": cookie})
    check(st == 200 and j["sender"] == USER, "a refused call changed something: %r", raw)
    st, j, raw = a.api("PATCH", "connections/victim", {"sender": "ok@contoso.test"},
                       headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    check(st == 200 and j["sender"] == "ok@contoso.test", "PATCH with CSRF: %d %r", st, raw)


def test_crud(binary):
    a = API(binary, "crud")
    o = a.create("office", senders=["alias@contoso.test"], force_from=True)
    for k, v in (("name", "office"), ("provider", "microsoft-graph"), ("auth", "delegated"),
                 ("tenant", "contoso.test"), ("client_id", CLIENT_ID), ("cloud", "global"),
                 ("sender", USER), ("senders", ["alias@contoso.test"]), ("source", "store"),
                 ("editable", True), ("default", False), ("fallback", None),
                 ("force_from", True), ("state", "not authorized"), ("has_secret", True)):
        check(o.get(k) == v, "created %s: want %r, got %r", k, v, o.get(k))
    check(o["callback_url"] == "http://127.0.0.1:%d/oauth/callback" % a.port,
          "callback_url %r", o["callback_url"])
    fp = o["secret_fingerprint"]
    check(fp and CLIENT_SECRET not in fp, "fingerprint %r", fp)
    st, j, raw = a.api("POST", "connections", {"name": "office", "sender": USER,
                                                   "client_id": CLIENT_ID})
    check_error(st, j, raw, 409, "exists")
    st, j, raw = a.api("POST", "connections", {"name": "cfgconn", "sender": USER,
                                                   "client_id": CLIENT_ID})
    check_error(st, j, raw, 409, "exists")
    lst = a.ok("GET", "connections")
    names = [c["name"] for c in lst["connections"]]
    check(names == ["cfgconn", "office"], "listed %r", names)
    check(lst["callback_url"] == o["callback_url"] and lst["default_connection"] is None,
          "list: %r", {k: lst[k] for k in ("callback_url", "default_connection")})
    check(a.ok("GET", "connections/office") == o, "GET differs from the POST answer")
    o2 = a.ok("PATCH", "connections/office", {"sender": "other@contoso.test", "senders": [],
                                              "force_from": False, "fallback": "cfgconn"})
    check(o2["sender"] == "other@contoso.test" and o2["senders"] == [] and
          not o2["force_from"] and o2["fallback"] == "cfgconn" and
          o2["secret_fingerprint"] == fp, "PATCH: %r", o2)
    o3 = a.ok("PATCH", "connections/office", {"client_secret": OTHER_SECRET})
    check(o3["secret_fingerprint"] and o3["secret_fingerprint"] != fp,
          "a new secret kept the fingerprint: %r", o3["secret_fingerprint"])
    # the CLI sees what the API made, and the daemon's store is the same
    r = a.d.cli("connection", ["--json"], ["show", "office"])
    check(r.returncode == 0 and json.loads(r.stdout)[0]["sender"] == "other@contoso.test",
          "connection show: %r %r", r.stdout, r.stderr)
    # percent-encoded names
    a.create("with.dot_and-dash")
    a.ok("GET", "connections/with%2Edot_and-dash")
    check(a.ok("DELETE", "connections/office") == {"deleted": "office"}, "delete answer")
    for m, p in (("GET", "connections/office"), ("PATCH", "connections/office"),
                 ("DELETE", "connections/office"), ("POST", "connections/office/default"),
                 ("GET", "connections/office/signin")):
        st, j, raw = a.api(m, p, {"sender": USER} if m == "PATCH" else None)
        check_error(st, j, raw, 404, "not_found")


BAD_FIELDS = [
    ({"name": "bad name!"}, "name"),
    ({"name": "x" * 65}, "name"),
    ({"provider": "exchange"}, "provider"),
    ({"auth": "both"}, "auth"),
    ({"tenant": "not a tenant!"}, "tenant"),
    ({"tenant": "contoso"}, "tenant"),
    ({"client_id": "abc"}, "client_id"),
    ({"client_id": None}, "client_id"),
    ({"sender": "nobody"}, "sender"),
    ({"sender": "a b@contoso.test"}, "sender"),
    ({"senders": ["x"]}, "senders"),
    ({"senders": "alias@contoso.test"}, "senders"),
    ({"cloud": "mars"}, "cloud"),
    ({"fallback": "nope"}, "fallback"),
    ({"force_from": "yes"}, "force_from"),
    ({"client_secret": ""}, "client_secret"),
    ({"client_secret": 12}, "client_secret"),
    ({"login_url": "ftp://login.test"}, "login_url"),
    ({"graph_url": "http://graph.example.com"}, "graph_url"),
    ({"large_messages": "split"}, "large_messages"),
    ({"auth": "app-only", "tenant": "organizations"}, "tenant"),
    ({"colour": "blue"}, "colour"),
]


def test_validation(binary):
    a = API(binary, "valid")
    base = dict(name="v1", provider="microsoft-graph", tenant="contoso.test",
                client_id=CLIENT_ID, sender=USER)
    for bad, field in BAD_FIELDS:
        body = dict(base, **bad)
        st, j, raw = a.api("POST", "connections", body)
        check_error(st, j, raw, 400, "invalid", field)
    st, j, raw = a.api("POST", "connections", dict(base, auth="app-only"))
    check_error(st, j, raw, 400, "invalid", "client_secret")
    for body in (None, "[1]", "{bad json"):
        st, _, _, _ = mbtest.http_request(a.port, "POST", "/api/v1/connections", data=body,
                                          headers=dict(a.bearer,
                                                       **{"Content-Type": "application/json"}))
        check(st == 400, "body %r: %d", body, st)
    check(a.ok("GET", "connections")["connections"][0]["name"] == "cfgconn" and
          len(a.ok("GET", "connections")["connections"]) == 1, "a bad POST stored something")
    a.ok("POST", "connections", base, 201)
    for bad, field in BAD_FIELDS:
        if field == "name":
            continue
        st, j, raw = a.api("PATCH", "connections/v1", bad)
        check_error(st, j, raw, 400, "invalid", field)
    st, j, raw = a.api("PATCH", "connections/v1", {"name": "v2"})
    check_error(st, j, raw, 400, "invalid", "name")
    st, j, raw = a.api("PATCH", "connections/v1", {"fallback": "v1"})
    check_error(st, j, raw, 400, "invalid", "fallback")
    check(a.ok("GET", "connections/v1")["sender"] == USER, "a bad PATCH changed the sender")


def test_config_readonly(binary):
    a = API(binary, "ro")
    o = a.ok("GET", "connections/cfgconn")
    check(o["source"] == "config" and o["editable"] is False and o["has_secret"] is True and
          o["tenant"] == "contoso.test" and o["client_id"] == CLIENT_ID, "config conn: %r", o)
    for m in ("PATCH", "DELETE"):
        st, j, raw = a.api(m, "connections/cfgconn",
                               {"sender": "x@contoso.test"} if m == "PATCH" else None)
        check_error(st, j, raw, 422, "read_only")
        check(a.d.conf in j["error"]["fix"] and "edit" in j["error"]["fix"], "fix: %r", j)
    check(a.ok("GET", "connections/cfgconn") == o, "the config connection changed")


def test_no_secrets(binary):
    # runs last: every answer of the run, and this test's own
    a = API(binary, "nosec")
    a.create("s1")
    a.ok("PATCH", "connections/s1", {"client_secret": OTHER_SECRET})
    a.ok("GET", "connections")
    a.ok("GET", "connections/cfgconn")
    a.ok("GET", "settings")
    check(len(ANSWERS) > 20, "too few answers collected: %d", len(ANSWERS))
    for raw in ANSWERS:
        for s in (CLIENT_SECRET, OTHER_SECRET, CFG_SECRET):
            check(s.encode() not in raw, "an answer holds a secret: %r", raw[:300])
        try:
            j = json.loads(raw)
        except ValueError:
            continue
        objs = j.get("connections", [j]) if isinstance(j, dict) else []
        for o in objs:
            if isinstance(o, dict):
                check("client_secret" not in o and "secret" not in o,
                      "an answer has a secret field: %r", sorted(o))


def test_browser_signin(binary):
    a = API(binary, "browser")
    o = a.create("web")
    j = a.ok("POST", "connections/web/signin", {"method": "browser"})
    url = j["authorize_url"]
    check(url.startswith(IDP.base + "/contoso.test/oauth2/v2.0/authorize?"), "url %r", url)
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    check(len(q.get("state", "")) >= 20, "state %r", q.get("state"))
    check(q.get("code_challenge_method") == "S256" and len(q.get("code_challenge", "")) == 43,
          "PKCE: %r", q)
    check(q.get("redirect_uri") == o["callback_url"] == j["callback_url"] ==
          "http://127.0.0.1:%d/oauth/callback" % a.port, "redirect_uri %r", q)
    check(q.get("client_id") == CLIENT_ID and q.get("response_type") == "code" and
          "offline_access" in q.get("scope", ""), "query %r", q)
    for bad in ({}, {"method": "carrier-pigeon"}):
        st, jj, raw = a.api("POST", "connections/web/signin", bad)
        check_error(st, jj, raw, 400, "invalid", "method")
    st, jj, raw = a.api("POST", "connections/nope/signin", {"method": "browser"})
    check_error(st, jj, raw, 404, "not_found")
    a.create("app", auth="app-only")
    st, jj, raw = a.api("POST", "connections/app/signin", {"method": "browser"})
    check_error(st, jj, raw, 422, "no_signin")


def device_signin(a, name, username):
    """Signs connection name in as username through the API's device flow."""
    j = a.ok("POST", "connections/%s/signin" % name, {"method": "device"})
    check(j["user_code"] and j["verification_uri"] and j["expires_in"] > 0 and
          j["interval"] >= 1 and j["user_code"] in j["message"], "device start: %r", j)
    s = a.ok("GET", "connections/%s/signin" % name)
    check(s["status"] == "pending", "before approval: %r", s)
    IDP.control("POST", "device/approve", {"user_code": j["user_code"], "username": username})
    s = wait_until(lambda: (lambda x: x if x["status"] != "pending" else None)(
        a.ok("GET", "connections/%s/signin" % name)), 20, "the sign-in to finish")
    check(s["status"] == "connected" and s["account"] == username and
          s["token_valid_min"] > 0, "after approval: %r", s)
    return s


def test_device_signin(binary):
    a = API(binary, "device")
    check(a.ok("GET", "connections/cfgconn/signin") == {"status": "none"}, "no sign-in yet")
    a.create("dev")
    device_signin(a, "dev", USER)
    o = a.ok("GET", "connections/dev")
    check(o["state"] == "authorized" and o["account"] == USER and
          o["graph_token_valid_min"] > 0, "connection after sign-in: %r", o)
    # a declined one
    j = a.ok("POST", "connections/dev/signin", {"method": "device"})
    IDP.control("POST", "device/deny", {"user_code": j["user_code"]})
    s = wait_until(lambda: (lambda x: x if x["status"] != "pending" else None)(
        a.ok("GET", "connections/dev/signin")), 20, "the declined sign-in to end")
    check(s["status"] == "declined" and s["error"]["code"] == "declined" and
          s["error"]["fix"], "declined: %r", s)
    # the daemon's log names no device code or token
    log = open(a.d.log_path, "rb").read()
    check(b"device sign-in" in log and j["user_code"].encode() not in log,
          "log: %r", log[-800:])


def smtp_send(a, n):
    msg = ("From: app@outside.test\r\nTo: rcpt@example.org\r\nSubject: route %d\r\n"
           "Message-ID: <route-%d@outside.test>\r\n\r\nbody %d\r\n" % (n, n, n))
    with smtplib.SMTP("127.0.0.1", a.d.smtp_port, timeout=20) as s:
        s.sendmail("app@outside.test", ["rcpt@example.org"], msg)


def delivered_by(n):
    for m in GRAPH.messages(omit_mime=1):
        if "route-%d@" % n in json.dumps(m):
            return m["mailbox"]
    return None


def test_default_change(binary):
    a = API(binary, "default")
    a.create("one", sender=USER, force_from=True)
    a.create("two", sender=ALICE, force_from=True)
    device_signin(a, "one", USER)
    device_signin(a, "two", ALICE)
    o = a.ok("POST", "connections/one/default")
    check(o["default"] is True, "default answer: %r", o)
    smtp_send(a, 1)
    check(wait_until(lambda: delivered_by(1), 30, "message 1") == USER, "message 1 went "
          "through %r", delivered_by(1))
    o = a.ok("POST", "connections/two/default")
    lst = a.ok("GET", "connections")
    check(lst["default_connection"] == "two" and
          [c["name"] for c in lst["connections"] if c["default"]] == ["two"], "list %r", lst)
    smtp_send(a, 2)
    check(wait_until(lambda: delivered_by(2), 30, "message 2") == ALICE, "message 2 went "
          "through %r (the old default)", delivered_by(2))
    # deleting the default clears it
    a.ok("DELETE", "connections/two")
    check(a.ok("GET", "settings")["default_connection"] is None, "default kept after delete")
    # a config default = yes makes the default read-only
    b = API(binary, "cfgdef", cfg_default=True)
    b.create("three")
    st, j, raw = b.api("POST", "connections/three/default")
    check_error(st, j, raw, 422, "read_only")
    st, j, raw = b.api("PATCH", "settings", {"default_connection": "three"})
    check_error(st, j, raw, 422, "read_only")
    b.ok("POST", "connections/cfgconn/default")


def test_settings(binary):
    a = API(binary, "settings", server={"alert_email": "ops@contoso.test"})
    s = a.ok("GET", "settings")
    check(s == {"default_connection": None, "retention_days": 14, "alert_webhook": None,
                "alert_email": "ops@contoso.test",
                "sources": {"default_connection": "default", "retention_days": "default",
                            "alert_webhook": "default", "alert_email": "config"}},
          "settings: %r", s)
    for bad, field, code, status in (
            ({"retention_days": 0}, "retention_days", "invalid", 400),
            ({"retention_days": 3651}, "retention_days", "invalid", 400),
            ({"retention_days": "30"}, "retention_days", "invalid", 400),
            ({"alert_webhook": "ftp://hooks.test/x"}, "alert_webhook", "invalid", 400),
            ({"alert_webhook": "https://hooks test/x"}, "alert_webhook", "invalid", 400),
            ({"default_connection": "nope"}, "default_connection", "invalid", 400),
            ({"log_level": "debug"}, "log_level", "invalid", 400),
            ({"alert_email": "a@contoso.test"}, "alert_email", "read_only", 422)):
        st, j, raw = a.api("PATCH", "settings", bad)
        check_error(st, j, raw, status, code, field)
    check(a.ok("GET", "settings") == s, "a refused PATCH changed something")
    s2 = a.ok("PATCH", "settings", {"retention_days": 30,
                                    "alert_webhook": "https://hooks.example.com/T0/B1",
                                    "default_connection": "cfgconn"})
    check(s2["retention_days"] == 30 and s2["alert_webhook"] == "https://hooks.example.com/T0/B1"
          and s2["default_connection"] == "cfgconn" and
          s2["sources"] == {"default_connection": "store", "retention_days": "store",
                            "alert_webhook": "store", "alert_email": "config"}, "%r", s2)
    # the stored values are the daemon's: they survive a restart
    a.d.stop()
    a.d.start()
    check(a.ok("GET", "settings") == s2, "after a restart: %r", a.ok("GET", "settings"))
    s3 = a.ok("PATCH", "settings", {"alert_webhook": None, "default_connection": None})
    check(s3["alert_webhook"] is None and s3["sources"]["alert_webhook"] == "default" and
          s3["default_connection"] is None, "cleared: %r", s3)


TESTS = mbtest.named(test_auth_csrf, test_crud, test_validation, test_config_readonly,
                     test_browser_signin, test_device_signin, test_default_change, test_settings,
                     test_no_secrets)


def _started(ca, idp, graph):
    global CA, IDP, GRAPH
    CA, IDP, GRAPH = ca, idp, graph


if __name__ == "__main__":
    sys.exit(mbtest.run_with_idp_graph(TESTS, BUDGET, "apiconn", _started,
                                       {"device_interval": 1}))
