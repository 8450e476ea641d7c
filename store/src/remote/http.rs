//! The Bazel HTTP cache protocol: `GET`/`PUT {url}/ac/{hash}` holds a
//! serialized `ActionResult`, `{url}/cas/{hash}` the raw bytes of a blob;
//! hashes are lowercase hex SHA-256; 404 is a miss. Served by bazel-remote,
//! BuildBuddy, nginx's WebDAV module and others.
use super::{
    reapi, BlobSink, DigestFn, Protocol, RemoteCache, RemoteError, RemoteResult, ServerInfo,
    Settings, WireDigest,
};
use prost::Message as _;
use std::io::Read;
use ureq::http::StatusCode;

/// Blobs at least this large are looked up with `HEAD` before a `PUT`.
const HEAD_BEFORE_PUT: u64 = 64 * 1024;

pub struct HttpCache {
    base: String,
    agent: ureq::Agent,
    auth_header: Option<(String, String)>,
    auth_source: Option<String>,
    /// `https://` without a client certificate configured.
    tls_without_client_cert: bool,
}

impl HttpCache {
    pub fn new(settings: &Settings) -> Result<HttpCache, String> {
        let base = settings.url.trim_end_matches('/').to_string();
        let tls = tls_config(settings)?;
        let tls_without_client_cert =
            base.to_ascii_lowercase().starts_with("https://") && settings.tls.client_cert.is_none();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(settings.timeout))
            .timeout_per_read(Some(settings.timeout))
            .timeout_per_write(Some(settings.timeout))
            .max_redirects(0)
            .user_agent(concat!("vbuild/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build();
        Ok(HttpCache {
            base,
            agent: config.new_agent(),
            auth_header: settings.auth.as_ref().map(|a| a.header()),
            auth_source: settings.auth.as_ref().map(|a| a.source.clone()),
            tls_without_client_cert,
        })
    }

    fn url(&self, kind: &str, digest: &WireDigest) -> String {
        format!("{}/{kind}/{}", self.base, digest.hex())
    }

    fn with_auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.auth_header {
            Some((name, value)) => req.header(name.as_str(), value.as_str()),
            None => req,
        }
    }

    /// Maps a non-success status to an error naming the problem.
    fn status_error(&self, what: &str, status: StatusCode) -> RemoteError {
        let status_text = format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let hint = match &self.auth_source {
                    Some(src) => format!("the server refused the credentials from {src}"),
                    None => "the server wants credentials and none are configured (set credentials_env or credentials_file under [remote])".to_string(),
                };
                RemoteError::Unauthorized(format!("{what}: HTTP {status_text}: {hint}"))
            }
            // nginx's answer when it wants a client certificate and got none.
            StatusCode::BAD_REQUEST if self.tls_without_client_cert => RemoteError::Unauthorized(format!(
                "{what}: HTTP {status_text}: if the server wants a client certificate, set tls_client_cert and tls_client_key under [remote]"
            )),
            StatusCode::PAYLOAD_TOO_LARGE => RemoteError::Unavailable(format!(
                "{what}: HTTP {status_text} (raise the server's upload limit, e.g. nginx client_max_body_size)"
            )),
            _ => RemoteError::Unavailable(format!("{what}: HTTP {status_text}")),
        }
    }
}

fn transport_error(what: &str, e: ureq::Error) -> RemoteError {
    match tls_error(&e) {
        Some(tls) => tls_failure(what, tls),
        None => RemoteError::Unavailable(format!("{what}: {e}")),
    }
}

/// The TLS error behind `e`, if any (rustls reports handshake failures
/// through the I/O error of the connection).
fn tls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(tls) => Some(tls),
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// A certificate the client does not trust, or the server refusing the
/// client's, will not get better by retrying: that is `Unauthorized`,
/// which stops asking the remote at once. Other TLS errors count as the
/// server being unavailable.
fn tls_failure(what: &str, tls: &rustls::Error) -> RemoteError {
    use rustls::AlertDescription as A;
    match tls {
        rustls::Error::InvalidCertificate(_) => RemoteError::Unauthorized(format!(
            "{what}: TLS: {tls}: the server's certificate is not trusted \
             (if a CA of your own signed it, set tls_ca under [remote] to that CA's PEM file)"
        )),
        rustls::Error::AlertReceived(
            A::BadCertificate
            | A::CertificateRequired
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::UnknownCA
            | A::AccessDenied,
        ) => RemoteError::Unauthorized(format!(
            "{what}: TLS: {tls}: the server refused the connection \
             (check tls_client_cert and tls_client_key under [remote])"
        )),
        _ => RemoteError::Unavailable(format!("{what}: TLS: {tls}")),
    }
}

fn read_pem(path: &std::path::Path) -> Result<Vec<ureq::tls::PemItem<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    ureq::tls::parse_pem(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM file: {e}", path.display()))
}

fn tls_config(settings: &Settings) -> Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{ClientCert, PemItem, RootCerts, TlsConfig};
    let mut builder = TlsConfig::builder();
    if let Some(ca) = &settings.tls.ca {
        let certs: Vec<_> = read_pem(ca)?
            .into_iter()
            .filter_map(|i| match i {
                PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(format!("{}: no certificate in it", ca.display()));
        }
        builder = builder.root_certs(RootCerts::new_with_certs(&certs));
    }
    match (&settings.tls.client_cert, &settings.tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<_> = read_pem(cert)?
                .into_iter()
                .filter_map(|i| match i {
                    PemItem::Certificate(c) => Some(c),
                    _ => None,
                })
                .collect();
            let key = read_pem(key)?
                .into_iter()
                .find_map(|i| match i {
                    PemItem::PrivateKey(k) => Some(k),
                    _ => None,
                })
                .ok_or_else(|| format!("{}: no private key in it", key.display()))?;
            builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        (None, None) => {}
        _ => return Err("tls_client_cert and tls_client_key go together".to_string()),
    }
    Ok(builder.build())
}

impl RemoteCache for HttpCache {
    fn endpoint(&self) -> &str {
        &self.base
    }

    fn protocol(&self) -> Protocol {
        Protocol::Http
    }

    fn digest_fn(&self) -> DigestFn {
        DigestFn::Sha256
    }

    fn server_info(&self) -> RemoteResult<ServerInfo> {
        // The protocol has no capabilities call; a HEAD of a blob nobody
        // has tells whether the server answers, and accepts our credentials.
        let probe = WireDigest {
            hash: [0; 32],
            size: 0,
        };
        let what = format!("HEAD /cas/{}", probe.hex());
        let resp = self
            .with_auth(self.agent.head(&self.url("cas", &probe)))
            .call()
            .map_err(|e| transport_error(&what, e))?;
        let status = resp.status();
        if !matches!(status, StatusCode::OK | StatusCode::NOT_FOUND) {
            return Err(self.status_error(&what, status));
        }
        let server = resp
            .headers()
            .get("server")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(not given)")
            .to_string();
        Ok(ServerInfo {
            lines: vec![
                ("protocol".into(), "Bazel HTTP cache (/ac/, /cas/)".into()),
                ("server".into(), super::truncate_text(&server)),
                ("digest function".into(), "SHA-256 (the protocol's)".into()),
                (
                    "capabilities".into(),
                    "none to query in this protocol".into(),
                ),
            ],
            ac_update_allowed: None,
        })
    }

    fn get_action_result(
        &self,
        key: &WireDigest,
        max_bytes: u64,
    ) -> RemoteResult<Option<reapi::ActionResult>> {
        let what = format!("GET /ac/{}", key.hex());
        let mut resp = self
            .with_auth(self.agent.get(&self.url("ac", key)))
            .call()
            .map_err(|e| transport_error(&what, e))?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s => return Err(self.status_error(&what, s)),
        }
        if resp.body().content_length().is_some_and(|n| n > max_bytes) {
            return Err(RemoteError::Rejected(format!(
                "action result {} is over the limit of {max_bytes} bytes (max_action_result_size)",
                key.hex()
            )));
        }
        let bytes = match resp.body_mut().with_config().limit(max_bytes).read_to_vec() {
            Ok(b) => b,
            Err(ureq::Error::BodyExceedsLimit(_)) => {
                return Err(RemoteError::Rejected(format!(
                "action result {} is over the limit of {max_bytes} bytes (max_action_result_size)",
                key.hex()
            )))
            }
            Err(e) => return Err(transport_error(&what, e)),
        };
        reapi::ActionResult::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| {
                RemoteError::Rejected(format!(
                    "action result {} is not an ActionResult: {e}",
                    key.hex()
                ))
            })
    }

    fn update_action_result(
        &self,
        key: &WireDigest,
        result: &reapi::ActionResult,
    ) -> RemoteResult<()> {
        let what = format!("PUT /ac/{}", key.hex());
        let resp = self
            .with_auth(self.agent.put(&self.url("ac", key)))
            .header("Content-Type", "application/octet-stream")
            .send(result.encode_to_vec())
            .map_err(|e| transport_error(&what, e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(&what, resp.status()))
        }
    }

    fn find_missing(&self, blobs: &[WireDigest]) -> RemoteResult<Vec<WireDigest>> {
        // No batch call in this protocol: small blobs are simply sent again
        // (PUT is idempotent); large ones are asked about first.
        let mut missing = Vec::new();
        for d in blobs {
            if d.size < HEAD_BEFORE_PUT {
                missing.push(*d);
                continue;
            }
            let what = format!("HEAD /cas/{}", d.hex());
            let resp = self
                .with_auth(self.agent.head(&self.url("cas", d)))
                .call()
                .map_err(|e| transport_error(&what, e))?;
            match resp.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => missing.push(*d),
                s => return Err(self.status_error(&what, s)),
            }
        }
        Ok(missing)
    }

    fn read_blob(&self, digest: &WireDigest, sink: &mut dyn BlobSink) -> RemoteResult<bool> {
        let what = format!("GET /cas/{}", digest.hex());
        let mut resp = self
            .with_auth(self.agent.get(&self.url("cas", digest)))
            .call()
            .map_err(|e| transport_error(&what, e))?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(false),
            s => return Err(self.status_error(&what, s)),
        }
        // The sink enforces the size; no body limit here (default is 10 MB).
        let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(RemoteError::Unavailable(format!("{what}: {e}"))),
            };
            sink.accept(&buf[..n])
                .map_err(|e| RemoteError::Rejected(format!("blob {}: {e}", digest.hex())))?;
        }
        Ok(true)
    }

    fn write_blob(&self, digest: &WireDigest, source: super::BlobSource<'_>) -> RemoteResult<()> {
        let what = format!("PUT /cas/{}", digest.hex());
        let put = self
            .with_auth(self.agent.put(&self.url("cas", digest)))
            .header("Content-Type", "application/octet-stream");
        let sent = match source {
            super::BlobSource::File(path) => {
                let file = std::fs::File::open(path)
                    .map_err(|e| RemoteError::Unavailable(format!("{what}: local blob: {e}")))?;
                put.send(file)
            }
            super::BlobSource::Bytes(bytes) => put.send(bytes),
        };
        let resp = sent.map_err(|e| transport_error(&what, e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(&what, resp.status()))
        }
    }
}
