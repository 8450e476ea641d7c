//! Issue 10's "done when": a workspace with shared tsconfig, eslint and vite
//! config packages (no build step, reached through node_modules links, as
//! pnpm lays them out) builds with the real tsc and vite of
//! examples/vite-monorepo in the namespace sandbox with no workaround:
//! cold, 10 no-op runs that are all hits and rewrite no file, restore, and
//! each shared config change re-running exactly its dependents.
//!
//! Needs the example's node_modules (`pnpm install --frozen-lockfile`
//! there); skipped without them unless VBUILD_REQUIRE_NODE=1.
mod common;

use common::{label_set, run_with, Out};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn example_modules() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/vite-monorepo/node_modules")
        .canonicalize()
        .ok();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match dir {
        Some(d) if node && d.join(".bin/vite").exists() && d.join(".bin/tsc").exists() => Some(d),
        _ if std::env::var_os("VBUILD_REQUIRE_NODE").is_some() => {
            panic!("VBUILD_REQUIRE_NODE is set but node or examples/vite-monorepo/node_modules is missing")
        }
        _ => {
            eprintln!("SKIP shared_config: node or examples/vite-monorepo/node_modules missing");
            None
        }
    }
}

const FILES: &[(&str, &str)] = &[
    (
        "vbuild.toml",
        r#"[workspace]
name = "acme"
sandbox = "namespaces"
node_modules = true
inputs = ["tsconfig.base.json", "pnpm-workspace.yaml", ".eslintrc.cjs", "package.json"]
"#,
    ),
    ("package.json", "{\"name\":\"acme\",\"private\":true,\"type\":\"module\"}\n"),
    ("pnpm-workspace.yaml", "packages:\n  - \"packages/*\"\n  - \"config/*\"\n"),
    (
        "tsconfig.base.json",
        r#"{"compilerOptions":{"target":"ES2022","module":"ESNext","moduleResolution":"Bundler","skipLibCheck":true,"types":[],"declaration":true}}
"#,
    ),
    (".eslintrc.cjs", "module.exports = require(\"@acme/eslint-config\");\n"),
    // @acme/tsconfig: extends the root file, is extended by package name.
    ("config/tsconfig/package.json", "{\"name\":\"@acme/tsconfig\",\"version\":\"1.0.0\"}\n"),
    (
        "config/tsconfig/base.json",
        "{\"extends\":\"../../tsconfig.base.json\",\"compilerOptions\":{\"strict\":true}}\n",
    ),
    ("config/tsconfig/BUILD.toml", "[target.files]\nsrcs = [\"base.json\", \"package.json\"]\n"),
    // @acme/eslint-config: what the root .eslintrc.cjs re-exports.
    ("config/eslint-config/package.json", "{\"name\":\"@acme/eslint-config\",\"main\":\"index.cjs\"}\n"),
    ("config/eslint-config/index.cjs", "module.exports = { rules: { \"no-var\": \"error\" } };\n"),
    ("config/eslint-config/BUILD.toml", "[target.files]\nsrcs = [\"index.cjs\", \"package.json\"]\n"),
    // @acme/vite-config: a config helper the app's vite.config.ts imports.
    (
        "config/vite-config/package.json",
        "{\"name\":\"@acme/vite-config\",\"type\":\"module\",\"main\":\"index.js\"}\n",
    ),
    (
        "config/vite-config/index.js",
        r#"export function library(entry) {
  return { build: { minify: false, lib: { entry, formats: ["es"], fileName: "app" } } };
}
"#,
    ),
    ("config/vite-config/BUILD.toml", "[target.files]\nsrcs = [\"index.js\", \"package.json\"]\n"),
    // packages/lib: tsc with a shared tsconfig, and a lint reading the root config.
    ("packages/lib/package.json", "{\"name\":\"@acme/lib\",\"private\":true}\n"),
    (
        "packages/lib/tsconfig.json",
        "{\"extends\":\"@acme/tsconfig/base.json\",\"compilerOptions\":{\"outDir\":\"dist\",\"rootDir\":\"src\"},\"include\":[\"src\"]}\n",
    ),
    ("packages/lib/src/index.ts", "export const greet = (name: string): string => `hello ${name}`;\n"),
    (
        "packages/lib/lint.cjs",
        r#"const config = require("../../.eslintrc.cjs");
const fs = require("fs");
const text = fs.readFileSync("src/index.ts", "utf8");
if (config.rules["no-var"] === "error" && /\bvar\b/.test(text)) { console.error("no-var"); process.exit(1); }
console.log("lint ok: " + Object.keys(config.rules).join(","));
"#,
    ),
    (
        "packages/lib/BUILD.toml",
        r#"[target.build]
command = "rm -rf dist && tsc -p tsconfig.json"
srcs = ["src/**", "tsconfig.json", "package.json"]
deps = ["//config/tsconfig:files"]
outs = ["dist/"]

[target.lint]
command = "node lint.cjs"
srcs = ["src/**", "lint.cjs"]
deps = ["//config/eslint-config:files"]
"#,
    ),
    // packages/app: vite with the shared vite config.
    ("packages/app/package.json", "{\"name\":\"@acme/app\",\"private\":true,\"type\":\"module\"}\n"),
    (
        "packages/app/vite.config.ts",
        "import { library } from \"@acme/vite-config\";\n\nexport default library(\"src/main.ts\");\n",
    ),
    (
        "packages/app/src/main.ts",
        "export function shout(words: string): string {\n  const loud = words.toUpperCase();\n  return loud + \"!\";\n}\n",
    ),
    (
        "packages/app/BUILD.toml",
        r#"[target.build]
command = "vite build"
srcs = ["src/**", "vite.config.ts", "package.json"]
deps = ["//config/vite-config:files"]
outs = ["dist/"]
"#,
    ),
];

struct Fixture {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Fixture {
    fn new(modules: &Path) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in FILES {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        // The installed tools, as hard links (nothing writes them), and the
        // workspace packages linked into node_modules the way pnpm does.
        let status = std::process::Command::new("cp")
            .args(["-al"])
            .arg(modules)
            .arg(dir.path().join("node_modules"))
            .status()
            .unwrap();
        assert!(status.success());
        let scope = dir.path().join("node_modules/@acme");
        std::fs::create_dir_all(&scope).unwrap();
        for pkg in ["tsconfig", "eslint-config", "vite-config"] {
            std::os::unix::fs::symlink(format!("../../config/{pkg}"), scope.join(pkg)).unwrap();
        }
        Fixture {
            dir,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self) -> Out {
        let out = run_with(
            self.root(),
            self.cache.path(),
            &["run", "//...", "--sandbox=strict"],
            &[],
        );
        assert_eq!(out.code, 0, "{}", out.snapshot());
        out
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.root().join(rel), text).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// (mtime, ctime, inode) of every file outside node_modules.
    fn stamps(&self) -> BTreeMap<PathBuf, (i64, i64, i64, i64, u64)> {
        let mut out = BTreeMap::new();
        let walk = walkdir::WalkDir::new(self.root())
            .into_iter()
            .filter_entry(|e| e.file_name() != "node_modules");
        for e in walk.flatten() {
            if e.file_type().is_file() {
                let m = e.metadata().unwrap();
                out.insert(
                    e.path().to_path_buf(),
                    (
                        m.mtime(),
                        m.mtime_nsec(),
                        m.ctime(),
                        m.ctime_nsec(),
                        m.ino(),
                    ),
                );
            }
        }
        out
    }
}

const ALL: &[&str] = &[
    "//packages/app:build",
    "//packages/lib:build",
    "//packages/lib:lint",
];

/// Runs once and checks exactly `missed` ran (each naming `file`), the rest hit.
fn changed(f: &Fixture, file: &str, missed: &[&str]) {
    let out = f.run();
    assert_eq!(out.labels_in("miss"), label_set(missed), "{}", out.stderr);
    let hits: BTreeSet<String> = ALL
        .iter()
        .filter(|l| !missed.contains(l))
        .map(|s| s.to_string())
        .collect();
    assert_eq!(out.labels_in("hit"), hits, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("('{file}' modified)")),
        "{}",
        out.stderr
    );
}

#[test]
fn shared_config_packages_build_with_the_real_tools() {
    let Some(modules) = example_modules() else {
        return;
    };
    if vbuild_sandbox::probe_namespaces().is_err() {
        eprintln!("SKIP shared_config: namespaces unavailable");
        return;
    }
    let f = Fixture::new(&modules);

    // Cold: everything runs, in the namespace sandbox, with no warning.
    let cold = f.run();
    assert_eq!(cold.labels_in("miss"), label_set(ALL), "{}", cold.stderr);
    assert!(!cold.stderr.contains("warning:"), "{}", cold.stderr);
    assert!(cold.stdout.contains("lint ok: no-var"), "{}", cold.stdout);
    assert!(f.read("packages/lib/dist/index.d.ts").contains("greet"));
    // strict came from @acme/tsconfig, ES2022 from the root tsconfig.base.json.
    assert!(f.read("packages/lib/dist/index.js").contains("=>"));
    let bundle = f.read("packages/app/dist/app.js");
    assert!(
        bundle.contains("function shout(words)"),
        "not minified: {bundle}"
    );

    // Ten no-op runs: all hits, no file of the workspace rewritten.
    let before = f.stamps();
    for i in 0..10 {
        let warm = f.run();
        assert_eq!(
            warm.labels_in("hit"),
            label_set(ALL),
            "run {i}: {}",
            warm.stderr
        );
    }
    assert_eq!(f.stamps(), before, "a no-op run rewrote a file");

    // Restore: outputs deleted, back from the store without running.
    for pkg in ["packages/lib", "packages/app"] {
        std::fs::remove_dir_all(f.root().join(pkg).join("dist")).unwrap();
    }
    let restored = f.run();
    assert_eq!(
        restored.labels_in("hit"),
        label_set(ALL),
        "{}",
        restored.stderr
    );
    assert_eq!(f.read("packages/app/dist/app.js"), bundle);

    // Each shared config change re-runs exactly its dependents.
    f.write(
        "config/tsconfig/base.json",
        "{\"extends\":\"../../tsconfig.base.json\",\"compilerOptions\":{\"strict\":true,\"removeComments\":true}}\n",
    );
    changed(&f, "config/tsconfig/base.json", &["//packages/lib:build"]);
    f.write(
        "config/vite-config/index.js",
        &f.read("config/vite-config/index.js")
            .replace("minify: false", "minify: true"),
    );
    changed(&f, "config/vite-config/index.js", &["//packages/app:build"]);
    // Minified (identifiers; lib mode keeps whitespace): the new shared
    // config was used, not a stale one.
    let minified = f.read("packages/app/dist/app.js");
    assert!(!minified.contains("shout(words)"), "{minified}");
    f.write(
        "config/eslint-config/index.cjs",
        "module.exports = { rules: { \"no-var\": \"error\", eqeqeq: \"error\" } };\n",
    );
    changed(
        &f,
        "config/eslint-config/index.cjs",
        &["//packages/lib:lint"],
    );
    // A workspace input: every action sees it.
    f.write(
        "tsconfig.base.json",
        &f.read("tsconfig.base.json").replace("ES2022", "ES2020"),
    );
    changed(&f, "tsconfig.base.json", ALL);
}
