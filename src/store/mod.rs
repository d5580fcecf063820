//! Storage: move object bytes and metadata to and from a bucket, and nothing else.
//!
//! This module owns the [`Store`] trait and its backends: [`fs::FsStore`] (`file://DIR`,
//! the embedded default) and, with the `s3` feature, `s3::S3Store` (`s3://` and `r2://`
//! over aws-sdk-s3). It must never do cryptography: the sealed-bucket layer hands it
//! ciphertext and envelope metadata and gets back exactly what it stored.
//!
//! # Contract shared by every backend
//! - Keys are relative to the store's root (a bucket plus an optional prefix); they are
//!   non-empty UTF-8, at most 1024 bytes. `fs` additionally refuses keys that are not
//!   plain relative paths (see [`fs`]).
//! - Bodies are of known length: a put is one request with a Content-Length, never a
//!   stream of unknown length (R2 refuses those). Large objects go multipart. Only
//!   [`Store::upload_part_stream`] takes a stream, of a length declared up front.
//! - ETags are returned as the store gives them, quoted (`"<hex md5>"` for a single put,
//!   `"<hex md5 of the part md5s>-N"` for a multipart upload on the stores tested here).
//! - User metadata keys must be lowercase `[a-z0-9-]` (S3 lowercases header names, so
//!   anything else would not round-trip) and values visible ASCII or spaces, with no
//!   leading or trailing space (HTTP trims them). Both are checked before any I/O.
//! - Conditional writes: `if_none_match: Some("*")` creates only if absent; `if_match`
//!   replaces only the version with that ETag. A failed condition, including `if_match`
//!   on a missing object, is [`ErrorKind::PreconditionFailed`].
//! - Gets stream the body ([`ByteStream`]): memory stays bounded whatever the object size.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;
pub use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use futures_util::TryStreamExt;

pub mod fs;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "s3")]
pub(crate) mod s3_direct;
#[cfg(feature = "s3")]
mod s3_endpoints;
#[doc(hidden)]
pub mod wire;

/// Smallest part S3 and R2 accept for every part of a multipart upload but the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Largest part S3 and R2 accept in a multipart upload.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Largest number of parts in one multipart upload.
pub const MAX_PARTS: u32 = 10_000;
/// Longest key S3 accepts, in bytes (prefix included).
pub const MAX_KEY_LEN: usize = 1024;
/// Page size when `list` is called with `max_keys: None` (also the S3 maximum).
pub const DEFAULT_MAX_KEYS: u32 = 1000;

/// An object body as it arrives: chunks of bytes, each possibly an error.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// A body as the caller produces it, for [`Store::put_stream`] and
/// [`Store::upload_part_stream`]: chunks of bytes, each possibly an error (which fails the
/// request, and stores nothing of it).
pub type PartBody = BoxStream<'static, io::Result<Bytes>>;

/// Options for a put (and for the object a multipart upload will create).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// `Content-Type` stored with the object.
    pub content_type: Option<String>,
    /// `Cache-Control` stored with the object.
    pub cache_control: Option<String>,
    /// User metadata (`x-amz-meta-*`), keys lowercase `[a-z0-9-]`.
    pub metadata: BTreeMap<String, String>,
    /// Write only if the current object has this ETag.
    pub if_match: Option<String>,
    /// Write only if no object exists: the only accepted value is `"*"`.
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
}

/// What a successful write returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// ETag of the new object, quoted as the store returned it.
    pub etag: String,
}

/// Options for a get.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// Fail with [`ErrorKind::PreconditionFailed`] unless the object has this ETag:
    /// guarantees that successive ranged reads all come from the same version.
    pub if_match: Option<String>,
}

/// A byte range to read. HTTP semantics: an `end` past the object is clamped; a `start`
/// at or past the end is [`ErrorKind::RangeNotSatisfiable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// Bytes `start..=end`.
    Inclusive { start: u64, end: u64 },
    /// From `start` to the end of the object.
    From(u64),
    /// The last `n` bytes (all of them if the object is shorter); `n` must be positive.
    Suffix(u64),
}

impl ByteRange {
    /// The `Range` header value, e.g. `bytes=0-99`.
    pub fn to_header(&self) -> String {
        match *self {
            ByteRange::Inclusive { start, end } => format!("bytes={start}-{end}"),
            ByteRange::From(start) => format!("bytes={start}-"),
            ByteRange::Suffix(n) => format!("bytes=-{n}"),
        }
    }

    /// Parses the spec of one HTTP byte range, without its `bytes=` unit: `FIRST-LAST`
    /// (inclusive), `FIRST-` or `-SUFFIX`, in decimal digits only (no sign, space or
    /// list). `None` for anything else, and for an end before its start or an empty
    /// suffix, which a server would ignore: what parses can be sent as it is.
    pub fn parse(spec: &str) -> Option<ByteRange> {
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        let range = match spec.split_once('-')? {
            ("", suffix) => ByteRange::Suffix(number(suffix)?),
            (start, "") => ByteRange::From(number(start)?),
            (start, end) => ByteRange::Inclusive {
                start: number(start)?,
                end: number(end)?,
            },
        };
        range.validate().is_ok().then_some(range)
    }

    /// Refuse ranges a server would silently ignore (S3 answers a malformed range with the
    /// whole object and a 200, which a caller expecting a slice would misread).
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        match *self {
            ByteRange::Inclusive { start, end } if end < start => {
                Err("byte range end is before its start")
            }
            ByteRange::Suffix(0) => Err("suffix byte range of zero bytes"),
            _ => Ok(()),
        }
    }

    /// The bytes this range selects in an object of `size` bytes, `None` if none.
    pub fn resolve(&self, size: u64) -> Option<ContentRange> {
        if size == 0 {
            return None;
        }
        let (start, end) = match *self {
            ByteRange::Inclusive { start, end } => (start, end.min(size - 1)),
            ByteRange::From(start) => (start, size - 1),
            ByteRange::Suffix(0) => return None,
            ByteRange::Suffix(n) => (size.saturating_sub(n), size - 1),
        };
        (start < size && start <= end).then_some(ContentRange { start, end })
    }
}

/// The bytes a ranged get actually served: `start..=end` of the whole object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    pub end: u64,
}

impl ContentRange {
    /// Number of bytes in the range (never zero).
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Always false: a served range holds at least one byte (here for clippy's sake).
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// An object as a listing describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the store's root.
    pub key: String,
    /// Size of the whole object in bytes.
    pub size: u64,
    /// ETag, quoted as the store returned it.
    pub etag: String,
    /// Last write (put, copy, completed upload), if the store reports it.
    pub last_modified: Option<SystemTime>,
}

/// An object as `head` and `get` describe it: the listing fields plus its headers.
/// (Listings do not carry user metadata, hence two types rather than half-empty fields.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub meta: ObjectMeta,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    /// User metadata, keys lowercase.
    pub metadata: BTreeMap<String, String>,
}

/// A get in progress: the object's description and its body as a stream.
pub struct GetResult {
    /// The object (`info.meta.size` is the size of the whole object, not of the range).
    pub info: ObjectInfo,
    /// The bytes actually served: `None` means the whole object. A server that ignores a
    /// `Range` header shows up here as `None` rather than being papered over.
    pub range: Option<ContentRange>,
    /// The body, read lazily from the store.
    pub body: ByteStream,
}

impl fmt::Debug for GetResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetResult")
            .field("info", &self.info)
            .field("range", &self.range)
            .field("body", &"<stream>")
            .finish()
    }
}

impl GetResult {
    /// Read the whole body into memory. Only for bodies known to be small: the point of
    /// [`GetResult::body`] is that large ones need not be.
    pub async fn bytes(self) -> Result<Bytes, StoreError> {
        let all = self.bytes_at_most(usize::MAX).await?;
        Ok(all.expect("no body holds more than usize::MAX bytes"))
    }

    /// Read the whole body into memory if it holds at most `limit` bytes; `None` as soon
    /// as it holds more (the rest is not read). For bodies whose size the caller knows,
    /// from a store that may not keep to it: a server that ignores `Range`, or a declared
    /// size that is no bound (a chunked answer).
    pub async fn bytes_at_most(self, limit: usize) -> Result<Option<Bytes>, StoreError> {
        let mut out = Vec::new();
        let mut body = self.body;
        while let Some(chunk) = body.try_next().await? {
            if out.len() + chunk.len() > limit {
                return Ok(None);
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(Bytes::from(out)))
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Objects in lexicographic (byte) order of key.
    pub objects: Vec<ObjectMeta>,
    /// With a delimiter: the distinct key prefixes up to and including it.
    pub common_prefixes: Vec<String>,
    /// Pass back to `list` to get the next page; `None` on the last page. Pages may hold
    /// fewer than `max_keys` entries even when more follow, so always paginate on this.
    pub next_continuation: Option<String>,
}

/// Headers that replace the source's when copying.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaceMetadata {
    pub metadata: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
}

/// Options for a server-side copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// `None` keeps the source's headers; `Some` replaces all of them. Copying an object
    /// onto itself requires `Some` (that is how headers are rewritten in place).
    pub replace_metadata: Option<ReplaceMetadata>,
    /// Copy only if the source has this ETag.
    pub if_match: Option<String>,
}

/// A part uploaded to a multipart upload; hand them all to `complete_multipart`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    pub part_number: u32,
    pub etag: String,
}

/// Where an `upload_part_copy` takes its bytes from: an object in the same store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartCopySource {
    /// Key of the source object (relative to the store's root, like every key).
    pub key: String,
    /// Bytes `start..=end` of the source; `None` copies the whole source.
    pub range: Option<(u64, u64)>,
    /// Copy only if the source has this ETag (`x-amz-copy-source-if-match`), so that every
    /// part of one upload comes from the same version of the source.
    pub if_match: Option<String>,
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    /// Key relative to the store's root.
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<SystemTime>,
}

/// A bucket (or directory) that holds objects. Object-safe: use `Arc<dyn Store>`.
///
/// Every method either does all of its work or fails with a [`StoreError`]; none of them
/// retries on its own beyond what the backend's client does (the S3 SDK retries transient
/// failures a few times). [`StoreError::is_retryable`] says whether trying again can help.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Where this store points, for messages: `s3://bucket/prefix/`, `file:///dir`.
    /// Never contains credentials.
    fn url(&self) -> &str;

    /// How many bytes of user metadata (every key and value, UTF-8) one object may
    /// carry: R2's 8 KiB unless the store knows a smaller limit (AWS S3: 2 KB). Writers
    /// check their header against it before the first request (SECURITY.md §3.4).
    fn metadata_limit(&self) -> usize {
        crate::format::header::R2_METADATA_LIMIT
    }

    /// Write a whole object in one request.
    async fn put(&self, key: &str, body: Bytes, opts: &PutOptions)
        -> Result<PutResult, StoreError>;

    /// [`put`](Self::put) from a stream of exactly `len` bytes, so that a large object
    /// need not be held in memory. The object is written only if `body` ends without an
    /// error after exactly `len` bytes; an error from `body`, or a body shorter or longer
    /// than `len`, fails the call and leaves the key as it was. Such a failure is
    /// [`ErrorKind::InvalidRequest`] and not retryable (the stream is spent), with the
    /// body's own error as its source. Conditions work as for `put`.
    ///
    /// The default collects the stream and calls `put`, so that wrappers written before
    /// this method existed keep working; both backends stream, and a wrapper should
    /// forward it.
    async fn put_stream(
        &self,
        key: &str,
        len: u64,
        body: PartBody,
        opts: &PutOptions,
    ) -> Result<PutResult, StoreError> {
        let collected = collect_exact(body, len, Op::Put, || location_in(self.url(), key)).await?;
        self.put(key, collected.into(), opts).await
    }

    /// Read an object, or a range of it, as a stream.
    async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
        opts: &GetOptions,
    ) -> Result<GetResult, StoreError>;

    /// An object's size, ETag and headers, without its body.
    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError>;

    /// One page of the keys starting with `prefix`, in byte order. With a `delimiter`,
    /// keys that contain it after the prefix are rolled up into `common_prefixes`.
    /// `max_keys` is 1..=1000 (`None`: 1000).
    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
        max_keys: Option<u32>,
    ) -> Result<ListPage, StoreError>;

    /// The first page of [`list`](Self::list) that holds only entries sorting after
    /// `start_after` (S3's `StartAfter`, ListObjects' `marker`); continue with `list` and
    /// its continuation. This default pages past the earlier entries; stores that can
    /// start there directly override it.
    async fn list_after(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: &str,
        max_keys: Option<u32>,
    ) -> Result<ListPage, StoreError> {
        let mut continuation = None;
        loop {
            let mut page = self.list(prefix, delimiter, continuation, max_keys).await?;
            page.objects.retain(|o| o.key.as_str() > start_after);
            page.common_prefixes.retain(|p| p.as_str() > start_after);
            let empty = page.objects.is_empty() && page.common_prefixes.is_empty();
            match page.next_continuation.take() {
                Some(next) if empty => continuation = Some(next),
                next => {
                    page.next_continuation = next;
                    return Ok(page);
                }
            }
        }
    }

    /// Remove an object. Removing a missing key succeeds (as on S3).
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Copy an object inside the store without downloading it (at most 5 GiB on S3).
    async fn copy(
        &self,
        src_key: &str,
        dst_key: &str,
        opts: &CopyOptions,
    ) -> Result<PutResult, StoreError>;

    /// Start a multipart upload; returns its upload id. `opts` carries the headers the
    /// object will get; conditions are refused ([`ErrorKind::InvalidRequest`]).
    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Result<String, StoreError>;

    /// Upload part `part_number` (1..=10000). Every part but the last must be at least
    /// [`MIN_PART_SIZE`], and on R2 all parts but the last must have the same size.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> Result<UploadedPart, StoreError>;

    /// [`upload_part`](Self::upload_part) from a stream of exactly `len` bytes, so that a
    /// large part need not be held in memory. The part is stored only if `body` ends
    /// without an error after exactly `len` bytes; an error from `body`, or a body shorter
    /// or longer than `len`, fails the call and stores none of its bytes. (A part uploaded
    /// earlier under the same number stays on fs; Garage 2.5 then refuses to complete with
    /// it, so send it again.) Such a failure is [`ErrorKind::InvalidRequest`] and not
    /// retryable (the stream is spent), with the body's own error as its source.
    ///
    /// The default collects the stream and calls `upload_part`, so that wrappers written
    /// before this method existed keep working; both backends stream, and a wrapper
    /// should forward it.
    async fn upload_part_stream(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        len: u64,
        body: PartBody,
    ) -> Result<UploadedPart, StoreError> {
        let collected =
            collect_exact(body, len, Op::UploadPart, || location_in(self.url(), key)).await?;
        self.upload_part(key, upload_id, part_number, collected.into())
            .await
    }

    /// Fill part `part_number` with bytes of another object, server-side (S3
    /// `UploadPartCopy`): nothing passes through the client. This is how objects over the
    /// 5 GiB single-copy limit are copied. Each range is at most 5 GiB; the part rules of
    /// [`upload_part`](Self::upload_part) apply to the resulting sizes. A failed source
    /// `if_match` is [`ErrorKind::PreconditionFailed`]; a range past the source's end is
    /// [`ErrorKind::InvalidRequest`] or [`ErrorKind::RangeNotSatisfiable`].
    ///
    /// The default answers [`ErrorKind::Unsupported`], so that wrappers written before
    /// this method existed keep compiling; both backends implement it, and a wrapper
    /// should forward it.
    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source: &PartCopySource,
    ) -> Result<UploadedPart, StoreError> {
        let _ = (upload_id, part_number, source);
        Err(StoreError::new(
            Op::UploadPartCopy,
            format!("{}/{key}", self.url()),
            ErrorKind::Unsupported,
        )
        .with_detail("this store does not implement upload_part_copy"))
    }

    /// Assemble the parts (in ascending part-number order) into the object.
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Result<PutResult, StoreError>;

    /// [`complete_multipart`](Store::complete_multipart) only if the object at `key` still
    /// has ETag `if_match`, else [`ErrorKind::PreconditionFailed`] (a missing object too).
    /// Atomic where the server honours `If-Match` on CompleteMultipartUpload (R2, AWS S3);
    /// elsewhere only a check right before completing (this default, and what the S3
    /// backend also does first because Garage and moto ignore the header): a write that
    /// lands between the check and the completion is overwritten. SECURITY.md §3.12.
    async fn complete_multipart_if_match(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        if_match: &str,
    ) -> Result<PutResult, StoreError> {
        check_current_etag(self, Op::CompleteMultipart, key, if_match).await?;
        self.complete_multipart(key, upload_id, parts).await
    }

    /// Discard an unfinished upload and its parts.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError>;

    /// Unfinished uploads whose key starts with `prefix` (so crashed uploads can be found
    /// and aborted), ordered by key.
    async fn list_multipart_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<MultipartUpload>, StoreError>;
}

/// `Ok` if the object at `key` exists with ETag `etag`, else `PreconditionFailed`.
pub(crate) async fn check_current_etag<S: Store + ?Sized>(
    store: &S,
    op: Op,
    key: &str,
    etag: &str,
) -> Result<(), StoreError> {
    let location = || format!("{}/{key}", store.url().trim_end_matches('/'));
    match store.head(key).await {
        Ok(info) if etag_eq(&info.meta.etag, etag) => Ok(()),
        Ok(_) => Err(
            StoreError::new(op, location(), ErrorKind::PreconditionFailed)
                .with_detail("the object changed since it was read"),
        ),
        Err(e) if e.is_not_found() => {
            Err(
                StoreError::new(op, location(), ErrorKind::PreconditionFailed)
                    .with_detail("the object was deleted since it was read"),
            )
        }
        Err(e) => Err(e),
    }
}

/// Open a store from a URL: `file://DIR` (created if missing; `file:///abs` or
/// `file://relative`), or with the `s3` feature `s3://bucket[/prefix]` and
/// `r2://bucket[/prefix]` configured from the environment (see `s3::S3Store::from_url`).
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(dir) = url.strip_prefix("file://") {
        return Ok(Arc::new(fs::FsStore::create(dir)?));
    }
    if url.starts_with("s3://") || url.starts_with("r2://") {
        #[cfg(feature = "s3")]
        return Ok(Arc::new(
            s3::S3Store::from_url(url, s3::S3Options::default()).await?,
        ));
        #[cfg(not(feature = "s3"))]
        return Err(StoreError::new(Op::Open, url, ErrorKind::InvalidRequest)
            .with_detail("this build has no S3 support (enable the `s3` feature)"));
    }
    Err(
        StoreError::new(Op::Open, url, ErrorKind::InvalidRequest).with_detail(
            "unknown store URL: expected file://DIR, s3://BUCKET[/PREFIX] or r2://BUCKET[/PREFIX]",
        ),
    )
}

// ---------------------------------------------------------------------------------------
// Errors

/// The operation a [`StoreError`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    Open,
    Put,
    Get,
    Head,
    List,
    Delete,
    Copy,
    CreateMultipart,
    UploadPart,
    UploadPartCopy,
    CompleteMultipart,
    AbortMultipart,
    ListMultipartUploads,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open",
            Op::Put => "put",
            Op::Get => "get",
            Op::Head => "head",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Copy => "copy",
            Op::CreateMultipart => "create-multipart",
            Op::UploadPart => "upload-part",
            Op::UploadPartCopy => "upload-part-copy",
            Op::CompleteMultipart => "complete-multipart",
            Op::AbortMultipart => "abort-multipart",
            Op::ListMultipartUploads => "list-multipart-uploads",
        })
    }
}

/// What went wrong, coarsely enough to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No such object (or, for multipart calls, no such upload).
    NotFound,
    /// The bucket (or the `file://` directory) does not exist.
    NoSuchBucket,
    /// A condition (`if_match`, `if_none_match`, copy-source `if_match`) did not hold.
    PreconditionFailed,
    /// The range starts at or past the end of the object.
    RangeNotSatisfiable,
    /// Credentials are valid but not allowed to do this.
    AccessDenied,
    /// Credentials are missing, unknown, expired or do not sign correctly.
    InvalidCredentials,
    /// The request is malformed or breaks a rule (bad key, part too small, ...).
    InvalidRequest,
    /// The server does not implement this operation.
    Unsupported,
    /// The connection failed: the endpoint could not be reached, a connection broke, or
    /// the server did not answer (or read a body) in time.
    Network,
    /// The server answered that it is overloaded or failing (429, 5xx).
    Unavailable,
    /// Anything else.
    Other,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::NoSuchBucket => "no such bucket",
            ErrorKind::PreconditionFailed => "precondition failed",
            ErrorKind::RangeNotSatisfiable => "range not satisfiable",
            ErrorKind::AccessDenied => "access denied",
            ErrorKind::InvalidCredentials => "invalid credentials",
            ErrorKind::InvalidRequest => "invalid request",
            ErrorKind::Unsupported => "not supported by this store",
            ErrorKind::Network => "network failure",
            ErrorKind::Unavailable => "service unavailable",
            ErrorKind::Other => "failed",
        }
    }

    /// Whether an error of this kind is transient unless the backend knows better.
    pub fn default_retryable(self) -> bool {
        matches!(self, ErrorKind::Network | ErrorKind::Unavailable)
    }
}

/// A failed store operation: what (operation), where (store URL and key), which kind,
/// and whether retrying can help. Displays on one line and never contains credentials.
pub struct StoreError {
    op: Op,
    location: String,
    kind: ErrorKind,
    retryable: bool,
    detail: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// An error of `kind` during `op` on `location` (a URL such as `s3://bucket/key`).
    /// Retryable iff the kind is by default ([`ErrorKind::default_retryable`]).
    pub fn new(op: Op, location: impl Into<String>, kind: ErrorKind) -> Self {
        StoreError {
            op,
            location: location.into(),
            kind,
            retryable: kind.default_retryable(),
            detail: None,
            source: None,
        }
    }

    /// Add a human-readable detail (flattened to one line, truncated).
    pub fn with_detail(mut self, detail: impl AsRef<str>) -> Self {
        self.detail = Some(one_line(detail.as_ref()));
        self
    }

    /// Override whether a retry can help.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Attach the underlying error (reachable through `source()`, never displayed).
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn op(&self) -> Op {
        self.op
    }

    /// The store URL and key, e.g. `s3://bucket/prefix/key`.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether trying the same operation again can succeed (network trouble, 5xx, 429).
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    pub fn is_precondition_failed(&self) -> bool {
        self.kind == ErrorKind::PreconditionFailed
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.location, self.kind.describe())?;
        if self.retryable {
            f.write_str(" (retryable)")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

// Hand-written so that a backend's error (which may embed a raw HTTP response) is not
// dumped by `{:?}`: the detail already carries what is useful.
impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("op", &self.op)
            .field("location", &self.location)
            .field("kind", &self.kind)
            .field("retryable", &self.retryable)
            .field("detail", &self.detail)
            .finish()
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Flatten to one line and cap the length: details come from servers and OS errors.
fn one_line(s: &str) -> String {
    const MAX: usize = 400;
    let mut out: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > MAX {
        let mut cut = MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

// ---------------------------------------------------------------------------------------
// Streamed part bodies

/// `body`, checked to hold exactly `len` bytes: a chunk that would go past `len` is an
/// error instead, and so is an end before `len`. The chunk that completes `len` is held
/// until `body` has ended without an error: an HTTP client stops reading a body at its
/// Content-Length, so a longer body (or a late error) would otherwise go unnoticed and
/// the part be stored. Nothing follows an error.
pub(crate) fn exact_len(body: PartBody, len: u64) -> ExactLen {
    ExactLen {
        body,
        remaining: len,
        held: None,
        done: false,
    }
}

pub(crate) struct ExactLen {
    body: PartBody,
    /// Bytes still to come from `body`.
    remaining: u64,
    /// The last chunk, until `body` ended.
    held: Option<Bytes>,
    done: bool,
}

impl ExactLen {
    /// Bytes this stream has still to yield (the S3 store's stall watch reports it).
    #[cfg(feature = "s3")]
    pub(crate) fn remaining(&self) -> u64 {
        self.remaining + self.held.as_ref().map_or(0, |b| b.len() as u64)
    }
}

impl Stream for ExactLen {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let failure = loop {
            match futures_util::ready!(self.body.poll_next_unpin(cx)) {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) if chunk.len() as u64 > self.remaining => {
                    break io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the body is longer than its declared length",
                    )
                }
                Some(Ok(chunk)) => {
                    self.remaining -= chunk.len() as u64;
                    if self.remaining > 0 {
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    self.held = Some(chunk);
                }
                Some(Err(e)) => break e,
                None if self.remaining > 0 => {
                    break io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the body ended {} bytes short of its declared length",
                            self.remaining
                        ),
                    )
                }
                None => {
                    self.done = true;
                    return Poll::Ready(self.held.take().map(Ok));
                }
            }
        };
        self.done = true;
        self.held = None;
        Poll::Ready(Some(Err(failure)))
    }
}

/// The failure of a part whose body failed (or was not its declared length).
/// A streamed request whose body failed (`op`: [`Op::Put`] or [`Op::UploadPart`]).
pub(crate) fn body_error(op: Op, location: String, e: io::Error) -> StoreError {
    StoreError::new(op, location, ErrorKind::InvalidRequest)
        .with_detail(format!("the body failed: {e}"))
        .with_retryable(false)
        .with_source(e)
}

/// `key` in the store at `url`, for messages.
fn location_in(url: &str, key: &str) -> String {
    format!("{}/{key}", url.trim_end_matches('/'))
}

/// The default streamed methods: `body`, checked to hold exactly `len` bytes, in memory.
async fn collect_exact(
    body: PartBody,
    len: u64,
    op: Op,
    location: impl Fn() -> String,
) -> Result<Vec<u8>, StoreError> {
    let mut collected = Vec::new();
    let mut body = exact_len(body, len);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| body_error(op, location(), e))?;
        collected.extend_from_slice(&chunk);
    }
    Ok(collected)
}

// ---------------------------------------------------------------------------------------
// Checks shared by the backends, so that both refuse the same requests before any I/O.

pub(crate) fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("empty key");
    }
    if key.len() > MAX_KEY_LEN {
        return Err("key longer than 1024 bytes");
    }
    if key.chars().any(|c| c.is_control()) {
        return Err("key contains a control character");
    }
    Ok(())
}

fn check_header_value(what: &'static str, v: &str) -> Result<(), &'static str> {
    if v.bytes().all(|b| (0x20..0x7f).contains(&b)) && v.trim() == v {
        Ok(())
    } else {
        Err(what)
    }
}

pub(crate) fn check_headers(
    content_type: Option<&str>,
    cache_control: Option<&str>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), &'static str> {
    if let Some(v) = content_type {
        check_header_value("content type must be visible ASCII", v)?;
    }
    if let Some(v) = cache_control {
        check_header_value("cache control must be visible ASCII", v)?;
    }
    for (k, v) in metadata {
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("metadata keys must be lowercase [a-z0-9-]");
        }
        check_header_value(
            "metadata values must be visible ASCII or spaces, without leading or trailing space",
            v,
        )?;
    }
    Ok(())
}

pub(crate) fn check_put_options(opts: &PutOptions) -> Result<(), &'static str> {
    check_headers(
        opts.content_type.as_deref(),
        opts.cache_control.as_deref(),
        &opts.metadata,
    )?;
    match opts.if_none_match.as_deref() {
        None | Some("*") => {}
        Some(_) => return Err("if_none_match only accepts \"*\" on writes"),
    }
    if let Some(etag) = &opts.if_match {
        check_header_value("if_match must be a visible ASCII ETag", etag)?;
        if etag.is_empty() {
            return Err("empty if_match ETag");
        }
    }
    Ok(())
}

pub(crate) fn check_max_keys(max_keys: Option<u32>) -> Result<u32, &'static str> {
    match max_keys {
        None => Ok(DEFAULT_MAX_KEYS),
        Some(n @ 1..=DEFAULT_MAX_KEYS) => Ok(n),
        Some(_) => Err("max_keys must be between 1 and 1000"),
    }
}

pub(crate) fn check_parts(parts: &[UploadedPart]) -> Result<(), &'static str> {
    if parts.is_empty() {
        return Err("a multipart upload needs at least one part");
    }
    if parts.len() > MAX_PARTS as usize {
        return Err("more than 10000 parts");
    }
    if parts
        .windows(2)
        .any(|w| w[0].part_number >= w[1].part_number)
    {
        return Err("parts must be listed in strictly ascending part-number order");
    }
    Ok(())
}

pub(crate) fn check_part_number(n: u32) -> Result<(), &'static str> {
    if (1..=MAX_PARTS).contains(&n) {
        Ok(())
    } else {
        Err("part numbers run from 1 to 10000")
    }
}

/// Largest range one `UploadPartCopy` (or one `CopyObject`) may copy on S3 and R2.
pub const MAX_COPY_SIZE: u64 = 5 * 1024 * 1024 * 1024;

pub(crate) fn check_copy_range(range: Option<(u64, u64)>) -> Result<(), &'static str> {
    match range {
        Some((start, end)) if end < start => Err("copy range end is before its start"),
        Some((start, end)) if end - start + 1 > MAX_COPY_SIZE => {
            Err("a copied part holds at most 5 GiB")
        }
        _ => Ok(()),
    }
}

/// Compare ETags the way S3 does for strong validators, tolerating a missing pair of quotes.
pub(crate) fn etag_eq(a: &str, b: &str) -> bool {
    a.trim_matches('"') == b.trim_matches('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads_stop_past_their_limit() {
        let get = |chunks: Vec<&'static [u8]>, consumed: Arc<std::sync::atomic::AtomicUsize>| {
            let body = futures_util::stream::iter(chunks).map(move |c| {
                consumed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(Bytes::from_static(c))
            });
            GetResult {
                info: ObjectInfo {
                    meta: ObjectMeta {
                        key: "k".into(),
                        size: 0,
                        etag: "\"e\"".into(),
                        last_modified: None,
                    },
                    content_type: None,
                    cache_control: None,
                    metadata: BTreeMap::new(),
                },
                range: None,
                body: Box::pin(body),
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let fits = rt.block_on(get(vec![b"ab", b"cd"], pulled.clone()).bytes_at_most(4));
        assert_eq!(fits.unwrap().as_deref(), Some(&b"abcd"[..]));
        // A server sending more than asked for: refused at the first chunk past the
        // limit, the rest never pulled.
        let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let over =
            rt.block_on(get(vec![b"ab", b"cde", b"fg", b"hi"], pulled.clone()).bytes_at_most(4));
        assert_eq!(over.unwrap(), None);
        assert_eq!(pulled.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn byte_range_specs_parse_as_http_writes_them_and_nothing_else() {
        use ByteRange::*;
        let good = [
            ("0-0", Inclusive { start: 0, end: 0 }),
            ("5-9", Inclusive { start: 5, end: 9 }),
            ("5-", From(5)),
            ("-3", Suffix(3)),
            ("007-8", Inclusive { start: 7, end: 8 }),
            ("18446744073709551615-", From(u64::MAX)),
        ];
        for (spec, want) in good {
            assert_eq!(ByteRange::parse(spec), Some(want), "{spec}");
            let header = want.to_header();
            let canonical = header.strip_prefix("bytes=").unwrap();
            assert_eq!(ByteRange::parse(canonical), Some(want), "{header}");
        }
        let bad = [
            "",
            "-",
            "5",
            "9-5",
            "-0",
            "+5-9",
            "5-+9",
            "-+3",
            " 5-9",
            "5 -9",
            "5-9 ",
            "0x5-9",
            "5-9,10-11",
            "bytes=5-9",
            "--3",
            "5--9",
            "18446744073709551616-",
        ];
        for spec in bad {
            assert_eq!(ByteRange::parse(spec), None, "{spec:?}");
        }
    }

    #[test]
    fn display_is_one_line_with_what_where_and_retry() {
        let e = StoreError::new(Op::Get, "s3://bucket/key", ErrorKind::NotFound);
        assert_eq!(e.to_string(), "get s3://bucket/key: not found");
        assert!(!e.is_retryable());

        let e = StoreError::new(Op::Put, "s3://b/k", ErrorKind::Network)
            .with_detail("connection refused\n  (os error 111)");
        assert_eq!(
            e.to_string(),
            "put s3://b/k: network failure (retryable): connection refused (os error 111)"
        );
        assert!(e.is_retryable());
    }

    #[test]
    fn ranges_resolve_like_http() {
        let r = |start, end| Some(ContentRange { start, end });
        assert_eq!(
            ByteRange::Inclusive { start: 2, end: 5 }.resolve(10),
            r(2, 5)
        );
        assert_eq!(
            ByteRange::Inclusive { start: 8, end: 50 }.resolve(10),
            r(8, 9)
        );
        assert_eq!(
            ByteRange::Inclusive { start: 10, end: 50 }.resolve(10),
            None
        );
        assert_eq!(ByteRange::From(3).resolve(10), r(3, 9));
        assert_eq!(ByteRange::Suffix(4).resolve(10), r(6, 9));
        assert_eq!(ByteRange::Suffix(40).resolve(10), r(0, 9));
        assert_eq!(ByteRange::From(0).resolve(0), None);
        assert!(ByteRange::Inclusive { start: 5, end: 4 }
            .validate()
            .is_err());
        assert!(ByteRange::Suffix(0).validate().is_err());
        assert_eq!(ByteRange::Suffix(7).to_header(), "bytes=-7");
    }

    #[test]
    fn header_checks() {
        let mut md = BTreeMap::new();
        md.insert("r2seal-hdr".to_string(), "abc DEF=+/".to_string());
        assert!(check_headers(Some("text/plain"), None, &md).is_ok());
        md.insert("Upper".to_string(), "x".to_string());
        assert!(check_headers(None, None, &md).is_err());
        let mut md = BTreeMap::new();
        md.insert("k".to_string(), " padded".to_string());
        assert!(check_headers(None, None, &md).is_err());
        md.insert("k".to_string(), "caf\u{e9}".to_string());
        assert!(check_headers(None, None, &md).is_err());
        let opts = PutOptions {
            if_none_match: Some("\"etag\"".into()),
            ..Default::default()
        };
        assert!(check_put_options(&opts).is_err());
        assert!(check_put_options(&PutOptions::create_only()).is_ok());
    }
}
