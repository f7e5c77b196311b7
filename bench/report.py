#!/usr/bin/python3
"""Turns bench/run.sh's raw results into the markdown of docs/performance.md: medians per server and workload, and
ratios to nbdkit (throughput: higher is better; latency: lower is better)."""
import math
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict

path, rounds, runtime = sys.argv[1], sys.argv[2], sys.argv[3]
rows = defaultdict(list)
for line in open(path):
    fields = line.rstrip("\n").split("\t")
    medium, server, name, rnd = fields[:4]
    # iops, MiB/s, mean and p99 latency, fio's CPU %, the server's CPU µs per request ("nan" where not measured).
    rows[(medium, name, server)].append(tuple(float(v) for v in fields[4:]))

servers = [s for s in ["netswapd", "netswapd-baseline", "nbdkit", "nbd-server", "qemu-nbd"] if any(k[2] == s for k in rows)]
media = sorted({k[0] for k in rows}, key=lambda m: ["tmpfs", "disk"].index(m) if m in ("tmpfs", "disk") else 9)
workloads = []
for k in rows:
    if k[1] not in workloads:
        workloads.append(k[1])


def med(medium, name, server, index):
    values = [r[index] for r in rows.get((medium, name, server), []) if not math.isnan(r[index])]
    return statistics.median(values) if values else float("nan")


def figure(value, fmt):
    return "n/a" if math.isnan(value) else format(value, fmt)


def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.splitlines()[0].strip()
    except Exception:
        return "?"


print("# Performance\n")
print("Measured by `make bench` (bench/run.sh): every server serves the same raw image, fio's nbd engine (libnbd) drives")
print(f"each in turn, {rounds} rounds of {runtime} s per workload, medians reported. Ratios are to nbdkit's file plugin:")
print("for IOPS and MiB/s above 1.00 is better, for latency below 1.00 is better. Figures vary between runs on a shared")
print("2-core machine; compare within a table, not across runs. Two columns say where the limit was: fio's own CPU")
print("(user + system, % of one core; near 100 % the client cannot go faster, whatever the server) and the server's CPU")
print("time per request (all its threads and processes, from a cgroup of its own; lower is better).\n")
print(f"- Machine: {cpu()}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, kernel {platform.release()}")
print(f"- Peers: {version(['nbdkit', '--version'])}; {version(['qemu-nbd', '--version'])}; nbd-server from Debian 12; {version(['fio', '--version'])}")
print("- netswapd: native AOT build from `make dist`" + ("; netswapd-baseline: an earlier build (BASELINE=), same run" if "netswapd-baseline" in servers else "") + "\n")
for medium in media:
    print(f"## Image on {medium}\n")
    print("| workload | server | IOPS | MiB/s | mean latency µs | p99 latency µs | IOPS vs nbdkit | mean latency vs nbdkit | fio CPU % | server CPU µs/request |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in workloads:
        base_iops = med(medium, name, "nbdkit", 0)
        base_lat = med(medium, name, "nbdkit", 2)
        for server in servers:
            iops, mibs, lat, p99, client, server_us = (med(medium, name, server, i) for i in range(6))
            print(f"| {name} | {server} | {iops:,.0f} | {mibs:,.1f} | {lat:,.1f} | {p99:,.1f} | {iops / base_iops:.2f} | {lat / base_lat:.2f}"
                  f" | {figure(client, '.0f')} | {figure(server_us, '.1f')} |")
    print()

notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "NOTES.md")
if os.path.exists(notes):
    print(open(notes).read().rstrip())
