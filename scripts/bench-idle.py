#!/usr/bin/env python3
"""Idle capacity while jobs waited, from `kumulus load` reports.

    scripts/bench-idle.py bench-load/cluster-steady-kumulus-x4 [...]

For each report folder: how long some job waited (submitted, not started),
the share of that time during which fewer jobs ran than there were workers
(a worker was idle while a job waited: the job sat where no free worker
could take it, or a free worker had not taken it yet), and the workers'
utilization (time jobs held a worker over worker-seconds). Sampled every
0.1 s of the run, with the worker count from the report's
`workers_over_time`; with `worker` on each job (reports since commit
"kumulus load's report names each job's worker"), also the mean gap on a
worker between a job's end and its next job's start when that next job was
already waiting.
"""
import json
import sys
from datetime import datetime


def ts(s):
    s = s.rstrip("Z")
    if "." in s:
        a, b = s.split(".")
        s = a + "." + b[:6]
    return datetime.fromisoformat(s).timestamp()


def main(dirs):
    for d in dirs:
        r = json.load(open(f"{d}/report.json"))
        jobs = [
            (ts(j["submitted_at"]), ts(j["started_at"]), ts(j["finished_at"]), j.get("worker"))
            for j in r["jobs"]
            if j.get("started_at") and j.get("finished_at")
        ]
        t0 = min(j[0] for j in jobs)
        series = r["workers_over_time"]

        def workers(at):
            n = 0
            for when, count in series:
                if when > at:
                    break
                n = count
            return n

        step, end = 0.1, max(j[2] for j in jobs) - t0
        waiting = idle = 0
        for i in range(int(end / step)):
            at = t0 + i * step
            if any(s <= at < st for s, st, _, _ in jobs):
                waiting += 1
                if sum(1 for _, st, f, _ in jobs if st <= at < f) < workers(at - t0):
                    idle += 1
        held = sum(f - st for _, st, f, _ in jobs)
        line = (
            f"{d}: jobs waited {waiting * step:.0f} s; a worker idle meanwhile "
            f"{100 * idle / max(1, waiting):.0f}% of it; utilization "
            f"{held / r['live']['worker_seconds']:.2f}"
        )
        by_worker = {}
        for s, st, f, w in jobs:
            if w:
                by_worker.setdefault(w, []).append((st, f, s))
        gaps = []
        for runs in by_worker.values():
            runs.sort()
            for (_, f, _), (st, _, s) in zip(runs, runs[1:]):
                if s <= f:  # the next job was already waiting
                    gaps.append(st - f)
        if gaps:
            line += f"; gap to a waiting next job {sum(gaps) / len(gaps):.2f} s mean over {len(gaps)}"
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
