// App registration endpoints of the Graph stand-in (reference §6, issue 6): applications,
// addPassword/removePassword, owners, servicePrincipals (with the Microsoft Graph and
// Office 365 Exchange Online resource principals), oauth2PermissionGrants and
// appRoleAssignedTo / appRoleAssignments. Everything is kept in memory and recorded.

import * as crypto from 'node:crypto';

import { E, ok, lower, uuid, isoNow, hasAny, parseFilter, matchesFilter, project } from './util.js';

export const GRAPH_APP_ID = '00000003-0000-0000-c000-000000000000';
export const EXO_APP_ID = '00000002-0000-0ff1-ce00-000000000000';
export const GRAPH_SP_ID = 'f0000003-0000-4000-8000-000000000003';
export const EXO_SP_ID = 'f0000002-0000-4000-8000-000000000002';
// Not documented by Microsoft (reference §0): this stand-in's choice.
export const SMTP_SEND_AS_APP_ID = 'a1b2c3d4-5e6f-4a0b-9c8d-5347534e4150';

function scope(value, id, type, what) {
  return {
    adminConsentDescription: `Allows the app to ${what}.`,
    adminConsentDisplayName: value,
    id,
    isEnabled: true,
    type, // "User" = users may consent, "Admin" = admin consent required
    userConsentDescription: type === 'User' ? `Allows the app to ${what}.` : null,
    userConsentDisplayName: type === 'User' ? value : null,
    value,
  };
}

function role(value, id, what) {
  return {
    allowedMemberTypes: ['Application'],
    description: `Allows the app to ${what} without a signed-in user.`,
    displayName: value,
    id,
    isEnabled: true,
    origin: 'Application',
    value,
  };
}

// GUIDs from the reference's tables (§0).
const GRAPH_SCOPES = [
  scope('Mail.Send', 'e383f46e-2787-4529-855e-0e479a3ffac0', 'User', 'send mail as you'),
  scope('Mail.Send.Shared', 'a367ab51-6b49-43bf-a716-a1fb06d2a174', 'User', 'send mail as you or on behalf of someone else'),
  scope('Mail.ReadWrite', '024d486e-b451-40bb-833d-3e66d98c5c73', 'User', 'read, update, create and delete your mail'),
  scope('User.Read', 'e1fe6dd8-ba31-4d61-89e7-88639da4683d', 'User', 'sign you in and read your profile'),
  scope('offline_access', '7427e0e9-2fba-42fe-b0c0-848c9e6a8182', 'User', 'maintain access to data you have given it access to'),
  scope('openid', '37f7f235-527c-4136-accd-4a02d197296e', 'User', 'sign you in'),
  scope('profile', '14dad69e-099b-42c9-810b-d002981feec1', 'User', 'see your basic profile'),
  scope('email', '64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0', 'User', 'read your primary email address'),
  scope('SMTP.Send', '258f6531-6087-4cc4-bb90-092c5fb3ed3f', 'User', 'send mail as you using SMTP AUTH'),
  scope('Application.ReadWrite.All', 'bdfbf15f-ee85-4955-8675-146e8e5296b5', 'Admin', 'create, read, update and delete applications and service principals'),
  scope('DelegatedPermissionGrant.ReadWrite.All', '41ce6ca6-6826-4807-84f1-1c82854f7ee5', 'Admin', 'manage permission grants for delegated permissions'),
  scope('AppRoleAssignment.ReadWrite.All', '84bccea3-f856-4a8a-967b-dbe0a3d53a64', 'Admin', 'manage permission grants for application permissions'),
];
const GRAPH_ROLES = [
  role('Mail.Send', 'b633e1c5-b582-4048-a93e-9f11b44c7e96', 'send mail as any user'),
  role('Mail.ReadWrite', 'e2a3a72e-5f79-4c64-b1b1-878b674786c9', 'read, create, update and delete mail in all mailboxes'),
];
const EXO_SCOPES = [
  // the same GUID as Graph's SMTP.Send, as public setup scripts use it (reference §0: unconfirmed)
  scope('SMTP.Send', '258f6531-6087-4cc4-bb90-092c5fb3ed3f', 'User', 'send mail as you using SMTP AUTH'),
];
const EXO_ROLES = [
  role('SMTP.SendAsApp', SMTP_SEND_AS_APP_ID, 'send mail as any user through SMTP AUTH'),
];

const PERMS = {
  appRead: ['Application.Read.All', 'Application.ReadWrite.All', 'Directory.Read.All', 'Directory.ReadWrite.All', 'Directory.AccessAsUser.All'],
  appWrite: ['Application.ReadWrite.All', 'Directory.ReadWrite.All', 'Directory.AccessAsUser.All'],
  grantRead: ['DelegatedPermissionGrant.ReadWrite.All', 'DelegatedPermissionGrant.Read.All', 'Application.Read.All', 'Application.ReadWrite.All', 'Directory.Read.All', 'Directory.ReadWrite.All', 'Directory.AccessAsUser.All'],
  grantWrite: ['DelegatedPermissionGrant.ReadWrite.All', 'Directory.ReadWrite.All', 'Directory.AccessAsUser.All'],
  roleRead: ['AppRoleAssignment.ReadWrite.All', 'Application.Read.All', 'Application.ReadWrite.All', 'Directory.Read.All', 'Directory.ReadWrite.All', 'Directory.AccessAsUser.All'],
  roleWrite: ['AppRoleAssignment.ReadWrite.All', 'Directory.AccessAsUser.All'],
};
const GRANT_ADMIN_ROLES = ['Global Administrator', 'Privileged Role Administrator', 'Cloud Application Administrator', 'Application Administrator'];
const GRAPH_ROLE_ADMIN_ROLES = ['Global Administrator', 'Privileged Role Administrator'];

const APP_PROPS = new Set(['displayname', 'description', 'signinaudience', 'web', 'publicclient', 'spa', 'isfallbackpublicclient',
  'requiredresourceaccess', 'identifieruris', 'tags', 'notes', 'api', 'approles', 'optionalclaims', 'info', 'keycredentials',
  'passwordcredentials', 'groupmembershipclaims', 'isdeviceonlyauthsupported', 'parentalcontrolsettings', 'tokenencryptionkeyid',
  'servicemanagementreference', 'addins', 'samlmetadataurl', 'defaultredirecturi', 'uniquename']);

const INSUFFICIENT = () => E(403, 'Authorization_RequestDenied', 'Insufficient privileges to complete the operation.');
const NOT_FOUND = (id) => E(404, 'Request_ResourceNotFound', `Resource '${id}' does not exist or one of its queried reference-property objects are not present.`);
const BAD = (msg) => E(400, 'Request_BadRequest', msg);

function secretText() {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-';
  const bytes = crypto.randomBytes(37);
  let s = '';
  for (let i = 0; i < 37; i += 1) s += alphabet[bytes[i] % alphabet.length];
  return `${s.slice(0, 3)}8Q~${s.slice(3)}`; // 40 characters, Entra's "xxx8Q~…" shape
}

const objectId = () => crypto.randomBytes(32).toString('base64url').slice(0, 43);

export class Directory {
  constructor(env) {
    this.env = env; // {tenantId, baseUrl(), settings(), findUser(id), userResource(mb), mailboxOfPrincipal(p)}
    this.reset();
  }

  reset() {
    this.applications = new Map();
    this.servicePrincipals = new Map();
    this.grants = new Map();
    this.assignments = new Map();
    this.owners = new Map(); // app object id -> [directory object ids]
    this.secrets = new Map(); // keyId -> secretText (only the stand-in keeps it)
    this.log = [];
    this.seq = 0;
    const t = '2020-01-01T00:00:00Z';
    this.servicePrincipals.set(GRAPH_SP_ID, this.spObject({
      id: GRAPH_SP_ID, appId: GRAPH_APP_ID, displayName: 'Microsoft Graph', appRoles: GRAPH_ROLES,
      oauth2PermissionScopes: GRAPH_SCOPES, servicePrincipalNames: [GRAPH_APP_ID, 'https://graph.microsoft.com', 'https://graph.microsoft.com/'],
      appOwnerOrganizationId: 'f8cdef31-a31e-4b4a-93e4-5f571e91255a', createdDateTime: t,
    }));
    this.servicePrincipals.set(EXO_SP_ID, this.spObject({
      id: EXO_SP_ID, appId: EXO_APP_ID, displayName: 'Office 365 Exchange Online', appRoles: EXO_ROLES,
      oauth2PermissionScopes: EXO_SCOPES, servicePrincipalNames: [EXO_APP_ID, 'https://outlook.office365.com', 'https://outlook.office.com'],
      appOwnerOrganizationId: 'f8cdef31-a31e-4b4a-93e4-5f571e91255a', createdDateTime: t,
    }));
  }

  base() {
    return `${this.env.baseUrl()}/v1.0`;
  }

  record(ctx, op, type, id, detail) {
    this.seq += 1;
    this.log.push({
      seq: this.seq, time: new Date().toISOString(), op, type, id,
      by: ctx.principal?.upn || ctx.principal?.appId || null, ...(detail ? { detail } : {}),
    });
  }

  // ---- permission checks ----
  allowed(ctx, group) {
    const p = ctx.principal;
    if (this.env.settings().directory_any_scope) return true;
    return hasAny(p.kind === 'app' ? p.roles : p.scopes, PERMS[group]);
  }

  adminRoleOk(ctx, roles) {
    const p = ctx.principal;
    if (p.kind !== 'delegated' || !this.env.settings().enforce_directory_roles) return true;
    const mb = this.env.mailboxOfPrincipal(p);
    return !!mb && hasAny(mb.directory_roles, roles);
  }

  // ---- objects ----
  appObject(body, old) {
    const now = isoNow();
    const merge = (k, dflt) => {
      const nv = body[k];
      const ov = old ? old[k] : dflt;
      if (nv === undefined) return ov;
      if (nv && typeof nv === 'object' && !Array.isArray(nv) && ov && typeof ov === 'object' && !Array.isArray(ov)) return { ...ov, ...nv };
      return nv;
    };
    const app = {
      id: old?.id || uuid(),
      deletedDateTime: null,
      appId: old?.appId || uuid(),
      applicationTemplateId: null,
      disabledByMicrosoftStatus: null,
      createdDateTime: old?.createdDateTime || now,
      displayName: merge('displayName', null),
      description: merge('description', null),
      groupMembershipClaims: merge('groupMembershipClaims', null),
      identifierUris: merge('identifierUris', []),
      isDeviceOnlyAuthSupported: merge('isDeviceOnlyAuthSupported', null),
      isFallbackPublicClient: merge('isFallbackPublicClient', null),
      notes: merge('notes', null),
      publisherDomain: 'contoso.onmicrosoft.com',
      serviceManagementReference: merge('serviceManagementReference', null),
      signInAudience: merge('signInAudience', 'AzureADMyOrg'),
      tags: merge('tags', []),
      tokenEncryptionKeyId: null,
      api: merge('api', { acceptMappedClaims: null, knownClientApplications: [], requestedAccessTokenVersion: null, oauth2PermissionScopes: [], preAuthorizedApplications: [] }),
      appRoles: merge('appRoles', []),
      info: merge('info', { logoUrl: null, marketingUrl: null, privacyStatementUrl: null, supportUrl: null, termsOfServiceUrl: null }),
      keyCredentials: old?.keyCredentials || [],
      optionalClaims: merge('optionalClaims', null),
      passwordCredentials: old?.passwordCredentials || [],
      publicClient: merge('publicClient', { redirectUris: [] }),
      requiredResourceAccess: merge('requiredResourceAccess', []),
      web: merge('web', { homePageUrl: null, logoutUrl: null, redirectUris: [], implicitGrantSettings: { enableAccessTokenIssuance: false, enableIdTokenIssuance: false }, redirectUriSettings: [] }),
      spa: merge('spa', { redirectUris: [] }),
    };
    return app;
  }

  spObject(o) {
    return {
      id: o.id || uuid(),
      deletedDateTime: null,
      accountEnabled: true,
      alternativeNames: [],
      appDisplayName: o.displayName,
      appDescription: null,
      appId: o.appId,
      applicationTemplateId: null,
      appOwnerOrganizationId: o.appOwnerOrganizationId || this.env.tenantId,
      appRoleAssignmentRequired: false,
      createdDateTime: o.createdDateTime || isoNow(),
      description: null,
      displayName: o.displayName,
      homepage: null,
      loginUrl: null,
      logoutUrl: null,
      notes: null,
      preferredSingleSignOnMode: null,
      replyUrls: o.replyUrls || [],
      servicePrincipalNames: o.servicePrincipalNames || [o.appId],
      servicePrincipalType: 'Application',
      signInAudience: o.signInAudience || 'AzureADMultipleOrgs',
      tags: o.tags || [],
      appRoles: o.appRoles || [],
      oauth2PermissionScopes: o.oauth2PermissionScopes || [],
      keyCredentials: [],
      passwordCredentials: [],
    };
  }

  findApp(sel) {
    if (sel.appId !== undefined) return [...this.applications.values()].find((a) => lower(a.appId) === lower(sel.appId));
    return [...this.applications.values()].find((a) => lower(a.id) === lower(sel.id));
  }

  findSp(sel) {
    if (sel.appId !== undefined) return [...this.servicePrincipals.values()].find((a) => lower(a.appId) === lower(sel.appId));
    return [...this.servicePrincipals.values()].find((a) => lower(a.id) === lower(sel.id));
  }

  // any directory object by id -> {type, obj}
  findObject(id) {
    const u = this.env.findUser(id);
    if (u && lower(u.id) === lower(id)) return { type: 'user', obj: u };
    const sp = this.findSp({ id });
    if (sp) return { type: 'servicePrincipal', obj: sp };
    const app = this.findApp({ id });
    if (app) return { type: 'application', obj: app };
    return null;
  }

  objectJson(found) {
    if (found.type === 'user') {
      const { '@odata.context': _, ...u } = this.env.userResource(found.obj);
      return { '@odata.type': '#microsoft.graph.user', ...u };
    }
    return { '@odata.type': `#microsoft.graph.${found.type}`, ...found.obj };
  }

  list(ctx, entity, items) {
    const q = ctx.url.searchParams;
    const clauses = parseFilter(q.get('$filter'));
    if (!clauses) return E(400, 'Request_UnsupportedQuery', 'Unsupported Query.');
    let value = items.filter((x) => matchesFilter(x, clauses));
    const top = Number(q.get('$top'));
    if (Number.isInteger(top) && top > 0) value = value.slice(0, top);
    value = value.map((x) => project(x, q.get('$select')));
    return ok(200, { '@odata.context': `${this.base()}/$metadata#${entity}`, value });
  }

  entity(ctx, entity, obj) {
    return ok(200, { '@odata.context': `${this.base()}/$metadata#${entity}/$entity`, ...project(obj, ctx.url.searchParams.get('$select')) });
  }

  // ---- routing: segs after /v1.0 (original case) ----
  async handle(ctx, method, s, body) {
    const s0 = s[0] || '';
    const keyed = /^(applications|servicePrincipals)\(appId=(?:'|%27)([^']*)(?:'|%27)\)$/i.exec(s0);
    const top = lower(keyed ? keyed[1] : s0);
    if (!['applications', 'serviceprincipals', 'oauth2permissiongrants', 'directoryobjects'].includes(top)) return null;
    const parsed = this.parseBody(body, method);
    if (parsed.error) return parsed.error;
    const json = parsed.json;
    if (top === 'directoryobjects') {
      if (s.length !== 2 || method !== 'GET') return null;
      if (!this.allowed(ctx, 'appRead')) return INSUFFICIENT();
      const f = this.findObject(s[1]);
      return f ? ok(200, this.objectJson(f)) : NOT_FOUND(s[1]);
    }
    if (top === 'oauth2permissiongrants') return this.grantsRoute(ctx, method, s, json);
    const sel = keyed ? { appId: keyed[2] } : (s.length >= 2 ? { id: s[1] } : null);
    const rest = keyed ? s.slice(1) : s.slice(2);
    if (top === 'applications') return this.appsRoute(ctx, method, sel, rest, json);
    return this.spsRoute(ctx, method, sel, rest, json);
  }

  parseBody(body, method) {
    if (!['POST', 'PATCH', 'PUT'].includes(method)) return { json: null };
    const text = body ? body.toString('utf8') : '';
    if (!text.trim()) return { json: {} };
    try {
      const json = JSON.parse(text);
      if (!json || typeof json !== 'object' || Array.isArray(json)) return { error: BAD('The request body must be a JSON object.') };
      return { json };
    } catch (e) {
      return { error: E(400, 'BadRequest', `Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format. (${e.message})`) };
    }
  }

  checkAppBody(json) {
    for (const k of Object.keys(json)) {
      if (k.startsWith('@odata.')) continue;
      if (!APP_PROPS.has(lower(k))) return BAD(`Property '${k}' does not exist on type 'microsoft.graph.application'.`);
    }
    if (json.requiredResourceAccess !== undefined) {
      const rra = json.requiredResourceAccess;
      const okShape = Array.isArray(rra) && rra.every((r) => r && typeof r.resourceAppId === 'string' && Array.isArray(r.resourceAccess)
        && r.resourceAccess.every((a) => a && typeof a.id === 'string' && ['Scope', 'Role'].includes(a.type)));
      if (!okShape) return BAD("Invalid value specified for property 'requiredResourceAccess' of resource 'Application'.");
    }
    if (json.signInAudience !== undefined && !['AzureADMyOrg', 'AzureADMultipleOrgs', 'AzureADandPersonalMicrosoftAccount', 'PersonalMicrosoftAccount'].includes(json.signInAudience)) {
      return BAD("Invalid value specified for property 'signInAudience' of resource 'Application'.");
    }
    return null;
  }

  appsRoute(ctx, method, sel, rest, json) {
    const read = method === 'GET';
    if (!this.allowed(ctx, read ? 'appRead' : 'appWrite')) return INSUFFICIENT();
    if (!sel) {
      if (method === 'GET') return this.list(ctx, 'applications', [...this.applications.values()]);
      if (method === 'POST') {
        const err = this.checkAppBody(json);
        if (err) return err;
        if (!json.displayName) return BAD("Invalid value specified for property 'displayName' of resource 'Application'.");
        const { passwordCredentials, ...clean } = json; // cannot be set on create (reference §6.2)
        const app = this.appObject(clean);
        this.applications.set(app.id, app);
        this.owners.set(app.id, []);
        this.record(ctx, 'create', 'application', app.id, { appId: app.appId, displayName: app.displayName, ignored_passwordCredentials: passwordCredentials ? true : undefined });
        return ok(201, { '@odata.context': `${this.base()}/$metadata#applications/$entity`, ...app });
      }
      return E(405, 'BadRequest', 'Unsupported method.');
    }
    const app = this.findApp(sel);
    if (!app) return NOT_FOUND(sel.id ?? sel.appId);
    const r0 = lower(rest[0] || '');
    if (rest.length === 0) {
      if (method === 'GET') return this.entity(ctx, 'applications', app);
      if (method === 'PATCH') {
        const err = this.checkAppBody(json);
        if (err) return err;
        if (json.passwordCredentials !== undefined) return BAD("Property 'passwordCredentials' is read-only and cannot be set; use addPassword/removePassword.");
        const updated = this.appObject(json, app);
        this.applications.set(app.id, updated);
        this.record(ctx, 'update', 'application', app.id, { properties: Object.keys(json) });
        return ok(204);
      }
      if (method === 'DELETE') {
        this.applications.delete(app.id);
        this.owners.delete(app.id);
        for (const sp of [...this.servicePrincipals.values()]) if (sp.appId === app.appId) this.servicePrincipals.delete(sp.id);
        this.record(ctx, 'delete', 'application', app.id);
        return ok(204);
      }
      return E(405, 'BadRequest', 'Unsupported method.');
    }
    if (r0 === 'addpassword' && method === 'POST') {
      const pc = json.passwordCredential || {};
      const start = pc.startDateTime ? Date.parse(pc.startDateTime) : Date.now();
      const end = pc.endDateTime ? Date.parse(pc.endDateTime) : start + 2 * 365.25 * 24 * 3600 * 1000;
      if (Number.isNaN(start) || Number.isNaN(end)) return BAD('Invalid value specified for property startDateTime/endDateTime of resource PasswordCredential.');
      const secret = secretText();
      const cred = {
        customKeyIdentifier: null,
        displayName: pc.displayName ?? null,
        endDateTime: new Date(end).toISOString(),
        hint: secret.slice(0, 3),
        keyId: uuid(),
        secretText: null,
        startDateTime: new Date(start).toISOString(),
      };
      app.passwordCredentials = [...app.passwordCredentials, cred];
      this.secrets.set(cred.keyId, secret);
      this.record(ctx, 'addPassword', 'application', app.id, { keyId: cred.keyId, endDateTime: cred.endDateTime });
      return ok(200, { '@odata.context': `${this.base()}/$metadata#microsoft.graph.passwordCredential`, ...cred, secretText: secret });
    }
    if (r0 === 'removepassword' && method === 'POST') {
      const before = app.passwordCredentials.length;
      app.passwordCredentials = app.passwordCredentials.filter((c) => lower(c.keyId) !== lower(json.keyId));
      if (app.passwordCredentials.length === before) return NOT_FOUND(json.keyId);
      this.record(ctx, 'removePassword', 'application', app.id, { keyId: json.keyId });
      return ok(204);
    }
    if (r0 === 'owners') return this.ownersRoute(ctx, method, app, rest.slice(1), json);
    return null;
  }

  ownersRoute(ctx, method, app, rest, json) {
    const owners = this.owners.get(app.id) || [];
    if (rest.length === 0 && method === 'GET') {
      const value = owners.map((id) => this.findObject(id)).filter(Boolean).map((f) => this.objectJson(f));
      return ok(200, { '@odata.context': `${this.base()}/$metadata#directoryObjects`, value });
    }
    if (rest.length === 1 && rest[0] === '$ref' && method === 'POST') {
      const ref = String(json['@odata.id'] || '');
      const id = ref.replace(/\/+$/, '').split('/').pop().replace(/^.*\('?([^')]*)'?\)$/, '$1');
      if (!id) return BAD("Invalid object identifier ''.");
      const found = this.findObject(id);
      if (!found || found.type === 'application') return NOT_FOUND(id);
      if (owners.some((o) => lower(o) === lower(found.obj.id))) {
        return BAD("One or more added object references already exist for the following modified properties: 'owners'.");
      }
      this.owners.set(app.id, [...owners, found.obj.id]);
      this.record(ctx, 'addOwner', 'application', app.id, { owner: found.obj.id, ownerType: found.type });
      return ok(204);
    }
    if (rest.length === 2 && rest[1] === '$ref' && method === 'DELETE') {
      const id = rest[0];
      if (!owners.some((o) => lower(o) === lower(id))) return NOT_FOUND(id);
      this.owners.set(app.id, owners.filter((o) => lower(o) !== lower(id)));
      this.record(ctx, 'removeOwner', 'application', app.id, { owner: id });
      return ok(204);
    }
    return null;
  }

  spsRoute(ctx, method, sel, rest, json) {
    const r0 = lower(rest[0] || '');
    if (r0 === 'approleassignedto' || r0 === 'approleassignments') {
      if (!this.allowed(ctx, method === 'GET' ? 'roleRead' : 'roleWrite')) return INSUFFICIENT();
    } else if (r0 === 'oauth2permissiongrants') {
      if (!this.allowed(ctx, 'grantRead')) return INSUFFICIENT();
    } else if (!this.allowed(ctx, method === 'GET' ? 'appRead' : 'appWrite')) return INSUFFICIENT();
    if (!sel) {
      if (method === 'GET') return this.list(ctx, 'servicePrincipals', [...this.servicePrincipals.values()]);
      if (method === 'POST') {
        if (!json.appId) return BAD("Invalid value specified for property 'appId' of resource 'ServicePrincipal'.");
        const app = this.findApp({ appId: json.appId });
        if (this.findSp({ appId: json.appId })) {
          return E(409, 'Request_MultipleObjectsWithSameKeyValue', `The service principal cannot be created, updated, or restored because the service principal name ${json.appId} is already in use.`);
        }
        if (!app) return BAD(`The appId '${json.appId}' of the service principal does not reference a valid application object.`);
        const sp = this.spObject({
          appId: app.appId, displayName: app.displayName, appRoles: app.appRoles,
          oauth2PermissionScopes: app.api?.oauth2PermissionScopes || [], signInAudience: app.signInAudience,
          replyUrls: [...(app.web?.redirectUris || []), ...(app.publicClient?.redirectUris || []), ...(app.spa?.redirectUris || [])],
          servicePrincipalNames: [app.appId, ...(app.identifierUris || [])], tags: json.tags,
        });
        this.servicePrincipals.set(sp.id, sp);
        this.record(ctx, 'create', 'servicePrincipal', sp.id, { appId: sp.appId });
        return ok(201, { '@odata.context': `${this.base()}/$metadata#servicePrincipals/$entity`, ...sp });
      }
      return E(405, 'BadRequest', 'Unsupported method.');
    }
    const sp = this.findSp(sel);
    if (!sp) return NOT_FOUND(sel.id ?? sel.appId);
    if (rest.length === 0) {
      if (method === 'GET') return this.entity(ctx, 'servicePrincipals', sp);
      if (method === 'PATCH') {
        for (const k of ['accountEnabled', 'appRoleAssignmentRequired', 'tags', 'notes', 'description', 'displayName']) if (json[k] !== undefined) sp[k] = json[k];
        this.record(ctx, 'update', 'servicePrincipal', sp.id, { properties: Object.keys(json) });
        return ok(204);
      }
      if (method === 'DELETE') {
        if ([GRAPH_SP_ID, EXO_SP_ID].includes(sp.id)) return INSUFFICIENT();
        this.servicePrincipals.delete(sp.id);
        this.record(ctx, 'delete', 'servicePrincipal', sp.id);
        return ok(204);
      }
      return E(405, 'BadRequest', 'Unsupported method.');
    }
    if (r0 === 'approleassignedto') return this.assignRoute(ctx, method, sp, 'resource', rest.slice(1), json);
    if (r0 === 'approleassignments') return this.assignRoute(ctx, method, sp, 'principal', rest.slice(1), json);
    if (r0 === 'oauth2permissiongrants' && rest.length === 1 && method === 'GET') {
      return this.list(ctx, 'oauth2PermissionGrants', [...this.grants.values()].filter((g) => g.clientId === sp.id));
    }
    return null;
  }

  assignmentJson(a) {
    return { ...a };
  }

  assignRoute(ctx, method, sp, side, rest, json) {
    const mine = () => [...this.assignments.values()].filter((a) => (side === 'resource' ? a.resourceId === sp.id : a.principalId === sp.id));
    if (rest.length === 0 && method === 'GET') return this.list(ctx, side === 'resource' ? 'servicePrincipals/appRoleAssignedTo' : 'servicePrincipals/appRoleAssignments', mine());
    if (rest.length === 0 && method === 'POST') {
      const resourceId = side === 'resource' ? sp.id : json.resourceId;
      if (side === 'resource' && json.resourceId && lower(json.resourceId) !== lower(sp.id)) {
        return BAD("The resourceId in the request body does not match the service principal in the URL.");
      }
      const resource = this.findSp({ id: resourceId || '' });
      if (!resource) return BAD("Invalid value specified for property 'resourceId' of resource 'AppRoleAssignment'.");
      const principal = this.findObject(json.principalId || '');
      if (!principal || principal.type === 'application') return BAD("Invalid value specified for property 'principalId' of resource 'AppRoleAssignment'.");
      if (side === 'principal' && lower(json.principalId) !== lower(sp.id)) return BAD('The principalId in the request body does not match the service principal in the URL.');
      const r = resource.appRoles.find((x) => lower(x.id) === lower(json.appRoleId));
      if (!r && json.appRoleId !== '00000000-0000-0000-0000-000000000000') return BAD(`Permission being assigned was not found on application '${resource.appId}'.`);
      const admins = resource.appId === GRAPH_APP_ID ? GRAPH_ROLE_ADMIN_ROLES : GRANT_ADMIN_ROLES;
      if (!this.adminRoleOk(ctx, admins)) return INSUFFICIENT();
      if ([...this.assignments.values()].some((a) => a.resourceId === resource.id && lower(a.principalId) === lower(principal.obj.id) && lower(a.appRoleId) === lower(json.appRoleId))) {
        return BAD('Permission being assigned already exists on the object');
      }
      const a = {
        id: objectId(),
        deletedDateTime: null,
        appRoleId: json.appRoleId,
        createdDateTime: isoNow(),
        principalDisplayName: principal.obj.displayName,
        principalId: principal.obj.id,
        principalType: principal.type === 'user' ? 'User' : 'ServicePrincipal',
        resourceDisplayName: resource.displayName,
        resourceId: resource.id,
      };
      this.assignments.set(a.id, a);
      this.record(ctx, 'create', 'appRoleAssignment', a.id, { principalId: a.principalId, resourceId: a.resourceId, appRoleId: a.appRoleId, value: r?.value ?? null });
      return ok(201, { '@odata.context': `${this.base()}/$metadata#servicePrincipals('${sp.id}')/${side === 'resource' ? 'appRoleAssignedTo' : 'appRoleAssignments'}/$entity`, ...a });
    }
    if (rest.length === 1) {
      const a = mine().find((x) => x.id === rest[0]);
      if (!a) return NOT_FOUND(rest[0]);
      if (method === 'GET') return ok(200, a);
      if (method === 'DELETE') {
        this.assignments.delete(a.id);
        this.record(ctx, 'delete', 'appRoleAssignment', a.id);
        return ok(204);
      }
    }
    return null;
  }

  grantsRoute(ctx, method, s, json) {
    if (!this.allowed(ctx, method === 'GET' ? 'grantRead' : 'grantWrite')) return INSUFFICIENT();
    if (s.length === 1) {
      if (method === 'GET') return this.list(ctx, 'oauth2PermissionGrants', [...this.grants.values()]);
      if (method === 'POST') {
        const client = this.findSp({ id: json.clientId || '' });
        if (!client) return BAD("Invalid value specified for property 'clientId' of resource 'OAuth2PermissionGrant'.");
        const resource = this.findSp({ id: json.resourceId || '' });
        if (!resource) return BAD("Invalid value specified for property 'resourceId' of resource 'OAuth2PermissionGrant'.");
        if (!['AllPrincipals', 'Principal'].includes(json.consentType)) return BAD("Invalid value specified for property 'consentType' of resource 'OAuth2PermissionGrant'.");
        let principalId = json.principalId ?? null;
        if (json.consentType === 'Principal') {
          const u = principalId && this.env.findUser(principalId);
          if (!u) return BAD("Invalid value specified for property 'principalId' of resource 'OAuth2PermissionGrant'.");
          principalId = u.id;
        } else if (principalId) return BAD("principalId must be null when consentType is 'AllPrincipals'.");
        if (typeof json.scope !== 'string') return BAD("Invalid value specified for property 'scope' of resource 'OAuth2PermissionGrant'.");
        if (!this.adminRoleOk(ctx, GRANT_ADMIN_ROLES) && json.consentType === 'AllPrincipals') return INSUFFICIENT();
        if ([...this.grants.values()].some((g) => g.clientId === client.id && g.resourceId === resource.id && g.consentType === json.consentType && g.principalId === principalId)) {
          return E(409, 'Request_MultipleObjectsWithSameKeyValue', 'Permission entry already exists.');
        }
        const g = { clientId: client.id, consentType: json.consentType, id: objectId(), principalId, resourceId: resource.id, scope: json.scope };
        this.grants.set(g.id, g);
        const known = new Set(resource.oauth2PermissionScopes.map((x) => lower(x.value)));
        const unknown = json.scope.split(' ').filter((x) => x && !known.has(lower(x)));
        this.record(ctx, 'create', 'oauth2PermissionGrant', g.id, { clientId: g.clientId, resourceId: g.resourceId, scope: g.scope, ...(unknown.length ? { unknown_scopes: unknown } : {}) });
        return ok(201, { '@odata.context': `${this.base()}/$metadata#oauth2PermissionGrants/$entity`, ...g });
      }
      return E(405, 'BadRequest', 'Unsupported method.');
    }
    const g = this.grants.get(s[1]);
    if (!g || s.length > 2) return NOT_FOUND(s[1]);
    if (method === 'GET') return this.entity(ctx, 'oauth2PermissionGrants', g);
    if (method === 'PATCH') {
      if (json.scope !== undefined) {
        if (typeof json.scope !== 'string') return BAD("Invalid value specified for property 'scope' of resource 'OAuth2PermissionGrant'.");
        g.scope = json.scope;
      }
      this.record(ctx, 'update', 'oauth2PermissionGrant', g.id, { scope: g.scope });
      return ok(204);
    }
    if (method === 'DELETE') {
      this.grants.delete(g.id);
      this.record(ctx, 'delete', 'oauth2PermissionGrant', g.id);
      return ok(204);
    }
    return E(405, 'BadRequest', 'Unsupported method.');
  }

  // ---- control API ----
  dump() {
    const apps = [...this.applications.values()].map((a) => ({
      ...a,
      owners: (this.owners.get(a.id) || []).map((id) => {
        const f = this.findObject(id);
        return { id, type: f?.type ?? null, displayName: f?.obj.displayName ?? null, userPrincipalName: f?.obj.userPrincipalName ?? null };
      }),
      secrets: a.passwordCredentials.map((c) => ({ keyId: c.keyId, secretText: this.secrets.get(c.keyId) ?? null, endDateTime: c.endDateTime, expired: Date.parse(c.endDateTime) < Date.now() })),
    }));
    return {
      applications: apps,
      servicePrincipals: [...this.servicePrincipals.values()],
      oauth2PermissionGrants: [...this.grants.values()],
      appRoleAssignments: [...this.assignments.values()],
      log: this.log,
      counts: {
        applications: this.applications.size, servicePrincipals: this.servicePrincipals.size,
        oauth2PermissionGrants: this.grants.size, appRoleAssignments: this.assignments.size,
      },
      well_known: { graph_sp_id: GRAPH_SP_ID, exchange_sp_id: EXO_SP_ID, smtp_send_as_app_role_id: SMTP_SEND_AS_APP_ID },
    };
  }

  // {id | appId, keyId?, endDateTime?}: set endDateTime (default: yesterday) of one or all secrets
  expireSecret(body) {
    const app = body.appId ? this.findApp({ appId: body.appId }) : this.findApp({ id: body.id || '' });
    if (!app) return [404, { error: 'not_found' }];
    const end = body.endDateTime || new Date(Date.now() - 24 * 3600 * 1000).toISOString();
    let n = 0;
    app.passwordCredentials = app.passwordCredentials.map((c) => {
      if (body.keyId && lower(c.keyId) !== lower(body.keyId)) return c;
      n += 1;
      return { ...c, endDateTime: new Date(Date.parse(end)).toISOString() };
    });
    this.log.push({ seq: ++this.seq, time: new Date().toISOString(), op: 'expireSecret', type: 'application', id: app.id, by: '_test', detail: { keyId: body.keyId || null, endDateTime: end } });
    return [n ? 200 : 404, { updated: n, passwordCredentials: app.passwordCredentials }];
  }
}
