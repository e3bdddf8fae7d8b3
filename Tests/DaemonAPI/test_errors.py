"""Bad input: every error class with its status and body; 1,000 malformed or random
requests; the socket's permissions."""
import json
import os
import pwd
import random
import socket
import subprocess
import threading
import time

from harness import DaemonTest, GUEST, say


class ErrorClassesTest(DaemonTest):
    def check(self, method, path, body, status, field=None, contains=None, headers=None):
        r = self.daemon.request(method, path, body, headers=headers)
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.headers.get("Content-Type"), "application/json", r.headers)
        j = r.json
        self.assertIsInstance(j["error"], str)
        self.assertTrue(j["error"])
        self.assertEqual(j.get("field"), field, j)
        if contains:
            self.assertIn(contains, j["error"])
        return j

    def test_each_error_class(self):
        d = self.daemon
        disk = os.path.join(self.base, "disk.img")
        with open(disk, "wb") as f:
            f.truncate(1 << 20)
        good = {"name": "ok", "kernel": GUEST, "memory_mib": 32, "disks": [{"path": disk}]}
        self.assertEqual(d.request("POST", "/v1/vms", good).status, 201)

        self.check("POST", "/v1/vms", b'{"name": "x", "kernel": ', 400, contains="invalid JSON")
        self.check("POST", "/v1/vms", {"name": "x", "kernel": GUEST, "colour": "red"}, 400, field="colour")
        self.check("POST", "/v1/vms", {"name": "x", "kernel": GUEST, "disks": [{"path": disk, "ro": True}]}, 400,
                   field="disks[0].ro")
        self.check("POST", "/v1/vms", {"name": "x", "kernel": GUEST, "cpus": "two"}, 400, field="cpus")
        self.check("POST", "/v1/vms", {"name": "x", "kernel": 7}, 400, field="kernel")
        self.check("POST", "/v1/vms", [1, 2], 400)
        self.check("POST", "/v1/vms", {"kernel": GUEST}, 400, field="name")
        self.check("POST", "/v1/vms", {"name": "-bad", "kernel": GUEST}, 400, field="name")
        self.check("POST", "/v1/vms", {"name": "a" * 64, "kernel": GUEST}, 400, field="name")
        self.check("POST", "/v1/vms", {"name": "Upper", "kernel": GUEST}, 400, field="name")
        self.check("POST", "/v1/vms", dict(good, disks=[]), 409, field="name")
        self.check("POST", "/v1/vms", dict(good, name="other"), 409, field="disks[0].path", contains="'ok'")
        self.check("POST", "/v1/vms", dict(good, name="other", disks=[{"path": disk, "readonly": True}]), 409,
                   field="disks[0].path")
        host_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20
        self.check("POST", "/v1/vms", {"name": "big", "kernel": GUEST, "memory_mib": host_mib + 1024}, 400,
                   field="memory_mib", contains="this host has")
        self.check("POST", "/v1/vms", {"name": "nokernel", "kernel": "/nonexistent/vmlinux"}, 400, field="kernel")
        self.check("POST", "/v1/vms", {"name": "dirkernel", "kernel": "/"}, 400, field="kernel")
        self.check("POST", "/v1/vms", {"name": "nodisk", "kernel": GUEST, "disks": [{"path": disk + ".missing"}]}, 400,
                   field="disks[0].path")
        self.check("POST", "/v1/vms", b"x" * ((1 << 20) + 1), 413)
        self.check("GET", "/v1/vms/ghost", None, 404, field="name")
        self.check("POST", "/v1/vms/ghost/start", None, 404, field="name")
        self.check("DELETE", "/v1/vms/ghost", None, 404, field="name")
        self.check("GET", "/v1/nothing", None, 404)
        j = self.check("PUT", "/v1/vms", b"{}", 405, field="method")
        r = d.request("PATCH", "/v1/vms/ok")
        self.assertEqual((r.status, r.headers.get("Allow")), (405, "GET, DELETE"))
        self.check("GET", "/v1/vms/ok/start", None, 405, field="method")
        # States that do not allow the transition: 409 naming the state.
        self.check("POST", "/v1/vms/ok/pause", None, 409, field="state", contains="created")
        self.check("POST", "/v1/vms/ok/stop", None, 409, field="state")
        self.assertEqual(d.action("ok", "start")["state"], "running")
        self.check("POST", "/v1/vms/ok/start", None, 409, field="state", contains="running")
        self.check("POST", "/v1/vms/ok/resume", None, 409, field="state")
        self.check("DELETE", "/v1/vms/ok", None, 409, field="state")
        self.check("POST", "/v1/vms/ok/stop?wait=maybe", None, 400, field="wait")
        self.check("POST", "/v1/vms/ok/stop?timeout_s=-1", None, 400, field="timeout_s")
        self.check("POST", "/v1/vms/ok/pause?wait=true&timeout=x", None, 400, field="timeout")
        d.action("ok", "kill")
        self.check("POST", "/v1/vms/ok/pause", None, 409, field="state", contains="stopped")
        self.assertEqual(d.request("DELETE", "/v1/vms/ok").status, 204)


def raw(sock_path, data, timeout=5.0, read=True):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(data)
        if not read:
            return b""
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not b:
                break
            out += b
        return out
    except (BrokenPipeError, ConnectionResetError):
        return b""
    finally:
        s.close()


class HostileClientsTest(DaemonTest):
    def test_thousand_malformed_requests_leave_it_serving(self):
        d = self.daemon
        d.create("steady")
        d.action("steady", "start")
        rng = random.Random(7)
        # Slow clients: connections that dribble a request a byte at a time all along.
        stop = threading.Event()

        def slow(i):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(d.socket)
                for b in b"GET /v1/vms HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 10000:
                    if stop.is_set():
                        break
                    s.send(bytes([b]))
                    time.sleep(0.05)
            except OSError:
                pass
            finally:
                s.close()
        slowpokes = [threading.Thread(target=slow, args=(i,)) for i in range(16)]
        for t in slowpokes:
            t.start()
        valid = b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"

        def body_req(body):
            return valid % (len(body), body)
        kinds = []
        statuses = {}
        try:
            for i in range(1000):
                k = i % 10
                kinds.append(k)
                if k == 0:    # truncated request line / head
                    req = b"GET /v1/vms HTTP/1.1\r\nHost: x\r\n\r\n"[:rng.randrange(1, 30)]
                elif k == 1:  # huge header
                    req = b"GET /v1/ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * rng.choice([70000, 200000]) + b"\r\n\r\n"
                elif k == 2:  # bad JSON
                    req = body_req(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
                elif k == 3:  # wrong types
                    field, wrong = rng.choice([
                        ("name", [1, [], {}, True, "", "a" * 300]), ("kernel", [1, [], {}, False]),
                        ("cpus", ["x", [], {}, True, 1.5, 0, -1]), ("memory_mib", ["x", [], 1.5, True, -1]),
                        ("disks", [1, "x", {}, True, [1], [{}]]), ("nets", [1, "x", {}, [1], [{}]]),
                        ("console", [1, "x", [], True]), ("irq_probe", [1, "x", [], {}])])
                    val = rng.choice(wrong)
                    req = body_req(json.dumps({"name": f"t{i}", "kernel": GUEST, field: val}).encode())
                elif k == 4:  # unknown paths and methods
                    m = rng.choice([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"BREW"])
                    p = rng.choice([b"/", b"/v2/vms", b"/v1/vms/" + b"%2e%2e/" * 3, b"/v1/vms/steady/../../etc",
                                    b"/v1/vms/a/b/c/d", b"/v1/vms/" + b"z" * 5000, b"/metrics?x=" + b"%" * 10])
                    req = m + b" " + p + b" HTTP/1.1\r\nHost: x\r\n\r\n"
                elif k == 5:  # random bytes
                    req = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
                elif k == 6:  # lying Content-Length, body never comes (closed at once)
                    req = b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"na"
                elif k == 7:  # bad chunked encoding
                    req = b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                elif k == 8:  # junk query parameters on real endpoints
                    q = rng.choice([b"wait=2", b"wait=true&timeout=-5", b"wait=1&timeout=1e999", b"wait=%zz", b"wait=yes"])
                    req = b"POST /v1/vms/steady/pause?" + q + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                else:         # a correct request in between: it must be answered correctly
                    req = b"GET /v1/vms/steady HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                out = raw(d.socket, req, timeout=5)
                status = int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.1 ") else None
                statuses.setdefault(k, []).append(status)
                self.assertFalse(status is not None and status >= 500, f"kind {k}: {req[:120]!r} -> {out[:300]!r}")
                if k == 9:
                    self.assertEqual(status, 200, out[:300])
                    self.assertIn(b'"name":"steady"', out)
        finally:
            stop.set()
            for t in slowpokes:
                t.join(10)
        for k in (2, 3, 8):
            self.assertEqual(set(statuses[k]), {400}, (k, statuses[k][:20]))
        # Still alive and answering, the VM untouched.
        self.assertEqual(d.request("GET", "/v1/ping").status, 200)
        self.assertEqual(d.proc.poll(), None)
        self.assertEqual(d.vm("steady")["state"], "running")

        self.assertIn(b"\nsurvived", say(d, "steady", "echo survived"))
        # None of the bad creates slipped through.
        self.assertEqual([v["name"] for v in d.request("GET", "/v1/vms").json], ["steady"])


class SocketPermissionTest(DaemonTest):
    USER = "pvmmtest"

    def test_socket_is_its_owners_only(self):
        d = self.daemon
        self.assertEqual(os.stat(d.socket).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.dirname(d.socket)).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(d.state).st_mode & 0o777, 0o700)
        if os.geteuid() != 0:
            self.fail("needs root to create the test user (Scripts/test runs as root)")
        try:
            pwd.getpwnam(self.USER)
            subprocess.run(["userdel", self.USER], check=False)
        except KeyError:
            pass
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", self.USER], check=True)
        try:
            # Even with the directory opened up, the socket itself refuses others.
            os.chmod(os.path.dirname(d.socket), 0o755)
            probe = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
                     "try:\n s.connect(sys.argv[1]); print('connected')\n"
                     "except PermissionError: print('denied')\n")
            r = subprocess.run(["runuser", "-u", self.USER, "--", "python3", "-c", probe, d.socket],
                               capture_output=True, timeout=30)
            self.assertEqual(r.stdout.strip(), b"denied", r)
            # The client names the problem.
            from harness import PVMM
            r = subprocess.run(["runuser", "-u", self.USER, "--", PVMM, "ls", "--socket", d.socket],
                               capture_output=True, timeout=30)
            self.assertEqual(r.returncode, 1)
            self.assertIn(b"permission denied", r.stderr)
        finally:
            subprocess.run(["userdel", self.USER], check=True)
        with self.assertRaises(KeyError):
            pwd.getpwnam(self.USER)
