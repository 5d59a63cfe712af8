/*
 * oauth: errors that name the fix. Every AADSTS code in microsoft-reference §2 and every OAuth
 * error string of §1.4, §1.8 and §1.10 becomes one line of cause and one line of fix, written
 * for the people who run mailbridge (site owners and sysadmins, not identity experts).
 *
 * Code must branch on the OAuth error string; Microsoft may renumber AADSTS codes or reword
 * them, so the numbers here only choose a better explanation. Where the reference gives a
 * code two classes (65001 "I/C", 50020 "U/C"...), the row takes the one whose fix works
 * most often for a gateway whose sign-in was set up once by an admin.
 */
#include <stdio.h>
#include <string.h>

#include "oauth/oauth.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

#define T OAUTH_CLASS_TRANSIENT
#define R OAUTH_CLASS_REAUTHORIZE
#define C OAUTH_CLASS_CONFIG
#define U OAUTH_CLASS_USER
#define P OAUTH_CLASS_PENDING

/* Shared wording, so the same advice reads the same everywhere. */
#define FIX_LOGIN "Sign in again with `mailbridge auth login NAME`."
#define FIX_ADMIN_CONSENT                                                                          \
	"Grant admin consent (App registrations → API permissions → Grant admin consent) and " \
	"add the admin and the sender as owners (the guide's Part 5), then run `mailbridge auth "  \
	"login NAME`."
#define FIX_TENANT                                                                                  \
	"Set tenant to the tenant ID (Directory (tenant) ID in App registrations → your app → " \
	"Overview) instead of common; `mailbridge doctor` checks it."
#define FIX_BUG                                                                                    \
	"Check that no proxy rewrites the sign-in URL and retry with `mailbridge auth login "      \
	"NAME`; if it repeats, report a mailbridge bug with `mailbridge doctor` output."

static const struct oauth_explain aadsts_rows[] = {
    /* §2, first table */
    {C, 50011,
     "The redirect URI sent at sign-in is not registered on the app (missing, or it "
     "differs in scheme, host, path, case or trailing slash).",
     "In Entra admin center → App registrations → your app → Authentication, add the Web "
     "redirect URI {public_url}/oauth/callback exactly, where {public_url} is mailbridge's "
     "public_url setting."},
    {C, 50020,
     "The account signing in belongs to another tenant and is not a guest of the app's "
     "tenant.",
     "Sign in with an account of the app's tenant (or invite it as a guest), and check that "
     "tenant is the app's Directory (tenant) ID."},
    {U, 50034,
     "The account does not exist in this tenant: the username is mistyped or the "
     "tenant is wrong.",
     "Check the address you sign in with and the tenant setting, then run `mailbridge auth login "
     "NAME` again."},
    {U, 50055, "The password of the account signing in has expired.",
     "Change the password at https://myaccount.microsoft.com (or ask an admin to reset it), "
     "then run `mailbridge auth login NAME`."},
    {C, 50057, "The account is disabled in Microsoft Entra ID.",
     "An admin must re-enable the account (Entra admin center → Users), then run `mailbridge "
     "auth login NAME`."},
    {R, 50058,
     "Microsoft has no sign-in session for the user, so a silent sign-in cannot "
     "finish.",
     FIX_LOGIN},
    {R, 50076,
     "Multi-factor authentication is now required (a Conditional Access policy, "
     "per-user MFA or a new location).",
     "Sign in again interactively with `mailbridge auth login NAME` and complete the MFA "
     "prompt."},
    {U, 50079, "The user must register multi-factor authentication before signing in.",
     "Have the user sign in once at https://aka.ms/mfasetup to register MFA, then run "
     "`mailbridge auth login NAME`."},
    {U, 50126, "Wrong username or password.",
     "Sign in again with `mailbridge auth login NAME` using the mailbox's correct password."},
    {R, 50173,
     "The sign-in was revoked: the password was changed or reset, or an admin "
     "revoked the user's sessions.",
     "Sign in again with `mailbridge auth login NAME`; the stored refresh token is no longer "
     "valid."},
    {C, 53003, "A Conditional Access policy blocks this sign-in (app, location or device).",
     "An admin must review the Conditional Access sign-in logs in Entra admin center and allow "
     "this app from the gateway's location."},
    {C, 65001,
     "Nobody has consented to the app's permissions in this tenant (\"needs "
     "permission to access resources in your organization that only an admin can "
     "grant\").",
     FIX_ADMIN_CONSENT},
    {U, 65004, "The user declined to give the app the permissions it asked for.",
     "Run `mailbridge auth login NAME` again and click Accept, or have an admin grant consent "
     "for the organization."},
    {R, 70000, "The refresh token is no longer valid.", FIX_LOGIN},
    {R, 70008, "The refresh token expired or was revoked after a long inactivity.",
     "Sign in again with `mailbridge auth login NAME`; mailbridge refreshes tokens daily to "
     "prevent this."},
    {C, 70011,
     "A requested scope is invalid (it must be a full URI, from one resource per "
     "token request, and .default for app-only).",
     "Check the API permissions of the app registration and run `mailbridge doctor`; if it "
     "repeats, report a mailbridge bug."},
    {C, 700016,
     "No app with this client_id exists in the tenant (wrong client_id, wrong tenant, "
     "or the app was deleted).",
     "Copy client_id from App registrations → your app → Overview → Application (client) ID, "
     "and check tenant and cloud."},
    {R, 700082, "The refresh token expired after 90 days of inactivity.",
     "Sign in again with `mailbridge auth login NAME`; mailbridge refreshes daily to prevent "
     "this, so check that the daemon keeps running."},
    {C, 7000215,
     "the client secret is wrong — often the secret ID was pasted instead of its "
     "Value",
     "In Entra admin center → App registrations → your app → Certificates & secrets, copy "
     "the secret's Value (not the Secret ID) into client_secret_file"},
    {C, 7000218,
     "The app expects a client secret and none was sent, or \"Allow public client "
     "flows\" is off for device-code sign-in.",
     "Set client_secret_file to a file holding the secret's Value, or for `--device` sign-in "
     "turn on App registrations → Authentication → Allow public client flows."},
    {C, 7000222, "the client secret has expired",
     "In Entra admin center → App registrations → your app → Certificates & secrets, add a "
     "new client secret (or addPassword through Graph), put its Value into "
     "client_secret_file, then delete the old one."},
    {C, 90002, "The tenant was not found: a wrong tenant ID or domain, or the wrong cloud.",
     "Set tenant to the Directory (tenant) ID from the app's Overview page, and cloud to where "
     "the tenant lives (global, usgov, usgov-dod, china)."},
    {C, 90014, "A required field is missing from the request sent to Microsoft.", FIX_BUG},
    {C, 90094,
     "An admin must consent: the app \"needs permission to access resources in your "
     "organization that only an admin can grant\".",
     FIX_ADMIN_CONSENT},
    {C, 500113, "The app registration has no redirect URI at all.",
     "In App registrations → your app → Authentication, add a Web platform with the "
     "redirect URI {public_url}/oauth/callback."},
    {C, 700054,
     "The app asked for an ID token from the authorize endpoint, which the app "
     "registration does not allow.",
     FIX_BUG},
    {C, 9002313, "Microsoft found the request malformed.", FIX_BUG},
    {U, 135010,
     "A device key on the user's computer was not found (Windows Hello or device "
     "registration).",
     "Retry the sign-in, or sign in from another browser profile without Windows Hello."},
    {U, 90072, "The account belongs to another tenant and cannot complete MFA in this one.",
     "Sign in with an account of the app's tenant, or have an admin add it as a guest; check "
     "the tenant setting."},

    /* §2, second table */
    {C, 500011,
     "The service the app needs (Microsoft Graph or Exchange Online) is not "
     "provisioned in the tenant.",
     "Check that the tenant has an Exchange Online licence for the sender, and that tenant and "
     "cloud are right."},
    {C, 65005,
     "The app asks for a permission it does not list in its API permissions, or "
     "admin consent is missing.",
     "Add the permissions mailbridge needs (Mail.Send, User.Read, offline_access; SMTP.Send for "
     "microsoft-smtp) under API permissions, then grant admin consent."},
    {C, 650056,
     "The app is misconfigured: a needed permission is not listed, or an admin has "
     "not consented.",
     "Add the missing permission under App registrations → API permissions and click Grant "
     "admin consent; `mailbridge doctor` lists what is needed."},
    {C, 650057, "The app asks for a resource that is not in its list of API permissions.",
     "Add the permissions mailbridge needs under App registrations → API permissions and "
     "grant admin consent; `mailbridge doctor` lists them."},
    {C, 50194, "The app is single-tenant but sign-in used /common.", FIX_TENANT},
    {R, 54005, "The authorization code was already used.",
     "Start again with `mailbridge auth login NAME`; a sign-in link works only once."},
    {R, 700005, "The authorization code belongs to another tenant.",
     "Check tenant, then sign in again with `mailbridge auth login NAME`."},
    {C, 700022, "A token request named scopes from more than one resource.", FIX_BUG},
    {C, 700025, "The app is a public client, so a client secret must not be sent.",
     "Remove client_secret_file (and client_secret, client_secret_env) from the connection, or "
     "turn off Allow public client flows if the app should be confidential."},
    {P, 70016, "The user has not finished signing in on the device-login page yet.",
     "Nothing to do: mailbridge keeps polling until the code expires."},
    {U, 70018, "The code typed on the device-login page was wrong.",
     "Type the code mailbridge printed exactly, or start again with `mailbridge auth login NAME "
     "--device`."},
    {U, 70019, "The device code expired before the sign-in finished.",
     "Start again with `mailbridge auth login NAME --device` and finish within 15 minutes."},
    {U, 90120, "This device code was already used or declined.",
     "Start again with `mailbridge auth login NAME --device`."},
    {R, 70043, "A Conditional Access sign-in frequency policy requires signing in again.",
     "Sign in again with `mailbridge auth login NAME`; an admin can exclude the app from the "
     "sign-in frequency policy to stop this."},
    {C, 530035, "Security defaults block this sign-in.",
     "An admin must review Entra admin center → Overview → Properties → Security defaults, or "
     "use Conditional Access instead, then run `mailbridge auth login NAME`."},
    {T, 50196, "Microsoft saw too many identical sign-in requests in a short time.",
     "Nothing to do: mailbridge backs off and retries; if it repeats, run `mailbridge doctor`."},
    {T, 90055, "Microsoft is throttling sign-in requests for this tenant.",
     "Nothing to do: mailbridge backs off and retries."},
    {C, 901002,
     "The request used the v1 'resource' parameter, which the v2.0 endpoint "
     "refuses.",
     FIX_BUG},

    /* PKCE (§1.3), consent (§1.13), authority (§1.1), clouds (§5), redirect URIs (§1.12) */
    {C, 50147, "The PKCE code_challenge had an invalid size.", FIX_BUG},
    {R, 50148, "The PKCE code_verifier did not match the code_challenge of this sign-in.",
     "Start again with `mailbridge auth login NAME` and finish it in the same browser tab."},
    {C, 50149, "The PKCE code_challenge_method was invalid.", FIX_BUG},
    {C, 501491, "The PKCE code_challenge had an invalid size.", FIX_BUG},
    {R, 501481, "The PKCE code_verifier did not match the code_challenge of this sign-in.",
     "Start again with `mailbridge auth login NAME` and finish it in the same browser tab."},
    {C, 90093, "A tenant policy stops this user from granting the app's permissions.",
     FIX_ADMIN_CONSENT},
    {C, 900941, "Microsoft flagged the app as risky, so an admin must consent.", FIX_ADMIN_CONSENT},
    {C, 900981, "Microsoft flagged the app as risky, so an admin must consent.", FIX_ADMIN_CONSENT},
    {C, 9001023, "This request is not supported with the /common or /consumers authority.",
     FIX_TENANT},
    {C, 90124, "This request is not supported with the /common or /consumers authority.",
     FIX_TENANT},
    {C, 90130, "This request is not supported with the /common or /consumers authority.",
     FIX_TENANT},
    {C, 90038, "The tenant lives in another Microsoft cloud than the one mailbridge used.",
     "Set cloud to the tenant's cloud (global, usgov, usgov-dod, china), with an app "
     "registered in that cloud."},
    {C, 70004, "The redirect URI is invalid.",
     "In App registrations → your app → Authentication, register the Web redirect URI "
     "{public_url}/oauth/callback over https://."},
    {C, 900971, "No redirect URI was sent with the sign-in request.",
     "Set public_url in mailbridge's configuration; the redirect URI is "
     "{public_url}/oauth/callback."},
};

struct oauth_error_row {
	const char *error;
	struct oauth_explain ex;
};

static const struct oauth_error_row error_rows[] = {
    {"invalid_grant",
     {R, 0, "The sign-in (refresh token or authorization code) is expired, revoked or invalid.",
      FIX_LOGIN}},
    {"interaction_required",
     {R, 0, "Microsoft needs the user to sign in interactively (MFA, consent or a policy).",
      FIX_LOGIN}},
    {"login_required", {R, 0, "Microsoft has no sign-in session for the user.", FIX_LOGIN}},
    {"consent_required",
     {R, 0, "The app's permissions have not been consented to.",
      "Sign in again with `mailbridge auth login NAME` and accept; if it asks for admin "
      "approval, grant admin consent under App registrations → API permissions."}},
    {"invalid_client",
     {C, 0, "The client secret is wrong or expired (or client_id is wrong).",
      "In Entra admin center → App registrations → your app → Certificates & secrets, check "
      "the secret's expiry and copy its Value (not the Secret ID) into client_secret_file."}},
    {"unauthorized_client",
     {C, 0, "The app is not allowed this kind of sign-in, or is not registered in this tenant.",
      "Check client_id and tenant; for `--device` turn on Allow public client flows; run "
      "`mailbridge doctor`."}},
    {"invalid_scope",
     {C, 0, "A requested permission (scope) is invalid for this app.",
      "Check the app's API permissions (Mail.Send, User.Read; SMTP.Send for microsoft-smtp) "
      "and run `mailbridge doctor`."}},
    {"invalid_request",
     {C, 0, "Microsoft refused the request as malformed or missing a parameter.", FIX_BUG}},
    {"invalid_resource",
     {C, 0, "The service the app needs is missing or not set up in the tenant.",
      "Check that the sender has an Exchange Online licence and that tenant and cloud are "
      "right."}},
    {"unsupported_grant_type",
     {C, 0, "Microsoft refused the kind of token request mailbridge sent.", FIX_BUG}},
    {"unsupported_response_type",
     {C, 0, "Microsoft refused the sign-in response type mailbridge asked for.", FIX_BUG}},
    {"temporarily_unavailable",
     {T, 0, "Microsoft's sign-in service is busy.",
      "Nothing to do: mailbridge backs off and retries, keeping the refresh token."}},
    {"server_error",
     {T, 0, "Microsoft's sign-in service had an internal error.",
      "Nothing to do: mailbridge backs off and retries, keeping the refresh token."}},
    {"authorization_pending",
     {P, 0, "The user has not finished signing in on the device-login page yet.",
      "Nothing to do: mailbridge keeps polling until the code expires."}},
    {"slow_down",
     {P, 0, "Microsoft asked mailbridge to poll less often.",
      "Nothing to do: mailbridge adds 5 seconds to the polling interval."}},
    {"access_denied",
     {U, 0, "The user cancelled the sign-in or refused the permissions.",
      "Run `mailbridge auth login NAME` again and click Accept; if it says \"Need admin "
      "approval\", an admin must grant consent."}},
    {"authorization_declined",
     {U, 0, "The user declined the device-code sign-in.",
      "Start again with `mailbridge auth login NAME --device` and approve it."}},
    {"expired_token",
     {U, 0, "The device code expired before the sign-in finished.",
      "Start again with `mailbridge auth login NAME --device` and finish within 15 minutes."}},
    {"bad_verification_code",
     {U, 0, "Microsoft did not recognise the device code.",
      "Start again with `mailbridge auth login NAME --device`."}},
    {"permission_denied",
     {U, 0, "The admin cancelled the admin-consent request.",
      "Open the admin-consent link again and click Accept."}},
};

/* The seed guide's Error 4 and Error 5: what users read, though no error code says it. */
static const struct oauth_explain explain_unverified = {
    U, 0,
    "\"Application is unverified\" on the consent screen only means the app is not published by "
    "a verified publisher, which is normal for your own app registration.",
    "This is not a blocker: accept, or have an admin grant consent once (App registrations → "
    "API permissions → Grant admin consent)."};

static const struct oauth_explain explain_token_expired = {
    T, 0,
    "The access token expired: they last about 60-90 minutes, and mailbridge refreshes them "
    "itself before they do.",
    "Nothing to do; re-authorize with `mailbridge auth login NAME` only when mailbridge reports "
    "invalid_grant (needs re-authorization)."};

static const char generic_transient_fix[] =
    "Nothing to do: mailbridge backs off and retries, keeping the refresh token; if it lasts, "
    "run `mailbridge doctor`.";

static const char generic_config_fix[] =
    "Check client_id, tenant, cloud and client_secret_file with `mailbridge doctor`, then run "
    "`mailbridge auth login NAME`.";

const struct oauth_explain *
oauth_aadsts_find(long code)
{
	for (size_t i = 0; i < NELEM(aadsts_rows); i++) {
		if (aadsts_rows[i].aadsts == code)
			return &aadsts_rows[i];
	}
	return NULL;
}

const struct oauth_explain *
oauth_aadsts_table(size_t *n)
{
	*n = NELEM(aadsts_rows);
	return aadsts_rows;
}

const struct oauth_explain *
oauth_error_find(const char *error)
{
	if (error == NULL)
		return NULL;
	for (size_t i = 0; i < NELEM(error_rows); i++) {
		if (strcmp(error_rows[i].error, error) == 0)
			return &error_rows[i].ex;
	}
	return NULL;
}

const char *
oauth_error_name(size_t i)
{
	return i < NELEM(error_rows) ? error_rows[i].error : NULL;
}

const struct oauth_explain *
oauth_explain_unverified(void)
{
	return &explain_unverified;
}

const struct oauth_explain *
oauth_explain_token_expired(void)
{
	return &explain_token_expired;
}

const char *
oauth_class_name(enum oauth_class c)
{
	switch (c) {
	case OAUTH_CLASS_TRANSIENT:
		return "transient";
	case OAUTH_CLASS_REAUTHORIZE:
		return "reauthorize";
	case OAUTH_CLASS_CONFIG:
		return "config";
	case OAUTH_CLASS_USER:
		return "user";
	case OAUTH_CLASS_PENDING:
		return "pending";
	}
	return "unknown";
}

void
oauth_error_explain(const struct oauth_error *e, struct oauth_explain *out)
{
	const struct oauth_explain *row;
	bool transient;

	for (int i = 0; i < e->ncodes && i < (int)NELEM(e->codes); i++) {
		if ((row = oauth_aadsts_find(e->codes[i])) != NULL) {
			*out = *row;
			return;
		}
	}
	if ((row = oauth_error_find(e->error)) != NULL) {
		*out = *row;
		out->aadsts = e->ncodes > 0 ? e->codes[0] : 0;
		return;
	}
	transient = e->http_status >= 500 || e->http_status == 429;
	out->cls = transient ? OAUTH_CLASS_TRANSIENT : OAUTH_CLASS_CONFIG;
	if (e->description[0])
		out->cause = e->description;
	else if (transient)
		out->cause = "Microsoft's sign-in service failed or is busy and gave no reason.";
	else
		out->cause = "Microsoft's sign-in service refused the request and gave no reason.";
	out->fix = transient ? generic_transient_fix : generic_config_fix;
	out->aadsts = e->ncodes > 0 ? e->codes[0] : 0;
}
