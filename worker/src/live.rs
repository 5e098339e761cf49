//! A running job's output, sent live ([`kumulus_core::ports::LogBus`]) at
//! a bounded rate. The job never waits for it: the log pumps hand bytes to a
//! bounded channel without waiting, and what does not fit is dropped from
//! the live copy only (the stored logs have everything). Each chunk says
//! where in its stream it starts, so a follower sees a gap as a jump.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use kumulus_core::job::JobId;
use kumulus_core::logs::{next_chunk, LogChunk, LogStream};
use kumulus_core::ports::LogBus;

/// Pieces waiting to be sent, at most (each at most a pump's read).
const WAITING: usize = 32;
/// How long the sender goes on after the job ended, at most.
const DRAIN: Duration = Duration::from_secs(2);

/// Where running jobs' output goes live, and how fast at most.
#[derive(Clone)]
pub struct LiveLogs {
    pub bus: Arc<dyn LogBus>,
    /// Bytes a second.
    pub rate: u64,
}

impl std::fmt::Debug for LiveLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveLogs")
            .field("rate", &self.rate)
            .finish()
    }
}

/// The pumps' end: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Tap {
    tx: mpsc::Sender<(LogStream, u64, Vec<u8>)>,
    offsets: Arc<[AtomicU64; 2]>,
}

impl Tap {
    /// Starts sending `job`'s output to `bus` at `rate` bytes a second; the
    /// sender ends once every tap is dropped (and at most [`DRAIN`] later).
    pub fn start(bus: Arc<dyn LogBus>, job: JobId, attempt: u32, rate: u64) -> Self {
        let (tx, rx) = mpsc::channel(WAITING);
        tokio::spawn(send(bus, job, attempt, rate.max(1), rx));
        Self {
            tx,
            offsets: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
        }
    }

    /// Hands `data` on, or drops it if the sender is behind.
    pub fn offer(&self, stream: LogStream, data: &[u8]) {
        let i = stream as usize;
        let offset = self.offsets[i].fetch_add(data.len() as u64, Ordering::Relaxed);
        let _ = self.tx.try_send((stream, offset, data.to_vec()));
    }
}

/// One stream's bytes waiting to become chunks: `buf` starts at `offset`.
struct Pending {
    offset: u64,
    buf: Vec<u8>,
}

impl Pending {
    fn end(&self) -> u64 {
        self.offset + self.buf.len() as u64
    }
}

const STREAMS: [LogStream; 2] = [LogStream::Stdout, LogStream::Stderr];

async fn send(
    bus: Arc<dyn LogBus>,
    job: JobId,
    attempt: u32,
    rate: u64,
    mut rx: mpsc::Receiver<(LogStream, u64, Vec<u8>)>,
) {
    let mut out = Sender {
        bus,
        job,
        attempt,
        rate,
        deadline: None,
    };
    let mut pending: [Option<Pending>; 2] = [None, None];
    while let Some(first) = rx.recv().await {
        // Everything waiting, joined per stream where it follows on.
        let mut next = Some(first);
        while let Some((stream, offset, data)) = next.take() {
            let slot = &mut pending[stream as usize];
            match slot {
                Some(p) if p.end() == offset => p.buf.extend_from_slice(&data),
                _ => {
                    // A gap: what waited goes as it is, the rest starts anew.
                    if let Some(p) = slot.as_mut() {
                        out.flush(stream, p, true).await;
                    }
                    *slot = Some(Pending { offset, buf: data });
                }
            }
            next = rx.try_recv().ok();
        }
        for stream in STREAMS {
            if let Some(p) = pending[stream as usize].as_mut() {
                out.flush(stream, p, false).await;
            }
        }
    }
    // The job's output is over: the rest goes, for at most DRAIN.
    out.deadline = Some(tokio::time::Instant::now() + DRAIN);
    for stream in STREAMS {
        if let Some(p) = pending[stream as usize].as_mut() {
            if !out.flush(stream, p, true).await {
                return;
            }
        }
    }
}

struct Sender {
    bus: Arc<dyn LogBus>,
    job: JobId,
    attempt: u32,
    rate: u64,
    deadline: Option<tokio::time::Instant>,
}

impl Sender {
    /// Sends `p`'s bytes in chunks at the rate, all but an unfinished last
    /// character unless `finished`; false once past the deadline.
    async fn flush(&mut self, stream: LogStream, p: &mut Pending, finished: bool) -> bool {
        while let Some((text, used)) = next_chunk(&mut p.buf, finished) {
            let chunk = LogChunk {
                job: self.job,
                attempt: self.attempt,
                stream,
                offset: p.offset,
                text,
            };
            p.offset += used as u64;
            if let Err(e) = self.bus.publish(&chunk).await {
                tracing::debug!(error = %e, "a live log chunk was not sent");
            }
            let pause = Duration::from_secs_f64(used as f64 / self.rate as f64);
            match self.deadline {
                Some(d) if tokio::time::Instant::now() + pause > d => return false,
                _ => tokio::time::sleep(pause).await,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use kumulus_embedded::bus::LocalLogBus;

    #[tokio::test]
    async fn output_arrives_in_order_with_its_offsets() {
        let bus = Arc::new(LocalLogBus::default());
        let mut seen = bus.subscribe();
        let job = JobId::new();
        let tap = Tap::start(bus.clone(), job, 1, 1 << 30);
        tap.offer(LogStream::Stdout, b"hello ");
        tap.offer(LogStream::Stderr, b"oops\n");
        tap.offer(LogStream::Stdout, "wörld\n".as_bytes());
        drop(tap);
        let mut text = [String::new(), String::new()];
        while text[0].len() < "hello wörld\n".len() || text[1].len() < 5 {
            let c = tokio::time::timeout(Duration::from_secs(5), seen.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!((c.job, c.attempt), (job, 1));
            let t = &mut text[c.stream as usize];
            // Each chunk starts where the stream's text so far ends.
            assert_eq!(c.offset, t.len() as u64);
            t.push_str(&c.text);
        }
        assert_eq!(text, ["hello wörld\n".to_string(), "oops\n".to_string()]);
    }

    #[tokio::test]
    async fn a_fast_job_loses_live_chunks_not_time() {
        let bus = Arc::new(LocalLogBus::default());
        let mut seen = bus.subscribe();
        // 256 KiB a second: slower than the job writes.
        let tap = Tap::start(bus.clone(), JobId::new(), 1, 256 * 1024);
        // `offer` is not async: the job's pumps cannot wait on the sender.
        for _ in 0..3 {
            for _ in 0..100 {
                tap.offer(LogStream::Stdout, &[b'x'; 4096]);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(tap);
        let first = seen.next().await.unwrap();
        assert_eq!(first.offset, 0);
        let mut last_end = first.offset + first.text.len() as u64;
        let mut gap = false;
        while let Ok(Some(c)) = tokio::time::timeout(Duration::from_secs(4), seen.next()).await {
            gap |= c.offset > last_end;
            assert!(c.offset >= last_end, "chunks never overlap");
            last_end = c.offset + c.text.len() as u64;
        }
        assert!(gap, "what did not fit shows as a jump in offset");
    }
}
