//! A sealed bucket: objects in a [`Store`] that are sealed before they leave the process
//! and authenticated as they come back (SECURITY.md §3.9, "Objects in a bucket").
//!
//! ```text
//! SealedBucket::put ──► Envelope::seal (name = full key) ──► header → metadata `r2seal`
//!                   └─► PayloadSealer ──► nonce ‖ STREAM ──► Store::put / multipart
//! SealedBucket::get ◄── PayloadOpener ◄── Store::get (header from metadata, body streamed)
//! ```
//!
//! This module holds no cryptography: it drives the core's envelope, sealer, opener and
//! range planner over the store, and nothing else.
//!
//! # Layout (shared with the Worker build)
//! - The header, in metadata form, is the user-metadata entry `r2seal`; it must fit the
//!   store's metadata budget ([`Store::metadata_limit`]: R2's 8 KiB, AWS's 2 KB) or
//!   nothing is written.
//! - The body is the single-stream payload (16-byte nonce ‖ STREAM), so the plaintext size
//!   is a function of the stored size and a listing shows true sizes without a HEAD.
//! - The object is bound to its full key in the bucket (store prefix included).
//! - Large objects are multipart uploads of equal-size parts of that one payload, sliced at
//!   arbitrary byte offsets.
//! - User metadata, Content-Encoding/-Disposition/-Language, the plaintext size and (for
//!   single-request puts) its MD5 are sealed; Content-Type and Cache-Control stay readable.
//! - An object without `r2seal` metadata is plaintext, refused unless explicitly allowed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::descriptor::{
    Authenticity, BucketConfig, Descriptor, StoredForm, DESCRIPTOR_KEY, MAX_DESCRIPTOR_LEN,
};
use crate::format::envelope::PartsLayout;
use crate::format::header::{Header, METADATA_KEY};
use crate::format::stream::{payload_len, PAYLOAD_NONCE_SIZE};
use crate::format::{Binding, Envelope, FileKeyCache, SealedMetadata};
use crate::keys::keyring::Keyring;
use crate::keys::KeyId;
use crate::keys::{Identity, Recipient};
use crate::names::{NameKey, MAX_STORED_KEY_LEN};
use crate::seal::{plaintext_len, seal_part, PartSealer, PayloadOpener, PayloadSealer, RangePlan};
use crate::store::{
    self, ByteRange, ContentRange, CopyOptions, GetOptions, MultipartUpload, ObjectInfo,
    PartCopySource, ReplaceMetadata, Store, StoreError, UploadedPart, MAX_PARTS, MAX_PART_SIZE,
    MIN_PART_SIZE,
};
use crate::Error;

/// Default size of the parts of a multipart upload (stored bytes).
pub const DEFAULT_PART_SIZE: u64 = 16 * 1024 * 1024;
/// Default size above which an object of known length goes up as a multipart upload
/// (plaintext bytes; rclone's default upload cutoff). Up to it, an object goes up in
/// one PutObject: streamed when it is larger than a part, so memory stays bounded. One
/// request instead of at least four (R2 bills each), with the put's conditions enforced
/// by the server, and less work for it (bench/README.md).
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 200 * 1024 * 1024;
/// Largest multipart threshold: S3 and R2 take at most 5 GiB in one PutObject, and
/// sealing adds 16 bytes per 64 KiB chunk; this leaves room to spare.
const MAX_SINGLE_PUT_PLAINTEXT: u64 = 5000 * 1024 * 1024;
/// Default number of parts uploaded concurrently by one multipart upload.
pub const DEFAULT_PART_CONCURRENCY: usize = 4;
/// Bytes of sealed parts one upload keeps alive (in flight plus the one being
/// filled); fewer parts fly at once when parts are large (bench/README.md).
const PUT_PART_MEMORY: usize = 80 * 1024 * 1024;
/// Largest plaintext a ranged read opens at once: a bigger range is fetched in windows.
/// 2 MiB rather than 8: rclone's 4-stream download of 256 MiB through the gateway took
/// 3–7% less time and the gateway 11–13% less CPU (two A/Bs, 7 rounds each, bench/README).
const RANGE_WINDOW: u64 = 2 * 1024 * 1024;
/// Windows of a ranged read opened ahead of the one being sent (memory: this many
/// plaintext windows, plus one window of ciphertext, per read).
const RANGE_READ_AHEAD: usize = 2;
/// Times one ranged read re-requests the rest of its span after the upstream body was cut
/// (a retryable error mid-body: the SDK retries requests, not bodies already streaming).
const RANGE_RESUMES: u32 = 3;
/// A ranged read fetches the nonce and the chunks in one request when at most this many
/// unneeded bytes lie between them.
pub const RANGE_COALESCE_GAP: u64 = 256 * 1024;
/// User-metadata entry that marks a parts upload whose final header is not installed yet
/// (SECURITY.md §8): such an object never reads as plaintext.
pub const PENDING_KEY: &str = "r2seal-pending";
/// Sealed batches a streamed single put keeps queued ahead of its request.
const SINGLE_PUT_AHEAD: usize = 2;
/// Plaintext read from a source at a time.
const READ_SIZE: usize = 1024 * 1024;
/// A body sent in one request is hashed and sealed on a blocking thread above this size:
/// milliseconds of work would otherwise hold up every other request on the async thread
/// (the CLI runs only one).
const INLINE_WORK_LIMIT: usize = 256 * 1024;
/// A streamed get feeds the opener batches of about this many stored bytes.
const OPEN_BATCH: usize = 1024 * 1024;

/// `work` on a blocking thread when `off_thread`, else right here.
async fn run_cpu_work<T: Send + 'static>(
    off_thread: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    if !off_thread {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)
}

// ---------------------------------------------------------------------------------------
// Errors

/// A failed sealed-bucket operation. Displays on one line, with where it happened.
#[derive(Debug)]
#[non_exhaustive]
pub enum SealedError {
    /// The store failed: what, where, which kind and whether a retry can help.
    Store(StoreError),
    /// The object could not be opened: the core's (deliberately coarse) reason.
    Open { location: String, error: Error },
    /// The object could not be sealed (recipients, metadata budget, ...). Nothing was written.
    Seal { location: String, error: Error },
    /// The object has no `r2seal` metadata: it was stored in plaintext.
    Plaintext { location: String },
    /// A request this layer refuses (a conditional multipart upload, a bad range, ...).
    Invalid { location: String, detail: String },
    /// Reading the local input failed or it changed size while being read.
    Io { location: String, error: io::Error },
    /// The object was changed by someone else while this process rewrote it, where the
    /// store offers no atomic condition (detected afterwards; see SECURITY.md §3.9).
    Conflict { location: String, detail: String },
    /// `get_json` found authentic plaintext that is not the expected JSON. `detail` says
    /// what kind of mismatch and where, never what was found there: serde's own message
    /// quotes the value, and the value may be a token.
    Json { location: String, detail: String },
    /// The bucket descriptor (SECURITY.md §3.11) says the bucket is written otherwise
    /// than this writer would, or it is forged or unreadable: nothing was written.
    Descriptor { location: String, detail: String },
}

impl SealedError {
    /// The underlying store error, if the store failed.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            SealedError::Store(e) => Some(e),
            _ => None,
        }
    }

    /// The core's error, if opening or sealing failed.
    pub fn format_error(&self) -> Option<&Error> {
        match self {
            SealedError::Open { error, .. } | SealedError::Seal { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether trying again can help (only some store errors).
    pub fn is_retryable(&self) -> bool {
        self.store_error().is_some_and(StoreError::is_retryable)
    }

    pub fn is_not_found(&self) -> bool {
        self.store_error().is_some_and(StoreError::is_not_found)
    }

    /// A conditional write (If-Match / If-None-Match) did not hold (HTTP 412).
    pub fn is_precondition_failed(&self) -> bool {
        self.store_error()
            .is_some_and(StoreError::is_precondition_failed)
    }

    /// A conflicting write by someone else: a refused condition (412), or a change
    /// detected afterwards ([`SealedError::Conflict`]).
    pub fn is_conflict(&self) -> bool {
        self.is_precondition_failed() || matches!(self, SealedError::Conflict { .. })
    }

    pub fn is_plaintext(&self) -> bool {
        matches!(self, SealedError::Plaintext { .. })
    }

    /// The write was refused because of the bucket descriptor.
    pub fn is_descriptor(&self) -> bool {
        matches!(self, SealedError::Descriptor { .. })
    }
}

impl fmt::Display for SealedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealedError::Store(e) if e.is_precondition_failed() => write!(
                f,
                "{e} (the object changed or exists: the conditional write was refused, nothing was written)"
            ),
            SealedError::Store(e) => write!(f, "{e}"),
            SealedError::Open { location, error } => write!(f, "cannot open {location}: {error}"),
            SealedError::Seal { location, error } => {
                write!(f, "cannot seal {location}: {error} (nothing was written)")
            }
            SealedError::Plaintext { location } => write!(
                f,
                "{location} is a plaintext object (no r2seal envelope): refusing to read it as sealed (allow plaintext, e.g. --allow-plaintext, to read it as stored)"
            ),
            SealedError::Invalid { location, detail } => write!(f, "{location}: {detail}"),
            SealedError::Conflict { location, detail } => {
                write!(f, "{location}: conflict: {detail}")
            }
            SealedError::Io { location, error } => {
                write!(f, "{location}: cannot read the input: {error}")
            }
            SealedError::Json { location, detail } => {
                write!(f, "{location}: authentic, but not the expected JSON: {detail}")
            }
            SealedError::Descriptor { location, detail } => write!(
                f,
                "{location}: refusing to write: {detail} (see `r2seal bucket show`; nothing was written)"
            ),
        }
    }
}

impl std::error::Error for SealedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // Every variant's Display already includes its cause's message.
        None
    }
}

impl From<StoreError> for SealedError {
    fn from(e: StoreError) -> Self {
        SealedError::Store(e)
    }
}

type Res<T> = Result<T, SealedError>;

mod rotate;
pub use rotate::{Rekey, RotateAction, Rotated, RotationPlan};

// ---------------------------------------------------------------------------------------
// Keys and options

/// Whom new objects are sealed to.
#[derive(Clone, Debug)]
pub enum Recipients {
    /// The same recipients for every key.
    Fixed(Arc<[Recipient]>),
    /// A keyring's plan for each key (longest policy prefix, else the defaults).
    Keyring(Arc<Keyring>),
}

impl Recipients {
    pub fn fixed(recipients: Vec<Recipient>) -> Self {
        Recipients::Fixed(recipients.into())
    }

    /// The recipients for an object named `name` (its full key in the bucket).
    pub fn for_name(&self, name: &str) -> Result<Vec<Recipient>, Error> {
        match self {
            Recipients::Fixed(r) if r.is_empty() => Err(Error::InvalidRecipients("no recipients")),
            Recipients::Fixed(r) => Ok(r.to_vec()),
            Recipients::Keyring(k) => Ok(k.plan(name)?.recipients),
        }
    }
}

/// Options of a sealed put.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Readable `Content-Type` (not sealed, so browsers and CDNs keep working).
    pub content_type: Option<String>,
    /// Readable `Cache-Control`.
    pub cache_control: Option<String>,
    /// Sealed Content-Encoding of the plaintext (never set on the stored ciphertext).
    pub content_encoding: Option<String>,
    /// Sealed Content-Disposition.
    pub content_disposition: Option<String>,
    /// Sealed Content-Language.
    pub content_language: Option<String>,
    /// Sealed user metadata (any UTF-8: it never becomes an HTTP header).
    pub metadata: BTreeMap<String, String>,
    /// Write only if the current object has this ETag (single-request puts only).
    pub if_match: Option<String>,
    /// `Some("*")`: create only if the key is free (single-request puts only).
    pub if_none_match: Option<String>,
}

impl PutOptions {
    /// Options that create the object only if the key is free (`If-None-Match: *`).
    pub fn create_only() -> Self {
        PutOptions {
            if_none_match: Some("*".into()),
            ..Default::default()
        }
    }

    /// Whether a multipart upload must refuse these conditions (see
    /// [`SealedBucket::checked_multipart`]).
    fn refuses_multipart(&self, checked: bool) -> bool {
        self.if_none_match.is_some() || (self.if_match.is_some() && !checked)
    }
}

/// What a successful put or copy returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// ETag of the stored (sealed) object, quoted as the store returned it.
    pub etag: String,
    /// Plaintext bytes.
    pub size: u64,
    /// Stored bytes (nonce ‖ STREAM).
    pub stored_size: u64,
    /// Parts of the multipart upload, 0 for a single request (or a copy).
    pub parts: u32,
    /// The plaintext's MD5 (hex), sealed into the header, when the put computed it: for
    /// objects sealed in memory (up to a part). `None` for streamed and multipart puts
    /// and for copies.
    pub md5: Option<String>,
}

/// A parts upload in progress: the store's upload and the pending envelope whose file key
/// seals every part. Holds a secret (the file key is zeroized on drop; `Debug` omits it).
pub struct PartsUpload {
    key: String,
    stored_key: String,
    upload_id: String,
    envelope: Envelope,
    opts: PutOptions,
}

impl fmt::Debug for PartsUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartsUpload")
            .field("key", &self.key)
            .field("upload_id", &self.upload_id)
            .finish_non_exhaustive()
    }
}

impl PartsUpload {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The store's upload id.
    pub fn upload_id(&self) -> &str {
        &self.upload_id
    }
}

/// One sealed, uploaded part of a [`PartsUpload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedPart {
    pub part_number: u32,
    /// The salt its key was derived from (committed to by the final header).
    pub salt: [u8; PAYLOAD_NONCE_SIZE],
    /// Plaintext bytes.
    pub size: u64,
    /// The store's ETag for the stored (sealed) part.
    pub etag: String,
}

/// How [`SealedBucket::copy_with`] copies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyRequest {
    /// Copy only if the source's stored ETag is this one.
    pub source_etag: Option<String>,
    /// Replace the metadata: user metadata, sealed and readable headers come from here
    /// (its conditions are ignored). `None` keeps the source's.
    pub replace: Option<PutOptions>,
    /// Record this plaintext MD5 (hex) in the sealed metadata.
    pub set_md5: Option<String>,
}

/// An object as `head` (and `get`) describe it, after its envelope opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    /// Key relative to the store's root.
    pub key: String,
    /// Plaintext size (for a plaintext object: its stored size).
    pub size: u64,
    /// Stored size.
    pub stored_size: u64,
    /// ETag of the stored object.
    pub etag: String,
    pub last_modified: Option<SystemTime>,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    /// Sealed metadata (authenticated). For a plaintext object: its stored user metadata.
    pub metadata: SealedMetadata,
    /// False for a plaintext object read with plaintext allowed.
    pub sealed: bool,
    /// The plaintext part sizes of an object sealed in parts.
    pub parts: Option<PartsLayout>,
}

/// Authenticated plaintext as it arrives. A chunk is yielded only after it authenticated;
/// truncation or tampering later in the object ends the stream with an error, so a consumer
/// must treat the bytes as final only once the stream ended without one.
pub type PlainStream = BoxStream<'static, Result<Bytes, SealedError>>;

/// A [`PlainStream`] as the body of a write (`io::Result` items), with the MD5 of what
/// passed taken on the way. An opener's failure is kept, to be reported as itself rather
/// than as the write's account of a body that ended short.
pub struct PlainTap(Arc<std::sync::Mutex<(Md5, Option<SealedError>)>>);

impl fmt::Debug for PlainTap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainTap").finish_non_exhaustive()
    }
}

impl PlainTap {
    pub fn new(body: PlainStream) -> (BoxStream<'static, io::Result<Bytes>>, PlainTap) {
        let state = Arc::new(std::sync::Mutex::new((Md5::new(), None)));
        let seen = state.clone();
        let body = body
            .map(move |item| {
                let mut seen = seen.lock().expect("not poisoned");
                match item {
                    Ok(chunk) => {
                        seen.0.update(&chunk);
                        Ok(chunk)
                    }
                    Err(e) => {
                        let shown = io::Error::other(e.to_string());
                        seen.1 = Some(e);
                        Err(shown)
                    }
                }
            })
            .boxed();
        (body, PlainTap(state))
    }

    /// The MD5 state over what passed, or the opener's failure.
    pub fn finish(self) -> Result<Md5, SealedError> {
        let (md5, failure) = std::mem::take(&mut *self.0.lock().expect("not poisoned"));
        match failure {
            Some(e) => Err(e),
            None => Ok(md5),
        }
    }
}

/// A get in progress.
pub struct GetObject {
    pub head: ObjectHead,
    /// The plaintext bytes served: `None` for the whole object.
    pub range: Option<ContentRange>,
    pub body: PlainStream,
}

impl fmt::Debug for GetObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetObject")
            .field("head", &self.head)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl GetObject {
    /// Read the whole (authenticated) body into memory.
    pub async fn bytes(self) -> Res<Bytes> {
        let mut out = Vec::new();
        let mut body = self.body;
        while let Some(chunk) = body.try_next().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out.into())
    }
}

/// An object in a listing, with its plaintext size computed from its stored size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// The plaintext key (relative to the store root).
    pub key: String,
    /// The key in the store: equal to `key` unless names are encrypted.
    pub stored_key: String,
    /// Plaintext size if the stored size is one a sealed single-stream object can have
    /// (`None` otherwise). Not authenticated, and computed as for a single stream: for a
    /// plaintext object or one in the parts layout (SECURITY.md §8, larger than a part)
    /// that happens to have such a size it is wrong, and `head` gives the true one.
    pub size: Option<u64>,
    pub stored_size: u64,
    pub etag: String,
    pub last_modified: Option<SystemTime>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ListedObject>,
    pub common_prefixes: Vec<String>,
    pub next_continuation: Option<String>,
    /// With encrypted names: stored objects whose key does not decrypt under the name
    /// key (plaintext leftovers of a migration, foreign or tampered keys). `key` and
    /// `stored_key` are both the stored key. Reported, never opened.
    pub undecryptable: Vec<ListedObject>,
    /// Common prefixes (stored form) that do not decrypt.
    pub undecryptable_prefixes: Vec<String>,
}

/// Where a listing page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFrom {
    /// The first page.
    Start,
    /// The first page after this key (S3's StartAfter, ListObjects' marker). With
    /// encrypted names "after" is in stored-key order, the order listings come in.
    After(String),
    /// The page a previous one's `next_continuation` points at.
    Continuation(String),
}

/// The reserved prefix at the store root for r2seal's own objects (the bucket
/// descriptor). Hidden from listings; sealed writes under it are refused.
pub const RESERVED_PREFIX: &str = ".r2seal/";

// ---------------------------------------------------------------------------------------
// The bucket

/// A multipart upload older than this, of a key being written again, was left behind by
/// a crash and is aborted by the new write (`r2seal cleanup` uses the same default).
pub const STALE_UPLOAD_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// A bucket (or a prefix of one) whose objects are sealed. Cheap to clone.
#[derive(Clone)]
pub struct SealedBucket {
    store: Arc<dyn Store>,
    recipients: Option<Recipients>,
    identities: Arc<[Identity]>,
    name_prefix: String,
    part_size: u64,
    multipart_threshold: u64,
    /// Objects stored larger than this are copied with multipart `UploadPartCopy`.
    copy_limit: u64,
    concurrency: usize,
    allow_plaintext: bool,
    names: Option<Arc<NameKey>>,
    check_descriptor: bool,
    /// Set once the descriptor check passed (shared by clones). An async cell: callers
    /// arriving while the first check runs wait for it instead of each reading the
    /// descriptor (16 migrate jobs starting at once sent 16 GETs); a failed check leaves
    /// it empty, so the next caller checks again.
    descriptor_ok: Arc<tokio::sync::OnceCell<()>>,
    checked_multipart: bool,
    /// Earlier uploads of a key older than this are aborted by a new multipart write.
    stale_upload_age: Duration,
    /// Salts of parts-layout objects, checked against their header's digest (shared by
    /// clones): concurrent and repeated ranged reads of one object fetch them once.
    checked_salts: Arc<std::sync::Mutex<HashMap<SaltsId, SaltsCell>>>,
    /// File keys of envelopes already opened or sealed here (shared by clones), for
    /// these identities only: `with_identities` starts a new cache.
    file_keys: Arc<FileKeyCache>,
    /// The identities' own recipients: a key sealed to one of them is remembered.
    identity_recipients: Arc<[Recipient]>,
}

/// An object version's salts: (stored key, stored ETag, salts digest of its header).
type SaltsId = (String, String, [u8; 32]);
/// Checked salts, filled by the first read that needs them (the others wait for it).
type SaltsCell = Arc<tokio::sync::OnceCell<Arc<Salts>>>;
/// Objects whose checked salts are kept (each at most 16 bytes × 10,000 parts).
const CHECKED_SALTS_KEPT: usize = 64;

impl fmt::Debug for SealedBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedBucket")
            .field("store", &self.store.url())
            .field("name_prefix", &self.name_prefix)
            .field("identities", &self.identities.len())
            .field("part_size", &self.part_size)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("names", &self.names.as_ref().map(|k| k.id()))
            .field("cached_file_keys", &self.file_keys.len())
            .finish_non_exhaustive()
    }
}

/// The key prefix a store URL puts in front of every key: `s3://bucket/pre/` → `pre/`.
/// Objects are bound to their full key in the bucket, so this is part of every name.
fn name_prefix_of(url: &str) -> String {
    match url.split_once("://") {
        Some(("s3" | "r2", rest)) => rest
            .split_once('/')
            .map(|(_, p)| p.to_string())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

impl SealedBucket {
    /// A sealed view of `store`, with no keys yet: add recipients to write and identities
    /// to read. The name prefix is taken from the store's URL (`s3://bucket/prefix/`).
    pub fn new(store: Arc<dyn Store>) -> SealedBucket {
        let name_prefix = name_prefix_of(store.url());
        SealedBucket {
            store,
            recipients: None,
            identities: Arc::from(Vec::new()),
            name_prefix,
            part_size: DEFAULT_PART_SIZE,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            copy_limit: store::MAX_COPY_SIZE,
            concurrency: DEFAULT_PART_CONCURRENCY,
            stale_upload_age: STALE_UPLOAD_AGE,
            allow_plaintext: false,
            names: None,
            check_descriptor: true,
            descriptor_ok: Arc::default(),
            checked_multipart: false,
            checked_salts: Arc::default(),
            file_keys: Arc::default(),
            identity_recipients: Arc::from(Vec::new()),
        }
    }

    /// Check the bucket descriptor before the first write (on by default). Off only for
    /// tools that must write to a bucket whatever it says (e.g. a migration that is
    /// about to rewrite the descriptor itself).
    pub fn with_descriptor_check(mut self, check: bool) -> Self {
        self.check_descriptor = check;
        self
    }

    /// What this bucket would write, as a descriptor records it: the form, the name key
    /// id and the recipients' key ids per prefix. `None` without recipients.
    pub fn bucket_config(&self) -> Option<BucketConfig> {
        let names = self.names.as_ref().map(|k| k.id());
        Some(match self.recipients.as_ref()? {
            Recipients::Fixed(r) => BucketConfig::new(
                StoredForm::Metadata,
                names,
                r.iter().map(Recipient::key_id),
                [],
            ),
            Recipients::Keyring(k) => BucketConfig::new(
                StoredForm::Metadata,
                names,
                k.default_keys().iter().map(|key| key.id()),
                k.policies().iter().map(|p| {
                    let ids = p.keys.iter().filter_map(|n| k.get(n)).map(|key| key.id());
                    (p.prefix.clone(), ids.collect())
                }),
            ),
        })
    }

    fn held_sym_keys(&self) -> Vec<crate::keys::SymKey> {
        self.identities
            .iter()
            .filter_map(|i| match i {
                Identity::Sym(k) => Some(k.clone()),
                Identity::X25519(_) => None,
            })
            .collect()
    }

    /// The bucket descriptor, if there is one, and whether a MAC under a symmetric key
    /// this bucket holds verified. A forged MAC (under a key held here) is an error.
    pub async fn read_descriptor(&self) -> Res<Option<(Descriptor, Authenticity)>> {
        let location = self.location(DESCRIPTOR_KEY);
        let got = match self
            .store
            .get(DESCRIPTOR_KEY, None, &GetOptions::default())
            .await
        {
            Ok(got) => got,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let open_err = |error| SealedError::Open {
            location: location.clone(),
            error,
        };
        let too_large = || open_err(Error::Malformed("bucket descriptor: larger than 64 KiB"));
        if got.info.meta.size > MAX_DESCRIPTOR_LEN as u64 {
            return Err(too_large());
        }
        let bytes = got
            .bytes_at_most(MAX_DESCRIPTOR_LEN)
            .await?
            .ok_or_else(too_large)?;
        let descriptor = Descriptor::parse(&bytes).map_err(open_err)?;
        let auth = descriptor.verify(&self.held_sym_keys()).map_err(open_err)?;
        Ok(Some((descriptor, auth)))
    }

    /// Write the descriptor of [`bucket_config`](Self::bucket_config), with a MAC under
    /// every symmetric key this bucket holds. Refuses to replace an existing descriptor
    /// unless `replace` (then only the one read just before, by its ETag).
    pub async fn write_descriptor(&self, replace: bool) -> Res<Descriptor> {
        let location = self.location(DESCRIPTOR_KEY);
        let config = self.bucket_config().ok_or_else(|| SealedError::Seal {
            location: location.clone(),
            error: Error::InvalidRecipients("no recipients configured"),
        })?;
        let descriptor = Descriptor::new(config, &self.held_sym_keys());
        let existing = match self.store.head(DESCRIPTOR_KEY).await {
            Ok(info) => Some(info.meta.etag),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        if existing.is_some() && !replace {
            return Err(SealedError::Invalid {
                location,
                detail: "a bucket descriptor exists already: replace it explicitly (r2seal bucket init --replace)".into(),
            });
        }
        let opts = store::PutOptions {
            content_type: Some("text/plain; charset=utf-8".into()),
            if_match: existing.clone(),
            if_none_match: existing.is_none().then(|| "*".to_string()),
            ..Default::default()
        };
        self.store
            .put(DESCRIPTOR_KEY, descriptor.to_bytes().into(), &opts)
            .await?;
        // Fails only if set already, or while a check runs (which then decides).
        let _ = self.descriptor_ok.set(());
        Ok(descriptor)
    }

    /// Before the first write of this instance (and its clones): compare the bucket's
    /// descriptor with what this bucket writes. No descriptor: nothing to compare.
    async fn ensure_descriptor(&self, key: &str) -> Res<()> {
        if !self.check_descriptor || self.descriptor_ok.initialized() {
            return Ok(());
        }
        let Some(mine) = self.bucket_config() else {
            return Ok(()); // no recipients: the write fails on its own
        };
        // One caller checks at a time; a failure goes to that caller (located at its
        // key) and the next one waiting checks again.
        self.descriptor_ok
            .get_or_try_init(|| self.check_descriptor_against(&mine, key))
            .await
            .map(drop)
    }

    /// The descriptor check itself: the bucket's descriptor, if any, against `mine`.
    async fn check_descriptor_against(&self, mine: &BucketConfig, key: &str) -> Res<()> {
        let refuse = |detail: String| SealedError::Descriptor {
            location: self.location(key),
            detail,
        };
        let found = match self.read_descriptor().await {
            Ok(found) => found,
            Err(SealedError::Open { error, .. }) => {
                return Err(refuse(format!(
                    "the bucket descriptor ({DESCRIPTOR_KEY}) is unusable: {error}"
                )))
            }
            Err(e) => return Err(e),
        };
        if let Some((descriptor, _)) = found {
            let diff = descriptor.config.differences(mine);
            if !diff.is_empty() {
                return Err(refuse(format!(
                    "this writer does not match the bucket descriptor: {}",
                    diff.join("; ")
                )));
            }
        }
        Ok(())
    }

    /// Encrypt object names with `key` (SECURITY.md §3.10): every operation takes and
    /// returns plaintext keys and maps them to stored keys itself; listings decrypt.
    /// The name binding inside each envelope stays the plaintext name.
    pub fn with_name_key(mut self, key: NameKey) -> Self {
        self.names = Some(Arc::new(key));
        self.descriptor_ok = Arc::default(); // another configuration: check again
        self
    }

    /// This view with plaintext stored keys: for objects a migration finds under their
    /// plaintext names in a bucket whose names are encrypted (SECURITY.md §3.12).
    pub(crate) fn without_name_key(mut self) -> Self {
        self.names = None;
        self.descriptor_ok = Arc::default(); // another configuration: check again
        self
    }

    /// The name key, if names are encrypted.
    pub fn name_key(&self) -> Option<&NameKey> {
        self.names.as_deref()
    }

    /// The key an object with plaintext key `key` has in the store: `key` itself, or
    /// its encrypted form. Fails when the stored key would exceed R2's 1,024 bytes
    /// (store prefix included), before anything is written. For migrations: write under
    /// this key, then delete the plaintext one.
    pub fn stored_key(&self, key: &str) -> Res<String> {
        let Some(k) = &self.names else {
            return Ok(key.to_string());
        };
        let limit = MAX_STORED_KEY_LEN.saturating_sub(self.name_prefix.len());
        k.encrypt_within(key, limit)
            .map_err(|error| SealedError::Seal {
                location: self.location(key),
                error,
            })
    }

    /// The plaintext key of stored key `stored` (the inverse of
    /// [`stored_key`](Self::stored_key)); `Open` with `Corrupt`/`Malformed` when it
    /// does not decrypt under the name key.
    pub fn plain_key(&self, stored: &str) -> Res<String> {
        let Some(k) = &self.names else {
            return Ok(stored.to_string());
        };
        k.decrypt(stored).map_err(|error| SealedError::Open {
            location: self.location(stored),
            error,
        })
    }

    /// The stored key for a write: also refuses the reserved prefix.
    fn stored_key_for_write(&self, key: &str) -> Res<String> {
        if key.starts_with(RESERVED_PREFIX) {
            return Err(SealedError::Invalid {
                location: self.location(key),
                detail: format!("{RESERVED_PREFIX} is reserved for r2seal's own objects"),
            });
        }
        self.stored_key(key)
    }

    /// Seal to these recipients (every key).
    pub fn with_recipients(mut self, recipients: Recipients) -> Self {
        self.recipients = Some(recipients);
        self.descriptor_ok = Arc::default(); // another configuration: check again
        self
    }

    /// Open with these identities.
    pub fn with_identities(mut self, identities: Vec<Identity>) -> Self {
        self.identity_recipients = identities.iter().map(Identity::to_recipient).collect();
        self.identities = identities.into();
        self.file_keys = Arc::default();
        self
    }

    /// Seal by the keyring's plan for each key, open with its identities, and, where the
    /// keyring names a name key (`names = "…"`, `r2seal key names`), encrypt object names
    /// with it as [`with_name_key`](Self::with_name_key) does.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use r2seal::keys::keyring::{Key, KeyMaterial, KeyStatus, Keyring};
    /// use r2seal::keys::SymKey;
    /// use r2seal::sealed::{PutOptions, SealedBucket};
    /// use r2seal::store::{fs::FsStore, Store};
    ///
    /// let mut ring = Keyring::default();
    /// ring.add(Key {
    ///     name: "main".into(),
    ///     material: KeyMaterial::Sym(SymKey::generate()),
    ///     created: "2026-11-27T00:00:00Z".into(),
    ///     status: KeyStatus::Active,
    ///     recovery: false,
    /// })?;
    /// ring.set_names(Some("main".into()))?;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store: Arc<dyn Store> = Arc::new(FsStore::new(dir.path())?);
    /// let bucket = SealedBucket::new(store.clone()).with_keyring(ring);
    /// let rt = tokio::runtime::Builder::new_current_thread().build()?;
    /// rt.block_on(async {
    ///     let token = serde_json::json!({ "token": "xoxb-1" });
    ///     bucket.put_json("credentials/slack.json", &token, &PutOptions::default()).await?;
    ///     let back: serde_json::Value = bucket.get_json("credentials/slack.json").await?;
    ///     assert_eq!(back, token);
    ///     // The store holds neither the token nor the name.
    ///     let stored = store.list("", None, None, None).await?;
    ///     assert!(!stored.objects.is_empty());
    ///     assert!(stored.objects.iter().all(|o| !o.key.contains("slack")));
    ///     Ok::<_, Box<dyn std::error::Error>>(())
    /// })?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_keyring(self, keyring: Keyring) -> Self {
        let identities = keyring.identities();
        let names = keyring.name_key();
        let bucket = self
            .with_recipients(Recipients::Keyring(Arc::new(keyring)))
            .with_identities(identities);
        match names {
            Some(key) => bucket.with_name_key(key),
            None => bucket,
        }
    }

    /// Stored bytes per part of a multipart upload (at least 5 MiB; raised automatically
    /// when an object of known length would need more than 10,000 parts). A put of up to
    /// this many bytes is sealed in memory and sent as one request the SDK can retry; a
    /// put of unknown length (stdin) that turns out longer goes multipart.
    pub fn with_part_size(mut self, part_size: u64) -> Self {
        self.part_size = part_size.max(MIN_PART_SIZE);
        self
    }

    /// Objects of known length above `threshold` plaintext bytes go up as multipart
    /// uploads (default [`DEFAULT_MULTIPART_THRESHOLD`]); those up to it in one request,
    /// streamed if they are larger than a part. Capped at what S3 takes in one PutObject
    /// (5 GiB, sealed).
    pub fn with_multipart_threshold(mut self, threshold: u64) -> Self {
        self.multipart_threshold = threshold.min(MAX_SINGLE_PUT_PLAINTEXT);
        self
    }

    /// Whether a put of `len` plaintext bytes (known up front) goes multipart; conditions
    /// on such a put need [`checked_multipart`](Self::checked_multipart).
    pub fn goes_multipart(&self, len: u64) -> bool {
        len > self.multipart_threshold
    }

    /// Objects whose stored size exceeds `limit` bytes are copied (`copy`, `rename`,
    /// rotation) part by part with `UploadPartCopy` instead of one `CopyObject`. S3 and
    /// R2 copy at most 5 GiB in one request, the default and the largest value allowed;
    /// tests lower it to exercise the multipart path without 5 GiB objects.
    pub fn with_copy_limit(mut self, limit: u64) -> Self {
        self.copy_limit = limit.min(store::MAX_COPY_SIZE);
        self
    }

    /// Parts in flight per multipart upload (at least 1).
    pub fn with_part_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How old an earlier, unfinished upload of a key must be before a new multipart write
    /// of that key aborts it (default [`STALE_UPLOAD_AGE`]; lower only where no other
    /// writer can be uploading the same key).
    pub fn with_stale_upload_age(mut self, age: Duration) -> Self {
        self.stale_upload_age = age;
        self
    }

    /// Return plaintext objects as they are (flagged `sealed: false`) instead of failing.
    pub fn allow_plaintext(mut self, allow: bool) -> Self {
        self.allow_plaintext = allow;
        self
    }

    /// Accept `if_match` on puts that go multipart (refused by default): the upload is
    /// completed only if the object still has that ETag — atomically where the server
    /// honours `If-Match` on CompleteMultipartUpload (R2, AWS S3), elsewhere by a check
    /// right before completing that leaves a short window (SECURITY.md §3.12).
    pub fn checked_multipart(mut self, accept: bool) -> Self {
        self.checked_multipart = accept;
        self
    }

    /// Override the prefix prepended to keys to form the names objects are bound to.
    pub fn with_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whom new objects are sealed to, if configured.
    pub fn recipients(&self) -> Option<&Recipients> {
        self.recipients.as_ref()
    }

    /// The identities objects are opened with.
    pub fn identities(&self) -> &[Identity] {
        &self.identities
    }

    /// The name an object at `key` is bound to: its full key in the bucket.
    pub fn name_of(&self, key: &str) -> String {
        format!("{}{key}", self.name_prefix)
    }

    pub(crate) fn location(&self, key: &str) -> String {
        let url = self.store.url();
        if url.ends_with('/') {
            format!("{url}{key}")
        } else {
            format!("{url}/{key}")
        }
    }

    // ---- writing ----

    /// Seal and store `body` (in memory). Objects above the part size go multipart.
    pub async fn put(
        &self,
        key: &str,
        body: impl Into<Bytes>,
        opts: &PutOptions,
    ) -> Res<PutResult> {
        let body: Bytes = body.into();
        let len = body.len() as u64;
        let pieces = futures_util::stream::iter(slices(body, READ_SIZE).into_iter().map(Ok));
        self.put_source(key, Source::Stream(Box::pin(pieces)), Some(len), opts)
            .await
    }

    /// Seal and store the bytes of `reader`. With `len` known the part size is chosen from
    /// it and the sealed size is recorded; with `None` (stdin) the first part is read ahead
    /// to decide between one request and a multipart upload. Memory stays bounded by about
    /// `(part concurrency + 2) × part size`, and 80 MiB of parts when that is less (one
    /// part in flight at least).
    pub async fn put_reader<R>(
        &self,
        key: &str,
        reader: R,
        len: Option<u64>,
        opts: &PutOptions,
    ) -> Res<PutResult>
    where
        R: AsyncRead + Send + Unpin,
    {
        self.put_source(key, Source::Reader(Box::pin(reader)), len, opts)
            .await
    }

    /// Like [`put_reader`](Self::put_reader), from a stream of byte chunks.
    pub async fn put_stream<S>(
        &self,
        key: &str,
        stream: S,
        len: Option<u64>,
        opts: &PutOptions,
    ) -> Res<PutResult>
    where
        S: Stream<Item = io::Result<Bytes>> + Send,
    {
        self.put_source(key, Source::Stream(Box::pin(stream.fuse())), len, opts)
            .await
    }

    /// Seal and store a local file, streaming it.
    pub async fn put_file(&self, key: &str, path: &Path, opts: &PutOptions) -> Res<PutResult> {
        let io_err = |error| SealedError::Io {
            location: path.display().to_string(),
            error,
        };
        let file = tokio::fs::File::open(path).await.map_err(io_err)?;
        let len = file.metadata().await.map_err(io_err)?.len();
        self.put_reader(key, file, Some(len), opts).await
    }

    /// Serialize `value` as JSON and store it sealed (`Content-Type: application/json`).
    pub async fn put_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        opts: &PutOptions,
    ) -> Res<PutResult> {
        let json = serde_json::to_vec(value).map_err(|e| SealedError::Invalid {
            location: self.location(key),
            detail: format!("value does not serialize to JSON: {e}"),
        })?;
        let mut opts = opts.clone();
        opts.content_type
            .get_or_insert_with(|| "application/json".to_string());
        self.put(key, json, &opts).await
    }

    fn seal_envelope(
        &self,
        key: &str,
        metadata: SealedMetadata,
    ) -> Res<(Envelope, BTreeMap<String, String>)> {
        let name = self.name_of(key);
        let seal_err = |error| SealedError::Seal {
            location: self.location(key),
            error,
        };
        let recipients = self
            .recipients
            .as_ref()
            .ok_or(Error::InvalidRecipients("no recipients configured"))
            .and_then(|r| r.for_name(&name))
            .map_err(seal_err)?;
        let mut metadata = metadata;
        metadata.recipients = key_ids(&recipients);
        metadata.wrapped_to = metadata.recipients.clone();
        let envelope = Envelope::seal(
            &recipients,
            Binding {
                name: Some(name),
                metadata: Some(metadata),
                parts: None,
                part_salts: None,
            },
        )
        .map_err(seal_err)?;
        // A HEAD or GET that follows (rclone HEADs every object it put) then skips the
        // unwrap, when these identities could have done it.
        if recipients
            .iter()
            .any(|r| self.identity_recipients.iter().any(|i| i.same_key(r)))
        {
            self.file_keys.remember(&envelope);
        }
        let value = envelope
            .header()
            .to_metadata_value_within(self.store.metadata_limit())
            .map_err(seal_err)?;
        let stored = BTreeMap::from([(METADATA_KEY.to_string(), value)]);
        Ok((envelope, stored))
    }

    fn sealed_metadata(
        opts: &PutOptions,
        size: Option<u64>,
        md5: Option<String>,
    ) -> SealedMetadata {
        SealedMetadata {
            size,
            md5,
            content_encoding: opts.content_encoding.clone(),
            content_disposition: opts.content_disposition.clone(),
            content_language: opts.content_language.clone(),
            user: opts.metadata.clone(),
            ..Default::default()
        }
    }

    fn store_put_options(
        opts: &PutOptions,
        metadata: BTreeMap<String, String>,
    ) -> store::PutOptions {
        store::PutOptions {
            content_type: opts.content_type.clone(),
            cache_control: opts.cache_control.clone(),
            metadata,
            if_match: opts.if_match.clone(),
            if_none_match: opts.if_none_match.clone(),
        }
    }

    /// The stored part size for an object of `len` plaintext bytes (if known).
    fn part_size_for(&self, len: Option<u64>) -> u64 {
        let Some(len) = len else {
            return self.part_size;
        };
        const MIB: u64 = 1024 * 1024;
        let needed = payload_len(len).div_ceil(MAX_PARTS as u64).div_ceil(MIB) * MIB;
        self.part_size.max(needed)
    }

    async fn put_source(
        &self,
        key: &str,
        mut src: Source<'_>,
        len: Option<u64>,
        opts: &PutOptions,
    ) -> Res<PutResult> {
        let location = self.location(key);
        let io_err = |error| SealedError::Io {
            location: location.clone(),
            error,
        };
        let changed = || {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the input changed size while it was read",
            )
        };
        let threshold = self.multipart_threshold;
        // Sealed in memory and sent as bytes (retried by the SDK) up to this size.
        let in_memory = self.part_size.min(threshold);
        let skey = self.stored_key_for_write(key)?;
        self.ensure_descriptor(key).await?;
        let multipart = len.is_some_and(|n| self.goes_multipart(n));
        if multipart && opts.refuses_multipart(self.checked_multipart) {
            return Err(self.conditional_multipart(key));
        }
        if let Some(n) = len {
            if n > in_memory && !multipart {
                return self.put_single_stream(key, &skey, src, n, opts).await;
            }
            // Refuse before any write: sealing fails the same way whatever the body.
            if multipart {
                let _ = self.seal_envelope(key, Self::sealed_metadata(opts, Some(n), None))?;
            }
        }
        // Read ahead up to one part (one byte more decides "more than one part").
        let limit = match len {
            Some(n) if n <= in_memory => n,
            Some(_) => 0,
            None => in_memory + 1,
        };
        let mut head = Vec::new();
        let mut eof = false;
        while (head.len() as u64) < limit {
            let want = (limit - head.len() as u64).min(READ_SIZE as u64) as usize;
            match src.next(want).await.map_err(io_err)? {
                Some(b) => head.extend_from_slice(&b),
                None => {
                    eof = true;
                    break;
                }
            }
        }
        if let Some(n) = len.filter(|&n| n <= in_memory) {
            if head.len() as u64 != n || src.next(1).await.map_err(io_err)?.is_some() {
                return Err(io_err(changed()));
            }
            eof = true;
        }
        if eof && head.len() as u64 <= in_memory {
            return self.put_single(key, &skey, head, opts).await;
        }
        if opts.refuses_multipart(self.checked_multipart) {
            return Err(self.conditional_multipart(key));
        }
        self.put_multipart(key, &skey, head, src, len, opts).await
    }

    fn conditional_multipart(&self, key: &str) -> SealedError {
        SealedError::Invalid {
            location: self.location(key),
            detail: format!(
                "conditional writes (If-Match / If-None-Match) are not supported for multipart uploads: objects over {} bytes go multipart",
                self.multipart_threshold
            ),
        }
    }

    async fn put_single(
        &self,
        key: &str,
        skey: &str,
        plain: Vec<u8>,
        opts: &PutOptions,
    ) -> Res<PutResult> {
        let size = plain.len() as u64;
        let off_thread = plain.len() > INLINE_WORK_LIMIT;
        // Wiped however this ends: sealed, failed, or dropped while a blocking thread has it.
        let plain = zeroize::Zeroizing::new(plain);
        let io_err = |error| SealedError::Io {
            location: self.location(key),
            error,
        };
        let (plain, md5) = run_cpu_work(off_thread, move || {
            let md5 = hex(&Md5::digest(&plain));
            (plain, md5)
        })
        .await
        .map_err(io_err)?;
        let (envelope, metadata) = self.seal_envelope(
            key,
            Self::sealed_metadata(opts, Some(size), Some(md5.clone())),
        )?;
        let body = run_cpu_work(off_thread, move || {
            let mut body = Vec::with_capacity(payload_len(size) as usize);
            let mut sealer = PayloadSealer::new(&envelope);
            sealer.update(&plain, &mut body);
            sealer.finish(&mut body);
            drop(plain);
            body
        })
        .await
        .map_err(io_err)?;
        let stored_size = body.len() as u64;
        let put = self
            .store
            .put(skey, body.into(), &Self::store_put_options(opts, metadata))
            .await?;
        Ok(PutResult {
            etag: put.etag,
            size,
            stored_size,
            parts: 0,
            md5: Some(md5),
        })
    }

    /// One PutObject of exactly `len` plaintext bytes, sealed as they are read: each
    /// batch on a blocking thread while the next one is read, a few batches queued ahead
    /// of the request. The final chunk is sealed only after the source ended at `len`,
    /// and the store writes nothing of a body that failed or came out short.
    async fn put_single_stream(
        &self,
        key: &str,
        skey: &str,
        mut src: Source<'_>,
        len: u64,
        opts: &PutOptions,
    ) -> Res<PutResult> {
        let (envelope, metadata) =
            self.seal_envelope(key, Self::sealed_metadata(opts, Some(len), None))?;
        let stored_size = payload_len(len);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(SINGLE_PUT_AHEAD);
        let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
        let feed = async move {
            let mut sealer = PayloadSealer::new(&envelope);
            let mut total = 0u64;
            let mut next = src.next_batch(READ_SIZE).await?;
            while !next.is_empty() {
                let batch: usize = next.iter().map(Bytes::len).sum();
                total += batch as u64;
                if total > len {
                    break;
                }
                let sealing = run_cpu_work(true, move || {
                    let mut out = Vec::with_capacity(batch + batch / 1024 + 64);
                    for chunk in &next {
                        sealer.update(chunk, &mut out);
                    }
                    (sealer, out)
                });
                let (sealed, read) =
                    futures_util::future::join(sealing, src.next_batch(READ_SIZE)).await;
                let (s, out) = sealed?;
                sealer = s;
                if tx.send(Ok(out.into())).await.is_err() {
                    return Ok(()); // the request ended: its error is the one to report
                }
                next = read?;
            }
            if total != len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the input changed size while it was read",
                ));
            }
            let mut last = Vec::new();
            sealer.finish(&mut last);
            let _ = tx.send(Ok(last.into())).await;
            Ok(())
        };
        let put_opts = Self::store_put_options(opts, metadata);
        let put = self.store.put_stream(skey, stored_size, body, &put_opts);
        // A failed read drops `tx`: the body ends short, so the request stores nothing.
        // The read's error is the one reported; it says more than the store's account
        // of the request it broke.
        let (put, fed) = futures_util::future::join(put, feed).await;
        fed.map_err(|error| SealedError::Io {
            location: self.location(key),
            error,
        })?;
        Ok(PutResult {
            etag: put?.etag,
            size: len,
            stored_size,
            parts: 0,
            md5: None,
        })
    }

    async fn put_multipart(
        &self,
        key: &str,
        skey: &str,
        head: Vec<u8>,
        mut src: Source<'_>,
        len: Option<u64>,
        opts: &PutOptions,
    ) -> Res<PutResult> {
        let part_size = self.part_size_for(len);
        let (envelope, metadata) =
            self.seal_envelope(key, Self::sealed_metadata(opts, len, None))?;
        self.abort_stale_uploads_of(skey).await;
        let upload_id = self
            .store
            .create_multipart(
                skey,
                &store::PutOptions {
                    if_match: None,
                    ..Self::store_put_options(opts, metadata)
                },
            )
            .await?;
        let mut upload = PartUploader {
            store: self.store.clone(),
            key: skey.to_string(),
            upload_id: upload_id.clone(),
            part_size: part_size as usize,
            concurrency: self.concurrency,
            next_part: 1,
            buffer: Vec::with_capacity(part_size as usize + READ_SIZE + READ_SIZE / 64),
            in_flight: tokio::task::JoinSet::new(),
            spare: Vec::new(),
            done: Vec::new(),
            stored: 0,
        };
        let result = async {
            let mut sealer = PayloadSealer::new(&envelope);
            let mut total = head.len() as u64;
            sealer.update(&head, &mut upload.buffer);
            drop(zeroize::Zeroizing::new(head));
            upload.flush_full_parts(&self.location(key)).await?;
            let read_err = |error| SealedError::Io {
                location: self.location(key),
                error,
            };
            let mut next = src.next_batch(READ_SIZE).await.map_err(read_err)?;
            while !next.is_empty() {
                total += next.iter().map(|c| c.len() as u64).sum::<u64>();
                if len.is_some_and(|n| total > n) {
                    break;
                }
                // Seal this batch on a blocking thread while the next one is read, so
                // neither the runtime nor the part uploads wait for the cipher.
                let mut buffer = std::mem::take(&mut upload.buffer);
                let sealing = tokio::task::spawn_blocking(move || {
                    for chunk in &next {
                        sealer.update(chunk, &mut buffer);
                    }
                    (sealer, buffer)
                });
                let (sealed, read) =
                    futures_util::future::join(sealing, src.next_batch(READ_SIZE)).await;
                (sealer, upload.buffer) = sealed.map_err(|join| SealedError::Invalid {
                    location: self.location(key),
                    detail: format!("sealing a part failed: {join}"),
                })?;
                upload.flush_full_parts(&self.location(key)).await?;
                next = read.map_err(read_err)?;
            }
            if len.is_some_and(|n| total != n) {
                return Err(SealedError::Io {
                    location: self.location(key),
                    error: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the input changed size while it was read",
                    ),
                });
            }
            sealer.finish(&mut upload.buffer);
            upload.flush_full_parts(&self.location(key)).await?;
            let parts = upload.finish(&self.location(key)).await?;
            debug_assert_eq!(upload.stored, payload_len(total));
            let put = match &opts.if_match {
                Some(etag) => {
                    self.store
                        .complete_multipart_if_match(skey, &upload_id, &parts, etag)
                        .await?
                }
                None => {
                    self.store
                        .complete_multipart(skey, &upload_id, &parts)
                        .await?
                }
            };
            Ok(PutResult {
                etag: put.etag,
                size: total,
                stored_size: upload.stored,
                parts: parts.len() as u32,
                md5: None,
            })
        }
        .await;
        if result.is_err() {
            upload.in_flight.abort_all();
            // Best effort: `cleanup` finds what an abort could not remove.
            let _ = self.store.abort_multipart(skey, &upload_id).await;
        }
        result
    }

    // ---- reading ----

    fn open_envelope(&self, key: &str, info: &ObjectInfo) -> Res<Option<Envelope>> {
        let Some(value) = info.metadata.get(METADATA_KEY) else {
            if info.metadata.contains_key(PENDING_KEY) {
                return Err(SealedError::Invalid {
                    location: self.location(key),
                    detail: "an unfinished sealed upload (its final header was never installed): it cannot be opened; upload it again".into(),
                });
            }
            if self.allow_plaintext {
                return Ok(None);
            }
            return Err(SealedError::Plaintext {
                location: self.location(key),
            });
        };
        let open_err = |error| SealedError::Open {
            location: self.location(key),
            error,
        };
        let header = Header::from_metadata_value(value).map_err(open_err)?;
        let envelope = Envelope::open_cached(
            &header,
            &self.identities,
            Some(&self.name_of(key)),
            &self.file_keys,
        )
        .map_err(open_err)?;
        Ok(Some(envelope))
    }

    fn describe(
        &self,
        key: &str,
        info: &ObjectInfo,
        envelope: Option<&Envelope>,
    ) -> Res<ObjectHead> {
        let stored_size = info.meta.size;
        let (size, metadata) = match envelope {
            Some(env) => (
                plaintext_len(env.parts(), stored_size).map_err(|error| SealedError::Open {
                    location: self.location(key),
                    error,
                })?,
                env.metadata().cloned().unwrap_or_default(),
            ),
            // A plaintext object's metadata is what the store holds (unauthenticated).
            None => (
                stored_size,
                SealedMetadata {
                    user: info.metadata.clone(),
                    ..SealedMetadata::default()
                },
            ),
        };
        Ok(ObjectHead {
            key: key.to_string(),
            size,
            stored_size,
            etag: info.meta.etag.clone(),
            last_modified: info.meta.last_modified,
            content_type: info.content_type.clone(),
            cache_control: info.cache_control.clone(),
            metadata,
            sealed: envelope.is_some(),
            parts: envelope.and_then(|e| e.parts().copied()),
        })
    }

    /// The object's plaintext size, headers and sealed metadata, from a HEAD (the
    /// envelope opens from the metadata: this checks keys and name binding, not the body).
    pub async fn head(&self, key: &str) -> Res<ObjectHead> {
        let info = self.store.head(&self.stored_key(key)?).await?;
        let envelope = self.open_envelope(key, &info)?;
        self.describe(key, &info, envelope.as_ref())
    }

    /// The object `info` describes, wherever it is stored, opened as the object with
    /// plaintext key `key` (keys and name binding checked, not the body): for migrations
    /// that move an object between its plaintext and encrypted stored keys.
    pub(crate) fn head_from(&self, key: &str, info: &ObjectInfo) -> Res<ObjectHead> {
        let envelope = self.open_envelope(key, info)?;
        self.describe(key, info, envelope.as_ref())
    }

    /// Read an object, or the plaintext bytes `range` selects, as a stream of authenticated
    /// plaintext. A whole-object read is one GET; a ranged read is a HEAD and then one GET
    /// of only the stored bytes that cover the range (the nonce in it when close, else
    /// fetched apart), opened in windows of 2 MiB of plaintext and resumed if cut.
    pub async fn get(&self, key: &str, range: Option<ByteRange>) -> Res<GetObject> {
        match range {
            None => self.get_whole(key).await,
            Some(range) => self.get_range(key, range).await,
        }
    }

    /// Read a whole object into memory, authenticated.
    pub async fn get_bytes(&self, key: &str) -> Res<(ObjectHead, Bytes)> {
        let got = self.get(key, None).await?;
        let head = got.head.clone();
        Ok((head, got.bytes().await?))
    }

    /// Read and parse a JSON object stored with [`put_json`](Self::put_json).
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Res<T> {
        let (_, bytes) = self.get_bytes(key).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            use serde_json::error::Category;
            let what = match e.classify() {
                Category::Syntax => "not JSON",
                Category::Eof => "JSON cut short",
                Category::Data => "JSON of another shape",
                Category::Io => "unreadable",
            };
            SealedError::Json {
                location: self.location(key),
                detail: format!("{what} at line {}, column {}", e.line(), e.column()),
            }
        })
    }

    async fn get_whole(&self, key: &str) -> Res<GetObject> {
        let skey = self.stored_key(key)?;
        let got = self.store.get(&skey, None, &GetOptions::default()).await?;
        let envelope = self.open_envelope(key, &got.info)?;
        let head = self.describe(key, &got.info, envelope.as_ref())?;
        let Some(envelope) = envelope else {
            let body = got.body.map_err(SealedError::Store).boxed();
            return Ok(GetObject {
                head,
                range: None,
                body,
            });
        };
        let state = OpenState::new(PayloadOpener::new(envelope), got.body, self.location(key));
        let body = futures_util::stream::try_unfold(state, OpenState::next).boxed();
        Ok(GetObject {
            head,
            range: None,
            body,
        })
    }

    async fn get_range(&self, key: &str, range: ByteRange) -> Res<GetObject> {
        let location = self.location(key);
        let skey = self.stored_key(key)?;
        let info = self.store.head(&skey).await?;
        let Some(envelope) = self.open_envelope(key, &info)? else {
            let got = self
                .store
                .get(
                    &skey,
                    Some(range),
                    &GetOptions {
                        if_match: Some(info.meta.etag.clone()),
                    },
                )
                .await?;
            let head = self.describe(key, &got.info, None)?;
            return Ok(GetObject {
                head,
                range: got.range,
                body: got.body.map_err(SealedError::Store).boxed(),
            });
        };
        let head = self.describe(key, &info, Some(&envelope))?;
        let served = range
            .resolve(head.size)
            .ok_or_else(|| SealedError::Invalid {
                location: location.clone(),
                detail: format!("range not satisfiable: the object has {} bytes", head.size),
            })?;
        let salts: Arc<Salts> = match (envelope.parts(), envelope.part_salts()) {
            // The header carries the salts, already checked against its digest: no GET.
            (Some(layout), Some(salts)) => Arc::new(self.header_salts(key, &info, layout, salts)?),
            (Some(layout), None) => {
                let id = (skey.clone(), info.meta.etag.clone(), layout.salts_digest);
                let cell = {
                    let mut cache = self.checked_salts.lock().expect("not poisoned");
                    if cache.len() >= CHECKED_SALTS_KEPT && !cache.contains_key(&id) {
                        cache.clear();
                    }
                    cache.entry(id).or_default().clone()
                };
                let checked = cell
                    .get_or_try_init(|| async {
                        let salts = self.checked_salts(key, &skey, &info, layout).await?;
                        Ok::<_, SealedError>(Arc::new(salts))
                    })
                    .await?;
                checked.clone()
            }
            (None, _) => Arc::default(),
        };
        let source = Arc::new(RangeSource {
            store: self.store.clone(),
            key: skey,
            location,
            etag: info.meta.etag.clone(),
            envelope,
            stored_size: info.meta.size,
        });
        // The first window before answering, so that its errors (a conflicting write, a
        // corrupt object) are an error response rather than a cut body.
        let first_end = served.end.min(served.start + RANGE_WINDOW - 1);
        // The read's one GET ends where the chunk holding the range's last byte ends.
        let last_byte = RangePlan::new(
            source.envelope.parts(),
            source.stored_size,
            served.end,
            served.end,
        )
        .map_err(|error| SealedError::Open {
            location: source.location.clone(),
            error,
        })?;
        let span_end = last_byte.pieces.last().map_or(0, |p| p.chunks.1);
        let mut span = SpanReader::new(span_end);
        let (first, fetched) = source
            .window(served.start, first_end, &salts, &mut span)
            .await?;
        let salts = match fetched.is_empty() {
            true => salts,
            false => Arc::new(
                salts
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .chain(fetched)
                    .collect(),
            ),
        };
        let body = range_body(source, salts, span, first, first_end, served.end);
        Ok(GetObject {
            head,
            range: Some(served),
            body,
        })
    }

    /// The checked salts (stored offset → salt) from the header's `r2seal-salts`.
    fn header_salts(
        &self,
        key: &str,
        info: &ObjectInfo,
        layout: &PartsLayout,
        salts: &[[u8; PAYLOAD_NONCE_SIZE]],
    ) -> Res<HashMap<u64, Vec<u8>>> {
        if layout.stored_len() != info.meta.size || salts.len() != layout.count as usize {
            return Err(SealedError::Open {
                location: self.location(key),
                error: Error::Corrupt,
            });
        }
        let stride = layout.stored_size(0);
        Ok((0u64..)
            .zip(salts)
            .map(|(i, salt)| (i * stride, salt.to_vec()))
            .collect())
    }

    /// Every part's salt of a parts-layout object, checked against the header's digest
    /// before a ranged read releases anything (16 bytes per part, fetched concurrently).
    async fn checked_salts(
        &self,
        key: &str,
        skey: &str,
        info: &ObjectInfo,
        layout: &PartsLayout,
    ) -> Res<HashMap<u64, Vec<u8>>> {
        let corrupt = || SealedError::Open {
            location: self.location(key),
            error: Error::Corrupt,
        };
        if layout.stored_len() != info.meta.size {
            return Err(corrupt());
        }
        let stride = layout.stored_size(0);
        let offsets: Vec<u64> = (0..layout.count as u64).map(|i| i * stride).collect();
        let fetched: Vec<(u64, Vec<u8>)> = futures_util::stream::iter(offsets)
            .map(|at| async move {
                let got = self
                    .store
                    .get(
                        skey,
                        Some(ByteRange::Inclusive {
                            start: at,
                            end: at + PAYLOAD_NONCE_SIZE as u64 - 1,
                        }),
                        &GetOptions {
                            if_match: Some(info.meta.etag.clone()),
                        },
                    )
                    .await?;
                // A server that ignores the range sends more: never read it all.
                let salt = got.bytes_at_most(PAYLOAD_NONCE_SIZE).await?;
                Ok::<_, SealedError>((at, salt.ok_or_else(corrupt)?.to_vec()))
            })
            .buffered(16)
            .try_collect()
            .await?;
        let salts: Vec<[u8; PAYLOAD_NONCE_SIZE]> = fetched
            .iter()
            .map(|(_, s)| s[..].try_into().map_err(|_| corrupt()))
            .collect::<Res<_>>()?;
        layout.check_salts(&salts).map_err(|_| corrupt())?;
        Ok(fetched.into_iter().collect())
    }

    // ---- listing, deleting, copying ----

    /// One page of the keys under `prefix` (relative to the store root), with plaintext
    /// sizes computed from stored sizes (no HEAD per object).
    pub async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
        max_keys: Option<u32>,
    ) -> Res<ListPage> {
        let from = continuation.map_or(ListFrom::Start, ListFrom::Continuation);
        self.list_from(prefix, delimiter, from, max_keys).await
    }

    /// [`list`](Self::list) from where `from` says; a page after a key is continued
    /// with `list` and its continuation.
    pub async fn list_from(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        from: ListFrom,
        max_keys: Option<u32>,
    ) -> Res<ListPage> {
        // With encrypted names: list the stored form of the prefix up to its last `/`,
        // decrypt, and keep what the plaintext prefix selects (a page may then hold
        // fewer than `max_keys` entries, or none, and still have a continuation).
        // Entries come in stored-key order, which is not plaintext order.
        let (stored_prefix, filter) = match &self.names {
            None => (prefix.to_string(), false),
            Some(k) => {
                if delimiter.is_some_and(|d| d != "/") {
                    return Err(SealedError::Invalid {
                        location: self.location(prefix),
                        detail: "with encrypted names the only delimiter is \"/\"".into(),
                    });
                }
                let lp = k.list_prefix(prefix);
                (lp.stored, lp.partial)
            }
        };
        let page = match from {
            ListFrom::After(after) => {
                let after = self.stored_key(&after)?;
                self.store
                    .list_after(&stored_prefix, delimiter, &after, max_keys)
                    .await?
            }
            ListFrom::Continuation(t) => {
                self.store
                    .list(&stored_prefix, delimiter, Some(t), max_keys)
                    .await?
            }
            ListFrom::Start => {
                self.store
                    .list(&stored_prefix, delimiter, None, max_keys)
                    .await?
            }
        };
        let mut out = ListPage {
            next_continuation: page.next_continuation,
            ..ListPage::default()
        };
        for o in page.objects {
            if o.key.starts_with(RESERVED_PREFIX) {
                continue;
            }
            let plain = match &self.names {
                None => Ok(o.key.clone()),
                Some(k) => k.decrypt(&o.key),
            };
            let listed = |key: String| ListedObject {
                size: plaintext_len(None, o.size).ok(),
                key,
                stored_key: o.key.clone(),
                stored_size: o.size,
                etag: o.etag.clone(),
                last_modified: o.last_modified,
            };
            match plain {
                Ok(p) if filter && !p.starts_with(prefix) => {}
                Ok(p) => out.objects.push(listed(p)),
                Err(_) => out.undecryptable.push(listed(o.key.clone())),
            }
        }
        for cp in page.common_prefixes {
            if cp == RESERVED_PREFIX {
                continue;
            }
            let plain = match &self.names {
                None => Ok(cp.clone()),
                Some(k) => k.decrypt(&cp),
            };
            match plain {
                Ok(p) if filter && !p.starts_with(prefix) => {}
                Ok(p) => out.common_prefixes.push(p),
                Err(_) => out.undecryptable_prefixes.push(cp),
            }
        }
        Ok(out)
    }

    /// Every page of a listing, concatenated.
    pub async fn list_all(&self, prefix: &str, delimiter: Option<&str>) -> Res<ListPage> {
        let mut all = ListPage::default();
        let mut token = None;
        loop {
            let page = self.list(prefix, delimiter, token, None).await?;
            all.objects.extend(page.objects);
            all.common_prefixes.extend(page.common_prefixes);
            all.undecryptable.extend(page.undecryptable);
            all.undecryptable_prefixes
                .extend(page.undecryptable_prefixes);
            match page.next_continuation {
                Some(t) => token = Some(t),
                None => return Ok(all),
            }
        }
    }

    /// Remove an object (removing a missing key succeeds, as on S3).
    pub async fn delete(&self, key: &str) -> Res<()> {
        Ok(self.store.delete(&self.stored_key(key)?).await?)
    }

    /// Copy `src` to `dst` inside the store, re-binding it to `dst`: the envelope is
    /// re-wrapped (same file key, the recipients for `dst`, the new name) and the copy is
    /// server-side with replaced metadata, so the body never passes through this process.
    /// The copy is conditional on the source's ETag, so header and body always match.
    pub async fn copy(&self, src: &str, dst: &str) -> Res<PutResult> {
        self.copy_with(src, dst, &CopyRequest::default()).await
    }

    /// [`copy`](Self::copy) with conditions and replaced metadata. With `replace`, the
    /// destination's sealed metadata is re-sealed from it (plaintext size, MD5 and
    /// parts layout carry over; `set_md5` adds the MD5): for `src == dst` this updates an
    /// object's metadata without touching its body (rclone's mtime update).
    pub async fn copy_with(&self, src: &str, dst: &str, req: &CopyRequest) -> Res<PutResult> {
        let (ssrc, sdst) = (self.stored_key(src)?, self.stored_key_for_write(dst)?);
        self.ensure_descriptor(dst).await?;
        let info = self.store.head(&ssrc).await?;
        if let Some(want) = &req.source_etag {
            if !store::etag_eq(want, &info.meta.etag) {
                return Err(SealedError::Store(
                    StoreError::new(
                        store::Op::Copy,
                        self.location(src),
                        store::ErrorKind::PreconditionFailed,
                    )
                    .with_detail("the source changed"),
                ));
            }
        }
        let seal_err = |error| SealedError::Seal {
            location: self.location(dst),
            error,
        };
        let mut size = info.meta.size;
        let replace = match self.open_envelope(src, &info)? {
            // Plaintext, allowed: copied as it is (only its readable metadata replaced).
            None => req.replace.as_ref().map(|opts| ReplaceMetadata {
                metadata: opts.metadata.clone(),
                content_type: opts.content_type.clone(),
                cache_control: opts.cache_control.clone(),
            }),
            Some(envelope) => {
                size = plaintext_len(envelope.parts(), info.meta.size).map_err(|error| {
                    SealedError::Open {
                        location: self.location(src),
                        error,
                    }
                })?;
                let name = self.name_of(dst);
                let recipients = self
                    .recipients
                    .as_ref()
                    .ok_or(Error::InvalidRecipients("no recipients configured"))
                    .and_then(|r| r.for_name(&name))
                    .map_err(seal_err)?;
                let mut metadata = rewrapped_metadata(&envelope, &self.identities, &recipients);
                if let Some(opts) = &req.replace {
                    let fresh = Self::sealed_metadata(opts, None, None);
                    metadata.content_encoding = fresh.content_encoding;
                    metadata.content_disposition = fresh.content_disposition;
                    metadata.content_language = fresh.content_language;
                    metadata.user = fresh.user;
                }
                if req.set_md5.is_some() {
                    metadata.md5 = req.set_md5.clone();
                }
                let value = rewrap_within_limit(
                    &envelope,
                    &recipients,
                    Binding {
                        name: Some(name),
                        metadata: Some(metadata),
                        parts: envelope.parts().copied(),
                        part_salts: envelope.part_salts().map(<[_]>::to_vec),
                    },
                    self.store.metadata_limit(),
                )
                .map_err(seal_err)?;
                let (content_type, cache_control) = match &req.replace {
                    Some(opts) => (opts.content_type.clone(), opts.cache_control.clone()),
                    None => (info.content_type.clone(), info.cache_control.clone()),
                };
                Some(ReplaceMetadata {
                    metadata: BTreeMap::from([(METADATA_KEY.to_string(), value)]),
                    content_type,
                    cache_control,
                })
            }
        };
        let (put, parts) = self.server_copy(&ssrc, &sdst, &info, replace).await?;
        Ok(PutResult {
            etag: put.etag,
            size,
            stored_size: info.meta.size,
            parts,
            md5: None,
        })
    }

    /// Copy the version of `src` that `info` describes to `dst`, server-side: one
    /// `CopyObject` up to the copy limit, else a multipart upload of `UploadPartCopy`
    /// ranges. Every request is conditional on the source's ETag, so the body copied is
    /// the one `info` (and the envelope in `replace`) came from. The destination is
    /// written unconditionally: S3 and R2 offer no condition on a copy's destination or a
    /// multipart completion (SECURITY.md §3.9). Returns the result and the part count.
    pub(crate) async fn server_copy(
        &self,
        src: &str,
        dst: &str,
        info: &ObjectInfo,
        replace: Option<ReplaceMetadata>,
    ) -> Res<(store::PutResult, u32)> {
        if info.meta.size <= self.copy_limit {
            let put = self
                .store
                .copy(
                    src,
                    dst,
                    &CopyOptions {
                        replace_metadata: replace,
                        if_match: Some(info.meta.etag.clone()),
                    },
                )
                .await?;
            return Ok((put, 0));
        }
        let headers = replace.unwrap_or_else(|| ReplaceMetadata {
            metadata: info.metadata.clone(),
            content_type: info.content_type.clone(),
            cache_control: info.cache_control.clone(),
        });
        let size = info.meta.size;
        let part = self.copy_part_size(size);
        let upload_id = self
            .store
            .create_multipart(
                dst,
                &store::PutOptions {
                    content_type: headers.content_type,
                    cache_control: headers.cache_control,
                    metadata: headers.metadata,
                    ..Default::default()
                },
            )
            .await?;
        let result = async {
            let ranges: Vec<(u32, u64, u64)> = (0..size.div_ceil(part))
                .map(|i| (i as u32 + 1, i * part, ((i + 1) * part).min(size) - 1))
                .collect();
            let count = ranges.len() as u32;
            let parts: Vec<UploadedPart> = futures_util::stream::iter(ranges)
                .map(|(n, start, end)| {
                    let source = PartCopySource {
                        key: src.to_string(),
                        range: Some((start, end)),
                        if_match: Some(info.meta.etag.clone()),
                    };
                    let (store, dst, id) = (self.store.clone(), dst.to_string(), upload_id.clone());
                    async move { store.upload_part_copy(&dst, &id, n, &source).await }
                })
                .buffered(self.concurrency)
                .try_collect()
                .await?;
            // Every part came from the version `info` describes; the source must still be
            // that version now, or a write that came meanwhile would be undone (self-copy:
            // atomic where the server honours If-Match on completion, R2 and AWS).
            let put = if src == dst {
                self.store
                    .complete_multipart_if_match(dst, &upload_id, &parts, &info.meta.etag)
                    .await?
            } else {
                self.check_unchanged(src, &info.meta.etag).await?;
                self.store
                    .complete_multipart(dst, &upload_id, &parts)
                    .await?
            };
            Ok((put, count))
        }
        .await;
        if result.is_err() {
            // Best effort: `cleanup` finds what an abort could not remove.
            let _ = self.store.abort_multipart(dst, &upload_id).await;
        }
        result
    }

    /// Copy the version of stored key `src` that `info` describes to stored key `dst` as
    /// it is (envelope and headers unchanged; [`server_copy`](Self::server_copy)), after
    /// the descriptor check for plaintext key `key`: a migration moving an object between
    /// its plaintext and encrypted stored keys, whose name binding stays `key` (§3.10).
    pub(crate) async fn copy_stored_as_is(
        &self,
        src: &str,
        dst: &str,
        info: &ObjectInfo,
        key: &str,
    ) -> Res<()> {
        self.ensure_descriptor(key).await?;
        self.server_copy(src, dst, info, None).await.map(drop)
    }

    /// Stored bytes per `UploadPartCopy` range for an object of `size` stored bytes.
    fn copy_part_size(&self, size: u64) -> u64 {
        const MIB: u64 = 1024 * 1024;
        let needed = size.div_ceil(MAX_PARTS as u64).div_ceil(MIB) * MIB;
        self.part_size.max(needed).min(store::MAX_COPY_SIZE)
    }

    /// Fail with a precondition error unless `key` still has `etag` (a HEAD: this narrows
    /// a race where the store offers no atomic condition; it does not close it).
    pub(crate) async fn check_unchanged(&self, key: &str, etag: &str) -> Res<()> {
        let now = self.store.head(key).await?;
        if store::etag_eq(&now.meta.etag, etag) {
            return Ok(());
        }
        Err(SealedError::Store(
            StoreError::new(
                store::Op::Head,
                self.location(key),
                store::ErrorKind::PreconditionFailed,
            )
            .with_detail("the object changed while it was being rewritten"),
        ))
    }

    /// [`copy`](Self::copy) then delete the source (only once the copy succeeded).
    pub async fn rename(&self, src: &str, dst: &str) -> Res<PutResult> {
        if src == dst {
            return Err(SealedError::Invalid {
                location: self.location(src),
                detail: "source and destination are the same key".into(),
            });
        }
        let put = self.copy(src, dst).await?;
        self.store.delete(&self.stored_key(src)?).await?;
        Ok(put)
    }

    // ---- parts uploads (the gateway's multipart uploads) ----

    /// Start an upload whose parts the caller seals and sends one by one, in any order,
    /// re-sending any (SECURITY.md §3.5, §8). The store's upload is created with only the
    /// [`PENDING_KEY`] marker: the final header is installed by
    /// [`complete_parts_upload`](Self::complete_parts_upload). The returned handle holds
    /// the file key (zeroized on drop) and must stay with the caller until then.
    pub async fn create_parts_upload(&self, key: &str, opts: &PutOptions) -> Res<PartsUpload> {
        if opts.refuses_multipart(false) {
            return Err(self.conditional_multipart(key));
        }
        let skey = self.stored_key_for_write(key)?;
        self.ensure_descriptor(key).await?;
        let name = self.name_of(key);
        let seal_err = |error| SealedError::Seal {
            location: self.location(key),
            error,
        };
        let recipients = self
            .recipients
            .as_ref()
            .ok_or(Error::InvalidRecipients("no recipients configured"))
            .and_then(|r| r.for_name(&name))
            .map_err(seal_err)?;
        let envelope = Envelope::seal(
            &recipients,
            Binding {
                name: Some(name.clone()),
                metadata: None,
                parts: None,
                part_salts: None,
            },
        )
        .map_err(seal_err)?;
        // Refuse now what could not be installed later: the largest final header.
        let widest = PartsLayout {
            count: MAX_PARTS,
            part_size: 5 << 30,
            last_size: 5 << 30,
            salts_digest: [0; 32],
        };
        let mut metadata = Self::sealed_metadata(opts, Some(u64::MAX), None);
        metadata.recipients = key_ids(&recipients);
        metadata.wrapped_to = metadata.recipients.clone();
        envelope
            .rewrap(
                &recipients,
                Binding {
                    name: Some(name),
                    metadata: Some(metadata),
                    parts: Some(widest),
                    // The final header drops the salts rather than outgrow the limit.
                    part_salts: None,
                },
            )
            .and_then(|e| {
                e.header()
                    .to_metadata_value_within(self.store.metadata_limit())
            })
            .map_err(seal_err)?;
        let pending = store::PutOptions {
            content_type: opts.content_type.clone(),
            cache_control: opts.cache_control.clone(),
            metadata: BTreeMap::from([(PENDING_KEY.to_string(), "1".to_string())]),
            if_match: None,
            if_none_match: None,
        };
        let upload_id = self.store.create_multipart(&skey, &pending).await?;
        Ok(PartsUpload {
            key: key.to_string(),
            stored_key: skey,
            upload_id,
            envelope,
            opts: PutOptions {
                if_match: None,
                if_none_match: None,
                ..opts.clone()
            },
        })
    }

    /// Seal part `part_number` (from 1) of `upload` with a fresh salt and upload it.
    /// Sending a number again replaces that part (its new salt wins at completion).
    /// The part is held in memory; [`upload_sealed_part_stream`](Self::upload_sealed_part_stream)
    /// streams one instead.
    pub async fn upload_sealed_part(
        &self,
        upload: &PartsUpload,
        part_number: u32,
        plaintext: &[u8],
    ) -> Res<SealedPart> {
        let plain_len = plaintext.len() as u64;
        self.check_sealed_part(upload, part_number, plain_len)?;
        // In memory, the store's client can send it again on a transient failure.
        let (salt, body) = seal_part(&upload.envelope, part_number, plaintext);
        let put = self
            .store
            .upload_part(
                &upload.stored_key,
                &upload.upload_id,
                part_number,
                body.into(),
            )
            .await?;
        Ok(SealedPart {
            part_number,
            salt,
            size: plain_len,
            etag: put.etag,
        })
    }

    /// [`upload_sealed_part`](Self::upload_sealed_part) from a stream of exactly
    /// `plain_len` plaintext bytes, sealed as it arrives: memory holds a few chunks, not
    /// the part. The sealed part's length is known up front (`payload_len(plain_len)`)
    /// and sent as its Content-Length. The final STREAM chunk is sealed only once
    /// `plaintext` has ended without an error after exactly `plain_len` bytes, so an
    /// error from it (a checksum found wrong at the end of a client's body, a cut
    /// connection) or a wrong length fails the upload before the part is complete: the
    /// store keeps nothing of it. (A part sent earlier under this number stays on fs;
    /// Garage 2.5 no longer completes with it, so send it again there.) That failure is
    /// [`SealedError::Io`] with the stream's own error.
    pub async fn upload_sealed_part_stream<S>(
        &self,
        upload: &PartsUpload,
        part_number: u32,
        plain_len: u64,
        plaintext: S,
    ) -> Res<SealedPart>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        self.check_sealed_part(upload, part_number, plain_len)?;
        let sealer = PartSealer::new(&upload.envelope, part_number);
        let salt = sealer.salt();
        let input_failure = Arc::new(std::sync::Mutex::new(None));
        let sealed = sealed_part_body(plaintext.boxed(), sealer, plain_len, input_failure.clone());
        let put = self
            .store
            .upload_part_stream(
                &upload.stored_key,
                &upload.upload_id,
                part_number,
                payload_len(plain_len),
                sealed,
            )
            .await;
        // The input's own error, not the store's report of the request it broke.
        if let Some(error) = input_failure.lock().expect("not poisoned").take() {
            return Err(SealedError::Io {
                location: self.location(&upload.key),
                error,
            });
        }
        Ok(SealedPart {
            part_number,
            salt,
            size: plain_len,
            etag: put?.etag,
        })
    }

    fn check_sealed_part(&self, upload: &PartsUpload, part_number: u32, plain_len: u64) -> Res<()> {
        let detail = if part_number == 0 || part_number > MAX_PARTS {
            format!("part number {part_number} is outside 1..={MAX_PARTS}")
        } else if payload_len(plain_len) > MAX_PART_SIZE {
            format!("a part of {plain_len} bytes seals to more than the store's {MAX_PART_SIZE}-byte part limit")
        } else {
            return Ok(());
        };
        Err(SealedError::Invalid {
            location: self.location(&upload.key),
            detail,
        })
    }

    /// Complete `upload` from `parts` (in part order, one per number), then install the
    /// final header: the same file key rewrapped with the parts layout and the sealed
    /// metadata, by a metadata-replacing copy of the object onto itself. `extra` adds
    /// sealed user metadata known only now. If that copy fails, the object stays behind
    /// unreadable (marked pending) and the error says so: upload it again.
    pub async fn complete_parts_upload(
        &self,
        upload: &PartsUpload,
        parts: &[SealedPart],
        extra: BTreeMap<String, String>,
    ) -> Res<PutResult> {
        let location = self.location(&upload.key);
        let invalid = |detail: String| SealedError::Invalid {
            location: location.clone(),
            detail,
        };
        if parts.is_empty() {
            return Err(invalid("no parts to complete".into()));
        }
        for (i, p) in parts.iter().enumerate() {
            if p.part_number as usize != i + 1 {
                return Err(invalid(format!(
                    "parts must be numbered 1..={} without gaps (part {} is at position {})",
                    parts.len(),
                    p.part_number,
                    i + 1
                )));
            }
        }
        let sizes: Vec<u64> = parts.iter().map(|p| p.size).collect();
        let salts: Vec<[u8; PAYLOAD_NONCE_SIZE]> = parts.iter().map(|p| p.salt).collect();
        let layout = PartsLayout::new(&sizes, &salts).map_err(|e| {
            invalid(format!(
                "these parts cannot form a sealed object ({e}): all parts but the last must have the same size"
            ))
        })?;
        let name = self.name_of(&upload.key);
        let seal_err = |error| SealedError::Seal {
            location: location.clone(),
            error,
        };
        let recipients = self
            .recipients
            .as_ref()
            .ok_or(Error::InvalidRecipients("no recipients configured"))
            .and_then(|r| r.for_name(&name))
            .map_err(seal_err)?;
        let size = layout.plaintext_len();
        let mut metadata = Self::sealed_metadata(&upload.opts, Some(size), None);
        metadata.recipients = key_ids(&recipients);
        metadata.wrapped_to = metadata.recipients.clone();
        metadata.user.extend(extra);
        let value = rewrap_within_limit(
            &upload.envelope,
            &recipients,
            Binding {
                name: Some(name),
                metadata: Some(metadata),
                parts: Some(layout),
                // Up to 128 parts: a ranged read then needs no GET per part salt.
                part_salts: Some(salts),
            },
            self.store.metadata_limit(),
        )
        .map_err(seal_err)?;
        let uploaded: Vec<UploadedPart> = parts
            .iter()
            .map(|p| UploadedPart {
                part_number: p.part_number,
                etag: p.etag.clone(),
            })
            .collect();
        let done = self
            .store
            .complete_multipart(&upload.stored_key, &upload.upload_id, &uploaded)
            .await?;
        let replace = ReplaceMetadata {
            metadata: BTreeMap::from([(METADATA_KEY.to_string(), value)]),
            content_type: upload.opts.content_type.clone(),
            cache_control: upload.opts.cache_control.clone(),
        };
        let not_installed = |e: SealedError| {
            invalid(format!(
                "the parts were stored but the final header could not be installed, so the object does not open: {e}"
            ))
        };
        // The completed object, as the self-copy must find it (a copy above the copy
        // limit goes part by part, each conditional on this ETag).
        let mut info = self
            .store
            .head(&upload.stored_key)
            .await
            .map_err(|e| not_installed(e.into()))?;
        if !store::etag_eq(&info.meta.etag, &done.etag) || info.meta.size != layout.stored_len() {
            return Err(not_installed(SealedError::Invalid {
                location: location.clone(),
                detail: "the object changed after its upload completed".into(),
            }));
        }
        info.meta.etag = done.etag;
        let (installed, _) = self
            .server_copy(&upload.stored_key, &upload.stored_key, &info, Some(replace))
            .await
            .map_err(not_installed)?;
        Ok(PutResult {
            etag: installed.etag,
            size,
            stored_size: layout.stored_len(),
            parts: parts.len() as u32,
            md5: None,
        })
    }

    /// Abort `upload`: its parts are removed and no object is written.
    pub async fn abort_parts_upload(&self, upload: &PartsUpload) -> Res<()> {
        Ok(self
            .store
            .abort_multipart(&upload.stored_key, &upload.upload_id)
            .await?)
    }

    // ---- unfinished uploads ----

    /// Multipart uploads under `prefix` that were started at least `older_than` ago and
    /// neither completed nor aborted (for example by a process that crashed). Their keys
    /// are stored keys (encrypted, when names are).
    pub async fn stale_uploads(
        &self,
        prefix: &str,
        older_than: Duration,
    ) -> Res<Vec<MultipartUpload>> {
        let (stored_prefix, filter) = match &self.names {
            None => (prefix.to_string(), false),
            Some(k) => {
                let lp = k.list_prefix(prefix);
                (lp.stored, lp.partial)
            }
        };
        let uploads = self.store.list_multipart_uploads(&stored_prefix).await?;
        Ok(uploads
            .into_iter()
            .filter(|u| !filter || self.plain_key(&u.key).is_ok_and(|p| p.starts_with(prefix)))
            .filter(|u| started_before(u, older_than))
            .collect())
    }

    /// Before a new multipart upload of `skey` (a stored key): abort earlier uploads of
    /// exactly that key that a crashed run left behind, so the next run of the command
    /// that started them cleans up. Only ones older than the stale age (a day by default),
    /// so a concurrent writer's live upload is left alone; best effort, since a token may
    /// lack the right to list uploads and the new upload does not depend on it.
    async fn abort_stale_uploads_of(&self, skey: &str) {
        let Ok(uploads) = self.store.list_multipart_uploads(skey).await else {
            return;
        };
        for u in uploads {
            if u.key == skey && started_before(&u, self.stale_upload_age) {
                let _ = self.store.abort_multipart(&u.key, &u.upload_id).await;
            }
        }
    }

    /// Abort the [`stale_uploads`](Self::stale_uploads); returns the ones aborted. An
    /// unfinished upload never replaced an object, so this loses no data.
    pub async fn cleanup(&self, prefix: &str, older_than: Duration) -> Res<Vec<MultipartUpload>> {
        let stale = self.stale_uploads(prefix, older_than).await?;
        for u in &stale {
            match self.store.abort_multipart(&u.key, &u.upload_id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {} // finished or aborted meanwhile
                Err(e) => return Err(e.into()),
            }
        }
        Ok(stale)
    }
}

// ---------------------------------------------------------------------------------------
// Internals

/// Whether `u` was started at least `older_than` ago. An unknown start time qualifies
/// only when every age does (`older_than` zero).
fn started_before(u: &MultipartUpload, older_than: Duration) -> bool {
    match (u.initiated, SystemTime::now().checked_sub(older_than)) {
        (Some(t), Some(cutoff)) => t <= cutoff,
        (None, _) => older_than.is_zero(),
        (Some(_), None) => true,
    }
}

/// The key ids of `recipients`, once each, in order (as `SealedMetadata::recipients`).
pub(crate) fn key_ids(recipients: &[Recipient]) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    recipients
        .iter()
        .map(Recipient::key_id)
        .filter(|id| seen.insert(*id))
        .map(|id| id.to_string())
        .collect()
}

/// The metadata form of `envelope` rewrapped with `binding`, within R2's limit. The
/// part salts only save a ranged read its salt GETs (SECURITY.md §3.6): a header they
/// would push over the limit is written without them rather than refused.
pub(crate) fn rewrap_within_limit(
    envelope: &Envelope,
    recipients: &[Recipient],
    binding: Binding,
    limit: usize,
) -> Result<String, Error> {
    let without_salts = binding.part_salts.is_some().then(|| Binding {
        part_salts: None,
        ..binding.clone()
    });
    let value = |binding| {
        envelope
            .rewrap(recipients, binding)?
            .header()
            .to_metadata_value_within(limit)
    };
    match (value(binding), without_salts) {
        (Err(Error::HeaderTooLarge { .. }), Some(binding)) => value(binding),
        (result, _) => result,
    }
}

/// The sealed metadata of `envelope` rewrapped to `recipients`: the same, with the new
/// recipients recorded and every key the file key was wrapped to kept in `wrapped_to`
/// (the old claim, plus the stanzas `identities` attribute).
pub(crate) fn rewrapped_metadata(
    envelope: &Envelope,
    identities: &[Identity],
    recipients: &[Recipient],
) -> SealedMetadata {
    let mut meta = envelope.metadata().cloned().unwrap_or_default();
    let owners = envelope.stanza_owners(identities);
    let mut history: Vec<String> = Vec::new();
    let known = owners.known.iter().map(KeyId::to_string);
    for id in meta
        .wrapped_to
        .iter()
        .chain(meta.recipients.iter())
        .cloned()
        .chain(known)
        .chain(key_ids(recipients))
    {
        if !history.contains(&id) {
            history.push(id);
        }
    }
    meta.recipients = key_ids(recipients);
    meta.wrapped_to = history;
    meta
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn slices(body: Bytes, size: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(body.len() / size + 1);
    let mut at = 0;
    while at < body.len() {
        let end = (at + size).min(body.len());
        out.push(body.slice(at..end));
        at = end;
    }
    out
}

/// Where a put's plaintext comes from (a stream is fused: read again after its end).
enum Source<'a> {
    Reader(Pin<Box<dyn AsyncRead + Send + 'a>>),
    Stream(Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'a>>),
}

impl Source<'_> {
    /// Up to `max` bytes (a stream may return a chunk of any size), `None` at the end.
    async fn next(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        match self {
            Source::Reader(r) => {
                let mut buf = vec![0u8; max];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) => return Ok(None),
                        Ok(n) => {
                            buf.truncate(n);
                            return Ok(Some(buf.into()));
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Source::Stream(s) => loop {
                match s.next().await {
                    None => return Ok(None),
                    Some(Ok(b)) if b.is_empty() => {}
                    Some(other) => return other.map(Some),
                }
            },
        }
    }

    /// The next piece of a reader (up to `max` bytes); from a stream, pieces adding up to
    /// at least `max` bytes, fewer only at the end. Empty: the end. An HTTP body arrives
    /// in pieces of a few KiB: handing each one to the sealing thread on its own costs
    /// more than sealing it (migrate of 64 MiB objects).
    async fn next_batch(&mut self, max: usize) -> io::Result<Vec<Bytes>> {
        let min = match self {
            Source::Reader(_) => 1,
            Source::Stream(_) => max,
        };
        let mut batch = Vec::new();
        let mut len = 0;
        while len < min {
            match self.next(max - len).await? {
                Some(b) => {
                    len += b.len();
                    batch.push(b);
                }
                None => break,
            }
        }
        Ok(batch)
    }
}

/// A part's plaintext, sealed as it arrives (`salt ‖ STREAM`, with `sealer`). The final
/// chunk comes only after `plaintext` ended without an error after exactly `plain_len`
/// bytes; otherwise the body fails there, and the input's error (or the wrong length) is
/// kept in `input_failure` for the caller.
fn sealed_part_body(
    plaintext: BoxStream<'static, io::Result<Bytes>>,
    sealer: PartSealer,
    plain_len: u64,
    input_failure: Arc<std::sync::Mutex<Option<io::Error>>>,
) -> store::PartBody {
    struct Sealing {
        plaintext: BoxStream<'static, io::Result<Bytes>>,
        sealer: Option<PartSealer>,
        plain_len: u64,
        seen: u64,
        input_failure: Arc<std::sync::Mutex<Option<io::Error>>>,
    }
    let failed = |st: &Sealing, error: io::Error| {
        let shown = io::Error::new(error.kind(), error.to_string());
        *st.input_failure.lock().expect("not poisoned") = Some(error);
        shown
    };
    let state = Sealing {
        plaintext,
        sealer: Some(sealer),
        plain_len,
        seen: 0,
        input_failure,
    };
    futures_util::stream::unfold(state, move |mut st| async move {
        let mut out = Vec::new();
        loop {
            // Dropped after an error or the end: nothing follows.
            let sealer = st.sealer.as_mut()?;
            match st.plaintext.next().await {
                Some(Ok(chunk)) => {
                    st.seen += chunk.len() as u64;
                    if st.seen > st.plain_len {
                        st.sealer = None;
                        let e = io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("the part is longer than its {} bytes", st.plain_len),
                        );
                        return Some((Err(failed(&st, e)), st));
                    }
                    sealer.update(&chunk, &mut out);
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out)), st));
                    }
                }
                Some(Err(e)) => {
                    st.sealer = None;
                    return Some((Err(failed(&st, e)), st));
                }
                None if st.seen < st.plain_len => {
                    st.sealer = None;
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the part ended after {} of its {} bytes",
                            st.seen, st.plain_len
                        ),
                    );
                    return Some((Err(failed(&st, e)), st));
                }
                None => {
                    let sealer = st.sealer.take()?;
                    sealer.finish(&mut out);
                    return Some((Ok(Bytes::from(out)), st));
                }
            }
        }
    })
    .boxed()
}

/// Slices the sealed payload into equal parts and uploads them concurrently.
struct PartUploader {
    store: Arc<dyn Store>,
    key: String,
    upload_id: String,
    part_size: usize,
    concurrency: usize,
    next_part: u32,
    buffer: Vec<u8>,
    /// Each task hands its part's bytes back with the result, for reuse.
    in_flight: tokio::task::JoinSet<(Result<UploadedPart, StoreError>, Bytes)>,
    /// Part buffers whose upload finished, reused for the next parts.
    spare: Vec<Vec<u8>>,
    done: Vec<UploadedPart>,
    stored: u64,
}

impl PartUploader {
    /// Upload every full part in the buffer, keeping at least one byte back: the last
    /// part is only known to be last once the sealer finished.
    async fn flush_full_parts(&mut self, location: &str) -> Res<()> {
        while self.buffer.len() > self.part_size {
            // Part buffers are reused, never grown: fresh 16 MiB buffers freed on other
            // threads stayed in glibc's arenas (peak RSS 172 MiB for a 1 GiB put).
            let mut rest = self
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(self.buffer.capacity()));
            rest.clear();
            rest.extend_from_slice(&self.buffer[self.part_size..]);
            self.buffer.truncate(self.part_size);
            let part = std::mem::replace(&mut self.buffer, rest);
            self.spawn(part, location).await?;
        }
        Ok(())
    }

    async fn spawn(&mut self, part: Vec<u8>, location: &str) -> Res<()> {
        if self.next_part > MAX_PARTS {
            return Err(SealedError::Invalid {
                location: location.to_string(),
                detail: format!(
                    "more than {MAX_PARTS} parts of {} bytes: the input is too large for this part size",
                    self.part_size
                ),
            });
        }
        // Parts in flight are bounded by memory as well as by count: with the part
        // being filled, about PUT_PART_MEMORY bytes of parts are alive.
        let by_memory = (PUT_PART_MEMORY / self.part_size).saturating_sub(1).max(1);
        while self.in_flight.len() >= self.concurrency.min(by_memory) {
            self.join_one().await?;
        }
        self.stored += part.len() as u64;
        let (store, key, id, n) = (
            self.store.clone(),
            self.key.clone(),
            self.upload_id.clone(),
            self.next_part,
        );
        self.next_part += 1;
        self.in_flight.spawn(async move {
            let body = Bytes::from(part);
            let result = store.upload_part(&key, &id, n, body.clone()).await;
            (result, body)
        });
        Ok(())
    }

    async fn join_one(&mut self) -> Res<()> {
        match self.in_flight.join_next().await {
            None => Ok(()),
            Some(Ok((result, body))) => {
                // Reusable once the store let go of every clone of it.
                if let Ok(buf) = body.try_into_mut() {
                    if self.spare.len() < 2 {
                        self.spare.push(buf.into());
                    }
                }
                self.done.push(result?);
                Ok(())
            }
            Some(Err(join)) => Err(SealedError::Invalid {
                location: self.key.clone(),
                detail: format!("a part upload task failed: {join}"),
            }),
        }
    }

    /// Upload what is left as the last part, wait for all, return the parts in order.
    async fn finish(&mut self, location: &str) -> Res<Vec<UploadedPart>> {
        let last = std::mem::take(&mut self.buffer);
        if !last.is_empty() {
            self.spawn(last, location).await?;
        }
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number);
        Ok(parts)
    }
}

/// A whole-object get: the store's body through the opener. Each batch opens on a
/// blocking thread while the next one downloads, as a put seals while it reads, so a large
/// get costs about the slower of the two rather than their sum. A body that fits in one
/// batch (every small object) opens inline, without a thread hop.
struct OpenState {
    opener: Option<PayloadOpener>,
    opening: Option<tokio::task::JoinHandle<OpenedBatch>>,
    body: store::ByteStream,
    body_done: bool,
    location: String,
    batch: Vec<u8>,
}

/// The opener back from a blocking thread, with the plaintext of one batch (or why not)
/// and the batch's buffer for reuse.
type OpenedBatch = (PayloadOpener, Result<Vec<u8>, crate::Error>, Vec<u8>);

impl OpenState {
    fn new(opener: PayloadOpener, body: store::ByteStream, location: String) -> Self {
        OpenState {
            opener: Some(opener),
            opening: None,
            body,
            body_done: false,
            location,
            batch: Vec::new(),
        }
    }

    async fn next(mut self) -> Res<Option<(Bytes, OpenState)>> {
        loop {
            while !self.body_done && self.batch.len() < OPEN_BATCH {
                match self.body.try_next().await? {
                    Some(chunk) => self.batch.extend_from_slice(&chunk),
                    None => self.body_done = true,
                }
            }
            let (mut opener, opened) = match self.opening.take() {
                Some(handle) => {
                    let (opener, opened, mut spent) =
                        handle.await.map_err(|join| SealedError::Invalid {
                            location: self.location.clone(),
                            detail: format!("opening a batch failed: {join}"),
                        })?;
                    // The spent buffer takes the batch after next: no fresh allocation.
                    spent.clear();
                    (opener, Some((opened, spent)))
                }
                None => match self.opener.take() {
                    Some(opener) => (opener, None),
                    None => return Ok(None),
                },
            };
            let open_err = |error| SealedError::Open {
                location: self.location.clone(),
                error,
            };
            let (mut out, spare) = match opened {
                Some((opened, spent)) => (opened.map_err(open_err)?, spent),
                None => (Vec::new(), Vec::new()),
            };
            if self.body_done {
                opener.update(&self.batch, &mut out).map_err(open_err)?;
                self.batch.clear();
                opener.finish(&mut out).map_err(open_err)?;
                if out.is_empty() {
                    return Ok(None);
                }
                return Ok(Some((out.into(), self)));
            }
            let batch = std::mem::replace(&mut self.batch, spare);
            self.opening = Some(tokio::task::spawn_blocking(move || {
                let mut plain = Vec::with_capacity(batch.len());
                let opened = opener.update(&batch, &mut plain).map(|()| plain);
                (opener, opened, batch)
            }));
            if !out.is_empty() {
                return Ok(Some((out.into(), self)));
            }
        }
    }
}

/// What every window of one ranged get shares.
struct RangeSource {
    store: Arc<dyn Store>,
    key: String,
    location: String,
    etag: String,
    envelope: Envelope,
    stored_size: u64,
}

/// Salts (nonces) of a ranged get, by stored offset.
type Salts = HashMap<u64, Vec<u8>>;

impl RangeSource {
    /// Stored bytes `start..end_exclusive` in one small request (a salt apart from its
    /// chunks).
    async fn fetch(&self, start: u64, end_exclusive: u64) -> Res<Vec<u8>> {
        let want = (end_exclusive - start) as usize;
        let mut out = Vec::with_capacity(want);
        let mut body = self.open_span(start, end_exclusive).await?;
        while let Some(chunk) = body.try_next().await? {
            if out.len() + chunk.len() > want {
                return Err(self.corrupt()); // not what was asked for: read no more
            }
            out.extend_from_slice(&chunk);
        }
        if out.len() != want {
            return Err(self.corrupt());
        }
        Ok(out)
    }

    fn corrupt(&self) -> SealedError {
        SealedError::Open {
            location: self.location.clone(),
            error: Error::Corrupt,
        }
    }

    /// A GET of stored bytes `from..to`, only of the version this read began with.
    async fn open_span(&self, from: u64, to: u64) -> Res<store::ByteStream> {
        let got = self
            .store
            .get(
                &self.key,
                Some(ByteRange::Inclusive {
                    start: from,
                    end: to - 1,
                }),
                &GetOptions {
                    if_match: Some(self.etag.clone()),
                },
            )
            .await?;
        if got.range.map(|r| (r.start, r.len())) != Some((from, to - from)) {
            return Err(self.corrupt());
        }
        Ok(got.body)
    }

    /// Stored bytes `from..to` of the read's span. The first call opens the span's GET at
    /// `from`; later calls move forward through the same body (windows only advance) and
    /// drop what lies before `from`.
    async fn take<'a>(&self, span: &'a mut SpanReader, from: u64, to: u64) -> Res<&'a [u8]> {
        if span.body.is_none() {
            span.body = Some(self.open_span(from, span.end).await?);
            span.start = from;
        }
        if from < span.start || to > span.end {
            return Err(self.corrupt());
        }
        // Drop before reading on: only the bytes read past the last window move.
        let mut skip = from - span.start;
        let held = (skip as usize).min(span.buf.len());
        span.buf.drain(..held);
        span.start += held as u64;
        skip -= held as u64;
        while span.start + (span.buf.len() as u64) < to {
            let body = span.body.as_mut().expect("opened above");
            let chunk = match body.try_next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Err(self.corrupt()),
                Err(e) if e.is_retryable() && span.resumes < RANGE_RESUMES => {
                    span.resumes += 1;
                    let at = span.start + span.buf.len() as u64;
                    span.body = Some(self.open_span(at, span.end).await?);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let n = skip.min(chunk.len() as u64) as usize;
            skip -= n as u64;
            if span.buf.is_empty() {
                span.start += n as u64;
            }
            span.buf.extend_from_slice(&chunk[n..]);
        }
        Ok(&span.buf[..(to - from) as usize])
    }

    /// Plaintext `start..=end` (one window), and the salts it had to fetch (not in
    /// `salts`).
    async fn window(
        &self,
        start: u64,
        end: u64,
        salts: &Salts,
        span: &mut SpanReader,
    ) -> Res<(Bytes, Salts)> {
        let open_err = |error| SealedError::Open {
            location: self.location.clone(),
            error,
        };
        let plan = RangePlan::new(self.envelope.parts(), self.stored_size, start, end)
            .map_err(open_err)?;
        // The pieces lie back to back in the stored body (a part's chunks end where the
        // next part's salt begins): the span's one request covers them all, from the first
        // piece's salt when it is not known yet and close to its chunks.
        let (Some(first), Some(last)) = (plan.pieces.first(), plan.pieces.last()) else {
            return Err(self.corrupt());
        };
        let known = |at: u64| salts.get(&at);
        let from = match known(first.salt.0) {
            None if first.chunks.0 - first.salt.1 <= RANGE_COALESCE_GAP => first.salt.0,
            _ => first.chunks.0,
        };
        let body = self.take(span, from, last.chunks.1).await?;
        let cut = |(a, b): (u64, u64)| {
            (a >= from && b <= last.chunks.1)
                .then(|| &body[(a - from) as usize..(b - from) as usize])
        };
        let mut fetched_salts = Salts::new();
        let mut pieces: Vec<(Vec<u8>, &[u8])> = Vec::with_capacity(plan.pieces.len());
        for piece in &plan.pieces {
            let salt = match (known(piece.salt.0), cut(piece.salt)) {
                // A checked salt, and the body still holds it.
                (Some(k), Some(got)) if k[..] != *got => return Err(self.corrupt()),
                (Some(k), _) => k.clone(),
                (None, got) => {
                    let salt = match got {
                        Some(got) => got.to_vec(),
                        None => self.fetch(piece.salt.0, piece.salt.1).await?,
                    };
                    fetched_salts.insert(piece.salt.0, salt.clone());
                    salt
                }
            };
            pieces.push((salt, cut(piece.chunks).ok_or_else(|| self.corrupt())?));
        }
        let views: Vec<(&[u8], &[u8])> = pieces.iter().map(|(s, c)| (&s[..], *c)).collect();
        let mut plain = Vec::new();
        let wanted = plan
            .open_into(&self.envelope, &views, &mut plain)
            .map_err(open_err)?;
        // Authenticated plaintext leaves for the client from here, as a whole get's does
        // (not zeroized: it is the caller's now). Cut, not copied.
        Ok((Bytes::from(plain).slice(wanted), fetched_salts))
    }
}

/// The stored span of one ranged get: one upstream GET, read forward window by window.
struct SpanReader {
    body: Option<store::ByteStream>,
    /// Stored offset of `buf[0]` (of the next byte the GET delivers while `buf` is empty).
    start: u64,
    buf: Vec<u8>,
    /// End of the span, exclusive.
    end: u64,
    resumes: u32,
}

impl SpanReader {
    fn new(end: u64) -> SpanReader {
        SpanReader {
            body: None,
            start: 0,
            buf: Vec::new(),
            end,
            resumes: 0,
        }
    }
}

/// The body of a ranged get whose first window (`first`, ending at `first_end`) is
/// already open: the other windows of `first_end + 1..=end` follow from the same GET,
/// opened by a task up to [`RANGE_READ_AHEAD`] windows ahead of the one being sent.
fn range_body(
    source: Arc<RangeSource>,
    salts: Arc<Salts>,
    mut span: SpanReader,
    first: Bytes,
    first_end: u64,
    end: u64,
) -> PlainStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Res<Bytes>>(RANGE_READ_AHEAD);
    let task = tokio::spawn(async move {
        let mut s = first_end + 1;
        while s <= end {
            let e = end.min(s + RANGE_WINDOW - 1);
            let window = source.window(s, e, &salts, &mut span).await.map(|w| w.0);
            let failed = window.is_err();
            if tx.send(window).await.is_err() || failed {
                return; // the reader went away, or the read ends here
            }
            s = e + 1;
        }
    });
    // A reader that stops early stops the task (and its GET) too.
    let rest = futures_util::stream::unfold((rx, AbortOnDrop(task)), |(mut rx, task)| async {
        rx.recv().await.map(|window| (window, (rx, task)))
    });
    futures_util::stream::once(async move { Ok(first) })
        .chain(rest)
        .boxed()
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::header::R2_METADATA_LIMIT;

    #[test]
    fn name_prefix_comes_from_the_store_url() {
        assert_eq!(name_prefix_of("s3://bucket/"), "");
        assert_eq!(name_prefix_of("r2://bucket/a/b/"), "a/b/");
        assert_eq!(name_prefix_of("file:///tmp/x"), "");
    }

    #[test]
    fn part_size_grows_for_huge_objects_only() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(store::fs::FsStore::new(dir.path()).unwrap());
        let b = SealedBucket::new(store);
        assert_eq!(b.part_size_for(Some(1 << 30)), DEFAULT_PART_SIZE);
        assert_eq!(b.part_size_for(None), DEFAULT_PART_SIZE);
        let huge = 1u64 << 40;
        let p = b.part_size_for(Some(huge));
        assert!(p > DEFAULT_PART_SIZE && payload_len(huge).div_ceil(p) <= MAX_PARTS as u64);
    }

    #[test]
    fn part_salts_are_dropped_rather_than_overflow_the_metadata_limit() {
        let id = Identity::Sym(crate::keys::SymKey::generate());
        let r = [id.to_recipient()];
        let salts: Vec<[u8; 16]> = (0..128u8).map(|i| [i; 16]).collect();
        let layout = PartsLayout::new(&[10; 128], &salts).unwrap();
        let pending = Envelope::seal(&r, Binding::default()).unwrap();
        let binding = |user_bytes: usize| Binding {
            metadata: Some(SealedMetadata {
                user: BTreeMap::from([("x".to_string(), "y".repeat(user_bytes))]),
                ..Default::default()
            }),
            parts: Some(layout),
            part_salts: Some(salts.clone()),
            ..Default::default()
        };
        let salts_of = |value: &str| {
            let header = Header::from_metadata_value(value).unwrap();
            let opened = Envelope::open(&header, std::slice::from_ref(&id), None).unwrap();
            opened.part_salts().map(<[_]>::to_vec)
        };
        // Small metadata: the salts fit and are written.
        let value = rewrap_within_limit(&pending, &r, binding(100), R2_METADATA_LIMIT).unwrap();
        assert_eq!(salts_of(&value), Some(salts.clone()));
        // Metadata that fits only without the 2,790 bytes of salts: written without them.
        let value = rewrap_within_limit(&pending, &r, binding(4000), R2_METADATA_LIMIT).unwrap();
        assert!(value.len() + 2790 > R2_METADATA_LIMIT);
        assert_eq!(salts_of(&value), None);
        // Too large even without: still refused.
        assert!(matches!(
            rewrap_within_limit(&pending, &r, binding(7000), R2_METADATA_LIMIT),
            Err(Error::HeaderTooLarge { .. })
        ));
    }
}
