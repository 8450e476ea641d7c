//! The remote cache as the orchestrator uses it: configuration (vbuild.toml,
//! flags, environment), lookups after a local miss, uploads after a run,
//! and the health rule that keeps a bad remote from failing a build.
//!
//! Wire mapping (docs/remote-cache.md):
//! - action cache key of an action: `H("vbuild-action-v1\0" ‖ strong key)`,
//!   where H is the remote's digest function (SHA-256 or BLAKE3) and the
//!   digest's size is that preimage's length; the strong key holds no
//!   absolute path, so two checkouts anywhere share entries;
//! - narrowing records of a weak key: an `ActionResult` under
//!   `H("vbuild-records-v1\0" ‖ weak key)` whose one output file,
//!   `vbuild-records.json`, lists the records (most recent first);
//! - an entry: `output_files` (workspace-relative paths), `output_symlinks`,
//!   `stdout_digest`, `stderr_digest`, `exit_code` 0, and the tool's
//!   declarations as JSON in `execution_metadata.auxiliary_metadata`.
//!
//! `config`: the `[remote]` settings with their overrides and credentials;
//! `lookup`: asking the remote after a local miss (what an entry may write
//! is `crate::materialize::Confinement`'s, as for every tree); `upload`:
//! background uploads; `health`: when to stop asking; `slots`: bounded
//! transfers; `check`: `vbuild remote check`.
mod check;
mod config;
mod health;
mod lookup;
mod slots;
mod upload;

pub use check::check;
pub use config::{resolve, Config, Overrides, ENV_URL};
pub use upload::Upload;

use anyhow::Result;
use health::Health;
use slots::Slots;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use vbuild_schema::RemoteMode;
use vbuild_store::remote::{self as wire, DigestFn, RemoteCache, RemoteError, VecSink, WireDigest};

/// Largest records list accepted from a remote.
const MAX_RECORDS_BLOB: u64 = 1 << 20;
/// Records kept in the remote list of one weak key.
const MAX_REMOTE_RECORDS: usize = 32;
const ACTION_TAG: &str = "vbuild-action-v1";
const RECORDS_TAG: &str = "vbuild-records-v1";
const RECORDS_FILE: &str = "vbuild-records.json";
const DECLARATIONS_TYPE: &str = "type.googleapis.com/vbuild.DeclarationsJson";
/// Written in `execution_metadata.worker` (REAPI advises a non-empty field).
const WORKER: &str = concat!("vbuild ", env!("CARGO_PKG_VERSION"));

#[derive(Default)]
struct Stats {
    hits: AtomicU64,
    uploaded_results: AtomicU64,
    uploaded_blobs: AtomicU64,
    uploaded_bytes: AtomicU64,
    downloaded_blobs: AtomicU64,
    downloaded_bytes: AtomicU64,
}

/// What the uploader threads and the action workers share.
struct Shared {
    client: Box<dyn RemoteCache>,
    cfg: Config,
    health: Health,
    slots: Slots,
    stats: Stats,
}

/// The remote of one run: lookups happen on the action's worker thread;
/// uploads are queued to background threads so the build never waits for
/// them until it ends.
pub struct Remote {
    shared: Arc<Shared>,
    queue: Mutex<Option<mpsc::Sender<Upload>>>,
    uploaders: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Remote {
    /// Connects (lazily: nothing is sent yet) and starts the uploaders,
    /// which use their own handle on the store at `store_root`.
    pub fn start(cfg: Config, store_root: &Path, rt: &tokio::runtime::Handle) -> Result<Remote> {
        let client = wire::connect(&cfg.settings, rt).map_err(anyhow::Error::msg)?;
        let shared = Arc::new(Shared {
            health: Health::new(client.endpoint()),
            slots: Slots::new(cfg.connections),
            stats: Stats::default(),
            client,
            cfg,
        });
        let (tx, rx) = mpsc::channel::<Upload>();
        let uploaders = if shared.cfg.mode == RemoteMode::ReadWrite {
            upload::spawn_uploaders(&shared, store_root, rx)?
        } else {
            Vec::new()
        };
        Ok(Remote {
            shared,
            queue: Mutex::new(Some(tx)),
            uploaders: Mutex::new(uploaders),
        })
    }

    fn client(&self) -> &dyn RemoteCache {
        &*self.shared.client
    }

    /// Waits for queued uploads, then prints what was transferred.
    pub fn finish(&self) {
        let pending = self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(pending);
        let handles =
            std::mem::take(&mut *self.uploaders.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
        let s = &self.shared.stats;
        let (hits, results) = (
            s.hits.load(Ordering::SeqCst),
            s.uploaded_results.load(Ordering::SeqCst),
        );
        let mut parts = vec![];
        if hits > 0 {
            parts.push(format!(
                "{hits} restored ({} blobs, {} down)",
                s.downloaded_blobs.load(Ordering::SeqCst),
                human(s.downloaded_bytes.load(Ordering::SeqCst)),
            ));
        }
        if results > 0 {
            parts.push(format!(
                "{results} uploaded ({} blobs, {} up)",
                s.uploaded_blobs.load(Ordering::SeqCst),
                human(s.uploaded_bytes.load(Ordering::SeqCst)),
            ));
        }
        if !parts.is_empty() {
            eprintln!("remote: {}", parts.join(", "));
        }
    }
}

fn human(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RecordsBlob {
    version: u32,
    records: Vec<String>,
}

/// The action cache key of a vbuild key (strong or weak) under `tag`.
fn ac_key(df: DigestFn, tag: &str, key: &[u8; 32]) -> WireDigest {
    let mut preimage = Vec::with_capacity(tag.len() + 33);
    preimage.extend_from_slice(tag.as_bytes());
    preimage.push(0);
    preimage.extend_from_slice(key);
    WireDigest::of_bytes(df, &preimage)
}

/// Reads a small blob into memory, verifying it.
fn fetch_small(
    client: &dyn RemoteCache,
    digest: &WireDigest,
    max: u64,
) -> Result<Vec<u8>, RemoteError> {
    if digest.size > max {
        return Err(RemoteError::Rejected(format!(
            "blob {} is over the limit of {max} bytes",
            digest.hex()
        )));
    }
    let mut sink = VecSink {
        bytes: Vec::new(),
        max: digest.size,
    };
    if !client.read_blob(digest, &mut sink)? {
        return Err(RemoteError::Rejected(format!(
            "blob {} is referenced but missing on the server",
            digest.hex()
        )));
    }
    if WireDigest::of_bytes(client.digest_fn(), &sink.bytes) != *digest {
        return Err(RemoteError::Rejected(format!(
            "blob {}: its bytes do not match its digest",
            digest.hex()
        )));
    }
    Ok(sink.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vbuild_store::Digest;

    #[test]
    fn ac_keys_differ_by_tag_and_function() {
        let k = *Digest::of_bytes(b"k").as_bytes();
        assert_ne!(
            ac_key(DigestFn::Sha256, ACTION_TAG, &k),
            ac_key(DigestFn::Sha256, RECORDS_TAG, &k)
        );
        assert_ne!(
            ac_key(DigestFn::Sha256, ACTION_TAG, &k),
            ac_key(DigestFn::Blake3, ACTION_TAG, &k)
        );
        assert_eq!(
            ac_key(DigestFn::Sha256, ACTION_TAG, &k).size,
            ACTION_TAG.len() as u64 + 33
        );
    }
}
