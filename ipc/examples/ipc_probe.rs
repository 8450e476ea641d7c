//! A tool stand-in for the integration tests: runs IPC calls named on the
//! command line, in order, printing one JSON line per call.
//!
//! `ignore-input=P` `ignore-output=P` `disable-cache` `get-env=N`
//! `get-env-untracked=N` `get-envs=GLOB` `get-envs-prefix=P`
//! `report-used=A,B` `free-ignore-input=P` (the free-function API)
//! `cd=DIR` `exit` (exit at once, as a fire-and-forget tool would).

use std::io;

use serde_json::{json, Value};
use vbuild_ipc::client::Client;
use vbuild_ipc::EnvQuery;

fn run(client: &Client, cmd: &str, arg: &str) -> io::Result<Value> {
    Ok(match cmd {
        "ignore-input" => json!(client.ignore_input(arg)?),
        "ignore-output" => json!(client.ignore_output(arg)?),
        "disable-cache" => json!(client.disable_cache()?),
        "get-env" => json!(client.get_env(arg, true)?),
        "get-env-untracked" => json!(client.get_env(arg, false)?),
        "get-envs" => json!(client.get_envs(arg, true)?),
        "get-envs-prefix" => json!(client.get_envs(EnvQuery::Prefix(arg.into()), true)?),
        "report-used" => json!(client.report_used_inputs(arg.split(','))?),
        "free-ignore-input" => json!(vbuild_ipc::ignore_input(arg)?),
        "cd" => json!(std::env::set_current_dir(arg)?),
        other => return Err(io::Error::other(format!("unknown command {other}"))),
    })
}

fn main() {
    let Some(client) = Client::from_env() else {
        println!("{}", json!({"cmd": "from_env", "ok": "not under vbuild"}));
        return;
    };
    for spec in std::env::args().skip(1) {
        if spec == "exit" {
            std::process::exit(0);
        }
        let (cmd, arg) = spec.split_once('=').unwrap_or((spec.as_str(), ""));
        let line = match run(&client, cmd, arg) {
            Ok(v) => json!({"cmd": cmd, "ok": v}),
            Err(e) => json!({"cmd": cmd, "err": e.to_string()}),
        };
        println!("{line}");
    }
}
