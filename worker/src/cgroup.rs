//! Memory, process and CPU limits for a job, with cgroups: v2 where the
//! unified hierarchy has the controllers, else v1 (memory, pids and cpu
//! hierarchies). Where neither is writable, [`crate::limits`] falls back to
//! setrlimit.

use std::path::{Path, PathBuf};

/// Where the job groups are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified tree; `cpu` when its cpu controller could be enabled.
    V2 { base: PathBuf, cpu: bool },
    /// One tree per controller; cpu where that one is writable.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
    },
}

/// Length of a CPU quota period, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Whether a quota of `cpus` holds anything back on this machine. Joining a
/// v1 hierarchy costs a process start about 12 ms here (the kernel waits for
/// an RCU grace period to move it), so the cpu one is joined only then.
fn quota_binds(cpus: f64) -> bool {
    // Read once: on Linux, available_parallelism reads the process's cgroup
    // files, which is no work for every job.
    static MACHINE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let machine =
        *MACHINE.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    cpus < machine as f64
}

/// The CPU quota per period for `cpus` CPUs.
pub fn cpu_quota_us(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000)
}

/// Finds a writable hierarchy and makes `kumulus/` in it.
pub fn detect() -> Option<Hierarchy> {
    let root = Path::new("/sys/fs/cgroup");
    let v2_controllers =
        std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    if v2_controllers.contains("memory") && v2_controllers.contains("pids") {
        let base = root.join("kumulus");
        if std::fs::create_dir_all(&base).is_ok()
            && std::fs::write(root.join("cgroup.subtree_control"), "+memory +pids").is_ok()
            && std::fs::write(base.join("cgroup.subtree_control"), "+memory +pids").is_ok()
        {
            let cpu = v2_controllers.contains("cpu")
                && std::fs::write(root.join("cgroup.subtree_control"), "+cpu").is_ok()
                && std::fs::write(base.join("cgroup.subtree_control"), "+cpu").is_ok();
            return Some(Hierarchy::V2 { base, cpu });
        }
    }
    let memory = root.join("memory").join("kumulus");
    let pids = root.join("pids").join("kumulus");
    if std::fs::create_dir_all(&memory).is_ok() && std::fs::create_dir_all(&pids).is_ok() {
        let cpu = root.join("cpu").join("kumulus");
        let cpu = std::fs::create_dir_all(&cpu).is_ok().then_some(cpu);
        return Some(Hierarchy::V1 { memory, pids, cpu });
    }
    None
}

impl Hierarchy {
    /// The folders a job group `name` has in this hierarchy.
    fn dirs_of(&self, name: &str) -> Vec<PathBuf> {
        match self {
            Hierarchy::V2 { base, .. } => vec![base.join(name)],
            Hierarchy::V1 { memory, pids, cpu } => {
                let mut dirs = vec![memory.join(name), pids.join(name)];
                dirs.extend(cpu.as_ref().map(|c| c.join(name)));
                dirs
            }
        }
    }

    /// Kills whatever an earlier run left in the job group `name` and
    /// removes the group (a worker that died mid-job).
    pub fn remove_stale(&self, name: &str) {
        for dir in self.dirs_of(name).into_iter().filter(|d| d.exists()) {
            tracing::warn!(group = %dir.display(), "killing what an interrupted job left in its cgroup");
            for _ in 0..100 {
                kill_members(&dir);
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// Whether jobs get a CPU quota here.
    pub fn limits_cpu(&self) -> bool {
        match self {
            Hierarchy::V2 { cpu, .. } => *cpu,
            Hierarchy::V1 { cpu, .. } => cpu.is_some(),
        }
    }
}

/// One job's group(s); removed (after killing what is left in them) on drop.
pub struct JobGroup {
    dirs: Vec<PathBuf>,
    memory_events: PathBuf,
    pids_events: PathBuf,
    cpu_stat: Option<PathBuf>,
    v2: bool,
}

impl JobGroup {
    /// Makes the group `name` with the limits.
    pub fn create(
        h: &Hierarchy,
        name: &str,
        memory_bytes: u64,
        pids: u64,
        cpus: f64,
    ) -> std::io::Result<Self> {
        match h {
            Hierarchy::V2 { base, cpu } => {
                let dir = base.join(name);
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("memory.max"), memory_bytes.to_string())?;
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                std::fs::write(dir.join("pids.max"), pids.to_string())?;
                let quota = *cpu && quota_binds(cpus);
                if quota {
                    std::fs::write(
                        dir.join("cpu.max"),
                        format!("{} {CPU_PERIOD_US}", cpu_quota_us(cpus)),
                    )?;
                }
                Ok(Self {
                    memory_events: dir.join("memory.events"),
                    pids_events: dir.join("pids.events"),
                    cpu_stat: quota.then(|| dir.join("cpu.stat")),
                    dirs: vec![dir],
                    v2: true,
                })
            }
            Hierarchy::V1 {
                memory,
                pids: pid_root,
                cpu,
            } => {
                let m = memory.join(name);
                let p = pid_root.join(name);
                std::fs::create_dir_all(&m)?;
                std::fs::create_dir_all(&p)?;
                std::fs::write(m.join("memory.limit_in_bytes"), memory_bytes.to_string())?;
                // Without swap too, where the kernel accounts it.
                let _ = std::fs::write(
                    m.join("memory.memsw.limit_in_bytes"),
                    memory_bytes.to_string(),
                );
                std::fs::write(p.join("pids.max"), pids.to_string())?;
                let mut dirs = vec![m.clone(), p.clone()];
                let mut cpu_stat = None;
                if let Some(cpu_root) = cpu.as_ref().filter(|_| quota_binds(cpus)) {
                    let c = cpu_root.join(name);
                    std::fs::create_dir_all(&c)?;
                    dirs.push(c.clone());
                    std::fs::write(c.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
                    std::fs::write(c.join("cpu.cfs_quota_us"), cpu_quota_us(cpus).to_string())?;
                    cpu_stat = Some(c.join("cpu.stat"));
                }
                Ok(Self {
                    memory_events: m.join("memory.oom_control"),
                    pids_events: p.join("pids.events"),
                    cpu_stat,
                    dirs,
                    v2: false,
                })
            }
        }
    }

    /// Makes `cmd`'s process join the group before it runs anything: the
    /// child writes "0" (itself) to each `cgroup.procs` between fork and
    /// exec, so nothing it starts can escape the limits.
    /// The returned files must stay open until the command is spawned.
    pub fn enter_on_spawn(
        &self,
        cmd: &mut tokio::process::Command,
    ) -> std::io::Result<Vec<std::fs::File>> {
        use std::os::fd::AsRawFd;
        let mut files = Vec::with_capacity(self.dirs.len());
        for dir in &self.dirs {
            // Opened close-on-exec: the job never inherits them.
            files.push(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))?,
            );
        }
        enter(cmd, files.iter().map(|f| f.as_raw_fd()).collect());
        Ok(files)
    }

    /// The limit the job ran into, if any, in words for its `error`.
    pub fn hit(&self) -> Option<&'static str> {
        let mem = std::fs::read_to_string(&self.memory_events).unwrap_or_default();
        let oom = mem.lines().any(|l| {
            let mut it = l.split_whitespace();
            match (it.next(), it.next()) {
                (Some("oom_kill"), Some(n)) => n != "0",
                (Some("oom"), Some(n)) if self.v2 => n != "0",
                _ => false,
            }
        });
        if oom {
            return Some("the job ran out of memory (worker.memory_mb)");
        }
        let pids = std::fs::read_to_string(&self.pids_events).unwrap_or_default();
        if pids
            .lines()
            .any(|l| l.starts_with("max ") && l.trim_end() != "max 0")
        {
            return Some("the job hit the process limit (worker.pids)");
        }
        None
    }

    /// Whether the CPU quota held the job back at least once.
    pub fn throttled(&self) -> bool {
        let Some(stat) = &self.cpu_stat else {
            return false;
        };
        std::fs::read_to_string(stat)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("nr_throttled ") && l.trim_end() != "nr_throttled 0")
    }
}

#[allow(unsafe_code)]
fn enter(cmd: &mut tokio::process::Command, fds: Vec<std::os::fd::RawFd>) {
    // SAFETY: the closure runs in the forked child before exec and only
    // calls write(2), which is async-signal-safe; it allocates nothing. The
    // caller keeps the descriptors open until the child is spawned.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

impl Drop for JobGroup {
    fn drop(&mut self) {
        // Whatever is left goes, then the group. A group the kernel still
        // counts a dying process in cannot be removed yet: those are retried
        // off the job's path, so the job's end does not wait for them.
        let mut busy = Vec::new();
        for dir in self.dirs.drain(..) {
            kill_members(&dir);
            if std::fs::remove_dir(&dir).is_err() && dir.exists() {
                busy.push(dir);
            }
        }
        if !busy.is_empty() {
            std::thread::spawn(move || {
                for dir in busy {
                    for _ in 0..100 {
                        kill_members(&dir);
                        if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                }
            });
        }
    }
}

fn kill_members(dir: &Path) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! This machine has only v1 controllers, so the v2 layout is checked
    //! against a folder laid out like a v2 group: the files written, their
    //! values, and how the kernel's event files are read.
    use super::*;

    #[test]
    fn a_v2_group_gets_its_limits_in_the_kernels_format() {
        let base = tempfile::tempdir().unwrap();
        let h = Hierarchy::V2 {
            base: base.path().to_path_buf(),
            cpu: true,
        };
        assert!(h.limits_cpu());
        let group = JobGroup::create(&h, "job-1", 64 * 1024 * 1024, 32, 0.5).unwrap();
        let dir = base.path().join("job-1");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("pids.max"), "32");
        assert_eq!(read("cpu.max"), "50000 100000");

        // What the kernel reports, as it reports it.
        assert_eq!(group.hit(), None);
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 12\noom 0\noom_kill 0\n",
        )
        .unwrap();
        std::fs::write(dir.join("pids.events"), "max 0\n").unwrap();
        std::fs::write(
            dir.join("cpu.stat"),
            "usage_usec 100\nnr_periods 4\nnr_throttled 0\n",
        )
        .unwrap();
        assert_eq!(group.hit(), None);
        assert!(!group.throttled());
        std::fs::write(
            dir.join("cpu.stat"),
            "usage_usec 100\nnr_periods 4\nnr_throttled 3\n",
        )
        .unwrap();
        assert!(group.throttled());
        std::fs::write(dir.join("pids.events"), "max 7\n").unwrap();
        assert_eq!(
            group.hit(),
            Some("the job hit the process limit (worker.pids)")
        );
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 40\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(
            group.hit(),
            Some("the job ran out of memory (worker.memory_mb)")
        );

        // A child joins before it runs anything: it writes itself ("0") to
        // cgroup.procs between fork and exec.
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        let mut cmd = tokio::process::Command::new("true");
        let held = group.enter_on_spawn(&mut cmd).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let status = rt.block_on(async { cmd.status().await.unwrap() });
        drop(held);
        assert!(status.success());
        assert_eq!(read("cgroup.procs"), "0");
        // (A real group's folder goes when emptied; this one is a plain folder.)
        std::mem::forget(group);
    }

    #[test]
    fn without_the_cpu_controller_no_quota_is_written() {
        let base = tempfile::tempdir().unwrap();
        let h = Hierarchy::V2 {
            base: base.path().to_path_buf(),
            cpu: false,
        };
        assert!(!h.limits_cpu());
        let group = JobGroup::create(&h, "job-2", 1 << 26, 8, 2.0).unwrap();
        assert!(!base.path().join("job-2/cpu.max").exists());
        assert!(!group.throttled());
        std::mem::forget(group);
    }
}
