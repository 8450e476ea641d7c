//! Remote caches: the protocol clients behind one [`RemoteCache`] trait, and
//! the protocol-independent parts (wire digests, verified downloads into the
//! local CAS, the BLAKE3 ↔ SHA-256 mapping).
//!
//! Everything a remote sends is untrusted: callers cap sizes, and
//! [`download`] verifies the wire digest *and* computes the BLAKE3 of every
//! byte before anything enters the local store.
//!
//! Protocols:
//! - [`http`]: the Bazel HTTP cache protocol (`/ac/<hash>`, `/cas/<hash>`).
//! - [`grpc`]: the REAPI cache subset (Capabilities, ActionCache, CAS, ByteStream).
use crate::{BlobWriter, Digest, Store};
use sha2::Digest as _;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub mod grpc;
pub mod http;

/// The REAPI protobuf types (`ActionResult`, `Digest`, …).
pub use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
/// `google.protobuf` types (`Any`).
pub use bazel_remote_apis::google::protobuf as pb;

/// The hash a remote names blobs and action keys with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestFn {
    Sha256,
    Blake3,
}

impl DigestFn {
    pub fn name(self) -> &'static str {
        match self {
            DigestFn::Sha256 => "SHA-256",
            DigestFn::Blake3 => "BLAKE3",
        }
    }

    pub fn hash(self, bytes: &[u8]) -> [u8; 32] {
        match self {
            DigestFn::Sha256 => sha2::Sha256::digest(bytes).into(),
            DigestFn::Blake3 => *blake3::hash(bytes).as_bytes(),
        }
    }
}

/// A digest as a remote knows it: 32-byte hash plus size.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WireDigest {
    pub hash: [u8; 32],
    pub size: u64,
}

impl WireDigest {
    pub fn of_bytes(df: DigestFn, bytes: &[u8]) -> WireDigest {
        WireDigest {
            hash: df.hash(bytes),
            size: bytes.len() as u64,
        }
    }

    pub fn hex(&self) -> String {
        hex::encode(self.hash)
    }

    pub fn to_proto(&self) -> reapi::Digest {
        reapi::Digest {
            hash: self.hex(),
            size_bytes: self.size as i64,
        }
    }

    /// Parses a digest a remote sent: 64 lowercase hex chars, size ≥ 0.
    pub fn from_proto(d: &reapi::Digest) -> Result<WireDigest, String> {
        let mut hash = [0u8; 32];
        if d.hash.len() != 64
            || d.hash.bytes().any(|b| b.is_ascii_uppercase())
            || hex::decode_to_slice(&d.hash, &mut hash).is_err()
        {
            return Err(format!(
                "malformed digest hash {:?}",
                truncate_text(&d.hash)
            ));
        }
        if d.size_bytes < 0 {
            return Err(format!("negative size in digest {}", d.hash));
        }
        Ok(WireDigest {
            hash,
            size: d.size_bytes as u64,
        })
    }

    pub fn is_empty_blob(&self, df: DigestFn) -> bool {
        self.size == 0 && self.hash == df.hash(b"")
    }
}

impl fmt::Debug for WireDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", &self.hex()[..12], self.size)
    }
}

impl fmt::Display for WireDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.hex(), self.size)
    }
}

/// Cuts untrusted text for an error message.
pub fn truncate_text(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Why a remote call did not give an answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// Down, slow, or erroring (connection refused, timeout, 5xx): counts
    /// toward giving up on the remote for the rest of the run.
    #[error("{0}")]
    Unavailable(String),
    /// The server refused the credentials (or their absence), or TLS
    /// failed on a certificate: retrying will not help.
    #[error("{0}")]
    Unauthorized(String),
    /// The remote answered with something vbuild does not accept (wrong
    /// digest, too large, malformed, unsafe path): treated as a miss.
    #[error("{0}")]
    Rejected(String),
}

pub type RemoteResult<T> = Result<T, RemoteError>;

/// How to authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthKind {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `Authorization: Basic base64(<secret>)`, the secret being `user:password`.
    Basic,
    /// The secret as the value of this header (e.g. `x-buildbuddy-api-key`).
    Header(String),
}

/// A credential: never printed (Debug is redacted), never logged.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Clone, Debug)]
pub struct Auth {
    pub kind: AuthKind,
    pub secret: Secret,
    /// Where the secret came from, for messages: `env VBUILD_REMOTE_TOKEN`.
    pub source: String,
}

impl Auth {
    /// The header (lowercase name, value) that carries the credential.
    pub fn header(&self) -> (String, String) {
        use base64::Engine as _;
        let secret = self.secret.expose().trim();
        match &self.kind {
            AuthKind::Bearer => ("authorization".into(), format!("Bearer {secret}")),
            AuthKind::Basic => (
                "authorization".into(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(secret)
                ),
            ),
            AuthKind::Header(name) => (name.to_ascii_lowercase(), secret.to_string()),
        }
    }
}

/// PEM files for TLS (`https://`, `grpcs://`).
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// Extra CA certificates to trust (instead of the system roots).
    pub ca: Option<PathBuf>,
    /// Client certificate chain and key, for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Everything needed to talk to one remote.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `http://…`, `https://…`, `grpc://…` or `grpcs://…`; no credentials in it.
    pub url: String,
    /// REAPI instance name (ignored by the HTTP protocol).
    pub instance: String,
    pub auth: Option<Auth>,
    pub tls: TlsFiles,
    /// Connecting, and waiting for any single read or write, at most this long.
    pub timeout: Duration,
}

/// Which protocol a URL selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub fn of_url(url: &str) -> Option<Protocol> {
        let scheme = url.split_once("://")?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "http" | "https" => Some(Protocol::Http),
            "grpc" | "grpcs" => Some(Protocol::Grpc),
            _ => None,
        }
    }
}

/// What `vbuild remote check` shows about a server.
#[derive(Clone, Debug, Default)]
pub struct ServerInfo {
    /// (name, value) lines, in order.
    pub lines: Vec<(String, String)>,
    /// Whether the server accepts action cache writes from us, if it says.
    pub ac_update_allowed: Option<bool>,
}

/// One remote cache server, as vbuild uses it. Calls block; implementations
/// are shared by all worker threads.
pub trait RemoteCache: Send + Sync {
    /// `http://host:port/path` (never with credentials).
    fn endpoint(&self) -> &str;
    fn protocol(&self) -> Protocol;
    /// The hash on the wire (fixed when the client is created).
    fn digest_fn(&self) -> DigestFn;
    /// What the server supports (REAPI: GetCapabilities).
    fn server_info(&self) -> RemoteResult<ServerInfo>;
    /// `None` on a miss. A result larger than `max_bytes` is `Rejected`.
    fn get_action_result(
        &self,
        key: &WireDigest,
        max_bytes: u64,
    ) -> RemoteResult<Option<reapi::ActionResult>>;
    fn update_action_result(
        &self,
        key: &WireDigest,
        result: &reapi::ActionResult,
    ) -> RemoteResult<()>;
    /// The subset of `blobs` the server does not have.
    fn find_missing(&self, blobs: &[WireDigest]) -> RemoteResult<Vec<WireDigest>>;
    /// Streams a blob's bytes into `sink`; `Ok(false)` if the server does
    /// not have it. An error from `sink` aborts the read as `Rejected`.
    fn read_blob(&self, digest: &WireDigest, sink: &mut dyn BlobSink) -> RemoteResult<bool>;
    /// Uploads a blob (its bytes hash to `digest`).
    fn write_blob(&self, digest: &WireDigest, source: BlobSource<'_>) -> RemoteResult<()>;
}

/// The bytes of a blob to upload.
#[derive(Clone, Copy, Debug)]
pub enum BlobSource<'a> {
    /// A file: a blob of the local store.
    File(&'a std::path::Path),
    /// Bytes made for the remote only (the records list of a weak key):
    /// never stored locally, where each would be a file created per upload.
    Bytes(&'a [u8]),
}

impl BlobSource<'_> {
    /// A reader of the bytes, owning what it reads (for streaming).
    pub(crate) fn open(&self) -> std::io::Result<Box<dyn std::io::Read + Send + 'static>> {
        Ok(match self {
            BlobSource::File(p) => Box::new(std::fs::File::open(p)?),
            BlobSource::Bytes(b) => Box::new(std::io::Cursor::new(b.to_vec())),
        })
    }

    /// All the bytes (small blobs).
    pub(crate) fn read_all(&self) -> std::io::Result<Vec<u8>> {
        match self {
            BlobSource::File(p) => std::fs::read(p),
            BlobSource::Bytes(b) => Ok(b.to_vec()),
        }
    }

    /// What to name in an error.
    pub(crate) fn describe(&self) -> String {
        match self {
            BlobSource::File(p) => format!("local blob {}", p.display()),
            BlobSource::Bytes(_) => "blob in memory".into(),
        }
    }
}

/// Where a downloaded blob's bytes go; refuses more bytes than announced.
pub trait BlobSink {
    fn accept(&mut self, chunk: &[u8]) -> Result<(), String>;
}

/// Opens a client for `settings.url`. Only local configuration problems
/// (unknown scheme, unreadable CA file) fail here; an unreachable server
/// fails its first call. `rt` runs the gRPC client.
pub fn connect(
    settings: &Settings,
    rt: &tokio::runtime::Handle,
) -> Result<Box<dyn RemoteCache>, String> {
    match Protocol::of_url(&settings.url) {
        Some(Protocol::Http) => Ok(Box::new(http::HttpCache::new(settings)?)),
        Some(Protocol::Grpc) => Ok(Box::new(grpc::GrpcCache::new(settings, rt.clone())?)),
        None => Err(format!(
            "remote url must start with http://, https://, grpc:// or grpcs://, not {:?}",
            truncate_text(&settings.url)
        )),
    }
}

/// The wire digest of a local blob: its BLAKE3 for BLAKE3 remotes, else the
/// SHA-256 from the mapping table, computed (and recorded) on first use.
pub fn wire_digest_of(
    store: &Store,
    df: DigestFn,
    blob: &Digest,
) -> Result<WireDigest, crate::StoreError> {
    match df {
        DigestFn::Blake3 => {
            let path = store.cas.blob_path(blob);
            let size = std::fs::metadata(&path)
                .map_err(|_| crate::CasError::Missing(*blob))?
                .len();
            Ok(WireDigest { hash: blob.0, size })
        }
        DigestFn::Sha256 => {
            if let Some((hash, size)) = store.action_cache.sha256_of(blob)? {
                return Ok(WireDigest { hash, size });
            }
            let mut sha = sha2::Sha256::new();
            let size = store.cas.read_into(blob, &mut |chunk| sha.update(chunk))?;
            let hash: [u8; 32] = sha.finalize().into();
            store.action_cache.put_sha256(blob, &hash, size)?;
            Ok(WireDigest { hash, size })
        }
    }
}

/// The local BLAKE3 of a remote blob we already hold, if the mapping knows
/// it and the CAS still has it.
pub fn local_blob_of(store: &Store, df: DigestFn, wire: &WireDigest) -> Option<Digest> {
    let blake3 = match df {
        DigestFn::Blake3 => Digest(wire.hash),
        DigestFn::Sha256 => store
            .action_cache
            .blake3_of_sha256(&wire.hash, wire.size)
            .ok()??,
    };
    store.cas.contains(&blake3).then_some(blake3)
}

/// A downloaded, verified blob not yet in the store: [`Pending::commit`]
/// moves it in; dropping it discards it (a rejected entry leaves nothing).
pub struct Pending<'a> {
    writer: Option<BlobWriter<'a>>,
    wire: WireDigest,
    df: DigestFn,
    blake3: Digest,
}

impl Pending<'_> {
    /// Whether the bytes came from the remote (not already in the store).
    pub fn is_fetched(&self) -> bool {
        self.writer.is_some()
    }

    /// The BLAKE3 the blob will have in the store.
    pub fn blake3(&self) -> Digest {
        self.blake3
    }

    pub fn commit(self, store: &Store) -> Result<Digest, crate::StoreError> {
        if let Some(writer) = self.writer {
            writer.commit()?;
        }
        if self.df == DigestFn::Sha256 {
            store
                .action_cache
                .put_sha256(&self.blake3, &self.wire.hash, self.wire.size)?;
        }
        Ok(self.blake3)
    }
}

/// Fetches one blob, refusing more than `wire.size` bytes or more than
/// `max_size`, and verifies its wire digest while computing its BLAKE3.
/// Nothing enters the store until the caller commits the result. A blob
/// the store already holds (by the mapping) is not fetched again.
pub fn download<'a>(
    store: &'a Store,
    remote: &dyn RemoteCache,
    wire: &WireDigest,
    max_size: u64,
) -> RemoteResult<Pending<'a>> {
    let df = remote.digest_fn();
    if let Some(blake3) = local_blob_of(store, df, wire) {
        return Ok(Pending {
            writer: None,
            wire: *wire,
            df,
            blake3,
        });
    }
    if wire.size > max_size {
        return Err(RemoteError::Rejected(format!(
            "blob {} is {} bytes, over the limit of {max_size} (max_blob_size)",
            wire.hex(),
            wire.size
        )));
    }
    let writer = store
        .cas
        .writer()
        .map_err(|e| RemoteError::Unavailable(format!("local store: {e}")))?;
    let mut sink = VerifyingSink {
        writer,
        sha: sha2::Sha256::new(),
        expected: wire.size,
        error: None,
    };
    if wire.is_empty_blob(df) {
        // Every server has the empty blob; many do not store it.
    } else if !remote.read_blob(wire, &mut sink)? {
        return Err(RemoteError::Rejected(format!(
            "blob {} is referenced but missing on the server",
            wire.hex()
        )));
    }
    let size = sink.writer.size();
    if size != wire.size {
        return Err(RemoteError::Rejected(format!(
            "blob {} has {size} bytes, not the {} its digest says",
            wire.hex(),
            wire.size
        )));
    }
    let blake3 = sink.writer.digest();
    let actual = match df {
        DigestFn::Sha256 => sink.sha.finalize().into(),
        DigestFn::Blake3 => blake3.0,
    };
    if actual != wire.hash {
        return Err(RemoteError::Rejected(format!(
            "blob {}: its bytes do not match its digest ({} {})",
            wire.hex(),
            df.name(),
            hex::encode(actual)
        )));
    }
    Ok(Pending {
        writer: Some(sink.writer),
        wire: *wire,
        df,
        blake3,
    })
}

struct VerifyingSink<'a> {
    writer: BlobWriter<'a>,
    sha: sha2::Sha256,
    expected: u64,
    error: Option<String>,
}

impl BlobSink for VerifyingSink<'_> {
    fn accept(&mut self, chunk: &[u8]) -> Result<(), String> {
        use std::io::Write as _;
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.writer.size() + chunk.len() as u64 > self.expected {
            let e = format!(
                "the server sent more than the {} bytes announced",
                self.expected
            );
            self.error = Some(e.clone());
            return Err(e);
        }
        self.sha.update(chunk);
        self.writer
            .write_all(chunk)
            .map_err(|e| format!("local store: {e}"))
    }
}

/// A sink collecting bytes in memory, up to `max` bytes.
pub struct VecSink {
    pub bytes: Vec<u8>,
    pub max: u64,
}

impl BlobSink for VecSink {
    fn accept(&mut self, chunk: &[u8]) -> Result<(), String> {
        if (self.bytes.len() + chunk.len()) as u64 > self.max {
            return Err(format!("more than {} bytes", self.max));
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
