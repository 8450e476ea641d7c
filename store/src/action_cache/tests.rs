use super::*;
use std::path::Path;

fn d(s: &str) -> Digest {
    Digest::of_bytes(s.as_bytes())
}

fn wk(s: &str) -> WeakKey {
    WeakKey(d(s))
}

fn sk(s: &str) -> StrongKey {
    StrongKey(d(s))
}

fn tree(tag: &str) -> Tree {
    Tree::new(vec![crate::TreeEntry {
        path: format!("out/{tag}"),
        kind: crate::EntryKind::File {
            digest: d(tag),
            size: tag.len() as u64,
            executable: false,
        },
    }])
    .unwrap()
}

fn result(tag: &str) -> ActionResult {
    ActionResult {
        output_tree: tree(tag).digest(),
        stdout: d(&format!("{tag}-out")),
        stderr: d(&format!("{tag}-err")),
        exit_code: 0,
        declarations: serde_json::json!({ "ignoredInputs": [tag] }),
        duration_ms: 42,
        interleave: None,
    }
}

fn entry(ws: &str, label: &str, weak: &str, strong: &str, record: &str) -> CacheEntry {
    CacheEntry {
        weak_key: wk(weak),
        strong_key: sk(strong),
        record: record.into(),
        workspace: ws.into(),
        label: label.into(),
        explain: format!("{strong}-explain").into_bytes(),
        tree: tree(strong),
        result: result(strong),
    }
}

fn open_in(dir: &Path) -> ActionCache {
    ActionCache::open(&dir.join("cache.db")).unwrap()
}

#[test]
fn open_sets_wal_and_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open_in(dir.path());
    let conn = cache.conn();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: bool = conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert!(fk);
    let v: i64 = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, crate::SCHEMA_VERSION);
    drop(conn);
    drop(cache);
    // Reopening an up-to-date database is fine and keeps the data.
    let cache = open_in(dir.path());
    assert_eq!(cache.entry_count().unwrap(), 0);
}

#[test]
fn put_get_records_last_run() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open_in(dir.path());
    assert_eq!(cache.get(&sk("s1")).unwrap(), None);
    assert!(cache.records(&wk("w")).unwrap().is_empty());
    assert!(cache.last_run("ws", "//a:b").unwrap().is_none());

    cache.put(&entry("ws", "//a:b", "w", "s1", "rec1")).unwrap();
    assert_eq!(
        cache.get(&sk("s1")).unwrap(),
        Some(StoredEntry {
            result: result("s1"),
            tree: tree("s1")
        })
    );
    assert_eq!(cache.records(&wk("w")).unwrap(), ["rec1"]);
    let last = cache.last_run("ws", "//a:b").unwrap().unwrap();
    assert_eq!(
        (last.weak_key, last.strong_key, last.explain),
        (wk("w"), sk("s1"), b"s1-explain".to_vec())
    );
    assert_eq!(last.result, result("s1"));

    // A second record under the same weak key; most recently used first.
    cache.put(&entry("ws", "//a:b", "w", "s2", "rec2")).unwrap();
    assert_eq!(cache.records(&wk("w")).unwrap(), ["rec2", "rec1"]);
    assert_eq!(
        cache.last_run("ws", "//a:b").unwrap().unwrap().strong_key,
        sk("s2")
    );
    // Re-putting rec1 bumps it back to the front, without duplicating it.
    cache.put(&entry("ws", "//a:b", "w", "s1", "rec1")).unwrap();
    assert_eq!(cache.records(&wk("w")).unwrap(), ["rec1", "rec2"]);
    cache.touch_record(&wk("w"), "rec2").unwrap();
    assert_eq!(cache.records(&wk("w")).unwrap(), ["rec2", "rec1"]);
    assert_eq!(cache.entry_count().unwrap(), 2);

    // Replacing an existing strong key updates its result in place.
    let mut e = entry("ws", "//a:b", "w", "s1", "rec1");
    e.result.exit_code = 0;
    e.result.duration_ms = 7;
    cache.put(&e).unwrap();
    assert_eq!(cache.get(&sk("s1")).unwrap().unwrap().result.duration_ms, 7);
    assert_eq!(cache.entry_count().unwrap(), 2);
}

#[test]
fn remove_drops_entry_and_last_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open_in(dir.path());
    cache.put(&entry("ws", "//a", "w", "s1", "r")).unwrap();
    cache.put(&entry("ws", "//b", "w2", "s2", "r")).unwrap();
    cache.remove(&sk("s1")).unwrap();
    assert_eq!(cache.get(&sk("s1")).unwrap(), None);
    assert!(cache.last_run("ws", "//a").unwrap().is_none());
    assert!(cache.last_run("ws", "//b").unwrap().is_some());
    assert_eq!(cache.entry_count().unwrap(), 1);
    // Records survive: they still say what the tool reads.
    assert_eq!(cache.records(&wk("w")).unwrap(), ["r"]);
    cache.remove(&sk("never-stored")).unwrap();
}

#[test]
fn clear_workspace_keeps_shared_records() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open_in(dir.path());
    cache
        .put(&entry("one", "//a", "w-shared", "s1", "r1"))
        .unwrap();
    cache
        .put(&entry("one", "//b", "w-one", "s2", "r2"))
        .unwrap();
    cache
        .put(&entry("two", "//a", "w-shared", "s3", "r3"))
        .unwrap();
    cache
        .put(&entry("two", "//c", "w-two", "s4", "r4"))
        .unwrap();

    assert_eq!(cache.clear_workspace("one").unwrap(), 2);
    assert_eq!(cache.entry_count().unwrap(), 2);
    assert_eq!(cache.get(&sk("s1")).unwrap(), None);
    assert_eq!(cache.get(&sk("s2")).unwrap(), None);
    assert!(cache.last_run("one", "//a").unwrap().is_none());
    assert!(cache.last_run("one", "//b").unwrap().is_none());
    // w-one has no entry left: its records go. w-shared still has one in "two".
    assert!(cache.records(&wk("w-one")).unwrap().is_empty());
    assert_eq!(cache.records(&wk("w-shared")).unwrap(), ["r3", "r1"]);
    assert!(cache.last_run("two", "//a").unwrap().is_some());

    assert_eq!(cache.clear_workspace("two").unwrap(), 2);
    assert_eq!(cache.entry_count().unwrap(), 0);
    assert!(cache.records(&wk("w-shared")).unwrap().is_empty());
    assert_eq!(cache.clear_workspace("nobody").unwrap(), 0);
}

#[test]
fn clear_keeps_entries_another_scope_owns() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open_in(dir.path());
    // The same action built in a workspace and in its copy at another path.
    cache.put(&entry("/ws/one", "//a", "w", "s", "r")).unwrap();
    cache
        .put(&entry("/copy/one", "//a", "w", "s", "r"))
        .unwrap();
    cache
        .put(&entry("/ws/one", "//b", "w2", "s2", "r"))
        .unwrap();
    assert_eq!(cache.clear_workspace("/ws/one").unwrap(), 1);
    assert!(cache.get(&sk("s")).unwrap().is_some());
    assert!(cache.get(&sk("s2")).unwrap().is_none());
    assert!(cache.last_run("/ws/one", "//a").unwrap().is_none());
    assert!(cache.last_run("/copy/one", "//a").unwrap().is_some());
    assert_eq!(cache.records(&wk("w")).unwrap(), ["r"]);
    assert!(cache.records(&wk("w2")).unwrap().is_empty());
    assert_eq!(cache.clear_workspace("/copy/one").unwrap(), 1);
    assert_eq!(cache.entry_count().unwrap(), 0);
}

#[test]
fn damaged_database_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = ActionCache::open(&path).err().expect("garbage is refused");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("rm "), "{text}");
}

#[test]
fn records_are_capped_per_weak_key() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open_in(dir.path());
    let n = MAX_RECORDS_PER_WEAK_KEY + 5;
    for i in 0..n {
        cache
            .put(&entry("ws", "//a", "w", &format!("s{i}"), &format!("r{i}")))
            .unwrap();
    }
    let recs = cache.records(&wk("w")).unwrap();
    assert_eq!(recs.len() as i64, MAX_RECORDS_PER_WEAK_KEY);
    assert_eq!(recs[0], format!("r{}", n - 1));
    assert!(!recs.contains(&"r0".to_string()));
}

#[test]
fn refuses_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    drop(ActionCache::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
        [crate::SCHEMA_VERSION + 1],
    )
    .unwrap();
    drop(conn);
    match ActionCache::open(&path) {
        Err(StoreError::SchemaTooNew {
            found,
            supported,
            path: p,
        }) => {
            assert_eq!(found, crate::SCHEMA_VERSION + 1);
            assert_eq!(supported, crate::SCHEMA_VERSION);
            assert_eq!(p, path);
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a newer schema"),
    }
}

#[test]
fn corrupt_result_json_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open_in(dir.path());
    cache.put(&entry("ws", "//a", "w", "s", "r")).unwrap();
    cache
        .conn()
        .execute("UPDATE entries SET result = '{not json'", [])
        .unwrap();
    assert!(matches!(cache.get(&sk("s")), Err(StoreError::Corrupt(_))));
    assert!(matches!(
        cache.last_run("ws", "//a"),
        Err(StoreError::Corrupt(_))
    ));
}

/// The output tree and the key description are rows (schema v7):
/// bytes that no longer hash to the digest stored with them are reported
/// as corrupt, as a blob whose bytes do not match its name is; a hit never
/// uses them.
#[test]
fn corrupt_tree_or_key_description_in_a_row_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open_in(dir.path());
    let forged = tree("forged").to_canonical_bytes();
    for (what, sql) in [
        // A valid tree, but not the one the result names.
        ("tree", "UPDATE entries SET tree = ?1"),
        ("tree", "UPDATE entries SET tree = substr(tree, 2)"),
        ("explain", "UPDATE last_run SET explain_doc = ?1"),
        (
            "explain",
            "UPDATE last_run SET explain_doc = x'' WHERE ?1 IS NOT NULL",
        ),
    ] {
        cache.put(&entry("ws", "//a", "w", "s", "r")).unwrap();
        let n = if sql.contains("?1") {
            cache.conn().execute(sql, [&forged]).unwrap()
        } else {
            cache.conn().execute(sql, []).unwrap()
        };
        assert_eq!(n, 1);
        let get = cache.get(&sk("s"));
        let last = cache.last_run("ws", "//a");
        if what == "tree" {
            assert!(
                matches!(get, Err(StoreError::Corrupt(ref m)) if m.contains("output tree")),
                "{get:?}"
            );
            assert!(last.is_ok());
        } else {
            assert!(get.is_ok());
            assert!(
                matches!(last, Err(StoreError::Corrupt(ref m)) if m.contains("key description")),
                "{sql}: {last:?}"
            );
        }
        cache.remove(&sk("s")).unwrap();
    }
}

/// An entry whose result names another tree than the one given is refused:
/// a row's tree is always the one its result's digest names.
#[test]
fn put_refuses_a_tree_the_result_does_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open_in(dir.path());
    let mut e = entry("ws", "//a", "w", "s", "r");
    e.tree = tree("other");
    assert!(cache.put(&e).is_err());
    assert_eq!(cache.entry_count().unwrap(), 0);
}

#[test]
fn concurrent_writers_on_two_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    const PER_THREAD: usize = 150;
    // Both open a fresh database at once (racing on WAL setup and migration),
    // then write and read interleaved.
    std::thread::scope(|s| {
        for t in 0..2 {
            let path = &path;
            s.spawn(move || {
                let cache = ActionCache::open(path).unwrap();
                for i in 0..PER_THREAD {
                    let e = entry(
                        &format!("ws{t}"),
                        &format!("//l{i}"),
                        "w",
                        &format!("{t}-{i}"),
                        &format!("r{t}-{i}"),
                    );
                    cache.put(&e).unwrap();
                    assert!(cache.get(&e.strong_key).unwrap().is_some());
                    let stats = StatCache::empty();
                    let stat = FileStat {
                        dev: 1,
                        ino: i as u64,
                        size: 1,
                        mtime_ns: 0,
                        ctime_ns: 0,
                        executable: false,
                    };
                    stats.record(Path::new(&format!("/ws{t}/f{i}")), &stat, d("x"));
                    cache.save_stat_cache(&stats).unwrap();
                }
            });
        }
    });
    let cache = ActionCache::open(&path).unwrap();
    assert_eq!(cache.entry_count().unwrap(), 2 * PER_THREAD as u64);
    assert_eq!(
        cache.records(&wk("w")).unwrap().len() as i64,
        MAX_RECORDS_PER_WEAK_KEY
    );
    assert_eq!(cache.load_stat_cache("/ws0/").unwrap().len(), PER_THREAD);
    assert_eq!(cache.load_stat_cache("/").unwrap().len(), 2 * PER_THREAD);
}

#[test]
fn stat_cache_save_load_round_trip_with_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open_in(dir.path());
    let stats = StatCache::empty();
    let st = |ino: u64| FileStat {
        dev: u64::MAX, // survives the i64 column bit-for-bit
        ino,
        size: 10,
        mtime_ns: 1_000_000_000,
        ctime_ns: 1_500_000_000,
        executable: ino % 2 == 1,
    };
    let recorded = 1_000_000_000 + 5 * crate::RACY_MARGIN_NS;
    let paths = [
        "/w/a/x",
        "/w/a/y/z",
        "/w/ab",
        "/w/a",
        "/w/b/x",
        "/w/a\u{e9}",
    ];
    for (i, p) in paths.iter().enumerate() {
        stats.record_at(Path::new(p), &st(i as u64), d(p), recorded);
    }
    cache.save_stat_cache(&stats).unwrap();
    assert!(stats.dirty_entries().is_empty(), "saved entries are clean");

    let loaded = cache.load_stat_cache("/w/a/").unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(
        loaded.lookup(Path::new("/w/a/x"), &st(0)),
        Some(d("/w/a/x"))
    );
    assert_eq!(
        loaded.lookup(Path::new("/w/a/y/z"), &st(1)),
        Some(d("/w/a/y/z"))
    );
    assert_eq!(loaded.lookup(Path::new("/w/ab"), &st(2)), None);
    assert!(
        loaded.dirty_entries().is_empty(),
        "loaded entries are not dirty"
    );
    assert_eq!(cache.load_stat_cache("/w/").unwrap().len(), paths.len());
    assert_eq!(cache.load_stat_cache("").unwrap().len(), paths.len());
    assert_eq!(cache.load_stat_cache("/elsewhere/").unwrap().len(), 0);

    // Only changed rows are written on the next save; others keep their row.
    let again = cache.load_stat_cache("/w/").unwrap();
    again.record_at(Path::new("/w/a/x"), &st(9), d("new"), recorded);
    assert_eq!(again.dirty_entries().len(), 1);
    cache.save_stat_cache(&again).unwrap();
    let reloaded = cache.load_stat_cache("/w/a/").unwrap();
    assert_eq!(reloaded.lookup(Path::new("/w/a/x"), &st(9)), Some(d("new")));
    assert_eq!(reloaded.lookup(Path::new("/w/a/x"), &st(0)), None);
    assert_eq!(
        reloaded.lookup(Path::new("/w/a/y/z"), &st(1)),
        Some(d("/w/a/y/z"))
    );
}

#[test]
fn prefix_successor_bounds() {
    assert_eq!(prefix_successor(b"/w/"), Some(b"/w0".to_vec()));
    assert_eq!(prefix_successor(b"a\xff\xff"), Some(b"b".to_vec()));
    assert_eq!(prefix_successor(b"\xff"), None);
    assert_eq!(prefix_successor(b""), None);
}

#[test]
fn open_race_on_fresh_database() {
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        std::thread::scope(|s| {
            for t in 0..4 {
                let path = &path;
                s.spawn(move || {
                    let cache =
                        ActionCache::open(path).unwrap_or_else(|e| panic!("round {round}: {e}"));
                    cache
                        .put(&entry("ws", &format!("//{t}"), "w", &format!("s{t}"), "r"))
                        .unwrap();
                });
            }
        });
        assert_eq!(ActionCache::open(&path).unwrap().entry_count().unwrap(), 4);
    }
}

/// Set in the environment of the child processes `concurrent_processes` spawns.
const CHILD_DB_VAR: &str = "VBUILD_STORE_TEST_CHILD_DB";

/// A child process's body; does nothing when run as a normal test.
#[test]
fn child_writer() {
    let (Some(db), Ok(tag)) = (
        std::env::var_os(CHILD_DB_VAR),
        std::env::var("VBUILD_STORE_TEST_CHILD_TAG"),
    ) else {
        return;
    };
    let cache = ActionCache::open(Path::new(&db)).unwrap();
    for i in 0..100 {
        cache
            .put(&entry(
                &tag,
                &format!("//l{i}"),
                &format!("w{i}"),
                &format!("{tag}-{i}"),
                &tag,
            ))
            .unwrap();
        assert!(cache.last_run(&tag, &format!("//l{i}")).unwrap().is_some());
    }
}

#[test]
fn concurrent_processes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cache.db");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|t| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "action_cache::tests::child_writer",
                    "--test-threads=1",
                ])
                .env(CHILD_DB_VAR, &db)
                .env("VBUILD_STORE_TEST_CHILD_TAG", format!("p{t}"))
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a child writer failed");
    }
    let cache = ActionCache::open(&db).unwrap();
    assert_eq!(cache.entry_count().unwrap(), 300);
    assert_eq!(cache.records(&wk("w7")).unwrap().len(), 3);
}

/// Lookups read on their own connections: they complete while the writer
/// is inside a write transaction (the old single connection made every
/// lookup wait for it), see only committed rows, and several threads
/// looking up while another writes all get the right results.
#[test]
fn lookups_read_beside_an_open_write_transaction() {
    use std::sync::mpsc;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let cache = open_in(dir.path());
    for i in 0..50 {
        let (w, s) = (format!("w{i}"), format!("s{i}"));
        cache
            .put(&entry("ws", &format!("//p:{i}"), &w, &s, "rec"))
            .unwrap();
    }
    std::thread::scope(|scope| {
        // The writer holds a write transaction with an uncommitted entry.
        let mut writer = cache.conn();
        let tx = writer
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        tx.execute(
            "INSERT INTO entries (strong_key, weak_key, workspace, label, tree, result,
                                  created_at, last_used)
             VALUES (?1, ?2, 'ws', '//p:new', ?3, ?4, ?5, ?5)",
            params![
                sk("new").as_bytes(),
                wk("wnew").as_bytes(),
                tree("new").to_canonical_bytes(),
                serde_json::to_string(&result("new")).unwrap(),
                now_ms()
            ],
        )
        .unwrap();
        let (done, finished) = mpsc::channel();
        for t in 0..4 {
            let (cache, done) = (&cache, done.clone());
            scope.spawn(move || {
                for round in 0..25 {
                    let i = (t * 25 + round) % 50;
                    let reader = cache.reader().unwrap();
                    assert_eq!(reader.records(&wk(&format!("w{i}"))).unwrap(), ["rec"]);
                    let got = reader.get(&sk(&format!("s{i}"))).unwrap();
                    assert_eq!(got, Some(stored(&format!("s{i}"))));
                    assert_eq!(reader.get(&sk("new")).unwrap(), None, "uncommitted");
                }
                done.send(()).unwrap();
            });
        }
        drop(done);
        for _ in 0..4 {
            finished
                .recv_timeout(Duration::from_secs(20))
                .expect("lookups must not wait for the writer's transaction");
        }
        tx.commit().unwrap();
        drop(writer);
        // Committed: the next lookup's snapshot has it.
        assert_eq!(cache.get(&sk("new")).unwrap(), Some(stored("new")));
    });
    // Lookups under a writer that keeps committing: every one is right.
    std::thread::scope(|scope| {
        let cache = &cache;
        scope.spawn(move || {
            for i in 50..150 {
                let (w, s) = (format!("w{i}"), format!("s{i}"));
                cache
                    .put(&entry("ws", &format!("//p:{i}"), &w, &s, "rec"))
                    .unwrap();
            }
        });
        for t in 0..3 {
            scope.spawn(move || {
                for i in (t..150).step_by(3) {
                    let reader = cache.reader().unwrap();
                    let got = reader.get(&sk(&format!("s{i}"))).unwrap();
                    // Written before this run started, or by now, or not yet.
                    assert!(got.is_none() || got == Some(stored(&format!("s{i}"))));
                    if i < 50 {
                        assert!(got.is_some());
                    }
                }
            });
        }
    });
    assert_eq!(cache.entry_count().unwrap(), 151);
}

/// A lookup that finds an entry whose mark is stale marks it through the
/// writer (read connections are query-only), and a mark that finds the
/// row gone (collected since the snapshot) makes it a miss.
#[test]
fn stale_mark_goes_through_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open_in(dir.path());
    cache.put(&entry("ws", "//a:b", "w", "s", "rec")).unwrap();
    let old = now_ms() - crate::gc::TOUCH_MS - 1000;
    cache
        .conn()
        .execute("UPDATE entries SET last_used = ?1", [old])
        .unwrap();
    assert_eq!(cache.get(&sk("s")).unwrap(), Some(stored("s")));
    let marked: i64 = cache
        .conn()
        .query_row("SELECT last_used FROM entries", [], |r| r.get(0))
        .unwrap();
    assert!(marked > old);
    // Found in the snapshot, deleted before the mark: a miss.
    cache
        .conn()
        .execute("UPDATE entries SET last_used = ?1", [old])
        .unwrap();
    let reader = cache.reader().unwrap();
    assert_eq!(reader.records(&wk("w")).unwrap(), ["rec"]);
    cache.remove(&sk("s")).unwrap();
    assert_eq!(reader.get(&sk("s")).unwrap(), None);
    drop(reader);
    // The read connection refuses writes outright.
    let reader = cache.reader().unwrap();
    assert!(reader.conn().execute("DELETE FROM records", []).is_err());
}

fn stored(tag: &str) -> StoredEntry {
    StoredEntry {
        result: result(tag),
        tree: tree(tag),
    }
}
