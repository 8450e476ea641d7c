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
