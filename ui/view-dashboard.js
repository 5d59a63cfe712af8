/* mailbridge web UI: the dashboard — mail per day, the queue, each connection's health. */
(function () {
	"use strict";
	const MB = window.MB;
	const h = MB.h;

	function tokenMin(c) {
		const a = c.provider === "microsoft-smtp" ? c.outlook_token_valid_min
			: c.graph_token_valid_min;
		if (typeof a === "number")
			return a;
		const b = c.provider === "microsoft-smtp" ? c.graph_token_valid_min
			: c.outlook_token_valid_min;
		return typeof b === "number" ? b : null;
	}
	MB.tokenMin = tokenMin;

	/* "Connected as user@domain, token valid for N min", or what is missing. */
	MB.connStatusText = function (c) {
		const min = tokenMin(c);
		if (c.state === "authorized") {
			const who = c.account ? "Connected as " + c.account
				: c.auth === "app-only" ? "Connected (app-only)" : "Connected";
			if (min === null)
				return who + "; mailbridge gets a token when it next sends";
			if (min <= 0)
				return who + ", token expired; mailbridge refreshes it when it next sends";
			return who + ", token valid for " + min + " min";
		}
		if (c.state === "needs re-authorization")
			return "Needs a new sign-in" + (c.reason ? ": " + c.reason : "");
		if (c.state === "not authorized")
			return c.auth === "app-only" ? "No token yet"
				: "Not signed in yet: authenticate with Office 365";
		return c.state || "State unknown";
	};

	function kpi(label, value, kind) {
		return h("div", {class: "kpi" + (kind ? " kpi-" + kind : "")},
			h("p", {class: "kpi-label", text: label}),
			h("p", {class: "kpi-value", text: String(value)}));
	}

	function healthCard(c, statsConn) {
		const min = tokenMin(c);
		const ok = statsConn ? statsConn.ok : c.state === "authorized";
		const rows = [
			["Account", c.account || "—"],
			["Sender", c.sender || "—"],
			["Token", min === null ? "none yet" : min > 0 ? "valid for " + min + " min"
				: "expired (refreshed when next needed)"],
		];
		return h("article", {class: "health " + (ok ? "health-ok" : "health-bad")},
			h("div", {class: "health-head"},
				h("h3", null, h("a", {href: "#/connections/" + MB.enc(c.name), text: c.name})),
				MB.connBadge(c.state),
				c.default ? MB.badge("Default", "accent") : null),
			MB.dl(rows, "kv kv-compact"),
			c.last_error ? h("div", {class: "health-error"},
				h("p", {class: "error-text", text: "Last error: " + c.last_error}),
				c.fix ? h("p", {class: "fix", text: "Fix: " + c.fix}) : null) : null);
	}

	MB.views.dashboard = async function (ctx) {
		ctx.title("Dashboard");
		const main = ctx.main;
		let days = ctx.query.get("days") === "30" ? 30 : 7;
		const kpis = h("div", {class: "kpis"}, MB.loading());
		const chartSlot = h("div", {class: "chart-slot"});
		const b7 = MB.button("7 days", () => load(7), "seg", {"aria-pressed": "true"});
		const b30 = MB.button("30 days", () => load(30), "seg", {"aria-pressed": "false"});
		const health = h("div", {class: "health-grid"}, MB.loading());
		const warn = h("div");
		const chartCard = MB.card("Mail per day",
			h("div", {class: "card-tools", role: "group", "aria-label": "Period"}, b7, b30),
			chartSlot);
		MB.add(main, MB.pageHeader("Dashboard", "What mailbridge sent, what failed, and " +
			"whether every connection can send."), warn, kpis, chartCard,
		MB.card("Connections", health));

		/* The chart is drawn in CSS pixels for the width it gets (text keeps its size), and
		 * drawn again when that width changes. The observed probe is an empty full-width line:
		 * its height never changes, so redrawing inside the callback starts no resize loop, and
		 * the new drawing is in the very frame that shows the new width. */
		const probe = h("div", {class: "chart-probe", "aria-hidden": "true"});
		const chartBox = h("div", {class: "chart-box"});
		chartSlot.append(probe, chartBox);
		let lastDays = null, lastWidth = 0;
		const width = () => Math.floor(probe.getBoundingClientRect().width);
		const draw = () => {
			lastWidth = width();
			MB.replace(chartBox, MB.chart(lastDays, days, lastWidth).el);
		};
		if (window.ResizeObserver) {
			const ro = new ResizeObserver(() => {
				if (lastDays && width() !== lastWidth)
					draw();
			});
			ro.observe(probe);
			ctx.onCleanup(() => ro.disconnect());
		} else {
			const onResize = () => {
				if (lastDays && width() !== lastWidth)
					draw();
			};
			window.addEventListener("resize", onResize);
			ctx.onCleanup(() => window.removeEventListener("resize", onResize));
		}

		async function load(n) {
			days = n;
			b7.setAttribute("aria-pressed", String(n === 7));
			b30.setAttribute("aria-pressed", String(n === 30));
			const r = await MB.api("GET", "stats?days=" + n);
			if (!ctx.alive() || days !== n)
				return r;
			if (!r.ok) {
				MB.replace(kpis, MB.errorBox(r.error, "The statistics are not available."));
				MB.clear(chartBox);
				return r;
			}
			const st = r.data || {};
			lastDays = st.days || [];
			lastWidth = width();
			const chart = MB.chart(lastDays, n, lastWidth);
			MB.replace(chartBox, chart.el);
			MB.replace(kpis,
				kpi("In the queue", st.queue ?? 0),
				kpi("Sent, " + n + " days", chart.totalSent, "ok"),
				kpi("Failed, " + n + " days", chart.totalFailed,
					chart.totalFailed ? "bad" : null),
				kpi("Usable connections", st.usable_connections ?? "—",
					st.usable_connections === 0 ? "bad" : null));
			return r;
		}

		const [sr, cr] = await Promise.all([load(days), MB.api("GET", "connections")]);
		if (!ctx.alive())
			return;
		if (!cr.ok) {
			MB.replace(health, MB.errorBox(cr.error, "The connections are not available."));
			return;
		}
		const conns = (cr.data && cr.data.connections) || [];
		const byName = {};
		((sr.ok && sr.data && sr.data.connections) || []).forEach((c) => {
			byName[c.name] = c;
		});
		if (!conns.length) {
			MB.replace(health, MB.empty("No connection yet",
				"Add your Microsoft 365 connection to start sending.",
				MB.linkButton("Add Microsoft 365 connection", "#/connections/new",
					"btn btn-primary")));
			return;
		}
		MB.replace(health, conns.map((c) => healthCard(c, byName[c.name])));
		const def = cr.data.default_connection ?? (conns.find((c) => c.default) || {}).name;
		if (!def)
			MB.add(warn, MB.notice("warn",
				h("p", {class: "alert-title", text: "No default connection is set."}),
				h("p", null, "Mail that names no connection cannot go out — the guide's " +
					"Errors 1 and 2 (“cURL error 28” and “Not Found”). Fix: choose your " +
					"Microsoft 365 connection as the default in ",
				h("a", {href: "#/settings", text: "Settings"}), ".")));
	};
})();
