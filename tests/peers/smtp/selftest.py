#!/usr/bin/env python3
"""Self-test of the Exchange Online SMTP AUTH stand-in (tests/peers/smtp).

Python stdlib only. Generates a CA and a server certificate with the openssl CLI, runs `npm ci`
where node_modules is missing, starts the identity-platform stand-in (tests/peers/idp) for real
access tokens (app-only by client credentials, delegated by device code approved through its
control API), starts server.js three times (STARTTLS on a submission port, implicit TLS, and
plaintext with --allow-insecure-auth), drives every rule and every injectable reply with
smtplib, stops what it started by PID and cleans up.

    python3 tests/peers/smtp/selftest.py [-v]

Prints "N passed, M failed" and exits non-zero on failure.
"""
import base64
import email.message
import hashlib
import json
import os
import shutil
import smtplib
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/peers: selftest_common
import selftest_common as common  # noqa: E402
from selftest_common import VERBOSE, check, make_certs, npm_ci, start_server, stop  # noqa: E402

IDP_DIR = os.path.join(os.path.dirname(HERE), 'idp')
DEADLINE = time.monotonic() + 240  # the whole run is bounded

TENANT = '11111111-2222-3333-4444-555555555555'
CONF_ID = '00001111-aaaa-2222-bbbb-3333cccc4444'
CONF_SECRET = 'Zx8Q~test.secret_value-1234567890abcdefghij'
PUB_ID = '55556666-eeee-7777-ffff-8888aaaa9999'
USER = 'user@contoso.test'
DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code'
CLIENT_NAME = 'client.test'

T_AUTH_FAILED = '5.7.3 Authentication unsuccessful [TEST.host]'
T_TENANT = ('5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. '
            'Visit https://aka.ms/smtp_auth_disabled for more information.')
T_MAILBOX = ('5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. '
             'Visit https://aka.ms/smtp_auth_disabled for more information.')
T_SEND_AS = ('5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; '
             'Failed to process message due to a permanent exception with message Cannot submit message')
T_THREAD = '4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded'

started = []  # Popen objects, stopped by PID at the end


def reply_is(name, got, code, text_prefix):
    c, t = got if got else (None, b'')
    t = t.decode('utf-8', 'replace') if isinstance(t, bytes) else str(t)
    return check(name, c == code and t.startswith(text_prefix), f'got {c} {t!r}, want {code} {text_prefix!r}')


# ---------------------------------------------------------------------------------------------
# processes

def start(cmd, log_path):
    p, ready = start_server(cmd, open(log_path, 'a'))
    started.append(p)
    return p, ready


# ---------------------------------------------------------------------------------------------
# HTTP (IdP over HTTPS with our CA; the SMTP peer's control API over plain HTTP)

class Http:
    def __init__(self, base, ca=None):
        self.base = base
        self.ctx = ssl.create_default_context(cafile=ca) if ca else None

    def req(self, method, path, body=None, form=None, raw=False, timeout=15):
        data, h = None, {}
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            h['Content-Type'] = 'application/x-www-form-urlencoded'
        elif body is not None:
            data = json.dumps(body).encode()
            h['Content-Type'] = 'application/json'
        r = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(r, timeout=timeout, context=self.ctx) as resp:
                st, b = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            st, b = e.code, e.read()
        if raw:
            return st, b
        try:
            return st, json.loads(b)
        except ValueError:
            return st, {'_raw': b.decode('utf-8', 'replace')}


# ---------------------------------------------------------------------------------------------
# SMTP helpers

def xoauth2_blob(user, token):
    return base64.b64encode(f'user={user}\x01auth=Bearer {token}\x01\x01'.encode()).decode()


class Peer:
    def __init__(self, port, ctl, ca):
        self.port = port
        self.ctl = ctl
        self.tls = ssl.create_default_context(cafile=ca)

    def connect(self, starttls=True, implicit=False):
        if implicit:
            s = smtplib.SMTP_SSL('127.0.0.1', self.port, local_hostname=CLIENT_NAME, timeout=10, context=self.tls)
        else:
            s = smtplib.SMTP('127.0.0.1', self.port, local_hostname=CLIENT_NAME, timeout=10)
        s.ehlo(CLIENT_NAME)
        if starttls and not implicit:
            s.starttls(context=self.tls)
            s.ehlo(CLIENT_NAME)
        return s

    def api(self, method, path, body=None, **kw):
        return self.ctl.req(method, '/_test/' + path, body, **kw)

    def fault(self, **f):
        st, d = self.api('POST', 'faults', f)
        assert st == 200, d
        return d


def auth_xoauth2(s, user, token, two_step=False):
    blob = xoauth2_blob(user, token)
    if not two_step:
        return s.docmd('AUTH', 'XOAUTH2 ' + blob)
    c, t = s.docmd('AUTH', 'XOAUTH2')
    if c != 334:
        return c, t
    return s.docmd(blob)


def auth_plain(s, user, password):
    return s.docmd('AUTH', 'PLAIN ' + base64.b64encode(f'\0{user}\0{password}'.encode()).decode())


def auth_login(s, user, password):
    c, t = s.docmd('AUTH', 'LOGIN')
    if c != 334:
        return c, t
    c, t = s.docmd(base64.b64encode(user.encode()).decode())
    if c != 334:
        return c, t
    return s.docmd(base64.b64encode(password.encode()).decode())


def transact(s, frm, rcpts, msg):
    """MAIL/RCPT/DATA; returns {'mail': (c,t), 'rcpt': [...], 'data': (c,t)} as far as it got."""
    r = {'mail': s.mail(frm)}
    if r['mail'][0] != 250:
        return r
    r['rcpt'] = [s.rcpt(x) for x in rcpts]
    if not any(c == 250 for c, _ in r['rcpt']):
        return r
    try:
        r['data'] = s.data(msg)
    except smtplib.SMTPDataError as e:
        r['data'] = (e.smtp_code, e.smtp_error)
    return r


def message(frm, to, subject='test', body='Hello.\r\n'):
    return (f'From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject.replace(" ", "-")}-{time.time_ns()}@client.test>\r\n'
            f'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}').encode()


def quit_(s):
    try:
        s.quit()
    except (smtplib.SMTPException, OSError):
        pass


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


# ---------------------------------------------------------------------------------------------
# tokens from the IdP stand-in

def get_tokens(idp):
    t = {}
    st, d = idp.req('POST', f'/{TENANT}/oauth2/v2.0/token', form={
        'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'client_credentials',
        'scope': 'https://outlook.office365.com/.default'})
    check('idp: app-only token for https://outlook.office365.com/.default', st == 200 and d.get('access_token'), repr(d)[:300])
    t['app'] = d.get('access_token', '')
    st, d = idp.req('POST', f'/{TENANT}/oauth2/v2.0/token', form={
        'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'client_credentials',
        'scope': 'https://graph.microsoft.com/.default'})
    t['graph_app'] = d.get('access_token', '')

    idp.req('POST', '/_test/settings', {'device_interval': 1, 'slow_down_increment': 1})
    st, dc = idp.req('POST', f'/{TENANT}/oauth2/v2.0/devicecode', form={
        'client_id': PUB_ID, 'scope': 'https://outlook.office.com/SMTP.Send offline_access'})
    check('idp: device code', st == 200 and dc.get('user_code'), repr(dc)[:300])
    st, a = idp.req('POST', '/_test/device/approve', {'user_code': dc.get('user_code'), 'username': USER})
    check('idp: device code approved via control API', st == 200, repr(a)[:300])
    d = {}
    for _ in range(8):
        time.sleep(1.3)
        st, d = idp.req('POST', f'/{TENANT}/oauth2/v2.0/token', form={
            'grant_type': DEVICE_GRANT, 'client_id': PUB_ID, 'device_code': dc.get('device_code')})
        if d.get('error') not in ('slow_down', 'authorization_pending'):
            break
    check('idp: delegated SMTP.Send token by device code', st == 200 and d.get('access_token') and d.get('refresh_token'), repr(d)[:300])
    t['delegated'] = d.get('access_token', '')

    # a token that expires in 1 s
    idp.req('POST', '/_test/settings', {'access_token_ttl': 1})
    st, d = idp.req('POST', f'/{TENANT}/oauth2/v2.0/token', form={
        'client_id': CONF_ID, 'client_secret': CONF_SECRET, 'grant_type': 'client_credentials',
        'scope': 'https://outlook.office365.com/.default'})
    t['short'] = d.get('access_token', '')
    idp.req('POST', '/_test/settings', {'reset': True})
    return t


# ---------------------------------------------------------------------------------------------
# tests

def test_dialogue(p):
    s = smtplib.SMTP(local_hostname=CLIENT_NAME, timeout=10)
    code, greet = s.connect('127.0.0.1', p.port)
    reply_is('greeting 220 Microsoft ESMTP', (code, greet), 220, 'TEST.host Microsoft ESMTP MAIL Service ready at ')
    s.ehlo(CLIENT_NAME)
    check('EHLO before TLS: STARTTLS offered, no AUTH', s.has_extn('starttls') and not s.has_extn('auth'), repr(s.esmtp_features))
    check('EHLO: ENHANCEDSTATUSCODES, PIPELINING, SIZE', all(s.has_extn(x) for x in ('enhancedstatuscodes', 'pipelining', 'size')), repr(s.esmtp_features))
    reply_is('AUTH before STARTTLS refused', auth_plain(s, 'printer@contoso.test', 'PrinterPass1!'), 530, '5.7.0 Must issue a STARTTLS command first')
    reply_is('AUTH XOAUTH2 before STARTTLS refused', s.docmd('AUTH', 'XOAUTH2'), 530, '5.7.0 Must issue a STARTTLS command first')
    reply_is('MAIL before AUTH (no TLS) -> 530 5.7.57', s.mail('printer@contoso.test'), 530, '5.7.57 Client not authenticated to send mail')
    code, _ = s.docmd('STARTTLS')
    check('STARTTLS 220', code == 220)
    s.sock = p.tls.wrap_socket(s.sock, server_hostname='127.0.0.1')
    s.file = None
    s.ehlo_resp = None
    s.esmtp_features = {}
    s.does_esmtp = False
    s.ehlo(CLIENT_NAME)
    check('EHLO after TLS: AUTH PLAIN LOGIN XOAUTH2, no STARTTLS',
          s.has_extn('auth') and set(s.esmtp_features['auth'].split()) == {'PLAIN', 'LOGIN', 'XOAUTH2'} and not s.has_extn('starttls'),
          repr(s.esmtp_features))
    reply_is('MAIL before AUTH (TLS) -> 530 5.7.57', s.mail('printer@contoso.test'), 530, '5.7.57 Client not authenticated to send mail')
    reply_is('RCPT before AUTH -> 530 5.7.57', s.rcpt('x@contoso.test'), 530, '5.7.57')
    reply_is('unknown mechanism -> 504 5.7.4', s.docmd('AUTH', 'CRAM-MD5'), 504, '5.7.4 Unrecognized authentication type')
    quit_(s)


def test_xoauth2(p, tok):
    # the blob encoding itself (Microsoft's test vector)
    check('XOAUTH2 test vector', xoauth2_blob('test@contoso.onmicrosoft.com', 'EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA') ==
          'dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ==')

    # delegated, one line and two-step
    for two in (False, True):
        form = 'two-step' if two else 'one-line'
        s = p.connect()
        reply_is(f'XOAUTH2 delegated {form}: 235', auth_xoauth2(s, USER, tok['delegated'], two), 235, '2.7.0 Authentication successful')
        r = transact(s, USER, ['rcpt@example.test'], message(USER, 'rcpt@example.test', f'delegated {form}'))
        reply_is(f'XOAUTH2 delegated {form}: MAIL 250 2.1.0 Sender OK', r.get('mail'), 250, '2.1.0 Sender OK')
        reply_is(f'XOAUTH2 delegated {form}: RCPT 250 2.1.5 Recipient OK', (r.get('rcpt') or [None])[0], 250, '2.1.5 Recipient OK')
        reply_is(f'XOAUTH2 delegated {form}: DATA 250 2.0.0 OK', r.get('data'), 250, '2.0.0 OK <')
        quit_(s)
    st, msgs = p.api('GET', 'messages?raw=0')
    m = msgs[-1] if msgs else {}
    check('recorded: mailbox, mechanism, kind, identity, tls', m.get('mailbox') == USER and m.get('auth_mechanism') == 'XOAUTH2'
          and m.get('auth_kind') == 'delegated' and m.get('auth_identity') == USER and m.get('tls') is True, repr(m)[:500])

    # app-only: any mailbox
    s = p.connect()
    reply_is('XOAUTH2 app-only one-line (any mailbox): 235', auth_xoauth2(s, 'alice@contoso.test', tok['app']), 235, '2.7.0')
    r = transact(s, 'alice@contoso.test', ['rcpt@example.test'], message('alice@contoso.test', 'rcpt@example.test', 'app only'))
    reply_is('XOAUTH2 app-only: message accepted', r.get('data'), 250, '2.0.0 OK')
    quit_(s)
    s = p.connect()
    reply_is('XOAUTH2 app-only two-step: 235', auth_xoauth2(s, 'admin@contoso.test', tok['app'], True), 235, '2.7.0')
    quit_(s)
    st, msgs = p.api('GET', 'messages?raw=0')
    check('recorded app-only: kind app, identity = appid', msgs and msgs[-1].get('auth_kind') == 'app'
          and msgs[-1].get('auth_identity') == CONF_ID and msgs[-1].get('mailbox') == 'alice@contoso.test', repr(msgs[-1:])[:400])

    # app-only restricted to granted mailboxes
    p.api('POST', 'settings', {'app_mailboxes': {CONF_ID: ['alice@contoso.test']}})
    s = p.connect()
    reply_is('XOAUTH2 app-only granted mailbox: 235', auth_xoauth2(s, 'alice@contoso.test', tok['app']), 235, '2.7.0')
    quit_(s)
    s = p.connect()
    reply_is('XOAUTH2 app-only mailbox not granted: 535 5.7.3', auth_xoauth2(s, 'admin@contoso.test', tok['app']), 535, T_AUTH_FAILED)
    quit_(s)
    p.api('POST', 'settings', {'app_mailboxes': {'99999999-0000-0000-0000-000000000000': ['*']}})
    s = p.connect()
    reply_is('XOAUTH2 app not registered in Exchange: 535 5.7.3', auth_xoauth2(s, 'alice@contoso.test', tok['app']), 535, T_AUTH_FAILED)
    quit_(s)
    p.api('POST', 'settings', {'app_mailboxes': None})

    # failures
    bad = [
        ('wrong user= (delegated)', 'alice@contoso.test', tok['delegated'], 'user_mismatch'),
        ('expired token', 'alice@contoso.test', tok['short'], 'token_expired'),
        ('garbage token', USER, 'garbage.token.value', 'malformed_token'),
        ('tampered signature', USER, tok['delegated'][:-6] + ('AAAAAA' if not tok['delegated'].endswith('AAAAAA') else 'BBBBBB'), 'bad_signature'),
        ('Graph token (wrong audience)', 'alice@contoso.test', tok['graph_app'], 'wrong_audience'),
    ]
    time.sleep(1.2)  # the short token (ttl 1 s) has expired by now
    for name, user, token, reason in bad:
        for two in (False, True):
            p.api('POST', 'stats/reset')
            s = p.connect()
            reply_is(f'XOAUTH2 {name} ({"two-step" if two else "one-line"}): 535 5.7.3', auth_xoauth2(s, user, token, two), 535, T_AUTH_FAILED)
            reply_is(f'XOAUTH2 {name}: session still unauthenticated', s.mail(user), 530, '5.7.57')
            quit_(s)
            st, stats = p.api('GET', 'stats')
            check(f'XOAUTH2 {name}: stats reason {reason}', stats.get('auth_failures_by_reason') == {reason: 1}, repr(stats.get('auth_failures_by_reason')))
    s = p.connect()
    reply_is('XOAUTH2 blob not base64: 535 5.7.3', s.docmd('AUTH', 'XOAUTH2 !!notbase64!!'), 535, T_AUTH_FAILED)
    reply_is('XOAUTH2 blob without ^A^A: 535 5.7.3',
             s.docmd('AUTH', 'XOAUTH2 ' + base64.b64encode(f'user={USER} auth=Bearer {tok["delegated"]}'.encode()).decode()), 535, T_AUTH_FAILED)
    long_blob = xoauth2_blob(USER, 'x' * 6000)
    reply_is(f'XOAUTH2 one-line blob of {len(long_blob)} chars read whole: 535 5.7.3', s.docmd('AUTH', 'XOAUTH2 ' + long_blob), 535, T_AUTH_FAILED)
    reply_is('XOAUTH2 long blob: connection still in sync', s.docmd('NOOP'), 250, '2.0.0')
    c, _ = s.docmd('AUTH', 'XOAUTH2')
    reply_is('XOAUTH2 two-step aborted with *', s.docmd('*') if c == 334 else (c, b''), 501, '5.7.0')
    quit_(s)

    # shared mailbox: delegated token + user=shared mailbox needs Full Access
    s = p.connect()
    reply_is('XOAUTH2 delegated user=shared mailbox without Full Access: 535', auth_xoauth2(s, 'shared@contoso.test', tok['delegated']), 535, T_AUTH_FAILED)
    quit_(s)
    p.api('POST', 'full_access', {'user': USER, 'mailboxes': ['shared@contoso.test']})
    s = p.connect()
    reply_is('XOAUTH2 delegated user=shared mailbox with Full Access: 235', auth_xoauth2(s, 'shared@contoso.test', tok['delegated']), 235, '2.7.0')
    r = transact(s, 'shared@contoso.test', ['rcpt@example.test'], message('shared@contoso.test', 'rcpt@example.test', 'shared'))
    reply_is('shared mailbox sends as itself', r.get('data'), 250, '2.0.0 OK')
    quit_(s)

    # no token in the transcripts
    st, sess = p.api('GET', 'sessions?all=1&transcript=1')
    text = json.dumps(sess)
    check('transcripts redact the XOAUTH2 blob', 'C: AUTH XOAUTH2 /* secured */' in text and tok['delegated'][:40] not in text
          and xoauth2_blob(USER, tok['delegated'])[:40] not in text)


def test_basic(p):
    s = p.connect()
    reply_is('AUTH PLAIN good: 235', auth_plain(s, 'printer@contoso.test', 'PrinterPass1!'), 235, '2.7.0 Authentication successful')
    r = transact(s, 'printer@contoso.test', ['a@example.test'], message('printer@contoso.test', 'a@example.test', 'plain'))
    reply_is('AUTH PLAIN: message accepted', r.get('data'), 250, '2.0.0 OK')
    quit_(s)
    s = p.connect()
    reply_is('AUTH LOGIN good: 235', auth_login(s, 'printer@contoso.test', 'PrinterPass1!'), 235, '2.7.0')
    quit_(s)
    s = p.connect()
    s.user, s.password = 'printer@contoso.test', 'PrinterPass1!'
    try:
        res = s.auth('LOGIN', s.auth_login, initial_response_ok=True)  # AUTH LOGIN <user> form
    except smtplib.SMTPException as e:
        res = (getattr(e, 'smtp_code', None), getattr(e, 'smtp_error', b''))
    reply_is('AUTH LOGIN with initial response: 235', res, 235, '2.7.0')
    quit_(s)
    for name, fn, user, pw in [('PLAIN wrong password', auth_plain, 'printer@contoso.test', 'nope'),
                               ('LOGIN wrong password', auth_login, 'printer@contoso.test', 'nope'),
                               ('PLAIN unknown user', auth_plain, 'nobody@contoso.test', 'x'),
                               ('PLAIN personal account, normal password (app password required)', auth_plain, 'person@outlook.test', 'OutlookPass1!')]:
        s = p.connect()
        reply_is(f'AUTH {name}: 535 5.7.3', fn(s, user, pw), 535, T_AUTH_FAILED)
        quit_(s)
    s = p.connect()
    reply_is('AUTH LOGIN personal account, app password: 235', auth_login(s, 'person@outlook.test', 'abcdefghijklmnop'), 235, '2.7.0')
    r = transact(s, 'person@outlook.test', ['a@example.test'], message('person@outlook.test', 'a@example.test', 'personal'))
    reply_is('personal account: message accepted', r.get('data'), 250, '2.0.0 OK')
    quit_(s)
    st, msgs = p.api('GET', 'messages?raw=0')
    check('recorded: LOGIN, app_password', msgs and msgs[-1].get('auth_mechanism') == 'LOGIN' and msgs[-1].get('auth_kind') == 'app_password', repr(msgs[-1:])[:300])
    s = p.connect()
    reply_is('AUTH twice -> 503', (auth_plain(s, 'printer@contoso.test', 'PrinterPass1!'), auth_plain(s, 'printer@contoso.test', 'PrinterPass1!'))[1], 503, '5.5.1')
    quit_(s)
    # users added at run time
    p.api('POST', 'users', {'username': 'scanner@contoso.test', 'password': 'ScanPass1!'})
    s = p.connect()
    reply_is('user added via control API: 235', auth_plain(s, 'scanner@contoso.test', 'ScanPass1!'), 235, '2.7.0')
    quit_(s)


def test_send_as(p, tok):
    # default stage: DATA, 554 5.2.0
    s = p.connect()
    auth_plain(s, 'printer@contoso.test', 'PrinterPass1!')
    r = transact(s, 'boss@contoso.test', ['a@example.test'], message('boss@contoso.test', 'a@example.test', 'sendas'))
    reply_is('Send As (stage data): MAIL accepted', r.get('mail'), 250, '2.1.0')
    reply_is('Send As (stage data): 554 5.2.0 SendAsDenied at end of DATA', r.get('data'), 554, T_SEND_AS)
    # header From differs from an allowed envelope sender
    r = transact(s, 'printer@contoso.test', ['a@example.test'], message('boss@contoso.test', 'a@example.test', 'hdrfrom'))
    reply_is('Send As: header From not allowed -> 554 5.2.0', r.get('data'), 554, T_SEND_AS)
    # the session continues after a rejected message
    r = transact(s, 'printer@contoso.test', ['a@example.test'], message('printer@contoso.test', 'a@example.test', 'after'))
    reply_is('same session, own address: accepted', r.get('data'), 250, '2.0.0 OK')
    quit_(s)
    # stage MAIL
    p.api('POST', 'settings', {'send_as_stage': 'mail'})
    s = p.connect()
    auth_xoauth2(s, USER, tok['delegated'])
    r = transact(s, 'boss@contoso.test', ['a@example.test'], message('boss@contoso.test', 'a@example.test', 'x'))
    reply_is('Send As (stage mail): 550 5.7.60', r.get('mail'), 550, '5.7.60 SMTP; Client does not have permissions to send as this sender')
    # grant Send As
    p.api('POST', 'send_as', {'mailbox': USER, 'addresses': ['boss@contoso.test']})
    r = transact(s, 'boss@contoso.test', ['a@example.test'], message('boss@contoso.test', 'a@example.test', 'granted'))
    reply_is('Send As granted via control API: accepted', r.get('data'), 250, '2.0.0 OK')
    quit_(s)
    p.api('POST', 'settings', {'send_as_stage': 'data', 'send_as': {}})
    # user with send_as ["*"] (generic relay)
    s = p.connect()
    auth_plain(s, 'relay@contoso.test', 'RelayPass1!')
    r = transact(s, 'anyone@elsewhere.test', ['a@example.test'], message('anyone@elsewhere.test', 'a@example.test', 'relay'))
    reply_is('relay user with send_as ["*"]: any sender accepted', r.get('data'), 250, '2.0.0 OK')
    quit_(s)


def test_recorded_bytes(p):
    msg = email.message.EmailMessage()
    msg['From'] = 'printer@contoso.test'
    msg['To'] = 'to@example.test'
    msg['Subject'] = 'bytes check'
    msg['Message-ID'] = '<bytes-check@client.test>'
    msg.set_content('line one\n.line starting with a dot\n..two dots\nend\n')
    blob = bytes(range(256)) * 800
    msg.add_attachment(blob, maintype='application', subtype='octet-stream', filename='blob.bin')
    raw = msg.as_bytes(policy=msg.policy.clone(linesep='\r\n'))
    assert raw.endswith(b'\r\n')
    s = p.connect()
    auth_plain(s, 'printer@contoso.test', 'PrinterPass1!')
    r = transact(s, 'printer@contoso.test', ['to@example.test', 'bcc@example.test'], raw)
    reply_is('bytes message accepted, reply names the Message-ID', r.get('data'), 250, '2.0.0 OK <bytes-check@client.test> [Hostname=TEST.host]')
    quit_(s)
    st, msgs = p.api('GET', 'messages')
    m = msgs[-1] if msgs else {}
    got = base64.b64decode(m.get('raw_b64', ''))
    check('recorded raw bytes == sent bytes (dot-unstuffed)', got == raw, f'{len(got)} vs {len(raw)}')
    check('recorded envelope from / recipients', m.get('envelope_from') == 'printer@contoso.test'
          and m.get('recipients') == ['to@example.test', 'bcc@example.test'], repr(m.get('recipients')))
    check('recorded size, sha256, time', m.get('size') == len(raw) and m.get('sha256') == hashlib.sha256(raw).hexdigest() and m.get('time'))
    att = ((m.get('parsed') or {}).get('attachments') or [{}])[0]
    check('parsed: subject, attachment intact', m['parsed']['subject'] == 'bytes check' and att.get('size') == len(blob)
          and att.get('sha256') == hashlib.sha256(blob).hexdigest(), repr(m.get('parsed'))[:400])
    st, b = p.api('GET', f'messages/{m.get("id")}/raw', raw=True)
    check('GET messages/{id}/raw', st == 200 and b == raw)
    st, one = p.api('GET', f'messages/{m.get("id")}')
    check('GET messages/{id}', st == 200 and one.get('id') == m.get('id') and one.get('raw_b64'))
    st, lst = p.api('GET', 'messages?raw=0&mailbox=printer@contoso.test')
    check('GET messages?raw=0&mailbox=', st == 200 and lst and all('raw_b64' not in x and x['mailbox'] == 'printer@contoso.test' for x in lst))


def test_faults(p):
    def plain(s):
        return auth_plain(s, 'printer@contoso.test', 'PrinterPass1!')

    # AUTH stage
    for reply, code, text in [('auth_disabled_tenant', 535, T_TENANT), ('auth_disabled_mailbox', 535, T_MAILBOX),
                              ('auth_failed', 535, T_AUTH_FAILED),
                              ('basic_auth_disabled', 535, '5.7.139 Authentication unsuccessful, basic authentication is disabled'),
                              ('security_defaults', 535, "5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy"),
                              ('basic_auth_not_supported', 550, '5.7.30 Basic authentication is not supported for Client Submission.')]:
        p.fault(stage='auth', reply=reply)
        s = p.connect()
        reply_is(f'fault auth {reply}: {code}', plain(s), code, text)
        reply_is(f'fault auth {reply}: served once, next AUTH ok', plain(s), 235, '2.7.0')
        quit_(s)
    # mailbox filter and count
    p.fault(stage='auth', reply='auth_disabled_mailbox', mailbox='person@outlook.test', count=2)
    s = p.connect()
    reply_is('fault auth mailbox filter: other mailbox unaffected', plain(s), 235, '2.7.0')
    quit_(s)
    for i in (1, 2):
        s = p.connect()
        reply_is(f'fault auth mailbox filter: that mailbox ({i}/2)', auth_plain(s, 'person@outlook.test', 'abcdefghijklmnop'), 535, T_MAILBOX)
        quit_(s)
    s = p.connect()
    reply_is('fault auth count=2 exhausted', auth_plain(s, 'person@outlook.test', 'abcdefghijklmnop'), 235, '2.7.0')
    quit_(s)
    # mechanism filter
    p.fault(stage='auth', reply='basic_auth_not_supported', mechanism='LOGIN')
    s = p.connect()
    reply_is('fault auth mechanism=LOGIN: PLAIN unaffected', plain(s), 235, '2.7.0')
    quit_(s)
    s = p.connect()
    reply_is('fault auth mechanism=LOGIN: LOGIN gets 550 5.7.30', auth_login(s, 'printer@contoso.test', 'PrinterPass1!'), 550, '5.7.30')
    quit_(s)

    # RCPT stage: per-recipient failure
    p.fault(stage='rcpt', reply='recipient_not_found', addresses=['ghost@contoso.test'], count=-1)
    s = p.connect()
    plain(s)
    r = transact(s, 'printer@contoso.test', ['ok@example.test', 'ghost@contoso.test'], message('printer@contoso.test', 'ok@example.test', 'rcpt'))
    reply_is('fault rcpt: good recipient 250', r['rcpt'][0], 250, '2.1.5')
    reply_is('fault rcpt: 550 5.1.10 RESOLVER.ADR.RecipientNotFound', r['rcpt'][1], 550,
             '5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient ghost@contoso.test not found by SMTP address lookup')
    reply_is('fault rcpt: message accepted for the rest', r.get('data'), 250, '2.0.0 OK')
    quit_(s)
    st, msgs = p.api('GET', 'messages?raw=0')
    check('fault rcpt: recorded recipients exclude the failed one', msgs and msgs[-1]['recipients'] == ['ok@example.test'], repr(msgs[-1:])[:300])
    p.api('DELETE', 'faults')

    # DATA stage
    for reply, code, text in [('thread_limit', 432, T_THREAD),
                              ('temp_error', 451, '4.7.0 Temporary server error'),
                              ('send_as_denied', 554, T_SEND_AS),
                              ('quota_exceeded', 550, '5.2.2 '),
                              ('bad_outbound_sender', 550, '5.1.8 Access denied, bad outbound sender'),
                              ('access_denied_temp', 451, '4.7.500 Access denied, please try again later'),
                              ('concurrent_connection_limit', 432, '4.3.2 concurrent connection limit exceeded')]:
        p.fault(stage='data', reply=reply)
        s = p.connect()
        plain(s)
        r = transact(s, 'printer@contoso.test', ['a@example.test'], message('printer@contoso.test', 'a@example.test', reply))
        reply_is(f'fault data {reply}: {code}', r.get('data'), code, text)
        r = transact(s, 'printer@contoso.test', ['a@example.test'], message('printer@contoso.test', 'a@example.test', reply + ' again'))
        reply_is(f'fault data {reply}: next message accepted', r.get('data'), 250, '2.0.0')
        quit_(s)
    p.fault(stage='data', reply={'code': 452, 'text': '4.3.1 Insufficient system resources'})
    s = p.connect()
    plain(s)
    r = transact(s, 'printer@contoso.test', ['a@example.test'], message('printer@contoso.test', 'a@example.test', 'custom'))
    reply_is('fault data custom reply', r.get('data'), 452, '4.3.1 Insufficient system resources')
    quit_(s)
    # MAIL stage
    p.fault(stage='mail', reply='thread_limit')
    s = p.connect()
    plain(s)
    reply_is('fault mail thread_limit: 432 4.3.2 at MAIL', s.mail('printer@contoso.test'), 432, T_THREAD)
    quit_(s)

    # connect stage: 421 greeting, and a greeting delay
    p.fault(stage='connect', reply='service_unavailable')
    try:
        p.connect()
        res = None
    except smtplib.SMTPConnectError as e:
        res = (e.smtp_code, e.smtp_error)
    reply_is('fault connect: 421 4.3.2 greeting', res, 421, '4.3.2 Service not available')
    p.fault(stage='connect', delay_ms=1500)
    t0 = time.monotonic()
    s = p.connect()
    dt = time.monotonic() - t0
    check('fault connect delay_ms=1500: greeting delayed', 1.4 <= dt < 5, f'{dt:.2f}s')
    quit_(s)
    # a delay before a reply (MAIL), and before the final DATA reply
    s = p.connect()
    plain(s)
    p.fault(stage='mail', delay_ms=1000)
    p.fault(stage='data', delay_ms=1000)
    t0 = time.monotonic()
    c, _ = s.mail('printer@contoso.test')
    dt1 = time.monotonic() - t0
    s.rcpt('a@example.test')
    t0 = time.monotonic()
    c2, _ = s.data(message('printer@contoso.test', 'a@example.test', 'slow'))
    dt2 = time.monotonic() - t0
    check('fault mail delay_ms=1000: reply delayed, then 250', c == 250 and 0.9 <= dt1 < 4, f'{c} {dt1:.2f}s')
    check('fault data delay_ms=1000: final reply delayed, then 250', c2 == 250 and 0.9 <= dt2 < 4, f'{c2} {dt2:.2f}s')
    quit_(s)

    # drop mid-DATA
    st, before = p.api('GET', 'messages?raw=0')
    p.fault(stage='data', drop=True, after_bytes=100)
    s = p.connect()
    plain(s)
    s.mail('printer@contoso.test')
    s.rcpt('a@example.test')
    try:
        s.data(message('printer@contoso.test', 'a@example.test', 'drop', 'x' * 200000 + '\r\n'))
        res = 'no error'
    except (smtplib.SMTPServerDisconnected, ConnectionError, OSError) as e:
        res = type(e).__name__
    check('fault data drop: connection dropped mid-DATA', res != 'no error', res)
    st, after = p.api('GET', 'messages?raw=0')
    check('fault data drop: nothing recorded', len(after) == len(before))
    # drop at AUTH
    p.fault(stage='auth', drop=True)
    s = p.connect()
    try:
        res = plain(s)
    except (smtplib.SMTPServerDisconnected, ConnectionError, OSError) as e:
        res = type(e).__name__
    check('fault auth drop: connection closed without reply', res in ('SMTPServerDisconnected', 'ConnectionResetError', 'BrokenPipeError'), repr(res))

    st, fl = p.api('GET', 'faults')
    check('GET faults lists served counts', st == 200 and fl and all('served' in f for f in fl))
    st, bad = p.api('POST', 'faults', {'stage': 'nope'})
    check('POST faults: bad stage -> 400', st == 400 and 'stage' in bad.get('error', ''))
    st, bad = p.api('POST', 'faults', {'stage': 'data', 'reply': 'no_such_reply'})
    check('POST faults: unknown reply name -> 400', st == 400)
    st, _ = p.api('DELETE', 'faults')
    st, fl = p.api('GET', 'faults')
    check('DELETE faults', fl == [])
    st, stats = p.api('GET', 'stats')
    check('stats: faults_served, dropped_connections, replies_by_code', stats.get('faults_served', 0) >= 20
          and stats.get('dropped_connections') == 2 and stats.get('replies_by_code', {}).get('535', 0) >= 4, repr(stats)[:600])


def test_session_limit(p, tok):
    p.api('POST', 'settings', {'max_sessions_per_mailbox': 3})
    p.api('POST', 'stats/reset')
    # four concurrent sessions, AUTH at the same moment
    barrier = threading.Barrier(4, timeout=20)
    results, conns = [None] * 4, [None] * 4

    def worker(i):
        try:
            s = p.connect()
            conns[i] = s
            barrier.wait()
            results[i] = auth_xoauth2(s, USER, tok['delegated'])
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            results[i] = (None, repr(e).encode())

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    codes = sorted(str(r[0]) for r in results if r)
    check('limit 3, stage auth: 4 concurrent AUTH -> three 235, one 432', codes == ['235', '235', '235', '432'], repr(results))
    loser = next((i for i, r in enumerate(results) if r and r[0] == 432), None)
    if loser is not None:
        reply_is('limit: the 432 text', results[loser], 432, T_THREAD)
    st, stats = p.api('GET', 'stats')
    mb = stats.get('mailboxes', {}).get(USER, {})
    check('limit: stats current 3, max_seen 3, max_attempted 4, limit_rejections 1',
          mb.get('current') == 3 and mb.get('max_seen') == 3 and mb.get('max_attempted') == 4 and mb.get('limit_rejections') == 1, repr(mb))
    # one closes, the refused session retries AUTH on the same connection and gets in
    winner = next(i for i in range(4) if i != loser)
    quit_(conns[winner])
    wait_for(lambda: p.api('GET', 'stats')[1]['mailboxes'][USER]['current'] == 2)
    if loser is not None:
        reply_is('limit: after one session closed, retry AUTH -> 235', auth_xoauth2(conns[loser], USER, tok['delegated']), 235, '2.7.0')
    # other mailboxes are counted separately
    s = p.connect()
    reply_is('limit: another mailbox unaffected', auth_xoauth2(s, 'alice@contoso.test', tok['app']), 235, '2.7.0')
    quit_(s)
    for i, s in enumerate(conns):
        if i != winner and s:
            quit_(s)
    wait_for(lambda: p.api('GET', 'stats')[1]['mailboxes'][USER]['current'] == 0)
    st, stats = p.api('GET', 'stats')
    check('limit: current back to 0 after QUIT', stats['mailboxes'][USER]['current'] == 0, repr(stats['mailboxes'][USER]))

    # stage mail: AUTH succeeds, the 4th session (by AUTH order) gets 432 at MAIL FROM
    p.api('POST', 'settings', {'session_limit_stage': 'mail'})
    p.api('POST', 'stats/reset')
    conns = []
    for i in range(4):
        s = p.connect()
        auth_plain(s, 'printer@contoso.test', 'PrinterPass1!')
        conns.append(s)
    mails = [s.mail('printer@contoso.test') for s in conns]
    check('limit 3, stage mail: sessions 1-3 MAIL 250', [m[0] for m in mails[:3]] == [250, 250, 250], repr(mails))
    reply_is('limit 3, stage mail: session 4 MAIL 432 4.3.2', mails[3], 432, T_THREAD)
    st, stats = p.api('GET', 'stats')
    mb = stats['mailboxes'].get('printer@contoso.test', {})
    check('limit stage mail: max_seen 4, in_transaction 3', mb.get('max_seen') == 4 and mb.get('in_transaction') == 3 and mb.get('max_in_transaction') == 3, repr(mb))
    st, sess = p.api('GET', 'sessions')
    check('GET sessions: 4 open for printer', len([x for x in sess['open'] if x['mailbox'] == 'printer@contoso.test']) == 4, repr(sess)[:300])
    for s in conns:
        quit_(s)
    p.api('POST', 'settings', {'max_sessions_per_mailbox': 0, 'session_limit_stage': 'auth'})


def test_other_listeners(tmp, ca, cert, key, jwks, tok):
    # implicit TLS (smtps-style)
    proc, ready = start(['node', os.path.join(HERE, 'server.js'), '--port', '0', '--control-port', '0', '--cert', cert,
                         '--key', key, '--jwks-url', jwks, '--ca', ca, '--implicit-tls'], os.path.join(tmp, 'smtp-implicit.log'))
    if check('implicit TLS: ready line', ready.get('ready') is True and ready.get('implicit_tls') is True, repr(ready)):
        p = Peer(ready['smtp_port'], Http(ready['control_url']), ca)
        s = p.connect(implicit=True)
        check('implicit TLS: AUTH advertised at once, no STARTTLS', s.has_extn('auth') and not s.has_extn('starttls'), repr(s.esmtp_features))
        reply_is('implicit TLS: XOAUTH2 app-only 235', auth_xoauth2(s, 'alice@contoso.test', tok['app']), 235, '2.7.0')
        r = transact(s, 'alice@contoso.test', ['a@example.test'], message('alice@contoso.test', 'a@example.test', 'smtps'))
        reply_is('implicit TLS: message accepted', r.get('data'), 250, '2.0.0 OK')
        quit_(s)
        st, msgs = p.api('GET', 'messages?raw=0')
        check('implicit TLS: recorded tls=true', msgs and msgs[-1]['tls'] is True)
    stop(proc)
    # plaintext, TLS explicitly turned off (generic smtp provider with tls = no)
    proc, ready = start(['node', os.path.join(HERE, 'server.js'), '--port', '0', '--control-port', '0', '--cert', cert,
                         '--key', key, '--no-starttls', '--allow-insecure-auth'], os.path.join(tmp, 'smtp-plain.log'))
    if check('plaintext: ready line', ready.get('ready') is True and ready.get('starttls') is False, repr(ready)):
        p = Peer(ready['smtp_port'], Http(ready['control_url']), ca)
        s = p.connect(starttls=False)
        check('plaintext: AUTH advertised, no STARTTLS', s.has_extn('auth') and not s.has_extn('starttls'), repr(s.esmtp_features))
        reply_is('plaintext: AUTH PLAIN 235', auth_plain(s, 'printer@contoso.test', 'PrinterPass1!'), 235, '2.7.0')
        r = transact(s, 'printer@contoso.test', ['a@example.test'], message('printer@contoso.test', 'a@example.test', 'plain-tcp'))
        reply_is('plaintext: message accepted', r.get('data'), 250, '2.0.0 OK')
        quit_(s)
        st, msgs = p.api('GET', 'messages?raw=0')
        check('plaintext: recorded tls=false', msgs and msgs[-1]['tls'] is False)
        s = p.connect(starttls=False)
        reply_is('no --jwks-url: XOAUTH2 -> 535 5.7.3', auth_xoauth2(s, USER, tok['delegated']), 535, T_AUTH_FAILED)
        quit_(s)
    stop(proc)


def test_control(p):
    st, inf = p.api('GET', 'info')
    check('GET info', st == 200 and inf.get('hostname') == 'TEST.host' and 'auth_failed' in inf.get('replies', {})
          and inf.get('issuer', '').endswith(f'/{TENANT}/v2.0'), repr(inf)[:300])
    st, e = p.api('POST', 'settings', {'no_such_setting': 1})
    check('POST settings: unknown key -> 400', st == 400)
    st, stats = p.api('GET', 'stats')
    check('GET stats shape', all(k in stats for k in ('sessions_total', 'sessions_open', 'auth_failures', 'auth_failures_by_reason',
                                                    'messages_accepted', 'mailboxes', 'starttls')), repr(stats)[:300])
    st, _ = p.api('POST', 'reset')
    st, msgs = p.api('GET', 'messages')
    st2, stats = p.api('GET', 'stats')
    st3, settings = p.api('GET', 'settings')
    check('POST reset: messages, stats, settings', msgs == [] and stats.get('messages_accepted') == 0
          and settings.get('full_access') == {} and settings.get('max_sessions_per_mailbox') == 0)


def main():
    tmp = tempfile.mkdtemp(prefix='smtp-selftest-')
    try:
        ca, cert, key = make_certs(tmp)
        npm_ci(IDP_DIR)
        npm_ci(HERE)
        idp_proc, idp_ready = start(['node', os.path.join(IDP_DIR, 'server.js'), '--port', '0', '--cert', cert, '--key', key],
                                    os.path.join(tmp, 'idp.log'))
        if not check('idp stand-in ready', idp_ready.get('ready') is True, repr(idp_ready)):
            return
        idp = Http(idp_ready['base_url'], ca)
        tok = get_tokens(idp)

        proc, ready = start(['node', os.path.join(HERE, 'server.js'), '--port', '0', '--control-port', '0', '--cert', cert,
                             '--key', key, '--jwks-url', idp_ready['jwks_uri'], '--ca', ca], os.path.join(tmp, 'smtp.log'))
        if not check('ready line', ready.get('ready') is True and isinstance(ready.get('smtp_port'), int)
                     and str(ready.get('control_url', '')).startswith('http://127.0.0.1:'), repr(ready)):
            with open(os.path.join(tmp, 'smtp.log')) as f:
                print(f.read())
            return
        p = Peer(ready['smtp_port'], Http(ready['control_url']), ca)
        check('ready line: issuer derived from the JWKS URL', ready.get('issuer') == idp_ready['issuer'], repr(ready))
        for t in (test_dialogue, lambda p: test_xoauth2(p, tok), test_basic, lambda p: test_send_as(p, tok),
                  test_recorded_bytes, test_faults, lambda p: test_session_limit(p, tok)):
            if time.monotonic() > DEADLINE:
                check('within the time limit', False)
                break
            try:
                t(p)
            except Exception as e:  # noqa: BLE001 - a crashed group is a failure, the run goes on
                import traceback
                check(f'test group {getattr(t, "__name__", t)} raised', False, traceback.format_exc())
            p.api('DELETE', 'faults')
        try:
            test_other_listeners(tmp, ca, cert, key, idp_ready['jwks_uri'], tok)
        except Exception:  # noqa: BLE001
            import traceback
            check('test group other listeners raised', False, traceback.format_exc())
        test_control(p)
        stop(proc)
        check('server stops on SIGTERM with exit 0', proc.returncode == 0, repr(proc.returncode))
    finally:
        for pr in started:
            stop(pr)
        if VERBOSE or common.failed:
            for name in ('smtp.log', 'idp.log'):
                path = os.path.join(tmp, name)
                if os.path.exists(path) and os.path.getsize(path):
                    with open(path) as f:
                        sys.stdout.write(f'--- {name}\n' + f.read()[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)
    common.finish(list_failures=True)


if __name__ == '__main__':
    main()
