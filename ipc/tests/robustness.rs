//! Broken and hostile clients: they lose their own connection, never the
//! server, other connections, or frames already sent.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::Harness;
use vbuild_ipc::protocol::{encode_frame, read_frame, Request, Response, MAX_FRAME_LEN};
use vbuild_ipc::{EnvValue, PROTOCOL_VERSION};

fn hello(h: &Harness) -> Request {
    Request::Hello {
        version: PROTOCOL_VERSION,
        client: Some("test".into()),
        token: Some(h.server().token().to_owned()),
    }
}

fn connect(h: &Harness) -> UnixStream {
    let s = UnixStream::connect(h.server().socket_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Connects and completes the handshake.
fn greeted(h: &Harness) -> UnixStream {
    let mut s = connect(h);
    s.write_all(&encode_frame(&hello(h)).unwrap()).unwrap();
    assert!(matches!(
        read_frame(&mut s).unwrap(),
        Response::Hello { .. }
    ));
    s
}

fn call(s: &mut UnixStream, req: &Request) -> Response {
    s.write_all(&encode_frame(req).unwrap()).unwrap();
    read_frame(s).unwrap()
}

fn get_env(name: &str) -> Request {
    Request::GetEnv {
        name: name.into(),
        tracked: true,
    }
}

/// Reads what is left until the server closes; panics if it does not.
fn until_closed(s: &mut UnixStream) -> Vec<u8> {
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("server should close the connection");
    rest
}

fn error_then_eof(s: &mut UnixStream) -> String {
    let msg = match read_frame(s).unwrap() {
        Response::Error { message } => message,
        other => panic!("expected an error, got {other:?}"),
    };
    assert!(until_closed(s).is_empty());
    msg
}

#[test]
fn oversized_frame_closes_only_that_connection() {
    let mut h = Harness::new();
    let mut good = greeted(&h);
    let mut bad = greeted(&h);
    bad.write_all(&((MAX_FRAME_LEN as u32) + 1).to_le_bytes())
        .unwrap();
    // The body is never awaited: the header alone is refused.
    let msg = error_then_eof(&mut bad);
    assert!(msg.contains("exceeds"), "{msg}");
    assert_eq!(
        call(&mut good, &get_env("PRESENT")),
        Response::Env {
            value: Some("yes".into())
        }
    );
    let mut fresh = greeted(&h);
    assert!(matches!(
        call(&mut fresh, &Request::DisableCache),
        Response::Ack { .. }
    ));
    // The tool's processes have exited: finish must not wait out the drain.
    drop((good, bad, fresh));
    let t = Instant::now();
    let d = h.finish(Duration::from_secs(5));
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(d.cache_disabled);
}

#[test]
fn a_frame_at_the_limit_is_accepted() {
    let mut h = Harness::new();
    let mut s = greeted(&h);
    // A reportUsedInputs whose paths pad the body to exactly MAX_FRAME_LEN
    // (each path within the path length bound).
    let report = |paths: &[String]| Request::ReportUsedInputs {
        paths: paths.to_vec(),
        cwd: Some("/".into()),
    };
    let body_len = |paths: &[String]| encode_frame(&report(paths)).unwrap().len() - 4;
    let mut paths: Vec<String> = Vec::new();
    while body_len(&paths) + 4000 < MAX_FRAME_LEN {
        paths.push(format!(
            "{}/{:06}/{}",
            h.pkg().display(),
            paths.len(),
            "p".repeat(1000)
        ));
    }
    let prefix = format!("{}/last-", h.pkg().display());
    paths.push(prefix.clone());
    let pad = MAX_FRAME_LEN - body_len(&paths);
    *paths.last_mut().unwrap() = format!("{prefix}{}", "q".repeat(pad));
    let frame = encode_frame(&report(&paths)).unwrap();
    assert_eq!(frame.len(), MAX_FRAME_LEN + 4);
    s.write_all(&frame).unwrap();
    assert_eq!(
        read_frame::<Response>(&mut s).unwrap(),
        Response::Ack { path: None }
    );
    drop(s);
    let d = h.finish(Duration::from_secs(1));
    assert_eq!(d.used_inputs.unwrap().len(), paths.len());
}

#[test]
fn garbage_closes_the_connection() {
    let mut h = Harness::new();
    let mut other = greeted(&h);

    // Plain text: its first four bytes read as a huge length.
    let mut s = connect(&h);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    error_then_eof(&mut s);

    // A sane length around a body that is not JSON.
    let mut s = greeted(&h);
    s.write_all(&5u32.to_le_bytes()).unwrap();
    s.write_all(b"{nope").unwrap();
    assert!(error_then_eof(&mut s).contains("malformed"));

    // Random bytes.
    let mut s = connect(&h);
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = s.write_all(&junk);
    until_closed(&mut s);

    assert_eq!(
        call(&mut other, &get_env("PRESENT")),
        Response::Env {
            value: Some("yes".into())
        }
    );
    drop((s, other));
    let d = h.finish(Duration::from_secs(1));
    assert!(d.refusals.is_empty());
}

#[test]
fn handshake_is_required_and_versioned() {
    let mut h = Harness::new();
    let mut s = connect(&h);
    s.write_all(&encode_frame(&Request::DisableCache).unwrap())
        .unwrap();
    assert!(error_then_eof(&mut s).contains("hello"));

    let mut s = connect(&h);
    let future = Request::Hello {
        version: PROTOCOL_VERSION + 1,
        client: None,
        token: Some(h.server().token().to_owned()),
    };
    s.write_all(&encode_frame(&future).unwrap()).unwrap();
    assert!(error_then_eof(&mut s).contains("version"));

    let d = h.finish(Duration::from_secs(1));
    assert!(!d.cache_disabled, "a request before hello must not apply");
}

#[test]
fn unknown_requests_get_an_error_and_the_connection_lives_on() {
    let mut h = Harness::new();
    let mut s = greeted(&h);
    let body = br#"{"op":"teleport","to":"mars"}"#;
    s.write_all(&(body.len() as u32).to_le_bytes()).unwrap();
    s.write_all(body).unwrap();
    assert!(matches!(
        read_frame(&mut s).unwrap(),
        Response::Error { .. }
    ));
    let bad_glob = Request::GetEnvs {
        query: vbuild_ipc::EnvQuery::Glob("[".into()),
        tracked: true,
    };
    assert!(matches!(call(&mut s, &bad_glob), Response::Error { .. }));
    assert!(matches!(
        call(&mut s, &Request::DisableCache),
        Response::Ack { .. }
    ));
    drop(s);
    let d = h.finish(Duration::from_secs(1));
    assert!(d.cache_disabled);
    assert_eq!(d.refusals.len(), 1, "{:?}", d.refusals);
}

#[test]
fn hanging_clients_do_not_block_finish_and_sent_frames_apply() {
    let mut h = Harness::new();
    // Connects and never says anything.
    let _silent = connect(&h);
    // Sends half a frame and stops.
    let mut half = greeted(&h);
    let frame = encode_frame(&Request::IgnoreOutput {
        path: "/never".into(),
        cwd: None,
    })
    .unwrap();
    half.write_all(&frame[..frame.len() / 2]).unwrap();
    // Declares without ever reading the acks, and stays connected.
    let mut rude = connect(&h);
    let pkg = h.pkg().to_str().unwrap().to_owned();
    for req in [
        hello(&h),
        Request::DisableCache,
        Request::IgnoreInput {
            path: "cache".into(),
            cwd: Some(pkg),
        },
    ] {
        rude.write_all(&encode_frame(&req).unwrap()).unwrap();
    }
    // Give the server a moment so this checks "applied while connected";
    // the sweep test below covers frames it has not read yet.
    std::thread::sleep(Duration::from_millis(100));

    let drain = Duration::from_millis(300);
    let t = Instant::now();
    let d = h.finish(drain);
    let took = t.elapsed();
    assert!(took >= drain, "finish should wait for live connections");
    assert!(
        took < drain + Duration::from_secs(1),
        "finish took {took:?}"
    );
    assert!(d.cache_disabled);
    assert!(d.ignored_inputs.contains("pkg/cache"));
    assert!(
        d.ignored_outputs.is_empty(),
        "a partial frame must not apply"
    );
}

#[test]
fn frames_not_yet_read_by_the_server_are_applied_at_finish() {
    // A current-thread runtime that nobody drives until finish: the client's
    // connection sits in the backlog and its frames in the kernel buffer.
    for round in 0..5 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut h = Harness::on(rt);
        let mut s = connect(&h);
        for req in [hello(&h), Request::DisableCache, get_env("PRESENT")] {
            s.write_all(&encode_frame(&req).unwrap()).unwrap();
        }
        // Half the rounds the client has gone away, half it hangs on.
        let s = if round % 2 == 0 {
            drop(s);
            None
        } else {
            Some(s)
        };

        let server = h.server.take().unwrap();
        let rt = std::mem::replace(
            &mut h.rt,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let driver = std::thread::spawn(move || {
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(10), stop_rx).await;
            });
        });
        let t = Instant::now();
        let d = server.finish(Duration::ZERO);
        assert!(t.elapsed() < Duration::from_secs(3), "round {round}");
        assert!(d.cache_disabled, "round {round}: frame lost");
        assert_eq!(
            d.tracked_env["PRESENT"],
            EnvValue::Hashed(vbuild_ipc::hash_secret("yes"))
        );
        drop(s);
        let _ = stop_tx.send(());
        driver.join().unwrap();
    }
}

#[test]
fn dropping_the_server_without_finish_cleans_up() {
    let mut h = Harness::new();
    let dir = h.server().socket_dir().to_path_buf();
    let mut s = greeted(&h);
    drop(h.server.take());
    assert!(!dir.exists());
    // The connection is closed promptly rather than left hanging.
    let _ = s.write_all(&encode_frame(&Request::DisableCache).unwrap());
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}
