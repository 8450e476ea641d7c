//! vbuild-schema: the versioned file formats vbuild reads.
//!
//! - [`label`]: target labels (`//pkg:target`) and patterns (`//...`).
//! - [`build_file`]: `BUILD.toml` (targets) and `vbuild.toml` (workspace).
//! - [`diagnostic`]: errors that name file, line and column, with the
//!   offending source line, so a user can fix bad input without guessing.
//!
//! JSON Schemas for editors live next to this crate in `schema/json/`; the
//! IPC protocol definition lives in `schema/ipc/`.

pub mod build_file;
pub mod diagnostic;
pub mod label;
pub mod limits;

pub use build_file::{
    apply_defaults, parse_build_file, parse_workspace_file, CacheSetting, Command, RemoteAuth,
    RemoteDef, RemoteMode, SandboxSetting, TargetDef, TargetDefaults, WorkspaceDef,
};
pub use diagnostic::Diagnostic;
pub use label::{Label, LabelError, Pattern};
pub use toml::Spanned;
