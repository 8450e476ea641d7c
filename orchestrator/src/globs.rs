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
#[derive(Clone, Debug)]
pub struct SrcMatcher {
    sets: std::sync::Arc<(GlobSet, GlobSet)>,
}

impl SrcMatcher {
    /// `patterns` are already normalized; `!` marks an exclusion; a
    /// trailing `/` (already turned into `dir/**`) means the whole directory.
    pub fn new(patterns: &[(bool, String)]) -> Result<SrcMatcher, globset::Error> {
        let mut include = GlobSetBuilder::new();
        let mut exclude = GlobSetBuilder::new();
        for (negated, pattern) in patterns {
            let glob = glob(pattern)?;
            if *negated {
                exclude.add(glob);
            } else {
                include.add(glob);
            }
        }
        Ok(SrcMatcher {
            sets: std::sync::Arc::new((include.build()?, exclude.build()?)),
        })
    }

    pub fn matches(&self, path: &str) -> bool {
        let (include, exclude) = &*self.sets;
        include.is_match(path) && !exclude.is_match(path)
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
}
