//! A job's limits and how they are enforced. The limits are the worker's
//! (`worker.*`) lowered by what the job asked for; memory, processes and
//! CPU are enforced with cgroups where writable ([`crate::cgroup`]) and with
//! setrlimit otherwise; time, log and output limits apply everywhere.

use std::path::Path;

use kumulus_core::config::Config;
use kumulus_core::job::JobLimits;

use crate::cgroup::{self, Hierarchy, JobGroup};

/// The limits one job runs under.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpus: f64,
    pub pids: u64,
    pub log_limit_bytes: u64,
    pub output_limit_bytes: u64,
    pub output_max_files: usize,
}

impl Limits {
    /// The worker's own limits, from `worker.*`.
    pub fn from_config(cfg: &Config) -> Self {
        let c = cfg.ceilings();
        Self {
            memory_bytes: c.memory_mb * MIB,
            cpus: c.cpus,
            pids: c.pids,
            log_limit_bytes: c.log_limit_bytes,
            output_limit_bytes: c.output_limit_bytes,
            output_max_files: c.output_max_files as usize,
        }
    }

    /// These limits lowered by a job's own (never raised by them).
    pub fn lowered_by(&self, job: &JobLimits) -> Self {
        let min = |own: u64, asked: Option<u64>| asked.map_or(own, |a| a.min(own));
        Self {
            memory_bytes: min(self.memory_bytes, job.memory_mb.map(|m| m * MIB)),
            cpus: job.cpus.map_or(self.cpus, |c| c.min(self.cpus)),
            pids: min(self.pids, job.pids),
            log_limit_bytes: min(self.log_limit_bytes, job.log_limit_bytes),
            output_limit_bytes: min(self.output_limit_bytes, job.output_limit_bytes),
            output_max_files: min(self.output_max_files as u64, job.output_max_files) as usize,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// How memory, process and CPU limits are enforced on this machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Enforcer {
    Cgroup(Hierarchy),
    /// setrlimit: memory as the data segment (which counts what malloc and
    /// mmap hand out), CPU as CPU-seconds per process. There is no
    /// per-job process limit without cgroups.
    Rlimit,
}

impl Enforcer {
    /// Kills what an interrupted job `name` left in its cgroups.
    pub fn remove_stale(&self, name: &str) {
        if let Enforcer::Cgroup(h) = self {
            h.remove_stale(name);
        }
    }

    /// From `worker.limit_by`: `auto` takes cgroups where writable,
    /// `cgroup` insists on them, `rlimit` never uses them.
    pub fn choose(limit_by: &str) -> Result<Self, String> {
        match (limit_by, cgroup::detect()) {
            ("rlimit", _) => Ok(Enforcer::Rlimit),
            (_, Some(h)) => {
                if !h.limits_cpu() {
                    tracing::warn!(
                        "the cgroup cpu controller is not writable: jobs get no CPU quota"
                    );
                }
                Ok(Enforcer::Cgroup(h))
            }
            ("cgroup", None) => {
                Err("worker.limit_by = cgroup, but no cgroup hierarchy is writable here".into())
            }
            _ => {
                tracing::warn!("no writable cgroup hierarchy: memory and CPU limits fall back to setrlimit, and jobs have no process limit");
                Ok(Enforcer::Rlimit)
            }
        }
    }

    /// The confinement of one job, named `name`, with `time_limit_secs`
    /// (the setrlimit CPU budget is cpus x the time limit).
    pub fn confine(
        &self,
        name: &str,
        limits: &Limits,
        time_limit_secs: u64,
    ) -> std::io::Result<Confinement> {
        match self {
            Enforcer::Cgroup(h) => Ok(Confinement::Cgroup(JobGroup::create(
                h,
                name,
                limits.memory_bytes,
                limits.pids,
                limits.cpus,
            )?)),
            Enforcer::Rlimit => Ok(Confinement::Rlimit {
                memory_bytes: limits.memory_bytes,
                cpu_secs: cpu_seconds(limits.cpus, time_limit_secs),
            }),
        }
    }
}

/// The CPU-seconds a job may use at `cpus` CPUs for its whole time limit.
pub fn cpu_seconds(cpus: f64, time_limit_secs: u64) -> u64 {
    ((cpus * time_limit_secs as f64).ceil() as u64).max(1)
}

/// One job's limits, in force from its first instruction.
pub enum Confinement {
    Cgroup(JobGroup),
    Rlimit { memory_bytes: u64, cpu_secs: u64 },
}

/// How a confined job ended, as far as its limits go.
pub struct Ending<'a> {
    /// The signal that ended the job's first process, or its exit code.
    pub signal: Option<i32>,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub stderr: &'a Path,
}

impl Confinement {
    /// Makes `cmd`'s process enter the confinement between fork and exec.
    /// The returned files must stay open until the command is spawned.
    pub fn enter_on_spawn(
        &self,
        cmd: &mut tokio::process::Command,
    ) -> std::io::Result<Vec<std::fs::File>> {
        match self {
            Confinement::Cgroup(group) => group.enter_on_spawn(cmd),
            Confinement::Rlimit {
                memory_bytes,
                cpu_secs,
            } => {
                set_rlimits(cmd, *memory_bytes, *cpu_secs);
                Ok(Vec::new())
            }
        }
    }

    /// The limit the job ran into, in words for its `error`, if it did.
    pub fn verdict(&self, end: &Ending) -> Option<String> {
        match self {
            Confinement::Cgroup(group) => {
                if let Some(hit) = group.hit() {
                    return Some(hit.to_string());
                }
                (end.timed_out && group.throttled()).then(|| {
                    "the job ran longer than its time limit, held to its CPU share (worker.cpus)"
                        .to_string()
                })
            }
            Confinement::Rlimit {
                memory_bytes,
                cpu_secs,
            } => {
                // SIGXCPU, directly or as the exit status of the shell
                // that ran the script.
                let sigxcpu = libc::SIGXCPU;
                if end.signal == Some(sigxcpu) || end.exit_code == Some(128 + sigxcpu) {
                    return Some(format!(
                        "the job used up its {cpu_secs} CPU-seconds (worker.cpus x the time limit)"
                    ));
                }
                let failed = end.signal.is_some() || end.exit_code.is_some_and(|c| c != 0);
                (failed && ran_out_of_memory(end.stderr)).then(|| {
                    format!(
                        "the job ran out of memory ({} MiB, worker.memory_mb)",
                        memory_bytes / MIB
                    )
                })
            }
        }
    }
}

/// Whether the end of a failed job's stderr says an allocation failed
/// (what node, the C library and most runtimes print when setrlimit
/// refuses memory).
fn ran_out_of_memory(stderr: &Path) -> bool {
    let text = std::fs::read(stderr).unwrap_or_default();
    let tail = &text[text.len().saturating_sub(64 * 1024)..];
    let tail = String::from_utf8_lossy(tail).to_ascii_lowercase();
    [
        "out of memory",
        "allocation failed",
        "cannot allocate memory",
        "memoryerror",
        "bad_alloc",
    ]
    .iter()
    .any(|p| tail.contains(p))
}

#[allow(unsafe_code)]
fn set_rlimits(cmd: &mut tokio::process::Command, memory_bytes: u64, cpu_secs: u64) {
    let data = libc::rlimit {
        rlim_cur: memory_bytes as libc::rlim_t,
        rlim_max: memory_bytes as libc::rlim_t,
    };
    // SIGXCPU at the soft limit, SIGKILL a little later at the hard one.
    let cpu = libc::rlimit {
        rlim_cur: cpu_secs as libc::rlim_t,
        rlim_max: (cpu_secs + 2) as libc::rlim_t,
    };
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setrlimit(2), which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_DATA, &data) != 0
                || libc::setrlimit(libc::RLIMIT_CPU, &cpu) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> Limits {
        Limits {
            memory_bytes: 512 * MIB,
            cpus: 2.0,
            pids: 100,
            log_limit_bytes: 10_000,
            output_limit_bytes: 1_000_000,
            output_max_files: 50,
        }
    }

    #[test]
    fn a_job_lowers_limits_and_never_raises_them() {
        let table = [
            (JobLimits::default(), worker()),
            (
                JobLimits {
                    memory_mb: Some(64),
                    cpus: Some(0.5),
                    pids: Some(10),
                    log_limit_bytes: Some(2048),
                    output_limit_bytes: Some(10),
                    output_max_files: Some(1),
                },
                Limits {
                    memory_bytes: 64 * MIB,
                    cpus: 0.5,
                    pids: 10,
                    log_limit_bytes: 2048,
                    output_limit_bytes: 10,
                    output_max_files: 1,
                },
            ),
            (
                JobLimits {
                    memory_mb: Some(4096),
                    cpus: Some(8.0),
                    pids: Some(1000),
                    log_limit_bytes: Some(1 << 30),
                    output_limit_bytes: Some(1 << 40),
                    output_max_files: Some(10_000),
                },
                worker(),
            ),
        ];
        for (job, want) in table {
            assert_eq!(worker().lowered_by(&job), want, "{job:?}");
        }
    }

    #[test]
    fn cpu_budgets() {
        assert_eq!(cpu_seconds(1.0, 600), 600);
        assert_eq!(cpu_seconds(0.5, 3), 2);
        assert_eq!(cpu_seconds(0.01, 1), 1);
        assert_eq!(cgroup::cpu_quota_us(0.5), 50_000);
        assert_eq!(cgroup::cpu_quota_us(2.0), 200_000);
        assert_eq!(cgroup::cpu_quota_us(0.001), 1000);
    }

    #[test]
    fn out_of_memory_is_read_from_the_end_of_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("stderr.log");
        std::fs::write(&f, "RangeError: Array buffer allocation failed\n").unwrap();
        assert!(ran_out_of_memory(&f));
        std::fs::write(&f, "TypeError: x is not a function\n").unwrap();
        assert!(!ran_out_of_memory(&f));
        assert!(!ran_out_of_memory(&dir.path().join("missing")));
    }
}
