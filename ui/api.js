/* mailbridge web UI: the /api/v1 client. Keeps the session's CSRF token in memory (never in
 * storage) and sends it on every call that changes something; a 401 sends the user to the
 * login page. Every answer resolves to {status, ok, data, error}: nothing throws. */
(function () {
	"use strict";
	const MB = window.MB;
	const session = {csrf: null, loggedIn: false};
	MB.session = session;

	const NETWORK = {code: "network", message: "mailbridge did not answer.",
		fix: "check that the mailbridge daemon runs and that this page's address reaches it, " +
			"then try again"};

	function fallbackError(status, method, path) {
		if (status === 404 || status === 501)
			return {code: "not_available",
				message: "This mailbridge does not offer " + method + " /api/v1/" + path +
					" yet (HTTP " + status + ").",
				fix: "update mailbridge, or use the command line (mailbridge help) for this"};
		return {code: "http_" + status, message: "mailbridge answered HTTP " + status + ".",
			fix: "see the daemon's log (journalctl -u mailbridge)"};
	}

	/* opts: {noAuthRedirect: true} for the calls that may answer 401 on purpose. */
	MB.api = async function (method, path, body, opts) {
		const o = opts || {};
		const headers = {"Accept": "application/json"};
		const init = {method: method, headers: headers, credentials: "same-origin",
			cache: "no-store", redirect: "error"};
		if (body !== undefined) {
			headers["Content-Type"] = "application/json";
			init.body = JSON.stringify(body);
		}
		if (method !== "GET" && method !== "HEAD" && session.csrf)
			headers["X-CSRF-Token"] = session.csrf;
		let resp;
		try {
			resp = await fetch("/api/v1/" + path, init);
		} catch (e) {
			return {status: 0, ok: false, data: null, error: NETWORK};
		}
		let data = null;
		try {
			const text = await resp.text();
			data = text ? JSON.parse(text) : null;
		} catch (e) {
			data = null;
		}
		const r = {status: resp.status, ok: resp.ok, data: data, error: null};
		if (!resp.ok) {
			const e = data && data.error;
			const missing = (resp.status === 404 && e && e.code === "not_found" &&
				/no such API path/i.test(e.message || "")) || resp.status === 501;
			r.error = e && !missing ? e : fallbackError(resp.status, method, path.split("?")[0]);
			r.notAvailable = missing || (resp.status === 404 && !e);
		}
		if (resp.status === 401 && !o.noAuthRedirect) {
			session.csrf = null;
			session.loggedIn = false;
			if (MB.app)
				MB.app.needLogin();
		}
		return r;
	};

	/* After login or setup: the answer holds the session's CSRF token. */
	MB.startSession = function (data) {
		session.csrf = data && data.csrf ? data.csrf : null;
		session.loggedIn = true;
	};
})();
