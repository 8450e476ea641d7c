//! `vbuild migrate`: writes vbuild.toml and one BUILD.toml per package of
//! an npm, pnpm or yarn workspace, from package.json scripts, the workspace
//! dependency graph and turbo.json, and adds vite-plugin-vbuild to Vite
//! configs. See docs/migrate.md.
//!
//! - `detect`: package manager and workspace globs → package directories;
//! - `manifest`: package.json, turbo.json (and its outputs as outs), Vite
//!   and tsc output directories;
//! - `graph`: workspace dependency edges, cycles, which sources import what;
//! - `scripts`: which scripts are steps, which never exit, inlining calls;
//! - `gitignore`: .gitignore patterns as srcs exclusions;
//! - `emit`: TOML text and the Vite config edit;
//! - `write`: writing or printing the plan, and the summary.
mod detect;
mod emit;
mod external;
mod gitignore;
mod graph;
mod manifest;
mod nx;
mod outs;
mod scripts;
mod write;

pub use write::run;

use anyhow::Result;
use emit::TargetOut;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub struct Options {
    pub dry_run: bool,
    pub force: bool,
}

/// A file migrate wants to write (workspace-relative path, contents).
pub struct Planned {
    pub path: String,
    pub contents: String,
    /// An edit of an existing file migrate owns a part of (the Vite plugin).
    pub edit: bool,
}

/// Everything migrate decided, before anything is written.
pub struct Plan {
    pub manager: detect::Manager,
    pub files: Vec<Planned>,
    /// Per package: the targets created.
    pub created: Vec<(String, Vec<String>)>,
    /// Targets that write outputs.
    pub build_steps: usize,
    /// What was skipped on purpose (servers, watchers), one line each.
    pub skipped: Vec<String>,
    /// What migrate could not decide and the user should look at.
    pub undecided: Vec<String>,
    pub turbo: bool,
}

fn label(pkg: &str, target: &str) -> String {
    format!("//{pkg}:{target}")
}

/// A target name from a script name (`build:css` → `build-css`).
fn target_name(script: &str) -> String {
    script
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.+".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The dependency graph with cycles broken where sources allow; the
/// dropped edges (kept as comments) with why.
#[allow(clippy::type_complexity)]
fn break_cycles(
    root: &Path,
    layout: &detect::Layout,
    manifests: &[manifest::Manifest],
    undecided: &mut Vec<String>,
    skipped: &mut Vec<String>,
) -> (Vec<graph::Edge>, BTreeMap<(usize, usize), String>) {
    let n = layout.packages.len();
    let mut edges = graph::edges(manifests);
    let mut dropped: BTreeMap<(usize, usize), String> = BTreeMap::new();
    for cycle in graph::cycles(n, &edges) {
        let names: Vec<String> = cycle
            .iter()
            .map(|&i| {
                manifests[i]
                    .name
                    .clone()
                    .unwrap_or_else(|| layout.packages[i].clone())
            })
            .collect();
        let in_cycle: BTreeSet<usize> = cycle.iter().copied().collect();
        let mut broken = Vec::new();
        let mut stuck = Vec::new();
        for e in edges
            .iter()
            .filter(|e| in_cycle.contains(&e.from) && in_cycle.contains(&e.to))
        {
            let to_name = manifests[e.to].name.clone().unwrap_or_default();
            let users = graph::importers_of(&root.join(&layout.packages[e.from]), &to_name, &[]);
            let from_name = manifests[e.from].name.clone().unwrap_or_default();
            if e.dev && users.is_empty() {
                broken.push((e.from, e.to, format!("{from_name} → {to_name}")));
            } else {
                stuck.push(format!(
                    "{from_name} → {to_name} ({}{})",
                    if e.dev { "devDependency" } else { "dependency" },
                    if users.is_empty() {
                        String::new()
                    } else {
                        format!(", imported by {}", users.join(", "))
                    }
                ));
            }
        }
        for (from, to, what) in &broken {
            dropped.insert(
                (*from, *to),
                format!(
                    "dev-dependency cycle {}: no non-test source imports it",
                    names.join(" ↔ ")
                ),
            );
            skipped.push(format!(
                "dependency cycle {}: dropped {what} (a devDependency only tests use)",
                names.join(" ↔ ")
            ));
        }
        edges.retain(|e| !broken.iter().any(|(f, t, _)| *f == e.from && *t == e.to));
        if !graph::cycles(n, &edges)
            .iter()
            .any(|c| c.iter().all(|i| in_cycle.contains(i)))
        {
            continue;
        }
        // Still a cycle: leave the decision to the user, with the evidence.
        undecided.push(format!(
            "dependency cycle {}: {}. vbuild needs an acyclic graph; the deps closing it are written as comments. Move the shared code into its own package, or drop the dependency that is not needed",
            names.join(" ↔ "),
            stuck.join("; ")
        ));
        for e in edges
            .iter()
            .filter(|e| in_cycle.contains(&e.from) && in_cycle.contains(&e.to))
        {
            dropped.insert(
                (e.from, e.to),
                format!("cycle {}: fix by hand", names.join(" ↔ ")),
            );
        }
        edges.retain(|e| !(in_cycle.contains(&e.from) && in_cycle.contains(&e.to)));
    }
    (edges, dropped)
}

/// One target in the making: the scripts it stands for (merged steps and
/// identical commands become one target).
struct Proto {
    name: String,
    scripts: Vec<String>,
    command: String,
    notes: Vec<String>,
    outs: Vec<String>,
    /// `optional_outs`: turbo's outputs, a guessed output directory.
    optional: Vec<String>,
    vite_build: bool,
}

/// Installed major version of `pkg` as seen from `dir` (walking up).
fn installed_major(root: &Path, dir: &Path, pkg: &str) -> Option<u64> {
    let mut d = dir.to_path_buf();
    loop {
        let m = d.join("node_modules").join(pkg).join("package.json");
        if let Ok(text) = std::fs::read_to_string(&m) {
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            return v.get("version")?.as_str()?.split('.').next()?.parse().ok();
        }
        if d == root || !d.pop() {
            return None;
        }
    }
}

fn resolvable(root: &Path, dir: &Path, pkg: &str) -> bool {
    dir.ancestors()
        .take_while(|a| a.starts_with(root))
        .any(|a| {
            a.join("node_modules")
                .join(pkg)
                .join("package.json")
                .is_file()
        })
}

/// Names of scripts another script of the same package calls.
fn called_scripts(scripts: &[(String, String)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, cmd) in scripts {
        for seg in scripts::segments(cmd) {
            let w = scripts::tool_words(seg);
            if !w
                .first()
                .is_some_and(|t| matches!(t.as_str(), "npm" | "pnpm" | "yarn" | "bun"))
            {
                continue;
            }
            for x in &w[1..] {
                if x.starts_with('-') || x == "run" || x == "run-script" {
                    continue;
                }
                if scripts.iter().any(|(n, _)| n == x) {
                    out.insert(x.clone());
                }
                break;
            }
        }
    }
    out
}

const RELEASE: &[&str] = &[
    "release",
    "publish",
    "version",
    "changeset",
    "prepare",
    "postinstall",
    "preinstall",
    "install",
    "clean",
    "reset",
];

pub fn plan(root: &Path) -> Result<Plan> {
    let layout = detect::detect(root)?;
    let mut turbo = manifest::read_turbo(root)?;
    let manifests: Vec<manifest::Manifest> = layout
        .packages
        .iter()
        .map(|p| manifest::read_manifest(&root.join(p)))
        .collect::<Result<_>>()?;
    if let Some(t) = turbo.as_mut() {
        for (p, m) in layout.packages.iter().zip(&manifests) {
            if let (false, Some(name)) = (p.is_empty(), &m.name) {
                manifest::add_package_turbo(t, &root.join(p), name)?;
            }
        }
    }
    let turbo = turbo;
    let n = layout.packages.len();
    let mut undecided = Vec::new();
    let mut skipped = Vec::new();
    let (edges, dropped) = break_cycles(root, &layout, &manifests, &mut undecided, &mut skipped);
    let closure = graph::closure(n, &edges);
    let shown = |i: usize| {
        if layout.packages[i].is_empty() {
            "(root)".to_string()
        } else {
            layout.packages[i].clone()
        }
    };

    // The pipeline: turbo's tasks, else what the root scripts run across
    // the workspace. Only its tasks become targets.
    let mut pipeline: BTreeSet<String> = turbo
        .as_ref()
        .map(|t| t.task_names().into_iter().collect())
        .unwrap_or_default();
    let root_idx = layout.packages.iter().position(|p| p.is_empty());
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut grouped_undecided: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(r) = root_idx {
        for (name, cmd) in &manifests[r].scripts {
            let tasks = scripts::orchestrated_tasks(cmd);
            let base = name.split(':').next().unwrap_or(name);
            // A root script packages define too (`compile: tsc -b` at the
            // root, `compile: tsc` in each package) names a pipeline task.
            let shared = manifests
                .iter()
                .enumerate()
                .any(|(i, m)| i != r && m.scripts.iter().any(|(n, _)| n == name))
                && matches!(
                    scripts::classify(name, cmd, &[], false),
                    scripts::Kind::Step | scripts::Kind::Other
                );
            if turbo.is_none() && !RELEASE.contains(&base) {
                pipeline.extend(tasks.iter().cloned());
                if shared {
                    pipeline.insert(name.clone());
                }
            }
            let why = if !tasks.is_empty() {
                format!(
                    "`{name}` runs the workspace's `{}` (`vbuild run {}` replaces it)",
                    tasks.join("`, `"),
                    tasks.first().map_or("//...", |t| t.as_str())
                )
            } else if scripts::modifies_sources(name, cmd).is_some() {
                format!("`{name}` rewrites sources (run it with your package manager)")
            } else if scripts::STEP_NAMES.contains(&base) {
                format!("`{name}` runs over the whole repository (`{}`); a target sees only what it declares, so it would check less than it says: run it with your package manager", cmd.chars().take(60).collect::<String>())
            } else {
                continue;
            };
            skipped.push(format!("(root): {why}"));
        }
    }
    let fallback = pipeline.is_empty();

    // Per package: the steps, then their commands and outputs.
    let mut protos: Vec<Vec<Proto>> = (0..n).map(|_| Vec::new()).collect();
    // (package, script) → target name, for deps.
    let mut alias: BTreeMap<(usize, String), String> = BTreeMap::new();
    for (i, m) in manifests.iter().enumerate() {
        let pkg = &layout.packages[i];
        if pkg.is_empty() {
            continue;
        }
        let dir = root.join(pkg);
        let called = called_scripts(&m.scripts);
        for (name, cmd) in &m.scripts {
            let hook = |p: &str| {
                name.strip_prefix(p)
                    .is_some_and(|b| m.scripts.iter().any(|(n, _)| n == b))
            };
            if hook("pre") || hook("post") {
                continue; // run as part of the script they belong to
            }
            let task = turbo.as_ref().and_then(|t| t.task(m.name.as_deref(), name));
            let kind = scripts::classify(name, cmd, &[], task.is_some_and(|t| t.persistent));
            let in_pipeline = if fallback {
                kind == scripts::Kind::Step && !called.contains(name)
            } else {
                pipeline.contains(name)
            };
            match kind {
                scripts::Kind::LongRunning(why) => {
                    if in_pipeline
                        || pipeline.contains(name)
                        || scripts::SERVER_NAMES.contains(&name.as_str())
                    {
                        skipped.push(format!("{}: `{name}` never exits ({why})", shown(i)));
                    }
                    continue;
                }
                scripts::Kind::ModifiesSources(_) => {
                    grouped.entry(format!("`{name}` rewrites sources: not a target (run it with your package manager)")).or_default().push(shown(i));
                    continue;
                }
                _ if !in_pipeline => continue,
                _ => {}
            }
            let what = format!("{}:{name}", shown(i));
            let mut problems = Vec::new();
            let command = scripts::expand(name, &m.scripts, &mut problems);
            if let Some(cycle) = problems.iter().find(|p| p.contains("cycle")) {
                undecided.push(format!(
                    "{what}: {cycle}; no target written (fix the scripts, then migrate again)"
                ));
                continue;
            }
            for p in problems {
                undecided.push(format!("{what}: {p}; kept as written (it starts the package manager inside the action)"));
            }
            let found = outs::detect(&dir, &command);
            let outs_list = found.outs.clone();
            // Outputs that may be left unwritten: turbo's `outputs` (globs
            // that may match nothing) and the directory guessed for a tool
            // migrate does not know. Never read from what a native build
            // left on disk, so a fresh clone migrates as a built one does.
            let mut optional: Vec<String> = Vec::new();
            let declared = match task.and_then(|t| t.outputs.clone()) {
                Some(outputs) => Some(manifest::turbo_outs(&outputs, &mut undecided, &what)),
                None => nx::task_outputs(root, pkg, name)
                    .map(|o| nx::outs(&o, pkg, &mut undecided, &what)),
            };
            let said = declared.is_some();
            if let Some(declared) = declared {
                for o in declared {
                    // What the tool's own flags and config say is exact; a
                    // turbo (or Nx) output beside them is kept where it adds files.
                    if found.outs.iter().any(|f| outs::overlap(f, &o)) {
                        continue;
                    }
                    match tracked_under(root, pkg, &o) {
                        Some(f) => undecided.push(format!(
                            "{what}: output `{o}` (turbo.json / nx) holds `{f}`, a file in git: not declared (a restore deletes what the build did not write)"
                        )),
                        None => match crosses_package(&layout.packages, pkg, &o) {
                            Some(sub) => undecided.push(format!(
                                "{what}: output `{o}` (turbo.json / nx) reaches into the package {sub}: not declared (each package declares its own outputs)"
                            )),
                            None => optional.push(o),
                        },
                    }
                }
            } else {
                for p in &found.problems {
                    undecided.push(format!("{what}: {p}"));
                }
            }
            if outs_list.is_empty()
                && !said
                && name.split(':').next() == Some("build")
                && !found.known
            {
                // A tool migrate does not know, and turbo / Nx say nothing: the usual output directory
                // the repository git-ignores (a build writes it; a fresh
                // clone does not have it yet).
                let ignored = gitignore::ignored_dirs(root, pkg);
                let guess: Vec<String> = ["dist", "build", "lib", "out"]
                    .iter()
                    .filter(|d| ignored.iter().any(|i| i == *d))
                    .map(|d| format!("{d}/"))
                    .filter(|d| tracked_under(root, pkg, d).is_none())
                    .collect();
                if !guess.is_empty() {
                    grouped_undecided
                        .entry(format!("optional_outs = {guess:?} guessed from the .gitignore (the tool is not one migrate knows); check them"))
                        .or_default()
                        .push(what.clone());
                    optional = guess;
                }
            }
            if outs_list.is_empty()
                && optional.is_empty()
                && !said
                && name.split(':').next() == Some("build")
                && !found.known
            {
                undecided.push(format!("{what}: could not tell what it writes; add outs by hand (the build's outputs are not cached or staged for dependents until then)"));
            }
            let script_text = m
                .scripts
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, c)| c.as_str());
            let proto = Proto {
                name: target_name(name),
                scripts: vec![name.clone()],
                notes: vec![format!("package.json \"{name}\": {script_text}")],
                command,
                outs: outs_list,
                optional,
                vite_build: found.vite_build,
            };
            // Identical commands are one target.
            if let Some(same) = protos[i].iter_mut().find(|p| p.command == proto.command) {
                same.scripts.push(name.clone());
                same.notes
                    .push(format!("also package.json \"{name}\" (the same command)"));
                alias.insert((i, name.clone()), same.name.clone());
                continue;
            }
            alias.insert((i, name.clone()), proto.name.clone());
            protos[i].push(proto);
        }
        drop_claimed_optional(&mut protos[i]);
        merge_overlapping(
            i,
            &mut protos[i],
            &mut alias,
            turbo.as_ref(),
            m.name.as_deref(),
        );
    }
    for (why, pkgs) in grouped {
        skipped.push(format!("{} in {}", why, list_short(&pkgs)));
    }
    for (why, targets) in grouped_undecided {
        undecided.push(format!("{}: {why}", list_short(&targets)));
    }

    let resolve = |q: usize, task: &str| alias.get(&(q, task.to_string())).cloned();
    // Packages others read as files (configs, sources): a file group.
    let covered_by_outs = |q: usize, path: &str| {
        protos[q].iter().any(|p| {
            p.outs.iter().chain(&p.optional).any(|o| {
                let base = o
                    .split(['*', '?', '[', '{'])
                    .next()
                    .unwrap_or(o)
                    .trim_end_matches('/');
                path == base || path.starts_with(&format!("{base}/"))
            })
        })
    };
    let needs_group: Vec<bool> = (0..n)
        .map(|q| {
            !layout.packages[q].is_empty()
                && (protos[q]
                    .iter()
                    .all(|p| p.outs.is_empty() && p.optional.is_empty())
                    || manifests[q].entries.iter().any(|e| !covered_by_outs(q, e)))
        })
        .collect();
    let names: Vec<Option<String>> = manifests.iter().map(|m| m.name.clone()).collect();
    let ctx = external::Ctx {
        root,
        packages: &layout.packages,
        names: &names,
    };
    let mut ws_inputs: BTreeSet<String> = BTreeSet::new();
    ws_inputs.insert(match layout.manager {
        detect::Manager::Pnpm => "pnpm-workspace.yaml".to_string(),
        _ => "package.json".to_string(),
    });
    let mut group_wanted = vec![false; n];
    let mut pass_env_globs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut out_targets: Vec<Vec<TargetOut>> = (0..n).map(|_| Vec::new()).collect();
    let mut plugin_edits = Vec::new();
    for i in 0..n {
        if protos[i].is_empty() {
            continue;
        }
        let pkg = layout.packages[i].clone();
        let dir = root.join(&pkg);
        let ignores = gitignore::package_excludes(root, &pkg, &mut undecided);
        let vite_major = installed_major(root, &dir, "vite");
        let any_vite = protos[i].iter().any(|p| p.vite_build);
        let vite_cfg = manifest::vite_config(&dir);
        // Vite 8 talks to the runner itself; older Vite only through the
        // plugin, and only where it is installed and supports that Vite.
        let plugin = any_vite
            && vite_major.is_some_and(|v| (5..8).contains(&v))
            && resolvable(root, &dir, emit::PLUGIN)
            && vite_cfg
                .as_ref()
                .is_some_and(|c| !c.ends_with(".cjs") && !c.ends_with(".cts"));
        let env_tracked = any_vite && (vite_major.is_some_and(|v| v >= 8) || plugin);
        if plugin {
            let cfg = vite_cfg.clone().unwrap_or_default();
            let rel = if pkg.is_empty() {
                cfg.clone()
            } else {
                format!("{pkg}/{cfg}")
            };
            let src = std::fs::read_to_string(dir.join(&cfg))?;
            match emit::add_vite_plugin(&src) {
                Ok(Some(text)) => plugin_edits.push(Planned { path: rel, contents: text, edit: true }),
                Ok(None) => {}
                Err(why) => undecided.push(format!("{rel}: vite-plugin-vbuild not added ({why}); NODE_ENV and VITE_* are not tracked")),
            }
        } else if any_vite && vite_major.is_none_or(|v| v < 8) {
            undecided.push(format!(
                "{}: Vite {} without vite-plugin-vbuild installed: its config is left alone; NODE_ENV and VITE_* variables are not tracked (list the ones the build reads in pass_env) and every staged file counts as an input",
                shown(i),
                vite_major.map_or("(not installed)".to_string(), |v| v.to_string())
            ));
        }
        let m = &manifests[i];
        for p in &protos[i] {
            let what = format!("{}:{}", shown(i), p.name);
            let tasks: Vec<&manifest::TurboTask> = p
                .scripts
                .iter()
                .filter_map(|s| turbo.as_ref().and_then(|t| t.task(m.name.as_deref(), s)))
                .collect();
            let mut t = TargetOut {
                name: p.name.clone(),
                notes: p.notes.clone(),
                command: Some(p.command.clone()),
                outs: p.outs.clone(),
                optional_outs: p.optional.clone(),
                ..Default::default()
            };
            // srcs
            t.srcs = vec!["**".to_string()];
            if let Some(inputs) = tasks.iter().find_map(|t| t.inputs.clone()) {
                t.srcs = Vec::new();
                for s in &inputs {
                    if s == "$TURBO_DEFAULT$" {
                        t.srcs.push("**".to_string());
                    } else if let Some(r) = s.strip_prefix("$TURBO_ROOT$/") {
                        // A root file (turbo 2.5+): what every action may see.
                        if r.split('/').any(|c| c == "..") || r.starts_with('/') {
                            undecided.push(format!(
                                "{what}: turbo input `{s}` leaves the workspace: not translated"
                            ));
                        } else {
                            ws_inputs.insert(r.to_string());
                        }
                    } else if s.starts_with("!$TURBO_ROOT$") {
                        undecided.push(format!("{what}: turbo input `{s}` not translated (workspace inputs cannot be excluded per target)"));
                    } else {
                        t.srcs.push(s.trim_start_matches("./").to_string());
                    }
                }
                if !t.srcs.iter().any(|s| s == "package.json") && dir.join("package.json").is_file()
                {
                    t.srcs.push("package.json".into());
                }
            }
            if t.srcs.iter().any(|s| s == "**") {
                t.srcs.extend(ignores.iter().cloned());
            }
            // deps: turbo's dependsOn exactly; without turbo, `^build`.
            let depends_on: Vec<String> = if turbo.is_some() {
                let mut d: Vec<String> = tasks
                    .iter()
                    .flat_map(|t| t.depends_on.clone().unwrap_or_default())
                    .collect();
                d.dedup();
                d
            } else if p.outs.is_empty() {
                // Tests usually run what the package's build wrote (`node
                // lib/main.spec.js`); natively it was built before.
                let base = p.name.split(['-', ':', '_']).next().unwrap_or("");
                let own = protos[i]
                    .iter()
                    .find(|b| !b.outs.is_empty() && b.name != p.name);
                match own {
                    Some(b) if matches!(base, "test" | "e2e" | "check" | "spec") => {
                        vec!["^build".to_string(), b.scripts[0].clone()]
                    }
                    _ => vec!["^build".to_string()],
                }
            } else if p.name == "build" {
                vec!["^build".to_string()]
            } else {
                // `pnpm -r compile` runs dependencies' `compile` first.
                vec!["^build".to_string(), format!("^{}", p.scripts[0])]
            };
            let mut deps: Vec<String> = Vec::new();
            for d in &depends_on {
                if let Some(task) = d.strip_prefix('^') {
                    for &q in &closure[i] {
                        if let Some(tn) = resolve(q, task) {
                            deps.push(label(&layout.packages[q], &tn));
                        }
                    }
                } else if let Some((pname, task)) = d.split_once('#') {
                    // turbo skips a missing task silently; so does migrate.
                    if let Some(q) = manifests
                        .iter()
                        .position(|m| m.name.as_deref() == Some(pname))
                    {
                        if let Some(tn) = resolve(q, task) {
                            deps.push(label(&layout.packages[q], &tn));
                        }
                    }
                } else if let Some(var) = d.strip_prefix('$') {
                    t.pass_env.push(var.to_string());
                } else if let Some(tn) = resolve(i, d).filter(|tn| *tn != p.name) {
                    deps.push(format!(":{tn}"));
                }
            }
            // Dropped cycle edges stay visible, as comments.
            let carets: Vec<&str> = depends_on
                .iter()
                .filter_map(|d| d.strip_prefix('^'))
                .collect();
            for ((f, q), why) in &dropped {
                if *f != i {
                    continue;
                }
                for task in &carets {
                    if let Some(tn) = resolve(*q, task) {
                        let l = label(&layout.packages[*q], &tn);
                        if !t.commented_deps.iter().any(|(x, _)| *x == l) {
                            t.commented_deps.push((l, why.clone()));
                        }
                    }
                }
            }
            // Files outside the package.
            let ext = external::find(&ctx, i, &p.command);
            for u in &ext.unresolved {
                undecided.push(format!("{what}: {u}"));
            }
            ws_inputs.extend(ext.ws_inputs.iter().cloned());
            if ext.npm_env {
                // What `npm run` would have set (fixed values: in the key).
                t.env
                    .push(("npm_lifecycle_event".into(), p.scripts[0].clone()));
                if let Some(n) = &m.name {
                    t.env.push(("npm_package_name".into(), n.clone()));
                }
                if let Some(v) = &m.version {
                    t.env.push(("npm_package_version".into(), v.clone()));
                }
                t.notes.push(
                    "its scripts read npm_* variables: set as the package manager would".into(),
                );
            }
            let mut groups: BTreeSet<usize> = ext.groups.clone();
            groups.extend(closure[i].iter().copied().filter(|&q| needs_group[q]));
            for q in groups {
                if q == i || layout.packages[q].is_empty() || dropped.contains_key(&(i, q)) {
                    continue;
                }
                group_wanted[q] = true;
                deps.push(label(&layout.packages[q], GROUP));
            }
            deps.sort();
            deps.dedup();
            t.deps = deps;
            // env
            for task in &tasks {
                for v in task.env.iter().chain(&task.pass_through_env) {
                    if env_tracked && p.vite_build && (v == "NODE_ENV" || v.starts_with("VITE_")) {
                        continue; // Vite 8 / vite-plugin-vbuild track these
                    }
                    if crate::globs::is_glob(v) || v.starts_with('!') {
                        pass_env_globs
                            .entry(v.clone())
                            .or_default()
                            .push(what.clone());
                        continue;
                    }
                    if !t.pass_env.contains(v) {
                        t.pass_env.push(v.clone());
                    }
                }
                if !task.pass_through_env.is_empty()
                    && !t.notes.iter().any(|n| n.contains("passThroughEnv"))
                {
                    t.notes.push("turbo's passThroughEnv became pass_env: vbuild tracks every variable it passes".into());
                }
                if task.cache == Some(false) {
                    t.cache = Some("false");
                    t.notes.push("turbo.json: cache = false".into());
                }
            }
            let vitest = scripts::runs(&p.command, "vitest");
            if t.cache.is_none() && !vitest.is_empty() {
                // vitest's Vite server calls disableCache(); a run (not a
                // watcher) in the sandbox is hermetic.
                t.cache = Some("\"always\"");
            }
            if plugin && p.vite_build && scripts::segments(&p.command).len() == 1 {
                t.env.push(("VBUILD_VITE_REPORT_INPUTS".into(), "1".into()));
            }
            out_targets[i].push(t);
        }
    }
    for (v, users) in pass_env_globs {
        undecided.push(format!(
            "turbo env pattern `{v}` ({}) not translated: pass_env takes names; list the variables the build reads",
            list_short(&users)
        ));
    }

    let mut files = Vec::new();
    let mut created = Vec::new();
    let mut build_steps = 0;
    for i in 0..n {
        let mut targets = std::mem::take(&mut out_targets[i]);
        if group_wanted[i] {
            let mut srcs = vec!["**".to_string()];
            srcs.extend(gitignore::package_excludes(
                root,
                &layout.packages[i],
                &mut Vec::new(),
            ));
            let name = if targets.iter().any(|t| t.name == GROUP) {
                format!("{GROUP}-group")
            } else {
                GROUP.to_string()
            };
            targets.push(TargetOut {
                name,
                notes: vec![
                    "Files other packages read (configs, sources): a file group, it runs nothing."
                        .into(),
                ],
                command: None,
                srcs,
                ..Default::default()
            });
        }
        if targets.is_empty() {
            continue;
        }
        build_steps += targets
            .iter()
            .filter(|t| t.command.is_some() && !(t.outs.is_empty() && t.optional_outs.is_empty()))
            .count();
        let pkg = &layout.packages[i];
        let path = if pkg.is_empty() {
            "BUILD.toml".to_string()
        } else {
            format!("{pkg}/BUILD.toml")
        };
        let text = emit::build_file(&targets);
        vbuild_schema::parse_build_file(Path::new(&path), &text)
            .map_err(|d| anyhow::anyhow!("migrate produced an invalid {path} (a bug): {d}"))?;
        created.push((shown(i), targets.iter().map(|t| t.name.clone()).collect()));
        files.push(Planned {
            path,
            contents: text,
            edit: false,
        });
    }
    files.extend(plugin_edits);

    let name = manifests
        .first()
        .filter(|_| root_idx == Some(0))
        .and_then(|m| m.name.clone())
        .filter(|n| !matches!(n.as_str(), "root" | "monorepo" | "workspace" | ""))
        .or_else(|| root.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "workspace".into());
    let mut pass_env = Vec::new();
    if let Some(t) = &turbo {
        for v in t.global_env.iter().chain(&t.global_pass_through_env) {
            if crate::globs::is_glob(v) {
                undecided.push(format!(
                    "turbo.json: globalEnv pattern `{v}` not translated"
                ));
            } else if !pass_env.contains(v) {
                pass_env.push(v.clone());
            }
        }
        for g in &t.global_dependencies {
            let g = g.trim_start_matches("./");
            if g.starts_with('!') || g.starts_with("..") {
                undecided.push(format!(
                    "turbo.json: globalDependencies `{g}` not translated"
                ));
            } else {
                ws_inputs.insert(g.to_string());
            }
        }
    }
    let mut exclude = gitignore::root_excludes(root, &mut undecided);
    if !exclude.iter().any(|e| e == "**/*.tsbuildinfo") {
        exclude.push("**/*.tsbuildinfo".to_string());
    }
    let inputs: Vec<String> = ws_inputs.into_iter().collect();
    let ws_text = emit::workspace_file(&name, layout.manager.name(), &pass_env, &inputs, &exclude);
    vbuild_schema::parse_workspace_file(Path::new("vbuild.toml"), &ws_text)
        .map_err(|d| anyhow::anyhow!("migrate produced an invalid vbuild.toml (a bug): {d}"))?;
    files.insert(
        0,
        Planned {
            path: "vbuild.toml".into(),
            contents: ws_text,
            edit: false,
        },
    );
    Ok(Plan {
        manager: layout.manager,
        files,
        created,
        build_steps,
        skipped,
        undecided,
        turbo: turbo.is_some(),
    })
}

/// A file in git under what `out` (package-relative) names, if any: such
/// an output would be deleted by a restore when the build does not write
/// it. None without git (a fresh extract is not a clone).
fn tracked_under(root: &Path, pkg: &str, out: &str) -> Option<String> {
    let base = out
        .split(['*', '?', '[', '{'])
        .next()
        .unwrap_or(out)
        .trim_end_matches('/');
    let rel = match (pkg.is_empty(), base.is_empty()) {
        (true, _) => base.to_string(),
        (false, true) => pkg.to_string(),
        (false, false) => format!("{pkg}/{base}"),
    };
    if rel.is_empty() || !root.join(&rel).exists() {
        return None;
    }
    let glob = if crate::globs::is_glob(out) {
        Some(crate::globs::out_glob(out).ok()?)
    } else {
        None
    };
    let listed = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z", "--"])
        .arg(&rel)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    String::from_utf8_lossy(&listed.stdout)
        .split('\0')
        .filter(|f| !f.is_empty())
        .find(|f| {
            glob.as_ref().is_none_or(|g| {
                let in_pkg = f.strip_prefix(&format!("{pkg}/")).unwrap_or(f);
                g.is_match(if pkg.is_empty() { f } else { in_pkg })
            })
        })
        .map(str::to_string)
}

/// The package an out of `pkg` would reach into (a sub-package at or
/// below its base, or one its base lies in), if any: outputs stop at
/// sub-packages, and a literal out inside one is a load error.
fn crosses_package(packages: &[String], pkg: &str, out: &str) -> Option<String> {
    let base = out
        .split(['*', '?', '[', '{'])
        .next()
        .unwrap_or(out)
        .trim_end_matches('/');
    let base = base.rsplit_once('/').map_or(base, |(d, f)| {
        if crate::globs::is_glob(out) || out.ends_with('/') || !f.contains('.') {
            base
        } else {
            d
        }
    });
    let full = match (pkg.is_empty(), base.is_empty()) {
        (true, _) => base.to_string(),
        (false, true) => pkg.to_string(),
        (false, false) => format!("{pkg}/{base}"),
    };
    packages
        .iter()
        .filter(|q| q.as_str() != pkg && (pkg.is_empty() || q.starts_with(&format!("{pkg}/"))))
        .find(|q| {
            full.is_empty()
                || *q == &full
                || q.starts_with(&format!("{full}/"))
                || full.starts_with(&format!("{q}/"))
        })
        .cloned()
}

/// An optional out (turbo's, guessed) that another target of the package
/// writes for certain is that target's: dropped here rather than merging
/// the two targets (a `test` whose turbo outputs repeat `dist/**`).
fn drop_claimed_optional(protos: &mut [Proto]) {
    let required: Vec<(usize, String)> = protos
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.outs.iter().map(move |o| (i, o.clone())))
        .collect();
    for (i, p) in protos.iter_mut().enumerate() {
        let before = p.optional.len();
        p.optional
            .retain(|o| !required.iter().any(|(j, r)| *j != i && outs::overlap(r, o)));
        if p.optional.len() < before {
            p.notes
                .push("turbo outputs another target of this package writes are left to it".into());
        }
    }
}

/// The file group's target name.
const GROUP: &str = "files";

fn list_short(items: &[String]) -> String {
    if items.len() <= 4 {
        items.join(", ")
    } else {
        format!("{}, and {} more", items[..3].join(", "), items.len() - 3)
    }
}

/// Targets of one package whose outs overlap become one (a target that
/// is already part of another's command is dropped): vbuild refuses
/// overlapping outputs, and they would overwrite each other.
fn merge_overlapping(
    i: usize,
    protos: &mut Vec<Proto>,
    alias: &mut BTreeMap<(usize, String), String>,
    turbo: Option<&manifest::Turbo>,
    pkg_name: Option<&str>,
) {
    loop {
        let mut pair = None;
        'find: for a in 0..protos.len() {
            for b in a + 1..protos.len() {
                let all = |p: &Proto| {
                    p.outs
                        .iter()
                        .chain(&p.optional)
                        .cloned()
                        .collect::<Vec<_>>()
                };
                let (x, y) = (all(&protos[a]), all(&protos[b]));
                if x.iter().any(|x| y.iter().any(|y| outs::overlap(x, y))) {
                    pair = Some((a, b));
                    break 'find;
                }
            }
        }
        let Some((a, b)) = pair else { return };
        // Keep `build` (or the first) as the name.
        let (keep, gone) = if protos[b].name == "build" {
            (b, a)
        } else {
            (a, b)
        };
        let g = protos.remove(gone);
        let keep = if gone < keep { keep - 1 } else { keep };
        let k = &mut protos[keep];
        for s in &g.scripts {
            alias.insert((i, s.clone()), k.name.clone());
        }
        if k.command.contains(&g.command) {
            k.notes.push(format!(
                "`{}` is part of this command; not a target of its own",
                g.name
            ));
        } else {
            // The one turbo says runs first, first.
            let first = turbo
                .and_then(|t| t.task(pkg_name, &k.scripts[0]))
                .and_then(|t| t.depends_on.as_ref())
                .is_some_and(|d| g.scripts.iter().any(|s| d.contains(s)));
            k.command = if first {
                format!("{} && {}", group(&g.command), group(&k.command))
            } else {
                format!("{} && {}", group(&k.command), group(&g.command))
            };
            let both: Vec<&String> = g.outs.iter().chain(&g.optional).collect();
            k.notes.push(format!(
                "merged with `{}`: both write {}",
                g.name,
                both.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            k.notes.extend(g.notes);
            for o in g.outs {
                if !k.outs.contains(&o) {
                    k.outs.push(o);
                }
            }
            for o in g.optional {
                if !k.optional.contains(&o) {
                    k.optional.push(o);
                }
            }
            k.vite_build |= g.vite_build;
        }
        k.scripts.extend(g.scripts);
        // A narrower out inside a wider one is redundant; an optional one
        // that a required one overlaps says nothing more.
        let all = k.outs.clone();
        k.outs.retain(|o| {
            !all.iter()
                .any(|w| w != o && w.ends_with('/') && o.starts_with(w.as_str()))
        });
        let opt = k.optional.clone();
        k.optional.retain(|o| {
            !all.iter().any(|w| outs::overlap(w, o))
                && !opt
                    .iter()
                    .any(|w| w != o && w.ends_with('/') && o.starts_with(w.as_str()))
        });
    }
}

fn group(cmd: &str) -> String {
    if scripts::segments(cmd).len() > 1 {
        format!("({cmd})")
    } else {
        cmd.to_string()
    }
}
