//! The Rust client in real separate processes (the `ipc_probe` example).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{json_lines, probe_bin, Harness};
use serde_json::json;
use vbuild_ipc::{hash_secret, EnvPattern, EnvQuery, EnvValue};

const DRAIN: Duration = Duration::from_secs(2);

#[test]
fn every_call_from_a_child_process() {
    let mut h = Harness::new();
    let abs_out = h.ws.path().join("out/x");
    let out = h
        .command(probe_bin())
        .args([
            "ignore-input=dist/cache/",
            &format!("ignore-output={}", abs_out.display()),
            "disable-cache",
            "get-env=PRESENT",
            "get-env=ABSENT",
            "get-env=NULLISH",
            "get-env-untracked=UNTRACKED",
            "get-envs=VITE_*",
            "get-envs-prefix=PUB_",
            "get-env=NPM_TOKEN",
            "report-used=src/a.ts,../shared/b.ts",
        ])
        .output()
        .unwrap();
    let lines = json_lines(&out);
    assert_eq!(lines[0]["ok"], "pkg/dist/cache");
    assert_eq!(lines[1]["ok"], "out/x");
    assert_eq!(lines[3]["ok"], "yes");
    assert_eq!(lines[4]["ok"], json!(null));
    assert_eq!(lines[5]["ok"], "null", "a value of \"null\" stays a string");
    assert_eq!(lines[6]["ok"], "quiet");
    assert_eq!(lines[7]["ok"], json!({"VITE_A": "1", "VITE_B": "2"}));
    assert_eq!(lines[8]["ok"], json!({"PUB_X": "x"}));
    assert_eq!(lines[9]["ok"], "s3cr3t", "the tool still gets the secret");
    assert!(lines.iter().all(|l| l.get("err").is_none()), "{lines:?}");

    let d = h.finish(DRAIN);
    assert_eq!(
        d.ignored_inputs,
        BTreeSet::from(["pkg/dist/cache".to_owned()])
    );
    assert_eq!(d.ignored_outputs, BTreeSet::from(["out/x".to_owned()]));
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
    assert!(
        !env.contains_key("UNTRACKED"),
        "untracked reads are not recorded"
    );
    assert_eq!(
        env["VITE_A"],
        EnvValue::Hashed(vbuild_ipc::hash_secret("1"))
    );
    assert_eq!(env["PUB_X"], EnvValue::Hashed(vbuild_ipc::hash_secret("x")));
    assert_eq!(env["NPM_TOKEN"], EnvValue::Hashed(hash_secret("s3cr3t")));
    assert_eq!(
        d.env_patterns,
        vec![
            EnvPattern {
                query: EnvQuery::Glob("VITE_*".into()),
                matched: BTreeSet::from(["VITE_A".into(), "VITE_B".into()]),
            },
            EnvPattern {
                query: EnvQuery::Prefix("PUB_".into()),
                matched: BTreeSet::from(["PUB_X".into()]),
            },
        ]
    );
    assert_eq!(
        d.used_inputs,
        Some(BTreeSet::from([
            "pkg/src/a.ts".into(),
            "shared/b.ts".into()
        ]))
    );
    assert!(d.refusals.is_empty(), "{:?}", d.refusals);
    let serialized = serde_json::to_string(&d).unwrap();
    assert!(
        !serialized.contains("s3cr3t"),
        "secret leaked: {serialized}"
    );
}

#[test]
fn paths_outside_the_workspace_are_refused_and_recorded() {
    let mut h = Harness::new();
    let out = h
        .command(probe_bin())
        .args([
            "ignore-input=../../etc",
            "ignore-output=/etc/passwd",
            "report-used=ok.ts,/etc/shadow",
            "ignore-input=still-works",
        ])
        .output()
        .unwrap();
    let lines = json_lines(&out);
    assert!(lines[0]["err"].as_str().unwrap().contains("outside"));
    assert!(lines[1]["err"].as_str().unwrap().contains("outside"));
    assert!(lines[2]["err"].as_str().unwrap().contains("/etc/shadow"));
    assert_eq!(lines[3]["ok"], "pkg/still-works");
    let d = h.finish(DRAIN);
    assert_eq!(d.refusals.len(), 3, "{:?}", d.refusals);
    assert!(d.refusals[0].starts_with("ignoreInput"));
    assert_eq!(d.ignored_inputs, BTreeSet::from(["pkg/still-works".into()]));
    assert!(d.ignored_outputs.is_empty());
    assert_eq!(d.used_inputs, Some(BTreeSet::from(["pkg/ok.ts".into()])));
}

#[test]
fn fire_and_forget_then_exit_is_not_lost() {
    let mut h = Harness::new();
    let out = h
        .command(probe_bin())
        .args([
            "disable-cache",
            "ignore-output=tmp",
            "exit",
            "ignore-input=never",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let d = h.finish(DRAIN);
    assert!(d.cache_disabled);
    assert_eq!(d.ignored_outputs, BTreeSet::from(["pkg/tmp".into()]));
    assert!(d.ignored_inputs.is_empty());
}

#[test]
fn grandchildren_and_concurrent_processes_declare() {
    let mut h = Harness::new();
    let probe = probe_bin();
    // The action is a shell whose children (several at once) each connect.
    let script = format!(
        "for i in 1 2 3 4 5 6; do {p} ignore-input=gen/$i get-env=PRESENT & done; \
         (cd sub && {p} ignore-output=o) ; wait",
        p = probe.display()
    );
    std::fs::create_dir_all(h.pkg().join("sub")).unwrap();
    let out = h.command("sh").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = h.finish(DRAIN);
    let expected: BTreeSet<String> = (1..=6).map(|i| format!("pkg/gen/{i}")).collect();
    assert_eq!(d.ignored_inputs, expected);
    assert_eq!(d.ignored_outputs, BTreeSet::from(["pkg/sub/o".into()]));
    assert_eq!(
        d.tracked_env["PRESENT"],
        EnvValue::Hashed(vbuild_ipc::hash_secret("yes"))
    );
}

#[test]
fn free_function_api() {
    let mut h = Harness::new();
    let out = h
        .command(probe_bin())
        .args(["free-ignore-input=from-free-fn"])
        .output()
        .unwrap();
    let lines = json_lines(&out);
    assert_eq!(lines[0]["ok"], json!(null));
    let d = h.finish(DRAIN);
    assert_eq!(
        d.ignored_inputs,
        BTreeSet::from(["pkg/from-free-fn".into()])
    );
}

#[test]
fn not_under_vbuild_is_a_no_op() {
    let h = Harness::new();
    let out = std::process::Command::new(probe_bin())
        .env_remove("VBUILD_IPC_SOCKET")
        .arg("disable-cache")
        .output()
        .unwrap();
    assert_eq!(json_lines(&out)[0]["ok"], "not under vbuild");
    drop(h);
}

#[test]
fn socket_and_dir_are_private_and_removed() {
    use std::os::unix::fs::PermissionsExt;
    let mut h = Harness::new();
    let dir = h.server().socket_dir().to_path_buf();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(h.server().socket_path()), 0o600);
    assert!(h.server().socket_path().starts_with(&dir));
    assert_eq!(
        std::fs::read_to_string(h.server().node_client_path()).unwrap(),
        vbuild_ipc::NODE_CLIENT_JS
    );
    let env = h.action_env();
    assert_eq!(env[0].0, "VBUILD_IPC_SOCKET");
    assert_eq!(env[0].1, h.server().socket_path().to_str().unwrap());
    assert_eq!(env[1].0, "VP_RUN_NODE_CLIENT_PATH");
    h.finish(DRAIN);
    assert!(!dir.exists());
}
