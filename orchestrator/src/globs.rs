//! Source globs and output declarations of one target, relative to its package.
use globset::{Glob, GlobSet, GlobSetBuilder};

/// What `outs` declares, package-relative and normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutSpec {
    /// `dist/`: the whole directory.
    Dir(String),
    /// `out.txt`: one file (or symlink).
    File(String),
    /// `*.js`, `lib/**/*.d.ts`: every file that matches.
    Glob(String),
}

impl OutSpec {
    pub fn parse(text: &str) -> Result<OutSpec, &'static str> {
        let (path, is_dir) = normalize(text)?;
        Ok(if is_dir {
            OutSpec::Dir(path)
        } else if is_glob(&path) {
            OutSpec::Glob(path)
        } else {
            OutSpec::File(path)
        })
    }

    /// Whether a package-relative file path falls under this declaration.
    pub fn covers(&self, path: &str, glob: Option<&globset::GlobMatcher>) -> bool {
        match self {
            OutSpec::Dir(dir) => path
                .strip_prefix(dir.as_str())
                .is_some_and(|r| r.starts_with('/')),
            OutSpec::File(file) => path == file,
            OutSpec::Glob(_) => glob.is_some_and(|g| g.is_match(path)),
        }
    }

    pub fn text(&self) -> String {
        match self {
            OutSpec::Dir(d) => format!("{d}/"),
            OutSpec::File(p) | OutSpec::Glob(p) => p.clone(),
        }
    }
}

pub fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '[', '{'])
}

/// Normalizes a package-relative path or pattern: strips `./`, refuses
/// absolute paths and `..`. Returns the path and whether it ended in `/`.
pub fn normalize(text: &str) -> Result<(String, bool), &'static str> {
    let is_dir = text.ends_with('/');
    if text.starts_with('/') {
        return Err("absolute paths are not allowed; write it relative to the package");
    }
    let mut parts = Vec::new();
    for seg in text.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err("`..` would leave the package"),
            s if s.contains('\\') => return Err("use `/` as the path separator"),
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return Err("the path is empty; use `**` for every file of the package");
    }
    Ok((parts.join("/"), is_dir))
}

/// A target's `srcs`, compiled. Cheap to clone (shared): targets with the
/// same patterns share one compiled matcher (see `workspace::load`), since
/// compiling a `GlobSet` costs far more than matching with it.
///
/// A file inside a hidden directory (`.vitepress/config.ts`) matches only a
/// pattern that names that directory literally (`.vitepress/**`): `**`
/// never reaches into hidden directories, as in the package listing.
#[derive(Clone, Debug)]
pub struct SrcMatcher {
    sets: std::sync::Arc<Sets>,
}

#[derive(Debug)]
struct Sets {
    include: GlobSet,
    exclude: GlobSet,
    /// Patterns naming hidden directories: the hidden names, the matcher.
    hidden: Vec<(Vec<String>, globset::GlobMatcher)>,
    /// The inclusion patterns as written, in the order of `include`'s
    /// indexes then `hidden`'s (for "matches no file").
    patterns: Vec<String>,
}

/// The hidden directory names (`.vitepress`) a path or pattern goes through
/// (its last segment is a file name, `.babelrc` is not a directory).
fn hidden_dirs(path: &str) -> impl Iterator<Item = &str> {
    let dirs = path.rsplit_once('/').map_or("", |(d, _)| d);
    dirs.split('/')
        .filter(|s| s.starts_with('.') && s.len() > 1)
}

/// Whether a package-relative path lies inside a hidden directory.
pub fn in_hidden_dir(path: &str) -> bool {
    hidden_dirs(path).next().is_some()
}

/// The directory to list for a pattern that names a hidden directory
/// literally (`docs/.vitepress/**` → `docs/.vitepress`), if any: the
/// literal prefix up to its last hidden segment.
pub fn hidden_root(pattern: &str) -> Option<String> {
    let segs: Vec<&str> = pattern.split('/').collect();
    let literal = segs.iter().take_while(|s| !is_glob(s)).count();
    // A fully literal pattern's last segment is the file itself.
    let dirs = if literal == segs.len() {
        literal - 1
    } else {
        literal
    };
    let last = segs[..dirs]
        .iter()
        .rposition(|s| s.starts_with('.') && s.len() > 1)?;
    if segs[..=last].contains(&"node_modules") {
        return None;
    }
    Some(segs[..=last].join("/"))
}

impl SrcMatcher {
    /// `patterns` are already normalized; `!` marks an exclusion; a
    /// trailing `/` (already turned into `dir/**`) means the whole directory.
    pub fn new(patterns: &[(bool, String)]) -> Result<SrcMatcher, globset::Error> {
        let mut include = GlobSetBuilder::new();
        let mut exclude = GlobSetBuilder::new();
        let mut hidden = Vec::new();
        let mut plain = Vec::new();
        for (negated, pattern) in patterns {
            let glob = glob(pattern)?;
            if *negated {
                exclude.add(glob);
            } else if in_hidden_dir(pattern) {
                let names = hidden_dirs(pattern)
                    .filter(|s| !is_glob(s))
                    .map(str::to_string);
                hidden.push((names.collect(), glob.compile_matcher()));
            } else {
                plain.push(pattern.clone());
                include.add(glob);
            }
        }
        let hidden_patterns = patterns
            .iter()
            .filter(|(neg, p)| !neg && in_hidden_dir(p))
            .map(|(_, p)| p.clone());
        plain.extend(hidden_patterns);
        Ok(SrcMatcher {
            sets: std::sync::Arc::new(Sets {
                include: include.build()?,
                exclude: exclude.build()?,
                hidden,
                patterns: plain,
            }),
        })
    }

    pub fn matches(&self, path: &str) -> bool {
        let s = &*self.sets;
        // One candidate (the path split into name and extension) for every
        // set: each `is_match(path)` builds its own, once per file per target.
        let c = globset::Candidate::new(path);
        let included = if in_hidden_dir(path) {
            s.hidden.iter().any(|(names, g)| {
                hidden_dirs(path).all(|d| names.iter().any(|n| n == d)) && g.is_match_candidate(&c)
            })
        } else {
            s.include.is_match_candidate(&c)
        };
        included && !s.exclude.is_match_candidate(&c)
    }

    /// The inclusion patterns that match none of `paths` (the files a
    /// target's srcs resolved to). Stops looking once every pattern matched.
    pub fn unmatched<'a>(&self, paths: impl Iterator<Item = &'a str>) -> Vec<String> {
        let s = &*self.sets;
        let plain = s.include.len();
        let mut seen = vec![false; s.patterns.len()];
        let mut left = seen.len();
        let mut hits = Vec::new();
        for path in paths {
            if left == 0 {
                break;
            }
            if in_hidden_dir(path) {
                for (i, (_, g)) in s.hidden.iter().enumerate() {
                    if !seen[plain + i] && g.is_match(path) {
                        seen[plain + i] = true;
                        left -= 1;
                    }
                }
                continue;
            }
            s.include.matches_into(path, &mut hits);
            for &i in &hits {
                if !seen[i] {
                    seen[i] = true;
                    left -= 1;
                }
            }
        }
        s.patterns
            .iter()
            .zip(seen)
            .filter(|(_, seen)| !seen)
            .map(|(p, _)| p.clone())
            .collect()
    }
}

/// One glob as srcs and outs use it: `*` stays within a path segment (as
/// in a shell), `**` crosses directories.
pub fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
}

pub fn out_glob(pattern: &str) -> Result<globset::GlobMatcher, globset::Error> {
    Ok(glob(pattern)?.compile_matcher())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_specs() {
        assert_eq!(
            OutSpec::parse("dist/").unwrap(),
            OutSpec::Dir("dist".into())
        );
        assert_eq!(
            OutSpec::parse("./a/b.txt").unwrap(),
            OutSpec::File("a/b.txt".into())
        );
        assert_eq!(
            OutSpec::parse("*.js").unwrap(),
            OutSpec::Glob("*.js".into())
        );
        assert!(OutSpec::parse("../x").is_err());
        assert!(OutSpec::parse("/etc/passwd").is_err());
    }

    #[test]
    fn src_excludes() {
        let m = SrcMatcher::new(&[(false, "src/**".into()), (true, "src/**/*.test.ts".into())])
            .unwrap();
        assert!(m.matches("src/a.ts"));
        assert!(!m.matches("src/x/a.test.ts"));
        assert!(!m.matches("other.ts"));
        let shallow = SrcMatcher::new(&[(false, "*.ts".into())]).unwrap();
        assert!(shallow.matches("a.ts") && !shallow.matches("src/a.ts"));
    }

    #[test]
    fn hidden_directories_only_when_named() {
        let m =
            SrcMatcher::new(&[(false, "**".into()), (false, "docs/.vitepress/**".into())]).unwrap();
        assert!(m.matches("docs/.vitepress/config.ts"));
        assert!(m.matches(".babelrc"));
        assert!(!m.matches(".git/config"));
        assert!(!m.matches("docs/.vitepress/.cache/x"));
        assert_eq!(
            hidden_root("docs/.vitepress/**"),
            Some("docs/.vitepress".into())
        );
        assert_eq!(
            hidden_root(".vitepress/config.ts"),
            Some(".vitepress".into())
        );
        assert_eq!(hidden_root(".eslintrc.js"), None);
        assert_eq!(hidden_root("*/.x/**"), None);
        assert_eq!(
            m.unmatched(["a.ts"].into_iter()),
            vec!["docs/.vitepress/**".to_string()]
        );
        assert!(m
            .unmatched(["a.ts", "docs/.vitepress/c.ts"].into_iter())
            .is_empty());
    }
}
