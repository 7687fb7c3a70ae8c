#!/usr/bin/env python3
"""What changed between two sets of Prometheus scrapes.

Usage: metrics_delta.py BEFORE_DIR AFTER_DIR [REGEX] [--per-op N]

BEFORE_DIR and AFTER_DIR hold one `<process>.prom` file each (as written by
`tessera-bench ycsb-scale --metrics`). Prints, per process, every counter
that moved and every histogram that took samples (count and mean), for the
metric names matching REGEX. With `--per-op N` counters are also shown
divided by N (the operations the workload ran).
"""
import os
import re
import sys


def parse(path):
    """{(name, labels): value} of the samples of one scrape."""
    out = {}
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
            if not m:
                continue
            try:
                out[(m.group(1), m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    per_op = None
    if "--per-op" in sys.argv:
        per_op = float(sys.argv[sys.argv.index("--per-op") + 1])
        args = [a for a in args if a != sys.argv[sys.argv.index("--per-op") + 1]]
    if len(args) < 2:
        sys.exit(__doc__)
    before_dir, after_dir = args[0], args[1]
    pattern = re.compile(args[2] if len(args) > 2 else ".")
    for name in sorted(os.listdir(after_dir)):
        if not name.endswith(".prom"):
            continue
        after = parse(os.path.join(after_dir, name))
        b_path = os.path.join(before_dir, name)
        before = parse(b_path) if os.path.exists(b_path) else {}
        lines = []
        for (metric, labels), value in sorted(after.items()):
            if not pattern.search(metric) or metric.endswith("_bucket"):
                continue
            delta = value - before.get((metric, labels), 0.0)
            if metric.endswith("_sum"):
                base = metric[: -len("_sum")]
                n = after.get((base + "_count", labels), 0.0) - before.get(
                    (base + "_count", labels), 0.0
                )
                if n > 0:
                    lines.append(f"  {base}{labels}: {n:.0f} samples, mean {delta / n:.6g}")
            elif metric.endswith("_count") or delta == 0:
                continue
            elif metric.endswith("_total"):
                extra = f"  ({delta / per_op:.3f}/op)" if per_op else ""
                lines.append(f"  {metric}{labels}: +{delta:.0f}{extra}")
        if lines:
            print(name[: -len(".prom")])
            print("\n".join(lines))


if __name__ == "__main__":
    main()
