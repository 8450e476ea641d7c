//! Shared helpers for the sandbox integration tests.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;
use vbuild_sandbox::{probe_namespaces, Outcome, RunSpec, SandboxError, SandboxMode, Scratch};

pub const BOTH: [SandboxMode; 2] = [SandboxMode::Scratch, SandboxMode::Namespaces];

/// `true` when the namespace sandbox works here; otherwise prints why the
/// calling test is skipped.
pub fn namespaces_or_skip(test: &str) -> bool {
    match probe_namespaces() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIP {test}: {e}");
            false
        }
    }
}

/// Modes to exercise in this environment.
pub fn modes(test: &str) -> Vec<SandboxMode> {
    let mut m = vec![SandboxMode::Scratch];
    if namespaces_or_skip(test) {
        m.push(SandboxMode::Namespaces);
    }
    m
}

pub struct Fixture {
    pub scratch: Scratch,
    pub parent: TempDir,
}

pub fn fixture() -> Fixture {
    // As vbuild's `main` does: the sandbox shares the caller's memory with
    // the supervisor only when it is not dumpable.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let parent = tempfile::tempdir().expect("tempdir");
    let scratch = Scratch::create(parent.path()).expect("scratch");
    Fixture { scratch, parent }
}

impl Fixture {
    /// Stages a file into the scratch workspace (as the orchestrator does).
    pub fn stage(&self, rel: &str, contents: &str) {
        let p = self.scratch.host_ws().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, contents).expect("stage");
    }

    pub fn spec(&self, mode: SandboxMode, argv: &[&str]) -> RunSpec {
        let layout = self.scratch.layout(mode);
        RunSpec {
            argv: argv.iter().map(OsString::from).collect(),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("HOME".into(), layout.home.into()),
                ("TMPDIR".into(), layout.tmp.into()),
                ("LC_ALL".into(), "C".into()),
                ("TZ".into(), "UTC".into()),
            ],
            cwd: "".into(),
            writable: vec!["dist/".into()],
            timeout: Some(Duration::from_secs(60)),
            stdout: self.scratch.host_out().join("stdout"),
            stderr: self.scratch.host_out().join("stderr"),
            ..RunSpec::default()
        }
    }

    pub fn sh(&self, mode: SandboxMode, script: &str) -> RunSpec {
        self.spec(mode, &["sh", "-c", script])
    }

    pub fn run(&self, mode: SandboxMode, spec: &RunSpec) -> Result<Run, SandboxError> {
        let outcome = self.scratch.run(mode, spec)?;
        Ok(Run {
            outcome,
            stdout: fs::read_to_string(&spec.stdout).unwrap_or_default(),
            stderr: fs::read_to_string(&spec.stderr).unwrap_or_default(),
        })
    }

    /// Runs a shell script and returns the result, panicking on sandbox errors.
    pub fn run_sh(&self, mode: SandboxMode, script: &str) -> Run {
        let spec = self.sh(mode, script);
        self.run(mode, &spec)
            .unwrap_or_else(|e| panic!("{mode:?}: sandbox error: {e}"))
    }

    pub fn ws_file(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.scratch.host_ws().join(rel)).ok()
    }
}

#[derive(Debug)]
pub struct Run {
    pub outcome: Outcome,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.outcome.success()
    }
}

pub fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}
