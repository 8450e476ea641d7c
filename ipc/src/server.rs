//! The per-action server: a private socket directory, an accept loop, one
//! task per connection, and a bounded shutdown that never loses a frame the
//! server already has.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, watch};

use crate::declarations::Declarations;
use crate::env::SecretMatcher;
use crate::handler::Shared;
use crate::limits::MAX_CONNECTIONS;
use crate::paths::Confinement;
use crate::session::{Flow, Session};
use crate::{ENV_NODE_CLIENT_PATH, ENV_SOCKET, ENV_TOKEN, NODE_CLIENT_FILE_NAME, NODE_CLIENT_JS};

/// Name of the socket inside the private directory. Kept short because the
/// whole path must fit in `sockaddr_un` (108 bytes on Linux).
pub const SOCKET_FILE_NAME: &str = "s";

/// `sun_path` capacity minus the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// How long the connection tasks get, after being told to close, to sweep
/// their sockets. The sweep never waits for the peer, so this only matters
/// when the runtime is starved.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Upper bound on bytes swept from one connection at close, so a process
/// that is (against the contract) still writing cannot hold `finish` up.
const MAX_SWEEP_BYTES: usize = 64 << 20;

/// Consecutive accept errors (e.g. EMFILE) after which the loop gives up
/// rather than spinning; established connections keep working.
const MAX_ACCEPT_ERRORS: u32 = 1000;

/// How the server for one action is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The workspace root as the action sees it (e.g. `/vbuild/ws` in the
    /// namespace sandbox, the scratch dir otherwise). Paths must resolve
    /// under it.
    pub ws_root_inside: PathBuf,
    /// vbuild's own environment; `getEnv` answers from it, not from the
    /// action's scrubbed one.
    pub host_env: Arc<HashMap<String, String>>,
    /// Which variables' tracked values are recorded only as a hash. Built
    /// once per run by the caller (compiling globs per action is costly).
    pub secrets: SecretMatcher,
}

/// Counts live connection tasks so the synchronous `finish` can wait for
/// them without needing to run on (or block) the runtime.
#[derive(Default)]
struct Live {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Live {
    fn enter(self: &Arc<Self>) -> LiveGuard {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        LiveGuard(self.clone())
    }

    fn count(&self) -> usize {
        *self.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no connection is live or `deadline` passes; true if idle.
    fn wait_idle(&self, deadline: Instant) -> bool {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *count > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            count = self
                .changed
                .wait_timeout(count, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// Decrements on drop, which also covers a task that is aborted or panics.
struct LiveGuard(Arc<Live>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.saturating_sub(1);
        self.0.changed.notify_all();
    }
}

/// The IPC server of one running action.
pub struct ActionServer {
    dir: PathBuf,
    socket: PathBuf,
    node_client: PathBuf,
    shared: Arc<Shared>,
    live: Arc<Live>,
    stop_accept: Option<oneshot::Sender<()>>,
    accept_done: mpsc::Receiver<()>,
    close: watch::Sender<bool>,
}

impl ActionServer {
    /// Creates a private dir under `parent` (0700) holding the socket (0600)
    /// and the Node client module, and starts serving on `rt` (which needs
    /// its IO driver enabled).
    pub fn start(
        rt: &tokio::runtime::Handle,
        parent: &Path,
        config: ServerConfig,
    ) -> io::Result<ActionServer> {
        let secrets = config.secrets.clone();
        let dir = create_private_dir(parent)?;
        match Self::start_in(rt, dir.clone(), config, secrets) {
            Ok(server) => Ok(server),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn start_in(
        rt: &tokio::runtime::Handle,
        dir: PathBuf,
        config: ServerConfig,
        secrets: SecretMatcher,
    ) -> io::Result<ActionServer> {
        let socket = dir.join(SOCKET_FILE_NAME);
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter parent directory",
                    socket.display()
                ),
            ));
        }
        let std_listener = std::os::unix::net::UnixListener::bind(&socket)?;
        // The directory is already 0700, so nobody else could connect in the
        // moment before this; the mode is belt and braces.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        std_listener.set_nonblocking(true)?;
        let listener = {
            let _ctx = rt.enter();
            UnixListener::from_std(std_listener)?
        };

        // Shipped next to the socket so one bind mount gives the action both.
        let node_client = dir.join(NODE_CLIENT_FILE_NAME);
        std::fs::write(&node_client, NODE_CLIENT_JS)?;

        let shared = Arc::new(Shared {
            confinement: Confinement::new(&config.ws_root_inside),
            host_env: config.host_env,
            secrets,
            decls: Mutex::new(Declarations::default()),
            token: random_hex(32)?,
        });
        let live = Arc::new(Live::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let (close_tx, _) = watch::channel(false);
        rt.spawn(accept_loop(
            listener,
            shared.clone(),
            live.clone(),
            close_tx.clone(),
            stop_rx,
            done_tx,
        ));
        Ok(ActionServer {
            dir,
            socket,
            node_client,
            shared,
            live,
            stop_accept: Some(stop_tx),
            accept_done: done_rx,
            close: close_tx,
        })
    }

    /// Host path of the private directory (the sandbox bind-mounts it).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The secret a connection's `hello` must carry (in the action's env as
    /// `VBUILD_IPC_TOKEN`).
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Host path of the socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Host path of the copy of [`NODE_CLIENT_JS`] written into the private
    /// directory; inside the sandbox it is
    /// `socket_dir_inside/`[`NODE_CLIENT_FILE_NAME`].
    pub fn node_client_path(&self) -> &Path {
        &self.node_client
    }

    /// Env vars to give the action: where the socket is and where the Node
    /// module for `@voidzero-dev/vite-task-client` is, both as the action
    /// sees them, and the token its connections must present.
    pub fn action_env(
        &self,
        socket_dir_inside: &Path,
        node_module_inside: &Path,
    ) -> Vec<(String, String)> {
        vec![
            (
                ENV_SOCKET.to_owned(),
                socket_dir_inside
                    .join(SOCKET_FILE_NAME)
                    .to_string_lossy()
                    .into_owned(),
            ),
            (
                ENV_NODE_CLIENT_PATH.to_owned(),
                node_module_inside.to_string_lossy().into_owned(),
            ),
            (ENV_TOKEN.to_owned(), self.shared.token.clone()),
        ]
    }

    /// A snapshot of what has been declared so far (for progress display;
    /// the authoritative result comes from [`ActionServer::finish`]).
    pub fn declarations_so_far(&self) -> Declarations {
        self.shared.decls().clone()
    }

    /// Call after the action's processes have exited. Stops accepting (after
    /// taking any connection already queued), lets every connection run to
    /// EOF for at most `drain`, then makes the rest apply whatever complete
    /// frames they have received and drops them; removes the directory and
    /// returns the declarations.
    ///
    /// Blocks the calling thread; from async code use
    /// [`ActionServer::finish_async`]. Must not be called on the thread of a
    /// current-thread runtime that runs this server.
    pub fn finish(mut self, drain: Duration) -> Declarations {
        let deadline = Instant::now() + drain;
        if let Some(stop) = self.stop_accept.take() {
            let _ = stop.send(());
            // The loop only has to take the queued connections, so this is
            // quick; it gets at least CLOSE_GRACE even with a zero drain,
            // or a connection still in the backlog would be missed.
            // Err means the loop is gone (runtime shut down): nothing to wait for.
            let accept_deadline = deadline.max(Instant::now() + CLOSE_GRACE);
            let _ = self
                .accept_done
                .recv_timeout(accept_deadline.saturating_duration_since(Instant::now()));
        }
        if !self.live.wait_idle(deadline) {
            tracing::debug!(target: "vbuild_ipc", "drain bound reached; closing lingering connections");
        }
        let _ = self.close.send(true);
        if !self.live.wait_idle(Instant::now() + CLOSE_GRACE) {
            tracing::warn!(target: "vbuild_ipc", "IPC connections did not close in time");
        }
        let decls = self.shared.decls().clone();
        let _ = std::fs::remove_dir_all(&self.dir);
        decls
    }

    /// [`ActionServer::finish`] on a blocking thread of the current runtime.
    pub async fn finish_async(self, drain: Duration) -> Declarations {
        match tokio::task::spawn_blocking(move || self.finish(drain)).await {
            Ok(decls) => decls,
            // Only a panic inside finish gets here; surface it.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

impl Drop for ActionServer {
    /// Dropped without `finish` (an error path in the runner): stop serving
    /// and clean up without waiting.
    fn drop(&mut self) {
        if let Some(stop) = self.stop_accept.take() {
            let _ = stop.send(());
        }
        let _ = self.close.send(true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` random bytes from the kernel, as lowercase hex.
pub(crate) fn random_hex(n: usize) -> io::Result<String> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates `parent/vbipc-<pid>-<n>-<random>` with mode 0700, never reusing
/// an existing entry (so a planted directory or symlink is not adopted).
/// The random part keeps other actions from finding the socket by guessing
/// its name.
fn create_private_dir(parent: &Path) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("vbipc-{pid:x}-{n:x}-{}", random_hex(12)?));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                // The umask may have removed bits we need (e.g. 0200).
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "could not create a unique IPC directory",
    ))
}

async fn accept_loop(
    listener: UnixListener,
    shared: Arc<Shared>,
    live: Arc<Live>,
    close: watch::Sender<bool>,
    mut stop: oneshot::Receiver<()>,
    done: mpsc::Sender<()>,
) {
    let spawn = |stream: UnixStream| {
        // Counted before spawning so `finish` cannot miss it.
        let guard = live.enter();
        tokio::spawn(serve(stream, shared.clone(), close.subscribe(), guard));
    };
    let mut errors = 0u32;
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if live.count() >= MAX_CONNECTIONS => {
                    errors = 0;
                    refuse_connection(stream, &shared);
                }
                Ok((stream, _)) => {
                    errors = 0;
                    spawn(stream);
                }
                Err(e) => {
                    errors += 1;
                    tracing::warn!(target: "vbuild_ipc", "accept failed: {e}");
                    if errors >= MAX_ACCEPT_ERRORS {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            },
        }
    }
    // A process may have connected, written and exited just before the
    // action ended; its connection is still in the backlog. Take those too.
    if let Ok(std_listener) = listener.into_std() {
        let _ = std_listener.set_nonblocking(true);
        while let Ok((stream, _)) = std_listener.accept() {
            if stream.set_nonblocking(true).is_ok() {
                if let Ok(stream) = UnixStream::from_std(stream) {
                    spawn(stream);
                }
            }
        }
    }
    let _ = done.send(());
}

/// Over [`MAX_CONNECTIONS`]: one `error` (best effort, never waiting) and
/// the connection is closed, so a tool cannot make the runner hold
/// unbounded connection state.
fn refuse_connection(stream: UnixStream, shared: &Shared) {
    let response = shared.refuse(
        "connection",
        format!("more than {MAX_CONNECTIONS} connections at once"),
    );
    if let (Ok(frame), Ok(stream)) = (crate::protocol::encode_frame(&response), stream.into_std()) {
        let _ = (&stream).write(&frame);
    }
}

/// Per-read buffer growth; frames are usually far smaller.
const READ_CHUNK: usize = 16 * 1024;

async fn serve(
    mut stream: UnixStream,
    shared: Arc<Shared>,
    mut close: watch::Receiver<bool>,
    _live: LiveGuard,
) {
    let mut session = Session::default();
    let mut out = Vec::new();
    loop {
        if *close.borrow_and_update() {
            break;
        }
        if !out.is_empty() {
            // A client that never reads its acks must not pin this task
            // past `finish`, hence the select.
            let written = tokio::select! {
                biased;
                _ = close.changed() => None,
                r = stream.write_all(&out) => Some(r),
            };
            match written {
                None => break,
                Some(Err(_)) => return,
                Some(Ok(())) => out.clear(),
            }
        }
        session.buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            biased;
            _ = close.changed() => None,
            r = stream.read_buf(&mut session.buf) => Some(r),
        };
        match read {
            None => break,
            // EOF: a trailing partial frame can never complete; drop it.
            Some(Ok(0)) | Some(Err(_)) => return,
            Some(Ok(_)) => {}
        }
        if session.process(&shared, &mut out) == Flow::Close {
            tokio::select! {
                biased;
                _ = close.changed() => {}
                _ = stream.write_all(&out) => {}
            }
            return;
        }
    }
    sweep(stream, session, &shared);
}

/// The runner is closing this connection: apply every complete frame the
/// kernel already holds for it, without waiting for more.
fn sweep(stream: UnixStream, mut session: Session, shared: &Shared) {
    // Leave the reactor so reads go straight to the socket instead of
    // depending on readiness the reactor may not have observed yet.
    let Ok(mut stream) = stream.into_std() else {
        return;
    };
    let _ = stream.set_nonblocking(true);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut swept = 0usize;
    while swept < MAX_SWEEP_BYTES {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                swept += n;
                session.buf.extend_from_slice(&chunk[..n]);
                if session.process(shared, &mut out) == Flow::Close {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // WouldBlock: nothing more was sent. Anything else: gone.
            Err(_) => break,
        }
    }
    // Best effort: the peer is most likely gone.
    let _ = stream.write_all(&out);
}
