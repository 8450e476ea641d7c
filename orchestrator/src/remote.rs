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
use crate::action::{Ctx, Outcome, State};
use crate::globs::{out_glob, OutSpec};
use crate::key::{self, KeyInputs, Record, StaticKey};
use crate::workspace::{Target, Workspace};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use vbuild_schema::{RemoteAuth, RemoteDef, RemoteMode};
use vbuild_store::remote::{
    self as wire, reapi, Auth, AuthKind, DigestFn, RemoteCache, RemoteError, Secret, Settings,
    TlsFiles, VecSink, WireDigest,
};
use vbuild_store::{ActionResult, CacheEntry, Digest, EntryKind, Store, Tree, TreeEntry};

/// Defaults of the `[remote]` settings.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_BLOB: u64 = 1 << 30;
pub const DEFAULT_MAX_RESULT: u64 = 64 << 20;
pub const DEFAULT_CONNECTIONS: usize = 4;
/// Failures (down, timing out, erroring) after which a run stops asking.
pub const MAX_FAILURES: usize = 3;
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

/// The environment variables that override `[remote]`.
pub const ENV_URL: &str = "VBUILD_REMOTE_URL";
pub const ENV_MODE: &str = "VBUILD_REMOTE_MODE";
pub const ENV_INSTANCE: &str = "VBUILD_REMOTE_INSTANCE";
/// Where the credential is read from when `[remote]` names no source.
pub const ENV_CREDENTIALS: &str = "VBUILD_REMOTE_CREDENTIALS";

/// Command-line overrides (`--remote`, `--remote-mode`, …).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub url: Option<String>,
    pub mode: Option<RemoteMode>,
    pub instance: Option<String>,
    pub disabled: bool,
}

/// A resolved remote configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    pub mode: RemoteMode,
    pub max_blob: u64,
    pub max_result: u64,
    pub connections: usize,
}

impl Config {
    pub fn auth_description(&self) -> String {
        match &self.settings.auth {
            Some(a) => format!(
                "{}, from {}",
                match &a.kind {
                    AuthKind::Bearer => "bearer".to_string(),
                    AuthKind::Basic => "basic".to_string(),
                    AuthKind::Header(h) => format!("header {h}"),
                },
                a.source
            ),
            None => "none".into(),
        }
    }
}

/// `scheme://user:pass@host` → `scheme://<credentials removed>@host`, and
/// whether there were credentials.
fn strip_userinfo(url: &str) -> (String, bool) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), false);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => (
            format!("{scheme}://<credentials removed>@{}", &rest[at + 1..]),
            true,
        ),
        None => (url.to_string(), false),
    }
}

fn parse_mode(text: &str) -> Result<RemoteMode> {
    match text {
        "read-write" => Ok(RemoteMode::ReadWrite),
        "read-only" => Ok(RemoteMode::ReadOnly),
        other => bail!("remote mode must be read-write or read-only, not {other:?}"),
    }
}

/// Resolves the remote from vbuild.toml, then the environment, then flags
/// (each overriding the one before). `Ok(None)`: no remote in this run.
/// A credential that is configured but missing is an error naming where
/// it was looked for (never its value).
pub fn resolve(
    ws: &Workspace,
    overrides: &Overrides,
    env: &HashMap<String, String>,
) -> Result<Option<Config>> {
    if overrides.disabled {
        return Ok(None);
    }
    let def = ws.def.remote.clone().unwrap_or_default();
    let from_env = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
    let url = overrides
        .url
        .clone()
        .or_else(|| from_env(ENV_URL))
        .or(def.url.clone());
    let Some(url) = url else {
        return Ok(None);
    };
    let (shown, had_credentials) = strip_userinfo(&url);
    if had_credentials {
        bail!(
            "the remote URL {shown} carries credentials; they would end up in logs and shell history. \
             Remove them and put the credential in an environment variable named by \
             credentials_env (default {ENV_CREDENTIALS}) or in a file named by credentials_file, under [remote]"
        );
    }
    if wire::Protocol::of_url(&url).is_none() {
        bail!("remote url must start with http://, https://, grpc:// or grpcs://, not {url:?}");
    }
    let mode = match (&overrides.mode, from_env(ENV_MODE)) {
        (Some(m), _) => *m,
        (None, Some(text)) => parse_mode(&text).with_context(|| format!("${ENV_MODE}"))?,
        (None, None) => def.mode.unwrap_or(RemoteMode::ReadWrite),
    };
    let instance = overrides
        .instance
        .clone()
        .or_else(|| from_env(ENV_INSTANCE))
        .or(def.instance.clone())
        .unwrap_or_default();
    let timeout = match &def.timeout {
        Some(t) => vbuild_schema::build_file::parse_duration(t)
            .with_context(|| format!("[remote] timeout = {t:?}: use e.g. \"10s\""))?,
        None => DEFAULT_TIMEOUT,
    };
    let path = |p: &Option<String>| p.as_ref().map(|p| ws.root.join(p));
    let settings = Settings {
        url: url.trim_end_matches('/').to_string(),
        instance,
        auth: credentials(ws, &def, env)?,
        tls: TlsFiles {
            ca: path(&def.tls_ca),
            client_cert: path(&def.tls_client_cert),
            client_key: path(&def.tls_client_key),
        },
        timeout,
    };
    Ok(Some(Config {
        settings,
        mode,
        max_blob: def.max_blob_size.unwrap_or(DEFAULT_MAX_BLOB),
        max_result: def.max_action_result_size.unwrap_or(DEFAULT_MAX_RESULT),
        connections: def.connections.unwrap_or(DEFAULT_CONNECTIONS).max(1),
    }))
}

fn credentials(
    ws: &Workspace,
    def: &RemoteDef,
    env: &HashMap<String, String>,
) -> Result<Option<Auth>> {
    let kind = match (def.auth, &def.auth_header) {
        (Some(RemoteAuth::Header), Some(h)) if valid_header_name(h) => AuthKind::Header(h.clone()),
        (Some(RemoteAuth::Header), Some(h)) => {
            bail!("[remote] auth_header = {h:?} is not a valid header name")
        }
        (Some(RemoteAuth::Header), None) => {
            bail!("[remote] auth = \"header\" needs auth_header, the header's name")
        }
        (_, Some(_)) => bail!("[remote] auth_header is only used with auth = \"header\""),
        (Some(RemoteAuth::Basic), None) => AuthKind::Basic,
        (Some(RemoteAuth::Bearer) | None, None) => AuthKind::Bearer,
    };
    let (secret, source) = if let Some(name) = &def.credentials_env {
        match env.get(name).filter(|v| !v.trim().is_empty()) {
            Some(v) => (v.clone(), format!("${name}")),
            None => bail!("[remote] credentials_env = {name:?}, but ${name} is not set (or empty)"),
        }
    } else if let Some(file) = &def.credentials_file {
        let path = ws.root.join(file);
        match std::fs::read_to_string(&path) {
            Ok(v) if !v.trim().is_empty() => (v, format!("file {}", path.display())),
            Ok(_) => bail!("[remote] credentials_file {} is empty", path.display()),
            Err(e) => bail!("[remote] credentials_file {}: {e}", path.display()),
        }
    } else if let Some(v) = env.get(ENV_CREDENTIALS).filter(|v| !v.trim().is_empty()) {
        (v.clone(), format!("${ENV_CREDENTIALS}"))
    } else {
        if def.auth.is_some() {
            bail!("[remote] auth is set, but no credential: set credentials_env or credentials_file, or ${ENV_CREDENTIALS}");
        }
        return Ok(None);
    };
    if kind == AuthKind::Basic && !secret.contains(':') {
        bail!("[remote] auth = \"basic\" wants the credential as user:password; the one from {source} has no ':'");
    }
    Ok(Some(Auth {
        kind,
        secret: Secret::new(secret),
        source,
    }))
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Bounded parallelism for transfers, shared by all actions of a run.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

struct SlotGuard<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n),
            cv: Condvar::new(),
        }
    }
    fn acquire(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        SlotGuard(self)
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

/// Tracks failures: the first one is reported, and after `MAX_FAILURES`
/// (or one refusal of the credentials) the remote is not asked again.
struct Health {
    endpoint: String,
    failures: AtomicUsize,
    disabled: AtomicBool,
}

impl Health {
    fn usable(&self) -> bool {
        !self.disabled.load(Ordering::SeqCst)
    }

    /// Notes an error; content rejections are not the server's health.
    fn report(&self, e: &RemoteError) {
        match e {
            RemoteError::Rejected(_) => {}
            RemoteError::Unauthorized(msg) => {
                if !self.disabled.swap(true, Ordering::SeqCst) {
                    eprintln!(
                        "warning: remote cache {}: {msg}; not using it for the rest of this run",
                        self.endpoint
                    );
                }
            }
            RemoteError::Unavailable(msg) => {
                let n = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
                if n == 1 {
                    eprintln!(
                        "warning: remote cache {}: {msg}; building locally where it does not answer",
                        self.endpoint
                    );
                }
                if n >= MAX_FAILURES && !self.disabled.swap(true, Ordering::SeqCst) {
                    eprintln!(
                        "warning: remote cache {}: {n} failures, not asking it again in this run",
                        self.endpoint
                    );
                }
            }
        }
    }
}

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

/// One action's result to upload.
pub struct Upload {
    pub weak: Digest,
    pub strong: Digest,
    pub record: String,
    pub tree: Arc<Tree>,
    pub result: ActionResult,
}

/// The remote of one run: lookups happen on the action's worker thread;
/// uploads are queued to background threads so the build never waits for
/// them until it ends.
pub struct Remote {
    shared: Arc<Shared>,
    queue: Mutex<Option<mpsc::Sender<Upload>>>,
    uploaders: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// What a lookup found.
#[derive(Default)]
pub struct Lookup {
    /// A restored hit.
    pub outcome: Option<Outcome>,
    /// One line per rejected remote entry (it was treated as a miss).
    pub warnings: Vec<String>,
}

impl Remote {
    /// Connects (lazily: nothing is sent yet) and starts the uploaders,
    /// which use their own handle on the store at `store_root`.
    pub fn start(cfg: Config, store_root: &Path, rt: &tokio::runtime::Handle) -> Result<Remote> {
        let client = wire::connect(&cfg.settings, rt).map_err(anyhow::Error::msg)?;
        let shared = Arc::new(Shared {
            health: Health {
                endpoint: client.endpoint().to_string(),
                failures: AtomicUsize::new(0),
                disabled: AtomicBool::new(false),
            },
            slots: Slots::new(cfg.connections),
            stats: Stats::default(),
            client,
            cfg,
        });
        let (tx, rx) = mpsc::channel::<Upload>();
        let rx = Arc::new(Mutex::new(rx));
        let mut uploaders = Vec::new();
        if shared.cfg.mode == RemoteMode::ReadWrite {
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
        }
        Ok(Remote {
            shared,
            queue: Mutex::new(Some(tx)),
            uploaders: Mutex::new(uploaders),
        })
    }

    fn client(&self) -> &dyn RemoteCache {
        &*self.shared.client
    }

    /// Queues an upload (read-write mode only); returns at once.
    pub fn upload(&self, job: Upload) {
        if self.shared.cfg.mode != RemoteMode::ReadWrite || !self.shared.health.usable() {
            return;
        }
        if let Some(tx) = &*self.queue.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = tx.send(job);
        }
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

    /// After a local miss: asks the remote for the action, under every
    /// record it or the local cache knows (the default record last). A
    /// hit is verified, stored locally, restored, and returned.
    pub fn lookup(
        &self,
        ctx: &Ctx,
        target: &Target,
        weak: &Digest,
        fixed: &StaticKey,
        inputs: &BTreeMap<String, EntryKind>,
    ) -> Result<Lookup> {
        let mut found = Lookup::default();
        if !self.shared.health.usable() {
            return Ok(found);
        }
        let df = self.client().digest_fn();
        let label = target.label.to_string();
        let mut candidates: Vec<String> = match self.remote_records(weak) {
            Ok(list) => list,
            Err(RemoteError::Rejected(e)) => {
                found
                    .warnings
                    .push(format!("remote records rejected: {e}; treated as a miss"));
                vec![]
            }
            Err(e) => {
                self.shared.health.report(&e);
                return Ok(found);
            }
        };
        candidates.extend(ctx.store.action_cache.records(weak)?);
        let default_record =
            crate::action::narrowed_record(ctx, target, &vbuild_ipc::Declarations::default());
        candidates.push(serde_json::to_string(&default_record)?);
        let mut seen = BTreeSet::new();
        candidates.retain(|c| seen.insert(c.clone()));
        for text in candidates {
            if !self.shared.health.usable() {
                break;
            }
            let Ok(record) = serde_json::from_str::<Record>(&text) else {
                found.warnings.push(
                    "remote records rejected: a record is not valid JSON; treated as a miss".into(),
                );
                continue;
            };
            let strong = key::strong_key(weak, &record, inputs, ctx);
            let ac = ac_key(df, ACTION_TAG, &strong);
            let result = match self
                .client()
                .get_action_result(&ac, self.shared.cfg.max_result)
            {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(RemoteError::Rejected(e)) => {
                    found
                        .warnings
                        .push(format!("remote entry rejected: {e}; treated as a miss"));
                    continue;
                }
                Err(e) => {
                    self.shared.health.report(&e);
                    return Ok(found);
                }
            };
            let start = Instant::now();
            match self.fetch_entry(ctx, target, inputs, &result) {
                Ok(local) => {
                    // Into the local cache first: the next run hits locally.
                    let explain = KeyInputs {
                        fixed: fixed.clone(),
                        inputs: inputs.clone(),
                        env_values: key::env_values(&record, ctx),
                        record: record.clone(),
                    };
                    ctx.store.action_cache.put(&CacheEntry {
                        weak_key: *weak,
                        strong_key: strong,
                        record: text.clone(),
                        workspace: ctx.ws.name().to_string(),
                        label: label.clone(),
                        explain: ctx.store.cas.put_bytes(&serde_json::to_vec(&explain)?)?,
                        result: local.clone(),
                    })?;
                    let mut outcome = crate::action::restore(ctx, target, &local)?;
                    outcome.state = State::RemoteHit;
                    outcome.duration = start.elapsed();
                    self.shared.stats.hits.fetch_add(1, Ordering::SeqCst);
                    found.outcome = Some(outcome);
                    return Ok(found);
                }
                Err(RemoteError::Rejected(e)) => found
                    .warnings
                    .push(format!("remote entry rejected: {e}; treated as a miss")),
                Err(e) => {
                    self.shared.health.report(&e);
                    return Ok(found);
                }
            }
        }
        Ok(found)
    }

    /// The records list stored under the weak key (empty when none).
    fn remote_records(&self, weak: &Digest) -> Result<Vec<String>, RemoteError> {
        let df = self.client().digest_fn();
        let key = ac_key(df, RECORDS_TAG, weak);
        let Some(result) = self.client().get_action_result(&key, MAX_RECORDS_BLOB)? else {
            return Ok(vec![]);
        };
        let file = result
            .output_files
            .iter()
            .find(|f| f.path == RECORDS_FILE)
            .ok_or_else(|| {
                RemoteError::Rejected(format!("no {RECORDS_FILE} in the records entry"))
            })?;
        let digest = file
            .digest
            .as_ref()
            .ok_or_else(|| RemoteError::Rejected("records file without a digest".into()))
            .and_then(|d| WireDigest::from_proto(d).map_err(RemoteError::Rejected))?;
        let bytes = fetch_small(self.client(), &digest, MAX_RECORDS_BLOB)?;
        let list: RecordsBlob = serde_json::from_slice(&bytes)
            .map_err(|e| RemoteError::Rejected(format!("records list: {e}")))?;
        Ok(list.records.into_iter().take(MAX_REMOTE_RECORDS).collect())
    }

    /// Checks a remote `ActionResult` against the target, downloads and
    /// verifies every blob it names, and only then puts them into the
    /// local store. Returns the local `ActionResult`. On any rejection the
    /// store and the workspace are left as they were.
    // `output_file_symlinks` and `output_directory_symlinks` are deprecated
    // in REAPI v2.1 but older servers and clients still send them.
    #[allow(deprecated)]
    fn fetch_entry(
        &self,
        ctx: &Ctx,
        target: &Target,
        inputs: &BTreeMap<String, EntryKind>,
        result: &reapi::ActionResult,
    ) -> Result<ActionResult, RemoteError> {
        let reject = RemoteError::Rejected;
        let cfg = &self.shared.cfg;
        if result.exit_code != 0 {
            return Err(reject(format!(
                "exit code {} (only successes are cached)",
                result.exit_code
            )));
        }
        if !result.output_directories.is_empty() || !result.output_directory_symlinks.is_empty() {
            return Err(reject(
                "it has output directories; vbuild stores files and symlinks only".into(),
            ));
        }
        let outs = DeclaredOuts::new(target).map_err(reject)?;
        let mut files: Vec<(String, WireDigest, bool)> = Vec::new();
        for f in &result.output_files {
            outs.check(&f.path, inputs).map_err(reject)?;
            let digest = f
                .digest
                .as_ref()
                .ok_or_else(|| reject(format!("output {:?} has no digest", f.path)))
                .and_then(|d| WireDigest::from_proto(d).map_err(reject))?;
            if digest.size > cfg.max_blob {
                return Err(reject(format!(
                    "output {:?} is {} bytes, over the limit of {} (max_blob_size)",
                    f.path, digest.size, cfg.max_blob
                )));
            }
            files.push((f.path.clone(), digest, f.is_executable));
        }
        let mut symlinks: BTreeMap<String, String> = BTreeMap::new();
        for s in result
            .output_symlinks
            .iter()
            .chain(&result.output_file_symlinks)
        {
            outs.check(&s.path, inputs).map_err(reject)?;
            check_symlink_target(&s.path, &s.target).map_err(reject)?;
            if let Some(prev) = symlinks.insert(s.path.clone(), s.target.clone()) {
                if prev != s.target {
                    return Err(reject(format!("symlink {:?} appears twice", s.path)));
                }
            }
        }
        let log = |d: &Option<reapi::Digest>, raw: &[u8], what: &str| -> Result<Log, RemoteError> {
            match d {
                Some(d) => {
                    let w = WireDigest::from_proto(d).map_err(reject)?;
                    if w.size > cfg.max_blob {
                        return Err(reject(format!("{what} is over max_blob_size")));
                    }
                    Ok(Log::Blob(w))
                }
                None => Ok(Log::Raw(raw.to_vec())),
            }
        };
        let stdout = log(&result.stdout_digest, &result.stdout_raw, "stdout")?;
        let stderr = log(&result.stderr_digest, &result.stderr_raw, "stderr")?;
        // The manifest must be a valid tree before anything is fetched.
        let probe: Vec<TreeEntry> = files
            .iter()
            .map(|(path, _, exe)| TreeEntry {
                path: path.clone(),
                kind: EntryKind::File {
                    digest: Digest([0; 32]),
                    size: 0,
                    executable: *exe,
                },
            })
            .chain(symlinks.iter().map(|(p, t)| TreeEntry {
                path: p.clone(),
                kind: EntryKind::Symlink { target: t.clone() },
            }))
            .collect();
        Tree::new(probe).map_err(|e| reject(e.to_string()))?;

        let mut wanted: BTreeSet<WireDigest> = files.iter().map(|(_, d, _)| *d).collect();
        for l in [&stdout, &stderr] {
            if let Log::Blob(d) = l {
                wanted.insert(*d);
            }
        }
        let wanted: Vec<WireDigest> = wanted.into_iter().collect();
        let pending = self.download_all(ctx.store, &wanted)?;
        // Every blob verified: now, and only now, into the store.
        let mut local: HashMap<WireDigest, Digest> = HashMap::new();
        for (w, p) in wanted.iter().zip(pending) {
            let fetched = p.is_fetched();
            let d = p
                .commit(ctx.store)
                .map_err(|e| RemoteError::Unavailable(format!("local store: {e}")))?;
            if fetched {
                let s = &self.shared.stats;
                s.downloaded_blobs.fetch_add(1, Ordering::SeqCst);
                s.downloaded_bytes.fetch_add(w.size, Ordering::SeqCst);
            }
            local.insert(*w, d);
        }
        let entries: Vec<TreeEntry> = files
            .iter()
            .map(|(path, d, exe)| TreeEntry {
                path: path.clone(),
                kind: EntryKind::File {
                    digest: local[d],
                    size: d.size,
                    executable: *exe,
                },
            })
            .chain(symlinks.into_iter().map(|(path, target)| TreeEntry {
                path,
                kind: EntryKind::Symlink { target },
            }))
            .collect();
        let tree = Tree::new(entries).map_err(|e| reject(e.to_string()))?;
        let store_err =
            |e: vbuild_store::CasError| RemoteError::Unavailable(format!("local store: {e}"));
        let log_digest = |l: &Log| -> Result<Digest, RemoteError> {
            match l {
                Log::Blob(w) => Ok(local[w]),
                Log::Raw(bytes) => ctx.store.cas.put_bytes(bytes).map_err(store_err),
            }
        };
        let declarations = result
            .execution_metadata
            .as_ref()
            .and_then(|m| {
                m.auxiliary_metadata
                    .iter()
                    .find(|a| a.type_url == DECLARATIONS_TYPE)
            })
            .and_then(|a| serde_json::from_slice(&a.value).ok())
            .unwrap_or(serde_json::Value::Null);
        Ok(ActionResult {
            output_tree: ctx
                .store
                .cas
                .put_bytes(&tree.to_canonical_bytes())
                .map_err(store_err)?,
            stdout: log_digest(&stdout)?,
            stderr: log_digest(&stderr)?,
            exit_code: 0,
            declarations,
            duration_ms: 0,
        })
    }

    /// Downloads blobs with bounded parallelism; all verified or an error.
    fn download_all<'s>(
        &self,
        store: &'s Store,
        wanted: &[WireDigest],
    ) -> Result<Vec<wire::Pending<'s>>, RemoteError> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<wire::Pending<'s>, RemoteError>>>> =
            Mutex::new((0..wanted.len()).map(|_| None).collect());
        let threads = self.shared.cfg.connections.min(wanted.len());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= wanted.len() || failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let _slot = self.shared.slots.acquire();
                    let r =
                        wire::download(store, self.client(), &wanted[i], self.shared.cfg.max_blob);
                    if r.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(wanted.len());
        // Report the first error in order; the rest (incl. good ones) drop.
        let mut first_err = None;
        for r in results {
            match r {
                Some(Ok(p)) => out.push(p),
                Some(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                None => {}
            }
        }
        match first_err {
            Some(e) => Err(e),
            None if out.len() == wanted.len() => Ok(out),
            None => Err(RemoteError::Unavailable("download interrupted".into())),
        }
    }
}

enum Log {
    Blob(WireDigest),
    Raw(Vec<u8>),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RecordsBlob {
    version: u32,
    records: Vec<String>,
}

/// The action cache key of a vbuild key (strong or weak) under `tag`.
fn ac_key(df: DigestFn, tag: &str, key: &Digest) -> WireDigest {
    let mut preimage = Vec::with_capacity(tag.len() + 33);
    preimage.extend_from_slice(tag.as_bytes());
    preimage.push(0);
    preimage.extend_from_slice(key.as_bytes());
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

/// The target's declared outputs, to confine what a remote entry may write.
struct DeclaredOuts<'a> {
    target: &'a Target,
    globs: Vec<Option<globset::GlobMatcher>>,
}

impl<'a> DeclaredOuts<'a> {
    fn new(target: &'a Target) -> Result<DeclaredOuts<'a>, String> {
        let globs = target
            .outs
            .iter()
            .map(|o| match o {
                OutSpec::Glob(g) => out_glob(g).map(Some).map_err(|e| e.to_string()),
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        Ok(DeclaredOuts { target, globs })
    }

    /// A workspace-relative path a remote entry names: normalized, inside
    /// a declared output of the target, and not one of its inputs.
    fn check(&self, path: &str, inputs: &BTreeMap<String, EntryKind>) -> Result<(), String> {
        let label = &self.target.label;
        let shown = wire_text(path);
        if path.starts_with('/') {
            return Err(format!("output path {shown} is absolute"));
        }
        if path.split('/').any(|c| c == "..") {
            return Err(format!("output path {shown} contains '..'"));
        }
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c.contains('\\') || c.contains('\0'))
        {
            return Err(format!(
                "output path {shown} is not a normalized relative path"
            ));
        }
        let package = &label.package;
        let rel = if package.is_empty() {
            Some(path)
        } else {
            path.strip_prefix(package.as_str())
                .and_then(|r| r.strip_prefix('/'))
        };
        let covered = rel.is_some_and(|rel| {
            self.target
                .outs
                .iter()
                .zip(&self.globs)
                .any(|(o, g)| o.covers(rel, g.as_ref()))
        });
        if !covered {
            return Err(format!(
                "output path {shown} is not a declared output of {label}"
            ));
        }
        if inputs.contains_key(path) {
            return Err(format!("output path {shown} is an input of {label}"));
        }
        Ok(())
    }
}

fn wire_text(s: &str) -> String {
    format!("{:?}", wire::truncate_text(s))
}

/// A symlink from a remote must point inside the workspace: relative, and
/// never climbing above the workspace root.
fn check_symlink_target(path: &str, target: &str) -> Result<(), String> {
    if target.is_empty() || target.starts_with('/') {
        return Err(format!(
            "symlink {} points to {}, outside the workspace",
            wire_text(path),
            wire_text(target)
        ));
    }
    let mut depth = path.split('/').count() as i64 - 1;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "symlink {} points to {}, outside the workspace",
                        wire_text(path),
                        wire_text(target)
                    ));
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
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
    client.update_action_result(&ac_key(df, ACTION_TAG, &job.strong), &result)?;
    shared.stats.uploaded_results.fetch_add(1, Ordering::SeqCst);
    publish_record(shared, store, &job.weak, &job.record)
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
        shared.client.write_blob(&w, &store.cas.blob_path(local))?;
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
fn publish_record(
    shared: &Shared,
    store: &Store,
    weak: &Digest,
    record: &str,
) -> Result<(), RemoteError> {
    let client = &*shared.client;
    let df = client.digest_fn();
    let key = ac_key(df, RECORDS_TAG, weak);
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
    let local = store
        .cas
        .put_bytes(&bytes)
        .map_err(|e| RemoteError::Rejected(format!("local store: {e}")))?;
    let w = WireDigest::of_bytes(df, &bytes);
    send_blobs(shared, store, &BTreeMap::from([(w, local)]))?;
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

fn human(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// `vbuild remote check`: what the server supports, and whether reads and
/// writes work. Returns the exit code.
pub fn check(cfg: &Config) -> Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client = wire::connect(&cfg.settings, rt.handle()).map_err(anyhow::Error::msg)?;
    let df = client.digest_fn();
    let mode = match cfg.mode {
        RemoteMode::ReadWrite => "read-write",
        RemoteMode::ReadOnly => "read-only",
    };
    println!("remote:          {}", client.endpoint());
    if !cfg.settings.instance.is_empty() {
        println!("instance:        {}", cfg.settings.instance);
    }
    println!("mode:            {mode}");
    println!("auth:            {}", cfg.auth_description());
    let mut ok = true;
    match client.server_info() {
        Ok(info) => {
            for (k, v) in &info.lines {
                println!("{:<16} {v}", format!("{k}:"));
            }
        }
        Err(e) => {
            println!("server:          FAILED: {e}");
            return Ok(1);
        }
    }
    // Reads: an action result nobody wrote reads as a miss.
    let nonce = format!(
        "vbuild remote check {} {:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let absent = ac_key(
        df,
        "vbuild-check-absent",
        &Digest::of_bytes(nonce.as_bytes()),
    );
    match client.get_action_result(&absent, cfg.max_result) {
        Ok(None) => println!("read:            ok (an unknown action reads as a miss)"),
        Ok(Some(_)) => println!("read:            ok (unexpectedly found the probe action)"),
        Err(e) => {
            ok = false;
            println!("read:            FAILED: {e}");
        }
    }
    if cfg.mode == RemoteMode::ReadOnly {
        println!("write:           not tried (mode = read-only)");
        return Ok(if ok { 0 } else { 1 });
    }
    // Writes: one blob and one action result (always the same key, so
    // repeated checks do not pile up), each read back and compared.
    let dir = tempfile::tempdir()?;
    let blob_path = dir.path().join("probe");
    std::fs::write(&blob_path, nonce.as_bytes())?;
    let blob = WireDigest::of_bytes(df, nonce.as_bytes());
    let probe_key = ac_key(df, "vbuild-check", &Digest::of_bytes(b"probe"));
    let write = (|| -> Result<(), RemoteError> {
        client.write_blob(&blob, &blob_path)?;
        let back = fetch_small(&*client, &blob, blob.size)?;
        if back != nonce.as_bytes() {
            return Err(RemoteError::Rejected("the blob read back differs".into()));
        }
        let result = reapi::ActionResult {
            stdout_digest: Some(blob.to_proto()),
            execution_metadata: Some(reapi::ExecutedActionMetadata {
                worker: WORKER.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        client.update_action_result(&probe_key, &result)?;
        match client.get_action_result(&probe_key, cfg.max_result)? {
            Some(r) if r.stdout_digest == result.stdout_digest => Ok(()),
            Some(_) => Err(RemoteError::Rejected(
                "the action result read back differs (another check may have raced)".into(),
            )),
            None => Err(RemoteError::Rejected(
                "the action result written is not there when read back".into(),
            )),
        }
    })();
    match write {
        Ok(()) => println!(
            "write:           ok (wrote and read back a {}-byte blob and an action result)",
            blob.size
        ),
        Err(e) => {
            ok = false;
            println!("write:           FAILED: {e}");
        }
    }
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_found_and_removed() {
        assert_eq!(
            strip_userinfo("http://u:secret@h:1/p@x"),
            ("http://<credentials removed>@h:1/p@x".to_string(), true)
        );
        assert_eq!(
            strip_userinfo("grpcs://host/a"),
            ("grpcs://host/a".to_string(), false)
        );
    }

    #[test]
    fn symlink_targets_stay_inside() {
        assert!(check_symlink_target("a/b/link", "../c").is_ok());
        assert!(check_symlink_target("a/b/link", "../../c").is_ok());
        assert!(check_symlink_target("a/b/link", "../../../c").is_err());
        assert!(check_symlink_target("link", "/etc/passwd").is_err());
        assert!(check_symlink_target("link", "x/../..").is_err());
        assert!(check_symlink_target("link", "").is_err());
    }

    #[test]
    fn ac_keys_differ_by_tag_and_function() {
        let k = Digest::of_bytes(b"k");
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
