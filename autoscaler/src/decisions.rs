//! A run's decisions, one row each, live or simulated, and the CSV that
//! `kumulus sim --decisions` and `kumulus load`'s `decisions.csv` write, so
//! that the two logs of one load line up row by row.

use kumulus_core::observation::ScalingDecision;
use serde::Serialize;

/// One decision, timed from the run's start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRow {
    /// Seconds from the run's start (the trace's zero, or the first submit).
    pub at_secs: f64,
    /// Workers that ran (or were starting) when it fell.
    pub workers: u32,
    pub desired: u32,
    /// What the policy's rule asked for, before stabilization and bounds.
    pub recommended: u32,
    pub waiting: u64,
    pub running: u64,
    /// Jobs that arrived over the last period.
    pub arrivals: u64,
    pub rule: String,
    pub reason: String,
}

impl DecisionRow {
    /// A live decision, timed from `start_ms` (milliseconds since the epoch).
    pub fn live(d: &ScalingDecision, start_ms: i64) -> Self {
        Self {
            at_secs: (d.timestamp - start_ms) as f64 / 1000.0,
            workers: d.workers,
            desired: d.desired,
            recommended: d.recommended,
            waiting: d.waiting,
            running: d.running,
            arrivals: d.arrivals,
            rule: d.rule.clone(),
            reason: d.reason.clone(),
        }
    }

    /// Whether it changed the worker count.
    pub fn scales(&self) -> bool {
        self.desired != self.workers
    }
}

/// The header of [`csv`].
pub const CSV_HEADER: &str =
    "source,at_secs,workers,desired,recommended,waiting,running,arrivals,rule,reason";

/// Rows as CSV, each tagged with its source (`live`, `sim`), in the order
/// given. Text fields are quoted, their quotes doubled.
pub fn csv<'a>(rows: impl IntoIterator<Item = (&'a str, &'a DecisionRow)>) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out = format!("{CSV_HEADER}\n");
    for (source, r) in rows {
        out.push_str(&format!(
            "{},{:.3},{},{},{},{},{},{},{},{}\n",
            quote(source),
            r.at_secs,
            r.workers,
            r.desired,
            r.recommended,
            r.waiting,
            r.running,
            r.arrivals,
            quote(&r.rule),
            quote(&r.reason)
        ));
    }
    out
}

/// Decisions that changed the count, up and down.
pub fn changes(rows: &[DecisionRow]) -> (usize, usize) {
    let up = rows.iter().filter(|r| r.desired > r.workers).count();
    let down = rows.iter().filter(|r| r.desired < r.workers).count();
    (up, down)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workers: u32, desired: u32, reason: &str) -> DecisionRow {
        DecisionRow {
            at_secs: 1.5,
            workers,
            desired,
            recommended: desired,
            waiting: 3,
            running: 1,
            arrivals: 4,
            rule: "policy".into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn a_live_decision_is_timed_from_the_start() {
        let d = ScalingDecision {
            timestamp: 10_500,
            workers: 2,
            desired: 3,
            recommended: 4,
            waiting: 5,
            running: 2,
            arrivals: 7,
            partitions: 16,
            rule: "policy".into(),
            reason: "why".into(),
        };
        let r = DecisionRow::live(&d, 9_000);
        assert_eq!(r.at_secs, 1.5);
        assert_eq!((r.workers, r.desired, r.recommended), (2, 3, 4));
        assert_eq!((r.waiting, r.running, r.arrivals), (5, 2, 7));
        assert!(r.scales());
    }

    #[test]
    fn the_csv_quotes_text_and_keeps_the_order() {
        let a = row(1, 2, "up, \"now\"");
        let b = row(2, 2, "hold");
        let text = csv([("live", &a), ("sim", &b)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            lines[1],
            "\"live\",1.500,1,2,2,3,1,4,\"policy\",\"up, \"\"now\"\"\""
        );
        assert_eq!(lines[2], "\"sim\",1.500,2,2,2,3,1,4,\"policy\",\"hold\"");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn changes_count_ups_and_downs_not_holds() {
        let rows = [row(1, 2, ""), row(2, 2, ""), row(2, 1, ""), row(1, 3, "")];
        assert_eq!(changes(&rows), (2, 1));
    }
}
