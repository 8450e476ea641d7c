//! Applying one request to the action's declarations. Pure and synchronous,
//! so every rule is testable without sockets.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::declarations::Declarations;
use crate::env::{EnvQueryMatcher, SecretMatcher};
use crate::paths::Confinement;
use crate::protocol::{Request, Response, MAX_FRAME_LEN, PROTOCOL_VERSION};

/// State shared by every connection of one action.
pub(crate) struct Shared {
    pub(crate) confinement: Confinement,
    pub(crate) host_env: Arc<HashMap<String, String>>,
    pub(crate) secrets: SecretMatcher,
    pub(crate) decls: Mutex<Declarations>,
}

impl Shared {
    /// A panic while holding the lock cannot leave `Declarations` half
    /// updated in a way that matters (each update is one insert), so a
    /// poisoned lock is still used rather than losing everything.
    pub(crate) fn decls(&self) -> MutexGuard<'_, Declarations> {
        self.decls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refuse(&self, what: &str, reason: String) -> Response {
        let message = format!("{what}: {reason}");
        tracing::warn!(target: "vbuild_ipc", "refused {message}");
        self.decls().refusals.push(message.clone());
        Response::Error { message }
    }

    /// Applies `req` and returns its answer. `Hello` is handled by the
    /// session, but answering it here too keeps this total.
    pub(crate) fn apply(&self, req: Request) -> Response {
        match req {
            Request::Hello { .. } => hello(),
            Request::IgnoreInput { path, cwd } => {
                match self.confinement.resolve(&path, cwd.as_deref()) {
                    Ok(rel) => {
                        self.decls().ignored_inputs.insert(rel.clone());
                        Response::Ack { path: Some(rel) }
                    }
                    Err(reason) => self.refuse("ignoreInput", reason),
                }
            }
            Request::IgnoreOutput { path, cwd } => {
                match self.confinement.resolve(&path, cwd.as_deref()) {
                    Ok(rel) => {
                        self.decls().ignored_outputs.insert(rel.clone());
                        Response::Ack { path: Some(rel) }
                    }
                    Err(reason) => self.refuse("ignoreOutput", reason),
                }
            }
            Request::DisableCache => {
                self.decls().cache_disabled = true;
                Response::Ack { path: None }
            }
            Request::GetEnv { name, tracked } => {
                let value = self.host_env.get(&name).cloned();
                if tracked {
                    let record = self.secrets.record(&name, value.as_deref());
                    self.decls().tracked_env.insert(name, record);
                }
                Response::Env { value }
            }
            Request::GetEnvs { query, tracked } => {
                let matcher = match EnvQueryMatcher::new(&query) {
                    Ok(m) => m,
                    Err(reason) => return self.refuse("getEnvs", reason),
                };
                let values = matcher.select(&self.host_env);
                if tracked {
                    let mut decls = self.decls();
                    for (name, value) in &values {
                        let record = self.secrets.record(name, Some(value));
                        decls.tracked_env.insert(name.clone(), record);
                    }
                    decls.add_env_pattern(query, values.keys().cloned().collect());
                }
                Response::Envs { values }
            }
            Request::ReportUsedInputs { paths, cwd } => {
                let mut accepted = BTreeSet::new();
                let mut refused = Vec::new();
                for path in &paths {
                    match self.confinement.resolve(path, cwd.as_deref()) {
                        Ok(rel) => {
                            accepted.insert(rel);
                        }
                        Err(reason) => refused.push(reason),
                    }
                }
                // Apply what is acceptable even when some paths are refused:
                // a report that shrinks the key is only ever a narrowing the
                // tool asked for, and refusing the whole report would hide
                // the inputs it did name.
                let mut decls = self.decls();
                decls
                    .used_inputs
                    .get_or_insert_with(BTreeSet::new)
                    .extend(accepted);
                decls.used_inputs_refused |= !refused.is_empty();
                drop(decls);
                if refused.is_empty() {
                    Response::Ack { path: None }
                } else {
                    self.refuse("reportUsedInputs", refused.join("; "))
                }
            }
        }
    }
}

pub(crate) fn hello() -> Response {
    Response::Hello {
        version: PROTOCOL_VERSION,
        max_frame_len: MAX_FRAME_LEN as u32,
    }
}
