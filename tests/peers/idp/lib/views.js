// HTML pages of the stand-in. No JavaScript, no external resources: they are driven by plain
// HTTP clients (urllib + cookie jar) and by a real browser (Playwright) alike.

export function esc(value) {
  return String(value ?? '')
    .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

const STYLE = `body{font-family:Segoe UI,Arial,sans-serif;background:#f2f2f2;margin:0}
.box{background:#fff;max-width:440px;margin:48px auto;padding:32px 44px;box-shadow:0 2px 6px rgba(0,0,0,.2)}
h1{font-size:1.5em;font-weight:600}label{display:block;margin:12px 0 4px}
input[type=text],input[type=email],input[type=password]{width:100%;box-sizing:border-box;padding:6px;font-size:1em}
button{margin-top:16px;padding:6px 20px;font-size:1em}.primary{background:#0067b8;color:#fff;border:0}
.error{color:#e81123}.small{font-size:.85em;color:#555}ul{padding-left:20px}form.inline{display:inline}`;

export function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>${STYLE}</style></head>
<body><div class="box">
<div class="small">Microsoft (test stand-in)</div>
${body}
</div></body></html>`;
}

export function loginPage({ uid, clientName, loginHint, error }) {
  return page('Sign in to your account', `
<h1 id="title">Sign in</h1>
<p class="small">to continue to <b id="client-name">${esc(clientName)}</b></p>
${error ? `<p class="error" id="error">${esc(error)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${esc(uid)}/login">
  <label for="login">Email, phone, or Skype</label>
  <input type="email" id="login" name="login" value="${esc(loginHint)}" autocomplete="username" required autofocus>
  <label for="password">Password</label>
  <input type="password" id="password" name="password" autocomplete="current-password" required>
  <button type="submit" class="primary" id="submit">Sign in</button>
</form>
<form id="cancel-form" method="post" action="/interaction/${esc(uid)}/abort">
  <button type="submit" id="cancel">Cancel</button>
</form>`);
}

export function consentPage({ uid, clientName, username, scopes }) {
  const items = scopes.map((s) => `<li class="scope">${esc(s)}</li>`).join('\n');
  return page('Permissions requested', `
<h1 id="title">Permissions requested</h1>
<p><b id="client-name">${esc(clientName)}</b> (unverified)</p>
<p class="small">Signed in as <span id="username">${esc(username)}</span></p>
<p>This app would like to:</p>
<ul id="scopes">
${items}
</ul>
<p class="small">Accepting these permissions means that you allow this app to use your data.</p>
<form id="accept-form" class="inline" method="post" action="/interaction/${esc(uid)}/confirm">
  <button type="submit" class="primary" id="accept" name="accept" value="yes">Accept</button>
</form>
<form id="cancel-form" class="inline" method="post" action="/interaction/${esc(uid)}/abort">
  <button type="submit" id="cancel" name="cancel" value="yes">Cancel</button>
</form>`);
}

export function errorPage(title, lines) {
  return page(title, `<h1 id="title">${esc(title)}</h1>
${lines.map(([k, v]) => `<p><b>${esc(k)}</b>: <span class="${esc(k)}">${esc(v)}</span></p>`).join('\n')}`);
}

// features.deviceFlow.* sources for oidc-provider (the forms themselves come from oidc-provider)
export async function userCodeInputSource(ctx, form, out, err) {
  let msg = '<p>Enter the code displayed on your app or device.</p>';
  if (err && (err.userCode || err.name === 'NoCodeError')) msg = '<p class="error" id="error">AADSTS70018: The code you entered is incorrect. Try again.</p>';
  else if (err && err.name === 'AbortedError') msg = '<p class="error" id="error">The sign-in request was cancelled.</p>';
  else if (err && (err.name === 'ExpiredError')) msg = '<p class="error" id="error">AADSTS70019: The code has expired.</p>';
  else if (err) msg = `<p class="error" id="error">${esc(err.error_description || err.message || 'There was an error processing your request')}</p>`;
  ctx.type = 'html';
  ctx.body = page('Enter code', `<h1 id="title">Enter code</h1>
${msg}
${form}
<button type="submit" class="primary" id="submit" form="op.deviceInputForm">Next</button>`);
}

export async function userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
  ctx.type = 'html';
  ctx.body = page('Confirm sign-in', `<h1 id="title">Are you trying to sign in to ${esc(client.clientName || client.clientId)}?</h1>
<p>Code: <code id="user-code">${esc(userCode)}</code></p>
<p class="small">Only continue if you downloaded the app from a store or website that you trust.</p>
${form}
<button type="submit" class="primary" id="continue" form="op.deviceConfirmForm">Continue</button>
<button type="submit" id="cancel" form="op.deviceConfirmForm" name="abort" value="yes">Cancel</button>`);
}

export async function successSource(ctx) {
  ctx.type = 'html';
  ctx.body = page('Signed in', `<h1 id="title">${esc(ctx.oidc.client.clientName || ctx.oidc.client.clientId)}</h1>
<p id="success">You have signed in to the application on your device. You may now close this window.</p>`);
}
