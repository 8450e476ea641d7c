//! `Cas`: immutable blobs under `cas/`, written on the filesystem of `tmp/`
//! (an unnamed file where the system allows, see `new_blob.rs`) and named
//! in `cas/` only once complete.
//!
//! Durability: blobs are *not* fsynced one by one. A `kill -9` cannot tear a
//! blob (it becomes visible only through an atomic link or rename of a
//! complete temp file); a power loss might leave a renamed blob with missing bytes, but every
//! read verifies the BLAKE3 of what it reads, so such a blob is detected,
//! deleted and rebuilt by the next build instead of being served. That trade
//! keeps a cold build from paying one fsync per output file.
mod new_blob;

use crate::temp::{self, Temp};
use crate::{Digest, Result, StoreError};
use new_blob::NewBlob;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Hex digits of a blob's digest that name its directory under `cas/`: 16
/// directories. Each one is an inode created on the store's first blob in
/// it, and on ext4 right after a store was deleted (a fresh CI machine)
/// every inode creation scans the recently deleted ones: with 256
/// directories (2 digits, until schema v7) a cold build of 200 actions
/// made 140 of them for 200 blobs. 16 keep a million blobs at ~62,000 per
/// directory, which ext4's hashed directories index well.
pub const SHARD_HEX: usize = 1;

/// The digest a file in `cas/` names: `shard` and `name` are its directory
/// and file names. Blobs of the layout before schema v7 (2-digit shards)
/// are recognized too, so verify checks and collection removes them.
pub(crate) fn blob_name(shard: &str, name: &str) -> Option<Digest> {
    if shard.len() > 2 || shard.len() + name.len() != 64 {
        return None;
    }
    Digest::from_hex(&format!("{shard}{name}"))
}

/// Streaming chunk size: large enough that syscalls don't dominate hashing.
const CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CasError {
    #[error("blob {0} is missing from the store")]
    Missing(Digest),
    /// The blob's bytes did not hash to its name. The blob has been deleted
    /// (so the next build repairs it) before this is returned.
    #[error("blob {0} is corrupt (its bytes do not match its digest); removed it from the store")]
    Corrupt(Digest),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<CasError> for StoreError {
    fn from(e: CasError) -> StoreError {
        match e {
            CasError::Io { path, source } => StoreError::Io { path, source },
            other => StoreError::Corrupt(other.to_string()),
        }
    }
}

/// Wraps an `io::Error` with the path it happened on.
fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CasError + '_ {
    move |source| CasError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct Cas {
    /// `<root>/cas`: blobs at `cas/<1 hex>/<63 hex>` (see [`SHARD_HEX`]).
    cas_dir: PathBuf,
    /// `<root>/tmp`: same filesystem as `cas/`, so the final rename is atomic.
    tmp_dir: PathBuf,
    written: std::sync::atomic::AtomicU64,
    /// The device of `tmp/`: a restore to the same device is written there.
    tmp_dev: Option<u64>,
    /// This `open` created `cas/`: the store held no blob before.
    created: bool,
}

impl Cas {
    /// Creates `cas/` and `tmp/` under the store root.
    pub fn open(store_root: &Path) -> Result<Cas> {
        let cas_dir = store_root.join("cas");
        let tmp_dir = store_root.join("tmp");
        let io_at = |dir: &Path| {
            let dir = dir.to_path_buf();
            move |source| StoreError::Io { path: dir, source }
        };
        // As `create_dir_all` (one mkdir when it exists), saying whether
        // `cas/` is new.
        let created = match fs::create_dir(&cas_dir) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && cas_dir.is_dir() => false,
            Err(_) => {
                fs::create_dir_all(&cas_dir).map_err(io_at(&cas_dir))?;
                true
            }
        };
        fs::create_dir_all(&tmp_dir).map_err(io_at(&tmp_dir))?;
        // Leftovers of killed runs (their pid is gone) are never renamed
        // into place: remove them.
        temp::sweep_store_tmp(&tmp_dir);
        let tmp_dev = temp::dev_of(&tmp_dir);
        Ok(Cas {
            cas_dir,
            tmp_dir,
            tmp_dev,
            created,
            written: Default::default(),
        })
    }

    /// Stores bytes; returns their digest. No-op if already present.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, CasError> {
        let digest = Digest::of_bytes(bytes);
        if self.keep(&digest) {
            return Ok(digest);
        }
        let mut tmp = self.new_temp()?;
        tmp.file()
            .write_all(bytes)
            .map_err(io_err(tmp.describe(&self.tmp_dir)))?;
        self.commit(tmp, &digest)?;
        self.note_written(bytes.len() as u64);
        Ok(digest)
    }

    /// Streams a regular file into the store while hashing it (one read of
    /// the file). Returns (digest, size). Anything else (a FIFO, a device,
    /// a socket, a symlink put there after the caller looked) is refused
    /// without blocking: the file is opened non-blocking, not following a
    /// symlink, and checked before a byte is read.
    pub fn put_file(&self, path: &Path) -> Result<(Digest, u64), CasError> {
        let mut src = open_regular(path)?;
        let mut tmp = self.new_temp()?;
        // The digest is only known once the whole file has been read, so the
        // bytes go to a temp file while hashing; if the blob turns out to
        // exist already, the temp file is simply dropped (deleted).
        let (digest, size) = copy_hashing(&mut src, path, &mut tmp, &self.tmp_dir)?;
        if !self.keep(&digest) {
            self.commit(tmp, &digest)?;
            self.note_written(size);
        }
        Ok((digest, size))
    }

    /// Digest and size of a regular file, without storing it (what
    /// `put_file` refuses, this refuses). Sources are hashed this way: an
    /// action stages them from the workspace, verified against this digest
    /// ([`Cas::copy_file_verified`]), so storing each one would cost a new
    /// store inode per source for nothing (on ext4 an inode allocation scans
    /// past every recently deleted one: the largest cost of a cold build).
    pub fn hash_file(&self, path: &Path) -> Result<(Digest, u64), CasError> {
        let mut src = open_regular(path)?;
        with_thread_buffer(|buf| hash_chunks(&mut src, path, buf, |_| Ok(())))
    }

    /// Copies the regular file `src` to `dest`, a new file (never replacing
    /// one) created with `mode`, hashing while copying. True when the bytes
    /// hash to `digest`; false when they do not (`src` changed since it was
    /// hashed, or is not a regular file any more), and then `dest` is
    /// removed again, so nobody ever sees bytes other than `digest`'s there.
    pub fn copy_file_verified(
        &self,
        src: &Path,
        digest: &Digest,
        dest: &Path,
        mode: u32,
    ) -> Result<bool, CasError> {
        use std::os::unix::fs::OpenOptionsExt;
        let Ok(mut from) = open_regular(src) else {
            return Ok(false);
        };
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dest)
            .map_err(io_err(dest))?;
        let copied = with_thread_buffer(|buf| {
            hash_chunks(&mut from, src, buf, |chunk| {
                to.write_all(chunk).map_err(io_err(dest))
            })
        });
        match copied {
            Ok((actual, _)) if actual == *digest => Ok(true),
            other => {
                drop(to);
                fs::remove_file(dest).map_err(io_err(dest))?;
                other.map(|_| false)
            }
        }
    }

    /// Whether the blob exists; if it does, marks it as used now (its
    /// mtime), so a concurrent garbage collection keeps it: a writer that
    /// finds its bytes already stored relies on that blob from here on.
    /// See `gc.rs` for why this, and not `contains`, guards deduplication.
    pub fn keep(&self, digest: &Digest) -> bool {
        crate::gc::touch(&self.blob_path(digest))
    }

    /// Whether opening the store created `cas/` (it held no blob then).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Bytes of new blobs this process has written (for the size budget).
    pub fn bytes_written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn note_written(&self, n: u64) {
        self.written
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// `<root>/cas`.
    pub(crate) fn dir(&self) -> &Path {
        &self.cas_dir
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex_bytes();
        let hex = std::str::from_utf8(&hex).expect("hex is ASCII");
        let dir = self.cas_dir.as_os_str();
        let mut path = std::ffi::OsString::with_capacity(dir.len() + 66);
        path.push(dir);
        path.push("/");
        path.push(&hex[..SHARD_HEX]);
        path.push("/");
        path.push(&hex[SHARD_HEX..]);
        PathBuf::from(path)
    }

    /// Reads a blob and verifies its hash. Corrupt → deleted + `CasError::Corrupt`.
    /// The empty blob needs no file: its bytes are known.
    pub fn read_verified(&self, digest: &Digest) -> Result<Vec<u8>, CasError> {
        if *digest == Digest::empty() {
            return Ok(Vec::new());
        }
        let path = self.blob_path(digest);
        let bytes = File::open(&path)
            .and_then(read_all)
            .map_err(|e| self.open_err(digest, &path, e))?;
        if Digest::of_bytes(&bytes) != *digest {
            return Err(self.quarantine(digest));
        }
        Ok(bytes)
    }

    /// Copies a blob to `dest` through a temp file renamed over it (see
    /// [`crate::temp`]: in the store's `tmp/` when on the same filesystem,
    /// else an unnamed file beside `dest`), hashing while copying; sets mode
    /// 0755 if `executable` else 0644. On a hash mismatch the temp file and
    /// the blob are removed and `CasError::Corrupt` is returned; `dest` is
    /// left untouched. No named file is ever left beside `dest` by a crash.
    pub fn copy_out(&self, digest: &Digest, dest: &Path, executable: bool) -> Result<(), CasError> {
        // Renaming a file over a directory fails anyway, but only after the
        // copy; checking first gives a clear error and saves the work.
        if fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir()) {
            return Err(CasError::Io {
                path: dest.to_path_buf(),
                source: io::Error::new(io::ErrorKind::IsADirectory, "destination is a directory"),
            });
        }
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let tmp = Temp::for_dest(&self.tmp_dir, self.tmp_dev, parent).map_err(io_err(parent))?;
        match self.copy_to_temp(digest, tmp, dest, executable) {
            // A bind mount of the same device still refuses a rename across
            // it: write beside `dest` instead.
            Err(CasError::Io { source, .. }) if source.raw_os_error() == Some(libc::EXDEV) => {
                let tmp = Temp::beside(parent).map_err(io_err(parent))?;
                self.copy_to_temp(digest, tmp, dest, executable)
            }
            other => other,
        }
    }

    fn copy_to_temp(
        &self,
        digest: &Digest,
        mut tmp: Temp,
        dest: &Path,
        executable: bool,
    ) -> Result<(), CasError> {
        let blob = self.blob_path(digest);
        let mut src = File::open(&blob).map_err(|e| self.open_err(digest, &blob, e))?;
        let (actual, _) = with_thread_buffer(|buf| {
            hash_chunks(&mut src, &blob, buf, |chunk| {
                tmp.file().write_all(chunk).map_err(io_err(dest))
            })
        })?;
        if actual != *digest {
            drop(tmp); // deletes the temp file; `dest` was never touched
            return Err(self.quarantine(digest));
        }
        set_mode(tmp.file(), if executable { 0o755 } else { 0o644 }).map_err(io_err(dest))?;
        // rename(2) atomically replaces a file or a symlink at `dest` (the
        // symlink itself, not its target).
        tmp.persist(dest).map_err(io_err(dest))
    }

    /// Copies a blob of `size` bytes (as its tree says) into `dest` (a new,
    /// still unnamed file the caller names only if this succeeds),
    /// verifying its hash on the way. It reads exactly `size` bytes: no
    /// read at the end to see end-of-file (what is written is right when
    /// those bytes hash to the digest). On a mismatch the whole blob is
    /// checked: corrupt → removed and `CasError::Corrupt`; intact (the
    /// size was wrong) → an error, `dest` to be dropped. `dest_path` only
    /// names `dest` in errors.
    pub fn copy_into(
        &self,
        digest: &Digest,
        size: u64,
        dest: &mut File,
        dest_path: &Path,
    ) -> Result<(), CasError> {
        if *digest == Digest::empty() && size == 0 {
            return Ok(());
        }
        let blob = self.blob_path(digest);
        let mut src = File::open(&blob).map_err(|e| self.open_err(digest, &blob, e))?;
        if size >= CLONE_FROM && !NO_CLONE.load(std::sync::atomic::Ordering::Relaxed) {
            // Verify first (one read), then share the blob's extents: no
            // bytes written. Where the filesystem cannot, copy in the
            // kernel this once, and stream-copy large files from then on.
            let actual = hash_prefix(&mut src, &blob, size, &mut |_| Ok(()))?;
            let whole = src.metadata().is_ok_and(|m| m.len() == size);
            if actual == *digest && whole && clone_or_copy(&src, dest, size) {
                return Ok(());
            }
            src.seek(io::SeekFrom::Start(0)).map_err(io_err(&blob))?;
            dest.set_len(0).map_err(io_err(dest_path))?;
            dest.seek(io::SeekFrom::Start(0))
                .map_err(io_err(dest_path))?;
        }
        let actual = hash_prefix(&mut src, &blob, size, &mut |chunk| {
            dest.write_all(chunk).map_err(io_err(dest_path))
        })?;
        if actual == *digest {
            return Ok(());
        }
        src.seek(io::SeekFrom::Start(0)).map_err(io_err(&blob))?;
        let (whole, real) =
            with_thread_buffer(|buf| hash_chunks(&mut src, &blob, buf, |_| Ok(())))?;
        if whole != *digest {
            return Err(self.quarantine(digest));
        }
        Err(CasError::Io {
            path: dest_path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the tree says {size} bytes, blob {digest} has {real}"),
            ),
        })
    }

    /// Puts a symlink to `target` at `dest` atomically (made under a temp
    /// name, renamed over whatever file or symlink is there), so a
    /// concurrent reader never sees the path missing. The temp name lives
    /// in `tmp/` when on the same filesystem, as for `copy_out`.
    pub fn put_symlink(&self, target: &str, dest: &Path) -> Result<(), CasError> {
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let same_fs = self.tmp_dev.is_some() && self.tmp_dev == temp::dev_of(parent);
        let dir = if same_fs { &self.tmp_dir } else { parent };
        match temp::symlink_into(target, dir, dest) {
            Err(e) if same_fs && e.raw_os_error() == Some(libc::EXDEV) => {
                temp::symlink_into(target, parent, dest).map_err(io_err(dest))
            }
            other => other.map_err(io_err(dest)),
        }
    }

    /// Hard-links a blob at `dest` (which must not exist) after verifying its
    /// hash (corrupt → deleted + `Corrupt`). The link shares the blob's
    /// inode: only for a caller that guarantees nothing can write through
    /// it, such as a read-only mount; fails (e.g. across filesystems) and
    /// the caller copies instead.
    pub fn link_out(&self, digest: &Digest, dest: &Path) -> Result<(), CasError> {
        if *digest == Digest::empty() {
            // The empty blob may have no file; copying it is free anyway.
            return Err(CasError::Missing(*digest));
        }
        let path = self.blob_path(digest);
        let mut src = File::open(&path).map_err(|e| self.open_err(digest, &path, e))?;
        let (found, _) = with_thread_buffer(|buf| hash_chunks(&mut src, &path, buf, |_| Ok(())))?;
        if found != *digest {
            return Err(self.quarantine(digest));
        }
        fs::hard_link(&path, dest).map_err(io_err(dest))
    }

    /// A writer for a blob whose digest is not known up front (a download):
    /// bytes go to a temp file while BLAKE3 is computed; nothing enters the
    /// store until [`BlobWriter::commit`]. Dropping it discards the bytes.
    pub fn writer(&self) -> Result<BlobWriter<'_>, CasError> {
        Ok(BlobWriter {
            cas: self,
            tmp: self.new_temp()?,
            hasher: blake3::Hasher::new(),
            size: 0,
        })
    }

    /// Streams a blob through `sink` (e.g. a second hash), verifying its
    /// BLAKE3 on the way; returns its size. Corrupt → deleted + `Corrupt`.
    pub fn read_into(&self, digest: &Digest, sink: &mut dyn FnMut(&[u8])) -> Result<u64, CasError> {
        let path = self.blob_path(digest);
        let mut src = File::open(&path).map_err(|e| self.open_err(digest, &path, e))?;
        let mut buf = vec![0u8; CHUNK];
        let (found, size) = hash_chunks(&mut src, &path, &mut buf, |chunk| {
            sink(chunk);
            Ok(())
        })?;
        if found != *digest {
            return Err(self.quarantine(digest));
        }
        Ok(size)
    }

    /// (number of blobs, total bytes).
    pub fn stats(&self) -> Result<(u64, u64), CasError> {
        let (mut count, mut bytes) = (0u64, 0u64);
        for shard in read_dir_tolerant(&self.cas_dir)? {
            let shard = shard.map_err(io_err(&self.cas_dir))?;
            if !shard.file_type().map_err(io_err(&shard.path()))?.is_dir() {
                continue;
            }
            let shard_path = shard.path();
            for blob in read_dir_tolerant(&shard_path)? {
                let blob = blob.map_err(io_err(&shard_path))?;
                // A blob may vanish under us (corrupt-blob removal, another
                // process's GC): skip it rather than fail the whole walk.
                match blob.metadata() {
                    Ok(m) if m.is_file() => {
                        count += 1;
                        bytes += m.len();
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&blob.path())(e)),
                }
            }
        }
        Ok((count, bytes))
    }

    fn new_temp(&self) -> Result<NewBlob, CasError> {
        NewBlob::create(&self.tmp_dir).map_err(io_err(&self.tmp_dir))
    }

    /// Makes a complete temp file the blob `digest`: read-only, named in
    /// `cas/` without replacing an existing blob (blobs are immutable).
    fn commit(&self, tmp: NewBlob, digest: &Digest) -> Result<(), CasError> {
        let dest = self.blob_path(digest);
        tmp.commit(&dest, &self.tmp_dir).map_err(io_err(&dest))
    }

    /// Maps an error opening a blob: not found means missing.
    fn open_err(&self, digest: &Digest, path: &Path, e: io::Error) -> CasError {
        if e.kind() == io::ErrorKind::NotFound {
            CasError::Missing(*digest)
        } else {
            io_err(path)(e)
        }
    }

    /// Deletes a blob whose bytes do not match its name, so that it reads as
    /// missing and the next build writes it again.
    fn quarantine(&self, digest: &Digest) -> CasError {
        let path = self.blob_path(digest);
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                return io_err(&path)(e);
            }
        }
        CasError::Corrupt(*digest)
    }
}

/// A blob being written whose digest is learned from its bytes; see
/// [`Cas::writer`].
pub struct BlobWriter<'a> {
    cas: &'a Cas,
    tmp: NewBlob,
    hasher: blake3::Hasher,
    size: u64,
}

impl BlobWriter<'_> {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The BLAKE3 of the bytes written so far.
    pub fn digest(&self) -> Digest {
        self.hasher.finalize().into()
    }

    /// Makes the bytes a blob of the store; returns (digest, size).
    pub fn commit(self) -> Result<(Digest, u64), CasError> {
        let digest = self.digest();
        if !self.cas.keep(&digest) {
            self.cas.commit(self.tmp, &digest)?;
            self.cas.note_written(self.size);
        }
        Ok((digest, self.size))
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.tmp.file().write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.file().flush()
    }
}

/// Copies `src` to `dst` in large chunks, hashing on the way; (digest, size).
fn copy_hashing(
    src: &mut File,
    src_path: &Path,
    dst: &mut NewBlob,
    tmp_dir: &Path,
) -> Result<(Digest, u64), CasError> {
    with_thread_buffer(|buf| {
        hash_chunks(src, src_path, buf, |chunk| {
            dst.file()
                .write_all(chunk)
                .map_err(|e| io_err(dst.describe(tmp_dir))(e))
        })
    })
}

/// Runs `f` with this thread's copy buffer: allocating and zeroing 256 KiB
/// for every (mostly small) file showed up in cold-build profiles. `f` must
/// not call back into another user of the buffer.
fn with_thread_buffer<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; CHUNK]);
    }
    BUF.with(|buf| f(&mut buf.borrow_mut()))
}

/// Reads `src` to its end through `buf`, hashing each chunk and handing it
/// to `each`; (digest, size).
fn hash_chunks(
    src: &mut File,
    src_path: &Path,
    buf: &mut [u8],
    mut each: impl FnMut(&[u8]) -> Result<(), CasError>,
) -> Result<(Digest, u64), CasError> {
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    loop {
        let n = match src.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(src_path)(e)),
        };
        hasher.update(&buf[..n]);
        each(&buf[..n])?;
        size += n as u64;
    }
    Ok((hasher.finalize().into(), size))
}

/// Reads a file to its end without asking its size first (`fs::read` and
/// `read_to_end` spend an `fstat` and an `lseek` on that): one system call
/// per tree of every hit, and most blobs read whole are small trees. Reads
/// through the thread's buffer, so nothing is zero-filled per call.
fn read_all(mut f: File) -> io::Result<Vec<u8>> {
    with_thread_buffer(|buf| {
        let mut bytes = Vec::new();
        loop {
            match f.read(buf) {
                Ok(0) => return Ok(bytes),
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    })
}

/// Files from this size on are reflinked (`FICLONE`) where the filesystem
/// can: below it, one read and one write cost less than finding out.
const CLONE_FROM: u64 = 1 << 20;

/// Set once `FICLONE` was refused (ext4, tmpfs, another filesystem): large
/// files are then streamed like small ones, in one hashing pass.
static NO_CLONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Hashes the first `size` bytes of `src` (fewer if it ends first), handing
/// each chunk to `each`; no read past them.
fn hash_prefix(
    src: &mut File,
    src_path: &Path,
    size: u64,
    each: &mut dyn FnMut(&[u8]) -> Result<(), CasError>,
) -> Result<Digest, CasError> {
    with_thread_buffer(|buf| {
        let mut hasher = blake3::Hasher::new();
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match src.read(&mut buf[..want]) {
                Ok(0) => break, // shorter than its tree says
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(src_path)(e)),
            };
            hasher.update(&buf[..n]);
            each(&buf[..n])?;
            left -= n as u64;
        }
        Ok(hasher.finalize().into())
    })
}

/// Makes `dest` (empty) hold the `size` bytes of `src`: a reflink, else
/// `copy_file_range`. False if neither worked (then nothing useful is in
/// `dest`).
#[cfg(target_os = "linux")]
fn clone_or_copy(src: &File, dest: &File, size: u64) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: both fds are open for the duration of the calls.
    if unsafe { libc::ioctl(dest.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) } == 0 {
        return true;
    }
    NO_CLONE.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut off_in, mut off_out): (libc::loff_t, libc::loff_t) = (0, 0);
    let mut left = size;
    while left > 0 {
        let chunk = usize::try_from(left).unwrap_or(usize::MAX).min(1 << 30);
        // SAFETY: as above; the offsets outlive the call.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dest.as_raw_fd(),
                &mut off_out,
                chunk,
                0,
            )
        };
        if n <= 0 {
            return false;
        }
        left -= n as u64;
    }
    true
}

#[cfg(not(target_os = "linux"))]
fn clone_or_copy(_: &File, _: &File, _: u64) -> bool {
    NO_CLONE.store(true, std::sync::atomic::Ordering::Relaxed);
    false
}

/// Opens `path` for reading only if it is a regular file (see `put_file`).
fn open_regular(path: &Path) -> Result<File, CasError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(CasError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file (only regular files, directories and symlinks are stored)",
            ),
        });
    }
    Ok(file)
}

/// `read_dir` that treats a missing directory as empty.
fn read_dir_tolerant(
    dir: &Path,
) -> Result<Box<dyn Iterator<Item = io::Result<fs::DirEntry>>>, CasError> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(Box::new(rd)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Box::new(std::iter::empty())),
        Err(e) => Err(io_err(dir)(e)),
    }
}

#[cfg(unix)]
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    let mut perms = file.metadata()?.permissions();
    perms.set_readonly(mode & 0o200 == 0);
    file.set_permissions(perms)
}

#[cfg(test)]
mod tests;
