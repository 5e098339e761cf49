//! `kumulus logs ID [-f]`: the job's stdout (to stdout) and stderr (to
//! stderr), from the start; with `-f`, as they are written, until the job
//! ends. `--json`: each event as a JSON line.

use std::io::Write;

use kumulus_client::{LogEvent, LogStream, Session};

use super::remote::{exit_code, session, Outcome, Remote};

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    pub id: String,
    /// Follow a running job until it ends.
    #[arg(short, long)]
    pub follow: bool,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn run(args: &LogsArgs) -> Result<Outcome, String> {
    let s = session(&args.remote).await?;
    let job = stream(&s, &args.id, args.follow, args.remote.json).await?;
    Ok(Outcome {
        text: String::new(),
        code: if args.follow { exit_code(&job) } else { 0 },
    })
}

/// Writes the job's log events as they come; the job's record at the end
/// (read again if the stream did not end with it).
pub async fn stream(
    s: &Session,
    id: &str,
    follow: bool,
    as_json: bool,
) -> Result<kumulus_client::Job, String> {
    let mut events = s.logs(id, follow).await.map_err(|e| e.to_string())?;
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    while let Some(event) = events.next().await.map_err(|e| e.to_string())? {
        if as_json {
            let v = match &event {
                LogEvent::Output(c) => {
                    serde_json::json!({"event": c.stream, "offset": c.offset, "text": c.text})
                }
                LogEvent::Gap { stream, from, to } => {
                    serde_json::json!({"event": "gap", "stream": stream, "from": from, "to": to})
                }
                LogEvent::Attempt(n) => serde_json::json!({"event": "attempt", "attempt": n}),
                LogEvent::End(job) => serde_json::json!({"event": "end", "job": job}),
            };
            let _ = writeln!(out, "{v}");
        } else {
            match &event {
                LogEvent::Output(c) if c.stream == LogStream::Stdout => {
                    let _ = out.write_all(c.text.as_bytes());
                }
                LogEvent::Output(c) => {
                    let _ = err.write_all(c.text.as_bytes());
                }
                LogEvent::Gap { stream, from, to } => {
                    let _ = writeln!(
                        err,
                        "[kumulus: {} bytes of {stream:?} not sent live]",
                        to - from
                    );
                }
                LogEvent::Attempt(n) => {
                    let _ = writeln!(err, "[kumulus: the job started over, attempt {n}]");
                }
                LogEvent::End(_) => {}
            }
        }
        let _ = out.flush();
        if let LogEvent::End(job) = event {
            return Ok(*job);
        }
    }
    s.job(id).await.map_err(|e| e.to_string())
}
