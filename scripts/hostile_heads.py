#!/usr/bin/env python3
"""Hostile heads against a running service: docs/limits.md's "1,000 clients x 400 KB unfinished heads" row.

CLIENTS clients each send up to HEAD_BYTES of an unfinished request head (long header lines, never the blank
line) and hold the connection, then do it again on a new connection once the service refuses it, for SECONDS;
meanwhile a probe in a process of its own asks GET /health on a new connection PROBES times, one after another. Prints the probe's latencies (median, p99, max), how each hostile client ended (431, closed,
reset while sending) and the service's peak resident memory (VmHWM of PID).

Usage: scripts/hostile_heads.py HOST:PORT PID [CLIENTS] [HEAD_BYTES] [PROBES] [SECONDS]
       (defaults 1000, 400000, 200, 5; run with `ulimit -n` above CLIENTS)
Python's standard library only; everything it opens is on the address given.
"""

import asyncio
import multiprocessing
import socket
import statistics
import sys
import time


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def hostile_client(host, port, head_bytes, stats, until):
    """Sends unfinished heads one connection after another until `until` (a refused head ends its connection)."""
    while time.perf_counter() < until:
        await hold_head(host, port, head_bytes, stats)


async def hold_head(host, port, head_bytes, stats):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        stats["connect_failed"] += 1
        await asyncio.sleep(0.01)
        return
    line = b"X-Filler: " + b"a" * 4000 + b"\r\n"
    sent = 0
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        while sent < head_bytes:
            writer.write(line)
            sent += len(line)
            await writer.drain()
        stats["sent whole"] += 1
        answer = await reader.read(64)
        stats["431" if answer.startswith(b"HTTP/1.1 431") else "closed"] += 1
    except (ConnectionError, OSError):
        stats["reset"] += 1
    finally:
        writer.close()


def probe(host, port):
    """One GET /health on a new connection, with blocking sockets."""
    start = time.perf_counter()
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    end = time.perf_counter()
    elapsed = (end - start) * 1000
    if not answer.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"/health answered {answer[:40]!r}")
    return elapsed, end


def probe_many(host, port, count):
    return [probe(host, port) for _ in range(count)]


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    pid = int(sys.argv[2])
    clients = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    head_bytes = int(sys.argv[4]) if len(sys.argv) > 4 else 400_000
    probes = int(sys.argv[5]) if len(sys.argv) > 5 else 200
    seconds = float(sys.argv[6]) if len(sys.argv) > 6 else 5.0
    stats = {"sent whole": 0, "431": 0, "closed": 0, "reset": 0, "connect_failed": 0}
    rss_before = vm_hwm_kib(pid)
    # The probe runs in a process of its own, started before any hostile connection exists: this process's
    # event loop, busy with the hostile clients, must not delay it, and it must hold none of their sockets.
    pool = multiprocessing.Pool(1)
    until = time.perf_counter() + seconds
    tasks = [asyncio.create_task(hostile_client(host, port, head_bytes, stats, until)) for _ in range(clients)]
    await asyncio.sleep(min(1.0, seconds / 4))
    probing = pool.apply_async(probe_many, (host, port, probes))
    while not probing.ready():
        await asyncio.sleep(0.05)
    answered = probing.get()
    pool.close()
    probes_over = time.perf_counter()
    await asyncio.gather(*tasks)
    if probes_over > until:
        print(f"the probes outlasted the attack by {probes_over - until:.1f} s: raise SECONDS", file=sys.stderr)
    latencies = [elapsed for elapsed, _ in answered]
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"clients {clients} x {head_bytes} B heads: {stats}; /health x{probes} during the attack: median {statistics.median(latencies):.2f} ms, "
        f"p99 {p99:.2f} ms, max {latencies[-1]:.2f} ms; VmHWM {rss_before / 1024:.1f} -> "
        f"{vm_hwm_kib(pid) / 1024:.1f} MiB"
    )


asyncio.run(main())
