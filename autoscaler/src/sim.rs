//! A discrete-event model of the real system, to replay a trace through a
//! policy: jobs land on Kafka partitions as the producer spreads them (by a
//! hash of the job), each partition is read by one worker (partitions
//! handed out round-robin), a worker runs `slots` jobs at once, new workers
//! take `startup_secs` to join, and every change of membership pauses
//! consumption for a rebalance. Every period the policy code itself
//! ([`crate::policy::decide`]) decides; partitions grow ahead of workers.

use serde::Serialize;
use std::collections::VecDeque;

use crate::policy::{decide, partitions_for, History, Observed, PolicyConfig};
use kumulus_core::observation::ScalingDecision;
pub use kumulus_core::placement::least_backlog;

/// One job of a trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceJob {
    pub arrival_secs: f64,
    pub service_secs: f64,
}

/// Reads a trace: CSV with the header `arrival_secs,service_secs`, one job a row.
pub fn read_trace(text: &str) -> Result<Vec<TraceJob>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        Some((_, h)) if h.trim().replace(' ', "") == "arrival_secs,service_secs" => {}
        _ => return Err("line 1: the header must be `arrival_secs,service_secs`".into()),
    }
    let mut jobs = Vec::new();
    for (i, line) in lines {
        let mut cols = line.split(',').map(str::trim);
        let parse = |v: Option<&str>, what: &str| -> Result<f64, String> {
            let v = v.ok_or_else(|| format!("line {}: no {what}", i + 1))?;
            let x: f64 = v
                .parse()
                .map_err(|_| format!("line {}: {what} `{v}` is not a number", i + 1))?;
            if !x.is_finite() || x < 0.0 {
                return Err(format!("line {}: {what} must be a number >= 0", i + 1));
            }
            Ok(x)
        };
        let arrival_secs = parse(cols.next(), "arrival_secs")?;
        let service_secs = parse(cols.next(), "service_secs")?;
        if cols.next().is_some() {
            return Err(format!("line {}: more than two columns", i + 1));
        }
        jobs.push(TraceJob {
            arrival_secs,
            service_secs,
        });
    }
    if jobs.is_empty() {
        return Err("the trace has no jobs".into());
    }
    jobs.sort_by(|a, b| a.arrival_secs.total_cmp(&b.arrival_secs));
    Ok(jobs)
}

/// How jobs wait for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueModel {
    /// Kafka: a job lands on one partition and waits for that partition's
    /// owner; each change of membership pauses consumption (a rebalance).
    #[default]
    Partitioned,
    /// `kumulus up`: one queue that any free slot takes the oldest job
    /// from; slots come and go without a pause.
    Shared,
}

impl std::str::FromStr for QueueModel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "partitioned" => Ok(Self::Partitioned),
            "shared" => Ok(Self::Shared),
            other => Err(format!(
                "unknown queue model `{other}`: use `partitioned` (Kafka) or `shared` (kumulus up)"
            )),
        }
    }
}

/// How the producer picks a job's partition (partitioned queue only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// A hash of the job: the frontend's `kafka.placement = "hash"`.
    #[default]
    Hash,
    /// The partition whose owner has the least backlog (jobs waiting or
    /// running there) in the autoscaler's last lag reading, counting the
    /// jobs placed since; ties round-robin: the frontend's
    /// `kafka.placement = "least-backlog"`.
    LeastBacklog,
}

impl std::str::FromStr for Placement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "least-backlog" => Ok(Self::LeastBacklog),
            "hash" => Ok(Self::Hash),
            other => Err(format!(
                "unknown placement `{other}`: use `least-backlog` or `hash`"
            )),
        }
    }
}

/// Where the frontend places jobs: the lag it knows (as of the autoscaler's
/// last decision) plus what it placed since.
struct Placer {
    kind: Placement,
    known: Vec<u64>,
    members: usize,
    placed: Vec<u64>,
    next: usize,
}

impl Placer {
    fn pick(&mut self, job: usize, partitions: usize) -> usize {
        if self.kind == Placement::Hash {
            return partition_of(job, partitions);
        }
        self.known.resize(partitions, 0);
        self.placed.resize(partitions, 0);
        let q = least_backlog(&self.known, &self.placed, self.members, self.next);
        self.placed[q] += 1;
        self.next = q + 1;
        q
    }

    /// A new lag reading: what was placed is in it now.
    fn refresh(&mut self, lag: Vec<u64>, members: usize) {
        self.placed = vec![0; lag.len()];
        self.known = lag;
        self.members = members;
    }
}

/// The simulation's settings beyond the policy's: what the system does,
/// where the policy's settings say what the policy assumes.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub policy: PolicyConfig,
    /// Consumption stops this long whenever the group's membership changes
    /// (partitioned queue only).
    pub rebalance_secs: f64,
    /// Time a job holds its slot beyond its service time (clone, sandbox,
    /// collecting its files). The policy sees it in the run times, as live,
    /// where the autoscaler times a job from its start event to its final
    /// one.
    pub overhead_secs: f64,
    /// Time a slot stays taken after its job ended, before it can start
    /// the next one (the final event, the next job's fetch and start). The
    /// policy does not see it in the run times.
    pub handover_secs: f64,
    pub queue: QueueModel,
    /// When the first decision falls, from the trace's t=0 (the autoscaler
    /// started before the load did); the next ones follow every period.
    /// None: one period in.
    pub first_decision_secs: Option<f64>,
    /// How long a new worker takes to its first job, where the policy's
    /// `startup_secs` is what it assumes. None: the policy's.
    pub ready_secs: Option<f64>,
    pub placement: Placement,
    /// Partitions the jobs topic has from the start (a broker that cannot
    /// add any was given them up front); None: the policy's own count.
    pub partitions: Option<u32>,
}

impl SimConfig {
    /// The partitioned model with the policy's own assumptions.
    pub fn new(policy: PolicyConfig, rebalance_secs: f64) -> Self {
        Self {
            policy,
            rebalance_secs,
            overhead_secs: 0.0,
            handover_secs: 0.0,
            queue: QueueModel::Partitioned,
            first_decision_secs: None,
            ready_secs: None,
            placement: Placement::default(),
            partitions: None,
        }
    }
}

/// A moment of the run, at each decision.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t: f64,
    pub workers: u32,
    pub ready: u32,
    pub waiting: u64,
    pub running: u64,
    pub partitions: u32,
}

/// What a run achieved.
#[derive(Debug, Clone, Serialize)]
pub struct SimResult {
    pub jobs: usize,
    pub wait_p50_secs: f64,
    pub wait_p95_secs: f64,
    pub wait_max_secs: f64,
    pub slo_violation_pct: f64,
    pub worker_seconds: f64,
    pub scale_events: u32,
    /// Scale events per hour of the run (from the first arrival to the
    /// last job's end).
    pub scale_events_per_hour: f64,
    pub max_workers: u32,
    /// The sum of the jobs' run times: the floor of worker-seconds that no
    /// policy can go below.
    pub work_seconds: f64,
    #[serde(skip)]
    pub timeline: Vec<Sample>,
    /// (arrival, wait) of every job.
    #[serde(skip)]
    pub waits: Vec<(f64, f64)>,
    /// Every decision, in order.
    #[serde(skip)]
    pub decisions: Vec<ScalingDecision>,
}

struct Worker {
    id: u64,
    ready_at: f64,
    leaving: bool,
    /// The jobs it runs.
    running: Vec<Running>,
    /// When its slots whose jobs ended are free again (the hand-over).
    settling: Vec<f64>,
}

/// A job on its worker.
struct Running {
    end: f64,
    partition: usize,
    /// Its time on the worker, which the policy reads when it ends.
    held_secs: f64,
}

impl Worker {
    /// Slots taken: by a job, or by the hand-over after one.
    fn busy(&self) -> usize {
        self.running.len() + self.settling.len()
    }
}

/// The producer's partitioner: a hash of the job, modulo the partitions.
fn partition_of(job: usize, partitions: usize) -> usize {
    let mut x = job as u64 ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % partitions.max(1) as u64) as usize
}

const EPS: f64 = 1e-9;

/// Replays `trace` through the configured policy.
pub fn simulate(trace: &[TraceJob], cfg: &SimConfig) -> SimResult {
    let p = &cfg.policy;
    let slots = p.slots.max(1) as usize;
    let period = p.period_secs.max(0.1);
    let initial = p.min_workers.max(1).min(p.max_workers.max(1));
    let mut next_id = 0u64;
    let mut new_worker = |ready_at: f64| {
        next_id += 1;
        Worker {
            id: next_id,
            ready_at,
            leaving: false,
            running: Vec::new(),
            settling: Vec::new(),
        }
    };
    let shared = cfg.queue == QueueModel::Shared;
    let rebalance_secs = if shared {
        0.0
    } else {
        cfg.rebalance_secs.max(0.0)
    };
    let ready_secs = cfg.ready_secs.unwrap_or(p.startup_secs).max(0.0);
    let overhead = cfg.overhead_secs.max(0.0);
    let handover = cfg.handover_secs.max(0.0);
    let mut workers: Vec<Worker> = (0..initial).map(|_| new_worker(0.0)).collect();
    // The shared queue is one partition that every worker reads.
    let mut partitions = if shared {
        1
    } else {
        partitions_for(p, initial, cfg.partitions.unwrap_or(1)) as usize
    };
    let mut queues: Vec<VecDeque<usize>> = vec![VecDeque::new(); partitions];
    let mut placer = Placer {
        kind: cfg.placement,
        known: vec![0; partitions],
        members: initial as usize,
        placed: vec![0; partitions],
        next: 0,
    };
    let mut starts: Vec<Option<f64>> = vec![None; trace.len()];
    let mut history = History::default();
    let mut result_decisions = Vec::new();
    let mut timeline = Vec::new();

    let mut t = 0.0f64;
    let mut next_arrival = 0usize;
    let mut next_decision = cfg.first_decision_secs.unwrap_or(period).max(0.0);
    let mut paused_until = 0.0f64;
    // Ids of the group's members: ready, not leaving.
    let mut members: Vec<u64> = workers.iter().map(|w| w.id).collect();
    let mut worker_seconds = 0.0;
    let mut scale_events = 0u32;
    let mut max_workers = initial;
    // Period counters.
    let (mut arrivals, mut services, mut finished) = (0u64, 0u64, 0u64);
    let mut finished_secs: Vec<f64> = Vec::new();
    let mut done = 0usize;

    while done < trace.len() {
        // Next event: an arrival, a job's end, a worker becoming ready, the
        // end of a rebalance pause, or a decision.
        let mut next = next_decision;
        if next_arrival < trace.len() {
            next = next.min(trace[next_arrival].arrival_secs);
        }
        for w in &workers {
            if w.ready_at > t {
                next = next.min(w.ready_at);
            }
            for r in &w.running {
                next = next.min(r.end);
            }
            for &free in &w.settling {
                next = next.min(free);
            }
        }
        if paused_until > t {
            next = next.min(paused_until);
        }
        let next = next.max(t);
        worker_seconds += (next - t) * workers.len() as f64;
        t = next;

        // Jobs end.
        for w in workers.iter_mut() {
            w.settling.retain(|&free| free > t + EPS);
            let before = w.running.len();
            // The policy learns a run time when the job ends, as live,
            // where it is the time from the job's start event to its final one.
            w.running.retain(|r| {
                let ends = r.end <= t + EPS;
                if ends {
                    finished_secs.push(r.held_secs);
                }
                !ends
            });
            let n = before - w.running.len();
            if handover > EPS {
                w.settling.extend(std::iter::repeat_n(t + handover, n));
            }
            finished += n as u64;
            done += n;
        }
        // Arrivals.
        while next_arrival < trace.len() && trace[next_arrival].arrival_secs <= t + EPS {
            let q = placer.pick(next_arrival, partitions);
            queues[q].push_back(next_arrival);
            arrivals += 1;
            next_arrival += 1;
        }
        // Leaving workers that are done go.
        workers.retain(|w| !(w.leaving && w.busy() == 0));
        // Decisions.
        if t + EPS >= next_decision {
            let running: u64 = workers.iter().map(|w| w.running.len() as u64).sum();
            let obs = Observed {
                now_secs: t,
                workers: workers.iter().filter(|w| !w.leaving).count() as u32,
                partitions: if shared { 0 } else { partitions as u32 },
                waiting_per_partition: queues.iter().map(|q| q.len() as u64).collect(),
                running,
                arrivals,
                services,
                finished,
                service_secs: std::mem::take(&mut finished_secs),
            };
            let d = decide(p, &history, &obs);
            let current = obs.workers;
            timeline.push(Sample {
                t,
                workers: current,
                ready: members.len() as u32,
                waiting: obs.waiting(),
                running,
                partitions: partitions as u32,
            });
            if d.desired != current {
                scale_events += 1;
                // Partitions first, ahead of the workers.
                let want = partitions_for(p, d.desired, partitions as u32) as usize;
                if !shared && want > partitions {
                    queues.resize(want, VecDeque::new());
                    partitions = want;
                    paused_until = paused_until.max(t + rebalance_secs);
                }
                if d.desired > current {
                    for _ in current..d.desired {
                        workers.push(new_worker(t + ready_secs));
                    }
                } else {
                    shrink(&mut workers, (current - d.desired) as usize, t);
                }
            }
            max_workers = max_workers.max(workers.len() as u32);
            // The autoscaler publishes the lag it read: jobs waiting or
            // running in each partition.
            let mut lag: Vec<u64> = queues.iter().map(|q| q.len() as u64).collect();
            lag.resize(partitions, 0);
            for w in &workers {
                for r in &w.running {
                    lag[r.partition] += 1;
                }
            }
            placer.refresh(lag, members.len());
            let at_ms = (t * 1000.0).round() as i64;
            result_decisions.push(crate::decisions::record(&obs, &d, current, at_ms));
            history.record(obs, &d);
            arrivals = 0;
            services = 0;
            finished = 0;
            next_decision += period;
        }
        // A change of the group's members (a worker joined or left) pauses
        // consumption for a rebalance.
        let now_members: Vec<u64> = workers
            .iter()
            .filter(|w| w.ready_at <= t + EPS && !w.leaving)
            .map(|w| w.id)
            .collect();
        if now_members != members {
            paused_until = paused_until.max(t + rebalance_secs);
            members = now_members;
        }
        let member_index: Vec<usize> = workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.ready_at <= t + EPS && !w.leaving)
            .map(|(i, _)| i)
            .collect();
        let assignment = if shared {
            member_index.iter().map(|&w| (w, vec![0])).collect()
        } else {
            assign(partitions, &member_index)
        };
        // Free slots take the oldest job at the head of their partitions.
        if t + EPS >= paused_until {
            for (slot_owner, parts) in assignment.iter() {
                let w = &mut workers[*slot_owner];
                while w.busy() < slots {
                    let pick = parts
                        .iter()
                        .filter_map(|&q| queues[q].front().map(|&j| (q, j)))
                        .min_by(|a, b| trace[a.1].arrival_secs.total_cmp(&trace[b.1].arrival_secs));
                    let Some((q, j)) = pick else { break };
                    queues[q].pop_front();
                    starts[j] = Some(t);
                    services += 1;
                    // The run time the policy reads, as live: the job's
                    // time on its worker.
                    let held_secs = trace[j].service_secs + overhead;
                    w.running.push(Running {
                        end: t + held_secs.max(EPS),
                        partition: q,
                        held_secs,
                    });
                }
            }
        }
    }

    let mut waits: Vec<(f64, f64)> = trace
        .iter()
        .zip(&starts)
        .map(|(j, s)| (j.arrival_secs, s.unwrap_or(t) - j.arrival_secs))
        .collect();
    let mut sorted: Vec<f64> = waits.iter().map(|w| w.1).collect();
    sorted.sort_by(f64::total_cmp);
    let q = |f: f64| sorted[((sorted.len() as f64 - 1.0) * f).round() as usize];
    let over = sorted
        .iter()
        .filter(|&&w| w > p.slo_wait_secs + EPS)
        .count();
    waits.sort_by(|a, b| a.0.total_cmp(&b.0));
    SimResult {
        jobs: trace.len(),
        wait_p50_secs: q(0.5),
        wait_p95_secs: q(0.95),
        wait_max_secs: *sorted.last().unwrap_or(&0.0),
        slo_violation_pct: 100.0 * over as f64 / trace.len() as f64,
        worker_seconds,
        scale_events,
        scale_events_per_hour: per_hour(scale_events, t),
        max_workers,
        work_seconds: trace.iter().map(|j| j.service_secs).sum(),
        timeline,
        waits,
        decisions: result_decisions,
    }
}

/// `events` over `secs` seconds, per hour (0 over no time).
pub fn per_hour(events: u32, secs: f64) -> f64 {
    if secs > 0.0 {
        events as f64 * 3600.0 / secs
    } else {
        0.0
    }
}

/// Partitions of each member, round-robin: member k reads k, k + M, ...
fn assign(partitions: usize, members: &[usize]) -> Vec<(usize, Vec<usize>)> {
    if members.is_empty() {
        return Vec::new();
    }
    members
        .iter()
        .enumerate()
        .map(|(k, &w)| (w, (k..partitions).step_by(members.len()).collect()))
        .collect()
}

/// Removes `n` workers: those still starting first, then idle ones, then
/// busy ones (which stop taking jobs and leave when their jobs end).
fn shrink(workers: &mut Vec<Worker>, mut n: usize, t: f64) {
    let mut order: Vec<usize> = (0..workers.len())
        .filter(|&i| !workers[i].leaving)
        .collect();
    order.sort_by_key(|&i| {
        let w = &workers[i];
        (
            if w.ready_at > t {
                0
            } else if w.busy() == 0 {
                1
            } else {
                2
            },
            std::cmp::Reverse(i),
        )
    });
    let mut remove = Vec::new();
    for i in order {
        if n == 0 {
            break;
        }
        if workers[i].ready_at > t || workers[i].busy() == 0 {
            remove.push(i);
        } else {
            workers[i].leaving = true;
        }
        n -= 1;
    }
    remove.sort_unstable_by(|a, b| b.cmp(a));
    for i in remove {
        workers.remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyKind;

    fn cfg(policy: PolicyKind) -> SimConfig {
        SimConfig::new(
            PolicyConfig {
                policy,
                period_secs: 5.0,
                slo_wait_secs: 20.0,
                startup_secs: 5.0,
                ..PolicyConfig::default()
            },
            1.0,
        )
    }

    #[test]
    fn reads_traces_and_refuses_bad_ones() {
        let t = read_trace("arrival_secs,service_secs\n1,2\n0.5, 3\n").unwrap();
        assert_eq!(
            t,
            vec![
                TraceJob {
                    arrival_secs: 0.5,
                    service_secs: 3.0
                },
                TraceJob {
                    arrival_secs: 1.0,
                    service_secs: 2.0
                }
            ]
        );
        for bad in [
            "a,b\n1,2\n",
            "arrival_secs,service_secs\n",
            "arrival_secs,service_secs\n1,x\n",
            "arrival_secs,service_secs\n-1,2\n",
            "arrival_secs,service_secs\n1,2,3\n",
        ] {
            assert!(read_trace(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_job_on_an_idle_worker_starts_at_once() {
        let trace = [TraceJob {
            arrival_secs: 1.0,
            service_secs: 2.0,
        }];
        let r = simulate(&trace, &cfg(PolicyKind::Kumulus));
        assert_eq!(r.jobs, 1);
        assert_eq!(r.wait_max_secs, 0.0);
        assert_eq!(r.slo_violation_pct, 0.0);
        assert!(r.worker_seconds >= 3.0);
    }

    #[test]
    fn a_burst_makes_the_kumulus_policy_scale_up_and_back() {
        let trace: Vec<TraceJob> = (0..60)
            .map(|_| TraceJob {
                arrival_secs: 2.0,
                service_secs: 3.0,
            })
            .collect();
        let r = simulate(&trace, &cfg(PolicyKind::Kumulus));
        assert!(r.max_workers > 3, "{r:?}");
        assert!(r.scale_events >= 1);
        // One worker alone would have made the last job wait 59 * 3 s.
        assert!(r.wait_max_secs < 59.0 * 3.0);
        let last = r.timeline.last().unwrap();
        assert!(last.workers <= r.max_workers);
    }

    #[test]
    fn the_model_holds_slots_for_the_overhead_and_times_decisions_as_told() {
        // Ten 2 s jobs at once on one fixed worker: each holds it 2 s plus
        // the overhead.
        let trace: Vec<TraceJob> = (0..10)
            .map(|_| TraceJob {
                arrival_secs: 0.0,
                service_secs: 2.0,
            })
            .collect();
        let fixed = PolicyConfig {
            policy: PolicyKind::Lag,
            min_workers: 1,
            max_workers: 1,
            period_secs: 5.0,
            ..PolicyConfig::default()
        };
        // And a hand-over keeps the slot a while after each job's end.
        for (queue, overhead, handover, last_wait) in [
            (QueueModel::Partitioned, 0.0, 0.0, 18.0),
            (QueueModel::Partitioned, 0.5, 0.0, 22.5),
            (QueueModel::Shared, 0.5, 0.0, 22.5),
            (QueueModel::Partitioned, 0.5, 0.3, 9.0 * 2.8),
            (QueueModel::Shared, 0.0, 1.0, 27.0),
        ] {
            let cfg = SimConfig {
                overhead_secs: overhead,
                handover_secs: handover,
                queue,
                ..SimConfig::new(fixed.clone(), 3.0)
            };
            let r = simulate(&trace, &cfg);
            assert!(
                (r.wait_max_secs - last_wait).abs() < 1e-6,
                "{queue:?} {overhead} {handover}: {r:?}"
            );
        }
        // Decisions fall every period from the first one given.
        let cfg = SimConfig {
            first_decision_secs: Some(1.5),
            ..SimConfig::new(fixed.clone(), 3.0)
        };
        let r = simulate(&trace, &cfg);
        let times: Vec<f64> = r
            .decisions
            .iter()
            .map(|d| d.timestamp as f64 / 1000.0)
            .take(3)
            .collect();
        assert_eq!(times, [1.5, 6.5, 11.5]);
    }

    #[test]
    fn the_policy_learns_a_run_time_when_its_job_ends_as_live() {
        // One 100 s job: until it ends, the policy has no run time and
        // assumes a period (5 s); from its end on, it knows 100 s.
        let trace = [TraceJob {
            arrival_secs: 0.0,
            service_secs: 100.0,
        }];
        let r = simulate(&trace, &cfg(PolicyKind::Kumulus));
        let reason_at = |at: f64| {
            r.decisions
                .iter()
                .find(|d| (d.timestamp as f64 / 1000.0 - at).abs() < 1e-6)
                .map(|d| d.reason.clone())
                .unwrap_or_else(|| panic!("no decision at {at}: {:?}", r.decisions))
        };
        assert!(
            reason_at(5.0).contains("run time 5.00 s"),
            "{}",
            reason_at(5.0)
        );
        assert!(
            reason_at(95.0).contains("run time 5.00 s"),
            "{}",
            reason_at(95.0)
        );
        assert!(
            reason_at(100.0).contains("run time 100.00 s"),
            "{}",
            reason_at(100.0)
        );
    }

    #[test]
    fn a_shared_queue_feeds_every_slot_without_a_rebalance() {
        // A burst on two workers that the policy cannot change: with
        // partitions the jobs split by the hash and a membership change
        // pauses; with one shared queue the two slots just share the work.
        let trace: Vec<TraceJob> = (0..40)
            .map(|_| TraceJob {
                arrival_secs: 0.0,
                service_secs: 1.0,
            })
            .collect();
        let two = PolicyConfig {
            policy: PolicyKind::Lag,
            min_workers: 2,
            max_workers: 2,
            startup_secs: 0.0,
            ..PolicyConfig::default()
        };
        let shared = SimConfig {
            queue: QueueModel::Shared,
            ..SimConfig::new(two.clone(), 3.0)
        };
        let r = simulate(&trace, &shared);
        // 40 one-second jobs on two slots: the last starts at 19 s.
        assert!((r.wait_max_secs - 19.0).abs() < 1e-6, "{r:?}");
        assert!(r.timeline.iter().all(|s| s.partitions == 1));
        // A new worker in the shared model is ready after ready_secs, not
        // the policy's assumed start-up.
        let grow = PolicyConfig {
            policy: PolicyKind::Lag,
            min_workers: 1,
            max_workers: 4,
            lag_threshold: 1.0,
            period_secs: 1.0,
            startup_secs: 30.0,
            ..PolicyConfig::default()
        };
        let assumed = simulate(
            &trace,
            &SimConfig {
                queue: QueueModel::Shared,
                ..SimConfig::new(grow.clone(), 0.0)
            },
        );
        let instant = simulate(
            &trace,
            &SimConfig {
                queue: QueueModel::Shared,
                ready_secs: Some(0.0),
                ..SimConfig::new(grow, 0.0)
            },
        );
        assert!(
            instant.wait_max_secs < assumed.wait_max_secs,
            "{instant:?} vs {assumed:?}"
        );
    }

    #[test]
    fn placing_by_backlog_waits_less_than_hashing_on_the_same_workers() {
        // Four fixed workers, a steady load of 10 s jobs at 70% of them.
        let trace: Vec<TraceJob> = (0..600)
            .map(|i| TraceJob {
                arrival_secs: i as f64 * 3.6,
                service_secs: if i % 3 == 0 { 20.0 } else { 5.0 },
            })
            .collect();
        let four = PolicyConfig {
            policy: PolicyKind::Lag,
            min_workers: 4,
            max_workers: 4,
            ..PolicyConfig::default()
        };
        let run = |placement| {
            simulate(
                &trace,
                &SimConfig {
                    placement,
                    ..SimConfig::new(four.clone(), 3.0)
                },
            )
        };
        let (hash, least) = (run(Placement::Hash), run(Placement::LeastBacklog));
        assert_eq!((hash.jobs, least.jobs), (600, 600));
        assert!(
            least.wait_p95_secs < hash.wait_p95_secs && least.wait_max_secs < hash.wait_max_secs,
            "least backlog {least:?}, hash {hash:?}"
        );
    }

    #[test]
    fn a_topic_made_with_more_partitions_starts_with_them() {
        let trace: Vec<TraceJob> = (0..20)
            .map(|i| TraceJob {
                arrival_secs: i as f64 * 3.0,
                service_secs: 1.0,
            })
            .collect();
        let own = simulate(&trace, &cfg(PolicyKind::Kumulus));
        let given = simulate(
            &trace,
            &SimConfig {
                partitions: Some(64),
                ..cfg(PolicyKind::Kumulus)
            },
        );
        assert!(own.timeline[0].partitions < 64, "{:?}", own.timeline[0]);
        assert_eq!(given.timeline[0].partitions, 64);
    }

    #[test]
    fn scale_events_are_counted_per_hour_and_the_work_is_the_run_times() {
        assert_eq!(per_hour(3, 1800.0), 6.0);
        assert_eq!(per_hour(3, 0.0), 0.0);
        let trace: Vec<TraceJob> = (0..10)
            .map(|i| TraceJob {
                arrival_secs: i as f64,
                service_secs: 2.5,
            })
            .collect();
        let r = simulate(&trace, &cfg(PolicyKind::Kumulus));
        assert!((r.work_seconds - 25.0).abs() < 1e-9, "{r:?}");
        assert!(r.worker_seconds >= r.work_seconds);
    }

    #[test]
    fn runs_are_deterministic() {
        let trace: Vec<TraceJob> = (0..200)
            .map(|i| TraceJob {
                arrival_secs: i as f64 * 0.7,
                service_secs: 1.0 + (i % 5) as f64,
            })
            .collect();
        let a = simulate(&trace, &cfg(PolicyKind::Lag));
        let b = simulate(&trace, &cfg(PolicyKind::Lag));
        assert_eq!(a.worker_seconds, b.worker_seconds);
        assert_eq!(a.wait_p95_secs, b.wait_p95_secs);
    }
}

#[cfg(test)]
mod shipped_traces {
    use super::*;
    use crate::policy::PolicyKind;

    fn trace(name: &str) -> Vec<TraceJob> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("traces")
            .join(format!("{name}.csv"));
        read_trace(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn the_kumulus_policy_meets_a_60_s_slo_on_every_shipped_trace() {
        for name in ["steady", "step", "burst", "diurnal", "heavy-tailed"] {
            let cfg = SimConfig::new(
                PolicyConfig {
                    policy: PolicyKind::Kumulus,
                    slo_wait_secs: 60.0,
                    ..PolicyConfig::default()
                },
                3.0,
            );
            let r = simulate(&trace(name), &cfg);
            assert!(r.slo_violation_pct <= 5.0, "{name}: {r:?}");
        }
    }

    #[test]
    fn the_seed_rule_flaps_and_misses_the_slo() {
        let cfg = SimConfig::new(
            PolicyConfig {
                policy: PolicyKind::Seed,
                slo_wait_secs: 60.0,
                ..PolicyConfig::default()
            },
            3.0,
        );
        let r = simulate(&trace("steady"), &cfg);
        assert!(r.slo_violation_pct > 5.0, "{r:?}");
        assert!(r.scale_events > 50, "{r:?}");
    }
}
