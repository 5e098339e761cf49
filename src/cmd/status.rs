//! `kumulus status ID`: one job: its state, times, exit code, files.

use super::remote::{json, line, session, Outcome, Remote};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    pub id: String,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn run(args: &StatusArgs) -> Result<Outcome, String> {
    let s = session(&args.remote).await?;
    let job = s.job(&args.id).await.map_err(|e| e.to_string())?;
    if args.remote.json {
        return Ok(Outcome::ok(json(&job)));
    }
    let mut text = line(&job);
    text.push_str(&format!("\nrepository: {}", job.url));
    text.push_str(&format!("\nsubmitted:  {}", job.submitted_at));
    if let Some(t) = job.started_at {
        text.push_str(&format!("\nstarted:    {t}"));
    }
    if let Some(t) = job.finished_at {
        text.push_str(&format!("\nfinished:   {t}"));
    }
    if !job.files.is_empty() {
        text.push_str(&format!("\nfiles:      {}", job.files.join(", ")));
    }
    Ok(Outcome::ok(text))
}
