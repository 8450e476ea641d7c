//! `Tree`: a canonical, sorted manifest of files and symlinks, stored as a blob.
//!
//! Canonical bytes are the compact JSON of `{"version":1,"entries":[...]}`
//! with entries sorted bytewise by path; each entry is
//! `{"path":…,"kind":"file","digest":…,"size":…,"executable":…}` or
//! `{"path":…,"kind":"symlink","target":…}`. serde_json writes struct fields
//! in declaration order with no whitespace, so equal trees give equal bytes.
//! `from_bytes` accepts only bytes that re-encode to themselves, so a tree
//! blob has exactly one encoding (its digest identifies the tree).
use crate::Digest;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Version written in the header of the canonical encoding.
pub const TREE_FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EntryKind {
    File {
        digest: Digest,
        size: u64,
        executable: bool,
    },
    Symlink {
        target: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// Relative, '/'-separated, normalized: no leading '/', no '.', '..' or
    /// empty components.
    pub path: String,
    #[serde(flatten)]
    pub kind: EntryKind,
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("tree path {0:?} is not a normalized relative path")]
    BadPath(String),
    #[error("tree path {0:?} appears twice")]
    Duplicate(String),
    #[error("tree path {0:?} is both a file and a directory")]
    FileIsDir(String),
    #[error("tree manifest is malformed: {0}")]
    Malformed(String),
}

/// Sorted by path (bytewise), unique, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    entries: Vec<TreeEntry>,
}

/// The encoded form; borrowed for writing, owned for reading.
#[derive(Serialize)]
struct Encoded<'a> {
    version: u32,
    entries: &'a [TreeEntry],
}

#[derive(Deserialize)]
struct Decoded {
    version: u32,
    entries: Vec<TreeEntry>,
}

impl Tree {
    /// Sorts and validates. Also rejects a path that is a prefix directory of another.
    pub fn new(mut entries: Vec<TreeEntry>) -> Result<Tree, TreeError> {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        validate_sorted(&entries)?;
        Ok(Tree { entries })
    }

    pub fn entries(&self) -> &[TreeEntry] {
        &self.entries
    }

    pub fn into_entries(self) -> Vec<TreeEntry> {
        self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at exactly `path` (binary search: entries are sorted).
    pub fn get(&self, path: &str) -> Option<&TreeEntry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Canonical bytes: versioned, deterministic (same entries → same bytes).
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        let encoded = Encoded {
            version: TREE_FORMAT_VERSION,
            entries: &self.entries,
        };
        // Only strings, integers and bools into a Vec: cannot fail.
        serde_json::to_vec(&encoded).expect("serializing a tree to memory cannot fail")
    }

    /// Parses and validates (untrusted input: same checks as `new`, and must
    /// already be in canonical order).
    pub fn from_bytes(bytes: &[u8]) -> Result<Tree, TreeError> {
        let decoded: Decoded =
            serde_json::from_slice(bytes).map_err(|e| TreeError::Malformed(e.to_string()))?;
        if decoded.version != TREE_FORMAT_VERSION {
            return Err(TreeError::Malformed(format!(
                "unsupported tree format version {} (this vbuild reads {TREE_FORMAT_VERSION})",
                decoded.version
            )));
        }
        for pair in decoded.entries.windows(2) {
            if pair[0].path > pair[1].path {
                return Err(TreeError::Malformed(format!(
                    "entries not in canonical order: {:?} before {:?}",
                    pair[0].path, pair[1].path
                )));
            }
        }
        validate_sorted(&decoded.entries)?;
        let tree = Tree {
            entries: decoded.entries,
        };
        // Reject any other spelling of the same tree (whitespace, key order,
        // unknown fields, escapes) so one tree has one digest.
        if tree.to_canonical_bytes() != bytes {
            return Err(TreeError::Malformed("not in canonical encoding".into()));
        }
        Ok(tree)
    }

    pub fn digest(&self) -> Digest {
        Digest::of_bytes(&self.to_canonical_bytes())
    }

    /// Checks one path: relative, '/'-separated, no empty, '.' or '..'
    /// components, no NUL. Exposed so callers can vet paths before building.
    pub fn validate_path(path: &str) -> Result<(), TreeError> {
        let bad = path.is_empty()
            || path.contains('\0')
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..");
        if bad {
            Err(TreeError::BadPath(path.to_string()))
        } else {
            Ok(())
        }
    }
}

/// Validates entries already sorted by path: paths, symlink targets,
/// duplicates, and a file (or symlink) that another entry uses as a directory.
fn validate_sorted(entries: &[TreeEntry]) -> Result<(), TreeError> {
    for e in entries {
        Tree::validate_path(&e.path)?;
        if let EntryKind::Symlink { target } = &e.kind {
            // The orchestrator confines targets; here only what no target can be.
            if target.is_empty() || target.contains('\0') {
                return Err(TreeError::Malformed(format!(
                    "symlink {:?} has an empty target or one containing NUL",
                    e.path
                )));
            }
        }
    }
    for pair in entries.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(TreeError::Duplicate(pair[0].path.clone()));
        }
    }
    // "a" and "a/b" are not adjacent in bytewise order ("a-b" sorts between
    // them), so check every ancestor of every path against the set of paths.
    let paths: HashSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for e in entries {
        for (i, _) in e.path.match_indices('/') {
            let ancestor = &e.path[..i];
            if paths.contains(ancestor) {
                return Err(TreeError::FileIsDir(ancestor.to_string()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &[u8]) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            kind: EntryKind::File {
                digest: Digest::of_bytes(content),
                size: content.len() as u64,
                executable: false,
            },
        }
    }

    fn link(path: &str, target: &str) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            kind: EntryKind::Symlink {
                target: target.into(),
            },
        }
    }

    #[test]
    fn sorts_and_round_trips() {
        let t = Tree::new(vec![file("b", b"2"), file("a/x", b"1"), link("a-b", "a/x")]).unwrap();
        let paths: Vec<_> = t.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a-b", "a/x", "b"]);
        let bytes = t.to_canonical_bytes();
        assert!(bytes.starts_with(b"{\"version\":1,\"entries\":["));
        let back = Tree::from_bytes(&bytes).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.digest(), t.digest());
        assert!(t.get("a/x").is_some());
        assert!(t.get("a").is_none());
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn canonical_bytes_are_stable() {
        let a = Tree::new(vec![file("z", b"z"), file("y", b"y")]).unwrap();
        let b = Tree::new(vec![file("y", b"y"), file("z", b"z")]).unwrap();
        assert_eq!(a.to_canonical_bytes(), b.to_canonical_bytes());
        // Pin the exact encoding: changing it changes every action key.
        let t = Tree::new(vec![
            TreeEntry {
                path: "bin/tool".into(),
                kind: EntryKind::File {
                    digest: Digest([0xab; 32]),
                    size: 3,
                    executable: true,
                },
            },
            link("lib", "bin"),
        ])
        .unwrap();
        let expected = format!(
            "{{\"version\":1,\"entries\":[{{\"path\":\"bin/tool\",\"kind\":\"file\",\"digest\":\"{}\",\"size\":3,\"executable\":true}},{{\"path\":\"lib\",\"kind\":\"symlink\",\"target\":\"bin\"}}]}}",
            "ab".repeat(32)
        );
        assert_eq!(String::from_utf8(t.to_canonical_bytes()).unwrap(), expected);
        assert_eq!(
            Tree::default().to_canonical_bytes(),
            b"{\"version\":1,\"entries\":[]}"
        );
    }

    #[test]
    fn rejects_bad_paths() {
        for p in [
            "../x", "/abs", "a//b", "a/./b", "a/..", ".", "", "a/", "a\0b",
        ] {
            let err = Tree::new(vec![file(p, b"")]).unwrap_err();
            assert!(matches!(err, TreeError::BadPath(_)), "{p:?}: {err}");
        }
        Tree::new(vec![file("a b/.hidden/c..d", b"")]).unwrap();
    }

    #[test]
    fn rejects_duplicates_and_file_dir_conflicts() {
        let err = Tree::new(vec![file("a", b"1"), file("a", b"2")]).unwrap_err();
        assert!(matches!(err, TreeError::Duplicate(p) if p == "a"));
        let err = Tree::new(vec![file("a", b""), file("a-b", b""), file("a/b", b"")]).unwrap_err();
        assert!(matches!(err, TreeError::FileIsDir(p) if p == "a"));
        let err = Tree::new(vec![link("x/y", "t"), file("x/y/z/w", b"")]).unwrap_err();
        assert!(matches!(err, TreeError::FileIsDir(p) if p == "x/y"));
    }

    #[test]
    fn rejects_bad_symlink_targets() {
        for t in ["", "a\0b"] {
            assert!(matches!(
                Tree::new(vec![link("l", t)]),
                Err(TreeError::Malformed(_))
            ));
        }
        // Targets are stored as given; confinement is the orchestrator's job.
        Tree::new(vec![link("l", "../../etc")]).unwrap();
    }

    #[test]
    fn from_bytes_rejects_untrusted_variants() {
        let t = Tree::new(vec![file("a", b"1"), file("b", b"2")]).unwrap();
        let good = String::from_utf8(t.to_canonical_bytes()).unwrap();
        let da = Digest::of_bytes(b"1").to_hex();
        let db = Digest::of_bytes(b"2").to_hex();
        let entry = |p: &str, d: &str| {
            format!("{{\"path\":\"{p}\",\"kind\":\"file\",\"digest\":\"{d}\",\"size\":1,\"executable\":false}}")
        };
        // Wrong order.
        let swapped = format!(
            "{{\"version\":1,\"entries\":[{},{}]}}",
            entry("b", &db),
            entry("a", &da)
        );
        assert!(matches!(
            Tree::from_bytes(swapped.as_bytes()),
            Err(TreeError::Malformed(_))
        ));
        // Duplicate.
        let dup = format!(
            "{{\"version\":1,\"entries\":[{},{}]}}",
            entry("a", &da),
            entry("a", &da)
        );
        assert!(matches!(
            Tree::from_bytes(dup.as_bytes()),
            Err(TreeError::Duplicate(_))
        ));
        // Bad path and file/dir conflict.
        let bad = format!("{{\"version\":1,\"entries\":[{}]}}", entry("../x", &da));
        assert!(matches!(
            Tree::from_bytes(bad.as_bytes()),
            Err(TreeError::BadPath(_))
        ));
        let conflict = format!(
            "{{\"version\":1,\"entries\":[{},{}]}}",
            entry("a", &da),
            entry("a/b", &db)
        );
        assert!(matches!(
            Tree::from_bytes(conflict.as_bytes()),
            Err(TreeError::FileIsDir(_))
        ));
        // Same tree, non-canonical spelling.
        let spaced = good.replace(",\"entries\"", ", \"entries\"");
        assert!(matches!(
            Tree::from_bytes(spaced.as_bytes()),
            Err(TreeError::Malformed(_))
        ));
        let upper = good.replace(&da, &da.to_uppercase());
        assert!(Tree::from_bytes(upper.as_bytes()).is_err());
        // Other version, bad digest, garbage.
        let v2 = good.replace("\"version\":1", "\"version\":2");
        assert!(matches!(
            Tree::from_bytes(v2.as_bytes()),
            Err(TreeError::Malformed(_))
        ));
        let short = good.replace(&da, &da[..60]);
        assert!(matches!(
            Tree::from_bytes(short.as_bytes()),
            Err(TreeError::Malformed(_))
        ));
        assert!(matches!(
            Tree::from_bytes(b"\xff\x00"),
            Err(TreeError::Malformed(_))
        ));
        assert_eq!(Tree::from_bytes(good.as_bytes()).unwrap(), t);
    }
}
