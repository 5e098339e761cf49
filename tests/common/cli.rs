//! The `kumulus` client commands as a person runs them: each `Cli` has
//! its own credentials file, and a run gives its exit code and output.

use std::io::Write;
use std::process::{Command, Stdio};

pub struct Cli {
    pub creds: tempfile::TempDir,
}

pub struct Ran {
    pub code: i32,
    pub out: String,
    pub err: String,
}

impl Cli {
    pub fn new() -> Self {
        Self {
            creds: tempfile::tempdir().unwrap(),
        }
    }

    pub fn run_with(&self, args: &[&str], stdin: &str) -> Ran {
        let mut child = Command::new(super::bin())
            .args(args)
            .env(
                "KUMULUS_CREDENTIALS",
                self.creds.path().join("credentials.json"),
            )
            .env_remove("KUMULUS_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        Ran {
            code: out.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Ran {
        self.run_with(args, "")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "{args:?}: {}{}", r.out, r.err);
        r.out
    }
}
