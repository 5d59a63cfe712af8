// Static knowledge of the stand-in: tenant, resources and their scopes, default users and
// clients, default settings. Everything here can be overridden at start (files / flags) or at
// run time through the control API.

export const TENANT_ID = '11111111-2222-3333-4444-555555555555';
export const TENANT_DOMAINS = ['contoso.test', 'contoso.onmicrosoft.com'];
// Authorities accepted besides the tenant id and its domains (§1.1). client_credentials is
// refused on these (AADSTS90130-like), as Microsoft requires a tenant there.
export const MULTI_TENANT_AUTHORITIES = ['common', 'organizations'];

export const OIDC_SCOPES = ['openid', 'profile', 'email', 'offline_access'];

// Resource identifier URI -> delegated scopes, app roles, and what ".default" means.
export const RESOURCES = {
  'https://graph.microsoft.com': {
    // the directory scopes are for `mailbridge setup microsoft` (an admin's sign-in, §6)
    scopes: ['Mail.Send', 'Mail.Send.Shared', 'Mail.ReadWrite', 'Mail.Read', 'User.Read',
      'User.ReadBasic.All', 'Application.Read.All', 'Application.ReadWrite.All', 'DelegatedPermissionGrant.ReadWrite.All',
      'Directory.Read.All',
      'AppRoleAssignment.ReadWrite.All', '.default'],
    defaultDelegated: ['Mail.Send', 'User.Read'],
  },
  'https://outlook.office.com': {
    scopes: ['SMTP.Send', 'IMAP.AccessAsUser.All', 'POP.AccessAsUser.All', '.default'],
    defaultDelegated: ['SMTP.Send'],
  },
  'https://outlook.office365.com': {
    scopes: ['SMTP.Send', 'IMAP.AccessAsUser.All', 'POP.AccessAsUser.All', 'SMTP.SendAsApp', '.default'],
    defaultDelegated: ['SMTP.Send'],
  },
};

export const DEFAULT_USERS = [
  {
    username: 'user@contoso.test', password: 'UserPass1!', name: 'Test User',
    oid: 'aaaaaaaa-0000-4000-8000-000000000001',
  },
  {
    username: 'admin@contoso.test', password: 'AdminPass1!', name: 'Tenant Admin',
    oid: 'aaaaaaaa-0000-4000-8000-000000000002',
  },
  {
    username: 'alice@contoso.test', password: 'AlicePass1!', name: 'Alice Example',
    oid: 'aaaaaaaa-0000-4000-8000-000000000003',
  },
];

export const DEFAULT_CLIENTS = [
  {
    // confidential web app ("Mailbridge (web)")
    client_id: '00001111-aaaa-2222-bbbb-3333cccc4444',
    client_secret: 'Zx8Q~test.secret_value-1234567890abcdefghij',
    name: 'Mailbridge test (confidential)',
    public: false,
    redirect_uris: ['http://127.0.0.1/oauth/callback', 'http://localhost/oauth/callback'],
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials',
      'urn:ietf:params:oauth:grant-type:device_code'],
    app_roles: {
      'https://graph.microsoft.com': ['Mail.Send'],
      'https://outlook.office365.com': ['SMTP.SendAsApp'],
    },
  },
  {
    // public client ("Allow public client flows = Yes")
    client_id: '55556666-eeee-7777-ffff-8888aaaa9999',
    name: 'Mailbridge test (public)',
    public: true,
    redirect_uris: ['http://127.0.0.1/oauth/callback', 'http://localhost/oauth/callback'],
    grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
  },
  {
    // the bootstrap public client `mailbridge setup microsoft` signs the admin in with
    // (reference §6.1: "Microsoft Graph Command Line Tools"); device code only
    client_id: '14d82eec-204b-4c2f-b7e8-296a70dab67e',
    name: 'Microsoft Graph Command Line Tools',
    public: true,
    redirect_uris: ['http://localhost'],
    grant_types: ['refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
  },
];

export const DEFAULT_SETTINGS = {
  access_token_ttl: 3599, // seconds; expires_in / ext_expires_in
  auth_code_ttl: 600,
  id_token_ttl: 3600,
  refresh_token_ttl: 90 * 24 * 3600,
  device_code_ttl: 900, // expires_in of /devicecode
  device_interval: 5, // interval of /devicecode
  enforce_interval: true, // polling faster than the interval -> slow_down (RFC 8628 §3.5)
  slow_down_increment: 5, // seconds added to the interval after each slow_down
  // "keep-old": a new refresh token on every use, the old one stays valid (Microsoft);
  // "strict": oidc-provider rotation, the old one is consumed, its reuse revokes the grant;
  // "off": the same refresh token is returned.
  refresh_rotation: 'keep-old',
  bad_refresh_token_code: 70000, // invalid_grant code for an unknown/invalid refresh token
  expired_refresh_token_code: 700082, // invalid_grant code for an expired refresh token
  // oidc-provider revokes every token of a grant when an authorization/device code is
  // redeemed twice (RFC 6749 §4.1.2 SHOULD); Microsoft only answers AADSTS54005. false = Microsoft.
  revoke_on_code_reuse: false,
  always_consent: false, // true: show the consent page even when already granted in the session
};
