//! Wire protocol between a tool and the per-action server.
//!
//! A frame is a little-endian `u32` body length followed by that many bytes
//! of UTF-8 JSON. The first frame on every connection is a `hello` carrying
//! [`PROTOCOL_VERSION`]; every later frame is one request and gets exactly one
//! response, in order, so a client can be fully synchronous. The normative
//! description lives in `schema/ipc/protocol.md`; keep the two in step.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to the messages below. Additive changes
/// (a new optional field, a new request the old server answers with an
/// `error`) keep the number.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest body either side accepts. Big enough for a `reportUsedInputs` of
/// several thousand paths, small enough that a broken client cannot make the
/// runner allocate without bound.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// What a `getEnvs` request matches env names against.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EnvQuery {
    /// A glob over the whole name (`VITE_*`), case-sensitive.
    Glob(String),
    /// A literal name prefix.
    Prefix(String),
}

impl From<&str> for EnvQuery {
    fn from(glob: &str) -> Self {
        EnvQuery::Glob(glob.to_owned())
    }
}

impl From<String> for EnvQuery {
    fn from(glob: String) -> Self {
        EnvQuery::Glob(glob)
    }
}

fn default_true() -> bool {
    true
}

/// A client → server message. `op` is the tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Must be the first frame; the server refuses other versions.
    Hello {
        version: u32,
        /// Free-form client identification, only used in diagnostics.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
        /// The action's secret from `VBUILD_IPC_TOKEN`; a hello without the
        /// right one is refused and the connection closed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Reads under `path` do not count as inputs.
    IgnoreInput {
        path: String,
        /// The caller's working directory; needed when `path` is relative.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
    },
    /// Writes under `path` are not outputs.
    IgnoreOutput {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
    },
    /// This run must not be stored in the cache.
    DisableCache,
    /// Read one variable from vbuild's own environment.
    GetEnv {
        name: String,
        #[serde(default = "default_true")]
        tracked: bool,
    },
    /// Read every variable whose name matches `query`.
    GetEnvs {
        query: EnvQuery,
        #[serde(default = "default_true")]
        tracked: bool,
    },
    /// The exact inputs the tool used (Buck2 dep files, Bazel
    /// unused_inputs_list). Several reports are unioned.
    ReportUsedInputs {
        paths: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
    },
}

/// A server → client message. `type` is the tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Response {
    /// Answer to `hello`.
    #[serde(rename_all = "camelCase")]
    Hello { version: u32, max_frame_len: u32 },
    /// The request was applied. For path requests, `path` is what the server
    /// recorded (workspace-relative, normalized).
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// Answer to `getEnv`; `null` means the variable is not set (never the
    /// string `"null"`), so the field is always present.
    Env { value: Option<String> },
    /// Answer to `getEnvs`.
    Envs { values: BTreeMap<String, String> },
    /// The request was refused; nothing (or, for `reportUsedInputs`, only the
    /// acceptable part) was applied.
    Error { message: String },
}

/// Why bytes on the wire could not be turned into a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix exceeds [`MAX_FRAME_LEN`].
    TooLarge(u64),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge(n) => {
                write!(
                    f,
                    "frame of {n} bytes exceeds the {MAX_FRAME_LEN} byte limit"
                )
            }
        }
    }
}

/// Looks for one complete frame at the start of `buf`. Returns the body and
/// the number of bytes it occupies (header included), or `None` if more
/// bytes are needed. Rejects an oversized length as soon as the header is
/// in, so the body is never buffered.
pub fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len as u64));
    }
    let end = HEADER_LEN + len;
    Ok(buf.get(HEADER_LEN..end).map(|body| (body, end)))
}

/// Serializes `msg` as one frame (header + JSON body).
pub fn encode_frame<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            FrameError::TooLarge(body.len() as u64).to_string(),
        ));
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    // Cannot truncate: checked against MAX_FRAME_LEN above.
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes one frame to a blocking stream.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    w.write_all(&encode_frame(msg)?)?;
    w.flush()
}

/// Reads one frame from a blocking stream and decodes its JSON body.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> io::Result<T> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header)?;
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            FrameError::TooLarge(len as u64).to_string(),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_json_shape() {
        let r = Request::GetEnvs {
            query: EnvQuery::Prefix("VITE_".into()),
            tracked: true,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"getEnvs","query":{"prefix":"VITE_"},"tracked":true}"#
        );
        let parsed: Request = serde_json::from_str(r#"{"op":"getEnv","name":"X"}"#).unwrap();
        assert_eq!(
            parsed,
            Request::GetEnv {
                name: "X".into(),
                tracked: true
            }
        );
        let parsed: Request = serde_json::from_str(r#"{"op":"disableCache"}"#).unwrap();
        assert_eq!(parsed, Request::DisableCache);
    }

    #[test]
    fn absent_env_is_null_not_the_string() {
        let r = Response::Env { value: None };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"type":"env","value":null}"#
        );
        let r = Response::Env {
            value: Some("null".into()),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"type":"env","value":"null"}"#
        );
    }

    #[test]
    fn split_frame_waits_for_complete_frames_and_rejects_oversize() {
        let frame = encode_frame(&Request::DisableCache).unwrap();
        assert_eq!(split_frame(&frame[..3]), Ok(None));
        assert_eq!(split_frame(&frame[..frame.len() - 1]), Ok(None));
        let (body, used) = split_frame(&frame).unwrap().unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(body, br#"{"op":"disableCache"}"#);
        let huge = ((MAX_FRAME_LEN + 1) as u32).to_le_bytes();
        assert!(matches!(split_frame(&huge), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn blocking_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Response::Ack { path: None }).unwrap();
        let back: Response = read_frame(&mut buf.as_slice()).unwrap();
        assert_eq!(back, Response::Ack { path: None });
    }
}
