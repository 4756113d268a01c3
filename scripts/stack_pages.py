#!/usr/bin/env python3
"""Stack pages a stream keeps resident, checked against limits (no timing).

At 1,000 concurrent streams every KB a streaming thread keeps is a MB of the
proxy's memory (BENCHMARKS.md, "Memory at 1,000 streams"). This opens
`--streams` slow streams through a release build of the proxy (mock
upstream, an event every 50 ms) and, while they run, reads
/proc/PID/smaps: the resident size of each worker stack (512 KiB mappings)
and each connection thread stack (256 KiB). A thread keeps every page it
touched, so the figures are page counts, the same from run to run; they
grow when a frame on a stream's path grows (a larger local, an inlined
call), which is what this catches.

    scripts/stack_pages.py --proxy target/release/llm-proxy \\
        --mock target/release/llm-proxy-mock [--worker-kb 12] [--connection-kb 8]

Fails (exit 1) when the median stack of either kind is over its limit, or
any is more than one page over it. Loopback only; stops what it starts.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from mem1000 import CONFIG, free_port, is_thread_stack, mappings, request_bytes, wait_listening


def stacks(pid):
    """Resident kB of each thread stack mapping, by mapping size in KiB
    (the 256 and 512 KiB ones)."""
    maps = mappings(pid)
    out = {}
    for i, m in enumerate(maps):
        size = (m["end"] - m["start"]) // 1024
        if m["perm"].startswith("rw") and is_thread_stack(maps, i) and size in (256, 512):
            out.setdefault(size, []).append(m["rss"])
    return out


def first_event(sock):
    """Read until the first content event has arrived (the stream runs)."""
    buf = b""
    end = time.time() + 10
    while b"data: {" not in buf and time.time() < end:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    if b"data: {" not in buf:
        raise SystemExit(f"no event on a stream: {buf[:300]!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--mock", required=True)
    ap.add_argument("--streams", type=int, default=40)
    ap.add_argument("--worker-kb", type=int, default=12)
    ap.add_argument("--connection-kb", type=int, default=8)
    a = ap.parse_args()
    procs, socks = [], []
    tmp = tempfile.mkdtemp(prefix="stack-pages-")
    cfg = os.path.join(tmp, "c.yaml")
    try:
        mock_port, port = free_port(), free_port()
        procs.append(subprocess.Popen(
            [a.mock, "--host", "127.0.0.1", "--port", str(mock_port), "--name", "slow",
             "--stream-interval-ms", "50"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_listening(mock_port)
        with open(cfg, "w") as f:
            f.write(CONFIG.format(port=port, slow=mock_port))
        proxy = subprocess.Popen([a.proxy, "--config", cfg],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proxy)
        wait_listening(port)
        req = request_bytes()
        for _ in range(a.streams):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(req)
            socks.append(s)
        for s in socks:
            first_event(s)
        found = stacks(proxy.pid)
        bad = []
        for kind, size, limit in (("worker", 512, a.worker_kb),
                                  ("connection thread", 256, a.connection_kb)):
            kb = sorted(found.get(size, []))
            if len(kb) < a.streams:
                bad.append(f"{len(kb)} {kind} stacks for {a.streams} streams")
                continue
            # The busiest threads: one per stream (idle ones hold less).
            kb = kb[-a.streams:]
            med = statistics.median(kb)
            print(f"{kind} stacks ({size} KiB each), {len(kb)} streaming: "
                  f"median {med:g} kB, max {max(kb)} kB resident (limit {limit} kB)")
            if med > limit or max(kb) > limit + 4:
                bad.append(f"{kind} stacks: median {med:g} kB, max {max(kb)} kB, "
                           f"limit {limit} kB")
        if bad:
            print("FAILED: " + "; ".join(bad), file=sys.stderr)
            return 1
        print("ok")
        return 0
    finally:
        for s in socks:
            s.close()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if os.path.exists(cfg):
            os.unlink(cfg)
        os.rmdir(tmp)


if __name__ == "__main__":
    sys.exit(main())
