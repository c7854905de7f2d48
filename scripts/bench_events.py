#!/usr/bin/env python3
"""Events log under a flood, on loopback only.

Floods `workbench serve` with N events (8 keep-alive connections, the
human's `reading` in the middle), then reports: events/s accepted, RSS,
bytes on disk, and the latency of finding the reading by name from cursor
0 (a scan of the log on disk) against the baseline of reading the newest
events (memory), both medians of 7, in the same run; and the restart time
with the full log against an empty project's.

    scripts/bench_events.py [BIN] [--events N] [--dir D]

BIN defaults to target/release/workbench (build it first:
`cargo build --release`). D is where the temp home goes (default /tmp; try
/dev/shm to leave the disk out). The client is Python: its throughput is
the client's as much as the server's; the machine is shared, so numbers
are noisy: run twice.
"""

import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def start(bin_, home, name):
    env = dict(os.environ, WORKBENCH_HOME=home, HOME=home)
    env.pop("WORKBENCH_HOST", None)
    t0 = time.monotonic()
    p = subprocess.Popen(
        [bin_, "serve", name, "--host", "127.0.0.1", "--port", "0",
         "--events-rate", "10000000", "--events-client-rate", "10000000"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = p.stdout.readline().decode()
    ready = time.monotonic() - t0
    assert "serving" in line, line
    info = json.load(open(os.path.join(home, name, ".server.json")))
    return p, info["port"], info["token"], ready


def rss_kb(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])
    return 0


def flood(port, n, conns, token):
    def worker(count, out):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(count):
            c.request("POST", "/api/event", body=json.dumps({"name": "tick", "data": i}),
                      headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
        out.append(count)
    done = []
    ts = [threading.Thread(target=worker, args=(n // conns, done)) for _ in range(conns)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done), time.monotonic() - t0


def get(port, token, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t0 = time.monotonic()
    c.request("GET", path, headers={"Authorization": "Bearer " + token})
    r = c.getresponse()
    body = json.loads(r.read())
    return time.monotonic() - t0, body


def main():
    args = sys.argv[1:]
    n = 100_000
    base = "/tmp"
    bin_ = "target/release/workbench"
    while args:
        a = args.pop(0)
        if a == "--events":
            n = int(args.pop(0))
        elif a == "--dir":
            base = args.pop(0)
        else:
            bin_ = a
    home = tempfile.mkdtemp(prefix="wb-bench-events-", dir=base)
    try:
        p, port, token, _ = start(bin_, home, "b")
        sent1, t1 = flood(port, n // 2, 8, token)
        c = http.client.HTTPConnection("127.0.0.1", port)
        c.request("POST", "/api/event", body='{"name":"reading","data":{"v":5.02}}',
                  headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
        reading_seq = json.loads(c.getresponse().read())["seq"]
        sent2, t2 = flood(port, n // 2, 8, token)
        rate = (sent1 + sent2) / (t1 + t2)
        rss = rss_kb(p.pid)
        disk = sum(os.path.getsize(os.path.join(home, "b", f))
                   for f in os.listdir(os.path.join(home, "b"))
                   if f.startswith("events") and f.endswith(".jsonl"))
        last = sent1 + sent2 + 1
        scan, newest = [], []
        for _ in range(7):
            dt, body = get(port, token, "/api/events?since=0&names=reading")
            assert body["events"][0]["seq"] == reading_seq, body
            scan.append(dt)
            dt, body = get(port, token, f"/api/events?since={last - 100}")
            assert len(body["events"]) == 100
            newest.append(dt)
        p.terminate()
        p.wait()
        p2, _, _, ready_full = start(bin_, home, "b")
        rss_restart = rss_kb(p2.pid)
        p2.terminate()
        p2.wait()
        p3, _, _, ready_empty = start(bin_, home, "empty")
        p3.terminate()
        p3.wait()
        ms = lambda xs: statistics.median(xs) * 1000
        print(json.dumps({
            "events": sent1 + sent2 + 1,
            "flood_events_per_s": round(rate),
            "rss_after_flood_kib": rss,
            "events_bytes_on_disk": disk,
            "find_reading_from_0_ms_median": round(ms(scan), 2),
            "newest_100_ms_median": round(ms(newest), 2),
            "scan_over_memory_ratio": round(ms(scan) / ms(newest), 1),
            "restart_ready_full_log_ms": round(ready_full * 1000, 1),
            "restart_ready_empty_ms": round(ready_empty * 1000, 1),
            "rss_after_restart_kib": rss_restart,
        }, indent=1))
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
