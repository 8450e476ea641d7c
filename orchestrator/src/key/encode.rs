//! The key encoding: a small tagged, length-prefixed binary format written
//! by hand, so that no serde shape, `Debug` output or type of another crate
//! can change a key by accident. Every value starts with a one-byte tag:
//!
//! | tag | value | payload |
//! | --- | --- | --- |
//! | `s` | string | length as u64 LE, then the UTF-8 bytes |
//! | `u` | integer | u64 LE |
//! | `b` | bool | one byte, 0 or 1 |
//! | `l` | list | count as u64 LE, then the items |
//! | `m` | map | count as u64 LE, then key (a string) and value, keys sorted |
//! | `d` | digest | 32 bytes |
//! | `-` | absent | nothing (an optional field left out) |
//! | `#` | field | field number as one byte, then its value |
//!
//! A struct is its fields in field-number order. Adding a field means a new
//! number and a `KEY_VERSION` bump; a number is never reused.
use vbuild_store::Digest;

/// Where encoded bytes go: a buffer, hashed whole by [`hash_encoded`].
pub(super) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// BLAKE3 of what `encode` writes. The bytes go into a per-thread buffer
/// and are hashed in one call: a strong key is ~500 pieces of a few bytes
/// each, and one `Hasher::update` per piece (bookkeeping per call, no
/// SIMD across chunks) was most of the cost of keying an action. Same
/// bytes, same hash: no `KEY_VERSION` change.
pub(super) fn hash_encoded(encode: impl FnOnce(&mut Vec<u8>)) -> [u8; 32] {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        encode(&mut buf);
        let hash = blake3::hash(&buf);
        // Keep a usual key's buffer, not a giant one's.
        if buf.capacity() > 1 << 20 {
            *buf = Vec::new();
        }
        hash.into()
    })
}

pub(super) struct Enc<'s, S: Sink> {
    pub(super) out: &'s mut S,
}

impl<S: Sink> Enc<'_, S> {
    pub(super) fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.put(bytes);
        self
    }

    fn len(&mut self, n: usize) -> &mut Self {
        self.raw(&(n as u64).to_le_bytes())
    }

    pub(super) fn field(&mut self, number: u8) -> &mut Self {
        self.raw(&[b'#', number])
    }

    pub(super) fn str(&mut self, s: &str) -> &mut Self {
        self.raw(b"s").len(s.len()).raw(s.as_bytes())
    }

    pub(super) fn u64(&mut self, n: u64) -> &mut Self {
        self.raw(b"u").raw(&n.to_le_bytes())
    }

    pub(super) fn bool(&mut self, b: bool) -> &mut Self {
        self.raw(&[b'b', b as u8])
    }

    pub(super) fn digest(&mut self, d: &Digest) -> &mut Self {
        self.raw(b"d").raw(d.as_bytes())
    }

    pub(super) fn absent(&mut self) -> &mut Self {
        self.raw(b"-")
    }

    /// A list header; the caller writes exactly `n` items after it.
    pub(super) fn list(&mut self, n: usize) -> &mut Self {
        self.raw(b"l").len(n)
    }

    pub(super) fn strs<'a>(
        &mut self,
        items: impl ExactSizeIterator<Item = &'a String>,
    ) -> &mut Self {
        self.list(items.len());
        for s in items {
            self.str(s);
        }
        self
    }

    /// A map header; the caller writes exactly `n` (key, value) pairs after
    /// it, keys sorted (callers pass `BTreeMap`s).
    pub(super) fn map(&mut self, n: usize) -> &mut Self {
        self.raw(b"m").len(n)
    }

    pub(super) fn str_map<'a>(
        &mut self,
        items: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
    ) -> &mut Self {
        self.map(items.len());
        for (k, v) in items {
            self.str(k).str(v);
        }
        self
    }
}
