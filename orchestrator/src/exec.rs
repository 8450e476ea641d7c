//! Running one action's command: a scratch directory that mirrors the
//! workspace with only the staged inputs, a scrubbed environment, stdin
//! from /dev/null, and every leftover process of the action killed at the end.
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The fixed PATH actions see; a change to it must bump `KEY_VERSION`.
pub const ACTION_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Epoch for `SOURCE_DATE_EPOCH`: 1980-01-01, the earliest zip can store.
pub const SOURCE_DATE_EPOCH: &str = "315532800";

pub struct RunSpec<'a> {
    pub argv: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    /// Absolute working directory.
    pub cwd: &'a Path,
    pub stdout: &'a Path,
    pub stderr: &'a Path,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
}

impl Exit {
    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }
    pub fn describe(&self) -> String {
        match self {
            Exit::Code(c) => format!("exit code {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
            Exit::TimedOut => "timed out".into(),
        }
    }
}

/// Runs the command in its own process group; after it exits (or times
/// out) the whole group is killed so nothing it started lives on.
pub fn run(spec: &RunSpec) -> Result<Exit> {
    let (program, args) = spec.argv.split_first().context("empty command")?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(spec.env)
        .current_dir(spec.cwd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(spec.stdout)?)
        .stderr(std::fs::File::create(spec.stderr)?)
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Report like a shell would, as the action's own failure.
            std::fs::write(
                spec.stderr,
                format!("vbuild: {program}: command not found\n"),
            )?;
            return Ok(Exit::Code(127));
        }
        Err(e) => return Err(e).with_context(|| format!("starting {program}")),
    };
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if spec.timeout.is_some_and(|t| start.elapsed() >= t) {
            break None;
        }
        std::thread::sleep(poll_interval(start.elapsed()));
    };
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let Some(status) = status else {
        let _ = child.wait();
        return Ok(Exit::TimedOut);
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Signal(s),
        (None, None) => Exit::Code(-1),
    })
}

/// Short polls first (most actions are quick), then back off.
fn poll_interval(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_millis(20) {
        Duration::from_micros(200)
    } else if elapsed < Duration::from_secs(1) {
        Duration::from_millis(2)
    } else {
        Duration::from_millis(20)
    }
}

/// A per-action scratch directory: `ws/` mirrors the workspace, `home/` and
/// `tmp/` are the action's own. Removed when dropped.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn create(parent: &Path) -> Result<Scratch> {
        std::fs::create_dir_all(parent)?;
        let dir = tempfile::Builder::new()
            .prefix("action-")
            .tempdir_in(parent)?;
        for sub in ["ws", "home", "tmp"] {
            std::fs::create_dir(dir.path().join(sub))?;
        }
        Ok(Scratch { dir })
    }
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    pub fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Staged inputs are read-only; make directories writable so the
        // TempDir removal can delete their contents.
        for entry in walkdir::WalkDir::new(self.dir.path())
            .follow_links(false)
            .into_iter()
            .flatten()
        {
            if entry.file_type().is_dir() {
                use std::os::unix::fs::PermissionsExt;
                let _ =
                    std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o755));
            }
        }
    }
}
