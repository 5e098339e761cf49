#!/usr/bin/env python3
"""Writes the simulator's traces to autoscaler/traces/ (fixed seeds: the same
files every time). Each is a CSV `arrival_secs,service_secs`, one job a row.

- steady: Poisson arrivals at 1 job/s, exponential run times of mean 2 s, 20 minutes.
- step: 0.2 jobs/s for 5 minutes, then 1.5 jobs/s for 10 minutes.
- burst: a quiet background (0.1/s) and bursts of 120 jobs at 2, 8 and 14 minutes.
- diurnal: a rate that swings from 0.1 to 2 jobs/s and back over 20 minutes.
- heavy-tailed: 0.5 jobs/s with Pareto run times (alpha 1.8, mean about 3 s).

Heavier ones, where 4 to 10 workers are busy on average and jobs run for
tens of seconds to ten minutes (what the policy must survive, issue 8):

- heavy-steady: 0.2 jobs/s for an hour, lognormal run times of mean 25 s
  and cv² 1 (5 busy workers).
- heavy-lognormal: 0.15 jobs/s for an hour, lognormal, mean 40 s, cv² 4 (6 busy).
- heavy-lognormal-cv10: 0.2 jobs/s for two hours, lognormal, mean 25 s,
  cv² 10 (5 busy).
- heavy-pareto: 0.25 jobs/s for an hour, Pareto run times (alpha 1.4, of
  mean 25 s before the cap) capped at ten minutes (5 busy).
- heavy-bursts: a background of 0.05 jobs/s and, every 5 minutes or so
  (Poisson), a burst of 20 to 60 jobs within 10 s; lognormal, mean 20 s,
  cv² 2; an hour (4 busy on average, far more in a burst).
- heavy-diurnal: a rate that swings from 0.05 to 0.5 jobs/s and back over
  two hours, lognormal, mean 20 s, cv² 1.5 (1 to 10 busy).
- sparse: clusters of 1 to 3 jobs about every 10 minutes (Poisson) for two
  hours, exponential run times of mean 30 s (mostly no worker is needed;
  run it with --min-workers 0).
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


def lognormal(rng, mean, cv2):
    """A lognormal variate of the given mean and squared coefficient of variation."""
    sigma2 = math.log(1 + cv2)
    return rng.lognormvariate(math.log(mean) - sigma2 / 2, math.sqrt(sigma2))


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

    rng = random.Random(6)
    write("heavy-steady", [(a, lognormal(rng, 25, 1)) for a in poisson(rng, lambda t: 0.2, 0, 3600)])

    rng = random.Random(7)
    write("heavy-lognormal", [(a, lognormal(rng, 40, 4)) for a in poisson(rng, lambda t: 0.15, 0, 3600)])

    rng = random.Random(8)
    write("heavy-lognormal-cv10", [(a, lognormal(rng, 25, 10)) for a in poisson(rng, lambda t: 0.2, 0, 7200)])

    rng = random.Random(9)
    alpha = 1.4
    xm = 25 * (alpha - 1) / alpha
    write("heavy-pareto", [(a, min(600.0, xm * rng.paretovariate(alpha))) for a in poisson(rng, lambda t: 0.25, 0, 3600)])

    rng = random.Random(10)
    jobs = [(a, lognormal(rng, 20, 2)) for a in poisson(rng, lambda t: 0.05, 0, 3600)]
    for at in poisson(rng, lambda t: 1 / 300, 0, 3590):
        jobs += [(at + rng.uniform(0, 10), lognormal(rng, 20, 2)) for _ in range(rng.randint(20, 60))]
    write("heavy-bursts", jobs)

    rng = random.Random(11)
    rate = lambda t: 0.05 + 0.45 * (1 - math.cos(2 * math.pi * t / 7200)) / 2
    write("heavy-diurnal", [(a, lognormal(rng, 20, 1.5)) for a in poisson(rng, rate, 0, 7200)])

    rng = random.Random(12)
    jobs = []
    for at in poisson(rng, lambda t: 1 / 600, 0, 7200):
        jobs += [(at + rng.uniform(0, 30), rng.expovariate(1 / 30)) for _ in range(rng.randint(1, 3))]
    write("sparse", jobs)


if __name__ == "__main__":
    main()
