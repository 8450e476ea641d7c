//! Per-action overhead of each sandbox mode: runs `true` N times (default
//! 200) per mode and prints the mean wall time per action.
//!
//! `cargo run --release -p vbuild-sandbox --example overhead [N]`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vbuild_sandbox::{probe_namespaces, run_direct, RunSpec, SandboxMode, Scratch};

fn spec(out: &std::path::Path) -> RunSpec {
    RunSpec {
        argv: vec!["true".into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        writable: vec!["dist/".into(), "out.txt".into()],
        stdout: out.join("stdout"),
        stderr: out.join("stderr"),
        // OVERHEAD_NETWORK=1 skips the network namespace, to measure its cost.
        network: std::env::var_os("OVERHEAD_NETWORK").is_some(),
        ..RunSpec::default()
    }
}

fn report(name: &str, n: u32, total: Duration) {
    let per = total.as_secs_f64() * 1000.0 / f64::from(n);
    println!("{name:<44} {per:>7.3} ms/action");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    // As vbuild's `main` does (the supervisor shares the caller's memory
    // only when it is not dumpable): measure what vbuild runs.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let parent = tempfile::tempdir()?;
    println!("{n} runs of `true` per mode");

    let t = Instant::now();
    for _ in 0..n {
        Command::new("/usr/bin/true")
            .stdin(Stdio::null())
            .status()?;
    }
    let baseline = t.elapsed();
    report("std::process::Command (baseline)", n, baseline);

    let t = Instant::now();
    for _ in 0..n {
        run_direct(parent.path(), &spec(parent.path()))?;
    }
    report("run_direct (mode none)", n, t.elapsed());

    let mut modes = vec![SandboxMode::Scratch];
    let t = Instant::now();
    let probe = probe_namespaces();
    println!(
        "{:<44} {:>7.3} ms (once per process)",
        "probe_namespaces",
        t.elapsed().as_secs_f64() * 1000.0
    );
    match probe {
        Ok(()) => modes.push(SandboxMode::Namespaces),
        Err(e) => println!("namespaces unavailable: {e}"),
    }
    for mode in modes {
        let scratch = Scratch::create(parent.path())?;
        std::fs::write(scratch.host_ws().join("input.txt"), "x")?;
        let s = spec(scratch.host_out());
        let t = Instant::now();
        for _ in 0..n {
            scratch.run(mode, &s)?;
        }
        report(
            &format!("{} run (reused scratch)", mode.as_str()),
            n,
            t.elapsed(),
        );

        let t = Instant::now();
        for _ in 0..n {
            let scratch = Scratch::create(parent.path())?;
            std::fs::write(scratch.host_ws().join("input.txt"), "x")?;
            scratch.run(mode, &spec(scratch.host_out()))?;
        }
        report(
            &format!("{} create+run+remove", mode.as_str()),
            n,
            t.elapsed(),
        );
    }
    Ok(())
}
