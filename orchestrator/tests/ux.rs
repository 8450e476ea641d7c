//! What users see: progress and notices, --output-logs, --json events
//! (validated against their schema), --summary, --profile, Ctrl-C,
//! query/why, completions, colour, -j percentages, --version.
mod common;
use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn events_schema() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schema/events/run-events.v1.schema.json"
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::draft202012::new(&schema).expect("the events schema compiles")
}

fn assert_valid(validator: &jsonschema::Validator, doc: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{doc}\ndoes not match: {errors:#?}");
}

/// A miss with logs on both streams, a failure, a skip, and a hit later.
fn mixed() -> Ws {
    Ws::new(&[
        (
            "a/BUILD.toml",
            "[target.build]\ncommand = \"echo a-out; echo a-err >&2; echo x > o.txt\"\nouts = [\"o.txt\"]\n",
        ),
        (
            "b/BUILD.toml",
            "[target.bad]\ncommand = \"echo b-out; echo b-err >&2; exit 3\"\n[target.after]\ncommand = \"true\"\ndeps = [\":bad\"]\n",
        ),
    ])
}

fn events(out: &Out) -> Vec<Value> {
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn json_events_match_their_schema() {
    let ws = mixed();
    let validator = events_schema();
    let summary = ws.path("summary.json");
    let first = ws.run(&[
        "run",
        "//...",
        "-j1",
        "-k",
        "--json",
        "--summary",
        summary.to_str().unwrap(),
    ]);
    assert_eq!(first.code, 1, "{}", first.snapshot());
    assert_eq!(first.stderr, "", "--json prints no status lines");
    let second = ws.run(&["run", "//a:build", "--json"]);
    let why = ws.run(&["why", "//...", "--json"]);
    let mut all = vec![];
    for out in [&first, &second, &why] {
        let evs = events(out);
        assert_eq!(evs[0]["event"], "run_started");
        assert_eq!(evs.last().unwrap()["event"], "run_finished");
        all.extend(evs);
    }
    for ev in &all {
        assert_valid(&validator, ev);
    }
    let finished = |label: &str, state: &str| {
        all.iter()
            .find(|e| e["event"] == "action_finished" && e["label"] == label && e["state"] == state)
    };
    let miss = finished("//a:build", "miss").expect("a miss event");
    assert_eq!(miss["stdout"], "a-out\n");
    assert_eq!(miss["stderr"], "a-err\n");
    assert!(miss["key"].as_str().unwrap().len() == 64);
    let hit = finished("//a:build", "hit").expect("a hit event");
    assert_eq!(hit["source"], "local");
    assert_eq!(hit["bytes_restored"], 2);
    assert_eq!(hit["key"], miss["key"], "a hit names the key it found");
    assert_eq!(
        finished("//b:bad", "failed").unwrap()["reason"],
        "exit code 3"
    );
    assert!(finished("//b:after", "skipped").is_some());
    assert!(finished("//b:bad", "would_run").is_some());
    let run_finished = events(&first).pop().unwrap();
    assert_eq!(run_finished["counts"]["failed"], 1);
    assert_eq!(run_finished["failed"], serde_json::json!(["//b:bad"]));

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
    assert_valid(&validator, &doc);
    assert_eq!(doc["actions"].as_array().unwrap().len(), 3);
    assert_eq!(doc["counts"]["miss"], 1);
}

#[test]
fn output_logs_policies() {
    let ws = mixed();
    ws.run(&["run", "//...", "-j1", "-k"]);
    // Hits replay their logs by default; new-only keeps only what ran.
    let full = ws.run(&["run", "//...", "-j1", "-k"]);
    let new_only = ws.run(&["run", "//...", "-j1", "-k", "--output-logs", "new-only"]);
    let errors = ws.run(&["run", "//...", "-j1", "-k", "--output-logs", "errors-only"]);
    let none = ws.run(&["run", "//...", "-j1", "-k", "--output-logs", "none"]);
    insta::assert_snapshot!(
        "output_logs",
        format!(
            "== full\n{}\n== new-only\n{}\n== errors-only\n{}\n== none\n{}",
            full.snapshot(),
            new_only.snapshot(),
            errors.snapshot(),
            none.snapshot()
        )
    );
}

#[test]
fn non_terminal_run_prints_running_notices() {
    let ws = Ws::new(&[(
        "a/BUILD.toml",
        "[target.slow]\ncommand = \"sleep 1.3; echo slept\"\n",
    )]);
    let out = ws.run_env(&["run", "//a:slow"], &[("VBUILD_RUNNING_NOTICE", "500ms")]);
    out.assert_ok();
    let notices: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("running "))
        .collect();
    // At 0.5 s and 1 s at least (more if the machine is slow).
    assert!(notices.len() >= 2, "{}", out.stderr);
    assert_eq!(notices[0], "running   //a:slow  (0.5s)");
    assert_eq!(notices[1], "running   //a:slow  (1s)");
    let rest: String = out
        .stderr
        .lines()
        .filter(|l| !l.starts_with("running "))
        .map(|l| format!("{l}\n"))
        .collect();
    insta::assert_snapshot!("non_tty_run", redact(&rest));
}

/// Runs vbuild under a pseudo-terminal (util-linux `script`), returning
/// what the terminal received.
fn under_pty(ws: &Ws, args: &str, env: &[(&str, &str)]) -> Option<String> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipping: no `script` (util-linux)");
        return None;
    }
    let log = ws.path("pty.log");
    let cmdline = format!("{} {args}", env!("CARGO_BIN_EXE_vbuild"));
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &cmdline, log.to_str().unwrap()])
        .current_dir(ws.root())
        .env("VBUILD_CACHE_DIR", &ws.cache)
        .env("TERM", "xterm-256color")
        .env_remove("CI")
        .env_remove("NO_COLOR")
        .env_remove("FORCE_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "vbuild under a pty: {status}");
    Some(String::from_utf8_lossy(&std::fs::read(log).unwrap()).into_owned())
}

#[test]
fn terminal_shows_a_live_status_area() {
    let ws = Ws::new(&[
        (
            "a/BUILD.toml",
            "[target.slow]\ncommand = \"sleep 1.2; echo slow-done\"\n",
        ),
        (
            "b/BUILD.toml",
            "[target.quick]\ncommand = \"echo quick-done\"\n",
        ),
    ]);
    let Some(screen) = under_pty(&ws, "run //... -j2", &[]) else {
        return;
    };
    // The header with counts, and the running action with its elapsed time.
    assert!(screen.contains("1 running: 0 hit, 1 ran"), "{screen:?}");
    assert!(screen.contains("//a:slow (1s)"), "{screen:?}");
    // Finished output lands above, grouped with its status line, coloured.
    let quick = screen
        .find("\x1b[33mmiss     \x1b[0m //b:quick")
        .expect("status line");
    let quick_out = screen.find("quick-done").unwrap();
    assert!(quick < quick_out, "{screen:?}");
    assert!(screen.contains("vbuild: 2 actions in"), "{screen:?}");
    // NO_COLOR turns the colour off (the status area stays).
    let plain = under_pty(&ws, "run //... -j2 --no-cache", &[("NO_COLOR", "1")]).unwrap();
    assert!(plain.contains("uncached  //b:quick"), "{plain:?}");
    assert!(!plain.contains("\x1b[33m"), "{plain:?}");
}

#[test]
fn profile_is_a_chrome_trace_with_the_phases() {
    let ws = three_packages();
    let trace = ws.path("trace.json");
    ws.run(&["run", "//...", "-j2", "--profile", trace.to_str().unwrap()])
        .assert_ok();
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let events = doc["traceEvents"].as_array().unwrap();
    let spans: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    for phase in [
        "resolve",
        "lookup",
        "stage",
        "run",
        "capture",
        "record",
        "materialize",
    ] {
        let span = spans
            .iter()
            .find(|e| e["name"] == phase)
            .unwrap_or_else(|| panic!("no {phase} span in {doc}"));
        assert!(span["ts"].as_f64().unwrap() >= 0.0);
        assert!(span["dur"].as_f64().unwrap() >= 0.0);
        assert!(span["args"]["label"].as_str().unwrap().starts_with("//"));
    }
    // Every track is named.
    for span in &spans {
        let tid = &span["tid"];
        assert!(
            events
                .iter()
                .any(|e| e["ph"] == "M" && e["name"] == "thread_name" && &e["tid"] == tid),
            "track {tid} has no name"
        );
    }
    // A hit's phases: lookup and materialize, nothing runs.
    ws.run(&["run", "//lib:build", "--profile", trace.to_str().unwrap()])
        .assert_ok();
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let names: Vec<&str> = doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["resolve", "lookup", "materialize"]);
}

/// Waits until `path` exists (an action has started).
fn wait_for(path: &std::path::Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{path:?} never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigint(child: &std::process::Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

/// Two slow independent actions and one depending on the first.
fn interruptible() -> Ws {
    let ws = Ws::new(&[
        (
            "a/BUILD.toml",
            "[target.slow]\ncommand = \"touch $MARK/a; sleep 30\"\npass_env = [\"MARK\"]\n",
        ),
        (
            "b/BUILD.toml",
            "[target.slow]\ncommand = \"touch $MARK/b; sleep 30\"\npass_env = [\"MARK\"]\n[target.after]\ncommand = \"true\"\ndeps = [\":slow\"]\n",
        ),
        ("c/BUILD.toml", "[target.later]\ncommand = \"true\"\n"),
    ]);
    std::fs::create_dir_all(ws.path("marks")).unwrap();
    ws
}

#[test]
fn ctrl_c_cancels_even_with_keep_going() {
    let ws = interruptible();
    let marks = ws.path("marks");
    let child = Command::new(env!("CARGO_BIN_EXE_vbuild"))
        .args(["run", "//...", "-j2", "-k"])
        .current_dir(ws.root())
        .env("VBUILD_CACHE_DIR", &ws.cache)
        .env("MARK", &marks)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&marks.join("a"));
    wait_for(&marks.join("b"));
    sigint(&child);
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "stopped promptly"
    );
    let out = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // The two cancelled lines come in either order.
    let mut lines: Vec<String> = out.snapshot().lines().map(String::from).collect();
    lines.sort();
    insta::assert_snapshot!("ctrl_c_keep_going", lines.join("\n"));
}

/// Starts `vbuild run //a:build` on a workspace whose one src takes a while
/// to hash; returns once hashing has begun (Ctrl-C is vbuild's by then).
fn hashing_a_big_file(ws: &Ws) -> std::process::Child {
    ws.write(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"echo ran\"\nsrcs = [\"big.bin\"]\n",
    );
    let big = std::fs::File::create(ws.path("a/big.bin")).unwrap();
    big.set_len(100 << 20).unwrap(); // sparse: cheap to make, slow to hash
    let child = Command::new(env!("CARGO_BIN_EXE_vbuild"))
        .args(["run", "//a:build", "-j1"])
        .current_dir(ws.root())
        .env("VBUILD_CACHE_DIR", &ws.cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Hashing has begun once vbuild holds the file open.
    let fds = format!("/proc/{}/fd", child.id());
    let reading = || {
        std::fs::read_dir(&fds).is_ok_and(|d| {
            d.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.ends_with("a/big.bin")))
        })
    };
    let start = Instant::now();
    while !reading() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never started hashing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// A second Ctrl-C quits while the action is still busy, and still says
/// what happened (the busy action counted as cancelled).
#[test]
fn second_ctrl_c_still_prints_the_summary() {
    let ws = Ws::new(&[]);
    let child = hashing_a_big_file(&ws);
    sigint(&child);
    std::thread::sleep(Duration::from_millis(30));
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summaries: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("vbuild: 1 action in"))
        .collect();
    assert_eq!(summaries.len(), 1, "{stderr}");
    assert!(
        summaries[0].ends_with("0 hit, 0 miss, 1 cancelled"),
        "{stderr}"
    );
    assert!(!stderr.contains("failed"), "{stderr}");
}

#[test]
fn query_outputs_labels_json_and_dot() {
    let ws = three_packages();
    let labels = ws.run(&["query"]);
    let json = ws.run(&["query", "//...", "--output", "json"]);
    let dot = ws.run(&["query", "//app/...", "//lib:all", "--output", "dot"]);
    insta::assert_snapshot!(
        "query_outputs",
        format!(
            "{}\n{}\n{}",
            labels.snapshot(),
            json.snapshot(),
            dot.snapshot()
        )
    );
}

#[test]
fn why_takes_patterns_and_answers_on_stdout() {
    let ws = three_packages();
    ws.run(&["run", "//lib:build"]).assert_ok();
    ws.write("app/extra.txt", "x");
    let why = ws.run(&["why", "//app:build", "//other/..."]);
    insta::assert_snapshot!("why_patterns", why.snapshot());
}

#[test]
fn completions_for_each_shell() {
    let ws = Ws::new(&[]);
    for (shell, needle) in [
        ("bash", "_vbuild()"),
        ("zsh", "#compdef vbuild"),
        ("fish", "complete -c vbuild"),
    ] {
        let out = ws.run(&["completions", shell]);
        out.assert_ok();
        assert!(out.stdout.contains(needle), "{shell}: {}", out.stdout);
        assert!(
            out.stdout.contains("output-logs"),
            "{shell} lacks run's flags"
        );
    }
}

#[test]
fn jobs_accept_a_percentage() {
    let ws = three_packages();
    let out = ws.run(&["run", "//...", "-j", "50%", "--json"]);
    out.assert_ok();
    let cores = std::thread::available_parallelism().unwrap().get();
    let started: Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(started["jobs"], (cores / 2).max(1));
    let bad = ws.run(&["run", "//...", "-j", "lots"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr
            .contains("`lots` is not a number of jobs or a percentage of the cores"),
        "{}",
        bad.stderr
    );
}

#[test]
fn version_names_the_commit() {
    let out = Ws::new(&[]).run(&["--version"]);
    out.assert_ok();
    let re =
        regex::Regex::new(r"^vbuild \d+\.\d+\.\d+ \(([0-9a-f]{12}|unknown commit)\)\n$").unwrap();
    assert!(re.is_match(&out.stdout), "{:?}", out.stdout);
}

#[test]
fn colour_settings_reach_actions_and_their_keys() {
    let ws = Ws::new(&[(
        "a/BUILD.toml",
        "[target.env]\ncommand = \"env | grep -E '^(NO_COLOR|FORCE_COLOR|TERM|CI)=' | sort > env.txt\"\nouts = [\"env.txt\"]\n",
    )]);
    ws.run_env(&["run", "//a:env"], &[("TERM", "xterm"), ("CI", "true")])
        .assert_ok();
    assert_eq!(ws.read("a/env.txt"), "NO_COLOR=1\n");
    // NO_COLOR from the caller changes nothing: same key, a hit.
    ws.run_env(&["run", "//a:env"], &[("NO_COLOR", "1")])
        .assert_all("hit");
    let forced = ws.run_env(&["run", "//a:env"], &[("FORCE_COLOR", "1")]);
    // vbuild colours its own words too.
    assert!(
        forced.stderr.starts_with(
            "\x1b[33mmiss     \x1b[0m //a:env  (colour setting changed (FORCE_COLOR))"
        ),
        "{}",
        forced.stderr
    );
    assert_eq!(ws.read("a/env.txt"), "FORCE_COLOR=1\n");
}

#[test]
fn schema_command_writes_the_schemas() {
    let ws = Ws::new(&[]);
    let out = ws.run(&["schema"]);
    out.assert_ok();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (written, shipped) in [
        ("vbuild.schema.json", "schema/json/vbuild.schema.json"),
        ("build.schema.json", "schema/json/build.schema.json"),
        (
            "run-events.v1.schema.json",
            "schema/events/run-events.v1.schema.json",
        ),
    ] {
        let got = std::fs::read_to_string(ws.path(".vbuild/schema").join(written)).unwrap();
        assert_eq!(got, std::fs::read_to_string(repo.join(shipped)).unwrap());
        serde_json::from_str::<Value>(&got).unwrap();
    }
    // The workspace still loads: .vbuild is hidden from package discovery.
    ws.run(&["query"]).assert_ok();
}

/// Runs vbuild with stdout and stderr into one file, as a terminal shows them.
fn run_merged(ws: &Ws, args: &[&str]) -> String {
    let path = ws.cache.join("merged.log");
    let file = std::fs::File::create(&path).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_vbuild"))
        .args(args)
        .current_dir(ws.root())
        .env("VBUILD_CACHE_DIR", &ws.cache)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn stdout_and_stderr_keep_their_order() {
    let ws = Ws::new(&[(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"echo out1; sleep 0.3; echo err1 >&2; sleep 0.3; echo out2; sleep 0.3; echo err2 >&2\"\n",
    )]);
    for (what, sandbox) in [
        ("miss", "scratch"),
        ("hit", "scratch"),
        ("miss", "namespaces"),
    ] {
        let text = run_merged(&ws, &["run", "//a:build", "--sandbox", sandbox]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with(what), "{text}");
        assert_eq!(
            lines[1..5],
            ["out1", "err1", "out2", "err2"],
            "{what} in {sandbox}:\n{text}"
        );
    }
}

/// Ctrl-C while the first action's inputs are still being hashed (before
/// anything ran): the action is cancelled, never started, and the summary
/// is printed (the default SIGINT used to end vbuild without one).
#[test]
fn ctrl_c_while_hashing_cancels_with_a_summary() {
    let ws = Ws::new(&[]);
    let child = hashing_a_big_file(&ws);
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("cancelled //a:build  (interrupted)"),
        "{stderr}"
    );
    assert!(stderr.contains("0 hit, 0 miss, 1 cancelled"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ran"));
}
