//! Blocking Rust client. Every call waits for the server's answer, so when
//! it returns the declaration has been applied and the process may exit.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::protocol::{read_frame, write_frame, EnvQuery, Request, Response, PROTOCOL_VERSION};
use crate::{ENV_SOCKET, ENV_TOKEN};

/// A generous bound: the server answers in microseconds, so hitting this
/// means the runner is wedged, and an error beats a tool hung forever.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to the runner of the current action. Safe to share between
/// threads; calls are serialized on one connection.
pub struct Client {
    socket: PathBuf,
    /// Sent in every `hello` (from `VBUILD_IPC_TOKEN`).
    token: Option<String>,
    conn: Mutex<Option<UnixStream>>,
}

impl Client {
    /// The client for the action this process runs in, or `None` when the
    /// process does not run under vbuild (then callers treat every
    /// declaration as a no-op). Connects on first use.
    pub fn from_env() -> Option<Client> {
        let socket = std::env::var_os(ENV_SOCKET)?;
        if socket.is_empty() {
            return None;
        }
        Some(Client::new(socket))
    }

    /// A client for an explicit socket path, with the token from
    /// `VBUILD_IPC_TOKEN`; connects on first use.
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client::with_token(socket, std::env::var(ENV_TOKEN).ok())
    }

    /// A client for `socket` that proves itself with `token`.
    pub fn with_token(socket: impl Into<PathBuf>, token: Option<String>) -> Client {
        Client {
            socket: socket.into(),
            token,
            conn: Mutex::new(None),
        }
    }

    /// A client that connects and handshakes now, to surface errors early.
    pub fn connect(socket: impl Into<PathBuf>) -> io::Result<Client> {
        let client = Client::new(socket);
        client.connect_now()?;
        Ok(client)
    }

    /// Connects and handshakes now unless already connected.
    pub fn connect_now(&self) -> io::Result<()> {
        let mut guard = self.lock();
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        Ok(())
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Reads under `path` do not count as inputs. Returns the
    /// workspace-relative path the runner recorded.
    pub fn ignore_input(&self, path: impl AsRef<Path>) -> io::Result<String> {
        let (path, cwd) = path_and_cwd(path.as_ref())?;
        self.expect_path(Request::IgnoreInput { path, cwd })
    }

    /// Writes under `path` are not outputs. Returns the recorded path.
    pub fn ignore_output(&self, path: impl AsRef<Path>) -> io::Result<String> {
        let (path, cwd) = path_and_cwd(path.as_ref())?;
        self.expect_path(Request::IgnoreOutput { path, cwd })
    }

    /// This run will not be cached.
    pub fn disable_cache(&self) -> io::Result<()> {
        self.expect_ack(Request::DisableCache)
    }

    /// The value of `name` in vbuild's environment. `tracked` makes the
    /// value (or its absence) part of the cache key.
    pub fn get_env(&self, name: &str, tracked: bool) -> io::Result<Option<String>> {
        match self.call(&Request::GetEnv {
            name: name.to_owned(),
            tracked,
        })? {
            Response::Env { value } => Ok(value),
            other => Err(unexpected(other)),
        }
    }

    /// Every variable matching `query` (a glob via `&str`, or
    /// [`EnvQuery::Prefix`]). Tracked queries also record the name set.
    pub fn get_envs(
        &self,
        query: impl Into<EnvQuery>,
        tracked: bool,
    ) -> io::Result<BTreeMap<String, String>> {
        match self.call(&Request::GetEnvs {
            query: query.into(),
            tracked,
        })? {
            Response::Envs { values } => Ok(values),
            other => Err(unexpected(other)),
        }
    }

    /// The exact inputs this tool used; reports are unioned.
    pub fn report_used_inputs<P: AsRef<Path>>(
        &self,
        paths: impl IntoIterator<Item = P>,
    ) -> io::Result<()> {
        let paths = paths
            .into_iter()
            .map(|p| utf8(p.as_ref()).map(str::to_owned))
            .collect::<io::Result<Vec<_>>>()?;
        let cwd = current_dir_string()?;
        self.expect_ack(Request::ReportUsedInputs { paths, cwd })
    }

    fn expect_ack(&self, req: Request) -> io::Result<()> {
        match self.call(&req)? {
            Response::Ack { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn expect_path(&self, req: Request) -> io::Result<String> {
        match self.call(&req)? {
            Response::Ack { path: Some(p) } => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// Sends one request and waits for its answer. An I/O error drops the
    /// connection, so the next call starts clean instead of reading a stale
    /// answer.
    pub fn call(&self, req: &Request) -> io::Result<Response> {
        let mut guard = self.lock();
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let Some(stream) = guard.as_mut() else {
            return Err(io::Error::other("not connected"));
        };
        let result = write_frame(stream, req).and_then(|()| read_frame(stream));
        if result.is_err() {
            *guard = None;
        }
        result
    }

    fn open(&self) -> io::Result<UnixStream> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "vbuild IPC: cannot connect to {}: {e}",
                    self.socket.display()
                ),
            )
        })?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        write_frame(
            &mut stream,
            &Request::Hello {
                version: PROTOCOL_VERSION,
                client: Some(format!("vbuild-ipc-rust/{}", env!("CARGO_PKG_VERSION"))),
                token: self.token.clone(),
            },
        )?;
        match read_frame(&mut stream)? {
            Response::Hello { .. } => Ok(stream),
            other => Err(unexpected(other)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<UnixStream>> {
        // A panic mid-call leaves at worst a connection with an unread
        // answer; drop it rather than propagate the poison.
        self.conn.lock().unwrap_or_else(|p| {
            let mut g = p.into_inner();
            *g = None;
            g
        })
    }
}

fn unexpected(response: Response) -> io::Error {
    match response {
        Response::Error { message } => io::Error::other(format!("vbuild IPC: {message}")),
        other => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("vbuild IPC: unexpected response {other:?}"),
        ),
    }
}

fn utf8(path: &Path) -> io::Result<&str> {
    path.to_str().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {} is not valid UTF-8", path.display()),
        )
    })
}

/// Absolute paths need no cwd; relative ones are resolved by the server
/// against ours, so both travel together.
fn path_and_cwd(path: &Path) -> io::Result<(String, Option<String>)> {
    let cwd = if path.is_absolute() {
        None
    } else {
        current_dir_string()?
    };
    Ok((utf8(path)?.to_owned(), cwd))
}

fn current_dir_string() -> io::Result<Option<String>> {
    let cwd = std::env::current_dir()?;
    Ok(Some(utf8(&cwd)?.to_owned()))
}
