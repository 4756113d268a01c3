#!/usr/bin/env python3
"""The script tests' HTTP client (test-docker.sh, test-systemd.sh).

    http_client.py http METHOD URL [BODY]          prints "STATUS BODY"
    http_client.py stream METHOD URL BODY OUTFILE  writes the body to OUTFILE
                                                   as it arrives, prints STATUS

An HTTP error prints its status and body; anything else prints 0 and the
error. No proxy from the environment.
"""
import sys, urllib.request, urllib.error
mode, method, url = sys.argv[1], sys.argv[2], sys.argv[3]
data = sys.argv[4].encode() if len(sys.argv) > 4 and sys.argv[4] else None
out = sys.argv[5] if len(sys.argv) > 5 else None
req = urllib.request.Request(url, data=data, method=method,
                             headers={"Content-Type": "application/json"})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(req, timeout=60) as r:
        if mode == "stream":
            with open(out, "wb", buffering=0) as f:
                while True:
                    chunk = r.read1(65536)
                    if not chunk:
                        break
                    f.write(chunk)
            print(r.status)
        else:
            print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except Exception as e:
    print(0, type(e).__name__, e)
