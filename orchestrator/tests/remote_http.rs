//! The remote cache over the Bazel HTTP cache protocol, against a real
//! server: nginx's WebDAV module, started on loopback by each test with a
//! config in a temp dir. Skipped (with a message) when nginx is not
//! installed, unless VBUILD_REQUIRE_NGINX=1 (CI), where that fails.
mod common;

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use common::checkout::{Checkout, BASIC_OUTPUTS, BASIC_REMOTE_HITS};
use common::{free_port, run_with, Out};
use prost::Message as _;
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// nginx serving a WebDAV folder on 127.0.0.1, its cache at `/cache`.
struct Nginx {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// "http", or "https" when it listens with TLS.
    scheme: &'static str,
}

fn nginx_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

impl Nginx {
    /// Starts nginx; `None` (after saying so) when it is not installed and
    /// not required. `extra` goes inside the cache's `location` block.
    fn start(extra: &str) -> Option<Nginx> {
        Nginx::launch(None, extra)
    }

    /// Starts nginx listening with TLS: `tls` holds the `ssl_*` directives
    /// of the `server` block; `extra` is as for [`Nginx::start`].
    fn start_tls(tls: &str, extra: &str) -> Option<Nginx> {
        Nginx::launch(Some(tls), extra)
    }

    fn launch(tls: Option<&str>, extra: &str) -> Option<Nginx> {
        let Some(bin) = nginx_binary() else {
            if std::env::var("VBUILD_REQUIRE_NGINX").as_deref() == Ok("1") {
                panic!("nginx is required (VBUILD_REQUIRE_NGINX=1) but not installed");
            }
            eprintln!("SKIPPED: nginx is not installed (apt-get install nginx)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data/cache")).unwrap();
        for attempt in 0..10 {
            let port = free_port();
            let d = dir.path().display();
            let extra = extra.replace("{dir}", &d.to_string());
            let (ssl, tls_directives) = match tls {
                Some(t) => (" ssl", t.replace("{dir}", &d.to_string())),
                None => ("", String::new()),
            };
            let conf = format!(
                r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port}{ssl};
    {tls_directives}
    root {d}/data;
    client_max_body_size 2g;
    location /cache/ {{
      dav_methods PUT;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
      {extra}
    }}
  }}
}}
"#
            );
            std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
            let mut child = Command::new(&bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("nginx starts");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Nginx {
                        dir,
                        port,
                        child: Some(child),
                        scheme: if tls.is_some() { "https" } else { "http" },
                    });
                }
                if let Some(status) = child.try_wait().unwrap() {
                    // Most likely the port was taken meanwhile: try another.
                    eprintln!("nginx exited ({status}) on attempt {attempt}; retrying");
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("nginx did not listen on {port} within 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start nginx");
    }

    fn url(&self) -> String {
        format!("{}://127.0.0.1:{}/cache", self.scheme, self.port)
    }

    fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("data/cache")
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Requests logged with `method` (e.g. "PUT").
    fn count(&self, method: &str) -> usize {
        let needle = format!("\"{method} ");
        self.access_log().matches(&needle).count()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The stored action results: (file, decoded).
    fn action_results(&self) -> Vec<(PathBuf, reapi::ActionResult)> {
        let mut out = vec![];
        for e in std::fs::read_dir(self.cache_dir().join("ac")).unwrap() {
            let path = e.unwrap().path();
            let r = reapi::ActionResult::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
            out.push((path, r));
        }
        out
    }

    /// The stored action result of the action that outputs `path`.
    fn result_with_output(&self, path: &str) -> (PathBuf, reapi::ActionResult) {
        self.action_results()
            .into_iter()
            .find(|(_, r)| r.output_files.iter().any(|f| f.path == path))
            .unwrap_or_else(|| panic!("no action result outputs {path}"))
    }

    /// Puts a blob straight into the server's folder; returns its digest.
    fn put_blob(&self, bytes: &[u8]) -> reapi::Digest {
        let d = sha256(bytes);
        let path = self.cache_dir().join("cas").join(&d.hash);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        d
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

fn sha256(bytes: &[u8]) -> reapi::Digest {
    reapi::Digest {
        hash: hex(&sha2::Sha256::digest(bytes)),
        size_bytes: bytes.len() as i64,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn remote_env(n: &Nginx) -> [(&'static str, String); 1] {
    [("VBUILD_REMOTE_URL", n.url())]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn cross_machine_restore_from_nginx() {
    let Some(nginx) = Nginx::start("") else {
        return;
    };
    let env = remote_env(&nginx);
    let env = env_refs(&env);
    let first = Checkout::basic();
    let out = first.run(&["//..."], &env);
    out.assert_ok();
    out.assert_all("miss");
    assert!(nginx.count("PUT") > 0, "uploaded:\n{}", nginx.access_log());
    let puts_after_first = nginx.count("PUT");
    // The records lists went to the remote from memory: none is a file
    // in the local store (that was one file created per upload).
    let local: Vec<_> = walkdir::WalkDir::new(first.cache.path().join("cas"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            std::fs::read(e.path())
                .unwrap()
                .starts_with(b"{\"version\":1,\"records\"")
        })
        .collect();
    assert!(local.is_empty(), "{local:?}");

    // Another checkout at another path, with its own empty store.
    let second = Checkout::basic();
    assert_ne!(first.root(), second.root());
    // `why` asks the remote as `run` does (it used to say "would run ×4"),
    // answers on stdout, and writes nothing into the workspace.
    let third = Checkout::basic();
    let why = third.vbuild(&["why", "//..."], &env);
    why.assert_ok();
    let answers: Vec<&str> = why
        .stdout
        .lines()
        .map(|l| l.rsplit_once("  ").map_or(l, |(head, _)| head))
        .collect();
    assert_eq!(answers, BASIC_REMOTE_HITS, "{}", why.stdout);
    assert!(
        !third.root().join("app/dist").exists(),
        "why restored files"
    );
    let out = second.run(&["//..."], &env);
    out.assert_ok();
    assert_eq!(out.states(), BASIC_REMOTE_HITS, "{}", out.stderr);
    assert!(
        out.stderr.contains("4 hit (4 remote), 0 miss"),
        "{}",
        out.stderr
    );
    // Logs are replayed.
    assert!(out.stdout.contains("app built"), "{}", out.stdout);
    assert_eq!(
        nginx.count("PUT"),
        puts_after_first,
        "a pure restore uploads nothing"
    );
    assert_eq!(
        first.snapshot(BASIC_OUTPUTS),
        second.snapshot(BASIC_OUTPUTS)
    );
    assert!(!second.snapshot(BASIC_OUTPUTS).is_empty());

    // Now local: a hit never asks the remote.
    let requests = nginx.access_log().lines().count();
    let out = second.run(&["//..."], &env);
    out.assert_ok();
    assert!(
        out.states().iter().all(|s| s.starts_with("hit //")),
        "{}",
        out.stderr
    );
    assert_eq!(nginx.access_log().lines().count(), requests);
}

#[test]
fn read_only_mode_uploads_nothing() {
    let Some(nginx) = Nginx::start("") else {
        return;
    };
    let env = remote_env(&nginx);
    let env = env_refs(&env);
    let ws = Checkout::basic();
    let out = ws.run(&["//...", "--remote-mode", "read-only"], &env);
    out.assert_ok();
    assert!(
        nginx.count("GET") > 0,
        "it did read:\n{}",
        nginx.access_log()
    );
    assert_eq!(nginx.count("PUT"), 0, "{}", nginx.access_log());

    // The same through vbuild.toml.
    let other = Checkout::basic();
    other.append("vbuild.toml", "\n[remote]\nmode = \"read-only\"\n");
    let out = other.run(&["//..."], &env);
    out.assert_ok();
    assert_eq!(nginx.count("PUT"), 0, "{}", nginx.access_log());
    out.assert_all("miss");
}

/// Issue 14 item 4: a scratch-mode action can read and write anything of
/// the user's, so what it built is never shared; the same targets built in
/// the namespace sandbox are.
#[test]
fn results_built_without_isolation_are_never_uploaded() {
    let Some(nginx) = Nginx::start("") else {
        return;
    };
    let env = remote_env(&nginx);
    let env = env_refs(&env);
    let ws = Checkout::basic();
    ws.write(
        "vbuild.toml",
        "[workspace]\nname = \"test\"\nsandbox = \"scratch\"\n",
    );
    let out = ws.run(&["//..."], &env);
    out.assert_ok();
    out.assert_all("miss");
    assert_eq!(nginx.count("PUT"), 0, "{}", nginx.access_log());
    if vbuild_sandbox::probe_namespaces().is_err() {
        eprintln!("SKIP the namespaces half: no namespace sandbox here");
        return;
    }
    let out = ws.run(&["//...", "--sandbox", "namespaces"], &env);
    out.assert_ok();
    out.assert_all("miss");
    assert!(nginx.count("PUT") > 0, "{}", nginx.access_log());
}

/// Issue 14 item 2: a tracked `get-env DATABASE_URL` (a credential no
/// secret pattern matches) was uploaded in plaintext inside the action
/// result. Only its hash reaches the remote (or the local store).
#[test]
fn tracked_env_values_are_uploaded_only_as_hashes() {
    let Some(nginx) = Nginx::start("") else {
        return;
    };
    let mut env = remote_env(&nginx).to_vec();
    env.push(("DATABASE_URL", "postgres://app:hunter2-remote@db".into()));
    let env = env_refs(&env);
    let ws = Checkout::files(&[(
        "p/BUILD.toml",
        "[target.build]\ncommand = \"vbuild tool get-env DATABASE_URL > /dev/null; echo ok > out.txt\"\nouts = [\"out.txt\"]\n",
    )]);
    let out = ws.run(&["//..."], &env);
    out.assert_ok();
    assert!(nginx.count("PUT") > 0, "{}", nginx.access_log());
    for dir in [nginx.cache_dir(), ws.cache.path().to_path_buf()] {
        for e in walkdir::WalkDir::new(&dir).into_iter().flatten() {
            if e.file_type().is_file() {
                let bytes = std::fs::read(e.path()).unwrap();
                assert!(
                    !bytes.windows(14).any(|w| w == b"hunter2-remote"),
                    "the value is stored in {}",
                    e.path().display()
                );
            }
        }
    }
}

/// Builds examples/basic once against `nginx` so it holds every entry.
fn populate(nginx: &Nginx) {
    let env = remote_env(nginx);
    Checkout::basic()
        .run(&["//..."], &env_refs(&env))
        .assert_ok();
}

/// Replaces the stored action result in `file`.
fn forge(file: &Path, f: impl FnOnce(&mut reapi::ActionResult)) {
    let mut r = reapi::ActionResult::decode(std::fs::read(file).unwrap().as_slice()).unwrap();
    f(&mut r);
    std::fs::write(file, r.encode_to_vec()).unwrap();
}

/// Runs a fresh checkout against a tampered remote: the words action must
/// be rejected with one line naming `why`, run locally, and leave no trace
/// of `evil` in the store or workspace.
fn assert_rejected(nginx: &Nginx, why: &str, evil: &[u8]) -> Out {
    let env = remote_env(nginx);
    let ws = Checkout::basic();
    let out = ws.run(
        &["//libs/words:build", "--remote-mode", "read-only"],
        &env_refs(&env),
    );
    out.assert_ok();
    out.assert_states(&["miss //libs/words:build"]);
    let rejected = lines_with(&out.stderr, "remote entry rejected");
    assert_eq!(rejected.len(), 1, "{}", out.stderr);
    assert!(
        rejected[0].contains(why),
        "wanted {why:?} in: {}",
        rejected[0]
    );
    assert!(
        rejected[0].starts_with("warning: //libs/words:build: "),
        "{}",
        rejected[0]
    );
    assert!(
        !ws.store_has(evil),
        "the rejected blob entered the local store"
    );
    for (path, contents, _) in ws.snapshot(&["."]) {
        assert!(
            !contents.contains(std::str::from_utf8(evil).unwrap()),
            "{path} holds the evil bytes"
        );
    }
    assert_eq!(ws.snapshot(&["libs/words/out"]).len(), 1, "built locally");
    out
}

#[test]
fn blob_with_wrong_bytes_is_rejected() {
    let Some(nginx) = Nginx::start("") else {
        return;
    };
    populate(&nginx);
    let (_, result) = nginx.result_with_output("libs/words/out/words.txt");
    let digest = result.output_files[0].digest.clone().unwrap();
    // Wrong bytes straight into nginx's folder, under the right name.
    let evil = b"EVIL-BYTES";
    std::fs::write(nginx.cache_dir().join("cas").join(&digest.hash), evil).unwrap();
    assert_rejected(&nginx, "has 10 bytes, not the", evil);
    // Same length, wrong bytes.
    let size = digest.size_bytes as usize;
    let same_len: Vec<u8> = b"X".repeat(size);
    std::fs::write(nginx.cache_dir().join("cas").join(&digest.hash), &same_len).unwrap();
    assert_rejected(&nginx, "its bytes do not match its digest", &same_len);
}

#[test]
fn unsafe_or_undeclared_output_paths_are_rejected() {
    let Some(nginx) = Nginx::start("") else {
        return;
    };
    populate(&nginx);
    let (file, _) = nginx.result_with_output("libs/words/out/words.txt");
    let evil = b"EVIL-PATH";
    let digest = nginx.put_blob(evil);
    for (path, why) in [
        ("/tmp/vbuild-evil.txt", "is absolute"),
        ("libs/words/out/../../../evil.txt", "contains '..'"),
        (
            "libs/words/evil.txt",
            "is not a declared output of //libs/words:build",
        ),
        ("libs/words/words.txt", "is not a declared output"),
        ("app/dist/evil.txt", "is not a declared output"),
    ] {
        let original = std::fs::read(&file).unwrap();
        forge(&file, |r| {
            r.output_files.push(reapi::OutputFile {
                path: path.into(),
                digest: Some(digest.clone()),
                ..Default::default()
            })
        });
        assert_rejected(&nginx, why, evil);
        std::fs::write(&file, original).unwrap();
    }
    // A symlink out of the workspace.
    let original = std::fs::read(&file).unwrap();
    forge(&file, |r| {
        r.output_symlinks.push(reapi::OutputSymlink {
            path: "libs/words/out/link".into(),
            target: "/etc/passwd".into(),
            ..Default::default()
        })
    });
    assert_rejected(&nginx, "outside the workspace", evil);
    assert!(!Path::new("/tmp/vbuild-evil.txt").exists());
    // A chain: each link alone stays inside, `a` through `b` reaches
    // /etc/passwd.
    std::fs::write(&file, original).unwrap();
    forge(&file, |r| {
        for (path, target) in [
            ("libs/words/out/d/b", "../../../.."),
            ("libs/words/out/d/a", "b/../../../../etc/passwd"),
        ] {
            r.output_symlinks.push(reapi::OutputSymlink {
                path: path.into(),
                target: target.into(),
                ..Default::default()
            })
        }
    });
    assert_rejected(&nginx, "symlink \"libs/words/out/d/a\" points to", evil);
}

#[test]
fn oversized_entries_are_rejected() {
    let Some(nginx) = Nginx::start("") else {
        return;
    };
    populate(&nginx);
    let env = remote_env(&nginx);
    let env = env_refs(&env);
    // Blobs over max_blob_size.
    let ws = Checkout::basic();
    ws.append("vbuild.toml", "\n[remote]\nmax_blob_size = 4\n");
    let out = ws.run(&["//libs/words:build"], &env);
    out.assert_ok();
    out.assert_states(&["miss //libs/words:build"]);
    let rejected = lines_with(&out.stderr, "remote entry rejected");
    assert_eq!(rejected.len(), 1, "{}", out.stderr);
    assert!(rejected[0].contains("max_blob_size"), "{}", rejected[0]);

    // An action result over max_action_result_size.
    let ws = Checkout::basic();
    ws.append("vbuild.toml", "\n[remote]\nmax_action_result_size = 10\n");
    let out = ws.run(&["//libs/words:build"], &env);
    out.assert_ok();
    out.assert_states(&["miss //libs/words:build"]);
    let rejected = lines_with(&out.stderr, "remote entry rejected");
    assert_eq!(rejected.len(), 1, "{}", out.stderr);
    assert!(
        rejected[0].contains("max_action_result_size"),
        "{}",
        rejected[0]
    );

    // A forged size in a digest: refused before anything is fetched.
    let (file, _) = nginx.result_with_output("libs/words/out/words.txt");
    forge(&file, |r| {
        r.output_files[0].digest.as_mut().unwrap().size_bytes = 1 << 40;
    });
    let ws = Checkout::basic();
    let gets = nginx.count("GET");
    let out = ws.run(&["//libs/words:build", "--remote-mode", "read-only"], &env);
    out.assert_ok();
    let rejected = lines_with(&out.stderr, "remote entry rejected");
    assert_eq!(rejected.len(), 1, "{}", out.stderr);
    assert!(rejected[0].contains("over the limit"), "{}", rejected[0]);
    // Only the records list, its blob and the action result were read.
    assert!(nginx.count("GET") - gets <= 3, "{}", nginx.access_log());
}

#[test]
fn entries_over_the_file_byte_and_depth_caps_are_rejected() {
    let Some(nginx) = Nginx::start("") else {
        return;
    };
    populate(&nginx);
    let (file, _) = nginx.result_with_output("libs/words/out/words.txt");
    let original = std::fs::read(&file).unwrap();
    let evil = b"EVIL-MANY";
    let digest = nginx.put_blob(evil);
    // 20,000 files (default cap 10,000): refused before one is fetched.
    forge(&file, |r| {
        for i in 0..20_000 {
            r.output_files.push(reapi::OutputFile {
                path: format!("libs/words/out/f{i}"),
                digest: Some(digest.clone()),
                ..Default::default()
            });
        }
    });
    let gets = nginx.count("GET");
    assert_rejected(
        &nginx,
        "20001 files, over the limit of 10000 (max_entry_files)",
        evil,
    );
    assert!(nginx.count("GET") - gets <= 3, "{}", nginx.access_log());
    // A path 100 levels deep (default cap 64).
    std::fs::write(&file, &original).unwrap();
    forge(&file, |r| {
        r.output_files.push(reapi::OutputFile {
            path: format!("libs/words/out/{}f", "d/".repeat(100)),
            digest: Some(digest.clone()),
            ..Default::default()
        });
    });
    assert_rejected(&nginx, "over the limit of 64 (max_entry_depth)", evil);
    // The caps are settings: the honest entry over a tiny byte cap.
    std::fs::write(&file, &original).unwrap();
    let env = remote_env(&nginx);
    let ws = Checkout::basic();
    ws.append(
        "vbuild.toml",
        "\n[remote]\nmax_entry_bytes = 1\nmax_entry_files = 5\n",
    );
    let out = ws.run(
        &["//libs/words:build", "--remote-mode", "read-only"],
        &env_refs(&env),
    );
    out.assert_ok();
    out.assert_states(&["miss //libs/words:build"]);
    let rejected = lines_with(&out.stderr, "remote entry rejected");
    assert!(rejected[0].contains("(max_entry_bytes)"), "{}", out.stderr);
}

#[test]
fn down_remote_makes_builds_slower_never_failed() {
    // Nothing listens on this port.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/cache");
    let ws = Checkout::basic();
    let out = ws.run(&["//..."], &[("VBUILD_REMOTE_URL", url.as_str())]);
    out.assert_ok();
    out.assert_all("miss");
    let warnings = lines_with(&out.stderr, "warning: remote cache");
    assert!(
        (1..=2).contains(&warnings.len()),
        "warns once (and once more on giving up):\n{}",
        out.stderr
    );
    assert!(warnings[0].contains(&url), "{}", warnings[0]);
}

#[test]
fn killing_the_server_mid_build_completes_locally() {
    let Some(mut nginx) = Nginx::start("") else {
        return;
    };
    // A chain of slow actions: the server dies while it runs.
    let ws = Checkout::slow_chain("0.4");
    let url = nginx.url();
    let root = ws.root().to_path_buf();
    let cache = ws.cache.path().to_path_buf();
    let build = std::thread::spawn(move || {
        run_with(
            &root,
            &cache,
            &["run", "-j1", "//..."],
            &[("VBUILD_REMOTE_URL", url.as_str())],
        )
    });
    // Wait until the first upload reached the server, then kill it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while nginx.count("PUT") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(nginx.count("PUT") > 0, "no upload before the deadline");
    nginx.kill();
    let out = build.join().unwrap();
    out.assert_ok();
    assert_eq!(out.states().len(), 6, "{}", out.stderr);
    out.assert_all("miss");
    assert_eq!(
        std::fs::read_to_string(ws.root().join("p5/out.txt")).unwrap(),
        "5\n"
    );
    let warnings = lines_with(&out.stderr, "warning: remote cache");
    assert!((1..=2).contains(&warnings.len()), "{}", out.stderr);
}

#[test]
fn credentials_basic_auth() {
    // nginx checks Basic credentials from a file in its temp dir.
    let Some(nginx) = Nginx::start("auth_basic \"vbuild\"; auth_basic_user_file {dir}/htpasswd;")
    else {
        return;
    };
    std::fs::write(nginx.dir.path().join("htpasswd"), "ci:{PLAIN}s3cret-pass\n").unwrap();
    let env = remote_env(&nginx);
    let mut env = env_refs(&env);

    // No credential configured.
    let ws = Checkout::basic();
    let out = ws.run(&["//..."], &env);
    out.assert_ok();
    let warnings = lines_with(&out.stderr, "warning: remote cache");
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(warnings[0].contains("401"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("none are configured"),
        "{}",
        warnings[0]
    );

    // A wrong one, from the environment: named, never printed.
    let ws = Checkout::basic();
    ws.append(
        "vbuild.toml",
        "\n[remote]\nauth = \"basic\"\ncredentials_env = \"CACHE_LOGIN\"\n",
    );
    env.push(("CACHE_LOGIN", "ci:wrong-pass-123"));
    let out = ws.run(&["//..."], &env);
    out.assert_ok();
    let warnings = lines_with(&out.stderr, "warning: remote cache");
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(
        warnings[0].contains("refused the credentials from $CACHE_LOGIN"),
        "{}",
        warnings[0]
    );
    assert!(!out.stderr.contains("wrong-pass-123") && !out.stdout.contains("wrong-pass-123"));
    let check = ws.vbuild(&["remote", "check"], &env);
    assert_eq!(check.code, 1, "{}", check.stdout);
    assert!(
        check.stdout.contains("refused the credentials"),
        "{}",
        check.stdout
    );
    assert!(!check.stdout.contains("wrong-pass-123") && !check.stderr.contains("wrong-pass-123"));

    // The right one, from a file.
    let ws = Checkout::basic();
    ws.write("secrets/cache-login", "ci:s3cret-pass\n");
    ws.append(
        "vbuild.toml",
        "\n[remote]\nauth = \"basic\"\ncredentials_file = \"secrets/cache-login\"\n",
    );
    let env = remote_env(&nginx);
    let env = env_refs(&env);
    let out = ws.run(&["//..."], &env);
    out.assert_ok();
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    assert!(nginx.count("PUT") > 0);
    let check = ws.vbuild(&["remote", "check"], &env);
    assert_eq!(check.code, 0, "{}\n{}", check.stdout, check.stderr);
    assert!(!check.stdout.contains("s3cret"), "{}", check.stdout);

    // A configured variable that is not set is an error naming it.
    let ws = Checkout::basic();
    ws.append(
        "vbuild.toml",
        "\n[remote]\ncredentials_env = \"NOT_SET_ANYWHERE\"\n",
    );
    let out = ws.run(&["//..."], &env);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("$NOT_SET_ANYWHERE is not set"),
        "{}",
        out.stderr
    );
}

#[test]
fn credentials_bearer_and_never_in_the_url() {
    let Some(nginx) =
        Nginx::start("if ($http_authorization != \"Bearer tok-42-secret\") { return 401; }")
    else {
        return;
    };
    let env = remote_env(&nginx);
    let mut env = env_refs(&env);
    env.push(("VBUILD_REMOTE_CREDENTIALS", "tok-42-secret"));
    let ws = Checkout::basic();
    let out = ws.run(&["//..."], &env);
    out.assert_ok();
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    assert!(nginx.count("PUT") > 0);
    env.pop();
    env.push(("VBUILD_REMOTE_CREDENTIALS", "tok-41-wrong"));
    let out = Checkout::basic().run(&["//..."], &env);
    out.assert_ok();
    assert!(
        out.stderr
            .contains("refused the credentials from $VBUILD_REMOTE_CREDENTIALS"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("tok-41-wrong"));

    // Credentials in a URL are refused, and not echoed.
    let url = format!("http://user:pw-in-url@127.0.0.1:{}/cache", nginx.port);
    let out = ws.run(&["//...", "--remote", &url], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("carries credentials"), "{}", out.stderr);
    assert!(!out.stderr.contains("pw-in-url"), "{}", out.stderr);
}

#[test]
fn remote_check_reports_reads_and_writes() {
    let Some(mut nginx) = Nginx::start("") else {
        return;
    };
    let env = remote_env(&nginx);
    let env = env_refs(&env);
    let ws = Checkout::basic();
    let out = ws.vbuild(&["remote", "check"], &env);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("Bazel HTTP cache"), "{}", out.stdout);
    assert!(out.stdout.contains("read:            ok"), "{}", out.stdout);
    assert!(out.stdout.contains("write:           ok"), "{}", out.stdout);
    let out = ws.vbuild(&["remote", "check", "--remote-mode", "read-only"], &env);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("not tried (mode = read-only)"),
        "{}",
        out.stdout
    );
    nginx.kill();
    let out = ws.vbuild(&["remote", "check"], &env);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("FAILED"), "{}", out.stdout);
    let out = Checkout::basic().vbuild(&["remote", "check"], &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("no remote cache configured"),
        "{}",
        out.stderr
    );
}

#[test]
fn narrowing_records_are_shared() {
    let Some(nginx) = Nginx::start("") else {
        return;
    };
    let env = remote_env(&nginx);
    let env = env_refs(&env);
    // The tool declares that notes.txt does not count.
    let files = [
        ("pkg/a.txt", "A\n"),
        ("pkg/notes.txt", "first notes\n"),
        (
            "pkg/BUILD.toml",
            "[target.build]\ncommand = \"vbuild tool ignore-input notes.txt && cat a.txt > out.txt\"\nsrcs = [\"a.txt\", \"notes.txt\"]\nouts = [\"out.txt\"]\n",
        ),
    ];
    let first = Checkout::files(&files);
    first.run(&["//..."], &env).assert_ok();
    // Elsewhere, with different notes: the record from the remote says
    // they do not count, so it is a remote hit.
    let second = Checkout::files(&files);
    second.write("pkg/notes.txt", "other notes\n");
    let out = second.run(&["//..."], &env);
    out.assert_ok();
    out.assert_states(&["hit (remote) //pkg:build"]);
    assert_eq!(
        std::fs::read_to_string(second.root().join("pkg/out.txt")).unwrap(),
        "A\n"
    );
    // A change that counts is a miss.
    let third = Checkout::files(&files);
    third.write("pkg/a.txt", "B\n");
    let out = third.run(&["//..."], &env);
    out.assert_ok();
    out.assert_states(&["miss //pkg:build"]);
}

/// A writer whose tool ignores the whole workspace (`ignore-input ..`)
/// must not make every later checkout hit its bytes: a record may narrow
/// only the target's own sources and never all of them, and what a remote
/// record narrowed is not copied into the local cache (issue 11 hole 5).
#[test]
fn a_remote_record_cannot_ignore_everything() {
    let Some(nginx) = Nginx::start("") else {
        return;
    };
    let env = remote_env(&nginx);
    let env = env_refs(&env);
    let files = [
        ("pkg/a.txt", "A\n"),
        (
            "pkg/BUILD.toml",
            "[target.build]\ncommand = \"vbuild tool ignore-input .. && cat a.txt > out.txt\"\nsrcs = [\"a.txt\"]\nouts = [\"out.txt\"]\n",
        ),
    ];
    Checkout::files(&files).run(&["//..."], &env).assert_ok();
    // An honest checkout with another source runs it.
    let honest = Checkout::files(&files);
    honest.write("pkg/a.txt", "B\n");
    let out = honest.run(&["//..."], &env);
    out.assert_ok();
    out.assert_states(&["miss //pkg:build"]);
    let read = |c: &Checkout| std::fs::read_to_string(c.root().join("pkg/out.txt")).unwrap();
    assert_eq!(read(&honest), "B\n");
    // The same source hits; after an edit, the local cache does not.
    let same = Checkout::files(&files);
    let out = same.run(&["//..."], &env);
    out.assert_states(&["hit (remote) //pkg:build"]);
    same.write("pkg/a.txt", "C\n");
    let out = same.run(&["//...", "--no-remote"], &[]);
    out.assert_ok();
    out.assert_states(&["miss //pkg:build"]);
    assert_eq!(read(&same), "C\n");
}

/// A remote hit found through a record that narrows is filled into the
/// local cache without that narrowing: only a local run's own record
/// narrows local lookups.
#[test]
fn a_remote_narrowing_is_not_copied_into_the_local_cache() {
    let Some(nginx) = Nginx::start("") else {
        return;
    };
    let env = remote_env(&nginx);
    let env = env_refs(&env);
    let files = [
        ("pkg/a.txt", "A\n"),
        ("pkg/notes.txt", "first\n"),
        (
            "pkg/BUILD.toml",
            "[target.build]\ncommand = \"vbuild tool ignore-input notes.txt && cat a.txt > out.txt\"\nsrcs = [\"a.txt\", \"notes.txt\"]\nouts = [\"out.txt\"]\n",
        ),
    ];
    Checkout::files(&files).run(&["//..."], &env).assert_ok();
    let second = Checkout::files(&files);
    second.write("pkg/notes.txt", "second\n");
    let out = second.run(&["//..."], &env);
    out.assert_states(&["hit (remote) //pkg:build"]);
    // Locally the same inputs hit ...
    let out = second.run(&["//...", "--no-remote"], &[]);
    out.assert_states(&["hit //pkg:build"]);
    // ... but other notes are not vouched for by any local run.
    second.write("pkg/notes.txt", "third\n");
    let out = second.run(&["//...", "--no-remote"], &[]);
    out.assert_states(&["miss //pkg:build"]);
}

/// A throwaway CA with a server certificate for 127.0.0.1/localhost and a
/// client certificate, made with the `openssl` command.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=vbuild test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        pki.issue(
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        pki.issue("client", "extendedKeyUsage=clientAuth\n");
        pki
    }

    /// `{name}.pem` and `{name}.key`, signed by the CA, with `extensions`.
    fn issue(&self, name: &str, extensions: &str) {
        let ext = format!("{name}.ext");
        std::fs::write(
            self.path(&ext),
            format!("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}"),
        )
        .unwrap();
        let (csr, key, pem) = (
            format!("{name}.csr"),
            format!("{name}.key"),
            format!("{name}.pem"),
        );
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN=vbuild test {name}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .expect("the openssl command runs (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// nginx's `ssl_*` directives for the server certificate; with
    /// `verify_client`, it also demands a client certificate from the CA.
    fn nginx_directives(&self, verify_client: bool) -> String {
        let mut s = format!(
            "ssl_certificate {}; ssl_certificate_key {};",
            self.path("server.pem").display(),
            self.path("server.key").display()
        );
        if verify_client {
            s.push_str(&format!(
                " ssl_client_certificate {}; ssl_verify_client on;",
                self.path("ca.pem").display()
            ));
        }
        s
    }

    /// Copies the CA (and the client certificate and key) into `ws` and
    /// returns the `[remote]` lines naming them.
    fn configure(&self, ws: &Checkout, client_cert: bool) -> String {
        let mut files = vec!["ca.pem"];
        if client_cert {
            files.extend(["client.pem", "client.key"]);
        }
        for f in files {
            ws.write(
                &format!("certs/{f}"),
                &std::fs::read_to_string(self.path(f)).unwrap(),
            );
        }
        let mut s = "tls_ca = \"certs/ca.pem\"\n".to_string();
        if client_cert {
            s.push_str(
                "tls_client_cert = \"certs/client.pem\"\ntls_client_key = \"certs/client.key\"\n",
            );
        }
        s
    }

    /// Whether `text` holds any of the private keys, or a piece of one.
    fn leaks_a_key(&self, text: &str) -> bool {
        ["ca.key", "server.key", "client.key"].iter().any(|k| {
            std::fs::read_to_string(self.path(k))
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .any(|l| text.contains(l))
        })
    }
}

/// A checkout with `[remote]` over TLS (plus the client certificate when
/// `client_cert`) uploads; a second, fresh checkout then restores every
/// action from the remote, byte-identical. Returns the second checkout.
fn upload_then_restore_over_tls(
    pki: &Pki,
    nginx: &Nginx,
    env: &[(&str, &str)],
    client_cert: bool,
) -> Checkout {
    let tls_checkout = || {
        let ws = Checkout::basic();
        ws.append(
            "vbuild.toml",
            &format!("\n[remote]\n{}", pki.configure(&ws, client_cert)),
        );
        ws
    };
    let first = tls_checkout();
    let out = first.run(&["//..."], env);
    out.assert_ok();
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    assert!(nginx.count("PUT") > 0, "uploaded:\n{}", nginx.access_log());
    let second = tls_checkout();
    let out = second.run(&["//..."], env);
    out.assert_ok();
    assert_eq!(out.states(), BASIC_REMOTE_HITS, "{}", out.stderr);
    assert_eq!(
        first.snapshot(BASIC_OUTPUTS),
        second.snapshot(BASIC_OUTPUTS)
    );
    second
}

const TOKEN: &str = "tls-tok-7f3e-secret";

#[test]
fn https_with_a_custom_ca() {
    let pki = Pki::new();
    let Some(nginx) = Nginx::start_tls(
        &pki.nginx_directives(false),
        &format!("if ($http_authorization != \"Bearer {TOKEN}\") {{ return 401; }}"),
    ) else {
        return;
    };
    assert!(nginx.url().starts_with("https://127.0.0.1:"));
    let env = remote_env(&nginx);
    let mut env = env_refs(&env);
    env.push(("VBUILD_REMOTE_CREDENTIALS", TOKEN));

    // With the CA: uploads, then a fresh checkout restores everything.
    let second = upload_then_restore_over_tls(&pki, &nginx, &env, false);
    let check = second.vbuild(&["remote", "check"], &env);
    assert_eq!(check.code, 0, "{}\n{}", check.stdout, check.stderr);

    // Without it the server's certificate is not trusted: one warning
    // naming the problem, and a local build that succeeds.
    let requests = nginx.access_log().lines().count();
    let ws = Checkout::basic();
    let out = ws.run(&["//..."], &env);
    out.assert_ok();
    out.assert_all("miss");
    let warnings = lines_with(&out.stderr, "warning: remote cache");
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(warnings[0].contains(&nginx.url()), "{}", warnings[0]);
    assert!(
        warnings[0].contains("certificate") && warnings[0].contains("UnknownIssuer"),
        "{}",
        warnings[0]
    );
    assert_eq!(
        nginx.access_log().lines().count(),
        requests,
        "no request got through"
    );
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(TOKEN), "{text}");
        assert!(!pki.leaks_a_key(text), "{text}");
    }
    let check = ws.vbuild(&["remote", "check"], &env);
    assert_eq!(check.code, 1, "{}\n{}", check.stdout, check.stderr);
    assert!(check.stdout.contains("certificate"), "{}", check.stdout);
    for text in [&check.stdout, &check.stderr] {
        assert!(!text.contains(TOKEN), "{text}");
    }
}

#[test]
fn https_with_a_client_certificate() {
    let pki = Pki::new();
    let Some(nginx) = Nginx::start_tls(&pki.nginx_directives(true), "") else {
        return;
    };
    let env = remote_env(&nginx);
    let env = env_refs(&env);

    // With the client certificate: works both ways.
    upload_then_restore_over_tls(&pki, &nginx, &env, true);

    // Without it the server refuses, and vbuild says so once.
    let ws = Checkout::basic();
    ws.append(
        "vbuild.toml",
        &format!("\n[remote]\n{}", pki.configure(&ws, false)),
    );
    let out = ws.run(&["//..."], &env);
    out.assert_ok();
    out.assert_all("miss");
    let warnings = lines_with(&out.stderr, "warning: remote cache");
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(
        warnings[0].contains("client certificate"),
        "{}",
        warnings[0]
    );
    for text in [&out.stdout, &out.stderr] {
        assert!(!pki.leaks_a_key(text), "{text}");
    }
}
