use super::*;
use vbuild_store::Digest;

fn file(byte: u8) -> EntryKind {
    EntryKind::File {
        digest: Digest([byte; 32]),
        size: 1,
        executable: false,
    }
}

/// Fixed on every platform, so the golden keys below hold everywhere.
fn fixed() -> StaticKey {
    StaticKey {
        version: KEY_VERSION,
        platform: "linux-x86_64".into(),
        argv: vec!["/bin/sh".into(), "-c".into(), "make".into()],
        cwd: "pkg".into(),
        env: BTreeMap::from([("MODE".into(), "prod".into())]),
        pass_env: vec!["CI".into()],
        srcs: vec!["src/**".into()],
        outs: vec!["dist/".into()],
        optional_outs: vec![],
        deps: vec!["//lib:build".into()],
        sandbox: sandbox_name(SandboxSetting::Namespaces).into(),
        network: false,
        node: None,
        workspace_inputs: vec![],
        cache_always: false,
        color: None,
    }
}

fn inputs() -> BTreeMap<String, EntryKind> {
    BTreeMap::from([
        ("pkg/src/a".to_string(), file(1)),
        ("pkg/src/b".to_string(), file(2)),
        (
            "pkg/src/link".to_string(),
            EntryKind::Symlink { target: "a".into() },
        ),
        ("lib/out/x".to_string(), file(3)),
    ])
}

struct Env(BTreeMap<String, String>);
impl EnvSource for Env {
    fn value(&self, name: &str) -> EnvValue {
        self.0
            .get(name)
            .map_or(EnvValue::Absent, |v| EnvValue::Value(v.clone()))
    }
    fn matching(&self, _: &EnvQuery) -> BTreeMap<String, EnvValue> {
        BTreeMap::new()
    }
}

fn no_env() -> Env {
    Env(BTreeMap::new())
}

/// The target's own sources are everything but the dependency output.
fn key<'a>(env: &'a Env, inputs: BTreeMap<String, EntryKind>) -> ActionKey<'a> {
    let mut own = inputs.clone();
    own.remove("lib/out/x");
    ActionKey::of_parts(
        env,
        fixed(),
        SandboxSetting::Namespaces,
        inputs,
        std::sync::Arc::new(own),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An unintended change to the encoding must fail here, loudly: if the
/// change is intended, bump KEY_VERSION and update these values.
#[test]
fn golden_static_encoding_and_weak_key() {
    let small = StaticKey {
        argv: vec!["true".into()],
        cwd: String::new(),
        env: BTreeMap::new(),
        pass_env: vec![],
        srcs: vec![],
        outs: vec![],
        deps: vec![],
        ..fixed()
    };
    let mut bytes = Vec::new();
    encode_static(&small, &mut bytes);
    // One line per field: `#`, number, tag, payload.
    let expected = [
        "766275696c642d7765616b00",                              // "vbuild-weak\0"
        "2301 75 0400000000000000",                              // #1 version 4
        "2302 73 0c00000000000000 6c696e75782d7838365f3634",     // #2 "linux-x86_64"
        "2303 6c 0100000000000000 73 0400000000000000 74727565", // #3 ["true"]
        "2304 73 0000000000000000",                              // #4 cwd ""
        "2305 6d 0000000000000000",                              // #5 env {}
        "2306 6c 0000000000000000",                              // #6 pass_env []
        "2307 6c 0000000000000000",                              // #7 srcs []
        "2308 6c 0000000000000000",                              // #8 outs []
        "2309 6c 0000000000000000",                              // #9 deps []
        "230a 73 0a00000000000000 6e616d65737061636573",         // #10 "namespaces"
        "230b 62 00",                                            // #11 network false
        "230c 2d",                                               // #12 node absent
        "230d 6c 0000000000000000",                              // #13 workspace inputs []
        "230e 62 00",                                            // #14 cache_always false
        "230f 2d",                                               // #15 FORCE_COLOR absent
    ]
    .concat()
    .replace(' ', "");
    assert_eq!(hex(&bytes), expected);
    assert_eq!(
        weak_key(&fixed()).to_hex(),
        "e06924014dc25b1e347f9a6154af2488f0272e6a44c666816caddae4ba25d582"
    );
}

/// `optional_outs` enters the key (field 16) only when set, and a path
/// moved between `outs` and `optional_outs` is another key.
#[test]
fn optional_outs_are_keyed_apart_from_outs() {
    let optional = StaticKey {
        outs: vec![],
        optional_outs: vec!["dist/".into()],
        ..fixed()
    };
    let none = StaticKey {
        outs: vec![],
        ..fixed()
    };
    assert_ne!(weak_key(&optional), weak_key(&fixed()));
    assert_ne!(weak_key(&optional), weak_key(&none));
    let mut bytes = Vec::new();
    encode_static(&optional, &mut bytes);
    assert!(hex(&bytes).ends_with(
        &["2310 6c 0100000000000000 73 0500000000000000 646973742f"]
            .concat()
            .replace(' ', "")
    ));
}

#[test]
fn golden_strong_key() {
    let env = Env(BTreeMap::from([("CI".into(), "1".into())]));
    let k = key(&env, inputs());
    let record = Record {
        ignored_inputs: vec!["pkg/src/link".into()],
        tracked_env: vec!["CI".into(), "NODE_ENV".into()],
        env_patterns: vec![EnvQuery::Prefix("VITE_".into())],
        used_inputs: Some(vec!["pkg/src/a".into()]),
    };
    assert_eq!(
        k.strong(&record).to_hex(),
        "bf97b8da0d5f9b5694c9f7238a12ea2a17a1139e1f1f2b1d89b3f686ad68a878"
    );
    assert_eq!(
        k.strong(&k.default_record()).to_hex(),
        "ee0f1d9ea5db865f72d24060c626b556b632fcbb0bccbb1c6bc7c975c0469387"
    );
}

#[test]
fn golden_tree_digest() {
    let tree = vbuild_store::Tree::new(vec![
        vbuild_store::TreeEntry {
            path: "dist/app.js".into(),
            kind: file(7),
        },
        vbuild_store::TreeEntry {
            path: "dist/latest".into(),
            kind: EntryKind::Symlink {
                target: "app.js".into(),
            },
        },
    ])
    .unwrap();
    assert_eq!(
        tree.digest().to_hex(),
        "1dbfe675ce310235ff20eea708c9836873377ef96bf9bb2e73341bc5386d9fec"
    );
}

#[test]
fn used_inputs_count_names_of_the_rest() {
    let env = no_env();
    let k = key(&env, inputs());
    let record = Record {
        used_inputs: Some(vec!["pkg/src/a".into()]),
        ..Default::default()
    };
    let mut changed = inputs();
    changed.insert("pkg/src/b".into(), file(9));
    assert_eq!(
        k.strong(&record),
        key(&env, changed.clone()).strong(&record)
    );
    changed.insert("pkg/src/new".into(), file(9));
    assert_ne!(k.strong(&record), key(&env, changed).strong(&record));
}

#[test]
fn narrowing_never_drops_dependency_outputs() {
    let env = no_env();
    let k = key(&env, inputs());
    let mut changed = inputs();
    changed.insert("lib/out/x".into(), file(9));
    let k2 = key(&env, changed);
    for record in [
        Record {
            used_inputs: Some(vec!["pkg/src/a".into()]),
            ..Default::default()
        },
        Record {
            ignored_inputs: vec!["lib".into()],
            ..Default::default()
        },
    ] {
        assert_ne!(k.strong(&record), k2.strong(&record), "{record:?}");
    }
}

#[test]
fn untrustworthy_records_narrow_nothing() {
    let env = no_env();
    let k = key(&env, inputs());
    let full = k.default_record();
    for record in [
        Record {
            ignored_inputs: vec![".".into()],
            ..Default::default()
        },
        Record {
            ignored_inputs: vec!["pkg".into()],
            ..Default::default()
        },
        Record {
            ignored_inputs: vec!["pkg/src".into()],
            ..Default::default()
        },
        Record {
            ignored_inputs: vec!["lib".into()],
            ..Default::default()
        },
        Record {
            used_inputs: Some(vec![]),
            ..Default::default()
        },
        Record {
            used_inputs: Some(vec!["pkg/not-an-input".into()]),
            ..Default::default()
        },
    ] {
        assert_eq!(k.confine(record.clone()), full, "{record:?}");
        assert_eq!(k.strong(&record), k.strong(&full), "{record:?}");
    }
    // A refused path in a report: not trusted either.
    let decl = vbuild_ipc::Declarations {
        used_inputs: Some(["pkg/src/a".to_string()].into()),
        used_inputs_refused: true,
        ..Default::default()
    };
    assert_eq!(k.record_of(&decl), full);
}

#[test]
fn ignored_inputs_do_not_change_strong_key() {
    let env = no_env();
    let k = key(&env, inputs());
    let record = Record {
        ignored_inputs: vec!["pkg/src/b".into()],
        ..Default::default()
    };
    let mut changed = inputs();
    changed.insert("pkg/src/b".into(), file(9));
    let k2 = key(&env, changed);
    assert_eq!(k.strong(&record), k2.strong(&record));
    let all = Record::default();
    assert_ne!(k.strong(&all), k2.strong(&all));
}

#[test]
fn pass_env_always_tracked_and_confine_is_idempotent() {
    let env = Env(BTreeMap::from([("CI".into(), "1".into())]));
    let k = key(&env, inputs());
    let remote = Record {
        tracked_env: vec![],
        ..Default::default()
    };
    let confined = k.confine(remote.clone());
    assert_eq!(confined.tracked_env, ["CI"]);
    assert_eq!(k.confine(confined.clone()), confined);
    let env2 = Env(BTreeMap::from([("CI".into(), "2".into())]));
    assert_ne!(k.strong(&remote), key(&env2, inputs()).strong(&remote));
}

fn sample() -> KeyInputs {
    KeyInputs {
        fixed: fixed(),
        inputs: BTreeMap::from([
            ("pkg/a".to_string(), file(1)),
            ("pkg/b".to_string(), file(2)),
        ]),
        env_values: BTreeMap::new(),
        record: Record::default(),
    }
}

#[test]
fn explains_file_changes() {
    let before = sample();
    let mut now = sample();
    now.inputs.insert("pkg/a".into(), file(7));
    now.inputs.insert("pkg/c".into(), file(3));
    now.inputs.remove("pkg/b");
    assert_eq!(
        explain(&before, &now),
        "'pkg/a' modified, 'pkg/c' added, 'pkg/b' removed"
    );
    now.fixed.argv = vec!["false".into()];
    assert_eq!(explain(&before, &now), "command changed");
}
