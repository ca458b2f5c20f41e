#!/usr/bin/env python3
"""Timing probes for scripts/bench.sh that a shell cannot take precisely.

  cold-start BIN RUNS PORT [ENV=VALUE ...]   exec -> first HTTP 200 on /health, median ms of RUNS
  healthcheck BIN RUNS PORT                  wall ms of `BIN healthcheck`, median of RUNS
  rss PID                                    VmRSS and VmHWM of a process, in KiB
  wait-http PORT PATH                        wait (at most 20 s) until GET PATH answers 200
  free-port                                  print a free TCP port on 127.0.0.1
  cpu PID                                    CPU seconds (user + system) used so far by PID and its children

Only 127.0.0.1 is contacted. Every wait is bounded.
"""
import os
import socket
import statistics
import subprocess
import sys
import time


def first_200(port, deadline, path="/health"):
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(request)
                head = s.recv(64)
                if head.startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            pass
    return False


def cold_start(binary, runs, port, env_pairs):
    env = {"HOST": "127.0.0.1", "PORT": str(port), "LOG_LEVEL": "WARN"}
    env.update(pair.split("=", 1) for pair in env_pairs)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ok = first_200(port, time.monotonic() + 10)
        elapsed = (time.perf_counter() - start) * 1000
        proc.terminate()
        proc.wait(timeout=10)
        if not ok:
            sys.exit("cold start: no 200 within 10 s")
        samples.append(elapsed)
    print(f"{statistics.median(samples):.2f}")


def healthcheck(binary, runs, port):
    env = {"PORT": str(port)}
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        code = subprocess.call([binary, "healthcheck"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append((time.perf_counter() - start) * 1000)
        if code != 0:
            sys.exit(f"healthcheck exited {code}")
    print(f"{statistics.median(walls):.2f}")


def rss(pid):
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = rest.split()[0]
    print(values.get("VmRSS", "0"), values.get("VmHWM", "0"))


def cpu_seconds(pid):
    """utime + stime of PID and, recursively, its child processes (nginx's workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    todo = [str(pid)]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/stat") as stat:
                # The command name may hold spaces; the fields after its closing parenthesis are fixed.
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo.extend(children.read().split())
        except OSError:
            continue
    print(f"{total / tick:.2f}")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "cold-start":
        cold_start(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
    elif cmd == "healthcheck":
        healthcheck(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "rss":
        rss(sys.argv[2])
    elif cmd == "wait-http":
        if not first_200(int(sys.argv[2]), time.monotonic() + 20, sys.argv[3]):
            sys.exit(f"no 200 from 127.0.0.1:{sys.argv[2]}{sys.argv[3]} within 20 s")
    elif cmd == "cpu":
        cpu_seconds(sys.argv[2])
    elif cmd == "free-port":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            print(s.getsockname()[1])
    else:
        sys.exit(__doc__)
