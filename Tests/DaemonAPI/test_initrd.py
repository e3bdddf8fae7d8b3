"""The `initrd` field of a VM definition: checked at create (400 naming it), passed to
the VMM, read by the guest as PVH module 0; `pvmm create --initrd` sends it."""
import os
import re

from harness import DaemonTest, GUEST, say


def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


class InitrdTest(DaemonTest):
    def write(self, name, data):
        path = os.path.join(self.base, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def bad(self, body, contains):
        r = self.daemon.request("POST", "/v1/vms", body)
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json.get("field"), "initrd", r.json)
        self.assertIn(contains, r.json["error"])

    def test_bad_initrds_are_400_naming_the_field(self):
        base = {"name": "x", "kernel": GUEST, "memory_mib": 32}
        self.bad(dict(base, initrd="/nonexistent/initrd.img"), "No such file")
        self.bad(dict(base, initrd=self.base), "not a regular file")
        self.bad(dict(base, initrd=self.write("empty", b"")), "is empty")
        big = os.path.join(self.base, "big")
        with open(big, "wb") as f:
            f.truncate((32 << 20) + 1)  # sparse
        self.bad(dict(base, initrd=big), "larger than guest RAM")
        self.bad(dict(base, initrd=7), "expected a string")
        self.bad(dict(base, initrd=""), "empty path")
        self.assertEqual(self.daemon.request("GET", "/v1/vms").json, [])

    def test_the_guest_reads_it(self):
        data = os.urandom(200_003)
        path = self.write("initrd.bin", data)
        vm = self.daemon.create("withinitrd", initrd=path)
        self.assertEqual(vm["config"]["initrd"], path)
        self.daemon.action("withinitrd", "start")
        self.daemon.wait_prompt("withinitrd")
        out = say(self.daemon, "withinitrd", "info").decode(errors="replace")
        m = re.search(r"initrd: (\d+) bytes at 0x([0-9a-f]+), fnv1a 0x([0-9a-f]{16})", out)
        self.assertIsNotNone(m, out)
        self.assertEqual(int(m.group(1)), len(data))
        self.assertEqual(int(m.group(3), 16), fnv1a(data), "the guest read other bytes")
        self.assertEqual(int(m.group(2), 16) % 4096, 0)
        # Without one the definition has no initrd key and the guest sees none.
        self.assertNotIn("initrd", self.daemon.create("without")["config"])

    def test_one_that_does_not_fit_next_to_the_kernel_fails_the_start(self):
        big = os.path.join(self.base, "big")
        with open(big, "wb") as f:
            f.truncate(31 << 20)  # <= memory, but not above the kernel
        self.daemon.create("tight", memory_mib=32, initrd=big)
        r = self.daemon.request("POST", "/v1/vms/tight/start?wait=true")
        vm = self.daemon.vm("tight")
        self.assertEqual(vm["state"], "crashed", (r, vm))
        self.assertIn("initrd", vm["last_exit"]["reason"])
        self.assertIn("do not fit in guest RAM", vm["last_exit"]["reason"])

    def test_pvmm_create_takes_the_flag(self):
        path = self.write("initrd.bin", b"\x01" * 5000)
        self.pvmm("create", "fromflags", "--kernel", GUEST, "--initrd", path, "--memory", "32")
        self.assertEqual(self.daemon.vm("fromflags")["config"]["initrd"], path)
        r = self.pvmm("create", "missing", "--kernel", GUEST, "--initrd", "/nonexistent/i", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"initrd", r.stderr)
