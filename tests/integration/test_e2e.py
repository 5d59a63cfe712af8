#!/usr/bin/env python3
"""The admin UI in a real browser, on loopback: test_e2e.py BINARY [TEST-NAME...]

Issue 5, "Proof": Playwright (playwright-core, tests/e2e/package-lock.json) drives Debian's
chromium headless (tests/e2e/flow.mjs) against `mailbridge serve`, with the identity-platform
stand-in (tests/peers/idp: oidc-provider with its login and consent pages) and the Graph
stand-in (tests/peers/graph), over TLS with a test CA made here.

The daemon starts with no admin password, so it writes its one-time setup link to
data_dir/setup-link; the flow opens that link, sets the password, logs out and logs in again;
adds a Microsoft 365 connection through the form (the stand-ins' login_url, graph_url and
ca_file are added to the form's POST by the flow: the form has no such fields); clicks
"Authenticate with Office 365", signs in and consents on the provider's pages, follows "Back to
mailbridge" and sees "Connected as ..."; makes it the default in Settings; sends a test email
(checked at the Graph stand-in); finds it in Email Logs and resends it (a second one at the
stand-in); sends one that the stand-in refuses (injected 403 ErrorSendAsDenied) and sees its
"Fix:" in the test result and on the failed message's page; runs the Doctor.

Screenshots of each screen (1280x900, full page; the dashboard and the logs also at 390x844)
go to BUILD/e2e-screenshots/, BUILD being the binary's directory; a failing step adds
FAILED-<step>.png there.

Skipped (not failed) when node or chromium is not installed (scripts/install-deps.sh --test);
needs `npm ci` in tests/peers/idp, tests/peers/graph and tests/e2e (scripts/install-peers.sh).
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mbtest  # noqa: E402
from mbtest import (CLIENT_ID, CLIENT_SECRET, USER, Daemon, check, free_port,  # noqa: E402
                    tempdir, wait_until)

E2E_DIR = os.path.join(mbtest.ROOT, "tests", "e2e")
CHROMIUM = "/usr/bin/chromium"
TENANT = "contoso.test"
USER_PASSWORD = "UserPass1!"
PASSWORD = "e2e admin password, long enough"
FLOW_TIMEOUT = 300  # seconds for the whole browser flow
BUDGET = 420  # seconds for the whole run (watchdog)

IDP = GRAPH = CA = None


def shots_dir(binary):
    d = os.path.join(os.path.dirname(binary), "e2e-screenshots")
    shutil.rmtree(d, ignore_errors=True)  # only this run's screenshots
    os.makedirs(d)
    return d


def run_flow(env):
    """Runs flow.mjs with a bounded time, echoing its output; returns (rc, output)."""
    p = subprocess.Popen(["node", os.path.join(E2E_DIR, "flow.mjs")], cwd=E2E_DIR, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)

    def kill():  # the flow and the chromium it started, by process group (ours only)
        if p.poll() is None:
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
            p.wait(10)
    mbtest.on_cleanup(kill)
    out = []

    def pump():
        for line in iter(p.stdout.readline, b""):
            s = line.decode("utf-8", "replace")
            out.append(s)
            print("  | " + s, end="", flush=True)
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        p.wait(FLOW_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill()
        t.join(5)
        raise AssertionError("the browser flow took more than %d s" % FLOW_TIMEOUT)
    t.join(10)
    return p.returncode, "".join(out)


def test_browser_flow(binary):
    tmp = tempdir("mb-it-e2e-")
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    d = Daemon(binary, tmp, name="mb",
               server={"http_listen": "127.0.0.1:%d" % port, "public_url": url,
                       "retry_schedule": "1s,2s", "log_level": "info"})
    d.start()
    link_file = os.path.join(d.data_dir, "setup-link")
    setup_url = wait_until(lambda: os.path.exists(link_file) and open(link_file).read().strip(),
                           10, "the setup link in data_dir/setup-link")
    shots = shots_dir(binary)
    env = dict(os.environ)
    env.update({
        "MB_URL": url, "MB_SETUP_URL": setup_url, "MB_PASSWORD": PASSWORD, "MB_SHOTS": shots,
        "MB_CHROMIUM": CHROMIUM, "MB_GRAPH_URL": GRAPH.base, "MB_TENANT": TENANT,
        "MB_CLIENT_ID": CLIENT_ID, "MB_CLIENT_SECRET": CLIENT_SECRET,
        "MB_CONN_OVERRIDES": json.dumps({"login_url": IDP.base, "graph_url": GRAPH.base,
                                         "ca_file": CA}),
        "MB_IDP_USER": USER, "MB_IDP_PASSWORD": USER_PASSWORD,
        "NODE_EXTRA_CA_CERTS": CA,  # the flow checks the Graph stand-in's record
        "HOME": tmp,  # chromium's profile and caches stay in the temp dir
    })
    rc, out = run_flow(env)
    if rc != 0:
        print("---- daemon log (tail) ----\n" + d.log_tail(4000))
    check(rc == 0, "the browser flow failed (rc=%d); see its output above and %s", rc, shots)
    for name in ("01-setup-link", "02-login", "03-dashboard", "03-dashboard-phone",
                 "05-add-connection-form", "10-connection-connected", "11-settings",
                 "12-email-test-sent", "13-email-logs", "13-email-logs-phone", "14-message-view",
                 "15-email-test-failed", "16-message-failed", "17-doctor"):
        path = os.path.join(shots, name + ".png")
        check(os.path.getsize(path) > 5000 if os.path.exists(path) else False,
              "screenshot %s is missing or empty", path)
    check(not glob.glob(os.path.join(shots, "FAILED-*")), "a FAILED screenshot on success")
    log = d.log_tail(1 << 20)
    token = setup_url.rsplit("/", 1)[1]
    check(token not in log, "the setup token is in the daemon's log")
    check(PASSWORD not in log and CLIENT_SECRET not in log, "a secret is in the daemon's log")
    d.check_clean_stop()


TESTS = mbtest.named(test_browser_flow)


def _check_e2e_modules():
    if not os.path.isdir(os.path.join(E2E_DIR, "node_modules", "playwright-core")):
        raise RuntimeError("tests/e2e/node_modules is missing: run scripts/install-peers.sh")


def _started(ca, idp, graph):
    global CA, IDP, GRAPH
    CA, IDP, GRAPH = ca, idp, graph


if __name__ == "__main__":
    sys.exit(mbtest.run_with_idp_graph(TESTS, BUDGET, "e2e", _started, need=(CHROMIUM,),
                                       prepare=_check_e2e_modules))
