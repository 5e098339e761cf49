//! Helpers for tests against the real servers that `scripts/test.sh` starts
//! (`scripts/cluster.sh servers`): their addresses come from the file named
//! by `KUMULUS_TEST_SERVERS`. Each test works in a namespace of its own
//! (topics, consumer groups, database, bucket) so tests never see each
//! other's data.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kumulus_core::config::{Config, Mode, Secret};

use super::bin;

/// Where the shared servers listen.
#[derive(Debug, Clone)]
pub struct Servers {
    pub vars: HashMap<String, String>,
}

impl Servers {
    pub fn load() -> Self {
        let path = std::env::var("KUMULUS_TEST_SERVERS").unwrap_or_else(|_| {
            panic!(
                "these tests need the real servers: run scripts/test.sh, or start them with \
                 `scripts/cluster.sh servers` and set KUMULUS_TEST_SERVERS=.cluster/servers.env"
            )
        });
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read KUMULUS_TEST_SERVERS={path}: {e}"));
        let mut vars: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        // The same tests on another broker (scripts/test.sh runs the
        // cluster tests a second time, on noida-db).
        if let (Ok(addr), Ok(kind)) = (
            std::env::var("KUMULUS_TEST_KAFKA"),
            std::env::var("KUMULUS_TEST_KAFKA_SERVER"),
        ) {
            vars.insert("KAFKA".into(), addr);
            vars.insert("KAFKA_SERVER".into(), kind);
        }
        Self { vars }
    }

    pub fn get(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{key} is missing from the servers file"))
    }

    pub fn users(&self) -> [(String, String); 2] {
        [
            (self.get("USER1").into(), self.get("PASSWORD1").into()),
            (self.get("USER2").into(), self.get("PASSWORD2").into()),
        ]
    }
}

/// A unique suffix for one test's topics, groups, database and bucket.
pub fn namespace() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// `KUMULUS_*` variables for a Kumulus service on the shared servers, in
/// namespace `ns`.
pub fn service_env(servers: &Servers, ns: &str) -> Vec<(String, String)> {
    let v = |k: &str, val: &str| (k.to_string(), val.to_string());
    vec![
        v("KUMULUS_KAFKA__BROKERS", servers.get("KAFKA")),
        v("KUMULUS_KAFKA__JOBS_TOPIC", &format!("jobs-{ns}")),
        v("KUMULUS_KAFKA__RESULTS_TOPIC", &format!("results-{ns}")),
        v("KUMULUS_KAFKA__CANCEL_TOPIC", &format!("cancel-{ns}")),
        v("KUMULUS_KAFKA__OBSERVER_TOPIC", &format!("observer-{ns}")),
        v("KUMULUS_KAFKA__LOGS_TOPIC", &format!("logs-{ns}")),
        v("KUMULUS_KAFKA__DECISIONS_TOPIC", &format!("decisions-{ns}")),
        v("KUMULUS_KAFKA__WORKER_GROUP", &format!("workers-{ns}")),
        v("KUMULUS_KAFKA__PROJECTOR_GROUP", &format!("projector-{ns}")),
        v(
            "KUMULUS_KAFKA__AUTOSCALER_GROUP",
            &format!("autoscaler-{ns}"),
        ),
        v("KUMULUS_KAFKA__SESSION_TIMEOUT_MS", "6000"),
        v("KUMULUS_MONGO__URI", servers.get("MONGO")),
        v("KUMULUS_MONGO__DATABASE", &format!("k{ns}")),
        v("KUMULUS_S3__ENDPOINT", servers.get("S3")),
        v("KUMULUS_S3__BUCKET", &format!("k{ns}")),
        v("KUMULUS_S3__ACCESS_KEY", servers.get("S3_ACCESS_KEY")),
        v("KUMULUS_S3__SECRET_KEY", servers.get("S3_SECRET_KEY")),
        v("KUMULUS_OIDC__ISSUER", servers.get("OIDC_ISSUER")),
        v("KUMULUS_OIDC__CLIENT_ID", servers.get("OIDC_CLIENT")),
        v("KUMULUS_OIDC__CLIENT_SECRET", servers.get("OIDC_SECRET")),
        v("KUMULUS_OIDC__AUDIENCE", servers.get("OIDC_CLIENT")),
        v("KUMULUS_WORKER__ALLOW_LOCAL_REPOS", "true"),
        v("KUMULUS_WORKER__SHUTDOWN_GRACE_SECS", "1"),
        v("KUMULUS_AUTOSCALER__PERIOD_SECS", "1"),
    ]
}

/// The same settings as a [`Config`], for tests that use the adapters directly.
pub fn config(servers: &Servers, ns: &str) -> Config {
    let mut cfg = Config::defaults(Mode::Production);
    let k = &mut cfg.kafka;
    k.brokers = servers.get("KAFKA").into();
    k.jobs_topic = format!("jobs-{ns}");
    k.results_topic = format!("results-{ns}");
    k.cancel_topic = format!("cancel-{ns}");
    k.observer_topic = format!("observer-{ns}");
    k.logs_topic = format!("logs-{ns}");
    k.decisions_topic = format!("decisions-{ns}");
    k.worker_group = format!("workers-{ns}");
    k.projector_group = format!("projector-{ns}");
    k.session_timeout_ms = 6000;
    cfg.mongo.uri = Secret::new(servers.get("MONGO"));
    cfg.mongo.database = format!("k{ns}");
    cfg.s3.endpoint = servers.get("S3").into();
    cfg.s3.bucket = format!("k{ns}");
    cfg.s3.access_key = Secret::new(servers.get("S3_ACCESS_KEY"));
    cfg.s3.secret_key = Secret::new(servers.get("S3_SECRET_KEY"));
    cfg.oidc.issuer = servers.get("OIDC_ISSUER").into();
    cfg.oidc.client_id = servers.get("OIDC_CLIENT").into();
    cfg.oidc.client_secret = Secret::new(servers.get("OIDC_SECRET"));
    cfg.oidc.audience = servers.get("OIDC_CLIENT").into();
    cfg
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    /// The first line matching what the caller waited for.
    pub line: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&mut self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }

    /// SIGTERM, then wait (SIGKILL after 20 s).
    pub fn stop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` and waits until its stdout has a line containing `ready`.
pub fn spawn_until(mut cmd: Command, name: &str, ready: &str) -> Proc {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        let reader = BufReader::new(stdout);
        let mut sent = false;
        for line in reader.lines().map_while(Result::ok) {
            if !sent && line.contains(&ready) {
                let _ = tx.send(line);
                sent = true;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{name} never said it was ready"));
    Proc {
        child,
        name: name.into(),
        line,
    }
}

/// Starts a Kumulus service (`frontend`, `worker` or `autoscaler`) with `env`.
pub fn kumulus(role: &str, env: &[(String, String)], extra: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.arg(role)
        .env(
            "KUMULUS_LOG",
            std::env::var("KUMULUS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env("KUMULUS_LISTEN", "127.0.0.1:0")
        .env(
            "KUMULUS_DATA_DIR",
            std::env::temp_dir().join("kumulus-test-data"),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let ready = match role {
        "frontend" => "listening on",
        "worker" => "worker is running",
        _ => "is running",
    };
    spawn_until(cmd, role, ready)
}

impl Proc {
    /// The `http://...` address a frontend printed.
    pub fn url(&self) -> String {
        self.line
            .split("listening on ")
            .nth(1)
            .expect("address")
            .trim()
            .to_string()
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A private server (`kafka`, `oidc`, ...) from `scripts/cluster.sh serve`,
/// on its own port and data folder, for tests that stop or reconfigure it.
pub struct Private {
    pub proc: Proc,
    pub port: u16,
    pub data: PathBuf,
    pub name: String,
    extra: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Private {
    pub fn start(servers: &Servers, name: &str, extra_env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join(name);
        let port = free_port();
        let extra: Vec<String> = extra_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let proc = Self::spawn(servers, name, port, &data, &extra);
        Self {
            proc,
            port,
            data,
            name: name.into(),
            extra,
            _dir: Some(dir),
        }
    }

    fn spawn(
        servers: &Servers,
        name: &str,
        port: u16,
        data: &std::path::Path,
        extra: &[String],
    ) -> Proc {
        let mut cmd = Command::new("bash");
        cmd.arg(servers.get("CLUSTER_SCRIPT"))
            .arg("serve")
            .arg(name)
            .env("PORT", port.to_string())
            .env("DATA", data)
            .env("KUMULUS_KAFKA_SERVER", servers.get("KAFKA_SERVER"));
        for kv in extra {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("start a private server");
        wait_for_port(port);
        Proc {
            child,
            name: name.into(),
            line: String::new(),
        }
    }

    /// Starts the server again on the same port and data (stopping it with
    /// SIGTERM first if it still runs).
    pub fn restart(&mut self, servers: &Servers, down_for: Duration) {
        if let Ok(None) = self.proc.child.try_wait() {
            self.proc.stop();
        }
        std::thread::sleep(down_for);
        self.proc = Self::spawn(servers, &self.name, self.port, &self.data, &self.extra);
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prints the last lines of every log in a folder when the test that
/// holds it fails (a test's worker logs are otherwise lost with its
/// temporary folder). With `KUMULUS_TEST_KEEP_LOGS=DIR`, the whole logs
/// are copied there too.
pub struct LogsOnFailure(pub PathBuf);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        if let Ok(keep) = std::env::var("KUMULUS_TEST_KEEP_LOGS") {
            let _ = std::fs::create_dir_all(&keep);
            for path in &paths {
                if let Some(name) = path.file_name() {
                    let _ = std::fs::copy(path, std::path::Path::new(&keep).join(name));
                }
            }
        }
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(150)..];
            eprintln!("==> {} (last {} lines)", path.display(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}
