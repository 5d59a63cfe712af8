#!/usr/bin/env node
// Test peer: a stand-in for the Microsoft identity platform v2.0, built on oidc-provider.
//
//   node server.js --port P --cert CERT --key KEY [--state-file F] [--clients FILE]
//                  [--users FILE] [--host 127.0.0.1] [--settings JSON]
//
// oidc-provider does the OAuth work (codes, PKCE, tokens, refresh, device flow, JWT signing,
// consent interactions). A small front router in front of provider.callback() adds what is
// Microsoft-specific: the {tenant} path segment, resource-qualified scopes (translated to RFC
// 8707 resource indicators), Microsoft's error JSON, slow_down, the HTML login/consent pages,
// and the /_test/ control API. See README.md.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { AsyncLocalStorage } from 'node:async_hooks';
import * as https from 'node:https';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import Provider, { errors as oidcErrors } from 'oidc-provider';

import { Store, makeAdapterClass } from './lib/adapter.js';
import { msError, mapProviderError, AADSTS_TEXT } from './lib/mserrors.js';
import {
  TENANT_ID, TENANT_DOMAINS, MULTI_TENANT_AUTHORITIES, OIDC_SCOPES, RESOURCES,
  DEFAULT_USERS, DEFAULT_CLIENTS, DEFAULT_SETTINGS,
} from './lib/model.js';
import * as views from './lib/views.js';

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

// ---------------------------------------------------------------------------------------------
// command line

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    cert: { type: 'string' },
    key: { type: 'string' },
    'state-file': { type: 'string' },
    clients: { type: 'string' },
    users: { type: 'string' },
    settings: { type: 'string' },
    'no-default-clients': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

if (args.help || !args.cert || !args.key) {
  process.stderr.write('usage: node server.js --port P --cert CERT --key KEY [--state-file F] [--clients FILE] [--users FILE] [--settings JSON] [--no-default-clients]\n');
  process.exit(args.help ? 0 : 64);
}

// ---------------------------------------------------------------------------------------------
// state (optionally persisted to --state-file)

const store = new Store();
const state = {
  settings: { ...DEFAULT_SETTINGS },
  users: new Map(), // lower-case username -> user
  clients: new Map(), // client_id -> our client description (see normaliseClient)
  revokedRefreshTokens: new Set(), // jti of refresh tokens revoked through the control API
  jwks: null,
  cookieKeys: null,
};

function loadJsonFile(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

let persisted = null;
if (args['state-file'] && fs.existsSync(args['state-file'])) {
  persisted = loadJsonFile(args['state-file']);
}

if (persisted) {
  Object.assign(state.settings, persisted.settings || {});
  for (const u of persisted.users || []) state.users.set(u.username.toLowerCase(), u);
  for (const c of persisted.clients || []) state.clients.set(c.client_id, c);
  state.revokedRefreshTokens = new Set(persisted.revokedRefreshTokens || []);
  state.revokedCodes = persisted.revokedCodes || {};
  state.jwks = persisted.jwks;
  state.cookieKeys = persisted.cookieKeys;
  store.load(persisted.store);
} else {
  for (const u of DEFAULT_USERS) state.users.set(u.username.toLowerCase(), { ...u });
  if (!args['no-default-clients']) for (const c of DEFAULT_CLIENTS) state.clients.set(c.client_id, normaliseClient(c));
}
// --users / --clients apply on top (also over a loaded state file)
if (args.users) for (const u of loadJsonFile(args.users)) addUser(u);
if (args.clients) for (const c of loadJsonFile(args.clients)) state.clients.set(c.client_id, normaliseClient(c));
if (args.settings) Object.assign(state.settings, checkSettings(JSON.parse(args.settings)));

if (!state.jwks) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  jwk.kid = crypto.randomBytes(12).toString('base64url');
  jwk.use = 'sig';
  jwk.alg = 'RS256';
  state.jwks = { keys: [jwk] };
}
if (!state.cookieKeys) state.cookieKeys = [crypto.randomBytes(32).toString('base64url')];

let saveTimer = null;
function persistSoon() {
  if (!args['state-file'] || saveTimer) return;
  saveTimer = setTimeout(persistNow, 50);
}
function persistNow() {
  saveTimer = null;
  if (!args['state-file']) return;
  const data = {
    settings: state.settings,
    users: [...state.users.values()],
    clients: [...state.clients.values()],
    revokedRefreshTokens: [...state.revokedRefreshTokens],
    revokedCodes: state.revokedCodes || {},
    jwks: state.jwks,
    cookieKeys: state.cookieKeys,
    store: store.toJSON(),
  };
  const tmp = `${args['state-file']}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(data), { mode: 0o600 });
  fs.renameSync(tmp, args['state-file']);
}
store.onChange = persistSoon;

// per-request context of the front router (read by the adapter's revocation hook)
const requestContext = new AsyncLocalStorage();
const CODE_GRANTS = new Set(['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code']);
function suppressRevocation() {
  const c = requestContext.getStore();
  return !!c && CODE_GRANTS.has(c.grantType) && !state.settings.revoke_on_code_reuse;
}
store.shouldRevoke = () => !suppressRevocation();

function addUser(u) {
  if (!u || typeof u.username !== 'string' || typeof u.password !== 'string') {
    throw new Error('user needs username and password');
  }
  const user = {
    username: u.username,
    password: u.password,
    name: u.name || u.username,
    oid: u.oid || crypto.randomUUID(),
    disabled: !!u.disabled,
  };
  state.users.set(user.username.toLowerCase(), user);
  persistSoon();
  return user;
}

function userByOid(oid) {
  for (const u of state.users.values()) if (u.oid === oid) return u;
  return undefined;
}

// Our client description -> oidc-provider client metadata.
function normaliseClient(c) {
  if (!c || typeof c.client_id !== 'string' || !c.client_id) throw new Error('client_id is required');
  const isPublic = c.public === true || (c.public === undefined && !c.client_secret);
  if (!isPublic && !c.client_secret) throw new Error('a confidential client needs client_secret');
  let grantTypes = c.grant_types || (isPublic
    ? ['authorization_code', 'refresh_token', DEVICE_GRANT]
    : ['authorization_code', 'refresh_token', 'client_credentials', DEVICE_GRANT]);
  grantTypes = grantTypes.map((g) => (g === 'device_code' ? DEVICE_GRANT : g));
  if (isPublic) grantTypes = grantTypes.filter((g) => g !== 'client_credentials');
  return {
    client_id: c.client_id,
    client_secret: isPublic ? undefined : c.client_secret,
    name: c.name || c.client_id,
    public: isPublic,
    redirect_uris: c.redirect_uris || [],
    grant_types: grantTypes,
    app_roles: c.app_roles || {},
  };
}

function providerMetadata(c) {
  const md = {
    client_id: c.client_id,
    client_name: c.name,
    // "native": loopback redirect URIs match on any port, as Microsoft does for all apps (§1.12)
    application_type: 'native',
    redirect_uris: c.redirect_uris,
    grant_types: c.grant_types,
    response_types: c.grant_types.includes('authorization_code') ? ['code'] : [],
    token_endpoint_auth_method: c.public ? 'none' : 'client_secret_post',
    app_roles: c.app_roles,
  };
  if (!c.public) md.client_secret = c.client_secret;
  return md;
}

function checkSettings(s) {
  const out = {};
  for (const [k, v] of Object.entries(s || {})) {
    if (!(k in DEFAULT_SETTINGS)) throw new Error(`unknown setting ${k}`);
    if (typeof DEFAULT_SETTINGS[k] === 'number' && !(Number.isInteger(v) && v > 0)) throw new Error(`${k} must be a positive integer`);
    if (typeof DEFAULT_SETTINGS[k] === 'boolean' && typeof v !== 'boolean') throw new Error(`${k} must be a boolean`);
    if (k === 'refresh_rotation' && !['keep-old', 'strict', 'off'].includes(v)) throw new Error('refresh_rotation must be keep-old, strict or off');
    out[k] = v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// scopes: Microsoft's resource-qualified scopes <-> resource indicators

const RESOURCE_BY_LOWER = new Map(Object.keys(RESOURCES).map((r) => [r.toLowerCase(), r]));

// Returns { oidc: [...], resources: Map(resource -> [fully qualified scope]), unknown: [...] }.
function classifyScopes(scopeParam) {
  const out = { oidc: [], resources: new Map(), unknown: [] };
  for (const raw of String(scopeParam || '').split(/\s+/).filter(Boolean)) {
    const lower = raw.toLowerCase();
    const oidc = OIDC_SCOPES.includes(lower) ? toInternal(lower) : undefined;
    if (oidc) {
      if (!out.oidc.includes(oidc)) out.oidc.push(oidc);
      continue;
    }
    let resource;
    let name;
    const m = /^(https?:\/\/[^/]+)\/+(.+)$/i.exec(raw);
    if (m) {
      resource = RESOURCE_BY_LOWER.get(m[1].toLowerCase());
      name = m[2];
    } else {
      resource = 'https://graph.microsoft.com'; // unprefixed scopes mean Microsoft Graph (§1.14)
      name = raw;
    }
    const canonical = resource && RESOURCES[resource].scopes.find((s) => s.toLowerCase() === name.toLowerCase());
    if (!canonical) {
      out.unknown.push(raw);
      continue;
    }
    if (!out.resources.has(resource)) out.resources.set(resource, []);
    const full = `${resource}/${canonical}`;
    if (!out.resources.get(resource).includes(full)) out.resources.get(resource).push(full);
  }
  return out;
}

// ".default combined with other scopes of the same resource" is an error at Microsoft (§1.14)
function mixesDefault(cls) {
  for (const list of cls.resources.values()) {
    if (list.length > 1 && list.some((s) => s.endsWith('/.default'))) return true;
  }
  return false;
}

// oidc-provider follows OIDC Core §11 and drops offline_access from an authorization request
// without prompt=consent; Microsoft does not. Internally the scope is therefore called
// offline_access_ms; requests are translated on the way in and names on the way out.
const OFFLINE_INTERNAL = 'offline_access_ms';
function toInternal(scope) {
  return scope === 'offline_access' ? OFFLINE_INTERNAL : scope;
}
function toExternal(scope) {
  return scope === OFFLINE_INTERNAL ? 'offline_access' : scope;
}
const INTERNAL_OIDC_SCOPES = OIDC_SCOPES.map(toInternal);

function shortScope(full) {
  return full.replace(/^https?:\/\/[^/]+\//, '');
}

// ---------------------------------------------------------------------------------------------
// counters, injected failures, device polling state, issued tokens

function freshCounters() {
  return {
    token_requests: 0,
    token_by_grant_type: {},
    token_by_client: {},
    token_by_client_grant_type: {},
    token_success: 0,
    token_error: 0,
    token_errors_by_error: {},
    devicecode_requests: 0,
    authorize_requests: 0,
    injected_failures_served: 0,
    slow_down_served: 0,
  };
}
let counters = freshCounters();
let failures = []; // [{ match..., remaining, kind... }]
let forcedSlowDown = 0;
const devicePolls = new Map(); // device_code -> { last: ms, interval: s }
let issued = []; // last issued tokens (for "no token in clear text" greps)

function bump(obj, key) {
  obj[key] = (obj[key] || 0) + 1;
}

function takeFailure(endpoint, grantType, clientId) {
  const idx = failures.findIndex((f) => f.endpoint === endpoint
    && (!f.grant_type || f.grant_type === grantType)
    && (!f.client_id || f.client_id === clientId));
  if (idx === -1) return undefined;
  const f = failures[idx];
  if (f.remaining > 0) {
    f.remaining -= 1;
    if (f.remaining === 0) failures.splice(idx, 1);
  }
  return f;
}

const DEFAULT_FAILURE_CODE = {
  invalid_grant: 70000,
  invalid_client: 7000215,
  interaction_required: 50076,
  temporarily_unavailable: 90033,
  server_error: 50000,
  invalid_scope: 70011,
  consent_required: 65001,
  invalid_request: 9002313,
  unauthorized_client: 700016,
  authorization_pending: 70016,
  expired_token: 70019,
  authorization_declined: 65004,
};
const DEFAULT_FAILURE_STATUS = {
  invalid_client: 401, temporarily_unavailable: 503, server_error: 500,
};

function parseFailure(spec) {
  const f = {
    endpoint: spec.endpoint || 'token',
    grant_type: spec.grant_type === 'device_code' ? DEVICE_GRANT : spec.grant_type,
    client_id: spec.client_id,
    remaining: spec.count === undefined ? 1 : spec.count, // -1: until cleared
  };
  if (!['token', 'devicecode'].includes(f.endpoint)) throw new Error('endpoint must be token or devicecode');
  if (!Number.isInteger(f.remaining) || f.remaining === 0 || f.remaining < -1) throw new Error('count must be a positive integer or -1');
  if (spec.hang_ms !== undefined) {
    if (!Number.isInteger(spec.hang_ms) || spec.hang_ms < 0) throw new Error('hang_ms must be an integer >= 0');
    f.kind = 'hang';
    f.hang_ms = spec.hang_ms;
    f.then = spec.then || 'close';
    if (!['close', 'respond'].includes(f.then)) throw new Error('then must be close or respond');
  } else if (spec.error) {
    f.kind = 'oauth';
    f.error = spec.error;
    f.code = spec.code ?? DEFAULT_FAILURE_CODE[spec.error] ?? 9002313;
    f.status = spec.status ?? DEFAULT_FAILURE_STATUS[spec.error] ?? 400;
    f.description = spec.description;
    f.suberror = spec.suberror;
  } else if (spec.status) {
    f.kind = 'http';
    f.status = spec.status;
    f.body = spec.body ?? '<html><body><h1>500 Internal Server Error</h1></body></html>';
    f.content_type = spec.content_type || 'text/html';
  } else {
    throw new Error('give error (+code, status), or status (+body), or hang_ms');
  }
  return f;
}

function recordIssued(entry) {
  issued.push(entry);
  if (issued.length > 500) issued = issued.slice(-500);
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

function sendJson(res, status, obj, extraHeaders = {}) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    Pragma: 'no-cache',
    ...extraHeaders,
  });
  res.end(body);
}

function sendHtml(res, status, html) {
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': Buffer.byteLength(html),
    'Cache-Control': 'no-store',
  });
  res.end(html);
}

function sendMsError(res, status, error, code, text, extra = {}) {
  const body = { ...msError(error, code, text), ...extra };
  sendJson(res, status, body, status === 401 ? { 'WWW-Authenticate': 'Basic realm="login.microsoftonline.com"' } : {});
}

function readBody(req, limit = 256 * 1024) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) {
        reject(new Error('request entity too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

// application/x-www-form-urlencoded -> object (repeated keys -> arrays)
function formToObject(text) {
  const out = {};
  for (const [k, v] of new URLSearchParams(text)) {
    if (k in out) out[k] = [].concat(out[k], v);
    else out[k] = v;
  }
  return out;
}

function isLoopback(addr) {
  return addr === '127.0.0.1' || addr === '::1' || addr === '::ffff:127.0.0.1';
}

// /{tenant}/... : is this tenant segment one we serve?
function tenantKind(seg) {
  const s = decodeURIComponent(seg || '').toLowerCase();
  if (s === TENANT_ID) return 'tenant';
  if (TENANT_DOMAINS.includes(s)) return 'tenant';
  if (MULTI_TENANT_AUTHORITIES.includes(s)) return 'multi';
  return undefined;
}

function invalidTenant(res, seg, wantsHtml) {
  const text = `Tenant '${decodeURIComponent(seg)}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.`;
  if (wantsHtml) {
    sendHtml(res, 400, views.errorPage('Sign in', [['error', 'invalid_tenant'], ['error_description', `AADSTS90002: ${text}`]]));
  } else {
    sendMsError(res, 400, 'invalid_tenant', 90002, text);
  }
}

// ---------------------------------------------------------------------------------------------
// the HTTPS server (listen first so --port 0 works; the issuer needs the port)

const tls = { cert: fs.readFileSync(args.cert), key: fs.readFileSync(args.key) };
let handler = (req, res) => { res.writeHead(503); res.end(); };
const server = https.createServer(tls, (req, res) => handler(req, res));
server.keepAliveTimeout = 5000;

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), args.host, resolve);
});
const port = server.address().port;
const hostForUrls = args.host === '0.0.0.0' ? '127.0.0.1' : args.host;
const BASE_URL = `https://${hostForUrls}:${port}`;
const ISSUER = `${BASE_URL}/${TENANT_ID}/v2.0`;

// ---------------------------------------------------------------------------------------------
// oidc-provider configuration

const Adapter = makeAdapterClass(store);

function clientsToAdapter() {
  const m = store.model('Client');
  m.clear();
  for (const c of state.clients.values()) m.set(c.client_id, { payload: providerMetadata(c), expiresAt: null });
}
clientsToAdapter();
persistNow(); // a state file exists from the start (keys, clients)

const configuration = {
  adapter: Adapter,
  clients: [],
  jwks: state.jwks,
  cookies: { keys: state.cookieKeys },
  scopes: INTERNAL_OIDC_SCOPES,
  claims: {
    openid: ['sub', 'oid', 'tid', 'ver'],
    profile: ['name', 'preferred_username', 'upn'],
    email: ['email'],
  },
  extraClientMetadata: { properties: ['app_roles'] },
  extraParams: ['domain_hint', 'mkt', 'client_info', 'x-client-SKU', 'x-client-Ver', 'x-client-OS', 'x-client-CPU'],
  responseTypes: ['code'],
  pkce: {
    // public clients must use PKCE (oidc-provider's default); confidential ones may
    required: (ctx, client) => client.clientAuthMethod === 'none',
  },
  routes: {
    authorization: `/${TENANT_ID}/oauth2/v2.0/authorize`,
    token: `/${TENANT_ID}/oauth2/v2.0/token`,
    device_authorization: `/${TENANT_ID}/oauth2/v2.0/devicecode`,
    code_verification: '/devicelogin',
    jwks: `/${TENANT_ID}/discovery/v2.0/keys`,
    end_session: `/${TENANT_ID}/oauth2/v2.0/logout`,
    userinfo: '/oidc/userinfo',
    revocation: `/${TENANT_ID}/oauth2/v2.0/revoke`,
    introspection: `/${TENANT_ID}/oauth2/v2.0/introspect`,
  },
  features: {
    devInteractions: { enabled: false },
    dPoP: { enabled: false },
    pushedAuthorizationRequests: { enabled: false },
    userinfo: { enabled: false },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    deviceFlow: {
      enabled: true,
      charset: 'base-20',
      mask: '*********', // Microsoft-like 9-character user codes
      userCodeInputSource: views.userCodeInputSource,
      userCodeConfirmSource: views.userCodeConfirmSource,
      successSource: views.successSource,
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => (oneOf ? oneOf[0] : undefined),
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        const r = RESOURCES[resourceIndicator];
        if (!r) throw new oidcErrors.InvalidTarget();
        return {
          scope: r.scopes.map((s) => `${resourceIndicator}/${s}`).join(' '),
          audience: resourceIndicator,
          accessTokenFormat: 'jwt',
          accessTokenTTL: state.settings.access_token_ttl,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  formats: {
    customizers: {
      // Microsoft-like access token claims (the JWT is signed by oidc-provider)
      jwt: async (ctx, token, jwt) => {
        const p = jwt.payload;
        const resource = token.resourceServer?.audience;
        const r = RESOURCES[resource];
        const client = state.clients.get(token.clientId);
        delete p.scope; // Microsoft tokens carry scp (delegated) or roles (app-only)
        p.tid = TENANT_ID;
        p.ver = '2.0';
        p.azp = token.clientId;
        p.appid = token.clientId;
        if (token.kind === 'ClientCredentials') {
          p.roles = (client?.app_roles?.[resource]) || [];
          p.oid = p.sub = crypto.createHash('sha256').update(`sp:${token.clientId}`).digest('hex').slice(0, 32)
            .replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5');
          p.idtyp = 'app';
        } else {
          let scp = String(token.scope || '').split(' ').filter(Boolean).map(shortScope);
          if (scp.includes('.default') && r) scp = [...new Set([...scp.filter((s) => s !== '.default'), ...r.defaultDelegated])];
          p.scp = scp.join(' ');
          const user = userByOid(token.accountId);
          if (user) {
            p.oid = user.oid;
            p.preferred_username = user.username;
            p.upn = user.username;
            p.unique_name = user.username;
            p.name = user.name;
          }
          p.idtyp = 'user';
        }
      },
    },
  },
  ttl: {
    AccessToken: () => state.settings.access_token_ttl,
    ClientCredentials: () => state.settings.access_token_ttl,
    AuthorizationCode: () => state.settings.auth_code_ttl,
    IdToken: () => state.settings.id_token_ttl,
    RefreshToken: () => state.settings.refresh_token_ttl,
    DeviceCode: () => state.settings.device_code_ttl,
    Interaction: () => 3600,
    Session: () => 24 * 3600,
    Grant: () => 365 * 24 * 3600,
  },
  expiresWithSession: async () => false,
  rotateRefreshToken: () => state.settings.refresh_rotation === 'strict',
  issueRefreshToken: async (ctx, client, source) => client.grantTypeAllowed('refresh_token')
    && source.scopes.has(OFFLINE_INTERNAL),
  loadExistingGrant: async (ctx) => {
    if (state.settings.always_consent) return undefined;
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
  },
  findAccount: async (ctx, sub) => {
    const user = userByOid(sub);
    if (!user) return undefined;
    return {
      accountId: user.oid,
      claims: async () => ({
        sub: user.oid,
        oid: user.oid,
        tid: TENANT_ID,
        ver: '2.0',
        name: user.name,
        preferred_username: user.username,
        upn: user.username,
        email: user.username,
      }),
    };
  },
  interactions: { url: async (ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = views.errorPage('Sign in', Object.entries(out));
  },
  clientBasedCORS: () => false,
  revokeGrantPolicy: (ctx) => {
    if (suppressRevocation()) return false;
    return !(ctx.oidc.route === 'revocation' && ctx.oidc.entities.AccessToken);
  },
  conformIdTokenClaims: false,
};

const provider = new Provider(ISSUER, configuration);
provider.on('grant.error', (ctx, err) => { ctx.state.mbError = err; });
provider.on('server_error', (ctx, err) => {
  ctx.state.mbError = err;
  process.stderr.write(`server_error: ${err.stack || err}\n`);
});
provider.on('device_authorization.error', (ctx, err) => { ctx.state.mbError = err; });

// Post-processing inside oidc-provider's Koa stack: Microsoft's token response / error shape.
provider.use(async (ctx, next) => {
  await next();
  const route = ctx.oidc?.route;
  const mb = ctx.req.mb || {};
  if (route === 'token') {
    const body = ctx.body;
    if (ctx.status === 200 && body && body.access_token) {
      counters.token_success += 1;
      if (mb.grantType === 'refresh_token' && state.settings.refresh_rotation === 'keep-old') {
        const old = ctx.oidc.entities.RefreshToken;
        if (old) {
          const rt = new provider.RefreshToken({
            accountId: old.accountId,
            acr: old.acr,
            amr: old.amr,
            authTime: old.authTime,
            claims: old.claims,
            client: ctx.oidc.client,
            expiresWithSession: old.expiresWithSession,
            iiat: old.iiat,
            grantId: old.grantId,
            gty: old.gty,
            nonce: old.nonce,
            resource: old.resource,
            rotations: (old.rotations || 0) + 1,
            scope: old.scope,
            sessionUid: old.sessionUid,
            sid: old.sid,
          });
          body.refresh_token = await rt.save();
        }
      }
      if (mb.grantType === 'client_credentials') {
        delete body.scope; // Microsoft returns no scope for client credentials (§1.7)
      } else if (typeof body.scope === 'string') {
        // ".default" is reported as what it stands for
        const out = [];
        for (const s of body.scope.split(' ').filter(Boolean)) {
          const m = /^(https?:\/\/[^/]+)\/\.default$/.exec(s);
          if (m && RESOURCES[m[1]]) out.push(...RESOURCES[m[1]].defaultDelegated.map((x) => `${m[1]}/${x}`));
          else out.push(s);
        }
        body.scope = [...new Set(out)].join(' ');
      }
      const ordered = {
        token_type: body.token_type || 'Bearer',
        ...(body.scope !== undefined ? { scope: body.scope } : {}),
        expires_in: body.expires_in,
        ext_expires_in: body.expires_in,
        access_token: body.access_token,
        ...(body.refresh_token ? { refresh_token: body.refresh_token } : {}),
        ...(body.id_token ? { id_token: body.id_token } : {}),
      };
      ctx.body = ordered;
      recordIssued({
        at: new Date().toISOString(),
        grant_type: mb.grantType,
        client_id: mb.clientId,
        access_token: ordered.access_token,
        refresh_token: ordered.refresh_token,
        id_token: ordered.id_token,
      });
      if (mb.grantType === DEVICE_GRANT) devicePolls.delete(mb.deviceCode);
    } else if (ctx.status >= 400 && body && typeof body === 'object' && body.error) {
      counters.token_error += 1;
      const mapped = mapProviderError(body, ctx.state.mbError, mb.grantType, state.settings);
      bump(counters.token_errors_by_error, mapped.error);
      ctx.status = mapped.status || (ctx.status >= 500 ? ctx.status : 400);
      ctx.body = msError(mapped.error, mapped.code, mapped.text);
    }
  } else if (route === 'discovery' && ctx.body && Array.isArray(ctx.body.scopes_supported)) {
    ctx.body.scopes_supported = ctx.body.scopes_supported.map(toExternal);
  } else if (route === 'device_authorization') {
    const body = ctx.body;
    if (ctx.status === 200 && body && body.device_code) {
      const interval = state.settings.device_interval;
      devicePolls.set(body.device_code, { last: 0, interval });
      ctx.body = {
        user_code: body.user_code,
        device_code: body.device_code,
        verification_uri: body.verification_uri,
        expires_in: body.expires_in,
        interval,
        message: `To sign in, use a web browser to open the page ${body.verification_uri} and enter the code ${body.user_code} to authenticate.`,
      };
    } else if (ctx.status >= 400 && body && typeof body === 'object' && body.error) {
      const mapped = mapProviderError(body, ctx.state.mbError, undefined, state.settings);
      ctx.status = mapped.status || 400;
      ctx.body = msError(mapped.error, mapped.code, mapped.text);
    }
  }
});

const providerCallback = provider.callback();

// ---------------------------------------------------------------------------------------------
// front router

function clientNameFor(clientId) {
  return state.clients.get(clientId)?.name || clientId;
}

function redirectUriRegistered(client, uri) {
  if (!client || typeof uri !== 'string') return false;
  if (client.redirect_uris.includes(uri)) return true;
  const strip = (u) => {
    const p = URL.parse(u);
    if (!p || p.protocol !== 'http:' || !['127.0.0.1', 'localhost', '[::1]'].includes(p.hostname)) return undefined;
    p.port = '';
    return p.href;
  };
  const s = strip(uri);
  return s !== undefined && client.redirect_uris.some((r) => strip(r) === s);
}

async function handleAuthorize(req, res, url) {
  counters.authorize_requests += 1;
  const q = url.searchParams;
  const client = state.clients.get(q.get('client_id') || '');
  const redirectUri = q.get('redirect_uri');
  const redirectError = (error, code) => {
    const text = AADSTS_TEXT[code];
    if (client && redirectUriRegistered(client, redirectUri)) {
      const to = new URL(redirectUri);
      to.searchParams.set('error', error);
      to.searchParams.set('error_description', `AADSTS${code}: ${text}`);
      if (q.get('state') !== null) to.searchParams.set('state', q.get('state'));
      res.writeHead(302, { Location: to.href, 'Content-Length': 0 });
      res.end();
    } else {
      sendHtml(res, 400, views.errorPage('Sign in', [['error', error], ['error_description', `AADSTS${code}: ${text}`]]));
    }
  };
  if (!client) {
    sendHtml(res, 400, views.errorPage('Sign in', [['error', 'unauthorized_client'],
      ['error_description', `AADSTS700016: Application with identifier '${q.get('client_id')}' was not found in the directory '${TENANT_DOMAINS[0]}'.`]]));
    return false;
  }
  if (redirectUri !== null && !redirectUriRegistered(client, redirectUri)) {
    sendHtml(res, 400, views.errorPage('Sign in', [['error', 'invalid_request'],
      ['error_description', `AADSTS50011: The redirect URI '${redirectUri}' specified in the request does not match the redirect URIs configured for the application '${client.client_id}'.`]]));
    return false;
  }
  if (q.has('scope')) {
    const cls = classifyScopes(q.get('scope'));
    if (cls.unknown.length || mixesDefault(cls)) {
      redirectError('invalid_scope', 70011);
      return false;
    }
    q.set('scope', [...cls.oidc, ...[...cls.resources.values()].flat()].join(' '));
    q.delete('resource');
    for (const r of cls.resources.keys()) q.append('resource', r);
  }
  // prompt=select_account: there is no account picker; drop it
  if (q.get('prompt') === 'select_account') q.delete('prompt');
  req.url = `${url.pathname}?${q.toString()}`;
  return true;
}

async function handleDeviceCode(req, res, body) {
  counters.devicecode_requests += 1;
  const clientId = body.client_id;
  const f = takeFailure('devicecode', undefined, clientId);
  if (f && await serveFailure(req, res, f)) return false;
  const client = state.clients.get(clientId || '');
  if (!client) {
    sendMsError(res, 400, 'unauthorized_client', 700016, `Application with identifier '${clientId}' was not found in the directory '${TENANT_DOMAINS[0]}'.`);
    return false;
  }
  if (client.public && (body.client_secret || body.client_assertion)) {
    sendMsError(res, 401, 'invalid_client', 700025);
    return false;
  }
  if (!client.grant_types.includes(DEVICE_GRANT)) {
    sendMsError(res, 401, 'invalid_client', 7000218);
    return false;
  }
  if (body.scope !== undefined) {
    const cls = classifyScopes(body.scope);
    if (cls.unknown.length || mixesDefault(cls)) {
      sendMsError(res, 400, 'invalid_scope', 70011, `The provided value for the input parameter 'scope' is not valid. The scope ${cls.unknown.join(' ')} is not valid.`);
      return false;
    }
    body.scope = [...cls.oidc, ...[...cls.resources.values()].flat()].join(' ');
    delete body.resource;
    if (cls.resources.size) body.resource = [...cls.resources.keys()];
  }
  return true;
}

async function serveFailure(req, res, f) {
  counters.injected_failures_served += 1;
  if (f.kind === 'oauth') {
    const extra = f.suberror ? { suberror: f.suberror } : {};
    sendMsError(res, f.status, f.error, f.code, f.description, extra);
    return true;
  }
  if (f.kind === 'http') {
    res.writeHead(f.status, { 'Content-Type': f.content_type, 'Content-Length': Buffer.byteLength(f.body) });
    res.end(f.body);
    return true;
  }
  // hang
  await new Promise((resolve) => {
    const t = setTimeout(resolve, f.hang_ms);
    res.on('close', () => { clearTimeout(t); resolve(); });
  });
  if (res.destroyed || res.writableEnded || res.socket?.destroyed) return true;
  if (f.then === 'close') {
    req.socket.destroy();
    return true;
  }
  return false; // continue normally
}

async function handleToken(req, res, body, tenant) {
  // client credentials from HTTP Basic (RFC 6749 §2.3.1) are moved into the body, so that
  // oidc-provider (client_secret_post) checks them whichever way the gateway sends them
  const auth = req.headers.authorization;
  if (auth && /^basic /i.test(auth)) {
    const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    const dec = (s) => { try { return decodeURIComponent(s.replace(/\+/g, '%20')); } catch { return s; } };
    if (i !== -1) {
      body.client_id = body.client_id || dec(decoded.slice(0, i));
      body.client_secret = dec(decoded.slice(i + 1));
    }
    delete req.headers.authorization;
  }
  const grantType = body.grant_type;
  const clientId = body.client_id;
  req.mb = { grantType, clientId, deviceCode: body.device_code };

  counters.token_requests += 1;
  bump(counters.token_by_grant_type, String(grantType));
  bump(counters.token_by_client, String(clientId));
  counters.token_by_client_grant_type[String(clientId)] ??= {};
  bump(counters.token_by_client_grant_type[String(clientId)], String(grantType));

  const f = takeFailure('token', grantType, clientId);
  if (f && await serveFailure(req, res, f)) return false;

  const fail = (status, error, code, text) => {
    counters.token_error += 1;
    bump(counters.token_errors_by_error, error);
    sendMsError(res, status, error, code, text);
    return false;
  };

  const client = state.clients.get(clientId || '');
  if (!clientId) return fail(400, 'invalid_request', 90014, "The request body must contain the following parameter: 'client_id'.");
  if (!client) return fail(400, 'unauthorized_client', 700016, `Application with identifier '${clientId}' was not found in the directory '${TENANT_DOMAINS[0]}'.`);
  if (client.public && (body.client_secret || body.client_assertion)) return fail(401, 'invalid_client', 700025);
  if (!client.public && !body.client_secret && !body.client_assertion) return fail(401, 'invalid_client', 7000218);
  if (grantType === 'client_credentials' && tenant === 'multi') {
    return fail(400, 'invalid_request', 90130, 'Application is not supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.');
  }

  // slow_down (RFC 8628 §3.5): forced by the control API, or polled faster than the interval
  if (grantType === DEVICE_GRANT && typeof body.device_code === 'string') {
    const st = devicePolls.get(body.device_code) || { last: 0, interval: state.settings.device_interval };
    devicePolls.set(body.device_code, st);
    const nowMs = Date.now();
    const tooFast = state.settings.enforce_interval && st.last && (nowMs - st.last) < (st.interval * 1000 - 250);
    if (forcedSlowDown > 0 || tooFast) {
      if (forcedSlowDown > 0) forcedSlowDown -= 1;
      st.interval += state.settings.slow_down_increment;
      st.last = nowMs;
      counters.slow_down_served += 1;
      return fail(400, 'slow_down', 70016, 'OAuth 2.0 device flow error. Polling too frequently; slow down (add 5 seconds to the interval).');
    }
    st.last = nowMs;
  }

  // scopes: one resource per request at /token (§1.5), translated into a resource indicator
  if (body.scope !== undefined && grantType !== DEVICE_GRANT) {
    const cls = classifyScopes(body.scope);
    if (cls.unknown.length) return fail(400, 'invalid_scope', 70011, `The provided value for the input parameter 'scope' is not valid. The scope ${cls.unknown.join(' ')} is not valid.`);
    if (cls.resources.size > 1) return fail(400, 'invalid_scope', 700022);
    if (mixesDefault(cls)) return fail(400, 'invalid_scope', 70011, "The provided value for the input parameter 'scope' is not valid. '.default' cannot be combined with other scopes of the same resource.");
    const [resource] = cls.resources.keys();
    const resScopes = resource ? cls.resources.get(resource) : [];
    if (grantType === 'client_credentials') {
      if (!resource || resScopes.length !== 1 || !resScopes[0].endsWith('/.default') || cls.oidc.length) {
        return fail(400, 'invalid_scope', 1002012, `The provided value for scope ${body.scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`);
      }
      body.scope = resScopes[0];
    } else if (grantType === 'refresh_token' && resScopes.some((s) => s.endsWith('/.default'))) {
      delete body.scope; // all consented scopes of that resource
    } else if (grantType === 'refresh_token') {
      body.scope = [...cls.oidc, ...resScopes].join(' ');
    } else {
      delete body.scope; // authorization_code: the code carries the consented scopes
    }
    delete body.resource;
    if (resource) body.resource = resource;
  } else if (grantType === 'client_credentials') {
    return fail(400, 'invalid_request', 90014, "The request body must contain the following parameter: 'scope'.");
  }

  // refresh tokens revoked through the control API ("revoke all sessions"): TokensValidFrom
  if (grantType === 'refresh_token' && typeof body.refresh_token === 'string') {
    const rt = await provider.RefreshToken.find(body.refresh_token, { ignoreExpiration: true }).catch(() => undefined);
    if (rt && state.revokedRefreshTokens.has(rt.jti)) {
      const code = state.revokedCodes?.[rt.jti] || 50173;
      return fail(400, 'invalid_grant', code, code === 50173
        ? `The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '${new Date(rt.iat * 1000).toISOString()}' and the TokensValidFrom date (before which tokens are not valid) for this user is '${new Date().toISOString()}'.`
        : undefined);
    }
  }
  return true;
}

// ---- interactions (login / consent pages) ----

async function handleInteraction(req, res, url) {
  const m = /^\/interaction\/([^/]+)(?:\/(login|confirm|abort))?$/.exec(url.pathname);
  if (!m) return sendHtml(res, 404, views.errorPage('Not found', []));
  const [, uid, action] = m;
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return sendHtml(res, 400, views.errorPage('Sign in', [['error', 'invalid_request'],
      ['error_description', `AADSTS90014: The sign-in session has expired or the cookie is missing (${err.message}). Start again.`]]));
  }
  if (details.uid !== uid) return sendHtml(res, 400, views.errorPage('Sign in', [['error', 'invalid_request'], ['error_description', 'interaction mismatch']]));
  const { prompt, params } = details;
  const clientName = clientNameFor(params.client_id);

  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') {
      return sendHtml(res, 200, views.loginPage({ uid, clientName, loginHint: params.login_hint }));
    }
    const scopes = [
      ...(prompt.details.missingOIDCScope || []).map(toExternal),
      ...Object.values(prompt.details.missingResourceScopes || {}).flat(),
    ];
    const user = userByOid(details.session?.accountId);
    return sendHtml(res, 200, views.consentPage({
      uid, clientName, username: user?.username || '', scopes: scopes.length ? scopes : String(params.scope || '').split(' ').map(toExternal),
    }));
  }
  if (req.method !== 'POST') return sendHtml(res, 405, views.errorPage('Method not allowed', []));
  const form = formToObject(await readBody(req));

  if (action === 'abort') {
    const result = {
      error: 'access_denied',
      error_description: prompt.name === 'login'
        ? 'AADSTS50058: The user cancelled the sign-in.'
        : 'AADSTS65004: User declined to consent to access the app.',
    };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  }
  if (action === 'login') {
    if (prompt.name !== 'login') return sendHtml(res, 400, views.errorPage('Sign in', [['error', 'invalid_request'], ['error_description', 'not a login prompt']]));
    const user = state.users.get(String(form.login || '').toLowerCase());
    if (!user) {
      return sendHtml(res, 200, views.loginPage({ uid, clientName, loginHint: form.login, error: `AADSTS50034: The user account ${form.login} does not exist in the ${TENANT_DOMAINS[0]} directory.` }));
    }
    if (user.password !== form.password) {
      return sendHtml(res, 200, views.loginPage({ uid, clientName, loginHint: form.login, error: 'AADSTS50126: Error validating credentials due to invalid username or password.' }));
    }
    if (user.disabled) {
      return sendHtml(res, 200, views.loginPage({ uid, clientName, loginHint: form.login, error: 'AADSTS50057: The user account is disabled.' }));
    }
    return provider.interactionFinished(req, res, { login: { accountId: user.oid, amr: ['pwd'] } }, { mergeWithLastSubmission: false });
  }
  // confirm (consent)
  if (prompt.name !== 'consent') return sendHtml(res, 400, views.errorPage('Sign in', [['error', 'invalid_request'], ['error_description', 'not a consent prompt']]));
  const { accountId } = details.session;
  let grant;
  if (details.grantId) grant = await provider.Grant.find(details.grantId);
  if (!grant) grant = new provider.Grant({ accountId, clientId: params.client_id });
  const d = prompt.details;
  if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
  if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(d.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  const consent = details.grantId ? {} : { grantId };
  return provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
}

// ---- device code approval without a browser ----

async function findDeviceCode(userCode) {
  const normalized = String(userCode || '').toUpperCase().replace(/[^BCDFGHJKLMNPQRSTVWXZ]/g, '');
  return provider.DeviceCode.findByUserCode(normalized, { ignoreExpiration: true });
}

async function approveDevice(userCode, username) {
  const dc = await findDeviceCode(userCode);
  if (!dc) return [404, { error: 'not_found', detail: 'no such user_code' }];
  if (dc.isExpired) return [409, { error: 'expired', detail: 'device code expired' }];
  if (dc.accountId || dc.error) return [409, { error: 'already_used', detail: 'already approved or denied (AADSTS90120)' }];
  const user = state.users.get(String(username || '').toLowerCase());
  if (!user) return [404, { error: 'not_found', detail: `no such user ${username}` }];
  const requested = String(dc.params.scope || '').split(' ').filter(Boolean);
  let resources = dc.params.resource || [];
  if (!Array.isArray(resources)) resources = [resources];
  const grant = new provider.Grant({ accountId: user.oid, clientId: dc.clientId });
  const oidc = requested.filter((s) => INTERNAL_OIDC_SCOPES.includes(s));
  if (oidc.length) grant.addOIDCScope(oidc.join(' '));
  for (const r of resources) {
    const rs = requested.filter((s) => s.startsWith(`${r}/`));
    if (rs.length) grant.addResourceScope(r, rs.join(' '));
  }
  const grantId = await grant.save();
  Object.assign(dc, {
    accountId: user.oid,
    grantId,
    authTime: Math.floor(Date.now() / 1000),
    amr: ['pwd'],
    scope: requested.join(' '),
    resource: resources.length === 0 ? undefined : (resources.length === 1 ? resources[0] : resources),
  });
  await dc.save();
  return [200, { approved: true, user_code: dc.userCode, username: user.username, client_id: dc.clientId, scope: requested.map(toExternal).join(' ') }];
}

async function denyDevice(userCode, error = 'access_denied', description) {
  const dc = await findDeviceCode(userCode);
  if (!dc) return [404, { error: 'not_found', detail: 'no such user_code' }];
  if (dc.accountId || dc.error) return [409, { error: 'already_used', detail: 'already approved or denied (AADSTS90120)' }];
  Object.assign(dc, { error, errorDescription: description || 'End-User denied the authorization request' });
  await dc.save();
  return [200, { denied: true, user_code: dc.userCode, client_id: dc.clientId }];
}

// ---- control API ----

function publicClient(c) {
  return { ...c, client_secret: c.client_secret };
}

async function handleControl(req, res, url) {
  if (!isLoopback(req.socket.remoteAddress)) return sendJson(res, 403, { error: 'forbidden', detail: 'loopback only' });
  let body = {};
  if (req.method === 'POST' || req.method === 'PUT') {
    const text = await readBody(req);
    try {
      body = text ? JSON.parse(text) : {};
    } catch {
      return sendJson(res, 400, { error: 'bad_json' });
    }
  }
  const p = url.pathname.replace(/\/+$/, '');
  const seg = p.split('/').slice(2).map(decodeURIComponent); // after "_test"
  const route = `${req.method} /${seg[0] || ''}`;
  try {
    switch (true) {
      case route === 'GET /health':
        return sendJson(res, 200, { ok: true, issuer: ISSUER, base_url: BASE_URL });
      case route === 'GET /info':
        return sendJson(res, 200, {
          issuer: ISSUER,
          base_url: BASE_URL,
          tenant_id: TENANT_ID,
          tenant_domains: TENANT_DOMAINS,
          jwks_uri: `${BASE_URL}/${TENANT_ID}/discovery/v2.0/keys`,
          authorize: `${BASE_URL}/${TENANT_ID}/oauth2/v2.0/authorize`,
          token: `${BASE_URL}/${TENANT_ID}/oauth2/v2.0/token`,
          devicecode: `${BASE_URL}/${TENANT_ID}/oauth2/v2.0/devicecode`,
          device_login: `${BASE_URL}/devicelogin`,
          settings: state.settings,
          users: [...state.users.values()],
          clients: [...state.clients.values()].map(publicClient),
          resources: RESOURCES,
        });
      case route === 'GET /settings':
        return sendJson(res, 200, state.settings);
      case route === 'POST /settings' || route === 'PUT /settings': {
        if (body.reset === true) {
          state.settings = { ...DEFAULT_SETTINGS };
          delete body.reset;
        }
        Object.assign(state.settings, checkSettings(body));
        persistSoon();
        return sendJson(res, 200, state.settings);
      }
      case route === 'GET /clients':
        return sendJson(res, 200, [...state.clients.values()].map(publicClient));
      case route === 'POST /clients': {
        const list = Array.isArray(body) ? body : [body];
        const out = [];
        for (const c of list) {
          const n = normaliseClient(c);
          await provider.Client.validate(providerMetadata(n));
          state.clients.set(n.client_id, n);
          out.push(n);
        }
        clientsToAdapter();
        persistSoon();
        return sendJson(res, 200, Array.isArray(body) ? out : out[0]);
      }
      case route === 'DELETE /clients': {
        if (!state.clients.delete(seg[1])) return sendJson(res, 404, { error: 'not_found' });
        clientsToAdapter();
        persistSoon();
        return sendJson(res, 200, { deleted: seg[1] });
      }
      case route === 'GET /users':
        return sendJson(res, 200, [...state.users.values()]);
      case route === 'POST /users' && seg.length === 1:
        return sendJson(res, 200, addUser(body));
      case route === 'POST /users' && seg[2] === 'revoke': {
        // revoke all refresh tokens of a user (TokensValidFrom = now)
        const user = state.users.get(String(seg[1]).toLowerCase());
        if (!user) return sendJson(res, 404, { error: 'not_found' });
        const code = body.code || 50173;
        state.revokedCodes ??= {};
        let n = 0;
        for (const [, payload] of store.entries('RefreshToken')) {
          if (payload.accountId === user.oid && !state.revokedRefreshTokens.has(payload.jti)) {
            state.revokedRefreshTokens.add(payload.jti);
            state.revokedCodes[payload.jti] = code;
            n += 1;
          }
        }
        persistSoon();
        return sendJson(res, 200, { revoked_refresh_tokens: n, code });
      }
      case route === 'POST /users' && seg[2] === 'disable': {
        const user = state.users.get(String(seg[1]).toLowerCase());
        if (!user) return sendJson(res, 404, { error: 'not_found' });
        user.disabled = body.disabled !== false;
        persistSoon();
        return sendJson(res, 200, user);
      }
      case route === 'GET /device': {
        const list = store.entries('DeviceCode').map(([, d]) => ({
          user_code: d.userCode,
          client_id: d.clientId,
          scope: String(d.params?.scope || '').split(' ').map(toExternal).join(' '),
          expires_at: new Date(d.exp * 1000).toISOString(),
          expired: d.exp * 1000 < Date.now(),
          status: d.error ? 'denied' : (d.accountId ? (d.consumed ? 'redeemed' : 'approved') : 'pending'),
        }));
        return sendJson(res, 200, list);
      }
      case route === 'POST /device' && seg[1] === 'approve': {
        const [status, out] = await approveDevice(body.user_code, body.username || 'user@contoso.test');
        return sendJson(res, status, out);
      }
      case route === 'POST /device' && (seg[1] === 'deny' || seg[1] === 'decline'): {
        const [status, out] = await denyDevice(body.user_code, body.error, body.error_description);
        return sendJson(res, status, out);
      }
      case route === 'POST /device' && seg[1] === 'slow_down': {
        forcedSlowDown += body.count ?? 1;
        return sendJson(res, 200, { forced_slow_down: forcedSlowDown });
      }
      case route === 'GET /failures':
        return sendJson(res, 200, failures);
      case route === 'POST /failures': {
        const list = (Array.isArray(body) ? body : [body]).map(parseFailure);
        failures.push(...list);
        return sendJson(res, 200, failures);
      }
      case route === 'DELETE /failures':
        failures = [];
        forcedSlowDown = 0;
        return sendJson(res, 200, failures);
      case route === 'GET /counters':
        return sendJson(res, 200, counters);
      case route === 'POST /counters' && seg[1] === 'reset':
      case route === 'DELETE /counters':
        counters = freshCounters();
        return sendJson(res, 200, counters);
      case route === 'GET /issued':
        return sendJson(res, 200, issued);
      case route === 'DELETE /issued':
        issued = [];
        return sendJson(res, 200, issued);
      case route === 'POST /reset':
        counters = freshCounters();
        failures = [];
        forcedSlowDown = 0;
        issued = [];
        state.settings = { ...DEFAULT_SETTINGS };
        persistSoon();
        return sendJson(res, 200, { reset: true, settings: state.settings });
      default:
        return sendJson(res, 404, { error: 'not_found', detail: `${req.method} ${p}` });
    }
  } catch (err) {
    return sendJson(res, 400, { error: 'bad_request', detail: err.message });
  }
}

// ---- dispatch ----

handler = async (req, res) => {
  try {
    const url = new URL(req.url, BASE_URL);
    const parts = url.pathname.split('/');
    const wantsHtml = /text\/html/.test(req.headers.accept || '');

    if (url.pathname.startsWith('/_test/') || url.pathname === '/_test') return await handleControl(req, res, url);
    if (url.pathname.startsWith('/interaction/')) return await handleInteraction(req, res, url);
    if (url.pathname === '/devicelogin' || url.pathname.startsWith('/devicelogin/')) return providerCallback(req, res);

    // /{tenant}/...
    const seg = parts[1];
    const rest = `/${parts.slice(2).join('/')}`;
    const known = ['/oauth2/v2.0/authorize', '/oauth2/v2.0/token', '/oauth2/v2.0/devicecode',
      '/v2.0/.well-known/openid-configuration', '/discovery/v2.0/keys', '/oauth2/v2.0/logout'];
    const isKnown = known.includes(rest) || rest.startsWith('/oauth2/v2.0/authorize/') || rest.startsWith('/oauth2/v2.0/logout/');
    if (!isKnown) {
      if (url.pathname === '/' || url.pathname === '') {
        return sendJson(res, 200, { service: 'mailbridge test IdP (Microsoft identity platform v2.0 stand-in)', issuer: ISSUER });
      }
      return sendJson(res, 404, { error: 'not_found', path: url.pathname });
    }
    const tenant = tenantKind(seg);
    if (!tenant) return invalidTenant(res, seg, wantsHtml && rest.startsWith('/oauth2/v2.0/authorize'));

    if (rest === '/v2.0/.well-known/openid-configuration') {
      req.url = `/.well-known/openid-configuration${url.search}`;
      return providerCallback(req, res);
    }
    const internal = `/${TENANT_ID}${rest}`;
    url.pathname = internal;
    req.url = `${internal}${url.search}`;

    if (rest === '/oauth2/v2.0/authorize' && req.method === 'GET') {
      if (!(await handleAuthorize(req, res, url))) return undefined;
      return providerCallback(req, res);
    }
    if ((rest === '/oauth2/v2.0/token' || rest === '/oauth2/v2.0/devicecode') && req.method === 'POST') {
      const ct = String(req.headers['content-type'] || '');
      if (!ct.toLowerCase().startsWith('application/x-www-form-urlencoded')) {
        return sendMsError(res, 400, 'invalid_request', 900144, "The request body must contain the following parameter: 'grant_type'. (Content-Type must be application/x-www-form-urlencoded)");
      }
      const body = formToObject(await readBody(req));
      req.headers.accept = 'application/json';
      const ok = rest === '/oauth2/v2.0/token'
        ? await handleToken(req, res, body, tenant)
        : await handleDeviceCode(req, res, body);
      if (!ok) return undefined;
      req.body = body; // oidc-provider reads an already parsed body from req.body
      return requestContext.run({ grantType: body.grant_type }, () => providerCallback(req, res));
    }
    return providerCallback(req, res);
  } catch (err) {
    process.stderr.write(`front router error: ${err.stack || err}\n`);
    if (!res.headersSent) sendMsError(res, 500, 'server_error', 50000);
    else res.destroy();
    return undefined;
  }
};

function shutdown() {
  if (saveTimer) {
    clearTimeout(saveTimer);
    persistNow();
  }
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

process.stdout.write(`${JSON.stringify({
  ready: true,
  port,
  base_url: BASE_URL,
  issuer: ISSUER,
  tenant_id: TENANT_ID,
  jwks_uri: `${BASE_URL}/${TENANT_ID}/discovery/v2.0/keys`,
  state_file: args['state-file'] ? path.resolve(args['state-file']) : null,
})}\n`);
