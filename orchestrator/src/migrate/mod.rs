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
mod gitignore;
mod graph;
mod manifest;
mod scripts;
mod write;

pub use write::run;

use anyhow::Result;
use emit::TargetOut;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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
    /// What was skipped on purpose (servers, watchers), one line each.
    pub skipped: Vec<String>,
    /// What migrate could not decide and the user should look at.
    pub undecided: Vec<String>,
    pub turbo: bool,
}

pub fn is_inside(dir: &Path, path: &Path) -> bool {
    let norm = |p: &Path| {
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                c => out.push(c),
            }
        }
        out
    };
    norm(path).starts_with(norm(dir))
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

pub fn plan(root: &Path) -> Result<Plan> {
    let layout = detect::detect(root)?;
    let turbo = manifest::read_turbo(root)?;
    let manifests: Vec<manifest::Manifest> = layout
        .packages
        .iter()
        .map(|p| manifest::read_manifest(&root.join(p)))
        .collect::<Result<_>>()?;
    let n = layout.packages.len();
    let mut undecided = Vec::new();
    let mut skipped = Vec::new();

    // The dependency graph; cycles broken only where sources allow.
    let mut edges = graph::edges(&manifests);
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
    let closure = graph::closure(n, &edges);

    let turbo_names = turbo.as_ref().map(|t| t.task_names()).unwrap_or_default();
    // First pass: which scripts become targets, per package.
    let mut steps: Vec<Vec<(String, String)>> = Vec::new();
    for (i, m) in manifests.iter().enumerate() {
        let pkg = &layout.packages[i];
        let shown = if pkg.is_empty() {
            "(root)".to_string()
        } else {
            pkg.clone()
        };
        let mut list = Vec::new();
        for (name, cmd) in &m.scripts {
            if name.starts_with("pre")
                && m.scripts
                    .iter()
                    .any(|(n, _)| Some(n.as_str()) == name.strip_prefix("pre"))
                || name.starts_with("post")
                    && m.scripts
                        .iter()
                        .any(|(n, _)| Some(n.as_str()) == name.strip_prefix("post"))
            {
                continue; // run as part of the script they belong to
            }
            let task = turbo.as_ref().and_then(|t| t.task(m.name.as_deref(), name));
            match scripts::classify(name, cmd, &turbo_names, task.is_some_and(|t| t.persistent)) {
                scripts::Kind::Step => {
                    if pkg.is_empty()
                        && (cmd.contains(" -r ")
                            || cmd.contains("--filter")
                            || cmd.contains("--workspaces")
                            || cmd.starts_with("turbo "))
                    {
                        skipped.push(format!("{shown}: `{name}` runs the workspace through {} (`vbuild run //...` replaces it)", cmd.split_whitespace().next().unwrap_or("")));
                        continue;
                    }
                    list.push((name.clone(), cmd.clone()));
                }
                scripts::Kind::LongRunning(why) => {
                    skipped.push(format!("{shown}: `{name}` never exits ({why})"))
                }
                scripts::Kind::Other => {}
            }
        }
        steps.push(list);
    }
    let has_target = |pkg: usize, name: &str| steps[pkg].iter().any(|(n, _)| n == name);

    let mut files = Vec::new();
    let mut created = Vec::new();
    for (i, m) in manifests.iter().enumerate() {
        if steps[i].is_empty() {
            continue;
        }
        let pkg = layout.packages[i].clone();
        let dir = root.join(&pkg);
        let shown = if pkg.is_empty() {
            "(root)".to_string()
        } else {
            pkg.clone()
        };
        let vite_cfg = manifest::vite_config(&dir);
        let ignores = gitignore::gitignore_excludes(root, &pkg, &mut undecided);
        let mut targets = Vec::new();
        let mut wants_plugin = false;
        for (name, _) in &steps[i] {
            let what = format!("{shown}:{name}");
            let mut problems = Vec::new();
            let command = scripts::expand(name, &m.scripts, &mut problems);
            for p in problems {
                undecided.push(format!("{what}: {p}; kept as written (it starts the package manager inside the action)"));
            }
            let task = turbo.as_ref().and_then(|t| t.task(m.name.as_deref(), name));
            let mut t = TargetOut {
                name: target_name(name),
                notes: vec![format!(
                    "package.json \"{name}\": {}",
                    m.scripts
                        .iter()
                        .find(|(n, _)| n == name)
                        .map_or("", |(_, c)| c)
                )],
                command: command.clone(),
                cache: true,
                ..Default::default()
            };
            // srcs
            t.srcs = vec!["**".to_string()];
            if let Some(inputs) = task.and_then(|t| t.inputs.clone()) {
                t.srcs = inputs
                    .iter()
                    .map(|s| {
                        if s == "$TURBO_DEFAULT$" {
                            "**".to_string()
                        } else {
                            s.trim_start_matches("./").to_string()
                        }
                    })
                    .collect();
                if !t.srcs.iter().any(|s| s == "package.json") && dir.join("package.json").is_file()
                {
                    t.srcs.push("package.json".into());
                }
            }
            if t.srcs.iter().any(|s| s == "**") {
                t.srcs.extend(ignores.iter().cloned());
            }
            // deps
            let mut deps: Vec<String> = Vec::new();
            let default_deps = vec!["^build".to_string()];
            let depends_on = task
                .and_then(|t| t.depends_on.clone())
                .unwrap_or(default_deps);
            for d in &depends_on {
                if let Some(task) = d.strip_prefix('^') {
                    for &q in &closure[i] {
                        if has_target(q, task) {
                            deps.push(label(&layout.packages[q], &target_name(task)));
                        }
                    }
                } else if let Some((pname, task)) = d.split_once('#') {
                    match manifests
                        .iter()
                        .position(|m| m.name.as_deref() == Some(pname))
                    {
                        Some(q) if has_target(q, task) => {
                            deps.push(label(&layout.packages[q], &target_name(task)))
                        }
                        _ => undecided.push(format!(
                            "{what}: turbo dependsOn `{d}` names no script vbuild migrated"
                        )),
                    }
                } else if let Some(var) = d.strip_prefix('$') {
                    t.pass_env.push(var.to_string());
                } else if has_target(i, d) && d != name {
                    deps.push(format!(":{}", target_name(d)));
                } else if d != name {
                    undecided.push(format!(
                        "{what}: turbo dependsOn `{d}`: the package has no such step"
                    ));
                }
            }
            // Outputs of transitive deps must be staged too: vbuild stages
            // direct deps' outputs only, and bundlers follow links all the way.
            if depends_on.iter().any(|d| d.starts_with('^')) {
                for &q in &closure[i] {
                    if let Some(((_, _), why)) =
                        dropped.iter().find(|((f, tq), _)| *f == i && *tq == q)
                    {
                        for task in depends_on.iter().filter_map(|d| d.strip_prefix('^')) {
                            if has_target(q, task) {
                                t.commented_deps.push((
                                    label(&layout.packages[q], &target_name(task)),
                                    why.clone(),
                                ));
                            }
                        }
                    }
                }
            }
            for ((f, q), why) in &dropped {
                if *f == i && !closure[i].contains(q) {
                    for task in depends_on.iter().filter_map(|d| d.strip_prefix('^')) {
                        if has_target(*q, task) {
                            let l = label(&layout.packages[*q], &target_name(task));
                            if !t.commented_deps.iter().any(|(x, _)| *x == l) {
                                t.commented_deps.push((l, why.clone()));
                            }
                        }
                    }
                }
            }
            deps.sort();
            deps.dedup();
            t.deps = deps;
            // outs
            let runs_vite_build = scripts::runs(&command, "vite")
                .iter()
                .any(|w| w.get(1).is_some_and(|s| s == "build"));
            let tsc_runs: Vec<Vec<String>> = scripts::runs(&command, "tsc")
                .into_iter()
                .filter(|w| !w.iter().any(|a| a == "--noEmit" || a == "--noemit"))
                .collect();
            if let Some(outputs) = task.and_then(|t| t.outputs.clone()) {
                t.outs = manifest::turbo_outs(&outputs, &mut undecided, &what);
            } else {
                if runs_vite_build {
                    match vite_cfg
                        .as_ref()
                        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default())
                    {
                        Some(src) => match manifest::vite_out_dir(&src) {
                            Some(d) => t.outs.push(format!("{d}/")),
                            None => undecided.push(format!(
                                "{what}: build.outDir in {} is computed; add it to outs by hand",
                                vite_cfg.as_deref().unwrap_or("")
                            )),
                        },
                        None => t.outs.push("dist/".into()),
                    }
                }
                for words in &tsc_runs {
                    let config = words
                        .iter()
                        .position(|w| w == "-p" || w == "--project" || w == "-b" || w == "--build")
                        .and_then(|p| words.get(p + 1))
                        .filter(|c| !c.starts_with('-'))
                        .cloned()
                        .unwrap_or_else(|| "tsconfig.json".into());
                    let config = if dir.join(&config).is_dir() {
                        format!("{config}/tsconfig.json")
                    } else {
                        config
                    };
                    let (dirs, escapes) = manifest::tsc_out_dirs(&dir, &config)?;
                    if let Some(ext) = escapes {
                        undecided.push(format!("{what}: {config} extends `{ext}`, outside the package; copy what it needs into the package's tsconfig (a target only sees its own package's files)"));
                    }
                    if dirs.is_empty() {
                        undecided.push(format!("{what}: tsc writes next to the sources (no outDir in {config}); add outs by hand"));
                    }
                    for d in dirs {
                        let d = format!("{d}/");
                        if !t.outs.contains(&d) {
                            t.outs.push(d);
                        }
                    }
                }
                if t.outs.is_empty() && name.split(':').next() == Some("build") {
                    undecided.push(format!("{what}: could not tell what it writes; add outs by hand (the build's outputs are not cached or staged for dependents until then)"));
                }
            }
            // env
            let uses_vite = runs_vite_build || !scripts::runs(&command, "vitest").is_empty();
            if let Some(task) = task {
                for v in task.env.iter().chain(&task.pass_through_env) {
                    let covered =
                        uses_vite && runs_vite_build && (v == "NODE_ENV" || v.starts_with("VITE_"));
                    if covered {
                        continue; // vite-plugin-vbuild tracks these
                    }
                    if crate::globs::is_glob(v) || v.starts_with('!') {
                        undecided.push(format!(
                            "{what}: turbo env pattern `{v}` not translated (pass_env takes names)"
                        ));
                        continue;
                    }
                    if !t.pass_env.contains(v) {
                        t.pass_env.push(v.clone());
                    }
                }
                if !task.pass_through_env.is_empty() {
                    t.notes.push("turbo's passThroughEnv became pass_env: vbuild tracks every variable it passes".into());
                }
                if task.cache == Some(false) {
                    t.cache = false;
                    t.notes.push("turbo.json: cache = false".into());
                }
            }
            if runs_vite_build {
                wants_plugin = true;
                let lone = scripts::segments(&command).len() == 1;
                if lone {
                    t.env.push(("VBUILD_VITE_REPORT_INPUTS".into(), "1".into()));
                }
            }
            targets.push(t);
        }
        if wants_plugin {
            if let Some(cfg) = &vite_cfg {
                let rel = if pkg.is_empty() {
                    cfg.clone()
                } else {
                    format!("{pkg}/{cfg}")
                };
                let src = std::fs::read_to_string(dir.join(cfg))?;
                match emit::add_vite_plugin(&src) {
                    Ok(Some(text)) => files.push(Planned {
                        path: rel,
                        contents: text,
                        edit: true,
                    }),
                    Ok(None) => {}
                    Err(why) => {
                        undecided.push(format!("{rel}: add vite-plugin-vbuild by hand ({why})"))
                    }
                }
                let declared = manifests[i].deps.contains_key(emit::PLUGIN)
                    || manifests.first().is_some_and(|r| {
                        layout.packages[0].is_empty() && r.deps.contains_key(emit::PLUGIN)
                    });
                if !declared {
                    undecided.push(format!("{shown}: add {} to devDependencies (npm/vite-plugin-vbuild in the vbuild repository) and install", emit::PLUGIN));
                }
            } else {
                undecided.push(format!("{shown}: runs vite build without a vite.config.*: NODE_ENV and VITE_* are not tracked; add a config with vite-plugin-vbuild"));
            }
        }
        let path = if pkg.is_empty() {
            "BUILD.toml".to_string()
        } else {
            format!("{pkg}/BUILD.toml")
        };
        let text = emit::build_file(&targets);
        vbuild_schema::parse_build_file(Path::new(&path), &text)
            .map_err(|d| anyhow::anyhow!("migrate produced an invalid {path} (a bug): {d}"))?;
        created.push((shown, targets.iter().map(|t| t.name.clone()).collect()));
        files.push(Planned {
            path,
            contents: text,
            edit: false,
        });
    }
    let name = manifests
        .first()
        .filter(|_| layout.packages.first().is_some_and(|p| p.is_empty()))
        .and_then(|m| m.name.clone())
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
        if !t.global_dependencies.is_empty() {
            undecided.push(format!(
                "turbo.json: globalDependencies {:?} not translated: a target sees only its own package's files",
                t.global_dependencies
            ));
        }
    }
    let ws_text = emit::workspace_file(&name, layout.manager.name(), &pass_env);
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
    let _ = &layout.globs;
    Ok(Plan {
        manager: layout.manager,
        files,
        created,
        skipped,
        undecided,
        turbo: turbo.is_some(),
    })
}
