//! The `kumulus` policy: the fewest workers such that
//!
//! 1. the predicted 95th-percentile wait of an M/G/c queue (measured arrival
//!    rate, mean and spread of run times) stays under the SLO;
//! 2. the jobs already waiting drain within the SLO less a worker's start-up
//!    time, while new ones keep arriving;
//! 3. no worker is left with more backlog in its own partitions than it can
//!    drain in that time (a Kafka partition is read by one worker only, so a
//!    burst that landed on few partitions waits behind them);
//!
//! scaling up at once and down only to the largest recommendation of the
//! stabilization window.

use super::queueing::wait_quantile;
use super::{Decision, History, Observed, PolicyConfig};

pub fn decide(cfg: &PolicyConfig, history: &History, now: &Observed) -> Decision {
    let slots = cfg.slots.max(1);
    let lambda = history.arrival_rate(now, cfg.period_secs);
    // Until a job has finished, assume jobs take a period.
    let (mean, cs2) = history
        .service_stats(now)
        .unwrap_or((cfg.period_secs.max(1.0), 1.0));
    let waiting = now.waiting();
    let any_work = waiting > 0 || now.running > 0 || lambda > 0.0;

    // 1. Steady state: smallest number of slots whose p95 wait meets the SLO.
    let mut servers = 0u32;
    if lambda > 0.0 {
        servers = ((lambda * mean).ceil() as u32).max(1);
        let limit = cfg.max_workers.max(1) * slots * 4;
        while servers < limit && wait_quantile(servers, lambda, mean, cs2, 0.95) > cfg.slo_wait_secs
        {
            servers += 1;
        }
    }
    let for_queue = servers.div_ceil(slots);

    // 2. Backlog: drain what waits within the SLO, after a new worker's start-up.
    let drain_secs = (cfg.slo_wait_secs - cfg.startup_secs)
        .max(cfg.period_secs)
        .max(1.0);
    let backlog_servers = (waiting as f64 * mean / drain_secs + lambda * mean).ceil() as u32;
    let for_backlog = backlog_servers.div_ceil(slots);

    // 3. Partitions: the worst worker owns ceil(P / W) partitions; with the
    //    most loaded ones, its backlog must drain in time.
    let for_partitions = partition_need(&now.waiting_per_partition, mean, slots, drain_secs);

    let mut recommended = for_queue.max(for_backlog).max(for_partitions);
    if any_work {
        recommended = recommended.max(1);
    }
    let mut reason = format!(
        "arrivals {lambda:.3}/s, run time {mean:.2} s (cv² {cs2:.2}), waiting {waiting}: \
         queue model {for_queue}, backlog {for_backlog}, partitions {for_partitions}"
    );

    // Up at once; down only as far as the window's largest recommendation.
    let mut desired = recommended;
    if desired < now.workers {
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
    }
}

/// The fewest workers such that, with partitions handed out round-robin
/// (worker k reads partitions k, k + W, k + 2W, ...), the most loaded worker
/// drains its partitions within `drain_secs`. Where no number of workers can
/// (one partition holds more than a worker can drain), the fewest that reach
/// the best possible spread: more would sit idle.
fn partition_need(waiting: &[u64], mean: f64, slots: u32, drain_secs: f64) -> u32 {
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
    let secs = |jobs: u64| jobs as f64 * mean / slots as f64;
    let best = worst(p);
    for w in 1..=p {
        let load = worst(w);
        if secs(load) <= drain_secs || load == best {
            return w as u32;
        }
    }
    p as u32
}

#[cfg(test)]
mod tests {
    use super::partition_need;

    #[test]
    fn partition_need_spreads_hot_partitions() {
        // Nothing waits: no need.
        assert_eq!(partition_need(&[0, 0, 0, 0], 1.0, 1, 10.0), 0);
        // 5 jobs of 1 s in one partition drain in 5 s: one worker is enough.
        assert_eq!(partition_need(&[5, 0, 0, 0], 1.0, 1, 10.0), 1);
        // 15 + 15 in partitions 0 and 1: two workers split them (0,2 / 1,3).
        assert_eq!(partition_need(&[15, 15, 0, 0], 1.0, 1, 20.0), 2);
        // ... but in partitions 0 and 2 they share a worker until there are 3.
        assert_eq!(partition_need(&[15, 0, 15, 0], 1.0, 1, 20.0), 3);
        // One partition holds more than a worker can drain: more workers do
        // not help, so one.
        assert_eq!(partition_need(&[100, 0, 0, 0], 1.0, 1, 10.0), 1);
        // Two slots per worker drain twice as fast.
        assert_eq!(partition_need(&[30, 0], 1.0, 2, 20.0), 1);
    }
}
