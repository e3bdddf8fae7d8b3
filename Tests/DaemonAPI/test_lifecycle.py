"""One VM's whole life through the API: with curl alone (plus a Python WebSocket client
for the console), and through the pvmm client."""
import json
import os
import pty
import select
import subprocess
import time

from harness import (DaemonTest, GUEST, PROMPT, PVMM, run, say, wait_until, ws_command, ws_connect, ws_read_until)


class CurlLifecycleTest(DaemonTest):
    def curl(self, method, path, body=None):
        args = ["curl", "-sS", "--max-time", "60", "--unix-socket", self.daemon.socket, "-X", method,
                "-w", "\n%{http_code}", f"http://localhost{path}"]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        r = subprocess.run(args, capture_output=True, timeout=90)
        self.assertEqual(r.returncode, 0, r.stderr)
        text, _, code = r.stdout.rpartition(b"\n")
        return int(code), (json.loads(text) if text.strip() else None)

    def test_lifecycle_with_curl(self):
        code, vm = self.curl("POST", "/v1/vms", {"name": "web", "kernel": GUEST, "memory_mib": 64, "cpus": 2})
        self.assertEqual(code, 201)
        self.assertEqual((vm["state"], vm["config"]["cpus"], vm["config"]["memory_mib"]), ("created", 2, 64))
        code, vm = self.curl("POST", "/v1/vms/web/start?wait=true")
        self.assertEqual((code, vm["state"]), (200, "running"))
        self.assertIsInstance(vm["pid"], int)

        self.assertIn(b"\nhello-from-websocket", say(self.daemon, "web", "echo hello-from-websocket"))

        code, vm = self.curl("POST", "/v1/vms/web/pause?wait=true")
        self.assertEqual((code, vm["state"]), (200, "paused"))
        up1 = vm["uptime_ns"]
        time.sleep(1)
        code, vm = self.curl("GET", "/v1/vms/web")
        self.assertEqual(vm["uptime_ns"], up1, "uptime advanced while paused")

        async def input_while_paused():
            # A paused guest runs nothing: input waits until resume, then is answered.
            ws = await ws_connect(self.daemon, "web")
            await ws_read_until(ws, PROMPT)
            await ws.send(b"echo after-resume\r")
            got = b""
            try:
                import asyncio
                got = await asyncio.wait_for(ws.recv(), 0.5)
            except Exception:
                pass
            self.assertNotIn(b"\nafter-resume", got)
            code, vm = self.curl("POST", "/v1/vms/web/resume?wait=true")
            self.assertEqual((code, vm["state"]), (200, "running"))
            await ws_read_until(ws, b"\nafter-resume", got=got)
            await ws.close()
        run(input_while_paused())
        code, vm = self.curl("GET", "/v1/vms/web")
        self.assertGreater(vm["uptime_ns"], up1)

        code, vm = self.curl("POST", "/v1/vms/web/stop?wait=true")
        self.assertEqual((code, vm["state"]), (200, "stopped"))
        self.assertEqual(vm["last_exit"], {"state": "stopped", "exit_status": 0})
        self.assertIsNone(vm["pid"])
        code, _ = self.curl("DELETE", "/v1/vms/web")
        self.assertEqual(code, 204)
        code, err = self.curl("GET", "/v1/vms/web")
        self.assertEqual((code, err["field"]), (404, "name"))
        self.assertEqual(os.listdir(os.path.join(self.daemon.state, "vms")), [])

    def test_reboot_keeps_history_and_events_stream(self):
        self.daemon.create("rb")
        events = subprocess.Popen(["curl", "-sSN", "--unix-socket", self.daemon.socket, "http://localhost/v1/events"],
                                  stdout=subprocess.PIPE)
        try:
            time.sleep(0.3)
            self.daemon.action("rb", "start")
            self.daemon.wait_prompt("rb")

            say(self.daemon, "rb", "echo before-reboot")
            vm = self.daemon.action("rb", "reboot")
            self.assertEqual(vm["state"], "running")
            wait_until(lambda: self.daemon.logs("rb").count(b"pvos 0.1") >= 2, 15, "a second boot banner")
            self.assertIn(b"before-reboot", self.daemon.logs("rb"))
            self.daemon.action("rb", "kill")
        finally:
            events.terminate()
            out, _ = events.communicate(timeout=10)
        states = [json.loads(l)["state"] for l in out.splitlines() if l.strip()]
        for s in ("starting", "running", "stopped"):
            self.assertIn(s, states)
        lines = [json.loads(l) for l in out.splitlines() if l.strip()]
        self.assertTrue(all(l["vm"] == "rb" and isinstance(l["ts_ns"], int) for l in lines))


class ClientLifecycleTest(DaemonTest):
    def test_lifecycle_with_pvmm_client(self):
        out = self.pvmm("create", "cli", "--kernel", GUEST, "--memory", "64", "--cpus", "2").stdout
        self.assertEqual(out, b"cli: created\n")
        self.assertEqual(self.pvmm("start", "cli").stdout, b"cli: running\n")
        ls = self.pvmm("ls").stdout.decode().splitlines()
        self.assertEqual(ls[0].split(), ["NAME", "STATE", "CPUS", "MEMORY", "UPTIME", "LAST", "EXIT"])
        self.assertEqual(ls[1].split()[:5], ["cli", "running", "2", "64", "MiB"])
        # Columns line up: each header starts where its values start.
        self.assertEqual(ls[0].index("STATE"), ls[1].index("running"))

        # The console on a terminal: a hint, a command round trip, Ctrl-] detaches.
        master, slave = pty.openpty()
        env = dict(os.environ, PVMM_SOCKET=self.daemon.socket)
        p = subprocess.Popen([PVMM, "console", "cli"], stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        got = b""

        def read_until(needle, timeout=15):
            nonlocal got
            deadline = time.monotonic() + timeout
            while needle not in got:
                r, _, _ = select.select([master], [], [], max(0, deadline - time.monotonic()))
                if not r:
                    raise AssertionError(f"no {needle!r} in {got[-300:]!r}")
                got += os.read(master, 65536)
        try:
            read_until(b"Ctrl-] detaches")
            read_until(PROMPT)
            os.write(master, b"echo via-terminal\r")
            read_until(b"\nvia-terminal")
            os.write(master, b"\x1d")
            self.assertEqual(p.wait(timeout=10), 0)
        finally:
            if p.poll() is None:
                p.kill()
            os.close(master)
        self.assertEqual(self.daemon.vm("cli")["state"], "running", "detaching stopped the VM")

        self.assertEqual(self.pvmm("pause", "cli").stdout, b"cli: paused\n")
        self.assertIn(b"paused", self.pvmm("ls").stdout)
        self.assertEqual(self.pvmm("resume", "cli").stdout, b"cli: running\n")
        info = self.pvmm("info", "cli").stdout.decode()
        self.assertRegex(info, r"state:\s+running")
        self.assertIn("via-terminal", self.pvmm("logs", "cli").stdout.decode())
        self.assertEqual(self.pvmm("stop", "cli").stdout, b"cli: stopped (status 0)\n")
        self.assertIn("status 0", self.pvmm("ls").stdout.decode().splitlines()[1])
        self.assertEqual(self.pvmm("rm", "cli").stdout, b"cli: deleted\n")
        self.assertEqual(self.pvmm("ls").stdout.decode().splitlines()[1:], [])

    def test_client_errors(self):
        r = self.pvmm("start", "ghost", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"no VM named 'ghost'", r.stderr)
        r = self.pvmm("create", "Bad_Name", "--kernel", GUEST, check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"name", r.stderr)
        r = subprocess.run([PVMM, "ls", "--socket", os.path.join(self.base, "nothing.sock")], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"daemon is not running", r.stderr)
        self.assertIn(b"pvmm daemon --socket", r.stderr)
        # --config: the JSON definition, named by the command.
        path = os.path.join(self.base, "vm.json")
        with open(path, "w") as f:
            json.dump({"kernel": GUEST, "memory_mib": 32}, f)
        self.pvmm("create", "fromfile", "--config", path)
        self.assertEqual(self.daemon.vm("fromfile")["config"]["memory_mib"], 32)
