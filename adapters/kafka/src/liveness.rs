//! Which partitions of the jobs topic have a live consumer. A partition
//! whose lag stays above zero while the group's committed offset stands
//! still is stuck: its owner is dead or hung and the broker has not let
//! go of it. New attempts go where work is taken: the least lagging of the
//! partitions that are not stuck (an idle one first). Pure: fed with
//! snapshots of the queue, tested with tables.

use std::time::{Duration, Instant};

/// One partition's history.
#[derive(Debug, Clone)]
struct Track {
    committed: i64,
    lag: u64,
    /// Since when the committed offset stands still with work waiting.
    frozen_since: Option<Instant>,
    /// Its committed offset moved while watched: someone consumed it.
    advanced: bool,
    /// Since when nothing waits on it (every sample since saw no lag).
    drained_since: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
pub struct PartitionWatch {
    tracks: Vec<Track>,
}

impl PartitionWatch {
    /// Takes a snapshot: each partition's committed offset and lag.
    pub fn observe(&mut self, committed: &[i64], lag: &[u64], now: Instant) {
        let n = committed.len().min(lag.len());
        self.tracks.truncate(n);
        for p in 0..n {
            let waiting = lag[p] > 0;
            match self.tracks.get_mut(p) {
                Some(t) => {
                    let moved = committed[p] != t.committed;
                    t.frozen_since = match (waiting, moved, t.frozen_since) {
                        (false, _, _) | (true, true, _) => None,
                        (true, false, Some(since)) => Some(since),
                        (true, false, None) => Some(now),
                    };
                    t.advanced |= moved;
                    t.drained_since = if waiting {
                        None
                    } else {
                        t.drained_since.or(Some(now))
                    };
                    t.committed = committed[p];
                    t.lag = lag[p];
                }
                None => self.tracks.push(Track {
                    committed: committed[p],
                    lag: lag[p],
                    frozen_since: waiting.then_some(now),
                    advanced: false,
                    drained_since: (!waiting).then_some(now),
                }),
            }
        }
    }

    /// Partitions with work waiting whose committed offset has not moved
    /// for `after`.
    pub fn stuck(&self, now: Instant, after: Duration) -> Vec<i32> {
        self.tracks
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.frozen_since
                    .is_some_and(|s| now.duration_since(s) >= after)
            })
            .map(|(p, _)| p as i32)
            .collect()
    }

    /// Partitions on which nothing has waited for `after`: every job put
    /// there was taken.
    pub fn drained(&self, now: Instant, after: Duration) -> Vec<i32> {
        self.tracks
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.drained_since
                    .is_some_and(|s| now.duration_since(s) >= after)
            })
            .map(|(p, _)| p as i32)
            .collect()
    }

    /// Stuck partitions, but only while another one is not: with work
    /// stuck everywhere (no worker yet, or scaled to zero) it waits where it
    /// is rather than be moved to no better place. The other one need not
    /// have been seen consumed: a survivor that has run nothing yet shows
    /// nothing, and its partition is a better place than a dead member's.
    pub fn stranded(&self, now: Instant, after: Duration) -> Vec<i32> {
        let stuck = self.stuck(now, after);
        let live = (0..self.tracks.len()).any(|p| !stuck.contains(&(p as i32)));
        if live {
            stuck
        } else {
            Vec::new()
        }
    }

    /// Where a new attempt should go: the least lagging partition that is
    /// not stuck (nor on its way to being, when another has no lag), proven
    /// consumers first; when every one is stuck, the one a consumer was
    /// last seen on rather than none.
    pub fn choose(&self, now: Instant, after: Duration) -> Option<i32> {
        let stuck = self.stuck(now, after);
        let rank = |t: &Track| (t.frozen_since.is_some(), !t.advanced, t.lag);
        let best = |candidates: &mut dyn Iterator<Item = (usize, &Track)>| {
            candidates
                .min_by_key(|(_, t)| rank(t))
                .map(|(p, _)| p as i32)
        };
        best(
            &mut self
                .tracks
                .iter()
                .enumerate()
                .filter(|(p, _)| !stuck.contains(&(*p as i32))),
        )
        .or_else(|| best(&mut self.tracks.iter().enumerate().filter(|(_, t)| t.advanced)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_with_waiting_work_and_a_still_offset_is_stuck() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let after = Duration::from_secs(3);
        let mut w = PartitionWatch::default();
        // (committed, lag) per partition over time: 0 idle, 1 busy and
        // moving, 2 holding work that nobody takes.
        w.observe(&[0, 5, 7], &[0, 2, 1], s(0));
        assert_eq!(w.stuck(s(0), after), Vec::<i32>::new());
        w.observe(&[0, 6, 7], &[0, 3, 2], s(2));
        w.observe(&[0, 8, 7], &[0, 1, 3], s(4));
        assert_eq!(w.stuck(s(4), after), vec![2]);
        // Work goes where a consumer has shown itself (partition 0 was
        // never consumed: its owner may be the dead one), never the stuck one.
        assert_eq!(w.choose(s(4), after), Some(1));
        // Both consumed now, with as much waiting: the first.
        w.observe(&[1, 9, 7], &[1, 1, 3], s(5));
        assert_eq!(w.choose(s(5), after), Some(0));
        // The stuck one moves again: no longer stuck.
        w.observe(&[1, 9, 8], &[1, 1, 2], s(6));
        assert_eq!(w.stuck(s(6), after), Vec::<i32>::new());
        // A partition drained by its owner is never stuck.
        w.observe(&[2, 10, 10], &[0, 0, 0], s(20));
        assert_eq!(w.stuck(s(20), after), Vec::<i32>::new());
    }

    #[test]
    fn with_no_consumer_anywhere_nothing_is_stranded() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let after = Duration::from_secs(3);
        let mut w = PartitionWatch::default();
        // No worker has joined yet: work waits everywhere.
        w.observe(&[0, 0], &[2, 3], s(0));
        w.observe(&[0, 0], &[2, 3], s(10));
        assert_eq!(w.stuck(s(10), after), vec![0, 1]);
        assert_eq!(w.stranded(s(10), after), Vec::<i32>::new());
        // A worker takes partition 1: partition 0's work is stranded now.
        w.observe(&[0, 2], &[2, 1], s(12));
        assert_eq!(w.stranded(s(12), after), vec![0]);
    }

    #[test]
    fn a_partition_is_drained_once_nothing_has_waited_on_it_for_a_while() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let after = Duration::from_secs(3);
        let mut w = PartitionWatch::default();
        // (committed, lag): 0 empty from the start, 1 with work waiting.
        w.observe(&[0, 4], &[0, 2], s(0));
        assert_eq!(w.drained(s(2), after), Vec::<i32>::new(), "not long enough");
        assert_eq!(w.drained(s(3), after), vec![0]);
        // Partition 1's work is taken; partition 0 gets some.
        w.observe(&[0, 6], &[1, 0], s(4));
        w.observe(&[1, 6], &[0, 0], s(5));
        assert_eq!(
            w.drained(s(6), after),
            Vec::<i32>::new(),
            "both waited lately"
        );
        w.observe(&[1, 6], &[0, 0], s(8));
        assert_eq!(w.drained(s(8), after), vec![0, 1]);
        // A broker that lost its tail (high watermark below the committed
        // offset) shows no lag either: drained.
        w.observe(&[1, 6], &[0, 0], s(20));
        assert_eq!(w.drained(s(20), after), vec![0, 1]);
    }

    #[test]
    fn work_on_a_dead_members_partition_moves_to_one_that_holds_none() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let after = Duration::from_secs(3);
        let mut w = PartitionWatch::default();
        // Partition 0's member started a job (committing it) and died;
        // partition 1's, alive, has run nothing yet.
        w.observe(&[0, 0], &[1, 0], s(0));
        w.observe(&[1, 0], &[0, 0], s(1));
        // The job queued again on partition 0 waits there, unconsumed.
        w.observe(&[1, 0], &[1, 0], s(2));
        w.observe(&[1, 0], &[1, 0], s(6));
        assert_eq!(w.stuck(s(6), after), vec![0]);
        assert_eq!(w.stranded(s(6), after), vec![0]);
        assert_eq!(w.choose(s(6), after), Some(1));
    }

    #[test]
    fn nothing_to_choose_without_a_snapshot() {
        let w = PartitionWatch::default();
        assert_eq!(w.choose(Instant::now(), Duration::from_secs(1)), None);
    }
}
