#!/usr/bin/env python3
"""Self-test of the Microsoft Graph stand-in (tests/peers/graph).

Python stdlib only. Generates a CA and a server certificate with the openssl CLI, runs
`npm ci` (here and in tests/peers/idp) if node_modules is missing, starts the identity-platform
stand-in (tests/peers/idp/server.js) and the Graph stand-in, gets real tokens from the IdP
(client credentials for app-only; device code approved through its control API for delegated),
then exercises sendMail (MIME and JSON), Send As, 413, the draft + upload session + send path
with a 6 MB attachment verified by sha256, /me, every injected fault, in-flight tracking with
concurrent requests, and the app-registration endpoints. Stops both servers by PID.

    python3 tests/peers/graph/selftest.py [-v]

Prints "N passed, M failed" and exits non-zero on failure.
"""
import base64
import email
import email.policy
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/peers: selftest_common
import selftest_common as common  # noqa: E402
from selftest_common import VERBOSE, check, make_certs, npm_ci, start_server, stop  # noqa: E402

IDP_DIR = os.path.join(os.path.dirname(HERE), 'idp')
TIME_LIMIT = 300  # seconds: the whole run is bounded (SIGALRM), servers are stopped in `finally`

TENANT = '11111111-2222-3333-4444-555555555555'
CONF_ID = '00001111-aaaa-2222-bbbb-3333cccc4444'
CONF_SECRET = 'Zx8Q~test.secret_value-1234567890abcdefghij'
PUB_ID = '55556666-eeee-7777-ffff-8888aaaa9999'
APP_ID = '77776666-5555-4444-3333-222211110000'  # registered in the IdP by this test: app-only roles
APP_SECRET = 'App~only.secret-0987654321'
USER, USER_OID = 'user@contoso.test', 'aaaaaaaa-0000-4000-8000-000000000001'
ADMIN = 'admin@contoso.test'
ALICE = 'alice@contoso.test'
G = 'https://graph.microsoft.com'
DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code'
UUID_RE = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
SEND_AS_TEXT = ('The user account which was used to submit this request does not have the right to send mail '
                'on behalf of the specified sending account. Cannot submit message.')
GRAPH_APP = '00000003-0000-0000-c000-000000000000'
EXO_APP = '00000002-0000-0ff1-ce00-000000000000'

# ---------------------------------------------------------------------------------------------
# HTTP (http.client: exact control over headers, one connection per request)

class Http:
    def __init__(self, ca_file, base):
        self.ctx = ssl.create_default_context(cafile=ca_file)
        self.base = base

    def request(self, method, url, body=None, headers=None, timeout=30):
        if not url.startswith('http'):
            url = self.base + url
        u = urllib.parse.urlsplit(url)
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=self.ctx, timeout=timeout)
        try:
            path = urllib.parse.quote(u.path, safe="/$()'=,%")
            if u.query:
                path += '?' + urllib.parse.quote(u.query, safe="=&$,'()%")
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def json(self, method, url, body=None, token=None, headers=None, form=None, timeout=30):
        h = dict(headers or {})
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            h['Content-Type'] = 'application/x-www-form-urlencoded'
        elif body is not None:
            data = json.dumps(body).encode()
            h['Content-Type'] = 'application/json'
        if token:
            h['Authorization'] = f'Bearer {token}'
        st, hd, raw = self.request(method, url, body=data, headers=h, timeout=timeout)
        try:
            return st, hd, json.loads(raw) if raw else None
        except ValueError:
            return st, hd, {'_raw': raw[:500]}


def start_node(args, cwd, log):
    return start_server(['node'] + args, log, cwd=cwd, wait=40)


def mime(frm=USER, to='bob@example.com', cc=None, bcc=None, subject='Test', body='Hello from the selftest.\r\n',
         extra_headers=''):
    h = [f'From: Sender <{frm}>'] if frm else []
    if to:
        h.append(f'To: {to}')
    if cc:
        h.append(f'Cc: {cc}')
    if bcc:
        h.append(f'Bcc: {bcc}')
    h += [f'Subject: {subject}', f'Message-ID: <{time.time_ns()}@selftest.example>',
          'Date: Mon, 01 Jun 2026 12:00:00 +0000', 'MIME-Version: 1.0', 'Content-Type: text/plain; charset=utf-8']
    return ('\r\n'.join(h) + '\r\n' + extra_headers + '\r\n' + body).encode()


def sha(b):
    return hashlib.sha256(b).hexdigest()


class OutOfTime(Exception):
    pass


def on_alarm(signum, frame):
    raise OutOfTime(f'selftest exceeded {TIME_LIMIT} s')


def main():
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TIME_LIMIT)
    tmp = tempfile.mkdtemp(prefix='graph-selftest-')
    idp = graph = None
    log = open(os.path.join(tmp, 'stderr.log'), 'a')
    try:
        ca, cert, key = make_certs(tmp)
        for d in (IDP_DIR, HERE):
            npm_ci(d)
        idp, iready = start_node([os.path.join(IDP_DIR, 'server.js'), '--port', '0', '--cert', cert, '--key', key], IDP_DIR, log)
        if not check('IdP ready', iready.get('ready') is True, repr(iready)):
            return
        graph, gready = start_node([os.path.join(HERE, 'server.js'), '--port', '0', '--cert', cert, '--key', key,
                                    '--jwks-url', iready['jwks_uri'], '--ca', ca], HERE, log)
        if not check('ready line', gready.get('ready') is True and isinstance(gready.get('port'), int)
                     and gready.get('base_url') == f'https://127.0.0.1:{gready.get("port")}', repr(gready)):
            return
        tests(Http(ca, iready['base_url']), Http(ca, gready['base_url']), gready['base_url'])
    finally:
        signal.alarm(0)
        stop(graph)
        stop(idp)
        log.close()
        if VERBOSE or common.failed:
            with open(os.path.join(tmp, 'stderr.log')) as f:
                text = f.read()
            text = '\n'.join(x for x in text.splitlines() if 'oidc-provider WARNING' not in x and 'already parsed request body' not in x)
            if text.strip():
                sys.stdout.write('--- server stderr ---\n' + text[-4000:] + '\n')
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# tokens from the IdP

def idp_token(idp, form):
    st, _, d = idp.json('POST', f'/{TENANT}/oauth2/v2.0/token', form=form)
    if st != 200:
        raise RuntimeError(f'token request failed: {st} {d}')
    return d


def device_token(idp, client_id, scope, username):
    st, _, dc = idp.json('POST', f'/{TENANT}/oauth2/v2.0/devicecode', form={'client_id': client_id, 'scope': scope})
    if st != 200:
        raise RuntimeError(f'devicecode failed: {st} {dc}')
    idp.json('POST', '/_test/device/approve', body={'user_code': dc['user_code'], 'username': username})
    for _ in range(10):
        st, _, d = idp.json('POST', f'/{TENANT}/oauth2/v2.0/token',
                            form={'grant_type': DEVICE_GRANT, 'client_id': client_id, 'device_code': dc['device_code']})
        if st == 200:
            return d
        if d.get('error') not in ('slow_down', 'authorization_pending'):
            raise RuntimeError(f'device token failed: {d}')
        time.sleep(1.1)
    raise RuntimeError('device token: no token')


def claims(tok):
    p = tok.split('.')[1]
    return json.loads(base64.urlsafe_b64decode(p + '=' * (-len(p) % 4)))


# ---------------------------------------------------------------------------------------------

def tests(idp, g, base):
    # --- tokens ---
    idp.json('POST', '/_test/settings', body={'device_interval': 1, 'slow_down_increment': 1})
    idp.json('POST', '/_test/clients', body={
        'client_id': APP_ID, 'client_secret': APP_SECRET, 'redirect_uris': ['http://127.0.0.1/oauth/callback'],
        'app_roles': {G: ['Mail.Send', 'Mail.ReadWrite', 'User.Read.All']}})
    t_app = idp_token(idp, {'client_id': APP_ID, 'client_secret': APP_SECRET, 'grant_type': 'client_credentials',
                            'scope': f'{G}/.default'})['access_token']
    t_app_send = idp_token(idp, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'client_credentials',
                                 'scope': f'{G}/.default'})['access_token']  # roles: Mail.Send only
    t_outlook = idp_token(idp, {'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'client_credentials',
                                'scope': 'https://outlook.office365.com/.default'})['access_token']
    d = device_token(idp, PUB_ID, f'offline_access {G}/Mail.Send {G}/User.Read {G}/Mail.ReadWrite', USER)
    t_user = d['access_token']
    rt = d['refresh_token']
    check('delegated token: scp', set(claims(t_user).get('scp', '').split()) == {'Mail.Send', 'User.Read', 'Mail.ReadWrite'}, claims(t_user))
    t_send_only = idp_token(idp, {'client_id': PUB_ID, 'grant_type': 'refresh_token', 'refresh_token': rt, 'scope': f'{G}/Mail.Send'})['access_token']
    t_read_only = idp_token(idp, {'client_id': PUB_ID, 'grant_type': 'refresh_token', 'refresh_token': rt, 'scope': f'{G}/User.Read'})['access_token']
    t_alice = device_token(idp, PUB_ID, f'offline_access {G}/Mail.Send {G}/User.Read', ALICE)['access_token']

    # --- authentication ---
    raw = mime()
    b64 = base64.b64encode(raw)

    def send_me(token, body=b64, ctype='text/plain', path='/v1.0/me/sendMail', headers=None, timeout=30):
        h = {'Content-Type': ctype}
        if token:
            h['Authorization'] = f'Bearer {token}'
        h.update(headers or {})
        return g.request('POST', path, body=body, headers=h, timeout=timeout)

    def err_of(data):
        try:
            return json.loads(data).get('error', {})
        except ValueError:
            return {}

    st, h, data = send_me(None, headers={'client-request-id': 'c0ffee00-1111-2222-3333-444455556666'})
    e = err_of(data)
    check('no token: 401 InvalidAuthenticationToken', st == 401 and e.get('code') == 'InvalidAuthenticationToken', f'{st} {data[:300]}')
    check('error shape: innerError request-id/date', UUID_RE.match(e.get('innerError', {}).get('request-id', ''))
          and re.match(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$', e.get('innerError', {}).get('date', '')), repr(e))
    check('headers: request-id uuid, client-request-id echoed', UUID_RE.match(h.get('request-id', ''))
          and h.get('client-request-id') == 'c0ffee00-1111-2222-3333-444455556666', repr(h))
    check('401 carries WWW-Authenticate', h.get('www-authenticate', '').startswith('Bearer'), repr(h))
    tampered = t_user[:-6] + ('AAAAAA' if not t_user.endswith('AAAAAA') else 'BBBBBB')
    st, h, data = send_me(tampered)
    check('tampered signature: 401', st == 401 and err_of(data).get('code') == 'InvalidAuthenticationToken', f'{st} {data[:200]}')
    check('every response: client-request-id generated', UUID_RE.match(h.get('client-request-id', '')), repr(h))
    st, h, data = send_me(t_outlook, path=f'/v1.0/users/{USER}/sendMail')
    check('wrong audience: 401 Invalid audience', st == 401 and err_of(data).get('message') == 'Access token validation failure. Invalid audience.', f'{st} {data[:200]}')
    idp.json('POST', '/_test/settings', body={'access_token_ttl': 1})
    t_short = idp_token(idp, {'client_id': PUB_ID, 'grant_type': 'refresh_token', 'refresh_token': rt, 'scope': f'{G}/Mail.Send'})['access_token']
    idp.json('POST', '/_test/settings', body={'access_token_ttl': 3599})
    time.sleep(2.1)
    st, h, data = send_me(t_short)
    check('expired token: 401 "Access token has expired or is not yet valid."', st == 401
          and err_of(data) .get('message') == 'Access token has expired or is not yet valid.', f'{st} {data[:200]}')

    # --- /me and /users/{id} ---
    st, _, me = g.json('GET', '/v1.0/me', token=t_user)
    check('/me: profile from the token', st == 200 and me.get('userPrincipalName') == USER and me.get('mail') == USER
          and me.get('displayName') == 'Test User' and me.get('id') == USER_OID, f'{st} {me}')
    st, _, d = g.json('GET', '/v1.0/me', token=t_send_only)
    check('/me without User.Read: 403 Authorization_RequestDenied', st == 403 and d['error']['code'] == 'Authorization_RequestDenied', f'{st} {d}')
    st, _, d = g.json('GET', '/v1.0/me', token=t_app)
    check('/me app-only: 400', st == 400 and '/me request is only valid with delegated authentication flow.' == d['error']['message'], f'{st} {d}')
    st, _, d = g.json('GET', f'/v1.0/users/{USER_OID}', token=t_app)
    check('/users/{id} app-only with User.Read.All', st == 200 and d.get('userPrincipalName') == USER, f'{st} {d}')
    st, _, d = g.json('GET', f'/v1.0/users/{USER}?$select=id,mail', token=t_app)
    check('/users/{upn}?$select', st == 200 and set(k for k in d if not k.startswith('@')) == {'id', 'mail'}, f'{st} {d}')
    st, _, d = g.json('GET', f'/v1.0/users/{USER_OID}', token=t_app_send)
    check('/users/{id} app-only without User.Read.All: 403', st == 403, f'{st} {d}')
    st, _, d = g.json('GET', '/v1.0/users/nobody@elsewhere.example', token=t_app)
    check('/users/{unknown}: 404', st == 404 and d['error']['code'] == 'Request_ResourceNotFound', f'{st} {d}')

    # --- sendMail, MIME form ---
    def since():
        st, _, d = g.json('GET', '/_test/stats')
        return d['messages']

    def msgs(after):
        st, _, d = g.json('GET', f'/_test/messages?since={after}')
        return d['messages']

    n0 = since()
    raw = mime(to='Bob <bob@example.com>, carol@example.com', cc='dave@example.com', bcc='hidden@example.com', subject='MIME one')
    st, h, data = send_me(t_user, base64.b64encode(raw))
    check('sendMail MIME (delegated): 202 empty body', st == 202 and data == b'' and UUID_RE.match(h.get('request-id', '')), f'{st} {data[:300]}')
    m = msgs(n0)
    ok = check('sendMail MIME: recorded', len(m) == 1, repr(m)[:300])
    if ok:
        m = m[0]
        check('recorded: mailbox, via, auth', m['mailbox'] == USER and m['via'] == 'sendMail-mime' and m['auth'] == 'delegated', repr(m)[:300])
        check('recorded: recipients from To/Cc/Bcc', m['recipients'] == {'to': ['bob@example.com', 'carol@example.com'], 'cc': ['dave@example.com'], 'bcc': ['hidden@example.com']}
              and m['all_recipients'] == ['bob@example.com', 'carol@example.com', 'dave@example.com', 'hidden@example.com'], repr(m['recipients']))
        check('recorded: decoded MIME bytes identical, sha256', base64.b64decode(m['mime_b64']) == raw and m['sha256'] == sha(raw) and m['size'] == len(raw))
        check('recorded: headers, subject, from', m['subject'] == 'MIME one' and m['from'] == USER and any(x['key'] == 'bcc' for x in m['headers']), repr(m)[:400])
        st, h, rawback = g.request('GET', f'/_test/messages/{m["id"]}/mime')
        check('control: raw MIME download', st == 200 and rawback == raw)
    wrapped = base64.encodebytes(mime(subject='wrapped'))  # 76-column lines with \n
    st, _, data = send_me(t_user, wrapped)
    check('sendMail MIME: line-wrapped base64 accepted', st == 202, f'{st} {data[:200]}')
    st, _, data = send_me(t_user, b'Zm9v!!!bad base64')
    e = err_of(data)
    check('invalid base64: 400 ErrorMimeContentInvalidBase64String', st == 400 and e.get('code') == 'ErrorMimeContentInvalidBase64String'
          and e.get('message') == 'Invalid base64 string for MIME content.', f'{st} {data[:200]}')
    st, _, data = send_me(t_user, base64.b64encode(mime(to=None)))
    check('no recipients: 400 ErrorInvalidRecipients', st == 400 and err_of(data).get('code') == 'ErrorInvalidRecipients', f'{st} {data[:200]}')
    n1 = since()
    st, _, data = send_me(t_user, base64.b64encode(mime(to=None, bcc='only-bcc@example.com')))
    m = msgs(n1)
    check('Bcc-only: 202 and recorded as bcc', st == 202 and m and m[0]['recipients'] == {'to': [], 'cc': [], 'bcc': ['only-bcc@example.com']}, f'{st} {m}')
    st, _, data = send_me(t_read_only)
    check('sendMail without Mail.Send: 403 ErrorAccessDenied', st == 403 and err_of(data).get('code') == 'ErrorAccessDenied', f'{st} {data[:200]}')
    st, _, data = send_me(t_user, ctype='application/octet-stream')
    check('sendMail with another Content-Type: 415', st == 415, f'{st} {data[:200]}')

    # app-only /users/{id|upn}/sendMail
    n1 = since()
    st, _, data = send_me(t_app_send, base64.b64encode(mime(frm=ALICE, subject='app upn')), path=f'/v1.0/users/{ALICE}/sendMail')
    st2, _, data2 = send_me(t_app_send, base64.b64encode(mime(frm=USER, subject='app oid')), path=f'/v1.0/users/{USER_OID}/sendMail')
    m = msgs(n1)
    check('app-only sendMail by UPN and by id: 202', st == 202 and st2 == 202, f'{st} {data[:200]} {st2} {data2[:200]}')
    check('app-only: recorded mailbox and app id', len(m) == 2 and m[0]['mailbox'] == ALICE and m[1]['mailbox'] == USER
          and m[0]['auth'] == 'app' and m[0]['app_id'] == CONF_ID, repr(m)[:400])
    st, _, data = send_me(t_app_send, path='/v1.0/users/ghost@elsewhere.example/sendMail')
    check('app-only to an unknown user: 404 ErrorInvalidUser', st == 404 and err_of(data).get('code') == 'ErrorInvalidUser', f'{st} {data[:200]}')
    st, _, data = send_me(t_user, base64.b64encode(mime(frm=USER)), path=f'/v1.0/users/{USER}/sendMail')
    check('delegated /users/{self}/sendMail: 202', st == 202, f'{st} {data[:200]}')
    st, _, data = send_me(t_user, base64.b64encode(mime(frm=ALICE)), path=f'/v1.0/users/{ALICE}/sendMail')
    check('delegated /users/{other}/sendMail: 403 ErrorAccessDenied', st == 403 and err_of(data).get('code') == 'ErrorAccessDenied', f'{st} {data[:200]}')

    # --- Send As ---
    st, _, data = send_me(t_user, base64.b64encode(mime(frm='shared@contoso.test')))
    e = err_of(data)
    check('From another mailbox: 403 ErrorSendAsDenied, exact text', st == 403 and e.get('code') == 'ErrorSendAsDenied'
          and e.get('message') == SEND_AS_TEXT, f'{st} {data[:300]}')
    st, _, data = send_me(t_app_send, base64.b64encode(mime(frm=ALICE)), path=f'/v1.0/users/{USER}/sendMail')
    check('app-only, From not the mailbox: 403 ErrorSendAsDenied', st == 403 and err_of(data).get('code') == 'ErrorSendAsDenied', f'{st}')
    st, _, mb = g.json('POST', f'/_test/mailboxes/{USER}', body={'send_as': ['shared@contoso.test']})
    check('control: grant send-as', st == 200 and mb.get('send_as') == ['shared@contoso.test'], repr(mb))
    st, _, data = send_me(t_user, base64.b64encode(mime(frm='SHARED@Contoso.Test')))
    check('From a send-as address (case-insensitive): 202', st == 202, f'{st} {data[:200]}')
    st, _, data = send_me(t_user, base64.b64encode(mime(frm='User@CONTOSO.test')))
    check('From the mailbox in other case: 202', st == 202, f'{st} {data[:200]}')

    # --- sendMail, JSON form ---
    n1 = since()
    att = os.urandom(1000)
    body = {'message': {
        'subject': 'JSON one', 'body': {'contentType': 'Text', 'content': 'hi'},
        'toRecipients': [{'emailAddress': {'address': 'frannis@example.com', 'name': 'Frannis'}}],
        'ccRecipients': [{'emailAddress': {'address': 'danas@example.com'}}],
        'bccRecipients': [{'emailAddress': {'address': 'audit@example.com'}}],
        'internetMessageHeaders': [{'name': 'x-mailbridge-id', 'value': '42'}],
        'attachments': [{'@odata.type': '#microsoft.graph.fileAttachment', 'name': 'a.bin', 'contentType': 'application/octet-stream',
                         'contentBytes': base64.b64encode(att).decode()}]},
        'saveToSentItems': False}
    st, _, d = g.json('POST', '/v1.0/me/sendMail', body=body, token=t_user)
    m = msgs(n1)
    check('sendMail JSON: 202', st == 202, f'{st} {d}')
    check('sendMail JSON: recorded recipients, attachment sha256, json', m and m[0]['via'] == 'sendMail-json'
          and m[0]['recipients'] == {'to': ['frannis@example.com'], 'cc': ['danas@example.com'], 'bcc': ['audit@example.com']}
          and m[0]['attachments'][0]['sha256'] == sha(att) and m[0]['json']['message']['subject'] == 'JSON one'
          and m[0]['save_to_sent_items'] is False, repr(m)[:500])
    st, _, d = g.json('POST', '/v1.0/me/sendMail', body={'message': {'subject': 'x'}}, token=t_user)
    check('sendMail JSON without recipients: 400 ErrorInvalidRecipients', st == 400 and d['error']['code'] == 'ErrorInvalidRecipients', f'{st} {d}')
    st, _, d = g.json('POST', '/v1.0/me/sendMail', body={'message': {'toRecipients': [{'emailAddress': {'address': 'a@example.com'}}],
                                                                    'from': {'emailAddress': {'address': ALICE}}}}, token=t_user)
    check('sendMail JSON with a foreign from: 403 ErrorSendAsDenied', st == 403 and d['error']['code'] == 'ErrorSendAsDenied', f'{st} {d}')
    st, _, d = g.json('POST', '/v1.0/me/sendMail', body={'message': {'toRecipients': [{'emailAddress': {'address': 'a@example.com'}}],
                                                                    'internetMessageHeaders': [{'name': 'Foo', 'value': '1'}]}}, token=t_user)
    check('sendMail JSON: header not starting with x-: 400', st == 400 and d['error']['code'] == 'InvalidInternetMessageHeader', f'{st} {d}')

    # --- 4 MB limit ---
    st, _, data = send_me(t_user, b'A' * (4 * 1024 * 1024 + 1))
    e = err_of(data)
    check('request over 4 MB: 413 RequestEntityTooLarge', st == 413 and e.get('code') == 'RequestEntityTooLarge'
          and e.get('message') == 'The maximum request length supported is 4MB.', f'{st} {data[:200]}')
    near = base64.b64encode(mime(subject='near limit', body='x' * 3_100_000))
    st, _, data = send_me(t_user, near)
    check(f'request just under 4 MB ({len(near)} bytes): 202', len(near) <= 4 * 1024 * 1024 and st == 202, f'{st} {data[:200]}')

    # --- large message: draft + upload session + send ---
    big = os.urandom(6 * 1024 * 1024)
    draft_mime = mime(to='big@example.com', bcc='bigbcc@example.com', subject='Six megabytes')
    st, _, data = send_me(t_send_only, base64.b64encode(draft_mime), path='/v1.0/me/messages')
    check('draft without Mail.ReadWrite: 403 ErrorAccessDenied', st == 403 and err_of(data).get('code') == 'ErrorAccessDenied', f'{st} {data[:200]}')
    st, h, data = send_me(t_user, base64.b64encode(draft_mime), path='/v1.0/me/messages')
    draft = json.loads(data) if st == 201 else {}
    check('draft (MIME): 201 with id', st == 201 and draft.get('id') and draft.get('isDraft') is True
          and draft.get('subject') == 'Six megabytes', f'{st} {data[:300]}')
    did = urllib.parse.quote(draft.get('id', 'x'), safe='')
    st, _, sess = g.json('POST', f'/v1.0/me/messages/{did}/attachments/createUploadSession', token=t_user,
                         body={'AttachmentItem': {'attachmentType': 'file', 'name': 'big.bin', 'size': len(big), 'contentType': 'application/octet-stream'}})
    up = (sess or {}).get('uploadUrl', '')
    check('createUploadSession: 201 uploadUrl, nextExpectedRanges ["0-"]', st == 201 and up.startswith(f'{base}/upload/')
          and 'authtoken=' in up and sess.get('nextExpectedRanges') == ['0-'] and sess.get('expirationDateTime'), f'{st} {sess}')
    half = 3 * 1024 * 1024
    put = lambda a, b, extra=None: g.request('PUT', up, body=big[a:b + 1], headers={
        'Content-Type': 'application/octet-stream', 'Content-Range': f'bytes {a}-{b}/{len(big)}', **(extra or {})})
    st, _, data = put(0, half - 1, {'Authorization': f'Bearer {t_user}'})
    check('upload PUT with Authorization: 401', st == 401, f'{st} {data[:200]}')
    st, _, data = put(1000, half - 1)
    check('upload PUT out of order: 400', st == 400, f'{st} {data[:200]}')
    st, _, data = g.request('PUT', up, body=big[:4 * 1024 * 1024 + 1], headers={'Content-Range': f'bytes 0-{4 * 1024 * 1024}/{len(big)}'})
    check('upload chunk over 4 MB: 413', st == 413, f'{st} {data[:200]}')
    st, _, data = put(0, half - 1)
    d = json.loads(data) if data else {}
    check('upload chunk 1: 200 nextExpectedRanges', st == 200 and d.get('nextExpectedRanges') == [str(half)]
          and d.get('NextExpectedRanges') == [str(half)] and d.get('ExpirationDateTime'), f'{st} {data[:300]}')
    st, _, d = g.json('GET', up)
    check('upload session status (GET)', st == 200 and d.get('nextExpectedRanges') == [str(half)], f'{st} {d}')
    st, h, data = put(half, len(big) - 1)
    check('upload last chunk: 201 with Location', st == 201 and '/attachments(' in h.get('location', ''), f'{st} {h} {data[:200]}')
    st, _, data = put(half, len(big) - 1)
    check('upload after completion: 404', st == 404, f'{st}')
    n1 = since()
    st, _, data = send_me(t_read_only, b'', ctype='application/json', path=f'/v1.0/me/messages/{did}/send')
    check('send draft without Mail.Send: 403', st == 403, f'{st} {data[:200]}')
    st, _, data = send_me(t_user, b'', ctype='application/json', path=f'/v1.0/me/messages/{did}/send')
    check('send draft: 202', st == 202 and data == b'', f'{st} {data[:200]}')
    m = msgs(n1)
    if check('draft send recorded', len(m) == 1 and m[0]['via'] == 'draft-send', repr(m)[:300]):
        m = m[0]
        a = [x for x in m['attachments'] if x.get('source') == 'upload']
        check('draft send: uploaded attachment sha256 and size', a and a[0]['sha256'] == sha(big) and a[0]['size'] == len(big)
              and a[0]['name'] == 'big.bin', repr(a)[:300])
        check('draft send: recipients kept (Bcc included)', m['recipients'] == {'to': ['big@example.com'], 'cc': [], 'bcc': ['bigbcc@example.com']}, repr(m['recipients']))
        st, _, rawm = g.request('GET', f'/_test/messages/{m["id"]}/mime')
        parsed = email.message_from_bytes(rawm, policy=email.policy.default)
        parts = [p for p in parsed.iter_attachments()] if parsed.is_multipart() else []
        got = parts[0].get_payload(decode=True) if parts else b''
        check('draft send: assembled MIME carries the 6 MB attachment byte for byte', sha(got) == sha(big)
              and parts[0].get_filename() == 'big.bin' and parsed['Subject'] == 'Six megabytes', f'{len(parts)} parts, {len(got)} bytes')
        st, _, rawa = g.request('GET', f'/_test/messages/{m["id"]}/attachments/{m["attachments"].index(a[0])}')
        check('control: raw attachment download', st == 200 and rawa == big)
    st, _, data = send_me(t_user, b'', ctype='application/json', path=f'/v1.0/me/messages/{did}/send')
    check('draft sent twice: 404 ErrorItemNotFound', st == 404 and err_of(data).get('code') == 'ErrorItemNotFound', f'{st}')

    # app-only JSON draft + one-chunk upload + small attachment + send
    st, _, dr = g.json('POST', f'/v1.0/users/{ALICE}/messages', token=t_app, body={
        'subject': 'app draft', 'toRecipients': [{'emailAddress': {'address': 'x@example.com'}}]})
    check('app-only JSON draft: 201', st == 201 and dr.get('id'), f'{st} {dr}')
    st, _, d = g.json('POST', f'/v1.0/users/{ALICE}/messages', token=t_app_send, body={'subject': 'x'})
    check('app-only draft without Mail.ReadWrite role: 403', st == 403 and d['error']['code'] == 'ErrorAccessDenied', f'{st} {d}')
    did2 = urllib.parse.quote(dr.get('id', 'x'), safe='')
    small = os.urandom(5000)
    st, _, s2 = g.json('POST', f'/v1.0/users/{ALICE}/messages/{did2}/attachments/createUploadSession', token=t_app,
                       body={'AttachmentItem': {'attachmentType': 'file', 'name': 'r.pdf', 'size': len(small), 'contentType': 'application/pdf', 'isInline': False}})
    st, _, data = g.request('PUT', s2.get('uploadUrl', base + '/upload/x'), body=small, headers={'Content-Range': f'bytes 0-{len(small) - 1}/{len(small)}'})
    check('one-chunk upload: 201', st == 201, f'{st} {data[:200]}')
    st, _, d = g.json('POST', f'/v1.0/users/{ALICE}/messages/{did2}/attachments', token=t_app, body={
        '@odata.type': '#microsoft.graph.fileAttachment', 'name': 'note.txt', 'contentBytes': base64.b64encode(b'note').decode()})
    check('small attachment POST: 201', st == 201 and d.get('size') == 4, f'{st} {d}')
    n1 = since()
    st, _, data = g.request('POST', f'/v1.0/users/{ALICE}/messages/{did2}/send', body=b'', headers={'Authorization': f'Bearer {t_app}'})
    m = msgs(n1)
    check('app-only draft send: 202, JSON recorded with attachments', st == 202 and m and m[0]['json']['subject'] == 'app draft'
          and sorted(x['sha256'] for x in m[0]['attachments']) == sorted([sha(small), sha(b'note')]), f'{st} {repr(m)[:400]}')

    # --- faults ---
    def fault(spec):
        st, _, d = g.json('POST', '/_test/faults', body=spec)
        return st == 200

    fb = base64.b64encode(mime())
    cases = [
        ({'kind': 'throttle', 'retry_after': 7}, 429, 'ApplicationThrottled', 'Application is over its MailboxConcurrency limit.', '7'),
        ({'kind': 'unavailable', 'retry_after': 3}, 503, 'serviceNotAvailable', None, '3'),
        ({'kind': 'unavailable'}, 503, 'serviceNotAvailable', None, None),
        ({'kind': 'gateway_timeout'}, 504, None, None, None),
        ({'kind': 'unauthorized'}, 401, 'InvalidAuthenticationToken', 'Access token has expired or is not yet valid.', None),
        ({'kind': 'send_as_denied'}, 403, 'ErrorSendAsDenied', SEND_AS_TEXT, None),
        ({'kind': 'mailbox_not_enabled'}, 404, 'MailboxNotEnabledForRESTAPI', 'REST API is not yet supported for this mailbox.', None),
        ({'kind': 'invalid_user'}, 404, 'ErrorInvalidUser', None, None),
        ({'kind': 'size_exceeded'}, 400, 'ErrorMessageSizeExceeded', None, None),
        ({'kind': 'server_error'}, 500, None, None, None),
        ({'kind': 'access_denied'}, 403, 'ErrorAccessDenied', 'Access to OData is disabled.', None),
        ({'status': 502, 'code': 'BadGateway', 'message': 'custom'}, 502, 'BadGateway', 'custom', None),
    ]
    for spec, want_st, want_code, want_msg, want_ra in cases:
        fault(dict(spec, path_prefix='/v1.0/me/sendMail'))
        st, h, data = send_me(t_user, fb)
        e = err_of(data)
        name = spec.get('kind', f'status {spec.get("status")}')
        check(f'fault {name}: {want_st}', st == want_st and (want_code is None or e.get('code') == want_code)
              and (want_msg is None or e.get('message') == want_msg)
              and (want_ra is None or h.get('retry-after') == want_ra) and (want_ra is not None or 'retry-after' not in h), f'{st} {h.get("retry-after")} {data[:300]}')
    st, _, _ = send_me(t_user, fb)
    check('after faults (count 1 each): normal again', st == 202, f'{st}')
    fault({'kind': 'delay', 'delay_ms': 600})
    t0 = time.monotonic()
    st, _, _ = send_me(t_user, fb)
    check('fault delay 600 ms, then normal answer', st == 202 and time.monotonic() - t0 >= 0.58, f'{st} {time.monotonic() - t0:.3f}')
    fault({'kind': 'reset'})
    reset = False
    try:
        send_me(t_user, fb)
    except (http.client.HTTPException, ConnectionError, ssl.SSLError, OSError):
        reset = True
    check('fault reset: connection closed without an answer', reset)
    fault({'kind': 'hang', 'delay_ms': 3000})
    t0 = time.monotonic()
    timed_out = False
    try:
        send_me(t_user, fb, timeout=0.7)
    except (TimeoutError, OSError):
        timed_out = True
    check('fault hang: client times out', timed_out and time.monotonic() - t0 < 2.5)
    fault({'kind': 'throttle', 'mailbox': ALICE, 'count': 1})
    st1, _, _ = send_me(t_user, fb)
    st2, _, _ = send_me(t_app_send, base64.b64encode(mime(frm=ALICE)), path=f'/v1.0/users/{ALICE}/sendMail')
    check('fault filtered by mailbox: only that mailbox', st1 == 202 and st2 == 429, f'{st1} {st2}')
    fault({'kind': 'unavailable', 'count': -1, 'path_prefix': '/v1.0/me/messages'})
    st1, _, _ = send_me(t_user, fb, path='/v1.0/me/messages')
    st2, _, _ = send_me(t_user, fb, path='/v1.0/me/messages')
    st3, _, _ = send_me(t_user, fb)
    check('fault count -1 + path prefix: repeated, other paths unaffected', st1 == 503 and st2 == 503 and st3 == 202, f'{st1} {st2} {st3}')
    st, _, fl = g.json('GET', '/_test/faults')
    check('control: list faults', st == 200 and len(fl) == 1 and fl[0]['served'] == 2, repr(fl))
    g.json('DELETE', '/_test/faults')
    st1, _, _ = send_me(t_user, fb, path='/v1.0/me/messages')
    check('faults cleared', st1 == 201, f'{st1}')

    # unlicensed mailbox
    g.json('POST', f'/_test/mailboxes/{ALICE}', body={'licensed': False})
    st1, _, d1 = send_me(t_app_send, base64.b64encode(mime(frm=ALICE)), path=f'/v1.0/users/{ALICE}/sendMail')
    st2, _, d2 = send_me(t_alice, base64.b64encode(mime(frm=ALICE)))
    check('unlicensed mailbox: always 404 MailboxNotEnabledForRESTAPI', st1 == 404 and st2 == 404
          and err_of(d1).get('code') == 'MailboxNotEnabledForRESTAPI' and err_of(d2).get('message') == 'REST API is not yet supported for this mailbox.', f'{st1} {st2}')
    g.json('POST', f'/_test/mailboxes/{ALICE}', body={'licensed': True})
    st1, _, _ = send_me(t_alice, base64.b64encode(mime(frm=ALICE)))
    check('licensed again: 202', st1 == 202, f'{st1}')

    # global latency
    g.json('POST', '/_test/settings', body={'latency_ms': 300})
    t0 = time.monotonic()
    st, _, _ = send_me(t_user, fb)
    el = time.monotonic() - t0
    g.json('POST', '/_test/settings', body={'latency_ms': 0})
    check('global latency 300 ms', st == 202 and el >= 0.29, f'{st} {el:.3f}')

    # --- in-flight tracking ---
    g.json('POST', '/_test/inflight/reset')
    st, _, logd = g.json('GET', '/_test/requests')
    seq0 = logd['requests'][-1]['seq'] if logd['requests'] else 0
    g.json('POST', '/_test/settings', body={'latency_ms': 500})
    results = []

    def worker(tok, path, frm):
        try:
            results.append(send_me(tok, base64.b64encode(mime(frm=frm)), path=path)[0])
        except Exception as ex:  # noqa: BLE001
            results.append(repr(ex))

    threads = [threading.Thread(target=worker, args=(t_user, '/v1.0/me/sendMail', USER)) for _ in range(6)]
    threads += [threading.Thread(target=worker, args=(t_app_send, f'/v1.0/users/{ALICE}/sendMail', ALICE)) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.25)
    st, _, mid = g.json('GET', '/_test/inflight')
    for t in threads:
        t.join(15)
    g.json('POST', '/_test/settings', body={'latency_ms': 0})
    st, _, inf = g.json('GET', '/_test/inflight')
    check('concurrent requests all answered', results.count(202) == 8, repr(results))
    check('in flight during the burst: current per mailbox', mid['mailboxes'].get(USER, {}).get('current') == 6
          and mid['mailboxes'].get(ALICE, {}).get('current') == 2, repr(mid))
    check('in flight: max per mailbox 6 / 2, current back to 0', inf['mailboxes'][USER]['max'] == 6 and inf['mailboxes'][USER]['current'] == 0
          and inf['mailboxes'][ALICE]['max'] == 2 and inf['global']['max'] >= 8 and inf['global']['current'] <= 1, repr(inf))
    check('in flight per app id', inf['apps'].get(CONF_ID, {}).get('max') == 2 and inf['apps'].get(PUB_ID, {}).get('max') == 6, repr(inf['apps']))
    st, _, logd = g.json('GET', f'/_test/requests?since={seq0}&mailbox={USER}')
    starts = sorted(r['in_flight_at_start'] for r in logd['requests'] if r['path'] == '/v1.0/me/sendMail')
    check('request log: status, in-flight at start 1..6', starts == [1, 2, 3, 4, 5, 6]
          and all(r['status'] == 202 and r['duration_ms'] >= 490 for r in logd['requests']), repr(logd)[:600])

    # --- fast (sink) mode ---
    g.json('POST', '/_test/settings', body={'fast': True})
    n1 = since()
    raw = mime(subject='fast')
    st, _, _ = send_me(t_user, base64.b64encode(raw))
    m = msgs(n1)
    g.json('POST', '/_test/settings', body={'fast': False})
    check('fast mode: 202, only size + sha256 kept', st == 202 and m and m[0]['sha256'] == sha(raw) and m[0]['size'] == len(raw)
          and 'mime_b64' not in m[0] and 'recipients' not in m[0], repr(m)[:300])
    st, _, stats = g.json('GET', '/_test/stats')
    check('control: stats', st == 200 and stats['messages'] >= 20 and stats['by_mailbox'].get(USER, 0) >= 10, repr(stats)[:300])

    directory_tests(idp, g, t_user)

    # --- reset ---
    st, _, d = g.json('POST', '/_test/reset')
    st2, _, d2 = g.json('GET', '/_test/messages')
    st3, _, d3 = g.json('GET', '/_test/directory')
    check('control: reset', st == 200 and d2['count'] == 0 and d3['counts']['applications'] == 0
          and d3['counts']['servicePrincipals'] == 2, f'{d2["count"]} {d3["counts"]}')


def directory_tests(idp, g, t_user):
    st, _, info = idp.json('GET', '/_test/info')
    graph_scopes = info.get('resources', {}).get(G, {}).get('scopes', [])
    want = ['Application.ReadWrite.All', 'DelegatedPermissionGrant.ReadWrite.All', 'AppRoleAssignment.ReadWrite.All']
    can_mint = all(s in graph_scopes for s in want)
    admin_scope = f'offline_access {G}/User.Read' + (''.join(f' {G}/{s}' for s in want) if can_mint else '')
    t_admin = device_token(idp, PUB_ID, admin_scope, ADMIN)['access_token']
    st, _, me = g.json('GET', '/v1.0/me', token=t_admin)
    check('/me as the admin', st == 200 and me.get('userPrincipalName') == ADMIN and me.get('displayName') == 'Tenant Admin', f'{st} {me}')
    st, _, d = g.json('GET', '/v1.0/applications', token=t_user)
    check('directory without Application.* scope: 403 Authorization_RequestDenied', st == 403
          and d['error']['code'] == 'Authorization_RequestDenied' and d['error']['message'] == 'Insufficient privileges to complete the operation.', f'{st} {d}')
    if not can_mint:
        # the IdP stand-in cannot mint Application.ReadWrite.All etc.: relax the scope check
        g.json('POST', '/_test/settings', body={'directory_any_scope': True})
    A = lambda m, p, body=None, tok=t_admin: g.json(m, p, body=body, token=tok)

    # resource service principals
    st, _, d = A('GET', f"/v1.0/servicePrincipals?$filter=appId eq '{GRAPH_APP}'&$select=id,appId,displayName,appRoles,oauth2PermissionScopes")
    sp_graph = (d or {}).get('value', [{}])[0] if st == 200 and d.get('value') else {}
    scopes = {s['value']: s['id'] for s in sp_graph.get('oauth2PermissionScopes', [])}
    roles = {r['value']: r['id'] for r in sp_graph.get('appRoles', [])}
    check('Graph SP by $filter appId, $select', st == 200 and len(d['value']) == 1 and sp_graph.get('displayName') == 'Microsoft Graph'
          and 'servicePrincipalType' not in sp_graph, f'{st} {repr(d)[:300]}')
    check('Graph SP scopes/roles GUIDs', scopes.get('Mail.Send') == 'e383f46e-2787-4529-855e-0e479a3ffac0'
          and scopes.get('User.Read') == 'e1fe6dd8-ba31-4d61-89e7-88639da4683d' and scopes.get('offline_access') == '7427e0e9-2fba-42fe-b0c0-848c9e6a8182'
          and scopes.get('SMTP.Send') == '258f6531-6087-4cc4-bb90-092c5fb3ed3f' and scopes.get('Mail.ReadWrite') == '024d486e-b451-40bb-833d-3e66d98c5c73'
          and roles.get('Mail.Send') == 'b633e1c5-b582-4048-a93e-9f11b44c7e96' and roles.get('Mail.ReadWrite') == 'e2a3a72e-5f79-4c64-b1b1-878b674786c9', repr((scopes, roles)))
    st, _, d = A('GET', f"/v1.0/servicePrincipals?$filter=appId eq '{EXO_APP}'")
    exo = d['value'][0] if st == 200 and d.get('value') else {}
    check('Exchange SP: SMTP.SendAsApp role', exo.get('displayName') == 'Office 365 Exchange Online'
          and any(r['value'] == 'SMTP.SendAsApp' and UUID_RE.match(r['id']) for r in exo.get('appRoles', [])), repr(exo)[:300])
    st, _, d = A('GET', "/v1.0/servicePrincipals?$filter=startswith(displayName,'M')")
    check('unsupported $filter: 400', st == 400, f'{st}')

    # applications
    app_body = {
        'displayName': 'Mail gateway', 'signInAudience': 'AzureADMyOrg',
        'web': {'redirectUris': ['https://gateway.example.com/oauth/callback']},
        'publicClient': {'redirectUris': ['http://localhost']}, 'isFallbackPublicClient': True,
        'requiredResourceAccess': [{'resourceAppId': GRAPH_APP, 'resourceAccess': [
            {'id': 'e383f46e-2787-4529-855e-0e479a3ffac0', 'type': 'Scope'}, {'id': 'e1fe6dd8-ba31-4d61-89e7-88639da4683d', 'type': 'Scope'}]}]}
    st, _, app = A('POST', '/v1.0/applications', app_body)
    check('create application: 201, id != appId', st == 201 and UUID_RE.match(app.get('id', '')) and UUID_RE.match(app.get('appId', ''))
          and app['id'] != app['appId'] and app['requiredResourceAccess'] == app_body['requiredResourceAccess']
          and app['web']['redirectUris'] == app_body['web']['redirectUris'] and app['passwordCredentials'] == [], f'{st} {repr(app)[:300]}')
    st, _, d = A('POST', '/v1.0/applications', {'displayName': 'x', 'redirectUri': 'oops'})
    check('create application with an unknown property: 400', st == 400 and d['error']['code'] == 'Request_BadRequest', f'{st} {d}')
    st, _, d = A('POST', '/v1.0/applications', {'displayName': 'Other app'})
    st, _, d = A('GET', f"/v1.0/applications?$filter=appId eq '{app.get('appId')}'&$select=id,appId,displayName,passwordCredentials")
    check('list applications by appId', st == 200 and [x['id'] for x in d['value']] == [app.get('id')], f'{st} {d}')
    st, _, d = A('GET', "/v1.0/applications?$filter=displayName eq 'Mail gateway'")
    check('list applications by displayName', st == 200 and len(d['value']) == 1, f'{st} {d}')
    st, _, d = A('GET', "/v1.0/applications?$filter=displayName eq 'No such app'")
    check('list applications: not found = empty value', st == 200 and d['value'] == [], f'{st} {d}')
    st, _, d = A('GET', f"/v1.0/applications(appId='{app.get('appId')}')")
    check("GET /applications(appId='…')", st == 200 and d.get('id') == app.get('id'), f'{st}')
    st, _, d = A('PATCH', f"/v1.0/applications/{app.get('id')}", {'web': {'redirectUris': ['https://gw.example.com/oauth/callback']}, 'isFallbackPublicClient': False})
    st2, _, d2 = A('GET', f"/v1.0/applications/{app.get('id')}")
    check('PATCH application: 204 and applied', st == 204 and d2['web']['redirectUris'] == ['https://gw.example.com/oauth/callback']
          and d2['isFallbackPublicClient'] is False and d2['web']['implicitGrantSettings'] is not None, f'{st} {d2.get("web")}')
    # secrets
    st, _, pw = A('POST', f"/v1.0/applications/{app.get('id')}/addPassword", {'passwordCredential': {'displayName': 'gateway-2026'}})
    days = (time.mktime(time.strptime(pw.get('endDateTime', '1970-01-01T00:00:00.000Z')[:19], '%Y-%m-%dT%H:%M:%S')) - time.time()) / 86400 if st == 200 else 0
    check('addPassword: secretText once, default +2 years', st == 200 and len(pw.get('secretText') or '') == 40 and pw['hint'] == pw['secretText'][:3]
          and UUID_RE.match(pw.get('keyId', '')) and 729 <= days <= 731 and pw['displayName'] == 'gateway-2026', f'{st} {pw} {days}')
    st, _, pw2 = A('POST', f"/v1.0/applications/{app.get('id')}/addPassword", {'passwordCredential': {'displayName': 'short', 'endDateTime': '2027-06-30T00:00:00Z'}})
    check('addPassword with endDateTime', st == 200 and pw2.get('endDateTime', '').startswith('2027-06-30T00:00:00'), f'{st} {pw2}')
    st, _, d = A('GET', f"/v1.0/applications/{app.get('id')}")
    check('passwordCredentials listed without secretText', st == 200 and len(d['passwordCredentials']) == 2
          and all(c['secretText'] is None for c in d['passwordCredentials']), repr(d.get('passwordCredentials')))
    st, _, d = A('POST', f"/v1.0/applications/{app.get('id')}/removePassword", {'keyId': pw2.get('keyId')})
    st2, _, d2 = A('GET', f"/v1.0/applications/{app.get('id')}")
    check('removePassword: 204', st == 204 and [c['keyId'] for c in d2['passwordCredentials']] == [pw.get('keyId')], f'{st}')
    st, _, d = A('POST', f"/v1.0/applications/{app.get('id')}/removePassword", {'keyId': pw2.get('keyId')})
    check('removePassword unknown keyId: 404', st == 404, f'{st}')
    # owners
    admin_oid = 'aaaaaaaa-0000-4000-8000-000000000002'
    ref = lambda oid: {'@odata.id': f'https://graph.microsoft.com/v1.0/directoryObjects/{oid}'}
    st, _, d = A('POST', f"/v1.0/applications/{app.get('id')}/owners/$ref", ref(admin_oid))
    check('add owner ($ref): 204', st == 204, f'{st} {d}')
    st, _, d = A('POST', f"/v1.0/applications/{app.get('id')}/owners/$ref", ref(admin_oid))
    check('add the same owner again: 400', st == 400 and d['error']['code'] == 'Request_BadRequest', f'{st} {d}')
    st, _, d = A('POST', f"/v1.0/applications/{app.get('id')}/owners/$ref", ref('99999999-0000-4000-8000-000000000009'))
    check('add an unknown owner: 404', st == 404, f'{st}')
    A('POST', f"/v1.0/applications/{app.get('id')}/owners/$ref", ref(USER_OID))
    st, _, d = A('DELETE', f"/v1.0/applications/{app.get('id')}/owners/{USER_OID}/$ref")
    st2, _, d2 = A('GET', f"/v1.0/applications/{app.get('id')}/owners")
    check('remove owner: 204; owners list', st == 204 and [o['id'] for o in d2['value']] == [admin_oid]
          and d2['value'][0]['@odata.type'] == '#microsoft.graph.user' and d2['value'][0]['userPrincipalName'] == ADMIN, f'{st} {d2}')
    # service principal
    st, _, sp = A('POST', '/v1.0/servicePrincipals', {'appId': app.get('appId')})
    check('create service principal: 201', st == 201 and sp.get('appId') == app.get('appId') and sp.get('id') not in (app.get('id'), app.get('appId')), f'{st} {sp}')
    st, _, d = A('POST', '/v1.0/servicePrincipals', {'appId': app.get('appId')})
    check('duplicate service principal: 409', st == 409, f'{st} {d}')
    st, _, d = A('POST', '/v1.0/servicePrincipals', {'appId': '12345678-0000-4000-8000-000000000000'})
    check('service principal for an unknown appId: 400', st == 400, f'{st}')
    st, _, d = A('GET', f"/v1.0/servicePrincipals?$filter=appId eq '{app.get('appId')}'")
    check('list service principals by appId', st == 200 and [x['id'] for x in d['value']] == [sp.get('id')], f'{st}')
    # delegated consent
    grant = {'clientId': sp.get('id'), 'consentType': 'AllPrincipals', 'resourceId': sp_graph.get('id'), 'scope': 'Mail.Send User.Read offline_access SMTP.Send'}
    st, _, d = A('POST', '/v1.0/oauth2PermissionGrants', grant, tok=t_user)
    check('grant by a non-admin user: 403', st == 403, f'{st} {d}')
    st, _, gr = A('POST', '/v1.0/oauth2PermissionGrants', grant)
    check('create oauth2PermissionGrant: 201', st == 201 and gr.get('id') and gr.get('principalId') is None and gr.get('scope') == grant['scope'], f'{st} {gr}')
    st, _, d = A('POST', '/v1.0/oauth2PermissionGrants', grant)
    check('duplicate grant: 409', st == 409, f'{st} {d}')
    st, _, d = A('GET', f"/v1.0/oauth2PermissionGrants?$filter=clientId eq '{sp.get('id')}' and consentType eq 'AllPrincipals'")
    check('list grants by clientId and consentType', st == 200 and [x['id'] for x in d['value']] == [gr.get('id')], f'{st} {d}')
    st, _, d = A('PATCH', f"/v1.0/oauth2PermissionGrants/{gr.get('id')}", {'scope': 'Mail.Send User.Read'})
    st2, _, d2 = A('GET', f"/v1.0/oauth2PermissionGrants/{gr.get('id')}")
    check('PATCH grant scope', st == 204 and d2.get('scope') == 'Mail.Send User.Read', f'{st} {d2}')
    st, _, d = A('DELETE', f"/v1.0/oauth2PermissionGrants/{gr.get('id')}")
    st2, _, d2 = A('GET', f"/v1.0/oauth2PermissionGrants?$filter=clientId eq '{sp.get('id')}'")
    check('DELETE grant', st == 204 and d2['value'] == [], f'{st} {d2}')
    A('POST', '/v1.0/oauth2PermissionGrants', grant)
    # application permission
    body = {'principalId': sp.get('id'), 'resourceId': sp_graph.get('id'), 'appRoleId': 'b633e1c5-b582-4048-a93e-9f11b44c7e96'}
    st, _, ar = A('POST', f"/v1.0/servicePrincipals/{sp_graph.get('id')}/appRoleAssignedTo", body)
    check('appRoleAssignedTo: 201', st == 201 and ar.get('principalType') == 'ServicePrincipal' and ar.get('resourceDisplayName') == 'Microsoft Graph'
          and ar.get('appRoleId') == body['appRoleId'], f'{st} {ar}')
    st, _, d = A('POST', f"/v1.0/servicePrincipals/{sp_graph.get('id')}/appRoleAssignedTo", body)
    check('duplicate app role assignment: 400', st == 400, f'{st}')
    st, _, d = A('POST', f"/v1.0/servicePrincipals/{sp_graph.get('id')}/appRoleAssignedTo", dict(body, appRoleId='00000000-1111-2222-3333-444444444444'))
    check('unknown appRoleId: 400', st == 400, f'{st}')
    st, _, d = A('GET', f"/v1.0/servicePrincipals/{sp_graph.get('id')}/appRoleAssignedTo")
    check('list appRoleAssignedTo', st == 200 and [x['id'] for x in d['value']] == [ar.get('id')], f'{st}')
    st, _, d = A('GET', f"/v1.0/servicePrincipals/{sp.get('id')}/appRoleAssignments")
    check('list appRoleAssignments (principal side)', st == 200 and len(d['value']) == 1, f'{st}')
    # control: dump and expire
    st, _, d = g.json('POST', '/_test/directory/expire-secret', body={'appId': app.get('appId')})
    st2, _, dump = g.json('GET', '/_test/directory')
    a = [x for x in dump['applications'] if x['id'] == app.get('id')]
    check('control: directory dump (owners, secrets, grants, assignments, log)', a and a[0]['owners'][0]['userPrincipalName'] == ADMIN
          and a[0]['secrets'][0]['secretText'] == pw.get('secretText') and a[0]['secrets'][0]['expired'] is True
          and dump['counts'] == {'applications': 2, 'servicePrincipals': 3, 'oauth2PermissionGrants': 1, 'appRoleAssignments': 1}
          and any(x['op'] == 'addOwner' for x in dump['log']), repr(dump)[:800])
    g.json('POST', '/_test/settings', body={'directory_any_scope': False})


if __name__ == '__main__':
    common.run_main(main)
