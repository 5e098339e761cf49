//! The `kumulus` policy: the fewest workers that start every job within the
//! wait target, spending the SLO's slack instead of idling workers.
//!
//! The model is a fluid queue (jobs as a flow at the measured rates) over a
//! finite horizon. A
//! worker asked for now starts serving only after `startup_secs`, and its
//! joining stops every worker for a rebalance (`rebalance_secs`), so the
//! capacity of `c` slots over the next `t` seconds, with `have` running, is
//! `c t` for `c <= have` and `have (t - rebalance) + (c - have) (t - startup
//! - rebalance)` (each term at least 0) above. The fewest `c` such that:
//!
//! 1. **the backlog starts in time**: the jobs waiting now, oldest first,
//!    each start before its wait reaches the target (their ages are read
//!    from the arrivals of past periods, each taken at mid-period; a job is
//!    behind every older one);
//! 2. **the jobs that arrive before a correction can help** start in time
//!    too: a correction lands a start-up after the next decision, and the
//!    next decision sees an arrival half a period later on average, so the
//!    horizon is half of a period plus a start-up;
//! 3. **no worker is left with more backlog in its own partitions** than it
//!    can start in time: a Kafka partition is read by one worker only, so a
//!    burst that landed on few partitions waits behind them;
//! 4. **a job that finds every slot busy is rarely late** ([`for_tail`]):
//!    the fluid's averages hide that such a job waits for a running job's
//!    remainder, which heavy-tailed run times make long. Where that
//!    remainder can outlast the target, the steady-state chance of finding
//!    every slot busy (Erlang C at the load of the last
//!    [`STEADY_WINDOW_SECS`]) times the chance that the remainder outlasts
//!    the target stays within [`TAIL_BUDGET`].
//!
//! The target is [`TARGET_SHARE`] of the SLO: the rest is margin for what the
//! model does not see (the randomness of arrivals and run times around the
//! fluid's averages). It scales up at once. It never scales below the
//! arrivals' load (`ceil(lambda S)`) while jobs wait, since a worker removed
//! from a busy queue saves nothing and comes back later with a start-up and a
//! rebalance; and it scales down only to the largest recommendation of the
//! stabilization window.
//!
//! Unlike a steady-state model (the p95 of an M/G/c queue, which keeps
//! utilization low enough that almost no job waits), this lets a queue form
//! as long as it drains in time: on the shipped traces it costs less than the
//! best `lag` threshold chosen in hindsight, and meets the SLO on all of them.

use super::{Decision, History, Observed, PolicyConfig};

/// Share of the SLO the policy aims at.
pub const TARGET_SHARE: f64 = 0.85;

/// Share of jobs the tail rule lets wait past the target: two fifths of
/// the 5% the SLO allows, the rest left for what the steady state does not
/// see (bursts, a load that changes faster than its estimate, the backlog
/// the other rules let form).
pub const TAIL_BUDGET: f64 = 0.02;

/// The window of the arrival rate the tail rule reads (the 5 minutes of
/// the HPA's scale-down stabilization): a steady state's load, where the
/// other rules answer to the latest period's.
pub const STEADY_WINDOW_SECS: f64 = 300.0;

pub fn decide(cfg: &PolicyConfig, history: &History, now: &Observed) -> Decision {
    let slots = cfg.slots.max(1);
    let lambda = history.arrival_rate(now, cfg.period_secs);
    // Until a job has finished, assume jobs take a period.
    let samples = history.service_samples(now);
    let (mean, cs2) = History::service_stats(&samples).unwrap_or((cfg.period_secs.max(1.0), 1.0));
    let waiting = now.waiting();
    let any_work = waiting > 0 || now.running > 0 || lambda > 0.0;
    let target = (cfg.slo_wait_secs * TARGET_SHARE).max(1.0);
    let model = Fluid {
        have: (now.workers * slots) as f64,
        startup: cfg.startup_secs,
        rebalance: cfg.rebalance_secs,
        // Running jobs are half done, on average.
        residual: now.running as f64 * mean / 2.0,
        mean,
        max_servers: cfg.max_workers.max(1) * slots,
    };

    // 1. The backlog, oldest first.
    let for_backlog = backlog_ages(history, now, waiting, cfg.period_secs)
        .iter()
        .filter_map(|&(age, ahead)| model.servers_for(ahead as f64, target - age))
        .max()
        .unwrap_or(0)
        .div_ceil(slots);

    // 2. Arrivals until a correction could take effect.
    let horizon = (cfg.period_secs + cfg.startup_secs) / 2.0;
    let for_arrivals = model
        .servers_for(waiting as f64 + lambda * horizon, target + horizon)
        .unwrap_or(model.max_servers)
        .div_ceil(slots);

    // 3. Partitions: the worst worker owns ceil(P / W) of them.
    let for_partitions = partition_need(
        &now.waiting_per_partition,
        mean / slots as f64,
        target,
        now.workers,
        cfg.startup_secs,
    );

    // 4. The tail of the running jobs' remainders, at the load of the last
    // few minutes: a steady-state rule read at a rate of one period would
    // follow the arrivals' noise up and down.
    let steady = history.arrival_rate_over(now, STEADY_WINDOW_SECS, cfg.period_secs);
    let for_tail = for_tail(
        steady * mean,
        &samples,
        target,
        now.partitions > 0,
        model.max_servers,
    )
    .div_ceil(slots);

    let mut recommended = for_backlog
        .max(for_arrivals)
        .max(for_partitions)
        .max(for_tail);
    if any_work {
        recommended = recommended.max(1);
    }
    let mut reason = format!(
        "arrivals {lambda:.3}/s, run time {mean:.2} s (cv² {cs2:.2}), waiting {waiting}, \
         target wait {target:.0} s: backlog {for_backlog}, arrivals {for_arrivals}, \
         partitions {for_partitions}, tail {for_tail}"
    );

    let mut desired = recommended;
    if desired < now.workers && waiting > 0 {
        // Never below the load while jobs wait.
        let load = ((lambda * mean).ceil() as u32).div_ceil(slots);
        if load > desired {
            desired = load.min(now.workers);
            reason = format!("{reason}; kept at the load {desired} while jobs wait");
        }
    }
    if desired < now.workers {
        // Down only as far as the window's largest recommendation.
        let since = now.now_secs - cfg.stabilization_secs;
        let window_max = History::max_since(&history.recommendations, since);
        let floor = window_max.min(now.workers);
        if floor > desired {
            reason = format!(
                "{reason}; held at {floor} (stabilization {} s)",
                cfg.stabilization_secs
            );
            desired = floor;
        }
    }
    Decision {
        desired,
        recommended,
        reason,
        rule: "policy".into(),
    }
}

/// The fluid model's view of capacity.
struct Fluid {
    /// Slots running now.
    have: f64,
    startup: f64,
    rebalance: f64,
    /// Work left in the running jobs (seconds of one slot).
    residual: f64,
    /// Mean run time.
    mean: f64,
    max_servers: u32,
}

impl Fluid {
    /// Work `c` slots get through in the next `t` seconds, new ones after start-up.
    fn capacity(&self, c: f64, t: f64) -> f64 {
        if c <= self.have {
            return c * t.max(0.0);
        }
        self.have * (t - self.rebalance).max(0.0)
            + (c - self.have) * (t - self.startup - self.rebalance).max(0.0)
    }

    /// The fewest slots that start the job behind `ahead` jobs (and the
    /// running ones) within `within` seconds; None if none can.
    fn servers_for(&self, ahead: f64, within: f64) -> Option<u32> {
        let work = ahead * self.mean + self.residual;
        (0..=self.max_servers).find(|&c| self.capacity(c as f64, within) >= work)
    }
}

/// The fewest slots (of at most `max`) such that few jobs wait past
/// `target` for a running job to end, at an offered load of `load` slots
/// (arrival rate times mean run time): the steady-state chance that a job
/// finds every slot busy ([`erlang_c`]), times the chance that what it
/// waits for outlasts the target, at most [`TAIL_BUDGET`]. A job placed
/// on one worker's partitions (`partitioned`) waits for that worker's
/// running job; in a shared queue, for the first of the `c` running jobs
/// to end. 0 where no remainder outlasts the target (the other rules
/// cover a queue of short jobs).
fn for_tail(load: f64, samples: &[f64], target: f64, partitioned: bool, max: u32) -> u32 {
    let late = remainder_over(samples, target);
    if late <= 0.0 || load <= 0.0 {
        return 0;
    }
    (load.floor() as u32 + 1..=max)
        .find(|&c| {
            let behind = if partitioned {
                late
            } else {
                late.powi(c as i32)
            };
            erlang_c(c, load) * behind <= TAIL_BUDGET
        })
        .unwrap_or(max)
}

/// The chance that a running job, looked at in a random moment, still has
/// more than `x` seconds to run: `E[(S - x)+] / E[S]` over the run times
/// `samples` (a long job is more likely to be the one running: the
/// equilibrium remainder of renewal theory). 0 without samples.
fn remainder_over(samples: &[f64], x: f64) -> f64 {
    let total: f64 = samples.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    samples.iter().map(|s| (s - x).max(0.0)).sum::<f64>() / total
}

/// Erlang C: the chance that an arrival finds all `c` servers busy at an
/// offered load of `a` (M/M/c; 1 where `a >= c`, the queue is unstable).
fn erlang_c(c: u32, a: f64) -> f64 {
    if a <= 0.0 {
        return 0.0;
    }
    if a >= c as f64 {
        return 1.0;
    }
    // Erlang B by its recursion, then C from B.
    let mut b = 1.0;
    for k in 1..=c {
        b = a * b / (k as f64 + a * b);
    }
    let c = c as f64;
    c * b / (c - a * (1.0 - b))
}

/// The waiting jobs grouped by the period they arrived in, oldest first:
/// (the group's age, taken at the middle of its period; jobs up to and
/// including the group). Waiting jobs are taken to be the most recent
/// arrivals.
fn backlog_ages(history: &History, now: &Observed, waiting: u64, period: f64) -> Vec<(f64, u64)> {
    let mut groups = Vec::new();
    let mut left = waiting;
    for o in std::iter::once(now).chain(history.observations.iter().rev()) {
        if left == 0 {
            break;
        }
        let n = o.arrivals.min(left);
        if n > 0 {
            groups.push((now.now_secs - o.now_secs + period / 2.0, n));
        }
        left -= n;
    }
    if left > 0 {
        // Older than the history: as old as its start.
        let oldest = history
            .observations
            .front()
            .map_or(now.now_secs, |o| o.now_secs);
        groups.push((now.now_secs - oldest + period / 2.0, left));
    }
    groups.reverse();
    let mut ahead = 0;
    groups
        .into_iter()
        .map(|(age, n)| {
            ahead += n;
            (age, ahead)
        })
        .collect()
}

/// The fewest workers such that, with partitions handed out round-robin
/// (worker k reads partitions k, k + W, k + 2W, ...), the most loaded worker
/// starts its partitions' backlog within `target` (less the start-up, with
/// more workers than run now). Where no number of workers can (one partition
/// holds more than a worker can start in time), the fewest that reach the
/// best possible spread: more would sit idle.
fn partition_need(waiting: &[u64], secs_per_job: f64, target: f64, have: u32, startup: f64) -> u32 {
    let p = waiting.len();
    if p == 0 || waiting.iter().all(|&w| w == 0) {
        return 0;
    }
    let worst = |w: usize| -> u64 {
        (0..w)
            .map(|k| waiting.iter().skip(k).step_by(w).sum::<u64>())
            .max()
            .unwrap_or(0)
    };
    let best = worst(p);
    for w in 1..=p {
        let load = worst(w);
        let within = if w as u32 <= have {
            target
        } else {
            target - startup
        };
        if load as f64 * secs_per_job <= within || load == best {
            return w as u32;
        }
    }
    p as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_need_spreads_hot_partitions() {
        // Nothing waits: no need.
        assert_eq!(partition_need(&[0, 0, 0, 0], 1.0, 10.0, 1, 0.0), 0);
        // 5 jobs of 1 s in one partition start within 5 s: one worker is enough.
        assert_eq!(partition_need(&[5, 0, 0, 0], 1.0, 10.0, 1, 0.0), 1);
        // 15 + 15 in partitions 0 and 1: two workers split them (0,2 / 1,3).
        assert_eq!(partition_need(&[15, 15, 0, 0], 1.0, 20.0, 1, 0.0), 2);
        // ... but in partitions 0 and 2 they share a worker until there are 3.
        assert_eq!(partition_need(&[15, 0, 15, 0], 1.0, 20.0, 1, 0.0), 3);
        // A new worker's start-up counts against the target: two workers
        // split 24 jobs 16 / 8, in time only if the second one runs already.
        assert_eq!(partition_need(&[8, 8, 8, 0], 1.0, 20.0, 1, 0.0), 2);
        assert_eq!(partition_need(&[8, 8, 8, 0], 1.0, 20.0, 1, 10.0), 3);
        assert_eq!(partition_need(&[8, 8, 8, 0], 1.0, 20.0, 2, 10.0), 2);
        // One partition holds more than a worker can start in time: more
        // workers do not help, so one.
        assert_eq!(partition_need(&[100, 0, 0, 0], 1.0, 10.0, 1, 0.0), 1);
        // Two slots per worker: half the time per job.
        assert_eq!(partition_need(&[30, 0], 0.5, 20.0, 1, 0.0), 1);
    }

    #[test]
    fn erlang_c_matches_known_values() {
        // One server: the utilization.
        assert!((erlang_c(1, 0.5) - 0.5).abs() < 1e-12);
        // Two servers at a load of 1: 1/3.
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
        // Ten at a load of 8: 0.409 (tables).
        assert!((erlang_c(10, 8.0) - 0.409).abs() < 1e-3);
        // Saturated or idle.
        assert_eq!(erlang_c(3, 3.0), 1.0);
        assert_eq!(erlang_c(3, 0.0), 0.0);
    }

    #[test]
    fn the_remainder_counts_long_jobs_by_their_length() {
        // Jobs of 1 s never have 2 s left.
        assert_eq!(remainder_over(&[1.0; 10], 2.0), 0.0);
        // Nine of 1 s and one of 91 s: the long one runs 91% of the time,
        // and has more than 11 s left for 80 of its 91 s.
        let mut s = vec![1.0; 9];
        s.push(91.0);
        assert!((remainder_over(&s, 11.0) - 0.8).abs() < 1e-12);
        assert_eq!(remainder_over(&[], 1.0), 0.0);
    }

    #[test]
    fn the_tail_rule_adds_slots_only_where_remainders_outlast_the_target() {
        // Short jobs: nothing to add.
        assert_eq!(for_tail(5.0, &[2.0; 100], 25.0, true, 50), 0);
        // A heavy tail: 10% of the jobs take 300 s, the rest 10 s (mean
        // 39 s); at a load of 5 slots a busy-everywhere arrival is late
        // 71% of the time, so the chance of finding all busy must be
        // kept under 2% / 0.71.
        let mut s = vec![10.0; 90];
        s.extend([300.0; 10]);
        let c = for_tail(5.0, &s, 25.0, true, 50);
        let late = remainder_over(&s, 25.0);
        assert!(erlang_c(c, 5.0) * late <= TAIL_BUDGET);
        assert!(erlang_c(c - 1, 5.0) * late > TAIL_BUDGET);
        assert_eq!(c, 11);
        // A shared queue waits for the first of the running jobs to end:
        // fewer slots do.
        assert!(for_tail(5.0, &s, 25.0, false, 50) < c);
        // Bounded.
        assert_eq!(for_tail(5.0, &s, 25.0, true, 8), 8);
    }

    #[test]
    fn capacity_counts_start_up() {
        let f = Fluid {
            have: 2.0,
            startup: 10.0,
            rebalance: 0.0,
            residual: 0.0,
            mean: 2.0,
            max_servers: 20,
        };
        assert_eq!(f.capacity(2.0, 30.0), 60.0);
        // Two more, after their 10 s start-up.
        assert_eq!(f.capacity(4.0, 30.0), 60.0 + 40.0);
        // Fewer than run now: at once.
        assert_eq!(f.capacity(1.0, 30.0), 30.0);
        // 30 jobs of 2 s within 30 s: 2 slots do 60 s, need 2 more.
        assert_eq!(f.servers_for(30.0, 30.0), Some(2));
        assert_eq!(f.servers_for(40.0, 30.0), Some(3));
        // Within the start-up only the running slots count.
        assert_eq!(f.servers_for(40.0, 5.0), None);
        // A rebalance stops everyone: one more worker for a little work
        // left is worse than none.
        let f = Fluid {
            rebalance: 3.0,
            have: 10.0,
            ..f
        };
        assert_eq!(f.capacity(11.0, 21.0), 10.0 * 18.0 + 8.0);
        assert!(f.capacity(11.0, 21.0) < f.capacity(10.0, 21.0));
        assert_eq!(f.servers_for(100.0, 21.0), Some(10));
        // More work than the running ones can do: enough new ones to make
        // up for the rebalance too.
        assert_eq!(f.servers_for(110.0, 21.0), Some(15));
    }

    #[test]
    fn the_backlog_is_the_latest_arrivals_oldest_first() {
        let mut h = History::default();
        for (t, arrivals) in [(10.0, 5), (20.0, 8), (30.0, 4)] {
            let o = Observed {
                now_secs: t,
                arrivals,
                ..Observed::default()
            };
            h.record(o, &Decision::new(1, ""));
        }
        let now = Observed {
            now_secs: 40.0,
            arrivals: 3,
            ..Observed::default()
        };
        // 10 waiting: 3 from this period, 4 from the last, 3 of the 8 before.
        assert_eq!(
            backlog_ages(&h, &now, 10, 10.0),
            vec![(25.0, 3), (15.0, 7), (5.0, 10)]
        );
        assert_eq!(backlog_ages(&h, &now, 0, 10.0), vec![]);
        // More than ever arrived: the rest as old as the history.
        assert_eq!(backlog_ages(&h, &now, 25, 10.0)[0], (35.0, 5));
    }
}
