//! `kumulus login URL --user NAME`: asks for the password (without echo on
//! a terminal, else one line of stdin), logs in, and keeps the token in the
//! user's config folder (mode 0600) for the other commands.

use kumulus_client::Client;

use super::remote::{json, read_password, save, Outcome, Saved};

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The Kumulus: `kumulus up`'s address or a cluster frontend's.
    pub url: String,
    #[arg(long, short)]
    pub user: String,
    /// Print JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: &LoginArgs) -> Result<Outcome, String> {
    let client = Client::new(&args.url).map_err(|e| e.to_string())?;
    let password = read_password(&format!("password for {}: ", args.user))?;
    let session = client
        .login(&args.user, &password)
        .await
        .map_err(|e| e.to_string())?;
    let path = save(&Saved {
        url: client.base().to_string(),
        user: args.user.clone(),
        token: session.token().to_string(),
    })?;
    Ok(Outcome::ok(if args.json {
        json(&serde_json::json!({"url": client.base(), "user": args.user, "saved": path}))
    } else {
        format!("logged in to {} as {}", client.base(), args.user)
    }))
}
