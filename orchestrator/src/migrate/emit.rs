//! Writing what migrate decided: TOML text for vbuild.toml and BUILD.toml
//! (checked with the normal parser before anything is written), and the
//! vite-plugin-vbuild edit of a Vite config.

/// A TOML basic string (JSON's escaping is valid TOML).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

pub fn toml_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| toml_str(s)).collect();
    let one_line = format!("[{}]", parts.join(", "));
    if one_line.len() <= 88 {
        one_line
    } else {
        format!("[\n  {},\n]", parts.join(",\n  "))
    }
}

/// One `[target.NAME]` as migrate writes it.
#[derive(Clone, Debug, Default)]
pub struct TargetOut {
    pub name: String,
    /// Comment lines above the table (without `# `).
    pub notes: Vec<String>,
    /// None: a file group (srcs other targets see, nothing run).
    pub command: Option<String>,
    pub srcs: Vec<String>,
    pub deps: Vec<String>,
    /// Deps left out on purpose (cycles), written as comments.
    pub commented_deps: Vec<(String, String)>,
    pub outs: Vec<String>,
    /// Outputs that may be left unwritten (turbo's outputs).
    pub optional_outs: Vec<String>,
    pub env: Vec<(String, String)>,
    pub pass_env: Vec<String>,
    /// None: cached (the default); "false" or "\"always\"" as written.
    pub cache: Option<&'static str>,
}

pub fn build_file(targets: &[TargetOut]) -> String {
    let mut out =
        String::from("# Written by `vbuild migrate`; edit freely (see docs/migrate.md).\n");
    for t in targets {
        out.push('\n');
        for n in &t.notes {
            out.push_str(&format!("# {n}\n"));
        }
        out.push_str(&format!("[target.{}]\n", t.name));
        if let Some(c) = &t.command {
            out.push_str(&format!("command = {}\n", toml_str(c)));
        }
        out.push_str(&format!("srcs = {}\n", toml_list(&t.srcs)));
        if !t.deps.is_empty() || !t.commented_deps.is_empty() {
            if t.commented_deps.is_empty() {
                out.push_str(&format!("deps = {}\n", toml_list(&t.deps)));
            } else {
                out.push_str("deps = [\n");
                for d in &t.deps {
                    out.push_str(&format!("  {},\n", toml_str(d)));
                }
                for (d, why) in &t.commented_deps {
                    out.push_str(&format!("  # {},  # {why}\n", toml_str(d)));
                }
                out.push_str("]\n");
            }
        }
        if !t.outs.is_empty() {
            out.push_str(&format!("outs = {}\n", toml_list(&t.outs)));
        }
        if !t.optional_outs.is_empty() {
            out.push_str(&format!(
                "optional_outs = {}\n",
                toml_list(&t.optional_outs)
            ));
        }
        if !t.env.is_empty() {
            let parts: Vec<String> = t
                .env
                .iter()
                .map(|(k, v)| format!("{k} = {}", toml_str(v)))
                .collect();
            out.push_str(&format!("env = {{ {} }}\n", parts.join(", ")));
        }
        if !t.pass_env.is_empty() {
            out.push_str(&format!("pass_env = {}\n", toml_list(&t.pass_env)));
        }
        if let Some(c) = t.cache {
            out.push_str(&format!("cache = {c}\n"));
        }
    }
    out
}

pub fn workspace_file(
    name: &str,
    manager: &str,
    pass_env: &[String],
    inputs: &[String],
    exclude: &[String],
) -> String {
    let mut out = format!(
        "# Written by `vbuild migrate` from a {manager} workspace; see docs/migrate.md.\n\
         [workspace]\n\
         name = {}\n\
         sandbox = \"namespaces\"\n\
         # Actions see the installed node_modules (read-only) and node; the\n\
         # lockfile, package manager and node version are part of their keys.\n\
         node_modules = true\n",
        toml_str(name)
    );
    if !pass_env.is_empty() {
        out.push_str(&format!("pass_env = {}\n", toml_list(pass_env)));
    }
    if !inputs.is_empty() {
        out.push_str(
            "# Root files the tools read (tsconfig extends, lint and test configs, ...).\n",
        );
        out.push_str(&format!("inputs = {}\n", toml_list(inputs)));
    }
    if !exclude.is_empty() {
        out.push_str("# Never sources of any target: the root .gitignore, and tsc's build info.\n");
        out.push_str(&format!("exclude = {}\n", toml_list(exclude)));
    }
    out
}

pub const PLUGIN: &str = "vite-plugin-vbuild";

/// Adds `import vbuild from "vite-plugin-vbuild"` and `vbuild()` to a Vite
/// config. `Ok(None)` if it already has the plugin; `Err` when the config's
/// shape is not one migrate knows how to edit.
pub fn add_vite_plugin(source: &str) -> Result<Option<String>, String> {
    if source.contains(PLUGIN) {
        return Ok(None);
    }
    let import = format!("import vbuild from \"{PLUGIN}\";\n");
    // After the last top-level import (or at the top).
    let mut insert_at = 0;
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        offset += line.len();
        if line.starts_with("import ") || line.starts_with("import{") {
            insert_at = offset;
        }
    }
    let mut text = format!("{}{import}{}", &source[..insert_at], &source[insert_at..]);
    if let Some(pos) = text.find("plugins: [") {
        let at = pos + "plugins: [".len();
        text.insert_str(at, "vbuild(), ");
        return Ok(Some(text));
    }
    for anchor in ["defineConfig({", "export default {"] {
        if let Some(pos) = text.find(anchor) {
            let at = pos + anchor.len();
            text.insert_str(at, "\n  plugins: [vbuild()],");
            return Ok(Some(text));
        }
    }
    Err("no `plugins: [`, `defineConfig({` or `export default {` to add vbuild() to".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_plugin() {
        let src = "import { defineConfig } from \"vite\";\nimport vue from '@vitejs/plugin-vue';\n\nexport default defineConfig({\n  plugins: [vue()],\n});\n";
        let out = add_vite_plugin(src).unwrap().unwrap();
        assert_eq!(
            out,
            "import { defineConfig } from \"vite\";\nimport vue from '@vitejs/plugin-vue';\nimport vbuild from \"vite-plugin-vbuild\";\n\nexport default defineConfig({\n  plugins: [vbuild(), vue()],\n});\n"
        );
        assert_eq!(add_vite_plugin(&out).unwrap(), None);
        let bare = add_vite_plugin("export default {\n  base: '/',\n};\n")
            .unwrap()
            .unwrap();
        assert!(bare.starts_with("import vbuild"), "{bare}");
        assert!(
            bare.contains("export default {\n  plugins: [vbuild()],"),
            "{bare}"
        );
        assert!(add_vite_plugin("module.exports = makeConfig()").is_err());
    }
}
