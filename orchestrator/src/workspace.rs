//! Loading a workspace: find `vbuild.toml`, discover every `BUILD.toml`,
//! parse and validate targets. Every problem becomes a [`Diagnostic`]; when
//! there is any, nothing runs.
use crate::globs::{normalize, OutSpec, SrcMatcher};
use crate::listdir;
use crate::prune::Prune;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vbuild_schema::build_file::parse_duration;
use vbuild_schema::{
    parse_build_file, parse_workspace_file, CacheSetting, Command, Diagnostic, Label,
    SandboxSetting, TargetDef, WorkspaceDef,
};

/// Label → target index, looked up for every dependency edge while
/// loading: foldhash, not SipHash (labels are the user's own, not an
/// attacker's keys, and SipHash was ~5 % of a large workspace's load).
type LabelMap = HashMap<Label, usize, foldhash::fast::RandomState>;
/// Compiled srcs by pattern list (hashed once per target).
type MatcherMap = HashMap<Vec<(bool, String)>, SrcMatcher, foldhash::fast::RandomState>;

pub const WORKSPACE_FILE: &str = "vbuild.toml";
pub const BUILD_FILE: &str = "BUILD.toml";

/// A validated target, ready to become an action.
#[derive(Debug)]
pub struct Target {
    pub label: Label,
    /// Empty for a file group.
    pub argv: Vec<String>,
    /// No `command`: a file group, whose srcs (and deps' outputs) are its
    /// "outputs" for dependents; it runs nothing.
    pub file_group: bool,
    /// Normalized `srcs` as written (for the key), `!` kept.
    pub src_patterns: Vec<String>,
    pub srcs: SrcMatcher,
    /// Indexes into [`Workspace::targets`], in declaration order.
    pub deps: Vec<usize>,
    /// `outs` then `optional_outs`: every declared output.
    pub outs: Vec<OutSpec>,
    /// How many of `outs` (the first ones) must be written; the rest are
    /// `optional_outs`.
    pub required_outs: usize,
    pub env: BTreeMap<String, String>,
    pub pass_env: Vec<String>,
    pub cache: CacheSetting,
    pub sandbox: Option<SandboxSetting>,
    pub network: bool,
    pub timeout: Option<Duration>,
    /// `node_modules` as the target wrote it (the workspace's applies when unset).
    pub node_modules: Option<bool>,
}

pub struct Workspace {
    /// Absolute, canonical.
    pub root: PathBuf,
    pub def: WorkspaceDef,
    /// Sorted by label, so indexes (and so output order) are deterministic.
    pub targets: Vec<Target>,
    /// Package paths (workspace-relative, "" for the root), sorted (the
    /// materializer's `Confinement` binary-searches them).
    pub packages: Vec<String>,
    /// Every file found when the workspace was loaded.
    pub tree: Tree,
    /// `[workspace] exclude`: workspace-relative paths that are never srcs.
    pub exclude: globset::GlobSet,
    /// `[workspace] inputs`: staged for every action.
    pub inputs: WorkspaceInputs,
    /// Packages whose BUILD.toml has errors; their targets, and every
    /// target depending on one, are left out of `targets`.
    pub broken: Vec<Broken>,
    /// The targets left out, with the broken packages each one needs.
    pub skipped: Vec<(Label, Vec<String>)>,
}

/// A package whose BUILD.toml did not load.
#[derive(Debug)]
pub struct Broken {
    pub package: String,
    pub diagnostics: Vec<Diagnostic>,
}

/// Leaves out the targets of broken packages and, transitively, every
/// target depending on one; renumbers the deps of the rest.
fn drop_broken(
    slots: Vec<Option<Target>>,
    labels: Vec<Label>,
    broken: &BTreeMap<String, Vec<Diagnostic>>,
    into_unparsed: &HashMap<Label, Vec<String>>,
) -> (Vec<Target>, Vec<(Label, Vec<String>)>) {
    let n = slots.len();
    let mut needs: Vec<Option<Vec<String>>> = labels
        .iter()
        .map(|l| match broken.contains_key(&l.package) {
            true => Some(vec![l.package.clone()]),
            false => into_unparsed.get(l).cloned(),
        })
        .collect();
    // Indexes follow label order, not dependency order: iterate to a
    // fixpoint.
    let mut changed = true;
    while changed {
        changed = false;
        for i in 0..n {
            let Some(t) = &slots[i] else { continue };
            let mut add: Vec<String> = t
                .deps
                .iter()
                .filter_map(|&d| needs[d].clone())
                .flatten()
                .collect();
            if add.is_empty() {
                continue;
            }
            let mine = needs[i].get_or_insert_with(Vec::new);
            add.retain(|p| !mine.contains(p));
            if !add.is_empty() {
                mine.extend(add);
                mine.sort();
                mine.dedup();
                changed = true;
            }
        }
    }
    let mut new_index = vec![usize::MAX; n];
    let mut kept = 0;
    for i in 0..n {
        if needs[i].is_none() && slots[i].is_some() {
            new_index[i] = kept;
            kept += 1;
        }
    }
    let mut targets = Vec::with_capacity(kept);
    let mut skipped = Vec::new();
    for (i, (slot, label)) in slots.into_iter().zip(labels).enumerate() {
        match (slot, needs[i].take()) {
            (Some(mut t), None) => {
                for d in &mut t.deps {
                    *d = new_index[*d];
                }
                targets.push(t);
            }
            (_, need) => skipped.push((label, need.unwrap_or_default())),
        }
    }
    (targets, skipped)
}

/// `[workspace] inputs`, validated: root-relative patterns.
#[derive(Debug)]
pub struct WorkspaceInputs {
    /// Normalized as written (for the key), `!` kept.
    pub patterns: Vec<String>,
    pub matcher: SrcMatcher,
}

/// The failure to load: all diagnostics found.
#[derive(Debug)]
pub struct LoadError(pub Vec<Diagnostic>);

/// Finds the workspace root at or above `start`.
pub fn find_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join(WORKSPACE_FILE).is_file())
        .map(Path::to_path_buf)
}

/// The package containing `dir` (nearest ancestor with a BUILD.toml), workspace-relative.
pub fn package_of(root: &Path, dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(root).ok()?;
    rel.ancestors()
        .find(|p| root.join(p).join(BUILD_FILE).is_file())
        .map(|p| p.to_string_lossy().replace('\\', "/"))
}

/// Directories never searched for packages or sources.
pub fn skipped_dir(name: &str) -> bool {
    name == "node_modules" || name.starts_with('.')
}

/// `root` and every directory below it that is searched (see
/// `skipped_dir`), sorted by name, without following symlinks.
pub fn searched_dirs(root: &Path) -> impl Iterator<Item = walkdir::DirEntry> {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || (e.file_type().is_dir() && !skipped_dir(&e.file_name().to_string_lossy()))
        })
        .flatten()
}

fn rel_display(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).unwrap_or(path).to_path_buf()
}

impl Workspace {
    pub fn load(root: &Path) -> Result<Workspace, LoadError> {
        let root = root.canonicalize().map_err(|e| {
            LoadError(vec![Diagnostic::file(
                root,
                format!("cannot open workspace: {e}"),
            )])
        })?;
        let ws_file = root.join(WORKSPACE_FILE);
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| {
                Diagnostic::file(&rel_display(&root, path), format!("cannot read: {e}"))
            })
        };
        let ws_source = read(&ws_file).map_err(|d| LoadError(vec![d]))?;
        let def = parse_workspace_file(Path::new(WORKSPACE_FILE), &ws_source)
            .map_err(|d| LoadError(vec![d]))?;

        let mut diags = Vec::new();
        // Errors of one BUILD.toml, by package: fatal only for commands
        // that need that package (see `Workspace::broken`).
        let mut pkg_diags: BTreeMap<String, Vec<Diagnostic>> = BTreeMap::new();
        let exclude = workspace_exclude(&def, &ws_file, &mut diags);
        let prune = Prune::new(&exclude.1, def.inputs.iter().map(|i| i.get_ref().as_str()));
        let mut tree = walk_workspace(&root, &prune);
        let packages = tree.packages.clone();
        let mut parsed = Vec::new();
        for (pkg, file) in packages
            .iter()
            .zip(read_build_files(&root, &packages, &def))
        {
            match file {
                Ok((rel_file, source, targets)) => {
                    parsed.push((pkg.clone(), rel_file, source, targets))
                }
                Err(d) => pkg_diags.entry(pkg.clone()).or_default().push(d),
            }
        }

        // Hidden directories are listed only where a pattern names them.
        let mut hidden_roots: Vec<String> = parsed
            .iter()
            .flat_map(|(pkg, _, _, targets)| {
                targets.values().flat_map(move |t| {
                    t.get_ref().srcs.iter().filter_map(move |s| {
                        let text = s.get_ref();
                        let (path, _) = normalize(text.strip_prefix('!').unwrap_or(text)).ok()?;
                        Some(join_package(pkg, &crate::globs::hidden_root(&path)?))
                    })
                })
            })
            .chain(def.inputs.iter().filter_map(|s| {
                let (path, _) = normalize(s.get_ref()).ok()?;
                crate::globs::hidden_root(&path)
            }))
            .collect();
        hidden_roots.sort();
        hidden_roots.dedup();
        add_hidden_dirs(&root, &hidden_roots, &mut tree, &prune);
        let inputs = workspace_inputs(&def, &ws_source, &tree, &mut diags);

        // Labels first, so deps can point at any package.
        let mut by_label = LabelMap::default();
        let mut defs = Vec::new();
        for (pkg, file, source, targets) in &parsed {
            for (name, def) in targets {
                let label = Label {
                    package: pkg.clone(),
                    name: name.clone(),
                };
                defs.push((label, file, source, def));
            }
        }
        defs.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (label, ..)) in defs.iter().enumerate() {
            by_label.insert(label.clone(), i);
        }

        let mut package_outs: HashMap<String, Vec<OutSpec>> = HashMap::new();
        for (label, _, _, def) in &defs {
            let d = def.get_ref();
            let outs = d
                .outs
                .iter()
                .chain(&d.optional_outs)
                .filter_map(|o| OutSpec::parse(o.get_ref()).ok());
            package_outs
                .entry(label.package.clone())
                .or_default()
                .extend(outs);
        }
        let unparsed: std::collections::HashSet<String> = pkg_diags.keys().cloned().collect();
        let shared = Shared {
            by_label: &by_label,
            root: &root,
            files: &tree.files,
            package_outs: &package_outs,
            unparsed: &unparsed,
            exclude: &exclude.1,
        };
        let (slots, into_unparsed) = match validate_parallel(&shared, &defs) {
            Some(clean) => clean,
            None => {
                // Serial, as it always was when anything is wrong: the
                // diagnostics (and which of them get a location) depend
                // on the order and count of those before them.
                let mut into_unparsed: HashMap<Label, Vec<String>> = HashMap::new();
                let mut slots = Vec::with_capacity(defs.len());
                let mut matchers = MatcherMap::default();
                for (label, file, source, def) in &defs {
                    let before = diags.len();
                    let slot = shared.validate(
                        (label, file, source, def),
                        &mut diags,
                        &mut matchers,
                        &mut into_unparsed,
                    );
                    slots.push(slot);
                    if diags.len() > before {
                        let found = diags.split_off(before);
                        pkg_diags
                            .entry(label.package.clone())
                            .or_default()
                            .extend(found);
                    }
                }
                (slots, into_unparsed)
            }
        };
        // Overlapping outputs: an error of the package whose BUILD.toml the
        // diagnostic points at.
        let valid: Vec<&Target> = slots.iter().flatten().collect();
        for d in overlaps(&defs, &valid, &packages) {
            let package = d
                .file
                .parent()
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            pkg_diags.entry(package).or_default().push(d);
        }
        if !diags.is_empty() {
            // vbuild.toml's own errors concern every command.
            diags.extend(pkg_diags.into_values().flatten());
            return Err(LoadError(diags));
        }
        let labels: Vec<Label> = defs.iter().map(|d| d.0.clone()).collect();
        let (targets, skipped) = drop_broken(slots, labels, &pkg_diags, &into_unparsed);
        if let Some(cycle) = crate::graph::find_cycle(&targets) {
            return Err(LoadError(vec![cycle_diagnostic(&targets, &cycle, &parsed)]));
        }
        let broken = pkg_diags
            .into_iter()
            .map(|(package, diagnostics)| Broken {
                package,
                diagnostics,
            })
            .collect();
        Ok(Workspace {
            root,
            def,
            targets,
            packages,
            tree,
            exclude: exclude.0,
            inputs,
            broken,
            skipped,
        })
    }

    /// Whether `patterns` need a package whose BUILD.toml has errors: then
    /// its errors are the command's (returned); otherwise they are printed
    /// as warnings and the command goes on without that package. `None`
    /// (`vbuild query`, `clean`): never fatal.
    pub fn check_broken(
        &self,
        patterns: Option<&[vbuild_schema::Pattern]>,
    ) -> Result<(), LoadError> {
        use vbuild_schema::Pattern;
        if self.broken.is_empty() {
            return Ok(());
        }
        // Whether a pattern could select a target of `package` (whose
        // targets may not even have parsed).
        let covers = |p: &Pattern, package: &str| match p {
            Pattern::Target(l) => l.package == package,
            Pattern::Named { name, .. } => p.matches(&Label {
                package: package.to_string(),
                name: name.clone(),
            }),
            _ => p.matches(&Label {
                package: package.to_string(),
                name: "x".into(),
            }),
        };
        let mut needed: std::collections::BTreeSet<&str> = Default::default();
        for p in patterns.unwrap_or(&[]) {
            for b in &self.broken {
                if covers(p, &b.package) {
                    needed.insert(&b.package);
                }
            }
            for (label, needs) in &self.skipped {
                if p.matches(label) {
                    needed.extend(needs.iter().map(String::as_str));
                }
            }
        }
        let mut errors = Vec::new();
        for b in &self.broken {
            if needed.contains(b.package.as_str()) {
                errors.extend(b.diagnostics.iter().cloned());
            } else {
                for d in b.diagnostics.iter().take(MAX_SHOWN_ERRORS) {
                    eprintln!("warning: {d}");
                }
                if b.diagnostics.len() > MAX_SHOWN_ERRORS {
                    let more = b.diagnostics.len() - MAX_SHOWN_ERRORS;
                    eprintln!("warning: … and {more} more errors like these");
                }
                eprintln!(
                    "warning: skipped //{} and what depends on it: its BUILD.toml has errors (not needed by this command)",
                    b.package
                );
            }
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(LoadError(errors)),
        }
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Whether a target's actions see node_modules and node.
    pub fn uses_node(&self, target: &Target) -> bool {
        target.node_modules.unwrap_or(self.def.node_modules)
    }
}

/// What every target's validation reads (see `TargetCtx`).
struct Shared<'a> {
    by_label: &'a LabelMap,
    root: &'a Path,
    files: &'a [String],
    package_outs: &'a HashMap<String, Vec<OutSpec>>,
    unparsed: &'a std::collections::HashSet<String>,
    /// `[workspace] exclude` globs, appended to every target's patterns.
    exclude: &'a [String],
}

/// One target definition as collected from the BUILD.toml files.
type Def<'a> = (
    &'a Label,
    &'a PathBuf,
    &'a String,
    &'a vbuild_schema::Spanned<TargetDef>,
);

impl Shared<'_> {
    fn validate(
        &self,
        (label, file, source, def): Def,
        diags: &mut Vec<Diagnostic>,
        matchers: &mut MatcherMap,
        into_unparsed: &mut HashMap<Label, Vec<String>>,
    ) -> Option<Target> {
        let mut ctx = TargetCtx {
            file,
            source,
            diags,
            by_label: self.by_label,
            root: self.root,
            files: self.files,
            matchers,
            package_outs: self.package_outs,
            target_span: def.span(),
            unparsed: self.unparsed,
            into_unparsed,
        };
        let mut slot = ctx.validate(label, def.get_ref());
        if let Some(t) = &mut slot {
            // Workspace exclusions are part of what decides the inputs.
            t.src_patterns
                .extend(self.exclude.iter().map(|g| format!("!//{g}")));
        }
        slot
    }
}

/// The validated targets (in `defs` order) and the deps into unparsed
/// packages, computed on every core; `None` if any target has an error
/// (the caller then validates serially, which reports them exactly as
/// before). Each target's validation reads only shared, immutable state,
/// so the clean result equals the serial one; the threads only duplicate
/// compiling a srcs pattern list that both of them meet.
#[allow(clippy::type_complexity)]
fn validate_parallel(
    shared: &Shared,
    defs: &[(Label, &PathBuf, &String, &vbuild_schema::Spanned<TargetDef>)],
) -> Option<(Vec<Option<Target>>, HashMap<Label, Vec<String>>)> {
    // Below this a thread costs more than it saves.
    const PER_THREAD: usize = 64;
    // On one core the serial validation is the only one.
    if crate::cores().min(defs.len() / PER_THREAD) < 2 {
        return None;
    }
    let parts = on_cores(defs, PER_THREAD, |part| {
        let (mut matchers, mut into_unparsed) = (MatcherMap::default(), HashMap::new());
        let mut diags = Vec::new();
        let mut slots = Vec::with_capacity(part.len());
        for (label, file, source, def) in part {
            let slot = shared.validate(
                (label, file, source, def),
                &mut diags,
                &mut matchers,
                &mut into_unparsed,
            );
            if !diags.is_empty() {
                return None;
            }
            slots.push(slot);
        }
        Some((slots, into_unparsed))
    });
    let mut slots = Vec::with_capacity(defs.len());
    let mut into_unparsed = HashMap::new();
    for part in parts {
        let (s, u) = part?;
        slots.extend(s);
        into_unparsed.extend(u);
    }
    Some((slots, into_unparsed))
}

struct TargetCtx<'a> {
    file: &'a Path,
    source: &'a str,
    diags: &'a mut Vec<Diagnostic>,
    by_label: &'a LabelMap,
    root: &'a Path,
    /// Every file of the workspace (sorted), from the walk.
    files: &'a [String],
    /// Compiled srcs by pattern list: monorepo packages mostly share them.
    matchers: &'a mut MatcherMap,
    /// Outputs declared by each package's targets (never sources).
    package_outs: &'a HashMap<String, Vec<OutSpec>>,
    /// The `[target.NAME]` table being validated.
    target_span: std::ops::Range<usize>,
    /// Packages whose BUILD.toml did not parse: a dep into one is not an
    /// unknown label, it makes its target need that package.
    unparsed: &'a std::collections::HashSet<String>,
    into_unparsed: &'a mut HashMap<Label, Vec<String>>,
}

impl TargetCtx<'_> {
    /// Why a literal srcs entry would stage nothing: it must be a file (or
    /// symlink) the package's own listing holds. Returns (problem, help).
    fn literal_problem(&self, package: &str, rel: &str) -> Option<(String, &'static str)> {
        let pkg_dir = self.root.join(package);
        let parts: Vec<&str> = rel.split('/').collect();
        let dirs = &parts[..parts.len() - 1];
        if dirs.contains(&"node_modules") {
            return Some((
                "is inside node_modules, which is never a source".into(),
                "node_modules are staged with `node_modules = true`; depend on a workspace package's target for its files",
            ));
        }
        for depth in 1..=dirs.len() {
            let sub = dirs[..depth].join("/");
            if pkg_dir.join(&sub).join(BUILD_FILE).is_file() {
                return Some((
                    format!(
                        "belongs to the sub-package //{}",
                        join_package(package, &sub)
                    ),
                    "depend on a target of that package instead",
                ));
            }
        }
        if let Some(outs) = self.package_outs.get(package) {
            let globs: Vec<_> = outs
                .iter()
                .map(|o| match o {
                    OutSpec::Glob(g) => crate::globs::out_glob(g).ok(),
                    _ => None,
                })
                .collect();
            if outs
                .iter()
                .zip(&globs)
                .any(|(o, g)| o.covers(rel, g.as_ref()))
            {
                return Some((
                    "is an output of a target of this package".into(),
                    "outputs are never sources; depend on the target that produces it",
                ));
            }
        }
        // The load walk listed every file (never a directory): a file it
        // saw needs no stat.
        let path = join_package(package, rel);
        if self.files.binary_search(&path).is_ok() {
            return None;
        }
        // One component at a time, never following a symlink: a path
        // through a symlinked directory (`a/etc -> /etc`) would otherwise
        // stat, and later stage, a file outside the workspace.
        let mut at = pkg_dir;
        for (i, part) in parts.iter().enumerate() {
            at.push(part);
            let last = i + 1 == parts.len();
            match std::fs::symlink_metadata(&at) {
                Err(_) => {
                    return Some((
                        "matches no file".into(),
                        "create the file, fix the path (srcs are relative to the package), or remove the entry",
                    ))
                }
                Ok(m) if !last && m.file_type().is_symlink() => {
                    return Some((
                        format!("goes through the symlink '{}'", parts[..=i].join("/")),
                        "vbuild never follows a symlinked directory while loading; list the files where they really are",
                    ))
                }
                Ok(m) if last && m.is_dir() => {
                    return Some((
                        "is a directory".into(),
                        "write it with a trailing / (\"dir/\") to include everything in it",
                    ))
                }
                Ok(_) => {}
            }
        }
        None
    }

    /// A target without `command` is a file group: it needs srcs, and the
    /// settings of a command make no sense on it.
    fn check_file_group(&mut self, label: &Label, def: &TargetDef) {
        if def.srcs.is_empty() {
            let d = Diagnostic::at(
                self.file,
                self.source,
                Some(self.target_span.clone()),
                format!("{label}: no `command` and no `srcs`"),
            )
            .with_help("give a command to run, or srcs to make it a file group (docs/guide.md#file-groups)");
            self.diags.push(d);
            return;
        }
        let mut set: Vec<(&str, Option<std::ops::Range<usize>>)> = vec![];
        if let Some(o) = def.outs.first() {
            set.push(("outs", Some(o.span())));
        }
        if let Some(o) = def.optional_outs.first() {
            set.push(("optional_outs", Some(o.span())));
        }
        if let Some(p) = def.pass_env.first() {
            set.push(("pass_env", Some(p.span())));
        }
        if let Some(c) = &def.cache {
            set.push(("cache", Some(c.span())));
        }
        if let Some(s) = &def.sandbox {
            set.push(("sandbox", Some(s.span())));
        }
        if let Some(t) = &def.timeout {
            set.push(("timeout", Some(t.span())));
        }
        if !def.env.is_empty() {
            set.push(("env", None));
        }
        if def.network {
            set.push(("network", None));
        }
        if def.node_modules.is_some() {
            set.push(("node_modules", None));
        }
        for (field, span) in set {
            let d = Diagnostic::at(
                self.file,
                self.source,
                Some(span.unwrap_or_else(|| self.target_span.clone())),
                format!(
                    "{label}: `{field}` has no effect on a file group (a target without `command`)"
                ),
            )
            .with_help("a file group only has srcs and deps; add a command, or remove the field");
            self.diags.push(d);
        }
    }

    fn error(&mut self, span: std::ops::Range<usize>, msg: String, help: &str) {
        // Locating a span scans the file up to it; past the errors anyone
        // reads, only the count matters, so later ones skip the scan (10,000
        // errors on one long line were quadratic).
        let span = (self.diags.len() < MAX_LOCATED_ERRORS).then_some(span);
        let d = Diagnostic::at(self.file, self.source, span, msg);
        self.diags.push(if help.is_empty() {
            d
        } else {
            d.with_help(help)
        });
    }

    fn validate(&mut self, label: &Label, def: &TargetDef) -> Option<Target> {
        let before = self.diags.len();
        let argv = match &def.command {
            Some(command) => {
                let empty = match command.get_ref() {
                    Command::Shell(script) => script.trim().is_empty(),
                    Command::Argv(argv) => argv.first().is_none_or(|a| a.is_empty()),
                };
                if empty {
                    self.error(
                        command.span(),
                        format!("{label}: command is empty"),
                        "give a shell string or a non-empty argv array",
                    );
                }
                command.get_ref().argv()
            }
            None => {
                self.check_file_group(label, def);
                Vec::new()
            }
        };
        let mut src_patterns = Vec::new();
        for src in &def.srcs {
            let text = src.get_ref();
            let (negated, body) = match text.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, text.as_str()),
            };
            match normalize(body) {
                Ok((path, is_dir)) => {
                    let pattern = if is_dir { format!("{path}/**") } else { path };
                    if let Err(e) = crate::globs::glob(&pattern) {
                        self.error(src.span(), format!("{label}: invalid glob {text:?} in srcs: {}", e.kind()), "");
                    } else if !negated && !crate::globs::is_glob(&pattern) {
                        if let Some((why, help)) = self.literal_problem(&label.package, &pattern) {
                            self.error(src.span(), format!("{label}: srcs entry {text:?} {why}"), help);
                        }
                    }
                    src_patterns.push((negated, pattern));
                }
                Err(why) => self.error(
                    src.span(),
                    format!("{label}: srcs entry {text:?} escapes the package: {why}"),
                    "srcs are globs relative to the package; depend on another package's target to use its files",
                ),
            }
        }
        // Each pattern was checked above, so this only fails after an error.
        let srcs = match self.matchers.get(&src_patterns) {
            Some(m) => Some(m.clone()),
            None => SrcMatcher::new(&src_patterns).ok().inspect(|m| {
                self.matchers.insert(src_patterns.clone(), m.clone());
            }),
        };
        let mut outs = Vec::new();
        for out in def.outs.iter().chain(&def.optional_outs) {
            match OutSpec::parse(out.get_ref()) {
                Ok(spec) => {
                    if let OutSpec::Glob(g) = &spec {
                        if let Err(e) = crate::globs::out_glob(g) {
                            self.error(
                                out.span(),
                                format!("{label}: invalid glob in outs: {e}"),
                                "",
                            );
                        }
                    }
                    outs.push(spec)
                }
                Err(why) => self.error(
                    out.span(),
                    format!(
                        "{label}: output {:?} is outside the package: {why}",
                        out.get_ref()
                    ),
                    "a target may only write inside its own package",
                ),
            }
        }
        let mut deps = Vec::new();
        for dep in &def.deps {
            match Label::parse(dep.get_ref(), Some(&label.package)) {
                Ok(dep_label) => match self.by_label.get(&dep_label) {
                    Some(&i) if !deps.contains(&i) => deps.push(i),
                    Some(_) => {}
                    None if self.unparsed.contains(&dep_label.package) => {
                        self.into_unparsed
                            .entry(label.clone())
                            .or_default()
                            .push(dep_label.package.clone());
                    }
                    None => {
                        let help = known_targets_help(self.by_label, &dep_label);
                        self.error(
                            dep.span(),
                            format!("{label}: unknown label {dep_label} in deps"),
                            &help,
                        )
                    }
                },
                Err(e) => self.error(dep.span(), format!("{label}: {e}"), ""),
            }
        }
        let timeout = def.timeout.as_ref().and_then(|t| {
            let parsed = parse_duration(t.get_ref());
            if parsed.is_none() {
                self.error(
                    t.span(),
                    format!("{label}: invalid timeout {:?}", t.get_ref()),
                    "write a number with a unit: 500ms, 90s, 10m, 1h",
                );
            }
            parsed
        });
        let mut pass_env: Vec<String> = def.pass_env.iter().map(|s| s.get_ref().clone()).collect();
        pass_env.sort();
        pass_env.dedup();
        if self.diags.len() > before {
            return None;
        }
        Some(Target {
            label: label.clone(),
            file_group: def.command.is_none(),
            argv,
            src_patterns: src_patterns
                .iter()
                .map(|(neg, p)| if *neg { format!("!{p}") } else { p.clone() })
                .collect(),
            srcs: srcs?,
            deps,
            required_outs: def.outs.len().min(outs.len()),
            outs,
            env: def.env.clone(),
            pass_env,
            cache: def
                .cache
                .as_ref()
                .map_or(CacheSetting::On, |c| *c.get_ref()),
            sandbox: def.sandbox.as_ref().map(|s| *s.get_ref()),
            network: def.network,
            timeout,
            node_modules: def.node_modules,
        })
    }
}

/// `[workspace] exclude`, compiled (and the normalized globs, for the key).
fn workspace_exclude(
    def: &WorkspaceDef,
    ws_file: &Path,
    diags: &mut Vec<Diagnostic>,
) -> (globset::GlobSet, Vec<String>) {
    let mut set = globset::GlobSetBuilder::new();
    let mut globs = Vec::new();
    let source = std::fs::read_to_string(ws_file).unwrap_or_default();
    for g in &def.exclude {
        let text = g.get_ref();
        let pattern = match normalize(text) {
            Ok((p, true)) => format!("{p}/**"),
            Ok((p, false)) => p,
            Err(why) => {
                diags.push(
                    Diagnostic::at(Path::new(WORKSPACE_FILE), &source, Some(g.span()), format!("exclude entry {text:?}: {why}"))
                        .with_help("exclude takes globs relative to the workspace root, e.g. \"**/coverage/**\""),
                );
                continue;
            }
        };
        match crate::globs::glob(&pattern) {
            Ok(glob) => {
                set.add(glob);
                globs.push(pattern);
            }
            Err(e) => diags.push(Diagnostic::at(
                Path::new(WORKSPACE_FILE),
                &source,
                Some(g.span()),
                format!("exclude entry {text:?} is not a valid glob: {}", e.kind()),
            )),
        }
    }
    let set = set.build().unwrap_or_else(|_| globset::GlobSet::empty());
    (set, globs)
}

/// One parsed BUILD.toml: package, file, source text, targets.
type ParsedFile = (
    String,
    PathBuf,
    String,
    BTreeMap<String, vbuild_schema::Spanned<TargetDef>>,
);

/// A workspace-relative path: `rel` inside `package` ("" is the root).
pub fn join_package(package: &str, rel: &str) -> String {
    if package.is_empty() {
        rel.to_string()
    } else {
        // Not `format!`: this runs for every file of the walk and every
        // dependency edge of a run, and the formatting machinery (growing
        // an empty String piecewise) was most of its cost.
        let mut joined = String::with_capacity(package.len() + 1 + rel.len());
        joined.push_str(package);
        joined.push('/');
        joined.push_str(rel);
        joined
    }
}

/// What to suggest for a label that names no target.
fn known_targets_help(by_label: &LabelMap, missing: &Label) -> String {
    let mut names: Vec<&str> = by_label
        .keys()
        .filter(|l| l.package == missing.package)
        .map(|l| l.name.as_str())
        .collect();
    names.sort();
    if names.is_empty() {
        format!(
            "there is no package //{} (no {}/BUILD.toml); `vbuild query` lists the targets",
            missing.package, missing.package
        )
    } else {
        format!("//{} has: {}", missing.package, names.join(", "))
    }
}

/// The overlap rule (`crate::overlap`) over the targets that loaded, each
/// output pointing at its `outs` entry (or the target, for one it did not
/// write itself).
fn overlaps(
    defs: &[(Label, &PathBuf, &String, &vbuild_schema::Spanned<TargetDef>)],
    targets: &[&Target],
    packages: &[String],
) -> Vec<Diagnostic> {
    let by_label: HashMap<&Label, &Target> = targets.iter().map(|t| (&t.label, *t)).collect();
    let declared: Vec<crate::overlap::Declared> = defs
        .iter()
        .filter_map(|(label, file, source, def)| {
            let target = by_label.get(label)?;
            let d = def.get_ref();
            let written: Vec<(OutSpec, std::ops::Range<usize>)> = d
                .outs
                .iter()
                .chain(&d.optional_outs)
                .filter_map(|o| Some((OutSpec::parse(o.get_ref()).ok()?, o.span())))
                .collect();
            let outs = target
                .outs
                .iter()
                .map(|spec| {
                    let span = written
                        .iter()
                        .find(|(w, _)| w == spec)
                        .map_or_else(|| def.span(), |(_, s)| s.clone());
                    (spec.clone(), span)
                })
                .collect();
            Some(crate::overlap::Declared {
                label,
                file,
                source,
                outs,
            })
        })
        .collect();
    crate::overlap::check(&declared, packages)
}

fn cycle_diagnostic(targets: &[Target], cycle: &[usize], parsed: &[ParsedFile]) -> Diagnostic {
    let path: Vec<String> = cycle
        .iter()
        .map(|&i| targets[i].label.to_string())
        .collect();
    let first = &targets[cycle[0]];
    let next = &targets[cycle[1 % cycle.len()]].label;
    // Point at the dep entry that closes the first edge of the cycle.
    let (_, file, source, defs) = parsed
        .iter()
        .find(|(pkg, ..)| *pkg == first.label.package)
        .expect("target came from a parsed file");
    let span = defs[&first.label.name]
        .get_ref()
        .deps
        .iter()
        .find(|d| {
            Label::parse(d.get_ref(), Some(&first.label.package))
                .ok()
                .as_ref()
                == Some(next)
        })
        .map(|d| d.span());
    Diagnostic::at(
        file,
        source,
        span,
        format!("dependency cycle: {} -> {}", path.join(" -> "), path[0]),
    )
    .with_help("remove one of these deps; a target cannot depend on itself, even indirectly")
}

/// Checks and compiles `[workspace] inputs`: root-relative, no `..`, valid
/// globs, literals naming a file the walk found.
fn workspace_inputs(
    def: &WorkspaceDef,
    source: &str,
    tree: &Tree,
    diags: &mut Vec<Diagnostic>,
) -> WorkspaceInputs {
    let file = Path::new(WORKSPACE_FILE);
    let mut patterns = Vec::new();
    for input in &def.inputs {
        let text = input.get_ref();
        let (negated, body) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let problem = match normalize(body) {
            Err(why) => Some((
                format!("workspace input {text:?} leaves the workspace: {why}"),
                "inputs are paths or globs relative to the workspace root",
            )),
            Ok((path, is_dir)) => {
                let pattern = if is_dir { format!("{path}/**") } else { path };
                let problem = if let Err(e) = crate::globs::glob(&pattern) {
                    Some((format!("invalid glob {text:?} in inputs: {}", e.kind()), ""))
                } else if pattern.split('/').any(|s| s == "node_modules") {
                    Some((
                        format!("workspace input {text:?} is inside node_modules"),
                        "node_modules are staged with `node_modules = true`",
                    ))
                } else if !negated
                    && !crate::globs::is_glob(&pattern)
                    && tree.files.binary_search(&pattern).is_err()
                {
                    let help = if root_is_dir(tree, &pattern) {
                        "write it with a trailing / (\"dir/\") to include everything in it"
                    } else {
                        "create the file, fix the path (inputs are relative to the workspace root), or remove the entry"
                    };
                    Some((format!("workspace input {text:?} matches no file"), help))
                } else {
                    None
                };
                patterns.push((negated, pattern));
                problem
            }
        };
        if let Some((msg, help)) = problem {
            let d = Diagnostic::at(file, source, Some(input.span()), msg);
            diags.push(if help.is_empty() {
                d
            } else {
                d.with_help(help)
            });
        }
    }
    let matcher = SrcMatcher::new(&patterns)
        .unwrap_or_else(|_| SrcMatcher::new(&[]).expect("an empty matcher compiles"));
    WorkspaceInputs {
        patterns: patterns
            .iter()
            .map(|(neg, p)| if *neg { format!("!{p}") } else { p.clone() })
            .collect(),
        matcher,
    }
}

/// Whether some file the walk found lies under `dir`.
fn root_is_dir(tree: &Tree, dir: &str) -> bool {
    let prefix = format!("{dir}/");
    let at = tree.files.partition_point(|f| f.as_str() < prefix.as_str());
    tree.files.get(at).is_some_and(|f| f.starts_with(&prefix))
}

/// Adds the files of hidden directories that patterns name literally
/// (`.vitepress/**`): the load walk skips every hidden directory.
fn add_hidden_dirs(root: &Path, dirs: &[String], tree: &mut Tree, prune: &Prune) {
    let mut extra = Tree::default();
    for dir in dirs {
        let abs = root.join(dir);
        if std::fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir()) {
            walk_dir(&abs, dir, &mut extra, prune);
        }
    }
    if extra.files.is_empty() && extra.errors.is_empty() {
        return;
    }
    tree.files.append(&mut extra.files);
    tree.files.sort();
    tree.files.dedup();
    tree.errors.append(&mut extra.errors);
}

/// What one walk of the workspace finds (everything but `node_modules` and
/// dot-directories): the packages and every file, so that listing a
/// package's sources later needs no second walk.
#[derive(Default)]
pub struct Tree {
    /// Directories holding a BUILD.toml, workspace-relative, sorted.
    pub packages: Vec<String>,
    /// Files and symlinks (not directories), workspace-relative, sorted
    /// bytewise.
    pub files: Vec<String>,
    /// Directories (workspace-relative) that could not be listed, and
    /// non-UTF-8 names, with the reason: an error for the package holding them.
    pub errors: Vec<(String, String)>,
    /// Directories holding a `node_modules` directory ("" for the root),
    /// sorted: recorded by the same walk, so node_modules staging needs
    /// no second one.
    pub module_dirs: Vec<String>,
}

/// Walks the workspace once. `read_dir` reports entry types without a
/// `stat` per file. The walk was the largest serial step of loading a large
/// workspace (a no-op run waits for it), so it goes breadth-first until
/// there are enough directories to share, then each core walks its part of
/// them depth-first; the parts are merged and sorted, so the result is the
/// same as a serial walk's.
fn walk_workspace(root: &Path, prune: &Prune) -> Tree {
    const PER_THREAD: usize = 16;
    let mut tree = Tree::default();
    let mut frontier = vec![(root.to_path_buf(), String::new())];
    while !frontier.is_empty() && frontier.len() < PER_THREAD * crate::cores() {
        let mut next = Vec::new();
        for (dir, rel) in &frontier {
            list_dir(dir, rel, &mut tree, &mut next, prune);
        }
        frontier = next;
    }
    let parts = on_cores(&frontier, PER_THREAD, |part| {
        let mut tree = Tree::default();
        for (dir, rel) in part {
            walk_dir(dir, rel, &mut tree, prune);
        }
        tree
    });
    for mut part in parts {
        tree.packages.append(&mut part.packages);
        tree.files.append(&mut part.files);
        tree.errors.append(&mut part.errors);
        tree.module_dirs.append(&mut part.module_dirs);
    }
    tree.packages.sort();
    tree.files.sort();
    tree.module_dirs.sort();
    tree.errors.sort();
    tree
}

/// One package's BUILD.toml: its workspace-relative path, text and
/// targets (defaults applied), or the diagnostic of reading or parsing it.
type BuildFile = Result<
    (
        PathBuf,
        String,
        BTreeMap<String, vbuild_schema::Spanned<TargetDef>>,
    ),
    Diagnostic,
>;

/// Reads and parses every package's BUILD.toml, in the order of
/// `packages`. Each file is independent of the others, so they are split
/// over the cores: parsing (TOML with spans) was the largest serial part of
/// loading a 1000-package workspace, and a no-op run waits for it.
fn read_build_files(root: &Path, packages: &[String], def: &WorkspaceDef) -> Vec<BuildFile> {
    let one = |pkg: &String| -> BuildFile {
        let rel_file = Path::new(pkg).join(BUILD_FILE);
        let source = std::fs::read_to_string(root.join(&rel_file))
            .map_err(|e| Diagnostic::file(&rel_file, format!("cannot read: {e}")))?;
        let mut targets = parse_build_file(&rel_file, &source)?;
        vbuild_schema::apply_defaults(&mut targets, &source, &def.defaults);
        Ok((rel_file, source, targets))
    };
    on_cores(packages, 32, |part| {
        part.iter().map(one).collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// Runs `work` on consecutive parts of `items`, one part per core (fewer
/// when a part would hold fewer than `per_thread` items: below that a
/// thread costs more than it saves), and returns the parts' results in
/// order. Loading splits its independent steps this way: a no-op run
/// waits for all of them.
fn on_cores<T: Sync, R: Send>(
    items: &[T],
    per_thread: usize,
    work: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    let threads = crate::cores().min(items.len() / per_thread.max(1)).max(1);
    if threads == 1 {
        return vec![work(items)];
    }
    let chunk = items.len().div_ceil(threads);
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || work(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Lists `dir` (workspace-relative `rel`) and everything below it into
/// `tree`, depth-first, not descending into node_modules, hidden
/// directories or directories `prune` covers.
fn walk_dir(dir: &Path, rel: &str, tree: &mut Tree, prune: &Prune) {
    match listdir::Dir::open(dir) {
        Ok(open) => walk_open(&open, dir, rel, tree, prune),
        Err(e) => tree
            .errors
            .push((rel.to_string(), format!("reading {}: {e}", dir.display()))),
    }
}

/// `walk_dir` of a directory already open: each subdirectory is opened by
/// its name in it (`listdir.rs`), while this one stays open. Entries go
/// into `tree` in bytewise order of their paths (a directory's files at
/// the place of `name/`), so each core's part comes out sorted and the
/// final sort of the merged parts only merges a few runs.
fn walk_open(open: &listdir::Dir, dir: &Path, rel: &str, tree: &mut Tree, prune: &Prune) {
    for entry in list_open(open, dir, rel, tree, prune) {
        match entry {
            Listed::File(sub) => tree.files.push(sub),
            Listed::Dir(sub) => {
                let path = dir.join(&sub[sub.len() - subdir_name_len(&sub)..]);
                let name = path.file_name().expect("a listed entry has a name");
                match open.open_sub(name) {
                    Ok(open) => walk_open(&open, &path, &sub, tree, prune),
                    Err(e) => tree
                        .errors
                        .push((sub.clone(), format!("reading {}: {e}", path.display()))),
                }
            }
        }
    }
}

/// The length of the last component of a workspace-relative path.
fn subdir_name_len(sub: &str) -> usize {
    sub.rfind('/').map_or(sub.len(), |i| sub.len() - i - 1)
}

/// Lists the entries of `dir` alone into `tree`; the directories to walk
/// next (not node_modules, not hidden, not covered by the exclusions: see
/// `prune.rs`) go to `subdirs`.
fn list_dir(
    dir: &Path,
    rel: &str,
    tree: &mut Tree,
    subdirs: &mut Vec<(PathBuf, String)>,
    prune: &Prune,
) {
    let open = match listdir::Dir::open(dir) {
        Ok(open) => open,
        Err(e) => {
            tree.errors
                .push((rel.to_string(), format!("reading {}: {e}", dir.display())));
            return;
        }
    };
    for entry in list_open(&open, dir, rel, tree, prune) {
        match entry {
            Listed::File(sub) => tree.files.push(sub),
            Listed::Dir(sub) => {
                let path = dir.join(&sub[sub.len() - subdir_name_len(&sub)..]);
                subdirs.push((path, sub));
            }
        }
    }
}

/// A listed file (or symlink) or a directory to walk, workspace-relative.
enum Listed {
    File(String),
    Dir(String),
}

/// The entries of one open directory to record or walk, sorted as their
/// paths sort (a directory as `name/`); records packages, node_modules
/// and errors into `tree` on the way.
fn list_open(
    open: &listdir::Dir,
    dir: &Path,
    rel: &str,
    tree: &mut Tree,
    prune: &Prune,
) -> Vec<Listed> {
    let mut found: Vec<(String, bool)> = Vec::new();
    let listed = open.entries(|name, kind| {
        let Some(name) = name.to_str() else {
            tree.errors.push((
                rel.to_string(),
                format!("{}: file names must be UTF-8", dir.join(name).display()),
            ));
            return;
        };
        let is_dir = kind == listdir::Kind::Dir;
        if is_dir && skipped_dir(name) {
            if name == "node_modules" {
                tree.module_dirs.push(rel.to_string());
            }
            return;
        }
        // A temp file of a restore (ours, or one a killed run left) is
        // never a source: it would become an input of the next run.
        if vbuild_store::temp::is_temp_name(name) {
            return;
        }
        let mut sub = join_package(rel, name);
        if is_dir {
            if !prune.covers(&sub) {
                // Sorted as the paths of its files will be.
                sub.push('/');
                found.push((sub, true));
            }
        } else {
            if kind == listdir::Kind::File && name == BUILD_FILE {
                tree.packages.push(rel.to_string());
            }
            found.push((sub, false));
        }
    });
    if let Err(e) = listed {
        tree.errors
            .push((rel.to_string(), format!("reading {}: {e}", dir.display())));
    }
    found.sort_unstable();
    found
        .into_iter()
        .map(|(mut sub, is_dir)| match is_dir {
            true => {
                sub.pop();
                Listed::Dir(sub)
            }
            false => Listed::File(sub),
        })
        .collect()
}

/// Load errors printed in full before the rest are only counted.
const MAX_SHOWN_ERRORS: usize = 20;
/// Load errors given a line and column (the others only count).
const MAX_LOCATED_ERRORS: usize = 100;

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The first ones, then a count: a file with 10,000 bad entries
        // must not print 10,000 errors.
        for d in self.0.iter().take(MAX_SHOWN_ERRORS) {
            writeln!(f, "error: {d}")?;
        }
        if self.0.len() > MAX_SHOWN_ERRORS {
            writeln!(
                f,
                "error: … and {} more errors like these",
                self.0.len() - MAX_SHOWN_ERRORS
            )?;
        }
        write!(
            f,
            "error: the workspace did not load ({} error{}); nothing was run",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for LoadError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk shared over the cores finds exactly what one serial
    /// depth-first walk finds, in the same order.
    #[test]
    fn parallel_walk_equals_a_serial_walk() {
        let root = tempfile::tempdir().unwrap();
        let write = |rel: &str| {
            let path = root.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        };
        write("vbuild.toml");
        write("BUILD.toml");
        for i in 0..150 {
            let pkg = format!("packages/g{}/p{i:03}", i % 3);
            write(&format!("{pkg}/BUILD.toml"));
            write(&format!("{pkg}/src/deep/f{i}.js"));
            write(&format!("{pkg}/node_modules/dep/index.js"));
            write(&format!("{pkg}/.cache/hidden.txt"));
        }
        write("apps/web/BUILD.toml");
        // Names that sort around a directory's `name/`.
        for f in [
            "a.js",
            "a/x.js",
            "a/b/y.js",
            "a-b.js",
            "a0.js",
            "a/.hidden/z",
        ] {
            write(&format!("apps/web/{f}"));
        }
        let mut serial = Tree::default();
        walk_dir(root.path(), "", &mut serial, &Prune::default());
        // A depth-first walk emits files in bytewise order already.
        assert!(serial.files.is_sorted(), "{:?}", serial.files);
        serial.packages.sort();
        serial.files.sort();
        serial.module_dirs.sort();
        let parallel = walk_workspace(root.path(), &Prune::default());
        assert_eq!(parallel.packages, serial.packages);
        assert_eq!(parallel.files, serial.files);
        assert_eq!(parallel.module_dirs, serial.module_dirs);
        assert!(parallel.errors.is_empty());
        assert_eq!(parallel.packages.len(), 152);
        assert_eq!(parallel.module_dirs.len(), 150);
        assert!(parallel.files.iter().all(|f| !f.contains(".cache")));
    }
}
