//! What the autoscaler measures of the system it scales, for a policy set
//! to `startup_secs = "measured"` or `rebalance_secs = "measured"`:
//!
//! - **Start-up**: from asking the platform for a worker to that worker's
//!   first job. Each worker asked for waits in line; the next `started`
//!   event marked as a worker's first job ends the oldest wait. A
//!   scale-down cancels the newest waits (the platform stops the newest
//!   workers first), and a wait older than [`FORGET_AFTER`] is dropped
//!   (the worker never came).
//! - **Rebalance**: each worker times its own pauses (partitions revoked to
//!   assigned) and reports them on its next `started` event.
//!
//! The value in use is the median of the last [`KEPT`] samples. Pure: fed
//! with events and requests, tested with tables.

use chrono::{DateTime, Utc};
use std::collections::VecDeque;

use kumulus_core::event::{EventKind, StatusEvent};

/// Samples kept per figure.
pub const KEPT: usize = 20;
/// A worker asked for that has not run a job after this long is forgotten.
pub const FORGET_AFTER: chrono::Duration = chrono::Duration::minutes(15);

#[derive(Debug, Default, Clone)]
pub struct Measurements {
    /// When each worker not seen yet was asked for, oldest first.
    asked: VecDeque<DateTime<Utc>>,
    startups: VecDeque<f64>,
    pauses: VecDeque<f64>,
}

/// What one event taught.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Learnt {
    pub startup_secs: Option<f64>,
    pub rebalance_secs: Option<f64>,
}

fn keep(v: &mut VecDeque<f64>, x: f64) {
    if v.len() == KEPT {
        v.pop_front();
    }
    v.push_back(x);
}

fn median(v: &VecDeque<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s: Vec<f64> = v.iter().copied().collect();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

impl Measurements {
    /// The platform was asked to go from `from` workers to `to` at `at`.
    pub fn asked(&mut self, from: u32, to: u32, at: DateTime<Utc>) {
        self.forget(at);
        if to > from {
            self.asked
                .extend(std::iter::repeat_n(at, (to - from) as usize));
        } else {
            for _ in to..from {
                if self.asked.pop_back().is_none() {
                    break;
                }
            }
        }
    }

    /// Learns from a status event.
    pub fn saw(&mut self, ev: &StatusEvent) -> Learnt {
        let mut learnt = Learnt::default();
        let (EventKind::Started, Some(note)) = (&ev.kind, &ev.member) else {
            return learnt;
        };
        if let Some(p) = note
            .rebalance_paused_secs
            .filter(|p| p.is_finite() && *p >= 0.0)
        {
            keep(&mut self.pauses, p);
            learnt.rebalance_secs = Some(p);
        }
        if note.first_job {
            self.forget(ev.at);
            if self.asked.front().is_some_and(|&at| at <= ev.at) {
                if let Some(at) = self.asked.pop_front() {
                    let secs = (ev.at - at).num_milliseconds().max(0) as f64 / 1000.0;
                    keep(&mut self.startups, secs);
                    learnt.startup_secs = Some(secs);
                }
            }
        }
        learnt
    }

    fn forget(&mut self, now: DateTime<Utc>) {
        while self
            .asked
            .front()
            .is_some_and(|&at| now - at > FORGET_AFTER)
        {
            self.asked.pop_front();
        }
    }

    /// The start-up time to assume, once one was measured.
    pub fn startup_secs(&self) -> Option<f64> {
        median(&self.startups)
    }

    /// The rebalance pause to assume, once one was measured.
    pub fn rebalance_secs(&self) -> Option<f64> {
        median(&self.pauses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumulus_core::event::MemberNote;
    use kumulus_core::job::JobId;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn started(at: i64, first_job: bool, pause: Option<f64>) -> StatusEvent {
        let mut ev = StatusEvent::new(JobId::new(), "ana", EventKind::Started)
            .from_worker("w")
            .with_member(MemberNote {
                first_job,
                rebalance_paused_secs: pause,
            });
        ev.at = t(at);
        ev
    }

    #[test]
    fn start_up_runs_from_the_request_to_the_new_workers_first_job() {
        let mut m = Measurements::default();
        assert_eq!(m.startup_secs(), None);
        // Two workers asked for at 0; their first jobs at 8 and 12.
        m.asked(1, 3, t(0));
        // A job of an old worker teaches nothing.
        assert_eq!(m.saw(&started(3, false, None)), Learnt::default());
        assert_eq!(m.saw(&started(8, true, None)).startup_secs, Some(8.0));
        assert_eq!(m.saw(&started(12, true, None)).startup_secs, Some(12.0));
        assert_eq!(m.startup_secs(), Some(10.0));
        // A first job nobody asked for (a worker started by hand).
        assert_eq!(m.saw(&started(20, true, None)).startup_secs, None);
        // Asked for two, then one of them taken back before it ran: the
        // one left is matched.
        m.asked(3, 5, t(30));
        m.asked(5, 4, t(31));
        assert_eq!(m.saw(&started(36, true, None)).startup_secs, Some(6.0));
        assert_eq!(m.saw(&started(37, true, None)).startup_secs, None);
        // A worker that never came is forgotten.
        m.asked(4, 5, t(100));
        assert_eq!(m.saw(&started(2000, true, None)).startup_secs, None);
        assert_eq!(m.startup_secs(), Some(8.0));
    }

    #[test]
    fn rebalance_pauses_come_from_the_workers_and_the_median_is_used() {
        let mut m = Measurements::default();
        for (i, p) in [2.0, 9.0, 3.0].into_iter().enumerate() {
            assert_eq!(
                m.saw(&started(i as i64, false, Some(p))).rebalance_secs,
                Some(p)
            );
        }
        assert_eq!(m.rebalance_secs(), Some(3.0));
        // A nonsense pause is ignored.
        assert_eq!(m.saw(&started(5, false, Some(-1.0))).rebalance_secs, None);
        // Only the last KEPT count.
        for i in 0..KEPT {
            m.saw(&started(10 + i as i64, false, Some(1.0)));
        }
        assert_eq!(m.rebalance_secs(), Some(1.0));
    }
}
