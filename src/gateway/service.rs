//! The S3 operations, over [`SealedBucket`]s (one per upstream bucket, opened on first use).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream::{Stream, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};

use super::checksum::{self, Declared};
use super::listings::{KeptListings, Resume, Sorted};
use super::{ETAG_KEY, OPAQUE_ETAG_PREFIX};
use crate::keys::Identity;
use crate::sealed::{
    CopyRequest, GetObject, ListFrom, ListPage, ObjectHead, PartsUpload, PlainStream, PlainTap,
    PutOptions, Recipients, SealedBucket, SealedError, SealedPart, PENDING_KEY,
};
use crate::store::s3::{S3Options, S3Store};
use crate::store::{self, ByteRange, ErrorKind};

/// The S3 service: bucket names pass through to the upstream.
pub struct Gateway {
    upstream: S3Options,
    recipients: Recipients,
    identities: Vec<Identity>,
    name_key: Option<crate::names::NameKey>,
    allow_plaintext: bool,
    /// By name: the sealed view, and the upstream store for bucket-level requests.
    buckets: tokio::sync::Mutex<HashMap<String, (SealedBucket, Arc<S3Store>)>>,
    /// Multipart uploads in progress, by upstream upload id. Their file keys live only
    /// here: a restart forgets them and their uploads answer NoSuchUpload.
    uploads: Mutex<HashMap<String, Arc<Upload>>>,
    /// Sorted listings (encrypted names) kept for their next page.
    listings: KeptListings,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstream", &self.upstream)
            .field("identities", &self.identities.len())
            .finish_non_exhaustive()
    }
}

/// An upload neither completed nor aborted after this long is forgotten (its file key
/// dropped, zeroized); the client then gets NoSuchUpload, as after a restart.
const UPLOAD_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

struct Upload {
    started: std::time::Instant,
    bucket: String,
    parts_upload: PartsUpload,
    /// By part number: the sealed part and the plaintext part's MD5 (its client ETag).
    parts: Mutex<BTreeMap<u32, (SealedPart, [u8; 16])>>,
}

/// ListObjects (v1) and ListObjectsV2 in one body: their s3s inputs and outputs are
/// distinct types that share these fields' names. With `past_empty`, a page left empty
/// (every encrypted name filtered out) is gone past instead of answered: a v1 client can
/// only go on from a key it was given. `|listing| { .. }` are the version's own output
/// fields (evaluated first, so they may still read all of `listing`).
macro_rules! list_objects {
    ($gateway:expr, $input:ident, $output:ident, $from:expr, past_empty: $past_empty:expr,
     |$listing:ident| { $($field:ident: $value:expr),* $(,)? }) => {{
        let mut from = $from;
        let $listing = loop {
            let listing = $gateway
                .listing(
                    &$input.bucket,
                    $input.prefix.as_deref(),
                    $input.delimiter.as_deref(),
                    from,
                    $input.max_keys,
                    $input.encoding_type.as_ref(),
                )
                .await?;
            match &listing.next_continuation {
                Some(t) if $past_empty && listing.last.is_none() => {
                    from = ListFrom::Continuation(t.clone())
                }
                _ => break listing,
            }
        };
        let is_truncated = Some($listing.next_continuation.is_some());
        Ok(S3Response::new($output {
            $($field: $value,)*
            name: Some($input.bucket),
            prefix: Some($listing.prefix),
            delimiter: $listing.delimiter,
            max_keys: Some($input.max_keys.unwrap_or(1000)),
            is_truncated,
            contents: Some($listing.contents),
            common_prefixes: (!$listing.common.is_empty()).then_some($listing.common),
            encoding_type: $input.encoding_type,
            ..Default::default()
        }))
    }};
}

impl Gateway {
    pub fn new(config: &super::GatewayConfig) -> Gateway {
        Gateway {
            upstream: config.upstream.clone(),
            recipients: config.recipients.clone(),
            identities: config.identities.clone(),
            name_key: config.name_key.clone(),
            allow_plaintext: config.allow_plaintext,
            buckets: tokio::sync::Mutex::new(HashMap::new()),
            uploads: Mutex::new(HashMap::new()),
            listings: KeptListings::default(),
        }
    }

    async fn bucket(&self, name: &str) -> S3Result<SealedBucket> {
        Ok(self.upstream_bucket(name).await?.0)
    }

    /// A bucket's sealed view and its upstream store (one store, shared: every object
    /// request clones this pair), opened on first use.
    async fn upstream_bucket(&self, name: &str) -> S3Result<(SealedBucket, Arc<S3Store>)> {
        let mut buckets = self.buckets.lock().await;
        if let Some(b) = buckets.get(name) {
            return Ok(b.clone());
        }
        let store = S3Store::new(name, "", self.upstream.clone())
            .await
            .map_err(|e| store_error(&e, Ctx::Bucket))?;
        let store = Arc::new(store);
        let mut bucket = SealedBucket::new(store.clone())
            .with_recipients(self.recipients.clone())
            .with_identities(self.identities.clone())
            // The migration window, when the operator opened it: plaintext objects stay
            // readable as stored; writes are sealed either way.
            .allow_plaintext(self.allow_plaintext);
        if let Some(k) = &self.name_key {
            bucket = bucket.with_name_key(k.clone());
        }
        buckets.insert(name.to_string(), (bucket.clone(), store.clone()));
        Ok((bucket, store))
    }

    fn upload(&self, upload_id: &str, bucket: &str, key: &str) -> S3Result<Arc<Upload>> {
        let uploads = self.uploads.lock().expect("not poisoned");
        match uploads.get(upload_id) {
            Some(u) if u.bucket == bucket && u.parts_upload.key() == key => Ok(u.clone()),
            _ => Err(s3_error!(
                NoSuchUpload,
                "no such upload in progress at this gateway (uploads do not survive a gateway restart)"
            )),
        }
    }

    /// Part `number` of an object (GetObject `partNumber`). Where the part lies comes
    /// from a HEAD; the read must then find the same object, or it is done again.
    async fn get_part(
        &self,
        bucket: &SealedBucket,
        key: &str,
        number: i32,
    ) -> S3Result<(GetObject, Option<i32>)> {
        for _ in 0..3 {
            let head = bucket
                .head(key)
                .await
                .map_err(|e| sealed_error(&e, Ctx::Object))?;
            let (range, count) = part_range(&head, number)?;
            let got = bucket
                .get(key, range)
                .await
                .map_err(|e| sealed_error(&e, Ctx::Object))?;
            if got.head.etag == head.etag {
                return Ok((got, count));
            }
        }
        Err(s3_error!(
            ServiceUnavailable,
            "the object kept changing while its part was read: try again"
        ))
    }

    /// One page of a listing as clients see it: plaintext keys, sizes and ETags.
    async fn listing(
        &self,
        bucket_name: &str,
        prefix: Option<&str>,
        delimiter: Option<&str>,
        from: ListFrom,
        max_keys: Option<i32>,
        encoding: Option<&EncodingType>,
    ) -> S3Result<Listing> {
        let bucket = self.bucket(bucket_name).await?;
        let prefix = prefix.unwrap_or_default();
        // rclone sends `delimiter=` for a recursive listing.
        let store_delimiter = delimiter.filter(|d| !d.is_empty());
        let max_keys = max_keys.map(|n| n.clamp(0, 1000) as u32);
        let sorted = bucket.name_key().is_some();
        let page = match max_keys {
            Some(0) => Ok(Default::default()),
            _ if sorted => {
                let resume = Resume {
                    bucket: bucket_name.to_owned(),
                    prefix: prefix.to_owned(),
                    delimiter: store_delimiter.map(str::to_owned),
                    after: String::new(),
                };
                sorted_page(
                    &bucket,
                    &self.listings,
                    resume,
                    from,
                    max_keys.unwrap_or(1000),
                )
                .await
            }
            _ => {
                bucket
                    .list_from(prefix, store_delimiter, from, max_keys)
                    .await
            }
        }
        .map_err(|e| sealed_error(&e, Ctx::Bucket))?;
        let enc = |s: &str| encoded(s, encoding);
        // An object uploaded in parts has its own size function, and only such an
        // object can be larger than one minimum part: those are HEADed for their exact
        // plaintext size (few, large objects; small ones need no request).
        let wanted: Vec<Option<String>> = page
            .objects
            .iter()
            .map(|o| (o.stored_size > store::MIN_PART_SIZE).then(|| o.key.clone()))
            .collect();
        let heads: Vec<Headed> = futures_util::stream::iter(wanted)
            .map(|key| {
                let bucket = bucket.clone();
                async move {
                    let Some(key) = key else {
                        return Ok(Headed::AsListed);
                    };
                    match bucket.head(&key).await {
                        Ok(h) => Ok(Headed::Head(Box::new(h))),
                        Err(e) if e.is_not_found() => Ok(Headed::AsListed), // deleted meanwhile
                        // Stored as it is (a migration window the operator did not
                        // open): the stored size is the plaintext's.
                        Err(SealedError::Plaintext { .. }) => Ok(Headed::Stored),
                        // One object that does not open (anyone who can write the
                        // bucket can plant one) must not fail the rest of the page:
                        // listed with its stored size; reading it fails on its own.
                        Err(e @ (SealedError::Open { .. } | SealedError::Invalid { .. })) => {
                            eprintln!(
                                "r2seal gateway: listed with its stored size: {}",
                                printable(&e)
                            );
                            Ok(Headed::Stored)
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .buffered(16)
            .try_collect()
            .await
            .map_err(|e| sealed_error(&e, Ctx::Object))?;
        // The entry listed last, in the order the listing came in.
        let last = page
            .objects
            .iter()
            .map(|o| {
                (
                    if sorted {
                        o.key.clone()
                    } else {
                        o.stored_key.clone()
                    },
                    &o.key,
                )
            })
            .chain(page.common_prefixes.iter().map(|p| {
                let order = match sorted {
                    true => p.clone(),
                    false => bucket.stored_key(p).unwrap_or_else(|_| p.clone()),
                };
                (order, p)
            }))
            .max()
            .map(|(_, key)| enc(key));
        let contents = page
            .objects
            .iter()
            .zip(heads)
            .map(|(o, head)| {
                let (size, tag) = match head {
                    Headed::Head(h) => (h.size, client_etag(&h)),
                    Headed::Stored => (o.stored_size, opaque_etag(&o.etag)),
                    Headed::AsListed => (o.size.unwrap_or(o.stored_size), opaque_etag(&o.etag)),
                };
                Object {
                    key: Some(enc(&o.key)),
                    size: Some(size as i64),
                    e_tag: etag(tag),
                    last_modified: timestamp(o.last_modified),
                    storage_class: Some(ObjectStorageClass::from_static(
                        ObjectStorageClass::STANDARD,
                    )),
                    ..Default::default()
                }
            })
            .collect();
        let common = page
            .common_prefixes
            .iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc(p)),
            })
            .collect();
        Ok(Listing {
            prefix: enc(prefix),
            delimiter: delimiter.map(enc),
            contents,
            common,
            last,
            next_continuation: page.next_continuation,
        })
    }

    /// The stored ETag a client's ETag stands for, or PreconditionFailed.
    async fn upstream_etag(
        &self,
        bucket: &SealedBucket,
        key: &str,
        client: &ETagCondition,
    ) -> S3Result<Option<String>> {
        let ETagCondition::ETag(tag) = client else {
            return Ok(None); // `*`
        };
        if let Some(stored) = tag.value().strip_prefix(OPAQUE_ETAG_PREFIX) {
            return Ok(Some(format!("\"{stored}\"")));
        }
        let head = bucket
            .head(key)
            .await
            .map_err(|e| sealed_error(&e, Ctx::Object))?;
        if client_etag(&head) == tag.value() {
            Ok(Some(head.etag))
        } else {
            Err(s3_error!(
                PreconditionFailed,
                "If-Match: the object has another ETag"
            ))
        }
    }
}

/// A listing page as clients see it (keys encoded as asked).
struct Listing {
    prefix: String,
    delimiter: Option<String>,
    contents: Vec<Object>,
    common: Vec<CommonPrefix>,
    /// The entry (key or common prefix) listed last: where a v1 listing goes on.
    last: Option<String>,
    next_continuation: Option<String>,
}

// ---------------------------------------------------------------------------------------
// ETags, metadata, errors

fn unquote(etag: &str) -> &str {
    etag.trim_start_matches("W/").trim_matches('"')
}

fn opaque_etag(stored: &str) -> String {
    format!("{OPAQUE_ETAG_PREFIX}{}", unquote(stored))
}

/// The ETag (unquoted) clients see for an object (module docs).
fn client_etag(head: &ObjectHead) -> String {
    if !head.sealed {
        return unquote(&head.etag).to_string();
    }
    if let Some(etag) = head.metadata.user.get(ETAG_KEY) {
        return etag.clone();
    }
    match &head.metadata.md5 {
        Some(md5) => md5.clone(),
        None => opaque_etag(&head.etag),
    }
}

fn etag(value: String) -> Option<ETag> {
    Some(ETag::Strong(value))
}

fn matches(cond: &ETagCondition, head: &ObjectHead) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(tag) => {
            let v = tag.value();
            v == client_etag(head)
                || v.strip_prefix(OPAQUE_ETAG_PREFIX) == Some(unquote(&head.etag))
        }
    }
}

/// The request condition that failed: `FailedIf::Match` is a failed If-Match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailedIf {
    Match,
    UnmodifiedSince,
    NoneMatch,
    ModifiedSince,
}

/// The conditions of a request, as S3 names them on GET/HEAD and (prefixed
/// `x-amz-copy-source-`) on copies.
#[derive(Clone, Copy, Default)]
struct Conditions<'a> {
    if_match: Option<&'a ETagCondition>,
    if_none_match: Option<&'a ETagCondition>,
    if_modified_since: Option<&'a Timestamp>,
    if_unmodified_since: Option<&'a Timestamp>,
}

impl Conditions<'_> {
    /// Evaluates the conditions on the plaintext view of an object, in RFC 9110's
    /// order, which S3 documents for GET and copies alike: a present If-Match
    /// replaces If-Unmodified-Since, a present If-None-Match replaces
    /// If-Modified-Since, and an If-Modified-Since later than `now` is ignored.
    fn failed(&self, head: &ObjectHead, now: time::OffsetDateTime) -> Option<FailedIf> {
        let seconds = |t: &Timestamp| time::OffsetDateTime::from(t.clone()).unix_timestamp();
        let modified = head
            .last_modified
            .map(|m| time::OffsetDateTime::from(m).unix_timestamp());
        if let Some(c) = self.if_match {
            if !matches(c, head) {
                return Some(FailedIf::Match);
            }
        } else if let (Some(since), Some(m)) = (self.if_unmodified_since, modified) {
            if m > seconds(since) {
                return Some(FailedIf::UnmodifiedSince);
            }
        }
        if let Some(c) = self.if_none_match {
            if matches(c, head) {
                return Some(FailedIf::NoneMatch);
            }
        } else if let (Some(since), Some(m)) = (self.if_modified_since, modified) {
            let since = seconds(since);
            if since <= now.unix_timestamp() && m <= since {
                return Some(FailedIf::ModifiedSince);
            }
        }
        None
    }
}

/// GET/HEAD conditions: a failed If-Match or If-Unmodified-Since is 412, a failed
/// If-None-Match or If-Modified-Since is 304.
fn check_conditions(head: &ObjectHead, conditions: Conditions<'_>) -> S3Result<()> {
    match conditions.failed(head, time::OffsetDateTime::now_utc()) {
        None => Ok(()),
        Some(FailedIf::Match) => Err(s3_error!(PreconditionFailed, "If-Match did not hold")),
        Some(FailedIf::UnmodifiedSince) => Err(s3_error!(
            PreconditionFailed,
            "modified since If-Unmodified-Since"
        )),
        Some(FailedIf::NoneMatch | FailedIf::ModifiedSince) => {
            // A 304 names what the client holds is still current, as S3's does.
            let mut not_modified = S3Error::new(S3ErrorCode::NotModified);
            let mut headers = hyper::http::HeaderMap::new();
            if let Ok(v) = format!("\"{}\"", client_etag(head)).parse() {
                headers.insert(hyper::http::header::ETAG, v);
            }
            let mut date = Vec::new();
            if let Some(t) = timestamp(head.last_modified) {
                if t.format(TimestampFormat::HttpDate, &mut date).is_ok() {
                    if let Ok(v) = hyper::http::HeaderValue::from_bytes(&date) {
                        headers.insert(hyper::http::header::LAST_MODIFIED, v);
                    }
                }
            }
            not_modified.set_headers(headers);
            Err(not_modified)
        }
    }
}

/// User metadata as clients see it: gateway-internal entries removed.
fn client_metadata(head: &ObjectHead) -> Option<Metadata> {
    let m: Metadata = head
        .metadata
        .user
        .iter()
        .filter(|(k, _)| !is_reserved(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!m.is_empty()).then_some(m)
}

fn is_reserved(key: &str) -> bool {
    key == ETAG_KEY || key == PENDING_KEY || key == crate::format::header::METADATA_KEY
}

/// Sealed user metadata from a client's `x-amz-meta-*` (reserved names dropped).
fn user_metadata(m: Option<Metadata>) -> BTreeMap<String, String> {
    m.unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !is_reserved(k))
        .collect()
}

/// `aws-chunked` is how the body travelled, not what the object is encoded with.
fn content_encoding(v: Option<String>) -> Option<String> {
    let v = v?;
    let kept: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

fn timestamp(t: Option<SystemTime>) -> Option<Timestamp> {
    t.map(Timestamp::from)
}

/// A key or prefix in a listing, encoded as the request asked (`encoding-type=url`).
fn encoded(s: &str, encoding: Option<&EncodingType>) -> String {
    match encoding {
        Some(e) if e.as_str() == EncodingType::URL => url_encode(s),
        _ => s.to_owned(),
    }
}

/// A key the client sent, echoed in a listing encoded as the listing's keys are.
fn echoed(key: Option<String>, encoding: Option<&EncodingType>) -> Option<String> {
    key.map(|k| encoded(&k, encoding))
}

/// Continuation tokens of sorted listings (encrypted names) carry the last key given.
const AFTER_TOKEN_PREFIX: &str = "r2seal-after:";

/// A page of a listing under encrypted names, in plaintext key order as S3 lists (the
/// store lists in stored-key order, which is the ciphertext's: see [`super::listings`]).
/// A first page lists the whole prefix (with a delimiter, one level of it) upstream,
/// decrypts and sorts; the sorted listing is kept for the next page, which starts after
/// the key its token (or marker) carries.
async fn sorted_page(
    bucket: &SealedBucket,
    kept: &KeptListings,
    mut resume: Resume,
    from: ListFrom,
    max_keys: u32,
) -> Result<ListPage, SealedError> {
    let after = match from {
        ListFrom::Start => None,
        ListFrom::After(key) => Some(key),
        ListFrom::Continuation(token) => {
            let key = token
                .strip_prefix(AFTER_TOKEN_PREFIX)
                .and_then(|t| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(t)
                        .ok()
                })
                .and_then(|k| String::from_utf8(k).ok());
            Some(key.ok_or_else(|| SealedError::Invalid {
                location: bucket.location(&resume.prefix),
                detail: "not a continuation token of this gateway".into(),
            })?)
        }
    };
    let kept_listing = after.as_ref().and_then(|a| {
        resume.after.clone_from(a);
        kept.take(&resume)
    });
    let sorted = match kept_listing {
        Some(sorted) => sorted,
        None => Sorted::new(
            bucket
                .list_all(&resume.prefix, resume.delimiter.as_deref())
                .await?,
        ),
    };
    let (mut page, next) = sorted.page(after.as_deref(), max_keys as usize);
    if let Some(last) = next {
        page.next_continuation = Some(format!(
            "{AFTER_TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&last)
        ));
        resume.after = last;
        kept.keep(resume, sorted);
    }
    Ok(page)
}

/// Object tags are not kept (the tagging API answers NotImplemented): a write asking for
/// some is refused rather than stored without them.
fn no_tags(tagging: Option<&String>) -> S3Result<()> {
    match tagging {
        Some(t) if !t.is_empty() => Err(s3_error!(
            NotImplemented,
            "object tags are not supported through the gateway"
        )),
        _ => Ok(()),
    }
}

/// Object versions are not served: each request acts on the current object, so one
/// naming a version (of a versioned upstream) is refused rather than answered with, or
/// acting on, another version (a "delete this old version" would hide the current one).
fn current_version_only(version_id: Option<&str>) -> S3Result<()> {
    match version_id {
        Some(_) => Err(s3_error!(
            NotImplemented,
            "object versions are not supported through the gateway: it reads and writes current objects only"
        )),
        None => Ok(()),
    }
}

/// What a listing learned of an object's plaintext size beyond the listing itself.
enum Headed {
    /// Its HEAD: exact.
    Head(Box<ObjectHead>),
    /// Its stored size (stored in plaintext, or its header does not open).
    Stored,
    /// Nothing more: the size the listing computed from the stored size.
    AsListed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Bucket,
    Object,
    Upload,
}

fn store_error(e: &store::StoreError, ctx: Ctx) -> S3Error {
    let msg = e.to_string();
    let code = match e.kind() {
        ErrorKind::NotFound => match ctx {
            Ctx::Upload => S3ErrorCode::NoSuchUpload,
            Ctx::Bucket => S3ErrorCode::NoSuchBucket,
            Ctx::Object => S3ErrorCode::NoSuchKey,
        },
        ErrorKind::NoSuchBucket => S3ErrorCode::NoSuchBucket,
        ErrorKind::PreconditionFailed => S3ErrorCode::PreconditionFailed,
        ErrorKind::RangeNotSatisfiable => S3ErrorCode::InvalidRange,
        ErrorKind::AccessDenied => S3ErrorCode::AccessDenied,
        ErrorKind::InvalidRequest => S3ErrorCode::InvalidRequest,
        ErrorKind::Unsupported => S3ErrorCode::NotImplemented,
        ErrorKind::Network | ErrorKind::Unavailable => S3ErrorCode::ServiceUnavailable,
        // The gateway's own upstream credentials: not the client's fault.
        ErrorKind::InvalidCredentials | ErrorKind::Other => S3ErrorCode::InternalError,
    };
    operator_sees(S3Error::with_message(code, msg), e)
}

/// Failures that are the gateway's or its upstream's, not the client's (an unreachable
/// upstream, one refusing the gateway's credentials or denying them this bucket, an object
/// that does not open): the client gets the S3 error, and the operator one line on stderr
/// saying what failed, where, and whether a retry can help, since only the operator can
/// fix them. (AccessDenied reaches here only from the upstream: the client's own
/// signature is checked before any handler runs.)
fn operator_sees(error: S3Error, what: &dyn std::fmt::Display) -> S3Error {
    if matches!(
        error.code(),
        S3ErrorCode::InternalError | S3ErrorCode::ServiceUnavailable | S3ErrorCode::AccessDenied
    ) {
        eprintln!("r2seal gateway: {}", printable(what));
    }
    error
}

/// `what` on one line with control characters escaped: the upstream's error messages
/// come from a server the operator does not control (escape sequences, forged lines).
fn printable(what: &dyn std::fmt::Display) -> String {
    let text = what.to_string();
    if !text.chars().any(char::is_control) {
        return text;
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn sealed_error(e: &SealedError, ctx: Ctx) -> S3Error {
    match e {
        SealedError::Store(s) => store_error(s, ctx),
        SealedError::Invalid { detail, .. } if detail.starts_with("range not satisfiable") => {
            S3Error::with_message(S3ErrorCode::InvalidRange, e.to_string())
        }
        SealedError::Invalid { .. } => {
            S3Error::with_message(S3ErrorCode::InvalidRequest, e.to_string())
        }
        // The client's metadata does not fit beside the envelope: theirs to shorten.
        SealedError::Seal {
            error: crate::Error::HeaderTooLarge { .. },
            ..
        } => S3Error::with_message(S3ErrorCode::MetadataTooLarge, e.to_string()),
        // The migration window is closed (no --allow-plaintext): the operator decides.
        SealedError::Plaintext { .. } => operator_sees(
            S3Error::with_message(S3ErrorCode::AccessDenied, e.to_string()),
            e,
        ),
        SealedError::Io { error, .. } => match checksum::digest_mismatch(error) {
            Some(m) => S3Error::with_message(S3ErrorCode::BadDigest, m.to_string()),
            None => S3Error::with_message(S3ErrorCode::IncompleteBody, e.to_string()),
        },
        // Open/Seal: the gateway's keys or the stored object; deliberately coarse.
        _ => operator_sees(
            S3Error::with_message(S3ErrorCode::InternalError, e.to_string()),
            e,
        ),
    }
}

fn declared(
    content_md5: Option<String>,
    sums: [Option<String>; 5],
    headers: &hyper::http::HeaderMap,
) -> Declared {
    let [crc32, crc32c, crc64nvme, sha1, sha256] = sums;
    let trailer = headers
        .get_all("x-amz-trailer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect();
    Declared {
        content_md5,
        crc32,
        crc32c,
        crc64nvme,
        sha1,
        sha256,
        trailer,
    }
}

fn body_len(
    body: &StreamingBlob,
    content_length: Option<i64>,
    headers: &hyper::http::HeaderMap,
) -> Option<u64> {
    if let Some(n) = s3s::stream::ByteStream::remaining_length(body).exact() {
        return Some(n as u64);
    }
    let chunked = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("STREAMING-"));
    if chunked {
        return headers
            .get("x-amz-decoded-content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
    }
    content_length.and_then(|n| u64::try_from(n).ok())
}

/// `Sync` for s3s's body type: the stream is only ever polled through `&mut`.
struct SyncBody(Mutex<PlainStream>);

impl Stream for SyncBody {
    type Item = Result<Bytes, SealedError>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self
            .get_mut()
            .0
            .get_mut()
            .expect("not poisoned")
            .poll_next_unpin(cx);
        if let Poll::Ready(Some(Err(e))) = &next {
            // The client sees only a cut body: the operator is told why.
            eprintln!(
                "r2seal gateway: a response was cut short: {}",
                printable(&e)
            );
        }
        next
    }
}

fn range_of(r: &Range) -> ByteRange {
    match *r {
        Range::Int { first, last: None } => ByteRange::From(first),
        Range::Int {
            first,
            last: Some(last),
        } => ByteRange::Inclusive {
            start: first,
            end: last,
        },
        Range::Suffix { length } => ByteRange::Suffix(length),
    }
}

/// S3's answer to a part number the object does not have.
fn invalid_part_number() -> S3Error {
    let mut e = S3Error::with_message(
        S3ErrorCode::Custom("InvalidPartNumber".into()),
        "the requested part number is not satisfiable",
    );
    e.set_status_code(hyper::http::StatusCode::RANGE_NOT_SATISFIABLE);
    e
}

/// What `partNumber` selects (S3 semantics): the plaintext range of that part and the
/// part count, for an object its client uploaded in parts through the gateway (its
/// sealed parts are the client's parts); any other object is one part, the whole.
fn part_range(head: &ObjectHead, number: i32) -> S3Result<(Option<ByteRange>, Option<i32>)> {
    let uploaded_in_parts = head.sealed && head.metadata.user.contains_key(ETAG_KEY);
    match head.parts.filter(|_| uploaded_in_parts) {
        Some(layout) if number >= 1 && number as u64 <= layout.count as u64 => {
            let index = number as u32 - 1;
            let start = index as u64 * layout.part_size;
            let len = layout.plaintext_size(index);
            let range = match len {
                0 if layout.count == 1 => None,
                0 => return Err(invalid_part_number()),
                _ => Some(ByteRange::Inclusive {
                    start,
                    end: start + len - 1,
                }),
            };
            Ok((range, Some(layout.count as i32)))
        }
        None if number == 1 => Ok((None, None)),
        _ => Err(invalid_part_number()),
    }
}

/// A client's part number for an upload, within S3's 1..=10,000.
fn upload_part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=store::MAX_PARTS).contains(n))
        .ok_or_else(|| s3_error!(InvalidArgument, "part number must be 1 to 10000"))
}

/// A part of `len` plaintext bytes must still fit the upstream's part limit sealed.
fn check_part_len(len: u64) -> S3Result<()> {
    if crate::format::stream::payload_len(len) > store::MAX_PART_SIZE {
        return Err(s3_error!(
            EntityTooLarge,
            "a part sealed must fit the upstream's 5 GiB part limit"
        ));
    }
    Ok(())
}

/// The bucket and key of a copy source (access points and versions are not served).
fn copy_source(source: &CopySource) -> S3Result<(&str, &str)> {
    match source {
        CopySource::Bucket {
            bucket,
            key,
            version_id: None,
        } => Ok((bucket, key)),
        CopySource::Bucket { .. } => Err(s3_error!(NotImplemented, "versioned copy sources")),
        _ => Err(s3_error!(
            NotImplemented,
            "copy from an access point or outpost"
        )),
    }
}

/// `x-amz-copy-source-range`: `bytes=first-last`, both given (S3 takes no other form).
fn copy_source_range(v: &str) -> S3Result<ByteRange> {
    match v.strip_prefix("bytes=").and_then(ByteRange::parse) {
        Some(range @ ByteRange::Inclusive { .. }) => Ok(range),
        _ => Err(s3_error!(
            InvalidArgument,
            "x-amz-copy-source-range must be bytes=first-last"
        )),
    }
}

/// The `x-amz-copy-source-if-*` conditions on the source's plaintext view: any that
/// does not hold fails the copy with 412, named by its header.
fn check_copy_source(head: &ObjectHead, conditions: Conditions<'_>) -> S3Result<()> {
    let header = match conditions.failed(head, time::OffsetDateTime::now_utc()) {
        None => return Ok(()),
        Some(FailedIf::Match) => "x-amz-copy-source-if-match",
        Some(FailedIf::UnmodifiedSince) => "x-amz-copy-source-if-unmodified-since",
        Some(FailedIf::NoneMatch) => "x-amz-copy-source-if-none-match",
        Some(FailedIf::ModifiedSince) => "x-amz-copy-source-if-modified-since",
    };
    Err(s3_error!(PreconditionFailed, "{header} did not hold"))
}

fn check_part_request(part_number: Option<i32>, range: Option<&Range>) -> S3Result<()> {
    if part_number.is_some() && range.is_some() {
        return Err(s3_error!(
            InvalidRequest,
            "Cannot specify both Range header and partNumber query parameter"
        ));
    }
    if part_number.is_some_and(|n| !(1..=store::MAX_PARTS as i32).contains(&n)) {
        return Err(s3_error!(
            InvalidArgument,
            "Part number must be an integer between 1 and 10000, inclusive"
        ));
    }
    Ok(())
}

/// Percent-encoding for `encoding-type=url` listings (keys keep their `/`): the same
/// as a key in a request path.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    crate::store::s3_direct::encode_key(&mut out, s);
    out
}

fn put_options(
    content_type: Option<String>,
    cache_control: Option<String>,
    encoding: Option<String>,
    disposition: Option<String>,
    language: Option<String>,
    metadata: Option<Metadata>,
) -> PutOptions {
    PutOptions {
        content_type,
        cache_control,
        content_encoding: content_encoding(encoding),
        content_disposition: disposition,
        content_language: language,
        metadata: user_metadata(metadata),
        if_match: None,
        if_none_match: None,
    }
}

// ---------------------------------------------------------------------------------------
// Operations

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let bucket = self.bucket(&req.input.bucket).await?;
        bucket
            .store()
            .list("", None, None, Some(1))
            .await
            .map_err(|e| store_error(&e, Ctx::Bucket))?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    /// The upstream's buckets (`aws s3 ls`, `rclone lsd`): bucket names pass through,
    /// so every bucket the upstream credentials see is one a client can use.
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let prefix = req.input.prefix;
        let buckets = crate::store::s3::list_buckets(&self.upstream)
            .await
            .map_err(|e| store_error(&e, Ctx::Bucket))?
            .into_iter()
            .filter(|b| prefix.as_deref().is_none_or(|p| b.name.starts_with(p)))
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: timestamp(b.created),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            prefix,
            ..Default::default()
        }))
    }

    /// The upstream bucket's answer (clients may sign for any region: the gateway checks
    /// signatures with the region they name).
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let (_, store) = self.upstream_bucket(&req.input.bucket).await?;
        let location = store
            .bucket_location()
            .await
            .map_err(|e| store_error(&e, Ctx::Bucket))?;
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: location.map(BucketLocationConstraint::from),
        }))
    }

    /// The upstream bucket's status (rclone asks before `purge`). The gateway itself
    /// serves only current versions.
    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let (_, store) = self.upstream_bucket(&req.input.bucket).await?;
        let status = store
            .bucket_versioning()
            .await
            .map_err(|e| store_error(&e, Ctx::Bucket))?;
        Ok(S3Response::new(GetBucketVersioningOutput {
            status: status.map(BucketVersioningStatus::from),
            ..Default::default()
        }))
    }

    /// Buckets are created upstream; an existing one is reported as created (rclone
    /// "creates" its bucket before writing).
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = self.bucket(&req.input.bucket).await?;
        match bucket.store().list("", None, None, Some(1)).await {
            Ok(_) => Ok(S3Response::new(CreateBucketOutput::default())),
            Err(e) if e.kind() == ErrorKind::NoSuchBucket => Err(s3_error!(
                NotImplemented,
                "the gateway does not create buckets: create it upstream"
            )),
            Err(e) => Err(store_error(&e, Ctx::Bucket)),
        }
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        current_version_only(input.version_id.as_deref())?;
        check_part_request(input.part_number, input.range.as_ref())?;
        let bucket = self.bucket(&input.bucket).await?;
        let head = bucket
            .head(&input.key)
            .await
            .map_err(|e| sealed_error(&e, Ctx::Object))?;
        check_conditions(
            &head,
            Conditions {
                if_match: input.if_match.as_ref(),
                if_none_match: input.if_none_match.as_ref(),
                if_modified_since: input.if_modified_since.as_ref(),
                if_unmodified_since: input.if_unmodified_since.as_ref(),
            },
        )?;
        let (part, parts_count) = match input.part_number {
            Some(n) => part_range(&head, n)?,
            None => (None, None),
        };
        let (content_length, content_range) = match part.and_then(|r| r.resolve(head.size)) {
            Some(r) => (
                r.len(),
                Some(format!("bytes {}-{}/{}", r.start, r.end, head.size)),
            ),
            None => (head.size, None),
        };
        let m = &head.metadata;
        Ok(S3Response::new(HeadObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: Some(content_length as i64),
            content_range,
            parts_count,
            content_type: head.content_type.clone(),
            cache_control: head.cache_control.clone(),
            content_encoding: m.content_encoding.clone(),
            content_disposition: m.content_disposition.clone(),
            content_language: m.content_language.clone(),
            e_tag: etag(client_etag(&head)),
            last_modified: timestamp(head.last_modified),
            metadata: client_metadata(&head),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        current_version_only(input.version_id.as_deref())?;
        check_part_request(input.part_number, input.range.as_ref())?;
        let bucket = self.bucket(&input.bucket).await?;
        let (got, parts_count) = match input.part_number {
            None => {
                let range = input.range.as_ref().map(range_of);
                let got = bucket.get(&input.key, range).await;
                (got.map_err(|e| sealed_error(&e, Ctx::Object))?, None)
            }
            Some(n) => self.get_part(&bucket, &input.key, n).await?,
        };
        let head = &got.head;
        check_conditions(
            head,
            Conditions {
                if_match: input.if_match.as_ref(),
                if_none_match: input.if_none_match.as_ref(),
                if_modified_since: input.if_modified_since.as_ref(),
                if_unmodified_since: input.if_unmodified_since.as_ref(),
            },
        )?;
        let (len, content_range) = match got.range {
            Some(r) => (
                r.len(),
                Some(format!("bytes {}-{}/{}", r.start, r.end, head.size)),
            ),
            None => (head.size, None),
        };
        // The first chunk is opened before the answer starts: an object that fails to
        // open there (a small object entirely) gets an S3 error, not a connection cut
        // before any byte. A later chunk that fails can only cut the body short.
        let mut body = got.body;
        let body = match body.next().await {
            Some(Err(e)) => return Err(sealed_error(&e, Ctx::Object)),
            Some(Ok(first)) => futures_util::stream::once(async move { Ok(first) })
                .chain(body)
                .boxed(),
            None => body,
        };
        let m = &head.metadata;
        let output = GetObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: Some(len as i64),
            content_range,
            content_type: head.content_type.clone(),
            cache_control: head.cache_control.clone(),
            content_encoding: m.content_encoding.clone(),
            content_disposition: m.content_disposition.clone(),
            content_language: m.content_language.clone(),
            e_tag: etag(client_etag(head)),
            last_modified: timestamp(head.last_modified),
            metadata: client_metadata(head),
            parts_count,
            body: Some(StreamingBlob::wrap(SyncBody(Mutex::new(body)))),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        // A continuation token already encodes where to go on (start-after is then ignored).
        let from = match (&input.continuation_token, &input.start_after) {
            (Some(t), _) => ListFrom::Continuation(t.clone()),
            (None, Some(after)) if !after.is_empty() => ListFrom::After(after.clone()),
            _ => ListFrom::Start,
        };
        list_objects!(self, input, ListObjectsV2Output, from, past_empty: false, |listing| {
            key_count: Some((listing.contents.len() + listing.common.len()) as i32),
            continuation_token: input.continuation_token,
            start_after: echoed(input.start_after, input.encoding_type.as_ref()),
            next_continuation_token: listing.next_continuation,
        })
    }

    /// ListObjects (v1): pages go on from `marker`, a key (or common prefix) the client
    /// got, so a truncated page always says where it ended (`NextMarker`).
    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let from = match &input.marker {
            Some(m) if !m.is_empty() => ListFrom::After(m.clone()),
            _ => ListFrom::Start,
        };
        list_objects!(self, input, ListObjectsOutput, from, past_empty: true, |listing| {
            marker: echoed(input.marker, input.encoding_type.as_ref()),
            next_marker: listing.last.filter(|_| listing.next_continuation.is_some()),
        })
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let headers = req.headers;
        let trailers = req.trailing_headers;
        let input = req.input;
        no_tags(input.tagging.as_ref())?;
        let bucket = self.bucket(&input.bucket).await?;
        let mut opts = put_options(
            input.content_type,
            input.cache_control,
            input.content_encoding,
            input.content_disposition,
            input.content_language,
            input.metadata,
        );
        if let Some(c) = &input.if_match {
            opts.if_match = self.upstream_etag(&bucket, &input.key, c).await?;
            if opts.if_match.is_none() {
                return Err(s3_error!(NotImplemented, "If-Match: * is not supported"));
            }
        }
        if let Some(c) = &input.if_none_match {
            match c {
                ETagCondition::Any => opts.if_none_match = Some("*".into()),
                ETagCondition::ETag(_) => {
                    return Err(s3_error!(NotImplemented, "If-None-Match takes only *"))
                }
            }
        }
        let body = input.body.unwrap_or_else(|| {
            StreamingBlob::wrap(futures_util::stream::empty::<Result<Bytes, io::Error>>())
        });
        let len = body_len(&body, input.content_length, &headers);
        let declared = declared(
            input.content_md5,
            [
                input.checksum_crc32,
                input.checksum_crc32c,
                input.checksum_crc64nvme,
                input.checksum_sha1,
                input.checksum_sha256,
            ],
            &headers,
        );
        let (stream, md5) = checksum::verified(body, declared, trailers);
        let put = bucket
            .put_stream(&input.key, stream, len, &opts)
            .await
            .map_err(|e| sealed_error(&e, Ctx::Object))?;
        let md5 = md5
            .lock()
            .expect("not poisoned")
            .take()
            .ok_or_else(|| s3_error!(InternalError, "the body ended without a digest"))?;
        let md5 = checksum::hex(&md5);
        let mut client_tag = md5.clone();
        if put.md5.is_none() {
            // Sealed as it streamed (in one request or in parts): its header was written
            // first, so the MD5 is added now, by re-sealing the metadata onto the same
            // body.
            let resealed = bucket
                .copy_with(
                    &input.key,
                    &input.key,
                    &CopyRequest {
                        source_etag: Some(put.etag.clone()),
                        replace: None,
                        set_md5: Some(md5.clone()),
                    },
                )
                .await;
            match resealed {
                Ok(_) => {}
                // The object is stored (its body checked against the client's digests);
                // only the MD5 does not fit beside the client's metadata. It keeps an
                // ETag no client takes for an MD5, as on any later HEAD.
                Err(SealedError::Seal {
                    error: crate::Error::HeaderTooLarge { .. },
                    ..
                }) => client_tag = opaque_etag(&put.etag),
                Err(e) => return Err(sealed_error(&e, Ctx::Object)),
            }
        }
        Ok(S3Response::new(PutObjectOutput {
            e_tag: etag(client_tag),
            size: Some(put.size as i64),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        current_version_only(input.version_id.as_deref())?;
        let bucket = self.bucket(&input.bucket).await?;
        if input.if_match.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "conditional deletes are not supported"
            ));
        }
        bucket
            .delete(&input.key)
            .await
            .map_err(|e| sealed_error(&e, Ctx::Object))?;
        Ok(S3Response::with_status(
            DeleteObjectOutput::default(),
            hyper::http::StatusCode::NO_CONTENT,
        ))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket).await?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let results: Vec<(String, S3Result<()>)> = futures_util::stream::iter(input.delete.objects)
            .map(|o| {
                let bucket = bucket.clone();
                async move {
                    if let Err(e) = current_version_only(o.version_id.as_deref()) {
                        return (o.key, Err(e));
                    }
                    let r = bucket
                        .delete(&o.key)
                        .await
                        .map_err(|e| sealed_error(&e, Ctx::Object));
                    (o.key, r)
                }
            })
            .buffered(8)
            .collect()
            .await;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for (key, r) in results {
            match r {
                Ok(()) if !quiet => deleted.push(DeletedObject {
                    key: Some(key),
                    ..Default::default()
                }),
                Ok(()) => {}
                Err(s3) => {
                    errors.push(Error {
                        code: Some(s3.code().as_str().to_string()),
                        key: Some(key),
                        message: s3.message().map(str::to_string),
                        version_id: None,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        no_tags(input.tagging.as_ref())?;
        let (src_bucket, src_key) = copy_source(&input.copy_source)?;
        let dst = self.bucket(&input.bucket).await?;
        let src = self.bucket(src_bucket).await?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if src_bucket == input.bucket.as_str() && src_key == input.key && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata"
            ));
        }
        let src_head = src
            .head(src_key)
            .await
            .map_err(|e| sealed_error(&e, Ctx::Object))?;
        check_copy_source(
            &src_head,
            Conditions {
                if_match: input.copy_source_if_match.as_ref(),
                if_none_match: input.copy_source_if_none_match.as_ref(),
                if_modified_since: input.copy_source_if_modified_since.as_ref(),
                if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
            },
        )?;
        let mut replace_opts = replace.then(|| {
            put_options(
                input.content_type.clone(),
                input.cache_control.clone(),
                input.content_encoding.clone(),
                input.content_disposition.clone(),
                input.content_language.clone(),
                input.metadata.clone(),
            )
        });
        // An ETag the gateway keeps sealed in user metadata belongs to the body: it
        // survives a metadata replacement.
        if let (Some(opts), Some(tag)) = (
            replace_opts.as_mut(),
            src_head
                .sealed
                .then(|| src_head.metadata.user.get(super::ETAG_KEY))
                .flatten(),
        ) {
            opts.metadata
                .insert(super::ETAG_KEY.to_string(), tag.clone());
        }
        // A sealed source within one bucket is copied server-side (a new envelope, the
        // same body); anything else goes through the gateway and is sealed anew, a
        // plaintext source too: every write through the gateway is sealed.
        let same_bucket = src_bucket == input.bucket.as_str();
        if same_bucket && src_head.sealed {
            dst.copy_with(
                src_key,
                &input.key,
                &CopyRequest {
                    source_etag: Some(src_head.etag.clone()),
                    replace: replace_opts,
                    set_md5: None,
                },
            )
            .await
            .map_err(|e| sealed_error(&e, Ctx::Object))?;
        } else {
            let got = src
                .get(src_key, None)
                .await
                .map_err(|e| sealed_error(&e, Ctx::Object))?;
            let mut opts = replace_opts.unwrap_or_else(|| PutOptions {
                content_type: got.head.content_type.clone(),
                cache_control: got.head.cache_control.clone(),
                content_encoding: got.head.metadata.content_encoding.clone(),
                content_disposition: got.head.metadata.content_disposition.clone(),
                content_language: got.head.metadata.content_language.clone(),
                metadata: got.head.metadata.user.clone(),
                ..Default::default()
            });
            // Sealed anew as one stream: its ETag is its MD5, not a multipart source's.
            opts.metadata.remove(ETAG_KEY);
            let size = got.head.size;
            let (body, source) = PlainTap::new(got.body);
            let put = dst.put_stream(&input.key, body, Some(size), &opts).await;
            source.finish().map_err(|e| sealed_error(&e, Ctx::Object))?;
            put.map_err(|e| sealed_error(&e, Ctx::Object))?;
        }
        let head = dst
            .head(&input.key)
            .await
            .map_err(|e| sealed_error(&e, Ctx::Object))?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: etag(client_etag(&head)),
                last_modified: timestamp(head.last_modified.or(Some(SystemTime::now()))),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        no_tags(input.tagging.as_ref())?;
        let bucket = self.bucket(&input.bucket).await?;
        let opts = put_options(
            input.content_type,
            input.cache_control,
            input.content_encoding,
            input.content_disposition,
            input.content_language,
            input.metadata,
        );
        let parts_upload = bucket
            .create_parts_upload(&input.key, &opts)
            .await
            .map_err(|e| sealed_error(&e, Ctx::Object))?;
        let upload_id = parts_upload.upload_id().to_string();
        let mut uploads = self.uploads.lock().expect("not poisoned");
        uploads.retain(|_, u| u.started.elapsed() < UPLOAD_TTL);
        uploads.insert(
            upload_id.clone(),
            Arc::new(Upload {
                started: std::time::Instant::now(),
                bucket: input.bucket.clone(),
                parts_upload,
                parts: Mutex::new(BTreeMap::new()),
            }),
        );
        drop(uploads);
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let headers = req.headers;
        let trailers = req.trailing_headers;
        let input = req.input;
        let upload = self.upload(&input.upload_id, &input.bucket, &input.key)?;
        let number = upload_part_number(input.part_number)?;
        let bucket = self.bucket(&input.bucket).await?;
        let body = input.body.unwrap_or_else(|| {
            StreamingBlob::wrap(futures_util::stream::empty::<Result<Bytes, io::Error>>())
        });
        // A part streams through sealed, so its length goes upstream first: as on S3,
        // one without (no Content-Length, no x-amz-decoded-content-length) is refused.
        // (s3s refuses such requests itself; this holds whatever layer is in front.)
        let Some(len) = body_len(&body, input.content_length, &headers) else {
            return Err(S3Error::new(S3ErrorCode::MissingContentLength));
        };
        check_part_len(len)?;
        let declared = declared(
            input.content_md5,
            [
                input.checksum_crc32,
                input.checksum_crc32c,
                input.checksum_crc64nvme,
                input.checksum_sha1,
                input.checksum_sha256,
            ],
            &headers,
        );
        let (stream, md5) = checksum::verified(body, declared, trailers);
        // Sealed as it arrives. A checksum is known wrong only at the end of the body,
        // before the part's final chunk is sent: the upstream never gets it whole, and
        // the part recorded below is only replaced on success.
        let part = bucket
            .upload_sealed_part_stream(&upload.parts_upload, number, len, stream)
            .await
            .map_err(|e| sealed_error(&e, Ctx::Upload))?;
        let md5 = md5
            .lock()
            .expect("not poisoned")
            .take()
            .ok_or_else(|| s3_error!(InternalError, "the body ended without a digest"))?;
        upload
            .parts
            .lock()
            .expect("not poisoned")
            .insert(number, (part, md5));
        Ok(S3Response::new(UploadPartOutput {
            e_tag: etag(checksum::hex(&md5)),
            ..Default::default()
        }))
    }

    /// A part copied from an object's plaintext (`aws s3 cp` between keys does this for
    /// objects past its multipart threshold): read and opened through the gateway, then
    /// sealed as this upload's part. The copy-source conditions are checked on the
    /// object actually read.
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        let upload = self.upload(&input.upload_id, &input.bucket, &input.key)?;
        let number = upload_part_number(input.part_number)?;
        let (src_bucket, src_key) = copy_source(&input.copy_source)?;
        let range = input
            .copy_source_range
            .as_deref()
            .map(copy_source_range)
            .transpose()?;
        let src = self.bucket(src_bucket).await?;
        let dst = self.bucket(&input.bucket).await?;
        let got = src
            .get(src_key, range)
            .await
            .map_err(|e| sealed_error(&e, Ctx::Object))?;
        check_copy_source(
            &got.head,
            Conditions {
                if_match: input.copy_source_if_match.as_ref(),
                if_none_match: input.copy_source_if_none_match.as_ref(),
                if_modified_since: input.copy_source_if_modified_since.as_ref(),
                if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
            },
        )?;
        // S3 copies only a range inside the source, never a shortened one.
        let len = match (range, got.range) {
            (Some(ByteRange::Inclusive { start, end }), Some(r))
                if r.start == start && r.end == end =>
            {
                r.len()
            }
            (Some(_), _) => {
                return Err(s3_error!(
                    InvalidArgument,
                    "x-amz-copy-source-range is not inside the source object of {} bytes",
                    got.head.size
                ))
            }
            (None, _) => got.head.size,
        };
        check_part_len(len)?;
        let (body, source) = PlainTap::new(got.body);
        let part = dst
            .upload_sealed_part_stream(&upload.parts_upload, number, len, body)
            .await;
        // The source's failure, if any, is the answer: the part's is only its symptom.
        let md5: [u8; 16] = source
            .finish()
            .map_err(|e| sealed_error(&e, Ctx::Object))?
            .finalize()
            .into();
        let part = part.map_err(|e| sealed_error(&e, Ctx::Upload))?;
        upload
            .parts
            .lock()
            .expect("not poisoned")
            .insert(number, (part, md5));
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: etag(checksum::hex(&md5)),
                last_modified: timestamp(Some(SystemTime::now())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let upload = self.upload(&input.upload_id, &input.bucket, &input.key)?;
        let marker = input.part_number_marker.unwrap_or(0).max(0) as u32;
        let max = input.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
        let all: Vec<Part> = upload
            .parts
            .lock()
            .expect("not poisoned")
            .range(marker + 1..)
            .map(|(n, (p, md5))| Part {
                part_number: Some(*n as i32),
                size: Some(p.size as i64),
                e_tag: etag(checksum::hex(md5)),
                ..Default::default()
            })
            .collect();
        let truncated = all.len() > max;
        let parts: Vec<Part> = all.into_iter().take(max).collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            is_truncated: Some(truncated),
            next_part_number_marker: parts.last().and_then(|p| p.part_number),
            max_parts: Some(max as i32),
            parts: Some(parts),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let upload = self.upload(&input.upload_id, &input.bucket, &input.key)?;
        if input.if_match.is_some() || input.if_none_match.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "conditional multipart completion"
            ));
        }
        let bucket = self.bucket(&input.bucket).await?;
        let asked = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if asked.is_empty() {
            return Err(s3_error!(MalformedXML, "no parts"));
        }
        let (parts, md5s) = {
            let recorded = upload.parts.lock().expect("not poisoned");
            let mut parts = Vec::with_capacity(asked.len());
            let mut md5s = Md5::new();
            for (i, p) in asked.iter().enumerate() {
                let n = p.part_number.unwrap_or(0);
                if n != i as i32 + 1 {
                    return Err(s3_error!(
                        InvalidPartOrder,
                        "parts must be numbered 1, 2, 3, … without gaps (sealed parts are bound to their position)"
                    ));
                }
                let Some((part, md5)) = recorded.get(&(n as u32)) else {
                    return Err(s3_error!(InvalidPart, "part {n} was not uploaded"));
                };
                let want = p
                    .e_tag
                    .as_ref()
                    .map(|t| unquote(t.value()).to_ascii_lowercase());
                if want.is_some_and(|w| w != checksum::hex(md5)) {
                    return Err(s3_error!(InvalidPart, "part {n}: the ETag does not match"));
                }
                md5s.update(md5);
                parts.push(part.clone());
            }
            (parts, md5s)
        };
        let client = format!("{}-{}", checksum::hex(&md5s.finalize()), parts.len());
        let extra = BTreeMap::from([(ETAG_KEY.to_string(), client.clone())]);
        let result = bucket
            .complete_parts_upload(&upload.parts_upload, &parts, extra)
            .await;
        // Done with it once it completed, or once the upstream no longer knows it. A
        // refusal before the upstream's Complete (parts that cannot form a sealed object),
        // or a failure the client may retry, leaves it open, as S3 does.
        if result
            .as_ref()
            .map_or_else(SealedError::is_not_found, |_| true)
        {
            self.uploads
                .lock()
                .expect("not poisoned")
                .remove(&input.upload_id);
        }
        result.map_err(|e| sealed_error(&e, Ctx::Upload))?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: etag(client),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket).await?;
        let known = self
            .uploads
            .lock()
            .expect("not poisoned")
            .remove(&input.upload_id);
        match known {
            Some(upload) => bucket
                .abort_parts_upload(&upload.parts_upload)
                .await
                .map_err(|e| sealed_error(&e, Ctx::Upload))?,
            // Forgotten (a restart): still let the client remove it upstream, under its
            // stored (perhaps encrypted) name.
            None => {
                let stored = bucket
                    .stored_key(&input.key)
                    .map_err(|e| sealed_error(&e, Ctx::Upload))?;
                bucket
                    .store()
                    .abort_multipart(&stored, &input.upload_id)
                    .await
                    .map_err(|e| store_error(&e, Ctx::Upload))?
            }
        }
        Ok(S3Response::with_status(
            AbortMultipartUploadOutput::default(),
            hyper::http::StatusCode::NO_CONTENT,
        ))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let bucket = self.bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        // Under encrypted names: the uploads under the stored form of the prefix (its
        // parent's, if it ends inside a segment), by plaintext key, in key order.
        let stored_prefix = match bucket.name_key() {
            Some(k) => k.list_prefix(&prefix).stored,
            None => prefix.clone(),
        };
        let uploads: Vec<store::MultipartUpload> = bucket
            .store()
            .list_multipart_uploads(&stored_prefix)
            .await
            .map_err(|e| store_error(&e, Ctx::Bucket))?
            .into_iter()
            .filter_map(|mut u| {
                if let Some(k) = bucket.name_key() {
                    u.key = k.decrypt(&u.key).ok()?;
                }
                u.key.starts_with(&prefix).then_some(u)
            })
            .collect();
        let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
        let page = uploads_page(
            uploads,
            &prefix,
            delimiter,
            input.key_marker.as_deref().filter(|m| !m.is_empty()),
            input.upload_id_marker.as_deref().filter(|m| !m.is_empty()),
            input
                .max_uploads
                .map_or(1000, |n| n.clamp(1, 1000) as usize),
        );
        let encoding = input.encoding_type.clone();
        let enc = |s: String| encoded(&s, encoding.as_ref());
        let (next_key_marker, next_upload_id_marker) = match page.next {
            Some((key, id)) => (Some(enc(key)), id),
            None => (None, None),
        };
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            is_truncated: Some(next_key_marker.is_some()),
            next_key_marker,
            next_upload_id_marker,
            key_marker: input.key_marker.map(enc),
            upload_id_marker: input.upload_id_marker,
            max_uploads: input.max_uploads,
            uploads: Some(
                page.uploads
                    .into_iter()
                    .map(|u| MultipartUpload {
                        key: Some(enc(u.key)),
                        upload_id: Some(u.upload_id),
                        initiated: timestamp(u.initiated),
                        ..Default::default()
                    })
                    .collect(),
            ),
            common_prefixes: (!page.common_prefixes.is_empty()).then(|| {
                page.common_prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(enc(p)),
                    })
                    .collect()
            }),
            prefix: input.prefix.map(enc),
            delimiter: input.delimiter.map(enc),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }
}

/// One page of ListMultipartUploads.
#[derive(Debug, Default)]
struct UploadsPage {
    uploads: Vec<store::MultipartUpload>,
    common_prefixes: Vec<String>,
    /// When truncated: the next page's key marker, and its upload-id marker if the page
    /// ended on an upload (not a common prefix).
    next: Option<(String, Option<String>)>,
}

/// S3's paging of ListMultipartUploads over every upload under `prefix`: sorted by key,
/// then by initiation; after `key_marker` (and, for that key, after the upload
/// `upload_id_marker`, or those with a greater id if it is gone); with a delimiter, the
/// keys that go on past it after `prefix` are rolled into common prefixes, each counting
/// as one of `max` entries, and a marker that is one of them skips all of its keys.
fn uploads_page(
    mut all: Vec<store::MultipartUpload>,
    prefix: &str,
    delimiter: Option<&str>,
    key_marker: Option<&str>,
    upload_id_marker: Option<&str>,
    max: usize,
) -> UploadsPage {
    all.retain(|u| u.key.starts_with(prefix));
    all.sort_by(|a, b| {
        (&a.key, a.initiated, &a.upload_id).cmp(&(&b.key, b.initiated, &b.upload_id))
    });
    let after_marker = |u: &store::MultipartUpload| -> bool {
        let Some(km) = key_marker else { return true };
        if delimiter.is_some_and(|d| km.ends_with(d)) && u.key.starts_with(km) {
            return false; // inside a common prefix a previous page gave
        }
        match (u.key.as_str().cmp(km), upload_id_marker) {
            (std::cmp::Ordering::Greater, _) => true,
            (std::cmp::Ordering::Equal, Some(id)) => u.upload_id.as_str() > id,
            _ => false,
        }
    };
    let start = match (key_marker, upload_id_marker) {
        // The marked upload itself: the ones after it in this order, ids aside.
        (Some(km), Some(id)) => all
            .iter()
            .position(|u| u.key == km && u.upload_id == id)
            .map(|i| i + 1),
        _ => None,
    };
    let rest: Vec<store::MultipartUpload> = match start {
        Some(i) => all.split_off(i),
        None => all.into_iter().filter(|u| after_marker(u)).collect(),
    };
    let mut page = UploadsPage::default();
    let mut given = 0;
    for u in rest {
        let rolled = delimiter.and_then(|d| {
            let tail = u.key.get(prefix.len()..)?;
            tail.find(d)
                .map(|i| u.key[..prefix.len() + i + d.len()].to_owned())
        });
        if let Some(cp) = &rolled {
            if page.common_prefixes.last() == Some(cp) {
                continue;
            }
        }
        if given == max {
            page.next = Some(match (page.uploads.last(), page.common_prefixes.last()) {
                // Whichever came last in key order is where the page ended.
                (Some(u), Some(cp)) if cp.as_str() > u.key.as_str() => (cp.clone(), None),
                (Some(u), _) => (u.key.clone(), Some(u.upload_id.clone())),
                (None, Some(cp)) => (cp.clone(), None),
                (None, None) => unreachable!("max >= 1"),
            });
            break;
        }
        given += 1;
        match rolled {
            Some(cp) => page.common_prefixes.push(cp),
            None => page.uploads.push(u),
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SealedMetadata;

    fn head(sealed: bool, md5: Option<&str>, user: &[(&str, &str)]) -> ObjectHead {
        ObjectHead {
            key: "k".into(),
            size: 3,
            stored_size: 35,
            etag: "\"0123456789abcdef0123456789abcdef\"".into(),
            last_modified: None,
            content_type: None,
            cache_control: None,
            metadata: SealedMetadata {
                md5: md5.map(str::to_string),
                user: user
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            },
            sealed,
            parts: None,
        }
    }

    fn upload(key: &str, id: &str, at: u64) -> store::MultipartUpload {
        store::MultipartUpload {
            key: key.into(),
            upload_id: id.into(),
            initiated: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(at)),
        }
    }

    fn shown(page: &UploadsPage) -> Vec<String> {
        let mut all: Vec<String> = page
            .uploads
            .iter()
            .map(|u| format!("{}#{}", u.key, u.upload_id))
            .chain(page.common_prefixes.iter().cloned())
            .collect();
        all.sort();
        all
    }

    #[test]
    fn uploads_are_paged_as_s3_pages_them() {
        let all = vec![
            upload("b", "z", 1),
            upload("a", "y", 2),
            upload("a", "x", 3),
            upload("d/1", "q", 1),
            upload("d/2", "r", 1),
            upload("c", "p", 1),
        ];
        // Two at a time, by key then initiation; each page's markers lead to the next.
        let mut seen = Vec::new();
        let (mut km, mut idm) = (None::<String>, None::<String>);
        loop {
            let page = uploads_page(all.clone(), "", None, km.as_deref(), idm.as_deref(), 2);
            seen.extend(shown(&page));
            match page.next {
                Some((k, id)) => (km, idm) = (Some(k), id),
                None => break,
            }
        }
        seen.sort();
        assert_eq!(seen, ["a#x", "a#y", "b#z", "c#p", "d/1#q", "d/2#r"]);
        // With a delimiter: d/ is one entry, and a page ending on it skips its keys.
        let page = uploads_page(all.clone(), "", Some("/"), None, None, 4);
        assert_eq!(shown(&page), ["a#x", "a#y", "b#z", "c#p"]);
        assert_eq!(page.next, Some(("c".into(), Some("p".into()))));
        let page = uploads_page(all.clone(), "", Some("/"), Some("c"), Some("p"), 4);
        assert_eq!(shown(&page), ["d/"]);
        assert_eq!(page.next, None);
        let page = uploads_page(all.clone(), "", Some("/"), Some("b"), None, 2);
        assert_eq!(shown(&page), ["c#p", "d/"]);
        assert_eq!(page.next, None);
        let more = [all.clone(), vec![upload("e", "s", 1)]].concat();
        let page = uploads_page(more.clone(), "", Some("/"), Some("b"), None, 2);
        assert_eq!(page.next, Some(("d/".into(), None)));
        let page = uploads_page(more, "", Some("/"), Some("d/"), None, 2);
        assert_eq!(shown(&page), ["e#s"]);
        // An upload-id marker whose upload is gone: that key's greater ids, then on.
        let page = uploads_page(all.clone(), "", None, Some("a"), Some("xx"), 10);
        assert_eq!(shown(&page)[0], "a#y");
        assert_eq!(page.uploads.len(), 5);
        // Under a prefix, the delimiter applies after it.
        let page = uploads_page(all, "d/", Some("/"), None, None, 10);
        assert_eq!(shown(&page), ["d/1#q", "d/2#r"]);
    }

    #[test]
    fn client_etags_never_show_the_ciphertext_md5() {
        let stored = "0123456789abcdef0123456789abcdef";
        assert_eq!(client_etag(&head(false, None, &[])), stored);
        assert_eq!(
            client_etag(&head(true, Some("aa"), &[])),
            "aa",
            "the sealed plaintext MD5"
        );
        assert_eq!(
            client_etag(&head(true, Some("aa"), &[(ETAG_KEY, "bb-3")])),
            "bb-3"
        );
        let opaque = client_etag(&head(true, None, &[]));
        assert_eq!(opaque, format!("r2seal-{stored}"));
        assert!(opaque.len() != 32, "not MD5-shaped");
        // Both the opaque form and the client form satisfy a condition.
        let h = head(true, Some("aa"), &[]);
        assert!(matches(&ETagCondition::ETag(ETag::Strong("aa".into())), &h));
        assert!(matches(
            &ETagCondition::ETag(ETag::Strong(format!("r2seal-{stored}"))),
            &h
        ));
        assert!(!matches(
            &ETagCondition::ETag(ETag::Strong(stored.into())),
            &h
        ));
    }

    #[test]
    fn conditions_follow_the_precedence_s3_documents() {
        use FailedIf::*;
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let now = time::OffsetDateTime::from(t0 + std::time::Duration::from_secs(3600));
        let mut h = head(true, Some("aa"), &[]);
        h.last_modified = Some(t0);
        let at = |secs: i64| {
            Timestamp::from(time::OffsetDateTime::from(t0) + time::Duration::seconds(secs))
        };
        let (before, same, after, future) = (at(-60), at(0), at(60), at(7200));
        let hit = ETagCondition::ETag(ETag::Strong("aa".into()));
        let miss = ETagCondition::ETag(ETag::Strong("bb".into()));
        let cases: [(Conditions<'_>, Option<FailedIf>); 12] = [
            (Conditions::default(), None),
            (
                Conditions {
                    if_match: Some(&miss),
                    ..Default::default()
                },
                Some(Match),
            ),
            (
                Conditions {
                    if_unmodified_since: Some(&before),
                    ..Default::default()
                },
                Some(UnmodifiedSince),
            ),
            (
                Conditions {
                    if_unmodified_since: Some(&same),
                    ..Default::default()
                },
                None,
            ),
            // S3: If-Match true and If-Unmodified-Since false answer with the object.
            (
                Conditions {
                    if_match: Some(&hit),
                    if_unmodified_since: Some(&before),
                    ..Default::default()
                },
                None,
            ),
            (
                Conditions {
                    if_none_match: Some(&hit),
                    ..Default::default()
                },
                Some(NoneMatch),
            ),
            (
                Conditions {
                    if_modified_since: Some(&same),
                    ..Default::default()
                },
                Some(ModifiedSince),
            ),
            (
                Conditions {
                    if_modified_since: Some(&before),
                    ..Default::default()
                },
                None,
            ),
            (
                Conditions {
                    if_modified_since: Some(&after),
                    ..Default::default()
                },
                Some(ModifiedSince),
            ),
            // A date later than the gateway's clock is no condition at all.
            (
                Conditions {
                    if_modified_since: Some(&future),
                    ..Default::default()
                },
                None,
            ),
            // S3: If-None-Match false and If-Modified-Since true fail.
            (
                Conditions {
                    if_none_match: Some(&hit),
                    if_modified_since: Some(&before),
                    ..Default::default()
                },
                Some(NoneMatch),
            ),
            (
                Conditions {
                    if_none_match: Some(&miss),
                    if_modified_since: Some(&after),
                    ..Default::default()
                },
                None,
            ),
        ];
        for (i, (conditions, want)) in cases.iter().enumerate() {
            assert_eq!(conditions.failed(&h, now), *want, "case {i}");
        }
        // An If-Match failure is reported before an If-None-Match one.
        let both = Conditions {
            if_match: Some(&miss),
            if_none_match: Some(&hit),
            ..Default::default()
        };
        assert_eq!(both.failed(&h, now), Some(Match));
        // Without a Last-Modified, the dates cannot fail.
        h.last_modified = None;
        let dates = Conditions {
            if_modified_since: Some(&after),
            if_unmodified_since: Some(&before),
            ..Default::default()
        };
        assert_eq!(dates.failed(&h, now), None);
    }

    #[test]
    fn reserved_metadata_is_neither_shown_nor_accepted() {
        let h = head(true, None, &[(ETAG_KEY, "x-1"), ("mtime", "1700000000")]);
        let shown = client_metadata(&h).unwrap();
        assert_eq!(shown.len(), 1);
        assert_eq!(shown["mtime"], "1700000000");
        let from_client: Metadata = [
            (ETAG_KEY.to_string(), "forged".to_string()),
            ("r2seal".to_string(), "forged".to_string()),
            ("mtime".to_string(), "1".to_string()),
        ]
        .into_iter()
        .collect();
        let kept = user_metadata(Some(from_client));
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["mtime"]);
    }

    #[test]
    fn copy_source_ranges_take_only_first_and_last() {
        assert_eq!(
            copy_source_range("bytes=0-0").unwrap(),
            ByteRange::Inclusive { start: 0, end: 0 }
        );
        assert_eq!(
            copy_source_range("bytes=5000000-10242879").unwrap(),
            ByteRange::Inclusive {
                start: 5_000_000,
                end: 10_242_879
            }
        );
        for bad in [
            "bytes=5-4",
            "bytes=5-",
            "bytes=-5",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=1-2-3",
            "bytes=1-2,4-5",
            "bytes= 1-2",
            "bytes=99999999999999999999-1",
            "items=1-2",
            "",
        ] {
            let e = copy_source_range(bad).expect_err(bad);
            assert_eq!(e.code(), &S3ErrorCode::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn aws_chunked_is_not_a_content_encoding() {
        assert_eq!(content_encoding(Some("aws-chunked".into())), None);
        assert_eq!(
            content_encoding(Some("aws-chunked, gzip".into())),
            Some("gzip".into())
        );
        assert_eq!(content_encoding(Some("br".into())), Some("br".into()));
    }

    #[test]
    fn keys_clients_sent_are_echoed_as_listed_keys_are_encoded() {
        let url = EncodingType::from_static(EncodingType::URL);
        assert_eq!(
            echoed(Some("p/a+b c".into()), Some(&url)).as_deref(),
            Some("p/a%2Bb%20c")
        );
        assert_eq!(
            echoed(Some("p/a+b c".into()), None).as_deref(),
            Some("p/a+b c")
        );
        assert_eq!(echoed(None, Some(&url)), None);
    }

    #[test]
    fn operator_lines_escape_control_characters() {
        assert_eq!(printable(&"plain: text ü"), "plain: text ü");
        let forged = "denied\nr2seal gateway: all is well\u{1b}[2J\r";
        let shown = printable(&forged);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(
            shown.contains("denied\\nr2seal gateway: all is well"),
            "{shown}"
        );
    }

    #[test]
    fn url_encoding_of_listings_keeps_slashes() {
        assert_eq!(url_encode("a b/ü+%.txt"), "a%20b/%C3%BC%2B%25.txt");
    }

    #[test]
    fn config_debug_hides_the_secret() {
        let config = crate::gateway::GatewayConfig {
            upstream: S3Options::default(),
            recipients: Recipients::fixed(vec![]),
            identities: vec![],
            name_key: None,
            access_key_id: "AKID".into(),
            secret_access_key: zeroize::Zeroizing::new("very-secret-value".into()),
            shutdown_grace: std::time::Duration::from_secs(1),
            allow_plaintext: false,
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("very-secret-value") && shown.contains("<redacted>"));
    }
}
