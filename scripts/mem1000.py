#!/usr/bin/env python3
"""Resident memory of the proxy under 1,000 concurrent slow streams, with a
/proc/PID/smaps breakdown (thread stacks, malloc arenas, main heap, binary).

The same load as bench.py's `slow stream c1000` (1,000 clients, 3,000
streaming requests to the mock with --delay-ms 100 --stream-interval-ms 10),
driven by this script's own epoll client so that it needs no `oha`. Loopback
only; everything it starts is stopped on exit.

    python3 scripts/mem1000.py --proxy target/release/llm-proxy \
        --mock target/release/llm-proxy-mock [--env K=V ...] [--clients N]
        [--keep-alive | --oha PATH | --heads-ms MS] [--prompt-kb KB]
"""

import argparse
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import time

CONFIG = """\
server:
  host: 127.0.0.1
  port: {port}
providers:
  slow:
    type: openai
    base_url: http://127.0.0.1:{slow}/v1
    api_key: bench-key
models:
  slow:
    providers:
      slow: {{priority: 0, model_id: mock-model}}
"""

BODY = json.dumps(
    {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
).encode()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_listening(port, deadline=10.0):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {port}")


def cpu_s(pid):
    """User + system CPU seconds the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
            elif k == "Threads":
                out[k] = int(v)
    return out


MAP_RE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


def mappings(pid):
    """The process's mappings from /proc/PID/smaps: dicts of start, end,
    perm, name and rss (kB), in address order."""
    maps = []
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = MAP_RE.match(line)
            if m:
                cur = {
                    "start": int(m.group(1), 16),
                    "end": int(m.group(2), 16),
                    "perm": m.group(3),
                    "name": m.group(4).strip(),
                    "rss": 0,
                }
                maps.append(cur)
            elif line.startswith("Rss:") and cur is not None:
                cur["rss"] = int(line.split()[1])
    return maps


def is_thread_stack(maps, i):
    """Whether mapping `i` is a thread stack: anonymous, right above a guard
    page (a `---` mapping of at most 64 KiB)."""
    prev = maps[i - 1] if i > 0 else None
    return bool(prev and prev["perm"].startswith("---") and prev["end"] == maps[i]["start"]
                and prev["end"] - prev["start"] <= 64 * 1024)


def request_bytes(body=None):
    """One streaming chat request, as the load's clients send it."""
    body = BODY if body is None else body
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def smaps(pid):
    """RSS in kB by kind of mapping."""
    maps = mappings(pid)
    kinds = {}
    counts = {}

    def add(kind, kb):
        kinds[kind] = kinds.get(kind, 0) + kb
        counts[kind] = counts.get(kind, 0) + 1

    for i, m in enumerate(maps):
        if m["perm"].startswith("---"):
            continue
        name = m["name"]
        if name == "[heap]":
            add("main heap (brk)", m["rss"])
        elif name == "[stack]":
            add("main thread stack", m["rss"])
        elif name.startswith("/"):
            add("binary and libraries", m["rss"])
        elif name.startswith("["):
            add("other (" + name + ")", m["rss"])
        else:
            nxt = maps[i + 1] if i + 1 < len(maps) else None
            size = m["end"] - m["start"]
            if is_thread_stack(maps, i):
                add(f"thread stacks ({size // 1024} KiB each)", m["rss"])
            elif nxt and nxt["perm"].startswith("---") and nxt["start"] == m["end"] \
                    and size + (nxt["end"] - nxt["start"]) == 64 * 1024 * 1024:
                add("malloc arenas (non-main)", m["rss"])
            elif size == 64 * 1024 * 1024 and m["perm"].startswith("rw"):
                add("malloc arenas (non-main)", m["rss"])
            else:
                add("other anonymous", m["rss"])
    return {k: {"rss_kb": v, "mappings": counts[k]} for k, v in sorted(kinds.items())}


# MEM1000_TRACE=1: a separate process prints RSS and threads every 50 ms to
# stderr (this client is busy under load and samples unevenly).
TRACE = bool(os.environ.get("MEM1000_TRACE"))
TRACER = """
import sys, time
pid, t0 = sys.argv[1], time.time()
while True:
    try:
        st = dict(l.split(':', 1) for l in open(f'/proc/{pid}/status'))
    except OSError:
        break
    print(f"{time.time() - t0:6.2f} s rss {int(st['VmRSS'].split()[0]) / 1024:5.1f} MB "
          f"hwm {int(st['VmHWM'].split()[0]) / 1024:5.1f} threads {st['Threads'].strip()}",
          file=sys.stderr, flush=True)
    time.sleep(0.05)
"""


class Client:
    __slots__ = ("sock", "buf", "sent")


def load(port, clients, total, pid, budget_s, keep_alive=False):
    """`clients` concurrent streams until `total` have been started; returns
    (ok, errors, peak rss kB, peak threads, smaps at the largest RSS seen).
    With `keep_alive`, a client sends its next request on the same
    connection once a stream has ended well (as `oha` does)."""
    sel = selectors.DefaultSelector()
    req = request_bytes()
    started = ok = errors = 0
    open_ = 0
    peak_rss = peak_threads = 0
    snap = None
    snap_rss = 0
    end = time.time() + budget_s

    def start_one():
        nonlocal started, open_
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        c = Client()
        c.sock, c.buf, c.sent = s, bytearray(), False
        sel.register(s, selectors.EVENT_WRITE, c)
        started += 1
        open_ += 1

    def finish(c, good):
        nonlocal ok, errors, open_, started
        if keep_alive and good and started < total:
            ok += 1
            started += 1
            c.buf, c.sent = bytearray(), False
            sel.modify(c.sock, selectors.EVENT_WRITE, c)
            return
        sel.unregister(c.sock)
        c.sock.close()
        open_ -= 1
        if good:
            ok += 1
        else:
            errors += 1
        if started < total:
            start_one()

    for _ in range(min(clients, total)):
        start_one()
    last_sample = 0.0
    while open_ and time.time() < end:
        for key, ev in sel.select(timeout=0.05):
            c = key.data
            if not c.sent:
                try:
                    c.sock.sendall(req)
                except OSError:
                    finish(c, False)
                    continue
                c.sent = True
                sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                finish(c, False)
                continue
            if data:
                c.buf += data
                if c.buf.endswith(b"0\r\n\r\n") and b"data: [DONE]" in c.buf:
                    finish(c, c.buf.startswith(b"HTTP/1.1 200"))
            else:
                finish(c, c.buf.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in c.buf)
        now = time.time()
        if now - last_sample >= 0.02:
            last_sample = now
            st = status(pid)
            peak_rss = max(peak_rss, st["VmRSS"], st.get("VmHWM", 0))
            peak_threads = max(peak_threads, st["Threads"])
            # The breakdown at the largest RSS seen (taken again whenever the
            # RSS grew by 1 MB or more since the last one).
            if st["VmRSS"] >= snap_rss + 1024:
                snap_rss = st["VmRSS"]
                snap = smaps(pid)
                snap["_at"] = {"rss_kb": st["VmRSS"], "threads": st["Threads"], "open": open_}
    for key in list(sel.get_map().values()):
        key.fileobj.close()
        errors += 1
    return ok, errors, peak_rss, peak_threads, snap


def load_oha(oha, port, clients, total, pid, budget_s):
    """The same load driven by `oha` (as bench.py runs it: kept-alive
    connections); same return value as `load`."""
    cmd = [oha, "--no-tui", "--output-format", "json", "-c", str(clients), "-n", str(total),
           "-m", "POST", "-H", "content-type: application/json", "-d", BODY.decode(),
           "-t", "30s", f"http://127.0.0.1:{port}/v1/chat/completions"]
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak_rss = peak_threads = snap_rss = 0
    snap = None
    end = time.time() + budget_s
    while run.poll() is None and time.time() < end:
        st = status(pid)
        peak_rss = max(peak_rss, st["VmRSS"], st.get("VmHWM", 0))
        peak_threads = max(peak_threads, st["Threads"])
        if st["VmRSS"] >= snap_rss + 1024:
            snap_rss = st["VmRSS"]
            snap = smaps(pid)
            snap["_at"] = {"rss_kb": st["VmRSS"], "threads": st["Threads"], "open": None}
        time.sleep(0.02)
    if run.poll() is None:
        run.kill()
    out = json.loads(run.communicate()[0] or "{}")
    codes = out.get("statusCodeDistribution", {}) or {}
    ok = int(codes.get("200", 0))
    return ok, total - ok, peak_rss, peak_threads, snap


def waiting_heads(port, clients, heads_ms, pid):
    """`clients` streaming requests at once; status and smaps while every
    one of them waits for the mock's response head."""
    req = request_bytes()
    socks = []
    try:
        for _ in range(clients):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(req)
            socks.append(s)
        time.sleep(heads_ms / 1000 * 0.6)
        st = status(pid)
        return {"clients": clients, "rss_kb": st["VmRSS"], "threads": st["Threads"],
                "smaps": smaps(pid)}
    finally:
        for s in socks:
            s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--mock", required=True)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--env", action="append", default=[], help="K=V for the proxy")
    ap.add_argument("--budget", type=float, default=120.0, help="seconds at most")
    ap.add_argument("--oha", help="drive the load with this oha binary instead")
    ap.add_argument("--prompt-kb", type=int, default=0,
                    help="each request's message is this many KB (default: 'hi')")
    ap.add_argument("--heads-ms", type=int,
                    help="instead of the load: the mock answers after this many ms, and "
                         "--clients requests are sent at once; prints smaps while all of "
                         "them wait for their response head (a wave's peak)")
    ap.add_argument("--keep-alive", action="store_true",
                    help="each client sends its next request on the same connection (like oha)")
    a = ap.parse_args()
    if a.prompt_kb:
        global BODY
        BODY = json.dumps({"model": "slow", "stream": True, "messages": [
            {"role": "user", "content": "x" * (a.prompt_kb * 1024)}]}).encode()
    procs = []
    tmp = tempfile.mkdtemp(prefix="mem1000-")
    try:
        slow_port, port = free_port(), free_port()
        mock = subprocess.Popen(
            [a.mock, "--host", "127.0.0.1", "--port", str(slow_port), "--name", "slow",
             "--delay-ms", str(a.heads_ms or 100), "--stream-interval-ms", "10"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(mock)
        wait_listening(slow_port)
        cfg = os.path.join(tmp, "c.yaml")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(port=port, slow=slow_port))
        env = dict(os.environ)
        for kv in a.env:
            k, _, v = kv.partition("=")
            env[k] = v
        log = open(os.path.join(tmp, "proxy.log"), "w")
        proxy = subprocess.Popen([a.proxy, "--config", cfg], stdout=subprocess.DEVNULL,
                                 stderr=log, env=env)
        procs.append(proxy)
        wait_listening(port)
        time.sleep(0.5)
        idle = status(proxy.pid)
        cpu0 = cpu_s(proxy.pid)
        if TRACE:
            procs.append(subprocess.Popen([sys.executable, "-c", TRACER, str(proxy.pid)]))
        if a.heads_ms:
            print(json.dumps(waiting_heads(port, a.clients, a.heads_ms, proxy.pid), indent=1))
            return 0
        t0 = time.time()
        if a.oha:
            ok, errors, peak, threads, snap = load_oha(a.oha, port, a.clients, a.requests,
                                                       proxy.pid, a.budget)
        else:
            ok, errors, peak, threads, snap = load(port, a.clients, a.requests, proxy.pid,
                                                   a.budget, a.keep_alive)
        elapsed = time.time() - t0
        hwm = status(proxy.pid)["VmHWM"]
        cpu = cpu_s(proxy.pid) - cpu0
        time.sleep(6.0)
        after = status(proxy.pid)
        after_smaps = smaps(proxy.pid)
        res = {
            "idle_rss_kb": idle["VmRSS"], "idle_threads": idle["Threads"],
            "ok": ok, "errors": errors, "elapsed_s": round(elapsed, 1),
            "peak_rss_kb": max(peak, hwm), "peak_threads": threads,
            "cpu_s": round(cpu, 2), "cpu_ms_per_stream": round(cpu * 1000 / max(ok, 1), 3),
            "after_6s_rss_kb": after["VmRSS"], "after_6s_threads": after["Threads"],
            "smaps_at_peak": snap, "smaps_after_6s": after_smaps,
        }
        print(json.dumps(res, indent=1))
        return 0 if errors == 0 else 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)


if __name__ == "__main__":
    sys.exit(main())
