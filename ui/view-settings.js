/* mailbridge web UI: settings — the default connection, log retention, alerts, and each
 * connection's fallback and From rewriting. */
(function () {
	"use strict";
	const MB = window.MB;
	const h = MB.h;

	function connRow(ctx, c, conns) {
		const editable = c.editable !== false && c.source !== "config";
		const fbId = MB.uid("fb"), ffId = MB.uid("ff");
		const fb = h("select", {id: fbId, disabled: !editable}, [["", "None"]]
			.concat(conns.filter((x) => x.name !== c.name).map((x) => [x.name, x.name]))
			.map((o) => h("option", {value: o[0], selected: o[0] === (c.fallback || "")}, o[1])));
		const ff = h("input", {type: "checkbox", id: ffId, checked: !!c.force_from,
			disabled: !editable});
		const out = h("span", {class: "row-status", "aria-live": "polite"});
		const save = MB.button("Save", async () => {
			save.disabled = true;
			out.textContent = "Saving…";
			const r = await MB.api("PATCH", "connections/" + MB.enc(c.name),
				{fallback: fb.value || null, force_from: ff.checked});
			save.disabled = false;
			if (!ctx.alive())
				return;
			out.className = "row-status " + (r.ok ? "success-text" : "error-text");
			out.textContent = r.ok ? "Saved" : r.error.message + (r.error.fix ? " Fix: " +
				r.error.fix : "");
		}, "btn btn-small", {"aria-label": "Save " + c.name});
		return h("tr", null,
			h("th", {scope: "row"}, h("a", {href: "#/connections/" + MB.enc(c.name),
				text: c.name})),
			h("td", null, h("label", {for: fbId, class: "sr-only",
				text: "Fallback connection for " + c.name}), fb),
			h("td", null, h("div", {class: "field-check inline"}, ff, h("label", {for: ffId,
				text: "Force From"}))),
			h("td", null, editable ? [save, " ", out]
				: h("span", {class: "muted", text: "set in mailbridge.conf"})));
	}

	MB.views.settings = async function (ctx) {
		ctx.title("Settings");
		const body = h("div", null, MB.loading());
		MB.add(ctx.main, MB.pageHeader("Settings", "Where mail goes by default, how long the " +
			"log keeps it, and who hears about trouble."), body);
		const [sr, cr] = await Promise.all([MB.api("GET", "settings"),
			MB.api("GET", "connections")]);
		if (!ctx.alive())
			return;
		if (!sr.ok) {
			MB.replace(body, MB.errorBox(sr.error, "The settings could not be loaded."));
			return;
		}
		const st = sr.data || {};
		const src = st.sources || {};
		const conns = (cr.ok && cr.data && cr.data.connections) || [];
		const names = conns.map((c) => c.name);
		const defOpts = [["", "— none —"]].concat(conns.map((c) =>
			[c.name, c.name + (c.sender ? " — " + c.sender : "")]));
		if (st.default_connection && names.indexOf(st.default_connection) < 0)
			defOpts.push([st.default_connection, st.default_connection + " (missing!)"]);
		const fromConf = (k) => src[k] === "config";
		const confHint = " Set in mailbridge.conf: change it there.";
		const def = MB.field({label: "Default connection", key: "default_connection",
			type: "select", options: defOpts, value: st.default_connection || "",
			hint: "Mail that names no connection goes out through this one; set it to your " +
				"Microsoft 365 connection — a wrong default is the guide's Error 1 (“cURL " +
				"error 28”) and Error 2 (“Not Found”)." +
				(fromConf("default_connection") ? confHint : ""),
			attrs: {disabled: fromConf("default_connection")}});
		const ret = MB.field({label: "Log retention (days)", key: "retention_days",
			type: "number", value: st.retention_days ?? "", required: true,
			hint: "Sent and failed messages older than this are removed from the log." +
				(fromConf("retention_days") ? confHint : ""),
			attrs: {min: "1", max: "3650", step: "1", inputmode: "numeric",
				disabled: fromConf("retention_days")}});
		const hook = MB.field({label: "Alert webhook URL", key: "alert_webhook", type: "url",
			value: st.alert_webhook || "", hint: "Gets a JSON POST when a connection needs a " +
				"new sign-in or mail starts failing. Empty: no webhook." +
				(fromConf("alert_webhook") ? confHint : ""),
			attrs: {placeholder: "https://", disabled: fromConf("alert_webhook")}});
		const mail = MB.field({label: "Alert email address", key: "alert_email", type: "email",
			value: st.alert_email || "", hint: "Gets the same alerts by mail. Empty: none." +
				(fromConf("alert_email") ? confHint : ""),
			attrs: {disabled: fromConf("alert_email")}});
		const f = MB.form([def, ret, hook, mail], "Save settings", async (form) => {
			const patch = {};
			const str = (v) => (v === "" ? null : v);
			if (!def.input.disabled && str(def.input.value) !== (st.default_connection || null))
				patch.default_connection = str(def.input.value);
			if (!ret.input.disabled && Number(ret.value()) !== st.retention_days)
				patch.retention_days = Number(ret.value());
			if (!hook.input.disabled && str(hook.value()) !== (st.alert_webhook || null))
				patch.alert_webhook = str(hook.value());
			if (!mail.input.disabled && str(mail.value()) !== (st.alert_email || null))
				patch.alert_email = str(mail.value());
			if (!Object.keys(patch).length) {
				MB.replace(form.status, h("p", {class: "success-text", text: "Settings saved " +
					"(nothing had changed)."}));
				return;
			}
			form.busy(true, "Saving…");
			const r = await MB.api("PATCH", "settings", patch);
			form.busy(false);
			if (!ctx.alive())
				return;
			if (r.ok) {
				Object.assign(st, r.data || patch);
				MB.replace(form.status, h("p", {class: "success-text", text: "Settings saved"}));
			} else {
				form.showError(r.error, "Settings not saved.");
			}
		});
		const rows = conns.map((c) => connRow(ctx, c, conns));
		MB.replace(body,
			MB.card("General", f.form),
			MB.card("Per connection",
				h("p", {class: "muted", text: "A fallback takes over when a connection cannot " +
					"send; Force From rewrites the From address to the connection's sender, " +
					"which Microsoft requires unless the mailbox has Send As rights."}),
				conns.length ? MB.table("Fallback and Force From per connection",
					["Connection", "Fallback", "From", h("span", {class: "sr-only",
						text: "Save"})], rows, "table table-middle")
					: MB.empty("No connection yet", null,
						MB.linkButton("Add Microsoft 365 connection", "#/connections/new",
							"btn"))));
	};
})();
