/* mailbridge web UI: connections — the list, the "Add Microsoft 365 connection" form with the
 * guide's words, and a connection's page (sign-in, default, edit, delete). */
(function () {
	"use strict";
	const MB = window.MB;
	const h = MB.h;

	const PROVIDERS = [
		["microsoft-graph", "Microsoft 365 — Graph API (recommended)"],
		["microsoft-smtp", "Microsoft 365 — SMTP with OAuth"],
	];
	const AUTHS = [
		["delegated", "Delegated (a user signs in)"],
		["app-only", "App-only (client credentials)"],
	];
	const CLOUDS = [["global", "Global (login.microsoftonline.com)"],
		["usgov", "US Government (GCC High)"], ["usgov-dod", "US Government (DoD)"],
		["china", "China (21Vianet)"]];
	const PROVIDER_NAME = {"microsoft-graph": "Microsoft 365 — Graph API",
		"microsoft-smtp": "Microsoft 365 — SMTP with OAuth", "smtp": "SMTP server"};

	MB.providerName = (p) => PROVIDER_NAME[p] || p || "—";

	function callbackUrl(data) {
		return (data && data.callback_url) || location.origin + "/oauth/callback";
	}

	/* The guide's Part 3, for this provider and sign-in type. */
	function permissions(provider, auth) {
		const smtp = provider === "microsoft-smtp";
		if (auth === "app-only" && smtp)
			return {api: "Office 365 Exchange Online", type: "Application permissions",
				perms: [["SMTP.SendAsApp", "send mail over SMTP as the mailboxes an Exchange " +
					"admin allows"]],
				after: "Then an Exchange admin registers the app's service principal " +
					"(New-ServicePrincipal) and gives it the mailbox (Add-MailboxPermission); " +
					"mailbridge doctor shows the exact commands."};
		if (auth === "app-only")
			return {api: "Microsoft Graph", type: "Application permissions",
				perms: [["Mail.Send", "send mail as any user; limit it to the sender with an " +
					"application access policy or Exchange RBAC"]],
				after: null};
		return {api: "Microsoft Graph", type: "Delegated permissions",
			perms: smtp
				? [["SMTP.Send", "send over SMTP as the signed-in user"],
					["User.Read", "read the signed-in user's name and address"],
					["offline_access", "keep signing in without you (refresh tokens)"]]
				: [["Mail.Send", "send mail as the signed-in user"],
					["User.Read", "read the signed-in user's name and address"],
					["offline_access", "keep signing in without you (refresh tokens)"]],
			after: null};
	}

	function permissionsBox(getProvider, getAuth) {
		const box = h("div", {class: "perm-box", "aria-live": "polite"});
		function draw() {
			const p = permissions(getProvider(), getAuth());
			MB.replace(box,
				h("h3", {class: "sub-title", text: "Permissions to add (guide Part 3)"}),
				h("p", null, "In the Azure Portal: your app → API permissions → “+ Add a " +
					"permission” → ", h("strong", {text: p.api}), " → ",
				h("strong", {text: p.type}), ", then add:"),
				h("ul", {class: "perm-list"}, p.perms.map((x) =>
					h("li", null, h("code", {text: x[0]}), " — " + x[1]))),
				h("p", null, "Then click “Grant admin consent for [your organization]” and " +
					"confirm: a green check appears next to each permission."),
				p.after ? h("p", {class: "muted", text: p.after}) : null);
		}
		draw();
		return {el: box, draw: draw};
	}

	function callbackField(url) {
		const f = MB.field({label: "App Callback URL", key: "callback_url", value: url,
			hint: "Add it in the Azure Portal: your app → Authentication → Web → Redirect " +
				"URIs. It must match exactly.", attrs: {readonly: true}});
		f.input.classList.add("mono");
		const fb = h("span", {class: "copy-feedback", "aria-live": "polite"});
		const btn = MB.button("Copy", () => MB.copy(f.input.value, f.input, fb), "btn");
		const row = h("div", {class: "input-row"}, f.input, btn);
		f.el.insertBefore(row, f.el.querySelector(".hint"));
		f.el.appendChild(fb);
		return f;
	}

	function fallbackOptions(conns, self) {
		return [["", "None"]].concat(conns.filter((c) => c.name !== self)
			.map((c) => [c.name, c.name + (c.sender ? " — " + c.sender : "")]));
	}

	/* ---- the list ---- */
	MB.views.connections = async function (ctx) {
		ctx.title("Connections");
		const body = h("div", null, MB.loading());
		MB.add(ctx.main, MB.pageHeader("Connections", "The Microsoft 365 accounts mailbridge " +
			"sends through.", MB.linkButton("Add Microsoft 365 connection", "#/connections/new",
			"btn btn-primary")), body);
		const r = await MB.api("GET", "connections");
		if (!ctx.alive())
			return;
		if (!r.ok) {
			MB.replace(body, MB.errorBox(r.error, "The connections could not be loaded."));
			return;
		}
		const conns = (r.data && r.data.connections) || [];
		if (!conns.length) {
			MB.replace(body, MB.card(null, MB.empty("No connection yet",
				"Register an app in Microsoft Entra, then add it here with its client ID, " +
				"secret and tenant ID.",
				MB.linkButton("Add Microsoft 365 connection", "#/connections/new",
					"btn btn-primary"))));
			return;
		}
		const rows = conns.map((c) => h("tr", null,
			h("td", null, h("a", {href: "#/connections/" + MB.enc(c.name), class: "strong",
				text: c.name}), c.default ? [" ", MB.badge("Default", "accent")] : null),
			h("td", {text: MB.providerName(c.provider)}),
			h("td", {text: c.sender || "—"}),
			h("td", null, MB.connBadge(c.state)),
			h("td", {class: "muted", text: MB.connStatusText(c)}),
			h("td", {text: c.source === "config" ? "mailbridge.conf" : "web / CLI"})));
		MB.replace(body, MB.card(null, MB.table("Connections",
			["Name", "Provider", "Sender", "State", "Status", "Defined in"], rows)));
	};

	/* ---- add ---- */
	MB.views.connectionNew = async function (ctx) {
		ctx.title("Add Microsoft 365 connection");
		const r = await MB.api("GET", "connections");
		if (!ctx.alive())
			return;
		const conns = (r.ok && r.data && r.data.connections) || [];
		const name = MB.field({label: "Connection name", key: "name", required: true,
			value: conns.length ? "" : "office365",
			hint: "A short name for mailbridge: letters, digits, dot, dash, underscore.",
			attrs: {pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]*", maxlength: "64",
				autocomplete: "off", spellcheck: "false"}});
		const provider = MB.field({label: "Provider", key: "provider", type: "select",
			options: PROVIDERS, value: "microsoft-graph"});
		const clientId = MB.field({label: "Application (client) ID", key: "client_id",
			required: true, hint: "Azure Portal → App registrations → your app → Overview.",
			attrs: {autocomplete: "off", spellcheck: "false",
				placeholder: "00000000-0000-0000-0000-000000000000"}});
		const secret = MB.field({label: "Client Secret value", key: "client_secret",
			type: "password", required: true,
			hint: "Certificates & secrets → the secret's Value (not the Secret ID). Microsoft " +
				"shows it only once. mailbridge stores it encrypted and never shows it again.",
			attrs: {autocomplete: "new-password", spellcheck: "false"}});
		const tenant = MB.field({label: "Directory (tenant) ID", key: "tenant", required: true,
			hint: "On the same Overview page, under the client ID (a domain like " +
				"contoso.onmicrosoft.com works too).",
			attrs: {autocomplete: "off", spellcheck: "false"}});
		const sender = MB.field({label: "Sender email address", key: "sender", type: "email",
			required: true, hint: "The mailbox that sends: the user who signs in (delegated) " +
				"or the mailbox the app sends as (app-only).",
			attrs: {autocomplete: "off"}});
		const auth = MB.field({label: "Sign-in type", key: "auth", type: "select",
			options: AUTHS, value: "delegated"});
		const cb = callbackField(callbackUrl(r.data));
		const cloud = MB.field({label: "Cloud", key: "cloud", type: "select", options: CLOUDS,
			value: "global"});
		const senders = MB.field({label: "Other sender addresses", key: "senders",
			hint: "Comma-separated addresses this connection may also send as (Send As " +
				"rights needed).", attrs: {autocomplete: "off"}});
		const fallback = MB.field({label: "Fallback connection", key: "fallback",
			type: "select", options: fallbackOptions(conns, null), value: "",
			hint: "Used when this connection cannot send."});
		const force = MB.field({label: "Force the From address to the sender", key: "force_from",
			type: "checkbox", hint: "Rewrites From: so Microsoft does not refuse mail from " +
				"other addresses."});
		const perms = permissionsBox(() => provider.input.value, () => auth.input.value);
		provider.input.addEventListener("change", perms.draw);
		auth.input.addEventListener("change", perms.draw);
		const advanced = h("details", {class: "advanced"}, h("summary", null, "More options"),
			cloud.el, senders.el, fallback.el, force.el);

		const f = MB.form([name, provider, clientId, secret, tenant, sender, auth, cb, perms.el,
			advanced], "Save connection", async (form) => {
			const body = {name: name.value(), provider: provider.input.value,
				client_id: clientId.value(), client_secret: secret.input.value,
				tenant: tenant.value(), sender: sender.value(), auth: auth.input.value,
				cloud: cloud.input.value, force_from: force.value()};
			const others = MB.splitAddrs(senders.value());
			if (others.length)
				body.senders = others;
			if (fallback.input.value)
				body.fallback = fallback.input.value;
			form.busy(true, "Saving…");
			const res = await MB.api("POST", "connections", body);
			form.busy(false);
			if (!ctx.alive())
				return;
			if (res.ok) {
				MB.go("#/connections/" + MB.enc((res.data && res.data.name) || body.name));
				return;
			}
			form.showError(res.error, "The connection was not saved.");
		});
		/* the advanced fields are inside <details> but validated and mapped like the others */
		[cloud, senders, fallback, force].forEach((x) => {
			f.fields[x.key] = x;
		});
		MB.add(ctx.main, MB.pageHeader("Add Microsoft 365 connection",
			"The values come from your app registration in the Azure Portal (guide Parts 1–3)."),
		r.ok ? null : MB.errorBox(r.error, "The existing connections could not be loaded.",
			false),
		h("div", {class: "two-col"},
			MB.card(null, f.form),
			MB.card("Before you start",
				h("ol", {class: "steps"},
					h("li", null, "Azure Portal → App registrations → “+ New registration”. " +
						"Supported account types: “Accounts in this organizational directory " +
						"only”."),
					h("li", null, "Redirect URI: platform Web, the App Callback URL shown " +
						"here."),
					h("li", null, "Copy the Application (client) ID and the Directory (tenant) " +
						"ID from the Overview page."),
					h("li", null, "Certificates & secrets → “+ New client secret” (24 months) " +
						"→ copy its Value."),
					h("li", null, "Add the permissions listed in the form and grant admin " +
						"consent."),
					h("li", null, "Save here, then click “Authenticate with Office 365”.")))));
		name.input.focus();
	};

	/* ---- one connection ---- */
	MB.views.connection = async function (ctx) {
		const connName = ctx.params[0];
		ctx.title(connName);
		const path = "connections/" + MB.enc(connName);
		const header = MB.pageHeader(connName, null,
			MB.linkButton("All connections", "#/connections", "btn btn-quiet"));
		const statusLine = h("p", {class: "status-line", role: "status", "aria-live": "polite"});
		const body = h("div", null, MB.loading());
		MB.add(ctx.main, header, statusLine, body);
		let device = null;
		ctx.onCleanup(() => device && device.stop());

		/* flash: {sign|manage: text} shown after the redraw, next to the buttons that led to it */
		async function load(flash) {
			const [r, lr] = await Promise.all([MB.api("GET", path),
				MB.api("GET", "connections")]);
			if (!ctx.alive())
				return;
			if (!r.ok) {
				MB.clear(statusLine);
				MB.replace(body, r.status === 404 && !r.notAvailable
					? MB.card(null, MB.empty("No connection named “" + connName + "”",
						"It may have been deleted.",
						MB.linkButton("All connections", "#/connections", "btn")))
					: MB.errorBox(r.error, "The connection could not be loaded."));
				return;
			}
			const conns = (lr.ok && lr.data && lr.data.connections) || [];
			draw(r.data, conns, callbackUrl(lr.data || r.data), flash || {});
		}

		function draw(c, conns, cbUrl, flash) {
			statusLine.className = "status-line " + (c.state === "authorized" ? "is-ok"
				: "is-warn");
			statusLine.textContent = MB.connStatusText(c);
			const actionsOut = h("div", {class: "action-result", "aria-live": "polite"});
			const deviceBox = h("div");
			const signOut = h("div", {class: "action-result", "aria-live": "polite"});
			const signinBtn = MB.button("Authenticate with Office 365", async () => {
				signinBtn.disabled = true;
				MB.replace(signOut, h("p", {class: "muted", text: "Starting the sign-in…"}));
				const r = await MB.api("POST", path + "/signin", {method: "browser"});
				signinBtn.disabled = false;
				if (!ctx.alive())
					return;
				const url = r.ok && r.data ? MB.safeUrl(r.data.authorize_url) : null;
				if (url) {
					MB.replace(signOut, h("p", {class: "muted",
						text: "Opening Microsoft's sign-in page…"}));
					window.location.assign(url);
				} else {
					MB.replace(signOut, MB.errorBox(r.ok ? {message: "mailbridge gave " +
						"no sign-in address.", fix: "use a device code instead"} : r.error,
					"The sign-in could not start.", false));
				}
			}, "btn btn-primary");
			const deviceBtn = MB.button("Use a device code instead", async () => {
				if (device)
					device.stop();
				deviceBtn.disabled = true;
				MB.replace(signOut, h("p", {class: "muted", text: "Asking Microsoft for " +
					"a code…"}));
				const r = await MB.api("POST", path + "/signin", {method: "device"});
				deviceBtn.disabled = false;
				if (!ctx.alive())
					return;
				MB.clear(signOut);
				if (!r.ok) {
					MB.replace(signOut, MB.errorBox(r.error, "No device code.", false));
					return;
				}
				device = deviceFlow(ctx, path, r.data, deviceBox, (msg) => load({sign: msg}));
			}, "btn");
			const defaultBtn = MB.button("Make default", async () => {
				defaultBtn.disabled = true;
				const r = await MB.api("POST", path + "/default");
				defaultBtn.disabled = false;
				if (!ctx.alive())
					return;
				if (r.ok) {
					await load({manage: connName + " is now the default connection."});
				} else {
					MB.replace(actionsOut, MB.errorBox(r.error, "Not made the default.", false));
				}
			}, "btn");
			const deleteBtn = MB.button("Delete connection", async () => {
				if (!window.confirm("Delete the connection “" + connName + "” and its tokens? " +
					"Mail that uses it will wait until another connection can send it."))
					return;
				deleteBtn.disabled = true;
				const r = await MB.api("DELETE", path);
				deleteBtn.disabled = false;
				if (!ctx.alive())
					return;
				if (r.ok)
					MB.go("#/connections");
				else
					MB.replace(actionsOut, MB.errorBox(r.error, "Not deleted.", false));
			}, "btn btn-danger");
			const editable = c.editable !== false && c.source !== "config";

			const details = MB.dl([
				["Provider", MB.providerName(c.provider)],
				["Sign-in type", c.auth === "app-only" ? "App-only (client credentials)"
					: c.auth === "delegated" ? "Delegated (a user signs in)" : c.auth || "—"],
				["Sender", c.sender || "—"],
				["Other senders", (c.senders || []).join(", ") || "—"],
				["Account", c.account || "—"],
				["Application (client) ID", c.client_id || "—"],
				["Directory (tenant) ID", c.tenant || "—"],
				["Cloud", c.cloud || "global"],
				["Client secret", c.has_secret === false ? "none stored"
					: (c.secret_fingerprint ? "fingerprint " + c.secret_fingerprint : "stored") +
					(c.secret_expires ? ", expires " + MB.fmtDate(c.secret_expires) : "")],
				["Last token refresh", MB.fmtDate(c.last_refresh)],
				["Default", c.default ? "Yes — mail without a connection of its own uses it"
					: "No"],
				["Fallback", c.fallback || "None"],
				["Force From", c.force_from ? "Yes" : "No"],
				["Defined in", c.source === "config" ? "mailbridge.conf" : "the store (web / CLI)"],
			]);
			const errBox = c.last_error ? MB.errorBox({message: c.last_error, fix: c.fix},
				"Last error", false) : null;
			const signCard = MB.card("Sign in",
				h("p", null, c.auth === "app-only"
					? "App-only connections need no user sign-in: mailbridge gets tokens with " +
						"the client secret. Authenticate to check that it works."
					: "Sign in as " + (c.sender || "the sender") + " so mailbridge can send " +
						"for it. Use the device code when this browser cannot reach " +
						"Microsoft, or to sign in on another device."),
				h("div", {class: "btn-row"}, signinBtn, c.auth === "app-only" ? null : deviceBtn),
				signOut, deviceBox);
			const manage = h("div", {class: "btn-row"}, defaultBtn,
				editable ? deleteBtn : null);
			const editCard = editable ? editForm(ctx, c, conns, cbUrl, path, load, flash.edit)
				: MB.card("Settings",
					MB.notice("info", h("p", {class: "alert-title", text: "Read-only here"}),
						h("p", null, "This connection is defined in ",
							h("code", {text: "mailbridge.conf"}), " (section ",
							h("code", {text: "[connection " + c.name + "]"}), "), so it cannot " +
							"be changed or deleted from the web UI. Fix: edit the file, then " +
							"reload mailbridge (", h("code", {text: "systemctl reload mailbridge"}),
							"). Signing in and making it the default work as usual.")));
			if (flash.sign)
				MB.add(signOut, h("p", {class: "success-text", text: flash.sign}));
			if (flash.manage)
				MB.add(actionsOut, h("p", {class: "success-text", text: flash.manage}));
			MB.replace(body, errBox,
				h("div", {class: "two-col"},
					h("div", {class: "stack"}, signCard, MB.card("Manage", manage, actionsOut),
						editCard),
					MB.card("Details", details)));
		}
		await load();
	};

	/* The device-code sign-in: the code large, the address, polling until the end. */
	function deviceFlow(ctx, path, d, box, onDone) {
		let timer = null, ticker = null, stopped = false;
		const interval = Math.max(1, Number(d.interval) || 5) * 1000;
		const deadline = Date.now() + Math.max(30, Number(d.expires_in) || 900) * 1000;
		const live = h("p", {class: "device-status", "aria-live": "polite",
			text: "Waiting for you to sign in…"});
		const left = h("p", {class: "muted"});
		const codeFb = h("span", {class: "copy-feedback", "aria-live": "polite"});
		const codeEl = h("div", {class: "device-code", text: d.user_code || "—"});
		const url = MB.safeUrl(d.verification_uri);
		const cancel = MB.button("Cancel", () => {
			stop();
			live.textContent = "Sign-in cancelled.";
		}, "btn btn-quiet");
		MB.replace(box, h("div", {class: "device"},
			h("h3", {class: "sub-title", text: "Sign in with a device code"}),
			h("p", null, "1. On any device, open ", url
				? h("a", {href: url, target: "_blank", rel: "noopener noreferrer", text: url})
				: h("code", {text: d.verification_uri || "the address Microsoft gave"})),
			h("p", null, "2. Enter this code:"),
			h("div", {class: "device-code-row"}, codeEl,
				MB.button("Copy code", () => MB.copy(d.user_code || "", null, codeFb), "btn"),
				codeFb),
			h("p", null, "3. Sign in as the sender and accept. This page notices by itself."),
			d.message ? h("p", {class: "muted small", text: d.message}) : null,
			live, left, h("div", {class: "btn-row"}, cancel)));

		function stop() {
			stopped = true;
			clearTimeout(timer);
			clearInterval(ticker);
			cancel.hidden = true;
			MB.clear(left);
		}
		function tick() {
			const s = Math.max(0, Math.round((deadline - Date.now()) / 1000));
			left.textContent = "The code expires in " + Math.floor(s / 60) + ":" +
				String(s % 60).padStart(2, "0") + ".";
		}
		function finish(kids, cls) {
			stop();
			live.className = "device-status " + cls;
			MB.replace(live, kids);
		}
		async function poll() {
			if (stopped || !ctx.alive())
				return;
			if (Date.now() > deadline) {
				finish(["The code expired. Fix: click “Use a device code instead” for a new " +
					"one."], "is-bad");
				return;
			}
			const r = await MB.api("GET", path + "/signin");
			if (stopped || !ctx.alive())
				return;
			const st = r.ok && r.data ? r.data.status : null;
			if (r.ok && st === "connected") {
				const msg = "Connected as " + (r.data.account || "the account") +
					(typeof r.data.token_valid_min === "number" ? ", token valid for " +
						r.data.token_valid_min + " min" : "") + ".";
				finish([msg], "is-ok");
				onDone(msg);
				return;
			}
			if (r.ok && (st === "declined" || st === "expired" || st === "failed")) {
				const e = r.data.error || {};
				const what = st === "declined" ? "The sign-in was declined."
					: st === "expired" ? "The code expired before the sign-in."
						: "The sign-in failed.";
				finish([what + (e.message ? " " + e.message : "") + (e.fix ? " Fix: " + e.fix
					: st === "expired" ? " Fix: click “Use a device code instead” for a new one."
						: "")], "is-bad");
				return;
			}
			if (r.ok && st === "none") {
				finish(["No sign-in is in progress any more (mailbridge may have restarted). " +
					"Fix: start again."], "is-bad");
				return;
			}
			if (!r.ok && r.status !== 0 && r.status < 500) {
				finish([r.error.message + (r.error.fix ? " Fix: " + r.error.fix : "")],
					"is-bad");
				return;
			}
			timer = setTimeout(poll, interval); /* pending, or a passing network error */
		}
		tick();
		ticker = setInterval(tick, 1000);
		timer = setTimeout(poll, interval);
		return {stop: stop};
	}

	/* Edit: PATCH with the fields that changed; an empty secret keeps the stored one. */
	function editForm(ctx, c, conns, cbUrl, path, reload, saved) {
		const provider = MB.field({label: "Provider", key: "provider", type: "select",
			options: PROVIDERS, value: c.provider});
		const clientId = MB.field({label: "Application (client) ID", key: "client_id",
			value: c.client_id || "", required: true, attrs: {spellcheck: "false"}});
		const secret = MB.field({label: "Client Secret value", key: "client_secret",
			type: "password", hint: "Leave empty to keep the stored secret" +
				(c.secret_fingerprint ? " (fingerprint " + c.secret_fingerprint + ")" : "") +
				". A new value replaces it.", attrs: {autocomplete: "new-password"}});
		const tenant = MB.field({label: "Directory (tenant) ID", key: "tenant",
			value: c.tenant || "", required: true, attrs: {spellcheck: "false"}});
		const sender = MB.field({label: "Sender email address", key: "sender", type: "email",
			value: c.sender || "", required: true});
		const auth = MB.field({label: "Sign-in type", key: "auth", type: "select",
			options: AUTHS, value: c.auth || "delegated"});
		const cloud = MB.field({label: "Cloud", key: "cloud", type: "select", options: CLOUDS,
			value: c.cloud || "global"});
		const senders = MB.field({label: "Other sender addresses", key: "senders",
			value: (c.senders || []).join(", "), hint: "Comma-separated."});
		const fallback = MB.field({label: "Fallback connection", key: "fallback",
			type: "select", options: fallbackOptions(conns, c.name), value: c.fallback || ""});
		const force = MB.field({label: "Force the From address to the sender",
			key: "force_from", type: "checkbox", value: !!c.force_from});
		const cb = callbackField(cbUrl);
		const perms = permissionsBox(() => provider.input.value, () => auth.input.value);
		provider.input.addEventListener("change", perms.draw);
		auth.input.addEventListener("change", perms.draw);
		const permDetails = h("details", {class: "advanced"},
			h("summary", null, "App Callback URL and permissions"), cb.el, perms.el);
		const f = MB.form([provider, clientId, secret, tenant, sender, auth, cloud, senders,
			fallback, force, permDetails], "Save changes", async (form) => {
			const patch = {};
			const same = (a, b) => String(a ?? "") === String(b ?? "");
			if (!same(provider.input.value, c.provider))
				patch.provider = provider.input.value;
			if (!same(clientId.value(), c.client_id))
				patch.client_id = clientId.value();
			if (secret.input.value)
				patch.client_secret = secret.input.value;
			if (!same(tenant.value(), c.tenant))
				patch.tenant = tenant.value();
			if (!same(sender.value(), c.sender))
				patch.sender = sender.value();
			if (!same(auth.input.value, c.auth || "delegated"))
				patch.auth = auth.input.value;
			if (!same(cloud.input.value, c.cloud || "global"))
				patch.cloud = cloud.input.value;
			const others = MB.splitAddrs(senders.value());
			if (others.join(",") !== (c.senders || []).join(","))
				patch.senders = others;
			if (!same(fallback.input.value, c.fallback))
				patch.fallback = fallback.input.value || null;
			if (force.value() !== !!c.force_from)
				patch.force_from = force.value();
			if (!Object.keys(patch).length) {
				MB.replace(form.status, h("p", {class: "muted", text: "Nothing changed."}));
				return;
			}
			form.busy(true, "Saving…");
			const r = await MB.api("PATCH", path, patch);
			form.busy(false);
			if (!ctx.alive())
				return;
			if (r.ok)
				await reload({edit: "Changes saved."});
			else
				form.showError(r.error, "Not saved.");
		});
		if (saved)
			MB.add(f.status, h("p", {class: "success-text", text: saved}));
		return MB.card("Edit connection", f.form);
	}
})();
