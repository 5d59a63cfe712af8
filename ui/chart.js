/* mailbridge web UI: a small SVG bar chart of sent and failed mail per day, with axes, labels,
 * a title and description for screen readers, and an empty state. */
(function () {
	"use strict";
	const MB = window.MB;
	const s = MB.s;

	const M = {top: 16, right: 12, bottom: 34, left: 44};

	function niceStep(max) {
		const raw = Math.max(1, max / 4);
		const p = Math.pow(10, Math.floor(Math.log10(raw)));
		const f = raw / p;
		return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
	}

	function dayLabel(date, long) {
		const d = new Date(date + "T00:00:00Z");
		if (Number.isNaN(d.getTime()))
			return String(date);
		const o = long ? {weekday: "short", day: "numeric", timeZone: "UTC"}
			: {day: "numeric", month: "short", timeZone: "UTC"};
		return d.toLocaleDateString(undefined, o);
	}

	/* days: [{date, sent, failed}] oldest first; width: the pixels it gets (text keeps its
	 * size: the chart is drawn for its width, not scaled). */
	MB.chart = function (days, period, width) {
		const W = Math.max(240, Math.round(width || 720));
		const H = W < 500 ? 210 : 260;
		const list = Array.isArray(days) ? days : [];
		const n = Math.max(list.length, 1);
		const totalSent = list.reduce((a, d) => a + (d.sent || 0), 0);
		const totalFailed = list.reduce((a, d) => a + (d.failed || 0), 0);
		const peak = list.reduce((a, d) => Math.max(a, d.sent || 0, d.failed || 0), 0);
		const step = niceStep(peak);
		const top = Math.max(step * Math.ceil(peak / step), step * 4);
		const cw = W - M.left - M.right, ch = H - M.top - M.bottom;
		const slot = cw / n;
		const bw = Math.max(2, Math.min(18, slot * 0.36));
		const y = (v) => M.top + ch - (v / top) * ch;
		const titleId = MB.uid("chart-t"), descId = MB.uid("chart-d");
		const busiest = list.reduce((a, d) => (!a || (d.sent || 0) + (d.failed || 0) >
			(a.sent || 0) + (a.failed || 0) ? d : a), null);
		const desc = totalSent + totalFailed === 0
			? "No mail was sent or failed in the last " + period + " days."
			: totalSent + " sent and " + totalFailed + " failed in the last " + period +
			" days; the busiest day was " + dayLabel(busiest.date, false) + " with " +
			busiest.sent + " sent and " + busiest.failed + " failed.";

		const svg = s("svg", {class: "chart", viewBox: "0 0 " + W + " " + H, width: W, height: H,
			role: "img",
			"aria-labelledby": titleId + " " + descId, preserveAspectRatio: "xMidYMid meet"},
		s("title", {id: titleId, text: "Sent and failed mail per day, last " + period + " days"}),
		s("desc", {id: descId, text: desc}));

		for (let v = 0; v <= top; v += step) {
			svg.appendChild(s("line", {class: v === 0 ? "axis" : "grid", x1: M.left,
				x2: W - M.right, y1: y(v), y2: y(v)}));
			svg.appendChild(s("text", {class: "tick", x: M.left - 8, y: y(v) + 4,
				"text-anchor": "end", text: String(v)}));
		}
		const every = Math.max(1, Math.ceil(n / Math.max(3, Math.floor(cw / 64))));
		list.forEach((d, i) => {
			const x0 = M.left + slot * i + slot / 2;
			const g = s("g", {class: "day"});
			const sent = d.sent || 0, failed = d.failed || 0;
			g.appendChild(s("title", {text: dayLabel(d.date, false) + ": " + sent + " sent, " +
				failed + " failed"}));
			/* an invisible full-height band so the tooltip works on empty days too */
			g.appendChild(s("rect", {class: "band", x: x0 - slot / 2, y: M.top, width: slot,
				height: ch}));
			g.appendChild(s("rect", {class: "bar bar-sent", x: x0 - bw - 1, y: y(sent),
				width: bw, height: Math.max(0, y(0) - y(sent)), rx: 2}));
			g.appendChild(s("rect", {class: "bar bar-failed", x: x0 + 1, y: y(failed),
				width: bw, height: Math.max(0, y(0) - y(failed)), rx: 2}));
			svg.appendChild(g);
			if ((n - 1 - i) % every === 0)
				svg.appendChild(s("text", {class: "tick", x: x0, y: H - M.bottom + 18,
					"text-anchor": "middle", text: dayLabel(d.date, n <= 10 && slot >= 48)}));
		});
		if (totalSent + totalFailed === 0)
			svg.appendChild(s("text", {class: "chart-empty", x: M.left + cw / 2,
				y: M.top + ch / 2, "text-anchor": "middle",
				text: "No mail in the last " + period + " days"}));

		const legend = MB.h("ul", {class: "legend"},
			MB.h("li", null, MB.h("span", {class: "swatch swatch-sent", "aria-hidden": "true"}),
				"Sent (" + totalSent + ")"),
			MB.h("li", null, MB.h("span", {class: "swatch swatch-failed",
				"aria-hidden": "true"}), "Failed (" + totalFailed + ")"));
		return {el: MB.h("figure", {class: "chart-figure"}, svg, legend), totalSent: totalSent,
			totalFailed: totalFailed};
	};
})();
