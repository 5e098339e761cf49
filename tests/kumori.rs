//! The kumori driver against a stand-in `kumorictl` on PATH that records
//! its arguments and the manifest it sees (the Kumori platform itself cannot
//! run here; this checks the exact contract).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::time::Duration;

use kumulus_autoscaler::driver::{read_hsize, KumoriDriver};
use kumulus_core::ports::ScalingPlatform;

#[tokio::test]
async fn kumorictl_gets_the_right_arguments_and_the_new_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let deployment = dir.path().join("deployment");
    std::fs::create_dir_all(&deployment).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("kumori/deployment/manifest.cue");
    std::fs::copy(&shipped, deployment.join("manifest.cue")).unwrap();
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
}
