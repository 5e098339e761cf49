//! Job files in a local folder: `<root>/<job id>/<name>`.

use async_trait::async_trait;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use tokio_util::io::ReaderStream;

use kumulus_core::job::JobId;
use kumulus_core::ports::{is_safe_file_name, Blob, BlobStore, PortError, PortResult};

pub struct LocalBlobs {
    root: PathBuf,
}

/// Where files are written before they are renamed into place; what an
/// interrupted run left there is removed at start.
const INCOMING: &str = ".incoming";

impl LocalBlobs {
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        let _ = std::fs::remove_dir_all(root.join(INCOMING));
        std::fs::create_dir_all(root.join(INCOMING))?;
        Ok(Self { root })
    }

    fn path(&self, job: JobId, name: &str) -> PortResult<PathBuf> {
        if !is_safe_file_name(name) {
            return Err(PortError::Internal(format!("unsafe file name {name:?}")));
        }
        Ok(self.root.join(job.to_string()).join(name))
    }
}

fn io_err(e: std::io::Error) -> PortError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        PortError::Full(format!("the job files' disk is full: {e}"))
    } else {
        PortError::unavailable("blob folder", e)
    }
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put_file(&self, job: JobId, name: &str, path: &Path) -> PortResult<()> {
        let dest = self.path(job, name)?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io_err)?;
        }
        // Copy aside, then rename: a reader never sees half a file, and a
        // copy that fails (a full disk) leaves nothing behind.
        let tmp = self
            .root
            .join(INCOMING)
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let copied = match tokio::fs::copy(path, &tmp).await {
            Ok(_) => tokio::fs::rename(&tmp, &dest).await,
            Err(e) => Err(e),
        };
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io_err(e));
        }
        Ok(())
    }

    async fn remove_job(&self, job: JobId) -> PortResult<u64> {
        let dir = self.root.join(job.to_string());
        tokio::task::spawn_blocking(move || {
            let files = count_files(&dir);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(files),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                Err(e) => Err(io_err(e)),
            }
        })
        .await
        .map_err(|e| PortError::Internal(e.to_string()))?
    }

    async fn get(&self, job: JobId, name: &str) -> PortResult<Option<Blob>> {
        let path = self.path(job, name)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        let meta = file.metadata().await.map_err(io_err)?;
        if !meta.is_file() {
            return Ok(None);
        }
        Ok(Some(Blob {
            len: meta.len(),
            body: ReaderStream::new(file).boxed(),
        }))
    }
}

/// Files under `dir`, all levels down (0 if there is no such folder).
fn count_files(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_and_streams_files_and_refuses_unsafe_names() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::new(dir.path().join("b")).unwrap();
        let src = dir.path().join("src.txt");
        std::fs::write(&src, b"hello").unwrap();
        let job = JobId::new();
        blobs.put_file(job, "output/sub/a.txt", &src).await.unwrap();
        let blob = blobs.get(job, "output/sub/a.txt").await.unwrap().unwrap();
        assert_eq!(blob.len, 5);
        let chunks: Vec<_> = blob.body.collect().await;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        assert_eq!(bytes, b"hello");
        assert!(blobs.get(job, "missing").await.unwrap().is_none());
        assert!(blobs.get(job, "../x").await.is_err());
        assert!(blobs.put_file(job, "/etc/x", &src).await.is_err());
    }
}
