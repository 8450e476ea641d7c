//! The one error type of the crate.

use std::io;

/// Why a sandboxed run could not produce an [`crate::Outcome`].
///
/// A command that runs and fails is *not* an error: it is an `Outcome` with a
/// non-zero [`crate::ExitKind`]. Errors mean the action never ran as asked.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The kernel refused to create the namespaces. `hint` names the setting
    /// to change (or says to use `sandbox = "scratch"`).
    #[error("Linux namespaces are unavailable: {reason}\nhint: {hint}")]
    NamespacesUnavailable { reason: String, hint: String },
    /// The command could not be started (not found, not executable, bad cwd).
    /// The message names the program; `kind()` keeps `NotFound` etc.
    #[error("{0}")]
    Spawn(io::Error),
    /// Building the sandbox failed at a named step (a mount, a mountpoint).
    #[error("sandbox setup failed at {step}: {source}")]
    Setup { step: String, source: io::Error },
    /// The `RunSpec` asks for something the sandbox refuses (absolute or `..`
    /// paths, NUL bytes, an output location behind a symlink, empty argv).
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    /// Host-side I/O (creating the scratch dirs, opening the log files).
    #[error(transparent)]
    Io(#[from] io::Error),
}
