//! Capturing stdout and stderr with their relative order
//! ([`crate::RunSpec::order`]). The action writes into two pipes; a thread
//! of vbuild copies each to its file and notes the order the bytes arrived
//! in: one record per run of bytes from one stream, `[stream: u8]` (1 or 2)
//! then `[length: u64 LE]`. Bytes that arrive at the same instant on both
//! pipes cannot be told apart; they are taken stdout first.
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

const CHUNK: usize = 64 * 1024;
/// How often the copier looks whether the action has ended.
const POLL_MS: i32 = 50;

pub(crate) struct Copier {
    done: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<()>>,
}

impl Copier {
    /// Starts copying `out` and `err` (pipe read ends) into the files.
    pub(crate) fn start(
        out: OwnedFd,
        err: OwnedFd,
        files: [File; 2],
        order: File,
    ) -> io::Result<Copier> {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::Builder::new()
            .name("vbuild-streams".into())
            .spawn(move || copy(&[out, err], files, order, &flag))?;
        Ok(Copier { done, thread })
    }

    /// The action's processes are all gone: take what is left in the pipes
    /// and stop (a copy of a write end another thread's fork still holds for
    /// a moment must not keep us waiting for an end of file).
    pub(crate) fn finish(self) -> io::Result<()> {
        self.done.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the output copier panicked")))
    }
}

fn copy(
    pipes: &[OwnedFd; 2],
    mut files: [File; 2],
    order: File,
    done: &AtomicBool,
) -> io::Result<()> {
    let mut order = io::BufWriter::new(order);
    let mut open = [true, true];
    let mut last: Option<(u8, u64)> = None;
    let mut buf = vec![0u8; CHUNK];
    let mut draining = false;
    while open.iter().any(|o| *o) {
        if !draining && done.load(Ordering::SeqCst) {
            // Everything the action wrote is in the pipes now.
            for (p, o) in pipes.iter().zip(open) {
                if o {
                    unsafe { libc::fcntl(p.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
                }
            }
            draining = true;
        }
        let mut polls: Vec<libc::pollfd> = pipes
            .iter()
            .map(|p| libc::pollfd {
                fd: p.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        for (pfd, o) in polls.iter_mut().zip(open) {
            if !o {
                pfd.fd = -1; // ignored by poll
            }
        }
        let timeout = if draining { 0 } else { POLL_MS };
        let n = unsafe { libc::poll(polls.as_mut_ptr(), 2, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            if draining {
                break; // nothing more will come
            }
            continue;
        }
        for i in 0..2 {
            if !open[i] || polls[i].revents == 0 {
                continue;
            }
            let got =
                unsafe { libc::read(pipes[i].as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if got < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        open[i] = false;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            if got == 0 {
                open[i] = false;
                continue;
            }
            let got = got as usize;
            files[i].write_all(&buf[..got])?;
            let stream = i as u8 + 1;
            last = match last {
                Some((s, len)) if s == stream => Some((s, len + got as u64)),
                Some(prev) => {
                    write_record(&mut order, prev)?;
                    Some((stream, got as u64))
                }
                None => Some((stream, got as u64)),
            };
        }
    }
    if let Some(rec) = last {
        write_record(&mut order, rec)?;
    }
    order.flush()
}

fn write_record(out: &mut impl Write, (stream, len): (u8, u64)) -> io::Result<()> {
    out.write_all(&[stream])?;
    out.write_all(&len.to_le_bytes())
}

/// Parses an order file: (stream 1 = stdout or 2 = stderr, length) runs.
pub fn parse_order(bytes: &[u8]) -> Option<Vec<(u8, u64)>> {
    if !bytes.len().is_multiple_of(9) {
        return None;
    }
    bytes
        .chunks_exact(9)
        .map(|rec| {
            let stream = rec[0];
            let len = u64::from_le_bytes(rec[1..9].try_into().ok()?);
            matches!(stream, 1 | 2).then_some((stream, len))
        })
        .collect()
}
