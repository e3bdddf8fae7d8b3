"""Nets: the daemon opens (creates) a VM's tap and hands the VMM its fd, so the VMM never
needs CAP_NET_ADMIN. The daemon runs in a network namespace of the test's own, so the tap
and its address never touch the host's network; the namespace is deleted afterwards."""
import os
import subprocess

from harness import DaemonTest, say, vmm_process, wait_until

NS = f"pvd-net-{os.getpid()}"
TAP = "pvdtap0"


def ns(*args, check=True):
    return subprocess.run(["ip", "netns", "exec", NS] + list(args), capture_output=True, timeout=30, check=check)


class TapHandoverTest(DaemonTest):
    daemon_prefix = ("ip", "netns", "exec", NS)

    @classmethod
    def setUpClass(cls):
        subprocess.run(["ip", "netns", "add", NS], check=True)
        ns("ip", "link", "set", "lo", "up")

    @classmethod
    def tearDownClass(cls):
        subprocess.run(["ip", "netns", "delete", NS], check=False)
        assert NS not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout

    def test_tap_opened_by_the_daemon(self):
        d = self.daemon
        self.assertNotEqual(ns("ip", "link", "show", TAP, check=False).returncode, 0, "the tap exists before the VM")
        d.create("n", nets=[{"tap": TAP, "mac": "52:54:00:aa:bb:01"}], cmdline="ip=10.77.0.2/24")
        # The definition keeps the tap; only the VMM's copy says fd.
        self.assertEqual(d.vm("n")["config"]["nets"], [{"tap": TAP, "mac": "52:54:00:aa:bb:01"}])
        vm = d.action("n", "start")
        self.assertEqual(vm["state"], "running")
        pid = vmm_process(vm["pid"])
        # The daemon created the tap; the VMM holds it as fd 4 (inherited, not opened by name).
        self.assertEqual(os.readlink(f"/proc/{pid}/fd/4"), "/dev/net/tun")
        with open(f"/proc/{pid}/fdinfo/4") as f:
            self.assertIn(f"iff:\t{TAP}", f.read())
        ns("ip", "addr", "add", "10.77.0.1/24", "dev", TAP)
        ns("ip", "link", "set", TAP, "up")
        d.wait_prompt("n")
        out = say(d, "n", "ping 10.77.0.1 3")
        self.assertIn(b"reply from 10.77.0.1", out)
        r = ns("ping", "-c", "3", "-i", "0.1", "-W", "2", "10.77.0.2")
        self.assertIn(b"3 received", r.stdout)
        # A second VM may not take a tap another one holds.
        d.create("m", nets=[{"tap": TAP}])
        r = d.request("POST", "/v1/vms/m/start?wait=true")
        self.assertEqual((r.status, r.json["field"]), (409, "nets[0].tap"), r)
        self.assertEqual(d.vm("m")["state"], "created")
        d.action("n", "kill")
        # The tap was the daemon's creation, held by the VMM only: it is gone with it.
        wait_until(lambda: ns("ip", "link", "show", TAP, check=False).returncode != 0, 10, "the tap to go")

    def test_fd_nets_are_refused(self):
        r = self.daemon.request("POST", "/v1/vms", {"name": "f", "kernel": "/bin/true", "nets": [{"fd": 5}]})
        self.assertEqual((r.status, r.json["field"]), (400, "nets[0].fd"))
