//! Encrypted object names (SECURITY.md §3.10) and the bucket descriptor (§3.11) through
//! `SealedBucket`, against file:// always and Garage when `R2SEAL_TEST_S3_ENDPOINT` is
//! set (`source .ci/services.sh`). Without a server the Garage variants print a loud
//! SKIPPED line and pass, except with `CI=true`, where they fail.
#![cfg(feature = "store")]

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use r2seal::descriptor::{Authenticity, Descriptor, DESCRIPTOR_KEY};
use r2seal::keys::{Identity, SymKey};
use r2seal::names::NameKey;
use r2seal::sealed::{PutOptions, Recipients, SealedBucket, SealedError};
use r2seal::store::{self, CopyOptions, Store};
use r2seal::Error;
use support::{rt, Call, Watched};

struct Harness {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    fn bucket(&self, id: &SymKey) -> SealedBucket {
        SealedBucket::new(self.store.clone())
            .with_recipients(Recipients::fixed(vec![
                Identity::Sym(id.clone()).to_recipient()
            ]))
            .with_identities(vec![Identity::Sym(id.clone())])
            .with_part_size(store::MIN_PART_SIZE)
            .with_multipart_threshold(store::MIN_PART_SIZE)
    }

    fn named(&self, id: &SymKey) -> SealedBucket {
        self.bucket(id).with_name_key(NameKey::from_sym_key(id))
    }

    /// Every stored key, raw.
    async fn raw_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = self.store.list("", None, token, None).await.unwrap();
            keys.extend(page.objects.into_iter().map(|o| o.key));
            match page.next_continuation {
                Some(t) => token = Some(t),
                None => return keys,
            }
        }
    }

    async fn cleanup(&self) {
        if self._dir.is_none() {
            support::clear(&*self.store).await;
        }
    }
}

fn is_base32_path(stored: &str) -> bool {
    stored
        .split('/')
        .all(|s| s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')))
}

mod cases {
    use super::*;

    pub async fn names_round_trip_and_stay_hidden(h: &Harness) {
        let k = SymKey::generate();
        let b = h.named(&k);
        let keys = [
            "sessions/2026-11-25/agent.jsonl",
            "sessions/2026-11-25/other.jsonl",
            "credentials/telegram.json",
            "notes/über ✓.md",
            "top",
        ];
        for (i, key) in keys.iter().enumerate() {
            b.put(
                key,
                format!("body {i}").into_bytes(),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        }
        let raw = h.raw_keys().await;
        assert_eq!(raw.len(), keys.len());
        for stored in &raw {
            assert!(is_base32_path(stored), "{stored}");
            for word in ["sessions", "2026", "agent", "credentials", "notes", "top"] {
                assert!(!stored.contains(word), "{stored} leaks {word}");
            }
        }
        for (i, key) in keys.iter().enumerate() {
            let (head, body) = b.get_bytes(key).await.unwrap();
            assert_eq!(&body[..], format!("body {i}").as_bytes());
            assert_eq!(head.key, *key);
            assert_eq!(b.head(key).await.unwrap().size, body.len() as u64);
            assert!(raw.contains(&b.stored_key(key).unwrap()));
            assert_eq!(b.plain_key(&b.stored_key(key).unwrap()).unwrap(), *key);
        }
        // Listings decrypt.
        let all = b.list_all("", None).await.unwrap();
        let mut listed: Vec<&str> = all.objects.iter().map(|o| o.key.as_str()).collect();
        listed.sort();
        let mut want = keys.to_vec();
        want.sort();
        assert_eq!(listed, want);
        assert!(all.undecryptable.is_empty());
        // At a segment boundary, with and without a delimiter.
        let s = b.list_all("sessions/2026-11-25/", None).await.unwrap();
        assert_eq!(s.objects.len(), 2);
        let top = b.list_all("", Some("/")).await.unwrap();
        let mut prefixes = top.common_prefixes.clone();
        prefixes.sort();
        assert_eq!(prefixes, ["credentials/", "notes/", "sessions/"]);
        assert_eq!(top.objects.len(), 1);
        assert_eq!(top.objects[0].key, "top");
        // Inside a segment: the parent is listed and filtered.
        let part = b.list_all("sessions/2026-11-25/ag", None).await.unwrap();
        assert_eq!(part.objects.len(), 1);
        assert_eq!(part.objects[0].key, "sessions/2026-11-25/agent.jsonl");
        let part = b.list_all("cred", Some("/")).await.unwrap();
        assert_eq!(part.common_prefixes, ["credentials/"]);
        assert!(part.objects.is_empty());
        // Only "/" is a delimiter with encrypted names.
        assert!(b.list("", Some("-"), None, None).await.is_err());
    }

    pub async fn copy_rename_delete_map_names(h: &Harness) {
        let k = SymKey::generate();
        let b = h.named(&k);
        b.put("a/src.txt", b"payload".to_vec(), &PutOptions::default())
            .await
            .unwrap();
        b.copy("a/src.txt", "b/copy.txt").await.unwrap();
        b.rename("a/src.txt", "c/moved.txt").await.unwrap();
        assert!(b.head("a/src.txt").await.unwrap_err().is_not_found());
        assert_eq!(&b.get_bytes("b/copy.txt").await.unwrap().1[..], b"payload");
        assert_eq!(&b.get_bytes("c/moved.txt").await.unwrap().1[..], b"payload");
        b.delete("b/copy.txt").await.unwrap();
        let left: Vec<String> = b
            .list_all("", None)
            .await
            .unwrap()
            .objects
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(left, ["c/moved.txt"]);
        // Ranged reads go to the stored key too.
        let body = (0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>();
        b.put("r/big", body.clone(), &PutOptions::default())
            .await
            .unwrap();
        let got = b
            .get(
                "r/big",
                Some(store::ByteRange::Inclusive {
                    start: 70_000,
                    end: 70_099,
                }),
            )
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got[..], &body[70_000..70_100]);
    }

    pub async fn multipart_uses_the_stored_key(h: &Harness) {
        let k = SymKey::generate();
        let b = h.named(&k);
        let body: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i * 7) as u8).collect();
        let put = b
            .put("big/one.bin", body.clone(), &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(put.parts, 2);
        assert_eq!(h.raw_keys().await, [b.stored_key("big/one.bin").unwrap()]);
        assert_eq!(&b.get_bytes("big/one.bin").await.unwrap().1[..], &body[..]);
    }

    pub async fn names_stay_bound_and_leftovers_are_reported(h: &Harness) {
        let k = SymKey::generate();
        let named = h.named(&k);
        let plain = h.bucket(&k).allow_plaintext(true);
        // A sealed object under its plaintext name (before a migration) ...
        plain
            .put("old/a.json", b"{}".to_vec(), &PutOptions::default())
            .await
            .unwrap();
        // ... and a plaintext object: both are leftovers to the named bucket's listing.
        h.store
            .put("leftover.txt", b"hi".to_vec().into(), &Default::default())
            .await
            .unwrap();
        let page = named.list_all("", None).await.unwrap();
        assert!(page.objects.is_empty(), "{page:?}");
        let mut bad: Vec<String> = page.undecryptable.iter().map(|o| o.key.clone()).collect();
        bad.sort();
        assert_eq!(bad, ["leftover.txt", "old/a.json"]);
        let page = named.list_all("", Some("/")).await.unwrap();
        assert_eq!(page.undecryptable_prefixes, ["old/"]);
        // Migration of the name: a raw server-side copy to the stored key suffices,
        // because the envelope binds the plaintext name.
        let to = named.stored_key("old/a.json").unwrap();
        h.store
            .copy("old/a.json", &to, &CopyOptions::default())
            .await
            .unwrap();
        h.store.delete("old/a.json").await.unwrap();
        assert_eq!(&named.get_bytes("old/a.json").await.unwrap().1[..], b"{}");
        // Moving a stored object under another encrypted name: the binding catches it.
        let other = named.stored_key("old/b.json").unwrap();
        h.store
            .copy(&to, &other, &CopyOptions::default())
            .await
            .unwrap();
        let e = named.get_bytes("old/b.json").await.unwrap_err();
        assert_eq!(e.format_error(), Some(&Error::WrongName), "{e}");
        // Another name key opens nothing: the stored key is not found.
        let stranger = h.named(&SymKey::generate());
        assert!(stranger
            .head("old/a.json")
            .await
            .unwrap_err()
            .is_not_found());
    }

    pub async fn too_long_names_write_nothing(h: &Harness) {
        let k = SymKey::generate();
        let b = h.named(&k);
        let key = format!("d/{}", "x".repeat(624));
        let e = b
            .put(&key, b"x".to_vec(), &PutOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(e.format_error(), Some(Error::NameTooLong { limit, .. }) if *limit <= 1024),
            "{e}"
        );
        assert!(e.to_string().contains("key limit"), "{e}");
        assert!(matches!(e, SealedError::Seal { .. }));
        assert!(h.raw_keys().await.is_empty());
        // The reserved prefix is refused for sealed writes, names encrypted or not.
        for bucket in [b.clone(), h.bucket(&k)] {
            let e = bucket
                .put(".r2seal/x", b"x".to_vec(), &PutOptions::default())
                .await
                .unwrap_err();
            assert!(e.to_string().contains("reserved"), "{e}");
        }
        assert!(h.raw_keys().await.is_empty());
    }

    pub async fn descriptor_refuses_misconfigured_writers(h: &Harness) {
        let k = SymKey::generate();
        let b = h.named(&k);
        let d = b.write_descriptor(false).await.unwrap();
        assert_eq!(
            d.config.names,
            Some(NameKey::from_sym_key(&k).id().to_string())
        );
        assert_eq!(d.mac_key_ids(), [k.id()]);
        // Writing it again needs an explicit replace.
        assert!(b.write_descriptor(false).await.is_err());
        b.write_descriptor(true).await.unwrap();
        b.put("a/ok", b"x".to_vec(), &PutOptions::default())
            .await
            .unwrap();
        let (read, auth) = h.named(&k).read_descriptor().await.unwrap().unwrap();
        assert_eq!(read, d);
        assert_eq!(auth, Authenticity::Authenticated(vec![k.id()]));
        // A writer without the name key, or with other recipients, writes nothing.
        let before = h.raw_keys().await;
        let other = SymKey::generate();
        let misconfigured = [
            h.bucket(&k),
            h.named(&k).with_recipients(Recipients::fixed(vec![
                Identity::Sym(k.clone()).to_recipient(),
                Identity::generate_x25519().to_recipient(),
            ])),
            h.bucket(&other)
                .with_name_key(NameKey::from_sym_key(&other)),
        ];
        for w in misconfigured {
            let e = w
                .put("a/bad", b"x".to_vec(), &PutOptions::default())
                .await
                .unwrap_err();
            assert!(e.is_descriptor(), "{e}");
            assert!(e.to_string().contains("refusing to write"), "{e}");
            let e = w.copy("a/ok", "a/bad").await.unwrap_err();
            assert!(e.is_descriptor() || e.format_error().is_some(), "{e}");
        }
        let e = h
            .bucket(&k)
            .put("a/bad", b"x".to_vec(), &PutOptions::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no name key"), "{e}");
        assert_eq!(h.raw_keys().await, before);
        // The descriptor is hidden from listings.
        let listed = b.list_all("", None).await.unwrap();
        assert_eq!(listed.objects.len(), 1);
        assert!(listed.undecryptable.is_empty(), "{listed:?}");
        let listed = h.bucket(&k).list_all("", Some("/")).await.unwrap();
        assert!(listed
            .common_prefixes
            .iter()
            .all(|p| !p.starts_with(".r2seal")));
    }

    pub async fn forged_descriptors_deny_service_only(h: &Harness) {
        let k = SymKey::generate();
        let b = h.named(&k);
        let d = b.write_descriptor(false).await.unwrap();
        let text = String::from_utf8(d.to_bytes()).unwrap();
        // An attacker edits the configuration (no names) and keeps the MAC: holders of
        // the key see a forgery and refuse; nothing is adopted.
        let forged = text.replacen(
            &format!("\"names\":\"{}\"", d.config.names.as_ref().unwrap()),
            "\"names\":null",
            1,
        );
        assert_ne!(forged, text);
        h.store
            .put(
                DESCRIPTOR_KEY,
                forged.clone().into_bytes().into(),
                &Default::default(),
            )
            .await
            .unwrap();
        let e = h
            .named(&k)
            .put("x", b"x".to_vec(), &PutOptions::default())
            .await
            .unwrap_err();
        assert!(
            e.is_descriptor() && e.to_string().contains("authentication failed"),
            "{e}"
        );
        assert!(h.named(&k).read_descriptor().await.is_err());
        // Without the MAC line it is unauthenticated: compared, and it does not match
        // the correctly configured writer, which refuses (denial of service, no leak).
        let stripped: String = forged.lines().take(2).map(|l| format!("{l}\n")).collect();
        h.store
            .put(
                DESCRIPTOR_KEY,
                stripped.into_bytes().into(),
                &Default::default(),
            )
            .await
            .unwrap();
        let (_, auth) = h.named(&k).read_descriptor().await.unwrap().unwrap();
        assert_eq!(auth, Authenticity::Unauthenticated);
        let e = h
            .named(&k)
            .put("x", b"x".to_vec(), &PutOptions::default())
            .await
            .unwrap_err();
        assert!(e.is_descriptor(), "{e}");
        // Garbage is refused too.
        h.store
            .put(
                DESCRIPTOR_KEY,
                b"hello".to_vec().into(),
                &Default::default(),
            )
            .await
            .unwrap();
        let e = h
            .named(&k)
            .put("x", b"x".to_vec(), &PutOptions::default())
            .await
            .unwrap_err();
        assert!(
            e.is_descriptor() && e.to_string().contains("unusable"),
            "{e}"
        );
        assert_eq!(h.raw_keys().await, [DESCRIPTOR_KEY]);
        // The check runs once per instance: one that passed before keeps writing (the
        // descriptor is a guard against misconfiguration, not a lock).
        h.store.delete(DESCRIPTOR_KEY).await.unwrap();
        let early = h.named(&k);
        early
            .put("y", b"y".to_vec(), &PutOptions::default())
            .await
            .unwrap();
        h.store
            .put(
                DESCRIPTOR_KEY,
                b"hello".to_vec().into(),
                &Default::default(),
            )
            .await
            .unwrap();
        early
            .put("z", b"z".to_vec(), &PutOptions::default())
            .await
            .unwrap();
        assert!(Descriptor::parse(b"hello").is_err());
    }

    /// Writers starting at once (a job's parallel tasks) share one descriptor read; a
    /// failed check is not remembered as passed; another configuration checks again.
    pub async fn concurrent_first_writes_read_the_descriptor_once(h: &Harness) {
        const WRITERS: usize = 16;
        let k = SymKey::generate();
        h.named(&k).write_descriptor(false).await.unwrap();
        let wire = Arc::new(Watched::new(h.store.clone()));
        // A descriptor read that takes a while (as on R2): the writers all start before
        // the first check ends, on any store.
        wire.slow_gets(DESCRIPTOR_KEY, Duration::from_millis(50));
        let watched = Harness {
            store: wire.clone(),
            _dir: None,
        };
        // Descriptor GETs since the last call.
        let descriptor_reads = || {
            let is_read = |c: &Call| matches!(c, Call::Get { key, .. } if key == DESCRIPTOR_KEY);
            wire.take().iter().filter(|c| is_read(c)).count()
        };
        let puts = |b: SealedBucket, tag: &'static str| {
            join_all((0..WRITERS).map(move |i| {
                let b = b.clone();
                async move {
                    b.put(&format!("{tag}/{i}"), vec![i as u8], &PutOptions::default())
                        .await
                }
            }))
        };
        let b = watched.named(&k);
        for r in puts(b.clone(), "c").await {
            r.unwrap();
        }
        assert_eq!(descriptor_reads(), 1);
        b.put("c/later", b"x".to_vec(), &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(descriptor_reads(), 0);
        // A writer the descriptor refuses: every caller gets the refusal (at its own
        // key), and a later write checks again rather than pass.
        let wrong = watched.bucket(&k);
        for (i, r) in puts(wrong.clone(), "w").await.into_iter().enumerate() {
            let e = r.unwrap_err();
            assert!(e.is_descriptor(), "{e}");
            assert!(e.to_string().contains(&format!("w/{i}")), "{e}");
        }
        descriptor_reads();
        assert!(wrong
            .put("w/later", b"x".to_vec(), &PutOptions::default())
            .await
            .unwrap_err()
            .is_descriptor());
        assert_eq!(descriptor_reads(), 1);
        // A name key (a new configuration) on a checked writer: checked again.
        let unnamed = watched.bucket(&SymKey::generate());
        h.store.delete(DESCRIPTOR_KEY).await.unwrap();
        unnamed
            .put("u/0", b"x".to_vec(), &PutOptions::default())
            .await
            .unwrap();
        descriptor_reads();
        h.named(&k).write_descriptor(false).await.unwrap();
        let e = unnamed
            .clone()
            .with_name_key(NameKey::from_sym_key(&k))
            .put("u/1", b"x".to_vec(), &PutOptions::default())
            .await
            .unwrap_err();
        assert!(e.is_descriptor(), "{e}");
        assert_eq!(descriptor_reads(), 1);
    }

    pub async fn x25519_writers_compare_without_a_mac(h: &Harness) {
        let id = Identity::generate_x25519();
        let writer = || {
            SealedBucket::new(h.store.clone())
                .with_recipients(Recipients::fixed(vec![id.to_recipient()]))
                .with_identities(vec![id.clone()])
        };
        let d = writer().write_descriptor(false).await.unwrap();
        assert!(d.mac_key_ids().is_empty());
        let (_, auth) = writer().read_descriptor().await.unwrap().unwrap();
        assert_eq!(auth, Authenticity::Unauthenticated);
        writer()
            .put("a", b"a".to_vec(), &PutOptions::default())
            .await
            .unwrap();
        let k = SymKey::generate();
        let e = h
            .bucket(&k)
            .put("b", b"b".to_vec(), &PutOptions::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("default recipients differ"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Backends

async fn fs_harness(_case: &str) -> Option<Harness> {
    let (store, dir) = support::fs_store();
    Some(Harness {
        store,
        _dir: Some(dir),
    })
}

#[cfg(feature = "s3")]
async fn garage_harness(case: &str) -> Option<Harness> {
    let store = support::s3_store(support::Server::Garage, "r2seal-names", case).await?;
    Some(Harness { store, _dir: None })
}

suite!(
    fs,
    fs_harness,
    [
        names_round_trip_and_stay_hidden,
        copy_rename_delete_map_names,
        multipart_uses_the_stored_key,
        names_stay_bound_and_leftovers_are_reported,
        too_long_names_write_nothing,
        descriptor_refuses_misconfigured_writers,
        forged_descriptors_deny_service_only,
        concurrent_first_writes_read_the_descriptor_once,
        x25519_writers_compare_without_a_mac,
    ]
);

#[cfg(feature = "s3")]
suite!(
    garage,
    garage_harness,
    [
        names_round_trip_and_stay_hidden,
        copy_rename_delete_map_names,
        multipart_uses_the_stored_key,
        names_stay_bound_and_leftovers_are_reported,
        too_long_names_write_nothing,
        descriptor_refuses_misconfigured_writers,
        forged_descriptors_deny_service_only,
        concurrent_first_writes_read_the_descriptor_once,
        x25519_writers_compare_without_a_mac,
    ]
);
