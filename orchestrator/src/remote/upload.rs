//! Uploads after a run: queued by the action workers, sent by background
//! threads so the build never waits for them until it ends.
use super::{
    ac_key, fetch_small, RecordsBlob, Remote, Shared, ACTION_TAG, DECLARATIONS_TYPE,
    MAX_RECORDS_BLOB, MAX_REMOTE_RECORDS, RECORDS_FILE, RECORDS_TAG, WORKER,
};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use vbuild_schema::RemoteMode;
use vbuild_store::remote::{self as wire, reapi, RemoteError, WireDigest};
use vbuild_store::{ActionResult, Digest, EntryKind, Store, StrongKey, Tree, WeakKey};

/// One action's result to upload.
pub struct Upload {
    pub weak: WeakKey,
    pub strong: StrongKey,
    pub record: String,
    pub tree: Arc<Tree>,
    pub result: ActionResult,
}

impl Remote {
    /// Queues an upload (read-write mode only); returns at once.
    pub fn upload(&self, job: Upload) {
        if self.shared.cfg.mode != RemoteMode::ReadWrite || !self.shared.health.usable() {
            return;
        }
        if let Some(tx) = &*self.queue.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = tx.send(job);
        }
    }
}

/// Starts the uploader threads, which use their own handle on the store
/// at `store_root`.
pub(super) fn spawn_uploaders(
    shared: &Arc<Shared>,
    store_root: &Path,
    rx: mpsc::Receiver<Upload>,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let rx = Arc::new(Mutex::new(rx));
    let mut uploaders = Vec::new();
    let store = Arc::new(Store::open(store_root).context("opening the store for uploads")?);
    for _ in 0..shared.cfg.connections.min(4) {
        let (rx, shared, store) = (rx.clone(), shared.clone(), store.clone());
        uploaders.push(std::thread::spawn(move || loop {
            let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
            let Ok(job) = job else { break };
            if shared.health.usable() {
                if let Err(e) = upload(&shared, &store, &job) {
                    shared.health.report(&e);
                }
            }
        }));
    }
    Ok(uploaders)
}

/// Uploads one action's blobs, then its entry, then its record.
fn upload(shared: &Shared, store: &Store, job: &Upload) -> Result<(), RemoteError> {
    let client = &*shared.client;
    let df = client.digest_fn();
    let local_err =
        |e: vbuild_store::StoreError| RemoteError::Rejected(format!("local store: {e}"));
    let wire_of = |d: &Digest| wire::wire_digest_of(store, df, d).map_err(local_err);
    let mut blobs: BTreeMap<WireDigest, Digest> = BTreeMap::new();
    let mut files = Vec::new();
    let mut symlinks = Vec::new();
    for e in job.tree.entries() {
        match &e.kind {
            EntryKind::File {
                digest, executable, ..
            } => {
                let w = wire_of(digest)?;
                blobs.insert(w, *digest);
                files.push(reapi::OutputFile {
                    path: e.path.clone(),
                    digest: Some(w.to_proto()),
                    is_executable: *executable,
                    ..Default::default()
                });
            }
            EntryKind::Symlink { target } => symlinks.push(reapi::OutputSymlink {
                path: e.path.clone(),
                target: target.clone(),
                ..Default::default()
            }),
        }
    }
    let stdout = wire_of(&job.result.stdout)?;
    let stderr = wire_of(&job.result.stderr)?;
    blobs.insert(stdout, job.result.stdout);
    blobs.insert(stderr, job.result.stderr);
    send_blobs(shared, store, &blobs)?;
    let result = reapi::ActionResult {
        output_files: files,
        output_symlinks: symlinks,
        exit_code: 0,
        stdout_digest: Some(stdout.to_proto()),
        stderr_digest: Some(stderr.to_proto()),
        execution_metadata: Some(reapi::ExecutedActionMetadata {
            worker: WORKER.into(),
            auxiliary_metadata: vec![bazel_any(&job.result.declarations)],
            ..Default::default()
        }),
        ..Default::default()
    };
    client.update_action_result(&ac_key(df, ACTION_TAG, job.strong.as_bytes()), &result)?;
    shared.stats.uploaded_results.fetch_add(1, Ordering::SeqCst);
    publish_record(shared, &job.weak, &job.record)
}

fn bazel_any(value: &serde_json::Value) -> wire::pb::Any {
    wire::pb::Any {
        type_url: DECLARATIONS_TYPE.into(),
        value: serde_json::to_vec(value).unwrap_or_default(),
    }
}

/// Uploads the blobs the server lacks (the empty blob never).
fn send_blobs(
    shared: &Shared,
    store: &Store,
    blobs: &BTreeMap<WireDigest, Digest>,
) -> Result<(), RemoteError> {
    let df = shared.client.digest_fn();
    let all: Vec<WireDigest> = blobs
        .keys()
        .filter(|w| !w.is_empty_blob(df))
        .copied()
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let missing = shared.client.find_missing(&all)?;
    for w in missing {
        let Some(local) = blobs.get(&w) else { continue };
        let _slot = shared.slots.acquire();
        let path = store.cas.blob_path(local);
        shared
            .client
            .write_blob(&w, wire::BlobSource::File(&path))?;
        shared.stats.uploaded_blobs.fetch_add(1, Ordering::SeqCst);
        shared
            .stats
            .uploaded_bytes
            .fetch_add(w.size, Ordering::SeqCst);
    }
    Ok(())
}

/// Puts `record` first in the remote list of the weak key (unless it is
/// already first). Two writers racing may drop each other's record: that
/// costs a miss, never a wrong hit.
fn publish_record(shared: &Shared, weak: &WeakKey, record: &str) -> Result<(), RemoteError> {
    let client = &*shared.client;
    let df = client.digest_fn();
    let key = ac_key(df, RECORDS_TAG, weak.as_bytes());
    let mut records = match client.get_action_result(&key, MAX_RECORDS_BLOB) {
        Ok(Some(r)) => r
            .output_files
            .iter()
            .find(|f| f.path == RECORDS_FILE)
            .and_then(|f| f.digest.as_ref())
            .and_then(|d| WireDigest::from_proto(d).ok())
            .and_then(|d| fetch_small(client, &d, MAX_RECORDS_BLOB).ok())
            .and_then(|b| serde_json::from_slice::<RecordsBlob>(&b).ok())
            .map(|b| b.records)
            .unwrap_or_default(),
        Ok(None) | Err(RemoteError::Rejected(_)) => vec![],
        Err(e) => return Err(e),
    };
    if records.first().map(String::as_str) == Some(record) {
        return Ok(());
    }
    records.retain(|r| r != record);
    records.insert(0, record.to_string());
    records.truncate(MAX_REMOTE_RECORDS);
    let bytes = serde_json::to_vec(&RecordsBlob {
        version: 1,
        records,
    })
    .expect("records serialize");
    // Sent from memory: the list is for the remote only, and storing it
    // locally would create a file per upload.
    let w = WireDigest::of_bytes(df, &bytes);
    if !client.find_missing(&[w])?.is_empty() {
        let _slot = shared.slots.acquire();
        client.write_blob(&w, wire::BlobSource::Bytes(&bytes))?;
        shared.stats.uploaded_blobs.fetch_add(1, Ordering::SeqCst);
        shared
            .stats
            .uploaded_bytes
            .fetch_add(w.size, Ordering::SeqCst);
    }
    let result = reapi::ActionResult {
        output_files: vec![reapi::OutputFile {
            path: RECORDS_FILE.into(),
            digest: Some(w.to_proto()),
            ..Default::default()
        }],
        execution_metadata: Some(reapi::ExecutedActionMetadata {
            worker: WORKER.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    client.update_action_result(&key, &result)
}
