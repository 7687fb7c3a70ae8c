#!/usr/bin/env python3
"""CPU per operation of every tessera process during `ycsb-scale` runs.

Usage:
    bench/scripts/cpu_per_op.py OUT -- target/release/tessera-bench ycsb-scale --regions 1,256 --duration 20

Runs the given `ycsb-scale` command with `--metrics --out OUT` added, samples
each tessera process's CPU time (utime + stime from /proc) once a second,
and prints, for each region count, the CPU microseconds per operation of
the stores, routers, directories and the bench client between the
`before` and `after` metrics scrapes (load and run phases together; the
operations are the loaded records plus the run's operations). Name each
region count once: the scrapes of a repeated count overwrite each other.
"""

import glob
import json
import os
import subprocess
import sys
import time
from collections import defaultdict

CLK_TCK = os.sysconf("SC_CLK_TCK")
KINDS = ("tessera-store", "tessera-router", "tessera-directory", "tessera-bench")


def sample():
    """(pid, kind, cpu seconds) of every tessera process now running."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                exe = os.path.basename(f.read().split(b"\0")[0].decode())
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if exe in KINDS:
            # utime and stime are fields 14 and 15 of stat (1-based); the
            # split after the command name starts at field 3.
            cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
            out.append((pid, exe, cpu))
    return out


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    out = sys.argv[1]
    cmd = sys.argv[3:] + ["--metrics", "--out", out]
    samples = []  # (time, pid, kind, cpu)
    proc = subprocess.Popen(cmd)
    while proc.poll() is None:
        now = time.time()
        samples.extend((now, pid, kind, cpu) for pid, kind, cpu in sample())
        time.sleep(1)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited with {proc.returncode}")

    with open(os.path.join(out, "scale.json")) as f:
        points = json.load(f)["points"]
    for point in points:
        n = point["regions"]
        mdir = os.path.join(out, "metrics", f"{n}-regions")
        before = min(os.path.getmtime(p) for p in glob.glob(f"{mdir}/before/*.prom"))
        after = max(os.path.getmtime(p) for p in glob.glob(f"{mdir}/after/*.prom"))
        if [p["regions"] for p in points].count(n) > 1:
            sys.exit(f"{n} regions appears twice: name each region count once per run")
        by_pid = defaultdict(list)
        for t, pid, kind, cpu in samples:
            if before <= t <= after:
                by_pid[(pid, kind)].append(cpu)
        cpu = defaultdict(float)
        for (_, kind), values in by_pid.items():
            cpu[kind] += values[-1] - values[0]
        ops = point["load"]["operations"] + point["run"]["operations"]
        parts = ", ".join(
            f"{kind.removeprefix('tessera-')} {cpu[kind] / ops * 1e6:.0f}"
            for kind in KINDS
            if kind in cpu
        )
        total = sum(cpu.values()) / ops * 1e6
        print(
            f"{n:>4} regions: run {point['run']['ops_per_sec']:.0f} ops/s; "
            f"CPU per operation {total:.0f} µs ({parts})"
        )


if __name__ == "__main__":
    main()
