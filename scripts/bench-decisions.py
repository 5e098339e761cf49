#!/usr/bin/env python3
"""Lines up a load report's two decision logs, live and simulated.

    scripts/bench-decisions.py bench-load/cluster-step-kumulus-x4/ [STEP_SECS]

Reads the report's decisions.csv (written by `kumulus load`: the
autoscaler's own decisions over the run, then the simulator's) and prints,
per side, how often it decided, scaled up and down, its mean pool and the
rules that set the count; then, every STEP_SECS (default: a tenth of the
run), what each side saw and decided at the decision nearest that time:
workers, desired, recommended, waiting, running, arrivals.
"""
import csv
import os
import sys


def load(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["at_secs"] = float(r["at_secs"])
        for k in ("workers", "desired", "recommended", "waiting", "running", "arrivals"):
            r[k] = int(r[k])
    return {s: [r for r in rows if r["source"] == s] for s in ("live", "sim")}


def summary(side):
    if not side:
        return "no decisions"
    up = sum(1 for r in side if r["desired"] > r["workers"])
    down = sum(1 for r in side if r["desired"] < r["workers"])
    span = side[-1]["at_secs"] - side[0]["at_secs"]
    # The pool each decision asked for, held until the next one.
    held = sum(a["desired"] * (b["at_secs"] - a["at_secs"]) for a, b in zip(side, side[1:]))
    rules = {}
    for r in side:
        rules[r["rule"]] = rules.get(r["rule"], 0) + 1
    stab = sum(1 for r in side if "held at" in r["reason"])
    load = sum(1 for r in side if "kept at the load" in r["reason"])
    return (
        f"{len(side)} decisions, up {up}, down {down}; mean pool asked {held / span if span else 0:.2f}; "
        f"rules {dict(sorted(rules.items()))}; held by stabilization {stab}, kept at the load {load}"
    )


def nearest(side, t):
    return min(side, key=lambda r: abs(r["at_secs"] - t)) if side else None


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    path = os.path.join(sys.argv[1], "decisions.csv")
    if not os.path.isfile(path):
        sys.exit(f"{path}: no decision log (reports before commit 47c982f have none)")
    sides = load(path)
    for s in ("live", "sim"):
        print(f"{s}: {summary(sides[s])}")
    every = [r for s in sides.values() for r in s]
    if not every:
        return
    end = max(r["at_secs"] for r in every)
    step = float(sys.argv[2]) if len(sys.argv) > 2 else max(end / 10, 1.0)
    print()
    print("| t s | live: workers, desired, recommended | sim | live: waiting, running, arrivals | sim |")
    print("| --- | --- | --- | --- | --- |")
    t = 0.0
    while t <= end + 1e-9:
        a, b = nearest(sides["live"], t), nearest(sides["sim"], t)
        fmt = lambda r, ks: ", ".join(str(r[k]) for k in ks) if r else "-"
        pool = ("workers", "desired", "recommended")
        seen = ("waiting", "running", "arrivals")
        print(f"| {t:.0f} | {fmt(a, pool)} | {fmt(b, pool)} | {fmt(a, seen)} | {fmt(b, seen)} |")
        t += step


if __name__ == "__main__":
    main()
