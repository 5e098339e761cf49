//! A full disk under `kumulus up`: submits answer 507 with the JSON error
//! (never a bare 500), nothing half-written is left, and once there is room
//! again everything works without a restart. The data folder is a small
//! tmpfs of its own (this needs root, as CI has).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{Kumulus, Options, Repo};
use reqwest::Method;
use serde_json::json;
use std::io::Write;
use std::process::Command;

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("kumulus-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the disk under `dir` with one file; returns its path.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // Down to the last bytes too.
    while f.write_all(&chunk[..512]).is_ok() {}
    let _ = f.sync_all();
    path
}

fn partial_files(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".part") {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn a_full_disk_answers_507_and_recovers_without_a_restart() {
    let Some(disk) = Tmpfs::mount("24m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let k = Kumulus::start(Options {
        tmp_in: Some(disk.0.clone()),
        ..Options::default()
    })
    .await;
    let token = k.login("ana").await;
    let repo = Repo::example();
    let ok = k.submit(&token, json!({"url": repo.path()})).await;
    k.wait_for(&token, &ok, &["succeeded"], 60).await;

    let filler = fill(&disk.0);
    let mut full = 0;
    for _ in 0..50 {
        let (status, body) = k
            .json(
                Method::POST,
                "/api/jobs",
                &token,
                Some(json!({"url": repo.path()})),
            )
            .await;
        match status.as_u16() {
            201 => continue,
            507 => {
                assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
                assert!(
                    body["error"]["message"].as_str().unwrap().contains("disk"),
                    "{body}"
                );
                full += 1;
                break;
            }
            other => panic!("a full disk answered {other}: {body}"),
        }
    }
    assert_eq!(full, 1, "no submit was refused for the full disk");
    // Reading still works.
    let (status, _) = k.json(Method::GET, "/api/jobs", &token, None).await;
    assert_eq!(status, 200);
    assert!(
        partial_files(&k.data).is_empty(),
        "{:?}",
        partial_files(&k.data)
    );

    std::fs::remove_file(filler).unwrap();
    let id = k.submit(&token, json!({"url": repo.path()})).await;
    let job = k.wait_for(&token, &id, &["succeeded", "failed"], 60).await;
    assert_eq!(job["state"], "succeeded", "{job}");
}
