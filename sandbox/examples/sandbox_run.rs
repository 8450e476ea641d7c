//! Runs one command in a sandbox and prints its output and outcome.
//!
//! `cargo run -p vbuild-sandbox --example sandbox_run -- [namespaces|scratch|none] CMD ARGS...`
//! The current directory is staged (copied shallowly: files only) into the
//! scratch workspace; `out/` is the declared output directory.

use std::ffi::OsString;
use std::path::PathBuf;

use vbuild_sandbox::{probe_namespaces, run_direct, RunSpec, SandboxMode, Scratch};

fn main() {
    let mut args = std::env::args_os().skip(1);
    let mode = args.next().unwrap_or_else(|| "namespaces".into());
    let argv: Vec<OsString> = args.collect();
    if argv.is_empty() {
        eprintln!("usage: sandbox_run [namespaces|scratch|none] CMD ARGS...");
        std::process::exit(2);
    }
    let parent = std::env::temp_dir().join("vbuild-sandbox-example");
    let scratch = match Scratch::create(&parent) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("scratch: {e}");
            std::process::exit(1);
        }
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if let Ok(entries) = std::fs::read_dir(&cwd) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::copy(e.path(), scratch.host_ws().join(e.file_name()));
            }
        }
    }
    let mode = match mode.to_str() {
        Some("scratch") => Some(SandboxMode::Scratch),
        Some("none") => None,
        _ => {
            if let Err(e) = probe_namespaces() {
                eprintln!("{e}");
                std::process::exit(1);
            }
            Some(SandboxMode::Namespaces)
        }
    };
    let layout = scratch.layout(mode.unwrap_or(SandboxMode::Scratch));
    let spec = RunSpec {
        argv,
        env: vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), layout.home.into()),
            ("TMPDIR".into(), layout.tmp.into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("TZ".into(), "UTC".into()),
        ],
        writable: vec!["out/".into()],
        stdout: scratch.host_out().join("stdout"),
        stderr: scratch.host_out().join("stdout"),
        ..RunSpec::default()
    };
    let result = match mode {
        Some(m) => scratch.run(m, &spec),
        None => run_direct(&cwd, &spec),
    };
    let output = std::fs::read_to_string(&spec.stdout).unwrap_or_default();
    print!("{output}");
    match result {
        Ok(o) => eprintln!("-- {:?} in {:?}", o.status, o.duration),
        Err(e) => {
            eprintln!("-- error: {e}");
            std::process::exit(1);
        }
    }
}
