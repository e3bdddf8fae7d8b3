"""Shared helpers for the daemon's API tests: a daemon in a temporary state directory,
HTTP over its Unix socket, WebSocket consoles, and cleanup that proves nothing was left
behind (no VMM process, socket or state file of the test's own directory).

Every wait has a deadline; every VM a test boots is killed in tearDown at the latest.
"""
import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("PVMM_BIN_DIR", os.path.join(ROOT, ".build/debug"))
PVMMD = os.path.join(BIN, "pvmmd")
PVMM = os.path.join(BIN, "pvmm")
GUEST = os.path.join(ROOT, "guests/pvos/build/pvos.elf")
PROMPT = b"pvos> "


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Reply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


def wait_until(predicate, timeout, what, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Daemon:
    """One pvmmd on its own socket and state directory under `base`."""

    def __init__(self, base, extra=(), prefix=()):
        self.base = base
        self.prefix = list(prefix)
        self.socket = os.path.join(base, "run", "pvmm.sock")
        self.state = os.path.join(base, "state")
        # A root daemon jails its VMMs by default; the suite runs once with --no-jail and
        # once (PVMM_TEST_JAIL=1) with the default, jailed, unless a test asks otherwise.
        jailed = os.environ.get("PVMM_TEST_JAIL") == "1"
        chosen = "--jail" in extra or "--no-jail" in extra
        self.extra = list(extra) + ([] if chosen or jailed or os.geteuid() != 0 else ["--no-jail"])
        self.proc = None
        self.log = os.path.join(base, "daemon.log")

    def start(self):
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.prefix + [PVMMD, "--socket", self.socket, "--state-dir", self.state] + self.extra,
                                     stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
        logf.close()
        wait_until(self._answers, 30, "the daemon's socket")
        return self

    def _answers(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"pvmmd exited with {self.proc.returncode}: {self.log_text()}")
        try:
            return self.request("GET", "/v1/ping", timeout=2).status == 200
        except OSError:
            return False

    def log_text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def request(self, method, path, body=None, headers=None, timeout=60):
        c = UnixHTTPConnection(self.socket, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            h = dict(headers or {})
            if body is not None:
                h.setdefault("Content-Type", "application/json")
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return Reply(r.status, dict(r.getheaders()), r.read())
        finally:
            c.close()

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    # Convenience calls, asserting success.
    def create(self, name, memory_mib=64, **fields):
        body = {"name": name, "kernel": GUEST, "memory_mib": memory_mib}
        body.update(fields)
        r = self.request("POST", "/v1/vms", body)
        assert r.status == 201, r
        return r.json

    def action(self, name, what, query="wait=true", expect=200):
        r = self.request("POST", f"/v1/vms/{name}/{what}?{query}")
        assert r.status == expect, (what, name, r)
        return r.json

    def vm(self, name):
        r = self.request("GET", f"/v1/vms/{name}")
        assert r.status == 200, r
        return r.json

    def logs(self, name):
        return self.request("GET", f"/v1/vms/{name}/logs").body

    def wait_prompt(self, name, timeout=30):
        wait_until(lambda: PROMPT in self.logs(name), timeout, f"{name}'s prompt")

    def vmm_pids(self):
        """VMM processes whose command line names this daemon's state directory."""
        pids = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    cmd = f.read()
                with open(f"/proc/{p}/stat") as f:
                    zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                continue
            if not zombie and self.state.encode() + b"/" in cmd and b"pvmm-vmm" in cmd and not is_jail_supervisor(int(p)):
                pids.append(int(p))
        return pids


def is_jail_supervisor(pid):
    """`pvmm-vmm --jail` forks: the parent (comm pvmm-jail) supervises the VMM."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "pvmm-jail"
    except OSError:
        return False


def vmm_process(pid):
    """The VMM process behind a VM's pid: the jail supervisor's only child, or pid itself."""
    if not is_jail_supervisor(pid):
        return pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return int(f.read().split()[0])


class DaemonTest(unittest.TestCase):
    """Each test gets a fresh daemon in a short temporary directory (control socket
    paths must fit in sun_path); tearDown kills whatever VMs remain and checks that no
    VMM process of the test outlives it."""

    daemon_args = ()
    daemon_prefix = ()

    def setUp(self):
        self.base = tempfile.mkdtemp(prefix="pvd-", dir="/tmp")
        self.daemon = Daemon(self.base, self.daemon_args, self.daemon_prefix).start()

    def tearDown(self):
        d = self.daemon
        try:
            if d.proc.poll() is None:
                for vm in d.request("GET", "/v1/vms").json:
                    if vm["state"] not in ("created", "stopped", "crashed"):
                        d.request("POST", f"/v1/vms/{vm['name']}/kill?wait=true&timeout=10")
        except Exception:
            pass
        d.stop()
        leftover = d.vmm_pids()
        for p in leftover:
            os.kill(p, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)
        self.assertEqual(leftover, [], "VMM processes outlived the test")

    def pvmm(self, *args, input=None, timeout=60, check=True):
        env = dict(os.environ, PVMM_SOCKET=self.daemon.socket)
        r = subprocess.run([PVMM] + list(args), input=input, capture_output=True, timeout=timeout, env=env)
        if check:
            self.assertEqual(r.returncode, 0, f"pvmm {' '.join(args)}: {r.stderr.decode()}")
        return r


# MARK: consoles

def ws_url(name):
    return f"ws://localhost/v1/vms/{name}/console"


async def ws_connect(daemon, name):
    import websockets.asyncio.client as wsc
    return await wsc.unix_connect(daemon.socket, ws_url(name), max_size=2 << 20)


async def ws_read_until(ws, needle, timeout=15, got=b""):
    deadline = time.monotonic() + timeout
    while needle not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {needle!r} in console output {got[-400:]!r}")
        msg = await asyncio.wait_for(ws.recv(), left)
        got += msg if isinstance(msg, bytes) else msg.encode()
    return got


_marks = iter(range(1, 1 << 30))


async def ws_command(ws, line, timeout=15):
    """Runs a shell command and returns its output: the command, then an echo of a
    fresh marker, waiting for the marker at the start of a line."""
    mark = f"done-{next(_marks)}"
    await ws.send(f"{line}\recho {mark}\r".encode())
    got = await ws_read_until(ws, b"\n" + mark.encode(), timeout)
    return got


def run(coro):
    return asyncio.run(coro)


def say(daemon, name, line):
    """Attaches to NAME's console, runs one shell command there, detaches; its output."""
    async def go():
        ws = await ws_connect(daemon, name)
        await ws_read_until(ws, PROMPT)
        out = await ws_command(ws, line)
        await ws.close()
        return out
    return run(go())


def guest_uptime(output):
    m = re.findall(rb"uptime: ([0-9.]+) s", output)
    return float(m[-1]) if m else None
