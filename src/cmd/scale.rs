//! `kumulus scale [N]`: an operator's override. With N, applies that many
//! workers through the configured platform driver, within the
//! configuration's bounds (`autoscaler.min_workers` to `max_workers`);
//! without, prints the current count. The same driver the autoscaler uses,
//! so what works here works there.

use std::path::PathBuf;

use kumulus_core::config::{Config, Mode};

#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// The worker count to apply; left out, the current count is printed.
    pub workers: Option<u32>,
    /// A TOML configuration file (then KUMULUS_* variables apply on top).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub async fn run(args: &ScaleArgs) -> Result<String, String> {
    let cfg = Config::load(Mode::Production, args.config.as_deref()).map_err(|e| e.to_string())?;
    let a = &cfg.autoscaler;
    if a.driver == "process" {
        return Err(
            "the process driver's workers belong to the autoscaler that runs them: set its \
             autoscaler.min_workers and max_workers instead"
                .into(),
        );
    }
    let driver = crate::services::driver(&cfg);
    let before = driver.current().await.map_err(|e| e.to_string())?;
    let Some(n) = args.workers else {
        return Ok(format!("{before}"));
    };
    if !(a.min_workers..=a.max_workers).contains(&n) {
        return Err(format!(
            "{n} workers is outside the configured bounds ({} to {}; autoscaler.min_workers and max_workers)",
            a.min_workers, a.max_workers
        ));
    }
    driver.apply(n).await.map_err(|e| e.to_string())?;
    let after = driver.current().await.map_err(|e| e.to_string())?;
    Ok(format!(
        "workers: {before} -> {after} ({} driver)",
        a.driver
    ))
}
