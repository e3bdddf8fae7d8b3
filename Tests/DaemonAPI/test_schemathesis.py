"""schemathesis against the served OpenAPI document, through the loopback TCP listener
that only the test flag --test-tcp-port turns on: no 5xx, every response matches the
document (status, content type, headers, body schema)."""
import os
import shutil
import socket
import subprocess

from harness import DaemonTest, GUEST


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SchemathesisTest(DaemonTest):
    port = free_port()
    daemon_args = ("--test-tcp-port", str(port))

    def test_api_matches_its_openapi_document(self):
        d = self.daemon
        st = shutil.which("st") or shutil.which("schemathesis")
        self.assertIsNotNone(st, "schemathesis is missing (Scripts/test installs it)")
        # Named VMs for the path parameter, so operations reach their logic, not just 404:
        # one running (lifecycle calls act on it), one for DELETE to remove.
        d.create("sch", memory_mib=32)
        d.action("sch", "start")
        d.create("sch-del", memory_mib=32)
        config = os.path.join(self.base, "schemathesis.toml")
        with open(config, "w") as f:
            f.write('''
[parameters]
"path.name" = "sch"
# A followed log never ends; following is covered by test_console.
"query.follow" = "false"

[[operations]]
include-name = "DELETE /v1/vms/{name}"
parameters = { "path.name" = "sch-del" }

# A schema-valid definition naming a kernel or disk that does not exist on this host is
# refused with 400 naming the field: a schema cannot say which files exist.
[[operations]]
include-name = "POST /v1/vms"
checks.positive_data_acceptance.expected-statuses = [201, 400, 409]
''')
        r = subprocess.run([st, "--config-file", config, "run", f"http://127.0.0.1:{self.port}/v1/openapi.json",
                            "--checks", "all", "--max-examples", "25", "--workers", "1",
                            # Streams: the events never end; the console is a WebSocket (101), which
                            # an HTTP fuzzer cannot speak. test_console and test_lifecycle cover both.
                            "--exclude-path", "/v1/events", "--exclude-path", "/v1/vms/{name}/console",
                            "--request-timeout", "60"],
                           capture_output=True, timeout=900, cwd=self.base)
        out = r.stdout.decode(errors="replace")
        self.assertEqual(r.returncode, 0, out[-6000:])
        self.assertRegex(out, r"\d+ generated, \d+ passed")
        # Nothing it sent stopped the daemon.
        self.assertEqual(d.request("GET", "/v1/ping").status, 200)
