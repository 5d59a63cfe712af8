/* mailbridge web UI: labelled form fields, with their errors shown next to them. */
(function () {
	"use strict";
	const MB = window.MB;
	const h = MB.h;

	/* One field. o: {label, key (the API field name), type, value, hint, required, options:
	 * [[value, text]...] for a select, attrs}. Returns {el, input, key, setError}. */
	MB.field = function (o) {
		const id = MB.uid("f");
		const hintId = id + "-hint", errId = id + "-err";
		const described = [o.hint ? hintId : null, errId].filter(Boolean).join(" ");
		let input;
		const base = Object.assign({id: id, name: o.key, "aria-describedby": described},
			o.attrs || {});
		if (o.type === "select") {
			input = h("select", base, (o.options || []).map((op) =>
				h("option", {value: op[0], selected: String(op[0]) === String(o.value ?? "")},
					op[1])));
		} else if (o.type === "textarea") {
			input = h("textarea", Object.assign(base, {rows: o.rows || 4}));
			input.value = o.value ?? "";
		} else if (o.type === "checkbox") {
			input = h("input", Object.assign(base, {type: "checkbox", checked: !!o.value}));
		} else {
			input = h("input", Object.assign(base, {type: o.type || "text"}));
			input.value = o.value ?? "";
		}
		if (o.required)
			input.required = true;
		const err = h("p", {class: "field-error", id: errId, hidden: true});
		const hint = o.hint ? h("p", {class: "hint", id: hintId}, o.hint) : null;
		const label = h("label", {for: id, text: o.label});
		const el = o.type === "checkbox"
			? h("div", {class: "field field-check"}, input, label, hint, err)
			: h("div", {class: "field"}, label, input, hint, err);
		const f = {el: el, input: input, key: o.key, label: o.label};
		f.setError = function (msg) {
			err.textContent = msg || "";
			err.hidden = !msg;
			if (msg)
				input.setAttribute("aria-invalid", "true");
			else
				input.removeAttribute("aria-invalid");
		};
		f.value = function () {
			if (o.type === "checkbox")
				return input.checked;
			return input.value.trim();
		};
		return f;
	};

	/* A form's fields as a map key -> field, and its shared error area. */
	MB.form = function (fields, submitLabel, onSubmit, extra) {
		const status = h("div", {class: "form-status", "aria-live": "polite"});
		const submit = h("button", {type: "submit", class: "btn btn-primary"}, submitLabel);
		const form = h("form", {class: "form", novalidate: true},
			fields.map((f) => (f instanceof Node ? f : f.el)),
			extra || null,
			h("div", {class: "form-actions"}, submit), status);
		const map = {};
		fields.forEach((f) => {
			if (f && f.key)
				map[f.key] = f;
		});
		const api = {form: form, fields: map, status: status, submit: submit};
		api.clearErrors = function () {
			Object.values(map).forEach((f) => f.setError(null));
			MB.clear(status);
		};
		/* The browser's own checks (required, type=email, ...), shown next to each field. */
		api.validate = function () {
			let first = null;
			Object.values(map).forEach((f) => {
				if (!f.input.checkValidity()) {
					f.setError(f.input.validationMessage);
					first = first || f.input;
				}
			});
			if (first)
				first.focus();
			return !first;
		};
		/* A 400/409 answer: next to the field the message names, else above the button. */
		api.showError = function (err, title) {
			const e = err || {};
			const text = (e.message || "") + " ";
			const f = Object.values(map).find((x) =>
				new RegExp("(^|[^a-z_])" + x.key + "([^a-z_]|$)", "i").test(text) ||
				(x.label && text.toLowerCase().indexOf(x.label.toLowerCase()) >= 0));
			if (f && (e.code === "invalid" || e.code === "exists" || e.code === "bad_request")) {
				f.setError(e.message + (e.fix ? " Fix: " + e.fix : ""));
				f.input.focus();
				MB.replace(status, MB.h("p", {class: "error-text",
					text: "Check the field “" + f.label + "”."}));
			} else {
				MB.replace(status, MB.errorBox(e, title, false));
			}
		};
		api.busy = function (on, label) {
			submit.disabled = on;
			if (on && label)
				MB.replace(status, h("p", {class: "muted", text: label}));
		};
		form.addEventListener("submit", (ev) => {
			ev.preventDefault();
			api.clearErrors();
			if (!api.validate())
				return;
			onSubmit(api);
		});
		return api;
	};

	/* Splits "a@x, b@y; c@z" into addresses. */
	MB.splitAddrs = function (s) {
		return String(s || "").split(/[\s,;]+/).map((x) => x.trim()).filter(Boolean);
	};

	MB.isAddr = function (s) {
		return /^[^\s@<>()]+@[^\s@<>()]+\.[^\s@<>()]+$/.test(s);
	};
})();
