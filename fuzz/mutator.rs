//! A small, dependency-free mutation fuzzer shared by the stable fuzz
//! harnesses (`ipc/tests/fuzz.rs`, `schema/tests/fuzz.rs`). cargo-fuzz needs
//! a nightly toolchain; this runs on stable, inside `cargo test`.
//!
//! Each harness: seeds from `fuzz/corpus/<name>/`, mutated by [`Mutator`],
//! run until `VBUILD_FUZZ_SECS` (default 3) have passed. A panic fails the
//! test (the input is written to `target/fuzz-failures/`), a case running
//! longer than [`CASE_LIMIT`] aborts the process, and [`Counting`] (the
//! harness's global allocator) refuses any allocation past [`MEMORY_LIMIT`],
//! which aborts too: a panic, a hang and runaway allocation all fail.
#![allow(dead_code)] // each harness uses a different subset

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Longest a single case may run.
pub const CASE_LIMIT: Duration = Duration::from_secs(10);
/// Bytes live at once that the harness tolerates.
pub const MEMORY_LIMIT: usize = 1 << 30;

/// Counts live bytes and the peak; refuses to go past [`MEMORY_LIMIT`].
pub struct Counting;

pub static LIVE: AtomicUsize = AtomicUsize::new(0);
pub static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        if now > MEMORY_LIMIT {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            return std::ptr::null_mut(); // handle_alloc_error: abort
        }
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// xorshift64*: deterministic from the seed, so a failure can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Byte-level mutations plus splicing and dictionary tokens.
pub struct Mutator {
    pub rng: Rng,
    pub dict: Vec<Vec<u8>>,
}

impl Mutator {
    pub fn new(seed: u64, dict: &[&[u8]]) -> Mutator {
        Mutator {
            rng: Rng::new(seed),
            dict: dict.iter().map(|d| d.to_vec()).collect(),
        }
    }

    /// A mutated copy of `input`; `other` is spliced in sometimes.
    pub fn mutate(&mut self, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        let rounds = 1 + self.rng.below(6);
        for _ in 0..rounds {
            let len = out.len();
            match self.rng.below(10) {
                0 if len > 0 => {
                    let i = self.rng.below(len);
                    out[i] ^= 1 << self.rng.below(8);
                }
                1 if len > 0 => {
                    let i = self.rng.below(len);
                    out[i] = self.rng.next() as u8;
                }
                2 => {
                    let i = self.rng.below(len + 1);
                    let n = 1 + self.rng.below(16);
                    let bytes: Vec<u8> = (0..n).map(|_| self.rng.next() as u8).collect();
                    out.splice(i..i, bytes);
                }
                3 if len > 0 => {
                    let i = self.rng.below(len);
                    let n = 1 + self.rng.below((len - i).min(64));
                    out.drain(i..i + n);
                }
                4 if len > 0 => {
                    // Repeat a slice: long runs, deep nesting.
                    let i = self.rng.below(len);
                    let n = 1 + self.rng.below((len - i).min(32));
                    let piece = out[i..i + n].to_vec();
                    let most = if self.rng.chance(8) { 4000 } else { 8 };
                    let times = 1 + self.rng.below(most);
                    let at = self.rng.below(out.len() + 1);
                    let rep: Vec<u8> = piece.iter().cycle().take(n * times).copied().collect();
                    out.splice(at..at, rep);
                }
                5 if !other.is_empty() => {
                    let i = self.rng.below(other.len());
                    let n = 1 + self.rng.below(other.len() - i);
                    let at = self.rng.below(len + 1);
                    out.splice(at..at, other[i..i + n].iter().copied());
                }
                6 | 7 if !self.dict.is_empty() => {
                    let token = self.dict[self.rng.below(self.dict.len())].clone();
                    let at = self.rng.below(len + 1);
                    out.splice(at..at, token);
                }
                8 if len > 0 => {
                    let cut = self.rng.below(len);
                    out.truncate(cut);
                }
                _ => {}
            }
        }
        out
    }
}

/// The seed files of `fuzz/corpus/<name>/`, sorted.
pub fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = repo().join("fuzz/corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// How long to fuzz: `VBUILD_FUZZ_SECS`, default 3 (the CI run sets 60).
pub fn budget() -> Duration {
    let secs = std::env::var("VBUILD_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    Duration::from_secs(secs)
}

/// Number of cases to stop after, if `VBUILD_FUZZ_CASES` is set.
pub fn case_limit() -> Option<u64> {
    std::env::var("VBUILD_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
}

/// The seed of this run: `VBUILD_FUZZ_SEED`, else from the clock (printed).
pub fn seed() -> u64 {
    std::env::var("VBUILD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// Runs `case` over mutated inputs until the budget is spent; returns
/// (cases, peak live bytes). Panics (after saving the input) on a panic.
pub fn run(
    name: &'static str,
    seeds: &[Vec<u8>],
    dict: &[&[u8]],
    mut generate: impl FnMut(&mut Rng) -> Option<Vec<u8>>,
    mut case: impl FnMut(&[u8]),
) -> (u64, usize) {
    let seed = seed();
    eprintln!(
        "{name}: seed {seed} (VBUILD_FUZZ_SEED={seed} replays), {} seeds",
        seeds.len()
    );
    let mut m = Mutator::new(seed, dict);
    let failures = repo().join("target/fuzz-failures");
    let _ = std::fs::create_dir_all(&failures);
    let current = failures.join(format!("{name}-current"));
    let epoch = Instant::now();
    let started = std::sync::Arc::new(AtomicU64::new(0));
    {
        let started = started.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let at = started.load(Ordering::Relaxed);
            if at != 0 {
                let running = epoch.elapsed().saturating_sub(Duration::from_nanos(at));
                if running > CASE_LIMIT {
                    eprintln!(
                        "{name}: a case ran for {running:?}: a hang; its input is {}",
                        current_name(name)
                    );
                    std::process::abort();
                }
            }
        });
    }
    let deadline = epoch + budget();
    let limit = case_limit();
    let mut cases = 0u64;
    // Every seed once as is, then mutations (and generated cases).
    let mut pool: Vec<Vec<u8>> = seeds.to_vec();
    while (limit.is_none() && Instant::now() < deadline) || limit.is_some_and(|l| cases < l) {
        let input = if (cases as usize) < seeds.len() {
            seeds[cases as usize].clone()
        } else if let Some(g) = m.rng.chance(3).then(|| generate(&mut m.rng)).flatten() {
            g
        } else {
            let a = m.rng.below(pool.len());
            let b = m.rng.below(pool.len());
            m.mutate(&pool[a], &pool[b])
        };
        let _ = std::fs::write(&current, &input);
        started.store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&input)));
        started.store(0, Ordering::Relaxed);
        if outcome.is_err() {
            let saved = failures.join(format!("{name}-panic-{seed}-{cases}"));
            let _ = std::fs::write(&saved, &input);
            panic!(
                "{name}: case {cases} panicked; input saved to {}",
                saved.display()
            );
        }
        // Keep a few interesting (small) inputs around to mutate further.
        if input.len() < 4096 && m.rng.chance(16) && pool.len() < 512 {
            pool.push(input);
        }
        cases += 1;
    }
    let _ = std::fs::remove_file(&current);
    let peak = PEAK.load(Ordering::Relaxed);
    eprintln!(
        "{name}: {cases} cases in {:?}, no panic or hang; peak live heap {} MiB",
        epoch.elapsed(),
        peak >> 20
    );
    (cases, peak)
}

fn current_name(name: &str) -> String {
    format!("target/fuzz-failures/{name}-current")
}
