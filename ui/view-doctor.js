/* mailbridge web UI: Doctor — the guide's checklist run against reality for one connection
 * (the same report as `mailbridge doctor --json`). */
(function () {
	"use strict";
	const MB = window.MB;
	const h = MB.h;
	const STATUS = {
		pass: ["Pass", "ok"],
		fail: ["Fail", "bad"],
		warn: ["Warning", "warn"],
		unknown: ["Can't tell", "neutral"],
		info: ["Info", "info"],
	};

	/* The report is an array of items; accept {items|checks|report: [...]} too. */
	function itemsOf(d) {
		if (Array.isArray(d))
			return d;
		if (d && typeof d === "object")
			for (const k of ["items", "checks", "report"])
				if (Array.isArray(d[k]))
					return d[k];
		return null;
	}

	function render(items, when) {
		const count = (s) => items.filter((i) => i.status === s).length;
		const conn = (items.find((i) => i.connection) || {}).connection;
		const nfail = count("fail"), nwarn = count("warn");
		const summary = h("div", {class: "alert " + (nfail ? "alert-error" : nwarn
			? "alert-warn" : "alert-ok"), role: "status"},
		h("p", {class: "alert-title", text: nfail ? MB.plural(nfail, "check") + " failed"
			: nwarn ? "No check failed; " + MB.plural(nwarn, "warning") : "No check failed"}),
		h("p", {text: count("pass") + " passed, " + nfail + " failed, " +
			MB.plural(count("warn"), "warning") + ", " + count("unknown") + " can't tell" +
			(conn ? " — connection " + conn : "") + (when ? " — " + when : "") + "."}));
		const list = h("ol", {class: "checks"}, items.map((it) => {
			const st = STATUS[it.status] || [it.status || "?", "neutral"];
			const showFix = it.fix && it.status !== "pass" && it.status !== "info";
			return h("li", {class: "check check-" + st[1]},
				h("div", {class: "check-head"}, MB.badge(st[0], st[1]),
					h("h3", {class: "check-title"}, MB.codeText(it.title || it.id || "Check"))),
				it.evidence ? h("p", {class: "check-evidence"}, MB.codeText(it.evidence))
					: null,
				showFix ? h("p", {class: "fix"}, "Fix: ", MB.codeText(it.fix)) : null,
				it.checklist ? h("p", {class: "check-guide muted small"}, "Guide: ",
					MB.codeText(it.checklist)) : null);
		}));
		return [summary, list];
	}

	MB.views.doctor = async function (ctx) {
		ctx.title("Doctor");
		const conn = MB.field({label: "Connection", key: "connection", type: "select",
			options: [["", "Default connection"]]});
		const runBtn = h("button", {type: "submit", class: "btn btn-primary"}, "Run checks");
		const live = h("p", {class: "muted run-status", "aria-live": "polite"});
		const out = h("div", {class: "doctor-out"});
		const form = h("form", {class: "filters", novalidate: true}, conn.el,
			h("div", {class: "filters-actions"}, runBtn));
		MB.add(ctx.main, MB.pageHeader("Doctor", "Runs the guide's checklist against " +
			"Microsoft for one connection, and explains each failure with its fix."),
		MB.card(null, form, live), out);

		form.addEventListener("submit", async (ev) => {
			ev.preventDefault();
			runBtn.disabled = true;
			live.textContent = "Running the checks… this can take up to a minute.";
			MB.clear(out);
			const body = conn.input.value ? {connection: conn.input.value} : {};
			const r = await MB.api("POST", "doctor", body);
			runBtn.disabled = false;
			if (!ctx.alive())
				return;
			const items = r.ok ? itemsOf(r.data) : null;
			if (items) {
				live.textContent = "Checks finished.";
				MB.replace(out, MB.card("Results", render(items, null)));
			} else {
				live.textContent = "";
				MB.replace(out, MB.errorBox(r.ok ? {message: "The report has an unknown " +
					"shape.", fix: "run mailbridge doctor on the server"} : r.error,
				r.status === 504 ? "The checks took over 60 seconds." : "The checks did not run."));
			}
		});

		const [cr, last] = await Promise.all([MB.api("GET", "connections"),
			MB.api("GET", "doctor")]);
		if (!ctx.alive())
			return;
		((cr.ok && cr.data && cr.data.connections) || []).forEach((c) => {
			conn.input.appendChild(h("option", {value: c.name}, c.name +
				(c.default ? " (default)" : "")));
		});
		const items = last.ok ? itemsOf(last.data) : null;
		if (items && !out.firstChild)
			MB.replace(out, MB.card("Last results", render(items, "last run")));
	};
})();
