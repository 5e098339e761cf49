#!/usr/bin/env python3
"""Replays the simulator's side of load reports with the current binary.

    scripts/bench-resim.py bench-load/*/

For each report folder, reads report.json (the trace, speed, policy settings
and the model the run measured), runs `kumulus sim --json` on the same
compressed trace with the same settings, and prints the live figures beside
the simulator's then (in the report) and now. A change to the model can then
be checked against live runs already made, without running them again.

The binary is $KUMULUS_BENCH_BIN, or target/release/kumulus under
$CARGO_TARGET_DIR (default: target).
"""
import csv
import json
import os
import subprocess
import sys
import tempfile


def binary():
    if os.environ.get("KUMULUS_BENCH_BIN"):
        return os.environ["KUMULUS_BENCH_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    return os.path.join(target, "release", "kumulus")


def compressed(trace_path, speed, out):
    with open(trace_path) as f:
        rows = list(csv.DictReader(f))
    w = csv.writer(out)
    w.writerow(["arrival_secs", "service_secs"])
    for r in rows:
        w.writerow([float(r["arrival_secs"]) / speed, float(r["service_secs"]) / speed])
    out.flush()


def assumed_startup(p, m):
    """The start-up the live policy assumed: in the report since the model
    records it; for older reports, the measured one where the autoscaler
    measured it (its policy then used the measures), else the setting."""
    if m.get("policy_startup_secs") is not None:
        return m["policy_startup_secs"]
    if m.get("ready_from") == "measured":
        return m["ready_secs"]
    return p["startup_secs"]


def sim_args(report):
    p, m = report["policy"], report["model"]
    args = [
        "--policy", p["policy"],
        "--slo-wait-secs", str(p["slo_wait_secs"]),
        "--startup-secs", str(assumed_startup(p, m)),
        "--period-secs", str(p["period_secs"]),
        "--min-workers", str(p["min_workers"]),
        "--max-workers", str(p["max_workers"]),
        "--partition-factor", str(p["partition_factor"]),
        "--lag-threshold", str(p["lag_threshold"]),
        "--slots", str(p["slots"]),
        "--stabilization-secs", str(p["stabilization_secs"]),
        "--cooldown-secs", str(p["cooldown_secs"]),
        "--idle-grace-secs", str(p["idle_grace_secs"]),
        "--rebalance-secs", str(m["rebalance_secs"]),
        "--queue", m["queue"],
        "--overhead-secs", str(m["overhead_secs"]),
        "--handover-secs", str(m.get("handover_secs", 0.0)),
        "--ready-secs", str(m["ready_secs"]),
    ]
    if m.get("first_decision_secs") is not None:
        args += ["--first-decision-secs", str(m["first_decision_secs"])]
    if m.get("partitions"):
        args += ["--partitions", str(m["partitions"])]
    return args


def ratio(a, b):
    return f"{a / b:.2f}x" if b else "-"


def main(dirs):
    if not dirs:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    keys = [("slo_violation_pct", "over SLO %"), ("wait_p95_secs", "p95 wait s"),
            ("worker_seconds", "worker-s"), ("scale_events", "scale events")]
    print("| report | figure | live | sim then | sim now | live / sim now |")
    print("| --- | --- | --- | --- | --- | --- |")
    for d in dirs:
        path = os.path.join(d, "report.json")
        with open(path) as f:
            report = json.load(f)
        with tempfile.NamedTemporaryFile("w", suffix=".csv") as t:
            compressed(report["trace"], float(report["speed"]), t)
            out = subprocess.run([binary(), "sim", "--trace", t.name, "--json", *sim_args(report)],
                                 check=True, capture_output=True, text=True).stdout
        now = json.loads(out)
        name = os.path.basename(os.path.normpath(d))
        for k, label in keys:
            live, then = report["live"][k], report["sim"][k]
            print(f"| {name} | {label} | {live:.4g} | {then:.4g} | {now[k]:.4g} | {ratio(live, now[k])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
