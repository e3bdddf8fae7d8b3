"""Snapshots through the daemon (docs/snapshot.md, docs/api.md): POST
/v1/vms/{name}/snapshot, a VM created from the snapshot ({"name", "restore"}) that resumes
it on its first start, and the pvmm client's `snapshot NAME DIR` / `create --restore`."""
import os

from harness import DaemonTest, guest_uptime, say


class SnapshotAPITest(DaemonTest):
    def test_snapshot_and_create_from_it(self):
        d = self.daemon
        d.create("orig")
        d.action("orig", "start")
        d.wait_prompt("orig")
        before = guest_uptime(say(d, "orig", "uptime"))
        snap = os.path.join(self.base, "snap")
        r = d.request("POST", "/v1/vms/orig/snapshot", {"path": snap})
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json["name"], r.json["state"]), ("orig", "running"))
        self.assertGreater(r.json["memory_bytes"], 0)
        self.assertTrue(os.path.exists(os.path.join(snap, "state")))
        # The original runs on.
        self.assertIn(b"\nstill-here", say(d, "orig", "echo still-here"))

        r = d.request("POST", "/v1/vms", {"name": "clone", "restore": snap})
        self.assertEqual(r.status, 201, r)
        self.assertEqual((r.json["state"], r.json["config"]["memory_mib"]), ("created", 64))
        d.action("clone", "start")
        out = say(d, "clone", "uptime")
        self.assertGreater(guest_uptime(out), before, out)
        self.assertIn(b"\nfrom-the-snapshot", say(d, "clone", "echo from-the-snapshot"))
        # The clone's console history starts with the original's (the snapshot's ring).
        self.assertIn(b"pvos 0.1", d.logs("clone"))
        # Stopped and started again, it boots its kernel (the snapshot was resumed once).
        d.action("clone", "kill")
        d.action("clone", "start")
        d.wait_prompt("clone")
        self.assertLess(guest_uptime(say(d, "clone", "uptime")), before + 5)

        # The client: pvmm snapshot NAME DIR, pvmm create NAME --restore DIR.
        snap2 = os.path.join(self.base, "snap2")
        out = self.pvmm("snapshot", "orig", snap2).stdout.decode()
        self.assertIn("orig: snapshot in", out)
        self.pvmm("create", "clone2", "--restore", snap2)
        d.action("clone2", "start")
        self.assertIn(b"\nclone-two", say(d, "clone2", "echo clone-two"))

    def test_bad_snapshot_requests_name_the_field(self):
        d = self.daemon
        d.create("vm")
        r = d.request("POST", "/v1/vms/vm/snapshot", {"path": "/tmp/x"})
        self.assertEqual(r.status, 409, r)  # not running
        r = d.request("POST", "/v1/vms/vm/snapshot", {"path": "relative"})
        self.assertEqual((r.status, r.json.get("field")), (400, "path"))
        r = d.request("POST", "/v1/vms/vm/snapshot", {"path": "/tmp/x", "extra": 1})
        self.assertEqual((r.status, r.json.get("field")), (400, "extra"))
        r = d.request("POST", "/v1/vms", {"name": "c", "restore": os.path.join(self.base, "none")})
        self.assertEqual((r.status, r.json.get("field")), (400, "restore"))
        bad = os.path.join(self.base, "bad")
        os.mkdir(bad)
        with open(os.path.join(bad, "state"), "wb") as f:
            f.write(b"PVMMSNAP" + b"\x01\x00\x00\x00" * 3 + b"\x00" * 40)
        r = d.request("POST", "/v1/vms", {"name": "c", "restore": bad})
        self.assertEqual((r.status, r.json.get("field")), (400, "restore"))
        self.assertIn("snapshot", r.json["error"])
        r = d.request("POST", "/v1/vms", {"name": "c", "restore": bad, "memory_mib": 64})
        self.assertEqual((r.status, r.json.get("field")), (400, "memory_mib"))
