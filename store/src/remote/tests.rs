use super::*;

#[test]
fn wire_digest_parsing_is_strict() {
    let d = WireDigest::of_bytes(DigestFn::Sha256, b"abc");
    assert_eq!(
        d.hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(WireDigest::from_proto(&d.to_proto()), Ok(d));
    let upper = reapi::Digest {
        hash: d.hex().to_uppercase(),
        size_bytes: 3,
    };
    assert!(WireDigest::from_proto(&upper).is_err());
    let short = reapi::Digest {
        hash: "abc".into(),
        size_bytes: 3,
    };
    assert!(WireDigest::from_proto(&short).is_err());
    let negative = reapi::Digest {
        hash: d.hex(),
        size_bytes: -1,
    };
    assert!(WireDigest::from_proto(&negative).is_err());
    assert!(WireDigest::of_bytes(DigestFn::Sha256, b"").is_empty_blob(DigestFn::Sha256));
}

#[test]
fn secrets_do_not_print() {
    let auth = Auth {
        kind: AuthKind::Basic,
        secret: Secret::new("user:hunter2".into()),
        source: "env X".into(),
    };
    assert!(!format!("{auth:?}").contains("hunter2"));
    assert_eq!(
        auth.header(),
        ("authorization".into(), "Basic dXNlcjpodW50ZXIy".into())
    );
    let bearer = Auth {
        kind: AuthKind::Bearer,
        secret: Secret::new("tok\n".into()),
        source: "file x".into(),
    };
    assert_eq!(bearer.header().1, "Bearer tok");
}

#[test]
fn sha256_mapping_is_recorded_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let blob = store.cas.put_bytes(b"hello").unwrap();
    let wire = wire_digest_of(&store, DigestFn::Sha256, &blob).unwrap();
    assert_eq!(wire, WireDigest::of_bytes(DigestFn::Sha256, b"hello"));
    assert_eq!(
        store.action_cache.sha256_of(&blob).unwrap(),
        Some((wire.hash, 5))
    );
    assert_eq!(local_blob_of(&store, DigestFn::Sha256, &wire), Some(blob));
    let b3 = wire_digest_of(&store, DigestFn::Blake3, &blob).unwrap();
    assert_eq!((b3.hash, b3.size), (blob.0, 5));
}

/// A fake remote holding blobs in memory, for `download`.
struct Fake(std::collections::HashMap<[u8; 32], Vec<u8>>);

impl RemoteCache for Fake {
    fn endpoint(&self) -> &str {
        "fake://"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Http
    }
    fn digest_fn(&self) -> DigestFn {
        DigestFn::Sha256
    }
    fn server_info(&self) -> RemoteResult<ServerInfo> {
        Ok(ServerInfo::default())
    }
    fn get_action_result(
        &self,
        _: &WireDigest,
        _: u64,
    ) -> RemoteResult<Option<reapi::ActionResult>> {
        Ok(None)
    }
    fn update_action_result(&self, _: &WireDigest, _: &reapi::ActionResult) -> RemoteResult<()> {
        Ok(())
    }
    fn find_missing(&self, b: &[WireDigest]) -> RemoteResult<Vec<WireDigest>> {
        Ok(b.to_vec())
    }
    fn read_blob(&self, d: &WireDigest, sink: &mut dyn BlobSink) -> RemoteResult<bool> {
        match self.0.get(&d.hash) {
            Some(bytes) => {
                for chunk in bytes.chunks(2) {
                    sink.accept(chunk).map_err(RemoteError::Rejected)?;
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }
    fn write_blob(&self, _: &WireDigest, _: super::BlobSource<'_>) -> RemoteResult<()> {
        Ok(())
    }
}

#[test]
fn download_verifies_before_anything_enters_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let good = WireDigest::of_bytes(DigestFn::Sha256, b"good bytes");
    let lying = WireDigest::of_bytes(DigestFn::Sha256, b"expected!!");
    let longer = WireDigest::of_bytes(DigestFn::Sha256, b"short");
    let remote = Fake(
        [
            (good.hash, b"good bytes".to_vec()),
            (lying.hash, b"tampered!!".to_vec()),
            (longer.hash, b"much longer than five".to_vec()),
        ]
        .into(),
    );
    let err = |d: &WireDigest, max| match download(&store, &remote, d, max) {
        Err(RemoteError::Rejected(e)) => e,
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("accepted {d:?}"),
    };
    assert!(
        err(&lying, 100).contains("do not match"),
        "{}",
        err(&lying, 100)
    );
    assert!(err(&longer, 100).contains("more than the 5 bytes"));
    assert!(err(&good, 3).contains("over the limit"));
    let missing = WireDigest::of_bytes(DigestFn::Sha256, b"nope");
    assert!(err(&missing, 100).contains("missing on the server"));
    assert_eq!(store.cas.stats().unwrap().0, 0, "nothing entered the store");
    // A verified download that is dropped leaves nothing either.
    drop(download(&store, &remote, &good, 100).unwrap());
    assert_eq!(store.cas.stats().unwrap().0, 0);
    let pending = download(&store, &remote, &good, 100).unwrap();
    let blake3 = pending.commit(&store).unwrap();
    assert_eq!(store.cas.read_verified(&blake3).unwrap(), b"good bytes");
    assert_eq!(local_blob_of(&store, DigestFn::Sha256, &good), Some(blake3));
    // The empty blob needs no server.
    let empty = WireDigest::of_bytes(DigestFn::Sha256, b"");
    let e = download(&store, &remote, &empty, 100)
        .unwrap()
        .commit(&store)
        .unwrap();
    assert_eq!(e, Digest::of_bytes(b""));
}
