//! vbuild-ipc: the channel through which a running tool tells vbuild what
//! its cache key really depends on (ignored inputs and outputs, env reads,
//! "do not cache this run", the inputs it actually used).
//!
//! - [`protocol`]: frames and messages (spec in `schema/ipc/protocol.md`).
//! - [`ActionServer`]: one server per running action, on a private socket.
//! - [`client::Client`] and the free functions ([`ignore_input`], ...): the
//!   Rust side for tools; [`NODE_CLIENT_JS`]: the Node side, loaded by
//!   `@voidzero-dev/vite-task-client` through `VP_RUN_NODE_CLIENT_PATH`.

pub mod client;
mod declarations;
mod env;
#[doc(hidden)]
pub mod fuzz;
mod handler;
pub mod limits;
mod paths;
pub mod protocol;
mod server;
mod session;
mod tool;

pub use declarations::{Declarations, EnvPattern, EnvValue};
pub use env::{hash_secret, EnvQueryMatcher, SecretMatcher};
pub use protocol::{EnvQuery, PROTOCOL_VERSION};
pub use server::{ActionServer, ServerConfig, SOCKET_FILE_NAME};
pub use tool::{
    disable_cache, get_env, get_env_untracked, get_envs, ignore_input, ignore_output,
    report_used_inputs, under_vbuild,
};

/// Names the socket, as the action sees it.
pub const ENV_SOCKET: &str = "VBUILD_IPC_SOCKET";

/// The action's secret, which every connection's `hello` must carry.
pub const ENV_TOKEN: &str = "VBUILD_IPC_TOKEN";

/// Read by `@voidzero-dev/vite-task-client`: the Node module whose `load()`
/// returns the synchronous client.
pub const ENV_NODE_CLIENT_PATH: &str = "VP_RUN_NODE_CLIENT_PATH";

/// File name of the Node module inside the server's private directory.
pub const NODE_CLIENT_FILE_NAME: &str = "client.cjs";

/// The Node module (CommonJS) that `VP_RUN_NODE_CLIENT_PATH` points at.
/// [`ActionServer::start`] writes it next to the socket.
pub const NODE_CLIENT_JS: &str = include_str!("../node/client.cjs");
