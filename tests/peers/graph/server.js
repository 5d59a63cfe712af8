#!/usr/bin/env node
// Test peer: a stand-in for Microsoft Graph, for mailbridge's delivery and setup tests.
//
//   node server.js --port 0 --cert CERT --key KEY --jwks-url URL [--ca CA_FILE]
//                  [--audience https://graph.microsoft.com ...] [--issuer ISS] [--fast]
//                  [--latency-ms N] [--domains a,b] [--mailboxes FILE] [--settings JSON]
//
// Validates the RS256 access tokens of the identity-platform stand-in (tests/peers/idp) against
// its JWKS, and implements sendMail (MIME and JSON), /me, /users/{id}, drafts, upload sessions
// and chunked PUT, draft send, the 4 MB request limit, Send As, in-flight tracking per mailbox,
// fault injection, and the app-registration endpoints (lib/directory.js). Control API under
// /_test/. See README.md.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import { parseArgs } from 'node:util';

import { createLocalJWKSet, jwtVerify, errors as joseErrors } from 'jose';
import { simpleParser } from 'mailparser';

import { Directory } from './lib/directory.js';
import { E, ok, lower, sha256, uuid, isoNow, hasAny, parseFilter, matchesFilter, project } from './lib/util.js';

// ---------------------------------------------------------------------------------------------
// command line

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    cert: { type: 'string' },
    key: { type: 'string' },
    'jwks-url': { type: 'string' },
    ca: { type: 'string' },
    audience: { type: 'string', multiple: true },
    issuer: { type: 'string' },
    fast: { type: 'boolean', default: false },
    'latency-ms': { type: 'string' },
    domains: { type: 'string' },
    mailboxes: { type: 'string' },
    settings: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});

if (args.help || !args.cert || !args.key || !args['jwks-url']) {
  process.stderr.write('usage: node server.js --port P --cert CERT --key KEY --jwks-url URL [--ca CA_FILE] '
    + '[--audience AUD]... [--issuer ISS] [--fast] [--latency-ms N] [--domains a,b] [--mailboxes FILE] [--settings JSON]\n');
  process.exit(args.help ? 0 : 64);
}

const TENANT_ID = (/\/([0-9a-f-]{36})\//i.exec(args['jwks-url']) || [])[1] || '11111111-2222-3333-4444-555555555555';
const AUDIENCES = args.audience && args.audience.length
  ? args.audience.flatMap((a) => a.split(',')).map((a) => a.trim()).filter(Boolean)
  : ['https://graph.microsoft.com', 'https://graph.microsoft.com/', '00000003-0000-0000-c000-000000000000'];
const DOMAINS = (args.domains || 'contoso.test,contoso.onmicrosoft.com').split(',').map((d) => lower(d.trim())).filter(Boolean);
const MAX_ATTACHMENT = 150 * 1024 * 1024;

const DEFAULT_SETTINGS = {
  latency_ms: 0, // artificial latency before every Graph answer (benchmarks)
  fast: false, // sink mode: no mailparser, keep counts + sha256 only
  max_request_bytes: 4 * 1024 * 1024, // > this -> 413 RequestEntityTooLarge
  auto_mailboxes: true, // /users/{addr} in one of the tenant domains creates the mailbox
  enforce_read_permissions: true, // /me needs User.Read (or more); /users/{id} needs User.Read.All etc.
  require_mail_send_shared: false, // delegated From other than the mailbox also needs scp Mail.Send.Shared
  directory_any_scope: false, // directory endpoints accept any valid token (the IdP cannot mint Application.* scopes)
  enforce_directory_roles: true, // grants / app role assignments need an admin role of the signed-in user
  upload_session_ttl_s: 900,
  upload_response_case: 'both', // upload PUT 200 body: 'both' | 'camel' (expirationDateTime) | 'pascal' (ExpirationDateTime)
  clock_skew_s: 0, // tolerance for exp/nbf
  log_limit: 20000, // request log ring size
  record_limit: 100000, // recorded messages kept
};
const initialSettings = { ...DEFAULT_SETTINGS, fast: !!args.fast };
if (args['latency-ms']) initialSettings.latency_ms = Number(args['latency-ms']);
if (args.settings) Object.assign(initialSettings, checkSettings(JSON.parse(args.settings)));
let settings = { ...initialSettings };

function checkSettings(s) {
  const out = {};
  for (const [k, v] of Object.entries(s || {})) {
    if (!(k in DEFAULT_SETTINGS)) throw new Error(`unknown setting ${k}`);
    const t = typeof DEFAULT_SETTINGS[k];
    if (t === 'number' && !(typeof v === 'number' && Number.isFinite(v) && v >= 0)) throw new Error(`${k} must be a number >= 0`);
    if (t === 'boolean' && typeof v !== 'boolean') throw new Error(`${k} must be true or false`);
    if (k === 'upload_response_case' && !['both', 'camel', 'pascal'].includes(v)) throw new Error('upload_response_case: both|camel|pascal');
    out[k] = v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// mailboxes (= directory users)

const DEFAULT_MAILBOXES = [
  { id: 'aaaaaaaa-0000-4000-8000-000000000001', userPrincipalName: 'user@contoso.test', displayName: 'Test User' },
  { id: 'aaaaaaaa-0000-4000-8000-000000000002', userPrincipalName: 'admin@contoso.test', displayName: 'Tenant Admin', directory_roles: ['Global Administrator'] },
  { id: 'aaaaaaaa-0000-4000-8000-000000000003', userPrincipalName: 'alice@contoso.test', displayName: 'Alice Example' },
  { id: 'bbbbbbbb-0000-4000-8000-000000000001', userPrincipalName: 'shared@contoso.test', displayName: 'Shared Mailbox', kind: 'shared' },
];
const extraMailboxes = args.mailboxes ? JSON.parse(fs.readFileSync(args.mailboxes, 'utf8')) : [];

let mailboxes = new Map(); // id -> mailbox

function normaliseMailbox(m, old) {
  const upn = m.userPrincipalName || m.address || m.mail || old?.userPrincipalName;
  if (!upn) throw new Error('mailbox needs address (or userPrincipalName)');
  const mb = {
    ...(old || {}),
    id: m.id || old?.id || uuid(),
    userPrincipalName: upn,
    mail: m.mail !== undefined ? m.mail : (old?.mail !== undefined ? old.mail : upn),
    displayName: m.displayName || m.display_name || old?.displayName || upn.split('@')[0],
    aliases: (m.aliases || old?.aliases || []).map(lower),
    licensed: m.licensed !== undefined ? !!m.licensed : (old ? old.licensed : true),
    send_as: (m.send_as || old?.send_as || []).map(lower),
    full_access: (m.full_access || old?.full_access || []).map(lower),
    directory_roles: m.directory_roles || old?.directory_roles || [],
    kind: m.kind || old?.kind || 'user',
  };
  const [given, ...rest] = mb.displayName.split(' ');
  mb.givenName = m.givenName || given || null;
  mb.surname = m.surname || (rest.join(' ') || null);
  return mb;
}

function resetMailboxes() {
  mailboxes = new Map();
  for (const m of [...DEFAULT_MAILBOXES, ...extraMailboxes]) {
    const mb = normaliseMailbox(m);
    mailboxes.set(mb.id, mb);
  }
}
resetMailboxes();

function mailboxAddresses(mb) {
  return [lower(mb.userPrincipalName), lower(mb.mail), ...mb.aliases].filter(Boolean);
}

function findMailbox(idOrAddr) {
  const k = lower(idOrAddr);
  for (const mb of mailboxes.values()) {
    if (lower(mb.id) === k || mailboxAddresses(mb).includes(k)) return mb;
  }
  return undefined;
}

// /users/{x}: by id or address; an unknown address in a tenant domain is created when
// auto_mailboxes is on.
function resolveMailbox(idOrAddr) {
  const mb = findMailbox(idOrAddr);
  if (mb) return mb;
  const k = lower(idOrAddr);
  const at = k.lastIndexOf('@');
  if (settings.auto_mailboxes && at > 0 && DOMAINS.includes(k.slice(at + 1))) {
    const n = normaliseMailbox({ address: idOrAddr });
    mailboxes.set(n.id, n);
    return n;
  }
  return undefined;
}

// The signed-in user's mailbox (created from the token when unknown, e.g. a user added to the
// IdP at run time).
function mailboxOfPrincipal(p) {
  if (!p || p.kind !== 'delegated') return undefined;
  let mb = (p.oid && mailboxes.get(p.oid)) || (p.upn && findMailbox(p.upn));
  if (!mb && p.oid) {
    mb = normaliseMailbox({ id: p.oid, address: p.upn || `${p.oid}@${DOMAINS[0]}`, displayName: p.name });
    mailboxes.set(mb.id, mb);
  }
  return mb;
}

function userResource(mb) {
  return {
    '@odata.context': `${BASE_URL}/v1.0/$metadata#users/$entity`,
    businessPhones: [],
    displayName: mb.displayName,
    givenName: mb.givenName,
    jobTitle: null,
    mail: mb.mail,
    mobilePhone: null,
    officeLocation: null,
    preferredLanguage: null,
    surname: mb.surname,
    userPrincipalName: mb.userPrincipalName,
    id: mb.id,
  };
}

// ---------------------------------------------------------------------------------------------
// tokens

let jwks = { keys: [] };
let keySet = createLocalJWKSet(jwks);
let lastJwksFetch = 0;
const caPem = args.ca ? fs.readFileSync(args.ca) : undefined;

function fetchJwks() {
  return new Promise((resolve, reject) => {
    const req = https.get(args['jwks-url'], { ca: caPem, timeout: 5000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        try {
          if (res.statusCode !== 200) throw new Error(`JWKS HTTP ${res.statusCode}`);
          const j = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          if (!Array.isArray(j.keys)) throw new Error('JWKS without keys');
          jwks = j;
          keySet = createLocalJWKSet(j);
          lastJwksFetch = Date.now();
          resolve(j);
        } catch (e) {
          reject(e);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('JWKS fetch timed out')));
    req.on('error', reject);
  });
}

const tokenCache = new Map(); // token -> claims (verified), until exp

const MSG_EMPTY = 'Access token is empty.';
const MSG_EXPIRED = 'Access token has expired or is not yet valid.';
const MSG_AUDIENCE = 'Access token validation failure. Invalid audience.';
const MSG_INVALID = 'Access token validation failure.';
const MSG_ISSUER = 'Access token validation failure. Invalid issuer.';

async function verifyJwt(token) {
  const opts = { algorithms: ['RS256'], audience: AUDIENCES, clockTolerance: settings.clock_skew_s };
  if (args.issuer) opts.issuer = args.issuer;
  try {
    return (await jwtVerify(token, keySet, opts)).payload;
  } catch (e) {
    if (e instanceof joseErrors.JWKSNoMatchingKey && Date.now() - lastJwksFetch > 1000) {
      await fetchJwks().catch(() => {});
      return (await jwtVerify(token, keySet, opts)).payload;
    }
    throw e;
  }
}

// -> {principal} | {authError: message}
async function authenticate(req) {
  const h = req.headers.authorization;
  if (!h) return { authError: MSG_EMPTY, authState: 'none' };
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  if (!m) return { authError: MSG_EMPTY, authState: 'invalid' };
  const token = m[1];
  let claims = tokenCache.get(token);
  const now = Date.now() / 1000;
  if (claims && claims.exp && claims.exp + settings.clock_skew_s <= now) {
    tokenCache.delete(token);
    return { authError: MSG_EXPIRED, authState: 'invalid' };
  }
  if (!claims) {
    try {
      claims = await verifyJwt(token);
    } catch (e) {
      let msg = MSG_INVALID;
      if (e instanceof joseErrors.JWTExpired) msg = MSG_EXPIRED;
      else if (e instanceof joseErrors.JWTClaimValidationFailed) {
        if (e.claim === 'aud') msg = MSG_AUDIENCE;
        else if (e.claim === 'nbf' || e.claim === 'iat') msg = MSG_EXPIRED;
        else if (e.claim === 'iss') msg = MSG_ISSUER;
      }
      return { authError: msg, authState: 'invalid' };
    }
    if (tokenCache.size > 5000) tokenCache.clear();
    tokenCache.set(token, claims);
  }
  const scp = typeof claims.scp === 'string' ? claims.scp.split(' ').filter(Boolean) : [];
  const roles = Array.isArray(claims.roles) ? claims.roles : [];
  const isApp = claims.idtyp === 'app' || (!claims.scp && roles.length > 0) || (!claims.scp && !claims.preferred_username && !claims.upn);
  return {
    authState: isApp ? 'app' : 'delegated',
    principal: {
      kind: isApp ? 'app' : 'delegated',
      scopes: scp,
      roles,
      oid: claims.oid,
      upn: claims.preferred_username || claims.upn || claims.unique_name,
      name: claims.name,
      tid: claims.tid,
      appId: claims.appid || claims.azp || claims.client_id,
      claims,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// run-time state: messages, drafts, upload sessions, faults, in-flight, request log

let messages = [];
let messageSeq = 0;
let stats = freshStats();
let drafts = new Map(); // draft id -> draft
let uploads = new Map(); // session id -> session
let faults = [];
let faultSeq = 0;
let requestLog = [];
let requestSeq = 0;
let inflight = freshInflight();

function freshStats() {
  return { messages: 0, bytes: 0, by_mailbox: {}, by_via: {}, requests: 0, by_status: {}, faults_served: 0 };
}
function freshInflight() {
  return { global: { current: 0, max: 0 }, mailboxes: new Map(), apps: new Map() };
}

function inflightEnter(map, key) {
  let e = map.get(key);
  if (!e) {
    e = { current: 0, max: 0, total: 0 };
    map.set(key, e);
  }
  e.current += 1;
  e.total += 1;
  if (e.current > e.max) e.max = e.current;
  return e.current;
}

function inflightJson() {
  const obj = (m) => Object.fromEntries([...m.entries()].map(([k, v]) => [k, { ...v }]));
  return { global: { ...inflight.global }, mailboxes: obj(inflight.mailboxes), apps: obj(inflight.apps) };
}

function newDraftId() {
  // Graph/Exchange ids look like "AAMkAG…AAA=" (base64 with '-' '_' and a trailing '=')
  return `AAMkAG${crypto.randomBytes(33).toString('base64url')}AAA=`;
}

// ---------------------------------------------------------------------------------------------
// MIME helpers

// Strict base64 as .NET's Convert.FromBase64String: whitespace ignored, alphabet, padding.
function strictBase64(text) {
  const s = text.replace(/[\t\n\r ]+/g, '');
  if (s.length === 0) return { empty: true };
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return null;
  return { buf: Buffer.from(s, 'base64') };
}

function addrList(a) {
  if (!a) return [];
  const out = [];
  for (const o of Array.isArray(a) ? a : [a]) {
    for (const v of o.value || []) {
      if (Array.isArray(v.group)) for (const g of v.group) { if (g.address) out.push(g.address); }
      else if (v.address) out.push(v.address);
    }
  }
  return out;
}

async function parseMime(buf) {
  const parsed = await simpleParser(buf, {
    skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true, skipImageLinks: true, keepCidLinks: true,
  });
  const recipients = { to: addrList(parsed.to), cc: addrList(parsed.cc), bcc: addrList(parsed.bcc) };
  const fromList = addrList(parsed.from);
  return {
    from: fromList[0] || null,
    recipients,
    subject: parsed.subject ?? null,
    message_id: parsed.messageId ?? null,
    headers: (parsed.headerLines || []).map((h) => ({ key: h.key, line: h.line })),
    attachments: (parsed.attachments || []).map((a) => ({
      name: a.filename ?? null, contentType: a.contentType, size: a.size, sha256: sha256(a.content),
      isInline: a.contentDisposition === 'inline', contentId: a.cid ?? null, source: 'mime',
    })),
    text: parsed.text ?? null,
  };
}

// Re-assemble a draft's MIME with the uploaded attachments: the original message becomes the
// first part of a new multipart/mixed; each attachment is a base64 part. Non Content-* headers
// stay at the top.
function assembleMime(raw, attachments) {
  if (!attachments.length) return raw;
  const text = raw.toString('latin1');
  let idx = text.indexOf('\r\n\r\n');
  let sepLen = 4;
  const lf = text.indexOf('\n\n');
  if (idx < 0 || (lf >= 0 && lf < idx)) {
    idx = lf;
    sepLen = 2;
  }
  const headText = idx < 0 ? text : text.slice(0, idx);
  const body = idx < 0 ? '' : text.slice(idx + sepLen);
  const fields = [];
  for (const line of headText.split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && fields.length) fields[fields.length - 1] += `\r\n${line}`;
    else if (line) fields.push(line);
  }
  const isContent = (f) => /^content-/i.test(f);
  const top = fields.filter((f) => !isContent(f) && !/^mime-version\s*:/i.test(f));
  let inner = fields.filter(isContent);
  if (!inner.some((f) => /^content-type\s*:/i.test(f))) inner = ['Content-Type: text/plain; charset=us-ascii', ...inner];
  const boundary = `----=_mbgraph_${crypto.randomBytes(12).toString('hex')}`;
  const q = (s) => String(s).replace(/[\r\n"\\]/g, '_');
  const paramName = (n) => (/^[\x20-\x7e]*$/.test(n) ? `"${q(n)}"` : null);
  const parts = [];
  parts.push(`${inner.join('\r\n')}\r\n\r\n${body}`);
  for (const a of attachments) {
    const name = a.name || 'attachment';
    const ascii = paramName(name);
    const enc = `UTF-8''${encodeURIComponent(name)}`;
    const h = [
      `Content-Type: ${a.contentType || 'application/octet-stream'}; ${ascii ? `name=${ascii}` : `name*=${enc}`}`,
      `Content-Disposition: ${a.isInline ? 'inline' : 'attachment'}; ${ascii ? `filename=${ascii}` : `filename*=${enc}`}`,
    ];
    if (a.contentId) h.push(`Content-ID: <${String(a.contentId).replace(/^<|>$/g, '')}>`);
    h.push('Content-Transfer-Encoding: base64');
    const b64 = a.data.toString('base64').replace(/.{76}/g, '$&\r\n');
    parts.push(`${h.join('\r\n')}\r\n\r\n${b64}`);
  }
  const out = [...top, 'MIME-Version: 1.0', `Content-Type: multipart/mixed; boundary="${boundary}"`].join('\r\n')
    + '\r\n\r\n'
    + parts.map((p) => `--${boundary}\r\n${p}\r\n`).join('')
    + `--${boundary}--\r\n`;
  return Buffer.from(out, 'latin1');
}

// JSON message (sendMail / draft): validation and summary.
function jsonMessageInfo(msg) {
  if (!msg || typeof msg !== 'object' || Array.isArray(msg)) return { error: E(400, 'ErrorInvalidRequest', 'The message is missing or not an object.') };
  const rl = (k) => {
    const v = msg[k];
    if (v == null) return [];
    if (!Array.isArray(v)) throw new Error(k);
    return v.map((r) => r?.emailAddress?.address).filter(Boolean);
  };
  let recipients;
  try {
    recipients = { to: rl('toRecipients'), cc: rl('ccRecipients'), bcc: rl('bccRecipients') };
  } catch (e) {
    return { error: E(400, 'RequestBodyRead', `An unexpected 'StartObject' node was found for property named '${e.message}' when reading from the JSON reader. A 'StartArray' node was expected.`) };
  }
  for (const h of msg.internetMessageHeaders || []) {
    if (!/^x-/i.test(String(h?.name || ''))) {
      return { error: E(400, 'InvalidInternetMessageHeader', `The internet message header name '${h?.name}' should start with 'x-' or 'X-'.`) };
    }
  }
  const attachments = [];
  for (const a of msg.attachments || []) {
    if (lower(a['@odata.type']) !== '#microsoft.graph.fileattachment') {
      attachments.push({ name: a.name ?? null, type: a['@odata.type'] ?? null, source: 'json' });
      continue;
    }
    const d = strictBase64(String(a.contentBytes || ''));
    if (!d) return { error: E(400, 'ErrorInvalidBase64String', 'Invalid base64 string for attachment contentBytes.') };
    const data = d.buf || Buffer.alloc(0);
    attachments.push({ name: a.name ?? null, contentType: a.contentType ?? null, size: data.length, sha256: sha256(data), isInline: !!a.isInline, contentId: a.contentId ?? null, source: 'json' });
  }
  return {
    from: msg.from?.emailAddress?.address || null,
    recipients,
    subject: msg.subject ?? null,
    attachments,
  };
}

function allRecipients(r) {
  return [...r.to, ...r.cc, ...r.bcc];
}

function fromAllowed(mb, fromAddr) {
  if (!fromAddr) return true;
  const f = lower(fromAddr);
  return mailboxAddresses(mb).includes(f) || mb.send_as.includes(f);
}

const SEND_AS_DENIED = 'The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account. Cannot submit message.';
const NO_RECIPIENTS = "At least one recipient is not valid., A message can't be sent because it contains no recipients.";
const ACCESS_DENIED = 'Access is denied. Check credentials and try again.';

function recordMessage(ctx, mb, via, info) {
  messageSeq += 1;
  const m = {
    id: `msg-${messageSeq}`,
    seq: messageSeq,
    time: new Date().toISOString(),
    mailbox: mb.userPrincipalName,
    mailbox_id: mb.id,
    via,
    auth: ctx.principal?.kind ?? null,
    app_id: ctx.principal?.appId ?? null,
    user: ctx.principal?.upn ?? null,
    request_id: ctx.requestId,
    client_request_id: ctx.clientRequestId,
    ...info,
  };
  if (m.mime) {
    m.size = m.mime.length;
    m.sha256 = sha256(m.mime);
  }
  if (settings.fast) {
    for (const k of ['mime', 'json', 'headers', 'text']) delete m[k];
    if (m.attachments) m.attachments = m.attachments.map(({ data, ...rest }) => rest);
  }
  messages.push(m);
  if (messages.length > settings.record_limit) messages.splice(0, messages.length - settings.record_limit);
  stats.messages += 1;
  stats.bytes += m.size || 0;
  stats.by_mailbox[m.mailbox] = (stats.by_mailbox[m.mailbox] || 0) + 1;
  stats.by_via[via] = (stats.by_via[via] || 0) + 1;
  return m;
}

function messageJson(m, { omitMime = false } = {}) {
  const { mime, ...rest } = m;
  const out = { ...rest };
  if (out.attachments) out.attachments = out.attachments.map(({ data, ...a }) => a);
  if (mime && !omitMime) out.mime_b64 = mime.toString('base64');
  if (out.recipients) out.all_recipients = allRecipients(out.recipients);
  return out;
}

// ---------------------------------------------------------------------------------------------
// mail endpoints

const DELEGATED_READ = ['User.Read', 'User.ReadWrite', 'User.ReadBasic.All', 'User.Read.All', 'User.ReadWrite.All', 'Directory.Read.All', 'Directory.ReadWrite.All', 'Directory.AccessAsUser.All'];
const OTHER_USER_READ = ['User.ReadBasic.All', 'User.Read.All', 'User.ReadWrite.All', 'Directory.Read.All', 'Directory.ReadWrite.All', 'Directory.AccessAsUser.All'];
const APP_USER_READ = ['User.Read.All', 'User.ReadBasic.All', 'User.ReadWrite.All', 'Directory.Read.All', 'Directory.ReadWrite.All'];

// Resolve the mailbox of /me or /users/{x} and check the permission `perm` ('send' | 'readwrite').
// -> {mb} or {error}
function mailAccess(ctx, perm) {
  const p = ctx.principal;
  let mb;
  if (ctx.userSel === 'me') {
    if (p.kind !== 'delegated') return { error: E(400, 'BadRequest', '/me request is only valid with delegated authentication flow.') };
    mb = mailboxOfPrincipal(p);
  } else {
    mb = ctx.mailbox || resolveMailbox(ctx.userSel);
    if (!mb) return { error: E(404, 'ErrorInvalidUser', `The requested user '${ctx.userSel}' is invalid.`) };
  }
  const scopeFor = { send: 'Mail.Send', readwrite: 'Mail.ReadWrite' }[perm];
  if (p.kind === 'app') {
    if (!hasAny(p.roles, [scopeFor])) return { error: E(403, 'ErrorAccessDenied', ACCESS_DENIED) };
  } else {
    const own = mailboxOfPrincipal(p);
    if (own && own.id === mb.id) {
      if (!hasAny(p.scopes, [scopeFor])) return { error: E(403, 'ErrorAccessDenied', ACCESS_DENIED) };
    } else {
      // another user's / a shared mailbox: Mail.Send.Shared / Mail.ReadWrite.Shared + Full Access
      if (!hasAny(p.scopes, [`${scopeFor}.Shared`]) || !mb.full_access.includes(lower(own?.userPrincipalName))) {
        return { error: E(403, 'ErrorAccessDenied', ACCESS_DENIED) };
      }
    }
  }
  if (!mb.licensed) return { error: E(404, 'MailboxNotEnabledForRESTAPI', 'REST API is not yet supported for this mailbox.') };
  return { mb };
}

function checkFrom(ctx, mb, from) {
  if (!fromAllowed(mb, from)) return E(403, 'ErrorSendAsDenied', SEND_AS_DENIED);
  if (settings.require_mail_send_shared && from && ctx.principal.kind === 'delegated'
      && !mailboxAddresses(mb).includes(lower(from)) && !hasAny(ctx.principal.scopes, ['Mail.Send.Shared'])) {
    return E(403, 'ErrorSendAsDenied', SEND_AS_DENIED);
  }
  return null;
}

function contentTypeOf(req) {
  return lower(String(req.headers['content-type'] || '').split(';')[0].trim());
}

function parseJsonBody(body) {
  try {
    return { json: JSON.parse(body.toString('utf8') || 'null') };
  } catch (e) {
    return { error: E(400, 'RequestBodyRead', `Invalid JSON in the request body: ${e.message}`) };
  }
}

async function sendMail(ctx, body) {
  const { mb, error } = mailAccess(ctx, 'send');
  if (error) return error;
  const ct = contentTypeOf(ctx.req);
  if (ct === 'text/plain') {
    const d = strictBase64(body.toString('latin1'));
    if (d === null) return E(400, 'ErrorMimeContentInvalidBase64String', 'Invalid base64 string for MIME content.');
    if (d.empty) return E(400, 'ErrorMimeContentInvalid', 'The MIME content is empty.');
    if (settings.fast) {
      recordMessage(ctx, mb, 'sendMail-mime', { form: 'mime', size: d.buf.length, sha256: sha256(d.buf) });
      return ok(202);
    }
    let info;
    try {
      info = await parseMime(d.buf);
    } catch (e) {
      return E(400, 'ErrorMimeContentInvalid', `The MIME content could not be parsed: ${e.message}`);
    }
    if (!allRecipients(info.recipients).length) return E(400, 'ErrorInvalidRecipients', NO_RECIPIENTS);
    const fe = checkFrom(ctx, mb, info.from);
    if (fe) return fe;
    recordMessage(ctx, mb, 'sendMail-mime', { form: 'mime', ...info, mime: d.buf });
    return ok(202);
  }
  if (ct === 'application/json') {
    const { json, error: je } = parseJsonBody(body);
    if (je) return je;
    if (!json || typeof json !== 'object' || !json.message) return E(400, 'ErrorInvalidRequest', "The request is missing the required parameter 'message'.");
    const info = jsonMessageInfo(json.message);
    if (info.error) return info.error;
    if (!allRecipients(info.recipients).length) return E(400, 'ErrorInvalidRecipients', NO_RECIPIENTS);
    const fe = checkFrom(ctx, mb, info.from);
    if (fe) return fe;
    recordMessage(ctx, mb, 'sendMail-json', {
      form: 'json', ...info, save_to_sent_items: json.saveToSentItems !== false, json: settings.fast ? undefined : json,
      size: body.length, sha256: sha256(body),
    });
    return ok(202);
  }
  return E(415, 'UnsupportedMediaType', `Content-Type '${ct || '(none)'}' is not supported; use application/json or text/plain (base64 MIME).`);
}

function draftResource(d) {
  const rec = (list) => list.map((address) => ({ emailAddress: { name: address, address } }));
  const fromAddr = d.from || d.mailbox_upn;
  return {
    '@odata.context': `${BASE_URL}/v1.0/$metadata#users('${d.mailbox_id}')/messages/$entity`,
    '@odata.etag': `W/"${d.changeKey}"`,
    id: d.id,
    createdDateTime: d.created,
    lastModifiedDateTime: d.modified,
    changeKey: d.changeKey,
    categories: [],
    receivedDateTime: d.created,
    sentDateTime: null,
    hasAttachments: d.attachments.length > 0 || (d.mime_attachments || 0) > 0,
    internetMessageId: d.message_id || null,
    subject: d.subject || '',
    bodyPreview: String(d.text || '').slice(0, 255),
    importance: 'normal',
    parentFolderId: 'drafts',
    conversationId: d.conversationId,
    isDeliveryReceiptRequested: false,
    isReadReceiptRequested: false,
    isRead: true,
    isDraft: true,
    webLink: `https://outlook.office365.com/owa/?ItemID=${encodeURIComponent(d.id)}&exvsurl=1&viewmodel=ReadMessageItem`,
    body: { contentType: 'text', content: d.text || '' },
    sender: { emailAddress: { name: fromAddr, address: fromAddr } },
    from: { emailAddress: { name: fromAddr, address: fromAddr } },
    toRecipients: rec(d.recipients.to),
    ccRecipients: rec(d.recipients.cc),
    bccRecipients: rec(d.recipients.bcc),
    replyTo: [],
    flag: { flagStatus: 'notFlagged' },
  };
}

async function createDraft(ctx, body) {
  const { mb, error } = mailAccess(ctx, 'readwrite');
  if (error) return error;
  const ct = contentTypeOf(ctx.req);
  const now = isoNow();
  const d = {
    id: newDraftId(), mailbox_id: mb.id, mailbox_upn: mb.userPrincipalName, created: now, modified: now,
    changeKey: crypto.randomBytes(12).toString('base64'), conversationId: `AAQkAG${crypto.randomBytes(24).toString('base64url')}=`,
    attachments: [], recipients: { to: [], cc: [], bcc: [] }, from: null,
  };
  if (ct === 'text/plain') {
    const dec = strictBase64(body.toString('latin1'));
    if (dec === null) return E(400, 'ErrorMimeContentInvalidBase64String', 'Invalid base64 string for MIME content.');
    if (dec.empty) return E(400, 'ErrorMimeContentInvalid', 'The MIME content is empty.');
    d.form = 'mime';
    d.mime = dec.buf;
    if (!settings.fast) {
      try {
        const info = await parseMime(dec.buf);
        Object.assign(d, { from: info.from, recipients: info.recipients, subject: info.subject, message_id: info.message_id, headers: info.headers, text: info.text, mime_attachments: info.attachments.length, parsed_attachments: info.attachments });
      } catch (e) {
        return E(400, 'ErrorMimeContentInvalid', `The MIME content could not be parsed: ${e.message}`);
      }
    }
  } else if (ct === 'application/json') {
    const { json, error: je } = parseJsonBody(body);
    if (je) return je;
    const info = jsonMessageInfo(json);
    if (info.error) return info.error;
    d.form = 'json';
    d.json = json;
    Object.assign(d, { from: info.from, recipients: info.recipients, subject: info.subject, json_attachments: info.attachments, text: json?.body?.content });
  } else {
    return E(415, 'UnsupportedMediaType', `Content-Type '${ct || '(none)'}' is not supported; use application/json or text/plain (base64 MIME).`);
  }
  drafts.set(d.id, d);
  return ok(201, draftResource(d), { Location: `${BASE_URL}/v1.0/users('${mb.id}')/messages('${d.id}')` });
}

function findDraft(mb, id) {
  const d = drafts.get(id);
  if (!d || d.mailbox_id !== mb.id) return null;
  return d;
}
const NOT_FOUND_ITEM = () => E(404, 'ErrorItemNotFound', 'The specified object was not found in the store.');

function attachmentResource(d, a) {
  return {
    '@odata.type': '#microsoft.graph.fileAttachment',
    id: a.id, lastModifiedDateTime: a.time, name: a.name, contentType: a.contentType, size: a.size,
    isInline: a.isInline, contentId: a.contentId,
  };
}

async function addAttachment(ctx, body, draftId) {
  const { mb, error } = mailAccess(ctx, 'readwrite');
  if (error) return error;
  const d = findDraft(mb, draftId);
  if (!d) return NOT_FOUND_ITEM();
  const { json, error: je } = parseJsonBody(body);
  if (je) return je;
  if (lower(json?.['@odata.type']) !== '#microsoft.graph.fileattachment') return E(400, 'ErrorInvalidRequest', 'Only #microsoft.graph.fileAttachment is supported by this stand-in.');
  const dec = strictBase64(String(json.contentBytes || ''));
  if (!dec || !json.name) return E(400, 'ErrorInvalidRequest', 'name and base64 contentBytes are required.');
  const data = dec.buf || Buffer.alloc(0);
  const a = { id: `AAMkAG${crypto.randomBytes(24).toString('base64url')}=`, name: json.name, contentType: json.contentType || 'application/octet-stream', size: data.length, isInline: !!json.isInline, contentId: json.contentId || null, data, sha256: sha256(data), time: isoNow(), source: 'post' };
  d.attachments.push(a);
  return ok(201, attachmentResource(d, a));
}

async function createUploadSession(ctx, body, draftId) {
  const { mb, error } = mailAccess(ctx, 'readwrite');
  if (error) return error;
  const d = findDraft(mb, draftId);
  if (!d) return NOT_FOUND_ITEM();
  const { json, error: je } = parseJsonBody(body);
  if (je) return je;
  const item = json?.AttachmentItem || json?.attachmentItem;
  if (!item || lower(item.attachmentType) !== 'file') return E(400, 'ErrorInvalidRequest', "AttachmentItem with attachmentType 'file' is required.");
  if (!item.name) return E(400, 'ErrorInvalidRequest', 'AttachmentItem.name is required.');
  if (!Number.isInteger(item.size) || item.size <= 0) return E(400, 'ErrorInvalidRequest', 'AttachmentItem.size must be a positive integer.');
  if (item.size > MAX_ATTACHMENT) return E(400, 'ErrorAttachmentSizeLimitExceeded', 'The attachment exceeds the maximum size of 150 MB.');
  const sid = crypto.randomBytes(24).toString('base64url');
  const authtoken = crypto.randomBytes(32).toString('base64url');
  const expires = Date.now() + settings.upload_session_ttl_s * 1000;
  const s = {
    id: sid, authtoken, draft_id: d.id, mailbox_id: mb.id, app_id: ctx.principal.appId,
    name: item.name, size: item.size, contentType: item.contentType || 'application/octet-stream',
    isInline: !!item.isInline, contentId: item.contentId || null, next: 0, chunks: [], expires, done: false,
  };
  uploads.set(sid, s);
  return ok(201, {
    '@odata.context': `${BASE_URL}/v1.0/$metadata#microsoft.graph.uploadSession`,
    uploadUrl: `${BASE_URL}/upload/${sid}?authtoken=${authtoken}`,
    expirationDateTime: new Date(expires).toISOString(),
    nextExpectedRanges: ['0-'],
  });
}

function uploadStatusBody(s) {
  const exp = new Date(s.expires).toISOString();
  const next = [String(s.next)];
  const body = { '@odata.context': `${BASE_URL}/api/v2.0/$metadata#Microsoft.OutlookServices.UploadSession` };
  if (settings.upload_response_case !== 'camel') Object.assign(body, { ExpirationDateTime: exp, NextExpectedRanges: next });
  if (settings.upload_response_case !== 'pascal') Object.assign(body, { expirationDateTime: exp, nextExpectedRanges: next });
  return body;
}

async function uploadPut(ctx, body, s) {
  const req = ctx.req;
  if (req.headers.authorization) {
    return E(401, 'InvalidAuthenticationToken', 'Do not send an Authorization header to the upload URL; it is pre-authenticated (authtoken).');
  }
  if (req.headers['content-length'] === undefined) return E(411, 'LengthRequired', 'Content-Length is required.');
  const cr = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(req.headers['content-range'] || '').trim());
  if (!cr) return E(400, 'InvalidContentRange', "Content-Range must be 'bytes {start}-{end}/{total}'.");
  const [a, b, total] = [Number(cr[1]), Number(cr[2]), Number(cr[3])];
  if (total !== s.size) return E(400, 'InvalidContentRange', `The total size ${total} does not match the session size ${s.size}.`);
  if (a !== s.next) return { ...E(400, 'InvalidContentRange', `Chunks must be sent in order; the next expected range starts at ${s.next}.`), extra: { nextExpectedRanges: [String(s.next)] } };
  if (b < a || b >= total) return E(400, 'InvalidContentRange', 'The range end is before its start or beyond the total size.');
  if (b - a + 1 !== body.length) return E(400, 'InvalidContentRange', `The range ${a}-${b} is ${b - a + 1} bytes but the body has ${body.length}.`);
  s.chunks.push(body);
  s.next = b + 1;
  if (s.next < s.size) return ok(200, uploadStatusBody(s));
  // complete: attach to the draft
  s.done = true;
  uploads.delete(s.id);
  const data = Buffer.concat(s.chunks);
  s.chunks = [];
  const d = drafts.get(s.draft_id);
  if (!d) return NOT_FOUND_ITEM();
  const att = { id: `AAMkAG${crypto.randomBytes(24).toString('base64url')}=`, name: s.name, contentType: s.contentType, size: data.length, isInline: s.isInline, contentId: s.contentId, data, sha256: sha256(data), time: isoNow(), source: 'upload' };
  d.attachments.push(att);
  return ok(201, undefined, { Location: `${BASE_URL}/v1.0/users('${d.mailbox_id}')/messages('${d.id}')/attachments('${att.id}')` });
}

async function sendDraft(ctx, draftId) {
  const { mb, error } = mailAccess(ctx, 'send');
  if (error) return error;
  const d = findDraft(mb, draftId);
  if (!d) return NOT_FOUND_ITEM();
  if (!settings.fast && !allRecipients(d.recipients).length) return E(400, 'ErrorInvalidRecipients', NO_RECIPIENTS);
  const fe = settings.fast ? null : checkFrom(ctx, mb, d.from);
  if (fe) return fe;
  const atts = d.attachments;
  const info = {
    form: d.form, from: d.from, recipients: d.recipients, subject: d.subject ?? null, message_id: d.message_id ?? null,
    draft_id: d.id,
    attachments: [
      ...(d.parsed_attachments || []), ...(d.json_attachments || []),
      ...atts.map((a) => ({ name: a.name, contentType: a.contentType, size: a.size, sha256: a.sha256, isInline: a.isInline, contentId: a.contentId, source: a.source, attachment_id: a.id, data: a.data })),
    ],
  };
  if (d.form === 'mime') {
    info.draft_mime_sha256 = sha256(d.mime);
    info.mime = assembleMime(d.mime, atts);
    info.headers = d.headers;
  } else {
    info.json = d.json;
  }
  drafts.delete(d.id);
  for (const [sid, s] of uploads) if (s.draft_id === d.id) uploads.delete(sid);
  recordMessage(ctx, mb, 'draft-send', info);
  return ok(202);
}

function profile(ctx) {
  const p = ctx.principal;
  if (ctx.userSel === 'me') {
    if (p.kind !== 'delegated') return E(400, 'BadRequest', '/me request is only valid with delegated authentication flow.');
    if (settings.enforce_read_permissions && !hasAny(p.scopes, DELEGATED_READ)) return E(403, 'Authorization_RequestDenied', 'Insufficient privileges to complete the operation.');
    return ok(200, userResource(mailboxOfPrincipal(p)));
  }
  const mb = ctx.mailbox || resolveMailbox(ctx.userSel);
  if (!mb) return E(404, 'Request_ResourceNotFound', `Resource '${ctx.userSel}' does not exist or one of its queried reference-property objects are not present.`);
  if (settings.enforce_read_permissions) {
    const own = mailboxOfPrincipal(p);
    const okPerm = p.kind === 'app' ? hasAny(p.roles, APP_USER_READ)
      : (own && own.id === mb.id ? hasAny(p.scopes, DELEGATED_READ) : hasAny(p.scopes, OTHER_USER_READ));
    if (!okPerm) return E(403, 'Authorization_RequestDenied', 'Insufficient privileges to complete the operation.');
  }
  return ok(200, project(userResource(mb), ctx.url.searchParams.get('$select')));
}

function listUsers(ctx) {
  const p = ctx.principal;
  if (settings.enforce_read_permissions && !(p.kind === 'app' ? hasAny(p.roles, APP_USER_READ) : hasAny(p.scopes, OTHER_USER_READ))) {
    return E(403, 'Authorization_RequestDenied', 'Insufficient privileges to complete the operation.');
  }
  const clauses = parseFilter(ctx.url.searchParams.get('$filter'));
  if (!clauses) return E(400, 'Request_UnsupportedQuery', 'Unsupported Query.');
  const value = [...mailboxes.values()].map(userResource).filter((u) => matchesFilter(u, clauses))
    .map(({ '@odata.context': _, ...u }) => project(u, ctx.url.searchParams.get('$select')));
  return ok(200, { '@odata.context': `${BASE_URL}/v1.0/$metadata#users`, value });
}

// ---------------------------------------------------------------------------------------------
// faults

const FAULT_KINDS = {
  throttle: { status: 429, code: 'ApplicationThrottled', message: 'Application is over its MailboxConcurrency limit.', retry_after: 1 },
  unavailable: { status: 503, code: 'serviceNotAvailable', message: 'Service Unavailable' },
  gateway_timeout: { status: 504, code: 'UnknownError', message: 'Gateway Timeout' },
  unauthorized: { status: 401, code: 'InvalidAuthenticationToken', message: MSG_EXPIRED },
  access_denied: { status: 403, code: 'ErrorAccessDenied', message: 'Access to OData is disabled.' },
  send_as_denied: { status: 403, code: 'ErrorSendAsDenied', message: SEND_AS_DENIED },
  mailbox_not_enabled: { status: 404, code: 'MailboxNotEnabledForRESTAPI', message: 'REST API is not yet supported for this mailbox.' },
  invalid_user: { status: 404, code: 'ErrorInvalidUser', message: "The requested user '{mailbox}' is invalid." },
  size_exceeded: { status: 400, code: 'ErrorMessageSizeExceeded', message: 'The message exceeds the maximum supported size.' },
  too_large: { status: 413, code: 'RequestEntityTooLarge', message: 'The maximum request length supported is 4MB.' },
  invalid_recipients: { status: 400, code: 'ErrorInvalidRecipients', message: NO_RECIPIENTS },
  server_error: { status: 500, code: 'generalException', message: 'General exception while processing.' },
  error: { status: 500, code: 'generalException', message: 'General exception while processing.' }, // custom: give status/code/message
  delay: {}, // wait delay_ms, then answer normally
  reset: {}, // (after delay_ms) destroy the socket without answering
  hang: {}, // wait delay_ms (default 60000) without answering, then destroy the socket
};

function addFault(f) {
  if (!f || typeof f !== 'object') throw new Error('fault must be an object');
  let kind = f.kind;
  if (!kind && f.status) kind = 'error';
  if (!kind && f.delay_ms) kind = 'delay';
  if (!FAULT_KINDS[kind]) throw new Error(`unknown fault kind ${kind}; one of ${Object.keys(FAULT_KINDS).join(', ')}`);
  const count = f.count === undefined ? 1 : Number(f.count);
  if (!Number.isInteger(count) || count === 0 || count < -1) throw new Error('count must be a positive integer or -1');
  const entry = {
    id: ++faultSeq, kind, count, served: 0,
    mailbox: f.mailbox ? lower(f.mailbox) : null,
    path_prefix: f.path_prefix || null,
    method: f.method ? String(f.method).toUpperCase() : null,
    status: f.status ?? FAULT_KINDS[kind].status ?? null,
    code: f.code ?? FAULT_KINDS[kind].code ?? null,
    message: f.message ?? FAULT_KINDS[kind].message ?? null,
    retry_after: f.retry_after !== undefined ? f.retry_after : (FAULT_KINDS[kind].retry_after ?? null),
    delay_ms: Number(f.delay_ms || (kind === 'hang' ? 60000 : 0)),
    headers: f.headers || null,
  };
  faults.push(entry);
  return entry;
}

function takeFault(ctx) {
  for (const f of faults) {
    if (f.method && f.method !== ctx.req.method) continue;
    if (f.path_prefix && !ctx.url.pathname.startsWith(f.path_prefix)) continue;
    if (f.mailbox) {
      const keys = ctx.mailbox ? [...mailboxAddresses(ctx.mailbox), lower(ctx.mailbox.id)] : (ctx.mailboxKey ? [ctx.mailboxKey] : []);
      if (!keys.includes(f.mailbox)) continue;
    }
    f.served += 1;
    if (f.count > 0) {
      f.count -= 1;
      if (f.count === 0) faults = faults.filter((x) => x !== f);
    }
    stats.faults_served += 1;
    return f;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing

let BASE_URL = '';
const directory = new Directory({
  tenantId: TENANT_ID,
  baseUrl: () => BASE_URL,
  settings: () => settings,
  findUser: (id) => findMailbox(id),
  userResource: (mb) => userResource(mb),
  mailboxOfPrincipal,
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function readBody(req, limit) {
  return new Promise((resolve) => {
    const chunks = [];
    let length = 0;
    let tooLarge = false;
    req.on('data', (c) => {
      length += c.length;
      if (length > limit) {
        tooLarge = true;
        chunks.length = 0;
      } else chunks.push(c);
    });
    req.on('end', () => resolve({ buf: tooLarge ? null : Buffer.concat(chunks), length, tooLarge }));
    req.on('error', () => resolve({ buf: null, length, tooLarge, aborted: true }));
    req.on('close', () => resolve({ buf: tooLarge ? null : Buffer.concat(chunks), length, tooLarge, aborted: !req.complete }));
  });
}

function respond(ctx, r) {
  const { res } = ctx;
  if (res.headersSent || res.destroyed || ctx.socketGone) return;
  const headers = { 'request-id': ctx.requestId, 'client-request-id': ctx.clientRequestId, ...(r.headers || {}) };
  let payload = null;
  if (r.error) {
    payload = { error: { ...r.error, innerError: { date: isoNow(), 'request-id': ctx.requestId, 'client-request-id': ctx.clientRequestId } }, ...(r.extra || {}) };
  } else if (r.body !== undefined) payload = r.body;
  ctx.status = r.status;
  ctx.leave?.();
  if (payload === null) {
    headers['Content-Length'] = 0;
    res.writeHead(r.status, headers);
    res.end();
    return;
  }
  const buf = Buffer.from(JSON.stringify(payload));
  headers['Content-Type'] = ctx.isControl ? 'application/json; charset=utf-8' : 'application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8';
  headers['Content-Length'] = buf.length;
  res.writeHead(r.status, headers);
  res.end(buf);
}

function rawRespond(ctx, status, contentType, buf) {
  ctx.status = status;
  ctx.leave?.();
  ctx.res.writeHead(status, { 'request-id': ctx.requestId, 'client-request-id': ctx.clientRequestId, 'Content-Type': contentType, 'Content-Length': buf.length });
  ctx.res.end(buf);
}

const MAIL_ROUTES = new Set(['sendmail', 'messages']);

// Decide the route's user selector and mailbox from the path (before authentication errors).
function classify(ctx, segs) {
  // segs: after /v1.0
  const s0 = lower(segs[0]);
  if (s0 === 'me') ctx.userSel = 'me';
  else if (s0 === 'users' && segs.length >= 2) ctx.userSel = segs[1];
  if (ctx.userSel === 'me') ctx.mailbox = mailboxOfPrincipal(ctx.principal);
  else if (ctx.userSel) {
    ctx.mailbox = (segs.length >= 3 && MAIL_ROUTES.has(lower(segs[2]))) || segs.length === 2 ? resolveMailbox(ctx.userSel) : findMailbox(ctx.userSel);
  }
  ctx.mailboxKey = ctx.mailbox ? lower(ctx.mailbox.userPrincipalName) : (ctx.userSel && ctx.userSel !== 'me' ? lower(ctx.userSel) : null);
}

async function routeGraph(ctx, segs, body) {
  const m = ctx.req.method;
  const s = segs.map((x) => x);
  const ls = s.map(lower);
  const user = ls[0] === 'me' ? 1 : (ls[0] === 'users' && s.length >= 2 ? 2 : 0);
  if (user) {
    const r = ls.slice(user);
    if (r.length === 0) {
      if (m === 'GET') return profile(ctx);
      return E(405, 'BadRequest', 'Unsupported method.');
    }
    if (r[0] === 'sendmail' && r.length === 1) return m === 'POST' ? sendMail(ctx, body) : E(405, 'BadRequest', 'Unsupported method.');
    if (r[0] === 'messages') {
      const id = s[user + 1];
      if (r.length === 1) return m === 'POST' ? createDraft(ctx, body) : E(405, 'BadRequest', 'Listing messages is not supported by this stand-in.');
      if (r.length === 2) {
        const { mb, error } = mailAccess(ctx, 'readwrite');
        if (error) return error;
        const d = findDraft(mb, id);
        if (!d) return NOT_FOUND_ITEM();
        if (m === 'GET') return ok(200, draftResource(d));
        if (m === 'DELETE') {
          drafts.delete(d.id);
          return ok(204);
        }
        return E(405, 'BadRequest', 'Unsupported method.');
      }
      if (r[2] === 'send' && r.length === 3 && m === 'POST') return sendDraft(ctx, id);
      if (r[2] === 'attachments') {
        if (r.length === 3 && m === 'POST') return addAttachment(ctx, body, id);
        if (r.length === 3 && m === 'GET') {
          const { mb, error } = mailAccess(ctx, 'readwrite');
          if (error) return error;
          const d = findDraft(mb, id);
          if (!d) return NOT_FOUND_ITEM();
          return ok(200, { value: d.attachments.map((a) => attachmentResource(d, a)) });
        }
        if (r.length === 4 && r[3] === 'createuploadsession' && m === 'POST') return createUploadSession(ctx, body, id);
      }
    }
    return E(400, 'BadRequest', `Resource not found for the segment '${s[s.length - 1]}'.`);
  }
  if (ls[0] === 'users' && s.length === 1 && m === 'GET') return listUsers(ctx);
  const dr = await directory.handle(ctx, m, s, body);
  if (dr) return dr;
  return E(400, 'BadRequest', `Resource not found for the segment '${s[0] ?? ''}'.`);
}

async function handle(req, res) {
  const start = Date.now();
  const crid = req.headers['client-request-id'];
  const ctx = {
    req, res, start, requestId: uuid(),
    clientRequestId: typeof crid === 'string' && crid ? crid : uuid(),
    url: new URL(req.url, BASE_URL), status: null, principal: null, mailbox: null, mailboxKey: null, userSel: null,
  };
  const path = ctx.url.pathname;
  if (path === '/_test' || path.startsWith('/_test/')) {
    ctx.isControl = true;
    const { buf } = await readBody(req, 256 * 1024 * 1024);
    return control(ctx, buf || Buffer.alloc(0));
  }

  const segsAll = path.split('/').filter((x, i) => i > 0 && x !== '').map((x) => {
    try {
      return decodeURIComponent(x);
    } catch {
      return x;
    }
  });
  const isUpload = segsAll[0] === 'upload';
  const isGraph = segsAll[0] === 'v1.0' || segsAll[0] === 'beta';
  let session = null;
  let auth = { authState: 'none' };
  if (isUpload) {
    session = uploads.get(segsAll[1]);
    if (session) {
      ctx.mailbox = mailboxes.get(session.mailbox_id) || null;
      ctx.mailboxKey = ctx.mailbox ? lower(ctx.mailbox.userPrincipalName) : null;
    }
  } else if (isGraph) {
    auth = await authenticate(req);
    ctx.principal = auth.principal || null;
    classify(ctx, segsAll.slice(1));
  }
  const appKey = isUpload ? session?.app_id : ctx.principal?.appId;

  // in flight from here until the response is finished or the socket closed
  stats.requests += 1;
  const entry = {
    seq: ++requestSeq, time: new Date(start).toISOString(), method: req.method,
    path: path + (ctx.url.search ? ctx.url.search.replace(/authtoken=[^&]*/, 'authtoken=…') : ''),
    status: null, duration_ms: null, mailbox: ctx.mailboxKey, app_id: appKey || null, auth: isUpload ? 'upload' : auth.authState,
    in_flight_at_start: null, in_flight_global_at_start: null, fault: null, request_id: ctx.requestId,
    client_request_id: ctx.clientRequestId, bytes_in: 0,
  };
  inflight.global.current += 1;
  if (inflight.global.current > inflight.global.max) inflight.global.max = inflight.global.current;
  entry.in_flight_global_at_start = inflight.global.current;
  if (ctx.mailboxKey) entry.in_flight_at_start = inflightEnter(inflight.mailboxes, ctx.mailboxKey);
  if (appKey) inflightEnter(inflight.apps, appKey);
  let left = false;
  const leave = () => {
    if (left) return;
    left = true;
    inflight.global.current -= 1;
    if (ctx.mailboxKey) inflight.mailboxes.get(ctx.mailboxKey).current -= 1;
    if (appKey) inflight.apps.get(appKey).current -= 1;
    entry.status = ctx.status ?? (ctx.socketGone ? 'reset' : 'aborted');
    entry.duration_ms = Date.now() - start;
    stats.by_status[entry.status] = (stats.by_status[entry.status] || 0) + 1;
    requestLog.push(entry);
    if (requestLog.length > settings.log_limit) requestLog.splice(0, requestLog.length - settings.log_limit);
  };
  // The answer counts as given when we hand it to the socket (ctx.leave in respond()), not at
  // 'finish': a keep-alive client may already send its next request before 'finish' fires.
  ctx.leave = leave;
  res.on('finish', leave);
  res.on('close', leave);

  try {
    const { buf, length, tooLarge } = await readBody(req, settings.max_request_bytes);
    entry.bytes_in = length;
    if (settings.latency_ms > 0) await sleep(settings.latency_ms);
    if (!isUpload && !isGraph) {
      return respond(ctx, E(404, 'NotFound', `No such path: ${path}`));
    }
    const f = takeFault(ctx);
    if (f) {
      entry.fault = f.kind;
      if (f.delay_ms) await sleep(f.delay_ms);
      if (f.kind === 'reset' || f.kind === 'hang') {
        ctx.socketGone = true;
        req.socket.destroy();
        return undefined;
      }
      if (f.kind !== 'delay') {
        const headers = { ...(f.headers || {}) };
        if (f.retry_after !== null && f.retry_after !== undefined) headers['Retry-After'] = String(f.retry_after);
        if (f.status === 401) headers['WWW-Authenticate'] = wwwAuthenticate();
        const msg = String(f.message || '').replace('{mailbox}', ctx.userSel && ctx.userSel !== 'me' ? ctx.userSel : (ctx.mailbox?.userPrincipalName || ''));
        return respond(ctx, E(f.status, f.code, msg, headers));
      }
    }
    if (tooLarge) return respond(ctx, E(413, 'RequestEntityTooLarge', 'The maximum request length supported is 4MB.'));
    if (isUpload) {
      if (!session || session.expires < Date.now() || ctx.url.searchParams.get('authtoken') !== session.authtoken) {
        return respond(ctx, E(404, 'ErrorItemNotFound', 'The upload session was not found or has expired.'));
      }
      if (req.method === 'PUT') return respond(ctx, await uploadPut(ctx, buf, session));
      if (req.method === 'GET') return respond(ctx, ok(200, uploadStatusBody(session)));
      if (req.method === 'DELETE') {
        uploads.delete(session.id);
        return respond(ctx, ok(204));
      }
      return respond(ctx, E(405, 'BadRequest', 'Unsupported method.'));
    }
    if (!ctx.principal) {
      return respond(ctx, E(401, 'InvalidAuthenticationToken', auth.authError, { 'WWW-Authenticate': wwwAuthenticate() }));
    }
    return respond(ctx, await routeGraph(ctx, segsAll.slice(1), buf));
  } catch (err) {
    process.stderr.write(`graph stand-in error: ${err.stack || err}\n`);
    return respond(ctx, E(500, 'generalException', `Internal error of the stand-in: ${err.message}`));
  }
}

function wwwAuthenticate() {
  return 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"';
}

// ---------------------------------------------------------------------------------------------
// control API

function resetAll() {
  settings = { ...initialSettings };
  messages = [];
  messageSeq = 0;
  stats = freshStats();
  drafts = new Map();
  uploads = new Map();
  faults = [];
  requestLog = [];
  inflight = freshInflight();
  resetMailboxes();
  directory.reset();
}

function mailboxJson(mb) {
  return { ...mb };
}

async function control(ctx, buf) {
  let body = {};
  const text = buf.toString('utf8');
  if (text.trim()) {
    try {
      body = JSON.parse(text);
    } catch {
      return respond(ctx, ok(400, { error: 'bad_json' }));
    }
  }
  const p = ctx.url.pathname.replace(/\/+$/, '');
  const seg = p.split('/').slice(2).map(decodeURIComponent);
  const q = ctx.url.searchParams;
  const m = ctx.req.method;
  const route = `${m} /${seg[0] || ''}`;
  const R = (status, b) => respond(ctx, ok(status, b));
  try {
    switch (true) {
      case route === 'GET /health':
        return R(200, { ok: true, base_url: BASE_URL, jwks_keys: jwks.keys.length, audiences: AUDIENCES });
      case route === 'GET /settings':
        return R(200, settings);
      case route === 'POST /settings' || route === 'PUT /settings': {
        if (body.reset === true) {
          settings = { ...initialSettings };
          delete body.reset;
        }
        Object.assign(settings, checkSettings(body));
        return R(200, settings);
      }
      case route === 'POST /latency':
        Object.assign(settings, checkSettings({ latency_ms: body.latency_ms ?? body.ms ?? 0 }));
        return R(200, settings);
      case route === 'GET /faults':
        return R(200, faults);
      case route === 'POST /faults': {
        const list = (Array.isArray(body) ? body : [body]).map(addFault);
        return R(200, Array.isArray(body) ? list : list[0]);
      }
      case route === 'DELETE /faults':
        faults = [];
        return R(200, faults);
      case route === 'GET /mailboxes':
        return R(200, [...mailboxes.values()].map(mailboxJson));
      case route === 'POST /mailboxes' && seg.length === 1: {
        const list = Array.isArray(body) ? body : [body];
        const out = list.map((b) => {
          const old = findMailbox(b.id || b.address || b.userPrincipalName || '');
          const mb = normaliseMailbox(b, old);
          mailboxes.set(mb.id, mb);
          return mailboxJson(mb);
        });
        return R(200, Array.isArray(body) ? out : out[0]);
      }
      case (route === 'POST /mailboxes' || route === 'PATCH /mailboxes') && seg.length === 2: {
        const old = findMailbox(seg[1]);
        if (!old && !settings.auto_mailboxes) return R(404, { error: 'not_found' });
        const mb = normaliseMailbox({ address: seg[1], ...body }, old);
        if (old && old.id !== mb.id) mailboxes.delete(old.id);
        mailboxes.set(mb.id, mb);
        return R(200, mailboxJson(mb));
      }
      case route === 'DELETE /mailboxes' && seg.length === 2: {
        const old = findMailbox(seg[1]);
        if (!old) return R(404, { error: 'not_found' });
        mailboxes.delete(old.id);
        return R(200, { deleted: old.id });
      }
      case route === 'GET /messages' && seg.length === 1: {
        let list = messages;
        if (q.get('mailbox')) list = list.filter((x) => lower(x.mailbox) === lower(q.get('mailbox')) || x.mailbox_id === q.get('mailbox'));
        if (q.get('since')) list = list.filter((x) => x.seq > Number(q.get('since')));
        if (q.get('via')) list = list.filter((x) => x.via === q.get('via'));
        const omitMime = ['1', 'true', 'yes'].includes(lower(q.get('omit_mime')));
        return R(200, { count: list.length, total: stats.messages, messages: list.map((x) => messageJson(x, { omitMime })) });
      }
      case route === 'GET /messages' && seg.length >= 2: {
        const msg = messages.find((x) => x.id === seg[1] || String(x.seq) === seg[1]);
        if (!msg) return R(404, { error: 'not_found' });
        if (seg[2] === 'mime') {
          if (!msg.mime) return R(404, { error: 'no_mime' });
          return rawRespond(ctx, 200, 'message/rfc822', msg.mime);
        }
        if (seg[2] === 'attachments' && seg[3] !== undefined) {
          const a = (msg.attachments || [])[Number(seg[3])];
          if (!a || !a.data) return R(404, { error: 'no_attachment_bytes' });
          return rawRespond(ctx, 200, 'application/octet-stream', a.data);
        }
        return R(200, messageJson(msg, { omitMime: ['1', 'true'].includes(lower(q.get('omit_mime'))) }));
      }
      case route === 'DELETE /messages':
        messages = [];
        return R(200, { deleted: true });
      case route === 'GET /drafts':
        return R(200, [...drafts.values()].map((d) => ({
          id: d.id, mailbox: d.mailbox_upn, form: d.form, from: d.from, recipients: d.recipients, subject: d.subject ?? null,
          attachments: d.attachments.map(({ data, ...a }) => a),
          uploads: [...uploads.values()].filter((u) => u.draft_id === d.id).map((u) => ({ id: u.id, name: u.name, size: u.size, next: u.next })),
        })));
      case route === 'GET /stats':
        return R(200, { ...stats, drafts: drafts.size, upload_sessions: uploads.size, in_flight: inflightJson().global });
      case route === 'GET /requests': {
        let list = requestLog;
        if (q.get('since')) list = list.filter((x) => x.seq > Number(q.get('since')));
        if (q.get('mailbox')) list = list.filter((x) => x.mailbox === lower(q.get('mailbox')));
        if (q.get('path_prefix')) list = list.filter((x) => x.path.startsWith(q.get('path_prefix')));
        return R(200, { count: list.length, requests: list });
      }
      case route === 'DELETE /requests':
        requestLog = [];
        return R(200, { deleted: true });
      case route === 'GET /inflight':
        return R(200, inflightJson());
      case route === 'POST /inflight' && seg[1] === 'reset':
      case route === 'DELETE /inflight': {
        // keep the current counts (requests may be running), reset the maxima
        inflight.global.max = inflight.global.current;
        for (const mp of [inflight.mailboxes, inflight.apps]) {
          for (const [k, v] of mp) {
            if (v.current === 0) mp.delete(k);
            else {
              v.max = v.current;
              v.total = 0;
            }
          }
        }
        return R(200, inflightJson());
      }
      case route === 'GET /directory':
        return R(200, directory.dump());
      case route === 'POST /directory' && seg[1] === 'expire-secret':
        return R(...directory.expireSecret(body));
      case route === 'POST /directory' && seg[1] === 'reset':
        directory.reset();
        return R(200, directory.dump());
      case route === 'POST /reset':
        resetAll();
        return R(200, { reset: true, settings });
      default:
        return R(404, { error: 'not_found', detail: `${m} ${p}` });
    }
  } catch (err) {
    return R(400, { error: 'bad_request', detail: err.message });
  }
}

// ---------------------------------------------------------------------------------------------
// start

async function main() {
  const deadline = Date.now() + 30000;
  for (;;) {
    try {
      await fetchJwks();
      break;
    } catch (e) {
      if (Date.now() > deadline) {
        process.stderr.write(`cannot fetch JWKS from ${args['jwks-url']}: ${e.message}\n`);
        process.exit(1);
      }
      await sleep(250);
    }
  }
  const server = https.createServer({ cert: fs.readFileSync(args.cert), key: fs.readFileSync(args.key) }, (req, res) => {
    handle(req, res).catch((err) => {
      process.stderr.write(`graph stand-in error: ${err.stack || err}\n`);
      try {
        res.destroy();
      } catch { /* ignore */ }
    });
  });
  server.keepAliveTimeout = 30000;
  server.headersTimeout = 35000;
  server.requestTimeout = 0;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(args.port), args.host, resolve);
  });
  const { port } = server.address();
  BASE_URL = `https://${args.host}:${port}`;
  const shutdown = () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  process.stdout.write(`${JSON.stringify({ ready: true, port, base_url: BASE_URL })}\n`);
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
