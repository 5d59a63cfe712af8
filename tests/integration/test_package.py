"""The Debian package: it builds, holds what it should, its payload works, lintian and
systemd-analyze accept it, and (only with MB_TEST_INSTALL_DEB=1, as root) it installs on this
system, runs, and is purged again.

usage: test_package.py BINARY [TEST-NAME...]

The package is built once, by scripts/build-deb.sh in a build tree of its own (not build/),
with -j2, unless MB_TEST_DEB names a .deb to test instead; every test then reads that .deb. Tools that are missing (lintian, systemd-analyze,
groff) make their test a skip, with the reason.
"""
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mbtest  # noqa: E402
from mbtest import SkipTest, check, cleanup_all, on_cleanup  # noqa: E402

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUDGET = 540  # seconds; CTest's TIMEOUT for integration tests is 600

# The build, shared by every test: {"deb": path, "version": ..., "error": ...}
PKG = {}

EXPECTED = {
    # path in `dpkg -c`: (mode string, link target or None)
    "./usr/sbin/mailbridge": ("-rwxr-xr-x", None),
    "./usr/sbin/sendmail": ("lrwxrwxrwx", "mailbridge"),
    "./usr/lib/sendmail": ("lrwxrwxrwx", "../sbin/mailbridge"),
    "./lib/systemd/system/mailbridge.service": ("-rw-r--r--", None),
    "./etc/mailbridge/mailbridge.conf": ("-rw-r--r--", None),
    "./usr/share/man/man8/mailbridge.8.gz": ("-rw-r--r--", None),
    "./usr/share/man/man5/mailbridge.conf.5.gz": ("-rw-r--r--", None),
    "./usr/share/man/man8/sendmail.8.gz": ("lrwxrwxrwx", "mailbridge.8.gz"),
    "./usr/share/doc/mailbridge/copyright": ("-rw-r--r--", None),
    "./usr/share/doc/mailbridge/changelog.gz": ("-rw-r--r--", None),
    "./usr/share/doc/mailbridge/examples/low-ports.conf": ("-rw-r--r--", None),
    "./usr/share/lintian/overrides/mailbridge": ("-rw-r--r--", None),
}


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, **kw)


def project_version():
    with open(os.path.join(SRC, "CMakeLists.txt")) as f:
        m = re.search(r"project\(mailbridge VERSION ([0-9.]+)", f.read())
    return m.group(1)


def build_package(workdir):
    """Builds the .deb once (or takes $MB_TEST_DEB, a package built before, such as the one
    CI publishes); records its path or the reason it could not be built."""
    if shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None:
        PKG["skip"] = "dpkg-deb is not installed (apt-get install dpkg-dev)"
        return
    version = project_version()
    arch = run(["dpkg", "--print-architecture"]).stdout.decode().strip()
    deb = os.environ.get("MB_TEST_DEB")
    if deb:
        PKG.update(version=version, arch=arch, deb=deb, log="MB_TEST_DEB=%s" % deb,
                   rc=0 if os.path.isfile(deb) else 1)
    else:
        out = os.path.join(workdir, "out")
        r = run([os.path.join(SRC, "scripts", "build-deb.sh"), "--build-dir",
                 os.path.join(workdir, "cmake"), "--out", out, "--jobs", "2"], timeout=420)
        deb = os.path.join(out, "mailbridge_%s_%s.deb" % (version, arch))
        PKG.update(version=version, arch=arch, deb=deb, log=r.stdout.decode(errors="replace"),
                   rc=r.returncode)
    if PKG["rc"] == 0 and os.path.isfile(deb):
        root = os.path.join(workdir, "root")
        run(["dpkg-deb", "-x", deb, root])
        PKG["root"] = root


def need_package():
    if "skip" in PKG:
        raise SkipTest(PKG["skip"])
    if "root" not in PKG:
        raise AssertionError("the package was not built: see the test builds")
    return PKG["deb"]


# ---- tests ----

def test_builds(binary):
    if "root" not in PKG and "skip" not in PKG:
        raise AssertionError("scripts/build-deb.sh exited %s; its output ends with:\n%s"
                             % (PKG.get("rc"), PKG.get("log", "")[-3000:]))
    deb = need_package()
    check(os.path.getsize(deb) > 10000, "%s is suspiciously small", deb)
    r = run(["dpkg-deb", "--info", deb])
    check(r.returncode == 0, "dpkg-deb --info failed: %s", r.stdout)


def test_contents(binary):
    deb = need_package()
    listing = run(["dpkg-deb", "-c", deb]).stdout.decode()
    entries = {}
    for line in listing.splitlines():
        # -rwxr-xr-x root/root 326376 2026-11-26 22:35 ./usr/sbin/mailbridge
        f = line.split(None, 5)
        if len(f) < 6:
            continue
        path, _, target = f[5].partition(" -> ")
        entries[path] = (f[0], f[1], target or None)
    for path, (mode, target) in EXPECTED.items():
        check(path in entries, "dpkg -c does not list %s:\n%s", path, listing)
        got_mode, owner, got_target = entries[path]
        check(got_mode == mode, "%s has mode %s, want %s", path, got_mode, mode)
        check(owner == "root/root", "%s belongs to %s, want root/root", path, owner)
        check(got_target == target, "%s points to %s, want %s", path, got_target, target)

    def field(name):
        return run(["dpkg-deb", "--field", deb, name]).stdout.decode().strip()
    check(field("Package") == "mailbridge", "Package: %s", field("Package"))
    check(field("Version") == PKG["version"], "Version %s, CMakeLists.txt says %s",
          field("Version"), PKG["version"])
    check(field("Architecture") == PKG["arch"], "Architecture: %s", field("Architecture"))
    for rel in ("Provides", "Conflicts", "Replaces"):
        check(field(rel) == "mail-transport-agent", "%s: %r, want mail-transport-agent",
              rel, field(rel))
    depends = field("Depends")
    for dep in ("adduser", "libc6", "libsqlite3-0", "libcurl4", "libevent-2.1-7"):
        check(re.search(r"(^|, )%s( |,|$)" % re.escape(dep), depends),
              "Depends lacks %s: %s", dep, depends)
    with open(os.path.join(extract_control(deb), "conffiles")) as f:
        conffiles = f.read().split()
    check(conffiles == ["/etc/mailbridge/mailbridge.conf"], "conffiles: %s", conffiles)


def extract_control(deb):
    d = tempfile.mkdtemp(prefix="mb-it-pkg-ctrl-")
    on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    run(["dpkg-deb", "--control", deb, d])
    return d


def test_payload_runs(binary):
    need_package()
    root = PKG["root"]
    exe = os.path.join(root, "usr", "sbin", "mailbridge")
    r = run([exe, "--version"], timeout=30)
    check(r.returncode == 0 and r.stdout.decode().strip() == "mailbridge " + PKG["version"],
          "mailbridge --version: exit %d, %r", r.returncode, r.stdout)
    # the sendmail links run the same binary, which then acts as sendmail
    for link in ("usr/sbin/sendmail", "usr/lib/sendmail"):
        r = run([os.path.join(root, link), "-bs"], timeout=30, stdin=subprocess.DEVNULL)
        check(r.returncode == 64, "%s -bs: exit %d, want 64 (EX_USAGE): %r", link,
              r.returncode, r.stdout)
        check(b"sendmail: option -bs" in r.stdout, "%s -bs said %r", link, r.stdout)
    conf = os.path.join(root, "etc", "mailbridge", "mailbridge.conf")
    r = run([exe, "config", "check", "-c", conf], timeout=30)
    check(r.returncode == 0, "the shipped config fails config check: %r", r.stdout)


def test_man_pages(binary):
    need_package()
    man = os.path.join(PKG["root"], "usr", "share", "man")
    with gzip.open(os.path.join(man, "man5", "mailbridge.conf.5.gz")) as f:
        page5 = f.read()
    generated = run([binary, "config", "man"]).stdout
    check(page5 == generated, "the packaged mailbridge.conf(5) differs from `config man`")
    with gzip.open(os.path.join(man, "man8", "mailbridge.8.gz")) as f:
        page8 = f.read()
    with open(os.path.join(SRC, "docs", "mailbridge.8"), "rb") as f:
        check(page8 == f.read(), "the packaged mailbridge.8 differs from docs/mailbridge.8")
    # every subcommand of src/main.c's table has a section in mailbridge(8)
    with open(os.path.join(SRC, "src", "main.c")) as f:
        names = re.findall(r'^\s*\{"([a-z-]+)", cli_', f.read(), re.M)
    check(len(names) >= 8, "could not read the subcommand table: %s", names)
    text8 = page8.decode()
    for name in names:
        check(re.search(r'^\.(B|BR|BI) "?%s\b' % re.escape(name.replace("-", "\\-")),
                        text8, re.M), "mailbridge(8) has no entry for the command %s", name)
    if shutil.which("groff") is None:
        raise SkipTest("groff is not installed: the pages were not rendered")
    for page in (page5, page8):
        r = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8"], input=page,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30,
                           env=dict(os.environ, LC_ALL="C.UTF-8"))
        check(r.returncode == 0 and not r.stdout, "groff warns: %s", r.stdout.decode())


def test_unit_exposure(binary):
    need_package()
    if shutil.which("systemd-analyze") is None:
        raise SkipTest("systemd-analyze is not installed")
    unit = os.path.join(PKG["root"], "lib", "systemd", "system", "mailbridge.service")
    # docs/systemd.md states 1.1; anything above 1.5 is a regression of the hardening
    r = run(["systemd-analyze", "security", "--offline=yes", "--threshold=15",
             "--no-pager", unit], timeout=60)
    out = r.stdout.decode(errors="replace")
    m = re.search(r"Overall exposure level for mailbridge.service: ([0-9.]+)", out)
    check(m is not None, "no exposure level in:\n%s", out)
    check(float(m.group(1)) <= 1.5, "exposure %s is above 1.5:\n%s", m.group(1), out)
    check(r.returncode == 0, "systemd-analyze security failed (exit %d):\n%s",
          r.returncode, out)


def test_lintian(binary):
    deb = need_package()
    if shutil.which("lintian") is None:
        raise SkipTest("lintian is not installed (apt-get install lintian)")
    r = run(["lintian", "--fail-on", "error,warning", "--info", deb], timeout=300)
    out = r.stdout.decode(errors="replace")
    tags = [l for l in out.splitlines() if re.match(r"^[EW]: ", l)]
    check(r.returncode == 0 and not tags, "lintian (exit %d):\n%s", r.returncode, out)


def other_mtas():
    """Installed packages, other than mailbridge, that provide mail-transport-agent."""
    r = run(["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Provides}\n"])
    found = []
    for line in r.stdout.decode().splitlines():
        pkg, status, provides = (line.split("\t") + ["", ""])[:3]
        if pkg != "mailbridge" and status.startswith("ii") and \
                "mail-transport-agent" in provides:
            found.append(pkg)
    return found


def test_install(binary):
    deb = need_package()
    if os.environ.get("MB_TEST_INSTALL_DEB") != "1":
        raise SkipTest("set MB_TEST_INSTALL_DEB=1 (as root) to install the package on this "
                       "system with dpkg -i and purge it again")
    if os.geteuid() != 0 or shutil.which("dpkg") is None:
        raise SkipTest("installing needs root and dpkg")
    if run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "mailbridge"]).stdout \
            .decode().startswith("ii"):
        raise SkipTest("mailbridge is already installed here; not touching it")
    mtas = other_mtas()
    if mtas:
        # dpkg -i would refuse (Conflicts: mail-transport-agent); apt would remove them.
        r = run(["apt-get", "install", "--simulate", "--yes", deb], timeout=120)
        out = r.stdout.decode(errors="replace")
        check(r.returncode == 0 and re.search(r"^Inst mailbridge ", out, re.M),
              "apt-get cannot resolve the package's dependencies:\n%s", out)
        raise SkipTest("%s provides mail-transport-agent here; mailbridge conflicts with it "
                       "as Debian's MTAs do, so it was not installed (apt-get --simulate "
                       "resolves it, replacing %s)" % (", ".join(mtas), ", ".join(mtas)))

    on_cleanup(lambda: run(["dpkg", "--purge", "mailbridge"], timeout=120))
    r = run(["dpkg", "-i", deb], timeout=300)
    check(r.returncode == 0, "dpkg -i failed:\n%s", r.stdout.decode(errors="replace"))
    r = run(["/usr/sbin/mailbridge", "--version"])
    check(r.returncode == 0 and r.stdout.decode().strip() == "mailbridge " + PKG["version"],
          "/usr/sbin/mailbridge --version: exit %d, %r", r.returncode, r.stdout)
    r = run(["/usr/sbin/sendmail", "-bs"], stdin=subprocess.DEVNULL)
    check(r.returncode == 64, "/usr/sbin/sendmail -bs: exit %d, want 64: %r", r.returncode,
          r.stdout)
    r = run(["/usr/sbin/mailbridge", "config", "check"])
    check(r.returncode == 0, "config check of the installed conffile: %r", r.stdout)
    check(run(["getent", "passwd", "mailbridge"]).returncode == 0,
          "postinst did not create the mailbridge user")
    st = os.stat("/var/lib/mailbridge")
    check(st.st_mode & 0o777 == 0o700, "/var/lib/mailbridge has mode %o", st.st_mode & 0o777)
    r = run(["dpkg", "--purge", "mailbridge"], timeout=300)
    check(r.returncode == 0, "dpkg --purge failed:\n%s", r.stdout.decode(errors="replace"))
    for path in ("/usr/sbin/mailbridge", "/usr/sbin/sendmail", "/etc/mailbridge",
                 "/var/lib/mailbridge", "/lib/systemd/system/mailbridge.service"):
        check(not os.path.lexists(path), "%s is still there after purge", path)


TESTS = [
    ("builds", test_builds),
    ("contents", test_contents),
    ("payload_runs", test_payload_runs),
    ("man_pages", test_man_pages),
    ("unit_exposure", test_unit_exposure),
    ("lintian", test_lintian),
    ("install", test_install),
]


def main():
    if len(sys.argv) < 2:
        print("usage: %s BINARY [TEST-NAME...]" % sys.argv[0])
        return 64
    binary = os.path.abspath(sys.argv[1])
    only = sys.argv[2:]
    workdir = tempfile.mkdtemp(prefix="mb-it-pkg-")

    def watchdog():
        print("WATCHDOG: the run took more than %d s; cleaning up and giving up" % BUDGET,
              flush=True)
        cleanup_all()
        shutil.rmtree(workdir, ignore_errors=True)
        os._exit(3)
    timer = threading.Timer(BUDGET, watchdog)
    timer.daemon = True
    timer.start()
    runner = mbtest.Runner()
    try:
        build_package(workdir)
        for name, fn in TESTS:
            if not only or name in only:
                runner.run(name, fn, binary)
    finally:
        cleanup_all()
        shutil.rmtree(workdir, ignore_errors=True)
        timer.cancel()
    return runner.finish()


if __name__ == "__main__":
    sys.exit(main())
