#!/usr/bin/env python3
"""Burst of simultaneous WebSocket handshakes against `workbench serve`
(release build): time from connect to the 101 answer, per handshake.
This is the check that caught tiny_http's task-pool stall (max 10 s);
see vendor/tiny_http/WORKBENCH-PATCH.md. Loopback only, bounded.

usage: scripts/bench_handshakes.py [rounds=5] [clients=200]
"""
import base64, json, os, socket, subprocess, sys, tempfile, threading, time

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
clients = int(sys.argv[2]) if len(sys.argv) > 2 else 200
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=root, check=True)
home = tempfile.mkdtemp(prefix="wb-hs-")
srv = subprocess.Popen([os.path.join(root, "target/release/workbench"), "serve", "hs", "--host", "127.0.0.1", "--port", "0"],
                       env={**os.environ, "WORKBENCH_HOME": home}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
try:
    srv.stdout.readline()
    port = json.load(open(os.path.join(home, "hs", ".server.json")))["port"]

    def one(out):
        t = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        s.recv(64)
        out.append(time.perf_counter() - t)
        time.sleep(2)
        s.close()

    for r in range(rounds):
        res = []
        ts = [threading.Thread(target=one, args=(res,)) for _ in range(clients)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        res.sort()
        print(f"round {r + 1}: {len(res)} handshakes, p50 {res[len(res) // 2] * 1e3:.1f} ms, "
              f"p99 {res[int(len(res) * 0.99)] * 1e3:.1f} ms, max {res[-1] * 1e3:.1f} ms")
finally:
    srv.terminate()
    srv.wait(timeout=10)
