#!/usr/bin/env node
// Test peer: a stand-in for Exchange Online SMTP AUTH client submission (smtp.office365.com:587)
// and for a generic authenticated SMTP relay, built on nodemailer's smtp-server.
//
//   node server.js --port P --control-port C --cert CERT --key KEY
//                  [--jwks-url URL] [--ca CA_FILE] [--issuer ISS|any] [--users FILE|JSON]
//                  [--implicit-tls] [--no-starttls] [--allow-insecure-auth]
//                  [--hostname NAME] [--control-tls] [--settings JSON] [--verbose]
//
// smtp-server does the protocol (EHLO, STARTTLS, SASL, MAIL/RCPT/DATA, dot-unstuffing).
// This file adds what is Exchange-specific: AUTH XOAUTH2 that validates Microsoft-shaped
// access tokens (RS256 JWTs checked against the identity-platform stand-in's JWKS) and the
// user= mailbox, Exchange's reply texts, Send As rules, the per-mailbox session limit, fault
// injection and the /_test/ control API. See README.md.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { parseArgs } from 'node:util';

import { SMTPServer } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import SASL from 'smtp-server/lib/sasl.js';
import { simpleParser } from 'mailparser';
import { jwtVerify, createLocalJWKSet, errors as joseErrors } from 'jose';

// ---------------------------------------------------------------------------------------------
// command line

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'control-port': { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    cert: { type: 'string' },
    key: { type: 'string' },
    'jwks-url': { type: 'string' },
    ca: { type: 'string' },
    issuer: { type: 'string' },
    users: { type: 'string' },
    'no-default-users': { type: 'boolean', default: false },
    settings: { type: 'string' },
    hostname: { type: 'string', default: 'TEST.host' },
    'implicit-tls': { type: 'boolean', default: false },
    'no-starttls': { type: 'boolean', default: false },
    'allow-insecure-auth': { type: 'boolean', default: false },
    'auth-methods': { type: 'string', default: 'PLAIN,LOGIN,XOAUTH2' },
    size: { type: 'string', default: '37748736' },
    'control-tls': { type: 'boolean', default: false },
    verbose: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

const USAGE = 'usage: node server.js --port P --control-port C --cert CERT --key KEY [--jwks-url URL] [--ca CA_FILE]\n'
  + '       [--issuer ISS|any] [--users FILE|JSON] [--no-default-users] [--settings JSON] [--hostname NAME]\n'
  + '       [--implicit-tls] [--no-starttls] [--allow-insecure-auth] [--auth-methods PLAIN,LOGIN,XOAUTH2]\n'
  + '       [--size BYTES] [--control-tls] [--verbose]\n';

if (args.help || !args.cert || !args.key) {
  process.stderr.write(USAGE);
  process.exit(args.help ? 0 : 64);
}

const HOST = args.hostname;
const CERT = fs.readFileSync(args.cert);
const KEY = fs.readFileSync(args.key);
const CA = args.ca ? fs.readFileSync(args.ca) : undefined;
const IMPLICIT_TLS = args['implicit-tls'];
const STARTTLS = !IMPLICIT_TLS && !args['no-starttls'];
const ALLOW_INSECURE_AUTH = args['allow-insecure-auth'];
const AUTH_METHODS = args['auth-methods'].split(',').map((m) => m.trim().toUpperCase()).filter(Boolean);
const SIZE = Number(args.size) || 0;

function log(...a) {
  if (args.verbose) process.stderr.write(`[smtp-peer] ${a.join(' ')}\n`);
}

function readJsonArg(v) {
  if (v === undefined) return undefined;
  const t = v.trim();
  return JSON.parse(t.startsWith('{') || t.startsWith('[') ? t : fs.readFileSync(v, 'utf8'));
}

// ---------------------------------------------------------------------------------------------
// replies (Exchange Online texts; see ../../../../shared/docs/microsoft-reference.md §4.6)

const REPLIES = {
  // AUTH
  auth_failed: () => [535, `5.7.3 Authentication unsuccessful [${HOST}]`],
  auth_disabled_tenant: () => [535, '5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.'],
  auth_disabled_mailbox: () => [535, '5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information.'],
  basic_auth_disabled: () => [535, '5.7.139 Authentication unsuccessful, basic authentication is disabled.'],
  security_defaults: () => [535, "5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy. Contact your administrator."],
  basic_auth_not_supported: () => [550, '5.7.30 Basic authentication is not supported for Client Submission.'],
  // sequence / policy
  not_authenticated: () => [530, '5.7.57 Client not authenticated to send mail'],
  starttls_required: () => [530, '5.7.0 Must issue a STARTTLS command first'],
  send_as_mail: () => [550, '5.7.60 SMTP; Client does not have permissions to send as this sender'],
  send_as_denied: () => [554, '5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message Cannot submit message'],
  // limits / transient
  thread_limit: () => [432, '4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded'],
  concurrent_connection_limit: () => [432, '4.3.2 concurrent connection limit exceeded'],
  temp_error: () => [451, '4.7.0 Temporary server error. Please try again later. PRX4'],
  access_denied_temp: () => [451, '4.7.500 Access denied, please try again later'],
  service_unavailable: () => [421, '4.3.2 Service not available, closing transmission channel'],
  // permanent, submission
  quota_exceeded: () => [550, '5.2.2 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message Submission quota exceeded'],
  bad_outbound_sender: () => [550, '5.1.8 Access denied, bad outbound sender'],
  message_too_big: () => [552, '5.3.4 Message size exceeds fixed maximum message size'],
  recipient_not_found: (ctx) => [550, `5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient ${(ctx && ctx.address) || ''} not found by SMTP address lookup`],
};

const STAGES = ['connect', 'auth', 'mail', 'rcpt', 'data'];
const DEFAULT_REPLY_FOR_STAGE = {
  connect: 'service_unavailable', auth: 'auth_failed', mail: 'send_as_mail', rcpt: 'recipient_not_found', data: 'temp_error',
};

function smtpError([code, text]) {
  const e = new Error(text);
  e.responseCode = code;
  return e;
}

// ---------------------------------------------------------------------------------------------
// state

const DEFAULT_AUDIENCES = ['https://outlook.office.com', 'https://outlook.office365.com'];

const DEFAULT_SETTINGS = {
  max_sessions_per_mailbox: 0, // 0 = unlimited; 3 = Exchange Online
  session_limit_stage: 'auth', // auth | mail | data
  session_limit_reply: 'thread_limit', // a REPLIES name
  send_as_stage: 'data', // data (554 5.2.0 at end of DATA) | mail (550 5.7.60 at MAIL FROM) | off
  check_header_from: true, // the From: header must be allowed too (checked at end of DATA)
  send_as: {}, // authenticated mailbox -> [addresses it may send as] ('*' = any)
  full_access: {}, // delegated token user -> [mailboxes it may name in user=] (shared mailboxes)
  app_mailboxes: null, // null: app-only tokens may name any mailbox; {appid: [mailboxes or '*']}
  accepted_audiences: DEFAULT_AUDIENCES,
  issuer: null, // null: derived from --jwks-url (or --issuer); 'any': not checked
  clock_skew_s: 0,
  greeting_delay_ms: 0,
};

const DEFAULT_USERS = [
  { username: 'printer@contoso.test', password: 'PrinterPass1!' },
  { username: 'relay@contoso.test', password: 'RelayPass1!', send_as: ['*'] },
  // personal Outlook.com account with two-step verification: only the app password works
  { username: 'person@outlook.test', password: 'OutlookPass1!', app_password: 'abcdefghijklmnop', app_password_required: true },
];

let derivedIssuer = null;
if (args.issuer) derivedIssuer = args.issuer;
else if (args['jwks-url']) {
  try {
    const u = new URL(args['jwks-url']);
    const m = u.pathname.match(/^\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/discovery\/v2\.0\/keys$/i);
    if (m) derivedIssuer = `${u.origin}/${m[1]}/v2.0`;
  } catch { /* checked when used */ }
}

const initialSettings = { ...DEFAULT_SETTINGS, ...(readJsonArg(args.settings) || {}) };
const initialUsers = [...(args['no-default-users'] ? [] : DEFAULT_USERS), ...(readJsonArg(args.users) || [])];

const state = {
  settings: structuredClone(initialSettings),
  users: new Map(),
  faults: [],
  faultSeq: 0,
  messages: [],
  msgSeq: 0,
  sessions: new Map(), // open sessions, id -> Sess
  closed: [], // the last 200 closed sessions
  authSeq: 0,
  stats: null,
};

function resetUsers() {
  state.users = new Map();
  for (const u of initialUsers) addUser(u);
}

function addUser(u) {
  if (!u || typeof u.username !== 'string' || !(u.password || u.app_password)) throw new Error('user needs username and password or app_password');
  state.users.set(u.username.toLowerCase(), {
    username: u.username, password: u.password || null, app_password: u.app_password || null,
    app_password_required: !!u.app_password_required, send_as: Array.isArray(u.send_as) ? u.send_as : [],
    disabled: !!u.disabled,
  });
}

function freshStats() {
  return {
    started: new Date().toISOString(),
    sessions_total: 0,
    sessions_tls: 0,
    starttls: 0,
    auth_attempts: 0,
    auth_success: 0,
    auth_failures: 0,
    auth_failures_by_reason: {},
    auth_by_mechanism: {},
    last_auth_failure: null,
    messages_accepted: 0,
    messages_rejected: 0,
    limit_rejections: 0,
    faults_served: 0,
    dropped_connections: 0,
    replies_by_code: {},
    mailboxes: {},
  };
}

resetUsers();
state.stats = freshStats();

function mbStats(mailbox) {
  const k = mailbox.toLowerCase();
  if (!state.stats.mailboxes[k]) {
    state.stats.mailboxes[k] = {
      current: 0, max_seen: 0, max_attempted: 0, sessions_total: 0,
      in_transaction: 0, max_in_transaction: 0, messages: 0, limit_rejections: 0, auth_failures: 0,
    };
  }
  return state.stats.mailboxes[k];
}

function bump(obj, key, n = 1) {
  obj[key] = (obj[key] || 0) + n;
}

class Sess {
  constructor(conn) {
    this.id = conn.id;
    this.conn = conn;
    this.started = new Date().toISOString();
    this.remote = `${conn.remoteAddress}:${conn.remotePort}`;
    this.tls = !!conn.secure;
    this.mailbox = null; // authenticated mailbox (user= or username), lower case
    this.mechanism = null;
    this.identity = null; // token user / app id / username
    this.kind = null; // delegated | app | password | app_password
    this.authSeq = 0;
    this.inTx = false;
    this.messages = 0;
    this.transcript = [];
    this.closedAt = null;
  }

  toJSON(withTranscript) {
    const o = {
      id: this.id, started: this.started, closed: this.closedAt, remote: this.remote, tls: this.tls,
      mailbox: this.mailbox, auth_mechanism: this.mechanism, auth_identity: this.identity, auth_kind: this.kind,
      in_transaction: this.inTx, messages: this.messages,
    };
    if (withTranscript) o.transcript = this.transcript;
    return o;
  }
}

function note(sess, line) {
  if (!sess) return;
  if (sess.transcript.length < 500) sess.transcript.push(line.length > 300 ? `${line.slice(0, 300)}…` : line);
  log(sess.id, line);
}

function sessOf(session) {
  return state.sessions.get(session.id);
}

// ---------------------------------------------------------------------------------------------
// fault injection

function normAddrs(list) {
  return Array.isArray(list) ? list.map((a) => String(a).toLowerCase()) : null;
}

function addFault(f) {
  if (!f || typeof f !== 'object') throw new Error('fault must be an object');
  if (!STAGES.includes(f.stage)) throw new Error(`stage must be one of ${STAGES.join(', ')}`);
  let reply = null;
  if (typeof f.reply === 'string') {
    if (!REPLIES[f.reply]) throw new Error(`unknown reply "${f.reply}"; known: ${Object.keys(REPLIES).join(', ')}`);
    reply = f.reply;
  } else if (f.reply && typeof f.reply === 'object') {
    const code = Number(f.reply.code);
    if (!(code >= 200 && code <= 599) || typeof f.reply.text !== 'string') throw new Error('reply object needs code (200-599) and text');
    reply = { code, text: f.reply.text };
  } else if (f.reply === undefined && !f.delay_ms && !f.drop) {
    reply = DEFAULT_REPLY_FOR_STAGE[f.stage];
  }
  const count = f.count === undefined ? 1 : Number(f.count);
  if (!Number.isInteger(count) || count === 0 || count < -1) throw new Error('count must be a positive integer or -1');
  const fault = {
    id: ++state.faultSeq,
    stage: f.stage,
    reply,
    count,
    served: 0,
    mailbox: f.mailbox ? String(f.mailbox).toLowerCase() : null,
    mechanism: f.mechanism ? String(f.mechanism).toUpperCase() : null,
    addresses: normAddrs(f.addresses),
    delay_ms: Number(f.delay_ms) || 0,
    drop: !!f.drop,
    after_bytes: f.after_bytes === undefined ? 1 : Math.max(1, Number(f.after_bytes) || 1),
  };
  state.faults.push(fault);
  return fault;
}

// First live fault of `stage` matching ctx (and `pred`), consumed. ctx: {mailbox, mechanism, address}
function takeFault(stage, ctx, pred = () => true) {
  for (const f of state.faults) {
    if (f.stage !== stage || !pred(f)) continue;
    if (f.count !== -1 && f.served >= f.count) continue;
    if (f.mailbox && (!ctx.mailbox || ctx.mailbox.toLowerCase() !== f.mailbox)) continue;
    if (f.mechanism && ctx.mechanism !== f.mechanism) continue;
    if (f.addresses && (!ctx.address || !f.addresses.includes(ctx.address.toLowerCase()))) continue;
    f.served += 1;
    state.stats.faults_served += 1;
    return f;
  }
  return null;
}

function faultReply(f, ctx) {
  if (!f.reply) return null;
  if (typeof f.reply === 'string') return REPLIES[f.reply](ctx);
  return [f.reply.code, f.reply.text];
}

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

function dropConnection(sess) {
  state.stats.dropped_connections += 1;
  note(sess, '-- connection dropped (fault)');
  try {
    sess.conn._socket.destroy();
  } catch { /* already gone */ }
}

// Applies a fault: waits delay_ms, then either drops the connection ('drop'), returns the
// reply to send ([code,text]) or null (continue normally).
async function applyFault(f, sess, ctx) {
  if (!f) return null;
  note(sess, `-- fault #${f.id} (${f.stage}${f.reply ? `, ${typeof f.reply === 'string' ? f.reply : f.reply.code}` : ''}${f.delay_ms ? `, delay ${f.delay_ms} ms` : ''}${f.drop ? ', drop' : ''})`);
  if (f.delay_ms) await sleep(f.delay_ms);
  if (f.drop) {
    dropConnection(sess);
    return 'drop';
  }
  return faultReply(f, ctx);
}

// ---------------------------------------------------------------------------------------------
// JWKS and XOAUTH2 token validation

let jwks = null;
let jwksFetchedAt = 0;

function fetchJson(url) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.get(u, { ca: CA, timeout: 5000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`JWKS HTTP ${res.statusCode}`));
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch (e) {
          reject(e);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('JWKS request timed out')));
    req.on('error', reject);
  });
}

async function loadJwks(force) {
  if (!args['jwks-url']) throw Object.assign(new Error('no --jwks-url given'), { noJwks: true });
  if (jwks && !force) return jwks;
  if (jwks && Date.now() - jwksFetchedAt < 1000) return jwks; // refetch at most once a second
  const doc = await fetchJson(args['jwks-url']);
  jwks = createLocalJWKSet(doc);
  jwksFetchedAt = Date.now();
  return jwks;
}

function tokenUser(p) {
  return (p.preferred_username || p.upn || p.unique_name || p.email || '').toLowerCase();
}

// -> {ok:true, kind, identity} or {ok:false, reason}
async function validateXoauth2(mailbox, accessToken) {
  const s = state.settings;
  let payload;
  try {
    let keys = await loadJwks(false);
    const issuer = s.issuer === 'any' ? undefined : (s.issuer || derivedIssuer || undefined);
    const opts = { algorithms: ['RS256'], clockTolerance: Number(s.clock_skew_s) || 0 };
    if (issuer && issuer !== 'any') opts.issuer = issuer;
    try {
      ({ payload } = await jwtVerify(accessToken, keys, opts));
    } catch (e) {
      if (!(e instanceof joseErrors.JWKSNoMatchingKey)) throw e;
      keys = await loadJwks(true);
      ({ payload } = await jwtVerify(accessToken, keys, opts));
    }
  } catch (e) {
    if (e instanceof joseErrors.JWTExpired) return { ok: false, reason: 'token_expired' };
    if (e instanceof joseErrors.JWTClaimValidationFailed) return { ok: false, reason: `claim_${e.claim}` };
    if (e instanceof joseErrors.JWSSignatureVerificationFailed) return { ok: false, reason: 'bad_signature' };
    if (e instanceof joseErrors.JWKSNoMatchingKey) return { ok: false, reason: 'unknown_key' };
    if (e instanceof joseErrors.JOSEError) return { ok: false, reason: 'malformed_token', detail: e.code };
    return { ok: false, reason: e.noJwks ? 'no_jwks_url' : 'jwks_unavailable', detail: e.message };
  }
  const auds = [].concat(payload.aud || []);
  if (!auds.some((a) => s.accepted_audiences.includes(a))) return { ok: false, reason: 'wrong_audience', detail: auds.join(' ') };
  const scp = typeof payload.scp === 'string' ? payload.scp.split(' ').map((x) => x.toLowerCase()) : [];
  const roles = Array.isArray(payload.roles) ? payload.roles.map((x) => String(x).toLowerCase()) : [];
  const mb = mailbox.toLowerCase();
  if (scp.length) {
    if (!scp.includes('smtp.send')) return { ok: false, reason: 'missing_scope_SMTP.Send', detail: payload.scp };
    const user = tokenUser(payload);
    if (!user) return { ok: false, reason: 'token_has_no_user' };
    const fa = (s.full_access[user] || s.full_access[Object.keys(s.full_access).find((k) => k.toLowerCase() === user)] || []).map((x) => x.toLowerCase());
    if (mb !== user && !fa.includes(mb)) return { ok: false, reason: 'user_mismatch', detail: `user=${mailbox} token=${user}` };
    return { ok: true, kind: 'delegated', identity: user };
  }
  if (roles.length) {
    if (!roles.includes('smtp.sendasapp')) return { ok: false, reason: 'missing_role_SMTP.SendAsApp', detail: roles.join(' ') };
    const appid = payload.appid || payload.azp || payload.client_id || '';
    if (s.app_mailboxes) {
      const grants = s.app_mailboxes[appid];
      if (!grants) return { ok: false, reason: 'app_not_registered', detail: appid };
      const g = grants.map((x) => x.toLowerCase());
      if (!g.includes('*') && !g.includes(mb)) return { ok: false, reason: 'app_no_mailbox_permission', detail: `${appid} ${mailbox}` };
    }
    return { ok: true, kind: 'app', identity: appid };
  }
  return { ok: false, reason: 'no_scp_or_roles' };
}

// ---------------------------------------------------------------------------------------------
// session limit and Send As

function openSessionsOf(mailbox) {
  return [...state.sessions.values()].filter((x) => x.mailbox === mailbox && x.authSeq).sort((a, b) => a.authSeq - b.authSeq);
}

// true when sess is beyond the per-mailbox limit at `stage`
function overLimit(sess, stage, mailbox) {
  const s = state.settings;
  const max = Number(s.max_sessions_per_mailbox) || 0;
  if (!max || s.session_limit_stage !== stage) return false;
  if (stage === 'auth') {
    const m = mbStats(mailbox);
    const attempted = m.current + 1;
    if (attempted > m.max_attempted) m.max_attempted = attempted;
    return m.current >= max;
  }
  const rank = openSessionsOf(sess.mailbox).indexOf(sess) + 1;
  return rank > max;
}

function limitReply(sess, mailbox) {
  state.stats.limit_rejections += 1;
  mbStats(mailbox).limit_rejections += 1;
  note(sess, `-- session limit (${state.settings.max_sessions_per_mailbox}) exceeded for ${mailbox}`);
  return (REPLIES[state.settings.session_limit_reply] || REPLIES.thread_limit)();
}

function mayUseSender(sess, addr) {
  if (!sess.mailbox) return false;
  const a = (addr || '').toLowerCase();
  if (!a) return false;
  if (a === sess.mailbox) return true;
  const s = state.settings;
  const key = Object.keys(s.send_as).find((k) => k.toLowerCase() === sess.mailbox);
  const granted = [...(key ? s.send_as[key] : [])];
  const u = state.users.get(sess.mailbox);
  if (u && (sess.kind === 'password' || sess.kind === 'app_password')) granted.push(...u.send_as);
  const g = granted.map((x) => String(x).toLowerCase());
  return g.includes('*') || g.includes(a);
}

function registerAuth(sess, mailbox, mechanism, result) {
  sess.mailbox = mailbox.toLowerCase();
  sess.mechanism = mechanism;
  sess.identity = result.identity;
  sess.kind = result.kind;
  sess.authSeq = ++state.authSeq;
  const m = mbStats(sess.mailbox);
  m.current += 1;
  m.sessions_total += 1;
  if (m.current > m.max_seen) m.max_seen = m.current;
  if (m.current > m.max_attempted) m.max_attempted = m.current;
  state.stats.auth_success += 1;
  bump(state.stats.auth_by_mechanism, mechanism);
}

function authFailure(sess, mailbox, mechanism, reason, detail) {
  state.stats.auth_failures += 1;
  bump(state.stats.auth_failures_by_reason, reason);
  state.stats.last_auth_failure = { time: new Date().toISOString(), mailbox, mechanism, reason, detail: detail || null, session: sess && sess.id };
  if (mailbox) mbStats(mailbox).auth_failures += 1;
  note(sess, `-- auth failed: ${reason}${detail ? ` (${detail})` : ''}`);
}

function setInTx(sess, on) {
  if (!sess || !sess.mailbox || sess.inTx === on) return;
  sess.inTx = on;
  const m = mbStats(sess.mailbox);
  m.in_transaction += on ? 1 : -1;
  if (m.in_transaction > m.max_in_transaction) m.max_in_transaction = m.in_transaction;
}

// ---------------------------------------------------------------------------------------------
// smtp-server adaptations (module-level patches of the library's connection class)

const ENHANCED_RE = /^[245]\.\d{1,3}\.\d{1,3}( |$)/;

function exchangeDate() {
  const d = new Date();
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n) => String(n).padStart(2, '0');
  return `${days[d.getUTCDay()]}, ${d.getUTCDate()} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

const origInit = SMTPConnection.prototype.init;
SMTPConnection.prototype.init = function init() {
  const sess = new Sess(this);
  this.__sess = sess;
  state.sessions.set(sess.id, sess);
  state.stats.sessions_total += 1;
  if (sess.tls) state.stats.sessions_tls += 1;
  note(sess, `-- connect from ${sess.remote}${sess.tls ? ' (implicit TLS)' : ''}`);
  return origInit.call(this);
};

const origOnCommand = SMTPConnection.prototype._onCommand;
SMTPConnection.prototype._onCommand = function onCommand(command, callback) {
  try {
    const name = (command || '').toString().split(' ').shift().toUpperCase();
    note(this.__sess, `C: ${this._redactCredentials(name, (command || '').toString()).line}`);
  } catch { /* logging only */ }
  return origOnCommand.call(this, command, callback);
};

const origSend = SMTPConnection.prototype.send;
SMTPConnection.prototype.send = function send(code, data, context) {
  let c = code;
  let d = data;
  let ctx = context;
  if (typeof d === 'string') {
    if (ENHANCED_RE.test(d)) ctx = false; // our texts carry their own enhanced status code
    else if (c === 220 && ctx === false && d === `${this.name} ESMTP`) d = `${this.name} Microsoft ESMTP MAIL Service ready at ${exchangeDate()}`;
    else if (c === 220 && d === 'Ready to start TLS') [d, ctx] = ['2.0.0 SMTP server ready', false];
    else if (c === 538) [c, d, ctx] = [...REPLIES.starttls_required(), false];
    else if (c === 504 && /Unrecognized authentication type/.test(d)) [d, ctx] = ['5.7.4 Unrecognized authentication type', false];
    else if (c === 221) [d, ctx] = ['2.0.0 Service closing transmission channel', false];
    else if (c === 354) d = 'Start mail input; end with <CRLF>.<CRLF>';
    else if (ctx === 'MAIL_FROM_OK') d = 'Sender OK';
    else if (ctx === 'RCPT_TO_OK') d = 'Recipient OK';
  } else if (Array.isArray(d) && c === 250 && !this.secure && !ALLOW_INSECURE_AUTH && STARTTLS) {
    // as smtp.office365.com: no AUTH before STARTTLS
    d = d.filter((line) => !/^AUTH /.test(line));
  }
  if (c >= 400) bump(state.stats.replies_by_code, String(c));
  if (this.__sess) {
    const enh = typeof this._getEnhancedStatusCode === 'function' ? this._getEnhancedStatusCode(c, ctx) : '';
    if (Array.isArray(d)) d.forEach((line, i) => note(this.__sess, `S: ${c}${i < d.length - 1 ? '-' : ' '}${line}`));
    else note(this.__sess, `S: ${c}${enh ? ` ${enh}` : ''}${d ? ` ${d}` : ''}`);
  }
  return origSend.call(this, c, d, ctx);
};

// XOAUTH2 as Exchange does it: the blob must be base64 of "user=U^Aauth=Bearer T^A^A"; every
// failure (malformed blob included) is 535 5.7.3, with no 334 error challenge.
SASL.XOAUTH2_token = function XOAUTH2_token(canAbort, rawToken, callback) {
  const token = (rawToken || '').toString().trim();
  if (canAbort && token === '*') {
    this.send(501, '5.7.0 Authentication aborted');
    return callback();
  }
  let username = '';
  let accessToken = '';
  let malformed = null;
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(token) || token.length % 4 !== 0) malformed = 'blob_not_base64';
  else {
    const text = Buffer.from(token, 'base64').toString('utf8');
    const m = text.match(/^user=([^\x01]*)\x01auth=Bearer ([^\x01]+)\x01\x01$/i);
    if (!m) malformed = 'blob_not_xoauth2';
    else if (!m[1] || SASL.CONTROL_CHARS.test(m[1])) malformed = 'blob_bad_user';
    else[, username, accessToken] = m;
  }
  return this._server.onAuth({ method: 'XOAUTH2', username, accessToken, malformed }, this.session, (err, response) => {
    if (err) {
      this.send(err.responseCode || 535, err.message);
      return callback();
    }
    if (!response || !response.user) {
      this.send(...REPLIES.auth_failed());
      return callback();
    }
    this.session.user = response.user;
    this.session.transmissionType = this._transmissionType();
    this.send(235, 'Authentication successful');
    return callback();
  });
};

// ---------------------------------------------------------------------------------------------
// handlers

async function onConnect(session, cb) {
  const sess = sessOf(session);
  try {
    if (state.settings.greeting_delay_ms) await sleep(Number(state.settings.greeting_delay_ms));
    const r = await applyFault(takeFault('connect', {}), sess, {});
    if (r === 'drop') return undefined;
    if (r) return cb(smtpError(r));
    return cb();
  } catch (e) {
    return cb(smtpError(REPLIES.temp_error()));
  }
}

async function onAuth(auth, session, cb) {
  const sess = sessOf(session);
  const mechanism = auth.method;
  const mailbox = (auth.username || '').toLowerCase();
  state.stats.auth_attempts += 1;
  try {
    const r = await applyFault(takeFault('auth', { mailbox, mechanism }), sess, { mailbox });
    if (r === 'drop') return undefined;
    if (r) {
      authFailure(sess, mailbox, mechanism, 'injected');
      return cb(smtpError(r));
    }
    let result;
    if (mechanism === 'XOAUTH2') {
      result = auth.malformed ? { ok: false, reason: auth.malformed } : await validateXoauth2(mailbox, auth.accessToken);
    } else if (mechanism === 'PLAIN' || mechanism === 'LOGIN') {
      const u = state.users.get(mailbox);
      if (!u) result = { ok: false, reason: 'unknown_user' };
      else if (u.disabled) result = { ok: false, reason: 'user_disabled' };
      else if (u.app_password && auth.password === u.app_password) result = { ok: true, kind: 'app_password', identity: u.username };
      else if (u.password && auth.password === u.password) {
        result = u.app_password_required ? { ok: false, reason: 'app_password_required' } : { ok: true, kind: 'password', identity: u.username };
      } else result = { ok: false, reason: 'wrong_password' };
    } else {
      result = { ok: false, reason: 'unsupported_mechanism' };
    }
    if (!result.ok) {
      authFailure(sess, mailbox, mechanism, result.reason, result.detail);
      return cb(smtpError(REPLIES.auth_failed()));
    }
    if (sess.closedAt) return undefined; // the client went away while the token was checked
    if (overLimit(sess, 'auth', mailbox)) return cb(smtpError(limitReply(sess, mailbox)));
    registerAuth(sess, mailbox, mechanism, result);
    note(sess, `-- authenticated ${mailbox} (${mechanism}, ${result.kind}, ${result.identity})`);
    return cb(null, { user: mailbox });
  } catch (e) {
    process.stderr.write(`[smtp-peer] onAuth error: ${e.stack}\n`);
    return cb(smtpError(REPLIES.temp_error()));
  }
}

async function onMailFrom(address, session, cb) {
  const sess = sessOf(session);
  try {
    const r = await applyFault(takeFault('mail', { mailbox: sess.mailbox, mechanism: sess.mechanism, address: address.address }), sess, { address: address.address });
    if (r === 'drop') return undefined;
    if (r) return cb(smtpError(r));
    if (overLimit(sess, 'mail')) return cb(smtpError(limitReply(sess, sess.mailbox)));
    if (state.settings.send_as_stage === 'mail' && !mayUseSender(sess, address.address)) {
      note(sess, `-- send as denied at MAIL: ${address.address}`);
      return cb(smtpError(REPLIES.send_as_mail()));
    }
    setInTx(sess, true);
    return cb();
  } catch (e) {
    process.stderr.write(`[smtp-peer] onMailFrom error: ${e.stack}\n`);
    return cb(smtpError(REPLIES.temp_error()));
  }
}

async function onRcptTo(address, session, cb) {
  const sess = sessOf(session);
  try {
    const ctx = { mailbox: sess.mailbox, mechanism: sess.mechanism, address: address.address };
    const r = await applyFault(takeFault('rcpt', ctx), sess, ctx);
    if (r === 'drop') return undefined;
    if (r) return cb(smtpError(r));
    return cb();
  } catch (e) {
    process.stderr.write(`[smtp-peer] onRcptTo error: ${e.stack}\n`);
    return cb(smtpError(REPLIES.temp_error()));
  }
}

function headerAddresses(parsedAddr) {
  const out = [];
  const walk = (v) => {
    if (!v) return;
    if (Array.isArray(v)) return v.forEach(walk);
    if (v.value) return walk(v.value);
    if (v.group) return walk(v.group);
    if (v.address) out.push(v.address);
    return undefined;
  };
  walk(parsedAddr);
  return out;
}

function onData(stream, session, cb) {
  const sess = sessOf(session);
  const ctx = { mailbox: sess.mailbox, mechanism: sess.mechanism };
  const drop = takeFault('data', ctx, (f) => f.drop);
  const chunks = [];
  let size = 0;
  let dropped = false;
  stream.on('error', () => { /* the client went away */ });
  stream.on('data', (c) => {
    chunks.push(c);
    size += c.length;
    if (drop && !dropped && size >= drop.after_bytes) {
      dropped = true;
      note(sess, `-- fault #${drop.id} (data, drop after ${size} bytes)`);
      setTimeout(() => dropConnection(sess), drop.delay_ms || 0);
    }
  });
  stream.on('end', async () => {
    if (dropped) return undefined;
    const finish = (err, msg) => {
      setInTx(sess, false);
      if (err) state.stats.messages_rejected += 1;
      return cb(err, msg);
    };
    try {
      const raw = Buffer.concat(chunks);
      const envFrom = (session.envelope.mailFrom && session.envelope.mailFrom.address) || '';
      const rcpts = session.envelope.rcptTo.map((r) => r.address);
      const r = await applyFault(takeFault('data', ctx, (f) => !f.drop), sess, ctx);
      if (r === 'drop') return undefined;
      if (r) return finish(smtpError(r));
      if (stream.sizeExceeded) return finish(smtpError(REPLIES.message_too_big()));
      if (overLimit(sess, 'data')) return finish(smtpError(limitReply(sess, sess.mailbox)));
      let parsed = null;
      try {
        parsed = await simpleParser(raw, { skipHtmlToText: true, skipTextToHtml: true, skipImageLinks: true });
      } catch { /* recorded without parsed fields */ }
      const headerFrom = parsed ? headerAddresses(parsed.from) : [];
      if (state.settings.send_as_stage === 'data') {
        const bad = [envFrom, ...(state.settings.check_header_from ? headerFrom : [])].filter((a) => !mayUseSender(sess, a));
        if (bad.length) {
          note(sess, `-- send as denied at DATA: ${bad.join(', ')}`);
          return finish(smtpError(REPLIES.send_as_denied()));
        }
      }
      const id = ++state.msgSeq;
      const mid = (parsed && parsed.messageId) || `${crypto.randomUUID()}@${HOST}`;
      state.messages.push({
        id,
        time: new Date().toISOString(),
        session: sess.id,
        mailbox: sess.mailbox,
        auth_mechanism: sess.mechanism,
        auth_kind: sess.kind,
        auth_identity: sess.identity,
        tls: !!sess.conn.secure,
        envelope_from: envFrom,
        recipients: rcpts,
        size: raw.length,
        sha256: crypto.createHash('sha256').update(raw).digest('hex'),
        parsed: parsed ? {
          from: headerFrom,
          to: headerAddresses(parsed.to),
          cc: headerAddresses(parsed.cc),
          bcc: headerAddresses(parsed.bcc),
          subject: parsed.subject || null,
          message_id: parsed.messageId || null,
          attachments: (parsed.attachments || []).map((a) => ({ filename: a.filename || null, content_type: a.contentType, size: a.size, sha256: crypto.createHash('sha256').update(a.content).digest('hex') })),
        } : null,
        raw,
      });
      sess.messages += 1;
      state.stats.messages_accepted += 1;
      mbStats(sess.mailbox).messages += 1;
      note(sess, `-- message #${id} recorded (${raw.length} bytes)`);
      return finish(null, `2.0.0 OK <${mid.replace(/^<|>$/g, '')}> [Hostname=${HOST}]`);
    } catch (e) {
      process.stderr.write(`[smtp-peer] onData error: ${e.stack}\n`);
      return finish(smtpError(REPLIES.temp_error()));
    }
  });
}

function onClose(session) {
  const sess = state.sessions.get(session.id);
  if (!sess) return;
  state.sessions.delete(sess.id);
  setInTx(sess, false);
  if (sess.mailbox && sess.authSeq) mbStats(sess.mailbox).current -= 1;
  sess.closedAt = new Date().toISOString();
  note(sess, '-- closed');
  state.closed.push(sess);
  if (state.closed.length > 200) state.closed.shift();
}

function onSecure(socket, session, cb) {
  const sess = sessOf(session);
  if (sess && !sess.tls) {
    sess.tls = true;
    if (!IMPLICIT_TLS) state.stats.starttls += 1;
  }
  cb();
}

const smtp = new SMTPServer({
  name: HOST,
  secure: IMPLICIT_TLS,
  key: KEY,
  cert: CERT,
  minVersion: 'TLSv1.2',
  hideSTARTTLS: !STARTTLS,
  disabledCommands: STARTTLS ? [] : ['STARTTLS'],
  allowInsecureAuth: ALLOW_INSECURE_AUTH,
  authMethods: AUTH_METHODS,
  authRequiredMessage: REPLIES.not_authenticated()[1],
  hideENHANCEDSTATUSCODES: false,
  hideDSN: false,
  heloResponse: '%s Hello %s',
  size: SIZE,
  disableReverseLookup: true,
  maxAllowedUnauthenticatedCommands: 20,
  logger: false,
  socketTimeout: 120 * 1000,
  closeTimeout: 1000,
  onConnect,
  onSecure,
  onAuth,
  onMailFrom,
  onRcptTo,
  onData,
  onClose,
});
smtp.on('error', (e) => log('smtp error', e.message));

// ---------------------------------------------------------------------------------------------
// control API (/_test/, JSON)

function messageJson(m, withRaw) {
  const { raw, ...rest } = m;
  return withRaw ? { ...rest, raw_b64: raw.toString('base64') } : rest;
}

function validateSettings(body) {
  const out = {};
  for (const [k, v] of Object.entries(body)) {
    if (!(k in DEFAULT_SETTINGS)) throw new Error(`unknown setting "${k}"`);
    out[k] = v;
  }
  if ('session_limit_stage' in out && !['auth', 'mail', 'data'].includes(out.session_limit_stage)) throw new Error('session_limit_stage: auth | mail | data');
  if ('send_as_stage' in out && !['mail', 'data', 'off'].includes(out.send_as_stage)) throw new Error('send_as_stage: mail | data | off');
  if ('session_limit_reply' in out && !REPLIES[out.session_limit_reply]) throw new Error('session_limit_reply: a reply name');
  if ('max_sessions_per_mailbox' in out && !(Number.isInteger(out.max_sessions_per_mailbox) && out.max_sessions_per_mailbox >= 0)) throw new Error('max_sessions_per_mailbox: integer >= 0');
  return out;
}

function info() {
  return {
    smtp_port: smtpPort,
    hostname: HOST,
    implicit_tls: IMPLICIT_TLS,
    starttls: STARTTLS,
    allow_insecure_auth: ALLOW_INSECURE_AUTH,
    auth_methods: AUTH_METHODS,
    size: SIZE,
    jwks_url: args['jwks-url'] || null,
    issuer: state.settings.issuer || derivedIssuer,
    settings: state.settings,
    users: [...state.users.values()],
    replies: Object.fromEntries(Object.entries(REPLIES).map(([k, f]) => [k, f({ address: 'ADDRESS' }).join(' ')])),
  };
}

async function route(req, url, body) {
  const p = url.pathname.replace(/\/+$/, '');
  const m = req.method;
  const q = url.searchParams;
  if (p === '/_test/health') return [200, { ok: true }];
  if (p === '/_test/info' && m === 'GET') return [200, info()];
  if (p === '/_test/settings') {
    if (m === 'GET') return [200, state.settings];
    if (m === 'POST') {
      if (body && body.reset) state.settings = structuredClone(initialSettings);
      else Object.assign(state.settings, validateSettings(body || {}));
      return [200, state.settings];
    }
  }
  if (p === '/_test/send_as') {
    if (m === 'GET') return [200, state.settings.send_as];
    if (m === 'POST') {
      if (!body || !body.mailbox || !Array.isArray(body.addresses)) throw new Error('need {"mailbox":…, "addresses":[…]}');
      state.settings.send_as[body.mailbox.toLowerCase()] = body.addresses;
      return [200, state.settings.send_as];
    }
  }
  if (p === '/_test/full_access' && m === 'POST') {
    if (!body || !body.user || !Array.isArray(body.mailboxes)) throw new Error('need {"user":…, "mailboxes":[…]}');
    state.settings.full_access[body.user.toLowerCase()] = body.mailboxes;
    return [200, state.settings.full_access];
  }
  if (p === '/_test/users') {
    if (m === 'GET') return [200, [...state.users.values()]];
    if (m === 'POST') {
      for (const u of [].concat(body)) addUser(u);
      return [200, [...state.users.values()]];
    }
  }
  if (p === '/_test/faults') {
    if (m === 'GET') return [200, state.faults];
    if (m === 'POST') {
      const added = [].concat(body).map(addFault);
      return [200, Array.isArray(body) ? added : added[0]];
    }
    if (m === 'DELETE') {
      state.faults = [];
      return [200, { cleared: true }];
    }
  }
  if (p === '/_test/messages') {
    if (m === 'GET') {
      const mb = q.get('mailbox');
      const since = Number(q.get('since') || 0);
      const raw = q.get('raw') !== '0';
      return [200, state.messages.filter((x) => x.id > since && (!mb || x.mailbox === mb.toLowerCase())).map((x) => messageJson(x, raw))];
    }
    if (m === 'DELETE') {
      state.messages = [];
      return [200, { cleared: true }];
    }
  }
  let mm = p.match(/^\/_test\/messages\/(\d+)(\/raw)?$/);
  if (mm && m === 'GET') {
    const msg = state.messages.find((x) => x.id === Number(mm[1]));
    if (!msg) return [404, { error: 'no such message' }];
    if (mm[2]) return [200, msg.raw, 'message/rfc822'];
    return [200, messageJson(msg, true)];
  }
  if (p === '/_test/stats') {
    if (m === 'GET') return [200, { ...state.stats, sessions_open: state.sessions.size }];
  }
  if ((p === '/_test/stats/reset' && m === 'POST') || (p === '/_test/stats' && m === 'DELETE')) {
    resetStats();
    return [200, { reset: true }];
  }
  if (p === '/_test/sessions' && m === 'GET') {
    const t = q.get('transcript') === '1';
    const open = [...state.sessions.values()].map((x) => x.toJSON(t));
    const closed = q.get('all') === '1' ? state.closed.map((x) => x.toJSON(t)) : undefined;
    return [200, closed ? { open, closed } : { open }];
  }
  mm = p.match(/^\/_test\/sessions\/([^/]+)$/);
  if (mm && m === 'GET') {
    const s = state.sessions.get(mm[1]) || state.closed.find((x) => x.id === mm[1]);
    return s ? [200, s.toJSON(true)] : [404, { error: 'no such session' }];
  }
  if (p === '/_test/reset' && m === 'POST') {
    state.settings = structuredClone(initialSettings);
    state.faults = [];
    state.messages = [];
    state.closed = [];
    resetUsers();
    resetStats();
    return [200, { reset: true }];
  }
  return [404, { error: 'not found', path: p }];
}

// counters back to zero; per-mailbox "current" and "in_transaction" keep reflecting open sessions
function resetStats() {
  state.stats = freshStats();
  for (const s of state.sessions.values()) {
    if (s.mailbox && s.authSeq) {
      const m = mbStats(s.mailbox);
      m.current += 1;
      m.max_seen = Math.max(m.max_seen, m.current);
      m.max_attempted = Math.max(m.max_attempted, m.current);
      if (s.inTx) {
        m.in_transaction += 1;
        m.max_in_transaction = Math.max(m.max_in_transaction, m.in_transaction);
      }
    }
  }
}

function controlHandler(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const send = (status, obj, type) => {
      const buf = Buffer.isBuffer(obj) ? obj : Buffer.from(JSON.stringify(obj, null, 1));
      res.writeHead(status, { 'Content-Type': type || 'application/json', 'Content-Length': buf.length, 'Cache-Control': 'no-store' });
      res.end(buf);
    };
    try {
      const url = new URL(req.url, 'http://x');
      let body = null;
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim()) {
        try {
          body = JSON.parse(text);
        } catch {
          return send(400, { error: 'invalid JSON body' });
        }
      }
      const [status, obj, type] = await route(req, url, body);
      return send(status, obj, type);
    } catch (e) {
      return send(400, { error: e.message });
    }
  });
}

const control = args['control-tls']
  ? https.createServer({ key: KEY, cert: CERT }, controlHandler)
  : http.createServer(controlHandler);

// ---------------------------------------------------------------------------------------------
// start

let smtpPort = 0;

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(port), args.host, () => resolve(server.address().port));
  });
}

function shutdown() {
  try {
    control.close();
    smtp.server.close();
    for (const s of state.sessions.values()) s.conn._socket.destroy();
  } catch { /* exiting anyway */ }
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

try {
  smtpPort = await listen(smtp.server, args.port);
  const controlPort = await listen(control, args['control-port']);
  process.stdout.write(`${JSON.stringify({
    ready: true,
    smtp_port: smtpPort,
    control_url: `${args['control-tls'] ? 'https' : 'http'}://${args.host}:${controlPort}`,
    implicit_tls: IMPLICIT_TLS,
    starttls: STARTTLS,
    hostname: HOST,
    issuer: state.settings.issuer || derivedIssuer,
  })}\n`);
} catch (e) {
  process.stderr.write(`[smtp-peer] cannot listen: ${e.message}\n`);
  process.exit(1);
}
