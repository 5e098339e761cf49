//! `kumulus jobs [--state S] [--limit N]`: your jobs, newest first, as a
//! table (or `--json`).

use kumulus_client::JobState;

use super::remote::{json, session, Outcome, Remote};

#[derive(clap::Args, Debug)]
pub struct JobsArgs {
    /// Only jobs in this state (queued, running, succeeded, failed, cancelled, timed_out).
    #[arg(long)]
    pub state: Option<String>,
    /// At most this many (1 to 100).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn run(args: &JobsArgs) -> Result<Outcome, String> {
    let state = args
        .state
        .as_deref()
        .map(|s| s.parse::<JobState>().map_err(|e| format!("--state: {e}")))
        .transpose()?;
    let s = session(&args.remote).await?;
    let page = s
        .page(state, args.limit, None)
        .await
        .map_err(|e| e.to_string())?;
    if args.remote.json {
        return Ok(Outcome::ok(json(&page.jobs)));
    }
    let mut rows = vec![[
        "ID".to_string(),
        "STATE".into(),
        "SUBMITTED".into(),
        "ELAPSED".into(),
        "REPOSITORY".into(),
    ]];
    for j in &page.jobs {
        rows.push([
            j.id.clone(),
            j.state.to_string(),
            j.submitted_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            j.elapsed_secs
                .map(|e| format!("{e:.1} s"))
                .unwrap_or_default(),
            j.url.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let text = rows
        .iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Outcome::ok(text))
}
