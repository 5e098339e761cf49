//! `kumulus load` against `kumulus up`, as a user runs it, and `kumulus
//! trace export` feeding `kumulus sim`: the report agrees with the job
//! records, and the exported history replays with the same job count.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{bin, Kumulus, Options};
use serde_json::Value;
use std::process::Command;

fn secs(a: &str, b: &str) -> f64 {
    let a: chrono::DateTime<chrono::Utc> = a.parse().unwrap();
    let b: chrono::DateTime<chrono::Utc> = b.parse().unwrap();
    (b - a).num_milliseconds() as f64 / 1000.0
}

fn quantile(sorted: &[f64], f: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * f).round() as usize]
}

#[tokio::test]
async fn a_sped_up_trace_is_reported_as_the_records_say_and_exports_for_the_simulator() {
    let env = |k: &str, v: &str| (k.to_string(), v.to_string());
    let k = Kumulus::start(Options {
        slots: 1,
        env: vec![
            env("KUMULUS_AUTOSCALER__PERIOD_SECS", "1"),
            env("KUMULUS_AUTOSCALER__MIN_WORKERS", "1"),
            env("KUMULUS_AUTOSCALER__MAX_WORKERS", "3"),
            env("KUMULUS_AUTOSCALER__STARTUP_SECS", "0"),
        ],
        ..Options::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.csv");
    let mut csv = String::from("arrival_secs,service_secs\n");
    for i in 0..10 {
        csv.push_str(&format!("{},{}\n", i as f64 * 0.6, 2.0));
    }
    std::fs::write(&trace, csv).unwrap();
    let report = dir.path().join("report");
    let out = Command::new(bin())
        .args(["load", "--url", &k.api.base])
        .args(["--user", "ana:ana-password", "--user", "bob:bob-password"])
        .arg("--trace")
        .arg(&trace)
        .args(["--speed", "2", "--slo-wait-secs", "5", "--period-secs", "1"])
        .args(["--startup-secs", "0", "--max-workers", "3", "--slots", "1"])
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("jobs 10"), "{stdout}");
    // Not a terminal: no progress lines, only the summary.
    assert!(!stdout.contains("submitted "), "{stdout}");

    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    let jobs = r["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 10);
    assert_eq!(r["live"]["jobs"], 10);
    assert_eq!(r["sim"]["jobs"], 10);
    assert_eq!(r["unfinished"], 0);
    assert!(
        r["errors"].as_object().unwrap().is_empty(),
        "{}",
        r["errors"]
    );
    for key in [
        "wait_p50_secs",
        "wait_p95_secs",
        "wait_max_secs",
        "slo_violation_pct",
        "worker_seconds",
        "scale_events",
        "max_workers",
    ] {
        assert!(r["live"][key].is_number(), "live {key}");
        assert!(r["sim"][key].is_number(), "sim {key}");
    }
    // Every job as its record says, spread over both users.
    let ana = k.login("ana").await;
    let bob = k.login("bob").await;
    let mut waits = Vec::new();
    let mut owners = std::collections::BTreeSet::new();
    for j in jobs {
        let id = j["id"].as_str().unwrap();
        let (status, rec) = k
            .json(reqwest::Method::GET, &format!("/api/jobs/{id}"), &ana, None)
            .await;
        let (rec, token) = if status == reqwest::StatusCode::OK {
            (rec, &ana)
        } else {
            (k.job(&bob, id).await, &bob)
        };
        owners.insert(rec["owner"].as_str().unwrap().to_string());
        assert_eq!(rec["state"], "succeeded", "{rec}");
        assert_eq!(j["state"], rec["state"]);
        for t in ["submitted_at", "started_at", "finished_at"] {
            let (a, b) = (j[t].as_str().unwrap(), rec[t].as_str().unwrap());
            assert!(secs(a, b).abs() < 0.001, "{t}: {a} vs {b}");
        }
        // Each ran for its service time at speed 2.
        let (_, out) = k.file(token, id, "stdout.log").await;
        assert_eq!(String::from_utf8_lossy(&out), "slept 1 s\n");
        waits.push(secs(
            rec["submitted_at"].as_str().unwrap(),
            rec["started_at"].as_str().unwrap(),
        ));
    }
    assert_eq!(owners.len(), 2, "{owners:?}");
    waits.sort_by(f64::total_cmp);
    for (key, want) in [
        ("wait_p50_secs", quantile(&waits, 0.5)),
        ("wait_p95_secs", quantile(&waits, 0.95)),
        ("wait_max_secs", *waits.last().unwrap()),
    ] {
        let got = r["live"][key].as_f64().unwrap();
        assert!(
            (got - want).abs() < 0.01,
            "{key}: report {got}, records {want}"
        );
    }
    let over = waits.iter().filter(|&&w| w > 5.0).count() as f64 * 10.0;
    assert!((r["live"]["slo_violation_pct"].as_f64().unwrap() - over).abs() < 1e-6);
    assert!(r["live"]["max_workers"].as_u64().unwrap() >= 1);
    for f in ["report.md", "plot.svg", "trace.csv"] {
        assert!(report.join(f).is_file(), "{f}");
    }
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("| wait p95 |"), "{md}");
    let own_trace = std::fs::read_to_string(report.join("trace.csv")).unwrap();
    assert_eq!(own_trace.lines().count(), 11, "{own_trace}");

    // Both decision logs: the live one is the autoscaler's feed over the
    // run, oldest first; the simulated one, the prediction's decisions.
    let log = std::fs::read_to_string(report.join("decisions.csv")).unwrap();
    let mut lines = log.lines();
    assert_eq!(
        lines.next(),
        Some("source,at_secs,workers,desired,recommended,waiting,running,arrivals,rule,reason")
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| {
            // The reason, last, may hold commas: split off the first nine.
            l.splitn(10, ',')
                .map(|f| f.trim_matches('"').to_string())
                .collect()
        })
        .collect();
    let of =
        |source: &str| -> Vec<&Vec<String>> { rows.iter().filter(|r| r[0] == source).collect() };
    let (live, sim) = (of("live"), of("sim"));
    assert_eq!(live.len() + sim.len(), rows.len(), "{log}");
    assert!(live.len() >= 2 && sim.len() >= 2, "{log}");
    let at = |r: &Vec<String>| r[1].parse::<f64>().unwrap();
    assert!(live.windows(2).all(|w| at(w[0]) <= at(w[1])), "{log}");
    assert!(live.iter().all(|r| at(r) >= 0.0), "{log}");
    let session = kumulus_client::Client::new(&k.api.url(""))
        .unwrap()
        .login("ana", "ana-password")
        .await
        .unwrap();
    let feed = session.autoscaler(None).await.unwrap();
    for r in &live {
        let (desired, reason): (u32, &str) = (r[3].parse().unwrap(), &r[9]);
        assert!((1..=3).contains(&desired), "{log}");
        assert!(
            feed.decisions
                .iter()
                .any(|d| d.desired == desired
                    && d.reason.replace('"', "") == reason.replace('"', "")),
            "{reason} is not in the feed"
        );
    }
    let ups = |side: &[&Vec<String>]| {
        side.iter()
            .filter(|r| r[3].parse::<u32>().unwrap() > r[2].parse::<u32>().unwrap())
            .count()
    };
    assert!(
        md.contains(&format!(
            "Decisions, live / sim: {} / {}, of which up {} / {}",
            live.len(),
            sim.len(),
            ups(&live),
            ups(&sim)
        )),
        "{md}"
    );

    // The report's prediction replays from what it recorded (trace, speed,
    // settings, measured model): `scripts/bench-resim.py` gets the same.
    let resim = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/bench-resim.py"
        ))
        .arg(&report)
        .env("KUMULUS_BENCH_BIN", bin())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&resim.stdout);
    assert!(
        resim.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&resim.stderr)
    );
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(2)
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 4, "{table}");
    for row in rows {
        // | report | figure | live | sim then | sim now | ratio |
        assert_eq!(row[4], row[5], "{table}");
    }

    // The store's history as a trace, through the simulator.
    let export = Command::new(bin())
        .args(["trace", "export", "--config"])
        .arg(&k.config)
        .env("KUMULUS_DATA_DIR", &k.data)
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let exported = String::from_utf8(export.stdout).unwrap();
    assert!(
        exported.starts_with("arrival_secs,service_secs\n"),
        "{exported}"
    );
    let rows = exported.lines().count() - 1;
    assert_eq!(rows, 10, "{exported}");
    let file = dir.path().join("mine.csv");
    std::fs::write(&file, &exported).unwrap();
    let sim = Command::new(bin())
        .args(["sim", "--json", "--policy", "lag", "--trace"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        sim.status.success(),
        "{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    let s: Value = serde_json::from_slice(&sim.stdout).unwrap();
    assert_eq!(s["jobs"], rows);

    // Bad input gets a clear error and exit code 1 (no panic).
    let bad = Command::new(bin())
        .args(["load", "--url", &k.api.base, "--user", "ana"])
        .arg("--trace")
        .arg(&trace)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NAME:PASSWORD"));
    let since = Command::new(bin())
        .args(["trace", "export", "--since", "yesterday", "--config"])
        .arg(&k.config)
        .output()
        .unwrap();
    assert_eq!(since.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&since.stderr).contains("--since"));
}

/// A load runs longer than a token lives (Keycloak's last five minutes by
/// default): a session from `login` logs in again when its token is
/// refused, so the calls after the expiry still answer, and every call
/// refused at once shares one new token.
#[tokio::test]
async fn a_logged_in_session_outlives_its_token() {
    let k = Kumulus::start(Options {
        env: vec![("KUMULUS_AUTH__TOKEN_TTL_SECS".into(), "60".into())],
        ..Options::default()
    })
    .await;
    let client = kumulus_client::Client::new(&k.api.url("")).unwrap();
    let session = client.login("ana", "ana-password").await.unwrap();
    let first = session.token();
    let repo = common::Repo::node("console.log('hi');");
    let id = session
        .submit(&kumulus_client::NewJob::repo(repo.path()))
        .await
        .unwrap()
        .id;
    // Past its expiry (60 s, and the server's 5 s leeway), the first token
    // is refused on its own...
    let stale = client.session(first.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        match stale.job(&id).await {
            Err(e) if e.status().map(|s| s.as_u16()) == Some(401) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the token never expired"
        );
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    // ... and the session still answers, from clones called together too,
    // with one new token for all of them.
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let s = session.clone();
            let id = id.clone();
            tokio::spawn(async move { s.job(&id).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().id, id);
    }
    let renewed = session.token();
    assert_ne!(renewed, first);
    assert!(session
        .submit(&kumulus_client::NewJob::repo(repo.path()))
        .await
        .is_ok());
    assert_eq!(session.token(), renewed, "one renewal, not one per call");
    // A session made from a bare token is not renewed: its 401 is the caller's.
    assert_eq!(
        stale
            .job(&id)
            .await
            .unwrap_err()
            .status()
            .map(|s| s.as_u16()),
        Some(401)
    );
}
