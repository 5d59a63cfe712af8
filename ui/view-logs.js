/* mailbridge web UI: Email Logs — the filtered, paginated log with resend, and one message's
 * page. Message content (headers, preview) is only ever shown as text. */
(function () {
	"use strict";
	const MB = window.MB;
	const h = MB.h;
	const LIMIT = 50;
	const STATES = [["all", "All"], ["sent", "Sent"], ["failed", "Failed"],
		["queued", "Queued"], ["deferred", "Deferred"], ["sending", "Sending"]];

	/* an attempt's result: the words shown and the badge colour */
	const RESULT = {ok: ["Sent", "ok"], sent: ["Sent", "ok"], tempfail: ["Temporary failure",
		"warn"], deferred: ["Deferred", "warn"], permfail: ["Failed", "bad"],
	failed: ["Failed", "bad"]};

	/* "2026-11-27" from a date input -> the start or the end of that day, UTC. */
	function dayBound(d, end) {
		return /^\d{4}-\d{2}-\d{2}$/.test(d) ? d + (end ? "T23:59:59Z" : "T00:00:00Z") : null;
	}

	function resultList(data) {
		const d = data || {};
		const resent = d.resent || [];
		const errors = d.errors || [];
		return h("div", null,
			h("p", {class: resent.length ? "success-text" : "error-text",
				text: "Resent " + MB.plural(resent.length, "message") +
					(errors.length ? "; " + errors.length + " not resent." : ".")}),
			resent.length ? h("ul", {class: "compact-list"}, resent.map((x) => h("li", null,
				x.id + " → ", h("a", {href: "#/logs/" + MB.enc(x.new_id), text: x.new_id})))) : null,
			errors.length ? h("ul", {class: "compact-list"}, errors.map((e) => h("li",
				{class: "error-text"}, typeof e === "string" ? e
					: (e.id ? e.id + ": " : "") + (e.message || (e.error && e.error.message) ||
						JSON.stringify(e)) + (e.fix ? " Fix: " + e.fix : "")))) : null);
	}

	MB.views.logs = async function (ctx) {
		ctx.title("Email Logs");
		const q = ctx.query;
		const page = Math.max(0, parseInt(q.get("page") || "0", 10) || 0);
		const state = MB.field({label: "Status", key: "state", type: "select", options: STATES,
			value: q.get("state") || "all"});
		const search = MB.field({label: "Search", key: "q", type: "search",
			value: q.get("q") || "", hint: "Recipient, sender or subject.",
			attrs: {autocomplete: "off"}});
		const from = MB.field({label: "From date", key: "from", type: "date",
			value: q.get("from") || ""});
		const to = MB.field({label: "To date", key: "to", type: "date", value: q.get("to") || ""});
		const filter = h("form", {class: "filters", role: "search", novalidate: true},
			state.el, search.el, from.el, to.el,
			h("div", {class: "filters-actions"}, h("button", {type: "submit", class: "btn"},
				"Filter")));
		filter.addEventListener("submit", (ev) => {
			ev.preventDefault();
			const p = new URLSearchParams();
			if (state.input.value !== "all")
				p.set("state", state.input.value);
			if (search.value())
				p.set("q", search.value());
			if (from.input.value)
				p.set("from", from.input.value);
			if (to.input.value)
				p.set("to", to.input.value);
			const s = p.toString();
			MB.go("#/logs" + (s ? "?" + s : ""));
		});
		const resendBtn = MB.button("Resend selected", () => resendSelected(), "btn",
			{disabled: true});
		const selCount = h("span", {class: "muted", "aria-live": "polite"});
		const out = h("div", {class: "action-result", "aria-live": "polite"});
		const body = h("div", null, MB.loading());
		MB.add(ctx.main, MB.pageHeader("Email Logs", "Every message mailbridge took, what " +
			"happened to it, and why."),
		MB.card(null, filter),
		MB.card(null, h("div", {class: "table-tools"}, resendBtn, selCount), out, body));

		const params = new URLSearchParams();
		params.set("state", q.get("state") || "all");
		if (q.get("q"))
			params.set("q", q.get("q"));
		if (dayBound(q.get("from") || ""))
			params.set("from", dayBound(q.get("from")));
		if (dayBound(q.get("to") || "", true))
			params.set("to", dayBound(q.get("to"), true));
		params.set("limit", String(LIMIT));
		params.set("offset", String(page * LIMIT));
		const r = await MB.api("GET", "messages?" + params.toString());
		if (!ctx.alive())
			return;
		if (!r.ok) {
			MB.replace(body, MB.errorBox(r.error, "The log could not be loaded."));
			return;
		}
		const msgs = (r.data && r.data.messages) || [];
		const total = typeof r.data.total === "number" ? r.data.total : msgs.length;
		if (!msgs.length) {
			MB.replace(body, MB.empty(page ? "No more messages" : "No messages",
				q.toString() ? "Nothing matches these filters." : "Mail mailbridge takes in " +
					"shows up here."));
			return;
		}
		const boxes = [];
		const selected = () => boxes.filter((b) => b.checked).map((b) => b.value);
		const all = h("input", {type: "checkbox", "aria-label": "Select all messages on " +
			"this page"});
		/* the visible words show only on narrow screens, where the rows become cards */
		const allLabel = h("label", {class: "select-all"}, all,
			h("span", {class: "select-all-text", "aria-hidden": "true", text: "Select all"}));
		function sync() {
			const n = selected().length;
			resendBtn.disabled = n === 0;
			selCount.textContent = n ? MB.plural(n, "message") + " selected" : "";
			all.checked = n === boxes.length;
			all.indeterminate = n > 0 && n < boxes.length;
		}
		all.addEventListener("change", () => {
			boxes.forEach((b) => {
				b.checked = all.checked;
			});
			sync();
		});
		const rows = msgs.map((m) => {
			const cb = h("input", {type: "checkbox", value: m.id,
				"aria-label": "Select message " + m.id});
			cb.addEventListener("change", sync);
			boxes.push(cb);
			const toList = m.to || [];
			const toText = toList.length > 2 ? toList.slice(0, 2).join(", ") + " +" +
				(toList.length - 2) : toList.join(", ") || "—";
			const fromText = m.from || m.sender || "—";
			return h("tr", null,
				h("td", {class: "col-check"}, cb),
				h("td", {class: "col-subject"}, h("a", {href: "#/logs/" + MB.enc(m.id),
					text: m.subject || "(no subject)"}),
				m.last_error && m.state !== "sent" ? h("div", {class: "small error-text",
					text: m.last_error}) : null),
				h("td", {class: "col-state"}, MB.stateBadge(m.state)),
				h("td", {class: "col-date nowrap", text: MB.fmtDate(m.received)}),
				h("td", {class: "col-from"}, h("span", {class: "ellipsis", title: fromText,
					text: fromText})),
				h("td", {class: "col-to"}, h("span", {class: "ellipsis",
					title: toList.join(", ") || null},
				h("span", {class: "card-only", "aria-hidden": "true", text: "→ "}), toText)),
				h("td", {class: "col-conn", text: m.connection || "—"}));
		});
		const table = MB.table("Messages", [allLabel, "Subject", "State", "Date", "From", "To",
			"Connection"], rows, "table table-log");
		/* narrow screens show the rows as cards (CSS display changes): explicit roles keep
		 * the table's meaning for screen readers there */
		const t = table.querySelector("table");
		t.setAttribute("role", "table");
		t.querySelectorAll("thead, tbody").forEach((x) => x.setAttribute("role", "rowgroup"));
		t.querySelectorAll("tr").forEach((x) => x.setAttribute("role", "row"));
		t.querySelectorAll("th").forEach((x) => x.setAttribute("role", "columnheader"));
		t.querySelectorAll("td").forEach((x) => x.setAttribute("role", "cell"));
		const first = page * LIMIT + 1, last = page * LIMIT + msgs.length;
		const pager = h("nav", {class: "pager", "aria-label": "Pages"},
			h("span", {class: "muted", text: "Showing " + first + "–" + last + " of " + total}),
			h("div", {class: "btn-row"},
				page > 0 ? MB.button("Previous", () => goPage(page - 1), "btn btn-small") : null,
				last < total ? MB.button("Next", () => goPage(page + 1), "btn btn-small") : null));
		MB.replace(body, table, pager);

		function goPage(n) {
			const p = new URLSearchParams(q.toString());
			if (n > 0)
				p.set("page", String(n));
			else
				p.delete("page");
			MB.go("#/logs?" + p.toString());
		}

		async function resendSelected() {
			const ids = selected();
			if (!ids.length)
				return;
			resendBtn.disabled = true;
			MB.replace(out, h("p", {class: "muted", text: "Resending " +
				MB.plural(ids.length, "message") + "…"}));
			const res = await MB.api("POST", "messages/resend", {ids: ids});
			if (!ctx.alive())
				return;
			sync();
			MB.replace(out, res.ok ? resultList(res.data)
				: MB.errorBox(res.error, "Not resent.", false));
		}
	};

	/* ---- one message ---- */
	MB.views.message = async function (ctx) {
		const id = ctx.params[0];
		ctx.title("Message " + id);
		const path = "messages/" + MB.enc(id);
		const body = h("div", null, MB.loading());
		MB.add(ctx.main, MB.pageHeader("Message", null,
			MB.linkButton("Back to the log", "#/logs", "btn btn-quiet")), body);
		const r = await MB.api("GET", path);
		if (!ctx.alive())
			return;
		if (!r.ok) {
			MB.replace(body, r.status === 404 && !r.notAvailable
				? MB.card(null, MB.empty("No message " + id, "It may have been removed from " +
					"the log (see Settings → Log retention).",
				MB.linkButton("Back to the log", "#/logs", "btn")))
				: MB.errorBox(r.error, "The message could not be loaded."));
			return;
		}
		const m = r.data || {};
		const h1 = ctx.main.querySelector("h1");
		h1.textContent = m.subject || "(no subject)";
		const out = h("div", {class: "action-result", "aria-live": "polite"});

		async function act(btn, method, sub, payload, okText) {
			btn.disabled = true;
			MB.replace(out, h("p", {class: "muted", text: "Working…"}));
			const res = await MB.api(method, path + sub, payload);
			btn.disabled = false;
			if (!ctx.alive())
				return res;
			if (res.ok)
				MB.replace(out, h("p", {class: "success-text"}, okText(res.data || {})));
			else
				MB.replace(out, MB.errorBox(res.error, "That did not work.", false));
			return res;
		}
		const newLink = (d) => [d.id ? "Queued again as message " : "Queued again.",
			d.id ? h("a", {href: "#/logs/" + MB.enc(d.id), text: d.id}) : null,
			d.id ? "." : null];
		const resend = MB.button("Resend", () => act(resend, "POST", "/resend", {}, newLink),
			"btn btn-primary");
		const retry = ["deferred", "queued", "failed"].indexOf(m.state) >= 0
			? MB.button("Retry now", () => act(retry, "POST", "/retry", undefined,
				() => ["Queued: mailbridge tries again now."]), "btn") : null;
		const del = MB.button("Delete from log", async () => {
			if (!window.confirm("Delete message " + id + " from the log?"))
				return;
			const res = await act(del, "DELETE", "", undefined, () => ["Deleted."]);
			if (res.ok && ctx.alive())
				MB.go("#/logs");
		}, "btn btn-danger");

		const others = MB.field({label: "Other recipients", key: "to", type: "text",
			hint: "One or more addresses, separated by commas.", attrs: {autocomplete: "off"}});
		const resendTo = MB.form([others], "Resend to these", async (form) => {
			const list = MB.splitAddrs(others.value());
			const bad = list.filter((a) => !MB.isAddr(a));
			if (!list.length || bad.length) {
				others.setError(list.length ? "Not an email address: " + bad.join(", ")
					: "Enter at least one address.");
				others.input.focus();
				return;
			}
			form.busy(true);
			const res = await MB.api("POST", path + "/resend", {to: list});
			form.busy(false);
			if (!ctx.alive())
				return;
			if (res.ok)
				MB.replace(form.status, h("p", {class: "success-text"}, newLink(res.data || {})));
			else
				form.showError(res.error, "Not resent.");
		});

		const failed = m.last_error && m.state !== "sent";
		const summary = MB.dl([
			["State", MB.stateBadge(m.state)],
			["Message ID", h("code", {text: m.id || id})],
			["Received", MB.fmtDate(m.received)],
			["Updated", MB.fmtDate(m.updated)],
			["From", m.from || "—"],
			["Envelope sender", m.sender || "—"],
			["To", (m.to || []).join(", ") || "—"],
			["Connection", m.connection || "—"],
			["Size", MB.fmtBytes(m.size)],
			["Attempts", String(Array.isArray(m.attempts) ? m.attempts.length
				: m.attempts ?? 0)],
			["Next attempt", m.next_attempt ? MB.fmtDate(m.next_attempt) : null],
		]);
		const headers = (m.headers || []).map((x) => h("tr", null,
			h("th", {scope: "row", text: x.name}),
			h("td", {class: "wrap"}, MB.breakable(x.value))));
		/* one attempt: its facts on a line, what the server said on a full-width line below */
		const attempts = (Array.isArray(m.attempts) ? m.attempts : []).map((a) => {
			const res = RESULT[a.result] || [a.result || "—", "neutral"];
			const more = a.detail || a.upstream_id;
			return h("tbody", {class: "attempt"},
				h("tr", {class: more ? "has-detail" : null},
					h("td", {class: "nowrap", text: MB.fmtDate(a.at)}),
					h("td", {text: a.connection || "—"}),
					h("td", null, MB.badge(res[0], res[1])),
					h("td", {class: "nowrap", text: a.code ?? "—"}),
					h("td", {class: "nowrap num", text: typeof a.ms === "number" ? a.ms + " ms"
						: "—"})),
				more ? h("tr", {class: "attempt-detail"}, h("td", {colspan: "5"},
					a.detail ? h("p", {class: "wrap"}, MB.breakable(a.detail)) : null,
					a.upstream_id ? h("p", {class: "muted small"}, "Upstream ID ",
						h("code", {class: "wrap", text: a.upstream_id})) : null)) : null);
		});
		const attemptsTable = h("div", {class: "table-wrap"},
			h("table", {class: "table table-attempts"},
				h("caption", {class: "sr-only", text: "Delivery attempts"}),
				h("thead", null, h("tr", null, ["When", "Connection", "Result", "Code", "Time"]
					.map((t) => h("th", {scope: "col", text: t})))),
				attempts));
		MB.replace(body,
			failed ? MB.errorBox({message: m.last_error, fix: m.fix}, "Last error", false) : null,
			h("div", {class: "two-col"},
				MB.card("Summary", summary),
				MB.card("Resend", h("p", {class: "muted", text: "Resend queues a copy of this " +
					"message as a new message; the original stays in the log."}),
				h("div", {class: "btn-row"}, resend, retry, del), out,
				h("h3", {class: "sub-title", text: "Resend to"}), resendTo.form)),
			MB.card("Preview",
				m.html ? h("p", {class: "muted small", text: "An HTML message: shown as plain " +
					"text, nothing in it is rendered or loaded."}) : null,
				h("pre", {class: "preview", tabindex: "0", text: m.preview || "(no text)"})),
			MB.card("Attempts", attempts.length ? attemptsTable
				: h("p", {class: "muted", text: "No delivery attempt yet."})),
			MB.card("Headers", headers.length ? MB.table("Headers", ["Name", "Value"], headers,
				"table table-kv") : h("p", {class: "muted", text: "None."})));
	};
})();
