//! `kumulus sim`: replays a trace through a policy in the simulator.

use std::path::PathBuf;

use kumulus_autoscaler::policy::{PolicyConfig, PolicyKind};
use kumulus_autoscaler::sim::{read_trace, simulate, Placement, QueueModel, SimConfig};

#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// CSV with the header `arrival_secs,service_secs`.
    #[arg(long)]
    pub trace: PathBuf,
    #[command(flatten)]
    pub settings: PolicyArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Draw workers, waiting jobs and waits over time into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write every decision into this CSV file (the columns of `kumulus
    /// load`'s decisions.csv).
    #[arg(long)]
    pub decisions: Option<PathBuf>,
}

/// The policy's settings as flags (the defaults of `[autoscaler]` otherwise).
#[derive(clap::Args, Debug, Clone)]
pub struct PolicyArgs {
    #[arg(long, default_value = "kumulus")]
    pub policy: PolicyKind,
    #[arg(long)]
    pub slo_wait_secs: Option<f64>,
    #[arg(long)]
    pub startup_secs: Option<f64>,
    #[arg(long)]
    pub period_secs: Option<f64>,
    #[arg(long)]
    pub min_workers: Option<u32>,
    #[arg(long)]
    pub max_workers: Option<u32>,
    #[arg(long)]
    pub partition_factor: Option<u32>,
    #[arg(long)]
    pub lag_threshold: Option<f64>,
    #[arg(long)]
    pub slots: Option<u32>,
    /// `kumulus`: scale-down stabilization window.
    #[arg(long)]
    pub stabilization_secs: Option<f64>,
    /// `lag`: scale-down cooldown.
    #[arg(long)]
    pub cooldown_secs: Option<f64>,
    /// With `--min-workers 0`: idle this long before scaling to zero.
    #[arg(long)]
    pub idle_grace_secs: Option<f64>,
    /// Consumption pause at each change of the group's membership.
    #[arg(long, default_value_t = 3.0)]
    pub rebalance_secs: f64,
}

impl PolicyArgs {
    /// The policy settings: the defaults, with the flags given.
    pub fn policy(&self) -> Result<PolicyConfig, String> {
        let mut p = PolicyConfig {
            policy: self.policy,
            rebalance_secs: self.rebalance_secs,
            ..PolicyConfig::default()
        };
        let positive = |v: f64, name: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(format!("--{name} must be a number above 0"))
            }
        };
        let non_negative = |v: f64, name: &str| {
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(format!("--{name} must be 0 or more"))
            }
        };
        if let Some(v) = self.slo_wait_secs {
            p.slo_wait_secs = positive(v, "slo-wait-secs")?;
        }
        if let Some(v) = self.startup_secs {
            p.startup_secs = if v >= 0.0 {
                v
            } else {
                return Err("--startup-secs must be 0 or more".into());
            };
        }
        if let Some(v) = self.period_secs {
            p.period_secs = positive(v, "period-secs")?;
        }
        if let Some(v) = self.lag_threshold {
            p.lag_threshold = positive(v, "lag-threshold")?;
        }
        if let Some(v) = self.stabilization_secs {
            p.stabilization_secs = non_negative(v, "stabilization-secs")?;
        }
        if let Some(v) = self.cooldown_secs {
            p.cooldown_secs = non_negative(v, "cooldown-secs")?;
        }
        if let Some(v) = self.idle_grace_secs {
            p.idle_grace_secs = non_negative(v, "idle-grace-secs")?;
        }
        if let Some(v) = self.min_workers {
            p.min_workers = v;
        }
        if let Some(v) = self.max_workers {
            p.max_workers = v;
        }
        if let Some(v) = self.partition_factor {
            p.partition_factor = v.max(1);
        }
        if let Some(v) = self.slots {
            if v == 0 {
                return Err("--slots must be at least 1".into());
            }
            p.slots = v;
        }
        if p.max_workers == 0 || p.min_workers > p.max_workers {
            return Err("--max-workers must be at least 1 and at least --min-workers".into());
        }
        Ok(p)
    }

    /// The rebalance pause, checked.
    pub fn rebalance(&self) -> Result<f64, String> {
        if self.rebalance_secs < 0.0 || !self.rebalance_secs.is_finite() {
            return Err("--rebalance-secs must be 0 or more".into());
        }
        Ok(self.rebalance_secs)
    }
}

/// What the system does, where the policy's settings say what the policy
/// assumes (`kumulus load` measures these on the run it compares).
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// `partitioned` (Kafka: a job waits for its partition's owner) or
    /// `shared` (`kumulus up`: any free slot takes the oldest job).
    #[arg(long, default_value = "partitioned")]
    pub queue: QueueModel,
    /// How a job's partition is picked, as the frontend's `kafka.placement`
    /// says: `hash` (Kafka's default partitioner) or `least-backlog` (the
    /// partition whose owner has the fewest jobs waiting or running in the last lag
    /// reading, plus those placed since).
    #[arg(long, default_value = "hash")]
    pub placement: Placement,
    /// Seconds a job holds its slot beyond its run (clone, sandbox, files).
    #[arg(long, default_value_t = 0.0)]
    pub overhead_secs: f64,
    /// Seconds a slot stays taken after a job's end before its next job
    /// starts (the final event, the next job's fetch); not in the run times
    /// the policy reads.
    #[arg(long, default_value_t = 0.0)]
    pub handover_secs: f64,
    /// When the first decision falls, from the trace's start (default: one
    /// period in).
    #[arg(long)]
    pub first_decision_secs: Option<f64>,
    /// How long a new worker takes to its first job (default: the policy's
    /// --startup-secs).
    #[arg(long)]
    pub ready_secs: Option<f64>,
    /// Partitions the jobs topic has from the start, as a broker that
    /// cannot add any was given (default: as many as the policy keeps).
    #[arg(long)]
    pub partitions: Option<u32>,
}

impl ModelArgs {
    /// The model, checked.
    pub fn config(&self, policy: PolicyConfig, rebalance_secs: f64) -> Result<SimConfig, String> {
        let non_negative = |v: f64, name: &str| {
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(format!("--{name} must be 0 or more"))
            }
        };
        Ok(SimConfig {
            overhead_secs: non_negative(self.overhead_secs, "overhead-secs")?,
            handover_secs: non_negative(self.handover_secs, "handover-secs")?,
            queue: self.queue,
            placement: self.placement,
            first_decision_secs: self
                .first_decision_secs
                .map(|v| non_negative(v, "first-decision-secs"))
                .transpose()?,
            ready_secs: self
                .ready_secs
                .map(|v| non_negative(v, "ready-secs"))
                .transpose()?,
            partitions: match self.partitions {
                Some(0) => return Err("--partitions must be at least 1".into()),
                p => p,
            },
            ..SimConfig::new(policy, rebalance_secs)
        })
    }
}

/// Runs the simulation; the error is one line for the user.
pub fn run(args: &SimArgs) -> Result<String, String> {
    let policy = args.settings.policy()?;
    let text = std::fs::read_to_string(&args.trace)
        .map_err(|e| format!("cannot read {}: {e}", args.trace.display()))?;
    let trace = read_trace(&text).map_err(|e| format!("{}: {e}", args.trace.display()))?;
    let rebalance_secs = args.settings.rebalance()?;
    let r = simulate(&trace, &args.model.config(policy.clone(), rebalance_secs)?);
    if let Some(path) = &args.decisions {
        let text = kumulus_autoscaler::decisions::csv(r.decisions.iter().map(|d| ("sim", d)));
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "{} policy on {} (SLO {} s)",
            policy.policy,
            args.trace
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("trace"),
            policy.slo_wait_secs
        );
        std::fs::write(
            path,
            kumulus_autoscaler::plot::svg(&r, &title, policy.slo_wait_secs),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if args.json {
        serde_json::to_string(&r).map_err(|e| e.to_string())
    } else {
        Ok(format!(
            "jobs {}\nwait p50 {:.1} s, p95 {:.1} s, max {:.1} s\nover the SLO ({} s): {:.1}%\nworker-seconds {:.0} ({:.2} times the jobs' run time, {:.0} s)\nscale events {} ({:.1} an hour), max workers {}",
            r.jobs, r.wait_p50_secs, r.wait_p95_secs, r.wait_max_secs, policy.slo_wait_secs,
            r.slo_violation_pct, r.worker_seconds, r.worker_seconds / r.work_seconds.max(1e-9),
            r.work_seconds, r.scale_events, r.scale_events_per_hour, r.max_workers
        ))
    }
}
