//! End to end on examples/vite-monorepo (a real pnpm + Vite workspace):
//! `vbuild migrate`, then builds in the namespace sandbox with the installed
//! node_modules: cold, all hits, restore after deleting dist/, an edit that
//! reruns only a library and its dependents, and NODE_ENV flips that Vite's
//! dead-code elimination makes visible in the bundle.
//!
//! Needs `pnpm install --frozen-lockfile` in the example (CI does it). Without
//! it the test prints SKIP, unless VBUILD_REQUIRE_NODE=1, where it fails.
mod common;

use common::{label_set, run_with, Out};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/vite-monorepo")
        .canonicalize()
        .unwrap()
}

/// The example with its node_modules installed, or None (skip).
fn installed() -> Option<PathBuf> {
    let dir = example();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let ok = node
        && dir.join("node_modules/.pnpm").is_dir()
        && dir.join("node_modules/.bin/vite").exists();
    if !ok {
        if std::env::var_os("VBUILD_REQUIRE_NODE").is_some() {
            panic!(
                "VBUILD_REQUIRE_NODE is set but node or {}/node_modules is missing; run `pnpm install --frozen-lockfile` there",
                dir.display()
            );
        }
        eprintln!("SKIP vite_example: node or the example's node_modules are missing (pnpm install --frozen-lockfile in examples/vite-monorepo)");
        return None;
    }
    Some(dir)
}

/// A copy of the example (node_modules included, symlinks kept), without
/// build outputs or files an earlier migrate wrote in place.
fn copy_example(src: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(status.success());
    for pkg in [
        "packages/core",
        "packages/format",
        "packages/ui",
        "apps/web",
    ] {
        let dir = tmp.path().join(pkg);
        let _ = std::fs::remove_dir_all(dir.join("dist"));
        let _ = std::fs::remove_file(dir.join("BUILD.toml"));
    }
    let _ = std::fs::remove_file(tmp.path().join("vbuild.toml"));
    tmp
}

struct Session {
    root: PathBuf,
    cache: tempfile::TempDir,
}

impl Session {
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let out = run_with(&self.root, self.cache.path(), args, env);
        assert_eq!(
            out.code, 0,
            "vbuild {args:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// The text of the app's bundle (its one JS asset).
    fn bundle(&self) -> String {
        let assets = self.root.join("apps/web/dist/assets");
        let js: Vec<_> = std::fs::read_dir(&assets)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".js"))
            .collect();
        assert_eq!(js.len(), 1, "one bundle in {}", assets.display());
        std::fs::read_to_string(js[0].path()).unwrap()
    }
}

/// (mtime, ctime, inode) of every file outside node_modules.
fn stamps(root: &Path) -> std::collections::BTreeMap<PathBuf, (i64, i64, i64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_entry(|e| e.file_name() != "node_modules")
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let m = e.metadata().unwrap();
            let stamp = (
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
                m.ino(),
            );
            (e.path().to_path_buf(), stamp)
        })
        .collect()
}

const CACHED: &[&str] = &[
    "//apps/web:build",
    "//packages/core:build",
    "//packages/core:typecheck",
    "//packages/format:build",
    "//packages/ui:build",
];
/// vitest starts a Vite server, and Vite's createServer calls the runner's
/// disableCache(); migrate writes `cache = "always"` for these runs.
const TESTS: &[&str] = &[
    "//apps/web:test",
    "//packages/core:test",
    "//packages/format:test",
];

#[test]
fn migrate_and_build_the_vite_example() {
    let Some(src) = installed() else { return };
    let tmp = copy_example(&src);
    let s = Session {
        root: tmp.path().canonicalize().unwrap(),
        cache: tempfile::tempdir().unwrap(),
    };

    // migrate: the summary and every file it writes, snapshotted.
    let migrated = s.run(&["migrate"], &[]);
    insta::assert_snapshot!("migrate_summary", migrated.stdout);
    for file in [
        "vbuild.toml",
        "packages/core/BUILD.toml",
        "packages/format/BUILD.toml",
        "packages/ui/BUILD.toml",
        "apps/web/BUILD.toml",
    ] {
        insta::assert_snapshot!(format!("migrate_{}", file.replace('/', "_")), s.read(file));
    }
    // The generated files load with the normal loader.
    let query = s.run(&["query"], &[]);
    let all: BTreeSet<String> = query.stdout.lines().map(str::to_string).collect();
    let expected: BTreeSet<String> = CACHED.iter().chain(TESTS).map(|s| s.to_string()).collect();
    assert_eq!(all, expected);
    // Vite 8 talks to the runner itself: migrate leaves its configs alone.
    for cfg in ["apps/web", "packages/format", "packages/ui"] {
        let cfg = format!("{cfg}/vite.config.ts");
        assert_eq!(
            s.read(&cfg),
            std::fs::read_to_string(src.join(&cfg)).unwrap(),
            "{cfg} was edited"
        );
    }
    // Migrating again keeps what exists, and says so.
    let again = run_with(&s.root, s.cache.path(), &["migrate"], &[]);
    assert_ne!(again.code, 0);
    assert!(
        again.stdout.contains("kept vbuild.toml"),
        "{}",
        again.stdout
    );

    // Cold: everything runs in the namespace sandbox (strict: no fallback).
    let cold = s.run(&["run", "//...", "--sandbox=strict"], &[]);
    let all: BTreeSet<String> = CACHED.iter().chain(TESTS).map(|s| s.to_string()).collect();
    assert_eq!(cold.labels_in("miss"), all, "{}", cold.stderr);
    assert!(cold.labels_in("uncached").is_empty(), "{}", cold.stderr);
    assert!(s.bundle().contains("MODE_MARKER_PRODUCTION"));
    assert!(!s.bundle().contains("MODE_MARKER_DEVELOPMENT"));
    assert!(s.read("packages/ui/dist/stamp.json").contains("ui.js"));
    assert!(s.read("packages/core/dist/index.d.ts").contains("Money"));
    // Tool caches landed in the sandbox, never in the workspace.
    for dir in [
        "node_modules",
        "apps/web/node_modules",
        "packages/format/node_modules",
    ] {
        for cache in [".vite", ".vite-temp"] {
            assert!(
                !s.root.join(dir).join(cache).exists(),
                "{dir}/{cache} was written"
            );
        }
    }
    for cfg in ["apps/web", "packages/format", "packages/ui"] {
        let stray: Vec<_> = std::fs::read_dir(s.root.join(cfg))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".timestamp-"))
            .collect();
        assert!(stray.is_empty(), "timestamped config left in {cfg}");
    }

    // Nothing changed, ten times: every action hits (the vitest runs too,
    // through cache = "always"), and no file of the workspace is rewritten.
    let before = stamps(&s.root);
    for i in 0..10 {
        let warm = s.run(&["run", "//..."], &[]);
        assert_eq!(warm.labels_in("hit"), all, "run {i}: {}", warm.stderr);
        assert!(warm.labels_in("miss").is_empty());
    }
    assert_eq!(stamps(&s.root), before, "a no-op run rewrote a file");

    // Every dist/ deleted: restored from the store, nothing rebuilt.
    for pkg in [
        "packages/core",
        "packages/format",
        "packages/ui",
        "apps/web",
    ] {
        std::fs::remove_dir_all(s.root.join(pkg).join("dist")).unwrap();
    }
    let restored = s.run(&["run", "//..."], &[]);
    assert_eq!(restored.labels_in("hit"), all, "{}", restored.stderr);
    assert!(s.bundle().contains("MODE_MARKER_PRODUCTION"));
    assert!(s.root.join("packages/format/dist/format.js").is_file());

    // One library edited: it and its dependents rerun, the rest hits.
    let lib = s.root.join("packages/format/src/index.ts");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, text.replace("format-v1", "format-v2")).unwrap();
    let edited = s.run(&["run", "//..."], &[]);
    assert_eq!(
        edited.labels_in("miss"),
        label_set(&[
            "//apps/web:build",
            "//packages/format:build",
            "//packages/format:test",
            "//packages/ui:build",
            "//apps/web:test",
        ]),
        "{}",
        edited.stderr
    );
    assert_eq!(
        edited.labels_in("hit"),
        label_set(&[
            "//packages/core:build",
            "//packages/core:test",
            "//packages/core:typecheck"
        ])
    );
    assert!(s.bundle().contains("format-v2"));
    assert!(
        edited
            .stderr
            .contains("'packages/format/src/index.ts' modified"),
        "{}",
        edited.stderr
    );

    // NODE_ENV flips: the right branch survives dead-code elimination, and
    // flipping back finds the earlier entry.
    let web = "//apps/web:build";
    let dev = s.run(&["run", web], &[("NODE_ENV", "development")]);
    assert!(dev.labels_in("miss").contains(web), "{}", dev.stderr);
    assert!(
        dev.stderr.contains("env 'NODE_ENV' changed"),
        "{}",
        dev.stderr
    );
    assert!(s.bundle().contains("MODE_MARKER_DEVELOPMENT"));
    assert!(!s.bundle().contains("MODE_MARKER_PRODUCTION"));
    let prod = s.run(&["run", web], &[("NODE_ENV", "production")]);
    assert!(prod.labels_in("miss").contains(web), "{}", prod.stderr);
    assert!(s.bundle().contains("MODE_MARKER_PRODUCTION"));
    assert!(!s.bundle().contains("MODE_MARKER_DEVELOPMENT"));
    let dev_again = s.run(&["run", web], &[("NODE_ENV", "development")]);
    assert!(
        dev_again.labels_in("hit").contains(web),
        "{}",
        dev_again.stderr
    );
    assert!(
        dev_again.labels_in("miss").is_empty(),
        "{}",
        dev_again.stderr
    );
    assert!(s.bundle().contains("MODE_MARKER_DEVELOPMENT"));
    let prod_again = s.run(&["run", web], &[("NODE_ENV", "production")]);
    assert!(
        prod_again.labels_in("hit").contains(web),
        "{}",
        prod_again.stderr
    );
    assert!(s.bundle().contains("MODE_MARKER_PRODUCTION"));

    // The shared workspace input: every action would run, naming it.
    let ws_yaml = s.root.join("pnpm-workspace.yaml");
    let yaml = std::fs::read_to_string(&ws_yaml).unwrap();
    std::fs::write(&ws_yaml, format!("{yaml}# edited\n")).unwrap();
    let why = s.run(&["why", "//packages/core:test"], &[]);
    assert!(
        why.stdout.contains("('pnpm-workspace.yaml' modified)"),
        "{}{}",
        why.stdout,
        why.stderr
    );
    std::fs::write(&ws_yaml, yaml).unwrap();

    // The lockfile is part of the key: a change every package can reach
    // (the root importer) invalidates them all.
    let lock = s.root.join("pnpm-lock.yaml");
    let text = std::fs::read_to_string(&lock).unwrap();
    std::fs::write(
        &lock,
        text.replace("autoInstallPeers: true", "autoInstallPeers: false"),
    )
    .unwrap();
    let why = run_with(
        &s.root,
        s.cache.path(),
        &["why", "//packages/core:build"],
        &[],
    );
    assert!(
        why.stderr.contains("node toolchain changed (lockfile)")
            || why.stdout.contains("node toolchain changed (lockfile)"),
        "{}{}",
        why.stdout,
        why.stderr
    );
}

#[test]
fn migrate_dry_run_writes_nothing() {
    let Some(src) = installed() else { return };
    let tmp = copy_example(&src);
    let out = run_with(tmp.path(), tmp.path(), &["migrate", "--dry-run"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("--- packages/core/BUILD.toml"));
    assert!(!tmp.path().join("vbuild.toml").exists());
    assert!(
        !std::fs::read_to_string(tmp.path().join("apps/web/vite.config.ts"))
            .unwrap()
            .contains("vite-plugin-vbuild")
    );
}

/// vite-plugin-vbuild's used-input report, with a config that loads a
/// helper at runtime (`createRequire`, so neither the module graph nor
/// `configFileDependencies` shows it): the helper still counts, while an
/// unimported sibling of the sources is narrowed away (issue 10 item 4).
#[test]
fn the_vite_plugin_report_never_hides_what_the_config_loaded() {
    let Some(src) = installed() else { return };
    let tmp = copy_example(&src);
    let s = Session {
        root: tmp.path().canonicalize().unwrap(),
        cache: tempfile::tempdir().unwrap(),
    };
    s.run(&["migrate"], &[]);
    // pnpm installed a copy of the plugin: test this checkout's code.
    let plugin = s.root.join("node_modules/vite-plugin-vbuild/index.js");
    let current = Path::new(env!("CARGO_MANIFEST_DIR")).join("../npm/vite-plugin-vbuild/index.js");
    std::fs::copy(current, plugin.canonicalize().unwrap()).unwrap();
    let pkg = s.root.join("packages/format");
    std::fs::write(
        pkg.join("vite.config.ts"),
        r#"import { defineConfig } from "vite";
import { createRequire } from "node:module";
import vbuild from "vite-plugin-vbuild";

const banner = createRequire(import.meta.url)("./build/banner.cjs");

export default defineConfig({
  plugins: [vbuild({ reportUsedInputs: true })],
  build: {
    outDir: "dist",
    lib: { entry: "src/index.ts", formats: ["es"], fileName: "format" },
    rollupOptions: { external: ["@demo/core"], output: { banner } },
  },
});
"#,
    )
    .unwrap();
    std::fs::create_dir_all(pkg.join("build")).unwrap();
    let banner = |v: &str| {
        std::fs::write(
            pkg.join("build/banner.cjs"),
            format!("module.exports = \"/* banner-{v} */\";\n"),
        )
        .unwrap()
    };
    banner("v1");
    std::fs::write(pkg.join("src/unused.ts"), "export const x = 1;\n").unwrap();
    let label = "//packages/format:build";
    s.run(&["run", label], &[]);
    let bundle = || s.read("packages/format/dist/format.js");
    assert!(bundle().contains("banner-v1"), "{}", bundle());
    // An unimported source beside the bundled ones: narrowed away.
    std::fs::write(pkg.join("src/unused.ts"), "export const x = 2;\n").unwrap();
    let out = s.run(&["run", label], &[]);
    assert!(out.labels_in("hit").contains(label), "{}", out.stderr);
    // The helper the config loaded: counts.
    banner("v2");
    let out = s.run(&["run", label], &[]);
    assert!(out.labels_in("miss").contains(label), "{}", out.stderr);
    assert!(bundle().contains("banner-v2"), "{}", bundle());
}
