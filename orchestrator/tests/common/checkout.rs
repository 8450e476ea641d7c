//! Checkouts for the remote cache tests: copies of a workspace at their
//! own paths, each with its own empty local store.
use super::{run_with, Out};
use std::path::Path;

/// A checkout: a copy of a workspace at its own path with its own, empty
/// local store.
pub struct Checkout {
    pub dir: tempfile::TempDir,
    pub cache: tempfile::TempDir,
}

impl Checkout {
    pub fn of(src: &Path) -> Checkout {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(src, dir.path());
        Checkout {
            dir,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    pub fn basic() -> Checkout {
        Checkout::of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/basic"))
    }

    pub fn files(files: &[(&str, &str)]) -> Checkout {
        let ws = Checkout {
            dir: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        };
        ws.write(
            "vbuild.toml",
            // Only namespace-sandboxed results are uploaded (issue 14).
            "[workspace]\nname = \"test\"\nsandbox = \"namespaces\"\n",
        );
        for (p, c) in files {
            ws.write(p, c);
        }
        ws
    }

    /// Six packages `p0`..`p5`, each depending on the one before and
    /// sleeping `secs` before writing `out.txt`: a build slow enough for a
    /// test to kill the remote while it runs.
    pub fn slow_chain(secs: &str) -> Checkout {
        let files: Vec<(String, String)> = (0..6)
            .map(|i| {
                let deps = if i == 0 {
                    String::new()
                } else {
                    format!("deps = [\"//p{}:build\"]\n", i - 1)
                };
                (
                    format!("p{i}/BUILD.toml"),
                    format!(
                        "[target.build]\ncommand = \"sleep {secs}; echo {i} > out.txt\"\nouts = [\"out.txt\"]\n{deps}"
                    ),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        Checkout::files(&refs)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, contents: &str) {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }

    pub fn append(&self, rel: &str, text: &str) {
        let p = self.root().join(rel);
        let mut s = std::fs::read_to_string(&p).unwrap();
        s.push_str(text);
        std::fs::write(p, s).unwrap();
    }

    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut full = vec!["run", "-j1"];
        full.extend_from_slice(args);
        run_with(self.root(), self.cache.path(), &full, env)
    }

    pub fn vbuild(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        run_with(self.root(), self.cache.path(), args, env)
    }

    /// Whether the local store holds a blob with these bytes.
    pub fn store_has(&self, bytes: &[u8]) -> bool {
        let h = blake3::hash(bytes).to_hex();
        self.cache
            .path()
            .join("cas")
            .join(&h[..1])
            .join(&h[1..])
            .exists()
    }

    /// Every file and symlink under the workspace except the vbuild files:
    /// path → (contents or link target, executable).
    pub fn snapshot(&self, dirs: &[&str]) -> Vec<(String, String, bool)> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = vec![];
        for d in dirs {
            for e in walkdir::WalkDir::new(self.root().join(d)).sort_by_file_name() {
                let e = e.unwrap();
                let rel = e
                    .path()
                    .strip_prefix(self.root())
                    .unwrap()
                    .display()
                    .to_string();
                let meta = e.path().symlink_metadata().unwrap();
                if meta.file_type().is_symlink() {
                    let t = std::fs::read_link(e.path()).unwrap();
                    out.push((rel, format!("-> {}", t.display()), false));
                } else if meta.is_file() {
                    let bytes = std::fs::read(e.path()).unwrap();
                    out.push((
                        rel,
                        String::from_utf8_lossy(&bytes).into_owned(),
                        meta.permissions().mode() & 0o111 != 0,
                    ));
                }
            }
        }
        out
    }
}

pub fn copy_tree(src: &Path, dst: &Path) {
    for e in walkdir::WalkDir::new(src) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(src).unwrap();
        // Build outputs of a previous run in the source tree are not copied.
        if rel
            .components()
            .any(|c| c.as_os_str() == "out" || c.as_os_str() == "dist")
        {
            continue;
        }
        let to = dst.join(rel);
        let ft = e.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &to).unwrap();
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// The output folders of examples/basic.
pub const BASIC_OUTPUTS: &[&str] = &["libs/words/out", "libs/greeting/dist", "app/dist"];

/// `vbuild run //...` of examples/basic restored entirely from a remote.
pub const BASIC_REMOTE_HITS: [&str; 4] = [
    "hit (remote) //libs/words:build",
    "hit (remote) //libs/greeting:build",
    "hit (remote) //app:build",
    "hit (remote) //app:test",
];
