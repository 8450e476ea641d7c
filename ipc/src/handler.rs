//! Applying one request to the action's declarations. Pure and synchronous,
//! so every rule is testable without sockets.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::declarations::{Declarations, Kept};
use crate::env::{EnvQueryMatcher, SecretMatcher};
use crate::limits::{excerpt, MAX_ENV_NAME_LEN};
use crate::paths::Confinement;
use crate::protocol::{Request, Response, MAX_FRAME_LEN, PROTOCOL_VERSION};

/// State shared by every connection of one action.
pub(crate) struct Shared {
    pub(crate) confinement: Confinement,
    pub(crate) host_env: Arc<HashMap<String, String>>,
    pub(crate) secrets: SecretMatcher,
    pub(crate) decls: Mutex<Declarations>,
    /// The per-action secret every `hello` must carry.
    pub(crate) token: String,
}

impl Shared {
    /// A panic while holding the lock cannot leave `Declarations` half
    /// updated in a way that matters (each update is one insert), so a
    /// poisoned lock is still used rather than losing everything.
    pub(crate) fn decls(&self) -> MutexGuard<'_, Declarations> {
        self.decls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses a request: an `error` reply, and one warning per kind.
    pub(crate) fn refuse(&self, what: &str, reason: String) -> Response {
        let message = format!("{what}: {reason}");
        self.decls().refuse(what, &message);
        Response::Error { message }
    }

    fn kept(kept: Kept, ok: Response) -> Response {
        match kept {
            Kept::Yes => ok,
            Kept::No(message) => Response::Error { message },
        }
    }

    /// Applies `req` and returns its answer. `Hello` is handled by the
    /// session, but answering it here too keeps this total.
    pub(crate) fn apply(&self, req: Request) -> Response {
        match req {
            Request::Hello { .. } => hello(),
            Request::IgnoreInput { path, cwd } => {
                match self.confinement.resolve(&path, cwd.as_deref()) {
                    Ok(rel) => {
                        let kept = self.decls().ignore_input(rel.clone());
                        Self::kept(kept, Response::Ack { path: Some(rel) })
                    }
                    Err(reason) => self.refuse("ignoreInput", reason),
                }
            }
            Request::IgnoreOutput { path, cwd } => {
                match self.confinement.resolve(&path, cwd.as_deref()) {
                    Ok(rel) => {
                        let kept = self.decls().ignore_output(rel.clone());
                        Self::kept(kept, Response::Ack { path: Some(rel) })
                    }
                    Err(reason) => self.refuse("ignoreOutput", reason),
                }
            }
            Request::DisableCache => {
                self.decls().cache_disabled = true;
                Response::Ack { path: None }
            }
            Request::GetEnv { name, tracked } => {
                if name.len() > MAX_ENV_NAME_LEN {
                    return self.refuse(
                        "getEnv",
                        format!(
                            "name {} is longer than {MAX_ENV_NAME_LEN} bytes",
                            excerpt(&name)
                        ),
                    );
                }
                let value = self
                    .secrets
                    .visible(&self.host_env, &name)
                    .map(str::to_owned);
                if tracked {
                    let record = self.secrets.record(&name, value.as_deref());
                    // Over the bound the run is not cached; the tool still
                    // gets its value.
                    let _ = self.decls().track_env(name, record);
                }
                Response::Env { value }
            }
            Request::GetEnvs { query, tracked } => {
                let matcher = match EnvQueryMatcher::new(&query) {
                    Ok(m) => m,
                    Err(reason) => return self.refuse("getEnvs", reason),
                };
                let values = matcher.select_visible(&self.host_env, &self.secrets);
                if tracked {
                    let mut decls = self.decls();
                    for (name, value) in &values {
                        let record = self.secrets.record(name, Some(value));
                        let _ = decls.track_env(name.clone(), record);
                    }
                    let _ = decls.add_env_pattern(query, values.keys().cloned().collect());
                }
                Response::Envs { values }
            }
            Request::ReportUsedInputs { paths, cwd } => {
                let mut accepted = BTreeSet::new();
                let mut refused = 0usize;
                let mut first_refused = None;
                for path in &paths {
                    match self.confinement.resolve(path, cwd.as_deref()) {
                        Ok(rel) => {
                            accepted.insert(rel);
                        }
                        Err(reason) => {
                            refused += 1;
                            first_refused.get_or_insert(reason);
                        }
                    }
                }
                // Apply what is acceptable even when some paths are refused:
                // a report that shrinks the key is only ever a narrowing the
                // tool asked for, and refusing the whole report would hide
                // the inputs it did name.
                let mut decls = self.decls();
                let kept = decls.add_used_inputs(accepted);
                decls.used_inputs_refused |= refused > 0;
                drop(decls);
                match first_refused {
                    None => Self::kept(kept, Response::Ack { path: None }),
                    Some(first) => {
                        let more = match refused {
                            1 => String::new(),
                            n => format!(" (and {} more paths)", n - 1),
                        };
                        self.refuse("reportUsedInputs", format!("{first}{more}"))
                    }
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
