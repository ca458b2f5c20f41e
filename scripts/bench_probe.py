#!/usr/bin/env python3
"""Timing probes for scripts/bench.sh that a shell cannot take precisely.

  cold-start BIN RUNS PORT [ENV=VALUE ...]   exec -> first HTTP 200 on /health, median ms of RUNS
  healthcheck BIN RUNS PORT                  wall ms of `BIN healthcheck`, median of RUNS
  rss PID                                    VmRSS and VmHWM of a process, in KiB
  wait-http PORT PATH [CA_FILE]              wait (at most 20 s) until GET PATH answers 200 (over TLS to
                                             "localhost", trusting CA_FILE, when one is given)
  free-port                                  print a free TCP port on 127.0.0.1
  cpu PID                                    CPU seconds (user + system) used so far by PID and its children
  stats PORT [CA_FILE]                       the fake RiskShield's counters: "requests connections"
  listen-drops                               the kernel's TcpExtListenOverflows and TcpExtListenDrops
  wait-json FILE KEY                         wait (at most 20 s) for a JSON line in FILE; print its KEY

Only 127.0.0.1 is contacted. Every wait is bounded.
"""
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time


def connect(port, ca_file=None, timeout=1):
    """A connection to 127.0.0.1:PORT; over TLS (server name "localhost", CA_FILE trusted) when given."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if ca_file is None:
        return sock
    context = ssl.create_default_context(cafile=ca_file)
    return context.wrap_socket(sock, server_hostname="localhost")


def get(port, path, ca_file=None, timeout=5):
    """The raw answer to GET PATH (Connection: close)."""
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    with connect(port, ca_file, timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


def first_200(port, deadline, path="/health", ca_file=None):
    while time.monotonic() < deadline:
        try:
            if get(port, path, ca_file, timeout=1).startswith(b"HTTP/1.1 200"):
                return True
        except OSError:
            # No pause: the cold-start probe measures to the millisecond.
            pass
    return False


def stats(port, ca_file=None):
    body = json.loads(get(port, "/stats", ca_file).split(b"\r\n\r\n", 1)[1])
    print(body["requests"], body["connections"])


def listen_drops():
    """TcpExtListenOverflows and TcpExtListenDrops from /proc/net/netstat (what `nstat` reads)."""
    with open("/proc/net/netstat") as netstat:
        lines = netstat.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            print(table.get("ListenOverflows", "0"), table.get("ListenDrops", "0"))
            return
    print("0 0")


def wait_json(path, key, deadline):
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("{"):
                        print(json.loads(line)[key])
                        return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    sys.exit(f"no JSON line in {path} within 20 s")


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
        ca = sys.argv[4] if len(sys.argv) > 4 else None
        if not first_200(int(sys.argv[2]), time.monotonic() + 20, sys.argv[3], ca):
            sys.exit(f"no 200 from 127.0.0.1:{sys.argv[2]}{sys.argv[3]} within 20 s")
    elif cmd == "stats":
        stats(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
    elif cmd == "listen-drops":
        listen_drops()
    elif cmd == "wait-json":
        wait_json(sys.argv[2], sys.argv[3], time.monotonic() + 20)
    elif cmd == "cpu":
        cpu_seconds(sys.argv[2])
    elif cmd == "free-port":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            print(s.getsockname()[1])
    else:
        sys.exit(__doc__)
