//! How a key description is kept in `explanations.doc`: a tag byte, then
//! the description deflated (raw DEFLATE, fast level) or, when that is not
//! smaller, as is. The descriptions are JSON listing every input with its
//! hex digest (a few KiB per action, up to MiBs for large packages) and
//! deflate to about a third: most then fit in one database page with room
//! for others, instead of spilling into overflow pages, which is what the
//! write-ahead log and its checkpoints copy. They are read only to explain
//! a miss, so inflating costs nothing on a hit. The digest stored with an
//! entry is the description's own, checked after unpacking.

const RAW: u8 = 0;
const DEFLATE: u8 = 1;
/// Deflate level: level 1 already gets most of the gain on hex digests.
const LEVEL: u8 = 1;
/// Largest description inflated (a damaged or hostile row cannot make a
/// reader allocate more).
const MAX_DOC: usize = 1 << 30;

pub(super) fn pack(doc: &[u8]) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(doc, LEVEL);
    let (tag, body) = if deflated.len() < doc.len() {
        (DEFLATE, &deflated[..])
    } else {
        (RAW, doc)
    };
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(tag);
    out.extend_from_slice(body);
    out
}

pub(super) fn unpack(stored: &[u8]) -> Result<Vec<u8>, String> {
    match stored.split_first() {
        Some((&RAW, body)) => Ok(body.to_vec()),
        Some((&DEFLATE, body)) => miniz_oxide::inflate::decompress_to_vec_with_limit(body, MAX_DOC)
            .map_err(|e| format!("its key description does not inflate ({e})")),
        Some((tag, _)) => Err(format!("its key description has unknown encoding {tag}")),
        None => Err("its key description is empty".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_shrinks_digest_lists() {
        let doc: String = (0..100)
            .map(|i| {
                format!(
                    r#""p/f{i}.js":{{"kind":"file","digest":"{}","size":{i},"executable":false}},"#,
                    blake3::hash(&[i as u8]).to_hex()
                )
            })
            .collect();
        let packed = pack(doc.as_bytes());
        assert_eq!(packed[0], DEFLATE);
        assert!(
            packed.len() * 2 < doc.len(),
            "{} of {}",
            packed.len(),
            doc.len()
        );
        assert_eq!(unpack(&packed).unwrap(), doc.as_bytes());
        // Too short to gain: kept as is.
        assert_eq!(pack(b"{}"), b"\0{}");
        assert_eq!(unpack(b"\0{}").unwrap(), b"{}");
        for bad in [&b""[..], b"\x07{}", b"\x01not deflate"] {
            assert!(unpack(bad).is_err(), "{bad:?}");
        }
    }
}
