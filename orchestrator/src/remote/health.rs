//! The health rule that keeps a bad remote from failing a build.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use vbuild_store::remote::RemoteError;

/// Failures (down, timing out, erroring) after which a run stops asking.
pub const MAX_FAILURES: usize = 3;

/// Tracks failures: the first one is reported, and after `MAX_FAILURES`
/// (or one refusal of the credentials or certificates) the remote is not asked again.
pub(super) struct Health {
    endpoint: String,
    failures: AtomicUsize,
    disabled: AtomicBool,
}

impl Health {
    pub(super) fn new(endpoint: &str) -> Health {
        Health {
            endpoint: endpoint.to_string(),
            failures: AtomicUsize::new(0),
            disabled: AtomicBool::new(false),
        }
    }

    pub(super) fn usable(&self) -> bool {
        !self.disabled.load(Ordering::SeqCst)
    }

    /// Notes an error; content rejections are not the server's health.
    pub(super) fn report(&self, e: &RemoteError) {
        match e {
            RemoteError::Rejected(_) => {}
            RemoteError::Unauthorized(msg) => {
                if !self.disabled.swap(true, Ordering::SeqCst) {
                    eprintln!(
                        "warning: remote cache {}: {msg}; not using it for the rest of this run",
                        self.endpoint
                    );
                }
            }
            RemoteError::Unavailable(msg) => {
                let n = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
                if n == 1 {
                    eprintln!(
                        "warning: remote cache {}: {msg}; building locally where it does not answer",
                        self.endpoint
                    );
                }
                if n >= MAX_FAILURES && !self.disabled.swap(true, Ordering::SeqCst) {
                    eprintln!(
                        "warning: remote cache {}: {n} failures, not asking it again in this run",
                        self.endpoint
                    );
                }
            }
        }
    }
}
