#!/usr/bin/env python3
# Instructions the proxy executes per request, deterministic (no timing):
# the proxy binary under callgrind, N sequential requests of one kind
# against llm-proxy-mock; per request = (Ir(N2) - Ir(N1)) / (N2 - N1), so
# startup and shutdown cancel out. JSON requests on one keep-alive
# connection, streams on a new connection each (as the proxy closes them).
#
# Usage: scripts/callgrind_per_request.py PROXY_BINARY MOCK_PORT LABEL [OUTDIR]
#   (start target/release/llm-proxy-mock --port N first; needs valgrind)
import http.client, json, os, signal, subprocess, sys, time, re, socket

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def run(binary, kind, n, mock_port, tag):
    port = free_port()
    cfg = f"{OUT}/cfg_{tag}.yaml"
    open(cfg, "w").write(f"""server: {{host: 127.0.0.1, port: {port}, log_level: info}}
providers:
  mock: {{type: openai, base_url: 'http://127.0.0.1:{mock_port}/v1', api_key: sk-bench}}
models:
  m:
    providers:
      mock: {{priority: 0}}
""")
    out = f"{OUT}/cg_{tag}.out"
    log = open(f"{OUT}/log_{tag}.txt", "w")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "--config", cfg],
                         stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5); c.request("GET", "/health"); c.getresponse().read(); c.close(); break
        except OSError:
            time.sleep(0.1)
    body = json.dumps({"model": "m", "stream": kind == "stream", "messages": [{"role": "user", "content": "hi"}]})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(n):
        if kind == "stream":
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        r = c.getresponse(); data = r.read()
        assert r.status == 200, (r.status, data[:200])
    p.send_signal(signal.SIGTERM); p.wait(timeout=120)
    txt = open(out).read()
    m = re.search(r"^summary:\s+(\d+)", txt, re.M) or re.search(r"^totals:\s+(\d+)", txt, re.M)
    return int(m.group(1))

binary, mock_port, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
OUT = sys.argv[4] if len(sys.argv) > 4 else "target/callgrind"
os.makedirs(OUT, exist_ok=True)
N1, N2 = 50, 250
for kind in ["json", "stream"]:
    a = run(binary, kind, N1, mock_port, f"{label}_{kind}_{N1}")
    b = run(binary, kind, N2, mock_port, f"{label}_{kind}_{N2}")
    print(f"{label} {kind}: Ir(N={N1})={a} Ir(N={N2})={b} per request={(b-a)/(N2-N1):.0f}", flush=True)
