#!/usr/bin/env python3
"""Drives the real `doppel repl` through a pseudo-terminal against a real
`doppel run` of the demo plant (copied from examples/pump-station so its
twin scripts can be edited).

Checks: attach; Tab completes a tag name; an expression is evaluated; an
edited twin file is reloaded (the notice shows at the prompt, and the new
code runs inside the twin); a runaway loop gets an error while the plant
keeps sampling; multi-line input; Ctrl-C cancels a line and stops a .watch;
Ctrl-D leaves; history is saved; -e prints or fails with the exit status.
Over TCP with TLS (a certificate the test makes with openssl): a session
with a live .watch, -e with the right CA, and clear refusals for an
untrusted certificate, a plain-text client, a wrong token, and a plant asked
to listen in plain text on an address that is not loopback.

Usage: repl_pty.py DOPPEL SOURCE_DIR. Every wait is bounded; the plant is
always stopped. With DP_TRANSCRIPT=FILE the session's text is written there.
"""
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import fcntl
import time

TIMEOUT = 20.0
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\x07")


class Fail(Exception):
    pass


class Pty:
    def __init__(self, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.raw = b""
        # The text seen so far, cleaned as it arrives: bytes that may be the
        # start of an escape sequence, a carriage return or a UTF-8 character
        # wait in `pending` until they are complete, so text already cleaned
        # never changes and match positions stay valid.
        self.clean = ""
        self.pending = b""
        self.pos = 0  # expect() searches from here

    def read_some(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            data = b""
        if not data:
            raise Fail("the repl exited; output so far:\n" + self.text())
        self.raw += data
        self.absorb(data)
        return True

    def absorb(self, data):
        buf = self.pending + data
        cut = len(buf)
        esc = buf.rfind(b"\x1b")
        if esc >= 0 and not ANSI.match(buf, esc) and len(buf) - esc < 32:
            cut = esc
        if buf[:cut].endswith(b"\r"):
            cut -= 1
        # Do not split a UTF-8 character.
        back = 0
        while back < 4 and cut - back - 1 >= 0 and (buf[cut - back - 1] & 0xC0) == 0x80:
            back += 1
        if cut - back - 1 >= 0 and buf[cut - back - 1] >= 0xC0:
            cut = cut - back - 1
        self.pending = buf[cut:]
        text = ANSI.sub(b"", buf[:cut]).decode("utf-8", "replace")
        # A lone carriage return (a redraw from the line's start) joins what
        # follows to what came before.
        self.clean += re.sub(r"\r(?!\n)", "", text)

    def text(self):
        return self.clean

    def expect(self, pattern, what):
        """Waits until pattern (a regex) appears after the last match."""
        deadline = time.time() + TIMEOUT
        rx = re.compile(pattern)
        while True:
            clean = self.text()
            m = rx.search(clean, self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.time()
            if left <= 0:
                raise Fail("timed out waiting for %s (%r); output since the last match:\n%s"
                           % (what, pattern, clean[self.pos:]))
            self.read_some(min(left, 0.5))

    def prompt(self):
        """Waits for the next prompt: keys typed before it could reach the
        terminal while it is not in editing mode (a Ctrl-D would be lost)."""
        return self.expect(r"pump-station(:\w+)?> ", "a prompt")

    def send(self, s):
        os.write(self.fd, s.encode())

    def wait_exit(self):
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                return os.waitstatus_to_exitcode(status)
            try:
                self.read_some(0.1)
            except Fail:
                pass
        raise Fail("the repl did not exit")

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def tls_checks(doppel, work, env, token):
    m = re.search(r"TCP 127\.0\.0\.1:0 \(port (\d+)\), TLS, token required",
                  open(os.path.join(work, "run.log")).read())
    if not m:
        raise Fail("doppel run did not say it listens with TLS:\n" +
                   open(os.path.join(work, "run.log")).read())
    addr = "127.0.0.1:" + m.group(1)
    tenv = dict(env, PWD=work, DOPPEL_REPL_TOKEN=token)

    # An interactive session over TLS: changes stream in while the prompt
    # waits for keys, and Ctrl-C still stops the watch.
    term = Pty([doppel, "repl", "--connect", addr, "--ca", "plant.crt"], tenv)
    try:
        term.expect(r"attached to plant pump-station", "the banner over TLS")
        term.prompt()
        term.send(".watch P101.flow\r")
        term.expect(r"[0-9:.]+Z P101\.flow = [0-9.]+ m3/h", "a live change over TLS")
        term.expect(r"[0-9:.]+Z P101\.flow = [0-9.]+ m3/h", "another live change over TLS")
        term.send("\x03")
        term.expect(r"\(watch stopped after [0-9]+ changes?\)", "the end of the watch over TLS")
        term.prompt()
        term.send("2 ^ 10\r")
        term.expect(r"\r\n1024\.0\r\n", "an evaluation over TLS")
        term.prompt()
        term.send("\x04")
        if term.wait_exit() != 0:
            raise Fail("the TLS session did not exit cleanly")
    except Fail as e:
        raise Fail("%s\n--- the TLS session ---\n%s" % (e, term.text()[-2000:]))
    finally:
        term.kill()

    def run(args, extra_env=None):
        return subprocess.run([doppel] + args, cwd=work, capture_output=True, text=True,
                              timeout=TIMEOUT, env=dict(tenv, **(extra_env or {})))

    r = run(["repl", "--connect", addr, "--ca", "plant.crt", "-e", "P101.flow.unit"])
    if r.returncode != 0 or r.stdout.strip() != '"m3/h"':
        raise Fail("-e over TLS: status %d, output %r %r" % (r.returncode, r.stdout, r.stderr))
    r = run(["repl", "--connect", addr, "--ca", "other.crt", "-e", "1"])
    if r.returncode != 1 or "certificate is not trusted" not in r.stderr:
        raise Fail("untrusted certificate: status %d, output %r" % (r.returncode, r.stderr))
    r = run(["repl", "--connect", addr, "-e", "1"])
    if r.returncode != 1 or "add --ca CERT or --tls" not in r.stderr:
        raise Fail("plain text to TLS: status %d, output %r" % (r.returncode, r.stderr))
    r = run(["repl", "--connect", addr, "--ca", "plant.crt", "-e", "1"],
            {"DOPPEL_REPL_TOKEN": "wrong"})
    if r.returncode != 1 or "wrong token" not in r.stderr:
        raise Fail("wrong token over TLS: status %d, output %r" % (r.returncode, r.stderr))
    # Plain text to a host that is not this one: refused before the token leaves.
    r = run(["repl", "--connect", "192.0.2.1:7070", "-e", "1"])
    if r.returncode != 1 or "is not a loopback address: the token would travel in clear" \
            not in r.stderr:
        raise Fail("plain text to a remote host: status %d, output %r" % (r.returncode, r.stderr))
    r = run(["repl", "--ca", "plant.crt", "-e", "1"])
    if r.returncode != 2 or "need --connect" not in r.stderr:
        raise Fail("--ca without --connect: status %d, output %r" % (r.returncode, r.stderr))
    # Plain text is for loopback only; a certificate needs a listener.
    r = run(["run", "--data-dir", "d2", "--for", "1s", "--repl-listen", "0.0.0.0:0",
             "ps/plant.lua"])
    if r.returncode != 1 or "is not a loopback address: it needs TLS" not in r.stderr:
        raise Fail("plain text on 0.0.0.0: status %d, output %r" % (r.returncode, r.stderr))
    r = run(["run", "--data-dir", "d2", "--for", "1s", "--repl-cert", "plant.crt",
             "--repl-key", "plant.key", "ps/plant.lua"])
    if r.returncode != 1 or "add --repl-listen" not in r.stderr:
        raise Fail("--repl-cert alone: status %d, output %r" % (r.returncode, r.stderr))
    r = run(["run", "--data-dir", "d2", "--for", "1s", "--repl-listen", "127.0.0.1:0",
             "--repl-cert", "plant.crt", "--repl-key", "other.key", "ps/plant.lua"])
    if r.returncode != 1 or "cannot load key other.key: key values mismatch" not in r.stderr:
        raise Fail("mismatched key: status %d, output %r" % (r.returncode, r.stderr))
    print("ok: doppel repl over TLS (session, -e, refusals)")


def main():
    doppel = os.path.realpath(sys.argv[1])
    src = sys.argv[2]
    work = tempfile.mkdtemp(prefix="doppel-repl-")
    plant = None
    term = None
    ok = False
    try:
        shutil.copytree(os.path.join(src, "examples/pump-station"), os.path.join(work, "ps"))
        data = os.path.join(work, "d")
        for name, cn, san in (("plant", "127.0.0.1", "IP:127.0.0.1"), ("other", "other",
                                                                       "DNS:other")):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                            "/CN=" + cn, "-addext", "subjectAltName=" + san, "-keyout",
                            name + ".key", "-out", name + ".crt"], cwd=work, check=True,
                           capture_output=True, timeout=TIMEOUT)
        log = open(os.path.join(work, "run.log"), "wb")
        token = "t0ken-for-the-test"
        plant = subprocess.Popen([doppel, "run", "--data-dir", "d", "ps/plant.lua",
                                  "--repl-listen", "127.0.0.1:0", "--repl-cert", "plant.crt",
                                  "--repl-key", "plant.key"], cwd=work, stdout=log,
                                 stderr=subprocess.STDOUT,
                                 env=dict(os.environ, DOPPEL_REPL_TOKEN=token))
        sock = os.path.join(data, "repl.sock")
        deadline = time.time() + TIMEOUT
        while not os.path.exists(sock):
            if plant.poll() is not None or time.time() > deadline:
                raise Fail("the plant did not start its REPL socket:\n" +
                           open(os.path.join(work, "run.log")).read())
            time.sleep(0.05)
        if os.stat(sock).st_mode & 0o777 != 0o600:
            raise Fail("socket mode is %o, expected 600" % (os.stat(sock).st_mode & 0o777))
        # The line is logged just after the socket is bound.
        want = "REPL listening on d/repl.sock: attach with `doppel repl --data-dir d`"
        while want not in open(os.path.join(work, "run.log")).read():
            if time.time() > deadline:
                raise Fail("doppel run did not print the socket path:\n" +
                           open(os.path.join(work, "run.log")).read())
            time.sleep(0.05)

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work, "TERM": "xterm",
               "DOPPEL_HISTORY": os.path.join(work, "history"), "LANG": "C.UTF-8",
               "NO_COLOR": "1"}
        # The repl runs in the work dir: its data dir "d" is relative.
        os.chdir(work)
        term = Pty([doppel, "repl", "--data-dir", "d"], dict(env, PWD=work))

        term.expect(r"attached to plant pump-station", "the banner")
        term.expect(r"pump-station> ", "the first prompt")

        # Tab completes a tag name (we type only "P101.fl").
        term.send("P101.fl\t")
        term.expect(r"P101\.flow", "the completed tag name")
        term.send("\r")
        term.expect(r"P101\.flow = [0-9.]+ m3/h \(good, [0-9.]+ m?s ago\)", "the tag's value")
        term.expect(r"pump-station> ", "a prompt")

        # Tab on an ambiguous prefix lists the candidates.
        term.send("P102.\t")
        term.expect(r"P102\.bep_ratio +P102\.efficiency", "the list of P102's tags")
        term.send("\x15")  # Ctrl-U: clear the line
        term.send("P102.flow.value > 0 and P102.flow.unit\r")
        term.expect(r'"m3/h"', "an evaluated expression")

        # Edit a twin file: the reload notice shows at the prompt, and the new
        # code runs inside the twin.
        term.prompt()
        with open(os.path.join(work, "ps/station.lua"), "a") as f:
            f.write('\nfunction greeting() return "hello from the new version" end\n')
        term.expect(r"\[station\] reloaded ps/station\.lua in [0-9.]+ ms, state kept",
                    "the reload notice")
        term.send(".use station\r")
        term.expect(r"pump-station:station> ", "the twin prompt")
        term.send("greeting()\r")
        term.expect(r'"hello from the new version"', "the reloaded function's result")
        term.prompt()
        term.send(".use plant\r")
        term.expect(r"pump-station> ", "the plant prompt")

        # A runaway loop gets an error; the plant keeps sampling.
        term.send("t0 = P101.flow.ts\r")
        term.expect(r"pump-station> ", "a prompt")
        term.send("while true do end\r")
        term.expect(r"stopped: instruction budget of [0-9]+ exceeded at repl:1 "
                    r"\(the plant keeps running\)", "the budget error")
        term.prompt()
        deadline = time.time() + TIMEOUT
        while True:
            term.send("P101.flow.ts > t0\r")
            m = term.expect(r"\r\n(true|false)\r\n", "a comparison")
            term.prompt()
            if m.group(1) == "true":
                break
            if time.time() > deadline:
                raise Fail("the plant stopped sampling after the runaway loop")
            time.sleep(0.3)

        # Multi-line input continues like the standalone lua.
        term.send("for i = 1, 2 do\r")
        term.expect(r">> ", "the continuation prompt")
        term.send("print('line', i)\r")
        term.expect(r">> ", "the continuation prompt")
        term.send("end\r")
        term.expect(r"line\t1\r\nline\t2", "the loop's print output")
        term.prompt()

        # Ctrl-C cancels the line being typed (even an unfinished chunk).
        term.send("function f(\r")
        term.expect(r">> ", "the continuation prompt")
        term.send("\x03")
        term.expect(r"\^C", "the cancelled line")
        term.prompt()
        term.send("6 * 7\r")
        term.expect(r"\r\n42\r\n", "evaluation after Ctrl-C")
        term.prompt()

        # .watch shows changes until Ctrl-C.
        term.send(".watch P101.flow\r")
        term.expect(r"\(watching 1 tag; Ctrl-C stops\)", "the watch header")
        term.expect(r"[0-9:.]+Z P101\.flow = [0-9.]+ m3/h", "a live change")
        term.send("\x03")
        term.expect(r"\(watch stopped after [0-9]+ changes?\)", "the end of the watch")
        term.prompt()
        term.send(".help\r")
        term.expect(r"\.write TAG VALUE", "the help")
        term.expect(r"Ctrl-D leaves\.", "the end of the help")
        term.prompt()

        # Ctrl-D leaves; the history was saved.
        term.send("\x04")
        status = term.wait_exit()
        if status != 0:
            raise Fail("the repl exited with status %d" % status)
        hist = open(os.path.join(work, "history"), encoding="utf-8", errors="replace").read()
        if "P101.flow" not in hist or "greeting()" not in hist:
            raise Fail("the history file lacks the session's lines:\n" + hist)

        # -e for scripts.
        r = subprocess.run([doppel, "repl", "--data-dir", "d", "-e", "P101.flow.unit"], cwd=work,
                           capture_output=True, text=True, timeout=TIMEOUT)
        if r.returncode != 0 or r.stdout.strip() != '"m3/h"':
            raise Fail("-e: status %d, output %r %r" % (r.returncode, r.stdout, r.stderr))
        r = subprocess.run([doppel, "repl", "--data-dir", "d", "-e", "error('no')"], cwd=work,
                           capture_output=True, text=True, timeout=TIMEOUT)
        if r.returncode != 1 or "repl:1: no" not in r.stderr:
            raise Fail("-e error: status %d, output %r %r" % (r.returncode, r.stdout, r.stderr))
        r = subprocess.run([doppel, "repl", "extra"], capture_output=True, text=True,
                           timeout=TIMEOUT, cwd=work)
        if r.returncode != 2 or "unexpected argument \"extra\"" not in r.stderr:
            raise Fail("extra argument: status %d, output %r" % (r.returncode, r.stderr))
        r = subprocess.run([doppel, "repl", "--data-dir", "nowhere", "-e", "1"],
                           capture_output=True, text=True, timeout=TIMEOUT)
        if r.returncode != 1 or "no plant is running with data dir \"nowhere\"" not in r.stderr:
            raise Fail("no plant: status %d, output %r" % (r.returncode, r.stderr))

        tls_checks(doppel, work, env, token)

        # The plant ran on: its station line and no error from the REPL's fault.
        plant.send_signal(signal.SIGTERM)
        if plant.wait(timeout=TIMEOUT) != 0:
            raise Fail("doppel run exited with an error")
        if os.path.exists(sock):
            raise Fail("the socket was not removed at exit")
        ok = True
        print("ok: doppel repl through a pty (%d bytes of session)" % len(term.raw))
    except Fail as e:
        print("FAIL: %s" % e)
        if term is not None:
            print("--- the session so far ---")
            print(term.text()[-4000:])
        print("--- plant log ---")
        try:
            print(open(os.path.join(work, "run.log")).read()[-3000:])
        except OSError:
            pass
    finally:
        if term is not None:
            if os.environ.get("DP_TRANSCRIPT"):
                with open(os.environ["DP_TRANSCRIPT"], "w") as f:
                    f.write(term.text())
            term.kill()
        if plant is not None and plant.poll() is None:
            plant.kill()
            plant.wait()
        os.chdir("/")
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
