//! package.json scripts: which are build or check steps, which never exit,
//! and inlining `npm run x` so no package manager starts inside an action.

/// What migrate makes of one script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A build or check step: becomes a target.
    Step,
    /// A server or watcher: skipped, with the reason.
    LongRunning(String),
    /// Not a build step (a helper other scripts call, release, clean...).
    Other,
}

const STEP_NAMES: &[&str] = &[
    "build",
    "typecheck",
    "type-check",
    "types",
    "check-types",
    "tsc",
    "lint",
    "test",
    "check",
];
const SERVER_NAMES: &[&str] = &["dev", "start", "preview", "watch", "serve", "storybook"];

pub fn classify(name: &str, command: &str, turbo_names: &[String], persistent: bool) -> Kind {
    let base = name.split(':').next().unwrap_or(name);
    if persistent {
        return Kind::LongRunning("turbo.json marks it persistent".into());
    }
    if SERVER_NAMES.contains(&base) {
        return Kind::LongRunning(format!("`{name}` is a server or watcher"));
    }
    if let Some(why) = never_exits(command) {
        return Kind::LongRunning(why);
    }
    if STEP_NAMES.contains(&base) || turbo_names.iter().any(|t| t == name) {
        Kind::Step
    } else {
        Kind::Other
    }
}

/// Why a command would not exit on its own, if it looks that way.
fn never_exits(command: &str) -> Option<String> {
    for seg in segments(command) {
        let words = split_words(seg.trim());
        if words
            .iter()
            .any(|w| w == "--watch" || w == "-w" && words.first().is_some_and(|c| c == "tsc"))
        {
            return Some("it watches for changes".into());
        }
        let tool = words.first().map(String::as_str);
        let sub = words.get(1).map(String::as_str);
        match (tool, sub) {
            (Some("vite"), None | Some("dev" | "serve" | "preview")) => {
                return Some("it starts the Vite dev/preview server".into())
            }
            (Some("vite"), Some(s)) if s.starts_with('-') => {
                return Some("it starts the Vite dev server".into())
            }
            (Some("vitest"), Some("watch" | "dev")) => return Some("vitest in watch mode".into()),
            _ => {}
        }
    }
    None
}

/// Splits a shell command at top-level `&&`, `||`, `;` (outside quotes).
pub fn segments(command: &str) -> Vec<&str> {
    let b = command.as_bytes();
    let (mut out, mut start, mut i, mut quote) = (Vec::new(), 0, 0, None);
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'\'' || c == b'"' => quote = Some(c),
            None if (c == b'&' || c == b'|') && b.get(i + 1) == Some(&c) => {
                out.push(&command[start..i]);
                i += 2;
                start = i;
                continue;
            }
            None if c == b';' => {
                out.push(&command[start..i]);
                start = i + 1;
            }
            None => {}
        }
        i += 1;
    }
    out.push(&command[start..]);
    out
}

/// Words of a simple command (quotes removed; no expansion).
pub fn split_words(seg: &str) -> Vec<String> {
    let (mut words, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in seg.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                any = true;
            }
            None if c.is_whitespace() => {
                if !cur.is_empty() || any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            None => cur.push(c),
        }
    }
    if !cur.is_empty() || any {
        words.push(cur);
    }
    words
}

/// A called script: name, extra arguments, `--if-present`.
type Call = (String, Vec<String>, bool);

/// A script name a `npm run x` / `pnpm x` / `yarn x` segment calls, with
/// the extra arguments after it; `Err` when the segment runs the package
/// manager in a way that cannot be inlined (`-r`, `--filter`, ...).
fn called_script(words: &[String], scripts: &[(String, String)]) -> Option<Result<Call, String>> {
    let pm = words.first()?.as_str();
    if !matches!(pm, "npm" | "pnpm" | "yarn" | "bun") {
        return None;
    }
    let mut rest = &words[1..];
    let mut if_present = false;
    let mut explicit_run = false;
    while let Some(w) = rest.first() {
        match w.as_str() {
            "run" | "run-script" if !explicit_run => explicit_run = true,
            "-s" | "--silent" | "--quiet" => {}
            "--if-present" => if_present = true,
            w if w.starts_with('-') => {
                return Some(Err(format!("`{}` runs {pm} with `{w}`", words.join(" "))))
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    let name = rest.first()?.clone();
    let known = scripts.iter().any(|(n, _)| *n == name);
    // `pnpm build` runs the script; `pnpm install` is pnpm's own command.
    let npm_builtin = pm == "npm" && matches!(name.as_str(), "test" | "start");
    if !(explicit_run || known || npm_builtin) {
        return Some(Err(format!("`{}` runs {pm} itself", words.join(" "))));
    }
    let mut args: Vec<String> = rest[1..].to_vec();
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
    }
    if args.iter().any(|a| a == "--if-present") {
        if_present = true;
        args.retain(|a| a != "--if-present");
    }
    Some(Ok((name, args, if_present)))
}

/// The script's command with calls to sibling scripts (and their pre/post
/// scripts) inlined. Problems (a call that cannot be inlined) are returned
/// alongside; the command then keeps that call as written.
pub fn expand(name: &str, scripts: &[(String, String)], problems: &mut Vec<String>) -> String {
    expand_depth(name, &[], scripts, problems, 0).unwrap_or_default()
}

fn lookup<'a>(scripts: &'a [(String, String)], name: &str) -> Option<&'a str> {
    scripts
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, c)| c.as_str())
}

fn expand_depth(
    name: &str,
    args: &[String],
    scripts: &[(String, String)],
    problems: &mut Vec<String>,
    depth: usize,
) -> Option<String> {
    let body = lookup(scripts, name)?;
    if depth > 8 {
        problems.push(format!("scripts call each other too deeply at `{name}`"));
        return Some(body.to_string());
    }
    let mut parts = Vec::new();
    for hook in [
        format!("pre{name}"),
        name.to_string(),
        format!("post{name}"),
    ] {
        let Some(cmd) = lookup(scripts, &hook) else {
            continue;
        };
        let mut part = expand_command(cmd, scripts, problems, depth);
        if hook == name && !args.is_empty() {
            if segments(&part).len() > 1 {
                part = format!("({part})");
            }
            part = format!("{part} {}", args.join(" "));
        }
        parts.push(part);
    }
    Some(parts.join(" && "))
}

fn expand_command(
    cmd: &str,
    scripts: &[(String, String)],
    problems: &mut Vec<String>,
    depth: usize,
) -> String {
    let segs = segments(cmd);
    if segs.len() == 1 && !cmd.contains(['|', '>', '<', '`', '$']) {
        let words = split_words(cmd.trim());
        return match called_script(&words, scripts) {
            Some(Ok((called, args, if_present))) => {
                match expand_depth(&called, &args, scripts, problems, depth + 1) {
                    Some(inner) => inner,
                    None if if_present => "true".to_string(),
                    None => {
                        problems.push(format!(
                            "`{}` calls a script that does not exist",
                            cmd.trim()
                        ));
                        cmd.trim().to_string()
                    }
                }
            }
            Some(Err(why)) => {
                problems.push(why);
                cmd.trim().to_string()
            }
            None => cmd.trim().to_string(),
        };
    }
    // Rebuild with the same operators, each segment expanded on its own.
    let mut out = String::new();
    let mut rest = cmd;
    for (i, seg) in segs.iter().enumerate() {
        let expanded = expand_command(seg, scripts, problems, depth);
        let needs_group = segments(&expanded).len() > 1;
        if needs_group {
            out.push_str(&format!("({expanded})"));
        } else {
            out.push_str(&expanded);
        }
        if i + 1 < segs.len() {
            let after = &rest[rest.find(seg).map_or(0, |p| p + seg.len())..];
            let op = if after.starts_with("&&") {
                " && "
            } else if after.starts_with("||") {
                " || "
            } else {
                "; "
            };
            out.push_str(op);
            rest = &after[op.trim().len()..];
        }
    }
    out
}

/// Whether the command runs `tool sub...` as one of its segments
/// (`vite build`, `tsc`), returning that segment's words.
pub fn runs(command: &str, tool: &str) -> Vec<Vec<String>> {
    segments(command)
        .into_iter()
        .map(|s| split_words(s.trim_matches(|c: char| c.is_whitespace() || c == '(' || c == ')')))
        .filter(|w| w.first().is_some_and(|t| t == tool))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn inlines_script_calls() {
        let scripts = s(&[
            ("build", "npm run clean && vite build && pnpm stamp -- --v"),
            ("clean", "rm -rf dist || true"),
            ("stamp", "node stamp.mjs"),
            ("prestamp", "echo pre"),
            ("all", "pnpm -r build"),
        ]);
        let mut problems = vec![];
        assert_eq!(
            expand("build", &scripts, &mut problems),
            "(rm -rf dist || true) && vite build && (echo pre && node stamp.mjs --v)"
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(expand("all", &scripts, &mut problems), "pnpm -r build");
        assert_eq!(problems, ["`pnpm -r build` runs pnpm with `-r`"]);
    }

    #[test]
    fn classifies() {
        let none: Vec<String> = vec![];
        assert_eq!(classify("build", "vite build", &none, false), Kind::Step);
        assert!(matches!(
            classify("dev", "vite", &none, false),
            Kind::LongRunning(_)
        ));
        assert!(matches!(
            classify("build:watch", "tsc -w", &none, false),
            Kind::LongRunning(_)
        ));
        assert!(matches!(
            classify("serve", "vite preview", &none, false),
            Kind::LongRunning(_)
        ));
        assert_eq!(classify("stamp", "node x", &none, false), Kind::Other);
        assert_eq!(
            classify("e2e", "node x", &["e2e".to_string()], false),
            Kind::Step
        );
    }
}
