//! A real browser for the web UI's tests: headless Chromium driven over
//! WebDriver (chromedriver), one session per `Browser`, stopped when
//! dropped.

use fantoccini::{elements::Element, key::Key, Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Chromium and its driver, one session, closed and stopped when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
    downloads: tempfile::TempDir,
    pub base: String,
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
    pub async fn open(base: &str) -> Self {
        let port = super::cluster::free_port();
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

    pub async fn go(&self, fragment: &str) {
        self.client
            .goto(&format!("{}/{fragment}", self.base))
            .await
            .unwrap();
    }

    /// The element `css` once it is on the page.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
    }

    /// The text of `css` once `ok` holds for it, within `secs`.
    pub async fn text_until(&self, css: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
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
    pub async fn log_in(&self, user: &str, password: &str) {
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
    pub async fn points(&self, css: &str) -> usize {
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

    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshots();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// The job id the page's address names (`#/jobs/ID`).
    pub async fn job_in_address(&self) -> String {
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
    pub async fn downloaded(&self, name: &str) -> Vec<u8> {
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

pub fn screenshots() -> PathBuf {
    std::env::var_os("KUMULUS_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots"))
}

/// Fills the submit form and sends it; answers the new job's id.
pub async fn submit(b: &Browser, url: &str, args: &str, config: &str) -> String {
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
