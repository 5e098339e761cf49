//! `kumulus load`: replays a trace (the simulator's CSV) against a running
//! Kumulus, open loop, and reports what happened beside what `kumulus sim`
//! predicts for the same trace and settings.
//!
//! - Each job is submitted at its arrival time (divided by `--speed`) from
//!   its own task, whatever earlier requests are doing.
//! - Each job is the shipped sleep job (or `--repo`), asked to run for its
//!   `service_secs` (divided by `--speed`).
//! - The worker count is sampled every second from `/metrics`
//!   (`kumulus_workers_current`, else `kumulus_workers_requested`).
//! - The figures come from the job records, read back at the end.
//! - The simulator models what was measured on the run ([`Model`]): the
//!   queue (shared for `kumulus up`, which reports no partitions), the
//!   per-job overhead (a job's time on its worker beyond its own run), when
//!   the autoscaler's decisions fell, and the start-up and rebalance times
//!   the autoscaler measured (the given settings where it measured none).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use kumulus_autoscaler::decisions::{changes, since};
use kumulus_autoscaler::sim::{
    read_trace, simulate, Placement, QueueModel, Sample, SimConfig, SimResult, TraceJob,
};
use kumulus_client::{Client, ClientError, Job, JobState, NewJob, Session};
use kumulus_core::observation::ScalingDecision;

use super::sim::PolicyArgs;

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The Kumulus API (`kumulus up`, or a cluster's frontend).
    #[arg(long)]
    pub url: String,
    /// A user as NAME:PASSWORD; repeat it to spread the jobs over several.
    #[arg(long = "user", required = true)]
    pub users: Vec<String>,
    /// CSV with the header `arrival_secs,service_secs`.
    #[arg(long)]
    pub trace: PathBuf,
    /// The job's repository; by default the shipped sleep job, made a git
    /// repository on this machine (for `kumulus up`, or a cluster that
    /// accepts local repositories).
    #[arg(long)]
    pub repo: Option<String>,
    /// Compresses arrivals and run times alike (2 = twice as fast).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Where `/metrics` is served, if not at `--url` (a cluster's autoscaler).
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// Write report.json, report.md, plot.svg and trace.csv here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// How long to wait for the last jobs after the last arrival.
    #[arg(long, default_value_t = 600)]
    pub drain_secs: u64,
    /// The settings the system runs with, for the simulator's prediction
    /// (the same flags as `kumulus sim`).
    #[command(flatten)]
    pub settings: PolicyArgs,
}

/// One job of the run, from its record.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: String,
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub state: JobState,
    /// The worker that ran it (its last attempt's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(skip)]
    pub elapsed_secs: Option<f64>,
    /// The run time the job was asked for (its trace's, divided by the speed).
    #[serde(skip)]
    pub asked_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub trace: String,
    pub speed: f64,
    pub policy: kumulus_autoscaler::policy::PolicyConfig,
    pub rebalance_secs: f64,
    /// What the simulator modelled, as measured on this run.
    pub model: Model,
    pub jobs: Vec<JobRow>,
    /// The live run and the simulator's, each serialized with the key
    /// names of `kumulus sim --json`.
    pub live: SimResult,
    pub sim: SimResult,
    /// live / sim, per figure (absent where the simulator's is 0).
    pub ratios: BTreeMap<String, Option<f64>>,
    pub wait_p99_secs: f64,
    pub submit_latency_p50_secs: f64,
    pub submit_latency_p99_secs: f64,
    /// Refused submissions by status (`transport` when there was no answer).
    pub errors: BTreeMap<String, usize>,
    /// Jobs accepted that did not end before the drain deadline.
    pub unfinished: usize,
    /// (seconds since the first submit, workers) every second.
    pub workers_over_time: Vec<(f64, u32)>,
}

/// The system as measured on the run, for the simulator.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Model {
    pub queue: QueueModel,
    /// How the frontend placed the jobs on the partitions, as its
    /// `/metrics` says (`kumulus_api_placement_info`; `hash` where it does
    /// not say).
    pub placement: Placement,
    /// The jobs topic's partitions as last seen (a broker that cannot add
    /// partitions has had these from the start; Kafka never removes any).
    pub partitions: Option<u32>,
    /// Mean time a job held its worker beyond its own run.
    pub overhead_secs: f64,
    /// Mean time from a job's end to its worker's next start, where that
    /// next job was already waiting ([`handover`]).
    pub handover_secs: f64,
    /// When the autoscaler's first decision fell after the first submit.
    pub first_decision_secs: Option<f64>,
    /// Start to first job of a new worker.
    pub ready_secs: f64,
    /// `measured` (by the autoscaler) or `assumed` (the given setting).
    pub ready_from: &'static str,
    pub rebalance_secs: f64,
    pub rebalance_from: &'static str,
    /// The start-up and rebalance times the live policy assumed at its last
    /// decision (`kumulus_policy_*_seconds`): with `measured` settings, the
    /// autoscaler's measures, not the configured fallback. The simulated
    /// policy assumes the same. None: not exported (the settings given).
    pub policy_startup_secs: Option<f64>,
    pub policy_rebalance_secs: Option<f64>,
}

/// The dead time between a worker's jobs: from a job's end (its
/// `finished_at`) to the start of the worker's next job, where that job was
/// already waiting when the first ended (so the worker, not the load, was
/// the wait). On each worker, each start is paired with the latest end
/// before it that no other start has taken: exact for workers of one slot,
/// the shortest gaps for workers of several. 0 where no job waited so.
fn handover(rows: &[JobRow]) -> f64 {
    let mut by_worker: BTreeMap<&str, Vec<&JobRow>> = BTreeMap::new();
    for r in rows {
        if let (Some(w), Some(_), Some(_)) = (&r.worker, r.started_at, r.finished_at) {
            by_worker.entry(w).or_default().push(r);
        }
    }
    let mut gaps = Vec::new();
    for jobs in by_worker.values_mut() {
        jobs.sort_by_key(|r| r.started_at);
        let mut ends: Vec<DateTime<Utc>> = jobs.iter().filter_map(|r| r.finished_at).collect();
        ends.sort();
        let mut taken = vec![false; ends.len()];
        for r in jobs.iter() {
            let Some(start) = r.started_at else { continue };
            let free = (0..ends.len())
                .rev()
                .find(|&k| !taken[k] && ends[k] <= start && r.submitted_at <= ends[k]);
            if let Some(k) = free {
                taken[k] = true;
                gaps.push((start - ends[k]).num_milliseconds() as f64 / 1000.0);
            }
        }
    }
    if gaps.is_empty() {
        0.0
    } else {
        gaps.iter().sum::<f64>() / gaps.len() as f64
    }
}

/// A histogram's mean from its `_sum` and `_count`, if it has samples.
fn mean_of(text: &str, name: &str) -> Option<f64> {
    let count = metric(text, &format!("{name}_count"))?;
    let sum = metric(text, &format!("{name}_sum"))?;
    (count > 0.0).then(|| sum / count)
}

/// The model of the system the run measured.
fn measure(
    run: &Run,
    policy: &kumulus_autoscaler::policy::PolicyConfig,
    rebalance_secs: f64,
) -> Model {
    let last = run.last_metrics.as_deref().unwrap_or("");
    // `kumulus up` has one queue and no partitions.
    let seen_partitions = metric(last, "kumulus_kafka_partitions");
    let queue = match seen_partitions {
        Some(p) if p < 0.5 => QueueModel::Shared,
        _ => QueueModel::Partitioned,
    };
    let partitions = seen_partitions
        .filter(|p| *p >= 0.5)
        .map(|p| p.round() as u32);
    let placement = run
        .frontend_metrics
        .as_deref()
        .and_then(|text| label(text, "kumulus_api_placement_info", "placement"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_default();
    let overheads: Vec<f64> = run
        .rows
        .iter()
        .filter_map(|r| {
            // Everything beyond the asked run: the clone, the sandbox and
            // the runtime's start (all inside `elapsed_secs`), collection.
            let held = (r.finished_at? - r.started_at?).num_milliseconds() as f64 / 1000.0;
            Some((held - r.asked_secs).max(0.0))
        })
        .collect();
    let overhead_secs = if overheads.is_empty() {
        0.0
    } else {
        overheads.iter().sum::<f64>() / overheads.len() as f64
    };
    let handover_secs = handover(&run.rows);
    // Decisions fall every period from the autoscaler's own start.
    let first_decision_secs = run.first_decision.map(|at| {
        let since = (at - run.started).num_milliseconds() as f64 / 1000.0;
        let period = policy.period_secs.max(0.1);
        let phase = since.rem_euclid(period);
        if phase < 1e-3 {
            period
        } else {
            phase
        }
    });
    let (ready_secs, ready_from) = match mean_of(last, "kumulus_worker_startup_seconds") {
        Some(v) => (v, "measured"),
        // Slots of `kumulus up` take jobs at once.
        None if queue == QueueModel::Shared => (0.0, "assumed"),
        None => (policy.startup_secs, "assumed"),
    };
    let (rebalance_secs, rebalance_from) = match mean_of(last, "kumulus_rebalance_pause_seconds") {
        Some(v) => (v, "measured"),
        None => (rebalance_secs, "assumed"),
    };
    Model {
        queue,
        placement,
        partitions,
        overhead_secs,
        handover_secs,
        first_decision_secs,
        ready_secs,
        ready_from,
        rebalance_secs,
        rebalance_from,
        policy_startup_secs: metric(last, "kumulus_policy_startup_seconds"),
        policy_rebalance_secs: metric(last, "kumulus_policy_rebalance_seconds"),
    }
}

impl Model {
    fn sim_config(&self, mut policy: kumulus_autoscaler::policy::PolicyConfig) -> SimConfig {
        // The simulated policy assumes what the live one did.
        if let Some(v) = self.policy_startup_secs {
            policy.startup_secs = v;
        }
        if let Some(v) = self.policy_rebalance_secs {
            policy.rebalance_secs = v;
        }
        SimConfig {
            overhead_secs: self.overhead_secs,
            handover_secs: self.handover_secs,
            queue: self.queue,
            placement: self.placement,
            partitions: self.partitions,
            first_decision_secs: self.first_decision_secs,
            ready_secs: Some(self.ready_secs),
            ..SimConfig::new(policy, self.rebalance_secs)
        }
    }
}

/// Nearest-rank quantile over sorted values, as the simulator takes them.
fn quantile(sorted: &[f64], f: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * f).round() as usize]
}

/// What the sampler saw at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    t: f64,
    workers: u32,
    waiting: u64,
    running: u64,
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let bare = key.split('{').next()?;
            (bare == name).then(|| value.trim().parse::<f64>().ok())?
        })
        .reduce(|a, b| a + b)
}

/// The value of `label` on the first sample of `name` whose value is
/// not 0 (an info gauge's).
fn label(text: &str, name: &str, label: &str) -> Option<String> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        let (bare, labels) = key.split_once('{')?;
        if bare != name || value.trim().parse::<f64>().ok()? == 0.0 {
            return None;
        }
        labels.trim_end_matches('}').split(',').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == label).then(|| v.trim_matches('"').to_string())
        })
    })
}

fn parse_seen(text: &str, t: f64) -> Option<Seen> {
    let workers = metric(text, "kumulus_workers_current")
        .or_else(|| metric(text, "kumulus_workers_requested"))?;
    let started = metric(text, "kumulus_jobs_started_total").unwrap_or(0.0);
    let finished = metric(text, "kumulus_jobs_finished_total").unwrap_or(0.0);
    Some(Seen {
        t,
        workers: workers.max(0.0) as u32,
        waiting: metric(text, "kumulus_queue_waiting")
            .unwrap_or(0.0)
            .max(0.0) as u64,
        running: (started - finished).max(0.0) as u64,
    })
}

fn users(list: &[String]) -> Result<Vec<(String, String)>, String> {
    list.iter()
        .map(|u| {
            u.split_once(':')
                .filter(|(n, p)| !n.is_empty() && !p.is_empty())
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .ok_or_else(|| format!("--user {u:?}: expected NAME:PASSWORD"))
        })
        .collect()
}

/// The trace with arrivals and run times divided by `speed`.
fn compress(trace: &[TraceJob], speed: f64) -> Vec<TraceJob> {
    trace
        .iter()
        .map(|j| TraceJob {
            arrival_secs: j.arrival_secs / speed,
            service_secs: j.service_secs / speed,
        })
        .collect()
}

/// Runs the load; returns the text summary.
pub async fn run(args: &LoadArgs) -> Result<String, String> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err("--speed must be a number above 0".into());
    }
    let policy = args.settings.policy()?;
    let rebalance_secs = args.settings.rebalance()?;
    let users = users(&args.users)?;
    let text = std::fs::read_to_string(&args.trace)
        .map_err(|e| format!("cannot read {}: {e}", args.trace.display()))?;
    let trace = compress(
        &read_trace(&text).map_err(|e| format!("{}: {e}", args.trace.display()))?,
        args.speed,
    );
    let repo = match &args.repo {
        Some(r) => r.clone(),
        None => crate::example::prepare_sleep(&std::env::temp_dir().join("kumulus-load"))
            .map_err(|e| format!("cannot make the sleep job's repository: {e}"))?
            .display()
            .to_string(),
    };
    let client = Client::new(&args.url).map_err(|e| format!("--url: {e}"))?;
    let metrics = Client::new(args.metrics_url.as_deref().unwrap_or(&args.url))
        .map_err(|e| format!("--metrics-url: {e}"))?;
    let mut sessions = Vec::new();
    for (name, password) in &users {
        sessions.push(
            client
                .login(name, password)
                .await
                .map_err(|e| format!("cannot log in as {name}: {e}"))?,
        );
    }
    let live = drive(&trace, &repo, &sessions, &metrics, &client, args.drain_secs).await;

    let model = measure(&live, &policy, rebalance_secs);
    let sim = simulate(&trace, &model.sim_config(policy.clone()));
    let report = build_report(args, &policy, rebalance_secs, model, &live, sim);
    if let Some(dir) = &args.report {
        write_report(dir, &report)?;
    }
    Ok(text_summary(&report, policy.slo_wait_secs))
}

/// The autoscaler's last decision as first seen, and `/metrics` as last read.
type MetricsSeen = (Option<DateTime<Utc>>, Option<String>);

/// What a run collected.
struct Run {
    rows: Vec<JobRow>,
    /// Submit latency of every answered submission.
    latencies: Vec<f64>,
    errors: BTreeMap<String, usize>,
    seen: Vec<Seen>,
    started: DateTime<Utc>,
    unfinished: usize,
    /// The autoscaler's last decision as first seen (`/metrics`).
    first_decision: Option<DateTime<Utc>>,
    /// `/metrics` as last read.
    last_metrics: Option<String>,
    /// The frontend's `/metrics`, read at the end (where it differs from
    /// the autoscaler's).
    frontend_metrics: Option<String>,
    /// The autoscaler's decisions over the run, oldest first, timed from
    /// the first submit.
    decisions: Vec<ScalingDecision>,
}

async fn drive(
    trace: &[TraceJob],
    repo: &str,
    sessions: &[Session],
    metrics: &Client,
    frontend: &Client,
    drain_secs: u64,
) -> Run {
    let started = Utc::now();
    let t0 = tokio::time::Instant::now();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let texts: Arc<Mutex<MetricsSeen>> = Arc::default();
    let submitted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let total = trace.len();
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let (seen, texts, metrics, stop, submitted) = (
            seen.clone(),
            texts.clone(),
            metrics.clone(),
            stop.clone(),
            submitted.clone(),
        );
        let tty = std::io::stdout().is_terminal();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let t = t0.elapsed().as_secs_f64();
                if let Ok(text) = metrics.metrics().await {
                    if let Ok(mut x) = texts.lock() {
                        if x.0.is_none() {
                            x.0 = metric(&text, "kumulus_last_decision_timestamp_seconds")
                                .filter(|&ts| ts > 0.0)
                                .and_then(|ts| {
                                    DateTime::from_timestamp_millis((ts * 1000.0) as i64)
                                });
                        }
                        x.1 = Some(text.clone());
                    }
                    if let Some(s) = parse_seen(&text, t) {
                        if tty {
                            let n = submitted.load(std::sync::atomic::Ordering::SeqCst);
                            print!(
                                "\r{t:>6.0} s  submitted {n}/{total}  waiting {}  running {}  workers {}   ",
                                s.waiting, s.running, s.workers
                            );
                            let _ = std::io::stdout().flush();
                        }
                        if let Ok(mut v) = seen.lock() {
                            v.push(s);
                        }
                    }
                }
            }
            if tty {
                println!();
            }
        })
    };

    // Open loop: one task per job, each at its own arrival time.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, job) in trace.iter().enumerate() {
        let session = sessions[i % sessions.len()].clone();
        let body = NewJob::repo(repo).args([format!("{:.3}", job.service_secs)]);
        let at = t0 + Duration::from_secs_f64(job.arrival_secs);
        let submitted = submitted.clone();
        tasks.spawn(async move {
            tokio::time::sleep_until(at).await;
            let sent = Instant::now();
            let answer = session.submit(&body).await;
            submitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (i, sent.elapsed().as_secs_f64(), answer)
        });
    }
    let mut accepted: Vec<(usize, String)> = Vec::new();
    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let Ok((i, latency, answer)) = done else {
            continue;
        };
        match answer {
            Ok(job) => {
                latencies.push(latency);
                accepted.push((i, job.id));
            }
            Err(e) => {
                if e.status().is_some() {
                    latencies.push(latency);
                }
                let key = match &e {
                    ClientError::Api { status, .. } => status.as_u16().to_string(),
                    ClientError::Decode(_) => "bad answer".to_string(),
                    _ => "transport".to_string(),
                };
                let count = errors.entry(key).or_default();
                if *count == 0 {
                    eprintln!("kumulus load: a submission failed: {e}");
                }
                *count += 1;
            }
        }
    }
    accepted.sort();

    // Wait for every accepted job to end, reading the records back.
    let last = trace
        .iter()
        .map(|j| j.arrival_secs + j.service_secs)
        .fold(0.0, f64::max);
    let deadline = t0 + Duration::from_secs_f64(last) + Duration::from_secs(drain_secs);
    let mut records: BTreeMap<usize, Job> = BTreeMap::new();
    loop {
        for (i, id) in &accepted {
            if records.get(i).is_some_and(Job::is_terminal) {
                continue;
            }
            if let Ok(job) = sessions[i % sessions.len()].job(id).await {
                records.insert(*i, job);
            }
        }
        let open = accepted.len() - records.values().filter(|j| j.is_terminal()).count();
        if open == 0 || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.cancel();
    let _ = sampler.await;
    // The live decisions, from the autoscaler's feed (the frontend keeps
    // the last 360): those that fell from the first submit on, oldest first.
    let start_ms = started.timestamp_millis();
    let decisions = match sessions[0].autoscaler(None).await {
        Ok(feed) => {
            let mut rows: Vec<ScalingDecision> = feed
                .decisions
                .iter()
                .filter(|d| d.timestamp >= start_ms)
                .map(|d| since(d, start_ms))
                .collect();
            rows.sort_by_key(|d| d.timestamp);
            rows
        }
        Err(e) => {
            eprintln!("kumulus load: cannot read the autoscaler's decisions: {e}");
            Vec::new()
        }
    };
    let rows: Vec<JobRow> = records
        .iter()
        .map(|(i, j)| JobRow {
            id: j.id.clone(),
            submitted_at: j.submitted_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            state: j.state,
            worker: j.worker.clone(),
            elapsed_secs: j.elapsed_secs,
            asked_secs: trace[*i].service_secs,
        })
        .collect();
    let unfinished =
        rows.iter().filter(|r| !r.state.is_terminal()).count() + (accepted.len() - records.len());
    let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
    let (first_decision, last_metrics) = texts.lock().map(|x| x.clone()).unwrap_or_default();
    let frontend_metrics = frontend.metrics().await.ok();
    Run {
        rows,
        latencies,
        errors,
        seen,
        started,
        unfinished,
        first_decision,
        last_metrics,
        frontend_metrics,
        decisions,
    }
}

/// The live run summarised as the simulator summarises its own.
fn live_result(run: &Run, slo: f64) -> SimResult {
    let now = Utc::now();
    let secs = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_milliseconds() as f64 / 1000.0;
    let mut waits: Vec<(f64, f64)> = run
        .rows
        .iter()
        .map(|r| {
            let start = r.started_at.unwrap_or(now);
            (
                secs(run.started, r.submitted_at),
                secs(r.submitted_at, start),
            )
        })
        .collect();
    waits.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut sorted: Vec<f64> = waits.iter().map(|w| w.1).collect();
    sorted.sort_by(f64::total_cmp);
    let over = sorted.iter().filter(|&&w| w > slo + 1e-9).count();
    // Worker-seconds: the sampled count held until the next sample, up to
    // the last job's end.
    let end = run
        .rows
        .iter()
        .filter_map(|r| r.finished_at)
        .map(|f| secs(run.started, f))
        .fold(0.0, f64::max);
    let mut worker_seconds = 0.0;
    let mut scale_events = 0;
    for (k, s) in run.seen.iter().enumerate() {
        let next = run
            .seen
            .get(k + 1)
            .map_or(end.max(s.t), |n| n.t.min(end.max(s.t)));
        if next > s.t {
            worker_seconds += (next - s.t) * s.workers as f64;
        }
        if k > 0 && run.seen[k - 1].workers != s.workers {
            scale_events += 1;
        }
    }
    let timeline = run
        .seen
        .iter()
        .map(|s| Sample {
            t: s.t,
            workers: s.workers,
            ready: s.workers,
            waiting: s.waiting,
            running: s.running,
            partitions: 0,
        })
        .collect();
    SimResult {
        jobs: run.rows.len(),
        wait_p50_secs: quantile(&sorted, 0.5),
        wait_p95_secs: quantile(&sorted, 0.95),
        wait_max_secs: sorted.last().copied().unwrap_or(0.0),
        slo_violation_pct: if sorted.is_empty() {
            0.0
        } else {
            100.0 * over as f64 / sorted.len() as f64
        },
        worker_seconds,
        scale_events,
        scale_events_per_hour: kumulus_autoscaler::sim::per_hour(scale_events, end),
        max_workers: run.seen.iter().map(|s| s.workers).max().unwrap_or(0),
        work_seconds: run.rows.iter().map(|r| r.asked_secs).sum(),
        timeline,
        waits,
        decisions: run.decisions.clone(),
    }
}

fn build_report(
    args: &LoadArgs,
    policy: &kumulus_autoscaler::policy::PolicyConfig,
    rebalance_secs: f64,
    model: Model,
    run: &Run,
    sim: SimResult,
) -> Report {
    let live = live_result(run, policy.slo_wait_secs);
    let sim_s = sim;
    let ratio = |l: f64, s: f64| (s > 0.0).then(|| l / s);
    let ratios = BTreeMap::from([
        (
            "wait_p95_secs".to_string(),
            ratio(live.wait_p95_secs, sim_s.wait_p95_secs),
        ),
        (
            "worker_seconds".to_string(),
            ratio(live.worker_seconds, sim_s.worker_seconds),
        ),
        (
            "slo_violation_pct".to_string(),
            ratio(live.slo_violation_pct, sim_s.slo_violation_pct),
        ),
        (
            "scale_events".to_string(),
            ratio(live.scale_events as f64, sim_s.scale_events as f64),
        ),
    ]);
    let mut waits: Vec<f64> = live.waits.iter().map(|w| w.1).collect();
    waits.sort_by(f64::total_cmp);
    let mut lat = run.latencies.clone();
    lat.sort_by(f64::total_cmp);
    Report {
        url: args.url.clone(),
        trace: args.trace.display().to_string(),
        speed: args.speed,
        policy: policy.clone(),
        rebalance_secs,
        model,
        jobs: run.rows.clone(),
        live,
        sim: sim_s,
        ratios,
        wait_p99_secs: quantile(&waits, 0.99),
        submit_latency_p50_secs: quantile(&lat, 0.5),
        submit_latency_p99_secs: quantile(&lat, 0.99),
        errors: run.errors.clone(),
        unfinished: run.unfinished,
        workers_over_time: run.seen.iter().map(|s| (s.t, s.workers)).collect(),
    }
}

fn row(name: &str, live: f64, sim: f64, unit: &str) -> String {
    let ratio = if sim > 0.0 {
        format!("{:.2}", live / sim)
    } else {
        "-".into()
    };
    format!("| {name} | {live:.1}{unit} | {sim:.1}{unit} | {ratio} |\n")
}

fn markdown(r: &Report) -> String {
    let mut md = format!(
        "# Load report\n\n`{}` against {}, speed {}, policy `{}` (SLO {} s, period {} s, start-up {} s, rebalance {} s, workers {}..{}).\n\n",
        r.trace,
        r.url,
        r.speed,
        r.policy.policy,
        r.policy.slo_wait_secs,
        r.policy.period_secs,
        r.policy.startup_secs,
        r.rebalance_secs,
        r.policy.min_workers,
        r.policy.max_workers
    );
    let m = &r.model;
    md.push_str(&format!(
        "The simulator modelled what this run measured: a {} queue, {:.2} s of overhead per job, {:.2} s of hand-over between a worker's jobs, the first decision {} s in, new workers ready in {:.1} s ({}), rebalances of {:.1} s ({}); its policy assumed a start-up of {} and a rebalance of {}, as the live one did at its last decision.\n\n",
        match (m.queue, m.placement) {
            (QueueModel::Shared, _) => "shared",
            (QueueModel::Partitioned, Placement::Hash) => "partitioned (jobs placed by a hash)",
            (QueueModel::Partitioned, Placement::LeastBacklog) =>
                "partitioned (jobs placed by backlog)",
        },
        m.overhead_secs,
        m.handover_secs,
        m.first_decision_secs
            .map_or("one period".to_string(), |s| format!("{s:.1}")),
        m.ready_secs,
        m.ready_from,
        m.rebalance_secs,
        m.rebalance_from,
        m.policy_startup_secs
            .map_or(format!("{} s (the setting)", r.policy.startup_secs), |v| format!("{v:.1} s")),
        m.policy_rebalance_secs
            .map_or(format!("{} s (the setting)", r.policy.rebalance_secs), |v| format!("{v:.1} s")),
    ));
    md.push_str("| figure | live | simulated | live / sim |\n| --- | --- | --- | --- |\n");
    md.push_str(&row("jobs", r.live.jobs as f64, r.sim.jobs as f64, ""));
    md.push_str(&row(
        "jobs over the SLO",
        r.live.slo_violation_pct,
        r.sim.slo_violation_pct,
        "%",
    ));
    md.push_str(&row(
        "wait p50",
        r.live.wait_p50_secs,
        r.sim.wait_p50_secs,
        " s",
    ));
    md.push_str(&row(
        "wait p95",
        r.live.wait_p95_secs,
        r.sim.wait_p95_secs,
        " s",
    ));
    md.push_str(&row(
        "wait max",
        r.live.wait_max_secs,
        r.sim.wait_max_secs,
        " s",
    ));
    md.push_str(&row(
        "worker-seconds",
        r.live.worker_seconds,
        r.sim.worker_seconds,
        "",
    ));
    md.push_str(&row(
        "scale events",
        r.live.scale_events as f64,
        r.sim.scale_events as f64,
        "",
    ));
    md.push_str(&row(
        "max workers",
        r.live.max_workers as f64,
        r.sim.max_workers as f64,
        "",
    ));
    md.push_str(&format!(
        "\nLive only: wait p99 {:.1} s; submit latency p50 {:.3} s, p99 {:.3} s; refused submissions {:?}; unfinished {}.\n\n![workers, waiting jobs and waits](plot.svg)\n\nThe run as a trace: [trace.csv](trace.csv) (`kumulus sim --trace trace.csv` replays it).\n\n{}",
        r.wait_p99_secs,
        r.submit_latency_p50_secs,
        r.submit_latency_p99_secs,
        r.errors,
        r.unfinished,
        decisions_line(&r.live.decisions, &r.sim.decisions)
    ));
    md
}

/// How often each side decided and changed the count, with the log's link.
fn decisions_line(live: &[ScalingDecision], sim: &[ScalingDecision]) -> String {
    let (lu, ld) = changes(live);
    let (su, sd) = changes(sim);
    format!(
        "Decisions, live / sim: {} / {}, of which up {lu} / {su} and down {ld} / {sd}; every one, with its inputs and reason, in [decisions.csv](decisions.csv).\n",
        live.len(),
        sim.len()
    )
}

fn write_report(dir: &Path, report: &Report) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(
        "report.json",
        &serde_json::to_string_pretty(report).map_err(|e| e.to_string())?,
    )?;
    write("report.md", &markdown(report))?;
    let slo = report.policy.slo_wait_secs;
    let title = format!("live: {} policy on {}", report.policy.policy, report.trace);
    write(
        "plot.svg",
        &kumulus_autoscaler::plot::svg(&report.live, &title, slo),
    )?;
    // The run as the simulator's CSV, as `kumulus trace export` writes it.
    let ran: Vec<super::trace::Ran> = report
        .jobs
        .iter()
        .map(|r| super::trace::Ran {
            submitted_at: r.submitted_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            elapsed_secs: r.elapsed_secs,
        })
        .collect();
    write("trace.csv", &super::trace::csv(&ran))?;
    // Both decision logs, live then simulated, in one file.
    let both = report
        .live
        .decisions
        .iter()
        .map(|d| ("live", d))
        .chain(report.sim.decisions.iter().map(|d| ("sim", d)));
    write("decisions.csv", &kumulus_autoscaler::decisions::csv(both))?;
    Ok(())
}

fn text_summary(r: &Report, slo: f64) -> String {
    format!(
        "jobs {} (unfinished {}, refused {:?})\nlive: wait p50 {:.1} s, p95 {:.1} s, max {:.1} s; over the SLO ({slo} s) {:.1}%; worker-seconds {:.0}; scale events {}; max workers {}\nsim:  wait p50 {:.1} s, p95 {:.1} s, max {:.1} s; over the SLO {:.1}%; worker-seconds {:.0}; scale events {}; max workers {}",
        r.live.jobs,
        r.unfinished,
        r.errors,
        r.live.wait_p50_secs,
        r.live.wait_p95_secs,
        r.live.wait_max_secs,
        r.live.slo_violation_pct,
        r.live.worker_seconds,
        r.live.scale_events,
        r.live.max_workers,
        r.sim.wait_p50_secs,
        r.sim.wait_p95_secs,
        r.sim.wait_max_secs,
        r.sim.slo_violation_pct,
        r.sim.worker_seconds,
        r.sim.scale_events,
        r.sim.max_workers
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_name_and_summed_over_labels() {
        let text = "# HELP x\nkumulus_workers_requested 3\nkumulus_jobs_started_total 10\nkumulus_jobs_finished_total{state=\"succeeded\"} 4\nkumulus_jobs_finished_total{state=\"failed\"} 2\nkumulus_queue_waiting 5\n";
        let s = parse_seen(text, 1.0).unwrap();
        assert_eq!((s.workers, s.running, s.waiting), (3, 4, 5));
        // The current count wins over the requested one where both exist.
        let both = format!("{text}kumulus_workers_current 2\n");
        assert_eq!(parse_seen(&both, 1.0).unwrap().workers, 2);
        assert!(parse_seen("kumulus_queue_waiting 1\n", 0.0).is_none());
    }

    #[test]
    fn the_hand_over_is_the_gap_to_a_waiting_next_job() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: f64| t0 + chrono::Duration::milliseconds((s * 1000.0) as i64);
        // (worker, submitted, started, finished)
        let job = |w: &str, sub: f64, start: f64, end: f64| JobRow {
            id: "j".into(),
            submitted_at: at(sub),
            started_at: Some(at(start)),
            finished_at: Some(at(end)),
            state: JobState::Succeeded,
            worker: Some(w.into()),
            elapsed_secs: None,
            asked_secs: 1.0,
        };
        for (rows, want) in [
            // One slot: the second job waited from 0.5 s; 0.4 s from the
            // first's end to its start.
            (vec![job("a", 0.0, 0.0, 1.0), job("a", 0.5, 1.4, 2.4)], 0.4),
            // The next job came after the end: the worker idled, no hand-over.
            (vec![job("a", 0.0, 0.0, 1.0), job("a", 3.0, 3.1, 4.0)], 0.0),
            // Two workers are not one: b's start follows none of a's ends.
            (vec![job("a", 0.0, 0.0, 1.0), job("b", 0.5, 1.2, 2.0)], 0.0),
            // Two slots on one worker: each end is taken once, the latest
            // first (0.2 s and 0.6 s).
            (
                vec![
                    job("a", 0.0, 0.0, 1.0),
                    job("a", 0.0, 0.0, 1.2),
                    job("a", 0.1, 1.4, 2.0),
                    job("a", 0.1, 1.6, 2.0),
                ],
                0.4,
            ),
            // No worker named (an older report): nothing measured.
            (
                vec![JobRow {
                    worker: None,
                    ..job("a", 0.0, 0.0, 1.0)
                }],
                0.0,
            ),
        ] {
            let got = handover(&rows);
            assert!((got - want).abs() < 1e-9, "{got} != {want}");
        }
    }

    #[test]
    fn the_model_is_what_the_run_measured() {
        let policy = kumulus_autoscaler::policy::PolicyConfig {
            period_secs: 5.0,
            startup_secs: 10.0,
            ..Default::default()
        };
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: f64| t0 + chrono::Duration::milliseconds((s * 1000.0) as i64);
        let job = |start: f64, end: f64, asked: f64| JobRow {
            id: "j".into(),
            submitted_at: t0,
            started_at: Some(at(start)),
            finished_at: Some(at(end)),
            state: JobState::Succeeded,
            worker: None,
            elapsed_secs: Some(asked + 0.1),
            asked_secs: asked,
        };
        let mut run = Run {
            rows: vec![job(1.0, 3.5, 2.0), job(2.0, 3.3, 1.0)],
            latencies: Vec::new(),
            errors: BTreeMap::new(),
            seen: Vec::new(),
            started: t0,
            unfinished: 0,
            // A decision 13 s before the first submit: the phase is 2 s.
            first_decision: Some(at(-13.0)),
            last_metrics: Some(
                "kumulus_kafka_partitions 0\nkumulus_worker_startup_seconds_sum 0\nkumulus_worker_startup_seconds_count 0\n".into(),
            ),
            frontend_metrics: None,
            decisions: Vec::new(),
        };
        let m = measure(&run, &policy, 3.0);
        assert_eq!(m.queue, QueueModel::Shared);
        assert!((m.overhead_secs - 0.4).abs() < 1e-9, "{m:?}");
        assert!((m.first_decision_secs.unwrap() - 2.0).abs() < 1e-9);
        // No start-up measured: slots of a shared queue start at once.
        assert_eq!((m.ready_secs, m.ready_from), (0.0, "assumed"));
        assert_eq!((m.rebalance_secs, m.rebalance_from), (3.0, "assumed"));
        // A cluster whose autoscaler measured both.
        run.last_metrics = Some(
            "kumulus_kafka_partitions 8\nkumulus_worker_startup_seconds_sum 9\nkumulus_worker_startup_seconds_count 3\nkumulus_rebalance_pause_seconds_sum 4\nkumulus_rebalance_pause_seconds_count 2\n".into(),
        );
        let m = measure(&run, &policy, 3.0);
        assert_eq!(m.queue, QueueModel::Partitioned);
        assert_eq!(m.partitions, Some(8));
        assert_eq!((m.ready_secs, m.ready_from), (3.0, "measured"));
        assert_eq!((m.rebalance_secs, m.rebalance_from), (2.0, "measured"));
        assert_eq!(
            (m.policy_startup_secs, m.policy_rebalance_secs),
            (None, None)
        );
        assert_eq!(m.sim_config(policy.clone()).policy.startup_secs, 10.0);
        // The live policy used its measures: so does the simulated one.
        run.last_metrics = Some(
            "kumulus_kafka_partitions 8\nkumulus_policy_startup_seconds 2.5\nkumulus_policy_rebalance_seconds 1.5\n".into(),
        );
        let m = measure(&run, &policy, 3.0);
        assert_eq!(
            (m.policy_startup_secs, m.policy_rebalance_secs),
            (Some(2.5), Some(1.5))
        );
        let sim = m.sim_config(policy.clone());
        assert_eq!(
            (sim.policy.startup_secs, sim.policy.rebalance_secs),
            (2.5, 1.5)
        );
        // Nothing measured on a cluster: the policy's own assumption.
        run.last_metrics = Some("kumulus_kafka_partitions 8\n".into());
        assert_eq!(measure(&run, &policy, 3.0).ready_secs, 10.0);
        // The frontend's placement, as its metrics say; a hash where they
        // do not say.
        assert_eq!(measure(&run, &policy, 3.0).placement, Placement::Hash);
        run.frontend_metrics = Some(
            "# HELP kumulus_api_placement_info x\nkumulus_api_placement_info{placement=\"least-backlog\"} 1\n".into(),
        );
        let m = measure(&run, &policy, 3.0);
        assert_eq!(m.placement, Placement::LeastBacklog);
        assert_eq!(
            m.sim_config(policy.clone()).placement,
            Placement::LeastBacklog
        );
    }

    #[test]
    fn users_need_a_name_and_a_password() {
        assert_eq!(
            users(&["ana:pw:x".into()]).unwrap(),
            [("ana".to_string(), "pw:x".to_string())]
        );
        assert!(users(&["ana".into()]).is_err());
        assert!(users(&[":pw".into()]).is_err());
    }

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.95), 5.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
