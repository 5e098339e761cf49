//! Scaling policies: pure functions from what was observed, the history of
//! earlier decisions and the configuration to a decision. The autoscaler's
//! loop and the simulator call the very same functions.
//!
//! - [`seed`]: the seed paper's rule, exactly as written.
//! - [`lag`]: KEDA's Kafka rule.
//! - [`kumulus`]: ours: the fewest workers that start every job within the
//!   SLO, from a fluid queueing model over a finite horizon with the
//!   backlog's ages, the arrivals' randomness, worker start-up, rebalances
//!   and Kafka's partitioned queue.

pub mod kumulus;
pub mod lag;
pub mod seed;

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

/// Which policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    Seed,
    Lag,
    Kumulus,
}

impl FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "seed" => Ok(Self::Seed),
            "lag" => Ok(Self::Lag),
            "kumulus" => Ok(Self::Kumulus),
            other => Err(format!(
                "unknown policy `{other}`; expected seed, lag or kumulus"
            )),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Seed => "seed",
            Self::Lag => "lag",
            Self::Kumulus => "kumulus",
        })
    }
}

/// The policy's settings (the `[autoscaler]` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyConfig {
    pub policy: PolicyKind,
    /// Decision period.
    pub period_secs: f64,
    /// The target: 95% of jobs wait at most this long to start.
    pub slo_wait_secs: f64,
    /// Time from asking for a worker to its first job.
    pub startup_secs: f64,
    pub min_workers: u32,
    pub max_workers: u32,
    /// Worker-seconds allowed in any hour (None: no budget).
    pub budget_worker_secs_per_hour: Option<f64>,
    /// Jobs a worker runs at once.
    pub slots: u32,
    /// `lag`: jobs waiting per worker.
    pub lag_threshold: f64,
    /// `lag`: how long a scale-down is held after the last time more were needed.
    pub cooldown_secs: f64,
    /// `kumulus`: scale down only to the largest need seen in this window.
    pub stabilization_secs: f64,
    /// `kumulus`: how long consumption stops when the group's membership
    /// changes (a Kafka rebalance).
    #[serde(default = "default_rebalance_secs")]
    pub rebalance_secs: f64,
    /// With `min_workers = 0`: idle this long before scaling to zero.
    pub idle_grace_secs: f64,
    /// Kafka partitions kept per worker.
    pub partition_factor: u32,
    /// `startup_secs` is measured on the running system (the loop updates
    /// it); `startup_secs` holds the value in use.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub measure_startup: bool,
    /// `rebalance_secs` is measured likewise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub measure_rebalance: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            policy: PolicyKind::Kumulus,
            period_secs: 10.0,
            slo_wait_secs: 30.0,
            startup_secs: 10.0,
            min_workers: 1,
            max_workers: 20,
            budget_worker_secs_per_hour: None,
            slots: 1,
            lag_threshold: 5.0,
            cooldown_secs: 300.0,
            stabilization_secs: 30.0,
            rebalance_secs: default_rebalance_secs(),
            idle_grace_secs: 300.0,
            partition_factor: 2,
            measure_startup: false,
            measure_rebalance: false,
        }
    }
}

fn default_rebalance_secs() -> f64 {
    3.0
}

/// The policy settings of a configuration (`[autoscaler]`, and the
/// worker's slots).
pub fn from_config(
    cfg: &kumulus_core::config::Config,
) -> Result<PolicyConfig, kumulus_core::config::ConfigError> {
    let a = &cfg.autoscaler;
    Ok(PolicyConfig {
        policy: a
            .policy
            .parse::<PolicyKind>()
            .map_err(|m| kumulus_core::config::ConfigError::new("autoscaler.policy", m))?,
        period_secs: a.period_secs as f64,
        slo_wait_secs: a.slo_wait_secs,
        startup_secs: a
            .startup_secs
            .or(kumulus_core::config::DEFAULT_STARTUP_SECS),
        min_workers: a.min_workers,
        max_workers: a.max_workers,
        budget_worker_secs_per_hour: a.budget_worker_secs_per_hour,
        slots: cfg.worker.slots as u32,
        lag_threshold: a.lag_threshold,
        cooldown_secs: a.cooldown_secs,
        stabilization_secs: a.stabilization_secs,
        rebalance_secs: a
            .rebalance_secs
            .or(kumulus_core::config::DEFAULT_REBALANCE_SECS),
        idle_grace_secs: a.idle_grace_secs,
        partition_factor: a.partition_factor,
        measure_startup: a.startup_secs.is_measured(),
        measure_rebalance: a.rebalance_secs.is_measured(),
    })
}

/// What the autoscaler sees at a decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Seconds since the autoscaler started (any monotonic clock).
    pub now_secs: f64,
    /// Workers the platform runs (or is starting).
    pub workers: u32,
    /// Partitions of the jobs topic.
    pub partitions: u32,
    /// Jobs waiting in each partition (high watermark minus committed offset,
    /// less the jobs running).
    pub waiting_per_partition: Vec<u64>,
    /// Jobs running now.
    pub running: u64,
    /// The seed's counts over the last period.
    pub arrivals: u64,
    pub services: u64,
    pub finished: u64,
    /// Run times (seconds) of the jobs that finished in the last period:
    /// each one's time on its worker, from its start event to its final one.
    pub service_secs: Vec<f64>,
}

impl Observed {
    pub fn waiting(&self) -> u64 {
        self.waiting_per_partition.iter().sum()
    }
}

/// A decision and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub desired: u32,
    /// What the policy's own rule asked for, before stabilization and bounds.
    pub recommended: u32,
    pub reason: String,
    /// Which rule set the count, as a metric label: `policy` (its own
    /// rule), `hold` (a stabilization window or cooldown kept more),
    /// `idle`, `woken`, `min_workers`, `max_workers`, `budget`, or
    /// `partitions` (the loop capped it).
    #[serde(default = "policy_rule")]
    pub rule: String,
}

fn policy_rule() -> String {
    "policy".into()
}

impl Decision {
    pub fn new(desired: u32, reason: impl Into<String>) -> Self {
        Self {
            desired,
            recommended: desired,
            reason: reason.into(),
            rule: policy_rule(),
        }
    }
}

/// What the policies may look back on: past observations and decisions,
/// newest last. The loop appends after each decision.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub observations: VecDeque<Observed>,
    /// (time, desired) of past decisions.
    pub decisions: VecDeque<(f64, u32)>,
    /// (time, recommended) of past decisions.
    pub recommendations: VecDeque<(f64, u32)>,
}

/// History kept: an hour at one decision a second is plenty for every window.
const HISTORY_MAX: usize = 4096;

impl History {
    pub fn record(&mut self, obs: Observed, decision: &Decision) {
        self.decisions.push_back((obs.now_secs, decision.desired));
        self.recommendations
            .push_back((obs.now_secs, decision.recommended));
        self.observations.push_back(obs);
        while self.observations.len() > HISTORY_MAX {
            self.observations.pop_front();
        }
        while self.decisions.len() > HISTORY_MAX {
            self.decisions.pop_front();
        }
        while self.recommendations.len() > HISTORY_MAX {
            self.recommendations.pop_front();
        }
    }

    /// Arrival rate (jobs/s): exponentially weighted over past periods,
    /// including `now`.
    pub fn arrival_rate(&self, now: &Observed, period_secs: f64) -> f64 {
        let alpha = 0.3;
        let mut rate: Option<f64> = None;
        for o in self.observations.iter().chain(std::iter::once(now)) {
            let r = o.arrivals as f64 / period_secs.max(1e-9);
            rate = Some(match rate {
                None => r,
                Some(prev) => alpha * r + (1.0 - alpha) * prev,
            });
        }
        rate.unwrap_or(0.0)
    }

    /// Arrival rate (jobs/s) over the last `window_secs` (as much of it as
    /// the history holds), `now`'s period included: each observation counts
    /// the arrivals of the period that ended at it.
    pub fn arrival_rate_over(&self, now: &Observed, window_secs: f64, period_secs: f64) -> f64 {
        let since = now.now_secs - window_secs;
        let mut n = now.arrivals;
        let mut oldest = now.now_secs;
        for o in self.observations.iter().rev() {
            if o.now_secs <= since {
                break;
            }
            n += o.arrivals;
            oldest = o.now_secs;
        }
        n as f64 / (now.now_secs - oldest + period_secs).max(1e-9)
    }

    /// The run times seen lately: the last 500 jobs', newest first.
    pub fn service_samples(&self, now: &Observed) -> Vec<f64> {
        self.observations
            .iter()
            .chain(std::iter::once(now))
            .rev()
            .flat_map(|o| o.service_secs.iter().copied())
            .take(500)
            .collect()
    }

    /// Mean and squared coefficient of variation of run times
    /// ([`History::service_samples`]), if there are any.
    pub fn service_stats(samples: &[f64]) -> Option<(f64, f64)> {
        if samples.is_empty() {
            return None;
        }
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n;
        let cv2 = if mean > 0.0 { var / (mean * mean) } else { 1.0 };
        Some((mean, cv2))
    }

    /// The largest value of `series` (`decisions` or `recommendations`)
    /// after time `since`; 0 if none.
    pub fn max_since(series: &VecDeque<(f64, u32)>, since: f64) -> u32 {
        series
            .iter()
            .filter(|(t, _)| *t > since)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    }

    /// When anything last happened (arrival, waiting or running job).
    pub fn last_activity(&self, now: &Observed) -> Option<f64> {
        std::iter::once(now)
            .chain(self.observations.iter().rev())
            .find(|o| o.arrivals > 0 || o.waiting() > 0 || o.running > 0)
            .map(|o| o.now_secs)
    }

    /// Worker-seconds used in the last hour, from the decisions.
    pub fn worker_secs_last_hour(&self, now_secs: f64) -> f64 {
        let start = now_secs - 3600.0;
        let mut total = 0.0;
        let mut iter = self.decisions.iter().peekable();
        while let Some(&(t, n)) = iter.next() {
            let end = iter.peek().map(|&&(t2, _)| t2).unwrap_or(now_secs);
            let (a, b) = (t.max(start), end.min(now_secs));
            if b > a {
                total += (b - a) * n as f64;
            }
        }
        total
    }
}

/// Decides with the configured policy, then applies the bounds every
/// policy respects: min and max workers, the budget, and waking from zero.
pub fn decide(cfg: &PolicyConfig, history: &History, now: &Observed) -> Decision {
    let raw = match cfg.policy {
        PolicyKind::Seed => seed::decide(cfg, history, now),
        PolicyKind::Lag => lag::decide(cfg, history, now),
        PolicyKind::Kumulus => kumulus::decide(cfg, history, now),
    };
    bound(cfg, history, now, raw)
}

fn bound(cfg: &PolicyConfig, history: &History, now: &Observed, d: Decision) -> Decision {
    let mut desired = d.desired;
    let mut reason = d.reason.clone();
    let mut rule = if d.desired == d.recommended {
        "policy"
    } else {
        "hold"
    };
    // With min_workers 0, every policy scales to zero once idle for the
    // grace period (the seed's rule alone never goes below one), and not before.
    if cfg.min_workers == 0 {
        let idle_since = history.last_activity(now).unwrap_or(f64::NEG_INFINITY);
        let idle_for = now.now_secs - idle_since;
        let grace = idle_grace(cfg);
        if idle_for >= grace && desired > 0 {
            desired = 0;
            rule = "idle";
            reason = format!("{reason}; idle for {idle_for:.0} s: scale to zero");
        } else if desired == 0 && now.workers > 0 && idle_for < grace {
            desired = 1;
            rule = "idle";
            reason = format!("{reason}; kept 1 until idle for {grace:.0} s");
        }
    }
    if desired == 0 && (now.waiting() > 0 || now.arrivals > 0 || now.running > 0) {
        desired = 1;
        rule = "woken";
        reason = format!("{reason}; woken: jobs are waiting");
    }
    if desired < cfg.min_workers {
        desired = cfg.min_workers;
        rule = "min_workers";
        reason = format!("{reason}; raised to min_workers {}", cfg.min_workers);
    }
    if desired > cfg.max_workers {
        desired = cfg.max_workers;
        rule = "max_workers";
        reason = format!("{reason}; capped at max_workers {}", cfg.max_workers);
    }
    if let Some(budget) = cfg.budget_worker_secs_per_hour {
        if desired > now.workers {
            let spent = history.worker_secs_last_hour(now.now_secs);
            let left = (budget - spent).max(0.0);
            // Workers affordable for the next period.
            let affordable = (left / cfg.period_secs.max(1e-9)).floor() as u32;
            let cap = affordable
                .max(now.workers.min(desired))
                .max(cfg.min_workers);
            if desired > cap {
                desired = cap;
                rule = "budget";
                reason = format!("{reason}; held to {cap} by the budget ({spent:.0} of {budget:.0} worker-s this hour)");
            }
        }
    }
    Decision {
        desired,
        recommended: d.recommended,
        reason,
        rule: rule.into(),
    }
}

/// How long the last worker idles before the pool scales to zero (with
/// `min_workers = 0`). `idle_grace_secs` for `seed` and `lag` (KEDA's
/// cooldown period). `kumulus` treats it as a ceiling and rents the idle
/// worker only as long as buying it back costs, as in ski rental: a cold
/// start pays a start-up for the new worker, so it stops idling after
/// `startup_secs` (at least a period, when decisions fall), which costs at
/// most twice the best choice made in hindsight whatever the next arrival
/// does. That holds only while a cold start still starts a job within the
/// wait target (the next decision, then a start-up); otherwise the grace
/// stays whole.
pub fn idle_grace(cfg: &PolicyConfig) -> f64 {
    let cold_start = cfg.period_secs + cfg.startup_secs;
    match cfg.policy {
        PolicyKind::Kumulus if cold_start <= cfg.slo_wait_secs * kumulus::TARGET_SHARE => cfg
            .idle_grace_secs
            .min(cfg.startup_secs.max(cfg.period_secs)),
        _ => cfg.idle_grace_secs,
    }
}

/// Partitions the jobs topic should have for `workers`: at least `workers x
/// partition_factor` (the seed's rule), and never fewer than now (Kafka
/// cannot shrink a topic). They also run ahead to `max_workers` from the
/// start: jobs already in a partition never move, so a burst can be drained
/// by at most as many workers as it found partitions when it arrived; adding
/// partitions after it lands does not help it (see the simulator's burst trace).
pub fn partitions_for(cfg: &PolicyConfig, workers: u32, current: u32) -> u32 {
    (workers.max(1) * cfg.partition_factor.max(1))
        .max(cfg.max_workers)
        .max(current)
}

#[cfg(test)]
mod tests;

/// Workers the partitions allow: where the broker cannot add partitions,
/// a worker beyond the partition count would sit idle.
pub fn cap_to_partitions(desired: u32, partitions: u32, can_grow: bool) -> u32 {
    if can_grow || partitions == 0 {
        desired
    } else {
        desired.min(partitions)
    }
}
