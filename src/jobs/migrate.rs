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
use crate::sealed::{self, SealedBucket, SealedError, DEFAULT_PART_SIZE};
use crate::store::{self, GetOptions, Store, StoreError, UploadedPart, MIN_PART_SIZE};

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
    /// Objects larger than this go up as multipart uploads of parts this size (default
    /// and minimum as for [`SealedBucket::with_part_size`]).
    pub part_size: Option<u64>,
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
    /// Sealed objects written through this (recipients; identities for `verify`).
    dst_bucket: SealedBucket,
    dest: Option<Destination>,
    opts: MigrateOptions,
    part_size: u64,
}

/// Reasons for skipping, as they appear in reports.
pub const SKIP_SEALED: &str = "already sealed";
pub const SKIP_PLAINTEXT: &str = "not sealed";
pub const SKIP_DEST_EXISTS: &str = "destination exists";
pub const SKIP_GONE: &str = "deleted since listed";

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
        dst_bucket = dst_bucket
            .with_part_size(part_size)
            .checked_multipart(true)
            .allow_plaintext(false);
        Migrator {
            src,
            src_bucket,
            dst_bucket,
            dest,
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
            self.unseal_one(&item.key).await
        } else {
            self.seal_one(&item.key).await
        }
    }

    /// With a destination: skip when the destination key already holds an object (a
    /// previous run wrote it; writes are atomic, so it is complete).
    async fn destination_taken(&self, dst_key: &str) -> Result<bool, Outcome> {
        if self.dest.is_none() {
            return Ok(false);
        }
        match self.dst_store().head(dst_key).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(Outcome::from_store_error(&e)),
        }
    }

    /// Whether objects are written under encrypted names (`encrypt_names`).
    fn renames(&self) -> bool {
        self.opts.encrypt_names && self.dst_bucket.name_key().is_some()
    }

    /// The write condition: the version read (in place), or "create only" (destination).
    fn conditions(&self, etag: &str, multipart: bool) -> (Option<String>, Option<String>) {
        if self.renames() && self.dest.is_none() {
            // A new key: the condition is on deleting the old one (see `seal_one`).
            return (None, None);
        }
        match &self.dest {
            None => (Some(etag.to_string()), None),
            // No conditional create for multipart: the destination was checked just before.
            Some(_) if multipart => (None, None),
            Some(_) => (None, Some("*".to_string())),
        }
    }

    async fn seal_one(&self, key: &str) -> Outcome {
        let got = match self.src.get(key, None, &GetOptions::default()).await {
            Ok(g) => g,
            Err(e) if e.is_not_found() => return Outcome::Skipped(SKIP_GONE.into()),
            Err(e) => return Outcome::from_store_error(&e),
        };
        if got.info.metadata.contains_key(METADATA_KEY) {
            return Outcome::Skipped(SKIP_SEALED.into());
        }
        let dst_key = self.dst_key(key);
        let taken = match self.dst_bucket.stored_key(&dst_key) {
            Ok(stored) => self.destination_taken(&stored).await,
            Err(e) => return outcome_of(&e),
        };
        match taken {
            Ok(true) => return Outcome::Skipped(SKIP_DEST_EXISTS.into()),
            Ok(false) => {}
            Err(o) => return o,
        }
        let size = got.info.meta.size;
        if self.opts.dry_run {
            return Outcome::Done { bytes: size };
        }
        let read_etag = got.info.meta.etag.clone();
        let (if_match, if_none_match) = self.conditions(&read_etag, size > self.part_size);
        let opts = sealed::PutOptions {
            content_type: got.info.content_type.clone(),
            cache_control: got.info.cache_control.clone(),
            // Every user-metadata entry (rclone's `mtime` included) goes sealed.
            metadata: got.info.metadata.clone(),
            if_match,
            if_none_match,
            ..Default::default()
        };
        let digest = Arc::new(std::sync::Mutex::new(Md5::new()));
        let d = digest.clone();
        let body = got.body.map(move |chunk| {
            let chunk = chunk.map_err(io::Error::other)?;
            d.lock().expect("not poisoned").update(&chunk);
            Ok::<Bytes, io::Error>(chunk)
        });
        let put = self
            .dst_bucket
            .put_stream(&dst_key, body, Some(size), &opts)
            .await;
        if let Err(e) = put {
            return outcome_of(&e);
        }
        let renamed_in_place = self.renames() && self.dest.is_none();
        if self.opts.verify || renamed_in_place {
            let want = digest.lock().expect("not poisoned").clone().finalize();
            if let Some(problem) = self.read_back_sealed(&dst_key, size, &want).await {
                return problem;
            }
        }
        if renamed_in_place {
            // The sealed copy under the encrypted name authenticated; remove the plaintext
            // one only if it still is the version read (a HEAD, then the delete: S3 and R2
            // offer no conditional delete here, so a write in between is lost; §3.12).
            match self.src.head(key).await {
                Ok(info) if store::etag_eq(&info.meta.etag, &read_etag) => {}
                Ok(_) => {
                    return Outcome::Conflict(format!(
                        "{}: changed after it was sealed under its encrypted name; the sealed copy holds the version read, the new one stays (rerun)",
                        self.location(key)
                    ))
                }
                Err(e) if e.is_not_found() => return Outcome::Done { bytes: size },
                Err(e) => return Outcome::from_store_error(&e),
            }
            if let Err(e) = self.src.delete(key).await {
                return Outcome::from_store_error(&e);
            }
        }
        Outcome::Done { bytes: size }
    }

    /// Read a sealed object back, authenticate all of it and compare length and MD5.
    async fn read_back_sealed(&self, key: &str, size: u64, md5: &[u8]) -> Option<Outcome> {
        let got = match self.dst_bucket.get(key, None).await {
            Ok(g) => g,
            Err(e) => return Some(verify_failed(key, &e.to_string())),
        };
        let mut h = Md5::new();
        let mut n = 0u64;
        let mut body = got.body;
        loop {
            match body.try_next().await {
                Ok(Some(chunk)) => {
                    n += chunk.len() as u64;
                    h.update(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Some(verify_failed(key, &e.to_string())),
            }
        }
        if n != size || h.finalize()[..] != *md5 {
            return Some(verify_failed(
                key,
                "the object read back differs from the source (changed by someone else?)",
            ));
        }
        None
    }

    async fn unseal_one(&self, key: &str) -> Outcome {
        let got = match self.src_bucket.get(key, None).await {
            Ok(g) => g,
            Err(e) if e.is_not_found() => return Outcome::Skipped(SKIP_GONE.into()),
            Err(e) => return outcome_of(&e),
        };
        if !got.head.sealed {
            return Outcome::Skipped(SKIP_PLAINTEXT.into());
        }
        let dst_key = self.dst_key(key);
        match self.destination_taken(&dst_key).await {
            Ok(true) => return Outcome::Skipped(SKIP_DEST_EXISTS.into()),
            Ok(false) => {}
            Err(o) => return o,
        }
        let size = got.head.size;
        if self.opts.dry_run {
            return Outcome::Done { bytes: size };
        }
        let multipart = size > self.part_size;
        let (if_match, if_none_match) = self.conditions(&got.head.etag, multipart);
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
        if self.opts.verify {
            let want = digest.finalize();
            if let Some(problem) = self.read_back_plain(&dst_key, size, &want).await {
                return problem;
            }
        }
        Outcome::Done { bytes: size }
    }

    /// Upload authenticated plaintext as a multipart upload, completed (conditionally, in
    /// place) only once the whole sealed object authenticated; aborted on any failure.
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
        let got = match self
            .dst_store()
            .get(key, None, &GetOptions::default())
            .await
        {
            Ok(g) => g,
            Err(e) => return Some(verify_failed(key, &e.to_string())),
        };
        let mut h = Md5::new();
        let mut n = 0u64;
        let mut body = got.body;
        loop {
            match body.try_next().await {
                Ok(Some(chunk)) => {
                    n += chunk.len() as u64;
                    h.update(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Some(verify_failed(key, &e.to_string())),
            }
        }
        if n != size || h.finalize()[..] != *md5 {
            return Some(verify_failed(
                key,
                "the object read back differs from what was written (changed by someone else?)",
            ));
        }
        None
    }

    fn location(&self, key: &str) -> String {
        format!("{}/{key}", self.src.url().trim_end_matches('/'))
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
