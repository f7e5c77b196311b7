#!/usr/bin/python3
"""Turns bench/run.sh's raw results into the markdown of docs/performance.md: medians per server and workload, and
ratios to nbdkit (throughput: higher is better; latency: lower is better)."""
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict

path, rounds, runtime = sys.argv[1], sys.argv[2], sys.argv[3]
rows = defaultdict(list)
for line in open(path):
    medium, server, name, rnd, iops, mibs, lat, p99 = line.rstrip("\n").split("\t")
    rows[(medium, name, server)].append((float(iops), float(mibs), float(lat), float(p99)))

servers = ["netswapd", "nbdkit", "nbd-server", "qemu-nbd"]
media = sorted({k[0] for k in rows}, key=lambda m: ["tmpfs", "disk"].index(m) if m in ("tmpfs", "disk") else 9)
workloads = []
for k in rows:
    if k[1] not in workloads:
        workloads.append(k[1])


def med(medium, name, server, index):
    values = [r[index] for r in rows.get((medium, name, server), [])]
    return statistics.median(values) if values else float("nan")


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
print("2-core machine; compare within a table, not across runs.\n")
print(f"- Machine: {cpu()}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, kernel {platform.release()}")
print(f"- Peers: {version(['nbdkit', '--version'])}; {version(['qemu-nbd', '--version'])}; nbd-server from Debian 12; {version(['fio', '--version'])}")
print("- netswapd: native AOT build from `make dist`\n")
for medium in media:
    print(f"## Image on {medium}\n")
    print("| workload | server | IOPS | MiB/s | mean latency µs | p99 latency µs | IOPS vs nbdkit | mean latency vs nbdkit |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in workloads:
        base_iops = med(medium, name, "nbdkit", 0)
        base_lat = med(medium, name, "nbdkit", 2)
        for server in servers:
            iops, mibs, lat, p99 = (med(medium, name, server, i) for i in range(4))
            print(f"| {name} | {server} | {iops:,.0f} | {mibs:,.1f} | {lat:,.1f} | {p99:,.1f} | {iops / base_iops:.2f} | {lat / base_lat:.2f} |")
    print()

notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "NOTES.md")
if os.path.exists(notes):
    print(open(notes).read().rstrip())
