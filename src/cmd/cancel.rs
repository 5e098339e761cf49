//! `kumulus cancel ID`: stops a queued or running job.

use kumulus_client::Deleted;

use super::remote::{json, line, session, Outcome, Remote};

#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    pub id: String,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn run(args: &CancelArgs) -> Result<Outcome, String> {
    let s = session(&args.remote).await?;
    let job = s.job(&args.id).await.map_err(|e| e.to_string())?;
    if job.is_terminal() {
        return Err(format!(
            "{} has ended ({}): nothing to cancel (`kumulus rm` deletes it)",
            job.id, job.state
        ));
    }
    match s.delete(&args.id).await.map_err(|e| e.to_string())? {
        Deleted::Cancelled(job) => Ok(Outcome::ok(if args.remote.json {
            json(&job)
        } else {
            format!("cancelling: {}", line(&job))
        })),
        // It ended meanwhile, and went.
        Deleted::Removed => Err(format!("{} ended before it could be cancelled", args.id)),
    }
}
