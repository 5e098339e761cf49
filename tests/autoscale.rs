//! Live autoscaling in `kumulus up` (the `local` platform: the worker pool's
//! slots): a burst of sleeping jobs makes the worker count rise, the queue
//! drains, and the count returns to the minimum after the stabilization window.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{metric, Kumulus, Options, Repo};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_burst_scales_the_workers_up_and_back_down() {
    let env = |k: &str, v: &str| (k.to_string(), v.to_string());
    let k = Kumulus::start(Options {
        slots: 1,
        env: vec![
            env("KUMULUS_AUTOSCALER__MIN_WORKERS", "1"),
            env("KUMULUS_AUTOSCALER__MAX_WORKERS", "4"),
            env("KUMULUS_AUTOSCALER__POLICY", "kumulus"),
            env("KUMULUS_AUTOSCALER__SLO_WAIT_SECS", "4"),
            env("KUMULUS_AUTOSCALER__STARTUP_SECS", "0"),
            env("KUMULUS_AUTOSCALER__STABILIZATION_SECS", "3"),
        ],
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    let repo = Repo::node("setTimeout(() => console.log('done'), 2000);");
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(k.submit(&token, json!({"url": repo.path()})).await);
    }
    let metrics = || k.text("/metrics");
    let mut most = 0.0f64;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = metrics().await;
        most = most.max(metric(&text, "kumulus_workers_current").unwrap_or(0.0));
        let mut done = 0;
        for id in &ids {
            let job = k.job(&token, id).await;
            if job["state"] == "succeeded" {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queue never drained ({done} done)"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(most > 1.0, "the workers never rose above 1");
    // Back to the minimum once the window has passed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = metrics().await;
        if metric(&text, "kumulus_workers_current") == Some(1.0)
            && metric(&text, "kumulus_workers_desired") == Some(1.0)
        {
            assert!(
                common::metric_where(&text, "kumulus_scale_decisions_total", "direction=\"down\"")
                    .unwrap_or(0.0)
                    >= 1.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never back to one worker:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
