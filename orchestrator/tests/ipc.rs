//! End-to-end: runner-aware tools talk to vbuild over the IPC channel and
//! narrow the key; through the shell client (`vbuild tool`) and through the
//! real npm package `@voidzero-dev/vite-task-client`.
mod common;
use common::*;
use std::path::PathBuf;

fn one_target(command: &str, extra: &str) -> Ws {
    let build = format!("[target.build]\ncommand = '''\n{command}\n'''\nsrcs = [\"**\"]\n{extra}");
    Ws::new(&[
        ("p/BUILD.toml", &build),
        ("p/data.txt", "data"),
        ("p/cache.txt", "cache v1"),
    ])
}

fn states(out: &Out) -> Vec<String> {
    out.states()
}

#[test]
fn shell_ignore_input_narrows_the_key() {
    let ws = one_target(
        "vbuild tool ignore-input cache.txt\ncat data.txt cache.txt > out.txt",
        "outs = [\"out.txt\"]",
    );
    ws.run(&["run", "//p:build"]).assert_ok();
    ws.write("p/cache.txt", "cache v2");
    assert_eq!(
        states(&ws.run(&["run", "//p:build"])),
        ["hit //p:build"],
        "ignored input changed: hit"
    );
    ws.write("p/data.txt", "data v2");
    let out = ws.run(&["run", "//p:build"]);
    assert!(
        out.stderr
            .contains("miss      //p:build  ('p/data.txt' modified)"),
        "{}",
        out.stderr
    );
    // A new file under the glob that is not ignored counts as a change.
    ws.write("p/new.txt", "new");
    let out = ws.run(&["run", "//p:build"]);
    assert!(out.stderr.contains("'p/new.txt' added"), "{}", out.stderr);
}

#[test]
fn shell_ignore_output_is_neither_stored_nor_restored() {
    let ws = one_target(
        "mkdir -p dist/.cache && echo app > dist/app.js && echo tmp > dist/.cache/x\nvbuild tool ignore-output dist/.cache",
        "outs = [\"dist/\"]",
    );
    ws.run(&["run", "//p:build"]).assert_ok();
    assert!(ws.path("p/dist/app.js").exists());
    assert!(
        !ws.path("p/dist/.cache").exists(),
        "ignored output must not be materialized"
    );
}

#[test]
fn shell_get_env_tracked_and_untracked() {
    let ws = one_target(
        "echo \"$(vbuild tool get-env MODE)\" > out.txt\necho \"$(vbuild tool get-env LOG --untracked)\" >> out.txt",
        "outs = [\"out.txt\"]",
    );
    ws.run_env(&["run", "//p:build"], &[("MODE", "a"), ("LOG", "1")])
        .assert_ok();
    assert_eq!(ws.read("p/out.txt"), "a\n1\n");
    let untracked = ws.run_env(&["run", "//p:build"], &[("MODE", "a"), ("LOG", "2")]);
    assert_eq!(
        states(&untracked),
        ["hit //p:build"],
        "untracked change: hit"
    );
    let tracked = ws.run_env(&["run", "//p:build"], &[("MODE", "b"), ("LOG", "1")]);
    insta::assert_snapshot!("tracked_env_changed", tracked.snapshot());
    assert_eq!(ws.read("p/out.txt"), "b\n1\n");
    let back = ws.run_env(&["run", "//p:build"], &[("MODE", "a"), ("LOG", "1")]);
    assert_eq!(
        states(&back),
        ["hit //p:build"],
        "going back hits the old entry"
    );
    assert_eq!(ws.read("p/out.txt"), "a\n1\n");
    // Absent is a value too.
    let absent = ws.run_env(&["run", "//p:build"], &[("LOG", "1")]);
    assert!(
        absent.stderr.contains("env 'MODE' changed"),
        "{}",
        absent.stderr
    );
}

#[test]
fn shell_get_envs_by_prefix_and_glob() {
    let ws = one_target(
        "vbuild tool get-envs --prefix VITE_ > out.txt\nvbuild tool get-envs --glob 'APP_*_URL' >> out.txt",
        "outs = [\"out.txt\"]",
    );
    ws.run_env(
        &["run", "//p:build"],
        &[("VITE_A", "1"), ("APP_X_URL", "u")],
    )
    .assert_ok();
    assert_eq!(ws.read("p/out.txt"), "VITE_A=1\nAPP_X_URL=u\n");
    let same = ws.run_env(
        &["run", "//p:build"],
        &[("VITE_A", "1"), ("APP_X_URL", "u"), ("OTHER", "x")],
    );
    assert_eq!(states(&same), ["hit //p:build"]);
    let new_var = ws.run_env(
        &["run", "//p:build"],
        &[("VITE_A", "1"), ("VITE_B", "2"), ("APP_X_URL", "u")],
    );
    assert!(
        new_var.stderr.contains("env 'VITE_B' changed"),
        "{}",
        new_var.stderr
    );
    let glob = ws.run_env(
        &["run", "//p:build"],
        &[("VITE_A", "1"), ("APP_X_URL", "v")],
    );
    assert!(
        glob.stderr.contains("env 'APP_X_URL' changed"),
        "{}",
        glob.stderr
    );
}

#[test]
fn shell_disable_cache_always_reruns() {
    let ws = one_target("vbuild tool disable-cache\necho ran", "");
    ws.run(&["run", "//p:build"]).assert_ok();
    let out = ws.run(&["run", "//p:build"]);
    insta::assert_snapshot!("disable_cache", out.snapshot());
}

#[test]
fn child_process_declarations_count() {
    let ws = one_target(
        "sh -c 'sh -c \"vbuild tool ignore-input cache.txt\"'\ncat data.txt > out.txt",
        "outs = [\"out.txt\"]",
    );
    ws.run(&["run", "//p:build"]).assert_ok();
    ws.write("p/cache.txt", "changed");
    assert_eq!(states(&ws.run(&["run", "//p:build"])), ["hit //p:build"]);
}

#[test]
fn paths_outside_the_sandbox_are_refused_and_reported() {
    let ws = one_target("vbuild tool ignore-input /etc/passwd || echo refused\nvbuild tool ignore-input ../../.. || echo refused2", "");
    let out = ws.run(&["run", "//p:build"]);
    out.assert_ok();
    assert!(out.stdout.contains("refused\nrefused2"), "{}", out.stdout);
    // One line per kind of refusal, with a count (issue 14 item 9).
    assert_eq!(
        out.stderr
            .matches("warning: //p:build: refused a tool request")
            .count(),
        1,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("(and 1 more like it)"),
        "{}",
        out.stderr
    );
    // Nothing was narrowed: changing any input still misses.
    ws.write("p/cache.txt", "changed");
    assert_eq!(states(&ws.run(&["run", "//p:build"])), ["miss //p:build"]);
}

#[test]
fn used_inputs_report_narrows_to_contents_of_used_files() {
    let ws = one_target(
        "vbuild tool report-used-inputs data.txt BUILD.toml\ncat data.txt > out.txt",
        "outs = [\"out.txt\"]",
    );
    ws.run(&["run", "//p:build"]).assert_ok();
    ws.write("p/cache.txt", "unused changed");
    assert_eq!(states(&ws.run(&["run", "//p:build"])), ["hit //p:build"]);
    ws.write("p/data.txt", "used changed");
    assert_eq!(states(&ws.run(&["run", "//p:build"])), ["miss //p:build"]);
}

/// The npm fixture with the real `@voidzero-dev/vite-task-client`, or None
/// (test skipped) when it is not installed and CI did not require it.
fn node_modules() -> Option<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ipc/tests/node-fixture/node_modules");
    let found = dir.join("@voidzero-dev/vite-task-client").is_dir() && which_node();
    if !found && std::env::var_os("VBUILD_REQUIRE_NODE").is_some() {
        panic!(
            "VBUILD_REQUIRE_NODE is set but node or {} is missing (run npm ci there)",
            dir.display()
        );
    }
    found.then(|| dir.canonicalize().unwrap())
}

fn which_node() -> bool {
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn node_client_through_the_real_npm_package() {
    let Some(modules) = node_modules() else {
        eprintln!("skipped: node or the npm fixture is missing");
        return;
    };
    let tool = r#"import * as runner from '@voidzero-dev/vite-task-client';
import { writeFileSync } from 'node:fs';
const mode = runner.getEnv('NODE_ENV');
const quiet = runner.getEnv('QUIET', { tracked: false });
const vite = runner.getEnvs({ prefix: 'VITE_' });
runner.ignoreInput('cache.txt');
writeFileSync('out.txt', JSON.stringify({ mode, quiet, vite }) + '\n');
// Fire and forget, then exit at once: the declaration must still count.
runner.ignoreOutput('tmp');
process.exit(0);
"#;
    let ws = one_target(
        "mkdir -p tmp && echo scratch > tmp/x\nnode tool.mjs",
        "outs = [\"out.txt\", \"tmp/\"]",
    );
    ws.write("p/tool.mjs", tool);
    std::os::unix::fs::symlink(&modules, ws.path("p/node_modules")).unwrap();
    let env = [
        ("NODE_ENV", "production"),
        ("QUIET", "1"),
        ("VITE_API", "x"),
    ];
    let first = ws.run_env(&["run", "//p:build"], &env);
    first.assert_ok();
    assert_eq!(
        ws.read("p/out.txt"),
        "{\"mode\":\"production\",\"quiet\":\"1\",\"vite\":{\"VITE_API\":\"x\"}}\n"
    );
    assert!(
        !ws.path("p/tmp/x").exists(),
        "ignored output dir not materialized"
    );
    ws.write("p/cache.txt", "changed");
    let env2 = [
        ("NODE_ENV", "production"),
        ("QUIET", "0"),
        ("VITE_API", "x"),
    ];
    assert_eq!(
        states(&ws.run_env(&["run", "//p:build"], &env2)),
        ["hit //p:build"]
    );
    let dev = ws.run_env(
        &["run", "//p:build"],
        &[("NODE_ENV", "development"), ("VITE_API", "x")],
    );
    assert!(
        dev.stderr.contains("env 'NODE_ENV' changed"),
        "{}",
        dev.stderr
    );
    assert!(ws.read("p/out.txt").contains("development"));
    assert_eq!(
        states(&ws.run_env(&["run", "//p:build"], &env)),
        ["hit //p:build"]
    );
}

#[test]
fn node_disable_cache_from_a_child_process() {
    let Some(modules) = node_modules() else {
        eprintln!("skipped: node or the npm fixture is missing");
        return;
    };
    let ws = one_target(
        "node -e \"require('child_process').execFileSync('node', ['child.mjs'], {stdio: 'inherit'})\"",
        "",
    );
    ws.write(
        "p/child.mjs",
        "import { disableCache } from '@voidzero-dev/vite-task-client';\ndisableCache();\n",
    );
    std::os::unix::fs::symlink(&modules, ws.path("p/node_modules")).unwrap();
    ws.run(&["run", "//p:build"]).assert_ok();
    let out = ws.run(&["run", "//p:build"]);
    assert!(
        out.stderr
            .contains("uncached  //p:build  (requested by tool)"),
        "{}",
        out.stderr
    );
}

#[test]
fn shell_client_works_inside_the_namespace_sandbox() {
    if vbuild_sandbox::probe_namespaces().is_err() {
        eprintln!("skipped: namespaces unavailable");
        return;
    }
    let ws = one_target(
        "vbuild tool ignore-input cache.txt\necho \"$(vbuild tool get-env MODE)\" > out.txt\ncat data.txt >> out.txt",
        "outs = [\"out.txt\"]\nsandbox = \"namespaces\"",
    );
    ws.run_env(&["run", "//p:build"], &[("MODE", "a")])
        .assert_ok();
    assert_eq!(ws.read("p/out.txt"), "a\ndata");
    ws.write("p/cache.txt", "changed");
    assert_eq!(
        states(&ws.run_env(&["run", "//p:build"], &[("MODE", "a")])),
        ["hit //p:build"]
    );
    let out = ws.run_env(&["run", "//p:build"], &[("MODE", "b")]);
    assert!(out.stderr.contains("env 'MODE' changed"), "{}", out.stderr);
}
