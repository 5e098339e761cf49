//! A run's decisions, live or simulated, as one record
//! ([`ScalingDecision`]), and the CSV that `kumulus sim --decisions` and
//! `kumulus load`'s `decisions.csv` write, so that the two logs of one load
//! line up row by row.

use kumulus_core::observation::ScalingDecision;

use crate::policy::{Decision, Observed};

/// The record of one decision: what the loop saw (`obs`, with `workers`
/// running or starting) and what the policy decided, at `timestamp` (ms:
/// since the epoch live, since the trace's zero in the simulator).
pub fn record(
    obs: &Observed,
    decision: &Decision,
    workers: u32,
    timestamp: i64,
) -> ScalingDecision {
    ScalingDecision {
        timestamp,
        workers,
        desired: decision.desired,
        recommended: decision.recommended,
        waiting: obs.waiting(),
        running: obs.running,
        arrivals: obs.arrivals,
        partitions: obs.partitions,
        rule: decision.rule.clone(),
        reason: decision.reason.clone(),
    }
}

/// A decision timed from `start_ms` instead of the epoch.
pub fn since(d: &ScalingDecision, start_ms: i64) -> ScalingDecision {
    ScalingDecision {
        timestamp: d.timestamp - start_ms,
        ..d.clone()
    }
}

/// The header of [`csv`].
pub const CSV_HEADER: &str =
    "source,at_secs,workers,desired,recommended,waiting,running,arrivals,rule,reason";

/// Decisions timed from the run's start (see [`since`]) as CSV, each tagged
/// with its source (`live`, `sim`), in the order given. Text fields are
/// quoted, their quotes doubled.
pub fn csv<'a>(rows: impl IntoIterator<Item = (&'a str, &'a ScalingDecision)>) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out = format!("{CSV_HEADER}\n");
    for (source, r) in rows {
        out.push_str(&format!(
            "{},{:.3},{},{},{},{},{},{},{},{}\n",
            quote(source),
            r.timestamp as f64 / 1000.0,
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
pub fn changes(rows: &[ScalingDecision]) -> (usize, usize) {
    let up = rows.iter().filter(|r| r.desired > r.workers).count();
    let down = rows.iter().filter(|r| r.desired < r.workers).count();
    (up, down)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workers: u32, desired: u32, reason: &str) -> ScalingDecision {
        ScalingDecision {
            timestamp: 1_500,
            workers,
            desired,
            recommended: desired,
            waiting: 3,
            running: 1,
            arrivals: 4,
            partitions: 8,
            rule: "policy".into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn a_record_holds_what_the_loop_saw_and_decided() {
        let obs = Observed {
            now_secs: 10.5,
            workers: 2,
            partitions: 16,
            waiting_per_partition: vec![2, 0, 3],
            running: 2,
            arrivals: 7,
            services: 1,
            finished: 1,
            service_secs: vec![4.0],
        };
        let decision = Decision {
            desired: 3,
            recommended: 4,
            reason: "why".into(),
            rule: "hold".into(),
        };
        let d = record(&obs, &decision, 2, 10_500);
        assert_eq!(d.timestamp, 10_500);
        assert_eq!((d.workers, d.desired, d.recommended), (2, 3, 4));
        assert_eq!(
            (d.waiting, d.running, d.arrivals, d.partitions),
            (5, 2, 7, 16)
        );
        assert_eq!((d.rule.as_str(), d.reason.as_str()), ("hold", "why"));
        assert_eq!(since(&d, 9_000).timestamp, 1_500);
        assert_eq!(since(&d, 9_000).reason, "why");
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
