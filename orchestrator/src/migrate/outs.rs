//! What a build command writes, read from the usual builders' flags and
//! configs: Vite, tsc / vue-tsc (also `-b` with references and
//! `--emitDeclarationOnly`), tsup, unbuild, rollup -c, esbuild, babel,
//! svelte-package, next build. Anything else is reported, never guessed.
use super::manifest::{self, strip_jsonc};
use super::scripts::{segments, tool_words};
use serde_json::Value;
use std::path::Path;

/// Outputs found for one command, and what could not be told.
#[derive(Default, Debug)]
pub struct Found {
    pub outs: Vec<String>,
    pub problems: Vec<String>,
    /// The command runs `vite build`.
    pub vite_build: bool,
    /// Whether any segment is a known builder (even one without outputs).
    pub known: bool,
}

impl Found {
    fn push(&mut self, out: String) {
        if !self.outs.contains(&out) {
            self.outs.push(out);
        }
    }
    fn dir(&mut self, dir: &str, what: &str) {
        match clean(dir) {
            Some(d) if d.is_empty() => self.problems.push(format!(
                "{what} writes into the package directory itself; add outs by hand"
            )),
            Some(d) => self.push(format!("{d}/")),
            None => self.problems.push(format!(
                "{what} writes to `{dir}`, outside the package; a target may only write inside its own package"
            )),
        }
    }
}

/// `./dist/` → `dist`; None when it leaves the package.
fn clean(p: &str) -> Option<String> {
    let p = p.trim().trim_start_matches("./").trim_end_matches('/');
    if p.starts_with('/') || p.split('/').any(|s| s == "..") {
        return None;
    }
    Some(p.trim_start_matches("./").to_string())
}

/// The value of `--flag X`, `--flag=X` (any of `names`).
fn flag<'a>(words: &'a [String], names: &[&str]) -> Option<&'a str> {
    for (i, w) in words.iter().enumerate() {
        for n in names {
            if w == n {
                return words.get(i + 1).map(String::as_str);
            }
            if let Some(v) = w.strip_prefix(&format!("{n}=")) {
                return Some(v);
            }
        }
    }
    None
}

/// A string literal after `key:` in a JS/TS config (`outDir: 'lib'`).
pub fn literal_after(source: &str, key: &str) -> Option<Option<String>> {
    let pos = source.find(key)?;
    let rest = source[pos + key.len()..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let Some(q) = rest
        .chars()
        .next()
        .filter(|c| matches!(c, '"' | '\'' | '`'))
    else {
        return Some(None);
    };
    let body = &rest[1..];
    let end = body.find(q)?;
    let v = &body[..end];
    Some((!v.contains("${")).then(|| v.to_string()))
}

fn config_file(dir: &Path, stem: &str) -> Option<String> {
    ["ts", "mts", "cts", "js", "mjs", "cjs", "json"]
        .iter()
        .map(|e| format!("{stem}.{e}"))
        .find(|f| dir.join(f).is_file())
}

pub fn detect(dir: &Path, command: &str) -> Found {
    let mut f = detect_all(dir, command);
    // `dist/**/*.d.ts` next to `dist/` says nothing more.
    let all = f.outs.clone();
    f.outs.retain(|o| {
        !all.iter()
            .any(|w| w != o && w.ends_with('/') && o.starts_with(w.as_str()))
    });
    f
}

fn detect_all(dir: &Path, command: &str) -> Found {
    let mut f = Found::default();
    for seg in segments(command) {
        let w = tool_words(seg);
        let Some(tool) = w.first().map(String::as_str) else {
            continue;
        };
        // `node theme.js > dist/theme.css`: the redirection target.
        for (i, x) in w.iter().enumerate() {
            let target = match x.as_str() {
                ">" | ">>" | "1>" => w.get(i + 1).map(String::as_str),
                x if x.starts_with('>') && x.len() > 1 && !x.starts_with(">&") => {
                    Some(x.trim_start_matches('>'))
                }
                _ => None,
            };
            if let Some(t) = target.filter(|t| !t.starts_with('&') && *t != "/dev/null") {
                match clean(t) {
                    Some(t) => {
                        f.known = true;
                        f.push(t);
                    }
                    None => f
                        .problems
                        .push(format!("writes `{t}`, outside the package")),
                }
            }
        }
        match tool {
            "vite" if w.get(1).is_some_and(|s| s == "build") => {
                f.known = true;
                f.vite_build = true;
                if let Some(d) = flag(&w, &["--outDir"]) {
                    f.dir(d, "vite build --outDir");
                    continue;
                }
                let cfg = flag(&w, &["-c", "--config"])
                    .map(str::to_string)
                    .or_else(|| manifest::vite_config(dir));
                match cfg.map(|c| std::fs::read_to_string(dir.join(&c)).map(|s| (c, s))) {
                    Some(Ok((c, src))) => match manifest::vite_out_dir(&src) {
                        Some(d) => f.dir(&d, "vite build"),
                        None => f.problems.push(format!(
                            "build.outDir in {c} is computed; add it to outs by hand"
                        )),
                    },
                    Some(Err(_)) | None => f.push("dist/".into()),
                }
            }
            "tsc" | "vue-tsc" => {
                f.known = true;
                tsc(dir, &w, &mut f);
            }
            "tsup" => {
                f.known = true;
                if let Some(d) = flag(&w, &["-d", "--out-dir"]) {
                    f.dir(d, "tsup --out-dir");
                } else {
                    let cfg = config_file(dir, "tsup.config")
                        .and_then(|c| std::fs::read_to_string(dir.join(c)).ok());
                    match cfg.as_deref().and_then(|s| literal_after(s, "outDir")) {
                        Some(Some(d)) => f.dir(&d, "tsup"),
                        Some(None) => f
                            .problems
                            .push("outDir in tsup.config is computed; add outs by hand".into()),
                        None => f.push("dist/".into()),
                    }
                }
            }
            "unbuild" => {
                f.known = true;
                let cfg = config_file(dir, "build.config")
                    .and_then(|c| std::fs::read_to_string(dir.join(c)).ok());
                match cfg.as_deref().and_then(|s| literal_after(s, "outDir")) {
                    Some(Some(d)) => f.dir(&d, "unbuild"),
                    Some(None) => f
                        .problems
                        .push("outDir in build.config is computed; add outs by hand".into()),
                    None => f.push("dist/".into()),
                }
            }
            "rollup" => {
                f.known = true;
                let cfg = match flag(&w, &["-c", "--config"]) {
                    Some(c) if !c.starts_with('-') => Some(c.to_string()),
                    _ => config_file(dir, "rollup.config"),
                };
                if let Some(d) = flag(&w, &["-d", "--dir"]) {
                    f.dir(d, "rollup --dir");
                } else if let Some(o) = flag(&w, &["-o", "--file"]) {
                    match clean(o) {
                        Some(o) => f.push(o),
                        None => f
                            .problems
                            .push(format!("rollup writes `{o}` outside the package")),
                    }
                } else {
                    rollup_config(dir, cfg.as_deref(), &mut f);
                }
            }
            "esbuild" => {
                f.known = true;
                if let Some(d) = flag(&w, &["--outdir"]) {
                    f.dir(d, "esbuild --outdir");
                } else if let Some(o) = flag(&w, &["--outfile"]) {
                    match clean(o) {
                        Some(o) => f.push(o),
                        None => f
                            .problems
                            .push(format!("esbuild writes `{o}` outside the package")),
                    }
                }
            }
            "babel" => {
                f.known = true;
                if let Some(d) = flag(&w, &["-d", "--out-dir"]) {
                    f.dir(d, "babel --out-dir");
                } else if let Some(o) = flag(&w, &["-o", "--out-file"]) {
                    if let Some(o) = clean(o) {
                        f.push(o);
                    }
                }
            }
            "next" if w.get(1).is_some_and(|s| s == "build") => {
                // `.next/` (or the config's literal `distDir`); `next build`
                // always writes it.
                f.known = true;
                let cfg = config_file(dir, "next.config")
                    .and_then(|c| std::fs::read_to_string(dir.join(c)).ok());
                match cfg.as_deref().and_then(|s| literal_after(s, "distDir")) {
                    Some(Some(d)) => f.dir(&d, "next build"),
                    Some(None) => f
                        .problems
                        .push("distDir in next.config is computed; add outs by hand".into()),
                    None => f.push(".next/".into()),
                }
            }
            "svelte-package" => {
                f.known = true;
                f.dir(
                    flag(&w, &["-o", "--output"]).unwrap_or("dist"),
                    "svelte-package",
                );
            }
            _ => {}
        }
    }
    f
}

/// `output: { dir: 'x' }` / `file: 'x/y.js'` literals of a rollup config.
fn rollup_config(dir: &Path, cfg: Option<&str>, f: &mut Found) {
    let Some(src) = cfg.and_then(|c| std::fs::read_to_string(dir.join(c)).ok()) else {
        f.problems
            .push("rollup -c: no rollup.config.* found; add outs by hand".into());
        return;
    };
    let manifest: Value = std::fs::read_to_string(dir.join("package.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let mut found = Vec::new();
    let mut computed = false;
    for key in ["dir", "file"] {
        let mut rest = src.as_str();
        while let Some(pos) = rest.find(&format!("{key}:")) {
            let before = rest[..pos].chars().last();
            let at = &rest[pos..];
            rest = &rest[pos + key.len() + 1..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                continue;
            }
            let value = match literal_after(at, key) {
                Some(Some(v)) => Some(v),
                // `file: pkg.main`: the package.json field it names.
                Some(None) => {
                    let expr: String = at[key.len() + 1..]
                        .trim_start()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '.' || *c == '_')
                        .collect();
                    let field = expr.rsplit('.').next().unwrap_or("");
                    let v = expr
                        .contains('.')
                        .then(|| manifest.get(field).and_then(Value::as_str))
                        .flatten();
                    if v.is_none() {
                        computed = true;
                    }
                    v.map(str::to_string)
                }
                None => None,
            };
            if let Some(v) = value {
                match clean(&v) {
                    Some(v) if key == "dir" => found.push(format!("{v}/")),
                    Some(v) => found.push(v),
                    None => f
                        .problems
                        .push(format!("rollup writes `{v}` outside the package")),
                }
            }
        }
    }
    // Rollup writes siblings of each output file (source maps, extracted
    // CSS, chunks): declare the directories they are in.
    {
        found = found
            .iter()
            .map(|o| match o.split_once('/') {
                Some((d, _)) => format!("{d}/"),
                None => o.clone(),
            })
            .collect();
        found.dedup();
    }
    if computed {
        f.problems.push(format!(
            "rollup: some outputs in {} are computed; declared the directories of the others: {found:?}",
            cfg.unwrap_or("rollup.config")
        ));
    }
    if found.is_empty() {
        f.problems.push(format!(
            "rollup: no literal output dir/file in {}; add outs by hand",
            cfg.unwrap_or("rollup.config")
        ));
    }
    for o in found {
        f.push(o);
    }
}

fn tsc(dir: &Path, w: &[String], f: &mut Found) {
    let has = |n: &str| w.iter().any(|a| a == n);
    if has("--noEmit") || has("--noemit") {
        return;
    }
    let build = has("-b") || has("--build");
    // `tsc -b a b`, `tsc -p x`, else tsconfig.json.
    let mut configs: Vec<String> = Vec::new();
    if build {
        let it = w.iter().skip(1);
        for a in it {
            if a == "-b" || a == "--build" {
                continue;
            }
            if a.starts_with('-') {
                continue;
            }
            configs.push(a.clone());
        }
    } else if let Some(p) = flag(w, &["-p", "--project"]) {
        configs.push(p.to_string());
    }
    if configs.is_empty() {
        configs.push("tsconfig.json".into());
    }
    let decl_only = has("--emitDeclarationOnly");
    let flag_dir = flag(w, &["--outDir"]).or_else(|| flag(w, &["--declarationDir"]));
    let mut seen = Vec::new();
    while let Some(config) = configs.pop() {
        let config = if dir.join(&config).is_dir() {
            format!("{}/tsconfig.json", config.trim_end_matches('/'))
        } else {
            config
        };
        if seen.contains(&config) {
            continue;
        }
        seen.push(config.clone());
        let info = tsconfig_info(dir, &config);
        let dirs = match flag_dir {
            Some(d) => vec![d.to_string()],
            None => info.out_dirs.clone(),
        };
        // A solution config (`files: []`) builds only its references.
        let emits = !(info.no_emit || info.solution) || flag_dir.is_some();
        if emits && dirs.is_empty() {
            f.problems.push(format!(
                "tsc writes next to the sources (no outDir in {config}); add outs by hand"
            ));
        }
        for d in dirs.iter().filter(|_| emits) {
            let base = Path::new(&config).parent().unwrap_or(Path::new(""));
            let rel = base.join(d).to_string_lossy().replace('\\', "/");
            let Some(rel) = clean(&normalize(&rel)) else {
                f.problems.push(format!(
                    "tsc ({config}) writes to `{d}`, outside the package"
                ));
                continue;
            };
            if decl_only || info.decl_only {
                // Only globs that match something: an outs glob that
                // matches nothing fails the action.
                f.push(format!("{rel}/**/*.d.ts"));
                if info.decl_map {
                    f.push(format!("{rel}/**/*.d.ts.map"));
                }
            } else {
                f.push(format!("{rel}/"));
            }
        }
        // `*.tsbuildinfo` files are never declared: whether tsc writes one
        // depends on its version and mode, and a declared output that is
        // not written fails the action. They are excluded from srcs
        // workspace-wide instead (a stale one would make tsc skip emitting).
        if build {
            for r in info.references {
                // References inside the package are built too.
                let base = Path::new(&config).parent().unwrap_or(Path::new(""));
                let rel = normalize(&base.join(&r).to_string_lossy());
                if clean(&rel).is_some() {
                    configs.push(rel);
                }
            }
        }
    }
}

/// `a/./b/../c` → `a/c` (textual).
pub fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." if out.last().is_some_and(|l| *l != "..") => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    out.join("/")
}

#[derive(Default, Debug)]
pub struct TsconfigInfo {
    pub out_dirs: Vec<String>,
    pub decl_only: bool,
    pub no_emit: bool,
    pub incremental: bool,
    pub decl_map: bool,
    /// `"files": []` without `include`: only its references are built.
    pub solution: bool,
    /// `references[].path`, relative to the config's directory.
    pub references: Vec<String>,
}

/// A tsconfig's emit settings, following relative `extends` (settings of
/// the extending file win). Paths are relative to `config`'s directory.
pub fn tsconfig_info(dir: &Path, config: &str) -> TsconfigInfo {
    let mut info = TsconfigInfo::default();
    let (mut out, mut decl, mut decl_only, mut no_emit, mut inc) = (None, None, None, None, None);
    let mut decl_map = None;
    let mut file = dir.join(config);
    let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    for depth in 0..8 {
        let Some(v) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&strip_jsonc(&t)).ok())
        else {
            break;
        };
        let here = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let rel_to_base = |p: &str| -> String {
            let abs = here.join(p);
            pathdiff(&base_dir, &abs)
        };
        let o = v.get("compilerOptions");
        let s = |k: &str| o.and_then(|o| o.get(k)).and_then(Value::as_str);
        let b = |k: &str| o.and_then(|o| o.get(k)).and_then(Value::as_bool);
        if out.is_none() {
            out = s("outDir").map(rel_to_base);
        }
        if decl.is_none() {
            decl = s("declarationDir").map(rel_to_base);
        }
        decl_only = decl_only.or(b("emitDeclarationOnly"));
        no_emit = no_emit.or(b("noEmit"));
        inc = inc.or(b("incremental")).or(b("composite"));
        decl_map = decl_map.or(b("declarationMap"));
        if depth == 0 {
            info.solution = v
                .get("files")
                .and_then(Value::as_array)
                .is_some_and(|f| f.is_empty())
                && v.get("include").is_none();
            for r in v
                .get("references")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(p) = r.get("path").and_then(Value::as_str) {
                    info.references.push(p.to_string());
                }
            }
        }
        match v.get("extends").and_then(Value::as_str) {
            Some(ext) if ext.starts_with('.') => {
                let next = here.join(ext);
                file = if next.extension().is_none() {
                    next.with_extension("json")
                } else {
                    next
                };
            }
            _ => break,
        }
    }
    info.out_dirs = out.into_iter().chain(decl).collect();
    info.out_dirs.dedup();
    info.decl_only = decl_only.unwrap_or(false);
    info.no_emit = no_emit.unwrap_or(false);
    info.incremental = inc.unwrap_or(false);
    info.decl_map = decl_map.unwrap_or(false);
    info
}

/// `to` relative to `from` (both absolute-ish, textual).
fn pathdiff(from: &Path, to: &Path) -> String {
    let f = normalize(&from.to_string_lossy());
    let t = normalize(&to.to_string_lossy());
    let fs: Vec<&str> = f.split('/').filter(|s| !s.is_empty()).collect();
    let ts: Vec<&str> = t.split('/').filter(|s| !s.is_empty()).collect();
    let common = fs.iter().zip(&ts).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; fs.len() - common];
    parts.extend(&ts[common..]);
    parts.join("/")
}

/// The directory or file an out covers, for the overlap check.
fn base(out: &str) -> &str {
    let end = out
        .find(['*', '?', '[', '{'])
        .map_or(out.len(), |p| out[..p].rfind('/').map_or(0, |s| s + 1));
    out[..end].trim_end_matches('/')
}

/// Whether two outs may name the same file (conservative: by base path).
pub fn overlap(a: &str, b: &str) -> bool {
    let (a, b) = (base(a), base(b));
    a.is_empty()
        || b.is_empty()
        || a == b
        || a.starts_with(&format!("{b}/"))
        || b.starts_with(&format!("{a}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        d
    }

    #[test]
    fn common_builders() {
        let d = ws(&[
            (
                "tsconfig.json",
                r#"{"extends":"./tsconfig.base.json","compilerOptions":{"declarationDir":"types"}}"#,
            ),
            (
                "tsconfig.base.json",
                r#"{"compilerOptions":{"outDir":"lib"}}"#,
            ),
            (
                "rollup.config.mjs",
                "export default { input: 'src/i.js', output: { file: 'dist/x.js', format: 'es' } }",
            ),
            ("tsup.config.ts", "export default { outDir: 'out' }"),
            ("rollup.pkg.mjs", "const p = require('./package.json');\nexport default [{ output: [{ file: p.main }, { file: p.module }] }, { output: { file: 'types/index.d.ts' } }]"),
            ("rollup.dyn.mjs", "export default { output: { file: name() } }"),
            ("web/next.config.js", "module.exports = { distDir: 'build/next' }"),
            ("package.json", r#"{"main":"dist/a.cjs.js","module":"dist/a.es.js"}"#),
        ]);
        let o = |c: &str| detect(d.path(), c).outs;
        assert_eq!(o("cross-env NODE_ENV=production vite build"), ["dist/"]);
        assert_eq!(o("env A=1 vite build --outDir www"), ["www/"]);
        assert_eq!(o("vue-tsc -p tsconfig.json"), ["lib/", "types/"]);
        assert_eq!(o("vue-tsc --noEmit"), Vec::<String>::new());
        assert_eq!(o("tsup src/index.ts"), ["out/"]);
        assert_eq!(o("unbuild"), ["dist/"]);
        assert_eq!(o("next build"), [".next/"]);
        assert!(o("next lint").is_empty());
        assert_eq!(
            detect(&d.path().join("web"), "next build").outs,
            ["build/next/"]
        );
        assert_eq!(o("rollup -c"), ["dist/"]);
        // `file: pkg.main` reads package.json.
        assert_eq!(o("rollup -c rollup.pkg.mjs"), ["dist/", "types/"]);
        assert_eq!(o("rollup -c rollup.dyn.mjs"), Vec::<String>::new());
        assert_eq!(
            o("esbuild src/a.ts --bundle --outfile=build/a.js"),
            ["build/a.js"]
        );
        assert_eq!(
            o("tsc --emitDeclarationOnly --outDir dist"),
            ["dist/**/*.d.ts"]
        );
        assert!(overlap("dist/", "dist/**/*.d.ts"));
        assert!(!overlap("dist/", "types/"));
        assert!(!overlap("dist/", "dist-types/"));
    }

    #[test]
    fn tsc_build_follows_references() {
        let d = ws(&[
            (
                "tsconfig.json",
                r#"{"files":[],"references":[{"path":"./tsconfig.lib.json"},{"path":"./tsconfig.node.json"}]}"#,
            ),
            (
                "tsconfig.lib.json",
                r#"{"compilerOptions":{"composite":true,"outDir":"dist/lib"}}"#,
            ),
            (
                "tsconfig.node.json",
                r#"{"compilerOptions":{"composite":true,"noEmit":true}}"#,
            ),
        ]);
        let f = detect(d.path(), "tsc -b");
        assert_eq!(f.outs, ["dist/lib/"], "{:?}", f.problems);
    }
}
