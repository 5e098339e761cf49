//! MongoDB job store (the `mongodb` crate). One document per job, `_id` the
//! job id (UUID v7, so `_id` order is submission order). Projections are
//! compare-and-set on the state: several frontends may project at once, and
//! since a state only ever moves forward, a lost race is simply re-read.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Document};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, IndexModel};
use std::time::Duration;

use kumulus_core::config::MongoConfig;
use kumulus_core::event::{self, StatusEvent};
use kumulus_core::job::{JobId, JobRecord};
use kumulus_core::ports::{JobStore, ListQuery, PortError, PortResult};

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
        Ok(Self {
            jobs: client.database(&cfg.database).collection(COLLECTION),
        })
    }

    /// The indexes of the caller's listing and of the state.
    pub async fn ensure_indexes(&self) -> PortResult<()> {
        let indexes = [
            IndexModel::builder()
                .keys(doc! {"owner": 1, "submitted_at": -1})
                .build(),
            IndexModel::builder().keys(doc! {"state": 1}).build(),
        ];
        self.jobs
            .create_indexes(indexes)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn to_doc(rec: &JobRecord) -> PortResult<Document> {
        let mut d = doc! {"_id": rec.id.to_string()};
        d.extend(bson::to_document(rec).map_err(internal)?);
        Ok(d)
    }

    fn from_doc(mut d: Document) -> PortResult<JobRecord> {
        d.remove("_id");
        bson::from_document(d).map_err(internal)
    }
}

#[async_trait]
impl JobStore for MongoStore {
    async fn insert(&self, record: &JobRecord) -> PortResult<()> {
        self.jobs
            .insert_one(Self::to_doc(record)?)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn remove(&self, id: JobId) -> PortResult<()> {
        self.jobs
            .delete_one(doc! {"_id": id.to_string()})
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, id: JobId) -> PortResult<Option<JobRecord>> {
        self.jobs
            .find_one(doc! {"_id": id.to_string()})
            .await
            .map_err(unavailable)?
            .map(Self::from_doc)
            .transpose()
    }

    async fn list(&self, owner: &str, query: &ListQuery) -> PortResult<Vec<JobRecord>> {
        let mut filter = doc! {"owner": owner};
        if let Some(before) = query.before {
            filter.insert("_id", doc! {"$lt": before.to_string()});
        }
        if let Some(state) = query.state {
            filter.insert("state", state.as_str());
        }
        let cursor = self
            .jobs
            .find(filter)
            .sort(doc! {"_id": -1})
            .limit(query.limit as i64)
            .await
            .map_err(unavailable)?;
        let docs: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
        docs.into_iter().map(Self::from_doc).collect()
    }

    async fn apply(&self, ev: &StatusEvent) -> PortResult<Option<JobRecord>> {
        for _ in 0..16 {
            let Some(mut rec) = self.get(ev.job_id).await? else {
                return Ok(None);
            };
            let before = rec.state;
            if !event::apply(&mut rec, ev) {
                return Ok(Some(rec));
            }
            let mut update = Self::to_doc(&rec)?;
            update.remove("_id");
            let result = self
                .jobs
                .update_one(
                    doc! {"_id": rec.id.to_string(), "state": before.as_str()},
                    doc! {"$set": update},
                )
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
        self.jobs
            .find_one(doc! {"_id": "ping"})
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
