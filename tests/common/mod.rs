//! Black-box helpers: start the real `kumulus up` binary on port 0 with a
//! fresh data folder, speak HTTP to it, make job repositories on disk.
#![allow(dead_code)]

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USERS: [(&str, &str); 2] = [("ana", "ana-password"), ("bob", "bob-password")];

/// Options for one `kumulus up`.
pub struct Options {
    pub slots: usize,
    pub grace_secs: u64,
    pub env: Vec<(String, String)>,
    /// Write the server's log here instead of the test's stderr.
    pub log_file: Option<PathBuf>,
    /// Make the test's folder (configuration and data) in here instead of
    /// the system's temporary folder.
    pub tmp_in: Option<PathBuf>,
    /// Start in the test's folder with no `--data-dir`: the default,
    /// relative `kumulus-data`, as the README runs it.
    pub default_data_dir: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            slots: 2,
            grace_secs: 1,
            env: Vec::new(),
            log_file: None,
            tmp_in: None,
            default_data_dir: false,
        }
    }
}

/// An HTTP client for one Kumulus API.
pub struct Api {
    pub base: String,
    pub http: Client,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            // The API closes a keep-alive connection idle for its header
            // timeout (10 s); a client must not reuse one that old, or a
            // request can race the close (README, "REST API").
            http: Client::builder()
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// The body of an unauthenticated GET (`/metrics`, `/health/load`).
    pub async fn text(&self, path: &str) -> String {
        let resp = self.http.get(self.url(path)).send().await.expect("request");
        resp.text().await.expect("body")
    }

    /// The arrivals counted by the observations `/health/load` returns, and
    /// how many observations it returned.
    pub async fn observed_arrivals(&self) -> (f64, usize) {
        let load: Value = serde_json::from_str(&self.text("/health/load").await).expect("json");
        let list = load.as_array().expect("a list of observations");
        let arrivals = list
            .iter()
            .map(|o| o["avgRateOfArrival"].as_f64().expect("avgRateOfArrival"))
            .sum();
        (arrivals, list.len())
    }

    /// Logs in through `POST /auth/token`; returns the bearer token.
    pub async fn login_with(&self, user: &str, password: &str) -> String {
        let resp = self
            .http
            .post(self.url("/auth/token"))
            .json(&json!({"username": user, "password": password}))
            .send()
            .await
            .expect("login");
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["token_type"], "Bearer");
        body["access_token"].as_str().expect("token").to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with a bearer token; returns status and body bytes.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        (status, resp.bytes().await.expect("body").to_vec())
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, bytes) = self.call(method, path, token, body).await;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    /// Submits a job; asserts 201 and returns its id.
    pub async fn submit(&self, token: &str, body: Value) -> String {
        let (status, value) = self
            .json(Method::POST, "/api/jobs", token, Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "submit: {value}");
        assert_eq!(value["state"], "queued");
        value["id"].as_str().expect("id").to_string()
    }

    pub async fn job(&self, token: &str, id: &str) -> Value {
        let (status, value) = self
            .json(Method::GET, &format!("/api/jobs/{id}"), token, None)
            .await;
        assert_eq!(status, StatusCode::OK, "get job: {value}");
        value
    }

    /// Polls until the job is in one of `states`; panics after `secs`.
    pub async fn wait_for(&self, token: &str, id: &str, states: &[&str], secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let job = self.job(token, id).await;
            if states.iter().any(|s| job["state"] == *s) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never reached {states:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn file(&self, token: &str, id: &str, name: &str) -> (StatusCode, Vec<u8>) {
        self.call(
            Method::GET,
            &format!("/api/jobs/{id}/files/{name}"),
            token,
            None,
        )
        .await
    }
}

impl std::ops::Deref for Kumulus {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// A running `kumulus up`, killed when dropped.
pub struct Kumulus {
    pub child: Child,
    pub api: Api,
    pub data: PathBuf,
    pub config: PathBuf,
    pub opts_env: Vec<(String, String)>,
    pub log_file: Option<PathBuf>,
    pub stdout_banner: String,
    /// Where it runs with the default data folder, if it does.
    pub cwd: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kumulus")
}

fn write_config(dir: &Path, opts: &Options) -> PathBuf {
    let path = dir.join("kumulus.toml");
    let mut text = format!(
        "[worker]\nslots = {s}\ntimeout_secs = 60\nmax_timeout_secs = 120\nshutdown_grace_secs = {}\n\n[autoscaler]\nperiod_secs = 1\nmin_workers = {s}\nmax_workers = {s}\n\n[auth]\n",
        opts.grace_secs,
        s = opts.slots
    );
    for (u, p) in USERS {
        text.push_str(&format!(
            "[[auth.users]]\nusername = \"{u}\"\npassword = \"{p}\"\n"
        ));
    }
    std::fs::write(&path, text).expect("write config");
    path
}

impl Kumulus {
    pub async fn start(opts: Options) -> Self {
        let tmp = match &opts.tmp_in {
            Some(dir) => tempfile::tempdir_in(dir),
            None => tempfile::tempdir(),
        }
        .expect("tempdir");
        let config = write_config(tmp.path(), &opts);
        let (data, cwd) = if opts.default_data_dir {
            (
                tmp.path().join("kumulus-data"),
                Some(tmp.path().to_path_buf()),
            )
        } else {
            (tmp.path().join("data"), None)
        };
        let mut k = Self::spawn(&data, &config, opts.env.clone(), opts.log_file.clone(), cwd).await;
        k._tmp = Some(tmp);
        k
    }

    async fn spawn(
        data: &Path,
        config: &Path,
        env: Vec<(String, String)>,
        log_file: Option<PathBuf>,
        cwd: Option<PathBuf>,
    ) -> Self {
        let mut cmd = Command::new(bin());
        cmd.arg("up").arg("--config").arg(config);
        match &cwd {
            Some(dir) => {
                cmd.current_dir(dir);
            }
            None => {
                cmd.arg("--data-dir").arg(data);
            }
        }
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .env(
                "KUMULUS_LOG",
                std::env::var("KUMULUS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match &log_file {
                Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
                None => Stdio::inherit(),
            });
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start kumulus up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut banner = String::new();
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                banner.push_str(&line);
                if line.contains("listening on") {
                    let _ = tx.send(banner.clone());
                }
                line.clear();
            }
        });
        let banner = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("kumulus up printed where it listens");
        let base = banner
            .lines()
            .find_map(|l| l.split("listening on ").nth(1))
            .expect("address")
            .trim()
            .to_string();
        Self {
            child,
            api: Api::new(base),
            data: data.to_path_buf(),
            config: config.to_path_buf(),
            opts_env: env,
            log_file,
            stdout_banner: banner,
            cwd,
            _tmp: None,
        }
    }

    /// Kills the process (SIGKILL: no chance to clean up) and starts a new
    /// one on the same data and config.
    pub async fn crash_and_restart(mut self) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.respawn().await
    }

    /// A new process on this one's data and config (this one has ended).
    async fn respawn(mut self) -> Self {
        let tmp = self._tmp.take();
        let mut k = Self::spawn(
            &self.data,
            &self.config,
            self.opts_env.clone(),
            self.log_file.clone(),
            self.cwd.clone(),
        )
        .await;
        k._tmp = tmp;
        k
    }

    /// Stops the process with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "kumulus did not stop within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops this process and starts a new one on the same data and config.
    pub async fn restart(mut self) -> Self {
        let status = self.stop();
        assert!(status.success(), "clean exit on SIGTERM, got {status}");
        self.respawn().await
    }

    pub async fn login(&self, user: &str) -> String {
        let password = USERS
            .iter()
            .find(|(u, _)| *u == user)
            .expect("known user")
            .1;
        self.api.login_with(user, password).await
    }

    /// A GET sent byte for byte, so that the path is not normalised by a URL parser.
    pub fn raw_get(&self, path: &str, token: &str) -> u16 {
        let addr = self.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut resp = String::new();
        let _ = stream.read_to_string(&mut resp);
        resp.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status line")
    }
}

impl Drop for Kumulus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A git repository made from `files` (path, contents), in a temp folder.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn new(files: &[(&str, &str)]) -> Self {
        let repo = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        repo.git(&["init", "--quiet"]);
        repo.commit(files);
        repo
    }

    /// Writes `files` and commits them.
    pub fn commit(&self, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = self.dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(path, text).expect("write");
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "-m", "job"]);
    }

    fn git(&self, args: &[&str]) {
        let status = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(self.dir.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdout(Stdio::null())
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    }

    /// A repository whose start script is `node main.js` with this main.js.
    pub fn node(main_js: &str) -> Self {
        Self::new(&[
            (
                "package.json",
                r#"{"name":"t","version":"1.0.0","scripts":{"start":"node main.js"}}"#,
            ),
            ("main.js", main_js),
        ])
    }

    /// The shipped example job.
    pub fn example() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello");
        let pkg = std::fs::read_to_string(root.join("package.json")).expect("example");
        let main = std::fs::read_to_string(root.join("main.js")).expect("example");
        Self::new(&[("package.json", &pkg), ("main.js", &main)])
    }

    pub fn path(&self) -> String {
        self.dir.path().display().to_string()
    }
}

/// `git daemon` serving one repository over git://, as a remote would.
pub struct GitDaemon {
    child: Child,
    pub url: String,
}

impl GitDaemon {
    pub fn serve(repo: &Repo) -> Self {
        let base = repo.dir.path().parent().expect("parent");
        let name = repo.dir.path().file_name().expect("name").to_string_lossy();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        // The daemon itself, not `git daemon`: `git` would start it as a
        // child of its own, which killing `git` would leave running.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git --exec-path");
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            // Only this repository.
            .arg(repo.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("git://127.0.0.1:{port}/{name}"),
        }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pids of processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let zombie = std::fs::read_to_string(e.path().join("stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true);
            if text.contains(marker) && !zombie {
                pids.push(pid);
            }
        }
    }
    pids
}

/// A sample's value in Prometheus text: the line that starts with `name`
/// (labels included, e.g. `x_total{a="b"}`) followed by its value.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of the series of `name` whose labels include `label` (such as
/// `direction="down"`), if any.
pub fn metric_where(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| {
            let (labels, value) = l.strip_prefix(name)?.strip_prefix('{')?.split_once("} ")?;
            labels
                .split(',')
                .any(|kv| kv == label)
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .reduce(|a, b| a + b)
}

/// Every panel query of `grafana/kumulus.json`: (panel title, PromQL).
pub fn dashboard_queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/kumulus.json");
    let text = std::fs::read_to_string(path).expect("grafana/kumulus.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("");
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            queries.push((title.to_string(), expr.to_string()));
        }
    }
    queries
}

/// Waits until `cond` holds; panics after `secs`.
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
pub mod browser;
pub mod cli;
pub mod cluster;

/// One row of RELIABILITY.md, printed for `scripts/reliability.sh`: the
/// jobs a fault scenario checked, how many ended in a terminal state, how
/// many had one final state (unchanged when read again after `settle`),
/// and the time from the fault to the last job's end (`finished_at`).
pub async fn report(
    api: &Api,
    token: &str,
    scenario: &str,
    ids: &[String],
    fault_at: chrono::DateTime<chrono::Utc>,
    settle: Duration,
) {
    let mut first = Vec::new();
    for id in ids {
        first.push(api.job(token, id).await);
    }
    let last_end = first
        .iter()
        .filter_map(|j| j["finished_at"].as_str())
        .filter_map(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
        .max()
        .unwrap_or(fault_at);
    let recovery = (last_end - fault_at).to_std().unwrap_or_default();
    tokio::time::sleep(settle).await;
    let terminal = ["succeeded", "failed", "cancelled", "timed_out"];
    let mut ended = 0;
    let mut single = 0;
    for (id, before) in ids.iter().zip(&first) {
        if terminal.iter().any(|s| before["state"] == *s) {
            ended += 1;
            if api.job(token, id).await == *before {
                single += 1;
            }
        }
    }
    // On a line of its own, whatever else is being printed.
    eprintln!(
        "\nRELIABILITY|{scenario}|{}|{ended}|{single}|{:.1}",
        ids.len(),
        recovery.as_secs_f64()
    );
}

/// An HTTP receiver on 127.0.0.1 for webhooks: answers each request with the
/// next status of its script (the last one after the script ends) and keeps
/// every request's headers (lower-case names) and body.
pub struct Receiver {
    pub port: u16,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

/// A request a [`Receiver`] got: its headers (lower-case names) and body.
pub type Received = (std::collections::HashMap<String, String>, Vec<u8>);

impl Receiver {
    pub async fn start(script: Vec<u16>) -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen: std::sync::Arc<std::sync::Mutex<Vec<_>>> = Default::default();
        let log = seen.clone();
        tokio::spawn(async move {
            let mut n = 0usize;
            while let Ok((stream, _)) = listener.accept().await {
                let status = *script.get(n).or(script.last()).unwrap_or(&200);
                n += 1;
                let log = log.clone();
                tokio::spawn(async move {
                    let mut reader = BufReader::new(stream);
                    let mut headers = std::collections::HashMap::new();
                    let mut line = String::new();
                    reader.read_line(&mut line).await.ok();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0
                            || line.trim().is_empty()
                        {
                            break;
                        }
                        if let Some((k, v)) = line.trim_end().split_once(':') {
                            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                        }
                    }
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).await.ok();
                    log.lock().unwrap().push((headers, body));
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = reader.get_mut().write_all(answer.as_bytes()).await;
                });
            }
        });
        Self { port, seen }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}
