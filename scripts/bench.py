#!/usr/bin/env python3
"""llm-proxy benchmark harness. Run through scripts/bench.sh; BENCHMARKS.md
explains the method and how to read the output.

Loopback only. Starts two mock upstreams (fast and slow), the proxy and,
when --nginx is given, nginx as a plain `proxy_pass` in front of the same
mocks (the one-hop floor). Measures every scenario directly against the
mock, through the proxy and through nginx in the same run (interleaved,
repeated), and prints Markdown tables plus raw JSON. Everything it starts
is stopped on exit, however it exits.

Standard library only: the load generator is `oha` (--oha).
"""

import argparse
import json
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
CHILDREN = []
NGINX_MASTER = [None]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def stop_children():
    for p in CHILDREN:
        if p.poll() is None:
            p.terminate()
    for p in CHILDREN:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def on_signal(signum, _frame):
    stop_children()
    sys.exit(128 + signum)


# --------------------------------------------------------------------------
# Processes


def start_mock(binary, name, extra):
    p = subprocess.Popen(
        [binary, "--host", "127.0.0.1", "--port", "0", "--name", name] + extra,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    CHILDREN.append(p)
    ready, _, _ = select.select([p.stdout], [], [], 10)
    if not ready:
        raise SystemExit(f"mock {name} did not start within 10 s")
    line = p.stdout.readline()
    m = re.search(r"listening on http://([\d.]+):(\d+)", line)
    if not m:
        raise SystemExit(f"mock {name}: unexpected first line {line!r}")
    return p, int(m.group(2))


PROXY_CONFIG = """\
server:
  host: 127.0.0.1
  port: 0
providers:
  fast:
    type: openai
    base_url: http://127.0.0.1:{fast}/v1
    api_key: bench-key
  slow:
    type: openai
    base_url: http://127.0.0.1:{slow}/v1
    api_key: bench-key
models:
  fast:
    providers:
      fast: {{priority: 0, model_id: mock-model}}
  slow:
    providers:
      slow: {{priority: 0, model_id: mock-model}}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get_status(port, path="/health", timeout=1.0):
    """Status code of a GET on a fresh connection, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
            return int(head.split()[1])
    except (OSError, IndexError, ValueError):
        return None


def start_proxy(binary, config_path, stderr_path):
    """Start the proxy; return (process, port, seconds to the first 200 on /health)."""
    port = free_port()
    err = open(stderr_path, "ab")
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [binary, "--config", config_path, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    CHILDREN.append(p)
    deadline = t0 + 10
    while time.perf_counter() < deadline:
        if p.poll() is not None:
            raise SystemExit(f"the proxy exited with {p.returncode}; see {stderr_path}")
        if http_get_status(port) == 200:
            return p, port, time.perf_counter() - t0
    raise SystemExit("the proxy did not answer /health within 10 s")


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    CHILDREN.remove(p)


# nginx as the one-hop floor: a plain reverse proxy with streaming on
# (`proxy_buffering off`), HTTP/1.1 and kept-alive connections to the mocks,
# one worker per core, no access log. Written and run by the harness from
# the results directory; nothing outside it is read or written.
NGINX_CONFIG = """\
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 16384;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream fast {{
        server 127.0.0.1:{fast};
        keepalive 1024;
    }}
    upstream slow {{
        server 127.0.0.1:{slow};
        keepalive 1024;
    }}
    server {{
        listen 127.0.0.1:{fast_listen};
        location / {{
            proxy_pass http://fast;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
    server {{
        listen 127.0.0.1:{slow_listen};
        location / {{
            proxy_pass http://slow;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def start_nginx(binary, out, fast_port, slow_port):
    """Start nginx in the foreground in front of both mocks; return
    (process, {"fast": port, "slow": port}, config path)."""
    d = os.path.abspath(os.path.join(out, "nginx"))
    os.makedirs(d, exist_ok=True)
    ports = {"fast": free_port(), "slow": free_port()}
    workers = os.cpu_count() or 1
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(
            NGINX_CONFIG.format(
                workers=workers, dir=d, fast=fast_port, slow=slow_port,
                fast_listen=ports["fast"], slow_listen=ports["slow"],
            )
        )
    err = open(os.path.join(d, "stderr.log"), "ab")
    # -e: the error log before the config is read (the build's default may
    # be a system path); -p: the prefix, so nothing is looked up elsewhere.
    p = subprocess.Popen(
        [binary, "-p", d + "/", "-c", conf, "-e", os.path.join(d, "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    CHILDREN.append(p)
    deadline = time.perf_counter() + 10
    while time.perf_counter() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"nginx exited with {p.returncode}; see {d}/error.log")
        # Any answer will do (the mock's own status passed through).
        answering = all(http_get_status(port, "/v1/models") is not None for port in ports.values())
        if answering and len(nginx_pids(p.pid)) > workers:
            return p, ports, conf
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not answer within 10 s; see {d}/error.log")


def nginx_pids(master):
    """The master and its workers (children of the master)."""
    pids = [master]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == master:
            pids.append(int(entry))
    return pids


# --------------------------------------------------------------------------
# /proc


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])  # kB
            elif k == "Threads":
                out[k] = int(v)
    return out


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def machine_busy_ticks():
    """Busy time of the whole machine (every CPU), in clock ticks."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4]  # less idle and iowait (guest is in user)


def watched_pids():
    """Every long-running process the harness started (mocks, proxy, nginx
    master and workers)."""
    pids = []
    for c in CHILDREN:
        if c.poll() is None:
            pids += nginx_pids(c.pid) if c.pid == NGINX_MASTER[0] else [c.pid]
    return pids


def ticks_or_zero(pid):
    try:
        return cpu_ticks(pid)
    except (OSError, IndexError, ValueError):
        return 0


class OtherCpu:
    """CPU the rest of the machine used while a run went on: the machine's
    busy time less that of every process of the benchmark (the servers, the
    load generator, this script). In percent of the machine's capacity; a
    few percent is noise, tens mean another job ran and the CPU figures of
    that run are not to be trusted."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.busy0 = machine_busy_ticks()
        self.ours0 = sum(ticks_or_zero(p) for p in watched_pids())
        self.self0 = sum(os.times()[:4])
        return self

    def __exit__(self, *exc):
        elapsed = time.perf_counter() - self.t0
        busy = machine_busy_ticks() - self.busy0
        ours = sum(ticks_or_zero(p) for p in watched_pids()) - self.ours0
        # os.times(): this process's threads and its reaped children (oha).
        own = (sum(os.times()[:4]) - self.self0) * CLK_TCK
        capacity = max(1e-9, elapsed * (os.cpu_count() or 1) * CLK_TCK)
        self.pct = max(0.0, (busy - ours - own) / capacity * 100.0)


def reset_peak_rss(pid):
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class Sampler:
    """Samples the thread count and RSS of a process, or the sum over a
    group of processes (nginx's master and workers), while a scenario runs."""

    def __init__(self, pids):
        self.pids = pids if isinstance(pids, list) else [pids]
        self.threads, self.rss = 0, 0
        self.done = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.done.is_set():
            try:
                sts = [proc_status(pid) for pid in self.pids]
            except OSError:
                return
            self.threads = max(self.threads, sum(st["Threads"] for st in sts))
            self.rss = max(self.rss, sum(st["VmRSS"] for st in sts))
            self.done.wait(0.02)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.t.join()


# --------------------------------------------------------------------------
# Load


def chat_body(model, stream):
    return json.dumps(
        {
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": "Say hello, benchmark."}],
        }
    )


def run_oha(oha, url, body, clients, duration, requests=None):
    cmd = [
        oha, "--no-tui", "--output-format", "json",
        "-c", str(clients),
        "-m", "POST", "-H", "content-type: application/json", "-d", body,
    ]
    if requests:
        cmd += ["-n", str(requests)]
    else:
        cmd += ["-z", f"{duration}s"]
    # oha's own timeout: a request stuck past this is an error, not a hang.
    cmd += ["-t", "30s", url]
    with OtherCpu() as other:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if out.returncode != 0:
        raise SystemExit(f"oha failed ({out.returncode}): {out.stderr.strip()[:500]}")
    r = json.loads(out.stdout)
    s = r["summary"]
    pct = r.get("latencyPercentiles", {})
    codes = r.get("statusCodeDistribution", {}) or {}
    ok = int(codes.get("200", 0))
    errors = sum(int(v) for k, v in codes.items() if k != "200")
    # With -z, requests still running at the deadline are cut; not errors.
    kinds = {k: v for k, v in (r.get("errorDistribution") or {}).items() if "deadline" not in k}
    errors += sum(int(v) for v in kinds.values())

    def ms(k):
        v = pct.get(k)
        return None if v is None else v * 1000.0

    return {
        "rps": s.get("requestsPerSec") or 0.0,
        "ok": ok,
        "errors": errors,
        "p50": ms("p50"),
        "p90": ms("p90"),
        "p99": ms("p99"),
        "error_kinds": kinds,
        "other_cpu_pct": other.pct,
    }


def ttfb_once(port, body, stream):
    """One request on a fresh connection (connect not timed). Returns seconds
    from the first byte sent to the first body byte (stream: the first
    `data:` event), and to the end of the response; raises on any error."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    try:
        t0 = time.perf_counter()
        s.sendall(req)
        buf = b""
        first = None
        marker = b"data: " if stream else b"\r\n\r\n{"
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if first is None and marker in buf:
                first = time.perf_counter()
        end = time.perf_counter()
    finally:
        s.close()
    if not buf.startswith(b"HTTP/1.1 200") or first is None:
        raise RuntimeError(f"bad response: {buf[:80]!r}")
    if stream and b"data: [DONE]" not in buf:
        raise RuntimeError("stream without [DONE]")
    return first - t0, end - t0


def ttfb_series(port, body, stream, n):
    vals, errors = [], 0
    for _ in range(n):
        try:
            vals.append(ttfb_once(port, body, stream)[0] * 1000.0)
        except (OSError, RuntimeError):
            errors += 1
    return vals, errors


def measure(oha, pids, url, body, clients, duration, requests):
    """One oha run against a server made of `pids` (the proxy, or nginx's
    master and workers): its CPU per request and peak RSS and threads,
    summed over the processes."""
    for pid in pids:
        reset_peak_rss(pid)
    c0 = sum(cpu_ticks(pid) for pid in pids)
    with Sampler(pids) as smp:
        r = run_oha(oha, url, body, clients, duration, requests)
    c1 = sum(cpu_ticks(pid) for pid in pids)
    sts = [proc_status(pid) for pid in pids]
    r["cpu_ms_per_req"] = (c1 - c0) * 1000.0 / CLK_TCK / max(1, r["ok"] + r["errors"])
    # VmHWM also catches a spike between two samples; for a group it is the
    # sum of each process's own peak (an upper bound of the group's peak).
    r["peak_rss_kb"] = max(sum(st["VmHWM"] for st in sts), smp.rss)
    r["peak_threads"] = smp.threads
    r["rss_after_kb"] = sum(st["VmRSS"] for st in sts)
    return r


def pctl(vals, q):
    if not vals:
        return None
    vals = sorted(vals)
    i = min(len(vals) - 1, max(0, int(round(q / 100.0 * len(vals) + 0.5)) - 1))
    return vals[i]


# --------------------------------------------------------------------------
# Scenarios

# (name, model/mock, stream, clients, requests-instead-of-duration)
SCENARIOS = [
    ("json c1", "fast", False, 1, None),
    ("json c16", "fast", False, 16, None),
    ("json c64", "fast", False, 64, None),
    ("stream c1", "fast", True, 1, None),
    ("stream c16", "fast", True, 16, None),
    ("stream c64", "fast", True, 64, None),
    ("slow json c64", "slow", False, 64, None),
    ("slow stream c64", "slow", True, 64, None),
    ("slow stream c1000", "slow", True, 1000, 3000),
]


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def merge(runs):
    """Median of each numeric field over repeated runs; errors are summed."""
    out = {}
    for k in runs[0]:
        vals = [r[k] for r in runs]
        if k in ("errors", "ok", "requests"):
            out[k] = sum(vals)
        elif k == "other_cpu_pct":
            out[k] = max(vals)
        elif all(isinstance(v, (int, float)) or v is None for v in vals):
            out[k] = median(vals)
        else:
            out[k] = vals[-1]
    out["runs"] = len(runs)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["quick", "full"], default="quick")
    ap.add_argument("--repeat", type=int, help="runs per scenario (default: quick 1, full 3)")
    ap.add_argument("--duration", type=float, help="seconds per run (default: quick 3, full 6)")
    ap.add_argument("--only", help="comma-separated scenario names to run")
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--mock", required=True)
    ap.add_argument("--oha", required=True)
    ap.add_argument("--nginx", help="nginx binary: adds nginx proxy_pass as a third column")
    ap.add_argument("--out", required=True, help="directory for results and logs")
    a = ap.parse_args()
    repeat = a.repeat or (1 if a.mode == "quick" else 3)
    duration = a.duration or (3 if a.mode == "quick" else 6)
    os.makedirs(a.out, exist_ok=True)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return run(a, repeat, duration)
    finally:
        stop_children()


def run(a, repeat, duration):
    t_start = time.time()
    fast, fast_port = start_mock(a.mock, "fast", [])
    slow, slow_port = start_mock(
        a.mock, "slow", ["--delay-ms", "100", "--stream-interval-ms", "10"]
    )
    cfg = os.path.join(a.out, "bench.yaml")
    with open(cfg, "w") as f:
        f.write(PROXY_CONFIG.format(fast=fast_port, slow=slow_port))
    proxy_log = os.path.join(a.out, "proxy.stderr.log")
    open(proxy_log, "w").close()

    # Startup: median of a few cold starts to the first 200 on /health.
    starts = []
    for _ in range(5):
        p, _, t = start_proxy(a.proxy, cfg, proxy_log)
        starts.append(t * 1000.0)
        stop(p)

    proxy, proxy_port, t = start_proxy(a.proxy, cfg, proxy_log)
    starts.append(t * 1000.0)
    pid = proxy.pid
    time.sleep(0.5)
    idle = proc_status(pid)
    machine = {
        "nproc": os.cpu_count(),
        "cpu": next(
            (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
            "?",
        ),
        "kernel": os.uname().release,
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
    }
    result = {
        "mode": a.mode,
        "repeat": repeat,
        "duration_s": duration,
        "machine": machine,
        "startup_ms": {"median": median(starts), "all": starts},
        "idle_rss_kb": idle["VmRSS"],
        "idle_threads": idle["Threads"],
        "scenarios": {},
    }
    log(f"startup {median(starts):.1f} ms, idle RSS {idle['VmRSS']} kB, {idle['Threads']} threads")

    nginx, nginx_ports = None, {}
    if a.nginx:
        try:
            nginx, nginx_ports, conf = start_nginx(a.nginx, a.out, fast_port, slow_port)
            NGINX_MASTER[0] = nginx.pid
            version = subprocess.run([a.nginx, "-v"], capture_output=True, text=True).stderr.strip()
            time.sleep(0.5)
            pids = nginx_pids(nginx.pid)
            result["nginx"] = {
                "version": version.split("/", 1)[-1],
                "config": conf,
                "processes": len(pids),
                "idle_rss_kb": sum(proc_status(p)["VmRSS"] for p in pids),
            }
            log(f"nginx {result['nginx']['version']}: {len(pids)} processes, config {conf}")
        except (OSError, RuntimeError) as e:
            if nginx is not None:
                stop(nginx)
                nginx = None
            result["nginx"] = {"skipped": str(e)}
            log(f"bench: nginx column skipped: {e}")
    else:
        result["nginx"] = {"skipped": "no nginx binary given"}

    only = set(a.only.split(",")) if a.only else None
    for name, model, stream, clients, requests in SCENARIOS:
        if only and name not in only:
            continue
        mock_port = fast_port if model == "fast" else slow_port
        body = chat_body(model, stream)
        direct_url = f"http://127.0.0.1:{mock_port}/v1/chat/completions"
        proxy_url = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
        nginx_url = f"http://127.0.0.1:{nginx_ports[model]}/v1/chat/completions" if nginx else None
        d_runs, p_runs, n_runs = [], [], []
        mock_pid = fast.pid if model == "fast" else slow.pid
        for i in range(repeat):
            m0 = cpu_ticks(mock_pid)
            r = run_oha(a.oha, direct_url, body, clients, duration, requests)
            m1 = cpu_ticks(mock_pid)
            # The mock is tiny_http too: its CPU per request is the floor of
            # what tiny_http's thread-per-connection design costs.
            r["cpu_ms_per_req"] = (m1 - m0) * 1000.0 / CLK_TCK / max(1, r["ok"] + r["errors"])
            d_runs.append(r)
            p_runs.append(measure(a.oha, [pid], proxy_url, body, clients, duration, requests))
            if nginx:
                n_runs.append(
                    measure(a.oha, nginx_pids(nginx.pid), nginx_url, body, clients, duration, requests)
                )
        d, p = merge(d_runs), merge(p_runs)
        sc = {"model": model, "stream": stream, "clients": clients, "direct": d, "proxy": p}
        if n_runs:
            sc["nginx"] = merge(n_runs)
        if clients == 1:
            # Time to first byte (streams: first event), one client, fresh
            # connection per request for every side (connect not timed).
            n = 200 if a.mode == "quick" else 500
            dv, de = ttfb_series(mock_port, body, stream, n)
            pv, pe = ttfb_series(proxy_port, body, stream, n)
            sc["ttfb"] = {
                "direct_p50": pctl(dv, 50), "direct_p99": pctl(dv, 99),
                "proxy_p50": pctl(pv, 50), "proxy_p99": pctl(pv, 99),
                "errors": de + pe, "n": n,
            }
            if nginx:
                nv, ne = ttfb_series(nginx_ports[model], body, stream, n)
                sc["ttfb"].update(nginx_p50=pctl(nv, 50), nginx_p99=pctl(nv, 99), nginx_errors=ne)
        result["scenarios"][name] = sc
        log(
            f"{name}: direct {d['rps']:.0f}/s p50 {d['p50']:.3f} ms | proxy {p['rps']:.0f}/s "
            f"p50 {p['p50']:.3f} ms, {p['errors']} errors, {p['cpu_ms_per_req']:.4f} ms CPU/req, "
            f"peak {p['peak_rss_kb']} kB, {p['peak_threads']} threads, "
            f"other CPU {max(d['other_cpu_pct'], p['other_cpu_pct']):.0f}%"
            + (
                f" | nginx {sc['nginx']['rps']:.0f}/s, {sc['nginx']['errors']} errors, "
                f"{sc['nginx']['cpu_ms_per_req']:.4f} ms CPU/req, peak {sc['nginx']['peak_rss_kb']} kB"
                if "nginx" in sc
                else ""
            )
        )

    # tiny_http's connection threads exit after 5 s idle.
    time.sleep(6.0)
    result["after_load_rss_kb"] = proc_status(pid)["VmRSS"]
    result["after_load_threads"] = proc_status(pid)["Threads"]
    result["elapsed_s"] = time.time() - t_start
    stop(proxy)
    if nginx:
        stop(nginx)
    stop(fast)
    stop(slow)

    with open(os.path.join(a.out, "bench.json"), "w") as f:
        json.dump(result, f, indent=2)
    table = render(result)
    with open(os.path.join(a.out, "bench.md"), "w") as f:
        f.write(table)
    print(table)
    print("\nRaw JSON: " + os.path.join(a.out, "bench.json"))
    return 0


# --------------------------------------------------------------------------
# Report


def f(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


def add(p, d):
    return None if p is None or d is None else p - d


def div(a, b):
    return None if a is None or not b else a / b


def issue14_rows(scs, have_nginx):
    """Issue 14's table, from the scenarios that ran: the proxy, nginx and
    their ratio (2.0 or less is the issue's goal for CPU per stream)."""

    def get(name, side, key):
        sc = scs.get(name)
        return None if not sc or side not in sc else sc[side].get(key)

    def share(name, side):
        return div(get(name, side, "rps"), get(name, "direct", "rps"))

    def added_ttfb(side):
        t = (scs.get("stream c1") or {}).get("ttfb") or {}
        return add(t.get(f"{side}_p50"), t.get("direct_p50"))

    def pct(v):
        return None if v is None else v * 100.0

    def mb(name, side):
        kb = get(name, side, "peak_rss_kb")
        return None if kb is None else kb / 1024

    rows = [
        ("CPU per stream, 1 client (ms)", get("stream c1", "proxy", "cpu_ms_per_req"),
         get("stream c1", "nginx", "cpu_ms_per_req"), 3),
        ("CPU per stream, 16 clients (ms)", get("stream c16", "proxy", "cpu_ms_per_req"),
         get("stream c16", "nginx", "cpu_ms_per_req"), 3),
        ("streams/s at 16 clients, share of the mock's own rate (%)", pct(share("stream c16", "proxy")),
         pct(share("stream c16", "nginx")), 1),
        ("added time to first event, 1 client, p50 (ms)", added_ttfb("proxy"), added_ttfb("nginx"), 3),
        ("1,000 slow streams: peak resident memory (MB)", mb("slow stream c1000", "proxy"),
         mb("slow stream c1000", "nginx"), 1),
        ("1,000 slow streams: share of the mock's own rate (%)", pct(share("slow stream c1000", "proxy")),
         pct(share("slow stream c1000", "nginx")), 1),
    ]
    rows = [row for row in rows if row[1] is not None]
    if not rows:
        return []
    out = ["", "Issue 14's rows (same run):", ""]
    if have_nginx:
        out += ["| measure | llm-proxy | nginx | llm-proxy/nginx |", "|---|---:|---:|---:|"]
    else:
        out += ["| measure | llm-proxy |", "|---|---:|"]
    for label, pv, nv, nd in rows:
        if have_nginx:
            out.append(f"| {label} | {f(pv, nd)} | {f(nv, nd)} | {f(div(pv, nv), 2)} |")
        else:
            out.append(f"| {label} | {f(pv, nd)} |")
    return out


def render(r):
    m = r["machine"]
    lines = [
        f"Mode {r['mode']}: {r['repeat']} run(s) per scenario, {r['duration_s']} s each "
        f"(slow stream c1000: 3,000 requests); medians over runs, errors summed. "
        f"{m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, load at start {' '.join(m['loadavg_at_start'])}.",
        "",
        "| scenario | direct req/s | proxy req/s | proxy/direct | proxy p50 / p90 / p99 ms | added p50 / p99 ms | errors | CPU ms/req proxy (mock) | peak RSS MB | peak threads |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for name, sc in r["scenarios"].items():
        d, p = sc["direct"], sc["proxy"]
        ratio = p["rps"] / d["rps"] if d["rps"] else None
        flag = " (mock-limited)" if ratio is not None and ratio >= 0.9 else ""
        lines.append(
            f"| {name} | {d['rps']:.0f} | {p['rps']:.0f} | {f(ratio)}{flag} | "
            f"{f(p['p50'])} / {f(p['p90'])} / {f(p['p99'])} | "
            f"{f(add(p['p50'], d['p50']), 3)} / {f(add(p['p99'], d['p99']), 3)} | "
            f"{p['errors'] + d['errors']} | {f(p['cpu_ms_per_req'], 3)} ({f(d['cpu_ms_per_req'], 3)}) | "
            f"{p['peak_rss_kb'] / 1024:.1f} | {p['peak_threads']} |"
        )
    ng = r.get("nginx", {})
    have_nginx = any("nginx" in sc for sc in r["scenarios"].values())
    if have_nginx:
        lines += [
            "",
            f"Same run through nginx {ng.get('version', '')} `proxy_pass` ({ng.get('processes', '?')} processes: "
            "master and one worker per core; `proxy_buffering off`, HTTP/1.1 kept-alive upstream connections). "
            "nginx's CPU, RSS and processes are summed over master and workers.",
            "",
            "| scenario | direct req/s | proxy req/s | nginx req/s | nginx/direct | proxy/nginx req/s | CPU ms/req proxy / nginx / mock | CPU proxy/nginx | peak RSS MB proxy / nginx | peak threads proxy / nginx procs | errors proxy / nginx |",
            "|---|---:|---:|---:|---:|---:|---|---:|---|---|---|",
        ]
        for name, sc in r["scenarios"].items():
            n = sc.get("nginx")
            if not n:
                continue
            d, p = sc["direct"], sc["proxy"]
            lines.append(
                f"| {name} | {d['rps']:.0f} | {p['rps']:.0f} | {n['rps']:.0f} | {f(div(n['rps'], d['rps']))} | "
                f"{f(div(p['rps'], n['rps']))} | "
                f"{f(p['cpu_ms_per_req'], 3)} / {f(n['cpu_ms_per_req'], 3)} / {f(d['cpu_ms_per_req'], 3)} | "
                f"{f(div(p['cpu_ms_per_req'], n['cpu_ms_per_req']), 1)}× | "
                f"{p['peak_rss_kb'] / 1024:.1f} / {n['peak_rss_kb'] / 1024:.1f} | "
                f"{p['peak_threads']} / {n['peak_threads']} | {p['errors']} / {n['errors']} |"
            )
    elif ng.get("skipped"):
        lines += ["", f"nginx column skipped: {ng['skipped']}."]
    nh = " | nginx p50 / p99 ms | nginx added p50 / p99 ms" if have_nginx else ""
    lines += [
        "",
        f"| time to first byte, 1 client | direct p50 / p99 ms | proxy p50 / p99 ms | added p50 / p99 ms{nh} | errors |",
        "|---|---|---|---" + ("|---|---" if have_nginx else "") + "|---:|",
    ]
    for name, sc in r["scenarios"].items():
        t = sc.get("ttfb")
        if not t:
            continue
        cols = ""
        if have_nginx:
            cols = (
                f" | {f(t.get('nginx_p50'), 3)} / {f(t.get('nginx_p99'), 3)} | "
                f"{f(add(t.get('nginx_p50'), t['direct_p50']), 3)} / {f(add(t.get('nginx_p99'), t['direct_p99']), 3)}"
            )
        lines.append(
            f"| {name} | {f(t['direct_p50'], 3)} / {f(t['direct_p99'], 3)} | "
            f"{f(t['proxy_p50'], 3)} / {f(t['proxy_p99'], 3)} | "
            f"{f(add(t['proxy_p50'], t['direct_p50']), 3)} / {f(add(t['proxy_p99'], t['direct_p99']), 3)}"
            f"{cols} | {t['errors'] + t.get('nginx_errors', 0)} |"
        )
    lines += issue14_rows(r["scenarios"], have_nginx)
    other = []
    for name, sc in r["scenarios"].items():
        vals = [sc[k].get("other_cpu_pct") for k in ("direct", "proxy", "nginx") if k in sc]
        vals = [v for v in vals if v is not None]
        if vals:
            other.append(f"{name} {max(vals):.0f}%" + (" (noisy)" if max(vals) > 10 else ""))
    if other:
        lines += [
            "",
            "Other work on the machine during the runs (CPU not used by the benchmark's own processes, "
            "% of the machine, the largest of the scenario's runs; over 10% marks CPU figures not to trust): "
            + ", ".join(other) + ".",
        ]
    lines += [
        "",
        f"Startup to first 200: median {f(r['startup_ms']['median'], 1)} ms over {len(r['startup_ms']['all'])} starts. "
        f"Resident memory: idle {r['idle_rss_kb'] / 1024:.1f} MB ({r['idle_threads']} threads), "
        f"6 s after the load {r['after_load_rss_kb'] / 1024:.1f} MB ({r['after_load_threads']} threads). "
        f"Run took {r['elapsed_s']:.0f} s.",
        "",
        "`(mock-limited)`: the proxy reached at least 90% of the mock's own rate in the same run, "
        "so the figure measures the mock (and the load generator), not the proxy's ceiling.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
