/* mailbridge web UI: DOM helpers. Server and message data only ever reach the page as text
 * (textContent, attribute values): nothing here parses HTML. */
(function () {
	"use strict";
	const MB = (window.MB = window.MB || {});
	MB.views = MB.views || {}; /* view-*.js register here; app.js routes to them */
	const SVG_NS = "http://www.w3.org/2000/svg";
	let idSeq = 0;

	/* Properties set as properties (not attributes). */
	const PROPS = new Set(["value", "checked", "disabled", "hidden", "selected", "readOnly",
		"required", "multiple", "indeterminate"]);

	function append(el, kid) {
		if (kid === null || kid === undefined || kid === false)
			return;
		if (Array.isArray(kid)) {
			kid.forEach((k) => append(el, k));
			return;
		}
		el.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
	}

	function setAttrs(el, attrs) {
		Object.keys(attrs || {}).forEach((k) => {
			const v = attrs[k];
			if (v === null || v === undefined || v === false)
				return;
			if (k === "on") {
				Object.keys(v).forEach((ev) => el.addEventListener(ev, v[ev]));
			} else if (k === "text") {
				el.textContent = String(v);
			} else if (k === "class") {
				el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
			} else if (PROPS.has(k)) {
				el[k] = v;
			} else {
				el.setAttribute(k, v === true ? "" : String(v));
			}
		});
	}

	/* h("p", {class: "x"}, "text", child, [more]) */
	MB.h = function (tag, attrs, ...kids) {
		const el = document.createElement(tag);
		setAttrs(el, attrs);
		append(el, kids);
		return el;
	};

	MB.s = function (tag, attrs, ...kids) {
		const el = document.createElementNS(SVG_NS, tag);
		setAttrs(el, attrs);
		append(el, kids);
		return el;
	};

	/* Appends the kids, skipping null / undefined / false (Element.append would write "null"). */
	MB.add = function (el, ...kids) {
		append(el, kids);
		return el;
	};

	MB.clear = function (el) {
		while (el.firstChild)
			el.removeChild(el.firstChild);
		return el;
	};

	MB.replace = function (el, ...kids) {
		MB.clear(el);
		append(el, kids);
		return el;
	};

	MB.uid = function (prefix) {
		idSeq += 1;
		return (prefix || "id") + "-" + idSeq;
	};

	/* "2026-11-27T10:00:00Z" -> "27 Nov 2026, 10:00" in the browser's locale and zone. */
	MB.fmtDate = function (iso) {
		if (!iso)
			return "—";
		const d = new Date(iso);
		if (Number.isNaN(d.getTime()))
			return String(iso);
		return d.toLocaleString(undefined, {year: "numeric", month: "short", day: "numeric",
			hour: "2-digit", minute: "2-digit"});
	};

	MB.fmtBytes = function (n) {
		if (typeof n !== "number")
			return "—";
		if (n < 1024)
			return n + " B";
		if (n < 1024 * 1024)
			return (n / 1024).toFixed(1) + " KB";
		return (n / 1024 / 1024).toFixed(1) + " MB";
	};

	MB.plural = function (n, one, many) {
		return n + " " + (n === 1 ? one : (many || one + "s"));
	};

	/* Only http(s) addresses may become links or navigation targets. */
	MB.safeUrl = function (u) {
		return typeof u === "string" && /^https?:\/\//i.test(u) ? u : null;
	};

	MB.enc = encodeURIComponent;

	/* Long tokens (addresses, ids, URLs) get line-break opportunities at sensible points —
	 * before "@" and ".", after "/ , ; : = & ? _ -" — as <wbr> elements between text nodes, so
	 * "<user@contoso.test>" wraps as "<user" / "@contoso.test>" instead of mid-word. */
	const LONG = 14;
	const BREAK_AT = /(?=[@.])|(?<=[/,;:=&?_\-])/;
	MB.breakable = function (text) {
		const out = [];
		String(text ?? "").split(/(\s+)/).forEach((part) => {
			if (part.length < LONG || /^\s/.test(part)) {
				out.push(part);
				return;
			}
			part.split(BREAK_AT).forEach((piece, i) => {
				if (i > 0)
					out.push(document.createElement("wbr"));
				out.push(piece);
			});
		});
		return out;
	};

	/* "run `mailbridge doctor` again": backticked spans become <code>, the rest stays text. */
	MB.codeText = function (text) {
		return String(text ?? "").split(/`([^`\n]+)`/).map((part, i) =>
			(i % 2 ? MB.h("code", {text: part}) : part)).filter((x) => x !== "");
	};

	/* ---- building blocks ---- */

	MB.pageHeader = function (title, sub, actions) {
		return MB.h("div", {class: "page-header"},
			MB.h("div", {class: "page-title"},
				MB.h("h1", {tabindex: "-1", text: title}),
				sub ? MB.h("p", {class: "page-sub"}, sub) : null),
			actions ? MB.h("div", {class: "page-actions"}, actions) : null);
	};

	MB.card = function (title, ...kids) {
		const attrs = {class: "card"};
		let heading = null;
		if (title) {
			const id = MB.uid("card");
			attrs["aria-labelledby"] = id;
			heading = MB.h("h2", {class: "card-title", id: id, text: title});
		}
		return MB.h("section", attrs, heading, kids);
	};

	MB.loading = function (what) {
		return MB.h("p", {class: "loading", "aria-live": "polite"}, what || "Loading…");
	};

	MB.button = function (label, onClick, cls, attrs) {
		return MB.h("button", Object.assign({type: "button", class: cls || "btn",
			on: {click: onClick}}, attrs || {}), label);
	};

	MB.linkButton = function (label, href, cls) {
		return MB.h("a", {class: cls || "btn", href: href}, label);
	};

	/* An error answer as a box: its message and "Fix: …". */
	MB.errorBox = function (err, title, live) {
		const e = err || {};
		return MB.h("div", {class: "alert alert-error", role: live === false ? null : "alert"},
			title ? MB.h("p", {class: "alert-title", text: title}) : null,
			MB.h("p", {text: e.message || "Something went wrong."}),
			e.fix ? MB.h("p", {class: "fix", text: "Fix: " + e.fix}) : null);
	};

	MB.notice = function (kind, ...kids) {
		return MB.h("div", {class: "alert alert-" + kind}, kids);
	};

	MB.empty = function (title, text, action) {
		return MB.h("div", {class: "empty"},
			MB.h("p", {class: "empty-title", text: title}),
			text ? MB.h("p", {class: "muted", text: text}) : null,
			action || null);
	};

	MB.badge = function (text, kind) {
		return MB.h("span", {class: "badge badge-" + (kind || "neutral"), text: text});
	};

	const MSG_KIND = {sent: "ok", failed: "bad", queued: "info", sending: "info",
		deferred: "warn"};
	MB.stateBadge = function (state) {
		const t = String(state || "unknown");
		return MB.badge(t.charAt(0).toUpperCase() + t.slice(1), MSG_KIND[state] || "neutral");
	};

	const CONN_STATE = {
		"authorized": ["Connected", "ok"],
		"not authorized": ["Not signed in", "warn"],
		"needs re-authorization": ["Needs sign-in again", "bad"],
	};
	MB.connBadge = function (state) {
		const s = CONN_STATE[state];
		return s ? MB.badge(s[0], s[1]) : MB.badge(state || "unknown", "neutral");
	};

	/* [[term, value], ...] -> <dl>; null values are skipped. */
	MB.dl = function (pairs, cls) {
		const dl = MB.h("dl", {class: cls || "kv"});
		pairs.forEach((p) => {
			if (p[1] === null || p[1] === undefined)
				return;
			dl.appendChild(MB.h("div", {class: "kv-row"}, MB.h("dt", {text: p[0]}),
				MB.h("dd", null, p[1] === "" ? "—" : typeof p[1] === "string"
					? MB.breakable(p[1]) : p[1])));
		});
		return dl;
	};

	MB.table = function (caption, heads, rows, cls) {
		return MB.h("div", {class: "table-wrap"},
			MB.h("table", {class: cls || "table"},
				caption ? MB.h("caption", {class: "sr-only", text: caption}) : null,
				MB.h("thead", null, MB.h("tr", null,
					heads.map((t) => MB.h("th", {scope: "col"}, t)))),
				MB.h("tbody", null, rows)));
	};

	/* Copies text; without the clipboard API (plain http, old browser) it selects the text of
	 * the input so that Ctrl+C copies it. fb is the element that tells what happened. */
	MB.copy = function (text, input, fb) {
		const done = (msg) => {
			if (fb)
				fb.textContent = msg;
		};
		const fallback = () => {
			if (input) {
				input.focus();
				input.select();
				let ok = false;
				try {
					ok = document.execCommand("copy");
				} catch (e) {
					ok = false;
				}
				done(ok ? "Copied." : "Selected: press Ctrl+C (⌘C) to copy.");
			} else {
				done("Copy it by hand: " + text);
			}
		};
		if (navigator.clipboard && window.isSecureContext) {
			navigator.clipboard.writeText(text).then(() => done("Copied."), fallback);
		} else {
			fallback();
		}
	};
})();
