//! Where a job goes among the jobs topic's partitions. A Kafka partition
//! is read by one worker only, so a job placed behind a long backlog waits
//! for it even while other workers idle. The frontend places each job on
//! the partition whose owner has the least backlog (`kafka.placement =
//! "least-backlog"`), from the lag it samples plus what it placed since;
//! the simulator models the same choice.

/// The partition a new job should go to: the one whose owner has the least
/// backlog (`known` lag plus the jobs `placed` since, per partition), then
/// the least loaded of that owner's partitions. Workers take partitions
/// round-robin (partition `q` belongs to member `q mod members`), so the
/// partitions of one owner are known without knowing the owner. Ties go
/// to the first from `from` on, so that equal backlogs fill round-robin.
/// With `members` 0 (not known), each partition counts alone.
pub fn least_backlog(known: &[u64], placed: &[u64], members: usize, from: usize) -> usize {
    let n = known.len().max(placed.len()).max(1);
    let m = if members == 0 { n } else { members.min(n) };
    let load = |q: usize| known.get(q).copied().unwrap_or(0) + placed.get(q).copied().unwrap_or(0);
    let owner_load = |g: usize| (g..n).step_by(m).map(load).sum::<u64>();
    let owner = (0..m)
        .map(|k| (from + k) % m)
        .min_by_key(|&g| owner_load(g))
        .unwrap_or(0);
    let mine = (owner..n).step_by(m).count();
    (0..mine)
        .map(|k| owner + ((from / m + k) % mine) * m)
        .min_by_key(|&q| load(q))
        .unwrap_or(owner)
}

/// How the frontend places jobs (`kafka.placement`).
pub const PLACEMENTS: [&str; 2] = ["hash", "least-backlog"];

/// The frontend's least-backlog placement: the topic's last sample (each
/// partition's lag and the workers' group size) and the jobs placed since.
/// A sample older than its `fresh` is not used: the caller then
/// places by a hash, as with no sample at all, so a frontend that cannot
/// read the broker's offsets still spreads its jobs.
#[derive(Debug)]
pub struct Placer {
    lag: Vec<u64>,
    members: usize,
    placed: Vec<u64>,
    at: Option<std::time::Instant>,
    /// How long the sample at `at` stays usable.
    fresh: std::time::Duration,
    /// Where ties start: each frontend from its own place, so that several
    /// frontends working from the same sample do not all fill the same
    /// partition first.
    next: usize,
}

impl Placer {
    /// Ties start at `start` (for example the process id).
    pub fn new(start: usize) -> Self {
        Self {
            lag: Vec::new(),
            members: 0,
            placed: Vec::new(),
            at: None,
            fresh: std::time::Duration::ZERO,
            next: start,
        }
    }

    /// A new sample: per partition, the jobs not yet committed past
    /// (waiting, or read ahead by their worker); the group's members where
    /// the broker tells; usable for `fresh`. What was placed before it is
    /// in its lag now.
    pub fn sampled(
        &mut self,
        lag: &[u64],
        members: Option<u32>,
        at: std::time::Instant,
        fresh: std::time::Duration,
    ) {
        self.lag = lag.to_vec();
        self.placed = vec![0; lag.len()];
        self.members = members.unwrap_or(0) as usize;
        self.at = Some(at);
        self.fresh = fresh;
    }

    /// The partition for the next job, counted as placed; None where there
    /// is no fresh sample, or no partition.
    pub fn place(&mut self, now: std::time::Instant) -> Option<i32> {
        let at = self.at?;
        if self.lag.is_empty() || now.saturating_duration_since(at) > self.fresh {
            return None;
        }
        let q = least_backlog(&self.lag, &self.placed, self.members, self.next);
        self.placed[q] += 1;
        self.next = q + 1;
        i32::try_from(q).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_backlog_picks_the_least_loaded_owner_then_its_least_loaded_partition() {
        // (known lag, placed since, members, from) -> partition.
        type Case<'a> = (&'a [u64], &'a [u64], usize, usize, usize);
        let cases: [Case; 7] = [
            // Nothing anywhere: the first from `from` on (round-robin).
            (&[0, 0, 0, 0], &[0, 0, 0, 0], 0, 0, 0),
            (&[0, 0, 0, 0], &[0, 0, 0, 0], 0, 2, 2),
            // Per partition when the owners are not known.
            (&[3, 1, 2, 5], &[0, 0, 0, 0], 0, 0, 1),
            // Jobs placed since the reading count too.
            (&[3, 1, 2, 5], &[0, 2, 0, 0], 0, 0, 2),
            // Two owners: 0 reads partitions 0 and 2 (3 + 0 jobs), 1 reads
            // 1 and 3 (1 + 5): owner 0, and its empty partition 2, though
            // partition 1 alone holds fewer jobs than partition 0.
            (&[3, 1, 0, 5], &[0, 0, 0, 0], 2, 0, 2),
            // Equal owners: round-robin from `from`.
            (&[1, 1, 1, 1], &[0, 0, 0, 0], 2, 1, 1),
            // More members than partitions: each partition is an owner.
            (&[2, 0], &[0, 0], 5, 0, 1),
        ];
        for (known, placed, members, from, want) in cases {
            assert_eq!(
                least_backlog(known, placed, members, from),
                want,
                "{known:?} + {placed:?}, {members} members, from {from}"
            );
        }
    }

    #[test]
    fn the_placer_fills_the_least_loaded_owner_and_gives_up_on_an_old_sample() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let fresh = Duration::from_secs(10);
        let mut p = Placer::new(0);
        // No sample yet: the caller hashes.
        assert_eq!(p.place(t0), None);
        // Four partitions, two workers (0 reads 0 and 2, 1 reads 1 and 3):
        // worker 0 holds 6 jobs, worker 1 none. The next six go to worker 1,
        // spread over its two partitions, then the owners are even again.
        p.sampled(&[4, 0, 2, 0], Some(2), t0, fresh);
        let six: Vec<i32> = (0..6).filter_map(|_| p.place(t0)).collect();
        assert_eq!(six, vec![1, 3, 1, 3, 1, 3]);
        // Even owners (6 and 6): the tie goes round-robin, to worker 0 here,
        // and to its partition with fewer jobs (2 holds 2, 0 holds 4).
        assert_eq!(p.place(t0), Some(2));
        // A new sample replaces what was placed since the last one.
        p.sampled(&[0, 0, 0, 9], None, t0 + Duration::from_secs(5), fresh);
        // Members unknown: each partition alone, the least lagging first.
        let three: Vec<i32> = (0..3)
            .filter_map(|_| p.place(t0 + Duration::from_secs(6)))
            .collect();
        let mut sorted = three.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2], "{three:?}");
        // A sample older than `fresh` is not used.
        assert_eq!(p.place(t0 + Duration::from_secs(16)), None);
        // No partitions in the sample: nothing to choose from.
        p.sampled(&[], Some(1), t0, fresh);
        assert_eq!(p.place(t0), None);
    }
}
