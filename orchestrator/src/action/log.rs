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
