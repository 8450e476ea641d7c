//! Free functions for tool authors: one lazily created client per process,
//! and every call a no-op when the process does not run under vbuild, so a
//! tool can call these unconditionally.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::OnceLock;

use crate::client::Client;
use crate::protocol::EnvQuery;

fn client() -> Option<&'static Client> {
    static CLIENT: OnceLock<Option<Client>> = OnceLock::new();
    CLIENT.get_or_init(Client::from_env).as_ref()
}

/// True when this process runs inside a vbuild action.
pub fn under_vbuild() -> bool {
    client().is_some()
}

/// Reads under `path` (relative to the current directory) do not count as
/// inputs of this action.
pub fn ignore_input(path: impl AsRef<Path>) -> io::Result<()> {
    client().map_or(Ok(()), |c| c.ignore_input(path).map(drop))
}

/// Writes under `path` are not outputs of this action.
pub fn ignore_output(path: impl AsRef<Path>) -> io::Result<()> {
    client().map_or(Ok(()), |c| c.ignore_output(path).map(drop))
}

/// This run must not be cached.
pub fn disable_cache() -> io::Result<()> {
    client().map_or(Ok(()), Client::disable_cache)
}

/// A variable from the runner's environment, recorded in the cache key.
/// `Ok(None)` when unset or when not under vbuild.
pub fn get_env(name: &str) -> io::Result<Option<String>> {
    client().map_or(Ok(None), |c| c.get_env(name, true))
}

/// Like [`get_env`] but not part of the cache key (for values that do not
/// affect the output, such as a log level).
pub fn get_env_untracked(name: &str) -> io::Result<Option<String>> {
    client().map_or(Ok(None), |c| c.get_env(name, false))
}

/// Every variable matching `query` (a glob via `&str`, or
/// [`EnvQuery::Prefix`]), tracked; empty when not under vbuild.
pub fn get_envs(query: impl Into<EnvQuery>) -> io::Result<BTreeMap<String, String>> {
    client().map_or(Ok(BTreeMap::new()), |c| c.get_envs(query, true))
}

/// The exact files this tool read; everything else staged is not an input.
pub fn report_used_inputs<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> io::Result<()> {
    client().map_or(Ok(()), |c| c.report_used_inputs(paths))
}
