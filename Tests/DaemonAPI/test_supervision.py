"""Supervision: many VMs at once, VMM and guest failures, daemon restarts."""
import os
import signal
import subprocess
import threading
import time

from harness import Daemon, DaemonTest, PROMPT, run, say, wait_until, ws_command, ws_connect, ws_read_until


def parallel(fn, items):
    """Runs fn(item) on a thread each; re-raises the first failure."""
    errors = []

    def one(i):
        try:
            fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=one, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]


class ManyVMsTest(DaemonTest):
    def test_fifty_vms_concurrently(self):
        d = self.daemon
        names = [f"vm{i:02d}" for i in range(50)]
        parallel(lambda n: d.create(n, memory_mib=32), names)

        def start(n):
            vm = d.action(n, "start", "wait=true&timeout=60")
            assert vm["state"] == "running", vm
        parallel(start, names)
        for n in names:
            d.wait_prompt(n, timeout=60)
        listed = d.request("GET", "/v1/vms").json
        self.assertEqual(sorted(v["name"] for v in listed), names)
        self.assertEqual({v["state"] for v in listed}, {"running"})
        self.assertEqual(len(d.vmm_pids()), 50)
        # Each VMM in its own session (so it outlives the daemon), not the daemon's group.
        for v in listed:
            self.assertEqual(os.getsid(v["pid"]), v["pid"])

        def stop(n):
            vm = d.action(n, "stop", "wait=true&timeout=60")
            assert vm["last_exit"] == {"state": "stopped", "exit_status": 0}, vm
        parallel(stop, names)
        parallel(lambda n: self.assertEqual(d.request("DELETE", f"/v1/vms/{n}").status, 204), names)
        self.assertEqual(d.request("GET", "/v1/vms").json, [])
        self.assertEqual(d.vmm_pids(), [])
        self.assertEqual(os.listdir(os.path.join(d.state, "vms")), [])
        # Nothing of the VMs is left anywhere under the test's directory but the daemon's own files.
        left = [os.path.join(r, f) for r, _, fs in os.walk(self.base) for f in fs]
        self.assertEqual(sorted(os.path.relpath(p, self.base) for p in left),
                         ["daemon.log", "run/pvmm.sock", "state/daemon.lock"])


class FailureTest(DaemonTest):
    def test_kill_9_of_one_vmm(self):
        d = self.daemon
        for n in ("a", "b", "c"):
            d.create(n)
            d.action(n, "start")
            d.wait_prompt(n)
        os.kill(d.vm("b")["pid"], signal.SIGKILL)
        vm = wait_until(lambda: (v := d.vm("b"))["state"] == "crashed" and v, 10, "b to be recorded crashed")
        self.assertEqual(vm["last_exit"]["signal"], 9)
        self.assertIn("killed by signal 9", vm["last_exit"]["reason"])
        self.assertIsNone(vm["pid"])
        self.assertFalse(os.path.exists(os.path.join(d.state, "vms/b/control.sock")))
        for n in ("a", "c"):
            self.assertEqual(d.vm(n)["state"], "running")

            self.assertIn(b"\nstill-here", say(d, n, "echo still-here"))
        # A crashed VM starts again.
        self.assertEqual(d.action("b", "start")["state"], "running")

    def test_guest_panic_records_the_vector(self):
        d = self.daemon
        d.create("p")
        d.action("p", "start")

        async def panic():
            ws = await ws_connect(d, "p")
            await ws_read_until(ws, PROMPT)
            await ws.send(b"panic\r")
            try:
                await ws_read_until(ws, b"never", timeout=10)
            except Exception:
                pass
        run(panic())
        vm = wait_until(lambda: (v := d.vm("p"))["state"] == "crashed" and v, 10, "the panic to be recorded")
        self.assertEqual(vm["last_exit"]["vector"], 14, vm)
        self.assertIn("rip", vm["last_exit"])

    def test_daemon_kill_9_then_new_daemon_adopts(self):
        d = self.daemon
        for n in ("run1", "run2", "idle"):
            d.create(n)
        d.action("run1", "start")
        d.action("run2", "start")
        d.action("run2", "pause")

        say(d, "run1", "echo history-before-restart")
        pids = {n: d.vm(n)["pid"] for n in ("run1", "run2")}
        d.stop(signal.SIGKILL)
        for p in pids.values():
            os.kill(p, 0)  # the VMMs outlive their daemon

        self.daemon = d2 = Daemon(self.base).start()
        listed = {v["name"]: v for v in d2.request("GET", "/v1/vms").json}
        self.assertEqual(set(listed), {"run1", "run2", "idle"})
        self.assertEqual((listed["run1"]["state"], listed["run2"]["state"], listed["idle"]["state"]),
                         ("running", "paused", "created"))
        self.assertEqual(listed["run1"]["pid"], pids["run1"])

        async def attach():
            ws = await ws_connect(d2, "run1")
            got = await ws_read_until(ws, b"history-before-restart")
            await ws_command(ws, "echo after-restart", 10)
            await ws.close()
            return got
        run(attach())
        self.assertEqual(d2.action("run2", "resume")["state"], "running")
        # Not its child: a re-adopted VMM's death is still noticed (pidfd).
        os.kill(pids["run2"], signal.SIGKILL)
        vm = wait_until(lambda: (v := d2.vm("run2"))["state"] == "crashed" and v, 10, "run2 to be recorded crashed")
        self.assertIn("without an exit record", vm["last_exit"]["reason"])
        self.assertEqual(d2.action("run1", "stop")["last_exit"], {"state": "stopped", "exit_status": 0})

    def test_sigterm_leaves_vms_running(self):
        d = self.daemon
        d.create("keep")
        d.action("keep", "start")
        pid = d.vm("keep")["pid"]
        events = subprocess.Popen(["curl", "-sSN", "--unix-socket", d.socket, "http://localhost/v1/events"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            t0 = time.monotonic()
            self.assertEqual(d.stop(signal.SIGTERM), 0)
            # An open event stream does not hold the shutdown.
            self.assertLess(time.monotonic() - t0, 4)
        finally:
            events.kill()
            events.wait()
        os.kill(pid, 0)
        self.assertFalse(os.path.exists(d.socket))
        self.daemon = d2 = Daemon(self.base).start()
        self.assertEqual(d2.vm("keep")["state"], "running")
        self.assertEqual(d2.vm("keep")["pid"], pid)
