#!/usr/bin/env python3
"""Golden SMTP transcripts: run.py BINARY GOLDEN_DIR [--update] [NAME...]

One `mailbridge serve` is started for all transcripts (temp data_dir, free loopback ports,
smtp_hostname = mx.test and the small limits in CONFIG below). For every GOLDEN_DIR/NNN-name.in
a fresh connection is opened, the whole transcript is sent in one go (so every transcript is
also a pipelining test), and everything the server says until it closes the connection is
compared with NNN-name.ref (server replies, one line each, LF line endings).

The .in language (kept minimal on purpose):
  * every line of the file is one line on the wire: CRLF is appended to it;
  * "<LF>" inside a line is a bare LF byte, "<CR>" a bare CR byte;
  * a line that ends in "<NOEOL>" is sent without the CRLF (the marker itself is removed);
  * "<REP:N:TEXT>" is TEXT repeated N times (TEXT may not contain '>'), for long lines;
  * everything else is sent byte for byte (the files are UTF-8; non-ASCII is sent as is).
The transcript must make the server close the connection (QUIT, or too many errors);
otherwise the run fails after READ_TIMEOUT seconds.

Normalisation of the replies: the queue id after "queued as " becomes <ID>. Nothing else
varies, because smtp_hostname is fixed.

Further checks after the transcripts:
  * for every transcript with a "queued as" reply, the last queued message is read back with
    `mailbridge queue show ID --raw`: it must be exactly the transcript's last DATA content,
    dot-unstuffed, with one Received: header (and its folded lines) prepended;
  * the store holds exactly as many messages as there were "queued as" replies in total
    (a smuggled second message would show up here).

--update rewrites the .ref files from what the server says; review every change by hand
against RFC 5321 before committing it.
"""
import difflib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# free_port, dot_unstuff and strip_received are the integration tests' (tests/integration)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
from mbtest import dot_unstuff, free_port, strip_received  # noqa: E402

READ_TIMEOUT = 10.0
CONFIG = """[server]
data_dir = {data_dir}
smtp_listen = 127.0.0.1:{smtp_port}
http_listen = 127.0.0.1:{http_port}
smtp_hostname = mx.test
max_message_size = 2K
smtp_max_recipients = 3
smtp_max_errors = 5
smtp_max_line_length = 1000
"""

QUEUED_RE = re.compile(rb"(queued as )([0-9A-Za-z]+)")


def expand_line(line):
    """One .in line (bytes, no line end) -> the bytes sent."""
    eol = b"\r\n"
    if line.endswith(b"<NOEOL>"):
        line = line[: -len(b"<NOEOL>")]
        eol = b""
    line = re.sub(rb"<REP:(\d+):([^>]*)>", lambda m: m.group(2) * int(m.group(1)), line)
    line = line.replace(b"<LF>", b"\n").replace(b"<CR>", b"\r")
    return line + eol


def transcript_bytes(path):
    with open(path, "rb") as f:
        text = f.read()
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join(expand_line(l) for l in lines)


def last_data_content(wire):
    """The dot-unstuffed content of the last DATA in what the client sent, or None."""
    starts = [m.end() for m in re.finditer(rb"(?:^|\r\n)DATA\r\n", wire, re.IGNORECASE)]
    if not starts:
        return None
    rest = wire[starts[-1]:]
    if rest.startswith(b".\r\n"):
        content = b""
    else:
        end = rest.find(b"\r\n.\r\n")
        if end < 0:
            return None
        content = rest[: end + 2]
    return dot_unstuff(content)


def converse(port, wire):
    """Sends wire, returns everything received until the server closes (or raises)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
    sock.settimeout(READ_TIMEOUT)
    send_err = []

    def sender():
        try:
            sock.sendall(wire)
        except OSError as e:  # the server may close early (too many errors)
            send_err.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    got = b""
    deadline = time.monotonic() + READ_TIMEOUT
    try:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not close the connection")
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("the server did not close the connection")
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
    except TimeoutError as e:
        raise TimeoutError("%s; received so far:\n%s" % (e, got.decode("utf-8", "replace")))
    finally:
        sock.close()
        t.join(2)
    return got


def normalise(replies):
    return QUEUED_RE.sub(rb"\1<ID>", replies)


class Daemon:
    def __init__(self, binary, tmp):
        self.binary = binary
        self.data_dir = os.path.join(tmp, "var")
        self.conf = os.path.join(tmp, "mailbridge.conf")
        self.port = free_port()
        with open(self.conf, "w") as f:
            f.write(CONFIG.format(data_dir=self.data_dir, smtp_port=self.port,
                                  http_port=free_port()))
        self.log = open(os.path.join(tmp, "daemon.log"), "wb")
        self.proc = subprocess.Popen([binary, "serve", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("mailbridge serve exited with %d" % self.proc.returncode)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(2)
                    if s.recv(512).startswith(b"220 "):
                        s.sendall(b"QUIT\r\n")
                        s.recv(512)
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mailbridge serve did not start listening")
            time.sleep(0.05)

    def cli(self, command, *args):
        # options before the verb: "queue -c FILE --raw show ID"
        opts, rest = [], []
        for a in args:  # "--limit N" keeps its value with it
            (opts if a.startswith("--") or (opts and opts[-1] == "--limit" and
                                            a.isdigit()) else rest).append(a)
        return subprocess.run([self.binary, command, "-c", self.conf] + opts + rest,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    update = "--update" in sys.argv[1:]
    if len(args) < 2:
        print(__doc__)
        return 64
    binary, gdir, only = os.path.abspath(args[0]), args[1], args[2:]
    names = sorted(f[:-3] for f in os.listdir(gdir) if f.endswith(".in"))
    if only:
        names = [n for n in names if n in only or n.split("-", 1)[0] in only]
    tmp = tempfile.mkdtemp(prefix="mb-golden-")
    failures, total_queued = [], 0
    daemon = None
    try:
        daemon = Daemon(binary, tmp)
        for name in names:
            wire = transcript_bytes(os.path.join(gdir, name + ".in"))
            ref_path = os.path.join(gdir, name + ".ref")
            try:
                got = converse(daemon.port, wire)
            except (OSError, TimeoutError) as e:
                failures.append(name)
                print("FAIL %s: %s" % (name, e))
                continue
            ids = [m.group(2).decode() for m in QUEUED_RE.finditer(got)]
            total_queued += len(ids)
            actual = normalise(got).replace(b"\r\n", b"\n")
            ok = True
            if update:
                with open(ref_path, "wb") as f:
                    f.write(actual)
                print("wrote %s" % ref_path)
            else:
                try:
                    with open(ref_path, "rb") as f:
                        expected = f.read()
                except FileNotFoundError:
                    expected = b""
                if expected != actual:
                    ok = False
                    diff = difflib.unified_diff(
                        expected.decode("utf-8", "replace").splitlines(True),
                        actual.decode("utf-8", "replace").splitlines(True),
                        ref_path, "actual")
                    print("FAIL %s: replies differ\n%s" % (name, "".join(diff)))
            if ids:
                want = last_data_content(wire)
                r = daemon.cli("queue", "show", ids[-1], "--raw")
                stored = strip_received(r.stdout) if r.returncode == 0 else None
                if want is None or stored != want:
                    ok = False
                    print("FAIL %s: stored message %s differs from the sent DATA\n"
                          "  rc=%d stderr=%r\n  sent:   %r\n  stored: %r"
                          % (name, ids[-1], r.returncode, r.stderr, want, r.stdout))
            if ok:
                print("ok   %s" % name)
            else:
                failures.append(name)
        # `log` lists messages in every state (`queue list` only the pending ones)
        r = daemon.cli("log", "--json", "--limit", "1000000")
        if r.returncode != 0:
            failures.append("(log)")
            print("FAIL log: rc=%d %s" % (r.returncode, r.stderr.decode()))
        else:
            n = len(json.loads(r.stdout))
            if n != total_queued:
                failures.append("(message count)")
                print("FAIL the store holds %d messages, %d were acknowledged" % (n, total_queued))
            else:
                print("ok   the store holds exactly the %d acknowledged messages" % n)
    finally:
        if daemon:
            daemon.stop()
            if failures:
                with open(os.path.join(tmp, "daemon.log"), "rb") as f:
                    print("---- daemon log (tail) ----")
                    print(f.read().decode("utf-8", "replace")[-4000:])
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d transcripts, %d failed%s" % (len(names), len(failures),
                                           (": " + " ".join(failures)) if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
