//! MongoDB job store (the `mongodb` crate). One document per job, `_id` the
//! job id (UUID v7, so `_id` order is submission order). Projections are
//! compare-and-set on a revision number: several frontends may project at
//! once, and a lost race is simply re-read. Beside the record, the document
//! holds the job as queued (`payload`, never shown: it is queued again as a
//! new attempt), when its running attempt last showed life (`alive_ms`), and
//! `rev`. A `leases` collection elects one reaper among the frontends.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Document};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, IndexModel};
use std::time::Duration;

use kumulus_core::config::MongoConfig;
use kumulus_core::event::{self, StatusEvent};
use kumulus_core::job::{JobId, JobRecord, JobState, QueuedJob};
use kumulus_core::ports::{JobStore, KeyClaim, Leadership, ListQuery, PortError, PortResult};

mod inserts;

const BACKEND: &str = "mongodb";
const COLLECTION: &str = "jobs";

fn unavailable(e: impl std::fmt::Display) -> PortError {
    PortError::unavailable(BACKEND, e)
}

fn internal(e: impl std::fmt::Display) -> PortError {
    PortError::Internal(format!("{BACKEND}: {e}"))
}

#[derive(Clone)]
pub struct MongoStore {
    jobs: Collection<Document>,
    inserts: inserts::Inserts,
    leases: Collection<Document>,
    positions: Collection<Document>,
    keys: Collection<Document>,
}

impl MongoStore {
    /// Connects lazily (the driver reconnects by itself); call
    /// [`MongoStore::ensure_indexes`] once the server answers.
    pub async fn connect(cfg: &MongoConfig) -> PortResult<Self> {
        let mut opts = ClientOptions::parse(cfg.uri.expose())
            .await
            .map_err(|e| PortError::Internal(format!("mongo.uri is not valid: {}", e.kind)))?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        opts.server_selection_timeout = Some(timeout);
        opts.connect_timeout = Some(timeout);
        opts.app_name = Some("kumulus".into());
        let client = Client::with_options(opts).map_err(internal)?;
        let db = client.database(&cfg.database);
        let jobs = db.collection(COLLECTION);
        Ok(Self {
            inserts: inserts::Inserts::start(Collection::clone(&jobs)),
            jobs,
            leases: db.collection("leases"),
            positions: db.collection("positions"),
            keys: db.collection("idempotency_keys"),
        })
    }

    /// The indexes of the caller's listing (newest first, in a state or
    /// not: each page walks one from its cursor) and of the sweeps. The
    /// listing orders by the record's `id` (the same as `_id`): nx-27017,
    /// the MongoDB stand-in of the tests, refuses every insert into a
    /// collection with a compound index over `_id` ("JSON path error near
    /// '_id'").
    pub async fn ensure_indexes(&self) -> PortResult<()> {
        let indexes = [
            IndexModel::builder()
                .keys(doc! {"owner": 1, "id": -1})
                .build(),
            IndexModel::builder()
                .keys(doc! {"owner": 1, "state": 1, "id": -1})
                .build(),
            IndexModel::builder().keys(doc! {"state": 1}).build(),
            IndexModel::builder()
                .keys(doc! {"state": 1, "alive_ms": 1})
                .build(),
        ];
        self.jobs
            .create_indexes(indexes)
            .await
            .map_err(unavailable)?;
        self.keys
            .create_index(IndexModel::builder().keys(doc! {"created_ms": 1}).build())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn to_doc(rec: &JobRecord) -> PortResult<Document> {
        let mut d = doc! {"_id": rec.id.to_string()};
        d.extend(bson::to_document(rec).map_err(internal)?);
        let alive = rec.last_sign_of_life().map(|t| t.timestamp_millis());
        d.insert(
            "alive_ms",
            alive.map_or(bson::Bson::Null, bson::Bson::Int64),
        );
        Ok(d)
    }

    fn from_doc(mut d: Document) -> PortResult<JobRecord> {
        for private in [
            "_id",
            "payload",
            "alive_ms",
            "rev",
            "partition",
            "placed_ms",
        ] {
            d.remove(private);
        }
        bson::from_document(d).map_err(internal)
    }

    async fn get_doc(&self, id: JobId) -> PortResult<Option<Document>> {
        self.jobs
            .find_one(doc! {"_id": id.to_string()})
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl JobStore for MongoStore {
    async fn insert(&self, record: &JobRecord, job: &QueuedJob) -> PortResult<()> {
        let mut d = Self::to_doc(record)?;
        d.insert("payload", bson::to_document(job).map_err(internal)?);
        d.insert("partition", job.partition);
        d.insert("placed_ms", chrono::Utc::now().timestamp_millis());
        d.insert("rev", 0i64);
        self.inserts.insert(d).await
    }

    async fn payload(&self, id: JobId) -> PortResult<Option<QueuedJob>> {
        let Some(d) = self.get_doc(id).await? else {
            return Ok(None);
        };
        match d.get_document("payload") {
            Ok(p) => bson::from_document(p.clone()).map(Some).map_err(internal),
            Err(_) => Ok(None),
        }
    }

    async fn set_payload(&self, job: &QueuedJob) -> PortResult<()> {
        let payload = bson::to_document(job).map_err(internal)?;
        self.jobs
            .update_one(
                doc! {"_id": job.id.to_string()},
                doc! {"$set": {
                    "payload": payload,
                    "partition": job.partition,
                    "placed_ms": chrono::Utc::now().timestamp_millis(),
                }},
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn positions(&self, feed: &str) -> PortResult<Vec<(i32, i64)>> {
        let cursor = self
            .positions
            .find(doc! {"feed": feed})
            .await
            .map_err(unavailable)?;
        let docs: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
        Ok(docs
            .iter()
            .filter_map(|d| {
                let p = d
                    .get_i64("partition")
                    .ok()
                    .or_else(|| d.get_i32("partition").ok().map(i64::from))?;
                let o = d
                    .get_i64("offset")
                    .ok()
                    .or_else(|| d.get_i32("offset").ok().map(i64::from))?;
                Some((p as i32, o))
            })
            .collect())
    }

    async fn advance(&self, feed: &str, partition: i32, offset: i64) -> PortResult<()> {
        let id = format!("{feed}:{partition}");
        let result = self
            .positions
            .update_one(
                doc! {"_id": &id, "$or": [{"offset": {"$lt": offset}}, {"offset": {"$exists": false}}]},
                doc! {"$set": {"feed": feed, "partition": i64::from(partition), "offset": offset}},
            )
            .upsert(true)
            .await;
        match result {
            // Another replica is already further.
            Err(e) if is_duplicate_key(&e) => Ok(()),
            other => other.map(|_| ()).map_err(unavailable),
        }
    }

    async fn alive_on(
        &self,
        partition: Option<i32>,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> PortResult<bool> {
        let mut filter = doc! {
            "state": "running",
            "alive_ms": {"$gte": cutoff.timestamp_millis()},
        };
        if let Some(p) = partition {
            filter.insert("partition", p);
        }
        let found = self.jobs.find_one(filter).await.map_err(unavailable)?;
        Ok(found.is_some())
    }

    async fn queued_on(
        &self,
        partition: i32,
        cutoff: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> PortResult<Vec<JobRecord>> {
        let cursor = self
            .jobs
            .find(doc! {"state": "queued", "partition": partition})
            .limit(limit as i64)
            .await
            .map_err(unavailable)?;
        let docs: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
        let cutoff = cutoff.timestamp_millis();
        Ok(docs
            .into_iter()
            .filter(|d| d.get_i64("placed_ms").is_ok_and(|t| t < cutoff))
            .filter_map(|d| Self::from_doc(d).ok())
            .collect())
    }

    async fn stalled(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> PortResult<Vec<JobRecord>> {
        let cursor = self
            .jobs
            .find(doc! {"state": "running", "alive_ms": {"$lt": cutoff.timestamp_millis()}})
            .limit(limit as i64)
            .await
            .map_err(unavailable)?;
        let docs: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
        docs.into_iter().map(Self::from_doc).collect()
    }

    async fn remove(&self, id: JobId) -> PortResult<()> {
        self.jobs
            .delete_one(doc! {"_id": id.to_string()})
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn claim_key(
        &self,
        owner: &str,
        key: &str,
        fingerprint: &str,
        job: JobId,
        expired_before: chrono::DateTime<chrono::Utc>,
    ) -> PortResult<KeyClaim> {
        // One document per (owner, key) (see key_id); the unique _id makes
        // the claim atomic.
        let id = key_id(owner, key);
        self.keys
            .delete_many(doc! {"created_ms": {"$lt": expired_before.timestamp_millis()}})
            .await
            .map_err(unavailable)?;
        for _ in 0..3 {
            let claim = doc! {
                "_id": &id,
                "fingerprint": fingerprint,
                "job": job.to_string(),
                "created_ms": chrono::Utc::now().timestamp_millis(),
            };
            match self.keys.insert_one(claim).await {
                Ok(_) => return Ok(KeyClaim::Claimed),
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(unavailable(e)),
            }
            // Held: by whom (unless it was released meanwhile: claim again).
            if let Some(d) = self
                .keys
                .find_one(doc! {"_id": &id})
                .await
                .map_err(unavailable)?
            {
                let held = d
                    .get_str("job")
                    .ok()
                    .and_then(|j| j.parse().ok())
                    .ok_or_else(|| internal("an idempotency key without its job"))?;
                return Ok(KeyClaim::Held {
                    job: held,
                    fingerprint: d.get_str("fingerprint").unwrap_or_default().to_string(),
                });
            }
        }
        Err(unavailable("the idempotency key keeps changing hands"))
    }

    async fn release_key(&self, owner: &str, key: &str, job: JobId) -> PortResult<()> {
        let id = key_id(owner, key);
        self.keys
            .delete_one(doc! {"_id": id, "job": job.to_string()})
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn webhooks_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> PortResult<Vec<JobRecord>> {
        let ended = ended_states();
        // The pending ones; their time is checked here (a retry's time is
        // optional, which MongoDB-wire servers match differently).
        let filter = doc! {"state": {"$in": ended}, "webhook.state": "pending"};
        let cursor = self
            .jobs
            .find(filter)
            .sort(doc! {"_id": 1})
            .await
            .map_err(unavailable)?;
        let docs: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
        let mut due = Vec::new();
        for d in docs {
            let rec = Self::from_doc(d)?;
            if rec
                .webhook
                .as_ref()
                .is_some_and(|w| w.next_at.is_none_or(|t| t <= now))
            {
                due.push(rec);
                if due.len() == limit {
                    break;
                }
            }
        }
        Ok(due)
    }

    async fn set_webhook(
        &self,
        id: JobId,
        delivery: &kumulus_core::webhook::Delivery,
    ) -> PortResult<()> {
        let delivery = bson::to_bson(delivery).map_err(internal)?;
        // A new revision: a projection racing this write reads it again.
        self.jobs
            .update_one(
                doc! {"_id": id.to_string()},
                doc! {"$set": {"webhook": delivery}, "$inc": {"rev": 1i64}},
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn ended_before(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> PortResult<Vec<JobRecord>> {
        let ended = ended_states();
        // Times are stored as RFC 3339 text in UTC, which sorts as time does
        // (to within the second's fraction, where the digits vary).
        let cutoff = bson::to_bson(&cutoff).map_err(internal)?;
        let filter = doc! {
            "state": {"$in": ended},
            "$or": [
                {"finished_at": {"$lt": cutoff.clone()}},
                {"finished_at": null, "submitted_at": {"$lt": cutoff}},
            ],
        };
        let cursor = self
            .jobs
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(limit as i64)
            .await
            .map_err(unavailable)?;
        let docs: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
        docs.into_iter().map(Self::from_doc).collect()
    }

    async fn get(&self, id: JobId) -> PortResult<Option<JobRecord>> {
        self.get_doc(id).await?.map(Self::from_doc).transpose()
    }

    async fn list(&self, owner: &str, query: &ListQuery) -> PortResult<Vec<JobRecord>> {
        let mut filter = doc! {"owner": owner};
        if let Some(state) = query.state {
            filter.insert("state", state.as_str());
        }
        if let Some(before) = query.before {
            filter.insert("id", doc! {"$lt": before.to_string()});
        }
        let cursor = self
            .jobs
            .find(filter)
            .sort(doc! {"id": -1})
            .limit(query.limit as i64)
            .await
            .map_err(unavailable)?;
        let docs: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
        docs.into_iter().map(Self::from_doc).collect()
    }

    async fn history(&self, after: Option<JobId>, limit: usize) -> PortResult<Vec<JobRecord>> {
        let filter = match after {
            Some(id) => doc! {"_id": {"$gt": id.to_string()}},
            None => doc! {},
        };
        let cursor = self
            .jobs
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(limit as i64)
            .await
            .map_err(unavailable)?;
        let docs: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
        docs.into_iter().map(Self::from_doc).collect()
    }

    async fn apply(&self, ev: &StatusEvent) -> PortResult<Option<JobRecord>> {
        for _ in 0..16 {
            let Some(d) = self.get_doc(ev.job_id).await? else {
                return Ok(None);
            };
            let rev = d.get_i64("rev").ok();
            let mut rec = Self::from_doc(d)?;
            let before = rec.state;
            if !event::apply(&mut rec, ev) {
                return Ok(Some(rec));
            }
            let mut update = Self::to_doc(&rec)?;
            update.remove("_id");
            update.insert("rev", rev.unwrap_or(0) + 1);
            let filter = match rev {
                Some(rev) => doc! {"_id": rec.id.to_string(), "rev": rev},
                // A record from before revisions: its state is its version.
                None => doc! {"_id": rec.id.to_string(), "state": before.as_str()},
            };
            let result = self
                .jobs
                .update_one(filter, doc! {"$set": update})
                .await
                .map_err(unavailable)?;
            if result.matched_count == 1 {
                return Ok(Some(rec));
            }
            // Another replica moved the job meanwhile: read it again.
        }
        Err(internal(format!(
            "job {} kept changing under the projection",
            ev.job_id
        )))
    }

    async fn ping(&self) -> PortResult<()> {
        self.ping_jobs().await
    }
}

impl MongoStore {
    async fn ping_jobs(&self) -> PortResult<()> {
        self.jobs
            .find_one(doc! {"_id": "ping"})
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

/// The lead is a document `{_id: "reaper", holder, until_ms}`: taken when
/// it is ours or has lapsed; an insert that finds it held by another fails
/// on the unique `_id`.
#[async_trait]
impl Leadership for MongoStore {
    async fn lead(&self, holder: &str, ttl: Duration) -> PortResult<bool> {
        let now = chrono::Utc::now().timestamp_millis();
        let until = now + ttl.as_millis() as i64;
        let result = self
            .leases
            .update_one(
                doc! {"_id": "reaper", "$or": [{"holder": holder}, {"until_ms": {"$lt": now}}]},
                doc! {"$set": {"holder": holder, "until_ms": until}},
            )
            .upsert(true)
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// The names of the states a job ends in.
fn ended_states() -> Vec<&'static str> {
    JobState::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(JobState::as_str)
        .collect()
}

/// The id of an idempotency key's document: the owner's name, a NUL, the
/// key. Keys have no NUL (printable ASCII only), so the pair reads back
/// from the last NUL: no two pairs share an id.
fn key_id(owner: &str, key: &str) -> String {
    format!("{owner}\u{0}{key}")
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => e.to_string().contains("E11000") || e.to_string().contains("duplicate key"),
    }
}
