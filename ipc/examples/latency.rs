//! Per-call latency of `getEnv` over the IPC channel, from Rust and from
//! Node (through the real `@voidzero-dev/vite-task-client`).
//!
//!     cargo run --release -p vbuild-ipc --example latency [-- CALLS]
//!
//! The Node half needs `npm ci` in `ipc/tests/node-fixture` first.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vbuild_ipc::client::Client;
use vbuild_ipc::{ActionServer, ServerConfig};

fn main() -> std::io::Result<()> {
    let calls: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ws = std::env::temp_dir();
    let host_env = HashMap::from([("VBUILD_BENCH_VAR".to_owned(), "value".to_owned())]);
    let server = ActionServer::start(
        rt.handle(),
        &std::env::temp_dir(),
        ServerConfig {
            ws_root_inside: ws.clone(),
            host_env: Arc::new(host_env),
            secrets: vbuild_ipc::SecretMatcher::new::<&str>(&[]).unwrap(),
        },
    )?;

    let t = Instant::now();
    let client = Client::with_token(server.socket_path(), Some(server.token().to_owned()));
    client.connect_now()?;
    client.get_env("VBUILD_BENCH_VAR", false)?;
    let first = t.elapsed();
    for _ in 0..500 {
        client.get_env("VBUILD_BENCH_VAR", false)?;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        client.get_env("VBUILD_BENCH_VAR", false)?;
        samples.push(t.elapsed());
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / calls as u32;
    let pct = |p: f64| samples[((calls as f64 * p) as usize).min(calls - 1)];
    println!(
        "rust getEnv: first call {:.0} us (connect + hello); {calls} calls: mean {:.1} us, p50 {:.1} us, p99 {:.1} us",
        us(first),
        us(mean),
        us(pct(0.5)),
        us(pct(0.99))
    );

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node-fixture");
    if fixture.join("node_modules").exists() {
        let status = std::process::Command::new("node")
            .arg(fixture.join("latency.mjs"))
            .arg(calls.to_string())
            .envs(server.action_env(server.socket_dir(), server.node_client_path()))
            .current_dir(&ws)
            .status()?;
        if !status.success() {
            eprintln!("node benchmark failed: {status}");
        }
    } else {
        eprintln!("skipping node: run `npm ci` in {}", fixture.display());
    }
    server.finish(Duration::from_secs(1));
    Ok(())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
