//! `BUILD.toml` and `vbuild.toml`: the serde model, with spans kept for
//! every value a later check may need to point at.
use crate::diagnostic::Diagnostic;
use crate::label::valid_target_name;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

/// `command = "…"` runs with `/bin/sh -c`; `command = [..]` is an argv.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
}

impl Command {
    /// The argv actually executed.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
            Command::Argv(argv) => argv.clone(),
        }
    }
}

/// Where an action runs (see docs/sandbox.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxSetting {
    /// Linux namespaces: fixed workspace path, read-only inputs, no network.
    Namespaces,
    /// A plain scratch directory holding only the declared inputs.
    Scratch,
    /// In the workspace itself; never cached.
    None,
}

/// `cache = true | false | "always"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheSetting {
    /// Cached unless the tool asks otherwise (`disableCache()`).
    #[default]
    On,
    /// Never read or write the action cache.
    Off,
    /// Cached even when the tool asks not to be: for runs that are
    /// hermetic although their tool's server calls `disableCache()`
    /// (e.g. `vitest run`; never a dev or watch server).
    Always,
}

impl<'de> Deserialize<'de> for CacheSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Bool(true)) => Ok(CacheSetting::On),
            Ok(Raw::Bool(false)) => Ok(CacheSetting::Off),
            Ok(Raw::Text(t)) if t == "always" => Ok(CacheSetting::Always),
            _ => Err(serde::de::Error::custom(
                "cache must be true, false or \"always\"",
            )),
        }
    }
}

/// One `[target.NAME]` table. Without `command` it is a *file group*: its
/// `srcs` (and its deps' outputs) become inputs of the targets that list it
/// in `deps`; it runs nothing.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetDef {
    #[serde(default)]
    pub command: Option<Spanned<Command>>,
    #[serde(default)]
    pub srcs: Vec<Spanned<String>>,
    #[serde(default)]
    pub deps: Vec<Spanned<String>>,
    #[serde(default)]
    pub outs: Vec<Spanned<String>>,
    /// Outputs the command may leave unwritten (turbo's `outputs` and Nx's
    /// are globs that may match nothing): declared, restored and checked
    /// for overlap like `outs`, but not writing one is not an error.
    #[serde(default)]
    pub optional_outs: Vec<Spanned<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub pass_env: Vec<Spanned<String>>,
    /// Unset means [`CacheSetting::On`].
    #[serde(default)]
    pub cache: Option<Spanned<CacheSetting>>,
    pub sandbox: Option<Spanned<SandboxSetting>>,
    /// Opens the network inside the namespace sandbox (part of the key).
    #[serde(default)]
    pub network: bool,
    /// e.g. "90s", "10m", "1h".
    pub timeout: Option<Spanned<String>>,
    /// Expose the workspace's installed node_modules (read-only) and the
    /// node toolchain; overrides the workspace's `node_modules`.
    #[serde(default)]
    pub node_modules: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildFileDef {
    #[serde(default)]
    target: BTreeMap<String, Spanned<TargetDef>>,
}

/// `vbuild.toml`'s `[workspace]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceDef {
    /// Names the workspace in the shared cache (for `vbuild clean`, `why`).
    pub name: String,
    #[serde(default)]
    pub sandbox: Option<SandboxSetting>,
    /// Variables passed to every action from the caller (values tracked).
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Globs of env names whose tracked values are keyed by hash and never printed.
    #[serde(default)]
    pub secret_env: Vec<String>,
    /// Every target sees the installed node_modules and node (see
    /// docs/migrate.md); a target's own `node_modules` wins.
    #[serde(default)]
    pub node_modules: bool,
    /// Paths and globs relative to the root that every action sees, staged
    /// read-only and keyed by content (a root `tsconfig.base.json`,
    /// `pnpm-workspace.yaml`, `.eslintrc.js`, `package.json`).
    #[serde(default)]
    pub inputs: Vec<Spanned<String>>,
    /// Globs relative to the root that are never srcs of any target
    /// (`**/coverage/**`): workspace-wide exclusions written once.
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
    /// `[defaults.NAME]` tables of the same file: fields a target named
    /// NAME gets when its BUILD.toml leaves them unset.
    #[serde(skip)]
    pub defaults: BTreeMap<String, Spanned<TargetDefaults>>,
    /// The `[remote]` table of the same file (a sibling of `[workspace]`).
    #[serde(skip)]
    pub remote: Option<RemoteDef>,
}

/// Whether vbuild may write to the remote cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemoteMode {
    ReadWrite,
    ReadOnly,
}

/// How credentials are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteAuth {
    /// `Authorization: Bearer <credential>`.
    Bearer,
    /// `Authorization: Basic …`; the credential is `user:password`.
    Basic,
    /// The credential as the value of the header named by `auth_header`.
    Header,
}

/// `vbuild.toml`'s `[remote]` table: a shared cache behind the local one
/// (docs/remote-cache.md). Flags and `VBUILD_REMOTE_*` variables override it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteDef {
    /// `http://…`/`https://…` (Bazel HTTP cache) or `grpc://…`/`grpcs://…` (REAPI).
    pub url: Option<String>,
    /// REAPI instance name.
    pub instance: Option<String>,
    pub mode: Option<RemoteMode>,
    pub auth: Option<RemoteAuth>,
    /// Header name for `auth = "header"`, e.g. `x-buildbuddy-api-key`.
    pub auth_header: Option<String>,
    /// Name of the environment variable holding the credential.
    pub credentials_env: Option<String>,
    /// File holding the credential (relative to the workspace root).
    pub credentials_file: Option<String>,
    /// PEM files (relative to the workspace root).
    pub tls_ca: Option<String>,
    pub tls_client_cert: Option<String>,
    pub tls_client_key: Option<String>,
    /// Connect and per-read/write timeout, e.g. "10s".
    pub timeout: Option<String>,
    /// Largest blob accepted from the remote, in bytes.
    pub max_blob_size: Option<u64>,
    /// Largest action result accepted from the remote, in bytes.
    pub max_action_result_size: Option<u64>,
    /// Most files and symlinks one remote entry may restore.
    pub max_entry_files: Option<u64>,
    /// Most bytes (all files together) one remote entry may restore.
    pub max_entry_bytes: Option<u64>,
    /// Deepest path (in components) one remote entry may restore.
    pub max_entry_depth: Option<u64>,
    /// Transfers at once.
    pub connections: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkspaceFileDef {
    workspace: WorkspaceDef,
    #[serde(default)]
    remote: Option<RemoteDef>,
    #[serde(default)]
    defaults: BTreeMap<String, Spanned<TargetDefaults>>,
}

/// `[defaults.NAME]` in vbuild.toml: the fields of a target, all optional
/// (turbo.json's task definitions, Nx's `targetDefaults`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetDefaults {
    pub command: Option<Command>,
    pub srcs: Option<Vec<String>>,
    pub deps: Option<Vec<String>>,
    pub outs: Option<Vec<String>>,
    pub optional_outs: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub pass_env: Option<Vec<String>>,
    pub cache: Option<CacheSetting>,
    pub sandbox: Option<SandboxSetting>,
    pub network: Option<bool>,
    pub timeout: Option<String>,
    pub node_modules: Option<bool>,
}

/// Fills the fields each target of a parsed BUILD.toml leaves unset from
/// `[defaults.NAME]`. A defaulted value's span is the target's table, so a
/// problem with it points at the target (and the message names vbuild.toml).
pub fn apply_defaults(
    targets: &mut BTreeMap<String, Spanned<TargetDef>>,
    source: &str,
    defaults: &BTreeMap<String, Spanned<TargetDefaults>>,
) {
    if defaults.is_empty() {
        return;
    }
    // Which keys each target sets (the typed model cannot tell an unset
    // list from an empty one). The file parsed already, so this does too.
    let raw: toml::Table = toml::from_str(source).unwrap_or_default();
    for (name, target) in targets.iter_mut() {
        let Some(d) = defaults.get(name) else {
            continue;
        };
        let d = d.get_ref();
        let set: Vec<String> = raw
            .get("target")
            .and_then(|t| t.get(name))
            .and_then(|t| t.as_table())
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        let unset = |k: &str| !set.iter().any(|s| s == k);
        let span = target.span();
        let sp = |v: String| Spanned::new(span.clone(), v);
        let t = target.get_mut();
        if let (true, Some(c)) = (unset("command"), &d.command) {
            t.command = Some(Spanned::new(span.clone(), c.clone()));
        }
        for (key, field, value) in [
            ("srcs", &mut t.srcs, &d.srcs),
            ("deps", &mut t.deps, &d.deps),
            ("outs", &mut t.outs, &d.outs),
            ("optional_outs", &mut t.optional_outs, &d.optional_outs),
            ("pass_env", &mut t.pass_env, &d.pass_env),
        ] {
            if let (true, Some(v)) = (unset(key), value) {
                *field = v.iter().cloned().map(sp).collect();
            }
        }
        if let (true, Some(v)) = (unset("env"), &d.env) {
            t.env = v.clone();
        }
        if let (true, Some(v)) = (unset("cache"), d.cache) {
            t.cache = Some(Spanned::new(span.clone(), v));
        }
        if let (true, Some(v)) = (unset("sandbox"), d.sandbox) {
            t.sandbox = Some(Spanned::new(span.clone(), v));
        }
        if let (true, Some(v)) = (unset("network"), d.network) {
            t.network = v;
        }
        if let (true, Some(v)) = (unset("timeout"), &d.timeout) {
            t.timeout = Some(sp(v.clone()));
        }
        if let (true, Some(v)) = (unset("node_modules"), d.node_modules) {
            t.node_modules = Some(v);
        }
    }
}

fn toml_error(file: &Path, source: &str, err: toml::de::Error) -> Diagnostic {
    let mut message = err.message().trim_end().to_string();
    let span = err.span();
    let help = if message.starts_with("unknown field") {
        Some("check the spelling; the fields are listed in docs/guide.md")
    } else if message.contains("duplicate key") {
        let key = span
            .clone()
            .and_then(|s| source.get(s))
            .unwrap_or("")
            .trim_matches('"');
        message = format!("duplicate target `{key}`: it is already defined above");
        Some("each target name may appear once per BUILD.toml; rename or merge one of them")
    } else {
        None
    };
    let diag = Diagnostic::at(file, source, span, message);
    match help {
        Some(help) => diag.with_help(help),
        None => diag,
    }
}

/// Parses a `BUILD.toml`. Target names are checked here; labels, globs and
/// outputs are checked by the loader, which knows the package.
pub fn parse_build_file(
    file: &Path,
    source: &str,
) -> Result<BTreeMap<String, Spanned<TargetDef>>, Diagnostic> {
    crate::limits::check_nesting(file, source)?;
    let def: BuildFileDef = toml::from_str(source).map_err(|e| toml_error(file, source, e))?;
    for (name, target) in &def.target {
        check_target_limits(file, source, name, target)?;
        if !valid_target_name(name) {
            return Err(Diagnostic::at(
                file,
                source,
                Some(target.span()),
                format!("invalid target name {name:?}"),
            )
            .with_help("target names use letters, digits and _ - . + only"));
        }
    }
    Ok(def.target)
}

/// `crate::limits` for one target, before anything looks at its values.
fn check_target_limits(
    file: &Path,
    source: &str,
    name: &str,
    target: &Spanned<TargetDef>,
) -> Result<(), Diagnostic> {
    use crate::limits::*;
    let span = Some(target.span());
    check_name(file, source, span.clone(), "target name", name)?;
    let t = target.get_ref();
    check_list(file, source, "srcs", &t.srcs, MAX_PATTERN_LEN)?;
    check_list(file, source, "outs", &t.outs, MAX_PATTERN_LEN)?;
    check_list(
        file,
        source,
        "optional_outs",
        &t.optional_outs,
        MAX_PATTERN_LEN,
    )?;
    check_list(file, source, "deps", &t.deps, MAX_LABEL_LEN)?;
    check_list(file, source, "pass_env", &t.pass_env, MAX_NAME_LEN)?;
    for name in &t.pass_env {
        check_pass_env_name(file, source, Some(name.span()), "pass_env", name.get_ref())?;
    }
    let env: Vec<String> = t.env.keys().cloned().collect();
    check_plain(file, source, span, "env", &env, MAX_NAME_LEN)
}

/// vbuild's own settings (`VBUILD_*`: the IPC socket and token, remote
/// credentials) never reach an action, so listing one would silently pass
/// nothing: an error says so where it is written.
fn check_pass_env_name(
    file: &Path,
    source: &str,
    span: Option<std::ops::Range<usize>>,
    field: &str,
    name: &str,
) -> Result<(), Diagnostic> {
    if !name.starts_with("VBUILD_") {
        return Ok(());
    }
    Err(Diagnostic::at(
        file,
        source,
        span,
        format!("{field} lists {name:?}: vbuild's own settings (VBUILD_*) are never passed to actions"),
    )
    .with_help("remove it; to give an action a value, pass a variable with another name or set it in `env`"))
}

/// `crate::limits` for vbuild.toml.
fn check_workspace_limits(
    file: &Path,
    source: &str,
    def: &WorkspaceFileDef,
) -> Result<(), Diagnostic> {
    use crate::limits::*;
    let w = &def.workspace;
    check_list(file, source, "inputs", &w.inputs, MAX_PATTERN_LEN)?;
    check_list(file, source, "exclude", &w.exclude, MAX_PATTERN_LEN)?;
    check_plain(file, source, None, "pass_env", &w.pass_env, MAX_NAME_LEN)?;
    for name in &w.pass_env {
        check_pass_env_name(file, source, None, "[workspace] pass_env", name)?;
    }
    check_plain(
        file,
        source,
        None,
        "secret_env",
        &w.secret_env,
        MAX_PATTERN_LEN,
    )?;
    for (name, d) in &def.defaults {
        let span = Some(d.span());
        check_name(file, source, span.clone(), "target name", name)?;
        let d = d.get_ref();
        let lists = [
            ("srcs", &d.srcs, MAX_PATTERN_LEN),
            ("outs", &d.outs, MAX_PATTERN_LEN),
            ("optional_outs", &d.optional_outs, MAX_PATTERN_LEN),
            ("deps", &d.deps, MAX_LABEL_LEN),
            ("pass_env", &d.pass_env, MAX_NAME_LEN),
        ];
        for (field, list, max) in lists {
            if let Some(list) = list {
                let field = format!("[defaults.{name}] {field}");
                check_plain(file, source, span.clone(), &field, list, max)?;
            }
        }
        for var in d.pass_env.iter().flatten() {
            let field = format!("[defaults.{name}] pass_env");
            check_pass_env_name(file, source, span.clone(), &field, var)?;
        }
    }
    Ok(())
}

/// Parses `vbuild.toml`.
pub fn parse_workspace_file(file: &Path, source: &str) -> Result<WorkspaceDef, Diagnostic> {
    crate::limits::check_nesting(file, source)?;
    let def: WorkspaceFileDef = toml::from_str(source).map_err(|e| toml_error(file, source, e))?;
    check_workspace_limits(file, source, &def)?;
    for (name, d) in &def.defaults {
        if !valid_target_name(name) {
            return Err(Diagnostic::at(
                file,
                source,
                Some(d.span()),
                format!("invalid target name {name:?} in [defaults.{name}]"),
            )
            .with_help("[defaults.NAME] applies to targets named NAME; names use letters, digits and _ - . + only"));
        }
    }
    Ok(WorkspaceDef {
        remote: def.remote,
        defaults: def.defaults,
        ..def.workspace
    })
}

/// Parses a duration like `"500ms"`, `"90s"`, `"10m"`, `"1h"`.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_target() {
        let src = r#"
[target.build]
command = "make"
srcs = ["src/**", "!src/**/*.test.ts"]
deps = ["//lib:build"]
outs = ["dist/"]
env = { NODE_ENV = "production" }
pass_env = ["CI"]
"#;
        let targets = parse_build_file(Path::new("BUILD.toml"), src).unwrap();
        let t = targets["build"].get_ref();
        let command = t.command.as_ref().unwrap();
        assert_eq!(command.get_ref().argv(), ["/bin/sh", "-c", "make"]);
        assert_eq!(t.srcs.len(), 2);
        assert!(t.cache.is_none());
    }

    #[test]
    fn cache_values() {
        let parse = |v: &str| {
            let src = format!("[target.t]\ncommand = \"x\"\ncache = {v}\n");
            parse_build_file(Path::new("BUILD.toml"), &src)
                .map(|t| t["t"].get_ref().cache.as_ref().map(|c| *c.get_ref()))
        };
        assert_eq!(parse("true").unwrap(), Some(CacheSetting::On));
        assert_eq!(parse("false").unwrap(), Some(CacheSetting::Off));
        assert_eq!(parse("\"always\"").unwrap(), Some(CacheSetting::Always));
        let err = parse("\"sometimes\"").unwrap_err();
        assert!(err.message.contains("\"always\""), "{}", err.message);
        assert_eq!(err.line, 3);
    }

    #[test]
    fn file_group_has_no_command() {
        let src = "[target.files]\nsrcs = [\"base.json\"]\n";
        let targets = parse_build_file(Path::new("BUILD.toml"), src).unwrap();
        assert!(targets["files"].get_ref().command.is_none());
    }

    #[test]
    fn unknown_field_names_line() {
        let src = "[target.build]\ncommand = \"x\"\ncomand = \"y\"\n";
        let err = parse_build_file(Path::new("p/BUILD.toml"), src).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("unknown field"), "{}", err.message);
    }

    #[test]
    fn defaults_fill_unset_fields_only() {
        let ws = parse_workspace_file(
            Path::new("vbuild.toml"),
            "[workspace]\nname = \"w\"\nexclude = [\"**/coverage/**\"]\n[defaults.build]\nouts = [\"dist/\"]\nsrcs = [\"src/**\"]\nenv = { NODE_ENV = \"production\" }\n",
        )
        .unwrap();
        assert_eq!(ws.exclude[0].get_ref(), "**/coverage/**");
        let src = "[target.build]\ncommand = \"x\"\nsrcs = []\n[target.test]\ncommand = \"y\"\n";
        let mut targets = parse_build_file(Path::new("BUILD.toml"), src).unwrap();
        apply_defaults(&mut targets, src, &ws.defaults);
        let b = targets["build"].get_ref();
        assert!(b.srcs.is_empty(), "set (even to []) wins over the default");
        assert_eq!(b.outs[0].get_ref(), "dist/");
        assert_eq!(b.env["NODE_ENV"], "production");
        assert!(targets["test"].get_ref().outs.is_empty());
        let bad = parse_workspace_file(
            Path::new("vbuild.toml"),
            "[workspace]\nname = \"w\"\n[defaults.build]\nouts = \"dist\"\n",
        );
        assert!(bad.is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("10m"),
            Some(std::time::Duration::from_secs(600))
        );
        assert_eq!(
            parse_duration("250ms"),
            Some(std::time::Duration::from_millis(250))
        );
        assert_eq!(parse_duration("ten"), None);
    }
}
