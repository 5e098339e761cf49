//! The `kumulus` client commands, black-box against `kumulus up`: login
//! (the password from stdin, the token kept 0600), submit with `--wait`
//! (the job's exit code) and `--follow`, jobs, status, logs, download,
//! cancel, rm, `--json`, and errors as one line with a non-zero exit.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::cli::Cli;
use common::{Kumulus, Options, Repo, USERS};
use serde_json::Value;

#[tokio::test]
async fn a_user_does_everything_the_demo_does_with_kumulus_commands() {
    let k = Kumulus::start(Options {
        slots: 2,
        ..Options::default()
    })
    .await;
    let cli = Cli::new();
    let (user, password) = USERS[0];
    // Login: a wrong password is one line and exit 1; the right one is kept 0600.
    let r = cli.run_with(&["login", &k.api.base, "--user", user], "wrong\n");
    assert_eq!(r.code, 1, "{}", r.err);
    assert_eq!(r.err.lines().count(), 1, "{}", r.err);
    let r = cli.run_with(
        &["login", &k.api.base, "--user", user],
        &format!("{password}\n"),
    );
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(!r.out.contains(password) && !r.err.contains(password));
    let creds = cli.creds.path().join("credentials.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // submit --wait exits with the job's own exit code.
    let fails = Repo::node("console.log('about to fail'); process.exit(3);");
    let r = cli.run(&["submit", &fails.path(), "--wait"]);
    assert_eq!(r.code, 3, "{}{}", r.out, r.err);
    assert!(
        r.out.contains("failed") && r.out.contains("exit code 3"),
        "{}",
        r.out
    );

    // submit --follow streams the logs, then the result.
    let job = Repo::node(
        "const fs = require('fs'); fs.mkdirSync('output', {recursive: true}); \
         fs.writeFileSync('output/result.txt', process.argv[2]); \
         console.log('hello ' + process.argv[2]); console.error('to stderr');",
    );
    let r = cli.run(&["submit", &job.path(), "-a", "world", "--follow"]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(r.out.starts_with("hello world\n"), "{}", r.out);
    assert!(r.err.contains("to stderr"), "{}", r.err);
    let id = r
        .out
        .lines()
        .last()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();

    // jobs, as a table and as JSON.
    let table = cli.ok(&["jobs"]);
    assert!(table.lines().next().unwrap().starts_with("ID"), "{table}");
    assert!(table.contains(&id), "{table}");
    let jobs: Value =
        serde_json::from_str(&cli.ok(&["jobs", "--json", "--state", "failed"])).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    let r = cli.run(&["jobs", "--state", "nope"]);
    assert_eq!((r.code, r.err.lines().count()), (1, 1), "{}", r.err);

    // status, logs, download.
    let status: Value = serde_json::from_str(&cli.ok(&["status", &id, "--json"])).unwrap();
    assert_eq!(status["state"], "succeeded");
    assert_eq!(cli.ok(&["logs", &id]), "hello world\n");
    let events: Vec<Value> = cli
        .ok(&["logs", &id, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.last().unwrap()["event"], "end");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("files");
    cli.ok(&["download", &id, "-o", out_dir.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("output/result.txt")).unwrap(),
        "world"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("stdout.log")).unwrap(),
        "hello world\n"
    );

    // cancel a running job; rm an ended one.
    let slow = Repo::node("setTimeout(() => {}, 60000);");
    let running = cli.ok(&["submit", &slow.path()]).trim().to_string();
    let session = kumulus_client::Client::new(&k.api.base)
        .unwrap()
        .login(user, password)
        .await
        .unwrap();
    let mut state = None;
    for _ in 0..150 {
        state = Some(session.job(&running).await.unwrap().state);
        if state == Some(kumulus_client::JobState::Running) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(state, Some(kumulus_client::JobState::Running));
    assert!(cli.ok(&["cancel", &running]).contains("cancelling"));
    let ended = session
        .wait(
            &running,
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(ended.state, kumulus_client::JobState::Cancelled);
    let r = cli.run(&["cancel", &running]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("has already ended"), "{}", r.err);
    let rm: Value = serde_json::from_str(&cli.ok(&["rm", &running, "--json"])).unwrap();
    assert_eq!(rm["done"], "removed");
    let r = cli.run(&["status", &running]);
    assert_eq!(r.code, 1);
    assert!(r.err.starts_with("kumulus: 404"), "{}", r.err);

    // Another user's job is no job.
    let bob = Cli::new();
    let (u2, p2) = USERS[1];
    bob.run_with(&["login", &k.api.base, "--user", u2], &format!("{p2}\n"));
    let r = bob.run(&["status", &id]);
    assert_eq!(r.code, 1, "{}", r.out);

    // A token the server no longer takes, without a terminal: say what to do.
    let mut saved: Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    saved["token"] = "expired".into();
    std::fs::write(&creds, saved.to_string()).unwrap();
    let r = cli.run(&["jobs"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("kumulus login"), "{}", r.err);

    // Completions for a shell.
    let r = cli.run(&["completions", "bash"]);
    assert!(r.code == 0 && r.out.contains("submit"), "{}", r.err);
}
