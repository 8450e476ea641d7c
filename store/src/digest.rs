//! `Digest`: BLAKE3 of a blob's bytes.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// 32-byte BLAKE3 digest. Displays and serializes as 64 lowercase hex chars.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        blake3::hash(bytes).into()
    }
    /// The digest of a file's bytes, without storing it.
    pub fn of_file(path: &std::path::Path) -> std::io::Result<Digest> {
        let mut hasher = blake3::Hasher::new();
        std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
        Ok(hasher.finalize().into())
    }
    pub fn to_hex(&self) -> String {
        let buf = self.hex_bytes();
        // Only ASCII hex digits were written.
        String::from_utf8(buf.to_vec()).expect("hex is ASCII")
    }

    /// The 64 lowercase hex digits, without allocating.
    pub fn hex_bytes(&self) -> [u8; 64] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 0xf) as usize];
        }
        out
    }

    /// The digest of zero bytes (an empty stdout, for instance).
    pub fn empty() -> Digest {
        static EMPTY: std::sync::OnceLock<Digest> = std::sync::OnceLock::new();
        *EMPTY.get_or_init(|| Digest::of_bytes(b""))
    }
    /// Parses 64 hex chars; `None` on anything else.
    pub fn from_hex(s: &str) -> Option<Digest> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Digest(out))
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Parses a 32-byte slice (e.g. a BLOB column); `None` on any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Digest> {
        bytes.try_into().ok().map(Digest)
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Digest {
        Digest(*h.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    /// Short form: 12 hex chars are plenty to tell digests apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({}…)", &self.to_hex()[..12])
    }
}

/// Declares a key type: a BLAKE3 digest that is not a blob's name, so a
/// weak key, a strong key and a blob digest can never be mixed up.
macro_rules! key_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Digest);

        impl $name {
            pub fn as_bytes(&self) -> &[u8; 32] {
                self.0.as_bytes()
            }
            pub fn to_hex(&self) -> String {
                self.0.to_hex()
            }
            /// Parses a 32-byte slice (a BLOB column); `None` on any other length.
            pub fn from_slice(bytes: &[u8]) -> Option<$name> {
                Digest::from_slice(bytes).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({}…)", stringify!($name), &self.0.to_hex()[..12])
            }
        }
    };
}

key_type!(
    /// The weak key of an action: everything static (command, env, declared
    /// input paths, platform). Narrowing records are stored under it.
    WeakKey
);
key_type!(
    /// The strong key of an action: its weak key narrowed by one record,
    /// with the digests of the inputs that count. Entries are stored under it.
    StrongKey
);

/// Error from parsing a digest from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a digest (expected 64 hex characters): {0:?}")]
pub struct ParseDigestError(pub String);

impl FromStr for Digest {
    type Err = ParseDigestError;
    fn from_str(s: &str) -> Result<Digest, ParseDigestError> {
        Digest::from_hex(s).ok_or_else(|| ParseDigestError(s.to_string()))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        struct HexVisitor;
        impl serde::de::Visitor<'_> for HexVisitor {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 64-character hex BLAKE3 digest")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Digest, E> {
                Digest::from_hex(s)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(s), &self))
            }
        }
        // A visitor rather than `String::deserialize` so borrowed and buffered
        // (e.g. `#[serde(flatten)]`) inputs both work without an extra copy.
        deserializer.deserialize_str(HexVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_formats() {
        let d = Digest::of_bytes(b"hello");
        let hex = d.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_eq!(d.to_string(), hex);
        assert_eq!(format!("{d:?}"), format!("Digest({}…)", &hex[..12]));
        assert_eq!(Digest::from_hex(&hex), Some(d));
        assert_eq!(hex.parse::<Digest>(), Ok(d));
        assert_eq!(hex, blake3::hash(b"hello").to_hex().as_str());
    }

    #[test]
    fn from_hex_rejects_bad_input() {
        let good = Digest::of_bytes(b"x").to_hex();
        assert_eq!(Digest::from_hex(&good[..63]), None);
        assert_eq!(Digest::from_hex(&format!("{good}0")), None);
        assert_eq!(Digest::from_hex(&format!("{}zz", &good[..62])), None);
        assert_eq!(Digest::from_hex(""), None);
        // Multi-byte chars must not panic on slicing.
        assert_eq!(Digest::from_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn serde_as_hex_string() {
        let d = Digest::of_bytes(b"serde");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", d.to_hex()));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"abc\"").is_err());
        assert!(serde_json::from_str::<Digest>("42").is_err());
        let bad = format!("\"{}\"", "g".repeat(64));
        assert!(serde_json::from_str::<Digest>(&bad).is_err());
    }
}
