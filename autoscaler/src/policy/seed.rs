//! The seed paper's rule, exactly as written (section 4.3):
//!
//! ```text
//! pendienteLanzar = avgRateOfArrival - avgRateOfService
//! if (pendienteLanzar > numWorkers)            -> "Create pendienteLanzar new Workers"
//! if (numWorkers > 1 && numWorkers - pendienteLanzar > 0)
//!                                              -> "Delete numWorkers - pendienteLanzar Workers"
//! ```

use super::{Decision, History, Observed, PolicyConfig};

pub fn decide(_cfg: &PolicyConfig, _history: &History, now: &Observed) -> Decision {
    let pending = now.arrivals as i64 - now.services as i64;
    let workers = now.workers as i64;
    let mut desired = workers;
    let mut reason = format!(
        "pending {pending} (arrivals {} - services {}), workers {workers}",
        now.arrivals, now.services
    );
    if pending > workers {
        desired = workers + pending;
        reason = format!("{reason}: create {pending}");
    }
    if workers > 1 && workers - pending > 0 {
        desired = workers - (workers - pending);
        reason = format!("{reason}: delete {}", workers - pending);
    }
    Decision::new(desired.max(0) as u32, reason)
}
