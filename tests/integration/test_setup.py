#!/usr/bin/env python3
"""mailbridge setup microsoft against the stand-ins: test_setup.py BINARY [TEST-NAME...]

One identity platform (tests/peers/idp) and one Graph stand-in with the app-registration
endpoints (tests/peers/graph) run for the whole run over TLS with a test CA made here. The
admin's device code (bootstrap public client 14d82eec-...) and the sender's are approved
through the IdP's control API. The two stand-ins do not share a directory: after setup has
created the application in the Graph stand-in, the test registers the same client id and
secret in the IdP (what Entra does by itself), so the sender can sign in with it.

Covered (issue 6, "Proof", setup part):
- end to end, delegated Graph: every step "created", the connection written (tenant id from the
  admin's token), the sender not signed in yet; run again with --sign-in: every step "already
  there", the sender signs in, the test mail is delivered; the directory holds one app, one
  service principal, one grant, each owner once, one secret;
- break one piece at a time through the stand-in (delete the consent grant, remove an owner,
  expire the secret) and check setup repairs exactly that; the repaired secret works; a last
  run changes nothing;
- doctor naming each broken piece: `doctor ms --admin` (the admin's device code approved here)
  passes every registration item after setup; then, one at a time, the redirect URI removed,
  a permission removed, the consent grant deleted, an owner removed, the secret expired and the
  secret expiring within 30 days: doctor names the item with its fix, and setup repairs it;
- removePassword: when setup adds a new secret it removes the expired secrets it created, not
  the one in use, not one still valid, not one someone else added;
- app-only microsoft-smtp: app role assignment SMTP.SendAsApp, the §4.5/§7 PowerShell with the
  real ids; a token is fetched once the app is known to the IdP;
- an admin without a directory role: the 403 names the role to sign in with;
- the admin declines the device code: setup stops and says so.

Skipped (not failed) only when `node` is not installed.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mbtest  # noqa: E402
from mbtest import (Daemon, Graph, IdP, check, check_item, on_cleanup,  # noqa: E402
                    wait_until)

for _v in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_v, None)  # loopback only
os.environ.pop("MAILBRIDGE_CONFIG", None)
os.environ.pop("CREDENTIALS_DIRECTORY", None)

USER = "user@contoso.test"
ADMIN = "admin@contoso.test"
ALICE = "alice@contoso.test"
TENANT_ID = "11111111-2222-3333-4444-555555555555"
BOOTSTRAP = "14d82eec-204b-4c2f-b7e8-296a70dab67e"
CODE_RE = re.compile(r"enter the code ([A-Z0-9-]+)")
BUDGET = 240  # seconds for the whole run (watchdog)

IDP = GRAPH = None
CA = None
ENV = None  # the one config + data_dir every test shares (they build on each other)


class Env:
    def __init__(self, binary):
        self.binary = binary
        # lives for the whole run (the tests build on each other): not a per-test tempdir
        self.tmp = tempfile.mkdtemp(prefix="mb-it-setup-")
        # never started: config + data_dir; public_url is the documented default, which is
        # what setup registers as the redirect URI's base
        self.d = Daemon(binary, self.tmp, name="mb",
                        server={"public_url": "http://localhost:8025"})
        self.conf = self.d.conf

    def run(self, *args, approve=(ADMIN,), deny=False, timeout=60):
        """Runs a command that may show device codes; approves the i-th code as approve[i]."""
        p = subprocess.Popen([self.binary] + list(args) + ["-c", self.conf],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        on_cleanup(lambda: p.poll() is None and (p.kill(), p.wait(10)))
        out = []
        t = threading.Thread(target=lambda: out.extend(iter(p.stdout.readline, b"")),
                             daemon=True)
        t.start()
        seen = 0
        deadline = time.monotonic() + timeout
        while p.poll() is None and time.monotonic() < deadline:
            codes = CODE_RE.findall(b"".join(out).decode("utf-8", "replace"))
            if len(codes) > seen:
                code = codes[seen]
                if deny:
                    IDP.control("POST", "device/deny", {"user_code": code})
                else:
                    check(seen < len(approve), "an unexpected device code: %s",
                          b"".join(out).decode())
                    IDP.control("POST", "device/approve",
                                {"user_code": code, "username": approve[seen]})
                seen += 1
            time.sleep(0.1)
        if p.poll() is None:
            p.kill()
            p.wait(10)
            raise AssertionError("%s did not finish within %d s:\n%s"
                                 % (args, timeout, b"".join(out).decode()))
        t.join(5)
        text = b"".join(out).decode("utf-8", "replace")
        print("  $ mailbridge %s  -> %d" % (" ".join(args), p.returncode))
        for line in text.splitlines():
            print("    | " + line)
        return p.returncode, text

    def setup(self, *extra, **kw):
        return self.run("setup", "microsoft", "--login-url", IDP.base, "--graph-url",
                        GRAPH.base, "--ca-file", CA, *extra, **kw)


def directory():
    return GRAPH.control("GET", "directory")


def app_named(d, name):
    apps = [a for a in d["applications"] if a["displayName"] == name]
    check(len(apps) == 1, "%d applications named %r: %s", len(apps), name,
          [a["displayName"] for a in d["applications"]])
    return apps[0]


def line(text, step):
    """The one line a step printed."""
    ls = [ln for ln in text.splitlines() if ln[:18].rstrip() == step and ln[17:18] == " "]
    check(len(ls) == 1, "step %r printed %d lines:\n%s", step, len(ls), text)
    return ls[0]


def expect(text, step, word, *more):
    ln = line(text, step)
    check(ln[18:].startswith(word), "step %r: wanted %r: %s", step, word, ln)
    for m in more:
        check(m in ln, "step %r does not mention %r: %s", step, m, ln)


def register_in_idp(app, roles=None):
    """What Entra does by itself: the new app is a client of the identity platform."""
    secret = [s for s in app["secrets"] if not s["expired"]][-1]["secretText"]
    c = {"client_id": app["appId"], "client_secret": secret, "name": app["displayName"],
         "redirect_uris": ["http://localhost:8025/oauth/callback"],
         "grant_types": ["authorization_code", "refresh_token", "client_credentials",
                         "urn:ietf:params:oauth:grant-type:device_code"]}
    if roles:
        c["app_roles"] = roles
    IDP.control("POST", "clients", c)


def _req(method, url, data=None, headers=None):
    """(status, text) with our CA; data is bytes or None."""
    import urllib.error
    import urllib.request
    r = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with IDP.api.opener.open(r, timeout=15) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def admin_token():
    """An admin token for breaking things through Graph (device code, approved here)."""
    scope = "https://graph.microsoft.com/Application.ReadWrite.All " \
            "https://graph.microsoft.com/DelegatedPermissionGrant.ReadWrite.All"
    base = IDP.base + "/" + TENANT_ID + "/oauth2/v2.0/"
    form = urllib.parse.urlencode({"client_id": BOOTSTRAP, "scope": scope})
    st, body = _req("POST", base + "devicecode", form.encode(), FORM)
    check(st == 200, "devicecode: %d %s", st, body)
    dc = json.loads(body)
    IDP.control("POST", "device/approve", {"user_code": dc["user_code"], "username": ADMIN})

    def poll():
        f = urllib.parse.urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                                    "client_id": BOOTSTRAP, "device_code": dc["device_code"]})
        s, b = _req("POST", base + "token", f.encode(), FORM)
        return json.loads(b)["access_token"] if s == 200 else (time.sleep(1.1) or None)
    return wait_until(poll, 15, "the admin token")


def graph_call(token, method, path, body=None):
    h = {"Authorization": "Bearer " + token}
    if body is not None:
        h["Content-Type"] = "application/json"
        body = json.dumps(body).encode()
    st, text = _req(method, GRAPH.base + path, body, h)
    check(st in (200, 201, 204), "%s %s: %d %s", method, path, st, text[:300])


def counts(d, app):
    sp = [s for s in d["servicePrincipals"] if s["appId"] == app["appId"]]
    grants = [g for g in d["oauth2PermissionGrants"] if sp and g["clientId"] == sp[0]["id"]]
    return {"apps": len([a for a in d["applications"] if a["displayName"] == app["displayName"]]),
            "sps": len(sp), "grants": len(grants),
            "owners": sorted(o["userPrincipalName"] for o in app["owners"]),
            "secrets": len(app["secrets"])}


NAME = "mailbridge " + USER


def test_end_to_end(binary):
    rc, out = ENV.setup("--name", "ms", "--sender", USER)
    check(rc == 0, "setup rc=%d", rc)
    for s in ("application", "client secret", "service principal", "consent", "owners",
              "connection"):
        expect(out, s, "created")
    expect(out, "owners", "created", ADMIN, USER)
    expect(out, "admin", "signed in as admin@contoso.test", TENANT_ID)
    expect(out, "sign-in", "next:", "mailbridge auth login ms --device")
    expect(out, "test mail", "not sent", "mailbridge auth login ms")
    d = directory()
    app = app_named(d, NAME)
    check(counts(d, app) == {"apps": 1, "sps": 1, "grants": 1, "owners": [ADMIN, USER],
                             "secrets": 1}, "directory: %s", counts(d, app))
    check(app["signInAudience"] == "AzureADMyOrg", "audience %s", app["signInAudience"])
    check(app["isFallbackPublicClient"] is True, "public client flows not allowed")
    check("http://localhost:8025/oauth/callback" in app["web"]["redirectUris"], "redirect %s",
          app["web"])
    rra = {(x["id"], x["type"]) for r in app["requiredResourceAccess"]
           for x in r["resourceAccess"]}
    check(rra == {("e383f46e-2787-4529-855e-0e479a3ffac0", "Scope"),
                  ("e1fe6dd8-ba31-4d61-89e7-88639da4683d", "Scope"),
                  ("7427e0e9-2fba-42fe-b0c0-848c9e6a8182", "Scope")}, "rra %s", rra)
    sp = [s for s in d["servicePrincipals"] if s["appId"] == app["appId"]][0]
    g = [g for g in d["oauth2PermissionGrants"] if g["clientId"] == sp["id"]][0]
    check(g["consentType"] == "AllPrincipals" and set(g["scope"].split()) ==
          {"Mail.Send", "User.Read", "offline_access"}, "grant %s", g)
    secret = app["secrets"][0]["secretText"]
    check(secret not in out, "the client secret was printed")
    rc, show = ENV.run("connection", "show", "ms", "--json", approve=())
    c = json.loads(show)[0]
    check(c["default"] and c["sender"] == USER and c["provider"] == "microsoft-graph",
          "connection %s", c)
    # the app exists now: the identity platform knows it (Entra: by itself)
    register_in_idp(app)
    rc, out = ENV.setup("--name", "ms", "--sender", USER, "--sign-in", approve=(ADMIN, USER))
    check(rc == 0, "second setup rc=%d", rc)
    for s in ("application", "client secret", "service principal", "consent", "owners",
              "connection"):
        expect(out, s, "already there")
    expect(out, "sign-in", "done")
    check("Connected as user@contoso.test" in out, "no sign-in of the sender")
    check(re.search(r"delivered in \d+ ms", out), "no test mail delivered")
    msgs = GRAPH.messages(mailbox=USER, omit_mime=1)
    check(len(msgs) == 1 and msgs[0]["subject"].startswith("mailbridge test"), "messages %s",
          msgs)
    d2 = directory()
    check(counts(d2, app_named(d2, NAME)) == counts(d, app), "idempotent: %s then %s",
          counts(d, app), counts(d2, app_named(d2, NAME)))


REG_ITEMS = ("app", "permissions", "admin_consent", "owners", "app_secret", "redirect_uri")


def doctor_admin(*extra):
    """`doctor ms --admin --json` with the admin's device code approved: {id: item}."""
    rc, out = ENV.run("doctor", "ms", "--admin", "--json", *extra)
    check(rc in (0, 1), "doctor rc=%d", rc)
    start = out.find("\n[")
    check(start >= 0, "no JSON report in:\n%s", out)
    items = {i["id"]: i for i in json.loads(out[start:])}
    return items


def doctor_healthy():
    items = doctor_admin()
    for iid in REG_ITEMS:
        check_item(items, iid, "pass")
    return items


def test_doctor_names_broken_pieces(binary):
    # without --admin the registration items can't tell, and say how to find out
    rc, out = ENV.run("doctor", "ms", "--json", approve=())
    items = {i["id"]: i for i in json.loads(out[out.find("["):])}
    for iid in ("app", "permissions", "admin_consent", "owners", "app_secret"):
        check_item(items, iid, "unknown", "mailbridge doctor ms --admin")
    items = doctor_healthy()
    check_item(items, "app", "pass", NAME)
    check_item(items, "permissions", "pass", "Mail.Send", "User.Read")
    check_item(items, "owners", "pass", ADMIN, USER)
    tok = admin_token()
    app = app_named(directory(), NAME)
    # the redirect URI
    graph_call(tok, "PATCH", "/v1.0/applications/" + app["id"], {"web": {"redirectUris": []}})
    items = doctor_admin()
    check_item(items, "redirect_uri", "fail", "http://localhost:8025/oauth/callback",
               "Authentication", "Redirect URIs")
    rc, out = ENV.setup("--name", "ms", "--sender", USER, "--no-test")
    expect(out, "application", "repaired", "redirect URI")
    check_item(doctor_admin(), "redirect_uri", "pass")
    # a permission
    rra = [{"resourceAppId": r["resourceAppId"],
            "resourceAccess": [x for x in r["resourceAccess"]
                               if x["id"] != "e383f46e-2787-4529-855e-0e479a3ffac0"]}
           for r in app["requiredResourceAccess"]]
    graph_call(tok, "PATCH", "/v1.0/applications/" + app["id"], {"requiredResourceAccess": rra})
    items = doctor_admin()
    check_item(items, "permissions", "fail", "lack Mail.Send", "API permissions",
               "Grant admin consent")
    rc, out = ENV.setup("--name", "ms", "--sender", USER, "--no-test")
    expect(out, "application", "repaired", "added permissions Mail.Send")
    doctor_healthy()


def test_repair_consent(binary):
    tok = admin_token()
    d = directory()
    app = app_named(d, NAME)
    sp = [s for s in d["servicePrincipals"] if s["appId"] == app["appId"]][0]
    g = [g for g in d["oauth2PermissionGrants"] if g["clientId"] == sp["id"]][0]
    graph_call(tok, "DELETE", "/v1.0/oauth2PermissionGrants/" + g["id"])
    check_item(doctor_admin(), "admin_consent", "fail", "no tenant-wide admin consent",
               "Grant admin consent")
    rc, out = ENV.setup("--name", "ms", "--sender", USER, "--no-test")
    check(rc == 0, "rc=%d", rc)
    expect(out, "consent", "repaired", "was missing")
    for s in ("application", "client secret", "service principal", "owners", "connection"):
        expect(out, s, "already there")
    d2 = directory()
    check(counts(d2, app_named(d2, NAME))["grants"] == 1, "grant not restored")


def test_repair_owner(binary):
    tok = admin_token()
    app = app_named(directory(), NAME)
    uid = [o["id"] for o in app["owners"] if o["userPrincipalName"] == USER][0]
    graph_call(tok, "DELETE", "/v1.0/applications/%s/owners/%s/$ref" % (app["id"], uid))
    check_item(doctor_admin(), "owners", "warn", "the sender %s is not an owner" % USER,
               "Add owners")
    rc, out = ENV.setup("--name", "ms", "--sender", USER, "--no-test")
    check(rc == 0, "rc=%d", rc)
    expect(out, "owners", "repaired", "added " + USER)
    expect(out, "consent", "already there")
    d = directory()
    check(counts(d, app_named(d, NAME))["owners"] == [ADMIN, USER], "owners not restored")


def test_repair_secret(binary):
    app = app_named(directory(), NAME)
    old = app["secrets"][0]["keyId"]
    GRAPH.control("POST", "directory/expire-secret", {"appId": app["appId"]})
    check_item(doctor_admin(), "app_secret", "fail", "expired", "New client secret")
    # a secret someone else added, expired too: setup leaves it alone
    tok = admin_token()
    graph_call(tok, "POST", "/v1.0/applications/%s/addPassword" % app["id"],
               {"passwordCredential": {"displayName": "hand-made",
                                       "endDateTime": "2020-01-01T00:00:00Z"}})
    rc, out = ENV.setup("--name", "ms", "--sender", USER, "--no-test")
    check(rc == 0, "rc=%d", rc)
    expect(out, "client secret", "repaired", "expired", "removed the expired secret " + old)
    expect(out, "connection", "repaired")
    d = directory()
    app2 = app_named(d, NAME)
    keys = [s["keyId"] for s in app2["secrets"]]
    check(old not in keys, "the expired secret setup made was not removed: %s", app2["secrets"])
    check(len(app2["secrets"]) == 2 and len([s for s in app2["secrets"] if not s["expired"]])
          == 1, "secrets %s", app2["secrets"])
    check_item(doctor_admin(), "app_secret", "pass", "in 7")
    # the new secret is the one mailbridge uses: a test mail through it (the IdP learns it)
    register_in_idp(app2)
    rc, out = ENV.run("test", "--to", USER, "--connection", "ms", approve=())
    check(rc == 0 and "delivered in" in out, "test after the new secret: rc=%d", rc)
    # and a last run changes nothing
    before = counts(d, app2)
    rc, out = ENV.setup("--name", "ms", "--sender", USER)
    check(rc == 0, "rc=%d", rc)
    for s in ("application", "client secret", "service principal", "consent", "owners",
              "connection"):
        expect(out, s, "already there")
    check(re.search(r"delivered in \d+ ms", out), "no test mail delivered")
    d = directory()
    check(counts(d, app_named(d, NAME)) == before, "changed: %s", counts(d, app_named(d, NAME)))


def test_renew_secret(binary):
    """The secret in use expires within 30 days: doctor warns, setup adds a new one and keeps
    the old one (still valid: a running daemon may use it)."""
    app = app_named(directory(), NAME)
    live = [s for s in app["secrets"] if not s["expired"]]
    check(len(live) == 1, "secrets %s", app["secrets"])
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 10 * 86400 + 600))
    GRAPH.control("POST", "directory/expire-secret", {"appId": app["appId"],
                                                      "keyId": live[0]["keyId"],
                                                      "endDateTime": soon})
    check_item(doctor_admin(), "app_secret", "warn", "in 10 days", "New client secret")
    rc, out = ENV.setup("--name", "ms", "--sender", USER, "--no-test")
    check(rc == 0, "rc=%d", rc)
    expect(out, "client secret", "repaired", "within 30 days")
    check("removed" not in line(out, "client secret"), "a secret was removed: %s", out)
    app2 = app_named(directory(), NAME)
    keys = [s["keyId"] for s in app2["secrets"]]
    check(live[0]["keyId"] in keys and len(keys) == 3, "secrets %s", app2["secrets"])
    register_in_idp(app2)
    check_item(doctor_admin(), "app_secret", "pass", "in 7")


def test_app_only_smtp(binary):
    name = "mailbridge app-only " + ALICE
    rc, out = ENV.setup("--name", "smtpapp", "--sender", ALICE, "--provider", "microsoft-smtp",
                        "--app-only", "--display-name", name)
    check(rc != 0, "the token cannot be fetched before the IdP knows the app: rc=%d", rc)
    expect(out, "consent", "created", "SMTP.SendAsApp", "Exchange")
    d = directory()
    app = app_named(d, name)
    sp = [s for s in d["servicePrincipals"] if s["appId"] == app["appId"]][0]
    ra = [a for a in d["appRoleAssignments"] if a["principalId"] == sp["id"]]
    check(len(ra) == 1 and ra[0]["appRoleId"] == d["well_known"]["smtp_send_as_app_role_id"]
          and ra[0]["resourceId"] == d["well_known"]["exchange_sp_id"], "assignments %s", ra)
    check(not app.get("isFallbackPublicClient"), "app-only needs no public client flows")
    check("New-ServicePrincipal -AppId %s -ObjectId %s" % (app["appId"], sp["id"]) in out,
          "no New-ServicePrincipal with the real ids")
    check('Add-MailboxPermission -Identity "%s"' % ALICE in out, "no Add-MailboxPermission")
    check("Set-CASMailbox -Identity %s -SmtpClientAuthenticationDisabled $false" % ALICE in out,
          "no Set-CASMailbox")
    check("Connect-ExchangeOnline -Organization %s" % TENANT_ID in out, "no tenant id")
    register_in_idp(app, roles={"https://outlook.office365.com": ["SMTP.SendAsApp"]})
    rc, out = ENV.setup("--name", "smtpapp", "--sender", ALICE, "--provider", "microsoft-smtp",
                        "--app-only", "--display-name", name)
    check(rc == 0, "rc=%d", rc)
    expect(out, "consent", "already there", "SMTP.SendAsApp")
    expect(out, "token", "fetched")
    expect(out, "test mail", "not sent", "Exchange")
    d2 = directory()
    check(len([a for a in d2["appRoleAssignments"] if a["principalId"] == sp["id"]]) == 1,
          "assignment duplicated")


def test_admin_without_role(binary):
    GRAPH.control("POST", "mailboxes/" + ALICE, {"directory_roles": []})
    rc, out = ENV.setup("--name", "norole", "--sender", ALICE, "--display-name",
                        "mailbridge no role", approve=(ALICE,))
    check(rc != 0, "rc=%d", rc)
    check("Authorization_RequestDenied" in out and "Cloud Application Administrator" in out,
          "the missing role is not named")


def test_admin_declines(binary):
    rc, out = ENV.setup("--name", "declined", "--display-name", "mailbridge declined",
                        deny=True)
    check(rc != 0 and "declined" in out, "rc=%d", rc)
    check(not [a for a in directory()["applications"]
               if a["displayName"] == "mailbridge declined"], "an app was created")


TESTS = [
    ("end_to_end", test_end_to_end),
    ("doctor_names_broken_pieces", test_doctor_names_broken_pieces),
    ("repair_consent", test_repair_consent),
    ("repair_owner", test_repair_owner),
    ("repair_secret", test_repair_secret),
    ("renew_secret", test_renew_secret),
    ("app_only_smtp", test_app_only_smtp),
    ("admin_without_role", test_admin_without_role),
    ("admin_declines", test_admin_declines),
]


def _start_peers(d, binary, session):
    global IDP, GRAPH, CA, ENV
    CA, cert, key = mbtest.make_certs(d)
    IDP = IdP(d, CA, cert, key)
    session.append(IDP.stop)
    GRAPH = Graph(d, CA, cert, key, IDP.jwks_uri)
    session.append(GRAPH.stop)
    IDP.reset(device_interval=1)
    GRAPH.reset()
    ENV = Env(binary)
    session.append(lambda: shutil.rmtree(ENV.tmp, ignore_errors=True))


def main():
    return mbtest.run_with_peers(TESTS, BUDGET, "setup",
                                 {"idp": "oidc-provider", "graph": "mailparser"},
                                 _start_peers)

if __name__ == "__main__":
    sys.exit(main())
