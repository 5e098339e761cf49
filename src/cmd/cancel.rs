//! `kumulus cancel ID`: stops a queued or running job.

use super::remote::{json, line, session, Outcome, Remote};

#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    pub id: String,
    #[command(flatten)]
    pub remote: Remote,
}

pub async fn run(args: &CancelArgs) -> Result<Outcome, String> {
    let s = session(&args.remote).await?;
    // The cancel route never deletes: a job that ended meanwhile keeps its
    // record and files, and the server says it has ended.
    let job = s.cancel(&args.id).await.map_err(|e| match e {
        kumulus_client::ClientError::Api {
            ref code,
            ref message,
            ..
        } if code == "conflict" => format!(
            "{}: {message}: nothing to cancel (`kumulus rm` deletes it)",
            args.id
        ),
        e => e.to_string(),
    })?;
    Ok(Outcome::ok(if args.remote.json {
        json(&job)
    } else {
        format!("cancelling: {}", line(&job))
    }))
}
