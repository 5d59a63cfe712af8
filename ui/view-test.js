/* mailbridge web UI: Email Test — send one message now and see how it went. */
(function () {
	"use strict";
	const MB = window.MB;
	const h = MB.h;

	MB.views.test = async function (ctx) {
		ctx.title("Email Test");
		const r = await MB.api("GET", "connections");
		if (!ctx.alive())
			return;
		const conns = (r.ok && r.data && r.data.connections) || [];
		const def = conns.find((c) => c.default);
		const conn = MB.field({label: "Connection", key: "connection", type: "select",
			options: [["", "Default connection" + (def ? " (" + def.name + ")" : "")]]
				.concat(conns.map((c) => [c.name, c.name + (c.sender ? " — " + c.sender : "")]))});
		const from = MB.field({label: "From", key: "from", type: "email",
			hint: "Empty: the connection's sender" + (def && def.sender ? " (" + def.sender +
				")" : "") + ".", attrs: {autocomplete: "email"}});
		const to = MB.field({label: "To", key: "to", type: "email", required: true,
			attrs: {autocomplete: "email"}});
		const subject = MB.field({label: "Subject", key: "subject",
			value: "mailbridge test message"});
		const html = MB.field({label: "Send as HTML", key: "html", type: "checkbox",
			hint: "Sends an HTML body (with a plain-text part)."});
		const result = h("div", {class: "test-result", role: "status", "aria-live": "polite"},
			h("p", {class: "muted", text: "Nothing sent yet. The result shows here."}));
		const f = MB.form([conn, from, to, subject, html], "Send test email", async (form) => {
			const body = {to: to.value(), html: html.value()};
			if (from.value())
				body.from = from.value();
			if (conn.input.value)
				body.connection = conn.input.value;
			if (subject.value())
				body.subject = subject.value();
			form.busy(true);
			MB.replace(result, h("p", {class: "muted", text: "Sending…"}));
			const t0 = performance.now();
			const res = await MB.api("POST", "test", body);
			form.busy(false);
			if (!ctx.alive())
				return;
			const d = res.data || {};
			if (res.ok) {
				const ms = typeof d.ms === "number" ? d.ms : Math.round(performance.now() - t0);
				MB.replace(result, h("div", {class: "alert alert-ok"},
					h("p", {class: "alert-title", text: "Sent in " + ms + " ms" +
						(d.connection ? " through " + d.connection : "") + "."}),
					h("p", null, "Microsoft accepted the message" + (d.upstream_id
						? " (id " + d.upstream_id + ")" : "") + ". Check the inbox of " +
						body.to + "."),
					d.id ? h("p", null, h("a", {href: "#/logs/" + MB.enc(d.id),
						text: "See it in the log"})) : null));
				return;
			}
			if (res.status === 400) {
				form.showError(res.error);
				MB.replace(result, h("p", {class: "error-text",
					text: "Not sent: " + res.error.message}));
				return;
			}
			const e = res.error || {};
			MB.replace(result, h("div", {class: "alert alert-error"},
				h("p", {class: "alert-title", text: "Not delivered" + (typeof d.ms === "number"
					? " after " + d.ms + " ms" : "") + "."}),
				h("p", {text: e.message || "Unknown error."}),
				e.fix ? h("p", {class: "fix", text: "Fix: " + e.fix}) : null,
				d.id ? h("p", null, h("a", {href: "#/logs/" + MB.enc(d.id),
					text: "See it in the log"})) : null));
		});
		MB.add(ctx.main, MB.pageHeader("Email Test", "Sends one message now, through the " +
			"connection you choose, and shows how long Microsoft took or why it refused."),
		r.ok ? null : MB.errorBox(r.error, "The connections could not be loaded.", false),
		h("div", {class: "two-col"}, MB.card(null, f.form), MB.card("Result", result)));
		to.input.focus();
	};
})();
