//! `vbuild remote check`.
use super::{ac_key, fetch_small, Config, WORKER};
use anyhow::Result;
use vbuild_schema::RemoteMode;
use vbuild_store::remote::{self as wire, reapi, RemoteError, WireDigest};
use vbuild_store::Digest;

/// `vbuild remote check`: what the server supports, and whether reads and
/// writes work. Returns the exit code.
pub fn check(cfg: &Config) -> Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client = wire::connect(&cfg.settings, rt.handle()).map_err(anyhow::Error::msg)?;
    let df = client.digest_fn();
    let mode = match cfg.mode {
        RemoteMode::ReadWrite => "read-write",
        RemoteMode::ReadOnly => "read-only",
    };
    println!("remote:          {}", client.endpoint());
    if !cfg.settings.instance.is_empty() {
        println!("instance:        {}", cfg.settings.instance);
    }
    println!("mode:            {mode}");
    println!("auth:            {}", cfg.auth_description());
    let mut ok = true;
    match client.server_info() {
        Ok(info) => {
            for (k, v) in &info.lines {
                println!("{:<16} {v}", format!("{k}:"));
            }
        }
        Err(e) => {
            println!("server:          FAILED: {e}");
            return Ok(1);
        }
    }
    // Reads: an action result nobody wrote reads as a miss.
    let nonce = format!(
        "vbuild remote check {} {:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let absent = ac_key(
        df,
        "vbuild-check-absent",
        Digest::of_bytes(nonce.as_bytes()).as_bytes(),
    );
    match client.get_action_result(&absent, cfg.max_result) {
        Ok(None) => println!("read:            ok (an unknown action reads as a miss)"),
        Ok(Some(_)) => println!("read:            ok (unexpectedly found the probe action)"),
        Err(e) => {
            ok = false;
            println!("read:            FAILED: {e}");
        }
    }
    if cfg.mode == RemoteMode::ReadOnly {
        println!("write:           not tried (mode = read-only)");
        return Ok(if ok { 0 } else { 1 });
    }
    // Writes: one blob and one action result (always the same key, so
    // repeated checks do not pile up), each read back and compared.
    let blob = WireDigest::of_bytes(df, nonce.as_bytes());
    let probe_key = ac_key(df, "vbuild-check", Digest::of_bytes(b"probe").as_bytes());
    let write = (|| -> Result<(), RemoteError> {
        client.write_blob(&blob, wire::BlobSource::Bytes(nonce.as_bytes()))?;
        let back = fetch_small(&*client, &blob, blob.size)?;
        if back != nonce.as_bytes() {
            return Err(RemoteError::Rejected("the blob read back differs".into()));
        }
        let result = reapi::ActionResult {
            stdout_digest: Some(blob.to_proto()),
            execution_metadata: Some(reapi::ExecutedActionMetadata {
                worker: WORKER.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        client.update_action_result(&probe_key, &result)?;
        match client.get_action_result(&probe_key, cfg.max_result)? {
            Some(r) if r.stdout_digest == result.stdout_digest => Ok(()),
            Some(_) => Err(RemoteError::Rejected(
                "the action result read back differs (another check may have raced)".into(),
            )),
            None => Err(RemoteError::Rejected(
                "the action result written is not there when read back".into(),
            )),
        }
    })();
    match write {
        Ok(()) => println!(
            "write:           ok (wrote and read back a {}-byte blob and an action result)",
            blob.size
        ),
        Err(e) => {
            ok = false;
            println!("write:           FAILED: {e}");
        }
    }
    Ok(if ok { 0 } else { 1 })
}
