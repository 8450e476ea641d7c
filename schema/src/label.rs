//! Labels (`//pkg/path:target`) and patterns (`//...`, `//pkg/...`).
//!
//! A package path is workspace-relative, '/'-separated, without leading or
//! trailing '/'; the root package is the empty string (`//:target`).
use std::fmt;

/// One target: package path plus target name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub package: String,
    pub name: String,
}

impl Label {
    /// `//package:name` as a String, sized up front (what `to_string`
    /// gives, without the formatting machinery: keys spell every dep's
    /// label on every run).
    pub fn text(&self) -> String {
        let mut s = String::with_capacity(3 + self.package.len() + self.name.len());
        s.push_str("//");
        s.push_str(&self.package);
        s.push(':');
        s.push_str(&self.name);
        s
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "//{}:{}", self.package, self.name)
    }
}

/// What a command line or a `deps` entry may name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Exactly one target.
    Target(Label),
    /// `//pkg:all` or `//pkg:*`: every target of one package.
    Package(String),
    /// `//pkg/...`: every target at or below a package path (`//...` = all).
    Recursive(String),
    /// `build`, `//...:build`, `//pkg/...:build`: the target of that name in
    /// every package at or below a path (`turbo build`, `nx run-many -t build`).
    Named { prefix: String, name: String },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("invalid label {label:?}: {why}")]
    Invalid { label: String, why: &'static str },
}

fn invalid(label: &str, why: &'static str) -> LabelError {
    LabelError::Invalid {
        label: label.to_string(),
        why,
    }
}

/// Target names: letters, digits and `_ - . +`; no '/' so labels stay unambiguous.
pub fn valid_target_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.+".contains(c))
}

fn valid_package_path(path: &str) -> bool {
    path.is_empty()
        || path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && !seg.contains(':')
                && !seg.contains('\\')
        })
}

impl Label {
    /// Parses a label; `current` is the package of the file or directory the
    /// label is written in (for `:target` and `target` forms).
    pub fn parse(text: &str, current: Option<&str>) -> Result<Label, LabelError> {
        if !text.starts_with("//") && !text.starts_with(':') {
            return Err(invalid(
                text,
                "labels start with // (absolute) or : (relative)",
            ));
        }
        match Pattern::parse(text, current)? {
            Pattern::Target(label) => Ok(label),
            _ => Err(invalid(
                text,
                "a pattern is not allowed here; name one target",
            )),
        }
    }
}

impl Pattern {
    pub fn parse(text: &str, current: Option<&str>) -> Result<Pattern, LabelError> {
        let (package, target) = if let Some(rest) = text.strip_prefix("//") {
            match rest.split_once(':') {
                Some((pkg, target)) => (pkg.to_string(), Some(target)),
                None => (rest.to_string(), None),
            }
        } else if let Some(target) = text.strip_prefix(':') {
            let pkg = current.ok_or_else(|| {
                invalid(text, "a relative label needs a package: run it from inside a package or write //pkg:target")
            })?;
            (pkg.to_string(), Some(target))
        } else if valid_target_name(text) {
            // A bare name: that target in every package.
            return Ok(Pattern::Named {
                prefix: String::new(),
                name: text.to_string(),
            });
        } else {
            return Err(invalid(
                text,
                "labels start with // (absolute) or : (relative); a bare name such as `build` means that target in every package",
            ));
        };
        if let Some(prefix) = package.strip_suffix("...") {
            let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
            if !valid_package_path(prefix) {
                return Err(invalid(
                    text,
                    "the package path has an empty, '.' or '..' segment",
                ));
            }
            return match target {
                None | Some("all") | Some("*") => Ok(Pattern::Recursive(prefix.to_string())),
                Some(name) if valid_target_name(name) => Ok(Pattern::Named {
                    prefix: prefix.to_string(),
                    name: name.to_string(),
                }),
                Some(_) => Err(invalid(
                    text,
                    "target names use letters, digits and _ - . + only",
                )),
            };
        }
        if !valid_package_path(&package) {
            return Err(invalid(
                text,
                "the package path has an empty, '.' or '..' segment",
            ));
        }
        let name = match target {
            Some("all") | Some("*") => return Ok(Pattern::Package(package)),
            Some(name) => name.to_string(),
            // `//pkg/path` means `//pkg/path:path`.
            None => match package.rsplit('/').next() {
                Some(last) if !last.is_empty() => last.to_string(),
                _ => {
                    return Err(invalid(
                        text,
                        "`//` alone names no target; use //... or //:target",
                    ))
                }
            },
        };
        if !valid_target_name(&name) {
            return Err(invalid(
                text,
                "target names use letters, digits and _ - . + only",
            ));
        }
        Ok(Pattern::Target(Label { package, name }))
    }

    /// Whether `label` is selected by this pattern.
    pub fn matches(&self, label: &Label) -> bool {
        let under = |prefix: &str| {
            prefix.is_empty()
                || label.package == *prefix
                || label
                    .package
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        match self {
            Pattern::Target(l) => l == label,
            Pattern::Package(p) => &label.package == p,
            Pattern::Recursive(prefix) => under(prefix),
            Pattern::Named { prefix, name } => label.name == *name && under(prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(p: &str, n: &str) -> Label {
        Label {
            package: p.into(),
            name: n.into(),
        }
    }

    #[test]
    fn parses_forms() {
        assert_eq!(
            Label::parse("//app:build", None).unwrap(),
            label("app", "build")
        );
        assert_eq!(Label::parse("//a/b/c", None).unwrap(), label("a/b/c", "c"));
        assert_eq!(Label::parse(":t", Some("x/y")).unwrap(), label("x/y", "t"));
        assert_eq!(Label::parse("//:root", None).unwrap(), label("", "root"));
        assert_eq!(
            Pattern::parse("//...", None).unwrap(),
            Pattern::Recursive(String::new())
        );
        assert_eq!(
            Pattern::parse("//pkg/...", None).unwrap(),
            Pattern::Recursive("pkg".into())
        );
        assert_eq!(
            Pattern::parse("//pkg:all", None).unwrap(),
            Pattern::Package("pkg".into())
        );
    }

    #[test]
    fn rejects_bad_labels() {
        for bad in [
            "app:build",
            "//../x:y",
            "//a//b:c",
            "//a:b/c",
            "//",
            ":x",
            "//a/...:b/c",
            "a/b",
        ] {
            assert!(
                Pattern::parse(bad, None).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn named_targets_across_packages() {
        let build = Pattern::parse("build", None).unwrap();
        assert_eq!(
            build,
            Pattern::Named {
                prefix: String::new(),
                name: "build".into()
            }
        );
        assert_eq!(Pattern::parse("//...:build", None).unwrap(), build);
        let under = Pattern::parse("//apps/...:build", None).unwrap();
        assert!(under.matches(&label("apps/web", "build")));
        assert!(!under.matches(&label("apps/web", "test")));
        assert!(!under.matches(&label("libs/a", "build")));
        assert!(build.matches(&label("", "build")));
        // In deps a bare name is still not a label.
        assert!(Label::parse("build", Some("x")).is_err());
        assert!(Label::parse("//...:build", None).is_err());
    }

    #[test]
    fn recursive_matches_by_segment() {
        let p = Pattern::parse("//pkg/...", None).unwrap();
        assert!(p.matches(&label("pkg", "a")));
        assert!(p.matches(&label("pkg/sub", "a")));
        assert!(!p.matches(&label("pkg2", "a")));
    }
}
