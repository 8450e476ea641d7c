//! Shared harness: a real server on a tokio runtime, a temp workspace, and
//! helpers to run tool processes against it.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use vbuild_ipc::{ActionServer, Declarations, ServerConfig};

pub const SECRETS: &[&str] = &["*_TOKEN", "*SECRET*", "*_KEY", "*PASSWORD*"];

/// vbuild's own environment as the tests pretend it is.
pub fn host_env() -> HashMap<String, String> {
    [
        ("PRESENT", "yes"),
        ("NULLISH", "null"),
        ("UNTRACKED", "quiet"),
        ("VITE_A", "1"),
        ("VITE_B", "2"),
        ("PUB_X", "x"),
        ("NPM_TOKEN", "s3cr3t"),
        ("OTHER", "o"),
        // vbuild's own settings and credentials: never visible to a tool.
        ("VBUILD_REMOTE_CREDENTIALS", "remote-cred"),
        ("VBUILD_CACHE_DIR", "/store"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub ws: tempfile::TempDir,
    pub parent: tempfile::TempDir,
    pub server: Option<ActionServer>,
}

impl Harness {
    pub fn new() -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Harness::on(rt)
    }

    pub fn on(rt: tokio::runtime::Runtime) -> Harness {
        let ws = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ws.path().join("pkg")).unwrap();
        let parent = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            ws_root_inside: ws.path().to_path_buf(),
            host_env: Arc::new(host_env()),
            secrets: vbuild_ipc::SecretMatcher::new(SECRETS).unwrap(),
        };
        let server = ActionServer::start(rt.handle(), parent.path(), config).unwrap();
        Harness {
            rt,
            ws,
            parent,
            server: Some(server),
        }
    }

    pub fn server(&self) -> &ActionServer {
        self.server.as_ref().unwrap()
    }

    pub fn pkg(&self) -> PathBuf {
        self.ws.path().join("pkg")
    }

    /// The environment the runner gives the action (sandbox = host paths here).
    pub fn action_env(&self) -> Vec<(String, String)> {
        let s = self.server();
        s.action_env(s.socket_dir(), s.node_client_path())
    }

    /// A command in the action's scrubbed env, cwd = ws/pkg.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.action_env())
            .current_dir(self.pkg());
        cmd
    }

    pub fn finish(&mut self, drain: Duration) -> Declarations {
        self.server.take().unwrap().finish(drain)
    }
}

/// stdout as JSON lines; panics with stderr on failure.
pub fn json_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The `ipc_probe` example binary, built on demand when `cargo test` was
/// asked for a single test target (which does not build examples).
pub fn probe_bin() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    // target/<profile>/deps/<test> → target/<profile>/examples/ipc_probe
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let probe = profile_dir.join("examples").join("ipc_probe");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Always ask cargo: cheap when up to date, and never runs a stale probe.
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", "vbuild-ipc", "--example", "ipc_probe"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "building ipc_probe failed");
    assert!(probe.exists(), "{} missing", probe.display());
    *built = Some(probe.clone());
    probe
}

pub fn fixture_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node-fixture"))
}
