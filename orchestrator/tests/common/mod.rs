//! Test harness: temporary workspaces and a private store, driven through
//! the real `vbuild` binary.
#![allow(dead_code)]
pub mod checkout;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Ws {
    pub dir: tempfile::TempDir,
    pub cache: PathBuf,
    _cache_dir: tempfile::TempDir,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Exit code, stdout and stderr with durations and temp paths redacted.
    pub fn snapshot(&self) -> String {
        format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            self.code,
            redact(&self.stdout),
            redact(&self.stderr)
        )
    }
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, 0, "vbuild failed:\n{}", self.snapshot());
        self
    }
    /// Asserts there are action lines and every one is in `state` ("hit"
    /// also matches "hit (remote)").
    pub fn assert_all(&self, state: &str) -> &Self {
        let states = self.states();
        let prefix = format!("{state} ");
        assert!(
            !states.is_empty() && states.iter().all(|s| s.starts_with(&prefix)),
            "expected every action {state}:\n{}",
            self.snapshot()
        );
        self
    }
    /// Asserts the action lines are exactly `expected`, in order, e.g.
    /// `["hit (remote) //pkg:build"]`.
    pub fn assert_states(&self, expected: &[&str]) -> &Self {
        assert_eq!(self.states(), expected, "{}", self.snapshot());
        self
    }
    /// The state word of each action line, e.g. ["hit //a:b", "miss //c:d"].
    pub fn states(&self) -> Vec<String> {
        self.stderr
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let mut state = words.next()?.to_string();
                let mut label = words.next()?;
                if state == "hit" && label == "(remote)" {
                    state = "hit (remote)".into();
                    label = words.next()?;
                }
                [
                    "hit",
                    "hit (remote)",
                    "miss",
                    "uncached",
                    "failed",
                    "skipped",
                ]
                .contains(&state.as_str())
                .then(|| format!("{state} {label}"))
            })
            .collect()
    }
    /// The labels whose action line has `state`, e.g. "hit" → {//a:b}.
    pub fn labels_in(&self, state: &str) -> std::collections::BTreeSet<String> {
        self.states()
            .into_iter()
            .filter_map(|s| s.strip_prefix(&format!("{state} ")).map(str::to_string))
            .collect()
    }
}

/// A set of labels, to compare with [`Out::labels_in`].
pub fn label_set(labels: &[&str]) -> std::collections::BTreeSet<String> {
    labels.iter().map(|s| s.to_string()).collect()
}

pub fn redact(text: &str) -> String {
    let time = regex::Regex::new(r"\b\d+(\.\d+)?(ms|s)\b").unwrap();
    let tmp = regex::Regex::new(r"/tmp/[^\s/'\x22]+").unwrap();
    let ids = regex::Regex::new(r"(action|act|vbipc)-[A-Za-z0-9-]+").unwrap();
    let uid = regex::Regex::new(r"/vbuild-\d+/").unwrap();
    let run = regex::Regex::new(r"/run-\d+/").unwrap();
    let ipc_run = regex::Regex::new(r"/r[0-9a-f]+-[0-9a-f]{16}/").unwrap();
    let token = regex::Regex::new(r"\b[0-9a-f]{64}\b").unwrap();
    let text = time.replace_all(text, "[time]");
    let text = ipc_run.replace_all(&text, "/r[pid]-[random]/");
    let text = token.replace_all(&text, "[token]");
    let text = ids.replace_all(&text, "$1-[id]");
    let text = uid.replace_all(&text, "/vbuild-[uid]/");
    let text = run.replace_all(&text, "/run-[pid]/");
    tmp.replace_all(&text, "[tmp]").into_owned()
}

impl Ws {
    /// Where the store keeps the blob of `bytes` (`cas/<1 hex>/<63 hex>`).
    pub fn blob_path(&self, bytes: &[u8]) -> PathBuf {
        let hex = blake3::hash(bytes).to_hex().to_string();
        self.cache.join("cas").join(&hex[..1]).join(&hex[1..])
    }
    /// A workspace named "test" holding `files` (path, contents).
    pub fn new(files: &[(&str, &str)]) -> Ws {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let ws = Ws {
            cache: cache_dir.path().to_path_buf(),
            dir,
            _cache_dir: cache_dir,
        };
        ws.write(
            "vbuild.toml",
            "[workspace]\nname = \"test\"\nsandbox = \"scratch\"\n",
        );
        for (path, contents) in files {
            ws.write(path, contents);
        }
        ws
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// What the action cache scopes this workspace's entries by: its root.
    pub fn scope(&self) -> String {
        self.root()
            .canonicalize()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// Runs vbuild in the workspace root with one job (deterministic order).
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_in(self.root(), args)
    }

    pub fn run_in(&self, dir: &Path, args: &[&str]) -> Out {
        run_with(dir, &self.cache, args, &[])
    }

    /// Runs `vbuild ARGS` under `strace -ff -e trace=CALLS` (umask 022, so
    /// modes do not depend on the caller's) and returns the trace of every
    /// thread and process, one whole call per line; None when strace is
    /// not installed (outside CI only). Asserts the run succeeded.
    pub fn run_traced(&self, calls: &str, args: &[&str]) -> Option<String> {
        if std::process::Command::new("strace")
            .arg("-V")
            .output()
            .is_err()
        {
            assert!(std::env::var_os("CI").is_none(), "CI must install strace");
            eprintln!("skipped: strace is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("trace");
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg("umask 022 && out=$1 && shift && exec strace -ff -e trace=\"$0\" -o \"$out\" \"$@\"")
            .arg(calls)
            .arg(&prefix)
            .arg(env!("CARGO_BIN_EXE_vbuild"))
            .args(args)
            .current_dir(self.root())
            .env("VBUILD_CACHE_DIR", &self.cache)
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "vbuild {args:?} under strace failed");
        let mut trace = String::new();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            trace.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
        }
        Some(trace)
    }
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        run_with(self.root(), &self.cache, args, env)
    }
}

pub fn run_with(dir: &Path, cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vbuild"));
    cmd.current_dir(dir)
        .args(args)
        .env("VBUILD_CACHE_DIR", cache)
        // The caller's colour settings reach actions (and their keys).
        .env_remove("FORCE_COLOR")
        .env_remove("NO_COLOR")
        .env_remove("VBUILD_STORE_MAX_SIZE")
        .env_remove("VBUILD_RUNNING_NOTICE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("vbuild runs");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// lib → app, plus an independent package; outputs cover a directory, an
/// executable file and a symlink.
pub fn three_packages() -> Ws {
    Ws::new(&[
        ("lib/src/msg.txt", "hello\n"),
        (
            "lib/BUILD.toml",
            r#"[target.build]
command = "mkdir -p out && tr a-z A-Z < src/msg.txt > out/msg.txt && echo lib-stdout && echo lib-stderr >&2"
srcs = ["src/**"]
outs = ["out/"]
"#,
        ),
        (
            "app/BUILD.toml",
            r#"[target.build]
command = """
cat ../lib/out/msg.txt > result.txt
printf '#!/bin/sh\necho hi\n' > run.sh && chmod +x run.sh
ln -s result.txt link.txt
echo app-stdout
"""
deps = ["//lib:build"]
outs = ["result.txt", "run.sh", "link.txt"]
"#,
        ),
        (
            "other/BUILD.toml",
            "[target.build]\ncommand = \"echo other > o.txt\"\nouts = [\"o.txt\"]\n",
        ),
    ])
}

/// A loopback port free at the moment of asking (a server started on it
/// may still lose a race for it, hence the callers' retries).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Rewrites the output tree of the last cache entry of `label` in `ws`'s
/// store, the way a corrupt or malicious writer of the store could: `edit`
/// changes the entries (`file_entry` stores bytes for a new one).
pub fn forge_tree(
    ws: &Ws,
    label: &str,
    edit: impl FnOnce(&vbuild_store::Store, &mut Vec<vbuild_store::TreeEntry>),
) {
    use vbuild_store::{CacheEntry, Store, Tree};
    let store = Store::open(&ws.cache).unwrap();
    let scope = ws.scope();
    let last = store
        .action_cache
        .last_run(&scope, label)
        .unwrap()
        .unwrap_or_else(|| panic!("no cache entry for {label}"));
    let stored = store.action_cache.get(&last.strong_key).unwrap().unwrap();
    let mut entries = stored.tree.into_entries();
    edit(&store, &mut entries);
    let tree = Tree::new(entries).unwrap();
    let mut result = last.result.clone();
    result.output_tree = tree.digest();
    let record = store
        .action_cache
        .records(&last.weak_key)
        .unwrap()
        .remove(0);
    store
        .action_cache
        .put(&CacheEntry {
            weak_key: last.weak_key,
            strong_key: last.strong_key,
            record,
            workspace: scope,
            label: label.into(),
            explain: last.explain,
            tree,
            result,
        })
        .unwrap();
}

/// A file entry whose bytes are stored in `store`.
pub fn file_entry(
    store: &vbuild_store::Store,
    path: &str,
    bytes: &[u8],
) -> vbuild_store::TreeEntry {
    vbuild_store::TreeEntry {
        path: path.into(),
        kind: vbuild_store::EntryKind::File {
            digest: store.cas.put_bytes(bytes).unwrap(),
            size: bytes.len() as u64,
            executable: false,
        },
    }
}

pub fn link_entry(path: &str, target: &str) -> vbuild_store::TreeEntry {
    vbuild_store::TreeEntry {
        path: path.into(),
        kind: vbuild_store::EntryKind::Symlink {
            target: target.into(),
        },
    }
}

/// Every file and symlink under the workspace whose name says it is a
/// vbuild temp file.
pub fn temp_files(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(".vbuild-tmp"))
        })
        .map(|e| e.path().to_path_buf())
        .collect()
}
