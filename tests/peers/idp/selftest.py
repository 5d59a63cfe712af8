#!/usr/bin/env python3
"""Self-test of the Microsoft identity platform stand-in (tests/peers/idp).

Python stdlib only. Generates a CA and a server certificate with the openssl CLI, runs
`npm ci` if node_modules is missing, starts server.js, drives every flow the gateway needs
(the HTML login/consent forms through urllib with a cookie jar, token exchange, refresh for
Graph then Outlook, rotation, client credentials, device code, injected errors, counters),
stops the server by PID and cleans up.

    python3 tests/peers/idp/selftest.py [-v]

Prints "N passed, M failed" and exits non-zero on failure.
"""
import base64
import hashlib
import html.parser
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/peers: selftest_common
import selftest_common as common  # noqa: E402
from selftest_common import VERBOSE, check, make_certs, npm_ci, start_server, stop  # noqa: E402

DEADLINE = time.monotonic() + 240  # the whole run is bounded

TENANT = '11111111-2222-3333-4444-555555555555'
CONF_ID = '00001111-aaaa-2222-bbbb-3333cccc4444'
CONF_SECRET = 'Zx8Q~test.secret_value-1234567890abcdefghij'
PUB_ID = '55556666-eeee-7777-ffff-8888aaaa9999'
REDIRECT = 'http://127.0.0.1:8025/oauth/callback'  # registered without port: any loopback port matches
USER, PASSWORD = 'user@contoso.test', 'UserPass1!'
GRAPH = 'https://graph.microsoft.com'
OUTLOOK = 'https://outlook.office.com'
DELEGATED = ('offline_access openid profile email https://graph.microsoft.com/Mail.Send '
             'https://graph.microsoft.com/User.Read https://outlook.office.com/SMTP.Send')
DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code'
UUID_RE = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')

def out_of_time():
    return time.monotonic() > DEADLINE


# ---------------------------------------------------------------------------------------------
# HTTP client (urllib, cookie jar, our CA, redirects followed by hand)

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


class Client:
    def __init__(self, ca_file, base):
        self.ctx = ssl.create_default_context(cafile=ca_file)
        self.jar = http.cookiejar.CookieJar()
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=self.ctx),
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect())

    def request(self, method, url, form=None, json_body=None, headers=None, timeout=15):
        if not url.startswith('http'):
            url = self.base + url
        data = None
        h = dict(headers or {})
        if form is not None:
            data = urllib.parse.urlencode(form, doseq=True).encode()
            h.setdefault('Content-Type', 'application/x-www-form-urlencoded')
        elif json_body is not None:
            data = json.dumps(json_body).encode()
            h['Content-Type'] = 'application/json'
        req = urllib.request.Request(url, data=data, method=method, headers=h)
        try:
            with self.opener.open(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read().decode('utf-8', 'replace')
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode('utf-8', 'replace')

    def json(self, method, url, **kw):
        st, h, body = self.request(method, url, **kw)
        try:
            return st, json.loads(body)
        except ValueError:
            return st, {'_raw': body}


class Forms(html.parser.HTMLParser):
    """Collects <form> actions and their input names."""

    def __init__(self):
        super().__init__()
        self.forms = {}
        self.cur = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'form':
            self.cur = a.get('id') or a.get('action')
            self.forms[self.cur] = {'action': a.get('action'), 'method': a.get('method'), 'fields': {}}
        elif tag in ('input', 'button') and self.cur and a.get('name'):
            self.forms[self.cur]['fields'][a['name']] = a.get('value', '')

    def handle_endtag(self, tag):
        if tag == 'form':
            self.cur = None


def forms_of(html_text):
    p = Forms()
    p.feed(html_text)
    return p.forms


# ---------------------------------------------------------------------------------------------
# JWT helpers (RS256 verified with plain integer arithmetic against the JWKS)

def b64d(s):
    return base64.urlsafe_b64decode(s + '=' * (-len(s) % 4))


def jwt_parts(tok):
    h, p, s = tok.split('.')
    return json.loads(b64d(h)), json.loads(b64d(p)), b64d(s), f'{h}.{p}'.encode()


def rs256_ok(tok, jwks):
    header, _, sig, signed = jwt_parts(tok)
    key = next((k for k in jwks['keys'] if k.get('kid') == header.get('kid')), None)
    if not key or header.get('alg') != 'RS256':
        return False
    n = int.from_bytes(b64d(key['n']), 'big')
    e = int.from_bytes(b64d(key['e']), 'big')
    k = (n.bit_length() + 7) // 8
    em = pow(int.from_bytes(sig, 'big'), e, n).to_bytes(k, 'big')
    digest_info = bytes.fromhex('3031300d060960864801650304020105000420') + hashlib.sha256(signed).digest()
    expected = b'\x00\x01' + b'\xff' * (k - len(digest_info) - 3) + b'\x00' + digest_info
    return em == expected


def ms_error_ok(name, status, body, want_status, want_error, want_code):
    ok = check(f'{name}: status {want_status}', status == want_status, f'got {status} {body}')
    ok &= check(f'{name}: error {want_error}', body.get('error') == want_error, f'got {body}')
    ok &= check(f'{name}: error_codes [{want_code}]', body.get('error_codes') == [want_code], f'got {body.get("error_codes")}')
    desc = body.get('error_description', '')
    ok &= check(f'{name}: error_description shape',
                desc.startswith(f'AADSTS{want_code}:') and '\r\nTrace ID: ' in desc
                and '\r\nCorrelation ID: ' in desc and '\r\nTimestamp: ' in desc, repr(desc))
    ok &= check(f'{name}: trace/correlation ids, timestamp, error_uri',
                UUID_RE.match(body.get('trace_id', '')) and UUID_RE.match(body.get('correlation_id', ''))
                and re.match(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$', body.get('timestamp', ''))
                and body.get('error_uri') == f'https://login.microsoftonline.com/error?code={want_code}', repr(body))
    return ok


# ---------------------------------------------------------------------------------------------
# flows

def pkce_pair():
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b'=').decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b'=').decode()
    return verifier, challenge


def browser_flow(c, client_id, scope, challenge, state, *, tenant=TENANT, password=PASSWORD,
                 consent='accept', redirect=REDIRECT, expect_consent=True):
    """authorize -> login form -> consent form -> redirect to redirect_uri. Returns the final
    redirect's query as a dict (or {'_page': html} if it stopped on a page)."""
    q = {'client_id': client_id, 'response_type': 'code', 'redirect_uri': redirect,
         'response_mode': 'query', 'scope': scope, 'state': state,
         'code_challenge': challenge, 'code_challenge_method': 'S256'}
    url = f'/{tenant}/oauth2/v2.0/authorize?' + urllib.parse.urlencode(q)
    method, form = 'GET', None
    logged_in = False
    for _ in range(12):
        st, h, body = c.request(method, url, form=form)
        loc = h.get('Location') or h.get('location')
        if st in (302, 303) and loc:
            if loc.startswith(redirect.split('/oauth')[0]) or not loc.startswith(('/', c.base)):
                return dict(urllib.parse.parse_qsl(urllib.parse.urlparse(loc).query), _location=loc)
            url, method, form = loc, 'GET', None
            continue
        if st != 200:
            return {'_page': body, '_status': st}
        fs = forms_of(body)
        if 'login-form' in fs:
            if logged_in:  # the login page came back: the credentials were refused
                return {'_page': body, '_status': st}
            logged_in = True
            url, method, form = fs['login-form']['action'], 'POST', {'login': USER, 'password': password}
            continue
        if 'accept-form' in fs:
            if not expect_consent:
                return {'_page': body, '_unexpected_consent': True}
            f = fs['accept-form'] if consent == 'accept' else fs['cancel-form']
            url, method, form = f['action'], 'POST', {}
            continue
        return {'_page': body, '_status': st}
    return {'_page': 'too many steps'}


def token(c, form, headers=None, timeout=15):
    return c.json('POST', f'/{TENANT}/oauth2/v2.0/token', form=form, headers=headers, timeout=timeout)


def control(c, method, path, body=None):
    return c.json(method, f'/_test/{path}', json_body=body)


def main():
    tmp = tempfile.mkdtemp(prefix='idp-selftest-')
    proc = None
    try:
        ca, cert, key = make_certs(tmp)

        npm_ci(HERE)

        state_file = os.path.join(tmp, 'state.json')
        stderr_log = open(os.path.join(tmp, 'stderr.log'), 'a')

        def start():
            return start_server(['node', os.path.join(HERE, 'server.js'), '--port', '0', '--cert', cert,
                                 '--key', key, '--state-file', state_file], stderr_log)

        proc, ready = start()
        if not check('ready line', ready.get('ready') is True and isinstance(ready.get('port'), int), repr(ready)):
            with open(os.path.join(tmp, 'stderr.log')) as f:
                print(f.read())
            return
        base = f'https://127.0.0.1:{ready["port"]}'
        check('ready line issuer', ready.get('issuer') == f'{base}/{TENANT}/v2.0', ready.get('issuer'))
        c = Client(ca, base)
        live_rt = tests(c, base, state_file)

        # restart on the same state file: keys, clients and refresh tokens survive
        proc.send_signal(signal.SIGTERM)
        check('server stops on SIGTERM', proc.wait(10) == 0)
        proc, ready = start()
        base = f'https://127.0.0.1:{ready.get("port")}'
        c = Client(ca, base)
        st, d = token(c, {'client_id': PUB_ID, 'grant_type': 'refresh_token', 'refresh_token': live_rt,
                          'scope': 'https://graph.microsoft.com/Mail.Send'})
        check('restart with --state-file: refresh token still valid', st == 200 and d.get('access_token'), repr(d)[:300])
        if d.get('access_token'):
            st, jwks = c.json('GET', f'/{TENANT}/discovery/v2.0/keys')
            check('restart with --state-file: same signing key', rs256_ok(d['access_token'], jwks))
    finally:
        if proc is not None:
            stop(proc)
            if VERBOSE:
                with open(os.path.join(tmp, 'stderr.log')) as f:
                    sys.stdout.write(f.read())
        shutil.rmtree(tmp, ignore_errors=True)


def tests(c, base, state_file):
    # --- discovery, tenants, JWKS ---
    for tenant in (TENANT, 'contoso.test'):
        st, d = c.json('GET', f'/{tenant}/v2.0/.well-known/openid-configuration')
        check(f'discovery via {tenant}', st == 200 and d.get('issuer') == f'{base}/{TENANT}/v2.0'
              and d.get('token_endpoint') == f'{base}/{TENANT}/oauth2/v2.0/token'
              and d.get('device_authorization_endpoint') == f'{base}/{TENANT}/oauth2/v2.0/devicecode'
              and d.get('jwks_uri') == f'{base}/{TENANT}/discovery/v2.0/keys', repr(d)[:500])
    st, d = c.json('GET', '/nosuchtenant.example/v2.0/.well-known/openid-configuration')
    ms_error_ok('unknown tenant (discovery)', st, d, 400, 'invalid_tenant', 90002)
    st, d = c.json(
        'POST', '/nosuchtenant.example/oauth2/v2.0/token', form={'grant_type': 'client_credentials'})
    ms_error_ok('unknown tenant (token)', st, d, 400, 'invalid_tenant', 90002)
    st, jwks = c.json('GET', f'/{TENANT}/discovery/v2.0/keys')
    check('jwks', st == 200 and jwks.get('keys') and all('d' not in k for k in jwks['keys']), repr(jwks)[:300])

    # --- authorization code + PKCE through the HTML forms (confidential client) ---
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(12)
    r = browser_flow(c, CONF_ID, DELEGATED, challenge, state)
    check('auth code: redirect to redirect_uri with code and state',
          r.get('code') and r.get('state') == state and r.get('_location', '').startswith(REDIRECT), repr(r)[:500])
    code = r.get('code')
    st, tok = token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'authorization_code',
                        'code': code, 'redirect_uri': REDIRECT, 'code_verifier': verifier,
                        'scope': 'https://graph.microsoft.com/Mail.Send https://graph.microsoft.com/User.Read offline_access openid profile'})
    check('auth code: token response', st == 200 and tok.get('token_type') == 'Bearer'
          and isinstance(tok.get('expires_in'), int) and tok.get('ext_expires_in') == tok.get('expires_in')
          and tok.get('access_token') and tok.get('refresh_token') and tok.get('id_token'), repr(tok)[:800])
    check('auth code: scope is the Graph scopes',
          set(tok.get('scope', '').split()) == {f'{GRAPH}/Mail.Send', f'{GRAPH}/User.Read'}, tok.get('scope'))
    if tok.get('access_token'):
        h, p, _, _ = jwt_parts(tok['access_token'])
        check('access token: RS256 JWT verified with the JWKS', rs256_ok(tok['access_token'], jwks), repr(h))
        check('access token: Graph claims', p.get('aud') == GRAPH and p.get('scp') == 'Mail.Send User.Read'
              and p.get('tid') == TENANT and UUID_RE.match(p.get('oid', '')) and p.get('preferred_username') == USER
              and p.get('upn') == USER and p.get('exp', 0) > time.time() and p.get('iss') == f'{base}/{TENANT}/v2.0',
              repr(p))
        _, idp, _, _ = jwt_parts(tok['id_token'])
        check('id token: claims', idp.get('aud') == CONF_ID and idp.get('preferred_username') == USER
              and idp.get('tid') == TENANT and idp.get('oid') == p.get('oid') and idp.get('name'), repr(idp))
    st, again = token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'authorization_code',
                          'code': code, 'redirect_uri': REDIRECT, 'code_verifier': verifier})
    ms_error_ok('code redeemed twice', st, again, 400, 'invalid_grant', 54005)

    # --- refresh: Graph, then Outlook with the same (old) refresh token; rotation ---
    rt0 = tok.get('refresh_token')
    st, g = token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'refresh_token',
                      'refresh_token': rt0, 'scope': 'https://graph.microsoft.com/Mail.Send offline_access'})
    check('refresh (Graph): ok', st == 200 and g.get('access_token'), repr(g)[:500])
    check('refresh (Graph): rotated', g.get('refresh_token') and g.get('refresh_token') != rt0)
    if g.get('access_token'):
        _, p, _, _ = jwt_parts(g['access_token'])
        check('refresh (Graph): aud/scp', p.get('aud') == GRAPH and p.get('scp') == 'Mail.Send', repr(p))
    st, o = token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'refresh_token',
                      'refresh_token': rt0, 'scope': 'https://outlook.office.com/SMTP.Send offline_access'})
    check('refresh (Outlook) with the old refresh token: ok (old stays valid)', st == 200 and o.get('access_token'), repr(o)[:500])
    if o.get('access_token'):
        _, p, _, _ = jwt_parts(o['access_token'])
        check('refresh (Outlook): aud/scp', p.get('aud') == OUTLOOK and p.get('scp') == 'SMTP.Send', repr(p))
        check('refresh (Outlook): scope', o.get('scope') == f'{OUTLOOK}/SMTP.Send', o.get('scope'))
        check('refresh (Outlook): new refresh token', o.get('refresh_token') not in (None, rt0, g.get('refresh_token')))
    st, d = token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'refresh_token',
                      'refresh_token': g.get('refresh_token'), 'scope': 'https://graph.microsoft.com/.default'})
    check('refresh with /.default: all consented Graph scopes', st == 200 and set(d.get('scope', '').split()) == {f'{GRAPH}/Mail.Send', f'{GRAPH}/User.Read'}, repr(d)[:300])
    st, d = token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'refresh_token',
                      'refresh_token': rt0, 'scope': 'https://graph.microsoft.com/Mail.Send https://outlook.office.com/SMTP.Send'})
    ms_error_ok('two resources at /token', st, d, 400, 'invalid_scope', 700022)
    st, d = token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'refresh_token',
                      'refresh_token': rt0, 'scope': 'https://graph.microsoft.com/Nope.Nope'})
    ms_error_ok('unknown scope', st, d, 400, 'invalid_scope', 70011)
    st, d = token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'refresh_token',
                      'refresh_token': rt0, 'scope': 'https://graph.microsoft.com/Mail.ReadWrite'})
    ms_error_ok('refresh for a scope never consented', st, d, 400, 'invalid_grant', 65001)
    st, d = token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'refresh_token',
                      'refresh_token': 'garbage-refresh-token'})
    ms_error_ok('bad refresh token', st, d, 400, 'invalid_grant', 70000)
    # HTTP Basic client authentication (RFC 6749 §2.3.1, URL-encoded parts)
    basic = base64.b64encode(f'{urllib.parse.quote(CONF_ID, safe="")}:{urllib.parse.quote(CONF_SECRET, safe="")}'.encode()).decode()
    st, d = token(c, {'grant_type': 'refresh_token', 'refresh_token': rt0, 'scope': 'https://graph.microsoft.com/User.Read'},
                  headers={'Authorization': f'Basic {basic}'})
    check('refresh with HTTP Basic client auth', st == 200 and d.get('access_token'), repr(d)[:300])

    # --- client authentication errors ---
    st, d = token(c, {'client_id': CONF_ID, 'client_secret': 'wrong', 'grant_type': 'refresh_token', 'refresh_token': rt0})
    ms_error_ok('bad client secret', st, d, 401, 'invalid_client', 7000215)
    st, d = token(c, {'client_id': CONF_ID, 'grant_type': 'refresh_token', 'refresh_token': rt0})
    ms_error_ok('confidential client without secret', st, d, 401, 'invalid_client', 7000218)
    st, d = token(c, {'client_id': PUB_ID, 'client_secret': 'x', 'grant_type': 'refresh_token', 'refresh_token': rt0})
    ms_error_ok('public client with a secret', st, d, 401, 'invalid_client', 700025)
    st, d = token(c, {'client_id': 'deadbeef-0000-0000-0000-000000000000', 'grant_type': 'refresh_token', 'refresh_token': rt0})
    ms_error_ok('unknown client', st, d, 400, 'unauthorized_client', 700016)

    # --- PKCE mismatch, public client, consent cancel, wrong password ---
    verifier2, challenge2 = pkce_pair()
    r = browser_flow(c, CONF_ID, 'offline_access https://graph.microsoft.com/Mail.Send', challenge2, 'st2')
    st, d = token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'authorization_code',
                      'code': r.get('code', 'x'), 'redirect_uri': REDIRECT, 'code_verifier': pkce_pair()[0]})
    ms_error_ok('PKCE mismatch', st, d, 400, 'invalid_grant', 50148)

    pc = Client_with_ctx(c, base)
    verifier3, challenge3 = pkce_pair()
    r = browser_flow(pc, PUB_ID, 'offline_access openid https://outlook.office.com/SMTP.Send', challenge3, 'st3',
                     redirect='http://localhost:50123/oauth/callback')
    check('public client: redirect (loopback, any port)', r.get('code') and r.get('state') == 'st3', repr(r)[:400])
    st, d = token(pc, {'client_id': PUB_ID, 'grant_type': 'authorization_code', 'code': r.get('code', 'x'),
                       'redirect_uri': 'http://localhost:50123/oauth/callback', 'code_verifier': verifier3})
    check('public client: tokens without a secret', st == 200 and d.get('refresh_token')
          and jwt_parts(d['access_token'])[1].get('aud') == OUTLOOK, repr(d)[:400])

    cc = Client_with_ctx(c, base)
    r = browser_flow(cc, CONF_ID, 'offline_access https://graph.microsoft.com/Mail.Send', pkce_pair()[1], 'st4', consent='cancel')
    check('consent cancelled: error=access_denied to the redirect_uri',
          r.get('error') == 'access_denied' and r.get('state') == 'st4'
          and r.get('error_description', '').startswith('AADSTS65004'), repr(r)[:400])

    wc = Client_with_ctx(c, base)
    r = browser_flow(wc, CONF_ID, 'offline_access https://graph.microsoft.com/Mail.Send', pkce_pair()[1], 'st5', password='wrong')
    check('wrong password: login page shows AADSTS50126', 'AADSTS50126' in r.get('_page', ''), repr(r)[:300])

    st, h, body = c.request('GET', f'/{TENANT}/oauth2/v2.0/authorize?' + urllib.parse.urlencode({
        'client_id': CONF_ID, 'response_type': 'code', 'redirect_uri': REDIRECT, 'state': 's6',
        'scope': 'offline_access https://graph.microsoft.com/NoSuch.Scope'}))
    loc = h.get('Location', '')
    check('authorize: invalid scope redirected as error=invalid_scope', st == 302 and 'error=invalid_scope' in loc and 'AADSTS70011' in urllib.parse.unquote(loc), f'{st} {loc}')

    # --- client credentials ---
    st, d = token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'client_credentials',
                      'scope': 'https://graph.microsoft.com/.default'})
    ok = check('client credentials (Graph): ok, no refresh token, no scope', st == 200 and d.get('access_token')
               and 'refresh_token' not in d and 'scope' not in d and d.get('ext_expires_in') == d.get('expires_in'), repr(d)[:400])
    if ok:
        _, p, _, _ = jwt_parts(d['access_token'])
        check('client credentials: roles, aud', p.get('roles') == ['Mail.Send'] and p.get('aud') == GRAPH
              and p.get('tid') == TENANT and 'scp' not in p and rs256_ok(d['access_token'], jwks), repr(p))
    st, d = token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'client_credentials',
                      'scope': 'https://outlook.office365.com/.default'})
    check('client credentials (Exchange): aud outlook.office365.com', st == 200
          and jwt_parts(d['access_token'])[1].get('aud') == 'https://outlook.office365.com', repr(d)[:300])
    st, d = token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'client_credentials',
                      'scope': 'https://graph.microsoft.com/Mail.Send'})
    ms_error_ok('client credentials without /.default', st, d, 400, 'invalid_scope', 1002012)

    # --- device code ---
    control(c, 'POST', 'settings', {'device_interval': 1, 'slow_down_increment': 1})
    st, dc = c.json('POST', f'/{TENANT}/oauth2/v2.0/devicecode',
                    form={'client_id': PUB_ID, 'scope': 'offline_access openid https://graph.microsoft.com/Mail.Send https://graph.microsoft.com/User.Read'})
    check('devicecode: Microsoft fields', st == 200 and all(k in dc for k in ('device_code', 'user_code', 'verification_uri', 'expires_in', 'interval', 'message'))
          and 'verification_uri_complete' not in dc and dc.get('interval') == 1 and dc.get('expires_in') == 900, repr(dc))
    check('devicecode: message', dc.get('message') == f'To sign in, use a web browser to open the page {dc.get("verification_uri")} and enter the code {dc.get("user_code")} to authenticate.', dc.get('message'))
    poll = {'grant_type': DEVICE_GRANT, 'client_id': PUB_ID, 'device_code': dc.get('device_code')}
    st, d = token(c, poll)
    ms_error_ok('device: pending', st, d, 400, 'authorization_pending', 70016)
    st, d = token(c, poll)  # immediately again: faster than the interval
    ms_error_ok('device: polled too fast -> slow_down', st, d, 400, 'slow_down', 70016)
    time.sleep(2.1)  # interval is now 1 + 1
    control(c, 'POST', 'device/slow_down', {'count': 1})
    st, d = token(c, poll)
    check('device: forced slow_down', st == 400 and d.get('error') == 'slow_down', repr(d)[:200])
    st, lst = control(c, 'GET', 'device')
    check('control: device list shows pending code', any(x['user_code'] == dc.get('user_code') and x['status'] == 'pending' for x in lst), repr(lst))
    st, a = control(c, 'POST', 'device/approve', {'user_code': dc.get('user_code'), 'username': USER})
    check('control: approve', st == 200 and a.get('approved'), repr(a))
    time.sleep(3.1)  # interval is now 3
    st, d = token(c, poll)
    check('device: approved -> tokens', st == 200 and d.get('access_token') and d.get('refresh_token') and d.get('id_token')
          and set(d.get('scope', '').split()) == {f'{GRAPH}/Mail.Send', f'{GRAPH}/User.Read'}, repr(d)[:400])
    if d.get('access_token'):
        check('device: token user', jwt_parts(d['access_token'])[1].get('preferred_username') == USER)
        st, o = token(c, {'client_id': PUB_ID, 'grant_type': 'refresh_token', 'refresh_token': d['refresh_token'],
                          'scope': 'https://graph.microsoft.com/User.Read'})
        check('device: refresh (public client)', st == 200 and o.get('access_token'), repr(o)[:300])

    st, dc2 = c.json('POST', f'/{TENANT}/oauth2/v2.0/devicecode', form={'client_id': PUB_ID, 'scope': 'offline_access https://outlook.office.com/SMTP.Send'})
    st, a = control(c, 'POST', 'device/deny', {'user_code': dc2.get('user_code')})
    check('control: deny', st == 200 and a.get('denied'), repr(a))
    st, d = token(c, {'grant_type': DEVICE_GRANT, 'client_id': PUB_ID, 'device_code': dc2.get('device_code')})
    ms_error_ok('device: declined', st, d, 400, 'authorization_declined', 65004)

    control(c, 'POST', 'settings', {'device_code_ttl': 1})
    st, dc3 = c.json('POST', f'/{TENANT}/oauth2/v2.0/devicecode', form={'client_id': PUB_ID, 'scope': 'offline_access https://graph.microsoft.com/Mail.Send'})
    check('devicecode: expires_in follows the setting', dc3.get('expires_in') == 1, repr(dc3))
    time.sleep(2.2)
    st, d = token(c, {'grant_type': DEVICE_GRANT, 'client_id': PUB_ID, 'device_code': dc3.get('device_code')})
    ms_error_ok('device: expired', st, d, 400, 'expired_token', 70019)
    control(c, 'POST', 'settings', {'device_code_ttl': 900, 'device_interval': 1, 'slow_down_increment': 5})

    # device code through the browser pages (what Playwright will drive)
    bc = Client_with_ctx(c, base)
    st, dc4 = c.json('POST', f'/{TENANT}/oauth2/v2.0/devicecode', form={'client_id': PUB_ID, 'scope': 'offline_access https://graph.microsoft.com/Mail.Send'})
    st, h, page = bc.request('GET', dc4['verification_uri'])
    f = forms_of(page).get('op.deviceInputForm')
    ok = check('device page: code input form', st == 200 and f and 'user_code' in f['fields'] and 'xsrf' in f['fields'], page[:300])
    if ok:
        st, h, page = bc.request('POST', f['action'], form={'xsrf': f['fields']['xsrf'], 'user_code': dc4['user_code'].lower()})
        f = forms_of(page).get('op.deviceConfirmForm')
        ok = check('device page: confirm form', st == 200 and f is not None, f'{st} {page[:300]}')
    if ok:
        fields = dict(f['fields'])
        st, h, page = bc.request('POST', f['action'], form={k: v for k, v in fields.items() if k != 'abort'})
        for _ in range(8):
            loc = h.get('Location')
            if st in (302, 303) and loc:
                st, h, page = bc.request('GET', loc)
                continue
            fs = forms_of(page)
            if 'login-form' in fs:
                st, h, page = bc.request('POST', fs['login-form']['action'], form={'login': USER, 'password': PASSWORD})
                continue
            if 'accept-form' in fs:
                st, h, page = bc.request('POST', fs['accept-form']['action'], form={})
                continue
            break
        check('device page: success page', 'id="success"' in page, page[:400])
        time.sleep(1.1)
        st, d = token(c, {'grant_type': DEVICE_GRANT, 'client_id': PUB_ID, 'device_code': dc4['device_code']})
        check('device (browser-approved): tokens', st == 200 and d.get('access_token'), repr(d)[:300])

    # --- injected failures ---
    control(c, 'POST', 'counters/reset')
    cases = [
        ({'error': 'invalid_grant', 'code': 700082}, 400, 'invalid_grant', 700082),
        ({'error': 'invalid_client', 'code': 7000215}, 401, 'invalid_client', 7000215),
        ({'error': 'invalid_client', 'code': 7000222}, 401, 'invalid_client', 7000222),
        ({'error': 'interaction_required', 'code': 50076}, 400, 'interaction_required', 50076),
        ({'error': 'temporarily_unavailable'}, 503, 'temporarily_unavailable', 90033),
    ]
    good_refresh = {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'refresh_token',
                    'refresh_token': rt0, 'scope': 'https://graph.microsoft.com/Mail.Send'}
    for spec, want_st, want_err, want_code in cases:
        control(c, 'POST', 'failures', dict(spec, count=1))
        st, d = token(c, good_refresh)
        ms_error_ok(f'injected {want_err} {want_code}', st, d, want_st, want_err, want_code)
    st, d = token(c, good_refresh)
    check('after injected failures: normal again', st == 200 and d.get('access_token'), repr(d)[:200])
    control(c, 'POST', 'failures', {'status': 500, 'count': 2, 'grant_type': 'refresh_token'})
    st1, _, b1 = c.request('POST', f'/{TENANT}/oauth2/v2.0/token', form=good_refresh)
    st2, _, b2 = c.request('POST', f'/{TENANT}/oauth2/v2.0/token', form=good_refresh)
    st3, d = token(c, good_refresh)
    check('injected HTTP 500 x2 then ok', st1 == 500 and st2 == 500 and st3 == 200, f'{st1} {st2} {st3}')
    control(c, 'POST', 'failures', {'hang_ms': 3000, 'count': 1})
    t0 = time.monotonic()
    timed_out = False
    try:
        token(c, good_refresh, timeout=0.7)
    except (socket.timeout, TimeoutError, urllib.error.URLError) as e:
        timed_out = 'timed out' in str(e) or isinstance(e, (socket.timeout, TimeoutError))
    check('injected hang -> client timeout', timed_out and time.monotonic() - t0 < 2.5)
    st, d = token(c, good_refresh)
    check('after the hang: normal again', st == 200, repr(d)[:200])
    control(c, 'POST', 'failures', {'hang_ms': 500, 'then': 'respond', 'count': 1})
    t0 = time.monotonic()
    st, d = token(c, good_refresh)
    check('injected delay then respond', st == 200 and time.monotonic() - t0 >= 0.45, f'{st}')
    control(c, 'POST', 'failures', {'error': 'invalid_grant', 'code': 700082, 'count': 1, 'client_id': 'other-client'})
    st, d = token(c, good_refresh)
    check('failure filtered by client_id does not hit other clients', st == 200)
    control(c, 'DELETE', 'failures')

    # --- counters (single-flight tests read these) ---
    st, cnt = control(c, 'GET', 'counters')
    check('counters: per grant type and client', cnt.get('token_by_grant_type', {}).get('refresh_token') == 13
          and cnt.get('token_by_client', {}).get(CONF_ID) == 13 and cnt.get('injected_failures_served') == 9, repr(cnt))
    control(c, 'POST', 'counters/reset')
    for _ in range(3):
        token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'client_credentials', 'scope': 'https://graph.microsoft.com/.default'})
    st, cnt = control(c, 'GET', 'counters')
    check('counters: reset then 3 client_credentials', cnt.get('token_requests') == 3
          and cnt.get('token_by_grant_type') == {'client_credentials': 3}
          and cnt.get('token_by_client_grant_type', {}).get(CONF_ID) == {'client_credentials': 3}, repr(cnt))

    # --- access token lifetime ---
    control(c, 'POST', 'settings', {'access_token_ttl': 60})
    st, d = token(c, good_refresh)
    check('access_token_ttl 60 -> expires_in 60, exp = iat + 60', st == 200 and d.get('expires_in') == 60
          and (lambda p: p['exp'] - p['iat'] == 60)(jwt_parts(d['access_token'])[1]), repr(d)[:200])
    control(c, 'POST', 'settings', {'access_token_ttl': 3599})

    # --- strict rotation ---
    # a separate grant (admin user, device code approved through the control API)
    st, dca = c.json('POST', f'/{TENANT}/oauth2/v2.0/devicecode', form={'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'scope': 'offline_access https://graph.microsoft.com/Mail.Send'})
    control(c, 'POST', 'device/approve', {'user_code': dca.get('user_code'), 'username': 'admin@contoso.test'})
    st, da = token(c, {'grant_type': DEVICE_GRANT, 'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'device_code': dca.get('device_code')})
    check('device code for a confidential client, approved as admin', st == 200 and da.get('refresh_token')
          and jwt_parts(da['access_token'])[1].get('preferred_username') == 'admin@contoso.test', repr(da)[:300])
    control(c, 'POST', 'settings', {'refresh_rotation': 'strict'})
    st, d1 = token(c, dict(good_refresh, refresh_token=da.get('refresh_token')))
    st2, d2 = token(c, dict(good_refresh, refresh_token=d1.get('refresh_token')))
    st3, d3 = token(c, dict(good_refresh, refresh_token=d1.get('refresh_token')))
    check('strict rotation: reuse of a rotated refresh token is invalid_grant', st == 200 and st2 == 200
          and st3 == 400 and d3.get('error') == 'invalid_grant', f'{st} {st2} {st3} {d3}')
    control(c, 'POST', 'settings', {'refresh_rotation': 'keep-old'})

    # --- an expired refresh token ---
    control(c, 'POST', 'settings', {'refresh_token_ttl': 1})
    st, d = token(c, good_refresh)
    time.sleep(2.1)
    st, d = token(c, dict(good_refresh, refresh_token=d.get('refresh_token')))
    ms_error_ok('expired refresh token', st, d, 400, 'invalid_grant', 700082)
    control(c, 'POST', 'settings', {'refresh_token_ttl': 90 * 24 * 3600})

    # --- revoke all refresh tokens of a user ---
    st, rv = control(c, 'POST', f'users/{USER}/revoke', {})
    check('control: revoke', st == 200 and rv.get('revoked_refresh_tokens', 0) >= 1, repr(rv))
    st, d = token(c, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'refresh_token',
                      'refresh_token': rt0, 'scope': 'https://graph.microsoft.com/Mail.Send'})
    ms_error_ok('refresh after revocation', st, d, 400, 'invalid_grant', 50173)

    # --- control API: register a client at run time ---
    new_id = '99998888-7777-6666-5555-444433332222'
    st, nc = control(c, 'POST', 'clients', {'client_id': new_id, 'client_secret': 's3cr3t~value', 'redirect_uris': ['http://127.0.0.1/cb']})
    check('control: register client', st == 200 and nc.get('client_id') == new_id, repr(nc))
    st, d = token(c, {'client_id': new_id, 'client_secret': 's3cr3t~value', 'grant_type': 'client_credentials', 'scope': 'https://graph.microsoft.com/.default'})
    check('registered client works', st == 200 and d.get('access_token'), repr(d)[:200])
    st, issued = control(c, 'GET', 'issued')
    check('control: issued tokens listed', st == 200 and any(x.get('access_token') == d.get('access_token') for x in issued))

    st, dcl = c.json('POST', f'/{TENANT}/oauth2/v2.0/devicecode', form={'client_id': PUB_ID, 'scope': 'offline_access https://graph.microsoft.com/Mail.Send'})
    control(c, 'POST', 'device/approve', {'user_code': dcl.get('user_code'), 'username': 'alice@contoso.test'})
    st, dl = token(c, {'grant_type': DEVICE_GRANT, 'client_id': PUB_ID, 'device_code': dcl.get('device_code')})
    check('device code approved as alice', st == 200 and dl.get('refresh_token'), repr(dl)[:200])

    time.sleep(0.2)
    check('state file written', os.path.exists(state_file) and json.load(open(state_file)).get('store', {}).get('RefreshToken'))
    return dl.get('refresh_token')


def Client_with_ctx(c, base):
    """A new client (own cookie jar = a new browser session) trusting the same CA."""
    n = Client.__new__(Client)
    n.ctx = c.ctx
    n.jar = http.cookiejar.CookieJar()
    n.base = base
    n.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=n.ctx),
                                           urllib.request.HTTPCookieProcessor(n.jar), NoRedirect())
    return n


if __name__ == '__main__':
    common.run_main(main)
