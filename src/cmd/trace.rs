//! `kumulus trace export`: the job history of a store as the simulator's
//! CSV (`arrival_secs,service_secs`), so that `kumulus sim` can replay a
//! real workload through any policy.

use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};

use kumulus_core::config::{Config, Mode};
use kumulus_core::job::JobRecord;
use kumulus_core::ports::JobStore;

#[derive(clap::Subcommand, Debug)]
pub enum TraceCommand {
    /// Write the jobs of the store the configuration names as a trace:
    /// arrival from the first job's submission, service from its run time.
    Export(ExportArgs),
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A TOML configuration file (then KUMULUS_* variables apply on top).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Read the cluster's MongoDB instead of `kumulus up`'s data folder.
    #[arg(long)]
    pub cluster: bool,
    /// Only jobs submitted from then on: an RFC 3339 time, or an age such
    /// as `30m`, `6h`, `2d`.
    #[arg(long)]
    pub since: Option<String>,
}

/// `--since` as a time.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || format!("--since {text:?}: expected an RFC 3339 time or an age like 30m, 6h, 2d");
    let (n, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = n.parse().map_err(|_| bad())?;
    let age = match unit {
        "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => return Err(bad()),
    };
    if n < 0 {
        return Err(bad());
    }
    Ok(now - age)
}

/// What a trace row is made of: when a job was submitted, and how long it ran.
pub struct Ran {
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub elapsed_secs: Option<f64>,
}

/// The simulator's CSV of `jobs`: arrival from the first submission, the
/// run time as the service time; jobs that never ran are left out (they
/// have no service time).
pub fn csv(jobs: &[Ran]) -> String {
    let first = jobs.iter().map(|r| r.submitted_at).min();
    let mut rows: Vec<(f64, f64)> = jobs
        .iter()
        .filter_map(|r| {
            let service = r.elapsed_secs.or_else(|| {
                Some((r.finished_at? - r.started_at?).num_milliseconds() as f64 / 1000.0)
            })?;
            let arrival = (r.submitted_at - first?).num_milliseconds() as f64 / 1000.0;
            Some((arrival, service.max(0.0)))
        })
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = String::from("arrival_secs,service_secs\n");
    for (a, s) in rows {
        out.push_str(&format!("{a:.3},{s:.3}\n"));
    }
    out
}

/// The trace of `records` submitted from `since` on.
pub fn to_csv(records: &[JobRecord], since: Option<DateTime<Utc>>) -> String {
    let kept: Vec<Ran> = records
        .iter()
        .filter(|r| since.is_none_or(|s| r.submitted_at >= s))
        .map(|r| Ran {
            submitted_at: r.submitted_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            elapsed_secs: r.elapsed_secs,
        })
        .collect();
    csv(&kept)
}

async fn all(store: &dyn JobStore) -> Result<Vec<JobRecord>, String> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .history(after, 1000)
            .await
            .map_err(|e| format!("cannot read the jobs: {e}"))?;
        let Some(last) = page.last() else {
            return Ok(out);
        };
        after = Some(last.id);
        out.extend(page);
    }
}

/// Runs the command; the output is the CSV.
pub async fn run(cmd: &TraceCommand) -> Result<String, String> {
    let TraceCommand::Export(args) = cmd;
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, Utc::now()))
        .transpose()?;
    let mode = if args.cluster {
        Mode::Production
    } else {
        Mode::Standalone
    };
    let mut cfg = Config::load(mode, args.config.as_deref()).map_err(|e| e.to_string())?;
    let records = if args.cluster {
        let store = kumulus_mongo::MongoStore::connect(&cfg.mongo)
            .await
            .map_err(|e| format!("cannot reach MongoDB: {e}"))?;
        all(&store).await?
    } else {
        cfg.absolutize_paths()
            .map_err(|e| format!("cannot resolve the data folder: {e}"))?;
        let path = cfg.data_dir.join("kumulus.db");
        if !path.is_file() {
            return Err(format!(
                "no job store at {} (is data_dir right? --config names it)",
                path.display()
            ));
        }
        let store = kumulus_embedded::sqlite::Sqlite::open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        all(&store).await?
    };
    Ok(to_csv(&records, since))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_an_age() {
        let now: DateTime<Utc> = "2026-01-02T00:00:00Z".parse().unwrap();
        assert_eq!(
            parse_since("2026-01-01T12:00:00Z", now).unwrap(),
            "2026-01-01T12:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_since("6h", now).unwrap(),
            "2026-01-01T18:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_since("2d", now).unwrap(),
            "2025-12-31T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        for bad in ["yesterday", "5", "-3h", "3w", ""] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }
}
