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
    assert!(b.contains("deps = [\"//packages/a:build\"]"), "{b}");
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
        "//packages/a:build\n//packages/a:test\n//packages/b:build\n"
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
