//! Jobs run in a sandbox (bubblewrap): each escape attempt is contained, and
//! a normal job still succeeds after it.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{Kumulus, Options, Repo};
use serde_json::{json, Value};

const PROBE: &str = r#"
const fs = require('fs');
const net = require('net');
const [dataDir, hostTmpFile, port, configFile, rootOnly] = process.argv.slice(2);
const out = {};
out.uid = process.getuid();
out.envKeys = Object.keys(process.env).sort();
const tryRead = (p) => { try { return fs.readFileSync(p, 'utf8').length; } catch (e) { return e.code; } };
out.tokenKey = tryRead(dataDir + '/token.key');
out.database = tryRead(dataDir + '/kumulus.db');
out.configFile = tryRead(configFile);
out.shadow = tryRead('/etc/shadow');
out.rootOnly = tryRead(rootOnly);
try { fs.writeFileSync(rootOnly, 'overwritten'); out.wroteRootOnly = true; } catch (e) { out.wroteRootOnly = e.code; }
const tryList = (p) => { try { return fs.readdirSync(p); } catch (e) { return e.code; } };
out.dataDirListing = tryList(dataDir);
out.gitCache = tryList(dataDir + '/cache/git');
out.npmCaches = tryList(dataDir + '/cache/npm');
out.rootHome = (() => { try { return fs.readdirSync('/root'); } catch (e) { return e.code; } })();
try { fs.writeFileSync(hostTmpFile, 'escaped'); out.wroteTmp = true; } catch (e) { out.wroteTmp = e.code; }
try { fs.writeFileSync('/usr/kumulus-escape', 'x'); out.wroteUsr = true; } catch (e) { out.wroteUsr = e.code; }
const s = net.connect({ host: '127.0.0.1', port: Number(port) });
s.setTimeout(3000);
s.on('connect', () => { out.network = 'connected'; done(); });
s.on('error', (e) => { out.network = e.code; done(); });
s.on('timeout', () => { out.network = 'timeout'; done(); });
function done() { s.destroy(); console.log(JSON.stringify(out)); }
"#;

#[tokio::test]
async fn escape_attempts_are_contained() {
    let k = Kumulus::start(Options {
        env: vec![("KUMULUS_SECRET_MARKER".into(), "do-not-leak".into())],
        // Outside /tmp and /root (which jobs never see), as /etc/kumulus
        // or /srv would be.
        tmp_in: Some("/var/tmp".into()),
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    let port = k.base.rsplit(':').next().unwrap().to_string();
    let host_tmp = std::env::temp_dir().join(format!("kumulus-escape-{}", std::process::id()));
    let _ = std::fs::remove_file(&host_tmp);
    let data = std::fs::canonicalize(&k.data).unwrap();
    // The configuration sits outside the data folder, as /etc/kumulus would.
    let config = std::fs::canonicalize(&k.config).unwrap();
    assert!(!config.starts_with(&data));
    // A root-only file the job can see (/var/tmp is not hidden from jobs),
    // and /etc/shadow (root:shadow 0640): an unprivileged user reads neither.
    let root_only =
        std::path::PathBuf::from(format!("/var/tmp/kumulus-root-only-{}", std::process::id()));
    std::fs::write(&root_only, "root's secret").unwrap();
    std::os::unix::fs::chown(&root_only, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(
        &root_only,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let repo = Repo::node(PROBE);
    let id = k
        .submit(
            &token,
            json!({"url": repo.path(), "args": [data.display().to_string(), host_tmp.display().to_string(), port, config.display().to_string(), root_only.display().to_string()]}),
        )
        .await;
    let job = k.wait_for(&token, &id, &["succeeded", "failed"], 60).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let (_, stdout) = k.file(&token, &id, "stdout.log").await;
    let seen: Value = serde_json::from_slice(&stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&stdout)));

    let left = std::fs::read_to_string(&root_only).unwrap();
    let _ = std::fs::remove_file(&root_only);
    assert_eq!(seen["uid"], 65534, "runs as nobody: {seen}");
    // Nobody outside too: what only root may read stays unread.
    assert_eq!(seen["shadow"], "EACCES", "{seen}");
    assert_eq!(seen["rootOnly"], "EACCES", "{seen}");
    assert_ne!(seen["wroteRootOnly"], true, "{seen}");
    assert_eq!(left, "root's secret");
    let keys: Vec<&str> = seen["envKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        keys.iter().all(|k| !k.starts_with("KUMULUS")),
        "worker environment leaked: {keys:?}"
    );
    assert_eq!(seen["tokenKey"], "ENOENT", "{seen}");
    assert_eq!(seen["database"], "ENOENT", "{seen}");
    // The worker's configuration file (it holds the users' passwords here)
    // reads as empty.
    assert!(
        seen["configFile"] == 0 || seen["configFile"].is_string(),
        "the job read the worker's configuration: {seen}"
    );
    // The data folder shows only the paths down to the job's own folder
    // and its owner's npm cache: no other user's cache, no git cache.
    assert!(
        seen["dataDirListing"]
            .as_array()
            .map(|l| l.iter().all(|d| d == "work" || d == "cache"))
            .unwrap_or(true),
        "{seen}"
    );
    assert_eq!(seen["gitCache"], "ENOENT", "{seen}");
    assert!(
        seen["npmCaches"]
            .as_array()
            .map(|l| l.len() <= 1)
            .unwrap_or(true),
        "{seen}"
    );
    assert!(
        seen["rootHome"]
            .as_array()
            .map(|l| l.is_empty())
            .unwrap_or(true),
        "{seen}"
    );
    assert_ne!(seen["wroteUsr"], true, "{seen}");
    assert!(!host_tmp.exists(), "the job wrote into the host's /tmp");
    assert_ne!(
        seen["network"], "connected",
        "network is off by default: {seen}"
    );

    a_normal_job_still_succeeds(&k, &token).await;
}

#[tokio::test]
async fn memory_hogs_and_fork_bombs_end_the_job_not_the_worker() {
    if !std::path::Path::new("/sys/fs/cgroup/pids").is_dir()
        && !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        panic!("no cgroup hierarchy to test the limits with");
    }
    let k = Kumulus::start(Options {
        env: vec![
            ("KUMULUS_WORKER__MEMORY_MB".into(), "128".into()),
            ("KUMULUS_WORKER__PIDS".into(), "32".into()),
        ],
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    let hog = Repo::node("const a = []; for (;;) { a.push(Buffer.alloc(16 * 1024 * 1024, 1)); }");
    let bomb = Repo::new(&[
        (
            "package.json",
            r#"{"name":"b","scripts":{"start":"sh bomb.sh"}}"#,
        ),
        (
            "bomb.sh",
            "i=0\nwhile [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done\nwait\n",
        ),
    ]);
    for (repo, limit) in [(&hog, "worker.memory_mb"), (&bomb, "worker.pids")] {
        let id = k
            .submit(&token, json!({"url": repo.path(), "timeout_secs": 20}))
            .await;
        fails_naming(&k, &token, &id, limit).await;
    }
    a_normal_job_still_succeeds(&k, &token).await;
}

#[tokio::test]
async fn credentials_in_a_repository_url_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("kumulus.log");
    let k = Kumulus::start(Options {
        env: vec![("KUMULUS_LOG".into(), "debug".into())],
        log_file: Some(log.clone()),
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    let secret = "s3cr3tT0kenValue";
    // Port 9 (discard) refuses at once: the clone fails with git's message.
    let url = format!("https://alice:{secret}@127.0.0.1:9/private/repo.git");
    let id = k.submit(&token, json!({"url": url})).await;
    let job = k.wait_for(&token, &id, &["succeeded", "failed"], 60).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("git clone failed"),
        "{job}"
    );
    let mut seen = vec![job.to_string()];
    for path in ["/api/jobs", &format!("/api/status/{id}"), "/api/status"] {
        let (_, body) = k.call(reqwest::Method::GET, path, &token, None).await;
        seen.push(String::from_utf8_lossy(&body).into_owned());
    }
    for path in ["/metrics", "/health/load"] {
        seen.push(
            k.http
                .get(k.url(path))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    seen.push(std::fs::read_to_string(&log).unwrap());
    for text in &seen {
        assert!(!text.contains(secret), "the secret leaked into: {text}");
    }
    assert!(
        job["url"].as_str().unwrap().contains("***@127.0.0.1:9"),
        "{job}"
    );
}

#[tokio::test]
async fn a_flood_of_output_is_cut_and_the_job_still_ends() {
    let k = Kumulus::start(Options {
        env: vec![("KUMULUS_WORKER__LOG_LIMIT_BYTES".into(), "1048576".into())],
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    // 1 GiB to stdout, in 1 MiB writes.
    let flood = Repo::node(
        "const fs = require('fs'); const b = Buffer.alloc(1 << 20, 120); for (let i = 0; i < 1024; i++) fs.writeSync(1, b);",
    );
    let id = k.submit(&token, json!({"url": flood.path()})).await;
    let job = k
        .wait_for(&token, &id, &["succeeded", "failed", "timed_out"], 120)
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let (_, stdout) = k.file(&token, &id, "stdout.log").await;
    assert!(stdout.len() < 1_100_000, "{} bytes kept", stdout.len());
    assert!(String::from_utf8_lossy(&stdout[stdout.len() - 200..]).contains("cut at 1048576 bytes"));
}

/// Spins for `seconds` of wall time, then prints the share of a CPU it got.
const SPIN: &str = r#"
const seconds = Number(process.argv[2]);
const start = Date.now();
while (Date.now() - start < seconds * 1000) {}
const cpu = process.cpuUsage();
console.log(JSON.stringify({ share: (cpu.user + cpu.system) / 1000 / (Date.now() - start) }));
"#;

#[tokio::test]
async fn a_cpu_share_holds_a_busy_job_back() {
    if !std::path::Path::new("/sys/fs/cgroup/cpu").is_dir()
        && !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        panic!("no cgroup hierarchy to test the CPU limit with");
    }
    let k = Kumulus::start(Options::default()).await;
    let token = k.login("ana").await;
    let spin = Repo::node(SPIN);

    // A job that asks for a tenth of a CPU gets no more than that.
    let id = k
        .submit(
            &token,
            json!({"url": spin.path(), "args": ["2"], "limits": {"cpus": 0.1}}),
        )
        .await;
    let job = k.wait_for(&token, &id, &["succeeded", "failed"], 60).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["limits"]["cpus"], 0.1, "{job}");
    let (_, stdout) = k.file(&token, &id, "stdout.log").await;
    let seen: Value = serde_json::from_slice(&stdout).unwrap();
    let share = seen["share"].as_f64().unwrap();
    assert!(share < 0.5, "a job held to 0.1 CPU got {share} of one");

    // An endless loop held to its share ends at its time limit, and the
    // error says it was held back.
    let id = k
        .submit(
            &token,
            json!({"url": spin.path(), "args": ["100"], "timeout_secs": 3, "limits": {"cpus": 0.1}}),
        )
        .await;
    let job = k
        .wait_for(&token, &id, &["succeeded", "failed", "timed_out"], 60)
        .await;
    assert_eq!(job["state"], "timed_out", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("worker.cpus"),
        "{job}"
    );
}

#[tokio::test]
async fn without_cgroups_setrlimit_ends_memory_hogs_and_cpu_hogs() {
    let k = Kumulus::start(Options {
        env: vec![
            ("KUMULUS_WORKER__LIMIT_BY".into(), "rlimit".into()),
            ("KUMULUS_WORKER__MEMORY_MB".into(), "256".into()),
        ],
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    let hog = Repo::node("const a = []; for (;;) { a.push(Buffer.alloc(16 * 1024 * 1024, 1)); }");
    let spin = Repo::node(SPIN);
    let cases = [
        (
            json!({"url": hog.path(), "timeout_secs": 30}),
            "worker.memory_mb",
        ),
        // A tenth of a CPU for 20 s: 2 CPU-seconds, used up long before the
        // time limit even on a busy machine.
        (
            json!({"url": spin.path(), "args": ["100"], "timeout_secs": 20, "limits": {"cpus": 0.1}}),
            "worker.cpus",
        ),
    ];
    for (body, limit) in cases {
        let id = k.submit(&token, body).await;
        fails_naming(&k, &token, &id, limit).await;
    }
    a_normal_job_still_succeeds(&k, &token).await;
}

/// After an attempt, the worker still runs a normal job.
async fn a_normal_job_still_succeeds(k: &Kumulus, token: &str) {
    let ok = Repo::example();
    let id = k.submit(token, json!({"url": ok.path()})).await;
    let job = k.wait_for(token, &id, &["succeeded", "failed"], 60).await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

/// The job ends `failed`, and its error names `limit`.
async fn fails_naming(k: &Kumulus, token: &str, id: &str, limit: &str) {
    let job = k
        .wait_for(token, id, &["succeeded", "failed", "timed_out"], 90)
        .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains(limit), "{job}");
}
