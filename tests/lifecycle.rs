//! Starting and stopping `kumulus up`: nothing queued is lost across a
//! restart; bad configuration stops it with one line and exit code 2.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{bin, eventually, processes_with, Kumulus, Options, Repo};
use serde_json::json;
use std::process::Command;

#[tokio::test]
async fn queued_and_interrupted_jobs_run_after_a_restart() {
    let k = Kumulus::start(Options {
        slots: 1,
        grace_secs: 1,
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    let marker = format!("kumulus-restart-{}", std::process::id());
    let slow = Repo::node("setTimeout(() => console.log('slow done'), 4000);");
    let quick = Repo::node("console.log('quick done');");
    let first = k
        .submit(
            &token,
            json!({"url": slow.path(), "args": [marker.clone()]}),
        )
        .await;
    k.wait_for(&token, &first, &["running"], 60).await;
    let queued: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(k.submit(&token, json!({"url": quick.path()})).await);
        }
        ids
    };
    // Stop while the first job runs (grace 1 s < its 4 s) and three wait.
    let k = k.restart().await;
    assert!(
        processes_with(&marker).is_empty(),
        "the interrupted job was left running"
    );
    // The old token still works: the signing key is kept in the data folder.
    for id in std::iter::once(&first).chain(queued.iter()) {
        let job = k
            .wait_for(&token, id, &["succeeded", "failed", "timed_out"], 60)
            .await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    let (_, stdout) = k.file(&token, &first, "stdout.log").await;
    assert_eq!(stdout, b"slow done\n");
    eventually(5, "no job processes left", || {
        processes_with(&marker).is_empty()
    })
    .await;
}

#[test]
fn bad_configuration_stops_with_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: [Case; 4] = [
        (&[("KUMULUS_WORKER__SLOTS", "lots")], &[], "worker.slots"),
        (
            &[("KUMULUS_WORKER__TIMEOUT_SECS", "0")],
            &[],
            "worker.timeout_secs",
        ),
        (&[], &["--listen", "0.0.0.0:0"], "listen"),
        (&[], &["--config", "/nonexistent/kumulus.toml"], "--config"),
    ];
    for (env, args, key) in cases {
        let out = Command::new(bin())
            .arg("up")
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(key), "{stderr}");
    }
}

#[test]
fn hash_password_prints_a_hash_that_logs_in() {
    let out = common::cli::Cli::new().run_with(&["hash-password"], "correct horse\n");
    assert_eq!(out.code, 0, "{}", out.err);
    let hash = out.out;
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("correct horse"));
}

#[tokio::test]
async fn a_second_kumulus_on_the_same_data_folder_is_refused() {
    let k = Kumulus::start(Options::default()).await;
    let out = Command::new(bin())
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&k.data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already using"));
}
