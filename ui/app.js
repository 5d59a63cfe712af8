/* mailbridge web UI: the shell — session, hash router, navigation — and the login and
 * setup-link pages. The views live in view-*.js and register in MB.views. */
(function () {
	"use strict";
	const MB = window.MB;
	const h = MB.h;
	MB.views = MB.views || {};

	const main = document.getElementById("main");
	const nav = document.getElementById("main-nav");
	const toggle = document.getElementById("menu-toggle");
	const header = document.getElementById("sidebar");
	let gen = 0;
	let cleanups = [];
	let returnTo = null;

	/* ---- routes ---- */
	const ROUTES = [
		{re: /^login$/, view: "login", open: true},
		{re: /^setup\/(.+)$/, view: "setup", open: true},
		{re: /^dashboard$/, view: "dashboard", nav: "dashboard"},
		{re: /^connections$/, view: "connections", nav: "connections"},
		{re: /^connections\/new$/, view: "connectionNew", nav: "connections"},
		{re: /^connections\/([^/]+)$/, view: "connection", nav: "connections"},
		{re: /^settings$/, view: "settings", nav: "settings"},
		{re: /^test$/, view: "test", nav: "test"},
		{re: /^logs$/, view: "logs", nav: "logs"},
		{re: /^logs\/([^/]+)$/, view: "message", nav: "logs"},
		{re: /^doctor$/, view: "doctor", nav: "doctor"},
	];

	function parseHash() {
		const raw = location.hash.replace(/^#\/?/, "");
		const q = raw.indexOf("?");
		const path = q >= 0 ? raw.slice(0, q) : raw;
		const query = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : "");
		return {path: path, query: query};
	}

	function decode(seg) {
		try {
			return decodeURIComponent(seg);
		} catch (e) {
			return seg;
		}
	}

	MB.go = function (hash, replace) {
		if (location.hash === hash)
			render();
		else if (replace)
			location.replace(hash);
		else
			location.hash = hash;
	};

	function setNav(route) {
		const open = route ? !!route.open : !MB.session.loggedIn;
		nav.hidden = open;
		toggle.hidden = open;
		document.body.classList.toggle("logged-out", open);
		nav.querySelectorAll("a[data-nav]").forEach((a) => {
			if (route && a.dataset.nav === route.nav)
				a.setAttribute("aria-current", "page");
			else
				a.removeAttribute("aria-current");
		});
		closeMenu();
	}

	function closeMenu() {
		header.classList.remove("open");
		toggle.setAttribute("aria-expanded", "false");
	}

	function render() {
		const where = parseHash();
		if (!where.path) {
			MB.go(MB.session.loggedIn ? "#/dashboard" : "#/login", true);
			return;
		}
		if (where.path === "main")
			return; /* the skip link */
		cleanups.forEach((fn) => {
			try {
				fn();
			} catch (e) { /* a view's cleanup must not stop the next view */ }
		});
		cleanups = [];
		gen += 1;
		const mine = gen;
		let route = null, m = null;
		for (const r of ROUTES) {
			m = where.path.match(r.re);
			if (m) {
				route = r;
				break;
			}
		}
		if (route && !route.open && !MB.session.loggedIn) {
			returnTo = location.hash;
			MB.go("#/login", true);
			return;
		}
		if (route && route.view === "login" && MB.session.loggedIn) {
			MB.go("#/dashboard", true);
			return;
		}
		setNav(route);
		MB.clear(main);
		const ctx = {
			main: main,
			params: m ? m.slice(1).map(decode) : [],
			query: where.query,
			alive: () => mine === gen,
			onCleanup: (fn) => cleanups.push(fn),
			title: (t) => {
				document.title = t + " — mailbridge";
			},
		};
		const view = route ? MB.views[route.view] : notFound;
		Promise.resolve().then(() => view(ctx)).then(() => {
			if (!ctx.alive())
				return;
			const h1 = main.querySelector("h1");
			if (h1 && document.activeElement === document.body)
				h1.focus({preventScroll: true});
		}).catch((e) => {
			if (ctx.alive())
				MB.replace(main, MB.errorBox({message: "This page failed: " + e.message,
					fix: "reload the page; if it repeats, report it with the browser console's " +
						"output"}));
		});
	}

	function notFound(ctx) {
		ctx.title("Not found");
		MB.add(main, MB.pageHeader("Page not found"),
			MB.card(null, h("p", null, "There is no page at this address. "),
				MB.linkButton("Go to the dashboard", "#/dashboard", "btn btn-primary")));
	}

	MB.app = {
		needLogin: function () {
			if (parseHash().path !== "login") {
				returnTo = location.hash;
				MB.go("#/login", true);
			}
		},
	};

	function afterLogin() {
		const to = returnTo && !/^#\/(login|setup)/.test(returnTo) ? returnTo : "#/dashboard";
		returnTo = null;
		MB.go(to, true);
	}

	/* ---- login ---- */
	MB.views.login = async function (ctx) {
		ctx.title("Log in");
		const pw = MB.field({label: "Admin password", key: "password", type: "password",
			required: true, attrs: {autocomplete: "current-password"}});
		const note = h("div", {class: "auth-note"});
		const f = MB.form([pw], "Log in", async (form) => {
			form.busy(true);
			const r = await MB.api("POST", "login", {password: pw.input.value},
				{noAuthRedirect: true});
			form.busy(false);
			if (!ctx.alive())
				return;
			if (r.ok) {
				MB.startSession(r.data);
				afterLogin();
				return;
			}
			if (r.status === 401 || r.status === 429) {
				let msg = r.error.message;
				if (r.error.fix)
					msg += ". Fix: " + r.error.fix;
				pw.setError(msg);
				pw.input.select();
				pw.input.focus();
			} else {
				form.showError(r.error);
			}
		});
		MB.add(main, h("div", {class: "auth-wrap"},
			h("div", {class: "auth-brand"},
				h("img", {src: "/assets/icon.svg", alt: "", width: "48", height: "48"}),
				h("p", {class: "auth-name", text: "mailbridge"})),
			MB.card(null, h("h1", {tabindex: "-1", text: "Log in"}),
				h("p", {class: "muted", text: "Sign in to manage your Microsoft 365 mail " +
					"connections."}), note, f.form)));
		pw.input.focus();
		const s = await MB.api("GET", "setup", undefined, {noAuthRedirect: true});
		if (ctx.alive() && s.ok && s.data && s.data.needed)
			MB.add(note, MB.notice("info",
				h("p", {class: "alert-title", text: "No admin password is set yet."}),
				h("p", null, "Open the one-time setup link: ", h("code",
					{class: "nowrap", text: "mailbridge serve"}), " prints it on its terminal when started " +
					"from one; as a service it writes it to the file ",
				h("code", {text: "setup-link"}), " in its data directory (e.g. ",
				h("code", null, "/var/lib/", h("wbr"), "mailbridge/", h("wbr"),
					h("span", {class: "nowrap", text: "setup-link"})),
				", readable by its owner only)."),
				h("p", null, "Or set the password on the server with ",
					h("code", {class: "nowrap", text: "mailbridge admin password"}), ".")));
	};

	/* ---- setup link: the first admin password ---- */
	MB.views.setup = async function (ctx) {
		ctx.title("Set the admin password");
		const token = ctx.params[0];
		const box = h("div");
		MB.add(main, h("div", {class: "auth-wrap"},
			h("div", {class: "auth-brand"},
				h("img", {src: "/assets/icon.svg", alt: "", width: "48", height: "48"}),
				h("p", {class: "auth-name", text: "mailbridge"})),
			MB.card(null, h("h1", {tabindex: "-1", text: "Set the admin password"}), box)));
		MB.add(box, MB.loading());
		const s = await MB.api("GET", "setup", undefined, {noAuthRedirect: true});
		if (!ctx.alive())
			return;
		MB.clear(box);
		if (s.ok && s.data && s.data.needed === false) {
			MB.add(box, h("p", null, "An admin password is already set, so this setup link " +
				"is no longer needed."), MB.linkButton("Log in", "#/login", "btn btn-primary"));
			return;
		}
		const pw1 = MB.field({label: "New admin password", key: "password", type: "password",
			required: true, hint: "At least 12 characters. A passphrase of a few words works well.",
			attrs: {autocomplete: "new-password", minlength: "12"}});
		const pw2 = MB.field({label: "Repeat the password", key: "password2",
			type: "password", required: true, attrs: {autocomplete: "new-password"}});
		const f = MB.form([pw1, pw2], "Set password", async (form) => {
			if (pw1.input.value.length < 12) {
				pw1.setError("Use at least 12 characters.");
				pw1.input.focus();
				return;
			}
			if (pw1.input.value !== pw2.input.value) {
				pw2.setError("The two passwords differ. Type the same password twice.");
				pw2.input.focus();
				return;
			}
			form.busy(true);
			const r = await MB.api("POST", "setup", {token: token, password: pw1.input.value},
				{noAuthRedirect: true});
			form.busy(false);
			if (!ctx.alive())
				return;
			if (r.ok) {
				MB.startSession(r.data);
				MB.go("#/dashboard", true);
			} else if (r.status === 403) {
				form.showError(r.error, "This setup link is not valid.");
			} else if (r.status === 409) {
				form.showError(r.error, "An admin password is already set.");
			} else {
				form.showError(r.error);
			}
		});
		MB.add(box, h("p", {class: "muted", text: "This one-time link sets the password you " +
			"will log in with. It works once."}), f.form);
		pw1.input.focus();
	};

	/* ---- the shell ---- */
	toggle.addEventListener("click", () => {
		const open = !header.classList.contains("open");
		header.classList.toggle("open", open);
		toggle.setAttribute("aria-expanded", String(open));
	});
	nav.addEventListener("click", (ev) => {
		if (ev.target.closest("a"))
			closeMenu();
	});
	document.getElementById("logout").addEventListener("click", async () => {
		await MB.api("POST", "logout", undefined, {noAuthRedirect: true});
		MB.session.csrf = null;
		MB.session.loggedIn = false;
		MB.go("#/login", true);
	});
	document.querySelector(".skip-link").addEventListener("click", (ev) => {
		ev.preventDefault();
		main.focus();
	});
	window.addEventListener("hashchange", render);

	async function boot() {
		const r = await MB.api("GET", "session", undefined, {noAuthRedirect: true});
		if (r.ok)
			MB.startSession(r.data);
		/* any other answer: the login page tells what goes wrong when it is used */
		render();
	}
	boot();
})();
