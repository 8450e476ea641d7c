//! Bounds on everything a tool can make vbuild keep or compute. A tool is
//! untrusted input: without these, a few requests could make the runner
//! allocate gigabytes or spend minutes compiling a pattern.
//!
//! Going over a bound never makes a cache hit wrong: a dropped ignore only
//! makes more inputs count, a dropped `reportUsedInputs` makes every staged
//! input count, and a tracked read that cannot be kept disables caching of
//! the run rather than leaving it out of the key.

/// Longest path a request may carry (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest env name `getEnv` accepts.
pub const MAX_ENV_NAME_LEN: usize = 1024;
/// Longest `getEnvs` glob or prefix. Also what keeps glob compilation cheap.
pub const MAX_ENV_QUERY_LEN: usize = 1024;
/// `ignoreInput` / `ignoreOutput` paths kept per action, each.
pub const MAX_IGNORED: usize = 10_000;
/// Tracked env names per action (beyond it the run is not cached).
pub const MAX_TRACKED_ENV: usize = 4096;
/// Tracked `getEnvs` queries per action (beyond it the run is not cached).
pub const MAX_ENV_PATTERNS: usize = 256;
/// Paths a tool may report as used (beyond it the report is dropped and
/// every staged input counts).
pub const MAX_USED_INPUTS: usize = 200_000;
/// Bytes of names and paths kept per action, all kinds together.
pub const MAX_KEPT_BYTES: usize = 64 << 20;
/// Connections served at once per action; more get an `error` and are closed.
pub const MAX_CONNECTIONS: usize = 256;
/// Characters of a tool's text echoed in an error or warning.
pub const MAX_ECHO: usize = 120;

/// `text` for a message: at most [`MAX_ECHO`] characters, and the length
/// when cut, so a 500 KB path costs a line, not 500 KB.
pub fn excerpt(text: &str) -> String {
    if text.len() <= MAX_ECHO {
        return format!("{text:?}");
    }
    let cut: String = text.chars().take(MAX_ECHO).collect();
    format!("{cut:?}… ({} bytes)", text.len())
}
