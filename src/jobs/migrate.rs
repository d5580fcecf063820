//! `migrate`: seal every plaintext object of a bucket (in place, or into another
//! bucket), or with `reverse` unseal sealed ones back to plaintext. One object at a time
//! through [`super::run`]; what is and is not atomic is in SECURITY.md §3.12.
//!
//! In place, every write is conditional on the ETag of the version read: a single-request
//! put carries `If-Match`; a multipart upload is completed only if the object still has
//! that ETag (`Store::complete_multipart_if_match`). An object that changed in between is
//! a [`Outcome::Conflict`]: nothing was written, and the walker re-reads and retries it.
//! Each object is at every instant either the version read or a complete new one.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};

use super::{Item, Outcome};
use crate::format::header::METADATA_KEY;
use crate::sealed::{
    self, SealedBucket, SealedError, DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE,
};
use crate::store::{self, GetOptions, ObjectInfo, Store, StoreError, UploadedPart, MIN_PART_SIZE};

/// What a migration does.
#[derive(Debug, Clone, Default)]
pub struct MigrateOptions {
    /// Unseal sealed objects back to plaintext instead of sealing plaintext ones.
    pub reverse: bool,
    /// Read every written object back and authenticate it (and compare its plaintext
    /// digest with the source's) before counting it done.
    pub verify: bool,
    /// Decide and report, write nothing.
    pub dry_run: bool,
    /// Write each object under its encrypted name (the bucket given to
    /// [`Migrator::new`] must have a name key), read it back and authenticate it, and only
    /// then delete the object under its plaintext name (in place).
    pub encrypt_names: bool,
    /// Parts of multipart uploads (default and minimum as for
    /// [`SealedBucket::with_part_size`]).
    pub part_size: Option<u64>,
    /// Objects larger than this are written as multipart uploads (parts of `part_size`),
    /// smaller ones in one request, sealed or (`reverse`) unsealed as they stream; up to
    /// one part they are held in memory, so the SDK can retry the request (default as for
    /// [`SealedBucket::with_multipart_threshold`]).
    pub multipart_threshold: Option<u64>,
    /// The plaintext prefix migrated. With `reverse` under encrypted names the walk lists
    /// the stored form of its parent (SECURITY.md §3.10): names outside it are skipped.
    pub prefix: String,
}

/// Where migrated objects go: the source key with `src_prefix` replaced by `dst_prefix`.
#[derive(Debug, Clone)]
pub struct Destination {
    pub store: Arc<dyn Store>,
    pub src_prefix: String,
    pub dst_prefix: String,
}

/// Migrates one object at a time; cheap to share (`Arc`) between the walker's tasks.
#[derive(Debug)]
pub struct Migrator {
    src: Arc<dyn Store>,
    /// Source objects opened through this (identities; plaintext allowed).
    src_bucket: SealedBucket,
    /// `src_bucket` with plaintext stored keys, for objects under their plaintext names
    /// in a bucket whose names are encrypted.
    src_plain_names: SealedBucket,
    /// Sealed objects written through this (recipients; identities for `verify`).
    dst_bucket: SealedBucket,
    dest: Option<Destination>,
    /// The destination's keys, listed once alongside the walk (see [`DestinationKeys`]);
    /// started by the first object.
    dest_keys: std::sync::OnceLock<Arc<DestinationKeys>>,
    opts: MigrateOptions,
    part_size: u64,
}

/// Reasons for skipping, as they appear in reports.
pub const SKIP_SEALED: &str = "already sealed";
pub const SKIP_PLAINTEXT: &str = "not sealed";
/// With a destination: it holds the object already and it could not be compared with
/// the source (no identity opens it, or no MD5 on either side: a multipart source ETag,
/// a copy sealed in more than one part). `reverse` never compares.
pub const SKIP_DEST_EXISTS: &str = "destination exists, not compared";
/// With a destination: it holds the source sealed (same plaintext size and MD5).
pub const SKIP_DEST_CURRENT: &str = "destination up to date";
/// Done with a destination whose object was an older version of the source.
pub const RESEALED: &str = "sealed again (the source changed)";
pub const SKIP_GONE: &str = "deleted since listed";
/// Done in place under `--encrypt-names`: a sealed object found under its plaintext name.
pub const MOVED_SEALED: &str = "already sealed, moved to the encrypted name";
/// Done by `reverse` under encrypted names: a plaintext object found under its encrypted
/// name.
pub const MOVED_PLAINTEXT: &str = "already plaintext, moved to the plaintext name";

/// In place, objects listed larger than this are looked at with a HEAD before they are
/// read: a rerun finds most of them done already, and a GET whose body is then dropped
/// mid-transfer cannot return its connection to the pool (on R2 the next object pays a
/// new TLS handshake) after moving up to a socket buffer of body for nothing. Smaller
/// objects keep the single GET: one request per object matters more than the body there.
pub const HEAD_FIRST_ABOVE: u64 = 1024 * 1024;

impl Migrator {
    /// `bucket`: a sealed view of the source store with the recipients to seal to and
    /// the identities to open with (for `reverse` and `verify`). With `dest`, objects are
    /// written there and the source is never modified.
    pub fn new(bucket: SealedBucket, dest: Option<Destination>, opts: MigrateOptions) -> Self {
        let src = bucket.store().clone();
        let part_size = opts
            .part_size
            .unwrap_or(DEFAULT_PART_SIZE)
            .max(MIN_PART_SIZE);
        let src_bucket = bucket.clone().allow_plaintext(true);
        let mut dst_bucket = match &dest {
            Some(d) => {
                let mut b = SealedBucket::new(d.store.clone());
                if let Some(r) = bucket.recipients() {
                    b = b.with_recipients(r.clone());
                }
                if let Some(k) = bucket.name_key() {
                    b = b.with_name_key(k.clone());
                }
                b.with_identities(bucket.identities().to_vec())
            }
            None => bucket,
        };
        let multipart_threshold = opts
            .multipart_threshold
            .unwrap_or(DEFAULT_MULTIPART_THRESHOLD);
        dst_bucket = dst_bucket
            .with_part_size(part_size)
            .with_multipart_threshold(multipart_threshold)
            .checked_multipart(true)
            .allow_plaintext(false);
        Migrator {
            src,
            src_plain_names: src_bucket.clone().without_name_key(),
            src_bucket,
            dst_bucket,
            dest,
            dest_keys: std::sync::OnceLock::new(),
            opts,
            part_size,
        }
    }

    fn dst_store(&self) -> &Arc<dyn Store> {
        self.dest.as_ref().map_or(&self.src, |d| &d.store)
    }

    fn dst_key(&self, key: &str) -> String {
        match &self.dest {
            Some(d) => format!(
                "{}{}",
                d.dst_prefix,
                key.strip_prefix(d.src_prefix.as_str()).unwrap_or(key)
            ),
            None => key.to_string(),
        }
    }

    /// Migrate one listed object.
    pub async fn migrate_one(&self, item: Item) -> Outcome {
        if self.opts.reverse {
            self.unseal_one(&item).await
        } else {
            self.seal_one(&item).await
        }
    }

    /// In place, for an object listed larger than [`HEAD_FIRST_ABOVE`]: what to report
    /// when a HEAD shows there is nothing to do (sealed already, or with `reverse`
    /// plaintext already), or that it is gone; `None` to read it. The write still goes by
    /// what the GET then returns (state and ETag), never by this HEAD.
    async fn settled_by_head(&self, item: &Item) -> Option<Outcome> {
        if self.dest.is_some() || item.size <= HEAD_FIRST_ABOVE {
            return None; // with a destination a rerun skips before reading the source
        }
        match self.src.head(&item.key).await {
            Ok(info) => match (info.metadata.contains_key(METADATA_KEY), self.opts.reverse) {
                (true, false) if self.sealed_needs_moving(&item.key) => {
                    Some(self.move_sealed(&item.key, &info).await)
                }
                (true, false) => Some(Outcome::Skipped(SKIP_SEALED.into())),
                (false, true) => Some(Outcome::Skipped(SKIP_PLAINTEXT.into())),
                _ => None,
            },
            Err(e) if e.is_not_found() => Some(Outcome::Skipped(SKIP_GONE.into())),
            Err(e) => Some(Outcome::from_store_error(&e)),
        }
    }

    /// With a destination: skip when the destination key already holds an object (a
    /// previous run wrote it; writes are atomic, so it is complete). Answered from one
    /// listing of the destination (a HEAD per object cost a third of the requests of a
    /// small object), or by a HEAD where the listing cannot answer.
    async fn destination_taken(&self, dst_key: &str) -> Result<bool, Outcome> {
        let Some(dest) = &self.dest else {
            return Ok(false);
        };
        // Encrypted names do not sort like the source keys: the listing cannot keep pace.
        if self.dst_bucket.name_key().is_none() {
            let keys = self
                .dest_keys
                .get_or_init(|| DestinationKeys::start(dest.store.clone(), &dest.dst_prefix));
            if let Some(taken) = keys.contains(dst_key).await {
                return Ok(taken);
            }
        }
        match self.dst_store().head(dst_key).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(Outcome::from_store_error(&e)),
        }
    }

    /// With a destination that holds the sealed object `dst_key` (stored at `stored`):
    /// whether it is the source `item` sealed. The plaintext sizes (the destination's
    /// from its envelope, or without an identity from its stored size) and, when the
    /// source's listed ETag is a plain MD5 (not a multipart `…-N` one) and the
    /// destination recorded the MD5 of its plaintext (objects sealed in one part), the
    /// MD5s. Anything less is [`DestState::Uncompared`].
    async fn destination_state(
        &self,
        item: &Item,
        stored: &str,
        dst_key: &str,
    ) -> Result<DestState, Outcome> {
        let info = match self.dst_store().head(stored).await {
            Ok(info) => info,
            Err(e) if e.is_not_found() => return Ok(DestState::Gone),
            Err(e) => return Err(Outcome::from_store_error(&e)),
        };
        let stale = || DestState::Stale {
            etag: info.meta.etag.clone(),
        };
        if !info.metadata.contains_key(METADATA_KEY) {
            return Ok(DestState::Uncompared); // not ours to replace
        }
        let opened = self.dst_bucket.head_from(dst_key, &info).ok();
        let size = match &opened {
            Some(head) => Some(head.size),
            None => crate::seal::plaintext_len(None, info.meta.size).ok(),
        };
        match size {
            Some(n) if n != item.size => return Ok(stale()),
            Some(_) => {}
            None => return Ok(DestState::Uncompared),
        }
        let source_md5 = item.etag.as_deref().and_then(plain_md5);
        let sealed_md5 = opened.and_then(|h| h.metadata.md5);
        Ok(match (source_md5, sealed_md5) {
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(&b) => DestState::Current,
            (Some(_), Some(_)) => stale(),
            _ => DestState::Uncompared,
        })
    }

    /// Whether objects change names: sealed under encrypted names (`encrypt_names`), or
    /// unsealed from encrypted names back to plaintext ones (`reverse` with a name key).
    fn renames(&self) -> bool {
        (self.opts.encrypt_names || self.opts.reverse) && self.dst_bucket.name_key().is_some()
    }

    /// The write condition: the version read (in place), or "create only" (destination).
    /// `renamed_in_place`: the object goes to a new key of the same store.
    fn conditions(
        &self,
        etag: &str,
        multipart: bool,
        renamed_in_place: bool,
    ) -> (Option<String>, Option<String>) {
        if renamed_in_place {
            // A new key; the version read is checked before the old one is deleted.
            // Sealing: an object under the encrypted name is a sealed copy an interrupted
            // run left, replaced. Unsealing: the plaintext name was checked absent just
            // before, so create only (no conditional create for multipart).
            let create_only = self.opts.reverse && !multipart;
            return (None, create_only.then(|| "*".to_string()));
        }
        match &self.dest {
            None => (Some(etag.to_string()), None),
            // No conditional create for multipart: the destination was checked just before.
            Some(_) if multipart => (None, None),
            Some(_) => (None, Some("*".to_string())),
        }
    }

    async fn seal_one(&self, item: &Item) -> Outcome {
        let key = item.key.as_str();
        // The destination first: a rerun skips what it wrote without reading the source.
        // In place there is none, and no name to encrypt for it: a rerun under encrypted
        // names lists names encrypted already, which encrypted again may not fit a key
        // (the object is then skipped as sealed below).
        let dst_key = self.dst_key(key);
        // With a destination that holds an older version: its ETag, to replace only it.
        let mut replaces = None;
        if self.dest.is_some() {
            let stored = match self.dst_bucket.stored_key(&dst_key) {
                Ok(stored) => stored,
                Err(e) => return outcome_of(&e),
            };
            match self.destination_taken(&stored).await {
                Ok(true) => match self.destination_state(item, &stored, &dst_key).await {
                    Ok(DestState::Current) => return Outcome::Skipped(SKIP_DEST_CURRENT.into()),
                    Ok(DestState::Uncompared) => return Outcome::Skipped(SKIP_DEST_EXISTS.into()),
                    Ok(DestState::Stale { etag }) => replaces = Some(etag),
                    Ok(DestState::Gone) => {}
                    Err(o) => return o,
                },
                Ok(false) => {}
                Err(o) => return o,
            }
        }
        if let Some(settled) = self.settled_by_head(item).await {
            return settled;
        }
        let got = match self.src.get(key, None, &GetOptions::default()).await {
            Ok(g) => g,
            Err(e) if e.is_not_found() => return Outcome::Skipped(SKIP_GONE.into()),
            Err(e) => return Outcome::from_store_error(&e),
        };
        if got.info.metadata.contains_key(METADATA_KEY) {
            if self.sealed_needs_moving(key) {
                return self.move_sealed(key, &got.info).await;
            }
            return Outcome::Skipped(SKIP_SEALED.into());
        }
        let size = got.info.meta.size;
        if self.opts.dry_run {
            return Outcome::Done { bytes: size };
        }
        let read_etag = got.info.meta.etag.clone();
        let renamed_in_place = self.renames() && self.dest.is_none();
        let (if_match, if_none_match) = match &replaces {
            Some(dst_etag) => (Some(dst_etag.clone()), None),
            None => self.conditions(
                &read_etag,
                self.dst_bucket.goes_multipart(size),
                renamed_in_place,
            ),
        };
        let opts = sealed::PutOptions {
            content_type: got.info.content_type.clone(),
            cache_control: got.info.cache_control.clone(),
            // Every user-metadata entry (rclone's `mtime` included) goes sealed.
            metadata: got.info.metadata.clone(),
            if_match,
            if_none_match,
            ..Default::default()
        };
        let read_back = self.opts.verify || renamed_in_place;
        // The source's digest only for a read-back: MD5 of every byte costs a core's time.
        let digest = Arc::new(std::sync::Mutex::new(Md5::new()));
        let d = digest.clone();
        let body = got.body.map(move |chunk| {
            let chunk = chunk.map_err(io::Error::other)?;
            if read_back {
                d.lock().expect("not poisoned").update(&chunk);
            }
            Ok::<Bytes, io::Error>(chunk)
        });
        let put = self
            .dst_bucket
            .put_stream(&dst_key, body, Some(size), &opts)
            .await;
        if let Err(e) = put {
            return outcome_of(&e);
        }
        if read_back {
            let want = digest.lock().expect("not poisoned").clone().finalize();
            if let Some(problem) = self.read_back_sealed(&dst_key, size, &want).await {
                return problem;
            }
        }
        if renamed_in_place {
            // The sealed copy under the encrypted name authenticated.
            return self
                .delete_if_unchanged(key, &read_etag, size, "sealed under its encrypted name")
                .await;
        }
        if replaces.is_some() {
            return Outcome::DoneAs {
                bytes: size,
                how: RESEALED.into(),
            };
        }
        Outcome::Done { bytes: size }
    }

    /// In place under `--encrypt-names`: whether a sealed object listed at `listed` is
    /// under its plaintext name (the name does not decrypt), to be moved to its encrypted
    /// one. A rerun lists encrypted names, which decrypt (a plaintext name decrypting by
    /// chance would take a forged 128-bit tag).
    fn sealed_needs_moving(&self, listed: &str) -> bool {
        self.renames() && self.dest.is_none() && self.dst_bucket.plain_key(listed).is_err()
    }

    /// In place under `--encrypt-names`: move the sealed object `info` describes from its
    /// plaintext name `key` to its encrypted name. The envelope binds the plaintext name
    /// (SECURITY.md §3.10), so it moves as it is: a server-side copy conditional on the
    /// ETag read, checked to be the same object, and only then the original deleted.
    async fn move_sealed(&self, key: &str, info: &ObjectInfo) -> Outcome {
        // It must open as `key` (keys held, name binding): under the encrypted name of a
        // name it is not bound to, nobody could open it.
        let head = match self.dst_bucket.head_from(key, info) {
            Ok(h) => h,
            Err(e) if e.is_retryable() => return Outcome::Retry(e.to_string()),
            Err(e) => {
                return Outcome::Failed(format!(
                    "{e} (sealed under its plaintext name but does not open as it: not moved to its encrypted name)"
                ))
            }
        };
        let stored = match self.dst_bucket.stored_key(key) {
            Ok(s) => s,
            Err(e) => return outcome_of(&e),
        };
        let moved = || Outcome::DoneAs {
            bytes: 0, // server-side: no body through this process
            how: MOVED_SEALED.into(),
        };
        if self.opts.dry_run {
            return moved();
        }
        match self.src.head(&stored).await {
            // The copy an interrupted run made: only the delete is left.
            Ok(there) if same_stored_object(&there, info) => {}
            Ok(_) => {
                return Outcome::Failed(format!(
                    "{}: sealed under its plaintext name, and its encrypted name already holds a different object; both kept",
                    self.location(key)
                ))
            }
            Err(e) if e.is_not_found() => {
                let copy = self
                    .dst_bucket
                    .copy_stored_as_is(key, &stored, info, key)
                    .await;
                if let Err(e) = copy {
                    return outcome_of(&e);
                }
                match self.src.head(&stored).await {
                    Ok(there) if same_stored_object(&there, info) => {}
                    Ok(_) => return verify_failed(&stored, "the copy differs from the original"),
                    Err(e) => return verify_failed(&stored, &e.to_string()),
                }
            }
            Err(e) => return Outcome::from_store_error(&e),
        }
        if self.opts.verify {
            let read = match self.dst_bucket.get(key, None).await {
                Ok(got) => length_and_md5(got.body).await,
                Err(e) => Err(e),
            };
            match read {
                Ok((n, _)) if n == head.size => {}
                Ok(_) => return verify_failed(&stored, "the copy's plaintext has another length"),
                Err(e) => return verify_failed(&stored, &e.to_string()),
            }
        }
        match self
            .delete_if_unchanged(key, &info.meta.etag, 0, "moved to its encrypted name")
            .await
        {
            Outcome::Done { .. } => moved(),
            other => other,
        }
    }

    /// After a rename in place wrote and read back the new copy: remove the object under
    /// its old (stored) key `old` only if it still is the version read (a HEAD, then the
    /// delete: S3 and R2 offer no conditional delete here, so a write in between is lost;
    /// §3.12).
    async fn delete_if_unchanged(
        &self,
        old: &str,
        read_etag: &str,
        size: u64,
        how: &str,
    ) -> Outcome {
        match self.src.head(old).await {
            Ok(info) if store::etag_eq(&info.meta.etag, read_etag) => {}
            Ok(_) => {
                return Outcome::Conflict(format!(
                    "{}: changed after it was {how}; the copy holds the version read, the new one stays (rerun)",
                    self.location(old)
                ))
            }
            Err(e) if e.is_not_found() => return Outcome::Done { bytes: size },
            Err(e) => return Outcome::from_store_error(&e),
        }
        match self.src.delete(old).await {
            Ok(()) => Outcome::Done { bytes: size },
            Err(e) => Outcome::from_store_error(&e),
        }
    }

    /// Read a sealed object back, authenticate all of it and compare length and MD5.
    async fn read_back_sealed(&self, key: &str, size: u64, md5: &[u8]) -> Option<Outcome> {
        let got = match self.dst_bucket.get(key, None).await {
            Ok(g) => g,
            Err(e) => return Some(verify_failed(key, &e.to_string())),
        };
        let (n, got_md5) = match length_and_md5(got.body).await {
            Ok(v) => v,
            Err(e) => return Some(verify_failed(key, &e.to_string())),
        };
        if n != size || got_md5[..] != *md5 {
            return Some(verify_failed(
                key,
                "the object read back differs from the source (changed by someone else?)",
            ));
        }
        None
    }

    /// Under encrypted names: the plaintext key of listed key `stored`, or what to report.
    /// A name that does not decrypt is fine if it holds plaintext (a rerun lists what an
    /// earlier one unsealed).
    async fn unsealed_name(&self, stored: &str) -> Result<String, Outcome> {
        match super::rotate::plain_key_in(&self.src_bucket, stored, &self.opts.prefix) {
            Ok(key) => Ok(key),
            Err(Outcome::Failed(why)) => match self.src.head(stored).await {
                Ok(info) if !info.metadata.contains_key(METADATA_KEY) => {
                    Err(Outcome::Skipped(SKIP_PLAINTEXT.into()))
                }
                Ok(_) => Err(Outcome::Failed(why)),
                Err(e) if e.is_not_found() => Err(Outcome::Skipped(SKIP_GONE.into())),
                Err(e) => Err(Outcome::from_store_error(&e)),
            },
            Err(other) => Err(other),
        }
    }

    /// `item.key`: the stored key (an encrypted name with a name key).
    async fn unseal_one(&self, item: &Item) -> Outcome {
        let listed = item.key.as_str();
        // Where the object is read from, and whether it changes names.
        let (key, reader, renames) = if self.renames() {
            match self.unsealed_name(listed).await {
                Ok(k) => (k, &self.src_bucket, true),
                // A sealed object under its plaintext name: unsealed where it is (it
                // then opens only if bound to that name).
                Err(Outcome::Failed(_)) if listed.starts_with(&self.opts.prefix) => {
                    (listed.to_string(), &self.src_plain_names, false)
                }
                Err(Outcome::Failed(_)) => return Outcome::Skipped("outside the prefix".into()),
                Err(o) => return o,
            }
        } else {
            // (Under encrypted names a plaintext object is found by its name above.)
            if let Some(settled) = self.settled_by_head(item).await {
                return settled;
            }
            (listed.to_string(), &self.src_bucket, false)
        };
        let key = key.as_str();
        let dst_key = self.dst_key(key);
        match self.destination_taken(&dst_key).await {
            Ok(true) => return Outcome::Skipped(SKIP_DEST_EXISTS.into()),
            Ok(false) => {}
            Err(o) => return o,
        }
        let got = match reader.get(key, None).await {
            Ok(g) => g,
            Err(e) if e.is_not_found() => return Outcome::Skipped(SKIP_GONE.into()),
            Err(e) => return outcome_of(&e),
        };
        if !got.head.sealed {
            if renames && self.dest.is_none() {
                drop(got);
                return self.move_plaintext(listed, key).await;
            }
            return Outcome::Skipped(SKIP_PLAINTEXT.into());
        }
        let size = got.head.size;
        if self.opts.dry_run {
            return Outcome::Done { bytes: size };
        }
        let renamed_in_place = renames && self.dest.is_none();
        if renamed_in_place {
            // An earlier run may have written the plaintext copy and stopped before the
            // delete: finish that if it holds the same bytes, never overwrite it.
            match self.src.head(&dst_key).await {
                Ok(_) => return self.finish_unsealed_rename(listed, &dst_key, got).await,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Outcome::from_store_error(&e),
            }
        }
        let multipart = self.dst_bucket.goes_multipart(size);
        let (if_match, if_none_match) =
            self.conditions(&got.head.etag, multipart, renamed_in_place);
        let put = store::PutOptions {
            content_type: got.head.content_type.clone(),
            cache_control: got.head.cache_control.clone(),
            metadata: got.head.metadata.user.clone(),
            if_match,
            if_none_match,
        };
        if let Err(m) = store::check_put_options(&put) {
            return Outcome::Failed(format!(
                "{}: the sealed metadata cannot be stored as plaintext S3 headers: {m}",
                self.location(key)
            ));
        }
        let mut digest = Md5::new();
        let result = if multipart {
            self.put_plain_multipart(&dst_key, got.body, &put, &mut digest)
                .await
        } else if size > self.part_size {
            self.put_plain_stream(&dst_key, size, got.body, &put, &mut digest)
                .await
        } else {
            // The whole object authenticates before a single plaintext byte is written.
            let mut buf = Vec::with_capacity(size as usize);
            let mut body = got.body;
            loop {
                match body.try_next().await {
                    Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                    Ok(None) => break,
                    Err(e) => return outcome_of(&e),
                }
            }
            digest.update(&buf);
            self.dst_store()
                .put(&dst_key, buf.into(), &put)
                .await
                .map(drop)
                .map_err(SealedError::Store)
        };
        if let Err(e) = result {
            return outcome_of(&e);
        }
        if self.opts.verify || renamed_in_place {
            let want = digest.finalize();
            if let Some(problem) = self.read_back_plain(&dst_key, size, &want).await {
                return problem;
            }
        }
        if renamed_in_place {
            return self
                .delete_if_unchanged(
                    listed,
                    &got.head.etag,
                    size,
                    "unsealed under its plaintext name",
                )
                .await;
        }
        Outcome::Done { bytes: size }
    }

    /// `reverse` in place under encrypted names: move the plaintext object at its
    /// encrypted name `stored` to its plaintext name `key` as it is (server-side, no
    /// body through this process), never over an object there, and delete it at
    /// `stored` once the copy is checked.
    async fn move_plaintext(&self, stored: &str, key: &str) -> Outcome {
        let moved = || Outcome::DoneAs {
            bytes: 0,
            how: MOVED_PLAINTEXT.into(),
        };
        let info = match self.src.head(stored).await {
            Ok(i) if i.metadata.contains_key(METADATA_KEY) => {
                return Outcome::Conflict(format!("{}: sealed since read", self.location(stored)))
            }
            Ok(i) => i,
            Err(e) if e.is_not_found() => return Outcome::Skipped(SKIP_GONE.into()),
            Err(e) => return Outcome::from_store_error(&e),
        };
        if self.opts.dry_run {
            return moved();
        }
        let there = match self.src.head(key).await {
            Ok(there) => Some(there),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Outcome::from_store_error(&e),
        };
        if there.is_none() {
            let copy = self
                .src_plain_names
                .copy_stored_as_is(stored, key, &info, key)
                .await;
            if let Err(e) = copy {
                return outcome_of(&e);
            }
        }
        let same = match self.src.head(key).await {
            Ok(copy) => self.same_plaintext(stored, &info, key, &copy).await,
            Err(e) => Err(e.to_string()),
        };
        match (same, there.is_some()) {
            (Ok(true), _) => {}
            (Ok(false), true) => {
                return Outcome::Failed(format!(
                    "{}: plaintext under its encrypted name, and its plaintext name {key} already holds a different object; both kept",
                    self.location(stored)
                ))
            }
            (Ok(false), false) => return verify_failed(key, "the copy differs from the original"),
            (Err(why), _) => return Outcome::Retry(format!("{}: {why}", self.location(key))),
        }
        match self
            .delete_if_unchanged(stored, &info.meta.etag, 0, "moved to its plaintext name")
            .await
        {
            Outcome::Done { .. } => moved(),
            other => other,
        }
    }

    /// Whether plaintext objects `a` and `b` hold the same bytes: equal sizes and ETags,
    /// or (a copy's ETag may differ, e.g. after a multipart copy) equal MD5s read in full.
    async fn same_plaintext(
        &self,
        a: &str,
        a_info: &ObjectInfo,
        b: &str,
        b_info: &ObjectInfo,
    ) -> Result<bool, String> {
        if a_info.meta.size != b_info.meta.size || b_info.metadata.contains_key(METADATA_KEY) {
            return Ok(false);
        }
        if store::etag_eq(&a_info.meta.etag, &b_info.meta.etag) {
            return Ok(true);
        }
        Ok(self.plain_digest(a).await? == self.plain_digest(b).await?)
    }

    /// Reverse under encrypted names, when the plaintext name `plain` already holds an
    /// object: delete the sealed one (`stored`) only if `plain` holds exactly its
    /// plaintext, else keep both and report it.
    async fn finish_unsealed_rename(
        &self,
        stored: &str,
        plain: &str,
        got: sealed::GetObject,
    ) -> Outcome {
        let (size, etag) = (got.head.size, got.head.etag.clone());
        // The sealed plaintext, authenticated to its end.
        let (n, sealed_md5) = match length_and_md5(got.body).await {
            Ok(v) => v,
            Err(e) => return outcome_of(&e),
        };
        match self.plain_digest(plain).await {
            Ok((len, md5)) if len == n && md5 == sealed_md5 => {}
            Ok(_) => {
                return Outcome::Failed(format!(
                    "{}: its plaintext name {plain} already holds a different object; both kept",
                    self.location(stored)
                ))
            }
            Err(why) => return Outcome::Retry(format!("{}: {why}", self.location(plain))),
        }
        self.delete_if_unchanged(stored, &etag, size, "unsealed under its plaintext name")
            .await
    }

    /// Upload authenticated plaintext as a multipart upload, completed (conditionally, in
    /// place) only once the whole sealed object authenticated; aborted on any failure.
    /// One PutObject of the plaintext as it is opened. The opener releases each chunk only
    /// after its tag checked, and the final one only as the final chunk (its position
    /// follows from the size), so the request reaches its length only once the whole
    /// object authenticated; a failure before leaves it short and the server writes
    /// nothing. The opener's own error is reported, not the store's account of the cut.
    async fn put_plain_stream(
        &self,
        key: &str,
        size: u64,
        body: sealed::PlainStream,
        put: &store::PutOptions,
        digest: &mut Md5,
    ) -> Result<(), SealedError> {
        let (body, tap) = sealed::PlainTap::new(body);
        let result = self.dst_store().put_stream(key, size, body, put).await;
        let read = tap.finish()?;
        result?;
        *digest = read;
        Ok(())
    }

    async fn put_plain_multipart(
        &self,
        key: &str,
        mut body: sealed::PlainStream,
        put: &store::PutOptions,
        digest: &mut Md5,
    ) -> Result<(), SealedError> {
        let store = self.dst_store();
        let create = store::PutOptions {
            if_match: None,
            if_none_match: None,
            ..put.clone()
        };
        let upload_id = store.create_multipart(key, &create).await?;
        let part_size = self.part_size.max(MIN_PART_SIZE) as usize;
        let result: Result<(), SealedError> = async {
            let mut parts: Vec<UploadedPart> = Vec::new();
            let mut buf: Vec<u8> = Vec::with_capacity(part_size);
            let mut in_flight: Option<tokio::task::JoinHandle<Result<UploadedPart, StoreError>>> =
                None;
            loop {
                let chunk = body.try_next().await?;
                let end = chunk.is_none();
                if let Some(c) = &chunk {
                    digest.update(c);
                    buf.extend_from_slice(c);
                }
                while buf.len() >= part_size || (end && !buf.is_empty()) {
                    let take = buf.len().min(part_size);
                    let rest = buf.split_off(take);
                    let part = Bytes::from(std::mem::replace(&mut buf, rest));
                    // One part uploading while the next is read and authenticated.
                    if let Some(prev) = in_flight.take() {
                        parts.push(join_part(prev).await?);
                    }
                    let (store, key, id) = (store.clone(), key.to_string(), upload_id.clone());
                    let number = parts.len() as u32 + 1;
                    in_flight = Some(tokio::spawn(async move {
                        store.upload_part(&key, &id, number, part).await
                    }));
                }
                if end {
                    break;
                }
            }
            if let Some(prev) = in_flight.take() {
                parts.push(join_part(prev).await?);
            }
            match &put.if_match {
                Some(etag) => {
                    store
                        .complete_multipart_if_match(key, &upload_id, &parts, etag)
                        .await?
                }
                None => store.complete_multipart(key, &upload_id, &parts).await?,
            };
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = store.abort_multipart(key, &upload_id).await;
        }
        result
    }

    async fn read_back_plain(&self, key: &str, size: u64, md5: &[u8]) -> Option<Outcome> {
        match self.plain_digest(key).await {
            Err(why) => Some(verify_failed(key, &why)),
            Ok((n, digest)) if n != size || digest[..] != *md5 => Some(verify_failed(
                key,
                "the object read back differs from what was written (changed by someone else?)",
            )),
            Ok(_) => None,
        }
    }

    /// Length and MD5 of a plaintext object of the destination store.
    async fn plain_digest(&self, key: &str) -> Result<(u64, [u8; 16]), String> {
        let got = self
            .dst_store()
            .get(key, None, &GetOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        length_and_md5(got.body).await.map_err(|e| e.to_string())
    }

    fn location(&self, key: &str) -> String {
        format!("{}/{key}", self.src.url().trim_end_matches('/'))
    }
}

/// What a destination holds, compared with its source ([`Migrator::destination_state`]).
enum DestState {
    /// The source sealed.
    Current,
    /// An older version: replaced only if it still has this ETag.
    Stale { etag: String },
    /// Could not be compared.
    Uncompared,
    /// Deleted since the destination's listing.
    Gone,
}

/// The MD5 (hex) an ETag is, when it is one: a single-request upload's, not a
/// multipart `…-N` one.
fn plain_md5(etag: &str) -> Option<String> {
    let hex = etag.trim_matches('"');
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_string())
}

/// Whether two sealed objects are copies of each other as a server-side copy makes
/// them: same stored size and the same envelope (a sealed body opens only under its own
/// header; the copy's ETag may differ, e.g. after a multipart copy).
fn same_stored_object(a: &ObjectInfo, b: &ObjectInfo) -> bool {
    a.meta.size == b.meta.size
        && a.metadata.get(METADATA_KEY) == b.metadata.get(METADATA_KEY)
        && a.metadata.contains_key(METADATA_KEY)
}

/// Length and MD5 of a body, read to its end.
async fn length_and_md5<E>(
    mut body: impl futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
) -> Result<(u64, [u8; 16]), E> {
    let mut digest = Md5::new();
    let mut n = 0u64;
    while let Some(chunk) = body.try_next().await? {
        n += chunk.len() as u64;
        digest.update(&chunk);
    }
    Ok((n, digest.finalize().into()))
}

/// The keys under a destination prefix, listed once by a task of their own while the
/// walk runs. The walk hands out source keys in listing order and destination keys sort
/// like them (same suffix, one prefix), so a question about a key waits only until the
/// listing has gone past it. Keys are forgotten once found: memory holds the keys listed
/// ahead of the walk and destination keys without a source.
#[derive(Debug, Default)]
struct DestinationKeys {
    state: std::sync::Mutex<Listed>,
    progress: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Listed {
    /// Listed and not asked about yet.
    keys: std::collections::HashSet<String>,
    /// The last key listed: every key up to it is in `keys` (or was asked about).
    frontier: Option<String>,
    finished: bool,
    /// The listing failed or came out of order: callers fall back to a HEAD.
    unusable: bool,
}

impl DestinationKeys {
    fn start(store: Arc<dyn Store>, prefix: &str) -> Arc<Self> {
        let keys = Arc::new(DestinationKeys::default());
        let (weak, prefix) = (Arc::downgrade(&keys), prefix.to_string());
        tokio::spawn(async move {
            let mut token = None;
            loop {
                let mut attempt = 0;
                let page = loop {
                    match store
                        .list(&prefix, None, token.clone(), Some(store::DEFAULT_MAX_KEYS))
                        .await
                    {
                        Ok(page) => break Some(page),
                        Err(e) if e.is_retryable() && attempt < 3 => {
                            tokio::time::sleep(super::backoff(attempt)).await;
                            attempt += 1;
                        }
                        Err(_) => break None,
                    }
                };
                // The migration is over (or gone): stop listing.
                let Some(this) = weak.upgrade() else { return };
                let done = {
                    let mut s = this.state.lock().expect("not poisoned");
                    match &page {
                        None => s.unusable = true,
                        Some(page) => {
                            for o in &page.objects {
                                if s.frontier.as_ref().is_some_and(|f| o.key <= *f) {
                                    s.unusable = true;
                                }
                                s.frontier = Some(o.key.clone());
                                s.keys.insert(o.key.clone());
                            }
                            s.finished = page.next_continuation.is_none();
                        }
                    }
                    s.unusable || s.finished
                };
                this.progress.notify_waiters();
                match page.and_then(|p| p.next_continuation) {
                    Some(t) if !done => token = Some(t),
                    _ => return,
                }
            }
        });
        keys
    }

    /// Whether `key` is in the destination; `None` when the listing cannot say.
    async fn contains(&self, key: &str) -> Option<bool> {
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.state.lock().expect("not poisoned");
                if s.unusable {
                    return None;
                }
                if s.finished || s.frontier.as_deref().is_some_and(|f| f >= key) {
                    return Some(s.keys.remove(key));
                }
            }
            notified.await;
        }
    }
}

async fn join_part(
    h: tokio::task::JoinHandle<Result<UploadedPart, StoreError>>,
) -> Result<UploadedPart, SealedError> {
    match h.await {
        Ok(r) => Ok(r?),
        Err(e) => Err(SealedError::Invalid {
            location: String::new(),
            detail: format!("internal error: a part upload task failed: {e}"),
        }),
    }
}

fn verify_failed(key: &str, why: &str) -> Outcome {
    Outcome::Failed(format!("{key}: verification after writing failed: {why}"))
}

/// A sealed-bucket error as a job outcome: a refused condition is a conflict, transient
/// store errors and broken source streams are retried, the rest fail.
pub fn outcome_of(e: &SealedError) -> Outcome {
    match e {
        SealedError::Store(s) => Outcome::from_store_error(s),
        // Reading the source broke off mid-stream (network): a fresh attempt can work.
        SealedError::Io { .. } => Outcome::Retry(e.to_string()),
        _ => Outcome::Failed(e.to_string()),
    }
}
