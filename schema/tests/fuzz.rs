//! Fuzzing the BUILD.toml / vbuild.toml loader and label parser (stable
//! toolchain; see `fuzz/mutator.rs`). `cargo test -p vbuild-schema --test
//! fuzz` runs it for 3 s; `.ci/run` for 60 (`VBUILD_FUZZ_SECS`). Fails on a
//! panic, a hang or runaway allocation. The whole-workspace loader (globs,
//! files, symlinks) is fuzzed through the binary by `bench/fuzz/manifests.py`.

#[path = "../../fuzz/mutator.rs"]
mod mutator;

use mutator::{Counting, Rng};
use std::path::Path;
use vbuild_schema::{parse_build_file, parse_workspace_file, Label, Pattern};

#[global_allocator]
static ALLOC: Counting = Counting;

const DICT: &[&[u8]] = &[
    b"[target.",
    b"[workspace]\n",
    b"[remote]\n",
    b"[defaults.build]\n",
    b"command = ",
    b"srcs = [",
    b"outs = [",
    b"deps = [",
    b"pass_env = [",
    b"env = { A = \"1\" }\n",
    b"cache = \"always\"\n",
    b"sandbox = \"none\"\n",
    b"timeout = \"99999999999999999999h\"\n",
    b"\"//pkg:t\", ",
    b"\"**/\", ",
    b"\"../\", ",
    b"\"{a,{b,c}}\"",
    b"'''",
    b"\"\"\"",
    b"\\u0000",
    b"= 1e999\n",
    b"[[",
    b"]]",
    b"inputs = [",
    b"exclude = [",
];

fn word(rng: &mut Rng) -> String {
    let pieces = [
        "a", "*", "**", "/", "..", "{", "}", ",", "[", "]", "!", ":", "//", "é", "\\\\",
    ];
    let n = if rng.chance(50) {
        rng.below(3000)
    } else {
        rng.below(12)
    };
    (0..n).map(|_| pieces[rng.below(pieces.len())]).collect()
}

fn list(rng: &mut Rng) -> String {
    let n = if rng.chance(40) {
        rng.below(3000)
    } else {
        rng.below(6)
    };
    let items: Vec<String> = (0..n).map(|_| format!("{:?}", word(rng))).collect();
    format!("[{}]", items.join(", "))
}

/// A structurally valid file with hostile values.
fn generate(rng: &mut Rng) -> Option<Vec<u8>> {
    let mut s = String::new();
    if rng.chance(2) {
        s.push_str("[workspace]\nname = \"w\"\n");
        s.push_str(&format!(
            "inputs = {}\nexclude = {}\n",
            list(rng),
            list(rng)
        ));
        s.push_str(&format!("[defaults.build]\nsrcs = {}\n", list(rng)));
    } else {
        for i in 0..1 + rng.below(4) {
            s.push_str(&format!(
                "[target.t{i}]\ncommand = {:?}\nsrcs = {}\nouts = {}\ndeps = {}\n",
                word(rng),
                list(rng),
                list(rng),
                list(rng)
            ));
        }
    }
    Some(s.into_bytes())
}

#[test]
fn fuzz_manifests_and_labels() {
    let seeds = mutator::corpus("manifest");
    let (cases, _) = mutator::run("manifest", &seeds, DICT, generate, |input| {
        let text = String::from_utf8_lossy(input);
        match parse_build_file(Path::new("pkg/BUILD.toml"), &text) {
            Ok(targets) => {
                for def in targets.values() {
                    for dep in &def.get_ref().deps {
                        let _ = Label::parse(dep.get_ref(), Some("pkg"));
                    }
                }
            }
            // An error must stay readable, whatever the input.
            Err(d) => assert!(d.to_string().len() < 4096, "{d}"),
        }
        if let Err(d) = parse_workspace_file(Path::new("vbuild.toml"), &text) {
            assert!(d.to_string().len() < 4096, "{d}");
        }
        for line in text.lines().take(50) {
            let _ = Pattern::parse(line, Some("pkg"));
        }
    });
    assert!(cases > seeds.len() as u64);
}
