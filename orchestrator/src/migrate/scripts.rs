//! package.json scripts: which are build or check steps, which never exit,
//! and inlining `npm run x` so no package manager starts inside an action.

/// What migrate makes of one script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A build or check step: becomes a target.
    Step,
    /// A server or watcher: skipped, with the reason.
    LongRunning(String),
    /// Rewrites the package's own sources (`lint:fix`, `format`,
    /// snapshot updates): never a cached target, with the reason.
    ModifiesSources(String),
    /// Not a build step (a helper other scripts call, release, clean...).
    Other,
}

/// Why a script rewrites sources, if it looks that way: a cached target
/// would replay "fixed" without fixing anything, and `//...` would edit
/// the checkout.
pub fn modifies_sources(name: &str, command: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let by_name = lower.split([':', '-', '_']).any(|w| {
        matches!(
            w,
            "fix" | "format" | "fmt" | "prettier" | "prettify" | "write" | "update" | "u"
        )
    }) || lower.contains("update-snapshot")
        || lower.contains("updatesnapshot");
    if by_name {
        return Some(format!("`{name}` rewrites sources"));
    }
    for seg in segments(command) {
        let words = tool_words(seg);
        let tool = words.first().map(String::as_str).unwrap_or("");
        let has = |f: &str| {
            words
                .iter()
                .any(|w| w == f || w.starts_with(&format!("{f}=")))
        };
        let testing = matches!(tool, "vitest" | "jest");
        if has("--fix")
            || has("--write")
            || has("--apply")
            || has("--updateSnapshot")
            || has("--update")
            || testing && has("-u")
            || tool == "prettier" && !has("--check") && !has("-c") && !has("--list-different")
        {
            return Some(format!("`{}` rewrites sources", seg.trim()));
        }
    }
    None
}

pub const STEP_NAMES: &[&str] = &[
    "build",
    "compile",
    "typecheck",
    "type-check",
    "types",
    "check-types",
    "tsc",
    "lint",
    "test",
    "check",
];
pub const SERVER_NAMES: &[&str] = &["dev", "start", "preview", "watch", "serve", "storybook"];

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
    if let Some(why) = modifies_sources(name, command) {
        return Kind::ModifiesSources(why);
    }
    let dashed = name.split(['-', '_']).next().unwrap_or(name);
    if STEP_NAMES.contains(&name)
        || STEP_NAMES.contains(&base)
        || STEP_NAMES.contains(&dashed)
        || turbo_names.iter().any(|t| t == name)
    {
        Kind::Step
    } else {
        Kind::Other
    }
}

/// Why a command would not exit on its own, if it looks that way.
fn never_exits(command: &str) -> Option<String> {
    for seg in segments(command) {
        let words = tool_words(seg);
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

/// The words of a segment with what only sets up the environment removed:
/// `cross-env A=1`, `env A=1`, `A=1`, `npx`, `pnpm exec`, `yarn`-less
/// `dotenv --`, so `cross-env NODE_ENV=production vite build` is `vite build`.
pub fn tool_words(seg: &str) -> Vec<String> {
    let seg = seg.trim_matches(|c: char| c.is_whitespace() || c == '(' || c == ')');
    let mut words = split_words(seg);
    loop {
        let first = words.first().cloned().unwrap_or_default();
        let first = first.as_str();
        let is_assign = first.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        if is_assign
            || matches!(
                first,
                "cross-env" | "cross-env-shell" | "env" | "npx" | "bunx" | "time" | "nice"
            )
        {
            words.remove(0);
            // `npx -y tool`, `npx --no-install tool`
            while words.first().is_some_and(|w| {
                w.starts_with('-') && first != "env" || first == "env" && w == "-i"
            }) {
                words.remove(0);
            }
        } else if matches!(first, "pnpm" | "yarn" | "npm" | "bun")
            && words
                .get(1)
                .is_some_and(|w| w == "exec" || w == "dlx" || first == "npm" && w == "x")
        {
            words.drain(..2);
            if words.first().is_some_and(|w| w == "--") {
                words.remove(0);
            }
        } else if first == "dotenv" {
            match words.iter().position(|w| w == "--") {
                Some(p) => {
                    words.drain(..=p);
                }
                None => break,
            }
        } else {
            break;
        }
    }
    words
}

/// A workspace flag of npm, pnpm, yarn or bun: the call runs a script in
/// other packages (or all of them), never the current package's.
fn workspace_flag(w: &str) -> bool {
    let flag = w.split('=').next().unwrap_or(w);
    matches!(
        flag,
        "-w" | "--workspace"
            | "-ws"
            | "--ws"
            | "--workspaces"
            | "--filter"
            | "-F"
            | "-r"
            | "--recursive"
            | "--include-workspace-root"
            | "-W"
            | "--workspace-root"
    )
}

/// The tasks a root script runs across workspace packages (`pnpm -r build`,
/// `npm run build --workspaces`, `npm run build -w packages/a`,
/// `yarn workspaces run build`, `yarn workspaces foreach -A run build`,
/// `lerna run build`, `turbo run build lint`, `nx run-many -t build`).
pub fn orchestrated_tasks(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    for seg in segments(command) {
        let words = tool_words(seg);
        let Some(tool) = words.first().map(String::as_str) else {
            continue;
        };
        let rest: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        // Positional words, skipping flags and the values of flags that take one.
        let positional = |skip_values: &[&str]| -> Vec<String> {
            let mut pos = Vec::new();
            let mut i = 0;
            while i < rest.len() {
                let w = rest[i];
                if w == "--" {
                    break;
                }
                if w.starts_with('-') {
                    if skip_values.contains(&w) && !w.contains('=') {
                        i += 1;
                    }
                } else {
                    pos.push(w.to_string());
                }
                i += 1;
            }
            pos
        };
        match tool {
            "pnpm" | "npm" | "bun" | "yarn" if rest.iter().any(|w| workspace_flag(w)) => {
                let values = ["-w", "--workspace", "--filter", "-F"];
                let pos = positional(&values);
                let pos: Vec<&String> = pos
                    .iter()
                    .filter(|w| *w != "run" && *w != "run-script")
                    .collect();
                if let Some(task) = pos.first() {
                    out.push(task.to_string());
                }
            }
            "yarn" if rest.first() == Some(&"workspaces") => {
                let pos = positional(&["--include", "--exclude", "--from", "--since"]);
                if let Some(i) = pos.iter().position(|w| w == "run") {
                    if let Some(t) = pos.get(i + 1) {
                        out.push(t.clone());
                    }
                }
            }
            "lerna" if rest.first() == Some(&"run") => {
                let pos = positional(&["--scope", "--ignore", "--since", "--concurrency"]);
                if let Some(t) = pos.get(1) {
                    out.push(t.clone());
                }
            }
            "turbo" => {
                let pos = positional(&[
                    "--filter",
                    "-F",
                    "--concurrency",
                    "--cache-dir",
                    "--output-logs",
                    "--log-order",
                ]);
                let start = usize::from(pos.first().is_some_and(|w| w == "run"));
                out.extend(pos[start..].iter().cloned());
            }
            "nx" => {
                let mut i = 0;
                while i < rest.len() {
                    let w = rest[i];
                    if let Some(v) = w
                        .strip_prefix("--target=")
                        .or_else(|| w.strip_prefix("--targets="))
                        .or_else(|| w.strip_prefix("-t="))
                    {
                        out.extend(v.split(',').map(str::to_string));
                    } else if matches!(w, "-t" | "--target" | "--targets") {
                        if let Some(v) = rest.get(i + 1) {
                            out.extend(v.split(',').map(str::to_string));
                        }
                        i += 1;
                    }
                    i += 1;
                }
            }
            _ => {}
        }
    }
    out
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
            w if workspace_flag(w) => {
                return Some(Err(format!(
                    "`{}` runs a script of other workspace packages (`{w}`)",
                    words.join(" ")
                )))
            }
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
    if let Some(w) = args
        .iter()
        .take_while(|a| *a != "--")
        .find(|a| workspace_flag(a))
    {
        return Some(Err(format!(
            "`{}` runs a script of other workspace packages (`{w}`)",
            words.join(" ")
        )));
    }
    if pm == "npm" {
        // npm passes only what follows `--` to the script; anything before
        // it is npm's own configuration.
        args = match args.iter().position(|a| a == "--") {
            Some(p) => args[p + 1..].to_vec(),
            None => args.into_iter().filter(|a| a == "--if-present").collect(),
        };
    } else if args.first().is_some_and(|a| a == "--") {
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
    let mut stack = Vec::new();
    expand_depth(name, &[], scripts, problems, &mut stack).unwrap_or_default()
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
    stack: &mut Vec<String>,
) -> Option<String> {
    let body = lookup(scripts, name)?;
    if let Some(at) = stack.iter().position(|s| s == name) {
        let mut cycle = stack[at..].to_vec();
        cycle.push(name.to_string());
        problems.push(format!(
            "scripts call each other in a cycle: {}",
            cycle.join(" → ")
        ));
        return Some(body.to_string());
    }
    if stack.len() > 16 {
        problems.push(format!("scripts call each other too deeply at `{name}`"));
        return Some(body.to_string());
    }
    stack.push(name.to_string());
    let mut parts = Vec::new();
    for hook in [
        format!("pre{name}"),
        name.to_string(),
        format!("post{name}"),
    ] {
        let Some(cmd) = lookup(scripts, &hook) else {
            continue;
        };
        let mut part = expand_command(cmd, scripts, problems, stack);
        if hook == name && !args.is_empty() {
            if segments(&part).len() > 1 {
                part = format!("({part})");
            }
            part = format!("{part} {}", args.join(" "));
        }
        parts.push(part);
    }
    stack.pop();
    Some(parts.join(" && "))
}

fn expand_command(
    cmd: &str,
    scripts: &[(String, String)],
    problems: &mut Vec<String>,
    stack: &mut Vec<String>,
) -> String {
    let segs = segments(cmd);
    if segs.len() == 1 && cmd.contains(['|', '>', '<', '`', '$']) {
        // Redirections, pipes, substitutions: kept as written (inlining a
        // call inside them could change what they mean).
        return cmd.trim().to_string();
    }
    if segs.len() == 1 {
        let words = split_words(cmd.trim());
        return match called_script(&words, scripts) {
            Some(Ok((called, args, if_present))) => {
                match expand_depth(&called, &args, scripts, problems, stack) {
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
        let expanded = expand_command(seg, scripts, problems, stack);
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
        .map(tool_words)
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
        assert_eq!(
            problems,
            ["`pnpm -r build` runs a script of other workspace packages (`-r`)"]
        );
    }

    #[test]
    fn script_cycles_end() {
        let scripts = s(&[
            ("build", "npm run build -- --x"),
            ("a", "pnpm b"),
            ("b", "yarn a"),
        ]);
        let mut problems = vec![];
        expand("build", &scripts, &mut problems);
        assert_eq!(
            problems,
            ["scripts call each other in a cycle: build → build"]
        );
        problems.clear();
        expand("a", &scripts, &mut problems);
        assert_eq!(problems, ["scripts call each other in a cycle: a → b → a"]);
    }

    #[test]
    fn workspace_orchestration() {
        let t = |c: &str| orchestrated_tasks(c);
        assert_eq!(t("pnpm -r build"), ["build"]);
        assert_eq!(t("pnpm --filter './packages/*' run test"), ["test"]);
        assert_eq!(t("npm run build --workspaces --if-present"), ["build"]);
        assert_eq!(
            t("npm run build -w packages/a && npm run lint -ws"),
            ["build", "lint"]
        );
        assert_eq!(
            t("yarn workspaces foreach -A --topological run build"),
            ["build"]
        );
        assert_eq!(t("yarn workspaces run test"), ["test"]);
        assert_eq!(t("lerna run build --stream"), ["build"]);
        assert_eq!(t("turbo run build lint --filter=web"), ["build", "lint"]);
        assert_eq!(t("nx run-many -t build,test"), ["build", "test"]);
        assert!(t("vite build").is_empty());
        assert!(t("npm run build").is_empty());
    }

    #[test]
    fn env_prefixes_are_not_the_tool() {
        assert_eq!(
            tool_words("cross-env NODE_ENV=production vite build"),
            ["vite", "build"]
        );
        assert_eq!(tool_words("env A=1 B=2 tsc -b"), ["tsc", "-b"]);
        assert_eq!(
            tool_words("NODE_OPTIONS=--max-old-space-size=4096 npx -y tsup"),
            ["tsup"]
        );
        assert_eq!(
            tool_words("pnpm exec vue-tsc --noEmit"),
            ["vue-tsc", "--noEmit"]
        );
        assert!(modifies_sources("lint:fix", "eslint .").is_some());
        assert!(modifies_sources("test:update-snapshots", "vitest -u").is_some());
        assert!(modifies_sources("check", "prettier --check .").is_none());
        assert!(modifies_sources("lint", "eslint . && prettier --write .").is_some());
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
