#!/usr/bin/env python3
"""The embedded web UI, served by the daemon on loopback: test_ui.py BINARY [TEST-NAME...]

Each HTTP test starts its own `mailbridge serve` (free loopback ports, temp data_dir), stopped
by PID after it. No peers: nothing here signs in.

  page           / and /index.html: 200 text/html, the UI's CSP, X-Frame-Options DENY,
                 Referrer-Policy no-referrer, nosniff, Cache-Control no-cache, an ETag
  assets         every src/href in index.html is a same-origin /assets/ path; each is served
                 with its Content-Type and the CSP, and is byte for byte the file in ui/; every
                 file of ui/ is served
  unknown        an unknown or traversing /assets/ path, /assets/ itself and /assets/index.html
                 -> 404; POST / -> 405 with Allow: GET, HEAD
  head           HEAD / and HEAD of an asset: 200, the GET's headers and Content-Length, no body
  etag           If-None-Match with the ETag (also weak, also in a list, also *) -> 304 without
                 a body; another tag -> 200
  api_headers    /api/v1 answers keep Cache-Control: no-store (only the UI revalidates)
  oauth_link     /oauth/callback's result pages link "Back to mailbridge" to /#/connections...
  sources        (no daemon) no inline <script>, <style>, style= or on*= handler in any UI
                 file; no innerHTML, eval, Function, document.write; every script is strict;
                 nothing refers to another origin
"""
import html.parser
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mbtest  # noqa: E402
from mbtest import check  # noqa: E402

BUDGET = 90  # seconds for the whole run (watchdog)
UI_DIR = os.path.join(mbtest.ROOT, "ui")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def daemon(binary):
    """A daemon for one test (the runner stops it after the test): (Daemon, port)."""
    a = mbtest.ApiDaemon(binary, "ui")
    return a.d, a.port


def request(port, method, path, headers=None, body=None):
    """(status, headers {lowercase: value, repeated ones joined by newlines}, body bytes)."""
    st, h, _, raw = mbtest.http_request(port, method, path, data=body, headers=headers)
    return st, h, raw


def ui_files():
    return sorted(f for f in os.listdir(UI_DIR) if os.path.splitext(f)[1] in TYPES)


def read_ui(name):
    with open(os.path.join(UI_DIR, name), "rb") as f:
        return f.read()


def check_ui_headers(h, what, ctype):
    check(h.get("content-type") == ctype, "%s: Content-Type %r, want %r", what,
          h.get("content-type"), ctype)
    check(h.get("content-security-policy") == CSP, "%s: CSP %r", what,
          h.get("content-security-policy"))
    check(h.get("x-frame-options") == "DENY", "%s: X-Frame-Options %r", what,
          h.get("x-frame-options"))
    check(h.get("referrer-policy") == "no-referrer", "%s: Referrer-Policy %r", what,
          h.get("referrer-policy"))
    check(h.get("x-content-type-options") == "nosniff", "%s: no nosniff", what)
    check(h.get("cache-control") == "no-cache", "%s: Cache-Control %r (want no-cache alone)",
          what, h.get("cache-control"))
    check(re.fullmatch(r'"[0-9a-f]{20}"', h.get("etag", "")), "%s: ETag %r", what,
          h.get("etag"))


class Refs(html.parser.HTMLParser):
    """Every URL-valued attribute of a page, and the inline scripts and styles it holds."""

    def __init__(self):
        super().__init__()
        self.refs, self.inline_scripts, self.styles, self.handlers = [], 0, 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href", "action", "data", "poster", "srcset"):
            if a.get(k) is not None and not (tag == "a" and a[k].startswith("#")):
                self.refs.append((tag, k, a[k]))
        if tag == "script" and not a.get("src"):
            self.inline_scripts += 1
        if tag == "style" or "style" in a:
            self.styles += 1
        self.handlers += [k for k in a if k.startswith("on")]


def test_page(binary):
    d, port = daemon(binary)
    for path in ("/", "/index.html", "/?x=1"):
        st, h, body = request(port, "GET", path)
        check(st == 200, "GET %s: %d %r", path, st, body[:200])
        check_ui_headers(h, "GET " + path, TYPES[".html"])
        check(body == read_ui("index.html"), "GET %s is not ui/index.html", path)
    check(b'<nav aria-label="Main"' in body, "no main navigation in the page")


def test_assets(binary):
    d, port = daemon(binary)
    p = Refs()
    p.feed(read_ui("index.html").decode())
    check(p.refs, "index.html refers to nothing")
    for tag, attr, url in p.refs:
        check(url.startswith("/assets/") and "//" not in url and ".." not in url,
              "index.html <%s %s=%r>: not a same-origin /assets/ path", tag, attr, url)
        name = url[len("/assets/"):]
        st, h, body = request(port, "GET", url)
        check(st == 200, "GET %s: %d", url, st)
        check_ui_headers(h, "GET " + url, TYPES[os.path.splitext(name)[1]])
        check(body == read_ui(name), "GET %s differs from ui/%s (stale embedding?)", url, name)
    scripts = [u for t, a, u in p.refs if t == "script"]
    check("/assets/app.js" in scripts, "index.html does not load /assets/app.js")
    check(any(u == "/assets/app.css" for t, a, u in p.refs), "no /assets/app.css link")
    for name in ui_files():
        if name == "index.html":
            continue
        st, h, body = request(port, "GET", "/assets/" + name)
        check(st == 200 and body == read_ui(name), "ui/%s is not served as /assets/%s: %d",
              name, name, st)
    etags = set()
    for name in ui_files():
        st, h, _ = request(port, "GET", "/" if name == "index.html" else "/assets/" + name)
        etags.add(h.get("etag"))
    check(len(etags) == len(ui_files()), "two files share an ETag: %r", etags)


def test_unknown(binary):
    d, port = daemon(binary)
    for path in ("/assets/nope.js", "/assets/", "/assets/index.html", "/assets/../index.html",
                 "/assets/%2e%2e/index.html", "/assets/app.js/x", "/assets/APP.JS",
                 "/assets/app.js%00"):
        st, h, body = request(port, "GET", path)
        check(st == 404, "GET %s: %d, want 404", path, st)
        check(b'"not_found"' in body, "GET %s: body %r", path, body[:200])
    st, h, body = request(port, "GET", "/no-such-page")
    check(st == 404, "GET /no-such-page: %d", st)
    for method, path in (("POST", "/"), ("DELETE", "/assets/app.js"), ("PUT", "/index.html")):
        st, h, body = request(port, method, path, body=b"" if method != "DELETE" else None)
        check(st == 405, "%s %s: %d, want 405", method, path, st)
        check(h.get("allow") == "GET, HEAD", "%s %s: Allow %r", method, path, h.get("allow"))


def test_head(binary):
    d, port = daemon(binary)
    for path, name in (("/", "index.html"), ("/assets/app.js", "app.js"),
                       ("/assets/app.css", "app.css"), ("/assets/icon.svg", "icon.svg")):
        st, h, body = request(port, "HEAD", path)
        check(st == 200, "HEAD %s: %d", path, st)
        check(body == b"", "HEAD %s sent a body of %d bytes", path, len(body))
        check_ui_headers(h, "HEAD " + path, TYPES[os.path.splitext(name)[1]])
        check(h.get("content-length") == str(len(read_ui(name))),
              "HEAD %s: Content-Length %r, want %d", path, h.get("content-length"),
              len(read_ui(name)))
    st, h, body = request(port, "HEAD", "/assets/nope.css")
    check(st == 404 and body == b"", "HEAD of an unknown asset: %d %r", st, body)


def test_etag(binary):
    d, port = daemon(binary)
    for path in ("/", "/assets/app.js", "/assets/icon.svg"):
        st, h, body = request(port, "GET", path)
        tag = h["etag"]
        for inm in (tag, "W/" + tag, '"other", ' + tag, "*"):
            st2, h2, body2 = request(port, "GET", path, headers={"If-None-Match": inm})
            check(st2 == 304, "GET %s If-None-Match %s: %d, want 304", path, inm, st2)
            check(body2 == b"", "a 304 with a body")
            check(h2.get("etag") == tag, "304 without the ETag: %r", h2)
            check(h2.get("content-security-policy") == CSP, "304 without the CSP")
        st2, h2, body2 = request(port, "GET", path, headers={"If-None-Match": '"0123abc"'})
        check(st2 == 200 and body2 == body, "GET %s with another tag: %d", path, st2)


def test_api_headers(binary):
    d, port = daemon(binary)
    st, h, body = request(port, "GET", "/api/v1/session")
    check(st == 401, "GET /api/v1/session without a session: %d", st)
    check(h.get("cache-control") == "no-store", "API Cache-Control %r", h.get("cache-control"))
    st, h, body = request(port, "GET", "/healthz")
    check(h.get("cache-control") == "no-store", "/healthz Cache-Control %r",
          h.get("cache-control"))


def test_oauth_link(binary):
    d, port = daemon(binary)
    for query in ("", "?error=access_denied&error_description=AADSTS65004%3A+declined"
                  "&state=unknown-state"):
        st, h, body = request(port, "GET", "/oauth/callback" + query)
        check(st == 400, "callback %r: %d", query, st)
        check(b'<a href="/#/connections">Back to mailbridge</a>' in body,
              "callback %r: no link back to the UI: %r", query, body[-400:])


def test_sources(binary):
    files = ui_files()
    for want in ("index.html", "app.js", "app.css", "icon.svg"):
        check(want in files, "ui/%s is missing", want)
    for name in files:
        text = read_ui(name).decode("utf-8")
        ext = os.path.splitext(name)[1]
        check(not re.search(r"\bstyle\s*=", text), "ui/%s has a style= attribute", name)
        # an on*= handler: any in markup; in scripts, one written as attribute text
        handler = (r"""[\s"'/]on[a-z]+\s*=""" if ext != ".js" else
                   r"""\bon[a-z]+\s*=\s*\\?["']|setAttribute\(\s*["']on""")
        check(not re.search(handler, text, re.I), "ui/%s has an on*= event handler", name)
        if ext == ".js":
            check(not re.search(r"\.on[a-z]+\s*=[^=]", text), "ui/%s sets an on* property "
                  "(use addEventListener)", name)
        check(not re.search(r"<style\b", text, re.I), "ui/%s has a <style> element", name)
        check(not re.search(r"javascript:", text, re.I), "ui/%s has a javascript: URL", name)
        if ext in (".html", ".svg"):
            p = Refs()
            p.feed(text)
            check(p.inline_scripts == 0, "ui/%s has an inline <script>", name)
            check(not re.search(r"<script\b", text, re.I) or ext == ".html",
                  "ui/%s has a script", name)
            check(p.styles == 0 and not p.handlers, "ui/%s: style or handlers %r", name,
                  p.handlers)
        if ext == ".html":
            check(not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text, re.I),
                  "ui/%s loads something from another origin", name)
        if ext == ".css":
            check(not re.search(r"@import|url\(\s*['\"]?(https?:)?//", text, re.I),
                  "ui/%s loads something from another origin", name)
        if ext == ".js":
            check(text.count('"use strict";') >= 1, "ui/%s is not in strict mode", name)
            for bad in (r"\.innerHTML\b", r"\.outerHTML\b", r"insertAdjacentHTML",
                        r"document\.write", r"\beval\s*\(", r"\bnew\s+Function\b",
                        r"setTimeout\s*\(\s*['\"]", r"setAttribute\(\s*['\"]style",
                        r"\.style\.", r"import\s*\(", r"https?://(?!www\.w3\.org/2000/svg)[a-z0-9]"):
                m = re.search(bad, text)
                check(not m, "ui/%s uses %r (near %r)", name, bad,
                      text[max(0, m.start() - 40):m.end() + 40] if m else "")


TESTS = mbtest.named(test_sources, test_page, test_assets, test_unknown, test_head, test_etag,
                     test_api_headers, test_oauth_link)

if __name__ == "__main__":
    sys.exit(mbtest.main(TESTS, BUDGET))
