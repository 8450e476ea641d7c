//! Puts the git commit into `vbuild --version`. Without git or a `.git`
//! (a source tarball, `cargo install` from a copy) the version says
//! `unknown commit`; `VBUILD_COMMIT` set at build time wins (packagers).
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=VBUILD_COMMIT");
    let commit = std::env::var("VBUILD_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            // Rebuild when HEAD moves: a commit, a checkout (also in a worktree).
            if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                println!("cargo:rerun-if-changed={dir}/HEAD");
                println!("cargo:rerun-if-changed={dir}/logs/HEAD");
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown commit".to_string());
    println!("cargo:rustc-env=VBUILD_COMMIT={commit}");
}
