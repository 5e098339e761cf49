//! `kumulus rm ID`: deletes a job that has ended, with its files; a queued
//! or running one is cancelled instead (run it again once it has ended).

use kumulus_client::Deleted;

use super::remote::{json, session, Outcome, Remote};

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    pub id: String,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn run(args: &RmArgs) -> Result<Outcome, String> {
    let s = session(&args.remote).await?;
    let (what, text) = match s.delete(&args.id).await.map_err(|e| e.to_string())? {
        Deleted::Removed => ("removed", format!("{} removed, with its files", args.id)),
        Deleted::Cancelled(_) => (
            "cancelled and removed",
            format!(
                "{} was still active: cancelled and removed, with its files",
                args.id
            ),
        ),
    };
    Ok(Outcome::ok(if args.remote.json {
        json(&serde_json::json!({"id": args.id, "done": what}))
    } else {
        text
    }))
}
