//! New records, inserted in batches: every submit waiting while one
//! `insert_many` is under way goes into the next one (no timer: a lone
//! submit is sent at once, and the busier the frontend, the bigger the
//! batch). Each caller is answered for its own document only once the
//! batch it was in is acknowledged, so a 201 still means stored. The
//! batch is unordered: one document refused (a duplicate id) fails alone.

use mongodb::bson::Document;
use mongodb::error::{Error, ErrorKind};
use mongodb::Collection;
use tokio::sync::{mpsc, oneshot};

use kumulus_core::ports::{PortError, PortResult};

/// Documents in one `insert_many`, at most.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<PortResult<()>>;

#[derive(Clone)]
pub(crate) struct Inserts {
    // Unbounded: every caller waits for its answer, so what waits here is
    // at most the submits under way, which the server bounds.
    tx: mpsc::UnboundedSender<(Document, Reply)>,
}

impl Inserts {
    /// Starts the task that sends the batches; it ends with the last
    /// [`Inserts`].
    pub(crate) fn start(jobs: Collection<Document>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(jobs, rx));
        Self { tx }
    }

    /// Inserts `doc` with the next batch; answers once it is stored.
    pub(crate) async fn insert(&self, doc: Document) -> PortResult<()> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((doc, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> PortError {
    PortError::Internal("mongodb: the insert batcher stopped".into())
}

async fn run(jobs: Collection<Document>, mut rx: mpsc::UnboundedReceiver<(Document, Reply)>) {
    while let Some(first) = rx.recv().await {
        let mut docs = vec![first.0];
        let mut replies = vec![first.1];
        while docs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((doc, reply)) => {
                    docs.push(doc);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        let outcome = jobs.insert_many(docs).ordered(false).await;
        let answers = answers(outcome.err(), replies.len());
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }
}

/// Each document's answer from the batch's error, if any: a write error
/// names its document; anything else (the server unreachable, a write
/// concern not met) is every document's.
fn answers(error: Option<Error>, n: usize) -> Vec<PortResult<()>> {
    let Some(error) = error else {
        return (0..n).map(|_| Ok(())).collect();
    };
    if let ErrorKind::InsertMany(many) = error.kind.as_ref() {
        if many.write_concern_error.is_none() {
            let mut out: Vec<PortResult<()>> = (0..n).map(|_| Ok(())).collect();
            for w in many.write_errors.iter().flatten() {
                if let Some(slot) = out.get_mut(w.index) {
                    *slot = Err(super::unavailable(format!(
                        "insert refused ({}): {}",
                        w.code, w.message
                    )));
                }
            }
            return out;
        }
    }
    (0..n).map(|_| Err(super::unavailable(&error))).collect()
}
