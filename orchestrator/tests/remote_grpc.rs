//! The remote cache over REAPI gRPC, against a real server: BuildGrid
//! (PyPI `buildgrid==0.4.4`), started on loopback by each test with an
//! in-memory CAS and action cache. `bgd` is found through $VBUILD_BGD, else
//! on PATH. Skipped (with a message) when missing, unless
//! VBUILD_REQUIRE_BUILDGRID=1 (CI), where that fails.
mod common;

use common::checkout::{Checkout, BASIC_OUTPUTS, BASIC_REMOTE_HITS};
use common::{free_port, run_with};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct BuildGrid {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

fn bgd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VBUILD_BGD").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("bgd"))
        .find(|p| p.is_file())
}

impl BuildGrid {
    fn start() -> Option<BuildGrid> {
        let Some(bin) = bgd_binary() else {
            if std::env::var("VBUILD_REQUIRE_BUILDGRID").as_deref() == Ok("1") {
                panic!("BuildGrid is required (VBUILD_REQUIRE_BUILDGRID=1) but bgd was not found (set VBUILD_BGD)");
            }
            eprintln!(
                "SKIPPED: BuildGrid's bgd not found (pip install buildgrid==0.4.4; set VBUILD_BGD)"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        for attempt in 0..5 {
            let port = free_port();
            let conf = format!(
                r#"server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
storages:
  - !lru-storage &main-storage
    size: 256MB
caches:
  - !lru-action-cache &main-action
    storage: *main-storage
    max-cached-refs: 10000
    allow-updates: true
    cache-failed-actions: false
instances:
  - name: main
    services:
      - !action-cache
        cache: *main-action
      - !cas
        storage: *main-storage
      - !bytestream
        storage: *main-storage
"#
            );
            std::fs::write(dir.path().join("bgd.yml"), conf).unwrap();
            let log = std::fs::File::create(dir.path().join("bgd.log")).unwrap();
            let mut child = Command::new(&bin)
                .args(["server", "start", "bgd.yml"])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("bgd starts");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(BuildGrid {
                        dir,
                        port,
                        child: Some(child),
                    });
                }
                if let Some(status) = child.try_wait().unwrap() {
                    eprintln!(
                        "bgd exited ({status}) on attempt {attempt}:\n{}",
                        std::fs::read_to_string(dir.path().join("bgd.log")).unwrap_or_default()
                    );
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("BuildGrid did not listen on {port} within 60 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("could not start BuildGrid");
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "VBUILD_REMOTE_URL",
                format!("grpc://127.0.0.1:{}", self.port),
            ),
            ("VBUILD_REMOTE_INSTANCE", "main".to_string()),
        ]
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BuildGrid {
    fn drop(&mut self) {
        self.kill();
        let _ = &self.dir;
    }
}

fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn grpc_cross_machine_restore_and_check() {
    let Some(bg) = BuildGrid::start() else {
        return;
    };
    let env = bg.env();
    let env = refs(&env);
    let first = Checkout::basic();
    let check = first.vbuild(&["remote", "check"], &env);
    assert_eq!(check.code, 0, "{}\n{}", check.stdout, check.stderr);
    assert!(check.stdout.contains("REAPI v2 (gRPC)"), "{}", check.stdout);
    assert!(check.stdout.contains("SHA256"), "{}", check.stdout);
    assert!(check.stdout.contains("updates enabled"), "{}", check.stdout);
    assert!(
        check.stdout.contains("write:           ok"),
        "{}",
        check.stdout
    );

    let out = first.run(&["//..."], &env);
    out.assert_ok();
    out.assert_all("miss");
    assert!(out.stderr.contains("4 uploaded"), "{}", out.stderr);

    let second = Checkout::basic();
    let out = second.run(&["//..."], &env);
    out.assert_ok();
    assert_eq!(out.states(), BASIC_REMOTE_HITS, "{}", out.stderr);
    assert!(!out.stderr.contains("uploaded"), "{}", out.stderr);
    assert_eq!(
        first.snapshot(BASIC_OUTPUTS),
        second.snapshot(BASIC_OUTPUTS)
    );

    // Another instance name is another cache.
    let third = Checkout::basic();
    let mut other = env.clone();
    other.retain(|(k, _)| *k != "VBUILD_REMOTE_INSTANCE");
    let out = third.run(&["//...", "--remote-instance", "elsewhere"], &other);
    out.assert_ok();
    out.assert_all("miss");
}

#[test]
fn grpc_large_blobs_go_through_bytestream() {
    let Some(bg) = BuildGrid::start() else {
        return;
    };
    let env = bg.env();
    let env = refs(&env);
    // 6 MB: over the batch limit, so written and read with ByteStream.
    let files = [(
        "big/BUILD.toml",
        "[target.build]\ncommand = \"mkdir -p out && yes vbuild-bytestream | head -c 6000000 > out/big.bin && echo small > out/small.txt\"\nouts = [\"out/\"]\n",
    )];
    let first = Checkout::files(&files);
    let out = first.run(&["//..."], &env);
    out.assert_ok();
    assert!(out.stderr.contains("1 uploaded"), "{}", out.stderr);
    let second = Checkout::files(&files);
    let out = second.run(&["//..."], &env);
    out.assert_ok();
    out.assert_states(&["hit (remote) //big:build"]);
    let big = std::fs::read(second.root().join("big/out/big.bin")).unwrap();
    assert_eq!(big.len(), 6_000_000);
    assert_eq!(
        big,
        std::fs::read(first.root().join("big/out/big.bin")).unwrap()
    );
}

#[test]
fn grpc_read_only_writes_nothing() {
    let Some(bg) = BuildGrid::start() else {
        return;
    };
    let env = bg.env();
    let env = refs(&env);
    let out = Checkout::basic().run(&["//...", "--remote-mode", "read-only"], &env);
    out.assert_ok();
    assert!(!out.stderr.contains("uploaded"), "{}", out.stderr);
    // Nothing reached the server: a fresh checkout misses everything.
    let out = Checkout::basic().run(&["//..."], &env);
    out.assert_ok();
    out.assert_all("miss");
}

#[test]
fn grpc_killing_the_server_mid_build_completes_locally() {
    let Some(mut bg) = BuildGrid::start() else {
        return;
    };
    let ws = Checkout::slow_chain("0.5");
    let env = bg.env();
    let (root, cache) = (ws.root().to_path_buf(), ws.cache.path().to_path_buf());
    let build = std::thread::spawn(move || {
        let env = refs(&env);
        run_with(&root, &cache, &["run", "-j1", "//..."], &env)
    });
    std::thread::sleep(Duration::from_millis(1200));
    bg.kill();
    let out = build.join().unwrap();
    out.assert_ok();
    assert_eq!(out.states().len(), 6, "{}", out.stderr);
    out.assert_all("miss");
    assert_eq!(
        std::fs::read_to_string(ws.root().join("p5/out.txt")).unwrap(),
        "5\n"
    );
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("warning: remote cache"))
        .collect();
    assert!((1..=2).contains(&warnings.len()), "{}", out.stderr);
}
