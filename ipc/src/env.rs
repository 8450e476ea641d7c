//! Env lookups against vbuild's own environment, and how reads are recorded.
//!
//! The orchestrator needs the same recording rules at cache-lookup time (to
//! compare the current environment with a stored record), so they are public.
//!
//! What a tool can read (docs/tool-authors.md, "What a tool can read"):
//! - vbuild's own settings (`VBUILD_*`) and the remote cache credential
//!   variable are hidden: answered as unset, by name or by query;
//! - secret-named variables are returned to `getEnv` by exact name only,
//!   never to a glob or prefix query;
//! - every other variable of vbuild's environment is readable.
//!
//! A tracked value is recorded only as its BLAKE3 hash.

use std::collections::{BTreeMap, HashMap};
use std::io;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::declarations::EnvValue;
use crate::limits::{excerpt, MAX_ENV_QUERY_LEN};
use crate::protocol::EnvQuery;

/// Names of vbuild's own settings: never visible to a tool.
pub const HIDDEN_PREFIX: &str = "VBUILD_";

/// Decides which variable names are secrets (never handed out by a glob
/// or prefix query, never printed) and which are hidden from tools
/// altogether (vbuild's settings and credentials).
#[derive(Clone, Debug)]
pub struct SecretMatcher {
    set: GlobSet,
    /// Exact names hidden besides `VBUILD_*` (e.g. a `credentials_env`).
    hidden: Vec<String>,
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
        Ok(SecretMatcher {
            set,
            hidden: Vec::new(),
        })
    }

    /// Also hides these exact names from tools (credential variables).
    pub fn hide<S: AsRef<str>>(mut self, names: &[S]) -> SecretMatcher {
        self.hidden
            .extend(names.iter().map(|n| n.as_ref().to_owned()));
        self
    }

    pub fn is_secret(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    /// vbuild's own settings and credentials: a tool sees them as unset.
    pub fn is_hidden(&self, name: &str) -> bool {
        name.starts_with(HIDDEN_PREFIX) || self.hidden.iter().any(|h| h == name)
    }

    /// What a tool's `getEnv(name)` sees of `env`.
    pub fn visible<'e>(&self, env: &'e HashMap<String, String>, name: &str) -> Option<&'e str> {
        match self.is_hidden(name) {
            true => None,
            false => env.get(name).map(String::as_str),
        }
    }

    /// The record of a tracked read of `name` whose value is `value`: only
    /// ever a hash, whatever the name (a credential need not look like one).
    pub fn record(&self, _name: &str, value: Option<&str>) -> EnvValue {
        match value {
            None => EnvValue::Absent,
            Some(v) => EnvValue::Hashed(hash_secret(v)),
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
    Glob(GlobSet),
    Prefix(String),
}

impl EnvQueryMatcher {
    /// Globs are case-sensitive, like env names on Unix. Compiled through a
    /// `GlobSet`, whose build reports an oversized regex as an error where
    /// `Glob::compile_matcher` panics; the length bound keeps it cheap.
    pub fn new(query: &EnvQuery) -> Result<EnvQueryMatcher, String> {
        let text = match query {
            EnvQuery::Glob(t) | EnvQuery::Prefix(t) => t,
        };
        if text.len() > MAX_ENV_QUERY_LEN {
            return Err(format!(
                "query {} is longer than {MAX_ENV_QUERY_LEN} bytes",
                excerpt(text)
            ));
        }
        match query {
            EnvQuery::Glob(g) => Glob::new(g)
                .and_then(|g| GlobSetBuilder::new().add(g).build())
                .map(EnvQueryMatcher::Glob)
                .map_err(|e| format!("invalid env glob {}: {e}", excerpt(g))),
            EnvQuery::Prefix(p) => Ok(EnvQueryMatcher::Prefix(p.clone())),
        }
    }

    pub fn is_match(&self, name: &str) -> bool {
        match self {
            EnvQueryMatcher::Glob(g) => g.is_match(name),
            EnvQueryMatcher::Prefix(p) => name.starts_with(p.as_str()),
        }
    }

    /// What a tool's query sees: matching names that are neither hidden
    /// nor secret, sorted. The orchestrator re-runs queries through this at
    /// lookup, so the recorded name set and the current one agree.
    pub fn select_visible(
        &self,
        env: &HashMap<String, String>,
        policy: &SecretMatcher,
    ) -> BTreeMap<String, String> {
        env.iter()
            .filter(|(name, _)| {
                self.is_match(name) && !policy.is_hidden(name) && !policy.is_secret(name)
            })
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
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
        // Every value, not only secret-named ones: a credential such as
        // DATABASE_URL matches no pattern.
        assert_eq!(
            s.record("CI", Some("1")),
            EnvValue::Hashed(hash_secret("1"))
        );
    }

    #[test]
    fn queries_never_hand_out_secrets_or_vbuild_settings() {
        let env: HashMap<String, String> = [
            ("VITE_A", "1"),
            ("MY_API_TOKEN", "t"),
            ("VBUILD_REMOTE_CREDENTIALS", "c"),
            ("CACHE_CRED", "k"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let policy = SecretMatcher::new(&["*TOKEN*"])
            .unwrap()
            .hide(&["CACHE_CRED"]);
        let all = EnvQueryMatcher::new(&EnvQuery::Glob("*".into())).unwrap();
        assert_eq!(
            all.select_visible(&env, &policy).keys().collect::<Vec<_>>(),
            ["VITE_A"]
        );
        assert_eq!(policy.visible(&env, "MY_API_TOKEN"), Some("t"));
        assert_eq!(policy.visible(&env, "VBUILD_REMOTE_CREDENTIALS"), None);
        assert_eq!(policy.visible(&env, "CACHE_CRED"), None);
    }

    #[test]
    fn huge_or_pathological_globs_are_errors_not_panics() {
        let long = "a".repeat(500_000);
        assert!(EnvQueryMatcher::new(&EnvQuery::Glob(long.clone())).is_err());
        assert!(EnvQueryMatcher::new(&EnvQuery::Prefix(long)).is_err());
        // At the bound: compiles (or is refused) without panicking.
        let nested = "{a,".repeat(300) + &"}".repeat(300);
        let _ = EnvQueryMatcher::new(&EnvQuery::Glob(nested));
        let stars = "*a".repeat(MAX_ENV_QUERY_LEN / 2);
        let _ = EnvQueryMatcher::new(&EnvQuery::Glob(stars));
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
