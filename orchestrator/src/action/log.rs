//! An action's stdout or stderr, never held whole in memory: what an action
//! printed is a blob in the store (the sandbox writes it to a file, the file
//! is hashed into the CAS, a hit names the blob), streamed in chunks when it
//! is replayed. Only vbuild's own short messages are kept as bytes.
use std::io::{self, Read, Write};
use std::path::PathBuf;
use vbuild_store::{Cas, CasError, Digest};

/// Replay chunk: output stays bounded whatever the action printed.
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Debug, Default)]
pub enum Log {
    #[default]
    Empty,
    /// A message vbuild wrote itself (e.g. "command not found").
    Text(Vec<u8>),
    /// A blob of the store, verified against `digest` while it is replayed.
    Blob {
        path: PathBuf,
        digest: Digest,
        size: u64,
    },
}

impl Log {
    /// The log stored as `digest` (the empty blob needs no file). Verifies
    /// the blob by streaming it once, so a corrupt log makes a hit unusable
    /// exactly as a corrupt output does.
    pub fn verified_blob(cas: &Cas, digest: &Digest) -> Result<Log, CasError> {
        if *digest == Digest::empty() {
            return Ok(Log::Empty);
        }
        let size = cas.read_into(digest, &mut |_| {})?;
        Ok(Log::Blob {
            path: cas.blob_path(digest),
            digest: *digest,
            size,
        })
    }

    /// Moves the file an action wrote into the store (hashing and copying
    /// it in chunks) and names its blob.
    pub fn store_file(cas: &Cas, file: &std::path::Path) -> Result<Log, CasError> {
        // Most actions print nothing: no temp file (a store inode) for that;
        // the empty blob is stored once (uploads name it), touched after.
        if std::fs::metadata(file).is_ok_and(|m| m.is_file() && m.len() == 0) {
            cas.put_bytes(&[])?;
            return Ok(Log::Empty);
        }
        let (digest, size) = cas.put_file(file)?;
        Ok(if size == 0 {
            Log::Empty
        } else {
            Log::Blob {
                path: cas.blob_path(&digest),
                digest,
                size,
            }
        })
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Log::Empty => true,
            Log::Text(t) => t.is_empty(),
            Log::Blob { size, .. } => *size == 0,
        }
    }

    /// Its digest, storing a text first.
    pub fn digest(&self, cas: &Cas) -> Result<Digest, CasError> {
        match self {
            Log::Empty => Ok(Digest::empty()),
            Log::Text(t) => cas.put_bytes(t),
            Log::Blob { digest, .. } => Ok(*digest),
        }
    }

    /// Writes the log to `out` in chunks. A blob whose bytes no longer hash
    /// to its digest ends in an `InvalidData` error (what was written up to
    /// there stays written).
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        match self {
            Log::Empty => Ok(()),
            Log::Text(t) => out.write_all(t),
            Log::Blob { path, digest, .. } => {
                let mut file = std::fs::File::open(path)?;
                let mut hasher = blake3::Hasher::new();
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = match file.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    hasher.update(&buf[..n]);
                    out.write_all(&buf[..n])?;
                }
                if Digest::from(hasher.finalize()) != *digest {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} changed in the store while it was replayed",
                            path.display()
                        ),
                    ));
                }
                Ok(())
            }
        }
    }
}

impl From<Vec<u8>> for Log {
    fn from(bytes: Vec<u8>) -> Log {
        if bytes.is_empty() {
            Log::Empty
        } else {
            Log::Text(bytes)
        }
    }
}

/// The order an action's stdout and stderr bytes arrived in: runs of
/// (stream: 1 = stdout, 2 = stderr, length). Stored as a blob of 9-byte
/// records (`vbuild_sandbox::parse_order` reads it) next to the logs.
pub type Order = Vec<(u8, u64)>;

pub fn encode_order(order: &Order) -> Vec<u8> {
    let mut out = Vec::with_capacity(order.len() * 9);
    for (stream, len) in order {
        out.push(*stream);
        out.extend_from_slice(&len.to_le_bytes());
    }
    out
}

/// Reads a log in pieces, verifying a blob against its digest at the end.
struct Reader<'a> {
    log: &'a Log,
    file: Option<std::fs::File>,
    text_pos: usize,
    hasher: blake3::Hasher,
}

impl<'a> Reader<'a> {
    fn new(log: &'a Log) -> io::Result<Reader<'a>> {
        let file = match log {
            Log::Blob { path, .. } => Some(std::fs::File::open(path)?),
            _ => None,
        };
        Ok(Reader {
            log,
            file,
            text_pos: 0,
            hasher: blake3::Hasher::new(),
        })
    }

    /// Copies up to `len` bytes (`u64::MAX`: the rest) to `out`.
    fn copy(&mut self, mut len: u64, out: &mut dyn Write, buf: &mut [u8]) -> io::Result<()> {
        match self.log {
            Log::Empty => Ok(()),
            Log::Text(t) => {
                let rest = &t[self.text_pos..];
                let n = rest.len().min(len.min(usize::MAX as u64) as usize);
                self.text_pos += n;
                out.write_all(&rest[..n])
            }
            Log::Blob { .. } => {
                let file = self.file.as_mut().expect("opened with the blob");
                while len > 0 {
                    let want = buf.len().min(len.min(usize::MAX as u64) as usize);
                    let n = match file.read(&mut buf[..want]) {
                        Ok(0) => return Ok(()),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    self.hasher.update(&buf[..n]);
                    out.write_all(&buf[..n])?;
                    len -= n as u64;
                }
                Ok(())
            }
        }
    }

    fn verify(&self) -> io::Result<()> {
        match self.log {
            Log::Blob { path, digest, .. } if Digest::from(self.hasher.finalize()) != *digest => {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} changed in the store while it was replayed",
                        path.display()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Replays both logs in the order recorded (or stdout, then stderr, when
/// there is none). Returns the first error of each stream.
pub fn replay(
    stdout: &Log,
    stderr: &Log,
    order: Option<&Order>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> (io::Result<()>, io::Result<()>) {
    let Some(order) = order else {
        return (stdout.write_to(out), stderr.write_to(err));
    };
    let (mut r_out, mut r_err) = match (Reader::new(stdout), Reader::new(stderr)) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => return (a.map(|_| ()), b.map(|_| ())),
    };
    let mut buf = vec![0u8; CHUNK];
    let (mut e_out, mut e_err) = (Ok(()), Ok(()));
    for &(stream, len) in order {
        let step = match stream {
            1 => r_out.copy(len, out, &mut buf).and_then(|_| out.flush()),
            _ => r_err.copy(len, err, &mut buf).and_then(|_| err.flush()),
        };
        if let Err(e) = step {
            if stream == 1 {
                e_out = Err(e);
            } else {
                e_err = Err(e);
            }
            break;
        }
    }
    // Whatever the order did not cover (it never should), then the checks.
    let e_out = e_out
        .and_then(|_| r_out.copy(u64::MAX, out, &mut buf))
        .and_then(|_| r_out.verify());
    let e_err = e_err
        .and_then(|_| r_err.copy(u64::MAX, err, &mut buf))
        .and_then(|_| r_err.verify());
    (e_out, e_err)
}
