//! The REAPI v2 cache subset over gRPC (tonic): Capabilities, ActionCache
//! (get/update), ContentAddressableStorage (FindMissingBlobs,
//! BatchUpdateBlobs, BatchReadBlobs) and ByteStream for blobs too large for
//! one batch. Calls block on the orchestrator's tokio runtime.
//!
//! The digest function is BLAKE3 when the server's capabilities list it,
//! else SHA-256; it is decided on the first call that reaches the server.
use super::{
    reapi, BlobSink, DigestFn, Protocol, RemoteCache, RemoteError, RemoteResult, ServerInfo,
    Settings, WireDigest,
};
use bazel_remote_apis::google::bytestream::{
    byte_stream_client::ByteStreamClient, ReadRequest, WriteRequest,
};
use reapi::action_cache_client::ActionCacheClient;
use reapi::capabilities_client::CapabilitiesClient;
use reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

/// ByteStream chunk size (well under gRPC's default 4 MiB message limit).
const CHUNK: usize = 1 << 20;
/// Batch calls are used up to this many bytes of blob data (the server's
/// `max_batch_total_size_bytes` lowers it; gRPC's default message limit is 4 MiB).
const BATCH_LIMIT: u64 = 3 << 20;

/// What the server told us, once.
struct Caps {
    digest_fn: DigestFn,
    batch_limit: u64,
}

pub struct GrpcCache {
    endpoint: String,
    instance: String,
    channel: Channel,
    rt: tokio::runtime::Handle,
    auth: Option<(
        tonic::metadata::AsciiMetadataKey,
        tonic::metadata::AsciiMetadataValue,
    )>,
    auth_source: Option<String>,
    timeout: Duration,
    caps: OnceLock<Caps>,
    uploads: AtomicU64,
}

impl GrpcCache {
    pub fn new(settings: &Settings, rt: tokio::runtime::Handle) -> Result<GrpcCache, String> {
        let (scheme, rest) = settings
            .url
            .split_once("://")
            .ok_or("remote url has no scheme")?;
        let tls = scheme.eq_ignore_ascii_case("grpcs");
        let http_url = format!("{}://{rest}", if tls { "https" } else { "http" });
        let mut endpoint = Endpoint::from_shared(http_url)
            .map_err(|e| format!("remote url: {e}"))?
            .connect_timeout(settings.timeout)
            .user_agent(concat!("vbuild/", env!("CARGO_PKG_VERSION")))
            .map_err(|e| e.to_string())?;
        if tls {
            let mut config = ClientTlsConfig::new();
            match &settings.tls.ca {
                Some(ca) => {
                    let pem =
                        std::fs::read(ca).map_err(|e| format!("reading {}: {e}", ca.display()))?;
                    config = config.ca_certificate(Certificate::from_pem(pem));
                }
                None => config = config.with_native_roots(),
            }
            match (&settings.tls.client_cert, &settings.tls.client_key) {
                (Some(cert), Some(key)) => {
                    let cert = std::fs::read(cert)
                        .map_err(|e| format!("reading {}: {e}", cert.display()))?;
                    let key = std::fs::read(key)
                        .map_err(|e| format!("reading {}: {e}", key.display()))?;
                    config = config.identity(Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => return Err("tls_client_cert and tls_client_key go together".into()),
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| format!("TLS: {e}"))?;
        } else if settings.tls.ca.is_some() || settings.tls.client_cert.is_some() {
            return Err("TLS settings need a grpcs:// url".into());
        }
        let channel = {
            // connect_lazy needs a runtime context for its background task.
            let _guard = rt.enter();
            endpoint.connect_lazy()
        };
        let auth = match &settings.auth {
            Some(a) => {
                let (name, value) = a.header();
                let key = name
                    .parse::<tonic::metadata::AsciiMetadataKey>()
                    .map_err(|_| format!("{name:?} is not a valid gRPC metadata key"))?;
                let value = value
                    .parse::<tonic::metadata::AsciiMetadataValue>()
                    .map_err(|_| {
                        format!("the credential from {} is not valid in a header", a.source)
                    })?;
                Some((key, value))
            }
            None => None,
        };
        Ok(GrpcCache {
            endpoint: settings.url.clone(),
            instance: settings.instance.clone(),
            channel,
            rt,
            auth,
            auth_source: settings.auth.as_ref().map(|a| a.source.clone()),
            timeout: settings.timeout,
            caps: OnceLock::new(),
            uploads: AtomicU64::new(0),
        })
    }

    fn request<T>(&self, msg: T, timeout: Duration) -> Request<T> {
        let mut req = Request::new(msg);
        req.set_timeout(timeout);
        if let Some((k, v)) = &self.auth {
            req.metadata_mut().insert(k.clone(), v.clone());
        }
        req
    }

    /// Time allowed for moving `size` bytes: the timeout plus 1 s per MiB.
    fn transfer_timeout(&self, size: u64) -> Duration {
        self.timeout + Duration::from_secs(size >> 20)
    }

    fn status_error(&self, what: &str, s: &Status) -> RemoteError {
        let msg = format!(
            "{what}: {:?}: {}",
            s.code(),
            super::truncate_text(s.message())
        );
        match s.code() {
            Code::Unauthenticated | Code::PermissionDenied => {
                let hint = match &self.auth_source {
                    Some(src) => format!("the server refused the credentials from {src}"),
                    None => "the server wants credentials and none are configured (set credentials_env or credentials_file under [remote])".into(),
                };
                RemoteError::Unauthorized(format!("{msg}: {hint}"))
            }
            _ => RemoteError::Unavailable(msg),
        }
    }

    fn fetch_caps(&self) -> RemoteResult<reapi::ServerCapabilities> {
        let mut client = CapabilitiesClient::new(self.channel.clone());
        let req = self.request(
            reapi::GetCapabilitiesRequest {
                instance_name: self.instance.clone(),
            },
            self.timeout,
        );
        self.rt
            .block_on(client.get_capabilities(req))
            .map(|r| r.into_inner())
            .map_err(|s| self.status_error("GetCapabilities", &s))
    }

    fn caps(&self) -> RemoteResult<&Caps> {
        if let Some(c) = self.caps.get() {
            return Ok(c);
        }
        let server = self.fetch_caps()?;
        let cache = server.cache_capabilities.unwrap_or_default();
        let blake3 = reapi::digest_function::Value::Blake3 as i32;
        let digest_fn = if cache.digest_functions.contains(&blake3) {
            DigestFn::Blake3
        } else {
            DigestFn::Sha256
        };
        let batch_limit = match cache.max_batch_total_size_bytes {
            n if n > 0 => (n as u64).saturating_sub(64 << 10).min(BATCH_LIMIT),
            _ => BATCH_LIMIT,
        };
        Ok(self.caps.get_or_init(|| Caps {
            digest_fn,
            batch_limit,
        }))
    }

    /// The digest function's REAPI code; fails (without a second wait)
    /// when the server cannot be reached for its capabilities.
    fn digest_fn_code(&self) -> RemoteResult<i32> {
        Ok(match self.caps()?.digest_fn {
            DigestFn::Sha256 => reapi::digest_function::Value::Sha256 as i32,
            DigestFn::Blake3 => reapi::digest_function::Value::Blake3 as i32,
        })
    }

    /// `{instance}/blobs/[blake3/]{hash}/{size}` and the uploads variant.
    fn resource(&self, digest: &WireDigest, upload: Option<&str>) -> String {
        let mut parts = vec![];
        if !self.instance.is_empty() {
            parts.push(self.instance.clone());
        }
        if let Some(id) = upload {
            parts.push(format!("uploads/{id}"));
        }
        parts.push("blobs".into());
        if self.digest_fn() == DigestFn::Blake3 {
            parts.push("blake3".into());
        }
        parts.push(format!("{}/{}", digest.hex(), digest.size));
        parts.join("/")
    }

    /// A fresh upload id shaped like a UUID (v4 layout).
    fn upload_id(&self) -> String {
        let n = self.uploads.fetch_add(1, Ordering::SeqCst);
        let seed = format!(
            "{}-{n}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        );
        let mut b = *blake3::hash(seed.as_bytes()).as_bytes();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(&b[..16]);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

fn rpc_status(s: &Option<bazel_remote_apis::google::rpc::Status>) -> Option<(Code, String)> {
    match s {
        Some(s) if s.code != 0 => Some((Code::from_i32(s.code), s.message.clone())),
        _ => None,
    }
}

/// Reads a file in chunks for ByteStream Write (blocking reads of a local
/// blob; small next to the network).
struct FileChunks {
    file: Box<dyn Read + Send>,
    resource: String,
    offset: i64,
    size: i64,
    done: bool,
}

impl Iterator for FileChunks {
    type Item = WriteRequest;
    fn next(&mut self) -> Option<WriteRequest> {
        if self.done {
            return None;
        }
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0;
        while n < CHUNK {
            match self.file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        buf.truncate(n);
        let first = self.offset == 0;
        let req = WriteRequest {
            resource_name: if first {
                self.resource.clone()
            } else {
                String::new()
            },
            write_offset: self.offset,
            finish_write: self.offset + n as i64 >= self.size || n == 0,
            data: buf,
        };
        self.offset += n as i64;
        self.done = req.finish_write;
        Some(req)
    }
}

impl RemoteCache for GrpcCache {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn protocol(&self) -> Protocol {
        Protocol::Grpc
    }

    fn digest_fn(&self) -> DigestFn {
        // Unreachable server: SHA-256 for now; every call fails anyway.
        self.caps().map(|c| c.digest_fn).unwrap_or(DigestFn::Sha256)
    }

    fn server_info(&self) -> RemoteResult<ServerInfo> {
        let server = self.fetch_caps()?;
        let cache = server.cache_capabilities.clone().unwrap_or_default();
        let names: Vec<String> = cache
            .digest_functions
            .iter()
            .map(|f| {
                reapi::digest_function::Value::try_from(*f)
                    .map(|v| v.as_str_name().to_string())
                    .unwrap_or_else(|_| format!("#{f}"))
            })
            .collect();
        let version = |v: &Option<bazel_remote_apis::build::bazel::semver::SemVer>| match v {
            Some(v) => format!("{}.{}.{}", v.major, v.minor, v.patch),
            None => "?".into(),
        };
        let update = cache
            .action_cache_update_capabilities
            .as_ref()
            .map(|u| u.update_enabled);
        let chosen = self.caps()?.digest_fn;
        Ok(ServerInfo {
            lines: vec![
                ("protocol".into(), "REAPI v2 (gRPC)".into()),
                (
                    "api versions".into(),
                    format!(
                        "{} to {}",
                        version(&server.low_api_version),
                        version(&server.high_api_version)
                    ),
                ),
                ("digests offered".into(), names.join(", ")),
                (
                    "digest function".into(),
                    format!("{} (chosen)", chosen.name()),
                ),
                (
                    "action cache".into(),
                    match update {
                        Some(true) => "updates enabled".into(),
                        Some(false) => "read-only for clients (updates disabled)".into(),
                        None => "update capability not stated".into(),
                    },
                ),
                (
                    "max batch size".into(),
                    format!("{} bytes", cache.max_batch_total_size_bytes),
                ),
                (
                    "execution".into(),
                    if server
                        .execution_capabilities
                        .is_some_and(|e| e.exec_enabled)
                    {
                        "enabled (vbuild uses only the cache)".into()
                    } else {
                        "not offered (vbuild uses only the cache)".into()
                    },
                ),
            ],
            ac_update_allowed: update,
        })
    }

    fn get_action_result(
        &self,
        key: &WireDigest,
        max_bytes: u64,
    ) -> RemoteResult<Option<reapi::ActionResult>> {
        let digest_function = self.digest_fn_code()?;
        let mut client = ActionCacheClient::new(self.channel.clone())
            .max_decoding_message_size(max_bytes.min(usize::MAX as u64) as usize);
        let req = self.request(
            reapi::GetActionResultRequest {
                instance_name: self.instance.clone(),
                action_digest: Some(key.to_proto()),
                digest_function,
                ..Default::default()
            },
            self.timeout,
        );
        match self.rt.block_on(client.get_action_result(req)) {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s)
                if s.code() == Code::OutOfRange
                    || s.message().contains("message length too large") =>
            {
                Err(RemoteError::Rejected(format!(
                    "action result {} is over the limit of {max_bytes} bytes (max_action_result_size)",
                    key.hex()
                )))
            }
            Err(s) => Err(self.status_error("GetActionResult", &s)),
        }
    }

    fn update_action_result(
        &self,
        key: &WireDigest,
        result: &reapi::ActionResult,
    ) -> RemoteResult<()> {
        let digest_function = self.digest_fn_code()?;
        let mut client = ActionCacheClient::new(self.channel.clone());
        let req = self.request(
            reapi::UpdateActionResultRequest {
                instance_name: self.instance.clone(),
                action_digest: Some(key.to_proto()),
                action_result: Some(result.clone()),
                digest_function,
                ..Default::default()
            },
            self.timeout,
        );
        self.rt
            .block_on(client.update_action_result(req))
            .map(|_| ())
            .map_err(|s| self.status_error("UpdateActionResult", &s))
    }

    fn find_missing(&self, blobs: &[WireDigest]) -> RemoteResult<Vec<WireDigest>> {
        let digest_function = self.digest_fn_code()?;
        let mut client = ContentAddressableStorageClient::new(self.channel.clone());
        let req = self.request(
            reapi::FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: blobs.iter().map(WireDigest::to_proto).collect(),
                digest_function,
            },
            self.timeout,
        );
        let resp = self
            .rt
            .block_on(client.find_missing_blobs(req))
            .map_err(|s| self.status_error("FindMissingBlobs", &s))?
            .into_inner();
        // Only digests we asked about count (a server cannot add others).
        Ok(resp
            .missing_blob_digests
            .iter()
            .filter_map(|d| WireDigest::from_proto(d).ok())
            .filter(|d| blobs.contains(d))
            .collect())
    }

    fn read_blob(&self, digest: &WireDigest, sink: &mut dyn BlobSink) -> RemoteResult<bool> {
        let batch_limit = self.caps()?.batch_limit;
        let digest_function = self.digest_fn_code()?;
        let rejected = |e: String| RemoteError::Rejected(format!("blob {}: {e}", digest.hex()));
        if digest.size <= batch_limit {
            let mut client = ContentAddressableStorageClient::new(self.channel.clone())
                .max_decoding_message_size((batch_limit + (1 << 20)) as usize);
            let req = self.request(
                reapi::BatchReadBlobsRequest {
                    instance_name: self.instance.clone(),
                    digests: vec![digest.to_proto()],
                    digest_function,
                    ..Default::default()
                },
                self.transfer_timeout(digest.size),
            );
            let resp = self
                .rt
                .block_on(client.batch_read_blobs(req))
                .map_err(|s| self.status_error("BatchReadBlobs", &s))?
                .into_inner();
            let Some(r) = resp
                .responses
                .into_iter()
                .find(|r| r.digest.as_ref() == Some(&digest.to_proto()))
            else {
                return Err(rejected(
                    "the server's batch answer does not name it".into(),
                ));
            };
            return match rpc_status(&r.status) {
                Some((Code::NotFound, _)) => Ok(false),
                Some((code, msg)) => Err(RemoteError::Unavailable(format!(
                    "BatchReadBlobs {}: {code:?}: {}",
                    digest.hex(),
                    super::truncate_text(&msg)
                ))),
                None => {
                    if r.compressor != 0 {
                        return Err(rejected("sent compressed although not asked to".into()));
                    }
                    sink.accept(&r.data).map_err(rejected)?;
                    Ok(true)
                }
            };
        }
        let mut client = ByteStreamClient::new(self.channel.clone());
        let req = self.request(
            ReadRequest {
                resource_name: self.resource(digest, None),
                read_offset: 0,
                read_limit: 0,
            },
            self.transfer_timeout(digest.size),
        );
        let what = format!("ByteStream.Read {}", digest.hex());
        self.rt.block_on(async {
            let mut stream = match client.read(req).await {
                Ok(r) => r.into_inner(),
                Err(s) if s.code() == Code::NotFound => return Ok(false),
                Err(s) => return Err(self.status_error(&what, &s)),
            };
            loop {
                match stream.message().await {
                    Ok(Some(chunk)) => sink.accept(&chunk.data).map_err(rejected)?,
                    Ok(None) => return Ok(true),
                    Err(s) if s.code() == Code::NotFound => return Ok(false),
                    Err(s) => return Err(self.status_error(&what, &s)),
                }
            }
        })
    }

    fn write_blob(&self, digest: &WireDigest, source: super::BlobSource<'_>) -> RemoteResult<()> {
        let batch_limit = self.caps()?.batch_limit;
        let digest_function = self.digest_fn_code()?;
        let local =
            |e: std::io::Error| RemoteError::Unavailable(format!("{}: {e}", source.describe()));
        if digest.size <= batch_limit {
            let data = source.read_all().map_err(local)?;
            let mut client = ContentAddressableStorageClient::new(self.channel.clone());
            let req = self.request(
                reapi::BatchUpdateBlobsRequest {
                    instance_name: self.instance.clone(),
                    requests: vec![reapi::batch_update_blobs_request::Request {
                        digest: Some(digest.to_proto()),
                        data,
                        compressor: 0,
                    }],
                    digest_function,
                },
                self.transfer_timeout(digest.size),
            );
            let resp = self
                .rt
                .block_on(client.batch_update_blobs(req))
                .map_err(|s| self.status_error("BatchUpdateBlobs", &s))?
                .into_inner();
            for r in &resp.responses {
                if let Some((code, msg)) = rpc_status(&r.status) {
                    return Err(RemoteError::Unavailable(format!(
                        "BatchUpdateBlobs {}: {code:?}: {}",
                        digest.hex(),
                        super::truncate_text(&msg)
                    )));
                }
            }
            return Ok(());
        }
        let chunks = FileChunks {
            file: source.open().map_err(local)?,
            resource: self.resource(digest, Some(&self.upload_id())),
            offset: 0,
            size: digest.size as i64,
            done: false,
        };
        let mut client = ByteStreamClient::new(self.channel.clone());
        let mut req = Request::new(tokio_stream::iter(chunks));
        req.set_timeout(self.transfer_timeout(digest.size));
        if let Some((k, v)) = &self.auth {
            req.metadata_mut().insert(k.clone(), v.clone());
        }
        let what = format!("ByteStream.Write {}", digest.hex());
        match self.rt.block_on(client.write(req)) {
            Ok(r) if r.get_ref().committed_size == digest.size as i64 => Ok(()),
            Ok(r) => Err(RemoteError::Unavailable(format!(
                "{what}: the server committed {} of {} bytes",
                r.get_ref().committed_size,
                digest.size
            ))),
            // The blob is already there (some servers end the write early).
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(self.status_error(&what, &s)),
        }
    }
}
