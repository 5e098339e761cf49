//! The example jobs, shipped inside the binary: `kumulus up` makes the
//! hello job a git repository in the data folder so that the printed example
//! works anywhere; `kumulus load` does the same with the sleep job.

use std::path::{Path, PathBuf};
use std::process::Command;

const HELLO: [(&str, &str); 2] = [
    (
        "package.json",
        include_str!("../examples/hello/package.json"),
    ),
    ("main.js", include_str!("../examples/hello/main.js")),
];

const SLEEP: [(&str, &str); 2] = [
    (
        "package.json",
        include_str!("../examples/sleep/package.json"),
    ),
    ("main.js", include_str!("../examples/sleep/main.js")),
];

/// Makes (or refreshes) the example repository under `data_dir`; returns its path.
pub fn prepare(data_dir: &Path) -> std::io::Result<PathBuf> {
    prepare_repo(data_dir, "hello", &HELLO)
}

/// The sleep job (`kumulus load`'s default: it sleeps for its first
/// argument, in seconds) as a git repository under `dir`.
pub fn prepare_sleep(dir: &Path) -> std::io::Result<PathBuf> {
    prepare_repo(dir, "sleep", &SLEEP)
}

fn prepare_repo(dir: &Path, name: &str, files: &[(&str, &str)]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let repo = std::fs::canonicalize(dir)?.join("examples").join(name);
    std::fs::create_dir_all(&repo)?;
    let mut changed = !repo.join(".git").is_dir();
    for (name, text) in files {
        let path = repo.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(*text) {
            std::fs::write(&path, text)?;
            changed = true;
        }
    }
    if changed {
        git(&repo, &["init", "--quiet"])?;
        git(&repo, &["add", "package.json", "main.js"])?;
        git(
            &repo,
            &[
                "-c",
                "user.name=kumulus",
                "-c",
                "user.email=kumulus@localhost",
                "commit",
                "--quiet",
                "--allow-empty",
                "-m",
                "kumulus example job",
            ],
        )?;
    }
    Ok(repo)
}

fn git(dir: &Path, args: &[&str]) -> std::io::Result<()> {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdout(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "git {} failed",
            args.join(" ")
        )))
    }
}
