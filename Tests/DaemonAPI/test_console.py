"""The console through the daemon: output nobody reads, replay on attach, several
clients, detach."""
import asyncio
import re

from harness import DaemonTest, PROMPT, run, say, wait_until, ws_command, ws_connect, ws_read_until

RING = 64 << 10
FLOOD = 1 << 20


class ConsoleTest(DaemonTest):
    def test_unattended_megabyte_then_attach_gets_the_last_64k(self):
        d = self.daemon
        d.create("flood")
        d.action("flood", "start")
        d.wait_prompt("flood")

        async def start_flood():
            ws = await ws_connect(d, "flood")
            await ws_read_until(ws, PROMPT)
            await ws.send(f"flood {FLOOD}\r".encode())
            await ws.close()  # nobody attached while the guest prints
        run(start_flood())
        # The guest finishes with nobody reading: its output never waited on a reader.
        wait_until(lambda: d.logs("flood").endswith(b"flood done\r\npvos> ") or d.logs("flood").endswith(b"flood done\npvos> "),
                   60, "the flood to finish")
        stats = d.request("GET", "/v1/vms/flood/metrics").json
        self.assertGreaterEqual(stats["console"]["bytes"], FLOOD)
        self.assertGreater(stats["console"]["overwritten"], FLOOD - RING - 4096)

        async def attach_two():
            a = await ws_connect(d, "flood")
            b = await ws_connect(d, "flood")
            ra = await ws_read_until(a, b"flood done")
            rb = await ws_read_until(b, b"flood done")
            ra = await ws_read_until(a, PROMPT, got=ra)
            rb = await ws_read_until(b, PROMPT, got=rb)
            # Input from one client; both see the same output.
            await a.send(b"echo seen-by-both\r")
            oa = await ws_read_until(a, b"\nseen-by-both\r\npvos> ")
            ob = await ws_read_until(b, b"\nseen-by-both\r\npvos> ")
            await a.close()
            await b.close()
            return ra, rb, oa, ob
        ra, rb, oa, ob = run(attach_two())
        self.assertEqual(ra, rb)
        self.assertEqual(oa, ob)
        # The replay is the ring: the last 64 KiB of output, whole lines of the flood in order.
        self.assertGreaterEqual(len(ra), RING - 64)
        self.assertLessEqual(len(ra), RING + 4096)
        numbers = [int(n) for n in re.findall(rb"(\d{8})\.{55}", ra)]
        # (64-byte lines, 65 on the console: the newline becomes CR LF.)
        self.assertGreater(len(numbers), (RING // 65) - 10)
        self.assertEqual(numbers, list(range(numbers[0], numbers[0] + len(numbers))))
        self.assertEqual(numbers[-1], FLOOD // 64 - 1)
        # Detaching left it running.
        self.assertEqual(d.vm("flood")["state"], "running")

    def test_console_of_a_vm_that_is_not_running(self):
        d = self.daemon
        d.create("idle")
        import websockets.exceptions

        async def refused(name):
            ws = await ws_connect(d, name)
            try:
                await asyncio.wait_for(ws.recv(), 5)
            except websockets.exceptions.ConnectionClosed as e:
                return e.rcvd.code, e.rcvd.reason
            raise AssertionError("the console was not closed")
        code, reason = run(refused("idle"))
        self.assertEqual(code, 4409)
        self.assertIn("created", reason)
        self.assertEqual(run(refused("nope"))[0], 4404)
        self.assertEqual(d.request("GET", "/v1/vms/nope/console").status, 404)
        r = self.pvmm("console", "idle", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"start it first", r.stderr)
        d.action("idle", "start")
        # A plain GET (no upgrade) is told what to do.
        r = d.request("GET", "/v1/vms/idle/console")
        self.assertEqual((r.status, r.json["field"]), (426, "upgrade"))

    def test_logs_follow_streams_new_output(self):
        d = self.daemon
        d.create("lf")
        d.action("lf", "start")
        d.wait_prompt("lf")
        import subprocess
        follow = subprocess.Popen(["curl", "-sSN", "--unix-socket", d.socket, "http://localhost/v1/vms/lf/logs?follow=true"],
                                  stdout=subprocess.PIPE)
        try:
            say(d, "lf", "echo followed-line")
            got = b""
            import select
            import time
            deadline = time.monotonic() + 10
            while b"\nfollowed-line" not in got and time.monotonic() < deadline:
                r, _, _ = select.select([follow.stdout], [], [], 0.5)
                if r:
                    got += follow.stdout.read1(65536)
            self.assertIn(b"\nfollowed-line", got)
        finally:
            follow.kill()
            follow.wait()
        # After the VM ends, logs come from what the VMM saved.
        d.action("lf", "stop")
        self.assertIn(b"followed-line", d.logs("lf"))
