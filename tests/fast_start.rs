//! The fast path (`worker.fast_start`) gives the same stdout, stderr, files
//! and exit code as `npm run start`, on the example and on jobs that probe
//! what differs between the two (arguments, exit codes, npm's variables).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{Kumulus, Options, Repo};
use serde_json::{json, Value};

async fn run(k: &Kumulus, token: &str, body: Value) -> (Value, Vec<(String, Vec<u8>)>) {
    let id = k.submit(token, body).await;
    let job = k
        .wait_for(token, &id, &["succeeded", "failed", "timed_out"], 60)
        .await;
    let mut files = Vec::new();
    for name in job["files"].as_array().unwrap() {
        let name = name.as_str().unwrap().to_string();
        let (_, bytes) = k.file(token, &id, &name).await;
        files.push((name, bytes));
    }
    (job, files)
}

#[tokio::test]
async fn the_fast_path_matches_npm_run_start() {
    let npm = Kumulus::start(Options {
        env: vec![("KUMULUS_WORKER__FAST_START".into(), "false".into())],
        ..Options::default()
    })
    .await;
    let fast = Kumulus::start(Options {
        env: vec![("KUMULUS_WORKER__FAST_START".into(), "true".into())],
        ..Options::default()
    })
    .await;
    let example = Repo::example();
    let probe = Repo::new(&[
        (
            "package.json",
            r#"{"name":"probe","version":"2.3.4","scripts":{"start":"node main.js --fixed && echo after"}}"#,
        ),
        (
            "main.js",
            "const e = process.env; console.log(JSON.stringify({args: process.argv.slice(2), name: e.npm_package_name, version: e.npm_package_version, event: e.npm_lifecycle_event})); console.error('to stderr');",
        ),
    ]);
    let failing = Repo::node("console.log('before'); process.exit(7);");
    let hooks = Repo::new(&[(
        "package.json",
        r#"{"scripts":{"prestart":"echo pre","start":"echo main"}}"#,
    )]);
    let cases = [
        json!({"url": example.path(), "args": "hello 'big world'", "config": {"k": "v"}}),
        json!({"url": probe.path(), "args": ["; touch /tmp/x", "$(id)", "a b", "'q'", "\"d\"", "*", "--flag"]}),
        json!({"url": failing.path()}),
        json!({"url": hooks.path()}),
    ];
    let (ta, tb) = (npm.login("ana").await, fast.login("ana").await);
    for body in cases {
        let (ja, fa) = run(&npm, &ta, body.clone()).await;
        let (jb, fb) = run(&fast, &tb, body.clone()).await;
        assert_eq!(ja["state"], jb["state"], "{body}");
        assert_eq!(ja["exit_code"], jb["exit_code"], "{body}");
        assert_eq!(fa.len(), fb.len(), "{body}");
        for ((na, ba), (nb, bb)) in fa.iter().zip(&fb) {
            assert_eq!(na, nb, "{body}");
            assert_eq!(
                String::from_utf8_lossy(ba),
                String::from_utf8_lossy(bb),
                "{body}: {na}"
            );
        }
    }
}
