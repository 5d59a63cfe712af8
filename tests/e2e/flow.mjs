// The real-browser end-to-end flow of the admin UI (issue 5, "Proof"): Playwright
// (playwright-core) drives Debian's chromium, headless, against a mailbridge daemon on loopback
// with the identity-platform and Graph stand-ins (tests/peers/idp, tests/peers/graph).
//
// Started by tests/integration/test_e2e.py, which starts the daemon and the stand-ins and passes
// everything in the environment (see ENV below). Each step is named; the first failing step
// takes a screenshot (FAILED-<step>.png), prints what the page shows, and the run exits 1.
// Screenshots of every screen go to MB_SHOTS (1280x900, and 390x844 for the phone ones).
//
// Selectors are roles and labels from the UI spec (the texts are part of the product); the
// identity platform's pages use its documented ids (tests/peers/idp/README.md).
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const ENV = {
  url: need('MB_URL'), // the daemon's public_url, e.g. http://127.0.0.1:PORT
  setupUrl: process.env.MB_SETUP_URL || '', // the one-time setup link, when no password yet
  password: need('MB_PASSWORD'), // the admin password (set via the setup link when given)
  shots: need('MB_SHOTS'),
  chromium: process.env.MB_CHROMIUM || '/usr/bin/chromium',
  graph: need('MB_GRAPH_URL'), // the Graph stand-in (its /_test/ control API)
  conn: process.env.MB_CONN || 'office365',
  tenant: need('MB_TENANT'),
  clientId: need('MB_CLIENT_ID'),
  clientSecret: need('MB_CLIENT_SECRET'),
  overrides: JSON.parse(process.env.MB_CONN_OVERRIDES || '{}'), // login_url, graph_url, ca_file
  user: need('MB_IDP_USER'),
  userPassword: need('MB_IDP_PASSWORD'),
  to: process.env.MB_TO || 'alice@contoso.test',
  stepMs: Number(process.env.MB_STEP_MS || 15000), // the default timeout of one action
};
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`flow: ${name} is not set (tests/integration/test_e2e.py sets it)`);
    process.exit(2);
  }
  return v;
}

let browser, page, current = 'start';
const shots = [];

function log(...a) {
  console.log(`[${new Date().toISOString().slice(11, 23)}] ${current}:`, ...a);
}

async function shot(name, viewport = DESKTOP) {
  if (viewport !== DESKTOP) await page.setViewportSize(viewport);
  await page.waitForLoadState('load');
  await page.mouse.move(1, 1); // no hover effect where the last click was
  const path = join(ENV.shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true, animations: 'disabled' });
  if (viewport !== DESKTOP) await page.setViewportSize(DESKTOP);
  shots.push(path);
  log('screenshot', path);
}

async function step(name, fn) {
  current = name;
  log('...');
  await fn();
}

const nav = () => page.getByRole('navigation', { name: 'Main' });
const status = () => page.getByRole('status');

async function go(linkName) {
  await nav().getByRole('link', { name: linkName, exact: true }).click();
}

async function visible(locator, timeout = ENV.stepMs) {
  await locator.first().waitFor({ state: 'visible', timeout });
  return locator.first();
}

// The Graph stand-in's control API (node trusts the test CA through NODE_EXTRA_CA_CERTS).
async function graph(method, path, body) {
  const r = await fetch(`${ENV.graph}/_test/${path}`, {
    method,
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(10000),
  });
  if (![200, 201, 204].includes(r.status)) throw new Error(`Graph stand-in ${method} ${path}: HTTP ${r.status} ${await r.text()}`);
  const t = await r.text();
  return t ? JSON.parse(t) : {};
}

async function graphMessages(subject) {
  const j = await graph('GET', 'messages?omit_mime=1');
  return j.messages.filter((m) => JSON.stringify(m).includes(subject));
}

async function waitFor(what, fn, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function selectByLabel(label, valueOrLabel) {
  const sel = page.getByLabel(label, { exact: true });
  await visible(sel);
  await sel.selectOption(valueOrLabel);
}

async function run() {
  mkdirSync(ENV.shots, { recursive: true });
  browser = await chromium.launch({ executablePath: ENV.chromium, args: FLAGS, headless: true, timeout: 30000 });
  // The stand-ins' HTTPS certificates come from a test CA the browser does not know.
  const context = await browser.newContext({ viewport: DESKTOP, ignoreHTTPSErrors: true, locale: 'en-US', timezoneId: 'UTC' });
  context.setDefaultTimeout(ENV.stepMs);
  context.setDefaultNavigationTimeout(20000);
  page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`${page.url()}: ${m.text()}`); });
  page.on('pageerror', (e) => consoleErrors.push(`${page.url()}: ${e.message}`));

  // The add form has no fields for the stand-ins' URLs and test CA (a real user talks to
  // login.microsoftonline.com and graph.microsoft.com). The form, its fetch and everything after
  // are real; only the JSON the UI posts gets the three test-only keys added on its way.
  if (Object.keys(ENV.overrides).length) {
    await page.route('**/api/v1/connections', async (route) => {
      const req = route.request();
      if (req.method() !== 'POST') return route.continue();
      const body = { ...JSON.parse(req.postData() || '{}'), ...ENV.overrides };
      log('adding the stand-in overrides to POST /api/v1/connections:', Object.keys(ENV.overrides).join(', '));
      return route.continue({ postData: JSON.stringify(body) });
    });
  }

  if (ENV.setupUrl) {
    await step('setup link', async () => {
      await page.goto(ENV.setupUrl);
      await visible(page.getByLabel('New admin password', { exact: true }));
      await shot('01-setup-link');
      await page.getByLabel('New admin password', { exact: true }).fill(ENV.password);
      await page.getByLabel('Repeat the password', { exact: true }).fill(ENV.password);
      await page.getByRole('button', { name: 'Set password' }).click();
      await visible(nav());
      await page.getByRole('button', { name: 'Log out' }).click();
    });
  }

  await step('log in', async () => {
    await page.goto(`${ENV.url}/#/login`);
    const pw = await visible(page.getByLabel('Admin password', { exact: true }));
    await shot('02-login');
    await pw.fill('wrong password, surely');
    await page.getByRole('button', { name: 'Log in' }).click();
    await visible(page.getByText(/wrong admin password/i));
    await pw.fill(ENV.password);
    await page.getByRole('button', { name: 'Log in' }).click();
    await visible(nav());
    await waitFor('the dashboard', async () => page.url().includes('#/dashboard'));
    await shot('03-dashboard');
    await shot('03-dashboard-phone', PHONE);
  });

  await step('add a connection', async () => {
    await go('Connections');
    await visible(page.getByRole('link', { name: 'Add Microsoft 365 connection' })
      .or(page.getByRole('button', { name: 'Add Microsoft 365 connection' })));
    await shot('04-connections-empty');
    await page.getByRole('link', { name: 'Add Microsoft 365 connection' })
      .or(page.getByRole('button', { name: 'Add Microsoft 365 connection' })).first().click();
    await visible(page.getByRole('heading', { name: 'Add Microsoft 365 connection' }));
    await page.getByLabel('Connection name', { exact: true }).fill(ENV.conn);
    await selectByLabel('Provider', 'microsoft-graph');
    await page.getByLabel('Application (client) ID', { exact: true }).fill(ENV.clientId);
    await page.getByLabel('Client Secret value', { exact: true }).fill(ENV.clientSecret);
    await page.getByLabel('Directory (tenant) ID', { exact: true }).fill(ENV.tenant);
    await page.getByLabel('Sender email address', { exact: true }).fill(ENV.user);
    await selectByLabel('Sign-in type', 'delegated');
    const cb = page.getByLabel('App Callback URL', { exact: true });
    const cbValue = await cb.inputValue();
    if (cbValue !== `${ENV.url}/oauth/callback`) throw new Error(`App Callback URL shows ${JSON.stringify(cbValue)}, want ${ENV.url}/oauth/callback`);
    if (await cb.isEditable()) throw new Error('App Callback URL is editable; the spec says read-only');
    await visible(page.getByRole('button', { name: 'Copy' }));
    await visible(page.getByRole('listitem').filter({ hasText: 'Mail.Send' }));
    await shot('05-add-connection-form');
    await page.getByRole('button', { name: 'Save connection' }).click();
    await waitFor(`#/connections/${ENV.conn}`, async () => page.url().endsWith(`#/connections/${encodeURIComponent(ENV.conn)}`));
    await visible(page.getByRole('button', { name: 'Authenticate with Office 365' }));
    await shot('06-connection-new');
  });

  await step('sign in with Office 365', async () => {
    await page.getByRole('button', { name: 'Authenticate with Office 365' }).click();
    // the identity platform's login page (tests/peers/idp)
    await page.waitForURL(/\/interaction\//, { timeout: 20000 });
    await visible(page.locator('#login'));
    await shot('07-idp-login');
    await page.locator('#login').fill(ENV.user);
    await page.locator('#password').fill(ENV.userPassword);
    await page.locator('#submit').click();
    await visible(page.locator('#accept'));
    await shot('08-idp-consent');
    await page.locator('#accept').click();
    await page.waitForURL(/\/oauth\/callback/, { timeout: 20000 });
    const back = await visible(page.getByRole('link', { name: 'Back to mailbridge' }));
    await shot('09-oauth-callback');
    await back.click();
    await waitFor(`#/connections/${ENV.conn}`, async () => page.url().includes(`#/connections/${encodeURIComponent(ENV.conn)}`));
    await visible(page.getByText(new RegExp(`Connected as ${ENV.user.replace(/[.]/g, '\\.')}, token valid for \\d+ min`)));
    await shot('10-connection-connected');
  });

  await step('make it the default', async () => {
    await go('Settings');
    await selectByLabel('Default connection', ENV.conn);
    await visible(page.getByLabel('Log retention (days)', { exact: true }));
    await page.getByRole('button', { name: 'Save settings' }).click();
    await visible(page.getByText('Settings saved'));
    await shot('11-settings');
    await page.reload();
    await waitFor('the default connection to stay chosen after a reload',
      async () => (await page.getByLabel('Default connection', { exact: true }).inputValue().catch(() => '')) === ENV.conn);
    await go('Connections');
    await visible(page.getByRole('link', { name: ENV.conn, exact: true }));
    await shot('11-connections-list');
  });

  const subject = `mailbridge e2e ${Date.now()}`;
  let firstId = null;
  await step('send a test email', async () => {
    await go('Email Test');
    await page.getByLabel('From', { exact: true }).fill(ENV.user);
    await page.getByLabel('To', { exact: true }).fill(ENV.to);
    const subj = page.getByLabel('Subject', { exact: true });
    if (await subj.count()) await subj.fill(subject);
    await page.getByRole('button', { name: 'Send test email' }).click();
    await visible(status().filter({ hasText: /Sent in \d+ ms/ }), 30000);
    await shot('12-email-test-sent');
    await waitFor('the Graph stand-in to record the test email',
      async () => (await graphMessages(subject)).length === 1);
    log('the Graph stand-in recorded it');
  });

  await step('find it in Email Logs and resend it', async () => {
    await go('Email Logs');
    await visible(page.getByRole('table'));
    await selectByLabel('Status', 'sent');
    await page.getByLabel('Search', { exact: true }).fill(subject);
    await page.getByRole('button', { name: 'Filter' }).click();
    const row = await visible(page.getByRole('row').filter({ hasText: subject }));
    await shot('13-email-logs');
    await shot('13-email-logs-phone', PHONE);
    const link = row.getByRole('link').first();
    await link.click();
    await waitFor('a message page', async () => /#\/logs\/[^/]+$/.test(page.url()));
    firstId = decodeURIComponent(page.url().split('#/logs/')[1]);
    await visible(page.getByRole('button', { name: 'Resend', exact: true }));
    await shot('14-message-view');
    await page.getByRole('button', { name: 'Resend', exact: true }).click();
    await waitFor('the Graph stand-in to record the resent email',
      async () => (await graphMessages(subject)).length === 2, 30000);
    log('resent', firstId);
    // and once more from the list: its checkbox and "Resend selected"
    await go('Email Logs');
    await selectByLabel('Status', 'sent');
    await page.getByLabel('Search', { exact: true }).fill(subject);
    await page.getByRole('button', { name: 'Filter' }).click();
    await visible(page.getByRole('row').filter({ hasText: subject }));
    await page.getByRole('checkbox', { name: `Select message ${firstId}`, exact: true }).check();
    await page.getByRole('button', { name: 'Resend selected' }).click();
    await waitFor('the Graph stand-in to record the bulk-resent email',
      async () => (await graphMessages(subject)).length === 3, 30000);
  });

  await step('see a failed message explained', async () => {
    // The next sendMail gets 403 ErrorSendAsDenied from the stand-in (reference §3.6).
    await graph('POST', 'faults', { kind: 'send_as_denied', count: 1 });
    await go('Email Test');
    await page.getByLabel('From', { exact: true }).fill(ENV.user);
    await page.getByLabel('To', { exact: true }).fill(ENV.to);
    await page.getByRole('button', { name: 'Send test email' }).click();
    await visible(status().filter({ hasText: 'Fix:' }), 30000);
    await shot('15-email-test-failed');
    await go('Email Logs');
    await selectByLabel('Status', 'failed');
    await page.getByRole('button', { name: 'Filter' }).click();
    const row = await visible(page.getByRole('row').filter({ hasText: ENV.to }));
    await row.getByRole('link').first().click();
    await waitFor('the failed message page', async () => /#\/logs\/[^/]+$/.test(page.url()));
    await visible(page.getByText(/Fix:/));
    await shot('16-message-failed');
  });

  await step('doctor', async () => {
    await go('Doctor');
    await page.getByRole('button', { name: 'Run checks' }).click();
    await visible(page.getByText(/\d+ passed, \d+ failed/), 70000);
    await shot('17-doctor');
  });

  await step('dashboard after', async () => {
    await go('Dashboard');
    await visible(page.getByText(ENV.conn));
    await shot('18-dashboard-after');
    await shot('18-dashboard-after-phone', PHONE);
  });

  if (consoleErrors.length) log('browser console errors:\n  ' + consoleErrors.join('\n  '));
}

try {
  await run();
  current = 'done';
  log(`${shots.length} screenshots in ${ENV.shots}`);
  await browser.close();
  process.exit(0);
} catch (e) {
  console.error(`FAILED at step "${current}": ${e.message.split('\n').slice(0, 6).join('\n')}`);
  if (page) {
    try {
      console.error(`page: ${page.url()}`);
      const text = (await page.locator('body').innerText({ timeout: 3000 })).replace(/\s+\n/g, '\n');
      console.error(`it shows:\n${text.slice(0, 1500)}`);
      await page.screenshot({ path: join(ENV.shots, `FAILED-${current.replace(/\W+/g, '-')}.png`), fullPage: true });
    } catch (e2) {
      console.error(`(no page details: ${e2.message.split('\n')[0]})`);
    }
  }
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
