//! Bad input: each error names file, line and what to do, exits 2, and
//! nothing runs.
mod common;
use common::*;

/// Runs `//...` on a workspace with `files`; asserts exit 2 and that no
/// action ran (no marker file, no cache entry).
fn load_error(files: &[(&str, &str)]) -> String {
    let mut all = vec![(
        "ok/BUILD.toml",
        "[target.build]\ncommand = \"touch ran\"\nouts = [\"ran\"]\n",
    )];
    all.extend_from_slice(files);
    let ws = Ws::new(&all);
    let out = ws.run(&["run", "//...", "-j1"]);
    assert_eq!(out.code, 2, "{}", out.snapshot());
    assert!(
        !ws.path("ok/ran").exists(),
        "nothing may run when the workspace does not load"
    );
    out.snapshot()
}

#[test]
fn unknown_field() {
    insta::assert_snapshot!(load_error(&[(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"true\"\nsrc = [\"x\"]\n"
    )]));
}

#[test]
fn unknown_label() {
    insta::assert_snapshot!(load_error(&[(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"true\"\ndeps = [\"//ok:buld\"]\n"
    )]));
}

#[test]
fn dependency_cycle() {
    insta::assert_snapshot!(load_error(&[
        (
            "a/BUILD.toml",
            "[target.build]\ncommand = \"true\"\ndeps = [\"//b:build\"]\n"
        ),
        (
            "b/BUILD.toml",
            "[target.build]\ncommand = \"true\"\ndeps = [\"//c:build\"]\n"
        ),
        (
            "c/BUILD.toml",
            "[target.build]\ncommand = \"true\"\ndeps = [\"//a:build\"]\n"
        ),
    ]));
}

#[test]
fn glob_escaping_the_package() {
    insta::assert_snapshot!(load_error(&[(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"true\"\nsrcs = [\"src/**\", \"../ok/**\"]\n"
    )]));
}

#[test]
fn output_outside_the_package() {
    insta::assert_snapshot!(load_error(&[(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"true\"\nouts = [\"/etc/passwd\"]\n"
    )]));
}

#[test]
fn duplicate_target() {
    insta::assert_snapshot!(load_error(&[(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"true\"\n\n[target.build]\ncommand = \"false\"\n"
    )]));
}

#[test]
fn invalid_toml_syntax() {
    insta::assert_snapshot!(load_error(&[(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"true\nsrcs = []\n"
    )]));
}

#[test]
fn unknown_target_on_the_command_line() {
    let ws = three_packages();
    let out = ws.run(&["run", "//lib:nope"]);
    assert_eq!(out.code, 2);
    insta::assert_snapshot!(out.snapshot());
}

#[test]
fn no_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = run_with(dir.path(), cache.path(), &["run", "//..."], &[]);
    assert_eq!(out.code, 2);
    insta::assert_snapshot!(out.snapshot());
}

#[test]
fn literal_src_that_is_a_directory() {
    insta::assert_snapshot!(load_error(&[
        ("a/src/x.ts", "x"),
        (
            "a/BUILD.toml",
            "[target.build]\ncommand = \"true\"\nsrcs = [\"src\"]\n"
        ),
    ]));
}

#[test]
fn literal_src_that_is_an_output() {
    insta::assert_snapshot!(load_error(&[
        ("a/dist/x.js", "x"),
        ("a/BUILD.toml", "[target.build]\ncommand = \"true\"\nouts = [\"dist/\"]\n\n[target.use]\ncommand = \"true\"\nsrcs = [\"dist/x.js\"]\n"),
    ]));
}

#[test]
fn literal_src_in_node_modules_or_sub_package() {
    insta::assert_snapshot!(load_error(&[
        ("a/node_modules/x/index.js", "x"),
        ("a/sub/BUILD.toml", "[target.t]\ncommand = \"true\"\n"),
        ("a/sub/f.txt", "f"),
        ("a/BUILD.toml", "[target.build]\ncommand = \"true\"\nsrcs = [\"node_modules/x/index.js\", \"sub/f.txt\"]\n"),
    ]));
}

/// vbuild's own variables never reach an action; listing one in pass_env
/// used to pass nothing without a word.
#[test]
fn pass_env_of_vbuilds_own_settings() {
    insta::assert_snapshot!(load_error(&[(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"true\"\npass_env = [\"CI\", \"VBUILD_REMOTE_TOKEN\"]\n"
    )]));
}

/// 300 packages, each depending on the one before: past the size where
/// BUILD.toml files are parsed and targets validated on several threads.
fn chain_of_packages(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let deps = match i {
                0 => String::new(),
                _ => format!("\"//p{:03}:build\"", i - 1),
            };
            (
                format!("p{i:03}/BUILD.toml"),
                format!("[target.build]\ncommand = \"true\"\ndeps = [{deps}]\n"),
            )
        })
        .collect()
}

/// A large workspace reports a bad label exactly as a small one does (the
/// threads find it, then the serial pass reports it), and a clean one
/// loads every target with its deps, in order.
#[test]
fn large_workspace_loads_like_a_small_one() {
    let bad = (
        "a/BUILD.toml",
        "[target.build]\ncommand = \"true\"\ndeps = [\"//ok:buld\"]\n",
    );
    let chain = chain_of_packages(300);
    let mut files: Vec<(&str, &str)> = chain
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let clean = Ws::new(&files);
    let out = clean.run(&["query", "--output", "json", "//..."]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    let targets: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let targets = targets.as_array().expect("a JSON array of targets");
    assert_eq!(targets.len(), 300, "{}", out.stdout);
    for (i, t) in targets.iter().enumerate() {
        assert_eq!(t["label"], format!("//p{i:03}:build"), "{t}");
        let deps: Vec<String> = match i {
            0 => vec![],
            _ => vec![format!("//p{:03}:build", i - 1)],
        };
        assert_eq!(t["deps"], serde_json::json!(deps), "{t}");
    }
    files.push(bad);
    assert_eq!(load_error(&files), load_error(&[bad]));
}
