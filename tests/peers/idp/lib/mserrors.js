// Microsoft identity platform error shape (microsoft-reference.md §1.10) and the mapping of
// oidc-provider's OAuth errors to plausible AADSTS codes (§2).
import * as crypto from 'node:crypto';

export const AADSTS_TEXT = {
  50011: "The redirect URI specified in the request does not match the redirect URIs configured for the application.",
  50034: "The user account does not exist in this directory.",
  50076: "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access the resource.",
  50126: "Error validating credentials due to invalid username or password.",
  50148: "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
  50173: "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
  54005: "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
  65001: "The user or administrator has not consented to use the application.",
  65004: "User declined to consent to access the app.",
  70000: "The provided grant is invalid or malformed.",
  70003: "The app requested an unsupported grant type.",
  70008: "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
  70011: "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid.",
  70016: "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
  70018: "The provided value for the input parameter 'user_code' is not valid.",
  70019: "Verification code expired.",
  90002: "Tenant not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.",
  90014: "The request body must contain the following parameter.",
  90120: "The request was already authorized or declined.",
  500011: "The resource principal was not found in the tenant.",
  700016: "Application was not found in the directory. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
  700022: "The provided value for the input parameter scope is not valid because it contains more than one resource. Scope is not valid.",
  700025: "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
  700082: "The refresh token has expired due to inactivity. The token was issued on 2024-01-01T00:00:00Z and was inactive for 90.00:00:00.",
  1002012: "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
  7000215: "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
  7000218: "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
  7000222: "The provided client secret keys for app are expired. Visit the Azure portal to create new keys for your app or consider using certificate credentials for added security.",
  9002313: "Invalid request. Request is malformed or invalid.",
  50000: "There was an error issuing a token or an issue with our sign-in service.",
  90033: "A transient error has occurred. Please try again.",
};

export function msTimestamp(d = new Date()) {
  // "2016-01-09 02:02:12Z"
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export function msError(error, code, text) {
  const traceId = crypto.randomUUID();
  const correlationId = crypto.randomUUID();
  const timestamp = msTimestamp();
  const body = text ?? AADSTS_TEXT[code] ?? 'Error.';
  return {
    error,
    error_description: `AADSTS${code}: ${body}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${timestamp}`,
    error_codes: [code],
    timestamp,
    trace_id: traceId,
    correlation_id: correlationId,
    error_uri: `https://login.microsoftonline.com/error?code=${code}`,
  };
}

// Decide the Microsoft error for an oidc-provider error at the token / devicecode endpoint.
// body: oidc-provider's {error, error_description}; err: the thrown error (error_detail /
// cause carry the precise reason); grantType: the request's grant_type; settings: live settings.
export function mapProviderError(body, err, grantType, settings) {
  const e = body.error;
  const desc = String(body.error_description || '');
  const detail = `${err?.error_detail || ''} ${err?.cause?.message || ''} ${desc}`;
  const has = (s) => detail.includes(s);
  switch (e) {
    case 'invalid_client':
      if (has('client not found')) return { error: 'unauthorized_client', code: 700016, status: 400 };
      if (has('authentication mechanism does not match') || has('no client authentication')) return { error: 'invalid_client', code: 7000218, status: 401 };
      return { error: 'invalid_client', code: 7000215, status: 401 };
    case 'invalid_grant':
      if (has('code_verifier')) return { error: 'invalid_grant', code: 50148 };
      if (grantType === 'authorization_code') {
        if (has('consumed')) return { error: 'invalid_grant', code: 54005 };
        if (has('redirect_uri')) return { error: 'invalid_grant', code: 50011 };
        return { error: 'invalid_grant', code: 70008 };
      }
      if (grantType === 'refresh_token') {
        if (has('expired')) return { error: 'invalid_grant', code: settings.expired_refresh_token_code };
        return { error: 'invalid_grant', code: settings.bad_refresh_token_code };
      }
      if (grantType === 'urn:ietf:params:oauth:grant-type:device_code') {
        if (has('not found')) return { error: 'bad_verification_code', code: 9002313 };
        if (has('consumed')) return { error: 'invalid_grant', code: 90120 };
      }
      return { error: 'invalid_grant', code: 70000 };
    case 'authorization_pending':
      return { error: 'authorization_pending', code: 70016 };
    case 'slow_down':
      return { error: 'slow_down', code: 70016, text: 'OAuth 2.0 device flow error. Polling too frequently; slow down (add 5 seconds to the interval).' };
    case 'expired_token':
      return { error: 'expired_token', code: 70019 };
    case 'access_denied':
      if (grantType === 'urn:ietf:params:oauth:grant-type:device_code') return { error: 'authorization_declined', code: 65004, text: 'The end user denied the authorization request. User declined to consent to access the app.' };
      return { error: 'access_denied', code: 65004 };
    case 'invalid_scope':
      if (grantType === 'refresh_token' && has('missing requested')) return { error: 'invalid_grant', code: 65001 };
      return { error: 'invalid_scope', code: 70011 };
    case 'invalid_target':
      return { error: 'invalid_resource', code: 500011 };
    case 'unauthorized_client':
      if (grantType === 'urn:ietf:params:oauth:grant-type:device_code') return { error: 'invalid_client', code: 7000218, status: 401 };
      return { error: 'unauthorized_client', code: 700016 };
    case 'unsupported_grant_type':
      return { error: 'unsupported_grant_type', code: 70003 };
    case 'invalid_request':
      if (has('missing required parameter')) return { error: 'invalid_request', code: 90014, text: `${AADSTS_TEXT[90014]} (${desc})` };
      return { error: 'invalid_request', code: 9002313, text: `${AADSTS_TEXT[9002313]} (${desc})` };
    case 'server_error':
      return { error: 'server_error', code: 50000, status: 500 };
    default:
      return { error: e || 'invalid_request', code: 9002313 };
  }
}
