//! Table tests of the policies' decisions.

use super::*;

fn cfg(policy: PolicyKind) -> PolicyConfig {
    PolicyConfig {
        policy,
        period_secs: 10.0,
        slo_wait_secs: 30.0,
        startup_secs: 5.0,
        min_workers: 1,
        max_workers: 20,
        budget_worker_secs_per_hour: None,
        slots: 1,
        lag_threshold: 5.0,
        cooldown_secs: 60.0,
        stabilization_secs: 60.0,
        rebalance_secs: 0.0,
        idle_grace_secs: 60.0,
        partition_factor: 2,
        measure_startup: false,
        measure_rebalance: false,
    }
}

fn obs(
    now: f64,
    workers: u32,
    waiting: &[u64],
    running: u64,
    arrivals: u64,
    services: u64,
) -> Observed {
    Observed {
        now_secs: now,
        workers,
        partitions: waiting.len() as u32,
        waiting_per_partition: waiting.to_vec(),
        running,
        arrivals,
        services,
        finished: services,
        service_secs: vec![2.0; services as usize],
    }
}

#[test]
fn seed_rule_as_written() {
    let c = PolicyConfig {
        min_workers: 0,
        ..cfg(PolicyKind::Seed)
    };
    // (arrivals, services, workers) -> desired
    let table = [
        ((10, 2, 1), 9), // pending 8 > 1 worker: create 8
        ((3, 3, 4), 0),  // pending 0: delete 4 (to min_workers 0 -> kept 1: jobs ran)
        ((5, 3, 4), 2),  // pending 2 < 4: delete 2
        ((2, 0, 1), 3),  // pending 2 > 1: create 2
        ((1, 1, 1), 1),  // one worker is never deleted
    ];
    for ((a, s, w), want) in table {
        let d = seed::decide(&c, &History::default(), &obs(0.0, w, &[0, 0], 0, a, s));
        assert_eq!(
            d.desired, want,
            "arrivals {a} services {s} workers {w}: {}",
            d.reason
        );
    }
}

#[test]
fn lag_rule_like_keda() {
    let c = cfg(PolicyKind::Lag);
    let h = History::default();
    let table: [(&[u64], u64, u32, u32); 4] = [
        (&[10, 13, 0, 0], 0, 1, 4), // lag 23 / 5 -> 5, capped at 4 partitions
        (&[3, 4, 0, 0, 0, 0, 0, 0], 0, 1, 2), // lag 7 -> 2
        (&[0, 0], 0, 1, 0),         // no lag -> 0 (then bounded to min 1)
        (&[0, 0, 0, 0], 6, 2, 2),   // running jobs count as lag: 6 -> 2
    ];
    for (waiting, running, workers, want) in table {
        let d = lag::decide(&c, &h, &obs(0.0, workers, waiting, running, 0, 0));
        assert_eq!(d.desired, want, "{waiting:?}: {}", d.reason);
    }
    // A scale-down waits out the cooldown.
    let mut h = History::default();
    let busy = obs(0.0, 4, &[10, 10, 0, 0], 0, 0, 0);
    let d = decide(&c, &h, &busy);
    assert_eq!(d.desired, 4);
    h.record(busy, &d);
    let quiet = obs(30.0, 4, &[0, 0, 0, 0], 0, 0, 0);
    assert_eq!(decide(&c, &h, &quiet).desired, 4, "held by the cooldown");
    let later = obs(70.0, 4, &[0, 0, 0, 0], 0, 0, 0);
    assert_eq!(
        decide(&c, &h, &later).desired,
        1,
        "after the cooldown, down to min"
    );
}

#[test]
fn lag_cooldown_is_not_renewed_by_its_own_holds() {
    // One busy decision, then quiet ones every period, each recorded as the
    // loop records it: the holds must not keep the pool up past the cooldown.
    let c = cfg(PolicyKind::Lag);
    let mut h = History::default();
    let mut workers = 4;
    let busy = obs(0.0, workers, &[10, 10, 0, 0], 0, 0, 0);
    let d = decide(&c, &h, &busy);
    h.record(busy, &d);
    let mut down_at = None;
    for step in 1..=20 {
        let t = step as f64 * 10.0;
        let quiet = obs(t, workers, &[0, 0, 0, 0], 0, 0, 0);
        let d = decide(&c, &h, &quiet);
        if d.desired < workers && down_at.is_none() {
            down_at = Some(t);
        }
        workers = d.desired;
        h.record(quiet, &d);
    }
    // The cooldown is 60 s after the last recommendation of 4 (t = 0).
    assert_eq!(down_at, Some(60.0));
    assert_eq!(workers, 1);
}

#[test]
fn kumulus_scales_up_for_a_burst_at_once_and_down_after_the_window() {
    let c = cfg(PolicyKind::Kumulus);
    let mut h = History::default();
    // Warm-up: steady trickle, 2 s jobs, one worker is enough.
    for i in 0..5 {
        let o = obs(i as f64 * 10.0, 1, &[0, 0, 0, 0], 1, 1, 1);
        let d = decide(&c, &h, &o);
        assert_eq!(d.desired, 1, "{}", d.reason);
        h.record(o, &d);
    }
    // A burst of 100 jobs spread over 4 partitions.
    let burst = obs(50.0, 1, &[25, 25, 25, 25], 1, 100, 1);
    let d = decide(&c, &h, &burst);
    // 100 jobs x 2 s must drain in 30 - 5 s: at least 8 workers.
    assert!(d.desired >= 8, "{}", d.reason);
    h.record(burst, &d);
    let up = d.desired;
    // Drained and quiet: held during the stabilization window, then down.
    let desired = hold_then_settle(&c, &mut h, 50.0, up, |t, workers| {
        obs(t, workers, &[0, 0, 0, 0], 0, 0, 0)
    });
    assert_eq!(desired, 1);
}

/// Decides every 10 s from a period after `peak_at` to 300 s, on what
/// `observe(time, workers)` says: the decision stays at `peak` for the
/// stabilization window. Returns where it settles.
fn hold_then_settle(
    c: &PolicyConfig,
    h: &mut History,
    peak_at: f64,
    peak: u32,
    observe: impl Fn(f64, u32) -> Observed,
) -> u32 {
    let mut t = peak_at + 10.0;
    let mut desired = peak;
    while t < 300.0 {
        let o = observe(t, desired);
        let d = decide(c, h, &o);
        if t < peak_at + c.stabilization_secs {
            assert_eq!(d.desired, peak, "held at {t}: {}", d.reason);
        }
        desired = d.desired;
        h.record(o, &d);
        t += 10.0;
    }
    desired
}

#[test]
fn kumulus_follows_the_load_and_adds_workers_when_a_queue_forms() {
    let c = PolicyConfig {
        slo_wait_secs: 20.0,
        ..cfg(PolicyKind::Kumulus)
    };
    let mut h = History::default();
    // 3 jobs/s of 2 s each: 6 erlangs. With nothing waiting, fewer
    // than the load is enough until the next decision: the queue that forms
    // meanwhile starts within the target.
    let mut last = 0;
    for i in 0..20 {
        let o = Observed {
            service_secs: vec![2.0; 30],
            ..obs(i as f64 * 10.0, last.max(1), &[0; 16], 6, 30, 30)
        };
        let d = decide(&c, &h, &o);
        last = d.desired;
        h.record(o, &d);
    }
    assert!((3..=6).contains(&last), "{last}");
    let steady = last;
    // A queue of 48 forms (the last period's arrivals and some before):
    // 6 workers would start the newest only after 16 s of work plus what
    // arrives meanwhile; more are needed.
    let o = Observed {
        service_secs: vec![2.0; 30],
        ..obs(200.0, 6, &[3; 16], 6, 30, 30)
    };
    let d = decide(&c, &h, &o);
    assert!(d.desired > 6, "{}", d.reason);
    let peak = d.desired;
    h.record(o, &d);
    // Drained: back down, after the window.
    let desired = hold_then_settle(&c, &mut h, 200.0, peak, |t, workers| Observed {
        service_secs: vec![2.0; 30],
        ..obs(t, workers, &[0; 16], 6, 30, 30)
    });
    assert_eq!(desired, steady);
}

#[test]
fn kumulus_spends_the_slack_a_lax_slo_leaves() {
    // 1 job/s of 2 s: 2 erlangs. A steady-state model would keep 3 or more
    // workers so that nobody waits; with a 60 s SLO and 10 jobs queued, two
    // workers start every job well in time, so two it is.
    let c = PolicyConfig {
        slo_wait_secs: 60.0,
        ..cfg(PolicyKind::Kumulus)
    };
    let mut h = History::default();
    for i in 0..10 {
        let o = obs(
            i as f64 * 10.0,
            2,
            &[1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
            2,
            10,
            10,
        );
        let d = decide(&c, &h, &o);
        assert_eq!(d.desired, 2, "{}", d.reason);
        h.record(o, &d);
    }
}

#[test]
fn kumulus_counts_a_hot_partition() {
    let c = cfg(PolicyKind::Kumulus);
    let h = History::default();
    // 2 s jobs, 10 waiting in each of partitions 0 and 4 of 8 (25 s to drain).
    // Round-robin, 2 workers put both on one worker (partitions 0, 2, 4, 6:
    // 40 s of work); 3 split them. The backlog alone would ask for 2.
    let o = obs(0.0, 1, &[10, 0, 0, 0, 10, 0, 0, 0], 0, 0, 1);
    let d = decide(&c, &h, &o);
    assert!(d.desired >= 3, "{}", d.reason);
    assert!(d.reason.contains("partitions 3"), "{}", d.reason);
}

#[test]
fn scale_to_zero_after_the_idle_grace_and_wake_on_arrival() {
    for policy in [PolicyKind::Seed, PolicyKind::Lag, PolicyKind::Kumulus] {
        let c = PolicyConfig {
            min_workers: 0,
            cooldown_secs: 0.0,
            stabilization_secs: 0.0,
            ..cfg(policy)
        };
        let mut h = History::default();
        let busy = obs(0.0, 1, &[0, 0], 1, 1, 1);
        let d = decide(&c, &h, &busy);
        h.record(busy, &d);
        let grace = idle_grace(&c);
        let idle = obs(grace / 2.0, 1, &[0, 0], 0, 0, 0);
        let d = decide(&c, &h, &idle);
        assert_eq!(d.desired, 1, "{policy}: within the grace: {}", d.reason);
        h.record(idle, &d);
        let idle_long = obs(grace + 40.0, 1, &[0, 0], 0, 0, 0);
        let d = decide(&c, &h, &idle_long);
        assert_eq!(d.desired, 0, "{policy}: after the grace: {}", d.reason);
        h.record(idle_long, &d);
        let wake = obs(grace + 50.0, 0, &[1, 0], 0, 1, 0);
        let d = decide(&c, &h, &wake);
        assert!(
            d.desired >= 1,
            "{policy}: woken by an arrival: {}",
            d.reason
        );
    }
}

#[test]
fn bounds_and_budget_apply_to_every_policy() {
    for policy in [PolicyKind::Seed, PolicyKind::Lag, PolicyKind::Kumulus] {
        let c = PolicyConfig {
            max_workers: 3,
            ..cfg(policy)
        };
        let o = obs(0.0, 1, &[100, 100, 100, 100], 0, 400, 0);
        assert_eq!(decide(&c, &History::default(), &o).desired, 3, "{policy}");
        let c = PolicyConfig {
            budget_worker_secs_per_hour: Some(100.0),
            ..cfg(policy)
        };
        let mut h = History::default();
        // Two workers for 40 s: 80 of 100 worker-seconds spent.
        h.decisions.push_back((0.0, 2));
        let o = obs(40.0, 2, &[100, 100, 100, 100], 0, 400, 0);
        let d = decide(&c, &h, &o);
        assert_eq!(d.desired, 2, "{policy}: the budget holds it: {}", d.reason);
    }
}

#[test]
fn partitions_run_ahead_of_workers_and_never_shrink() {
    let c = PolicyConfig {
        max_workers: 4,
        ..cfg(PolicyKind::Kumulus)
    };
    assert_eq!(partitions_for(&c, 1, 1), 4, "ahead to max_workers");
    assert_eq!(partitions_for(&c, 5, 4), 10, "workers x factor");
    assert_eq!(partitions_for(&c, 1, 12), 12, "never shrink");
    assert_eq!(partitions_for(&c, 0, 0), 4);
    // A broker without CreatePartitions caps the workers.
    assert_eq!(cap_to_partitions(7, 2, false), 2);
    assert_eq!(cap_to_partitions(7, 2, true), 7);
}

#[test]
fn kumulus_idles_only_as_long_as_a_cold_start_costs() {
    // (policy, period, start-up, SLO, idle_grace_secs) -> grace
    let table = [
        // A cold start (10 + 10 s) within the target (0.85 x 30 s): the
        // grace is the start-up.
        ((PolicyKind::Kumulus, 10.0, 10.0, 30.0, 300.0), 10.0),
        // Decisions every 15 s: at least a period.
        ((PolicyKind::Kumulus, 15.0, 5.0, 30.0, 300.0), 15.0),
        // The configured grace is a ceiling.
        ((PolicyKind::Kumulus, 10.0, 10.0, 30.0, 4.0), 4.0),
        // A cold start would miss the target: the whole grace.
        ((PolicyKind::Kumulus, 10.0, 20.0, 30.0, 300.0), 300.0),
        // seed and lag keep theirs (KEDA's cooldown period).
        ((PolicyKind::Lag, 10.0, 10.0, 30.0, 300.0), 300.0),
        ((PolicyKind::Seed, 10.0, 10.0, 30.0, 300.0), 300.0),
    ];
    for ((policy, period_secs, startup_secs, slo_wait_secs, idle_grace_secs), want) in table {
        let c = PolicyConfig {
            period_secs,
            startup_secs,
            slo_wait_secs,
            idle_grace_secs,
            ..cfg(policy)
        };
        assert_eq!(
            idle_grace(&c),
            want,
            "{policy} {period_secs} {startup_secs} {slo_wait_secs}"
        );
    }
}

#[test]
fn the_steady_arrival_rate_spans_its_window() {
    let mut h = History::default();
    // 3 arrivals a period of 10 s, for 100 s.
    for i in 0..10 {
        let o = obs(i as f64 * 10.0, 1, &[0], 0, 3, 0);
        h.record(o, &Decision::new(1, ""));
    }
    let now = obs(100.0, 1, &[0], 0, 3, 0);
    // The whole history: 33 arrivals over 110 s (the first period's too).
    assert!((h.arrival_rate_over(&now, 300.0, 10.0) - 33.0 / 110.0).abs() < 1e-12);
    // The last 30 s: the periods ending at 80, 90 and 100.
    assert!((h.arrival_rate_over(&now, 30.0, 10.0) - 9.0 / 30.0).abs() < 1e-12);
    // No history: this period alone.
    assert!((History::default().arrival_rate_over(&now, 300.0, 10.0) - 0.3).abs() < 1e-12);
}

/// Five minutes of 1 job every 10 s whose run times are `samples`, then a
/// decision with `arrivals` in its own period and nothing waiting.
fn after_five_minutes(samples: &[f64], arrivals: u64) -> Decision {
    let c = cfg(PolicyKind::Kumulus);
    let mut h = History::default();
    for i in 0..30 {
        let o = Observed {
            service_secs: if i == 0 { samples.to_vec() } else { Vec::new() },
            ..obs(i as f64 * 10.0, 4, &[0; 16], 4, 1, 1)
        };
        let d = decide(&c, &h, &o);
        h.record(o, &Decision::new(4, d.reason));
    }
    decide(&c, &h, &obs(300.0, 4, &[0; 16], 4, arrivals, 0))
}

#[test]
fn kumulus_keeps_slots_free_where_a_heavy_tail_would_make_a_waiting_job_late() {
    // The same mean run time of 39 s (a load of 3.9 slots), nothing
    // waiting. Every job 39 s: a job that finds the slots busy waits for a
    // remainder of at most 39 s, past the 25.5 s target only a third of
    // the time. One in ten jobs of 300 s: past it most of the time, so
    // more slots are kept free.
    let light = after_five_minutes(&[39.0; 100], 1);
    let mut heavy: Vec<f64> = vec![10.0; 90];
    heavy.extend([300.0; 10]);
    let heavy_d = after_five_minutes(&heavy, 1);
    assert!(
        heavy_d.desired > light.desired,
        "{} / {}",
        heavy_d.reason,
        light.reason
    );
    assert!(heavy_d.desired >= 8, "{}", heavy_d.reason);
    // It reads the load of minutes, not of the last period: a quiet
    // period changes nothing, and a busy one (3 arrivals, three times the
    // rate) adds at most one.
    assert_eq!(after_five_minutes(&heavy, 0).desired, heavy_d.desired);
    let busy = after_five_minutes(&heavy, 3).desired;
    assert!(
        (heavy_d.desired..=heavy_d.desired + 1).contains(&busy),
        "{busy}"
    );
}
