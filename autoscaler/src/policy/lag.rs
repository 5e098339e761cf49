//! KEDA's Kafka scaler: desired = ceil(total lag / lagThreshold), never more
//! than the partitions (a consumer without a partition idles), and a
//! scale-down goes no lower than the largest recommendation of the cooldown
//! window (as the HPA's stabilization window does). Recommendations are what
//! the rule asked for, not what was decided: a held decision does not renew
//! the hold.

use super::{Decision, History, Observed, PolicyConfig};

pub fn decide(cfg: &PolicyConfig, history: &History, now: &Observed) -> Decision {
    let lag = now.waiting() + now.running;
    let threshold = cfg.lag_threshold.max(1e-9);
    let mut desired = (lag as f64 / threshold).ceil() as u32;
    let mut reason = format!("lag {lag} / threshold {threshold}");
    if now.partitions > 0 && desired > now.partitions {
        desired = now.partitions;
        reason = format!("{reason}; capped at {} partitions", now.partitions);
    }
    let recommended = desired;
    if desired < now.workers {
        let since = now.now_secs - cfg.cooldown_secs;
        let recent_max = History::max_since(&history.recommendations, since);
        if recent_max > desired {
            let held = recent_max.min(now.workers);
            reason = format!(
                "{reason}; wants {desired}, held at {held} for the {} s cooldown",
                cfg.cooldown_secs
            );
            desired = held;
        }
    }
    Decision {
        desired,
        recommended,
        reason,
        rule: "policy".into(),
    }
}
