//! The promise the `kumulus` policy makes on every shipped trace (the
//! README's table): at most 5% of jobs wait longer than the SLO, at no more
//! worker-seconds than the cheapest `lag` threshold that also keeps the SLO,
//! that threshold picked per trace in hindsight from a sweep.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use kumulus_autoscaler::policy::{PolicyConfig, PolicyKind};
use kumulus_autoscaler::sim::{read_trace, simulate, SimConfig, SimResult};

/// `kumulus sim`'s defaults (the README's settings) with this SLO.
fn run(trace: &str, slo: f64, policy: PolicyKind, lag_threshold: f64) -> SimResult {
    let path = format!("{}/traces/{trace}.csv", env!("CARGO_MANIFEST_DIR"));
    let jobs = read_trace(&std::fs::read_to_string(&path).expect("trace")).unwrap();
    let cfg = SimConfig::new(
        PolicyConfig {
            policy,
            slo_wait_secs: slo,
            lag_threshold,
            ..PolicyConfig::default()
        },
        3.0,
    );
    simulate(&jobs, &cfg)
}

const LAG_SWEEP: [f64; 14] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0,
];

#[test]
fn kumulus_keeps_the_slo_at_no_more_cost_than_the_best_lag_threshold() {
    // The README's 60 s, and a laxer 120 s. (At 30 s no policy can keep
    // the burst trace's 120-job bursts in time with 20 workers that take
    // 10 s to start.)
    for (slo, trace) in [60.0, 120.0]
        .into_iter()
        .flat_map(|slo| ["steady", "step", "burst", "diurnal", "heavy-tailed"].map(|t| (slo, t)))
    {
        let ours = run(trace, slo, PolicyKind::Kumulus, 5.0);
        assert!(
            ours.slo_violation_pct <= 5.0,
            "{trace}, SLO {slo}: {:.1}% of jobs over the SLO",
            ours.slo_violation_pct
        );
        let best_lag = LAG_SWEEP
            .iter()
            .map(|&l| (l, run(trace, slo, PolicyKind::Lag, l)))
            .filter(|(_, r)| r.slo_violation_pct <= 5.0)
            .min_by(|a, b| a.1.worker_seconds.total_cmp(&b.1.worker_seconds))
            .expect("some lag threshold meets the SLO");
        assert!(
            ours.worker_seconds <= best_lag.1.worker_seconds,
            "{trace}, SLO {slo}: kumulus {:.0} worker-s, lag threshold {} {:.0} worker-s",
            ours.worker_seconds,
            best_lag.0,
            best_lag.1.worker_seconds
        );
    }
}
