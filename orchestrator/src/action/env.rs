//! What an action sees: the sandbox it runs in and its environment (fixed,
//! scrubbed, declared). What it is keyed by is `crate::key`'s.
use super::Ctx;
use crate::key::{EnvSource, EnvValue};
use crate::workspace::{Target, Workspace};
use std::collections::BTreeMap;
use std::path::Path;
use vbuild_ipc::{EnvQuery, EnvQueryMatcher};
use vbuild_schema::SandboxSetting;

/// The fixed PATH actions see after vbuild's own bin directory; a change
/// to it (or to the rest of the fixed environment) must bump `KEY_VERSION`.
pub const ACTION_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Epoch for `SOURCE_DATE_EPOCH`: 1980-01-01, the earliest zip can store.
pub const SOURCE_DATE_EPOCH: &str = "315532800";

impl EnvSource for Ctx<'_> {
    /// What the tool saw: vbuild's own settings are absent to it, so they
    /// are absent here too (else the key would never match).
    fn value(&self, name: &str) -> EnvValue {
        self.secrets
            .record(name, self.secrets.visible(&self.host_env, name))
    }

    fn matching(&self, query: &EnvQuery) -> BTreeMap<String, EnvValue> {
        let Ok(matcher) = EnvQueryMatcher::new(query) else {
            return BTreeMap::new();
        };
        let found = matcher.select_visible(&self.host_env, &self.secrets);
        found
            .keys()
            .map(|name| (name.clone(), self.value(name)))
            .collect()
    }
}

impl Ctx<'_> {
    /// The sandbox an action really runs in (and is keyed by). Probes the
    /// namespace sandbox the first time it is asked about one.
    pub(crate) fn sandbox_of(&self, target: &Target) -> SandboxSetting {
        match requested_sandbox(self.opts.sandbox, target, self.ws) {
            SandboxSetting::Namespaces if !self.exec_env.namespaces() => SandboxSetting::Scratch,
            other => other,
        }
    }

    /// The node_modules/toolchain view of a target that uses it.
    pub(crate) fn node_env(&self, target: &Target) -> Option<&crate::node::NodeEnv> {
        self.node.as_ref().filter(|_| self.ws.uses_node(target))
    }

    /// The environment an action runs with: fixed, scrubbed, declared.
    /// `bin` holds `vbuild` itself; `ipc` is the tool channel's env.
    pub(super) fn action_env(
        &self,
        target: &Target,
        layout: &vbuild_sandbox::Layout,
        bin: &Path,
        ipc: Vec<(String, String)>,
    ) -> BTreeMap<String, String> {
        let path_of = |p: &Path| p.to_string_lossy().into_owned();
        // Like `npm run`: the package's node_modules/.bin, then its
        // ancestors' up to the root, then a node living outside /usr.
        let mut path = String::new();
        if let Some(node) = self.node_env(target) {
            for dir in node.bin_dirs(&layout.ws, &target.label.package) {
                path.push_str(&format!("{}:", dir.display()));
            }
            if let Some(dir) = &node.node_bin_dir {
                path.push_str(&format!("{}:", dir.display()));
            }
        }
        let mut env = BTreeMap::from([
            (
                "PATH".to_string(),
                format!("{path}{}:{ACTION_PATH}", bin.display()),
            ),
            // The workspace root as the action sees it (not in the key,
            // like HOME): lets tools such as vite-plugin-vbuild find the
            // staged tree.
            ("VBUILD_WS_ROOT".to_string(), path_of(&layout.ws)),
            ("HOME".to_string(), path_of(&layout.home)),
            ("TMPDIR".to_string(), path_of(&layout.tmp)),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("LC_ALL".to_string(), "C.UTF-8".to_string()),
            ("TZ".to_string(), "UTC".to_string()),
            (
                "SOURCE_DATE_EPOCH".to_string(),
                SOURCE_DATE_EPOCH.to_string(),
            ),
        ]);
        // Logs are replayed anywhere (pipes, CI, terminals), so tools are
        // told not to colour unless the caller forces colour (keyed).
        match &self.opts.force_color {
            Some(v) => env.insert("FORCE_COLOR".to_string(), v.clone()),
            None => env.insert("NO_COLOR".to_string(), "1".to_string()),
        };
        env.extend(ipc);
        // The same view as the key's (`EnvSource::value`): vbuild's own
        // settings and credentials are not passed, even when listed.
        for name in crate::key::pass_env_names(self, target) {
            if let Some(v) = self.secrets.visible(&self.host_env, &name) {
                env.insert(name, v.to_owned());
            }
        }
        env.extend(target.env.clone());
        // `vbuild tool` must stay reachable even when a target sets PATH.
        let path = &env["PATH"];
        let bin = bin.to_string_lossy().into_owned();
        if !path.split(':').any(|p| p == bin) {
            let path = format!("{bin}:{path}");
            env.insert("PATH".to_string(), path);
        }
        env
    }
}

/// The sandbox a target asks for: `--sandbox`, else the target's, else the
/// workspace's, else `namespaces` on Linux.
pub fn requested_sandbox(
    cli: Option<SandboxSetting>,
    target: &Target,
    ws: &Workspace,
) -> SandboxSetting {
    let default = if cfg!(target_os = "linux") {
        SandboxSetting::Namespaces
    } else {
        SandboxSetting::Scratch
    };
    cli.or(target.sandbox).or(ws.def.sandbox).unwrap_or(default)
}
