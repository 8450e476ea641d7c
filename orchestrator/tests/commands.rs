//! The everyday commands and workspace-wide settings: `[workspace]
//! exclude`, `[defaults.NAME]`, `vbuild run build` / `//...:build`,
//! `--since REF`, `-- args`, and label suggestions.
mod common;

use common::Ws;

#[test]
fn workspace_exclude_keeps_files_out_of_every_target() {
    let ws = Ws::new(&[
        (
            "vbuild.toml",
            "[workspace]\nname = \"test\"\nsandbox = \"scratch\"\nexclude = [\"**/coverage/**\", \"a/tmp/\"]\n",
        ),
        ("a/src/x.txt", "x"),
        (
            "a/BUILD.toml",
            "[target.build]\ncommand = \"find . -type f -not -name out.txt | sort > out.txt\"\nsrcs = [\"**\"]\nouts = [\"out.txt\"]\n",
        ),
        ("a/coverage/lcov.info", "TN:"),
        ("a/tmp/t.txt", "t"),
    ]);
    ws.run(&["run", "//a:build"]).assert_all("miss");
    assert_eq!(ws.read("a/out.txt"), "./BUILD.toml\n./src/x.txt\n");
    ws.write("a/coverage/lcov.info", "TN:changed");
    ws.write("a/coverage/deep/more.json", "{}");
    ws.write("a/tmp/u.txt", "u");
    ws.run(&["run", "//a:build"]).assert_all("hit");
    // A bad glob is an error naming vbuild.toml and its line.
    ws.write(
        "vbuild.toml",
        "[workspace]\nname = \"test\"\nexclude = [\"a/[\"]\n",
    );
    let out = ws.run(&["query"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("vbuild.toml:3"), "{}", out.stderr);
}

/// A directory the exclusions cover entirely (`**/dist/**`) is not listed
/// by the load walk (checked with strace), and what counts as a source is
/// exactly as before: similarly named directories still count, a `!`
/// exclusion is no negation, srcs naming the excluded directory get nothing
/// from it, and a `[workspace] inputs` file under it is still staged.
#[test]
fn excluded_directories_are_not_walked() {
    let ws = Ws::new(&[
        (
            "vbuild.toml",
            "[workspace]\nname = \"test\"\nsandbox = \"scratch\"\n\
             exclude = [\"**/dist/**\", \"!**/dist/keep/**\"]\n\
             inputs = [\"tools/dist/shared.txt\"]\n",
        ),
        (
            "a/BUILD.toml",
            "[target.build]\ncommand = \"find . -type f -not -name out.txt | sort > out.txt && cat ../tools/dist/shared.txt >> out.txt\"\n\
             srcs = [\"**\", \"dist/keep/**\"]\nouts = [\"out.txt\"]\n",
        ),
        ("a/src/x.txt", "x"),
        ("a/dist2/y.txt", "y"),
        ("a/my-dist/z.txt", "z"),
        ("a/distx", "a file"),
        ("a/dist/old.js", "old"),
        ("a/dist/keep/k.txt", "k"),
        ("a/src/dist/deep.js", "deep"),
        // Not searched for packages either (as git does not descend into
        // an ignored directory).
        ("a/dist/sub/BUILD.toml", "[target.x]\ncommand = \"true\"\n"),
        ("tools/dist/shared.txt", "shared\n"),
    ]);
    let out = ws.run(&["run", "//a:build"]);
    out.assert_all("miss");
    assert!(
        out.stderr.contains("\"dist/keep/**\" matches no file"),
        "{}",
        out.stderr
    );
    assert_eq!(
        ws.read("a/out.txt"),
        "./BUILD.toml\n./dist2/y.txt\n./distx\n./my-dist/z.txt\n./src/x.txt\nshared\n"
    );
    ws.write("a/dist/old.js", "changed");
    ws.write("a/src/dist/new.js", "new");
    ws.run(&["run", "//a:build"]).assert_all("hit");
    ws.write("a/dist2/y.txt", "changed");
    ws.run(&["run", "//a:build"]).assert_all("miss");
    ws.write("tools/dist/shared.txt", "changed\n");
    ws.run(&["run", "//a:build"]).assert_all("miss");
    assert!(ws.read("a/out.txt").ends_with("changed\n"));
    let Some(trace) = ws.run_traced("openat,open", &["run", "//a:build"]) else {
        return;
    };
    let root = ws.root().canonicalize().unwrap();
    let listed = |dir: &str| {
        let quoted = format!("\"{}\"", root.join(dir).display());
        trace
            .lines()
            .any(|l| l.contains(&quoted) && l.contains("O_DIRECTORY"))
    };
    assert!(listed("a/dist2") && listed("a/my-dist") && listed("tools"));
    for pruned in ["a/dist", "a/src/dist", "a/dist/sub"] {
        assert!(!listed(pruned), "{pruned} was listed:\n{trace}");
    }
    // The input's directory stays listed: the input must still be found.
    assert!(listed("tools/dist"));
    let out = ws.run(&["query"]);
    out.assert_ok();
    assert!(!out.stdout.contains("//a/dist/sub"), "{}", out.stdout);
}

#[test]
fn target_defaults_fill_what_a_target_leaves_unset() {
    let ws = Ws::new(&[
        (
            "vbuild.toml",
            "[workspace]\nname = \"test\"\nsandbox = \"scratch\"\n\n[defaults.build]\nsrcs = [\"src/**\"]\nouts = [\"dist/\"]\nenv = { MODE = \"prod\" }\n",
        ),
        ("a/src/x.txt", "a"),
        ("a/other.txt", "not a source"),
        (
            "a/BUILD.toml",
            "[target.build]\ncommand = \"mkdir -p dist && cat src/x.txt > dist/x && echo $MODE >> dist/x\"\n",
        ),
        ("b/src/y.txt", "b"),
        (
            "b/BUILD.toml",
            "[target.build]\ncommand = \"mkdir -p out && cat src/y.txt > out/y\"\nouts = [\"out/\"]\n",
        ),
    ]);
    ws.run(&["run", "//..."]).assert_all("miss");
    assert_eq!(ws.read("a/dist/x"), "aprod\n");
    assert_eq!(ws.read("b/out/y"), "b");
    // srcs came from the defaults: other.txt is not an input.
    ws.write("a/other.txt", "edited");
    ws.run(&["run", "//..."]).assert_all("hit");
    // An unknown field in [defaults.x] is an error with its line.
    ws.write(
        "vbuild.toml",
        "[workspace]\nname = \"test\"\n[defaults.build]\nouts = [\"dist/\"]\nsrc = []\n",
    );
    let out = ws.run(&["query"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("vbuild.toml:5"), "{}", out.stderr);
}

#[test]
fn a_target_name_runs_it_in_every_package_in_dependency_order() {
    let ws = common::three_packages();
    let out = ws.run(&["run", "-j1", "build"]);
    out.assert_all("miss");
    out.assert_states(&["miss //lib:build", "miss //app:build", "miss //other:build"]);
    ws.run(&["run", "//...:build"]).assert_all("hit");
    assert_eq!(
        ws.run(&["query", "build"]).stdout,
        "//app:build\n//lib:build\n//other:build\n"
    );
}

#[test]
fn label_typos_get_a_suggestion() {
    let ws = common::three_packages();
    let out = ws.run(&["run", "//app:biuld"]);
    assert_eq!(out.code, 2);
    insta::assert_snapshot!("typo_label", out.snapshot());
    let out = ws.run(&["run", "biuld"]);
    assert_eq!(out.code, 2);
    insta::assert_snapshot!("typo_name", out.snapshot());
}

fn git(ws: &Ws, args: &[&str]) {
    let status = std::process::Command::new("git")
        .current_dir(ws.root())
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(status.status.success(), "git {args:?}: {status:?}");
}

#[test]
fn since_runs_changed_packages_and_their_dependents() {
    let ws = common::three_packages();
    ws.write(".gitignore", "out/\nresult.txt\nrun.sh\nlink.txt\no.txt\n");
    git(&ws, &["init", "-q"]);
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-qm", "base"]);
    // Nothing changed: nothing to run.
    let out = ws.run(&["run", "--since", "HEAD"]);
    assert_eq!(out.code, 0, "{}", out.snapshot());
    assert!(out.states().is_empty(), "{}", out.snapshot());
    // An uncommitted edit in lib: lib and its dependent app, not other.
    ws.write("lib/src/msg.txt", "changed\n");
    let out = ws.run(&["run", "-j1", "--since", "HEAD"]);
    out.assert_states(&["miss //lib:build", "miss //app:build"]);
    // A pattern narrows it further (deps still build, here as hits).
    let out = ws.run(&["run", "--since", "HEAD", "//app/..."]);
    out.assert_states(&["hit //lib:build", "hit //app:build"]);
    // A new file in other counts too; vbuild.toml touches everything.
    ws.write("other/new.txt", "n");
    let out = ws.run(&["run", "--since", "HEAD", "//other/..."]);
    out.assert_states(&["miss //other:build"]);
    let out = ws.run(&["run", "--since", "nope"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("--since nope: git diff"),
        "{}",
        out.stderr
    );
}

#[test]
fn arguments_after_dashes_go_to_the_one_target() {
    let ws = Ws::new(&[(
        "a/BUILD.toml",
        "[target.say]\ncommand = \"printf '%s\\\\n' hello > out.txt\"\nouts = [\"out.txt\"]\n",
    )]);
    ws.run(&["run", "//a:say", "--", "world", "a b"])
        .assert_all("miss");
    assert_eq!(ws.read("a/out.txt"), "hello\nworld\na b\n");
    ws.run(&["run", "//a:say", "--", "world", "a b"])
        .assert_all("hit");
    // Other arguments (or none) are another key.
    ws.run(&["run", "//a:say"]).assert_all("miss");
    assert_eq!(ws.read("a/out.txt"), "hello\n");
    let out = ws.run(&["run", "//...", "--", "x"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("arguments after `--` go to one target"),
        "{}",
        out.stderr
    );
}
