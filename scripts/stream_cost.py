#!/usr/bin/env python3
"""What one stream costs the proxy, counted rather than timed.

Runs the proxy under `valgrind --tool=callgrind` (instructions) and under
`strace -f -c` (system calls), each time for N1 and N2 streams of two
lengths (C1 and C2 content events) against `llm-proxy-mock`, and splits
the cost by differences, so that start-up and shutdown cancel out:

  per stream (at C events) = (cost(N2 streams) - cost(N1 streams)) / (N2 - N1)
  per event                = (per stream at C2 - per stream at C1) / (events C2 - events C1)
  per stream, fixed        = per stream at C1 - events(C1) * per event
                             (setup: connection check-out, request build,
                             headers; teardown: the end of both bodies)

Instruction counts repeat exactly from run to run, so they make a
regression check that machine noise cannot fool: with `--check FILE`, the
run fails (exit 1) when the per-event or the fixed per-stream instruction
count is more than 10% above the figure committed in FILE. `--write FILE`
records the figures. System call counts are printed for the table in
BENCHMARKS.md, not checked (a read that returns early can repeat).

The check cannot pass on a run that measured nothing: every stream must
answer 200 and end with `data: [DONE]` (Responses: `response.completed`),
each length must give the committed number of events per stream, the
proxy must exit cleanly, and both per-stream counts must be positive;
otherwise it fails (exit 1) with the reason. Counts depend on the toolchain (rustc, glibc, valgrind): the
file records the versions it was written with, and a check run with
others says so (the comparison still stands; rewrite the file with
`--write` when the toolchain moves on purpose).

One client connection is reused across streams when the proxy keeps it
(http.client reconnects when an answer says `Connection: close`).

`--responses native|translate` streams `/v1/responses` instead of chat
(the provider's `responses:` mode), to compare the Responses paths; the
committed figures are chat's.

Usage:
  scripts/stream_cost.py --proxy target/release/llm-proxy \
      --mock target/release/llm-proxy-mock [--check benchmarks/stream-cost.json]
      [--write benchmarks/stream-cost.json] [--no-strace] [--out DIR]
      [--responses native|translate]
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

N1, N2 = 20, 120
C1, C2 = 2, 42
TOLERANCE = 0.10
# Set when the runs go to a temporary directory removed at exit.
RUNS_REMOVED = False


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(port, proc):
    for _ in range(1200):
        if proc.poll() is not None:
            raise SystemExit(f"process exited early with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            c.getresponse().read()
            c.close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing answered on port {port}")


def start_mock(mock, chunks):
    port = free_port()
    proc = subprocess.Popen(
        [mock, "--port", str(port), "--stream-chunks", str(chunks)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_ready(port, proc)
    return proc, port


# Which endpoint the streams use: chat, or /v1/responses served natively or
# translated from chat (--responses); set from the command line.
RESPONSES = None


def streams(port, n):
    """n streams on one connection where kept; events seen per stream."""
    if RESPONSES:
        path = "/v1/responses"
        body = json.dumps({"model": "m", "stream": True, "input": "hi"})
        end = b"event: response.completed\n"
    else:
        path = "/v1/chat/completions"
        body = json.dumps(
            {
                "model": "m",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            }
        )
        end = b"data: [DONE]\n\n"
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    events = 0
    for _ in range(n):
        c.request(
            "POST",
            path,
            body,
            {"content-type": "application/json"},
        )
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise SystemExit(f"stream answered {r.status}: {data[:200]!r}")
        if end not in data[-4096:]:
            raise SystemExit(f"stream did not end with {end!r}: {data[-200:]!r}")
        seen = data.count(b"data: ")
        if events and seen != events:
            raise SystemExit(f"streams of one length gave {events} and {seen} events")
        events = seen
    c.close()
    return events


def run(tool, proxy, mock_port, n, out_dir, tag):
    port = free_port()
    cfg = os.path.join(out_dir, f"cfg_{tag}.yaml")
    responses = f", responses: {RESPONSES}" if RESPONSES else ""
    with open(cfg, "w") as f:
        f.write(
            f"""server: {{host: 127.0.0.1, port: {port}, log_level: warn}}
providers:
  mock: {{type: openai, base_url: 'http://127.0.0.1:{mock_port}/v1', api_key: fake-bench-key{responses}}}
models:
  m:
    providers:
      mock: {{priority: 0}}
"""
        )
    out = os.path.join(out_dir, f"{tool}_{tag}.out")
    if tool == "callgrind":
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    else:
        cmd = ["strace", "-f", "-c", "-o", out]
    log = open(os.path.join(out_dir, f"log_{tag}_{tool}.txt"), "w")
    proc = subprocess.Popen(
        cmd + [proxy, "--config", cfg], stdout=subprocess.DEVNULL, stderr=log
    )
    try:
        wait_ready(port, proc)
        events = streams(port, n)
    finally:
        # strace ends with its tracee: signal the proxy, not strace.
        if proc.poll() is None:
            target = proc.pid
            if tool == "strace":
                kids = f"/proc/{proc.pid}/task/{proc.pid}/children"
                try:
                    target = int(open(kids).read().split()[0])
                except (OSError, IndexError, ValueError):
                    pass
            try:
                os.kill(target, signal.SIGTERM)
            except ProcessLookupError:
                pass
        code = proc.wait(timeout=300)
    if code != 0:
        raise SystemExit(f"{tool} run of the proxy exited with {code} (see {log.name})")
    text = open(out).read()
    if tool == "callgrind":
        m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(
            r"^totals:\s+(\d+)", text, re.M
        )
        if not m:
            raise SystemExit(f"no instruction count in {out}")
        return int(m.group(1)), events
    calls = {}
    for line in text.splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            calls[parts[-1]] = int(parts[3])
    return calls, events


def per_stream(a, b):
    return (b - a) / (N2 - N1)


def versions():
    """What the counts depend on besides the code."""
    def first_line(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            return (out.stdout or out.stderr).splitlines()[0].strip()
        except (OSError, IndexError):
            return "unknown"
    return {
        "rustc": first_line(["rustc", "-V"]),
        "valgrind": first_line(["valgrind", "--version"]),
        "libc": first_line(["ldd", "--version"]),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--mock", required=True)
    ap.add_argument("--check")
    ap.add_argument("--write")
    ap.add_argument("--no-strace", action="store_true")
    ap.add_argument("--out")
    ap.add_argument(
        "--responses",
        choices=["native", "translate"],
        help="stream /v1/responses, served natively or translated, instead of chat",
    )
    args = ap.parse_args()
    global RESPONSES
    RESPONSES = args.responses
    out_dir = args.out
    os.makedirs(out_dir, exist_ok=True)

    result = {}
    mocks = []
    try:
        for chunks in (C1, C2):
            proc, port = start_mock(args.mock, chunks)
            mocks.append(proc)
            a, _ = run("callgrind", args.proxy, port, N1, out_dir, f"c{chunks}_n{N1}")
            b, ev = run("callgrind", args.proxy, port, N2, out_dir, f"c{chunks}_n{N2}")
            entry = {"events": ev, "instructions": per_stream(a, b)}
            if not args.no_strace:
                sa, _ = run("strace", args.proxy, port, N1, out_dir, f"c{chunks}_n{N1}")
                sb, _ = run("strace", args.proxy, port, N2, out_dir, f"c{chunks}_n{N2}")
                names = sorted(set(sa) | set(sb))
                entry["syscalls"] = {
                    k: per_stream(sa.get(k, 0), sb.get(k, 0)) for k in names
                }
            result[chunks] = entry
    finally:
        for p in mocks:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)

    lo, hi = result[C1], result[C2]
    d_events = hi["events"] - lo["events"]
    if lo["events"] <= 0 or d_events <= 0:
        print(f"no events to count: {lo['events']} and {hi['events']} per stream", file=sys.stderr)
        return 1
    per_event = (hi["instructions"] - lo["instructions"]) / d_events
    fixed = lo["instructions"] - lo["events"] * per_event
    figures = {
        "events_per_stream": [lo["events"], hi["events"]],
        "instructions_per_event": round(per_event),
        "instructions_per_stream_fixed": round(fixed),
        "instructions_per_stream": {
            str(lo["events"]): round(lo["instructions"]),
            str(hi["events"]): round(hi["instructions"]),
        },
        "measured_with": versions(),
    }
    print(f"events per stream: {lo['events']} and {hi['events']} (data: lines the client saw)")
    print(f"instructions per stream: {lo['instructions']:.0f} at {lo['events']} events, "
          f"{hi['instructions']:.0f} at {hi['events']} events")
    print(f"instructions per event: {per_event:.0f}")
    print(f"instructions per stream, fixed (setup + teardown): {fixed:.0f}")
    if "syscalls" in lo:
        sys_lo, sys_hi = lo["syscalls"], hi["syscalls"]
        rows = []
        for k in sorted(set(sys_lo) | set(sys_hi)):
            e = (sys_hi.get(k, 0) - sys_lo.get(k, 0)) / d_events
            f = sys_lo.get(k, 0) - lo["events"] * e
            if abs(e) >= 0.005 or abs(f) >= 0.05:
                rows.append((k, e, f))
        total_e = sum(r[1] for r in rows)
        total_f = sum(r[2] for r in rows)
        figures["syscalls_per_event"] = {k: round(e, 2) for k, e, _ in rows}
        figures["syscalls_per_stream_fixed"] = {k: round(f, 2) for k, _, f in rows}
        print("\n| system call | per event | per stream, fixed |")
        print("|---|---:|---:|")
        for k, e, f in sorted(rows, key=lambda r: -(r[1] * 20 + r[2])):
            print(f"| `{k}` | {e:.2f} | {f:.1f} |")
        print(f"| total | {total_e:.2f} | {total_f:.1f} |")
    if not RUNS_REMOVED:
        print(f"\n(raw runs in {out_dir})")

    if args.write:
        with open(args.write, "w") as f:
            json.dump(figures, f, indent=2)
            f.write("\n")
        print(f"wrote {args.write}")
    if args.check:
        base = json.load(open(args.check))
        failed = False
        if base.get("events_per_stream") != figures["events_per_stream"]:
            print(f"events per stream: {figures['events_per_stream']}, committed "
                  f"{base.get('events_per_stream')}: the runs are not comparable: FAIL")
            failed = True
        for key in ("instructions_per_event", "instructions_per_stream_fixed"):
            was, now = base[key], figures[key]
            if was <= 0 or now <= 0:
                print(f"{key}: {now} (committed {was}): not a count: FAIL")
                failed = True
                continue
            limit = was * (1 + TOLERANCE)
            verdict = "ok" if now <= limit else "FAIL"
            print(f"{key}: {now} (committed {was}, limit {limit:.0f}): {verdict}")
            failed |= now > limit
        if base.get("measured_with") not in (None, figures["measured_with"]):
            print(f"note: committed figures were measured with {base['measured_with']}, "
                  f"this run with {figures['measured_with']}")
        if failed:
            print("stream cost grew by more than 10% over the committed figure", file=sys.stderr)
            return 1
    return 0


def main_in_temp():
    """main(); without --out, its runs go to a directory removed after."""
    if "--out" in sys.argv:
        return main()
    global RUNS_REMOVED
    RUNS_REMOVED = True
    out_dir = tempfile.mkdtemp(prefix="stream-cost-")
    try:
        sys.argv += ["--out", out_dir]
        return main()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main_in_temp())
