#!/usr/bin/env python3
"""The one-time setup link of `mailbridge serve`, on loopback: test_setup_link.py BINARY [TEST...]

When the daemon starts without an admin password it makes a setup token and shows the link
http(s)://PUBLIC_URL/#/setup/TOKEN: on stderr when stderr is a terminal (a pty here), else in
data_dir/setup-link (mode 0600); never in the log. POST /api/v1/setup {token, password} sets
the password once and logs in. Each test starts its own daemon and stops it by PID.

Covered:
  tty_link        on a terminal: one line with the link (public_url based); GET setup says
                  needed; a wrong token -> 403 bad_token; a short password -> 400 and the link
                  still works; the right one -> 200, a session cookie and a CSRF token that
                  work; the second use -> 409 and the password is unchanged; needed is false;
                  no setup-link file was written
  file_link       not a terminal: the link is only in data_dir/setup-link (0600), the log names
                  the file and holds no token; after use the file is gone
  restart         a restart makes a new link; the old token -> 403
  password_set    with a password set before start: no link, no file; POST setup -> 409
  rate_limit      five wrong tokens from one address, then 429 even with the right token;
                  another address can still use it
  bad_body        missing fields -> 400; the open routes answer without credentials
"""
import os
import pty
import re
import select
import stat
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mbtest  # noqa: E402
from mbtest import (ADMIN_PASSWORD as PASSWORD, check, check_error, free_port,  # noqa: E402
                    wait_until)

LINK_RE = re.compile(r"open (http://\S+/#/setup/([A-Za-z0-9_-]+)) within 24 h")
BUDGET = 120  # seconds for the whole run (watchdog)


class Setup(mbtest.ApiDaemon):
    """A daemon without an admin password; its stderr is a pty when tty is true."""

    def __init__(self, binary, name, tty=False):
        port = free_port()
        self.public = "http://127.0.0.1:%d" % port
        super().__init__(binary, "setup-" + name, start=False,
                         server={"http_listen": "127.0.0.1:%d" % port, "public_url": self.public})
        self.tty = tty
        self.out = bytearray()  # what the daemon wrote to the pty
        self.link_file = os.path.join(self.d.data_dir, "setup-link")

    def start(self):
        if not self.tty:
            return super().start()
        master, slave = pty.openpty()
        log = open(self.d.log_path, "ab")
        self.d.proc = subprocess.Popen([self.d.binary, "serve", "-c", self.d.conf],
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=slave)
        log.close()
        os.close(slave)
        t = threading.Thread(target=self._pump, args=(master,), daemon=True)
        t.start()
        mbtest.on_cleanup(lambda: (self.d.stop(), t.join(5)))
        wait_until(lambda: self.get("/api/v1/setup")[0] == 200, 10, "the HTTP listener")
        return self

    def _pump(self, fd):
        """Reads the pty until the daemon is gone (so that it never blocks on a full pty)."""
        try:
            while True:
                r, _, _ = select.select([fd], [], [], 0.2)
                if r:
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:  # EIO: the other side is closed
                        break
                    if not chunk:
                        break
                    self.out.extend(chunk)
                elif self.d.proc.poll() is not None:
                    break
        finally:
            os.close(fd)

    def tty_text(self):
        return bytes(self.out).decode("utf-8", "replace")

    def log(self):
        return self.d.log_tail(1 << 20)

    def get(self, path):
        try:
            return self.request("GET", path)
        except OSError:
            return (0, {}, None, b"")

    def setup(self, token, password, source="127.0.0.1"):
        return self.request("POST", "/api/v1/setup", {"token": token, "password": password},
                            source=source)

    def needed(self):
        st, _, j, raw = self.request("GET", "/api/v1/setup")
        check(st == 200 and isinstance(j, dict) and isinstance(j.get("needed"), bool),
              "GET setup: %d %r", st, raw)
        return j["needed"]

    def file_link(self):
        """(url, token) from data_dir/setup-link, waiting for it."""
        wait_until(lambda: os.path.exists(self.link_file), 10, "data_dir/setup-link")
        text = wait_until(lambda: open(self.link_file).read(), 5, "the link in the file")
        m = re.fullmatch(r"(http://\S+/#/setup/([A-Za-z0-9_-]+))\n", text)
        check(m, "setup-link holds %r", text)
        return m.group(1), m.group(2)


def check_logged_in(s, st, h, j, raw):
    check(st == 200, "setup: %d %r", st, raw)
    cookie = h.get("set-cookie", "")
    check(cookie.startswith("mb_session=") and "HttpOnly" in cookie and
          "SameSite=Strict" in cookie, "setup's cookie: %r", cookie)
    check(j.get("user") == "admin" and j.get("via") == "session" and
          isinstance(j.get("csrf"), str) and len(j["csrf"]) >= 32, "setup's answer: %r", j)
    c = cookie.split(";")[0]
    st, _, j2, raw = s.request("GET", "/api/v1/session", headers={"Cookie": c})
    check(st == 200 and j2.get("csrf") == j["csrf"], "the setup session: %d %r", st, raw)
    st, _, _, raw = s.request("POST", "/api/v1/logout",
                              headers={"Cookie": c, "X-CSRF-Token": j["csrf"]})
    check(st == 200, "logout with the setup session's CSRF token: %d %r", st, raw)


def test_tty_link(binary):
    s = Setup(binary, "tty", tty=True).start()
    m = wait_until(lambda: LINK_RE.search(s.tty_text()), 10, "the setup link on the terminal")
    url, token = m.group(1), m.group(2)
    check(url.startswith(s.public + "/#/setup/"), "the link is not on public_url: %r", url)
    check(len(token) == 43, "the token is not 32 bytes of base64url: %r", token)
    lines = [l for l in s.tty_text().splitlines() if "setup" in l and token in l]
    check(len(lines) == 1, "the link was printed %d times: %r", len(lines), lines)
    check("mailbridge admin password" in lines[0], "no CLI alternative in %r", lines[0])
    check(not os.path.exists(s.link_file), "setup-link written although stderr is a terminal")
    check(s.needed() is True, "GET setup: a password is not needed?")

    st, _, j, raw = s.setup(token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), PASSWORD)
    check_error(st, j, raw, 403, "bad_token")
    st, _, j, raw = s.setup(token, "short-11chr")
    check_error(st, j, raw, 400, "invalid")
    check("12" in j["error"]["message"], "no minimum length in %r", j["error"])
    check(s.needed() is True, "a refused setup set a password")

    st, h, j, raw = s.setup(token, PASSWORD)
    check_logged_in(s, st, h, j, raw)
    check(s.needed() is False, "GET setup still says needed after the setup")

    st, _, j, raw = s.setup(token, "another long password")
    check_error(st, j, raw, 409, "password_set")
    st, _, j, raw = s.login("another long password")
    check(st == 401, "the second use changed the password: %d %r", st, raw)
    st, _, j, raw = s.login(PASSWORD)
    check(st == 200, "login with the password set by the link: %d %r", st, raw)
    check(PASSWORD not in s.tty_text() and PASSWORD not in s.log(), "the password was logged")


def test_file_link(binary):
    s = Setup(binary, "file").start()
    url, token = s.file_link()
    check(url.startswith(s.public + "/#/setup/"), "the link is not on public_url: %r", url)
    mode = stat.S_IMODE(os.stat(s.link_file).st_mode)
    check(mode == 0o600, "setup-link has mode %o", mode)
    log = s.log()
    check(token not in log, "the setup token is in the log")
    check(s.link_file in log and "mailbridge admin password" in log,
          "the log does not say where the link is: %s", log[-1500:])
    st, h, j, raw = s.setup(token, PASSWORD)
    check_logged_in(s, st, h, j, raw)
    check(not os.path.exists(s.link_file), "setup-link is still there after its use")
    st, _, j, raw = s.setup(token, PASSWORD)
    check_error(st, j, raw, 409, "password_set")
    s.d.check_clean_stop()
    check(token not in s.log(), "the setup token is in the log")


def test_restart(binary):
    s = Setup(binary, "restart").start()
    _, old = s.file_link()
    s.d.check_clean_stop()
    check(not os.path.exists(s.link_file), "setup-link outlived the daemon")
    s.d.start()
    _, new = s.file_link()
    check(new != old, "a restart kept the same setup token")
    st, _, j, raw = s.setup(old, PASSWORD)
    check_error(st, j, raw, 403, "bad_token")
    st, h, j, raw = s.setup(new, PASSWORD)
    check_logged_in(s, st, h, j, raw)


def test_password_set(binary):
    s = Setup(binary, "pwset")
    s.set_password(PASSWORD)
    s.start()  # the link is made before the loop answers SMTP, so it would be there now
    check(not os.path.exists(s.link_file), "a setup link although a password is set")
    check("no admin password yet" not in s.log(), "the log offers a setup link")
    check(s.needed() is False, "GET setup says needed with a password set")
    st, _, j, raw = s.setup("x" * 43, "another long password")
    check_error(st, j, raw, 409, "password_set")
    st, _, j, raw = s.login(PASSWORD)
    check(st == 200, "login: %d %r", st, raw)


def test_rate_limit(binary):
    s = Setup(binary, "rate").start()
    _, token = s.file_link()
    src = "127.0.0.2"
    for i in range(5):
        st, _, j, raw = s.setup("wrong-token-%d" % i, PASSWORD, source=src)
        check_error(st, j, raw, 403, "bad_token")
    st, h, j, raw = s.setup(token, PASSWORD, source=src)
    check_error(st, j, raw, 429, "rate_limited")
    check(1 <= int(h.get("retry-after", "0")) <= 60, "Retry-After %r", h.get("retry-after"))
    check(s.needed() is True, "a rate-limited setup set the password")
    st, h, j, raw = s.setup(token, PASSWORD, source="127.0.0.1")
    check_logged_in(s, st, h, j, raw)


def test_bad_body(binary):
    s = Setup(binary, "body").start()
    _, token = s.file_link()
    for body in (b"", b"not json", {"token": token}, {"password": PASSWORD},
                 {"token": 5, "password": PASSWORD}):
        st, _, j, raw = (s.request("POST", "/api/v1/setup", data=body,
                                   headers={"Content-Type": "application/json"})
                         if isinstance(body, bytes) else s.request("POST", "/api/v1/setup", body))
        check(st == 400 and j and j["error"]["code"] in ("bad_request", "invalid"),
              "body %r: %d %r", body, st, raw)
    check(s.needed() is True, "a bad body set the password")
    st, h, j, raw = s.setup(token, PASSWORD)
    check_logged_in(s, st, h, j, raw)


TESTS = mbtest.named(test_tty_link, test_file_link, test_restart, test_password_set,
                     test_rate_limit, test_bad_body)

if __name__ == "__main__":
    sys.exit(mbtest.main(TESTS, BUDGET))
