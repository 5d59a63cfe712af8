#!/usr/bin/env python3
"""The JSON API's access control, on loopback: test_api.py BINARY [TEST-NAME...]

Each test starts its own `mailbridge serve` (free loopback ports, temp data_dir, one
[connection] whose client secret comes from a client_secret_file) and stops it by PID. No peers
are needed: nothing here signs in to Microsoft.

Covered (issue 5, section 2 "Access control", and the first two routes of section 1):
  no_credentials   every /api/v1 path answers 401 JSON without credentials, from 127.0.0.1
                   (loopback is not trusted), also with a forged cookie or bearer token; the
                   security headers are on every answer
  no_password      login before `mailbridge admin password` -> 409 no_admin_password
  password_cli     the CLI refuses a short password and never prints the password or its hash
  rate_limit       wrong password -> 401; the sixth failure within a minute from one address
                   -> 429 with Retry-After, even with the right password; another address is
                   not affected
  session          login sets mb_session (HttpOnly, SameSite=Strict, Path=/, no Secure on an
                   http public_url) and returns a CSRF token; /session answers with it;
                   Secure is set when public_url is https
  csrf             POST without or with a wrong X-CSRF-Token -> 403 csrf; with it -> 200;
                   the session is gone after logout
  api_token        `admin token create` prints a token once; Bearer works for GET and POST
                   without CSRF; `admin token list` shows no token; a revoked token -> 401
  no_secrets       /connections lists the connection but never its client secret or a token
  not_found        unknown path -> 404 JSON, wrong method -> 405 JSON with Allow
  stats            /stats counts messages by state
"""
import http.client
import json
import os
import smtplib
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mbtest  # noqa: E402
from mbtest import ADMIN_PASSWORD as PASSWORD, CLIENT_ID, check, check_error  # noqa: E402

CLIENT_SECRET = "Zx8Q~api.secret_value-0987654321zyxwvutsrq"
SENDER = "user@contoso.test"
BUDGET = 120  # seconds for the whole run (watchdog)

ROUTES = [("GET", "/api/v1/session"), ("POST", "/api/v1/logout"),
          ("GET", "/api/v1/connections"), ("GET", "/api/v1/stats"),
          ("GET", "/api/v1/no-such-route"), ("DELETE", "/api/v1/connections")]


def API(binary, name, server=None):
    """One daemon with one config-file connection (its client secret in a
    client_secret_file; nothing signs in), neither an admin password nor an API token."""
    return mbtest.ApiDaemon(binary, "api-" + name, server=server, conns=[("office365", {
        "provider": "microsoft-graph", "sender": SENDER, "auth": "app-only",
        "tenant": "contoso.test", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "login_url": "http://127.0.0.1:9/", "graph_url": "http://127.0.0.1:9/",
        "default": "yes"})])


def check_headers(h, what):
    check(h.get("content-type", "").startswith("application/json"),
          "%s: Content-Type %r", what, h.get("content-type"))
    check(h.get("cache-control") == "no-store", "%s: Cache-Control %r", what,
          h.get("cache-control"))
    check(h.get("x-content-type-options") == "nosniff", "%s: no nosniff", what)
    check(h.get("content-security-policy") == "default-src 'none'; frame-ancestors 'none'",
          "%s: Content-Security-Policy %r", what, h.get("content-security-policy"))


def test_no_credentials(binary):
    a = API(binary, "nocred")
    a.set_password()
    for method, path in ROUTES:
        for hdrs in ({}, {"Cookie": "mb_session=forged"},
                     {"Authorization": "Bearer mbt_forged"}, {"Authorization": "Basic YTpi"},
                     {"X-CSRF-Token": "x"}):
            st, h, j, raw = a.request(method, path, headers=hdrs)
            check_error(st, j, raw, 401, "unauthorized")
            check_headers(h, "%s %s %r" % (method, path, hdrs))
            check("set-cookie" not in h, "a 401 set a cookie")


def test_no_password(binary):
    a = API(binary, "nopw")
    st, h, j, raw = a.login("anything at all")
    check_error(st, j, raw, 409, "no_admin_password")
    check("mailbridge admin password" in j["error"]["fix"], "fix: %r", j["error"])
    check_headers(h, "login without a password")


def test_password_cli(binary):
    a = API(binary, "pwcli")
    rc, out, err = a.admin("password", stdin_text="short-11chr\n")
    check(rc != 0, "an 11-character password was accepted")
    check("12" in err, "no hint about the minimum length: %r", err)
    st, _, j, raw = a.login("short-11chr")
    check_error(st, j, raw, 409, "no_admin_password")
    text = a.set_password()
    check(PASSWORD not in text and "scrypt" not in text, "the CLI printed a secret: %r", text)
    st, _, j, raw = a.login()
    check(st == 200 and j.get("csrf"), "login after setting the password: %d %r", st, raw)
    # a new password replaces the old one
    a.set_password("another long password")
    st, _, j, raw = a.login()
    check_error(st, j, raw, 401, "bad_password")
    st, _, j, raw = a.login("another long password")
    check(st == 200, "login with the new password: %d %r", st, raw)


def test_rate_limit(binary):
    a = API(binary, "rate")
    a.set_password()
    src = "127.0.0.2"  # one client address; 127.0.0.1 stands for another
    for i in range(5):
        st, h, j, raw = a.login("wrong password %d" % i, source=src)
        check_error(st, j, raw, 401, "bad_password")
    st, h, j, raw = a.login("wrong password 6", source=src)
    check_error(st, j, raw, 429, "rate_limited")
    check_headers(h, "429")
    ra = int(h.get("retry-after", "0"))
    check(1 <= ra <= 60, "Retry-After %r", h.get("retry-after"))
    st, h, j, raw = a.login(source=src)
    check_error(st, j, raw, 429, "rate_limited")
    st, h, j, raw = a.login(source="127.0.0.1")
    check(st == 200, "another address was locked out too: %d %r", st, raw)


def test_session(binary):
    a = API(binary, "session")
    a.set_password()
    st, h, j, raw = a.login()
    check(st == 200, "login: %d %r", st, raw)
    check_headers(h, "login")
    sc = h.get("set-cookie", "")
    attrs = [x.strip() for x in sc.split(";")]
    check(attrs[0].startswith("mb_session=") and len(attrs[0]) > len("mb_session=") + 30,
          "cookie %r", sc)
    for want in ("HttpOnly", "SameSite=Strict", "Path=/"):
        check(want in attrs, "cookie lacks %s: %r", want, sc)
    check("Secure" not in attrs, "Secure on an http public_url: %r", sc)
    csrf = j.get("csrf")
    check(isinstance(csrf, str) and len(csrf) >= 32, "csrf %r", j)
    check(attrs[0].split("=", 1)[1] not in raw.decode(), "the session id is in the body")
    st, h, j, raw = a.request("GET", "/api/v1/session", headers={"Cookie": attrs[0]})
    check(st == 200 and j.get("user") == "admin" and j.get("csrf") == csrf,
          "session: %d %r", st, raw)
    check_headers(h, "session")
    # another login is another session with another CSRF token
    cookie2, csrf2 = a.session()
    check(cookie2 != attrs[0] and csrf2 != csrf, "two logins share a session")

    b = API(binary, "session-https", server={"public_url": "https://mail.contoso.test"})
    b.set_password()
    st, h, j, raw = b.login()
    check(st == 200, "login: %d %r", st, raw)
    check("Secure" in [x.strip() for x in h.get("set-cookie", "").split(";")],
          "no Secure on an https public_url: %r", h.get("set-cookie"))


def test_csrf(binary):
    a = API(binary, "csrf")
    a.set_password()
    cookie, csrf = a.session()
    st, h, j, raw = a.request("POST", "/api/v1/logout", headers={"Cookie": cookie})
    check_error(st, j, raw, 403, "csrf")
    check_headers(h, "403")
    st, h, j, raw = a.request("POST", "/api/v1/logout",
                              headers={"Cookie": cookie, "X-CSRF-Token": csrf[:-1] + "A"
                                       if csrf[-1] != "A" else csrf[:-1] + "B"})
    check_error(st, j, raw, 403, "csrf")
    _, csrf_other = a.session()  # another session's token does not do either
    st, h, j, raw = a.request("POST", "/api/v1/logout",
                              headers={"Cookie": cookie, "X-CSRF-Token": csrf_other})
    check_error(st, j, raw, 403, "csrf")
    st, h, j, raw = a.request("GET", "/api/v1/session", headers={"Cookie": cookie})
    check(st == 200, "the refused logouts ended the session: %d %r", st, raw)
    st, h, j, raw = a.request("POST", "/api/v1/logout",
                              headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    check(st == 200 and j == {"ok": True}, "logout: %d %r", st, raw)
    check("Max-Age=0" in h.get("set-cookie", ""), "logout did not clear the cookie: %r",
          h.get("set-cookie"))
    st, h, j, raw = a.request("GET", "/api/v1/session", headers={"Cookie": cookie})
    check_error(st, j, raw, 401, "unauthorized")


def test_api_token(binary):
    a = API(binary, "token")
    rc, out, err = a.admin("token", "create", "ci-script")
    check(rc == 0, "token create: rc=%d %s", rc, err)
    token = out.strip()
    check(token.startswith("mbt_") and len(token) >= 40 and "\n" not in token,
          "token %r", out)
    rc, out2, err2 = a.admin("token", "create", "ci-script")
    check(rc != 0 and "exists" in err2, "a duplicate name was accepted: %r", err2)
    rc, lst, err = a.admin("token", "list")
    check(rc == 0 and "ci-script" in lst and "sha256:" in lst and token not in lst,
          "token list: %r", lst)
    rc, lj, err = a.admin("token", "list", "--json")
    check(rc == 0 and json.loads(lj)[0]["name"] == "ci-script", "token list --json: %r", lj)
    bearer = {"Authorization": "Bearer " + token}
    for path in ("/api/v1/session", "/api/v1/connections", "/api/v1/stats"):
        st, h, j, raw = a.request("GET", path, headers=bearer)
        check(st == 200, "GET %s with a token: %d %r", path, st, raw)
        check_headers(h, path)
    st, h, j, raw = a.request("POST", "/api/v1/logout", headers=bearer)
    check(st == 200, "POST with a token needs no CSRF: %d %r", st, raw)
    # a bad token is not rescued by a good cookie, and a near-miss token is refused
    st, h, j, raw = a.request("GET", "/api/v1/stats",
                              headers={"Authorization": "Bearer " + token[:-1] + "x"})
    check_error(st, j, raw, 401, "unauthorized")
    rc, out, err = a.admin("token", "revoke", "ci-script")
    check(rc == 0, "revoke: rc=%d %s", rc, err)
    st, h, j, raw = a.request("GET", "/api/v1/stats", headers=bearer)
    check_error(st, j, raw, 401, "unauthorized")
    rc, out, err = a.admin("token", "revoke", "ci-script")
    check(rc != 0, "revoking an absent token succeeded")
    rc, out, err = a.admin("token", "create", "bad name!")
    check(rc != 0, "a token name with a space was accepted")


def test_no_secrets(binary):
    a = API(binary, "secrets")
    a.set_password()
    rc, out, err = a.admin("token", "create", "t1")
    token = out.strip()
    cookie, csrf = a.session()
    for hdrs in ({"Cookie": cookie}, {"Authorization": "Bearer " + token}):
        st, h, j, raw = a.request("GET", "/api/v1/connections", headers=hdrs)
        check(st == 200, "connections: %d %r", st, raw)
        text = raw.decode()
        check(CLIENT_SECRET not in text and CLIENT_SECRET[:12] not in text,
              "the client secret is in /connections: %s", text)
        check(token not in text and "mbt_" not in text and csrf not in text,
              "a token is in /connections")
        conns = j["connections"]
        check(len(conns) == 1, "connections: %r", conns)
        c = conns[0]
        check(c["name"] == "office365" and c["provider"] == "microsoft-graph" and
              c["sender"] == SENDER and c["source"] == "config" and c["default"] is True,
              "connection: %r", c)
        for k in ("state", "account", "graph_token_valid_min", "last_error", "fix",
                  "secret_fingerprint"):
            check(k in c, "connection lacks %s: %r", k, c)
        check(str(c["secret_fingerprint"]).startswith("sha256:"),
              "no fingerprint of the client secret: %r", c)
        for k in c:
            check("secret" not in k or k in ("secret_fingerprint", "secret_expires",
                                               "has_secret"),
                  "connection has a %s field", k)


def test_not_found(binary):
    a = API(binary, "notfound")
    rc, out, err = a.admin("token", "create", "t1")
    bearer = {"Authorization": "Bearer " + out.strip()}
    st, h, j, raw = a.request("GET", "/api/v1/no-such-route", headers=bearer)
    check_error(st, j, raw, 404, "not_found")
    check_headers(h, "404")
    st, h, j, raw = a.request("DELETE", "/api/v1/connections", headers=bearer)
    check_error(st, j, raw, 405, "method_not_allowed")
    check(h.get("allow") == "GET, POST", "Allow %r", h.get("allow"))
    check_headers(h, "405")
    st, h, j, raw = a.request("GET", "/api/v1/login")  # the open route: no credentials
    check_error(st, j, raw, 405, "method_not_allowed")
    check(h.get("allow") == "POST", "Allow %r", h.get("allow"))
    st, h, j, raw = a.request("POST", "/api/v1/login", headers={"Content-Type": "text/plain"})
    check(st in (400, 409), "login without a body: %d %r", st, raw)
    a.set_password()
    c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
    c.request("POST", "/api/v1/login", body=b"{not json", headers={})
    r = c.getresponse()
    j = json.loads(r.read())
    c.close()
    check(r.status == 400 and j["error"]["code"] == "bad_request", "bad JSON: %d %r",
          r.status, j)


def test_stats(binary):
    a = API(binary, "stats")
    rc, out, err = a.admin("token", "create", "t1")
    bearer = {"Authorization": "Bearer " + out.strip()}
    st, h, j, raw = a.request("GET", "/api/v1/stats", headers=bearer)
    check(st == 200, "stats: %d %r", st, raw)
    for k in ("queued", "sending", "deferred", "sent", "failed"):
        check(j["messages"].get(k) == 0, "stats of an empty store: %r", j)
    with smtplib.SMTP("127.0.0.1", a.d.smtp_port, timeout=10) as s:
        s.sendmail(SENDER, ["bob@contoso.test"],
                   "From: %s\r\nTo: bob@contoso.test\r\nSubject: stats\r\n\r\nhi\r\n" % SENDER)
    st, h, j, raw = a.request("GET", "/api/v1/stats", headers=bearer)
    check(st == 200 and sum(j["messages"].values()) == 1, "stats after one message: %r", raw)
    check(j["queue"] + j["messages"]["sent"] + j["messages"]["failed"] == 1, "queue: %r", j)


TESTS = mbtest.named(test_no_credentials, test_no_password, test_password_cli, test_rate_limit,
                     test_session, test_csrf, test_api_token, test_no_secrets, test_not_found,
                     test_stats)

if __name__ == "__main__":
    sys.exit(mbtest.main(TESTS, BUDGET))
