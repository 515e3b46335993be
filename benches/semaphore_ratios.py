#!/usr/bin/env python3
"""Runs the semaphore bench several times and prints each run's ratios and their medians.

    python3 benches/semaphore_ratios.py [RUNS]      # from the workspace root; RUNS defaults to 3

Each run is `cargo bench -p ace-benches --bench semaphore`. A ratio compares two figures of the
same run (criterion's median times, from target/criterion/<group>/<bench>/new/estimates.json),
and comes with the 1-minute load average the bench printed before ACE's figure. Standard library
only.
"""
import json
import os
import re
import statistics
import subprocess
import sys

# (label, group, numerator bench, denominator bench, goal): each ratio is time(num) / time(den),
# so for "× throughput" figures the peer is the numerator.
RATIOS = [
    ("blocking 8 threads / 2 permits: × tuned Mutex+Condvar (throughput)",
     "blocking", "mutex_condvar_tuned", "ace", ">= 1.5"),
    ("blocking 8 threads / 2 permits: × textbook Mutex+Condvar (throughput)",
     "blocking", "mutex_condvar", "ace", "reference"),
    ("blocking, two busy threads: × tuned Mutex+Condvar (throughput)",
     "blocking_busy_cores", "mutex_condvar_tuned", "ace", ">= 1.0"),
    ("blocking 64 threads / 2 permits: × tuned Mutex+Condvar (throughput)",
     "blocking_64_threads", "mutex_condvar_tuned", "ace", ">= 1.0"),
    ("contended multi_thread (2 workers): × tokio (throughput)",
     "contended_multi_thread", "tokio", "ace", ">= 1.3"),
    ("contended current_thread: × tokio (throughput)",
     "contended_current_thread", "tokio", "ace", "reference"),
    ("contended current_thread: time / two-yield floor",
     "contended_current_thread", "ace", "floor_two_yields", "<= 1.10"),
    ("uncontended acquire + release: time / tokio",
     "uncontended", "ace", "tokio", "<= 0.5"),
    ("set_limit: time / tokio add_permits + forget_permits",
     "set_limit", "ace", "tokio", "reference"),
]


def target_dir():
    if "CARGO_TARGET_DIR" in os.environ:
        return os.environ["CARGO_TARGET_DIR"]
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                          check=True, capture_output=True, text=True).stdout
    return json.loads(meta)["target_directory"]


def median_ns(root, group, bench):
    path = os.path.join(root, "criterion", group, bench, "new", "estimates.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)["median"]["point_estimate"]


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    root = target_dir()
    table = {label: [] for label, *_ in RATIOS}
    for run in range(1, runs + 1):
        out = subprocess.run(["cargo", "bench", "-p", "ace-benches", "--bench", "semaphore"],
                             check=True, capture_output=True, text=True)
        loads = dict((m.group(2), m.group(1)) for m in
                     re.finditer(r"load average (\S+) before (\S+)", out.stdout + out.stderr))
        print(f"run {run}")
        for label, group, num, den, goal in RATIOS:
            ratio = median_ns(root, group, num) / median_ns(root, group, den)
            load = loads.get(f"{group}/ace", "?")
            table[label].append((ratio, load))
            print(f"  {ratio:6.2f}  load {load:>5}  {label} (goal {goal})")
    print(f"medians of {runs} runs")
    for label, group, num, den, goal in RATIOS:
        values = table[label]
        ratios = [r for r, _ in values]
        print(f"  {statistics.median(ratios):6.2f}  range {min(ratios):.2f}-{max(ratios):.2f}"
              f"  loads {','.join(l for _, l in values)}  {label} (goal {goal})")


if __name__ == "__main__":
    main()
