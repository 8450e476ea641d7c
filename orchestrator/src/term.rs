//! The terminal conventions vbuild follows for its own output, and what it
//! tells actions (docs/guide.md, "Colour and terminals").
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

/// How often a non-terminal run prints `running //x (30s)` for an action
/// still running; `VBUILD_RUNNING_NOTICE` (e.g. `10s`, `0` for never)
/// changes it.
const RUNNING_NOTICE: Duration = Duration::from_secs(30);

pub struct Term {
    /// The live status area: stderr is a terminal, TERM is not `dumb`,
    /// and `CI` is unset.
    pub progress: bool,
    /// Colour vbuild's status words: FORCE_COLOR, or a terminal without
    /// NO_COLOR and with a TERM other than `dumb`.
    pub color: bool,
    /// FORCE_COLOR's value, for actions.
    pub force_color: Option<String>,
    pub running_notice: Option<Duration>,
}

fn set(env: &HashMap<String, String>, name: &str) -> Option<String> {
    env.get(name)
        .filter(|v| !v.is_empty() && *v != "0" && *v != "false")
        .cloned()
}

impl Term {
    pub fn detect(env: &HashMap<String, String>) -> Term {
        let tty = std::io::stderr().is_terminal();
        let dumb = env.get("TERM").is_some_and(|t| t == "dumb");
        let force_color = set(env, "FORCE_COLOR");
        let no_color = env.get("NO_COLOR").is_some_and(|v| !v.is_empty());
        let running_notice = match env.get("VBUILD_RUNNING_NOTICE") {
            Some(v) => vbuild_schema::build_file::parse_duration(v).filter(|d| !d.is_zero()),
            None => Some(RUNNING_NOTICE),
        };
        Term {
            progress: tty && !dumb && set(env, "CI").is_none(),
            color: force_color.is_some() || (tty && !dumb && !no_color),
            force_color,
            running_notice,
        }
    }
}
