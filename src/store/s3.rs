//! `s3://bucket/prefix` and `r2://bucket/prefix`: the aws-sdk-s3 backend.
//!
//! Set up for R2 first, and correct for other S3-compatible stores:
//! - endpoint: an explicit [`S3Options::endpoint`], else `AWS_ENDPOINT_URL_S3`, else
//!   `AWS_ENDPOINT_URL`, else `https://$R2_ACCOUNT_ID.r2.cloudflarestorage.com`; `r2://`
//!   requires one of them, `s3://` without one talks to AWS.
//! - region: explicit, else `auto` for R2, else the standard AWS chain (`AWS_REGION`,
//!   profile), else `auto`.
//! - credentials: explicit, else the standard AWS chain (`AWS_ACCESS_KEY_ID` /
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE` and the shared config files, ...).
//! - addressing: path-style for any endpoint that is not R2's (MinIO, Garage, moto and
//!   friends rarely have wildcard DNS), overridable with `R2SEAL_PATH_STYLE=1|0`.
//! - checksums: request calculation and response validation only "when required". Since
//!   aws-sdk-s3 1.69 the default adds CRC32 trailers (aws-chunked bodies) that R2 and
//!   several S3-compatible servers reject or mis-store.
//! - bodies: `Bytes` with a known Content-Length, or for a streamed part
//!   ([`Store::upload_part_stream`]) a stream with its exact Content-Length. A streamed
//!   body cannot be hashed before it is sent, so it goes `UNSIGNED-PAYLOAD` (the bytes
//!   are ciphertext, authenticated when read), and the SDK cannot replay it: a failed
//!   attempt is not retried.
//! - requests: GET, HEAD and PUT skip the SDK's request pipeline (`s3_direct`: same URL,
//!   signer, credentials and retry policy, under half the client CPU per request); the
//!   rest go through the SDK. [`S3Options::sdk_only`] or `R2SEAL_S3_SDK_ONLY=1` sends
//!   everything through the SDK.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_config::environment::{
    EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
};
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::{ProfileFileCredentialsProvider, ProfileFileRegionProvider};
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream as SdkByteStream, DateTimeFormat};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use aws_sdk_s3::Client;
use bytes::Bytes;
use http::HeaderMap;
use zeroize::Zeroizing;

use super::{
    body_error, check_copy_range, check_headers, check_key, check_max_keys, check_part_number,
    check_parts, check_put_options, exact_len, ByteRange, CopyOptions, ErrorKind, ExactLen,
    GetOptions, GetResult, ListPage, MultipartUpload, ObjectInfo, ObjectMeta, Op, PartBody,
    PartCopySource, PutOptions, PutResult, Store, StoreError, UploadedPart,
};

use super::s3_direct::{
    chain, encode_key, is_certificate_error, set_header, transport_detail, Direct, Failure, Payload,
};
use super::s3_endpoints::PerBucketEndpoints;
use super::wire::parse_content_range;

type Res<T> = Result<T, StoreError>;

/// Static credentials. `Debug` never shows the secret or the session token.
#[derive(Clone)]
pub struct S3Credentials {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
}

impl S3Credentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        S3Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: Zeroizing::new(secret_access_key.into()),
            session_token: None,
        }
    }

    /// Add a session token (temporary credentials).
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(Zeroizing::new(token.into()));
        self
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key id is an identifier, not a secret, but only a hint of it is needed.
        let hint: String = self.access_key_id.chars().take(4).collect();
        f.debug_struct("S3Credentials")
            .field("access_key_id", &format_args!("{hint}..."))
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// How to reach the bucket; every field left `None` comes from the environment.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint URL, e.g. `http://127.0.0.1:3900` or `https://<id>.r2.cloudflarestorage.com`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Force path-style (`true`) or virtual-hosted (`false`) addressing.
    pub path_style: Option<bool>,
    pub credentials: Option<S3Credentials>,
    /// Named profile of the shared AWS config files.
    pub profile: Option<String>,
    /// How long a streamed body may wait for the server to read on, or for its answer
    /// once the body ended, before its request fails (default [`BODY_STALL_TIMEOUT`]).
    pub body_stall_timeout: Option<Duration>,
    /// Send GET, HEAD and PUT through aws-sdk-s3 too, as every other request, instead of
    /// the leaner direct path (see `s3_direct`); also `R2SEAL_S3_SDK_ONLY=1`.
    pub sdk_only: bool,
}

/// A streamed body (a streamed put or part) whose request the server has left this long
/// without reading on, or without an answer once the body ended, fails with a retryable
/// [`ErrorKind::Network`] error, instead of holding the put forever (seen once with
/// Garage on a full disk). Time spent waiting for the body's own input does not count.
pub const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(120);
/// The SDK's own stalled-stream grace period (its default), kept as the floor: a shorter
/// stall timeout (tests) still lets a body's source pause this long.
const SDK_GRACE_PERIOD: Duration = Duration::from_secs(5);

/// A bucket, or a prefix inside one, over the S3 API.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Empty, or ends with `/`; prepended to every key.
    prefix: String,
    url: String,
    endpoint: Option<String>,
    region: String,
    path_style: bool,
    /// Send bodies as `UNSIGNED-PAYLOAD`: the transport already protects them (TLS, or
    /// loopback), so hashing each body once more for the signature only costs CPU.
    unsigned_payload: bool,
    /// User metadata per object, in bytes: AWS's 2 KB, else R2's 8 KiB.
    metadata_limit: usize,
    body_stall_timeout: Duration,
    /// GET, HEAD and PUT without the SDK's request pipeline (`s3_direct`), unless the
    /// configuration needs the SDK for them.
    direct: Option<Arc<Direct>>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written: the SDK client's Debug is large and holds the credentials provider.
        f.debug_struct("S3Store")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("direct", &self.direct.is_some())
            .finish_non_exhaustive()
    }
}

const R2_HOST_SUFFIX: &str = ".r2.cloudflarestorage.com";

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Whether the connection to `endpoint` keeps a body from being changed on the way: TLS,
/// or a loopback address (the same machine).
/// A key as S3 URL-encodes it in listings (`encoding-type=url`): `%XX` escapes, and `+`
/// for a space as in a form (S3 itself writes a `+` in a key as `%2B`). `None` if it does
/// not decode to UTF-8.
fn url_decode_form(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// AWS S3 allows 2 KB of user metadata per object, R2 8 KiB; other S3-compatible servers
/// are taken at R2's figure. No endpoint (and not R2) means AWS.
pub(crate) const AWS_METADATA_LIMIT: usize = 2048;

fn metadata_limit_of(endpoint: Option<&str>) -> usize {
    let Some(endpoint) = endpoint else {
        return AWS_METADATA_LIMIT;
    };
    let host = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split(['/', '?', ':'])
        .next()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn") {
        AWS_METADATA_LIMIT
    } else {
        crate::format::header::R2_METADATA_LIMIT
    }
}

fn transport_protects_payload(endpoint: &str) -> bool {
    if endpoint.starts_with("https://") {
        return true;
    }
    let host = endpoint
        .trim_start_matches("http://")
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_r2_endpoint(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host = rest.split(['/', ':']).next().unwrap_or("");
    host.ends_with(R2_HOST_SUFFIX)
}

impl S3Store {
    /// CompleteMultipartUpload, with `If-Match` when given.
    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        if_match: Option<&str>,
    ) -> Res<PutResult> {
        let op = Op::CompleteMultipart;
        let full = self.check(op, key)?;
        check_parts(parts).map_err(|m| self.invalid(op, key, m))?;
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.part_number as i32)
                            .e_tag(&p.etag)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(completed)
            .set_if_match(if_match.map(str::to_owned))
            .send()
            .await
            .map_err(|e| map_err(op, self.loc(key), e))?;
        Ok(PutResult {
            etag: out.e_tag().unwrap_or_default().to_string(),
        })
    }

    /// Parse `s3://bucket[/prefix]` or `r2://bucket[/prefix]` and connect (no request is
    /// sent until the first operation).
    pub async fn from_url(url: &str, opts: S3Options) -> Res<S3Store> {
        let bad =
            |m: &str| StoreError::new(Op::Open, url, ErrorKind::InvalidRequest).with_detail(m);
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected s3:// or r2://"))?;
        if scheme != "s3" && scheme != "r2" {
            return Err(bad("expected s3:// or r2://"));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let mut opts = opts;
        if scheme == "r2" && opts.endpoint.is_none() && Self::env_endpoint().is_none() {
            let account = env("R2_ACCOUNT_ID").ok_or_else(|| {
                bad("r2:// needs R2_ACCOUNT_ID (or AWS_ENDPOINT_URL, or an explicit endpoint)")
            })?;
            opts.endpoint = Some(r2_endpoint(&account).map_err(bad)?);
        }
        S3Store::new(bucket, prefix, opts).await
    }

    fn env_endpoint() -> Option<String> {
        env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL"))
    }

    /// Connect to `bucket`, keeping every key under `prefix` (a trailing `/` is added).
    pub async fn new(bucket: &str, prefix: &str, opts: S3Options) -> Res<S3Store> {
        let shown = format!("s3://{bucket}/{prefix}");
        let bad =
            |m: &str| StoreError::new(Op::Open, &shown, ErrorKind::InvalidRequest).with_detail(m);
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(bad("invalid bucket name"));
        }
        let prefix = prefix.trim_start_matches('/');
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };

        let Connection {
            client,
            sdk,
            endpoint,
            region,
            r2,
            path_style,
            body_stall_timeout,
        } = connect(&opts, &shown).await?;
        let sdk_only = opts.sdk_only
            || match env("R2SEAL_S3_SDK_ONLY") {
                Some(v) => {
                    parse_bool(&v).ok_or_else(|| bad("R2SEAL_S3_SDK_ONLY must be 1 or 0"))?
                }
                None => false,
            };
        let direct = if sdk_only {
            None
        } else {
            Direct::new(
                bucket,
                &region,
                endpoint.as_deref(),
                path_style,
                sdk.credentials_provider(),
                body_stall_timeout,
            )
            .map(Arc::new)
        };
        let scheme = if r2 { "r2" } else { "s3" };
        Ok(S3Store {
            client,
            url: format!("{scheme}://{bucket}/{prefix}"),
            bucket: bucket.to_string(),
            prefix,
            unsigned_payload: endpoint.as_deref().is_none_or(transport_protects_payload),
            metadata_limit: metadata_limit_of(endpoint.as_deref()),
            body_stall_timeout,
            endpoint,
            region,
            path_style,
            direct,
        })
    }

    /// The bucket's region as GetBucketLocation answers it; `None` is S3's empty answer
    /// (us-east-1).
    pub async fn bucket_location(&self) -> Res<Option<String>> {
        let out = self
            .client
            .get_bucket_location()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| map_err(Op::Head, self.loc(""), e))?;
        Ok(out
            .location_constraint()
            .map(|c| c.as_str().to_string())
            .filter(|c| !c.is_empty()))
    }

    /// The bucket's versioning status (`Enabled`, `Suspended`), `None` if never enabled.
    pub async fn bucket_versioning(&self) -> Res<Option<String>> {
        let out = self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| map_err(Op::Head, self.loc(""), e))?;
        Ok(out.status().map(|s| s.as_str().to_string()))
    }

    /// A ListObjectsV2 page from `continuation`, or else after `start_after` (a full key).
    async fn list_from(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
        start_after: Option<String>,
        max_keys: Option<u32>,
    ) -> Res<ListPage> {
        let op = Op::List;
        let max = check_max_keys(max_keys).map_err(|m| self.invalid(op, prefix, m))?;
        if delimiter == Some("") {
            return Err(self.invalid(op, prefix, "empty delimiter"));
        }
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full(prefix))
            .set_delimiter(delimiter.map(str::to_string))
            .set_continuation_token(continuation)
            .set_start_after(start_after)
            .max_keys(max as i32)
            // Keys are URL-encoded in the answer: XML 1.0 cannot carry every character a
            // key may hold (U+0001, say), and one such key would fail every listing of
            // its prefix. Decoded only where the server says it encoded.
            .encoding_type(aws_sdk_s3::types::EncodingType::Url)
            .send()
            .await
            .map_err(|e| map_err(op, self.loc(prefix), e))?;
        let encoded = out.encoding_type() == Some(&aws_sdk_s3::types::EncodingType::Url);
        let decoded = |s: &str| -> Res<String> {
            match encoded {
                false => Ok(s.to_string()),
                true => url_decode_form(s).ok_or_else(|| {
                    StoreError::new(op, self.loc(prefix), ErrorKind::Other)
                        .with_detail("a URL-encoded key in the listing does not decode")
                }),
            }
        };
        let keys: Vec<Option<String>> = out
            .contents()
            .iter()
            .map(|o| o.key().map(decoded).transpose())
            .collect::<Res<_>>()?;
        let objects = out
            .contents()
            .iter()
            .zip(keys)
            .filter_map(|(o, key)| {
                Some(ObjectMeta {
                    key: self.strip(&key?)?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().unwrap_or_default().to_string(),
                    last_modified: to_system_time(o.last_modified()),
                })
            })
            .collect();
        let common_prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().map(decoded))
            .collect::<Res<Vec<String>>>()?
            .iter()
            .filter_map(|p| Some(self.strip(p)?.to_string()))
            .collect();
        let next_continuation = if out.is_truncated().unwrap_or(false) {
            // Without a token the caller could only loop forever on the first page.
            Some(
                out.next_continuation_token()
                    .map(str::to_string)
                    .ok_or_else(|| {
                        StoreError::new(op, self.loc(prefix), ErrorKind::Other)
                            .with_detail("truncated listing without a continuation token")
                    })?,
            )
        } else {
            None
        };
        Ok(ListPage {
            objects,
            common_prefixes,
            next_continuation,
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The prefix every key is stored under (empty or ending in `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn loc(&self, key: &str) -> String {
        format!("{}{key}", self.url)
    }

    fn check(&self, op: Op, key: &str) -> Res<String> {
        let full = self.full(key);
        check_key(key)
            .and_then(|()| check_key(&full))
            .map_err(|m| {
                StoreError::new(op, self.loc(key), ErrorKind::InvalidRequest).with_detail(m)
            })?;
        Ok(full)
    }

    fn strip<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())
    }

    fn invalid(&self, op: Op, key: &str, m: &str) -> StoreError {
        StoreError::new(op, self.loc(key), ErrorKind::InvalidRequest).with_detail(m)
    }
}

impl S3Store {
    /// A PutObject request for `len` body bytes with `opts`' headers and conditions,
    /// checked and addressed; the caller adds the body.
    fn put_request(
        &self,
        key: &str,
        len: u64,
        opts: &PutOptions,
    ) -> Res<aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder> {
        let op = Op::Put;
        let full = self.check(op, key)?;
        check_put_options(opts).map_err(|m| self.invalid(op, key, m))?;
        Ok(self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .content_length(len as i64)
            .set_content_type(opts.content_type.clone())
            .set_cache_control(opts.cache_control.clone())
            .set_metadata(to_hash(&opts.metadata))
            .set_if_match(opts.if_match.clone())
            .set_if_none_match(opts.if_none_match.clone()))
    }

    /// An UploadPart request for `len` body bytes, checked and addressed; the caller
    /// adds the body.
    fn part_request(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        len: u64,
    ) -> Res<aws_sdk_s3::operation::upload_part::builders::UploadPartFluentBuilder> {
        let op = Op::UploadPart;
        let full = self.check(op, key)?;
        check_part_number(part_number).map_err(|m| self.invalid(op, key, m))?;
        Ok(self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .part_number(part_number as i32)
            .content_length(len as i64))
    }

    /// Sends a request with a [`StreamedBody`] watched by `watch`: a server that stops
    /// reading the body fails it (see [`BODY_STALL_TIMEOUT`]), and the body's own error
    /// says more than the HTTP client's account of the request it broke.
    async fn send_streamed<T>(
        &self,
        op: Op,
        key: &str,
        send: impl std::future::Future<Output = Res<T>>,
        watch: &BodyWatch,
    ) -> Res<T> {
        use futures_util::future::{select, Either};
        let stalled = watch.stalled(self.body_stall_timeout);
        let out = match select(std::pin::pin!(send), std::pin::pin!(stalled)).await {
            Either::Left((out, _)) => out,
            // Dropping the request closes its connection.
            Either::Right((stall, _)) => {
                let secs = self.body_stall_timeout.as_secs_f32();
                let detail = match stall {
                    Stall::Reading => format!("the server stopped reading the body for {secs} s"),
                    Stall::Answer => {
                        format!("the server did not answer within {secs} s of the body's end")
                    }
                };
                return Err(
                    StoreError::new(op, self.loc(key), ErrorKind::Network).with_detail(detail)
                );
            }
        };
        let failed = watch.failure.lock().expect("not poisoned").take();
        match (out, failed) {
            // `Ok` with a failed body is never seen (the server cannot answer a request
            // it did not get whole), but such a request must not count as stored.
            (_, Some(e)) => Err(body_error(op, self.loc(key), e)),
            (out, None) => out,
        }
    }

    /// An SDK request's outcome as the store's.
    async fn sdk<T, E>(
        &self,
        op: Op,
        key: &str,
        send: impl std::future::Future<Output = Result<T, SdkError<E>>>,
    ) -> Res<T>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        send.await.map_err(|e| map_err(op, self.loc(key), e))
    }

    /// PutObject on the direct path: `opts`' headers and conditions, checked.
    async fn direct_put(
        &self,
        direct: &Direct,
        key: &str,
        len: u64,
        opts: &PutOptions,
        payload: Payload,
    ) -> Res<http::Response<hyper::body::Incoming>> {
        let op = Op::Put;
        let full = self.check(op, key)?;
        check_put_options(opts).map_err(|m| self.invalid(op, key, m))?;
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, len.into());
        let mut set = |name, value: Option<&str>| set_header(&mut headers, name, value);
        let set_all = (|| {
            set(http::header::CONTENT_TYPE, opts.content_type.as_deref())?;
            set(http::header::CACHE_CONTROL, opts.cache_control.as_deref())?;
            set(http::header::IF_MATCH, opts.if_match.as_deref())?;
            set(http::header::IF_NONE_MATCH, opts.if_none_match.as_deref())?;
            for (k, v) in &opts.metadata {
                let name =
                    http::header::HeaderName::from_bytes(format!("x-amz-meta-{k}").as_bytes())
                        .map_err(|_| {
                            Failure::Request(format!("metadata key {k:?} is not a header name"))
                        })?;
                set(name, Some(v))?;
            }
            Ok(())
        })();
        let loc = || self.loc(key);
        set_all.map_err(|f: Failure| f.into_store_error(op, loc()))?;
        direct
            .send(op, http::Method::PUT, &full, headers, payload)
            .await
            .map_err(|f| f.into_store_error(op, loc()))
    }

    /// GetObject on the direct path; the body's chunks each wait at most the stall
    /// timeout, as the SDK's stalled-stream protection would.
    async fn direct_get(
        &self,
        direct: &Direct,
        key: &str,
        full: &str,
        range: Option<ByteRange>,
        opts: &GetOptions,
    ) -> Res<GetResult> {
        let op = Op::Get;
        let mut headers = HeaderMap::new();
        let range_header = range.map(|r| r.to_header());
        set_header(&mut headers, http::header::RANGE, range_header.as_deref())
            .and_then(|()| {
                set_header(
                    &mut headers,
                    http::header::IF_MATCH,
                    opts.if_match.as_deref(),
                )
            })
            .map_err(|f| f.into_store_error(op, self.loc(key)))?;
        let resp = direct
            .send(op, http::Method::GET, full, headers, Payload::Empty)
            .await
            .map_err(|f| f.into_store_error(op, self.loc(key)))?;
        let length = content_length(resp.headers());
        let (served, size) =
            match header_str(resp.headers(), "content-range").and_then(parse_content_range) {
                Some((r, total)) => (Some(r), total),
                None => (None, length),
            };
        let info = object_info(key, size, resp.headers());
        let stall = self.body_stall_timeout;
        let loc = self.loc(key);
        let body = Box::pin(futures_util::stream::try_unfold(
            (resp.into_body(), loc),
            move |(mut body, loc)| async move {
                use http_body_util::BodyExt;
                loop {
                    let frame = match tokio::time::timeout(stall, body.frame()).await {
                        Ok(f) => f,
                        Err(_) => {
                            let detail = format!("the body stalled for {} s", stall.as_secs_f32());
                            return Err(StoreError::new(Op::Get, loc, ErrorKind::Network)
                                .with_detail(detail));
                        }
                    };
                    match frame {
                        None => return Ok(None),
                        Some(Ok(frame)) => {
                            if let Ok(chunk) = frame.into_data() {
                                return Ok(Some((chunk, (body, loc))));
                            }
                        }
                        Some(Err(e)) => {
                            return Err(StoreError::new(Op::Get, loc, ErrorKind::Network)
                                .with_detail(chain(&e))
                                .with_source(e))
                        }
                    }
                }
            },
        ));
        Ok(GetResult {
            info,
            range: served,
            body,
        })
    }

    /// The part as uploaded: without its ETag the upload cannot be completed.
    fn uploaded_part(&self, key: &str, part_number: u32, etag: Option<&str>) -> Res<UploadedPart> {
        let etag = etag.map(str::to_string).ok_or_else(|| {
            StoreError::new(Op::UploadPart, self.loc(key), ErrorKind::Other)
                .with_detail("no ETag for the part")
        })?;
        Ok(UploadedPart { part_number, etag })
    }
}

/// A streamed body as an http-body 1.x body, sent with its exact Content-Length: a body
/// that fails or ends early leaves the server with a short request, which it discards,
/// and the SDK cannot retry a stream. (`Mutex`: the SDK wants a `Sync` body; it is only
/// ever polled through `&mut`.)
struct StreamedBody {
    body: Mutex<ExactLen>,
    watch: BodyWatch,
}

/// What a [`StreamedBody`] tells the request that sends it.
#[derive(Clone, Default)]
struct BodyWatch {
    /// The body's error, kept since the SDK reports it only as a dispatch failure.
    failure: Arc<Mutex<Option<io::Error>>>,
    /// When the body last handed over a chunk, if the HTTP client has not asked for the
    /// next one since: it asks once the connection took the chunk.
    handed_over: Arc<Mutex<Option<Instant>>>,
    /// When the body handed over its last chunk. The client need not ask again after
    /// Content-Length bytes, so from then on the wait for the connection to take it and
    /// for the server's answer is measured from here.
    ended: Arc<Mutex<Option<Instant>>>,
}

/// How a streamed request stalled.
enum Stall {
    /// A chunk waited for the connection to take it.
    Reading,
    /// The body ended, and no answer came.
    Answer,
}

impl BodyWatch {
    /// Resolves once a chunk has waited `timeout` for the connection to take it, or
    /// `timeout` passed since the body ended without an answer.
    async fn stalled(&self, timeout: Duration) -> Stall {
        let since =
            |at: &Mutex<Option<Instant>>| at.lock().expect("not poisoned").map(|t| t.elapsed());
        loop {
            let (reading, answer) = (since(&self.handed_over), since(&self.ended));
            match (reading, answer) {
                (Some(w), _) if w >= timeout => return Stall::Reading,
                (_, Some(w)) if w >= timeout => return Stall::Answer,
                (Some(w), _) | (None, Some(w)) => tokio::time::sleep(timeout - w).await,
                (None, None) => tokio::time::sleep(timeout).await,
            }
        }
    }
}

impl StreamedBody {
    /// `body` of exactly `len` bytes for a request, and what watches it.
    fn new(body: PartBody, len: u64) -> (StreamedBody, BodyWatch) {
        let watch = BodyWatch::default();
        let body = StreamedBody {
            body: Mutex::new(exact_len(body, len)),
            watch: watch.clone(),
        };
        (body, watch)
    }

    /// The same, as an SDK request's body.
    fn request_body(body: PartBody, len: u64) -> (SdkByteStream, BodyWatch) {
        let (body, watch) = StreamedBody::new(body, len);
        (SdkByteStream::from_body_1_x(body), watch)
    }
}

impl http_body::Body for StreamedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        use futures_util::StreamExt;
        let this = self.get_mut();
        // Asked for more: the connection took what came before.
        *this.watch.handed_over.lock().expect("not poisoned") = None;
        let body = this.body.get_mut().expect("not poisoned");
        match futures_util::ready!(body.poll_next_unpin(cx)) {
            Some(Ok(chunk)) => {
                // After the last chunk the client need not ask again: the wait for the
                // answer is watched instead.
                let slot = if body.remaining() > 0 {
                    &this.watch.handed_over
                } else {
                    &this.watch.ended
                };
                *slot.lock().expect("not poisoned") = Some(Instant::now());
                Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
            }
            Some(Err(e)) => {
                let shown = io::Error::new(e.kind(), e.to_string());
                *this.watch.failure.lock().expect("not poisoned") = Some(e);
                Poll::Ready(Some(Err(shown)))
            }
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let remaining = self.body.lock().expect("not poisoned").remaining();
        http_body::SizeHint::with_exact(remaining)
    }
}

/// A bucket the credentials can see, as ListBuckets reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketEntry {
    pub name: String,
    pub created: Option<SystemTime>,
}

/// Every bucket `opts`' credentials can see (ListBuckets, all pages).
pub async fn list_buckets(opts: &S3Options) -> Res<Vec<BucketEntry>> {
    let shown = "the account's buckets";
    let conn = connect(opts, shown).await?;
    let mut buckets = Vec::new();
    let mut token = None;
    loop {
        let page = conn
            .client
            .list_buckets()
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| map_err(Op::List, shown.to_string(), e))?;
        buckets.extend(page.buckets().iter().filter_map(|b| {
            Some(BucketEntry {
                name: b.name()?.to_string(),
                created: to_system_time(b.creation_date()),
            })
        }));
        match page.continuation_token().filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(buckets),
        }
    }
}

/// An SDK client for `opts`, and what the request paths need to know of its configuration.
struct Connection {
    client: Client,
    sdk: aws_config::SdkConfig,
    endpoint: Option<String>,
    region: String,
    r2: bool,
    path_style: bool,
    body_stall_timeout: Duration,
}

/// `shown` is where a configuration error is reported.
async fn connect(opts: &S3Options, shown: &str) -> Res<Connection> {
    let bad = |m: &str| StoreError::new(Op::Open, shown, ErrorKind::InvalidRequest).with_detail(m);
    let endpoint = match opts.endpoint.clone().or_else(S3Store::env_endpoint) {
        Some(e) => Some(e),
        None => env("R2_ACCOUNT_ID")
            .map(|a| r2_endpoint(&a))
            .transpose()
            .map_err(bad)?,
    };
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(bad("endpoint must start with http:// or https://"));
        }
    }
    let r2 = endpoint.as_deref().is_some_and(is_r2_endpoint);
    let path_style = match opts.path_style {
        Some(p) => p,
        None => match env("R2SEAL_PATH_STYLE") {
            Some(v) => parse_bool(&v).ok_or_else(|| bad("R2SEAL_PATH_STYLE must be 1 or 0"))?,
            None => endpoint.is_some() && !r2,
        },
    };

    // Only environment and profile sources: the default chains end by probing the EC2
    // instance metadata service, which only makes sense when talking to AWS itself.
    let region = match (&opts.region, r2) {
        (Some(r), _) => r.clone(),
        (None, true) => "auto".to_string(),
        (None, false) => {
            let mut profile_region = ProfileFileRegionProvider::builder();
            if let Some(p) = &opts.profile {
                profile_region = profile_region.profile_name(p);
            }
            RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
                .or_else(profile_region.build())
                .region()
                .await
                .map_or_else(|| "auto".to_string(), |r| r.to_string())
        }
    };
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.clone()));
    if let Some(p) = &opts.profile {
        loader = loader.profile_name(p);
    }
    match (&opts.credentials, &endpoint) {
        (Some(c), _) => {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.as_str(),
                c.session_token.as_ref().map(|t| t.to_string()),
                None,
                "r2seal",
            ));
        }
        (None, Some(_)) => {
            let mut profile_creds = ProfileFileCredentialsProvider::builder();
            if let Some(p) = &opts.profile {
                profile_creds = profile_creds.profile_name(p);
            }
            loader = loader.credentials_provider(
                CredentialsProviderChain::first_try(
                    "environment",
                    EnvironmentVariableCredentialsProvider::new(),
                )
                .or_else("profile", profile_creds.build()),
            );
        }
        // AWS itself: the full default chain (SSO-less), instance roles included.
        (None, None) => {}
    }
    let sdk = loader.load().await;
    let body_stall_timeout = opts.body_stall_timeout.unwrap_or(BODY_STALL_TIMEOUT);

    let mut conf = aws_sdk_s3::config::Builder::from(&sdk)
        .region(Region::new(region.clone()))
        .force_path_style(path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        // The SDK's check fails a request whose body moves no byte for its grace
        // period, 5 s by default: an upload whose source pauses (a gateway client on
        // a slow link, a stalled source GET), or whose server takes that long to
        // answer once the body ended. Given `BODY_STALL_TIMEOUT` instead, it remains
        // the backstop for bodies from memory; streamed bodies are watched more
        // precisely (`send_streamed`: only the server's stalls count).
        .stalled_stream_protection(
            StalledStreamProtectionConfig::enabled()
                .grace_period(body_stall_timeout.max(SDK_GRACE_PERIOD))
                .build(),
        )
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .build(),
        );
    if let Some(e) = &endpoint {
        conf = conf.endpoint_url(e);
    }
    conf = conf.endpoint_resolver(PerBucketEndpoints::default());
    let client = Client::from_conf(conf.build());
    Ok(Connection {
        client,
        sdk,
        endpoint,
        region,
        r2,
        path_style,
        body_stall_timeout,
    })
}

fn r2_endpoint(account: &str) -> Result<String, &'static str> {
    if account.is_empty() || !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("R2_ACCOUNT_ID must be alphanumeric");
    }
    Ok(format!("https://{account}{R2_HOST_SUFFIX}"))
}

fn to_system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

fn to_btree(m: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

fn to_hash(m: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(headers: &HeaderMap) -> u64 {
    header_str(headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A direct PUT's answer as the store's.
fn put_result(resp: &http::Response<hyper::body::Incoming>) -> PutResult {
    PutResult {
        etag: header_str(resp.headers(), "etag")
            .unwrap_or_default()
            .to_string(),
    }
}

/// What a GET or HEAD answer's headers say of the object (`size`: the whole object's).
fn object_info(key: &str, size: u64, headers: &HeaderMap) -> ObjectInfo {
    let text = |name| header_str(headers, name).map(str::to_string);
    let last_modified = header_str(headers, "last-modified")
        .and_then(|v| aws_sdk_s3::primitives::DateTime::from_str(v, DateTimeFormat::HttpDate).ok())
        .and_then(|t| SystemTime::try_from(t).ok());
    let metadata = headers
        .iter()
        .filter_map(|(k, v)| {
            let name = k.as_str().strip_prefix("x-amz-meta-")?;
            Some((name.to_string(), v.to_str().ok()?.to_string()))
        })
        .collect();
    ObjectInfo {
        meta: ObjectMeta {
            key: key.to_string(),
            size,
            etag: text("etag").unwrap_or_default(),
            last_modified,
        },
        content_type: text("content-type"),
        cache_control: text("cache-control"),
        metadata,
    }
}

/// Percent-encode a key for `x-amz-copy-source` (everything but unreserved and `/`).
fn encode_copy_source(bucket: &str, key: &str) -> String {
    let mut out = format!("{bucket}/");
    encode_key(&mut out, key);
    out
}

/// Classify an SDK error. `status`/`code` decide for service errors; transport failures
/// are retryable unless they are the caller's fault (no credentials, bad request).
fn map_err<E>(op: Op, location: String, err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (kind, retryable, detail) = match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            let message = se.err().message().unwrap_or("");
            service_error(op, status, code, message)
        }
        SdkError::TimeoutError(_) => (ErrorKind::Network, true, chain(&err)),
        SdkError::DispatchFailure(d) => {
            let detail = match d.as_connector_error() {
                Some(c) => connector_detail(c),
                None => chain(&err),
            };
            if has_credentials_error(&err) {
                (ErrorKind::InvalidCredentials, false, detail)
            } else if is_certificate_error(&err) {
                (
                    ErrorKind::Network,
                    false,
                    format!("endpoint refused: {detail}"),
                )
            } else if d.is_user() {
                (ErrorKind::InvalidRequest, false, detail)
            } else if d.is_io() || d.is_timeout() {
                (
                    ErrorKind::Network,
                    true,
                    format!("endpoint unreachable: {detail}"),
                )
            } else {
                (ErrorKind::Network, true, detail)
            }
        }
        // A response arrived but could not be parsed: typically a connection cut mid-body.
        SdkError::ResponseError(_) => (ErrorKind::Other, true, chain(&err)),
        SdkError::ConstructionFailure(_) => {
            let kind = if has_credentials_error(&err) {
                ErrorKind::InvalidCredentials
            } else {
                ErrorKind::InvalidRequest
            };
            (kind, false, chain(&err))
        }
        _ => (ErrorKind::Other, false, chain(&err)),
    };
    let e = StoreError::new(op, location, kind).with_retryable(retryable);
    let e = if detail.is_empty() {
        e
    } else {
        e.with_detail(detail)
    };
    e.with_source(err)
}

/// The cause of a failed dispatch without the SDK's layers around it ("dispatch failure:
/// io error: …"): the HTTP client's error, else the connector error's own cause.
fn connector_detail(c: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = c.source();
    while let Some(e) = cur {
        if let Some(http) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            return transport_detail(http);
        }
        cur = e.source();
    }
    c.source().map_or_else(|| c.to_string(), chain)
}

fn has_credentials_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<aws_credential_types::provider::error::CredentialsError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// An error answer's kind, whether a retry can help, and the detail to show: its
/// status, S3 error code and message (of both request paths).
pub(super) fn service_error(
    op: Op,
    status: u16,
    code: &str,
    message: &str,
) -> (ErrorKind, bool, String) {
    let (kind, retryable) = classify(op, status, code);
    let detail = match (code, message) {
        // "get s3://b/k: not found" says it all; keep codes that add something.
        ("" | "NoSuchKey" | "NotFound", _) if kind == ErrorKind::NotFound => String::new(),
        ("", "") => format!("HTTP {status}"),
        (c, "") => format!("{c} (HTTP {status})"),
        ("", m) => format!("HTTP {status}: {m}"),
        (c, m) => format!("{c} (HTTP {status}): {m}"),
    };
    (kind, retryable, detail)
}

pub(super) fn classify(op: Op, status: u16, code: &str) -> (ErrorKind, bool) {
    use ErrorKind::*;
    match (status, code) {
        (_, "NoSuchBucket") => (NoSuchBucket, false),
        (_, "NoSuchKey" | "NoSuchUpload") if op == Op::Put => (PreconditionFailed, false),
        (_, "NoSuchKey" | "NoSuchUpload") => (NotFound, false),
        // S3 answers `if_match` on a missing key with 404 NoSuchKey; normalize to 412.
        (404, _) if op == Op::Put => (PreconditionFailed, false),
        (404, _) => (NotFound, false),
        (412, _) | (_, "PreconditionFailed") => (PreconditionFailed, false),
        // A conditional write that raced another one on AWS: the other write won.
        (409, "ConditionalRequestConflict") => (PreconditionFailed, false),
        (416, _) | (_, "InvalidRange") => (RangeNotSatisfiable, false),
        (
            _,
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired",
        ) => (InvalidCredentials, false),
        // Garage and AWS say this when the client signs for the wrong region.
        (_, "AuthorizationHeaderMalformed") => (InvalidRequest, false),
        (401, _) => (InvalidCredentials, false),
        (403, "RequestTimeTooSkewed") => (InvalidRequest, false),
        (403, _) => (AccessDenied, false),
        (_, "RequestTimeout" | "SlowDown" | "InternalError" | "ServiceUnavailable") => {
            (Unavailable, true)
        }
        (429, _) => (Unavailable, true),
        (501, _) | (_, "NotImplemented") => (Unsupported, false),
        (500..=599, _) => (Unavailable, true),
        (400..=499, _) => (InvalidRequest, false),
        _ => (Other, false),
    }
}

#[async_trait]
impl Store for S3Store {
    fn url(&self) -> &str {
        &self.url
    }

    fn metadata_limit(&self) -> usize {
        self.metadata_limit
    }

    async fn put(&self, key: &str, body: Bytes, opts: &PutOptions) -> Res<PutResult> {
        let op = Op::Put;
        if let Some(direct) = &self.direct {
            let unsigned = self.unsigned_payload;
            let len = body.len() as u64;
            let payload = Payload::Bytes { body, unsigned };
            let resp = self.direct_put(direct, key, len, opts, payload).await?;
            return Ok(put_result(&resp));
        }
        let mut request = self
            .put_request(key, body.len() as u64, opts)?
            .body(SdkByteStream::from(body))
            .customize();
        if self.unsigned_payload {
            request = request.disable_payload_signing();
        }
        let out = request
            .send()
            .await
            .map_err(|e| map_err(op, self.loc(key), e))?;
        Ok(PutResult {
            etag: out.e_tag().unwrap_or_default().to_string(),
        })
    }

    async fn put_stream(
        &self,
        key: &str,
        len: u64,
        body: PartBody,
        opts: &PutOptions,
    ) -> Res<PutResult> {
        let op = Op::Put;
        if let Some(direct) = &self.direct {
            let (body, watch) = StreamedBody::new(body, len);
            let payload = Payload::Stream(http_body_util::BodyExt::boxed(body));
            let put = self.direct_put(direct, key, len, opts, payload);
            let resp = self.send_streamed(op, key, put, &watch).await?;
            return Ok(put_result(&resp));
        }
        let request = self.put_request(key, len, opts)?;
        let (body, watch) = StreamedBody::request_body(body, len);
        let send = self.sdk(op, key, request.body(body).send());
        let out = self.send_streamed(op, key, send, &watch).await?;
        Ok(PutResult {
            etag: out.e_tag().unwrap_or_default().to_string(),
        })
    }

    async fn get(&self, key: &str, range: Option<ByteRange>, opts: &GetOptions) -> Res<GetResult> {
        let op = Op::Get;
        let full = self.check(op, key)?;
        if let Some(r) = range {
            r.validate().map_err(|m| self.invalid(op, key, m))?;
        }
        if let Some(direct) = &self.direct {
            return self.direct_get(direct, key, &full, range, opts).await;
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .set_range(range.map(|r| r.to_header()))
            .set_if_match(opts.if_match.clone())
            .send()
            .await
            .map_err(|e| map_err(op, self.loc(key), e))?;
        let length = out.content_length().unwrap_or(0).max(0) as u64;
        let (served, size) = match out.content_range().and_then(parse_content_range) {
            Some((r, total)) => (Some(r), total),
            None => (None, length),
        };
        let info = ObjectInfo {
            meta: ObjectMeta {
                key: key.to_string(),
                size,
                etag: out.e_tag().unwrap_or_default().to_string(),
                last_modified: to_system_time(out.last_modified()),
            },
            content_type: out.content_type().map(str::to_string),
            cache_control: out.cache_control().map(str::to_string),
            metadata: to_btree(out.metadata()),
        };
        let loc = self.loc(key);
        let body = Box::pin(futures_util::stream::try_unfold(
            (out.body, loc),
            |(mut body, loc)| async move {
                match body.next().await {
                    None => Ok(None),
                    Some(Ok(chunk)) => Ok(Some((chunk, (body, loc)))),
                    Some(Err(e)) => Err(StoreError::new(Op::Get, loc, ErrorKind::Network)
                        .with_detail(chain(&e))
                        .with_source(e)),
                }
            },
        ));
        Ok(GetResult {
            info,
            range: served,
            body,
        })
    }

    async fn head(&self, key: &str) -> Res<ObjectInfo> {
        let op = Op::Head;
        let full = self.check(op, key)?;
        if let Some(direct) = &self.direct {
            let resp = direct
                .send(
                    op,
                    http::Method::HEAD,
                    &full,
                    HeaderMap::new(),
                    Payload::Empty,
                )
                .await
                .map_err(|f| f.into_store_error(op, self.loc(key)))?;
            let size = content_length(resp.headers());
            return Ok(object_info(key, size, resp.headers()));
        }
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| map_err(op, self.loc(key), e))?;
        Ok(ObjectInfo {
            meta: ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                etag: out.e_tag().unwrap_or_default().to_string(),
                last_modified: to_system_time(out.last_modified()),
            },
            content_type: out.content_type().map(str::to_string),
            cache_control: out.cache_control().map(str::to_string),
            metadata: to_btree(out.metadata()),
        })
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
        max_keys: Option<u32>,
    ) -> Res<ListPage> {
        self.list_from(prefix, delimiter, continuation, None, max_keys)
            .await
    }

    async fn list_after(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: &str,
        max_keys: Option<u32>,
    ) -> Res<ListPage> {
        let start = self.check(Op::List, start_after)?;
        let mut page = self
            .list_from(prefix, delimiter, None, Some(start), max_keys)
            .await?;
        // S3 rolls keys after a marker that is itself a common prefix up into that
        // prefix again; it was listed already (the default `list_after` drops it too).
        page.common_prefixes.retain(|p| p != start_after);
        Ok(page)
    }

    async fn delete(&self, key: &str) -> Res<()> {
        let op = Op::Delete;
        let full = self.check(op, key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| map_err(op, self.loc(key), e))?;
        Ok(())
    }

    async fn copy(&self, src_key: &str, dst_key: &str, opts: &CopyOptions) -> Res<PutResult> {
        let op = Op::Copy;
        let shown = format!("{} -> {dst_key}", self.loc(src_key));
        let bad = |m: &str| StoreError::new(op, &shown, ErrorKind::InvalidRequest).with_detail(m);
        let src = self.check(op, src_key)?;
        let dst = self.check(op, dst_key)?;
        let mut req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(dst)
            .copy_source(encode_copy_source(&self.bucket, &src))
            .set_copy_source_if_match(opts.if_match.clone());
        match &opts.replace_metadata {
            Some(r) => {
                check_headers(
                    r.content_type.as_deref(),
                    r.cache_control.as_deref(),
                    &r.metadata,
                )
                .map_err(bad)?;
                req = req
                    .metadata_directive(MetadataDirective::Replace)
                    .set_content_type(r.content_type.clone())
                    .set_cache_control(r.cache_control.clone())
                    .set_metadata(to_hash(&r.metadata));
            }
            // S3 refuses this; some servers (Garage) accept it as a no-op. Refuse everywhere.
            None if src_key == dst_key => {
                return Err(bad(
                    "copying an object onto itself requires replacing its metadata",
                ))
            }
            None => req = req.metadata_directive(MetadataDirective::Copy),
        }
        let out = req.send().await.map_err(|e| {
            let mut e = map_err(op, shown.clone(), e);
            if e.kind() == ErrorKind::NotFound {
                e = e.with_detail("no such source object");
            }
            e
        })?;
        let etag = out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .unwrap_or_default();
        Ok(PutResult {
            etag: etag.to_string(),
        })
    }

    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Res<String> {
        let op = Op::CreateMultipart;
        let full = self.check(op, key)?;
        check_put_options(opts).map_err(|m| self.invalid(op, key, m))?;
        if opts.if_match.is_some() || opts.if_none_match.is_some() {
            return Err(self.invalid(op, key, "conditions are not supported on multipart uploads"));
        }
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .set_content_type(opts.content_type.clone())
            .set_cache_control(opts.cache_control.clone())
            .set_metadata(to_hash(&opts.metadata))
            .send()
            .await
            .map_err(|e| map_err(op, self.loc(key), e))?;
        out.upload_id().map(str::to_string).ok_or_else(|| {
            StoreError::new(op, self.loc(key), ErrorKind::Other)
                .with_detail("no upload id in the response")
        })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> Res<UploadedPart> {
        let len = body.len() as u64;
        let mut request = self
            .part_request(key, upload_id, part_number, len)?
            .body(SdkByteStream::from(body))
            .customize();
        if self.unsigned_payload {
            request = request.disable_payload_signing();
        }
        let out = request
            .send()
            .await
            .map_err(|e| map_err(Op::UploadPart, self.loc(key), e))?;
        self.uploaded_part(key, part_number, out.e_tag())
    }

    async fn upload_part_stream(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        len: u64,
        body: PartBody,
    ) -> Res<UploadedPart> {
        let request = self.part_request(key, upload_id, part_number, len)?;
        let (body, watch) = StreamedBody::request_body(body, len);
        let out = self
            .send_streamed(
                Op::UploadPart,
                key,
                self.sdk(Op::UploadPart, key, request.body(body).send()),
                &watch,
            )
            .await?;
        self.uploaded_part(key, part_number, out.e_tag())
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source: &PartCopySource,
    ) -> Res<UploadedPart> {
        let op = Op::UploadPartCopy;
        let full = self.check(op, key)?;
        let src = self.check(op, &source.key)?;
        check_part_number(part_number).map_err(|m| self.invalid(op, key, m))?;
        check_copy_range(source.range).map_err(|m| self.invalid(op, key, m))?;
        let shown = format!("{} -> {key}", self.loc(&source.key));
        let out = self
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .part_number(part_number as i32)
            .copy_source(encode_copy_source(&self.bucket, &src))
            .set_copy_source_range(source.range.map(|(a, b)| format!("bytes={a}-{b}")))
            .set_copy_source_if_match(source.if_match.clone())
            .send()
            .await
            .map_err(|e| map_err(op, shown.clone(), e))?;
        let etag = out
            .copy_part_result()
            .and_then(|r| r.e_tag())
            .map(str::to_string)
            .ok_or_else(|| {
                StoreError::new(op, shown, ErrorKind::Other).with_detail("no ETag for the part")
            })?;
        Ok(UploadedPart { part_number, etag })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Res<PutResult> {
        self.complete(key, upload_id, parts, None).await
    }

    async fn complete_multipart_if_match(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        if_match: &str,
    ) -> Res<PutResult> {
        // Check first (Garage and moto ignore the header), then let servers that honour
        // If-Match on completion (R2, AWS S3) close the remaining window.
        super::check_current_etag(self, Op::CompleteMultipart, key, if_match).await?;
        self.complete(key, upload_id, parts, Some(if_match)).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Res<()> {
        let op = Op::AbortMultipart;
        let full = self.check(op, key)?;
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| map_err(op, self.loc(key), e))?;
        Ok(())
    }

    async fn list_multipart_uploads(&self, prefix: &str) -> Res<Vec<MultipartUpload>> {
        let op = Op::ListMultipartUploads;
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        // Bounded: a server that keeps answering "truncated" with the same markers would
        // otherwise spin forever.
        for _ in 0..10_000 {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(self.full(prefix))
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| map_err(op, self.loc(prefix), e))?;
            for u in page.uploads() {
                if let (Some(key), Some(id)) = (u.key().and_then(|k| self.strip(k)), u.upload_id())
                {
                    out.push(MultipartUpload {
                        key: key.to_string(),
                        upload_id: id.to_string(),
                        initiated: to_system_time(u.initiated()),
                    });
                }
            }
            let next = (
                page.next_key_marker().map(str::to_string),
                page.next_upload_id_marker().map(str::to_string),
            );
            if !page.is_truncated().unwrap_or(false)
                || next.0.is_none()
                || next == (key_marker.clone(), id_marker.clone())
            {
                return Ok(out);
            }
            (key_marker, id_marker) = next;
        }
        Err(StoreError::new(op, self.loc(prefix), ErrorKind::Other)
            .with_detail("too many pages of uploads"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_keys_decode_as_s3_encodes_them() {
        for (encoded, key) in [
            ("a/b.json", "a/b.json"),
            ("a+b%2Bc%25d", "a b+c%d"),
            ("soh%01x%0Aend", "soh\u{1}x\nend"),
            ("Z%C3%BCrich", "Zürich"),
        ] {
            assert_eq!(url_decode_form(encoded).as_deref(), Some(key), "{encoded}");
        }
        for bad in ["%", "%4", "%zz", "%C3", "%+1"] {
            assert_eq!(url_decode_form(bad), None, "{bad}");
        }
    }

    #[test]
    fn metadata_limits_follow_the_endpoint() {
        for (endpoint, limit) in [
            (None, AWS_METADATA_LIMIT),
            (
                Some("https://s3.eu-west-1.amazonaws.com"),
                AWS_METADATA_LIMIT,
            ),
            (
                Some("https://bucket.s3.us-east-1.AMAZONAWS.com."),
                AWS_METADATA_LIMIT,
            ),
            (
                Some("https://s3.cn-north-1.amazonaws.com.cn/path"),
                AWS_METADATA_LIMIT,
            ),
            (Some("https://acct.r2.cloudflarestorage.com"), 8192),
            (Some("http://127.0.0.1:3900"), 8192),
            (Some("https://amazonaws.com.example.org"), 8192),
        ] {
            assert_eq!(metadata_limit_of(endpoint), limit, "{endpoint:?}");
        }
    }

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzSECRETKEY";
    const TOKEN: &str = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN";

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let creds = S3Credentials::new("AKIAEXAMPLEKEYID", SECRET).with_session_token(TOKEN);
        let opts = S3Options {
            endpoint: Some("http://127.0.0.1:9".into()),
            credentials: Some(creds.clone()),
            ..Default::default()
        };
        let store = rt()
            .block_on(S3Store::new("bucket", "p", opts.clone()))
            .unwrap();
        for shown in [
            format!("{creds:?}"),
            format!("{opts:?}"),
            format!("{store:?}"),
            format!("{:#?}", opts),
        ] {
            assert!(!shown.contains(SECRET), "secret leaked: {shown}");
            assert!(!shown.contains(TOKEN), "token leaked: {shown}");
            assert!(
                !shown.contains("AKIAEXAMPLEKEYID"),
                "full key id shown: {shown}"
            );
        }
        assert!(format!("{creds:?}").contains("<redacted>"));
    }

    #[test]
    fn unreachable_endpoint_is_retryable_and_names_the_key() {
        let opts = S3Options {
            // Port 9 (discard) on loopback: nothing listens there in the test environment.
            endpoint: Some("http://127.0.0.1:9".into()),
            credentials: Some(S3Credentials::new("GKtest", SECRET)),
            ..Default::default()
        };
        let e = rt()
            .block_on(async {
                let store = S3Store::new("bucket", "pre", opts).await?;
                store.head("some/key").await
            })
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Network, "{e}");
        assert!(e.is_retryable());
        let shown = e.to_string();
        assert!(
            shown.starts_with(
                "head s3://bucket/pre/some/key: network failure (retryable): endpoint unreachable"
            ),
            "{shown}"
        );
        assert!(!shown.contains(SECRET) && !format!("{e:?}").contains(SECRET));
    }

    /// What a loopback S3 stand-in saw of one connection: the request's declared
    /// Content-Length and the body bytes that arrived before it ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Seen {
        declared: usize,
        received: usize,
    }

    /// A server that reads each request's body and answers 200 with an ETag when the
    /// body arrived whole and `answer` is set; otherwise it hangs up without a word.
    fn stand_in(answer: bool) -> (String, Arc<Mutex<Vec<Seen>>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                conn.set_read_timeout(Some(Duration::from_secs(15)))
                    .unwrap();
                let (head, declared) = read_head(&mut conn);
                if head.contains("expect: 100-continue") {
                    let _ = conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                let mut received = 0;
                let mut chunk = [0u8; 8192];
                while received < declared {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => received += n,
                    }
                }
                log.lock().unwrap().push(Seen { declared, received });
                if answer && received == declared {
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nETag: \"abc\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        });
        (url, seen)
    }

    /// A loopback server that hands each connection to `handle` on a thread of its own;
    /// returns its URL. A handler that answers once and hangs up must say
    /// `Connection: close`: otherwise the client may send its next request on the pooled
    /// connection just as it closes, and that attempt fails unseen by the handler.
    fn serve_each(handle: impl Fn(std::net::TcpStream) + Send + Sync + 'static) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = Arc::new(handle);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let handle = handle.clone();
                std::thread::spawn(move || handle(conn));
            }
        });
        url
    }

    /// The next request head on `conn` (lowercased) and its declared Content-Length.
    fn read_head(conn: &mut std::net::TcpStream) -> (String, usize) {
        use std::io::Read;
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let declared = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        (head, declared)
    }

    /// A store on `url` whose streamed requests stall out after `timeout`.
    fn stalling_store(rt: &tokio::runtime::Runtime, url: String, timeout: Duration) -> S3Store {
        let opts = S3Options {
            endpoint: Some(url),
            credentials: Some(S3Credentials::new("GKtest", SECRET)),
            body_stall_timeout: Some(timeout),
            ..Default::default()
        };
        rt.block_on(S3Store::new("bucket", "", opts)).unwrap()
    }

    /// What the stand-in saw, once it logged `n` connections or a second passed.
    fn settled(seen: &Mutex<Vec<Seen>>, n: usize) -> Vec<Seen> {
        for _ in 0..20 {
            if seen.lock().unwrap().len() >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        seen.lock().unwrap().clone()
    }

    fn stand_in_store(url: &str) -> S3Store {
        let opts = S3Options {
            endpoint: Some(url.to_string()),
            credentials: Some(S3Credentials::new("GKtest", SECRET)),
            ..Default::default()
        };
        rt().block_on(S3Store::new("bucket", "", opts)).unwrap()
    }

    /// `pieces` with a pause before each and before the end, so that what came before
    /// is on the wire when the next thing (an error, the end) happens.
    fn body_of(pieces: Vec<io::Result<Bytes>>) -> PartBody {
        use futures_util::StreamExt;
        let pause = || tokio::time::sleep(Duration::from_millis(50));
        futures_util::stream::iter(pieces.into_iter().map(Some).chain([None]))
            .then(move |item| async move {
                pause().await;
                item
            })
            .take_while(|item| std::future::ready(item.is_some()))
            .filter_map(std::future::ready)
            .boxed()
    }

    /// A streamed request of 3,000 bytes: a part, or a whole object.
    fn send_streamed(
        store: &S3Store,
        rt: &tokio::runtime::Runtime,
        part: bool,
        body: PartBody,
    ) -> Res<String> {
        rt.block_on(async {
            Ok(if part {
                store
                    .upload_part_stream("k", "u", 1, 3000, body)
                    .await?
                    .etag
            } else {
                store
                    .put_stream("k", 3000, body, &PutOptions::default())
                    .await?
                    .etag
            })
        })
    }

    #[test]
    fn a_streamed_body_that_fails_reaches_the_server_short_and_once() {
        for part in [true, false] {
            let (url, seen) = stand_in(true);
            let store = stand_in_store(&url);
            let rt = rt();
            let piece = || Ok(Bytes::from(vec![7u8; 1000]));
            let ok = send_streamed(&store, &rt, part, body_of(vec![piece(), piece(), piece()]))
                .expect("a whole body");
            assert_eq!(ok, "\"abc\"");
            let cases: [(&str, Vec<io::Result<Bytes>>); 3] = [
                (
                    "fails",
                    vec![piece(), Err(io::Error::other("client went away"))],
                ),
                ("ends short", vec![piece(), piece()]),
                ("runs long", vec![piece(), piece(), piece(), piece()]),
            ];
            for (what, pieces) in cases {
                let e = send_streamed(&store, &rt, part, body_of(pieces)).expect_err(what);
                assert_eq!(e.kind(), ErrorKind::InvalidRequest, "{what}: {e}");
                assert!(!e.is_retryable(), "{what}: {e}");
            }
            // Every failed body reached the server short of its Content-Length, once: a
            // stream is not sent again.
            let seen = settled(&seen, 4);
            assert_eq!(seen.len(), 4, "part {part}: {seen:?}");
            assert_eq!(
                seen[0],
                Seen {
                    declared: 3000,
                    received: 3000
                }
            );
            for s in &seen[1..] {
                assert!(
                    s.declared == 3000 && s.received < 3000,
                    "part {part}: {seen:?}"
                );
            }
        }
    }

    /// A server that stops reading a streamed body mid-way fails the request, retryably,
    /// instead of holding it (the body's input is quick here: only the server waits).
    #[test]
    fn a_server_that_stops_reading_fails_the_request() {
        use std::io::Read;
        let url = serve_each(|mut conn| {
            // The request head and a little of the body, then nothing.
            let mut buf = [0u8; 64 * 1024];
            let _ = conn.read(&mut buf);
            std::thread::sleep(Duration::from_secs(60));
        });
        let rt = rt();
        let store = stalling_store(&rt, url, Duration::from_secs(1));
        let len = 256 * 1024 * 1024;
        let body = || -> PartBody {
            use futures_util::StreamExt;
            futures_util::stream::iter((0..256).map(|_| Ok(Bytes::from(vec![3u8; 1 << 20]))))
                .boxed()
        };
        let (body, stream) = (body(), body());
        for (what, result) in [
            (
                "put",
                rt.block_on(async {
                    let opts = PutOptions::default();
                    let put = store.put_stream("k", len, body, &opts);
                    tokio::time::timeout(Duration::from_secs(30), put).await
                })
                .map(|r| r.map(drop)),
            ),
            (
                "part",
                rt.block_on(async {
                    let part = store.upload_part_stream("k", "u", 1, len, stream);
                    tokio::time::timeout(Duration::from_secs(30), part).await
                })
                .map(|r| r.map(drop)),
            ),
        ] {
            let e = result
                .unwrap_or_else(|_| panic!("{what}: still waiting after 30 s"))
                .expect_err(what);
            assert_eq!(e.kind(), ErrorKind::Network, "{what}: {e}");
            assert!(e.is_retryable(), "{what}: {e}");
            assert!(
                e.to_string().contains("stopped reading the body"),
                "{what}: {e}"
            );
        }
        // Waiting for the body's own input is not a stall.
        let (url, _) = stand_in(true);
        // (The pauses exceed the timeout; the timeout leaves a loaded machine's server
        // thread ample time to read what did arrive.)
        let store = stalling_store(&rt, url, Duration::from_secs(1));
        use futures_util::StreamExt;
        let slow = futures_util::stream::iter(0..3)
            .then(|_| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok(Bytes::from(vec![5u8; 1000]))
            })
            .boxed();
        rt.block_on(store.put_stream("k", 3000, slow, &PutOptions::default()))
            .expect("a slow source is not a stalled server");
    }

    /// A server that takes the whole body and then never answers fails the request too
    /// (once the body ended, the client is no longer asked for more: only the wait for
    /// the answer shows the stall).
    #[test]
    fn a_server_that_never_answers_fails_the_request() {
        use std::io::Read;
        let taken = Arc::new(Mutex::new(Vec::new()));
        let log = taken.clone();
        let url = serve_each(move |mut conn| {
            // The head, the whole body, then silence with the connection open.
            let (_, declared) = read_head(&mut conn);
            let mut body = vec![0u8; declared];
            let whole = conn.read_exact(&mut body).is_ok();
            log.lock().unwrap().push((declared, whole));
            std::thread::sleep(Duration::from_secs(60));
        });
        let rt = rt();
        let store = stalling_store(&rt, url, Duration::from_secs(1));
        for part in [false, true] {
            let piece = || Ok(Bytes::from(vec![9u8; 1000]));
            let body = body_of(vec![piece(), piece(), piece()]);
            let started = Instant::now();
            let e = rt
                .block_on(async {
                    let send = async {
                        if part {
                            store
                                .upload_part_stream("k", "u", 1, 3000, body)
                                .await
                                .map(drop)
                        } else {
                            let opts = PutOptions::default();
                            store.put_stream("k", 3000, body, &opts).await.map(drop)
                        }
                    };
                    tokio::time::timeout(Duration::from_secs(30), send).await
                })
                .unwrap_or_else(|_| panic!("part {part}: still waiting after 30 s"))
                .expect_err("no answer");
            assert_eq!(e.kind(), ErrorKind::Network, "part {part}: {e}");
            assert!(e.is_retryable(), "part {part}: {e}");
            assert!(e.to_string().contains("did not answer"), "part {part}: {e}");
            assert!(started.elapsed() < Duration::from_secs(20), "part {part}");
        }
        // The server had the whole body each time.
        let taken = taken.lock().unwrap().clone();
        assert_eq!(taken, [(3000, true), (3000, true)]);
    }

    /// A source that pauses for longer than the SDK's own stalled-stream grace period (5 s)
    /// is waited for: a client uploading through the gateway over a slow link, a source
    /// GET that stalls for a while. Only the server's stalls count (above).
    #[test]
    fn a_source_that_pauses_is_waited_for() {
        use futures_util::StreamExt;
        let (url, seen) = stand_in(true);
        let store = stand_in_store(&url);
        let rt = rt();
        for part in [false, true] {
            let paused = futures_util::stream::iter(0..3)
                .then(|i| async move {
                    if i == 1 {
                        tokio::time::sleep(Duration::from_millis(6500)).await;
                    }
                    Ok(Bytes::from(vec![5u8; 1000]))
                })
                .boxed();
            let etag = send_streamed(&store, &rt, part, paused)
                .unwrap_or_else(|e| panic!("part {part}: a paused source failed: {e}"));
            assert_eq!(etag, "\"abc\"");
        }
        assert_eq!(settled(&seen, 2).len(), 2);
    }

    #[test]
    fn a_streamed_part_is_not_retried_where_bytes_would_be() {
        let (url, seen) = stand_in(false);
        let store = stand_in_store(&url);
        let rt = rt();
        let e = rt
            .block_on(store.upload_part_stream(
                "k",
                "u",
                1,
                10,
                body_of(vec![Ok(Bytes::from(vec![1u8; 10]))]),
            ))
            .expect_err("no answer");
        assert!(e.is_retryable(), "a network failure: {e}");
        assert_eq!(settled(&seen, 2).len(), 1, "a stream was sent again");
        // The same part from memory: the SDK tries again on its own.
        rt.block_on(store.upload_part("k", "u", 1, Bytes::from(vec![1u8; 10])))
            .expect_err("no answer");
        assert!(settled(&seen, 3).len() >= 3, "{:?}", seen.lock().unwrap());
    }

    #[test]
    fn endpoints_and_addressing() {
        assert!(is_r2_endpoint("https://abc123.r2.cloudflarestorage.com"));
        for protected in [
            "https://abc123.r2.cloudflarestorage.com",
            "http://127.0.0.1:3900",
            "http://localhost:9000/",
            "http://[::1]:3900",
        ] {
            assert!(transport_protects_payload(protected), "{protected}");
        }
        for exposed in [
            "http://10.0.0.5:3900",
            "http://minio.internal",
            "http://[fe80::1]:80",
        ] {
            assert!(!transport_protects_payload(exposed), "{exposed}");
        }
        assert!(is_r2_endpoint(
            "https://abc123.eu.r2.cloudflarestorage.com/"
        ));
        assert!(!is_r2_endpoint("http://127.0.0.1:3900"));
        assert!(!is_r2_endpoint(
            "https://r2.cloudflarestorage.com.evil.example"
        ));
        assert_eq!(
            r2_endpoint("abc123").unwrap(),
            "https://abc123.r2.cloudflarestorage.com"
        );
        assert!(r2_endpoint("abc.evil.example/").is_err());
        let opts = S3Options {
            endpoint: Some("https://acct.r2.cloudflarestorage.com".into()),
            credentials: Some(S3Credentials::new("id", SECRET)),
            ..Default::default()
        };
        let s = rt()
            .block_on(S3Store::from_url("r2://bkt/some/prefix", opts))
            .unwrap();
        assert_eq!(
            (s.region.as_str(), s.path_style, s.prefix()),
            ("auto", false, "some/prefix/")
        );
        assert_eq!(s.url(), "r2://bkt/some/prefix/");
        let opts = S3Options {
            endpoint: Some("http://127.0.0.1:3900".into()),
            path_style: None,
            region: Some("garage".into()),
            credentials: Some(S3Credentials::new("id", SECRET)),
            ..Default::default()
        };
        if std::env::var_os("R2SEAL_PATH_STYLE").is_none() {
            let s = rt().block_on(S3Store::from_url("s3://bkt", opts)).unwrap();
            assert_eq!(
                (s.region.as_str(), s.path_style, s.prefix()),
                ("garage", true, "")
            );
        }
    }

    /// Both request paths for GET, HEAD and PUT (`sdk_only` false and true) against one
    /// scripted server: transient answers are retried (3 attempts, as the SDK's standard
    /// mode), final ones are not, and answers read the same.
    #[test]
    fn both_paths_retry_alike_and_read_answers_alike() {
        use std::io::Write;
        for sdk_only in [false, true] {
            let log = Arc::new(Mutex::new(Vec::<String>::new()));
            let seen = log.clone();
            let url = serve_each(move |mut conn| {
                let (head, declared) = read_head(&mut conn);
                let mut body = vec![0u8; declared];
                let _ = std::io::Read::read_exact(&mut conn, &mut body);
                let line = head.lines().next().unwrap_or_default().to_string();
                let n = {
                    let mut log = seen.lock().unwrap();
                    log.push(head.clone());
                    log.iter().filter(|h| h.starts_with(&line)).count()
                };
                let answer: String = if line.starts_with("head") && n < 3 {
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .into()
                } else if line.starts_with("head") {
                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"e1\"\r\nConnection: close\r\n\
                     Last-Modified: Wed, 25 Nov 2026 10:00:00 GMT\r\nContent-Type: text/plain\r\n\
                     x-amz-meta-mtime: 1700000000\r\n\r\n"
                        .into()
                } else {
                    let (status, code) = if line.starts_with("put") {
                        ("412 Precondition Failed", "PreconditionFailed")
                    } else {
                        ("500 Internal Server Error", "InternalError")
                    };
                    let xml =
                        format!("<Error><Code>{code}</Code><Message>m &amp; m</Message></Error>");
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{xml}",
                        xml.len()
                    )
                };
                let _ = conn.write_all(answer.as_bytes());
            });
            let rt = rt();
            let opts = S3Options {
                endpoint: Some(url),
                credentials: Some(S3Credentials::new("GKtest", SECRET)),
                sdk_only,
                ..Default::default()
            };
            let store = rt.block_on(S3Store::new("bucket", "pre", opts)).unwrap();
            assert_eq!(store.direct.is_some(), !sdk_only);
            let (head, put, get) = rt.block_on(async {
                let head = store.head("a b/ü").await.unwrap();
                let put = store
                    .put(
                        "k",
                        Bytes::from_static(b"hello"),
                        &PutOptions::create_only(),
                    )
                    .await
                    .unwrap_err();
                let get = store
                    .get("k", None, &GetOptions::default())
                    .await
                    .unwrap_err();
                (head, put, get)
            });
            let at = format!("sdk_only={sdk_only}");
            assert_eq!(head.meta.size, 5, "{at}");
            assert_eq!(head.meta.etag, "\"e1\"", "{at}");
            assert_eq!(head.content_type.as_deref(), Some("text/plain"), "{at}");
            assert_eq!(
                head.metadata.get("mtime").map(String::as_str),
                Some("1700000000")
            );
            let modified = head.meta.last_modified.unwrap();
            let secs = modified
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert_eq!(secs, 1_795_600_800, "{at}");
            assert_eq!(put.kind(), ErrorKind::PreconditionFailed, "{at}");
            assert!(!put.is_retryable(), "{at}");
            assert_eq!(get.kind(), ErrorKind::Unavailable, "{at}");
            assert!(get.is_retryable(), "{at}");
            assert!(
                get.to_string().ends_with("InternalError (HTTP 500): m & m"),
                "{at}: {get}"
            );

            let log = log.lock().unwrap();
            let count = |m: &str| log.iter().filter(|h| h.starts_with(m)).count();
            assert_eq!(
                (count("head"), count("put"), count("get")),
                (3, 1, 3),
                "{at}"
            );
            let head_req = log.iter().find(|h| h.starts_with("head")).unwrap();
            assert!(
                head_req.starts_with("head /bucket/pre/a%20b/%c3%bc "),
                "{at}: {head_req}"
            );
            assert!(head_req.contains("credential=gktest/"), "{at}");
            let put_req = log.iter().find(|h| h.starts_with("put")).unwrap();
            assert!(put_req.contains("if-none-match: *"), "{at}: {put_req}");
            // Loopback: the body is sent unsigned, as on the SDK path.
            assert!(
                put_req.contains("x-amz-content-sha256: unsigned-payload"),
                "{at}"
            );
        }
    }

    #[test]
    fn error_classification() {
        assert_eq!(
            classify(Op::Get, 404, "NoSuchKey"),
            (ErrorKind::NotFound, false)
        );
        assert_eq!(classify(Op::Head, 404, ""), (ErrorKind::NotFound, false));
        assert_eq!(
            classify(Op::Get, 404, "NoSuchBucket"),
            (ErrorKind::NoSuchBucket, false)
        );
        assert_eq!(
            classify(Op::Put, 404, "NoSuchKey"),
            (ErrorKind::PreconditionFailed, false)
        );
        assert_eq!(
            classify(Op::Put, 404, "NoSuchBucket"),
            (ErrorKind::NoSuchBucket, false)
        );
        assert_eq!(
            classify(Op::Put, 412, "PreconditionFailed"),
            (ErrorKind::PreconditionFailed, false)
        );
        assert_eq!(
            classify(Op::Put, 409, "ConditionalRequestConflict"),
            (ErrorKind::PreconditionFailed, false)
        );
        assert_eq!(
            classify(Op::Get, 416, "InvalidRange"),
            (ErrorKind::RangeNotSatisfiable, false)
        );
        assert_eq!(
            classify(Op::Get, 403, "SignatureDoesNotMatch"),
            (ErrorKind::InvalidCredentials, false)
        );
        assert_eq!(
            classify(Op::Get, 403, "AccessDenied"),
            (ErrorKind::AccessDenied, false)
        );
        assert_eq!(
            classify(Op::Get, 503, "SlowDown"),
            (ErrorKind::Unavailable, true)
        );
        assert_eq!(classify(Op::Get, 500, ""), (ErrorKind::Unavailable, true));
        assert_eq!(classify(Op::Get, 429, ""), (ErrorKind::Unavailable, true));
        assert_eq!(
            classify(Op::Get, 400, "RequestTimeout"),
            (ErrorKind::Unavailable, true)
        );
        assert_eq!(
            classify(Op::Put, 400, "EntityTooSmall"),
            (ErrorKind::InvalidRequest, false)
        );
        assert_eq!(
            classify(Op::Put, 501, "NotImplemented"),
            (ErrorKind::Unsupported, false)
        );
    }

    #[test]
    fn copy_sources_are_percent_encoded() {
        assert_eq!(
            encode_copy_source("b", "p/a b+c%.txt"),
            "b/p/a%20b%2Bc%25.txt"
        );
    }
}
