//! One connection's framing and handshake, independent of how bytes arrive
//! (the async read loop and the final non-blocking sweep both feed it).

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::handler::{hello, Shared};
use crate::protocol::{encode_frame, split_frame, Request, Response, PROTOCOL_VERSION};

/// Whether the connection may continue after the bytes just fed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// Protocol violation: write what is in `out`, then drop the connection.
    Close,
}

#[derive(Default)]
pub(crate) struct Session {
    /// Bytes received but not yet forming a complete frame.
    pub(crate) buf: Vec<u8>,
    greeted: bool,
}

impl Session {
    /// Applies every complete frame in `buf`, appending encoded responses to
    /// `out`. Frames are applied the moment they are complete, so nothing a
    /// client managed to send is lost when the connection is dropped later.
    pub(crate) fn process(&mut self, shared: &Shared, out: &mut Vec<u8>) -> Flow {
        let mut consumed = 0;
        let flow = loop {
            let (body, used) = match split_frame(&self.buf[consumed..]) {
                Ok(Some(frame)) => frame,
                Ok(None) => break Flow::Continue,
                Err(e) => {
                    push(out, &error(e.to_string()));
                    break Flow::Close;
                }
            };
            consumed += used;
            // Malformed JSON means the stream is not speaking this protocol
            // (or is desynchronized), so nothing after it can be trusted.
            let value: serde_json::Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    push(out, &error(format!("malformed frame: {e}")));
                    break Flow::Close;
                }
            };
            // Well-formed JSON that is not a known request (say, from a newer
            // client) gets an error but leaves the stream usable.
            let request = match serde_json::from_value::<Request>(value) {
                Ok(r) => r,
                Err(e) => {
                    push(out, &error(format!("unsupported request: {e}")));
                    if !self.greeted {
                        break Flow::Close;
                    }
                    continue;
                }
            };
            match (self.greeted, request) {
                (_, Request::Hello { version, .. }) if version != PROTOCOL_VERSION => {
                    push(
                        out,
                        &error(format!(
                            "unsupported protocol version {version}; this server speaks {PROTOCOL_VERSION}"
                        )),
                    );
                    break Flow::Close;
                }
                (_, Request::Hello { token, .. }) => {
                    // Proves the connection belongs to this action: another
                    // action (or any process that found the socket) does not
                    // have the token.
                    if !token.as_deref().is_some_and(|t| same(t, &shared.token)) {
                        let message =
                            "the hello did not carry this action's token ($VBUILD_IPC_TOKEN)";
                        push(out, &shared.refuse("hello", message.to_owned()));
                        break Flow::Close;
                    }
                    self.greeted = true;
                    push(out, &hello());
                }
                (false, _) => {
                    push(out, &error("the first frame must be a hello".to_owned()));
                    break Flow::Close;
                }
                (true, request) => push(out, &apply_guarded(shared, request)),
            }
        };
        self.buf.drain(..consumed);
        flow
    }
}

/// A bug in a handler must not cost the tool its answer nor make the run
/// cacheable with a declaration missing: the request gets an `error` and
/// the run is not cached.
fn apply_guarded(shared: &Shared, request: Request) -> Response {
    match catch_unwind(AssertUnwindSafe(|| shared.apply(request))) {
        Ok(response) => response,
        Err(_) => {
            shared.decls().cache_disabled = true;
            shared.refuse(
                "internal error",
                "vbuild failed to handle a request; this run is not cached".to_owned(),
            )
        }
    }
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn error(message: String) -> Response {
    Response::Error { message }
}

fn push(out: &mut Vec<u8>, response: &Response) {
    // Responses are bounded by what the request could name; a getEnvs over a
    // huge environment is the only way past the limit, and then the client
    // gets an error instead of a frame it would have to reject.
    match encode_frame(response) {
        Ok(frame) => out.extend_from_slice(&frame),
        Err(e) => {
            if let Ok(frame) = encode_frame(&error(format!("response too large: {e}"))) {
                out.extend_from_slice(&frame);
            }
        }
    }
}
