"""What the stand-ins' self-tests (tests/peers/{idp,graph,smtp}/selftest.py) share: the tally
of checks, the test CA and server certificate (openssl CLI), `npm ci`, starting a server.js and
reading its JSON ready line, stopping a server by PID, and the closing summary.

Python stdlib only; not a test itself. Each selftest.py puts this folder on sys.path first, so
`python3 tests/peers/NAME/selftest.py [-v]` works from any directory.
"""
import json
import os
import signal
import subprocess
import sys
import threading

VERBOSE = '-v' in sys.argv

passed = 0
failed = 0
failures = []  # names of the failed checks


def check(name, cond, detail=''):
    """Counts one check (printed when it fails, or always with -v); returns cond."""
    global passed, failed
    if cond:
        passed += 1
        if VERBOSE:
            print(f'ok   {name}')
    else:
        failed += 1
        failures.append(name)
        print(f'FAIL {name} {detail}'[:2000])
    return cond


def finish(list_failures=False):
    """Prints "N passed, M failed" (and, with list_failures and without -v, the names of the
    failed checks) and exits non-zero on failure."""
    print(f'{passed} passed, {failed} failed')
    if list_failures and failures and not VERBOSE:
        print('failed: ' + '; '.join(failures)[:2000])
    sys.exit(1 if failed else 0)


def run_main(main):
    """Runs main(), a crash counting as a failed check rather than a traceback-only exit, then
    finish()."""
    try:
        main()
    except Exception as e:  # a crash is a failure, not a traceback-only exit
        import traceback
        traceback.print_exc()
        check('selftest ran to completion', False, repr(e))
    finish()


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, **kw)


def make_certs(d):
    """A test CA and a server certificate for 127.0.0.1/localhost signed by it, in directory d.
    Returns (ca.pem, server.pem, server.key)."""
    ca_key, ca_pem = os.path.join(d, 'ca.key'), os.path.join(d, 'ca.pem')
    key, csr, pem = os.path.join(d, 'server.key'), os.path.join(d, 'server.csr'), os.path.join(d, 'server.pem')
    ext = os.path.join(d, 'ext.cnf')
    run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', ca_key, '-out', ca_pem,
         '-days', '2', '-subj', '/CN=mailbridge test CA',
         '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
    run(['openssl', 'req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=127.0.0.1'])
    with open(ext, 'w') as f:
        f.write('subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n'
                'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n')
    run(['openssl', 'x509', '-req', '-in', csr, '-CA', ca_pem, '-CAkey', ca_key, '-CAcreateserial',
         '-out', pem, '-days', '2', '-extfile', ext])
    return ca_pem, pem, key


def npm_ci(d):
    """`npm ci` in d when its node_modules is missing."""
    if not os.path.isdir(os.path.join(d, 'node_modules')):
        print(f'running npm ci in {d} ...')
        subprocess.run(['npm', 'ci', '--no-audit', '--no-fund'], cwd=d, check=True, timeout=300)


def start_server(cmd, stderr, cwd=None, wait=30):
    """Starts cmd (its stderr to the open file stderr) and waits up to `wait` s for its ready
    line. Returns (Popen, the ready line's fields: {} if none came, {'_bad': line} if not JSON)."""
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=stderr, text=True)
    ready = {}

    def read_ready():
        line = p.stdout.readline()
        try:
            ready.update(json.loads(line))
        except ValueError:
            ready['_bad'] = line

    t = threading.Thread(target=read_ready, daemon=True)
    t.start()
    t.join(wait)
    return p, ready


def stop(p):
    """SIGTERM, then SIGKILL after 10 s; nothing when p is None or has exited."""
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
