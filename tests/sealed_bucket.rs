//! `SealedBucket` against real stores: the same cases run against
//!
//! - `fs`: always, in a temp dir;
//! - `s3_garage`: the server at `R2SEAL_TEST_S3_ENDPOINT` (bucket `R2SEAL_TEST_S3_BUCKET`,
//!   `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`), normally Garage from `.ci/services.sh`;
//! - `s3_cond`: the conditional-put cases against `R2SEAL_TEST_S3_COND_ENDPOINT` (moto),
//!   because Garage accepts If-Match / If-None-Match and ignores them.
//!
//! Without a server the S3 variants print a loud SKIPPED line and pass, except with
//! `CI=true`, where a missing server fails them. Every S3 run writes under a fresh prefix,
//! which also makes every object name carry a store prefix (names are full keys).
//!
//! Every store is wrapped in a `Watched` store (tests/support) that logs each call, so the tests can
//! check what went over the wire: ranged reads fetch only covering bytes, copies move no
//! body, refused writes write nothing.
#![cfg(feature = "store")]

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use r2seal::format::header::Header;
use r2seal::format::stream::{payload_len, CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, PAYLOAD_NONCE_SIZE};
use r2seal::format::{Binding, Envelope};
use r2seal::keys::{Identity, SymKey};
use r2seal::sealed::{PutOptions, Recipients, SealedBucket, SealedError};
use r2seal::store::{self, ByteRange, Bytes, CopyOptions};
use r2seal::Error;

use support::{pattern, raw, rt, Call, Harness, Interfere};

const MIB: usize = 1024 * 1024;
/// The smallest part size the stores accept: multipart with as little data as possible.
const PART: u64 = 5 * MIB as u64;

// ---------------------------------------------------------------------------------------
// Harness

impl Harness {
    /// A bucket that seals to and opens with `id`, with the smallest part size.
    fn bucket(&self, id: &Identity) -> SealedBucket {
        SealedBucket::new(self.store())
            .with_recipients(Recipients::fixed(vec![id.to_recipient()]))
            .with_identities(vec![id.clone()])
            .with_part_size(PART)
            .with_multipart_threshold(PART)
    }
}

fn sym() -> Identity {
    Identity::Sym(SymKey::generate())
}

fn open_error(e: &SealedError) -> Option<&Error> {
    match e {
        SealedError::Open { error, .. } => Some(error),
        _ => None,
    }
}

/// Bytes a set of recorded ranged gets asked for (whole-object gets count as `None`).
fn fetched(calls: &[Call]) -> Vec<Option<(u64, u64)>> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Get { range, .. } => Some(match range {
                Some(ByteRange::Inclusive { start, end }) => Some((*start, *end)),
                _ => None,
            }),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Cases

mod cases {
    use super::*;

    pub async fn round_trips(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        for len in [
            0usize,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            3 * MIB,
        ] {
            let data = pattern(len, len as u8);
            let key = format!("rt/{len}.bin");
            let put = b
                .put(&key, data.clone(), &PutOptions::default())
                .await
                .unwrap();
            assert_eq!((put.size, put.parts), (len as u64, 0), "{key}");
            let (head, got) = b.get_bytes(&key).await.unwrap();
            assert_eq!(got.len(), len, "{key}");
            assert!(got[..] == data[..], "{key}: plaintext differs");
            assert_eq!(head.size, len as u64);
            assert_eq!(head.metadata.size, Some(len as u64));
            assert!(head.sealed);
        }
        // Multipart: 11 MiB + 3 → three 5 MiB parts of one payload, from memory ...
        let big = pattern(11 * MIB + 3, 9);
        h.wire.take();
        let put = b
            .put("rt/big.bin", big.clone(), &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(put.parts, 3);
        let parts: Vec<usize> = h
            .wire
            .take()
            .iter()
            .filter_map(|c| match c {
                Call::UploadPart { len } => Some(*len),
                _ => None,
            })
            .collect();
        assert_eq!(parts.len(), 3);
        assert!(parts[..2].iter().all(|&l| l as u64 == PART), "{parts:?}");
        assert_eq!(
            parts.iter().sum::<usize>() as u64,
            put.stored_size,
            "parts are the payload sliced"
        );
        let (head, got) = b.get_bytes("rt/big.bin").await.unwrap();
        assert!(got[..] == big[..], "multipart plaintext differs");
        assert_eq!(head.size, big.len() as u64);
        assert_eq!(head.metadata.size, Some(big.len() as u64));
        assert_eq!(
            head.metadata.md5, None,
            "md5 is unknown before a multipart header"
        );

        // ... from a stream of unknown length (one part of lookahead) ...
        let chunks: Vec<std::io::Result<Bytes>> = big
            .chunks(777_777)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let put = b
            .put_stream(
                "rt/stream.bin",
                futures_util::stream::iter(chunks),
                None,
                &PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!((put.size, put.parts), (big.len() as u64, 3));
        let (head, got) = b.get_bytes("rt/stream.bin").await.unwrap();
        assert!(got[..] == big[..]);
        assert_eq!(
            head.metadata.size, None,
            "size unknown when the header was written"
        );
        assert_eq!(head.size, big.len() as u64, "size from the stored length");

        // ... a small stream of unknown length goes up in one request ...
        let put = b
            .put_reader(
                "rt/small-stream",
                &b"short"[..],
                None,
                &PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!((put.size, put.parts), (5, 0));
        assert_eq!(
            &b.get_bytes("rt/small-stream").await.unwrap().1[..],
            b"short"
        );

        // ... and from a file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, &big[..6 * MIB]).unwrap();
        let put = b
            .put_file("rt/file.bin", &path, &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(put.parts, 2);
        assert!(b.get_bytes("rt/file.bin").await.unwrap().1[..] == big[..6 * MIB]);

        // A length that lies is an error, and nothing is left behind.
        let e = b
            .put_reader("rt/liar", &b"12345"[..], Some(6), &PutOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, SealedError::Io { .. }), "{e}");
        assert!(h.store().head("rt/liar").await.unwrap_err().is_not_found());
    }

    pub async fn ranged_gets(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        let data = pattern(20 * CHUNK_SIZE + 100, 3);
        b.put("r/obj", data.clone(), &PutOptions::default())
            .await
            .unwrap();
        let c = CHUNK_SIZE as u64;
        let enc = ENCRYPTED_CHUNK_SIZE as u64;
        let nonce = PAYLOAD_NONCE_SIZE as u64;
        let cases: Vec<(ByteRange, u64, u64)> = vec![
            (ByteRange::Inclusive { start: 0, end: 0 }, 0, 0),
            (
                ByteRange::Inclusive {
                    start: c - 1,
                    end: c,
                },
                c - 1,
                c,
            ),
            (
                ByteRange::Inclusive {
                    start: 15 * c + 5,
                    end: 15 * c + 9,
                },
                15 * c + 5,
                15 * c + 9,
            ),
            (ByteRange::From(20 * c), 20 * c, 20 * c + 99),
            (ByteRange::Suffix(10), 20 * c + 90, 20 * c + 99),
            (
                ByteRange::Inclusive {
                    start: 19 * c,
                    end: u64::MAX - 1,
                },
                19 * c,
                20 * c + 99,
            ),
        ];
        for (range, start, end) in cases {
            h.wire.take();
            let got = b.get("r/obj", Some(range)).await.unwrap();
            let served = got.range.expect("a ranged get reports its range");
            assert_eq!((served.start, served.end), (start, end), "{range:?}");
            let bytes = got.bytes().await.unwrap();
            assert!(
                bytes[..] == data[start as usize..=end as usize],
                "{range:?}: wrong bytes"
            );
            // Only the covering chunks (and the nonce) were fetched.
            let calls = h.wire.take();
            let gets = fetched(&calls);
            assert!(
                gets.iter().all(Option::is_some),
                "{range:?}: whole-object get: {calls:?}"
            );
            let total: u64 = gets.iter().flatten().map(|(a, b)| b - a + 1).sum();
            let chunks = end / c - start / c + 1;
            let far = (start / c) * enc > 256 * 1024;
            let allowance = if far {
                nonce
            } else {
                (start / c) * enc + nonce
            };
            assert!(
                total <= chunks * enc + allowance,
                "{range:?}: fetched {total} bytes for {chunks} chunks: {gets:?}"
            );
            if far {
                assert_eq!(gets.len(), 2, "nonce and chunks fetched apart: {gets:?}");
                assert!(gets.contains(&Some((0, nonce - 1))), "{gets:?}");
            } else {
                assert_eq!(gets.len(), 1, "nonce coalesced with the chunks: {gets:?}");
            }
        }
        // Past the end: a clear error.
        let e = b
            .get("r/obj", Some(ByteRange::From(data.len() as u64)))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not satisfiable"), "{e}");

        // Across part boundaries of a multipart object (parts are stored-byte slices, so a
        // range there spans a part boundary of the upload).
        let big = pattern(11 * MIB + 7, 5);
        b.put("r/big", big.clone(), &PutOptions::default())
            .await
            .unwrap();
        let boundary = PART - nonce; // first stored byte of part 2, as a STREAM offset
        let plain_at = (boundary / enc) * c + (boundary % enc).min(c);
        for (s, e) in [
            (plain_at - 100, plain_at + 100),
            (2 * plain_at - 3, 2 * plain_at + 70_000),
            (0, big.len() as u64 - 1),
            // Several windows, each after the first starting inside the chunk where the
            // one before ends.
            (12_345, big.len() as u64 - 1),
        ] {
            let got = b
                .get("r/big", Some(ByteRange::Inclusive { start: s, end: e }))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert!(got[..] == big[s as usize..=e as usize], "{s}-{e}");
        }
        // A range of several windows streams from one GET of its stored bytes (the salts
        // are checked, and cached, already)...
        let whole = ByteRange::Inclusive {
            start: 0,
            end: big.len() as u64 - 1,
        };
        h.wire.take();
        let got = b.get("r/big", Some(whole)).await.unwrap();
        assert!(got.bytes().await.unwrap() == big);
        let spans: Vec<(u64, u64)> = fetched(&h.wire.take())
            .into_iter()
            .flatten()
            .filter(|(a, b)| b - a + 1 > nonce)
            .collect();
        assert_eq!(spans.len(), 1, "one GET for the range: {spans:?}");
        // ...and a body cut mid-way (twice) resumes where it stopped, with the right bytes.
        let cut = 4 * MIB as u64 + 5;
        h.wire.interfere(Interfere::CutBodies {
            gets: 2,
            after: cut,
        });
        let got = b.get("r/big", Some(whole)).await.unwrap();
        assert!(got.bytes().await.unwrap() == big);
        let spans: Vec<(u64, u64)> = fetched(&h.wire.take()).into_iter().flatten().collect();
        assert_eq!(spans.len(), 3, "{spans:?}");
        assert_eq!(spans[1].0, spans[0].0 + cut, "{spans:?}");
        assert_eq!(spans[2].0, spans[1].0 + cut, "{spans:?}");
        assert!(spans.iter().all(|s| s.1 == spans[0].1), "{spans:?}");
        // More cuts than a read resumes from: an error, not a short body.
        h.wire.interfere(Interfere::CutBodies {
            gets: 10,
            after: MIB as u64,
        });
        let got = b.get("r/big", Some(whole)).await;
        let failed = match got {
            Err(e) => Some(e),
            Ok(got) => got.bytes().await.err(),
        };
        let e = failed.expect("a read cut more often than it resumes fails");
        assert!(e.is_retryable(), "{e}");
        h.wire.interfere(Interfere::CutBodies { gets: 0, after: 0 });
    }

    pub async fn listing_shows_plaintext_sizes(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        let sizes = [0usize, 10, CHUNK_SIZE, 200_000];
        for (i, n) in sizes.iter().enumerate() {
            b.put(&format!("ls/d/{i}"), pattern(*n, 1), &PutOptions::default())
                .await
                .unwrap();
        }
        b.put("ls/top", pattern(5, 1), &PutOptions::default())
            .await
            .unwrap();
        h.wire.take();
        let all = b.list_all("ls/d/", None).await.unwrap();
        let got: Vec<(String, Option<u64>)> = all
            .objects
            .iter()
            .map(|o| (o.key.clone(), o.size))
            .collect();
        let want: Vec<(String, Option<u64>)> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("ls/d/{i}"), Some(*n as u64)))
            .collect();
        assert_eq!(got, want);
        assert!(all.objects.iter().all(|o| o.stored_size > o.size.unwrap()));
        assert!(
            h.wire.take().iter().all(|c| matches!(c, Call::List)),
            "sizes come from the listing alone"
        );
        // Delimiter and pagination pass through.
        let page = b.list("ls/", Some("/"), None, None).await.unwrap();
        assert_eq!(page.common_prefixes, vec!["ls/d/".to_string()]);
        assert_eq!(page.objects.len(), 1);
        assert_eq!(page.objects[0].size, Some(5));
        let mut token = None;
        let mut seen = 0;
        loop {
            let page = b.list("ls/d/", None, token, Some(2)).await.unwrap();
            seen += page.objects.len();
            match page.next_continuation {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, sizes.len());
    }

    pub async fn raw_objects_are_ciphertext_with_metadata(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        let secret = b"the launch code is 0000 ".repeat(2000);
        let opts = PutOptions {
            content_type: Some("text/plain; charset=utf-8".into()),
            cache_control: Some("private, max-age=60".into()),
            content_encoding: Some("identity".into()),
            content_disposition: Some("attachment; filename=\"codes.txt\"".into()),
            content_language: Some("en".into()),
            metadata: BTreeMap::from([
                ("owner".to_string(), "alice".to_string()),
                ("note".to_string(), "üñí©ødé, any UTF-8".to_string()),
            ]),
            ..Default::default()
        };
        b.put("raw/codes.txt", secret.clone(), &opts).await.unwrap();
        let (info, body) = raw(&*h.store(), "raw/codes.txt").await;
        assert!(
            !body.windows(16).any(|w| w == &secret[..16]),
            "plaintext found in the stored body"
        );
        assert_eq!(
            info.metadata.keys().collect::<Vec<_>>(),
            vec!["r2seal"],
            "only the envelope is stored as metadata"
        );
        assert!(info.metadata["r2seal"].starts_with("age-encryption.org/v1;"));
        assert!(!info.metadata["r2seal"].contains("alice"));
        assert_eq!(
            info.content_type, opts.content_type,
            "Content-Type readable"
        );
        assert_eq!(
            info.cache_control, opts.cache_control,
            "Cache-Control readable"
        );
        assert_eq!(body.len() as u64, info.meta.size);

        let head = b.head("raw/codes.txt").await.unwrap();
        assert_eq!(head.size, secret.len() as u64);
        assert_eq!(head.content_type, opts.content_type);
        assert_eq!(head.metadata.user, opts.metadata);
        assert_eq!(head.metadata.content_encoding.as_deref(), Some("identity"));
        assert_eq!(head.metadata.content_disposition, opts.content_disposition);
        assert_eq!(head.metadata.content_language.as_deref(), Some("en"));
        let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(&secret));
        assert_eq!(head.metadata.md5.as_deref(), Some(md5.as_str()));

        // JSON helpers.
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Session {
            id: String,
            turns: Vec<String>,
        }
        let s = Session {
            id: "s1".into(),
            turns: vec!["hi".into(), "hello".into()],
        };
        b.put_json("raw/session.json", &s, &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(b.get_json::<Session>("raw/session.json").await.unwrap(), s);
        assert_eq!(
            b.head("raw/session.json")
                .await
                .unwrap()
                .content_type
                .as_deref(),
            Some("application/json")
        );
        let e = b.get_json::<Vec<u8>>("raw/session.json").await.unwrap_err();
        assert!(matches!(e, SealedError::Json { .. }), "{e}");
        // The error says what and where, never the value it found (serde's would).
        let token = serde_json::json!({ "token": "xoxb-SECRET-TOKEN" });
        b.put_json("raw/token.json", &token, &PutOptions::default())
            .await
            .unwrap();
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Numeric {
            token: u64,
        }
        let e = b.get_json::<Numeric>("raw/token.json").await.unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("JSON of another shape at line 1"), "{shown}");
        assert!(!shown.contains("SECRET"), "{shown}");
        b.put(
            "raw/token.txt",
            &b"xoxb-SECRET-TOKEN"[..],
            &PutOptions::default(),
        )
        .await
        .unwrap();
        let e = b.get_json::<Numeric>("raw/token.txt").await.unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("not JSON at line 1, column 1"), "{shown}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    pub async fn name_binding(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        b.put("nb/a", pattern(1000, 1), &PutOptions::default())
            .await
            .unwrap();
        // Another tool copies the object, metadata and all, to another key.
        h.store()
            .copy("nb/a", "nb/b", &CopyOptions::default())
            .await
            .unwrap();
        for e in [
            b.get("nb/b", None).await.unwrap_err(),
            b.head("nb/b").await.unwrap_err(),
        ] {
            assert_eq!(open_error(&e), Some(&Error::WrongName), "{e}");
            assert!(e.to_string().contains("nb/b"), "{e}");
        }
        // With a different name prefix (another bucket view) the same key does not open.
        let shifted = b.clone().with_name_prefix("elsewhere/");
        let e = shifted.get("nb/a", None).await.unwrap_err();
        assert_eq!(open_error(&e), Some(&Error::WrongName), "{e}");
    }

    pub async fn tampering_is_detected(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        let data = pattern(3 * CHUNK_SIZE + 10, 4);
        b.put("t/a", data.clone(), &PutOptions::default())
            .await
            .unwrap();
        let (info, body) = raw(&*h.store(), "t/a").await;
        let raw_opts = store::PutOptions {
            metadata: info.metadata.clone(),
            ..Default::default()
        };
        let mut flipped = body.clone();
        flipped[2 * ENCRYPTED_CHUNK_SIZE + 100] ^= 1;
        h.store()
            .put("t/a", flipped.into(), &raw_opts)
            .await
            .unwrap();
        let e = b.get_bytes("t/a").await.unwrap_err();
        assert_eq!(open_error(&e), Some(&Error::Corrupt), "{e}");
        // A ranged read of an untouched chunk still works; of the tampered one, fails.
        let ok = b
            .get("t/a", Some(ByteRange::Inclusive { start: 0, end: 9 }))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&ok[..], &data[..10]);
        // The first window opens before the get answers: its corruption is the get's error.
        let e = b
            .get(
                "t/a",
                Some(ByteRange::Inclusive {
                    start: 2 * CHUNK_SIZE as u64,
                    end: 2 * CHUNK_SIZE as u64,
                }),
            )
            .await
            .unwrap_err();
        assert_eq!(open_error(&e), Some(&Error::Corrupt), "{e}");
        // Truncated at a chunk boundary.
        let cut = PAYLOAD_NONCE_SIZE + 2 * ENCRYPTED_CHUNK_SIZE;
        h.store()
            .put("t/a", Bytes::copy_from_slice(&body[..cut]), &raw_opts)
            .await
            .unwrap();
        let e = b.get_bytes("t/a").await.unwrap_err();
        assert_eq!(open_error(&e), Some(&Error::Corrupt), "{e}");
        // Bodies of several open batches (about 1 MiB each, opened on a blocking thread
        // while the next downloads): a flip in the first, a middle or the last batch, and
        // a cut between batches, all fail the whole read.
        let big = pattern(40 * CHUNK_SIZE + 7, 5);
        b.put("t/big", big.clone(), &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(b.get_bytes("t/big").await.unwrap().1, big);
        let (big_info, big_body) = raw(&*h.store(), "t/big").await;
        let big_opts = store::PutOptions {
            metadata: big_info.metadata.clone(),
            ..Default::default()
        };
        for chunk in [1, 20, 40] {
            let mut flipped = big_body.clone();
            flipped[PAYLOAD_NONCE_SIZE + chunk * ENCRYPTED_CHUNK_SIZE + 3] ^= 1;
            h.store()
                .put("t/big", flipped.into(), &big_opts)
                .await
                .unwrap();
            let e = b.get_bytes("t/big").await.unwrap_err();
            assert_eq!(open_error(&e), Some(&Error::Corrupt), "chunk {chunk}: {e}");
        }
        let cut = PAYLOAD_NONCE_SIZE + 32 * ENCRYPTED_CHUNK_SIZE;
        h.store()
            .put("t/big", Bytes::copy_from_slice(&big_body[..cut]), &big_opts)
            .await
            .unwrap();
        let e = b.get_bytes("t/big").await.unwrap_err();
        assert_eq!(open_error(&e), Some(&Error::Corrupt), "{e}");
        // A tampered envelope.
        let mut md = info.metadata.clone();
        let v = md.get_mut("r2seal").unwrap();
        let flip = v.len() - 5;
        let ch = if &v[flip..flip + 1] == "A" { "B" } else { "A" };
        v.replace_range(flip..flip + 1, ch);
        let opts = store::PutOptions {
            metadata: md,
            ..Default::default()
        };
        h.store().put("t/a", body.into(), &opts).await.unwrap();
        let e = b.get_bytes("t/a").await.unwrap_err();
        assert!(
            matches!(open_error(&e), Some(Error::Corrupt | Error::Malformed(_))),
            "{e}"
        );
    }

    pub async fn wrong_keys_fail(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        b.put("k/a", pattern(100, 1), &PutOptions::default())
            .await
            .unwrap();
        let other = h.bucket(&Identity::generate_x25519());
        let e = other.get("k/a", None).await.unwrap_err();
        assert_eq!(open_error(&e), Some(&Error::NoMatchingIdentity), "{e}");
        let e = other.head("k/a").await.unwrap_err();
        assert_eq!(open_error(&e), Some(&Error::NoMatchingIdentity), "{e}");
        // X25519 recipients round-trip too, and the sym key cannot open those.
        let x = Identity::generate_x25519();
        let bx = h.bucket(&x);
        bx.put("k/x", pattern(100, 2), &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(
            &bx.get_bytes("k/x").await.unwrap().1[..],
            &pattern(100, 2)[..]
        );
        let e = b.get("k/x", None).await.unwrap_err();
        assert_eq!(open_error(&e), Some(&Error::NoMatchingIdentity), "{e}");
        // Writing without recipients is refused before any write.
        h.wire.take();
        let ro = SealedBucket::new(h.store()).with_identities(vec![id]);
        let e = ro
            .put("k/ro", vec![1u8], &PutOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, SealedError::Seal { .. }), "{e}");
        assert!(!h.wire.take().iter().any(Call::is_write));
    }

    /// A bucket remembers the file keys it sealed or opened (SECURITY.md §3.2), and they
    /// open objects only for the identities that could have unwrapped them.
    pub async fn remembered_keys_open_only_for_their_identities(h: &Harness) {
        let cached = |b: &SealedBucket| {
            let shown = format!("{b:?}");
            let n = shown.split("cached_file_keys: ").nth(1).unwrap();
            n[..n.find(|c: char| !c.is_ascii_digit()).unwrap()]
                .parse::<usize>()
                .unwrap()
        };
        let (x, y) = (Identity::generate_x25519(), Identity::generate_x25519());
        let b = h.bucket(&x);
        b.put("c/a", pattern(100, 1), &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(cached(&b), 1, "remembered at seal time");
        let clone = b.clone();
        assert_eq!(clone.head("c/a").await.unwrap().size, 100);
        assert_eq!(cached(&b), 1, "a hit, shared by clones");
        // Other identities on a clone: a new cache, the old keys open nothing.
        let e = b
            .clone()
            .with_identities(vec![y.clone()])
            .head("c/a")
            .await
            .unwrap_err();
        assert_eq!(open_error(&e), Some(&Error::NoMatchingIdentity), "{e}");
        // Sealed to someone else, or write-only: nothing remembered, nothing opens.
        let to_x = || Recipients::fixed(vec![x.to_recipient()]);
        for (name, other) in [
            ("c/w", SealedBucket::new(h.store()).with_recipients(to_x())),
            (
                "c/y",
                SealedBucket::new(h.store())
                    .with_recipients(to_x())
                    .with_identities(vec![y.clone()]),
            ),
        ] {
            other
                .put(name, pattern(10, 2), &PutOptions::default())
                .await
                .unwrap();
            assert_eq!(cached(&other), 0, "{name}");
            let e = other.get_bytes(name).await.unwrap_err();
            assert_eq!(
                open_error(&e),
                Some(&Error::NoMatchingIdentity),
                "{name}: {e}"
            );
            assert_eq!(&b.get_bytes(name).await.unwrap().1[..], &pattern(10, 2)[..]);
        }
        assert_eq!(cached(&b), 3, "opened with x, then remembered");
    }

    pub async fn plaintext_objects(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        let plain = pattern(70_000, 8);
        h.store()
            .put(
                "p/plain",
                plain.clone().into(),
                &store::PutOptions::default(),
            )
            .await
            .unwrap();
        let e = b.get("p/plain", None).await.unwrap_err();
        assert!(e.is_plaintext(), "{e}");
        assert!(e.to_string().contains("plaintext object"), "{e}");
        assert!(b.head("p/plain").await.unwrap_err().is_plaintext());
        let lax = b.clone().allow_plaintext(true);
        let (head, got) = lax.get_bytes("p/plain").await.unwrap();
        assert!(!head.sealed, "flagged as plaintext");
        assert!(got[..] == plain[..]);
        assert_eq!(head.size, plain.len() as u64);
        let got = lax
            .get("p/plain", Some(ByteRange::Inclusive { start: 10, end: 19 }))
            .await
            .unwrap();
        assert!(!got.head.sealed);
        assert_eq!(&got.bytes().await.unwrap()[..], &plain[10..20]);
        // Sealed objects still open (and authenticate) with the flag on.
        lax.put("p/sealed", pattern(10, 1), &PutOptions::default())
            .await
            .unwrap();
        assert!(lax.get_bytes("p/sealed").await.unwrap().0.sealed);
    }

    pub async fn copy_and_rename_rebind_without_the_body(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        let data = pattern(300_000, 6);
        let opts = PutOptions {
            content_type: Some("application/x-test".into()),
            metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
            ..Default::default()
        };
        b.put("c/src", data.clone(), &opts).await.unwrap();
        h.wire.take();
        let put = b.copy("c/src", "c/dst").await.unwrap();
        assert_eq!(put.size, data.len() as u64);
        let calls = h.wire.take();
        assert!(
            calls
                .iter()
                .all(|c| matches!(c, Call::Head { .. } | Call::Copy { .. })),
            "a copy moves no body through the client: {calls:?}"
        );
        let (_, src_body) = raw(&*h.store(), "c/src").await;
        let (dst_info, dst_body) = raw(&*h.store(), "c/dst").await;
        assert!(src_body == dst_body, "same ciphertext: not re-sealed");
        assert_eq!(dst_info.content_type.as_deref(), Some("application/x-test"));
        let (head, got) = b.get_bytes("c/dst").await.unwrap();
        assert!(got[..] == data[..]);
        assert_eq!(
            head.metadata.user, opts.metadata,
            "sealed metadata carried over"
        );
        assert!(b.get_bytes("c/src").await.is_ok(), "source untouched");

        // Rename: re-bound to the new name, the old one gone.
        b.rename("c/dst", "c/moved").await.unwrap();
        assert!(b.get_bytes("c/moved").await.unwrap().1[..] == data[..]);
        assert!(b.get("c/dst", None).await.unwrap_err().is_not_found());
        // Copy re-wraps to the destination's recipients.
        let y = sym();
        let b2 = SealedBucket::new(h.store())
            .with_recipients(Recipients::fixed(vec![y.to_recipient()]))
            .with_identities(vec![id.clone()]);
        b2.copy("c/src", "c/for-y").await.unwrap();
        let e = b.get("c/for-y", None).await.unwrap_err();
        assert_eq!(open_error(&e), Some(&Error::NoMatchingIdentity), "{e}");
        assert!(h.bucket(&y).get_bytes("c/for-y").await.unwrap().1[..] == data[..]);
        // A copy of a missing object is a store error that says so.
        assert!(b.copy("c/none", "c/x").await.unwrap_err().is_not_found());
    }

    /// The gateway's multipart uploads: parts sealed one by one, out of order, one sent
    /// twice; the final header installed after completion.
    pub async fn parts_uploads_in_any_order(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        let part = PART as usize;
        let data = pattern(2 * part + 777, 11);
        let chunks: Vec<&[u8]> = data.chunks(part).collect();
        let opts = PutOptions {
            content_type: Some("application/x-parts".into()),
            metadata: BTreeMap::from([("mtime".to_string(), "1700000000".to_string())]),
            ..Default::default()
        };
        let up = b.create_parts_upload("mp/obj", &opts).await.unwrap();
        // Until completed, nothing is readable; even with plaintext allowed.
        let p3 = b.upload_sealed_part(&up, 3, chunks[2]).await.unwrap();
        let p1 = b.upload_sealed_part(&up, 1, chunks[0]).await.unwrap();
        let p2_first = b.upload_sealed_part(&up, 2, chunks[1]).await.unwrap();
        let p2 = b.upload_sealed_part(&up, 2, chunks[1]).await.unwrap();
        assert_ne!(p2_first.salt, p2.salt, "a re-sent part gets a fresh salt");
        let extra = BTreeMap::from([("r2seal-etag".to_string(), "abc-3".to_string())]);
        let put = b
            .complete_parts_upload(&up, &[p1.clone(), p2.clone(), p3.clone()], extra)
            .await
            .unwrap();
        assert_eq!((put.size, put.parts), (data.len() as u64, 3));
        let (info, stored) = raw(&*h.store(), "mp/obj").await;
        assert!(info.metadata.contains_key("r2seal"));
        assert!(!info.metadata.contains_key(r2seal::sealed::PENDING_KEY));
        assert_eq!(info.content_type.as_deref(), Some("application/x-parts"));
        assert!(!stored.windows(64).any(|w| w == &data[1000..1064]));
        let (head, got) = b.get_bytes("mp/obj").await.unwrap();
        assert!(got[..] == data[..]);
        assert_eq!(head.size, data.len() as u64);
        assert_eq!(head.metadata.user["mtime"], "1700000000");
        assert_eq!(head.metadata.user["r2seal-etag"], "abc-3");
        // Ranged reads across a part boundary: the final header carries the part salts
        // (SECURITY.md §3.6), so the first ranged read is one GET, with no 16-byte GET per
        // part to check them.
        let start = part as u64 - 100;
        let across = ByteRange::Inclusive {
            start,
            end: start + 199,
        };
        h.wire.take();
        let got = b.get("mp/obj", Some(across)).await.unwrap();
        assert_eq!(
            &got.bytes().await.unwrap()[..],
            &data[part - 100..part + 100]
        );
        let gets = fetched(&h.wire.take());
        assert_eq!(gets.len(), 1, "one GET for the range: {gets:?}");
        assert!(
            gets.iter()
                .flatten()
                .all(|(a, b)| b - a + 1 != PAYLOAD_NONCE_SIZE as u64),
            "no salt GETs: {gets:?}"
        );

        // The same object with a header that does not carry the salts (as one of more
        // than 128 parts, or written before the stanza): its first ranged read fetches
        // and checks each part's salt.
        let header = Header::from_metadata_value(&info.metadata["r2seal"]).unwrap();
        let name = b.name_of("mp/obj");
        let opened = Envelope::open(&header, std::slice::from_ref(&id), Some(&name)).unwrap();
        assert_eq!(opened.part_salts().map(<[_]>::len), Some(3));
        let old = opened
            .rewrap(
                &[id.to_recipient()],
                Binding {
                    name: Some(b.name_of("mp/old")),
                    metadata: opened.metadata().cloned(),
                    parts: opened.parts().copied(),
                    part_salts: None,
                },
            )
            .unwrap();
        let planted = store::PutOptions {
            metadata: BTreeMap::from([(
                "r2seal".to_string(),
                old.header().to_metadata_value().unwrap(),
            )]),
            ..Default::default()
        };
        h.store()
            .put("mp/old", Bytes::from(stored.clone()), &planted)
            .await
            .unwrap();
        h.wire.take();
        let got = b.get("mp/old", Some(across)).await.unwrap();
        assert_eq!(
            &got.bytes().await.unwrap()[..],
            &data[part - 100..part + 100]
        );
        let gets = fetched(&h.wire.take());
        let salt_gets = gets
            .iter()
            .flatten()
            .filter(|(a, b)| b - a + 1 == PAYLOAD_NONCE_SIZE as u64)
            .count();
        assert_eq!((gets.len(), salt_gets), (4, 3), "{gets:?}");
        // A copy re-binds the header to its new name and keeps the salts in it.
        b.copy("mp/obj", "mp/copy").await.unwrap();
        h.wire.take();
        let got = b.get("mp/copy", Some(across)).await.unwrap();
        assert_eq!(
            &got.bytes().await.unwrap()[..],
            &data[part - 100..part + 100]
        );
        let gets = fetched(&h.wire.take());
        assert_eq!(gets.len(), 1, "one GET for the copy's range: {gets:?}");

        // A header committing to the first attempt of part 2 over a body holding the
        // second: full and ranged reads both refuse it (SECURITY.md §9's former gap).
        let up = b.create_parts_upload("mp/swapped", &opts).await.unwrap();
        let q1 = b.upload_sealed_part(&up, 1, chunks[0]).await.unwrap();
        let q2a = b.upload_sealed_part(&up, 2, chunks[1]).await.unwrap();
        let q2b = b.upload_sealed_part(&up, 2, chunks[1]).await.unwrap();
        let q3 = b.upload_sealed_part(&up, 3, chunks[2]).await.unwrap();
        let forged = r2seal::sealed::SealedPart {
            etag: q2b.etag.clone(),
            ..q2a
        };
        b.complete_parts_upload(&up, &[q1, forged, q3], BTreeMap::new())
            .await
            .unwrap();
        let e = b.get_bytes("mp/swapped").await.unwrap_err();
        assert_eq!(open_error(&e), Some(&Error::Corrupt), "{e}");
        let e = match b
            .get(
                "mp/swapped",
                Some(ByteRange::Inclusive {
                    start: part as u64 + 10,
                    end: part as u64 + 20,
                }),
            )
            .await
        {
            Err(e) => e,
            Ok(got) => got.bytes().await.unwrap_err(),
        };
        assert_eq!(open_error(&e), Some(&Error::Corrupt), "{e}");

        // Parts that cannot form a layout are refused before anything completes.
        let up = b.create_parts_upload("mp/bad", &opts).await.unwrap();
        let r1 = b.upload_sealed_part(&up, 1, chunks[2]).await.unwrap(); // short first
        let r2 = b.upload_sealed_part(&up, 2, chunks[0]).await.unwrap();
        let e = b
            .complete_parts_upload(&up, &[r1, r2], BTreeMap::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("same size"), "{e}");
        b.abort_parts_upload(&up).await.unwrap();
        assert!(b.head("mp/bad").await.unwrap_err().is_not_found());

        // An upload completed without its header (a crash between the two steps) never
        // reads as plaintext.
        let pending = store::PutOptions {
            metadata: BTreeMap::from([(r2seal::sealed::PENDING_KEY.to_string(), "1".into())]),
            ..Default::default()
        };
        h.store()
            .put("mp/pending", Bytes::from_static(b"ciphertext"), &pending)
            .await
            .unwrap();
        let lax = b.clone().allow_plaintext(true);
        let e = lax.get_bytes("mp/pending").await.unwrap_err();
        assert!(e.to_string().contains("unfinished"), "{e}");
    }

    /// The gateway's streamed parts: sealed as they arrive, each the bytes the in-memory
    /// path stores; a stream that fails, even after its last byte, completes no part.
    pub async fn streamed_parts(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        let part = PART as usize;
        let data = pattern(part + 3 * CHUNK_SIZE + 5, 21);
        let (first, last) = data.split_at(part);
        let pieces = |bytes: &[u8], size: usize, end: Option<&'static str>| {
            let mut items: Vec<std::io::Result<Bytes>> = bytes
                .chunks(size)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            if let Some(why) = end {
                items.push(Err(std::io::Error::other(why)));
            }
            futures_util::stream::iter(items)
        };
        let up = b
            .create_parts_upload("mps/obj", &PutOptions::default())
            .await
            .unwrap();
        h.wire.reset();
        let p1 = b
            .upload_sealed_part_stream(&up, 1, first.len() as u64, pieces(first, 10_000, None))
            .await
            .unwrap();
        let sealed_len = |n: usize| payload_len(n as u64);
        assert_eq!(
            h.wire.take(),
            [Call::UploadPart {
                len: sealed_len(first.len()) as usize
            }]
        );
        assert_eq!(h.wire.body_bytes(), sealed_len(first.len()));
        assert_eq!((p1.part_number, p1.size), (1, first.len() as u64));
        let p2 = b
            .upload_sealed_part_stream(&up, 2, last.len() as u64, pieces(last, 333, None))
            .await
            .unwrap();

        // A checksum found wrong after the last byte: the store never got the final
        // chunk (here: 5 bytes and their tag), and the error is the stream's own.
        h.wire.reset();
        let e = b
            .upload_sealed_part_stream(
                &up,
                2,
                last.len() as u64,
                pieces(last, 4096, Some("digest mismatch by the test")),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, SealedError::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("digest mismatch by the test"), "{e}");
        assert_eq!(
            h.wire.body_bytes(),
            sealed_len(last.len()) - (5 + 16) as u64,
            "only the final chunk is withheld"
        );
        // Too short, too long.
        for (declared, sent) in [(last.len() + 1, last), (last.len() - 1, last)] {
            let e = b
                .upload_sealed_part_stream(&up, 2, declared as u64, pieces(sent, 1000, None))
                .await
                .unwrap_err();
            assert!(matches!(e, SealedError::Io { .. }), "{declared}: {e:?}");
        }
        // fs keeps part 2 as it was; Garage wants it again (store_conformance says why).
        let p2 = if h.is_s3() {
            b.upload_sealed_part_stream(&up, 2, last.len() as u64, pieces(last, 65_536, None))
                .await
                .unwrap()
        } else {
            p2
        };
        b.complete_parts_upload(&up, &[p1, p2], BTreeMap::new())
            .await
            .unwrap();
        let (head, got) = b.get_bytes("mps/obj").await.unwrap();
        assert_eq!(head.size, data.len() as u64);
        assert!(got[..] == data[..], "the object's bytes differ");
    }

    /// rclone's mtime update: metadata replaced by a self-copy, the body untouched.
    pub async fn metadata_replacing_self_copy(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        let data = pattern(1000, 3);
        let opts = PutOptions {
            metadata: BTreeMap::from([("mtime".to_string(), "1".to_string())]),
            ..Default::default()
        };
        let put = b.put("m/obj", data.clone(), &opts).await.unwrap();
        let (_, before) = raw(&*h.store(), "m/obj").await;
        let md5 = b.head("m/obj").await.unwrap().metadata.md5;
        let replace = PutOptions {
            content_type: Some("text/plain".into()),
            metadata: BTreeMap::from([("mtime".to_string(), "2".to_string())]),
            ..Default::default()
        };
        // A stale source ETag is refused and changes nothing.
        let stale = r2seal::sealed::CopyRequest {
            source_etag: Some("\"0000\"".into()),
            replace: Some(replace.clone()),
            set_md5: None,
        };
        let e = b.copy_with("m/obj", "m/obj", &stale).await.unwrap_err();
        assert!(e.is_precondition_failed(), "{e}");
        let req = r2seal::sealed::CopyRequest {
            source_etag: Some(put.etag.clone()),
            replace: Some(replace),
            set_md5: None,
        };
        b.copy_with("m/obj", "m/obj", &req).await.unwrap();
        let (info, after) = raw(&*h.store(), "m/obj").await;
        assert!(before == after, "the body is not re-sealed");
        assert_eq!(info.content_type.as_deref(), Some("text/plain"));
        let (head, got) = b.get_bytes("m/obj").await.unwrap();
        assert!(got[..] == data[..]);
        assert_eq!(head.metadata.user["mtime"], "2");
        assert_eq!(head.metadata.md5, md5, "the plaintext MD5 survives");
        // set_md5 records an MD5 on an object that had none.
        let req = r2seal::sealed::CopyRequest {
            set_md5: Some("feed".into()),
            ..Default::default()
        };
        b.copy_with("m/obj", "m/obj", &req).await.unwrap();
        assert_eq!(
            b.head("m/obj").await.unwrap().metadata.md5.as_deref(),
            Some("feed")
        );
    }

    pub async fn failures_write_nothing(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        b.put("f/keep", b"original".to_vec(), &PutOptions::default())
            .await
            .unwrap();
        // Oversized sealed metadata: refused before any write, small or multipart-sized.
        let huge = PutOptions {
            metadata: BTreeMap::from([("blob".to_string(), "x".repeat(9000))]),
            ..Default::default()
        };
        h.wire.take();
        for len in [10usize, 6 * MIB] {
            let e = b.put("f/keep", pattern(len, 1), &huge).await.unwrap_err();
            assert!(
                matches!(e.format_error(), Some(Error::HeaderTooLarge { .. })),
                "{e}"
            );
            assert!(e.to_string().contains("nothing was written"), "{e}");
        }
        let calls = h.wire.take();
        assert!(!calls.iter().any(Call::is_write), "{calls:?}");
        // The budget is the store's: 1,500 bytes of metadata fit R2's 8 KiB, not AWS's 2 KB.
        let mid = PutOptions {
            metadata: BTreeMap::from([("blob".to_string(), "x".repeat(1500))]),
            ..Default::default()
        };
        h.wire.limit_metadata(Some(2048));
        for len in [10usize, 6 * MIB] {
            let e = b.put("f/keep", pattern(len, 1), &mid).await.unwrap_err();
            assert!(
                matches!(
                    e.format_error(),
                    Some(Error::HeaderTooLarge { limit: 2048, .. })
                ),
                "{e}"
            );
        }
        let calls = h.wire.take();
        assert!(!calls.iter().any(Call::is_write), "{calls:?}");
        h.wire.limit_metadata(None);
        b.put("f/mid", b"fits".to_vec(), &mid).await.unwrap();
        b.delete("f/mid").await.unwrap();
        h.wire.take();
        // A source that fails mid-way through a multipart upload: aborted, old object kept.
        let mut chunks: Vec<std::io::Result<Bytes>> =
            (0..7).map(|i| Ok(Bytes::from(pattern(MIB, i)))).collect();
        chunks.push(Err(std::io::Error::other("disk on fire")));
        let e = b
            .put_stream(
                "f/keep",
                futures_util::stream::iter(chunks),
                None,
                &PutOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("disk on fire"), "{e}");
        let calls = h.wire.take();
        assert!(calls.contains(&Call::Abort), "{calls:?}");
        assert!(!calls.contains(&Call::Complete), "{calls:?}");
        assert_eq!(&b.get_bytes("f/keep").await.unwrap().1[..], b"original");
        assert!(h
            .store()
            .list_multipart_uploads("f/")
            .await
            .unwrap()
            .is_empty());
        // Conditional multipart: refused before any write.
        let e = b
            .put("f/keep", pattern(6 * MIB, 2), &PutOptions::create_only())
            .await
            .unwrap_err();
        assert!(matches!(e, SealedError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("multipart"), "{e}");
        assert!(!h.wire.take().iter().any(Call::is_write));
        let e = b
            .put_reader(
                "f/keep",
                &pattern(6 * MIB, 2)[..],
                None,
                &PutOptions {
                    if_match: Some("\"abc\"".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, SealedError::Invalid { .. }), "{e}");
        assert!(!h.wire.take().iter().any(Call::is_write));
        assert_eq!(&b.get_bytes("f/keep").await.unwrap().1[..], b"original");
    }

    /// Objects of known length above a part and up to the multipart threshold: one
    /// streamed PutObject, and a source that fails or comes out the wrong length leaves
    /// the key as it was.
    pub async fn streamed_single_puts(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id).with_multipart_threshold(4 * PART);
        let len = 2 * PART as usize + 12_345;
        let body = Bytes::from(pattern(len, 7));
        // Odd piece sizes: the sealer's chunks do not line up with them.
        let pieces = |body: &Bytes| -> Vec<std::io::Result<Bytes>> {
            (0..body.len())
                .step_by(300_001)
                .map(|at| Ok(body.slice(at..(at + 300_001).min(body.len()))))
                .collect()
        };
        h.wire.take();
        let put = b
            .put_stream(
                "s/one",
                futures_util::stream::iter(pieces(&body)),
                Some(len as u64),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!((put.parts, put.size), (0, len as u64));
        assert_eq!(put.stored_size, payload_len(len as u64));
        assert_eq!(
            put.md5, None,
            "a streamed put does not know the MD5 up front"
        );
        let calls = h.wire.take();
        let writes: Vec<_> = calls.iter().filter(|c| c.is_write()).collect();
        assert_eq!(
            writes,
            [&Call::Put {
                key: "s/one".into(),
                len: payload_len(len as u64) as usize
            }],
            "{calls:?}"
        );
        assert!(b.get_bytes("s/one").await.unwrap().1 == body);
        let range = ByteRange::Inclusive {
            start: CHUNK_SIZE as u64 - 10,
            end: 3 * CHUNK_SIZE as u64 + 10,
        };
        let got = b
            .get("s/one", Some(range))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(got[..] == body[CHUNK_SIZE - 10..=3 * CHUNK_SIZE + 10]);
        // From a reader, too; above the threshold it goes multipart.
        b.put_reader("s/two", &body[..], Some(len as u64), &PutOptions::default())
            .await
            .unwrap();
        assert!(!h
            .wire
            .take()
            .iter()
            .any(|c| matches!(c, Call::CreateMultipart { .. })));
        let big = pattern(4 * PART as usize + 1, 8);
        let put = b
            .put("s/big", big.clone(), &PutOptions::default())
            .await
            .unwrap();
        assert!(put.parts > 1, "{put:?}");
        assert!(b.get_bytes("s/big").await.unwrap().1 == big);

        // Failed sources over an existing object and onto a new key: nothing written.
        let mut failing = pieces(&body);
        failing.truncate(20);
        failing.push(Err(std::io::Error::other("disk on fire")));
        let short = pieces(&body.slice(..len - 1));
        let long = pieces(&Bytes::from(pattern(len + 1, 7)));
        for (what, source) in [("fails", failing), ("short", short), ("long", long)] {
            for key in ["s/one", "s/new"] {
                let e = b
                    .put_stream(
                        key,
                        futures_util::stream::iter(source.iter().map(|r| match r {
                            Ok(b) => Ok(b.clone()),
                            Err(e) => Err(std::io::Error::other(e.to_string())),
                        })),
                        Some(len as u64),
                        &PutOptions::default(),
                    )
                    .await
                    .unwrap_err();
                assert!(matches!(e, SealedError::Io { .. }), "{what}: {e}");
                if what == "fails" {
                    assert!(e.to_string().contains("disk on fire"), "{e}");
                } else {
                    assert!(e.to_string().contains("changed size"), "{what}: {e}");
                }
            }
        }
        assert!(
            b.get_bytes("s/one").await.unwrap().1 == body,
            "a failed put replaced it"
        );
        assert!(b.head("s/new").await.unwrap_err().is_not_found());
    }

    /// A streamed single put carries its conditions to the server.
    pub async fn conditional_streamed_puts(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id).with_multipart_threshold(4 * PART);
        let (v1, v2) = (
            pattern(PART as usize + 1, 9),
            pattern(PART as usize + 2, 10),
        );
        let first = b
            .put("cs/a", v1.clone(), &PutOptions::create_only())
            .await
            .unwrap();
        assert_eq!(first.parts, 0);
        let e = b
            .put("cs/a", v2.clone(), &PutOptions::create_only())
            .await
            .unwrap_err();
        assert!(e.is_precondition_failed(), "{e}");
        let stale = PutOptions {
            if_match: Some("\"0123456789abcdef0123456789abcdef\"".into()),
            ..Default::default()
        };
        let e = b.put("cs/a", v2.clone(), &stale).await.unwrap_err();
        assert!(e.is_precondition_failed(), "{e}");
        assert!(b.get_bytes("cs/a").await.unwrap().1 == v1);
        let current = PutOptions {
            if_match: Some(first.etag),
            ..Default::default()
        };
        b.put("cs/a", v2.clone(), &current).await.unwrap();
        assert!(b.get_bytes("cs/a").await.unwrap().1 == v2);
    }

    pub async fn cleanup_aborts_stale_uploads(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        // What a crash leaves: a created upload with a part, never completed.
        let s = h.store();
        let upload = s
            .create_multipart("cl/crashed", &store::PutOptions::default())
            .await
            .unwrap();
        s.upload_part("cl/crashed", &upload, 1, Bytes::from(vec![0u8; 1000]))
            .await
            .unwrap();
        let fresh = b
            .stale_uploads("cl/", Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(fresh.is_empty(), "a young upload is not stale: {fresh:?}");
        let aborted = b.cleanup("cl/", Duration::ZERO).await.unwrap();
        assert_eq!(aborted.len(), 1);
        assert_eq!(aborted[0].key, "cl/crashed");
        assert_eq!(aborted[0].upload_id, upload);
        assert!(s.list_multipart_uploads("cl/").await.unwrap().is_empty());
        assert!(b.cleanup("cl/", Duration::ZERO).await.unwrap().is_empty());
    }

    /// The next multipart write of a key aborts that key's uploads a crash left behind
    /// (older than the stale age), and leaves young ones (a concurrent writer's) alone.
    pub async fn rewrite_aborts_stale_uploads_of_its_key(h: &Harness) {
        let id = sym();
        let s = h.store();
        s.create_multipart("re/obj", &store::PutOptions::default())
            .await
            .unwrap();
        let other = s
            .create_multipart("re/obj2", &store::PutOptions::default())
            .await
            .unwrap();
        let big = pattern(PART as usize + 1000, 9);
        // Default age (a day): the young upload is not aborted by the write. (Garage
        // itself drops other uploads of a key when one completes, so count our aborts.)
        h.wire.take();
        h.bucket(&id)
            .put("re/obj", big.clone(), &PutOptions::default())
            .await
            .unwrap();
        assert!(
            !h.wire.take().contains(&Call::Abort),
            "a young upload was aborted"
        );
        // As if a day had passed: the next write of re/obj aborts it, not re/obj2's.
        let crashed = s
            .create_multipart("re/obj", &store::PutOptions::default())
            .await
            .unwrap();
        let b = h.bucket(&id).with_stale_upload_age(Duration::ZERO);
        b.put("re/obj", big.clone(), &PutOptions::default())
            .await
            .unwrap();
        assert!(h.wire.take().contains(&Call::Abort));
        let left = s.list_multipart_uploads("re/").await.unwrap();
        assert!(left.iter().all(|u| u.upload_id != crashed), "{left:?}");
        assert!(left.iter().any(|u| u.upload_id == other), "{left:?}");
        assert_eq!(&b.get_bytes("re/obj").await.unwrap().1[..], &big[..]);
        s.abort_multipart("re/obj2", &other).await.unwrap();
    }

    pub async fn conditional_puts(h: &Harness) {
        let id = sym();
        let b = h.bucket(&id);
        let first = b
            .put("cond/a", b"v1".to_vec(), &PutOptions::create_only())
            .await
            .unwrap();
        let e = b
            .put("cond/a", b"v2".to_vec(), &PutOptions::create_only())
            .await
            .unwrap_err();
        assert!(e.is_precondition_failed(), "{e}");
        assert!(e.to_string().contains("precondition failed"), "{e}");
        assert!(e.to_string().contains("nothing was written"), "{e}");
        assert_eq!(&b.get_bytes("cond/a").await.unwrap().1[..], b"v1");
        let stale = PutOptions {
            if_match: Some("\"0123456789abcdef0123456789abcdef\"".into()),
            ..Default::default()
        };
        let e = b.put("cond/a", b"v3".to_vec(), &stale).await.unwrap_err();
        assert!(e.is_precondition_failed(), "{e}");
        assert_eq!(&b.get_bytes("cond/a").await.unwrap().1[..], b"v1");
        let current = PutOptions {
            if_match: Some(first.etag.clone()),
            ..Default::default()
        };
        b.put("cond/a", b"v4".to_vec(), &current).await.unwrap();
        assert_eq!(&b.get_bytes("cond/a").await.unwrap().1[..], b"v4");
    }
}

// ---------------------------------------------------------------------------------------
// Backends

#[cfg(feature = "s3")]
mod s3_env {
    use super::*;
    use support::Server;

    pub async fn garage(case: &str) -> Option<Harness> {
        Harness::s3(Server::Garage, "r2seal-sealed", case).await
    }

    pub async fn cond(case: &str) -> Option<Harness> {
        Harness::s3(Server::Cond, "r2seal-sealed", case).await
    }
}

suite!(
    fs,
    Harness::fs,
    [
        round_trips,
        ranged_gets,
        listing_shows_plaintext_sizes,
        raw_objects_are_ciphertext_with_metadata,
        name_binding,
        tampering_is_detected,
        wrong_keys_fail,
        remembered_keys_open_only_for_their_identities,
        plaintext_objects,
        copy_and_rename_rebind_without_the_body,
        parts_uploads_in_any_order,
        streamed_parts,
        metadata_replacing_self_copy,
        failures_write_nothing,
        cleanup_aborts_stale_uploads,
        rewrite_aborts_stale_uploads_of_its_key,
        conditional_puts,
        streamed_single_puts,
        conditional_streamed_puts,
    ]
);

#[cfg(feature = "s3")]
suite!(
    s3_garage,
    s3_env::garage,
    [
        round_trips,
        ranged_gets,
        listing_shows_plaintext_sizes,
        raw_objects_are_ciphertext_with_metadata,
        name_binding,
        tampering_is_detected,
        wrong_keys_fail,
        remembered_keys_open_only_for_their_identities,
        plaintext_objects,
        copy_and_rename_rebind_without_the_body,
        parts_uploads_in_any_order,
        streamed_parts,
        metadata_replacing_self_copy,
        failures_write_nothing,
        cleanup_aborts_stale_uploads,
        rewrite_aborts_stale_uploads_of_its_key,
        streamed_single_puts,
    ]
);

#[cfg(feature = "s3")]
suite!(
    s3_cond,
    s3_env::cond,
    [conditional_puts, conditional_streamed_puts]
);

/// Servers configured but the backend not compiled in would silently test nothing.
#[cfg(not(feature = "s3"))]
#[test]
fn s3_servers_configured_but_s3_feature_off() {
    if std::env::var_os("R2SEAL_TEST_S3_ENDPOINT").is_some() {
        panic!("R2SEAL_TEST_S3_ENDPOINT is set but this build lacks --features s3");
    }
}
