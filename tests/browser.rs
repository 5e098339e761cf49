//! The web UI in a real browser: headless Chromium driven over WebDriver
//! (chromedriver), against `kumulus up`. A person logs in with the
//! keyboard, submits the example and watches it succeed, reads its log,
//! downloads its output file, cancels a running job, deletes an ended one,
//! cannot reach another user's job, and sees the autoscaler's page with
//! data. Screenshots of each view go to `KUMULUS_SCREENSHOTS` (by default
//! `target/screenshots`).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{Kumulus, Options, Repo, USERS};
use fantoccini::{elements::Element, key::Key, Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Chromium and its driver, one session, closed and stopped when dropped.
struct Browser {
    client: Client,
    driver: Child,
    downloads: tempfile::TempDir,
    base: String,
}

fn program(name: &str, env: &str) -> String {
    if let Ok(p) = std::env::var(env) {
        return p;
    }
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p.display().to_string();
        }
    }
    panic!("{name} is not installed: scripts/test.sh installs it (apt-get install chromium chromium-driver), or set {env}");
}

impl Browser {
    async fn open(base: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(program("chromedriver", "CHROMEDRIVER"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let downloads = tempfile::tempdir().unwrap();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": program("chromium", "CHROMIUM"),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         "--no-first-run", "--disable-extensions"],
                "prefs": {
                    "download.default_directory": downloads.path().display().to_string(),
                    "download.prompt_for_download": false,
                }
            }
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no WebDriver session: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Self {
            client,
            driver,
            downloads,
            base: base.to_string(),
        }
    }

    async fn go(&self, fragment: &str) {
        self.client
            .goto(&format!("{}/{fragment}", self.base))
            .await
            .unwrap();
    }

    /// The element `css` once it is on the page.
    async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
    }

    /// The text of `css` once `ok` holds for it, within `secs`.
    async fn text_until(&self, css: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = String::new();
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                if let Ok(t) = e.text().await {
                    if ok(&t) {
                        return t;
                    }
                    last = t;
                }
            }
            assert!(
                Instant::now() < deadline,
                "`{css}` never got there; last text: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Logs in as a person would with the keyboard: type, Tab, type, Enter.
    async fn log_in(&self, user: &str, password: &str) {
        self.go("#/login").await;
        let name = self.find("#username").await;
        name.send_keys(user).await.unwrap();
        let active = self.client.active_element().await.unwrap();
        active.send_keys(&Key::Tab.to_string()).await.unwrap();
        let active = self.client.active_element().await.unwrap();
        assert_eq!(
            active.attr("id").await.unwrap().as_deref(),
            Some("password")
        );
        active
            .send_keys(&format!("{password}{}", Key::Enter))
            .await
            .unwrap();
        self.text_until("#who", 20, |t| t == user).await;
        self.find("#jobs").await;
    }

    /// How many points the chart `css` draws (0 if none yet).
    async fn points(&self, css: &str) -> usize {
        let Ok(e) = self.client.find(Locator::Css(css)).await else {
            return 0;
        };
        e.attr("data-points")
            .await
            .ok()
            .flatten()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshots();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// The job id the page's address names (`#/jobs/ID`).
    async fn job_in_address(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let url = self.client.current_url().await.unwrap();
            if let Some(id) = url.fragment().and_then(|f| f.strip_prefix("/jobs/")) {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "never went to a job: {url}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A file Chromium finished downloading.
    async fn downloaded(&self, name: &str) -> Vec<u8> {
        let path = self.downloads.path().join(name);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !path.exists() {
            assert!(Instant::now() < deadline, "{name} was never downloaded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::fs::read(path).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn screenshots() -> PathBuf {
    std::env::var_os("KUMULUS_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots"))
}

/// Fills the submit form and sends it; answers the new job's id.
async fn submit(b: &Browser, url: &str, args: &str, config: &str) -> String {
    b.go("#/submit").await;
    b.find("#url").await.send_keys(url).await.unwrap();
    b.find("#args").await.send_keys(args).await.unwrap();
    b.find("#config").await.send_keys(config).await.unwrap();
    b.find("#submit-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.job_in_address().await
}

async fn api_session(k: &Kumulus, user: usize) -> kumulus_client::Session {
    let (u, p) = USERS[user];
    kumulus_client::Client::new(&k.api.url(""))
        .unwrap()
        .login(u, p)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_person_submits_the_example_watches_it_succeed_reads_its_log_and_downloads_its_output() {
    let k = Kumulus::start(Options::default()).await;
    let repo = Repo::example();
    let b = Browser::open(&k.api.url("")).await;

    // The page needs a login first, and says so.
    b.go("").await;
    b.find("#login-form").await;
    b.shot("login").await;
    b.log_in(USERS[0].0, USERS[0].1).await;

    let id = submit(
        &b,
        &repo.path(),
        "hello 'kumulus world'",
        r#"{"greeting":"hi"}"#,
    )
    .await;
    b.text_until("#job-facts", 60, |t| t.contains("succeeded"))
        .await;
    // Its log, as the job wrote it.
    let log = b
        .text_until("#logs", 20, |t| t.contains("wrote output/result.json"))
        .await;
    assert!(
        log.contains(r#"hello from kumulus; args: ["hello","kumulus world"]"#),
        "{log}"
    );
    assert!(log.contains("config keys: greeting"), "{log}");
    b.shot("job").await;

    // Its output file, downloaded by the browser, is the stored one.
    b.find(r#"#files button[data-file="output/result.json"]"#)
        .await
        .click()
        .await
        .unwrap();
    let got: Value = serde_json::from_slice(&b.downloaded("result.json").await).unwrap();
    assert_eq!(got["args"], json!(["hello", "kumulus world"]));
    assert_eq!(got["config"]["greeting"], "hi");
    let api = api_session(&k, 0).await;
    let stored = api.file(&id, "output/result.json").await.unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&stored).unwrap(), got);

    // The jobs table lists it as succeeded, with its exit code.
    b.go("#/jobs").await;
    let row = b
        .text_until(&format!(r#"tr[data-id="{id}"]"#), 20, |t| {
            t.contains("succeeded")
        })
        .await;
    assert!(row.contains(&repo.path()), "{row}");
    b.shot("jobs").await;
}

#[tokio::test]
async fn a_running_job_is_cancelled_from_its_page_and_an_ended_one_deleted() {
    let k = Kumulus::start(Options::default()).await;
    let repo = Repo::node("console.log('working'); setTimeout(() => {}, 60000);");
    let b = Browser::open(&k.api.url("")).await;
    b.log_in(USERS[0].0, USERS[0].1).await;

    let id = submit(&b, &repo.path(), "", "").await;
    b.text_until("#job-facts", 60, |t| t.contains("running"))
        .await;
    // Its log arrives live while it runs.
    b.text_until("#logs", 30, |t| t.contains("working")).await;
    b.find("#cancel").await.click().await.unwrap();
    b.text_until("#job-facts", 30, |t| t.contains("cancelled"))
        .await;
    let api = api_session(&k, 0).await;
    assert_eq!(
        api.job(&id).await.unwrap().state,
        kumulus_client::JobState::Cancelled
    );

    // Ended, it can be deleted (after a confirmation).
    b.find("#delete").await.click().await.unwrap();
    b.client.accept_alert().await.unwrap();
    b.text_until("#notice", 20, |t| t.contains("deleted")).await;
    let gone = api.job(&id).await.unwrap_err();
    assert_eq!(
        gone.status(),
        Some(reqwest::StatusCode::NOT_FOUND),
        "{gone}"
    );
}

#[tokio::test]
async fn another_users_job_is_not_reachable_from_the_page() {
    let k = Kumulus::start(Options::default()).await;
    let repo = Repo::example();
    let bob = api_session(&k, 1).await;
    let theirs = bob
        .submit(&kumulus_client::NewJob::repo(repo.path()))
        .await
        .unwrap()
        .id
        .to_string();
    bob.wait(&theirs, Duration::from_millis(200), Duration::from_secs(60))
        .await
        .unwrap();

    let b = Browser::open(&k.api.url("")).await;
    b.log_in(USERS[0].0, USERS[0].1).await;
    // Not in ana's table...
    b.text_until("#jobs-empty", 20, |t| t.contains("No jobs yet"))
        .await;
    assert!(b
        .client
        .find(Locator::Css(&format!(r#"tr[data-id="{theirs}"]"#)))
        .await
        .is_err());
    // ...and not at its address.
    b.go(&format!("#/jobs/{theirs}")).await;
    b.text_until("#not-found", 20, |t| t.contains("No such job of yours"))
        .await;
    assert!(b.client.find(Locator::Css("#files button")).await.is_err());
    assert!(b
        .client
        .find(Locator::Css("#cancel, #delete"))
        .await
        .is_err());
}

#[tokio::test]
async fn the_autoscaler_page_shows_workers_waiting_jobs_arrivals_and_decisions() {
    let k = Kumulus::start(Options::default()).await;
    let repo = Repo::example();
    let api = api_session(&k, 0).await;
    for _ in 0..3 {
        api.submit(&kumulus_client::NewJob::repo(repo.path()))
            .await
            .unwrap();
    }
    let b = Browser::open(&k.api.url("")).await;
    b.log_in(USERS[0].0, USERS[0].1).await;
    b.go("#/autoscaler").await;
    // The test's autoscaler decides every second: its decisions show up.
    b.text_until("#scaler-summary", 30, |t| t.contains("workers"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = b
            .client
            .find_all(Locator::Css("#decisions-body tr"))
            .await
            .unwrap();
        let workers = b.points("#chart-workers").await;
        let queue = b.points("#chart-queue").await;
        let load = b.points("#chart-load").await;
        if rows.len() >= 2 && workers >= 4 && queue >= 6 && load >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never filled: {} decisions, points {workers}/{queue}/{load}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The decisions name their rule and reason; the workers are the
    // configured two.
    let table = b.text_until("#decisions-body", 5, |t| !t.is_empty()).await;
    assert!(
        table.contains("min_workers")
            || table.contains("max_workers")
            || table.contains("policy")
            || table.contains("hold"),
        "{table}"
    );
    let summary = b.find("#scaler-summary").await.text().await.unwrap();
    assert!(summary.starts_with("2 workers"), "{summary}");
    b.shot("autoscaler").await;
}
