//! Env lookups against vbuild's own environment, and how reads are recorded.
//!
//! The orchestrator needs the same recording rules at cache-lookup time (to
//! compare the current environment with a stored record), so they are public.

use std::collections::{BTreeMap, HashMap};
use std::io;

use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

use crate::declarations::EnvValue;
use crate::protocol::EnvQuery;

/// Decides which variable names are secrets, whose values are only ever
/// recorded as a hash.
#[derive(Clone, Debug)]
pub struct SecretMatcher {
    set: GlobSet,
}

impl SecretMatcher {
    /// Matching is case-insensitive: `*_token` in a config should still
    /// catch `NPM_TOKEN`, and hashing one value too many is harmless.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> io::Result<SecretMatcher> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let glob = GlobBuilder::new(pattern.as_ref())
                .case_insensitive(true)
                .build()
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("secret pattern {:?}: {e}", pattern.as_ref()),
                    )
                })?;
            builder.add(glob);
        }
        let set = builder
            .build()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(SecretMatcher { set })
    }

    pub fn is_secret(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    /// The record of a tracked read of `name` whose value is `value`.
    pub fn record(&self, name: &str, value: Option<&str>) -> EnvValue {
        match value {
            None => EnvValue::Absent,
            Some(v) if self.is_secret(name) => EnvValue::Hashed(hash_secret(v)),
            Some(v) => EnvValue::Value(v.to_owned()),
        }
    }
}

/// BLAKE3 of the value's bytes, lowercase hex.
pub fn hash_secret(value: &str) -> String {
    blake3::hash(value.as_bytes()).to_hex().to_string()
}

/// A compiled [`EnvQuery`].
#[derive(Clone, Debug)]
pub enum EnvQueryMatcher {
    Glob(GlobMatcher),
    Prefix(String),
}

impl EnvQueryMatcher {
    /// Globs are case-sensitive, like env names on Unix.
    pub fn new(query: &EnvQuery) -> Result<EnvQueryMatcher, String> {
        match query {
            EnvQuery::Glob(g) => Glob::new(g)
                .map(|g| EnvQueryMatcher::Glob(g.compile_matcher()))
                .map_err(|e| format!("invalid env glob {g:?}: {e}")),
            EnvQuery::Prefix(p) => Ok(EnvQueryMatcher::Prefix(p.clone())),
        }
    }

    pub fn is_match(&self, name: &str) -> bool {
        match self {
            EnvQueryMatcher::Glob(g) => g.is_match(name),
            EnvQueryMatcher::Prefix(p) => name.starts_with(p.as_str()),
        }
    }

    /// Every entry of `env` whose name matches, sorted by name.
    pub fn select(&self, env: &HashMap<String, String>) -> BTreeMap<String, String> {
        env.iter()
            .filter(|(name, _)| self.is_match(name))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hashed_and_absence_is_kept() {
        let s = SecretMatcher::new(&["*_TOKEN", "*SECRET*"]).unwrap();
        assert_eq!(s.record("NPM_TOKEN", None), EnvValue::Absent);
        assert_eq!(
            s.record("npm_token", Some("abc")),
            EnvValue::Hashed(blake3::hash(b"abc").to_hex().to_string())
        );
        assert_eq!(
            s.record("MY_SECRET_X", Some("abc")),
            EnvValue::Hashed(hash_secret("abc"))
        );
        assert_eq!(s.record("CI", Some("1")), EnvValue::Value("1".into()));
    }

    #[test]
    fn bad_secret_pattern_is_an_error() {
        assert!(SecretMatcher::new(&["[unclosed"]).is_err());
    }

    #[test]
    fn queries_select_by_glob_and_prefix() {
        let env: HashMap<String, String> = [("VITE_A", "1"), ("VITE_B", "2"), ("OTHER", "3")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        let glob = EnvQueryMatcher::new(&EnvQuery::Glob("VITE_*".into())).unwrap();
        assert_eq!(glob.select(&env).len(), 2);
        let prefix = EnvQueryMatcher::new(&EnvQuery::Prefix("OTH".into())).unwrap();
        assert_eq!(prefix.select(&env).keys().collect::<Vec<_>>(), ["OTHER"]);
        // A prefix is literal: glob metacharacters mean nothing.
        let literal = EnvQueryMatcher::new(&EnvQuery::Prefix("VITE_*".into())).unwrap();
        assert!(literal.select(&env).is_empty());
        assert!(EnvQueryMatcher::new(&EnvQuery::Glob("[".into())).is_err());
    }
}
