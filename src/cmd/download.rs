//! `kumulus download ID [-o DIR]`: every file of the job into DIR (default:
//! a folder named after the job), with a progress line for each on a
//! terminal.

use std::io::{IsTerminal, Write};
use std::path::{Component, Path, PathBuf};

use super::remote::{json, session, Outcome, Remote};

#[derive(clap::Args, Debug)]
pub struct DownloadArgs {
    pub id: String,
    /// Where to put the files.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn run(args: &DownloadArgs) -> Result<Outcome, String> {
    let s = session(&args.remote).await?;
    let job = s.job(&args.id).await.map_err(|e| e.to_string())?;
    let dir = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(&job.id));
    let tty = std::io::stderr().is_terminal();
    let mut saved = Vec::new();
    for name in &job.files {
        // Never outside DIR, whatever the server says.
        let rel = Path::new(name);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(format!("{name}: not a file name this can save"));
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let mut file =
            std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut d = s.download(&job.id, name).await.map_err(|e| e.to_string())?;
        let mut got: u64 = 0;
        while let Some(bytes) = d.chunk().await.map_err(|e| e.to_string())? {
            file.write_all(&bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            got += bytes.len() as u64;
            if tty {
                match d.len {
                    Some(len) if len > 0 => eprint!(
                        "\r\x1b[K{name} {:>3}% ({got} of {len} bytes)",
                        got * 100 / len
                    ),
                    _ => eprint!("\r\x1b[K{name} {got} bytes"),
                }
            }
        }
        if tty {
            eprint!("\r\x1b[K");
        }
        saved.push(serde_json::json!({"file": name, "path": path, "bytes": got}));
    }
    Ok(Outcome::ok(if args.remote.json {
        json(&saved)
    } else {
        format!("{} files of {} in {}", saved.len(), job.id, dir.display())
    }))
}
