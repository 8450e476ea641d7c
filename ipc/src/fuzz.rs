//! The IPC frame decoder and request handler as one function of bytes, for
//! the fuzz harness (`ipc/tests/fuzz.rs`) and nothing else. Not an API.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::declarations::Declarations;
use crate::env::SecretMatcher;
use crate::handler::Shared;
use crate::paths::Confinement;
use crate::protocol::{split_frame, Response, MAX_FRAME_LEN};
use crate::session::{Flow, Session};

/// The token the fuzz target's `hello` expects (the corpus carries it).
pub const TOKEN: &str = "fuzz-token";

/// One action's server state without sockets.
pub struct Target {
    shared: Shared,
}

impl Default for Target {
    fn default() -> Self {
        Target::new()
    }
}

impl Target {
    pub fn new() -> Target {
        let env: HashMap<String, String> = [
            ("PRESENT", "yes"),
            ("VITE_A", "1"),
            ("NPM_TOKEN", "secret"),
            ("VBUILD_REMOTE_CREDENTIALS", "cred"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Target {
            shared: Shared {
                confinement: Confinement::new(Path::new("/vbuild/ws")),
                host_env: Arc::new(env),
                secrets: SecretMatcher::new(&["*TOKEN*", "*SECRET*"]).expect("patterns"),
                decls: Mutex::new(Declarations::default()),
                token: TOKEN.to_owned(),
            },
        }
    }

    /// Feeds `input` in chunks (their sizes taken from the first byte, as a
    /// client's writes would arrive), like the connection task does, and
    /// checks what the server must never do: answer with a frame it could
    /// not read back itself, answer more than once per frame, keep more
    /// than the limits allow, or leak a hidden variable.
    pub fn feed(&self, input: &[u8]) {
        let chunk = 1 + input.first().map_or(0, |b| usize::from(*b) * 37);
        let mut session = Session::default();
        let mut out = Vec::new();
        let mut fed = 0;
        for piece in input.chunks(chunk) {
            fed += piece.len();
            session.buf.extend_from_slice(piece);
            if session.process(&self.shared, &mut out) == Flow::Close {
                break;
            }
            assert!(
                session.buf.len() <= MAX_FRAME_LEN + 4 + chunk,
                "unbounded buffer"
            );
        }
        let mut rest = out.as_slice();
        let mut answers = 0usize;
        while !rest.is_empty() {
            let (body, used) = split_frame(rest)
                .expect("responses fit the frame limit")
                .expect("responses are whole frames");
            let response: Response = serde_json::from_slice(body).expect("responses are JSON");
            if let Response::Envs { values } = &response {
                assert!(values
                    .keys()
                    .all(|k| !k.starts_with("VBUILD_") && !k.contains("TOKEN")));
            }
            if let Response::Env { value: Some(v) } = &response {
                assert_ne!(v, "cred", "a hidden variable was answered");
            }
            answers += 1;
            rest = &rest[used..];
        }
        // At most one answer per 4 bytes fed (a frame is at least a header).
        assert!(answers <= fed / 4 + 1, "{answers} answers to {fed} bytes");
        let d = self.shared.decls();
        assert!(d.ignored_inputs.len() <= crate::limits::MAX_IGNORED);
        assert!(d.tracked_env.len() <= crate::limits::MAX_TRACKED_ENV);
        assert!(d.refusals.len() <= 16, "{} refusal lines", d.refusals.len());
        assert!(
            d.refusals.iter().all(|r| r.len() < 1024),
            "a long refusal line"
        );
    }
}
