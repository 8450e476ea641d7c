//! What README.md and docs/guide.md claim vbuild prints, checked against
//! what it prints.
mod common;
use common::checkout::Checkout;
use common::*;
use std::path::Path;
use std::process::Command;

fn doc(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)).unwrap()
}

/// The fenced block (without its fences) that starts with `first_line`.
fn block_starting(text: &str, first_line: &str) -> String {
    let start = text
        .find(&format!("```\n{first_line}"))
        .or_else(|| text.find(&format!("```console\n{first_line}")))
        .unwrap_or_else(|| panic!("no block starting with {first_line:?}"));
    let body = &text[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_string()
}

fn times(text: &str) -> String {
    regex::Regex::new(r"\b\d+(\.\d+)?(ms|s)\b")
        .unwrap()
        .replace_all(text, "[time]")
        .into_owned()
}

/// README's tour, command by command, on a copy of examples/basic (the
/// output of each command is compared whole, stdout and stderr together).
#[test]
fn readme_tour_is_what_vbuild_prints() {
    let readme = doc("README.md");
    let tour = block_starting(&readme, "$ cd examples/basic");
    let ws = Checkout::basic();
    let bin = Path::new(env!("CARGO_BIN_EXE_vbuild")).parent().unwrap();
    let mut steps: Vec<(String, String)> = vec![];
    for line in tour.lines() {
        match line.strip_prefix("$ ") {
            Some(cmd) => steps.push((cmd.to_string(), String::new())),
            None => {
                let out = &mut steps.last_mut().unwrap().1;
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(steps.len() >= 4, "{tour}");
    for (cmd, expected) in &steps[1..] {
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{cmd} 2>&1"))
            .current_dir(ws.root())
            .env("VBUILD_CACHE_DIR", ws.cache.path())
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env_remove("USER_NAME")
            .env_remove("FORCE_COLOR")
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            times(got.trim_end()),
            times(expected.trim_end()),
            "README step `{cmd}`"
        );
    }
}

/// The guide's first error example, exactly.
#[test]
fn guide_unknown_field_example_is_what_vbuild_prints() {
    let guide = doc("docs/guide.md");
    let example = block_starting(&guide, "error: pkg/BUILD.toml:3:1: unknown field `src`");
    let ws = Ws::new(&[(
        "pkg/BUILD.toml",
        "[target.build]\ncommand = \"true\"\nsrc = [\"src/**\"]\n",
    )]);
    let out = ws.run(&["run", "//..."]);
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr, example);
    // And the vbuild.toml row of the table.
    ws.write("vbuild.toml", "[workspace]\nnam = \"x\"\nname = \"test\"\n");
    let out = ws.run(&["run", "//..."]);
    let first = out
        .stderr
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("error: ");
    assert!(
        guide.contains(&format!("| `nam = \"x\"` in vbuild.toml | `` {first} `` |")),
        "the guide's vbuild.toml row should read: {first}"
    );
}

/// The guide's claim that a literal directory in srcs is an error with a hint.
#[test]
fn guide_literal_directory_claim() {
    let guide = doc("docs/guide.md");
    assert!(guide.contains("`srcs entry \"dir\" is a directory`"));
    let ws = Ws::new(&[
        ("pkg/dir/x", ""),
        (
            "pkg/BUILD.toml",
            "[target.build]\ncommand = \"true\"\nsrcs = [\"dir\"]\n",
        ),
    ]);
    let out = ws.run(&["run", "//..."]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("srcs entry \"dir\" is a directory"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("help: write it with a trailing /"),
        "{}",
        out.stderr
    );
}

/// The version table in schema/README.md names the versions the code has.
#[test]
fn schema_readme_versions_are_the_code_s() {
    let readme = doc("schema/README.md");
    let key = doc("orchestrator/src/key/mod.rs");
    let key_version = regex::Regex::new(r"pub const KEY_VERSION: u32 = (\d+);")
        .unwrap()
        .captures(&key)
        .unwrap()[1]
        .to_string();
    let schema = doc("store/src/schema.rs");
    let migrations = regex::Regex::new(r"const MIGRATIONS: &\[Migration\] = &\[([^\]]*)\]")
        .unwrap()
        .captures(&schema)
        .unwrap()[1]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .count();
    let row = |name: &str| {
        readme
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row {name}"))
            .to_string()
    };
    assert!(
        row("Action key format").contains(&format!("| {key_version} |")),
        "{}",
        row("Action key format")
    );
    assert!(
        row("Action cache schema").contains(&format!("| {migrations} |")),
        "{}",
        row("Action cache schema")
    );
    let arch = doc("docs/architecture.md");
    assert!(
        arch.contains(&format!("`KEY_VERSION` ({key_version})")),
        "docs/architecture.md should name KEY_VERSION {key_version}"
    );
}
