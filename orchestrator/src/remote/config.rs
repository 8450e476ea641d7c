//! The `[remote]` settings of vbuild.toml with their overrides
//! (environment, then flags) and the credential they name.
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::time::Duration;
use vbuild_schema::{RemoteAuth, RemoteDef, RemoteMode};
use vbuild_store::remote::{self as wire, Auth, AuthKind, Secret, Settings, TlsFiles};

use crate::workspace::Workspace;

/// Defaults of the `[remote]` settings.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_BLOB: u64 = 1 << 30;
pub const DEFAULT_MAX_RESULT: u64 = 64 << 20;
pub const DEFAULT_CONNECTIONS: usize = 4;
/// Per remote entry: a forged entry must not make a restore unbounded.
pub const DEFAULT_MAX_ENTRY_FILES: u64 = 10_000;
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 4 << 30;
pub const DEFAULT_MAX_ENTRY_DEPTH: u64 = 64;

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
    /// Caps on one remote entry: paths, bytes, path depth.
    pub max_entry_files: u64,
    pub max_entry_bytes: u64,
    pub max_entry_depth: u64,
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
        max_entry_files: def.max_entry_files.unwrap_or(DEFAULT_MAX_ENTRY_FILES),
        max_entry_bytes: def.max_entry_bytes.unwrap_or(DEFAULT_MAX_ENTRY_BYTES),
        max_entry_depth: def.max_entry_depth.unwrap_or(DEFAULT_MAX_ENTRY_DEPTH),
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
}
