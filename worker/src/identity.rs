//! Who a job is on the host. A worker running as root never runs job code
//! as root: the job's first process switches to `worker.job_uid` /
//! `worker.job_gid` before it executes anything (bubblewrap included, which
//! then maps that uid to itself in the job's user namespace), so a job has
//! no more rights on the host than that unprivileged user. Its folders are
//! handed to that user, and the folders bubblewrap binds must be reachable
//! by it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The unprivileged user jobs run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobUser {
    pub uid: u32,
    pub gid: u32,
}

impl JobUser {
    /// The user jobs become: `Some` only where the worker is root (an
    /// unprivileged worker's jobs are already that unprivileged user).
    pub fn for_worker(uid: u32, gid: u32) -> Option<Self> {
        is_root().then_some(Self { uid, gid })
    }

    /// Whether this user may search (`x`) the directory `dir`.
    fn may_search(&self, dir: &Path) -> bool {
        let Ok(meta) = std::fs::metadata(dir) else {
            return false;
        };
        let mode = meta.permissions().mode();
        if meta.uid() == self.uid {
            mode & 0o100 != 0
        } else if meta.gid() == self.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    }

    /// Whether this user can reach `path` by name: every folder above it
    /// searchable. `path` itself may be anything.
    pub fn reaches(&self, path: &Path) -> bool {
        path.ancestors().skip(1).all(|dir| self.may_search(dir))
    }

    /// The outermost folder on the way to `path` that this user cannot
    /// search (hiding it hides `path` and everything beside it that the
    /// user could not reach anyway), or None when `path` is reachable.
    pub fn first_barrier(&self, path: &Path) -> Option<PathBuf> {
        let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
        ancestors.reverse();
        ancestors
            .into_iter()
            .find(|dir| !self.may_search(dir))
            .map(Path::to_path_buf)
    }

    /// Gives `dir` and everything under it to this user (symlinks
    /// themselves, never what they point at).
    pub fn own_tree(&self, dir: &Path) -> std::io::Result<()> {
        std::os::unix::fs::lchown(dir, Some(self.uid), Some(self.gid))?;
        let meta = std::fs::symlink_metadata(dir)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(dir)? {
                self.own_tree(&entry?.path())?;
            }
        }
        Ok(())
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

/// Makes `cmd`'s process, between fork and exec and after everything else
/// set up there (its cgroups): become `user` (all groups dropped), and die
/// with the worker (SIGKILL when the worker goes, even if it is killed
/// before the job's own sandbox could arrange that).
#[allow(unsafe_code)]
pub fn seal(cmd: &mut tokio::process::Command, user: Option<JobUser>) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (setgroups, setresgid, setresuid,
    // prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(u) = user {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(u.gid, u.gid, u.gid) != 0
                    || libc::setresuid(u.uid, u.uid, u.uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // After the identity change, which clears it.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The worker may have died before the line above: then nobody
            // would ever send the signal.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the worker is gone"));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachability_follows_search_bits() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        let closed = dir.path().join("closed");
        std::fs::create_dir_all(open.join("a")).unwrap();
        std::fs::create_dir_all(closed.join("b")).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let nobody = JobUser {
            uid: 65534,
            gid: 65534,
        };
        // The temporary folder's own parents are searchable by everyone.
        assert!(nobody.reaches(&open.join("a")));
        assert!(nobody.reaches(&closed));
        assert!(!nobody.reaches(&closed.join("b")));
        assert_eq!(
            nobody.first_barrier(&closed.join("b")),
            Some(closed.clone())
        );
        assert_eq!(nobody.first_barrier(&open.join("a")), None);
        // Owning the folder is enough, with the owner's bit.
        if is_root() {
            nobody.own_tree(&closed).unwrap();
            assert!(nobody.reaches(&closed.join("b")));
            let meta = std::fs::metadata(closed.join("b")).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        }
    }
}
