//! Rotation of one object (SECURITY.md §4.5): rewrap its envelope to a new recipient set
//! in place, with a server-side copy of the object onto itself that replaces only its
//! metadata (no body passes through this process), or re-key it: re-encrypt the payload
//! under a fresh file key, streamed with bounded memory.
//!
//! Deciding what an object needs is the delicate part, because X25519 stanzas are
//! anonymous. An object's current recipient set is known when every recipient stanza is
//! attributed: `r2seal-sym` stanzas by their visible key id, X25519 stanzas by an identity
//! we hold that unwraps this object's file key from them, and the rest by the writer's
//! claim in the sealed metadata (`recipients`), accepted only when it accounts for
//! exactly the stanzas left. An object whose set is not known is rewrapped (the rewrap
//! records the claim, so the next run knows it).
//!
//! Races: the copy and the read for a re-key are conditional on the ETag read (copy-source
//! If-Match / If-Match). What no store offers is a condition on the destination of a copy
//! or on a multipart completion: a write that lands between the read and our write is
//! overwritten. This module narrows that window (a HEAD just before a multipart
//! completion) and detects a write that lands after ours (the envelope read back must be
//! the one written), and says so, rather than claiming atomicity.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};

use futures_util::stream::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::{
    key_ids, rewrap_within_limit, rewrapped_metadata, OpenState, PutOptions, Recipients, Res,
    SealedBucket, SealedError, Source,
};
use crate::format::header::METADATA_KEY;
use crate::format::{Binding, Envelope};
use crate::keys::{KeyId, Recipient};
use crate::seal::{plaintext_len, PayloadOpener};
use crate::store::{self, GetOptions, ObjectInfo, ReplaceMetadata};
use crate::Error;

/// When rotation re-encrypts payloads instead of only rewrapping their file keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rekey {
    /// Never (`--no-rekey`): rewrap only, even away from a revoked key.
    Never,
    /// When the file key was ever wrapped to an exposed (revoked) key. The default.
    Exposed,
    /// Whenever the file key was ever wrapped to a key outside the target set, or that is
    /// unknown (`--rekey`). A rerun finds every object keyed to its set and skips it.
    Always,
    /// Every object last written before this time (by the store's last-modified time, or
    /// whose time the store does not give), and newer ones as with `Always`
    /// (`--rekey-all`: a data key may have leaked). The time is when the first run
    /// started: a rerun with the same time skips what it re-keyed.
    Before(std::time::SystemTime),
}

/// What to rotate every object to, and when to re-key.
#[derive(Debug, Clone)]
pub struct RotationPlan {
    /// The recipients before changes: a keyring's policy per key, or a fixed set.
    pub base: Recipients,
    /// Added to every object's set.
    pub add: Vec<Recipient>,
    /// Taken out of every object's set (also out of the base, before the keyring checks
    /// that every chosen key is active).
    pub remove: BTreeSet<KeyId>,
    /// Keys that may be compromised (revoked): a file key ever wrapped to one of them is
    /// re-keyed unless `rekey` is [`Rekey::Never`].
    pub exposed: BTreeSet<KeyId>,
    pub rekey: Rekey,
}

impl RotationPlan {
    /// The target set for the object named `name` (its full key): the base (the keyring
    /// policy for the name, or the fixed recipients) minus `remove`, then `add` minus
    /// `remove`, each key once, in that order.
    pub fn target(&self, name: &str) -> Result<Vec<Recipient>, Error> {
        let mut out: Vec<Recipient> = match &self.base {
            Recipients::Fixed(r) => r
                .iter()
                .filter(|r| !self.remove.contains(&r.key_id()))
                .cloned()
                .collect(),
            Recipients::Keyring(k) => k.plan_without(name, &self.remove)?.recipients,
        };
        for r in &self.add {
            let id = r.key_id();
            if !self.remove.contains(&id) && !out.iter().any(|o| o.key_id() == id) {
                out.push(r.clone());
            }
        }
        if out.is_empty() {
            return Err(Error::InvalidRecipients(
                "the rotation would leave the object with no recipient",
            ));
        }
        Ok(out)
    }
}

/// What rotation did (or, in a dry run, would do) to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RotateAction {
    /// Already sealed to the target set, and no re-key needed.
    Unchanged,
    /// Envelope rewrapped in place: same file key and payload, new stanzas.
    Rewrap,
    /// Payload re-encrypted under a fresh file key.
    Rekey,
}

/// The result of rotating one object.
#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    pub key: String,
    pub action: RotateAction,
    /// The key ids the object was sealed to, when every stanza could be attributed.
    pub from: Option<Vec<String>>,
    /// The key ids it is sealed to now (or would be).
    pub to: Vec<String>,
    /// Stored bytes of the object.
    pub stored_size: u64,
    /// Plaintext bytes.
    pub size: u64,
    /// Body bytes that passed through this process: 0 for a rewrap, the stored size
    /// down and up for a re-key.
    pub body_bytes: u64,
    /// The object's ETag after rotation.
    pub etag: String,
}

/// What is known about an object's keys.
struct KeyState {
    /// The current recipient set, if every stanza is attributed.
    current: Option<BTreeSet<KeyId>>,
    /// Every key the file key was ever wrapped to, as far as recorded and attributed.
    history: BTreeSet<KeyId>,
    /// Whether `history` is a record (`wrapped_to` present), not a reconstruction.
    recorded: bool,
}

fn parse_ids(ids: &[String]) -> BTreeSet<KeyId> {
    ids.iter().filter_map(|s| s.parse().ok()).collect()
}

impl SealedBucket {
    fn key_state(&self, envelope: &Envelope) -> KeyState {
        let owners = envelope.stanza_owners(&self.identities);
        let held: BTreeSet<KeyId> = self.identities.iter().map(|i| i.key_id()).collect();
        let meta = envelope.metadata();
        let claimed = meta.map(|m| parse_ids(&m.recipients)).unwrap_or_default();
        // Claimed keys we hold a secret for must have been attributed by trial unwrap;
        // the others can only be taken on the writer's word, and only when they account
        // for exactly the anonymous stanzas.
        let unresolved: BTreeSet<KeyId> = claimed
            .iter()
            .filter(|id| !owners.known.contains(id) && !held.contains(id))
            .copied()
            .collect();
        let current = if owners.anonymous == 0 {
            Some(owners.known.clone())
        } else if unresolved.len() == owners.anonymous {
            Some(owners.known.union(&unresolved).copied().collect())
        } else {
            None
        };
        let recorded = meta.is_some_and(|m| !m.wrapped_to.is_empty());
        let mut history = meta.map(|m| parse_ids(&m.wrapped_to)).unwrap_or_default();
        history.extend(owners.known.iter().copied());
        if let Some(c) = &current {
            history.extend(c.iter().copied());
        }
        KeyState {
            current,
            history,
            recorded,
        }
    }

    /// Bring the object at (plaintext) `key` to `plan`'s target set: skip it if it is there already,
    /// else rewrap it in place, or re-key it when the plan says so. With `dry_run`, only
    /// decide. The bucket's identities must open the object (for revoked keys, build it
    /// with `Keyring::identities_for_rekey`).
    pub async fn rotate(&self, key: &str, plan: &RotationPlan, dry_run: bool) -> Res<Rotated> {
        let location = self.location(key);
        let skey = self.stored_key(key)?;
        let info = self.store.head(&skey).await?;
        if !info.metadata.contains_key(METADATA_KEY) {
            return Err(SealedError::Plaintext { location });
        }
        let envelope = self
            .open_envelope(key, &info)?
            .ok_or_else(|| SealedError::Plaintext {
                location: location.clone(),
            })?;
        let size =
            plaintext_len(envelope.parts(), info.meta.size).map_err(|error| SealedError::Open {
                location: location.clone(),
                error,
            })?;
        let name = self.name_of(key);
        let seal_err = |error| SealedError::Seal {
            location: location.clone(),
            error,
        };
        let target = plan.target(&name).map_err(seal_err)?;
        let target_ids: BTreeSet<KeyId> = target.iter().map(Recipient::key_id).collect();
        let state = self.key_state(&envelope);
        let matches = state.current.as_ref() == Some(&target_ids);
        let exposed = !state.history.is_disjoint(&plan.exposed)
            // An unattributed stanza may belong to an exposed key we hold no secret for.
            || (state.current.is_none()
                && plan.exposed.iter().any(|id| !self.identities.iter().any(|i| i.key_id() == *id)));
        let rekey = match plan.rekey {
            Rekey::Never => false,
            Rekey::Exposed => exposed,
            Rekey::Always => !(matches && state.recorded && state.history.is_subset(&target_ids)),
            Rekey::Before(cutoff) => {
                info.meta.last_modified.is_none_or(|m| m < cutoff)
                    || !(matches && state.recorded && state.history.is_subset(&target_ids))
            }
        };
        let action = if rekey {
            RotateAction::Rekey
        } else if matches {
            RotateAction::Unchanged
        } else {
            RotateAction::Rewrap
        };
        let mut out = Rotated {
            key: key.to_string(),
            action,
            from: state
                .current
                .as_ref()
                .map(|c| c.iter().map(KeyId::to_string).collect()),
            to: key_ids(&target),
            stored_size: info.meta.size,
            size,
            body_bytes: 0,
            etag: info.meta.etag.clone(),
        };
        if dry_run || action == RotateAction::Unchanged {
            return Ok(out);
        }
        // A rotator writes like any writer: the bucket descriptor must agree.
        self.ensure_descriptor(key).await?;
        match action {
            RotateAction::Rewrap => {
                out.etag = self.rewrap_in_place(key, &info, &envelope, &target).await?;
            }
            RotateAction::Rekey => {
                out.etag = self.rekey_in_place(key, &info, &envelope, target).await?;
                out.body_bytes = info.meta.size + out_stored(size);
            }
            RotateAction::Unchanged => {}
        }
        Ok(out)
    }

    /// Replace the object's envelope with one for `target` (same file key), by a
    /// server-side copy onto itself conditional on the ETag read. Returns the new ETag.
    async fn rewrap_in_place(
        &self,
        key: &str,
        info: &ObjectInfo,
        envelope: &Envelope,
        target: &[Recipient],
    ) -> Res<String> {
        let location = self.location(key);
        let seal_err = |error| SealedError::Seal {
            location: location.clone(),
            error,
        };
        let metadata = rewrapped_metadata(envelope, &self.identities, target);
        let value = rewrap_within_limit(
            envelope,
            target,
            Binding {
                name: Some(self.name_of(key)),
                metadata: Some(metadata),
                parts: envelope.parts().copied(),
                part_salts: envelope.part_salts().map(<[_]>::to_vec),
            },
            self.store.metadata_limit(),
        )
        .map_err(seal_err)?;
        // Other store metadata (none that r2seal writes) is kept as it is.
        let mut stored: BTreeMap<String, String> = info.metadata.clone();
        stored.insert(METADATA_KEY.to_string(), value.clone());
        let replace = ReplaceMetadata {
            metadata: stored,
            content_type: info.content_type.clone(),
            cache_control: info.cache_control.clone(),
        };
        let skey = self.stored_key(key)?;
        let (put, _) = self.server_copy(&skey, &skey, info, Some(replace)).await?;
        // Detect a write that landed after ours (or, for a multipart copy, between the
        // last check and the completion): the envelope read back must be the one written.
        let now = self.store.head(&skey).await?;
        if now.metadata.get(METADATA_KEY) != Some(&value) {
            return Err(SealedError::Conflict {
                location,
                detail: "the object was rewritten by someone else during rotation; run again to rotate the new version".into(),
            });
        }
        Ok(put.etag)
    }

    /// Re-encrypt the object under a fresh file key sealed to `target`, streaming it:
    /// the body is read conditionally on the ETag read, authenticated chunk by chunk, and
    /// the new object is written only once the whole old one authenticated. The write is
    /// conditional on the ETag read (If-Match on the PUT, or on the multipart completion:
    /// atomic on R2 and AWS, a check just before completing elsewhere), and the ETag is
    /// read back afterwards.
    async fn rekey_in_place(
        &self,
        key: &str,
        info: &ObjectInfo,
        envelope: &Envelope,
        target: Vec<Recipient>,
    ) -> Res<String> {
        let location = self.location(key);
        let etag = info.meta.etag.clone();
        let skey = self.stored_key(key)?;
        let got = self
            .store
            .get(
                &skey,
                None,
                &GetOptions {
                    if_match: Some(etag.clone()),
                },
            )
            .await?;
        if !store::etag_eq(&got.info.meta.etag, &etag) {
            return Err(SealedError::Conflict {
                location,
                detail: "the object changed between HEAD and GET; run again".into(),
            });
        }
        // The envelope opened from the HEAD opens the body with that ETag.
        let opened = Envelope::open(
            envelope.header(),
            &self.identities,
            Some(&self.name_of(key)),
        )
        .map_err(|error| SealedError::Open {
            location: location.clone(),
            error,
        })?;
        let state = OpenState::new(PayloadOpener::new(opened), got.body, location.clone());
        // The put sees io errors; keep the real one to return it.
        let failure: Arc<Mutex<Option<SealedError>>> = Arc::default();
        let slot = failure.clone();
        let plain = futures_util::stream::try_unfold(state, OpenState::next).map_err(move |e| {
            let msg = e.to_string();
            slot.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
            io::Error::other(msg)
        });
        let size =
            plaintext_len(envelope.parts(), info.meta.size).map_err(|error| SealedError::Open {
                location: location.clone(),
                error,
            })?;
        let meta = envelope.metadata().cloned().unwrap_or_default();
        let opts = PutOptions {
            content_type: info.content_type.clone(),
            cache_control: info.cache_control.clone(),
            content_encoding: meta.content_encoding,
            content_disposition: meta.content_disposition,
            content_language: meta.content_language,
            metadata: meta.user,
            // Multipart too: completed only if the object still has this ETag.
            if_match: Some(etag.clone()),
            if_none_match: None,
        };
        let writer = self
            .clone()
            .with_recipients(Recipients::fixed(target))
            .checked_multipart(true);
        let put = writer
            .put_source(
                key,
                Source::Stream(Box::pin(plain.boxed())),
                Some(size),
                &opts,
            )
            .await;
        let put = match put {
            Ok(p) => p,
            Err(e) => {
                let first = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
                return Err(first.unwrap_or(e));
            }
        };
        let now = self.store.head(&skey).await?;
        if !store::etag_eq(&now.meta.etag, &put.etag) {
            return Err(SealedError::Conflict {
                location,
                detail: "the object was rewritten by someone else right after it was re-keyed; run again to check the new version".into(),
            });
        }
        Ok(put.etag)
    }
}

fn out_stored(size: u64) -> u64 {
    crate::format::stream::payload_len(size)
}
