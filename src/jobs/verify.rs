//! `verify`: read every object (or a sample) in full and authenticate it, and report
//! plaintext objects, objects sealed only to retired or revoked keyring keys, and
//! objects that do not open (tampered, or sealed to keys not held). Reads only.

use std::sync::Arc;

use futures_util::stream::TryStreamExt;

use super::{Item, Outcome};
use crate::format::header::{Header, METADATA_KEY};
use crate::format::Envelope;
use crate::keys::keyring::{KeyStatus, Keyring};
use crate::sealed::{SealedBucket, SealedError};

/// Problem kinds, the first word of a failed entry's detail in reports.
pub const PLAINTEXT: &str = "plaintext";
pub const UNOPENABLE: &str = "undecryptable";
pub const TAMPERED: &str = "tampered";
pub const RETIRED_ONLY: &str = "retired-keys-only";
pub const REVOKED_ONLY: &str = "revoked-keys-only";

/// Verifies one object at a time; share it (`Arc`) between the walker's tasks.
#[derive(Debug)]
pub struct Verifier {
    bucket: SealedBucket,
    /// With a keyring: which of its keys open each object, to flag retired/revoked ones.
    keyring: Option<Arc<Keyring>>,
}

impl Verifier {
    /// `bucket` opens with the identities to verify with. With a `keyring`, its revoked
    /// keys are tried too (only to classify: an object that only a revoked key opens is
    /// reported, never counted as fine).
    pub fn new(bucket: SealedBucket, keyring: Option<Arc<Keyring>>) -> Verifier {
        let bucket = match &keyring {
            Some(k) => bucket.with_identities(k.identities_for_rekey()),
            None => bucket,
        };
        Verifier {
            bucket: bucket.allow_plaintext(true),
            keyring,
        }
    }

    pub async fn verify_one(&self, item: Item) -> Outcome {
        let problem = |kind: &str, why: String| Outcome::Failed(format!("{kind}: {why}"));
        // With encrypted names the bucket takes plaintext keys; the listing gives stored ones.
        let key = match self.bucket.plain_key(&item.key) {
            Ok(k) => k,
            Err(e) => return problem(UNOPENABLE, e.to_string()),
        };
        let got = match self.bucket.get(&key, None).await {
            Ok(g) => g,
            Err(e) if e.is_not_found() => return Outcome::Skipped("deleted since listed".into()),
            Err(SealedError::Store(e)) => return Outcome::from_store_error(&e),
            Err(e) => return problem(kind_of(&e), e.to_string()),
        };
        if !got.head.sealed {
            return problem(
                PLAINTEXT,
                format!("{key} is stored in plaintext (no r2seal envelope)"),
            );
        }
        let size = got.head.size;
        let mut body = got.body;
        loop {
            match body.try_next().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(SealedError::Store(e)) => return Outcome::from_store_error(&e),
                Err(e) => return problem(kind_of(&e), e.to_string()),
            }
        }
        if let Some(ring) = &self.keyring {
            if let Some(p) = self.key_statuses(ring, &item.key, &key).await {
                return p;
            }
        }
        Outcome::Done { bytes: size }
    }

    /// Which keyring keys open the object's envelope on their own; a problem when none of
    /// them is active. (Recipient-only keys, such as an offline recovery key, cannot be
    /// tried: an object sealed to one of them and to retired keys is reported.)
    async fn key_statuses(&self, ring: &Keyring, stored: &str, key: &str) -> Option<Outcome> {
        let info = match self.bucket.store().head(stored).await {
            Ok(i) => i,
            Err(e) => return Some(Outcome::from_store_error(&e)),
        };
        let header = Header::from_metadata_value(info.metadata.get(METADATA_KEY)?).ok()?;
        let name = self.bucket.name_of(key);
        let mut opened_by = Vec::new();
        for k in ring.keys() {
            let Some(identity) = k.identity() else {
                continue;
            };
            if Envelope::open(&header, std::slice::from_ref(&identity), Some(&name)).is_ok() {
                opened_by.push((k.name.clone(), k.status));
            }
        }
        if opened_by.iter().any(|(_, s)| *s == KeyStatus::Active) {
            return None;
        }
        let names: Vec<&str> = opened_by.iter().map(|(n, _)| n.as_str()).collect();
        if opened_by.iter().all(|(_, s)| *s == KeyStatus::Revoked) && !opened_by.is_empty() {
            return Some(Outcome::Failed(format!(
                "{REVOKED_ONLY}: {key} opens only with revoked keys ({}): re-key it (`r2seal rotate --rekey`)",
                names.join(", ")
            )));
        }
        if opened_by.is_empty() {
            // Opened above with some identity outside the keyring's secret keys? Cannot
            // happen (the bucket holds exactly the keyring's identities); be safe.
            return None;
        }
        Some(Outcome::Failed(format!(
            "{RETIRED_ONLY}: {key} opens only with retired or revoked keys ({}): rotate it to the active keys",
            names.join(", ")
        )))
    }
}

/// The problem kind of an error opening an object.
fn kind_of(e: &SealedError) -> &'static str {
    match e.format_error() {
        Some(crate::Error::NoMatchingIdentity) => UNOPENABLE,
        Some(_) => TAMPERED,
        None if e.is_plaintext() => PLAINTEXT,
        None => TAMPERED,
    }
}
