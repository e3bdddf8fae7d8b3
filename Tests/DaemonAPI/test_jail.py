"""Jailed VMMs under the daemon (`pvmm daemon --jail`, docs/security.md) and the record
of a VMM killed by its seccomp filter, jailed or not. The violation comes from the debug
build's `pvmm-vmm --seccomp-test-violation ROLE:CALL`, handed to one VM's VMM by the
daemon's test-only `--test-vmm-args NAME=ARG,ARG`."""
import os
import signal

from harness import DaemonTest, say, wait_until


def status_field(pid, name):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].split()
    return []


def cgroup_dirs(pid):
    """The v1 memory and pids cgroup directories `pid` is in."""
    dirs = []
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in ("memory", "pids"):
                if c in controllers.split(","):
                    dirs.append(f"/sys/fs/cgroup/{c}{path}")
    return dirs


class SeccompRecordTest(DaemonTest):
    daemon_args = ("--test-vmm-args", "bad=--seccomp-test-violation,vcpu:socket")

    def test_seccomp_kill_is_recorded_with_the_call_and_others_run_on(self):
        d = self.daemon
        d.create("good")
        d.create("bad")
        d.action("good", "start")
        d.wait_prompt("good")
        d.request("POST", "/v1/vms/bad/start")
        vm = wait_until(lambda: (v := d.vm("bad"))["state"] == "crashed" and v, 20, "bad to be recorded crashed")
        e = vm["last_exit"]
        self.assertEqual(e["reason"], "seccomp", e)
        self.assertEqual(e["signal"], 31, e)
        self.assertEqual(e["signal_name"], "SIGSYS", e)
        self.assertEqual(e["syscall"], "socket", e)
        self.assertEqual(e["syscall_nr"], 41, e)
        self.assertEqual(e["thread"], "vcpu0", e)
        self.assertIn(b"\nstill-here", say(d, "good", "echo still-here"))
        self.assertEqual(d.vm("good")["state"], "running")


class JailedDaemonTest(DaemonTest):
    daemon_args = ("--jail", "--test-vmm-args", "bad=--seccomp-test-violation,device:execve")

    def test_vms_run_jailed_and_leave_nothing(self):
        d = self.daemon
        d.create("a")
        vm = d.action("a", "start")
        d.wait_prompt("a")
        self.assertEqual(vm["state"], "running")
        supervisor = vm["pid"]
        with open(f"/proc/{supervisor}/task/{supervisor}/children") as f:
            children = [int(p) for p in f.read().split()]
        self.assertEqual(len(children), 1, children)
        vmm = children[0]
        self.assertEqual(status_field(vmm, "Uid")[0], "65534")
        self.assertEqual(status_field(vmm, "NSpid"), [str(vmm), "1"])
        self.assertEqual(sorted(os.listdir(f"/proc/{vmm}/root")), ["dev", "kernel"])
        groups = cgroup_dirs(vmm)
        self.assertTrue(groups and all(g.endswith(f"/pvmm-{supervisor}") for g in groups), groups)
        self.assertIn(b"\njailed-ok", say(d, "a", "echo jailed-ok"))
        stopped = d.action("a", "stop", "wait=true&timeout=30")
        self.assertEqual(stopped["state"], "stopped", stopped)
        self.assertEqual(stopped["last_exit"], {"state": "stopped", "exit_status": 0})
        # exit.json and console.log renamed into place by the supervisor; nothing else left.
        self.assertIn(b"jailed-ok", d.logs("a"))
        for g in groups:
            self.assertFalse(os.path.exists(g), g)
        left = sorted(f for f in os.listdir(os.path.join(d.state, "vms/a")) if f.startswith("."))
        self.assertEqual(left, [])

    def test_jailed_vm_snapshot_and_jailed_clone(self):
        # The daemon makes the snapshot's files and passes them: the jailed VMM writes them.
        d = self.daemon
        d.create("orig")
        d.action("orig", "start")
        d.wait_prompt("orig")
        snap = os.path.join(self.base, "snap")
        r = d.request("POST", "/v1/vms/orig/snapshot", {"path": snap})
        self.assertEqual(r.status, 200, r)
        self.assertGreater(r.json["memory_bytes"], 0)
        self.assertEqual(sorted(os.listdir(snap)), ["memory", "state"])
        self.assertIn(b"\nstill-here", say(d, "orig", "echo still-here"))
        r = d.request("POST", "/v1/vms", {"name": "clone", "restore": snap})
        self.assertEqual(r.status, 201, r)
        vm = d.action("clone", "start")
        self.assertIn(b"\nfrom-the-jailed-snapshot", say(d, "clone", "echo from-the-jailed-snapshot"))
        with open(f"/proc/{vm['pid']}/task/{vm['pid']}/children") as f:
            vmm = int(f.read().split()[0])
        self.assertEqual(status_field(vmm, "Uid")[0], "65534")

    def test_jailed_seccomp_kill_and_sigkill_are_recorded(self):
        d = self.daemon
        d.create("bad")
        d.request("POST", "/v1/vms/bad/start")
        vm = wait_until(lambda: (v := d.vm("bad"))["state"] == "crashed" and v, 20, "bad to be recorded crashed")
        e = vm["last_exit"]
        self.assertEqual((e["reason"], e["signal_name"], e["syscall"]), ("seccomp", "SIGSYS", "execve"), e)
        self.assertTrue(e["thread"].startswith("pvmm-"), e)
        # A kill of the whole process group (supervisor included): the daemon removes the
        # cgroup the supervisor could not.
        d.create("k")
        vm = d.action("k", "start")
        d.wait_prompt("k")
        supervisor = vm["pid"]
        with open(f"/proc/{supervisor}/task/{supervisor}/children") as f:
            vmm = int(f.read().split()[0])
        groups = cgroup_dirs(vmm)
        os.killpg(supervisor, signal.SIGKILL)
        vm = wait_until(lambda: (v := d.vm("k"))["state"] == "crashed" and v, 20, "k to be recorded crashed")
        self.assertEqual(vm["last_exit"]["signal"], 9, vm)
        for g in groups:
            wait_until(lambda: not os.path.exists(g), 10, f"{g} to be removed")
