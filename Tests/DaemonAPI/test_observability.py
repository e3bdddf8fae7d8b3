"""What the daemon reports: Prometheus metrics, server-sent events, JSON log lines, and
the client's streaming commands (events, logs -f)."""
import json
import os
import re
import select
import subprocess
import time

from harness import PVMM, Daemon, DaemonTest, say


def read_until(stream, needle, timeout=15):
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {needle!r} in {got[-400:]!r}")
        r, _, _ = select.select([stream], [], [], left)
        if r:
            chunk = stream.read1(65536)
            if not chunk:
                raise AssertionError(f"stream ended before {needle!r}: {got[-400:]!r}")
            got += chunk
    return got


class ObservabilityTest(DaemonTest):
    daemon_args = ("--log-format", "json")

    def test_prometheus_metrics(self):
        d = self.daemon
        d.create("m1")
        d.create("m2")
        d.action("m1", "start")
        d.wait_prompt("m1")
        say(d, "m1", "echo counted")
        r = d.request("GET", "/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers["Content-Type"].startswith("text/plain; version=0.0.4"))
        text = r.body.decode()
        self.assertIn('pvmm_vm_state{vm="m1",state="running"} 1', text)
        self.assertIn('pvmm_vm_state{vm="m2",state="created"} 1', text)
        self.assertIn('pvmm_vm_state{vm="m2",state="running"} 0', text)
        exits = dict(re.findall(r'pvmm_vm_exits_total\{vm="m1",reason="(\w+)"\} (\d+)', text))
        self.assertGreater(int(exits["mmio"]), 0)
        self.assertRegex(text, r'pvmm_vm_console_bytes_total\{vm="m1"\} [1-9]\d*')
        self.assertRegex(text, r'pvmm_vm_device_requests_total\{vm="m1",device="con0"\} \d+')
        # The text format's rules: every sample line is NAME{LABELS} VALUE, each family
        # announced by HELP and TYPE before its samples, no family twice.
        families = []
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                families.append(line.split()[2])
            elif not line.startswith("# HELP "):
                m = re.fullmatch(r'([a-z_]+)\{([a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*)\} (\d+)', line)
                self.assertIsNotNone(m, line)
                self.assertEqual(m.group(1), families[-1], line)
        self.assertEqual(len(families), len(set(families)))
        # A stopped VM has no counters, only its state.
        d.action("m1", "stop")
        text = d.request("GET", "/metrics").body.decode()
        self.assertIn('pvmm_vm_state{vm="m1",state="stopped"} 1', text)
        self.assertNotIn('pvmm_vm_exits_total{vm="m1"', text)

    def test_server_sent_events_and_client_streams(self):
        d = self.daemon
        env = dict(os.environ, PVMM_SOCKET=d.socket)
        sse = subprocess.Popen(["curl", "-sSN", "-H", "Accept: text/event-stream", "--unix-socket", d.socket,
                                "http://localhost/v1/events"], stdout=subprocess.PIPE)
        events = subprocess.Popen([PVMM, "events"], stdout=subprocess.PIPE, env=env)
        try:
            read_until(sse.stdout, b": subscribed")
            time.sleep(0.3)  # `pvmm events` is subscribed too by now (it prints nothing first)
            d.create("ev")
            d.action("ev", "start")
            d.wait_prompt("ev")
            logs = subprocess.Popen([PVMM, "logs", "-f", "ev"], stdout=subprocess.PIPE, env=env)
            try:
                read_until(logs.stdout, b"pvos> ")
                say(d, "ev", "echo streamed-to-logs")
                read_until(logs.stdout, b"\nstreamed-to-logs")
            finally:
                logs.kill()
                logs.wait()
            d.action("ev", "stop")
            got = read_until(sse.stdout, b'"state":"stopped"')
            lines = read_until(events.stdout, b'"state":"stopped"')
        finally:
            for p in (sse, events):
                p.kill()
                p.wait()
        frames = [f for f in got.decode().split("\n\n") if f.startswith("event: state")]
        states = [json.loads(f.split("data: ", 1)[1])["state"] for f in frames]
        self.assertEqual(states[:3], ["created", "starting", "running"])
        self.assertEqual(states[-1], "stopped")
        stopped = json.loads(frames[-1].split("data: ", 1)[1])
        self.assertEqual(stopped["last_exit"], {"state": "stopped", "exit_status": 0})
        client_states = [json.loads(l)["state"] for l in lines.splitlines() if l.strip()]
        self.assertEqual(client_states[0], "created")
        self.assertEqual(client_states[-1], "stopped")

    def test_json_log_lines(self):
        d = self.daemon
        d.create("lg")
        d.action("lg", "start")
        d.action("lg", "kill")
        d.stop()
        with open(d.log) as f:
            records = [json.loads(l) for l in f if l.strip()]
        self.assertTrue(all({"ts_ns", "level", "msg"} <= r.keys() for r in records), records[:3])
        self.assertTrue(any(r["msg"] == "VM ended" and r.get("vm") == "lg" for r in records), records)
        self.daemon = Daemon(self.base).start()  # for tearDown
