//! The protocol document in schema/ipc/ stays in step with the code.

use std::collections::BTreeMap;

use serde_json::Value;
use vbuild_ipc::protocol::{Request, Response, MAX_FRAME_LEN, PROTOCOL_VERSION};
use vbuild_ipc::EnvQuery;

fn schema() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schema/ipc/ipc-protocol.v1.schema.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// One sample of every message, as the code serializes it.
fn samples() -> Vec<Value> {
    let requests = [
        Request::Hello {
            version: PROTOCOL_VERSION,
            client: None,
            token: Some("0123abcd".into()),
        },
        Request::IgnoreInput {
            path: "a".into(),
            cwd: Some("/w".into()),
        },
        Request::IgnoreOutput {
            path: "/w/a".into(),
            cwd: None,
        },
        Request::DisableCache,
        Request::GetEnv {
            name: "A".into(),
            tracked: false,
        },
        Request::GetEnvs {
            query: EnvQuery::Glob("A*".into()),
            tracked: true,
        },
        Request::ReportUsedInputs {
            paths: vec!["a".into()],
            cwd: None,
        },
    ];
    let responses = [
        Response::Hello {
            version: 1,
            max_frame_len: 1,
        },
        Response::Ack { path: None },
        Response::Env { value: None },
        Response::Envs {
            values: BTreeMap::new(),
        },
        Response::Error {
            message: "x".into(),
        },
    ];
    let mut out: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    out.extend(responses.iter().map(|r| serde_json::to_value(r).unwrap()));
    out
}

#[test]
fn version_and_limit_match() {
    let s = schema();
    assert_eq!(s["x-protocol-version"], PROTOCOL_VERSION);
    assert_eq!(s["x-max-frame-len"], MAX_FRAME_LEN);
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schema/ipc/protocol.md"
    ))
    .unwrap();
    assert!(doc.contains(&format!("Protocol version: **{PROTOCOL_VERSION}**")));
}

#[test]
fn every_message_kind_is_described_with_its_required_fields() {
    let s = schema();
    for sample in samples() {
        let (group, tag) = if sample.get("op").is_some() {
            ("Request", "op")
        } else {
            ("Response", "type")
        };
        let variants = s["$defs"][group]["oneOf"].as_array().unwrap();
        let variant = variants
            .iter()
            .find(|v| v["properties"][tag]["const"] == sample[tag])
            .unwrap_or_else(|| panic!("{sample} is not in the schema"));
        for required in variant["required"].as_array().unwrap() {
            let field = required.as_str().unwrap();
            assert!(sample.get(field).is_some(), "{sample} lacks {field}");
        }
        for field in sample.as_object().unwrap().keys() {
            assert!(
                variant["properties"].get(field).is_some(),
                "{field} of {sample} is not in the schema"
            );
        }
    }
}
