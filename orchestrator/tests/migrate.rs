//! `vbuild migrate` on small npm workspaces written for the purpose (no
//! install needed): dependency cycles, script inlining, refusing to
//! overwrite, and the generated files loading with the normal loader.
mod common;

use common::Ws;

fn npm_ws(files: &[(&str, &str)]) -> Ws {
    let ws = Ws::new(files);
    // Ws writes a vbuild.toml; migrate is to write its own.
    std::fs::remove_file(ws.path("vbuild.toml")).unwrap();
    ws
}

#[test]
fn dev_dependency_cycle_is_broken_where_sources_allow() {
    let ws = npm_ws(&[
        (
            "package.json",
            r#"{"name":"root","private":true,"workspaces":["packages/*"]}"#,
        ),
        (
            "packages/a/package.json",
            r#"{"name":"a","version":"1.0.0","scripts":{"build":"node build.js","test":"node test.js"},"devDependencies":{"b":"^1.0.0"}}"#,
        ),
        (
            "packages/a/build.js",
            "require('fs').mkdirSync('dist',{recursive:true})\n",
        ),
        ("packages/a/src/a.test.js", "import b from 'b'\n"),
        (
            "packages/b/package.json",
            r#"{"name":"b","version":"1.0.0","scripts":{"build":"npm run compile","compile":"node build.js"},"dependencies":{"a":"*"}}"#,
        ),
        ("packages/b/src/index.js", "import a from 'a'\n"),
    ]);
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    assert!(
        out.stdout.contains("dependency cycle a ↔ b: dropped a → b"),
        "{}",
        out.stdout
    );
    let b = ws.read("packages/b/BUILD.toml");
    assert!(b.contains("command = \"node build.js\""), "{b}");
    // a's build declares no outputs: b also sees a's files (a file group).
    assert!(
        b.contains("deps = [\"//packages/a:build\", \"//packages/a:files\"]"),
        "{b}"
    );
    // The dropped edge stays visible, as a comment.
    let a = ws.read("packages/a/BUILD.toml");
    assert!(
        a.contains("deps = [\n  # \"//packages/b:build\",  # dev-dependency cycle"),
        "{a}"
    );
    assert!(
        out.stdout
            .contains("packages/a:build: could not tell what it writes"),
        "{}",
        out.stdout
    );
    // The files load: query lists the targets.
    let q = ws.run(&["query"]);
    assert_eq!(
        q.stdout,
        "//packages/a:build\n//packages/a:files\n//packages/a:test\n//packages/b:build\n"
    );
    // Existing files are kept without --force.
    let again = ws.run(&["migrate"]);
    assert_ne!(again.code, 0);
    assert!(
        again.stdout.contains("kept packages/a/BUILD.toml"),
        "{}",
        again.stdout
    );
    assert_eq!(ws.run(&["migrate", "--force"]).code, 0);
}

#[test]
fn runtime_cycle_is_left_to_the_user() {
    let ws = npm_ws(&[
        (
            "package.json",
            r#"{"name":"root","private":true,"workspaces":["packages/*"]}"#,
        ),
        (
            "packages/a/package.json",
            r#"{"name":"a","version":"1.0.0","scripts":{"build":"node x.js"},"dependencies":{"b":"workspace:*"}}"#,
        ),
        ("packages/a/src/index.ts", "import { b } from \"b\";\n"),
        (
            "packages/b/package.json",
            r#"{"name":"b","version":"1.0.0","scripts":{"build":"node x.js"},"dependencies":{"a":"workspace:*"}}"#,
        ),
    ]);
    let out = ws.run(&["migrate", "--dry-run"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    assert!(
        out.stdout.contains("dependency cycle a ↔ b: a → b (dependency, imported by src/index.ts); b → a (dependency)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("  # \"//packages/b:build\",  # cycle a ↔ b: fix by hand"),
        "{}",
        out.stdout
    );
}

#[test]
fn not_a_workspace() {
    let ws = npm_ws(&[("package.json", r#"{"name":"solo"}"#)]);
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("is not the root of an npm, pnpm or yarn workspace"),
        "{}",
        out.stderr
    );
}

/// Installs a fake-free stand-in for an installed package: the real
/// package.json an install leaves in node_modules (all migrate reads).
fn installed(ws: &Ws, dir: &str, name: &str, version: &str) {
    ws.write(
        format!("{dir}/node_modules/{name}/package.json").trim_start_matches('/'),
        &format!(r#"{{"name":"{name}","version":"{version}"}}"#),
    );
}

const VITE_CONFIG: &str =
    "import { defineConfig } from \"vite\";\n\nexport default defineConfig({\n  plugins: [],\n});\n";

fn vite_ws() -> Ws {
    npm_ws(&[
        (
            "package.json",
            r#"{"name":"root","private":true,"workspaces":["packages/*"],"scripts":{"build":"npm run build --workspaces"}}"#,
        ),
        (
            "packages/app/package.json",
            r#"{"name":"app","version":"1.0.0","scripts":{"build":"cross-env NODE_ENV=production vite build"}}"#,
        ),
        ("packages/app/vite.config.ts", VITE_CONFIG),
    ])
}

#[test]
fn vite_configs_are_never_edited_into_a_broken_build() {
    // Vite 4, no vite-plugin-vbuild installed: the config stays as it is,
    // and the summary says what is lost.
    let ws = vite_ws();
    installed(&ws, "", "vite", "4.5.3");
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    assert_eq!(ws.read("packages/app/vite.config.ts"), VITE_CONFIG);
    assert!(
        out.stdout.contains("packages/app: Vite 4 without vite-plugin-vbuild installed: its config is left alone; NODE_ENV and VITE_* variables are not tracked"),
        "{}",
        out.stdout
    );
    // cross-env in front of vite build: outs still found.
    let build = ws.read("packages/app/BUILD.toml");
    assert!(build.contains("outs = [\"dist/\"]"), "{build}");
    assert!(!build.contains("VBUILD_VITE_REPORT_INPUTS"), "{build}");

    // Vite 8 talks to the runner itself: no edit, nothing to report.
    let ws = vite_ws();
    installed(&ws, "", "vite", "8.0.1");
    installed(&ws, "", "vite-plugin-vbuild", "0.1.0");
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    assert_eq!(ws.read("packages/app/vite.config.ts"), VITE_CONFIG);
    assert!(!out.stdout.contains("vite-plugin-vbuild"), "{}", out.stdout);
}

#[test]
fn vite_5_to_7_gets_the_plugin_only_where_it_is_installed() {
    let ws = vite_ws();
    installed(&ws, "", "vite", "6.2.0");
    installed(&ws, "", "vite-plugin-vbuild", "0.1.0");
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    let cfg = ws.read("packages/app/vite.config.ts");
    assert!(
        cfg.contains("import vbuild from \"vite-plugin-vbuild\""),
        "{cfg}"
    );
    assert!(cfg.contains("plugins: [vbuild(), ]"), "{cfg}");
}

fn turbo_ws(turbo: &str, extra: &[(&str, &str)]) -> Ws {
    let mut files = vec![
        (
            "package.json",
            r#"{"name":"root","private":true,"workspaces":["packages/*"],"scripts":{"build":"turbo run build","lint":"eslint .","format":"prettier --write .","lint:fix":"eslint . --fix"}}"#,
        ),
        ("turbo.json", turbo),
    ];
    files.extend_from_slice(extra);
    npm_ws(&files)
}

#[test]
fn overlapping_outputs_become_one_target() {
    let ws = turbo_ws(
        r#"{"tasks":{"build":{"dependsOn":["^build","types"],"outputs":["dist/**"]},"types":{"outputs":["dist/**"]},"theme":{"outputs":["dist/**"]}}}"#,
        &[
            (
                "packages/ui/package.json",
                r#"{"name":"ui","version":"1.0.0","scripts":{"build":"vite build","types":"tsc --emitDeclarationOnly","theme":"node theme.js > dist/theme.css"}}"#,
            ),
            (
                "packages/ui/tsconfig.json",
                r#"{"compilerOptions":{"outDir":"dist","declaration":true}}"#,
            ),
        ],
    );
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    let b = ws.read("packages/ui/BUILD.toml");
    // types runs first (build dependsOn it); theme's outputs are turbo's
    // dist/, so it joins too; one target owns dist/.
    assert!(
        b.contains("command = \"tsc --emitDeclarationOnly && (vite build && node theme.js > dist/theme.css)\""),
        "{b}"
    );
    assert_eq!(b.matches("[target.").count(), 1, "{b}");
    assert!(b.contains("outs = [\"dist/\"]"), "{b}");
    let q = ws.run(&["query"]);
    assert_eq!(q.stdout, "//packages/ui:build\n", "{}", q.snapshot());
}

#[test]
fn turbo_depends_on_is_followed_exactly() {
    let ws = turbo_ws(
        r#"{"tasks":{"build":{"dependsOn":["^build","theme"],"outputs":["dist/**"]},"lint":{},"test":{"dependsOn":["build"]}}}"#,
        &[
            (
                "packages/core/package.json",
                r#"{"name":"core","version":"1.0.0","scripts":{"build":"tsc","lint":"eslint src && npm run lint:dist","lint:dist":"node check-dist.js","test":"node t.js"}}"#,
            ),
            (
                "packages/core/tsconfig.json",
                r#"{"compilerOptions":{"outDir":"dist"}}"#,
            ),
            (
                "packages/app/package.json",
                r#"{"name":"app","version":"1.0.0","scripts":{"build":"tsc","lint":"eslint src"},"dependencies":{"core":"*"}}"#,
            ),
            (
                "packages/app/tsconfig.json",
                r#"{"compilerOptions":{"outDir":"dist"}}"#,
            ),
        ],
    );
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    let app = ws.read("packages/app/BUILD.toml");
    let lint = app.split("[target.lint]").nth(1).unwrap();
    assert!(!lint.contains("deps"), "lint has no dependsOn: {app}");
    assert!(app.contains("deps = [\"//packages/core:build\"]"), "{app}");
    let core = ws.read("packages/core/BUILD.toml");
    assert!(
        core.contains(
            "[target.test]\ncommand = \"node t.js\"\nsrcs = [\"**\"]\ndeps = [\":build\"]"
        ),
        "{core}"
    );
    // The helper a step calls is inlined, not a target of its own.
    assert!(!core.contains("lint-dist"), "{core}");
    // turbo skips a missing task (`theme`) silently; so does migrate.
    assert!(!out.stdout.contains("theme"), "{}", out.stdout);
    // Root scripts: orchestration and whole-repo runs are not targets;
    // source rewriters never are.
    assert!(!ws.path("BUILD.toml").exists());
    assert!(
        out.stdout
            .contains("(root): `build` runs the workspace's `build`"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("(root): `lint` runs over the whole repository (`eslint .`)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("(root): `format` rewrites sources"),
        "{}",
        out.stdout
    );
    assert_eq!(
        ws.run(&["query"]).stdout,
        "//packages/app:build\n//packages/app:lint\n//packages/core:build\n//packages/core:lint\n//packages/core:test\n"
    );
    // The workspace is named after its directory, not "root".
    let toml = ws.read("vbuild.toml");
    assert!(!toml.contains("name = \"root\""), "{toml}");
    assert!(out.stdout.starts_with("vbuild migrate: npm workspace with turbo.json, 2 packages with 5 targets (2 writing outputs)"), "{}", out.stdout);
}

#[test]
fn source_rewriting_scripts_are_never_targets() {
    let ws = npm_ws(&[
        (
            "package.json",
            r#"{"name":"r","private":true,"workspaces":["packages/*"]}"#,
        ),
        (
            "packages/a/package.json",
            r#"{"name":"a","version":"1.0.0","scripts":{"build":"node b.js","lint":"eslint src","lint:fix":"eslint src --fix","format":"prettier --write src","test":"vitest run","test-unit":"vitest run","test:update-snapshots":"vitest run -u"}}"#,
        ),
    ]);
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    let a = ws.read("packages/a/BUILD.toml");
    for t in ["lint-fix", "format", "update-snapshots", "test-unit"] {
        assert!(!a.contains(&format!("[target.{t}")), "{t}: {a}");
    }
    assert!(
        a.contains("# also package.json \"test-unit\" (the same command)"),
        "{a}"
    );
    assert!(
        out.stdout
            .contains("`lint:fix` rewrites sources: not a target"),
        "{}",
        out.stdout
    );
}

#[test]
fn workspace_flags_and_script_cycles_end_with_a_message() {
    // Used to inline `build` into itself until memory ran out.
    let ws = npm_ws(&[
        (
            "package.json",
            r#"{"name":"r","private":true,"workspaces":["packages/*"],"scripts":{"build":"npm run build -w packages/a && npm run build --workspace=packages/b"}}"#,
        ),
        (
            "packages/a/package.json",
            r#"{"name":"a","version":"1.0.0","scripts":{"build":"npm run compile","compile":"npm run build"}}"#,
        ),
        (
            "packages/b/package.json",
            r#"{"name":"b","version":"1.0.0","scripts":{"build":"node b.js && pnpm --filter a run x"}}"#,
        ),
    ]);
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    assert!(
        out.stdout.contains("packages/a:build: scripts call each other in a cycle: build → compile → build; no target written"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("packages/b:build: `pnpm --filter a run x` runs a script of other workspace packages (`--filter`)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("(root): `build` runs the workspace's `build`"),
        "{}",
        out.stdout
    );
    assert_eq!(ws.run(&["query"]).stdout, "//packages/b:build\n");
}

#[test]
fn gitignore_directories_are_excluded_once_for_the_workspace() {
    let ws = npm_ws(&[
        (
            "package.json",
            r#"{"name":"r","private":true,"workspaces":["packages/*"],"scripts":{"build":"npm run build -ws"}}"#,
        ),
        (".gitignore", "node_modules\ncoverage\ndist/\n*.log\n"),
        (
            "packages/a/package.json",
            r#"{"name":"a","version":"1.0.0","scripts":{"build":"node build.js > out.txt"}}"#,
        ),
        ("packages/a/.gitignore", "generated/\n"),
        ("packages/a/build.js", "console.log('built')\n"),
    ]);
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    let toml = ws.read("vbuild.toml");
    assert!(
        toml.contains("exclude = [\"**/coverage\", \"**/coverage/**\", \"**/dist/**\", \"**/*.log\", \"**/*.tsbuildinfo\"]"),
        "{toml}"
    );
    let a = ws.read("packages/a/BUILD.toml");
    assert!(a.contains("srcs = [\"**\", \"!**/generated/**\"]"), "{a}");
    // Coverage written after the build does not invalidate it.
    ws.run(&["run", "//packages/a:build"]).assert_ok();
    ws.write("packages/a/coverage/lcov.info", "TN:\n");
    ws.write("packages/a/generated/x.txt", "x");
    ws.run(&["run", "//packages/a:build"]).assert_all("hit");
}

#[test]
fn files_outside_the_package_are_declared_or_listed() {
    let ws = npm_ws(&[
        (
            "package.json",
            r#"{"name":"root","version":"2.0.0","private":true,"workspaces":["packages/*"],"scripts":{"build":"npm run build -ws","lint":"npm run lint -ws"}}"#,
        ),
        ("tsconfig.base.json", r#"{"compilerOptions":{"strict":true}}"#),
        (".eslintrc.js", "module.exports = { root: true };\n"),
        ("packages/config/package.json", r#"{"name":"@acme/config","version":"1.0.0","files":["base.json"]}"#),
        ("packages/config/base.json", r#"{"level":1}"#),
        (
            "packages/a/package.json",
            r#"{"name":"a","version":"1.0.0","scripts":{"build":"node build.js > out.txt","lint":"eslint -c ../../configs/missing.js src"},"devDependencies":{"@acme/config":"workspace:*"}}"#,
        ),
        ("packages/a/tsconfig.json", r#"{"extends":"../../tsconfig.base.json"}"#),
        (
            "packages/a/build.js",
            "const fs = require('fs');\nconst v = require('../../package.json').version;\nconsole.log(v, fs.readFileSync('../config/base.json', 'utf8'));\n",
        ),
    ]);
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    let toml = ws.read("vbuild.toml");
    assert!(
        toml.contains("inputs = [\".eslintrc.js\", \"package.json\", \"tsconfig.base.json\"]"),
        "{toml}"
    );
    let a = ws.read("packages/a/BUILD.toml");
    assert!(a.contains("deps = [\"//packages/config:files\"]"), "{a}");
    // The shared config package (no build step) is a file group.
    let config = ws.read("packages/config/BUILD.toml");
    assert!(
        config.contains("[target.files]\nsrcs = [\"**\"]\n"),
        "{config}"
    );
    assert!(!config.contains("command"), "{config}");
    assert!(
        out.stdout.contains("packages/a:lint: `eslint -c ../../configs/missing.js`: configs/missing.js does not exist"),
        "{}",
        out.stdout
    );
    // They are inputs: the build sees them, and a change re-runs it.
    ws.run(&["run", "//packages/a:build"]).assert_all("miss");
    assert_eq!(ws.read("packages/a/out.txt"), "2.0.0 {\"level\":1}\n");
    ws.run(&["run", "//packages/a:build"]).assert_all("hit");
    ws.write("packages/config/base.json", r#"{"level":2}"#);
    ws.run(&["run", "//packages/a:build"]).assert_all("miss");
    assert_eq!(ws.read("packages/a/out.txt"), "2.0.0 {\"level\":2}\n");
    ws.write(
        "tsconfig.base.json",
        r#"{"compilerOptions":{"strict":false}}"#,
    );
    ws.run(&["run", "//packages/a:build"]).assert_all("miss");
}

#[test]
fn root_scripts_packages_share_name_the_pipeline() {
    // npm workspaces, no turbo: the root compiles the whole repo with
    // `tsc -b`, each package has `compile`; `test` runs what it compiled.
    let ws = npm_ws(&[
        (
            "package.json",
            r#"{"name":"r","private":true,"workspaces":["packages/*"],"scripts":{"compile":"tsc -b tsconfig.build.json","test":"npm run --ws test --if-present"}}"#,
        ),
        (
            "packages/core/package.json",
            r#"{"name":"core","version":"1.0.0","scripts":{"compile":"tsc"}}"#,
        ),
        (
            "packages/core/tsconfig.json",
            r#"{"compilerOptions":{"outDir":"lib"}}"#,
        ),
        (
            "packages/cli/package.json",
            r#"{"name":"cli","version":"1.0.0","scripts":{"compile":"tsc","test":"node lib/main.spec.js"},"dependencies":{"core":"^1.0.0"}}"#,
        ),
        (
            "packages/cli/tsconfig.json",
            r#"{"compilerOptions":{"outDir":"lib"}}"#,
        ),
    ]);
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    let cli = ws.read("packages/cli/BUILD.toml");
    assert!(
        cli.contains("[target.compile]\ncommand = \"tsc\"\nsrcs = [\"**\"]\ndeps = [\"//packages/core:compile\"]\nouts = [\"lib/\"]"),
        "{cli}"
    );
    assert!(cli.contains("deps = [\":compile\"]"), "{cli}");
    assert_eq!(
        ws.run(&["query", "compile"]).stdout,
        "//packages/cli:compile\n//packages/core:compile\n"
    );
}

#[test]
fn a_package_turbo_json_overrides_the_roots_tasks() {
    let ws = turbo_ws(
        r#"{"tasks":{"build":{"dependsOn":["^build"],"outputs":["dist/**"]},"test":{"dependsOn":["^test"]}}}"#,
        &[
            (
                "packages/a/package.json",
                r#"{"name":"a","version":"1.0.0","scripts":{"build":"tsc","test":"node t.js"}}"#,
            ),
            (
                "packages/a/tsconfig.json",
                r#"{"compilerOptions":{"outDir":"dist"}}"#,
            ),
            (
                "packages/a/turbo.json",
                r#"{"extends":["//"],"tasks":{"test":{"dependsOn":["build"],"env":["API_URL"]}}}"#,
            ),
        ],
    );
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    let a = ws.read("packages/a/BUILD.toml");
    assert!(
        a.contains("[target.test]\ncommand = \"node t.js\"\nsrcs = [\"**\"]\ndeps = [\":build\"]\npass_env = [\"API_URL\"]"),
        "{a}"
    );
}

#[test]
fn unknown_builders_get_the_gitignored_output_dir_and_npm_variables() {
    // Never built: no dist/ on disk, as in a fresh clone.
    let ws = npm_ws(&[
        ("package.json", r#"{"name":"r","private":true,"workspaces":["packages/*"]}"#),
        (".gitignore", "dist\n"),
        ("fake-build.js", "const fs = require('fs');\nconst dir = `packages/${process.env.npm_package_name}/dist`;\nfs.mkdirSync(__dirname + '/' + dir, { recursive: true });\nfs.writeFileSync(__dirname + '/' + dir + '/log.txt', process.env.npm_lifecycle_event);\n"),
        ("packages/a/package.json", r#"{"name":"a","version":"1.0.0","scripts":{"build":"node ../../fake-build.js"}}"#),
    ]);
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    assert!(
        out.stdout
            .contains("packages/a:build: optional_outs = [\"dist/\"] guessed from the .gitignore"),
        "{}",
        out.stdout
    );
    let a = ws.read("packages/a/BUILD.toml");
    assert!(a.contains("optional_outs = [\"dist/\"]"), "{a}");
    assert!(a.contains("env = { npm_lifecycle_event = \"build\", npm_package_name = \"a\", npm_package_version = \"1.0.0\" }"), "{a}");
    assert!(ws
        .read("vbuild.toml")
        .contains("inputs = [\"fake-build.js\", \"package.json\"]"));
    ws.run(&["run", "build"]).assert_all("miss");
    assert_eq!(ws.read("packages/a/dist/log.txt"), "build");
    std::fs::remove_dir_all(ws.path("packages/a/dist")).unwrap();
    ws.run(&["run", "build"]).assert_all("hit");
    assert_eq!(ws.read("packages/a/dist/log.txt"), "build");
}

/// A newcomer's first `vbuild migrate && vbuild run build`, on a checkout
/// that was never built: turbo's `outputs` (task, `pkg#task` and a
/// package's own turbo.json; relative to the package) become
/// `optional_outs`, so what an unknown tool writes is cached, staged for
/// dependents and restored; and migrating again after the build writes
/// the same files.
#[test]
fn a_never_built_checkout_gets_turbos_outputs() {
    let build = "const fs = require('fs');\nconst [dir, from] = process.argv.slice(2);\nfs.mkdirSync(dir, { recursive: true });\nconst dep = from ? fs.readFileSync(from, 'utf8') : '';\nfs.writeFileSync(dir + '/out.js', dep + 'built ' + process.env.npm_package_name + '\\n');\n";
    let ws = turbo_ws(
        r#"{"tasks":{"build":{"dependsOn":["^build"],"outputs":["dist/**",".next/**","!.next/cache/**","node_modules/.cache/x/**"]},"app#build":{"dependsOn":["^build"],"outputs":["www/**"]},"test":{"dependsOn":["build"],"outputs":["coverage/**"]}}}"#,
        &[
            ("build.js", build),
            (
                "packages/lib/package.json",
                r#"{"name":"lib","version":"1.0.0","scripts":{"build":"node ../../build.js dist","test":"grep -q lib dist/out.js"}}"#,
            ),
            (
                "packages/app/package.json",
                r#"{"name":"app","version":"1.0.0","scripts":{"build":"node ../../build.js www ../lib/dist/out.js"},"dependencies":{"lib":"*"}}"#,
            ),
            // A package's own turbo.json: its build writes `out/`.
            (
                "packages/docs/package.json",
                r#"{"name":"docs","version":"1.0.0","scripts":{"build":"node ../../build.js out"}}"#,
            ),
            (
                "packages/docs/turbo.json",
                r#"{"extends":["//"],"tasks":{"build":{"outputs":["out/**"]}}}"#,
            ),
        ],
    );
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    insta::assert_snapshot!("never_built_summary", out.stdout);
    let files = [
        "vbuild.toml",
        "packages/lib/BUILD.toml",
        "packages/app/BUILD.toml",
        "packages/docs/BUILD.toml",
    ];
    let migrated: Vec<String> = files.iter().map(|f| ws.read(f)).collect();
    insta::assert_snapshot!("never_built_lib", migrated[1]);
    insta::assert_snapshot!("never_built_app", migrated[2]);
    assert!(
        migrated[3].contains("optional_outs = [\"out/\"]"),
        "{}",
        migrated[3]
    );

    let cold = ws.run(&["run", "build", "test"]);
    cold.assert_ok();
    cold.assert_all("miss");
    assert_eq!(ws.read("packages/app/www/out.js"), "built lib\nbuilt app\n");
    assert_eq!(ws.read("packages/docs/out/out.js"), "built docs\n");
    for d in ["packages/lib/dist", "packages/app/www", "packages/docs/out"] {
        std::fs::remove_dir_all(ws.path(d)).unwrap();
    }
    ws.run(&["run", "build", "test"]).assert_all("hit");
    assert_eq!(ws.read("packages/app/www/out.js"), "built lib\nbuilt app\n");
    assert_eq!(ws.read("packages/lib/dist/out.js"), "built lib\n");

    // Built now: migrating again gives the same files.
    let again = ws.run(&["migrate", "--force"]);
    assert_eq!(again.code, 0, "{}", again.snapshot());
    let remigrated: Vec<String> = files.iter().map(|f| ws.read(f)).collect();
    assert_eq!(migrated, remigrated);
}

/// Every manifest migrate writes starts with a `#:schema` line whose path,
/// resolved from the manifest's own directory as Taplo does, is a schema
/// migrate wrote and that accepts the manifest.
#[test]
fn manifests_point_editors_at_schemas_that_accept_them() {
    let ws = npm_ws(&[
        (
            "package.json",
            r#"{"name":"r","private":true,"workspaces":["packages/*","apps/web/*"]}"#,
        ),
        (
            "packages/a/package.json",
            r#"{"name":"a","version":"1.0.0","scripts":{"build":"tsc","test":"vitest run"}}"#,
        ),
        (
            "packages/a/tsconfig.json",
            r#"{"compilerOptions":{"outDir":"dist"}}"#,
        ),
        (
            "apps/web/site/package.json",
            r#"{"name":"site","version":"1.0.0","scripts":{"build":"node build.js"},"dependencies":{"a":"*"}}"#,
        ),
    ]);
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    assert!(
        out.stdout
            .contains("wrote .vbuild/schema/: JSON Schemas for editors"),
        "{}",
        out.stdout
    );
    let mut checked = Vec::new();
    for manifest in [
        "vbuild.toml",
        "packages/a/BUILD.toml",
        "apps/web/site/BUILD.toml",
    ] {
        let text = ws.read(manifest);
        let first = text.lines().next().unwrap_or_default();
        let rel = first
            .strip_prefix("#:schema ")
            .unwrap_or_else(|| panic!("{manifest} starts with {first:?}"));
        let dir = ws.path(manifest).parent().unwrap().to_path_buf();
        let schema_text = std::fs::read_to_string(dir.join(rel))
            .unwrap_or_else(|e| panic!("{manifest}: {rel}: {e}"));
        let schema: serde_json::Value = serde_json::from_str(&schema_text).unwrap();
        let validator = jsonschema::draft202012::new(&schema).expect("the schema compiles");
        let doc: serde_json::Value = toml::from_str(&text).unwrap();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{manifest}:\n{text}\n{errors:#?}");
        checked.push(rel.to_string());
    }
    assert_eq!(
        checked,
        [
            "./.vbuild/schema/vbuild.schema.json",
            "../../.vbuild/schema/build.schema.json",
            "../../../.vbuild/schema/build.schema.json"
        ]
    );
    // The schema directory is hidden: never a package, and the generated
    // workspace loads and runs with it in place.
    let q = ws.run(&["query", "//..."]);
    assert_eq!(q.code, 0, "{}", q.snapshot());
    assert!(!q.stdout.contains(".vbuild"), "{}", q.stdout);
}

/// Nx's `outputs` (nx.json `targetDefaults`, a project.json target) on a
/// never-built checkout: `{projectRoot}/…` paths become `optional_outs`,
/// and the outputs are cached and restored.
#[test]
fn nx_outputs_become_optional_outs() {
    let ws = npm_ws(&[
        (
            "package.json",
            r#"{"name":"r","private":true,"workspaces":["packages/*"],"scripts":{"build":"nx run-many -t build"}}"#,
        ),
        (
            "nx.json",
            r#"{"targetDefaults":{"build":{"dependsOn":["^build"],"outputs":["{projectRoot}/dist","{options.outputPath}"]}}}"#,
        ),
        (
            "packages/a/package.json",
            r#"{"name":"a","version":"1.0.0","scripts":{"build":"mkdir -p dist && cp a.src dist/a.txt"}}"#,
        ),
        ("packages/a/a.src", "a\n"),
        (
            "packages/b/package.json",
            r#"{"name":"b","version":"1.0.0","scripts":{"build":"mkdir -p out && cp ../a/dist/a.txt out/b.txt"},"dependencies":{"a":"*"}}"#,
        ),
        (
            "packages/b/project.json",
            r#"{"targets":{"build":{"outputs":["{workspaceRoot}/packages/b/out"]}}}"#,
        ),
    ]);
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    assert!(
        ws.read("packages/a/BUILD.toml")
            .contains("optional_outs = [\"dist/\"]"),
        "{}",
        ws.read("packages/a/BUILD.toml")
    );
    let b = ws.read("packages/b/BUILD.toml");
    assert!(b.contains("optional_outs = [\"out/\"]"), "{b}");
    assert!(
        out.stdout
            .contains("packages/a:build: nx output `{options.outputPath}` not translated"),
        "{}",
        out.stdout
    );
    ws.run(&["run", "build"]).assert_all("miss");
    assert_eq!(ws.read("packages/b/out/b.txt"), "a\n");
    std::fs::remove_dir_all(ws.path("packages/a/dist")).unwrap();
    std::fs::remove_dir_all(ws.path("packages/b/out")).unwrap();
    ws.run(&["run", "build"]).assert_all("hit");
    assert_eq!(ws.read("packages/b/out/b.txt"), "a\n");
}

/// turbo outputs never make migrate emit what the overlap rule rejects: a
/// `test` whose outputs repeat the build's `dist/**` leaves `dist/` to the
/// build (instead of merging the two), and an output reaching into a
/// nested package is listed, not declared.
#[test]
fn turbo_outputs_never_overlap_another_targets() {
    let ws = turbo_ws(
        r#"{"tasks":{"build":{"outputs":["dist/**"]},"test":{"outputs":["dist/**","coverage/**"]},"docs#build":{"outputs":["site/**","api/**"]},"cfg#build":{"outputs":[]}}}"#,
        &[
            // turbo says `cfg#build` writes nothing: no guess from the .gitignore.
            (".gitignore", "dist\n"),
            (
                "packages/cfg/package.json",
                r#"{"name":"cfg","version":"1.0.0","scripts":{"build":"node gen.js"}}"#,
            ),
            (
                "packages/ui/package.json",
                r#"{"name":"ui","version":"1.0.0","scripts":{"build":"tsc","test":"node t.js"}}"#,
            ),
            (
                "packages/ui/tsconfig.json",
                r#"{"compilerOptions":{"outDir":"dist"}}"#,
            ),
            ("packages/ui/t.js", ""),
            (
                "packages/docs/package.json",
                r#"{"name":"docs","version":"1.0.0","scripts":{"build":"node gen.js"}}"#,
            ),
            ("packages/docs/gen.js", ""),
            (
                "packages/docs/api/package.json",
                r#"{"name":"api","version":"1.0.0","scripts":{"build":"node gen.js"}}"#,
            ),
            ("packages/docs/api/gen.js", ""),
        ],
    );
    // The nested package is a workspace package too.
    let root = ws.read("package.json").replace(
        r#""workspaces":["packages/*"]"#,
        r#""workspaces":["packages/*","packages/docs/api"]"#,
    );
    ws.write("package.json", &root);
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    let ui = ws.read("packages/ui/BUILD.toml");
    assert_eq!(ui.matches("[target.").count(), 2, "{ui}");
    assert!(ui.contains("outs = [\"dist/\"]"), "{ui}");
    assert!(ui.contains("optional_outs = [\"coverage/\"]"), "{ui}");
    let docs = ws.read("packages/docs/BUILD.toml");
    assert!(docs.contains("optional_outs = [\"site/\"]"), "{docs}");
    assert!(
        out.stdout.contains(
            "packages/docs:build: output `api/` (turbo.json / nx) reaches into the package packages/docs/api"
        ),
        "{}",
        out.stdout
    );
    let cfg = ws.read("packages/cfg/BUILD.toml");
    assert!(!cfg.contains("outs"), "{cfg}");
    assert!(!out.stdout.contains("packages/cfg:build"), "{}", out.stdout);
    // Everything migrate wrote loads (the overlap rule included).
    ws.run(&["query"]).assert_ok();
}

/// turbo 2.5's `$TURBO_ROOT$/…` inputs are root files: workspace inputs,
/// not package-relative srcs that would match nothing.
#[test]
fn turbo_root_inputs_become_workspace_inputs() {
    let ws = turbo_ws(
        r#"{"tasks":{"build":{"inputs":["$TURBO_DEFAULT$","$TURBO_ROOT$/tsconfig.base.json","!$TURBO_ROOT$/x"],"outputs":["dist/**"]}}}"#,
        &[
            ("tsconfig.base.json", "{}"),
            (
                "packages/a/package.json",
                r#"{"name":"a","version":"1.0.0","scripts":{"build":"mkdir -p dist && cp ../../tsconfig.base.json dist/"}}"#,
            ),
        ],
    );
    let out = ws.run(&["migrate"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    let a = ws.read("packages/a/BUILD.toml");
    assert!(!a.contains("TURBO_ROOT"), "{a}");
    assert!(
        ws.read("vbuild.toml").contains("\"tsconfig.base.json\""),
        "{}",
        ws.read("vbuild.toml")
    );
    assert!(
        out.stdout
            .contains("turbo input `!$TURBO_ROOT$/x` not translated"),
        "{}",
        out.stdout
    );
    ws.run(&["run", "build"]).assert_all("miss");
    assert_eq!(ws.read("packages/a/dist/tsconfig.base.json"), "{}");
}
