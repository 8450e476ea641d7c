//! End-to-end: the workspace model real monorepos need (issue 10): file
//! groups, workspace inputs, hidden directories as explicit srcs, srcs
//! patterns matching nothing, `cache = "always"`.
mod common;
use common::*;

const MODES: [&str; 2] = ["namespaces", "scratch"];

fn namespaces_available() -> bool {
    vbuild_sandbox::probe_namespaces().is_ok()
}

fn modes() -> Vec<&'static str> {
    MODES
        .into_iter()
        .filter(|m| *m != "namespaces" || namespaces_available())
        .collect()
}

/// A shared config package (no build step), two packages reading it and
/// one that does not, plus a root file every action sees.
fn shared_config(mode: &str) -> Ws {
    let ws = Ws::new(&[
        ("tsconfig.base.json", "{\"target\":\"es2022\"}\n"),
        ("packages/tsconfig/base.json", "{\"strict\":true}\n"),
        (
            "packages/tsconfig/package.json",
            "{\"name\":\"@acme/tsconfig\"}\n",
        ),
        (
            "packages/tsconfig/BUILD.toml",
            "[target.files]\nsrcs = [\"base.json\", \"package.json\"]\n",
        ),
        ("packages/a/src/a.ts", "a\n"),
        ("packages/b/src/b.ts", "b\n"),
        ("packages/c/src/c.ts", "c\n"),
    ]);
    ws.write(
        "vbuild.toml",
        &format!(
            "[workspace]\nname = \"test\"\nsandbox = \"{mode}\"\ninputs = [\"tsconfig.base.json\"]\n"
        ),
    );
    for pkg in ["a", "b"] {
        ws.write(
            &format!("packages/{pkg}/BUILD.toml"),
            r#"[target.build]
command = "mkdir -p dist && cat ../tsconfig/base.json ../../tsconfig.base.json src/* > dist/out.txt"
srcs = ["src/**"]
deps = ["//packages/tsconfig:files"]
outs = ["dist/"]
"#,
        );
    }
    ws.write(
        "packages/c/BUILD.toml",
        r#"[target.build]
command = "mkdir -p dist && cat ../../tsconfig.base.json src/* > dist/out.txt && test ! -e ../tsconfig/base.json"
srcs = ["src/**"]
outs = ["dist/"]
"#,
    );
    ws
}

#[test]
fn file_group_files_are_inputs_of_exactly_its_dependents() {
    for mode in modes() {
        let ws = shared_config(mode);
        ws.run(&["run", "//...", "-j1"])
            .assert_ok()
            .assert_all("miss");
        assert_eq!(
            ws.read("packages/a/dist/out.txt"),
            "{\"strict\":true}\n{\"target\":\"es2022\"}\na\n",
            "{mode}"
        );
        ws.run(&["run", "//...", "-j1"])
            .assert_ok()
            .assert_all("hit");
        // The config package's file: exactly its dependents re-run.
        ws.write("packages/tsconfig/base.json", "{\"strict\":false}\n");
        let out = ws.run(&["run", "//...", "-j1"]);
        out.assert_ok();
        let mut states = out.states();
        states.sort_by(|a, b| a.split(' ').nth(1).cmp(&b.split(' ').nth(1)));
        assert_eq!(
            states,
            [
                "miss //packages/a:build",
                "miss //packages/b:build",
                "hit //packages/c:build"
            ],
            "{mode}: {}",
            out.snapshot()
        );
        assert!(
            out.stderr
                .contains("('packages/tsconfig/base.json' modified)"),
            "{}",
            out.stderr
        );
        assert_eq!(
            ws.read("packages/b/dist/out.txt"),
            "{\"strict\":false}\n{\"target\":\"es2022\"}\nb\n"
        );
    }
}

#[test]
fn workspace_inputs_are_seen_by_every_action() {
    for mode in modes() {
        let ws = shared_config(mode);
        ws.run(&["run", "//...", "-j1"]).assert_ok();
        ws.write("tsconfig.base.json", "{\"target\":\"es5\"}\n");
        let why = ws.run(&["why", "//packages/c:build"]);
        assert!(
            why.stdout.contains("('tsconfig.base.json' modified)"),
            "{}",
            why.snapshot()
        );
        let out = ws.run(&["run", "//...", "-j1"]);
        out.assert_ok().assert_all("miss");
        assert_eq!(
            ws.read("packages/c/dist/out.txt"),
            "{\"target\":\"es5\"}\nc\n"
        );
        // Declaring workspace inputs changes the config, not just files.
        ws.write(
            "vbuild.toml",
            &format!("[workspace]\nname = \"test\"\nsandbox = \"{mode}\"\ninputs = [\"tsconfig.base.json\", \"*.md\"]\n"),
        );
        let why = ws.run(&["why", "//packages/c:build"]);
        assert!(
            why.stdout
                .contains("target config changed (workspace inputs)"),
            "{}",
            why.snapshot()
        );
    }
}

#[test]
fn root_file_group_lists_root_files_next_to_other_root_targets() {
    let ws = Ws::new(&[
        ("tsconfig.base.json", "{}\n"),
        (
            "BUILD.toml",
            r#"[target.config]
srcs = ["tsconfig.base.json"]

[target.lint]
command = "echo linted > lint.txt"
outs = ["lint.txt"]
"#,
        ),
        (
            "app/BUILD.toml",
            "[target.build]\ncommand = \"cat ../tsconfig.base.json > out.txt\"\ndeps = [\"//:config\"]\nouts = [\"out.txt\"]\n",
        ),
    ]);
    let out = ws.run(&["run", "//...", "-j1"]);
    out.assert_ok();
    // A file group is not an action: only the two commands are reported.
    out.assert_states(&["miss //:lint", "miss //app:build"]);
    assert_eq!(ws.read("app/out.txt"), "{}\n");
}

#[test]
fn config_package_is_reachable_through_its_node_modules_link() {
    for mode in modes() {
        let ws = shared_config(mode);
        ws.write(
            "vbuild.toml",
            &format!("[workspace]\nname = \"test\"\nsandbox = \"{mode}\"\nnode_modules = true\n"),
        );
        std::fs::create_dir_all(ws.path("packages/a/node_modules/@acme")).unwrap();
        std::os::unix::fs::symlink(
            "../../../tsconfig",
            ws.path("packages/a/node_modules/@acme/tsconfig"),
        )
        .unwrap();
        ws.write(
            "packages/a/BUILD.toml",
            r#"[target.build]
command = "mkdir -p dist && cat node_modules/@acme/tsconfig/base.json node_modules/@acme/tsconfig/package.json > dist/out.txt"
deps = ["//packages/tsconfig:files"]
outs = ["dist/"]
"#,
        );
        ws.run(&["run", "//packages/a:build"]).assert_ok();
        assert_eq!(
            ws.read("packages/a/dist/out.txt"),
            "{\"strict\":true}\n{\"name\":\"@acme/tsconfig\"}\n",
            "{mode}"
        );
    }
}

#[test]
fn file_group_mistakes_are_load_errors() {
    let ws = Ws::new(&[
        ("p/a.json", "{}"),
        (
            "p/BUILD.toml",
            "[target.empty]\ndeps = []\n\n[target.files]\nsrcs = [\"a.json\"]\nouts = [\"dist/\"]\n",
        ),
    ]);
    let out = ws.run(&["run", "//..."]);
    assert_eq!(out.code, 2);
    insta::assert_snapshot!(out.snapshot());
}

#[test]
fn hidden_directory_srcs_and_patterns_matching_nothing() {
    for mode in modes() {
        let ws = Ws::new(&[
            ("docs/.vitepress/config.ts", "export default {}\n"),
            ("docs/.vitepress/theme/index.ts", "theme\n"),
            ("docs/.cache/junk", "never\n"),
            ("docs/index.md", "# hi\n"),
            (
                "docs/BUILD.toml",
                r#"[target.build]
command = "mkdir -p dist && cat .vitepress/config.ts .vitepress/theme/index.ts index.md > dist/site.txt && test ! -e .cache/junk"
srcs = [".vitepress/**", "*.md", "src/**/*.vue"]
outs = ["dist/"]
"#,
            ),
            (
                "lit/BUILD.toml",
                "[target.build]\ncommand = \"cat .config/x.json > out.txt\"\nsrcs = [\".config/x.json\"]\nouts = [\"out.txt\"]\n",
            ),
            ("lit/.config/x.json", "{\"x\":1}\n"),
        ]);
        let out = ws.run(&["run", "//...", "-j1", "--sandbox", mode]);
        out.assert_ok();
        assert_eq!(
            ws.read("docs/dist/site.txt"),
            "export default {}\ntheme\n# hi\n"
        );
        assert_eq!(ws.read("lit/out.txt"), "{\"x\":1}\n");
        if mode == "scratch" {
            insta::assert_snapshot!(out.snapshot());
        }
        // A hidden file under an explicit pattern counts.
        ws.write("docs/.vitepress/config.ts", "export default {x:1}\n");
        let out = ws.run(&["run", "//docs:build", "--sandbox", mode]);
        assert!(
            out.stderr
                .contains("('docs/.vitepress/config.ts' modified)"),
            "{}",
            out.snapshot()
        );
    }
}

#[test]
fn cache_always_overrides_a_tools_disable_request() {
    for mode in modes() {
        let build = |cache: &str| {
            format!(
                "[target.test]\ncommand = \"vbuild tool disable-cache && echo tested\"\n{cache}\n\n\
                 [target.dev]\ncommand = \"vbuild tool disable-cache && echo served\"\n"
            )
        };
        let ws = Ws::new(&[("p/BUILD.toml", &build("cache = \"always\""))]);
        ws.write(
            "vbuild.toml",
            &format!("[workspace]\nname = \"test\"\nsandbox = \"{mode}\"\n"),
        );
        let run = || ws.run(&["run", "//p:all", "-j1"]);
        let out = run();
        out.assert_ok();
        out.assert_states(&["uncached //p:dev", "miss //p:test"]);
        assert!(
            out.stderr.contains(
                "(no previous entry; cache = \"always\" overrode the tool's disableCache())"
            ),
            "{}",
            out.stderr
        );
        let out = run();
        out.assert_states(&["uncached //p:dev", "hit //p:test"]);
        assert_eq!(out.stdout, "served\ntested\n");
        let why = ws.run(&["why", "//p:test"]);
        assert!(
            why.stdout.contains("hit       //p:test")
                && format!("{}{}", why.stdout, why.stderr).contains("warning: //p:test: cached although its tool asked not to be (disableCache()): cache = \"always\" overrides that\n"),
            "{}",
            why.snapshot()
        );
        // The setting is part of the key, and `why` names it.
        ws.write("p/BUILD.toml", &build(""));
        let why = ws.run(&["why", "//p:test"]);
        assert!(
            why.stdout
                .contains("would run //p:test  (target config changed (cache = \"always\"))"),
            "{}",
            why.snapshot()
        );
        let out = run();
        out.assert_states(&["uncached //p:dev", "uncached //p:test"]);
    }
}

#[test]
fn staged_directories_are_writable_and_only_declared_outputs_come_back() {
    for mode in modes() {
        let ws = Ws::new(&[
            ("p/vite.config.ts", "export default {}\n"),
            ("p/src/index.ts", "index\n"),
            (
                "p/BUILD.toml",
                r#"[target.build]
command = """
set -e
# Vite 4 bundles its config next to it, loads it, deletes it.
echo tmp > vite.config.ts.timestamp-1.mjs && rm vite.config.ts.timestamp-1.mjs
# A cache beside the sources, and a generated source.
echo cache > vite.config.ts.timestamp-2.mjs
echo 'export const version = "1.0"' > src/version.ts
# rimraf dist && tsc
rm -rf dist && mkdir dist && cat src/*.ts > dist/index.js
"""
srcs = ["src/**", "vite.config.ts"]
outs = ["dist/"]
"#,
            ),
        ]);
        let out = ws.run(&["run", "//p:build", "--sandbox", mode]);
        out.assert_ok();
        assert_eq!(
            ws.read("p/dist/index.js"),
            "index\nexport const version = \"1.0\"\n",
            "{mode}"
        );
        // Nothing outside the declared outputs reached the workspace.
        assert!(!ws.path("p/src/version.ts").exists(), "{mode}");
        assert!(!ws.path("p/vite.config.ts.timestamp-2.mjs").exists());
        if mode == "scratch" {
            insta::assert_snapshot!(out.snapshot());
        } else {
            assert_eq!(
                out.stderr
                    .lines()
                    .filter(|l| l.starts_with("warning:"))
                    .count(),
                1,
                "{}",
                out.stderr
            );
        }
    }
}

/// `lib` is fine; `broken` has a missing literal src; `app` depends on it;
/// `garbled` does not parse and `user` depends on it.
fn one_broken_package() -> Ws {
    Ws::new(&[
        (
            "lib/BUILD.toml",
            "[target.lib]\ncommand = \"echo lib > out.txt\"\nouts = [\"out.txt\"]\n",
        ),
        (
            "broken/BUILD.toml",
            "[target.build]\ncommand = \"true\"\nsrcs = [\"missing.json\"]\n",
        ),
        (
            "app/BUILD.toml",
            "[target.build]\ncommand = \"true\"\ndeps = [\"//broken:build\", \"//lib\"]\n",
        ),
        ("garbled/BUILD.toml", "[target.x\n"),
        (
            "user/BUILD.toml",
            "[target.build]\ncommand = \"true\"\ndeps = [\"//garbled:x\"]\n",
        ),
    ])
}

#[test]
fn errors_outside_the_closure_are_warnings() {
    let ws = one_broken_package();
    let out = ws.run(&["run", "//lib:lib"]);
    out.assert_ok();
    assert_eq!(ws.read("lib/out.txt"), "lib\n");
    let query = ws.run(&["query"]);
    query.assert_ok();
    insta::assert_snapshot!(format!(
        "{}\n--- query\n{}",
        out.snapshot(),
        query.snapshot()
    ));
}

#[test]
fn errors_inside_the_closure_stay_errors() {
    let ws = one_broken_package();
    // Directly, through a dependency, through an unparsable dependency,
    // and with a pattern covering everything.
    for (pattern, needed) in [
        ("//broken:build", "broken/BUILD.toml"),
        ("//app:build", "broken/BUILD.toml"),
        ("//user:build", "garbled/BUILD.toml"),
        ("//...", "garbled/BUILD.toml"),
    ] {
        let out = ws.run(&["run", pattern]);
        assert_eq!(out.code, 2, "{pattern}: {}", out.snapshot());
        assert!(
            out.stderr.contains(&format!("error: {needed}")),
            "{pattern}: {}",
            out.stderr
        );
        assert!(out.stderr.contains("nothing was run"), "{}", out.stderr);
        assert!(!ws.path("lib/out.txt").exists());
    }
    let why = ws.run(&["why", "//app:build"]);
    assert_eq!(why.code, 2, "{}", why.snapshot());
}

#[test]
fn failures_naming_unstaged_paths_get_a_hint() {
    let ws = Ws::new(&[
        ("tsconfig.base.json", "{}\n"),
        ("cfg/base.json", "{}\n"),
        ("cfg/BUILD.toml", "[target.files]\nsrcs = [\"base.json\"]\n"),
        ("other/extra.json", "{}\n"),
        ("other/BUILD.toml", "[target.gen]\ncommand = \"mkdir -p out && echo 1 > out/g.txt\"\nouts = [\"out/\"]\n"),
        ("app/src/a.ts", "a\n"),
        ("app/BUILD.toml", "[target.build]\ncommand = \"cat \\\"$VBUILD_WS_ROOT/$WANT\\\"\"\npass_env = [\"WANT\"]\n"),
    ]);
    let cases = [
        ("tsconfig.base.json", "add \"tsconfig.base.json\" to [workspace] inputs in vbuild.toml"),
        ("app/src/a.ts", "it is a file of this package: add \"src/a.ts\" to srcs"),
        ("cfg/base.json", "add \"//cfg:files\" (a file group holding it) to deps"),
        ("other/extra.json", "it belongs to //other: declare a file group there (srcs = [\"extra.json\"], no command) and add it to deps"),
        ("other/out/g.txt", "it is an output of //other:gen: add \"//other:gen\" to deps"),
    ];
    for mode in modes() {
        for (want, hint) in cases {
            let out = ws.run_env(
                &["run", "//app:build", "--sandbox", mode],
                &[("WANT", want)],
            );
            assert_eq!(out.code, 1, "{}", out.snapshot());
            let line = format!(
                "warning: //app:build: the output names '{want}', which was not staged: {hint}\n"
            );
            assert!(out.stderr.contains(&line), "{mode} {want}: {}", out.stderr);
            if mode == "namespaces" && want == "tsconfig.base.json" {
                insta::assert_snapshot!(out.snapshot());
            }
        }
    }
}

/// Where the scratch directory's filesystem cannot hold an overlay's upper
/// layer (here: an overlayfs, mounted in a user namespace of the test), the
/// namespace sandbox writes a staged tree of copies directly: same results,
/// same warning, the store untouched.
#[test]
fn writable_staging_without_overlay_support() {
    if !namespaces_available() {
        eprintln!("skipped: namespaces unavailable");
        return;
    }
    let ws = Ws::new(&[
        ("p/data.txt", "data"),
        (
            "p/BUILD.toml",
            "[target.build]\ncommand = \"chmod u+w data.txt && echo evil > data.txt && rm -rf dist && mkdir dist && cat data.txt > dist/o.txt\"\nsrcs = [\"data.txt\"]\nouts = [\"dist/\"]\n",
        ),
    ]);
    let layers = tempfile::tempdir().unwrap();
    for d in ["l", "u", "w", "m"] {
        std::fs::create_dir(layers.path().join(d)).unwrap();
    }
    let l = |d: &str| layers.path().join(d).display().to_string();
    let script = format!(
        "mount -t overlay overlay -o userxattr,lowerdir={},upperdir={},workdir={} {} || exit 99; \
         VBUILD_SCRATCH_DIR={} VBUILD_CACHE_DIR={} {} run //p:build --sandbox=strict",
        l("l"),
        l("u"),
        l("w"),
        l("m"),
        l("m"),
        ws.cache.display(),
        env!("CARGO_BIN_EXE_vbuild"),
    );
    let out = std::process::Command::new("unshare")
        .args(["-Urm", "sh", "-c", &script])
        .current_dir(ws.root())
        .output()
        .unwrap();
    if out.status.code() == Some(99) || out.status.code().is_none() {
        eprintln!("skipped: cannot mount an overlay in a user namespace here");
        return;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(ws.read("p/dist/o.txt"), "evil\n");
    assert_eq!(ws.read("p/data.txt"), "data");
    assert!(
        stderr.contains("discarded 1 write outside the declared outputs: p/data.txt (modified)"),
        "{stderr}"
    );
    // Sources are hashed, not stored (staged as verified copies).
    assert!(
        !ws.blob_path(b"data").exists(),
        "the source was never stored"
    );
}
