#!/usr/bin/env python3
"""Writes the simulator's traces to autoscaler/traces/ (fixed seeds: the same
files every time). Each is a CSV `arrival_secs,service_secs`, one job a row.

- steady: Poisson arrivals at 1 job/s, exponential run times of mean 2 s, 20 minutes.
- step: 0.2 jobs/s for 5 minutes, then 1.5 jobs/s for 10 minutes.
- burst: a quiet background (0.1/s) and bursts of 120 jobs at 2, 8 and 14 minutes.
- diurnal: a rate that swings from 0.1 to 2 jobs/s and back over 20 minutes.
- heavy-tailed: 0.5 jobs/s with Pareto run times (alpha 1.8, mean about 3 s).
"""
import math
import os
import random

OUT = os.path.join(os.path.dirname(__file__), "..", "autoscaler", "traces")


def poisson(rng, rate_at, start, end, step=1.0):
    """Arrivals of a Poisson process whose rate may change (thinning)."""
    peak = max(rate_at(t) for t in frange(start, end, step)) or 1e-9
    t, out = start, []
    while True:
        t += rng.expovariate(peak)
        if t >= end:
            return out
        if rng.random() < rate_at(t) / peak:
            out.append(t)


def frange(a, b, s):
    while a < b:
        yield a
        a += s


def write(name, jobs):
    with open(os.path.join(OUT, name + ".csv"), "w") as f:
        f.write("arrival_secs,service_secs\n")
        for a, s in sorted(jobs):
            f.write(f"{a:.3f},{s:.3f}\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(1)
    write("steady", [(a, rng.expovariate(1 / 2.0)) for a in poisson(rng, lambda t: 1.0, 0, 1200)])

    rng = random.Random(2)
    step = poisson(rng, lambda t: 0.2 if t < 300 else 1.5, 0, 900)
    write("step", [(a, rng.expovariate(1 / 2.0)) for a in step])

    rng = random.Random(3)
    jobs = [(a, rng.expovariate(1 / 2.0)) for a in poisson(rng, lambda t: 0.1, 0, 1080)]
    for at in (120, 480, 840):
        jobs += [(at + rng.uniform(0, 2), rng.expovariate(1 / 3.0)) for _ in range(120)]
    write("burst", jobs)

    rng = random.Random(4)
    diurnal = poisson(rng, lambda t: 0.1 + 1.9 * (1 - math.cos(2 * math.pi * t / 1200)) / 2, 0, 1200)
    write("diurnal", [(a, rng.expovariate(1 / 2.0)) for a in diurnal])

    rng = random.Random(5)
    alpha, xm = 1.8, 3.0 * (1.8 - 1) / 1.8
    write("heavy-tailed", [(a, xm * rng.paretovariate(alpha)) for a in poisson(rng, lambda t: 0.5, 0, 1200)])


if __name__ == "__main__":
    main()
