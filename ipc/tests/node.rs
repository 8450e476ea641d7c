//! The Node side: vbuild's client module loaded by the REAL npm package
//! `@voidzero-dev/vite-task-client`, in real node processes.
//!
//! The fixture's dependencies are installed with `npm ci` on first use when
//! `tests/node-fixture/node_modules` is absent. Without `node` on PATH these
//! tests are skipped with a message, not failed; set VBUILD_REQUIRE_NODE=1
//! (CI) to make a missing node an error.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use common::{fixture_dir, json_lines, Harness};
use serde_json::{json, Value};
use vbuild_ipc::{hash_secret, EnvQuery, EnvValue};

const DRAIN: Duration = Duration::from_secs(2);

/// Ensures node and the fixture's node_modules; false = skip the test.
fn node_ready() -> bool {
    static READY: Mutex<Option<bool>> = Mutex::new(None);
    let mut ready = READY.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = *ready {
        return r;
    }
    let has_node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_node {
        assert!(
            std::env::var_os("VBUILD_REQUIRE_NODE").is_none(),
            "node is required but not found"
        );
        eprintln!("skipping: node not found on PATH");
        *ready = Some(false);
        return false;
    }
    let installed = fixture_dir().join("node_modules/@voidzero-dev/vite-task-client/package.json");
    if !installed.exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(fixture_dir())
            .status()
            .expect("npm is needed to install the node test fixture");
        assert!(
            status.success(),
            "npm ci in {} failed",
            fixture_dir().display()
        );
    }
    *ready = Some(true);
    true
}

fn node(h: &Harness, args: &[&str]) -> Output {
    h.command("node")
        .arg(fixture_dir().join("declare.mjs"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_call_through_the_real_package() {
    if !node_ready() {
        return;
    }
    let mut h = Harness::new();
    let lines = json_lines(&node(
        &h,
        &[
            "ignore-input=node_modules/.cache",
            "ignore-output=dist/tmp/",
            "disable-cache",
            "get-env=PRESENT",
            "get-env=ABSENT",
            "get-env=NULLISH",
            "get-env-tracked-false=UNTRACKED",
            "get-env-tracked-true=OTHER",
            "get-envs=VITE_*",
            "get-envs-prefix=PUB_",
            "get-envs-untracked=NPM_*",
            "get-env=NPM_TOKEN",
            "report-used=src/a.ts,src/b.ts",
        ],
    ));
    let by_cmd: Vec<(&str, &Value)> = lines
        .iter()
        .map(|l| (l["cmd"].as_str().unwrap(), l))
        .collect();
    for (cmd, l) in &by_cmd {
        assert!(l.get("err").is_none(), "{cmd}: {l}");
    }
    assert_eq!(lines[0], json!({"cmd": "ignore-input", "undefined": true}));
    assert_eq!(lines[3]["ok"], "yes");
    assert_eq!(
        lines[4],
        json!({"cmd": "get-env", "undefined": true}),
        "absent is undefined"
    );
    assert_eq!(lines[5]["ok"], "null");
    assert_eq!(lines[6]["ok"], "quiet");
    assert_eq!(lines[7]["ok"], "o");
    assert_eq!(lines[8]["ok"], json!({"VITE_A": "1", "VITE_B": "2"}));
    assert_eq!(lines[9]["ok"], json!({"PUB_X": "x"}));
    // A query never hands out a secret-named variable; the exact name does.
    assert_eq!(lines[10]["ok"], json!({}));
    assert_eq!(lines[11]["ok"], "s3cr3t");

    let d = h.finish(DRAIN);
    assert_eq!(
        d.ignored_inputs,
        BTreeSet::from(["pkg/node_modules/.cache".into()])
    );
    assert_eq!(d.ignored_outputs, BTreeSet::from(["pkg/dist/tmp".into()]));
    assert!(d.cache_disabled);
    let env = &d.tracked_env;
    assert_eq!(
        env["PRESENT"],
        EnvValue::Hashed(vbuild_ipc::hash_secret("yes"))
    );
    assert_eq!(env["ABSENT"], EnvValue::Absent);
    assert_eq!(
        env["NULLISH"],
        EnvValue::Hashed(vbuild_ipc::hash_secret("null"))
    );
    assert_eq!(env["OTHER"], EnvValue::Hashed(vbuild_ipc::hash_secret("o")));
    assert!(!env.contains_key("UNTRACKED"));
    assert_eq!(env["NPM_TOKEN"], EnvValue::Hashed(hash_secret("s3cr3t")));
    let queries: Vec<_> = d.env_patterns.iter().map(|p| p.query.clone()).collect();
    assert_eq!(
        queries,
        [
            EnvQuery::Glob("VITE_*".into()),
            EnvQuery::Prefix("PUB_".into())
        ],
        "the untracked getEnvs is not recorded"
    );
    assert_eq!(
        d.used_inputs,
        Some(BTreeSet::from([
            "pkg/src/a.ts".into(),
            "pkg/src/b.ts".into()
        ]))
    );
    assert!(d.refusals.is_empty(), "{:?}", d.refusals);
}

#[test]
fn fire_and_forget_then_process_exit() {
    if !node_ready() {
        return;
    }
    for _ in 0..3 {
        let mut h = Harness::new();
        let out = node(&h, &["ignore-output=.turbo", "disable-cache", "exit"]);
        assert!(out.status.success());
        let d = h.finish(DRAIN);
        assert!(d.cache_disabled, "declaration lost after process.exit()");
        assert_eq!(d.ignored_outputs, BTreeSet::from(["pkg/.turbo".into()]));
    }
}

#[test]
fn child_processes_of_the_action_declare() {
    if !node_ready() {
        return;
    }
    let mut h = Harness::new();
    let lines = json_lines(&node(
        &h,
        &[
            "ignore-input=parent",
            "child=ignore-input=child;get-env=PRESENT;exit",
            "get-env=OTHER",
        ],
    ));
    assert_eq!(lines.last().unwrap()["ok"], "o");
    let d = h.finish(DRAIN);
    assert_eq!(
        d.ignored_inputs,
        BTreeSet::from(["pkg/parent".into(), "pkg/child".into()])
    );
    assert!(d.tracked_env.contains_key("PRESENT"));
}

#[test]
fn refused_paths_do_not_throw_but_are_recorded() {
    if !node_ready() {
        return;
    }
    let mut h = Harness::new();
    let lines = json_lines(&node(
        &h,
        &["ignore-input=/etc", "ignore-output=../../..", "get-envs=["],
    ));
    assert_eq!(lines[0], json!({"cmd": "ignore-input", "undefined": true}));
    assert_eq!(lines[1], json!({"cmd": "ignore-output", "undefined": true}));
    assert!(
        lines[2]["err"].as_str().unwrap().contains("glob"),
        "{}",
        lines[2]
    );
    let d = h.finish(DRAIN);
    assert_eq!(d.refusals.len(), 3, "{:?}", d.refusals);
    assert!(d.ignored_inputs.is_empty() && d.ignored_outputs.is_empty());
}

#[test]
fn outside_vbuild_every_call_is_a_no_op() {
    if !node_ready() {
        return;
    }
    let h = Harness::new();
    // The module path is set but there is no socket: vbuild's module no-ops.
    let out = h
        .command("node")
        .env_remove("VBUILD_IPC_SOCKET")
        .arg(fixture_dir().join("declare.mjs"))
        .args(["disable-cache", "get-env=PRESENT", "get-envs=VITE_*"])
        .output()
        .unwrap();
    let lines = json_lines(&out);
    assert_eq!(lines[0], json!({"cmd": "disable-cache", "undefined": true}));
    assert_eq!(lines[1], json!({"cmd": "get-env", "undefined": true}));
    assert_eq!(lines[2]["ok"], json!({}));
}
