//! Issue 14: a hostile tool (or another action) against the server. Each
//! test failed on the server before the fix named in its comment.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::Harness;
use vbuild_ipc::limits::{MAX_CONNECTIONS, MAX_IGNORED, MAX_TRACKED_ENV};
use vbuild_ipc::protocol::{encode_frame, read_frame, EnvQuery, Request, Response};
use vbuild_ipc::PROTOCOL_VERSION;

fn connect(h: &Harness) -> UnixStream {
    let s = UnixStream::connect(h.server().socket_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn hello(token: Option<&str>) -> Request {
    Request::Hello {
        version: PROTOCOL_VERSION,
        client: None,
        token: token.map(str::to_owned),
    }
}

fn greeted(h: &Harness) -> UnixStream {
    let mut s = connect(h);
    let r = call(&mut s, &hello(Some(h.server().token())));
    assert!(matches!(r, Response::Hello { .. }), "{r:?}");
    s
}

fn call(s: &mut UnixStream, req: &Request) -> Response {
    s.write_all(&encode_frame(req).unwrap()).unwrap();
    read_frame(s).unwrap()
}

/// Sends every request at once, then reads one answer each.
fn pipeline(s: &mut UnixStream, reqs: &[Request]) -> Vec<Response> {
    let mut bytes = Vec::new();
    for r in reqs {
        bytes.extend(encode_frame(r).unwrap());
    }
    let mut writer = s.try_clone().unwrap();
    let t = std::thread::spawn(move || writer.write_all(&bytes).unwrap());
    let out = reqs.iter().map(|_| read_frame(s).unwrap()).collect();
    t.join().unwrap();
    out
}

fn closed(s: &mut UnixStream) -> bool {
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).is_ok()
}

/// Item 5: a connection that cannot show the action's token (another
/// action that found the socket) is refused and applies nothing.
#[test]
fn a_hello_without_the_actions_token_is_refused() {
    let mut h = Harness::new();
    let env = h.action_env();
    let token = &env.iter().find(|(k, _)| k == "VBUILD_IPC_TOKEN").unwrap().1;
    assert_eq!(token, h.server().token());
    assert!(token.len() >= 32, "token too short to be a secret: {token}");
    let pkg = h.pkg().to_string_lossy().into_owned();
    for bad in [None, Some("0".repeat(token.len())), Some(String::new())] {
        let mut s = connect(&h);
        let ignore = Request::IgnoreInput {
            path: "src".into(),
            cwd: Some(pkg.clone()),
        };
        s.write_all(&encode_frame(&hello(bad.as_deref())).unwrap())
            .unwrap();
        // The server may already have closed: the request must not apply
        // whether or not it got there.
        let _ = s.write_all(&encode_frame(&ignore).unwrap());
        match read_frame::<Response>(&mut s).unwrap() {
            Response::Error { message } => assert!(message.contains("token"), "{message}"),
            other => panic!("expected an error, got {other:?}"),
        }
        assert!(closed(&mut s));
    }
    let d = h.finish(Duration::from_secs(1));
    assert!(d.ignored_inputs.is_empty(), "{:?}", d.ignored_inputs);
    assert_eq!(d.refusals.len(), 1, "{:?}", d.refusals);
    assert!(d.refusals[0].contains("2 more"), "{:?}", d.refusals);
}

/// Item 5: the socket's directory name is not guessable from the pid and
/// a counter.
#[test]
fn socket_directories_have_unguessable_names() {
    let h = Harness::new();
    let name = h
        .server()
        .socket_dir()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let random = name.rsplit('-').next().unwrap();
    assert!(random.len() >= 24, "{name}");
}

/// Item 8: a 500,000-character glob panicked the connection's task
/// ("regex compilation shouldn't fail"): no `error` reply, and the tool
/// saw a dropped connection. Now it is an error and the connection lives.
#[test]
fn a_huge_glob_is_an_error_reply_not_a_panic() {
    let mut h = Harness::new();
    let mut s = greeted(&h);
    for glob in [
        "a".repeat(500_000),
        "{a,b}".repeat(100_000),
        "[a-z]*".repeat(80_000),
    ] {
        let r = call(
            &mut s,
            &Request::GetEnvs {
                query: EnvQuery::Glob(glob),
                tracked: true,
            },
        );
        match r {
            Response::Error { message } => assert!(message.len() < 400, "{} bytes", message.len()),
            other => panic!("expected an error, got {other:?}"),
        }
    }
    // The connection is still usable.
    let r = call(
        &mut s,
        &Request::GetEnv {
            name: "PRESENT".into(),
            tracked: true,
        },
    );
    assert_eq!(
        r,
        Response::Env {
            value: Some("yes".into())
        }
    );
    drop(s);
    let d = h.finish(Duration::from_secs(1));
    assert!(d.env_patterns.is_empty());
    assert_eq!(d.refusals.len(), 1, "{:?}", d.refusals);
}

/// Item 1: vbuild's own settings are invisible; queries skip secrets.
#[test]
fn tools_never_see_vbuild_settings_or_queried_secrets() {
    let mut h = Harness::new();
    let mut s = greeted(&h);
    let r = call(
        &mut s,
        &Request::GetEnvs {
            query: EnvQuery::Glob("*".into()),
            tracked: false,
        },
    );
    let Response::Envs { values } = r else {
        panic!("{r:?}")
    };
    for name in values.keys() {
        assert!(
            !name.starts_with("VBUILD_") && !name.contains("TOKEN"),
            "{name} handed out"
        );
    }
    assert!(values.contains_key("PRESENT"));
    let r = call(
        &mut s,
        &Request::GetEnvs {
            query: EnvQuery::Prefix("VBUILD_".into()),
            tracked: true,
        },
    );
    assert_eq!(
        r,
        Response::Envs {
            values: Default::default()
        }
    );
    let r = call(
        &mut s,
        &Request::GetEnv {
            name: "VBUILD_REMOTE_CREDENTIALS".into(),
            tracked: false,
        },
    );
    assert_eq!(r, Response::Env { value: None });
    drop(s);
    h.finish(Duration::from_secs(1));
}

/// Item 9: 200 refused 500 KB paths made 582 MB of RSS and 200 MB of
/// warnings; 200 tracked 500 KB names 1.73 GB. Now each kind of refusal
/// is one short line with a count, and oversized names are refused.
#[test]
fn refusals_and_oversized_declarations_are_bounded() {
    let mut h = Harness::new();
    let mut s = greeted(&h);
    let big = "x".repeat(500_000);
    let reqs: Vec<Request> = (0..200)
        .flat_map(|i| {
            [
                Request::IgnoreInput {
                    path: format!("/outside/{i}/{big}"),
                    cwd: None,
                },
                Request::GetEnv {
                    name: format!("{i}{big}"),
                    tracked: true,
                },
            ]
        })
        .collect();
    for r in pipeline(&mut s, &reqs) {
        match r {
            Response::Error { message } => assert!(message.len() < 400, "{} bytes", message.len()),
            other => panic!("expected an error, got {other:?}"),
        }
    }
    drop(s);
    let d = h.finish(Duration::from_secs(1));
    assert!(d.tracked_env.is_empty());
    assert_eq!(d.refusals.len(), 2, "{:?}", d.refusals);
    let total: usize = d.refusals.iter().map(String::len).sum();
    assert!(total < 1000, "{total} bytes of refusals");
    assert!(
        d.refusals.iter().all(|r| r.contains("199 more")),
        "{:?}",
        d.refusals
    );
}

/// Item 9: counts are bounded too. Ignores past the bound are dropped
/// (more inputs count: safe); tracked names past it make the run
/// uncacheable (leaving one out of the key could make a hit wrong).
#[test]
fn too_many_declarations_stop_being_kept_safely() {
    let mut h = Harness::new();
    let mut s = greeted(&h);
    let pkg = h.pkg().to_string_lossy().into_owned();
    let ignores: Vec<Request> = (0..MAX_IGNORED + 5)
        .map(|i| Request::IgnoreInput {
            path: format!("c/{i}"),
            cwd: Some(pkg.clone()),
        })
        .collect();
    let answers = pipeline(&mut s, &ignores);
    assert!(matches!(answers[MAX_IGNORED - 1], Response::Ack { .. }));
    assert!(matches!(answers[MAX_IGNORED], Response::Error { .. }));
    let reads: Vec<Request> = (0..MAX_TRACKED_ENV + 1)
        .map(|i| Request::GetEnv {
            name: format!("N{i}"),
            tracked: true,
        })
        .collect();
    let answers = pipeline(&mut s, &reads);
    // The tool still gets its answers.
    assert!(answers
        .iter()
        .all(|r| matches!(r, Response::Env { value: None })));
    drop(s);
    let d = h.finish(Duration::from_secs(1));
    assert_eq!(d.ignored_inputs.len(), MAX_IGNORED);
    assert_eq!(d.tracked_env.len(), MAX_TRACKED_ENV);
    assert!(
        d.cache_disabled,
        "a tracked read that was not kept must disable caching"
    );
    assert_eq!(d.refusals.len(), 2, "{:?}", d.refusals);
}

/// Item 9: connections are bounded; one over gets an error and is closed.
#[test]
fn connections_beyond_the_bound_are_refused() {
    let mut h = Harness::new();
    let mut held: Vec<UnixStream> = (0..MAX_CONNECTIONS).map(|_| greeted(&h)).collect();
    let mut extra = connect(&h);
    match read_frame::<Response>(&mut extra).unwrap() {
        Response::Error { message } => assert!(message.contains("connections"), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(closed(&mut extra));
    // Those already open keep working.
    let r = call(&mut held[0], &Request::DisableCache);
    assert_eq!(r, Response::Ack { path: None });
    held.clear();
    let d = h.finish(Duration::from_secs(2));
    assert!(d.cache_disabled);
}
