//! The example job, shipped inside the binary: `kumulus up` makes it a git
//! repository in the data folder so that the printed example works anywhere.

use std::path::{Path, PathBuf};
use std::process::Command;

const FILES: [(&str, &str); 2] = [
    (
        "package.json",
        include_str!("../examples/hello/package.json"),
    ),
    ("main.js", include_str!("../examples/hello/main.js")),
];

/// Makes (or refreshes) the example repository under `data_dir`; returns its path.
pub fn prepare(data_dir: &Path) -> std::io::Result<PathBuf> {
    let repo = std::fs::canonicalize(data_dir)?
        .join("examples")
        .join("hello");
    std::fs::create_dir_all(&repo)?;
    let mut changed = !repo.join(".git").is_dir();
    for (name, text) in FILES {
        let path = repo.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
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
