//! Fuzzing the IPC frame decoder and request handler (stable toolchain; see
//! `fuzz/mutator.rs`). `cargo test -p vbuild-ipc --test fuzz` runs it for 3 s;
//! `.ci/run` for 60 (`VBUILD_FUZZ_SECS`). Fails on a panic, a hang or
//! runaway allocation.

#[path = "../../fuzz/mutator.rs"]
mod mutator;

use mutator::{Counting, Rng};
use vbuild_ipc::fuzz::{Target, TOKEN};
use vbuild_ipc::protocol::{encode_frame, EnvQuery, Request, PROTOCOL_VERSION};

#[global_allocator]
static ALLOC: Counting = Counting;

const DICT: &[&[u8]] = &[
    b"\"op\"",
    b"\"hello\"",
    b"\"version\":1",
    b"\"token\":\"fuzz-token\"",
    b"\"getEnvs\"",
    b"\"getEnv\"",
    b"\"ignoreInput\"",
    b"\"ignoreOutput\"",
    b"\"reportUsedInputs\"",
    b"\"disableCache\"",
    b"\"query\":{\"glob\":\"",
    b"{\"prefix\":\"",
    b"\"tracked\":false",
    b"\"cwd\":\"/vbuild/ws/pkg\"",
    b"\"path\":\"../../",
    b"\"paths\":[",
    b"[a-z]",
    b"{a,{b,c}}",
    b"**/",
    b"\\u0000",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x10\x00",
    b"\x01\x00\x10\x00",
    b"null",
    b"1e999",
];

fn text(rng: &mut Rng) -> String {
    let pieces = [
        "a", "*", "?", "[", "]", "{", "}", ",", "/", "..", ".", "\\", "é", "\0", "VITE_", "**",
    ];
    let n = match rng.below(400) {
        0 => rng.below(200_000),
        1..=20 => rng.below(5000),
        _ => rng.below(40),
    };
    let repeat = pieces[rng.below(pieces.len())];
    (0..n)
        .map(|_| {
            if rng.chance(4) {
                pieces[rng.below(pieces.len())]
            } else {
                repeat
            }
        })
        .collect()
}

/// A valid hello and then well-formed requests with hostile contents, so
/// the cases reach the handler rather than dying in the decoder.
fn generate(rng: &mut Rng) -> Option<Vec<u8>> {
    let mut bytes = vec![rng.next() as u8];
    let hello = Request::Hello {
        version: if rng.chance(20) { 2 } else { PROTOCOL_VERSION },
        client: None,
        token: (!rng.chance(20)).then(|| TOKEN.to_owned()),
    };
    bytes.extend(encode_frame(&hello).ok()?);
    for _ in 0..1 + rng.below(20) {
        let cwd = rng.chance(2).then(|| format!("/vbuild/ws/{}", text(rng)));
        let req = match rng.below(7) {
            0 => Request::IgnoreInput {
                path: text(rng),
                cwd,
            },
            1 => Request::IgnoreOutput {
                path: text(rng),
                cwd,
            },
            2 => Request::DisableCache,
            3 => Request::GetEnv {
                name: text(rng),
                tracked: rng.chance(2),
            },
            4 => Request::GetEnvs {
                query: EnvQuery::Glob(text(rng)),
                tracked: rng.chance(2),
            },
            5 => Request::GetEnvs {
                query: EnvQuery::Prefix(text(rng)),
                tracked: true,
            },
            _ => Request::ReportUsedInputs {
                paths: (0..rng.below(50)).map(|_| text(rng)).collect(),
                cwd,
            },
        };
        // Oversized ones are refused by the encoder; skip them.
        if let Ok(frame) = encode_frame(&req) {
            bytes.extend(frame);
        }
    }
    Some(bytes)
}

#[test]
fn fuzz_ipc_frames_and_requests() {
    let seeds = mutator::corpus("ipc");
    let mut target = Target::new();
    let mut n = 0u64;
    let (cases, _) = mutator::run("ipc", &seeds, DICT, generate, |input| {
        n += 1;
        // A fresh action now and then, so limits are met and left again.
        if n.is_multiple_of(500) {
            target = Target::new();
        }
        target.feed(input);
    });
    assert!(cases > seeds.len() as u64);
}
