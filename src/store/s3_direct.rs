//! GetObject, HeadObject and PutObject sent over hyper and signed by `aws-sigv4`, without
//! aws-sdk-s3's generic request pipeline.
//!
//! These three carry nearly every request of a small-object job: `migrate` sends a HEAD,
//! a GET and a PUT per object, and the gateway a PUT and a HEAD per uploaded file. On
//! this project's 2-core machine the SDK spent 103–207 µs of client CPU on a HEAD and
//! 367–378 µs on a 4 KiB PUT, against 30–43 µs and 133–145 µs for the same requests sent
//! this way (`bench/README.md`). The rest of the API (list, copy, delete, multipart)
//! stays on the SDK, where the cost per request matters less.
//!
//! What is kept identical to the SDK, so that both paths reach the same server the same
//! way:
//! - the URL: S3's own endpoint rules, evaluated once per store (bucket, region,
//!   endpoint, addressing), and their auth scheme (signing name and region);
//! - the signature: the SDK's own signer crate with S3's settings (single percent
//!   encoding, no path normalization, `x-amz-content-sha256`);
//! - the credentials: the same provider chain, asked again before they expire;
//! - retries: the SDK's standard mode (3 attempts, exponential backoff with full jitter
//!   from 1 s, transient failures only), and none for a streamed body, which cannot be
//!   replayed;
//! - TLS: rustls with the platform's roots; a 10 s connect timeout.
//!
//! Where a store's configuration falls outside this (an auth scheme other than SigV4, no
//! credentials provider, no usable roots, an HTTP proxy in the environment), the store
//! keeps the SDK for everything.

use std::fmt;
use std::io;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sdk_s3::config::endpoint::{DefaultResolver, ResolveEndpoint};
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_smithy_types::Document;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::s3::{classify, service_error};
use super::s3_endpoints::store_params;
use super::wire::parse_error_body;
use super::{ErrorKind, Op, StoreError};

/// The body type every request is sent with: bytes from memory or a streamed body.
pub(crate) type RequestBody = BoxBody<Bytes, io::Error>;
type Http = Client<hyper_rustls::HttpsConnector<HttpConnector>, RequestBody>;

/// The SDK's standard retry mode: attempts per request, first backoff, and its cap.
const MAX_ATTEMPTS: u32 = 3;
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// Credentials are asked for again this long before they expire.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(300);
/// An error body longer than this is cut: only its `<Code>` and `<Message>` are read.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Proxy settings the SDK's HTTP client reads from the environment.
const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A request's body, as far as signing and retrying it are concerned.
pub(crate) enum Payload {
    /// None (GET, HEAD).
    Empty,
    /// From memory: replayable; hashed into the signature unless `unsigned`.
    Bytes { body: Bytes, unsigned: bool },
    /// Streamed with an exact length: sent once, `UNSIGNED-PAYLOAD`.
    Stream(RequestBody),
}

/// Why a request failed, before it is told as a [`StoreError`].
pub(crate) enum Failure {
    /// The server answered with an error status.
    Status {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer: connection refused or cut, TLS, a timeout.
    Transport { detail: String, connect: bool },
    /// The server's TLS certificate was refused: no retry can help.
    Certificate(String),
    /// The credentials provider failed.
    Credentials(String),
    /// The request could not be built (a header the HTTP layer refuses).
    Request(String),
}

impl Failure {
    pub(crate) fn into_store_error(self, op: Op, location: String) -> StoreError {
        match self {
            Failure::Status {
                status,
                code,
                message,
            } => {
                let (kind, retryable, detail) = service_error(op, status, &code, &message);
                let e = StoreError::new(op, location, kind).with_retryable(retryable);
                if detail.is_empty() {
                    e
                } else {
                    e.with_detail(detail)
                }
            }
            Failure::Transport { detail, connect } => {
                let detail = if connect {
                    format!("endpoint unreachable: {detail}")
                } else {
                    detail
                };
                StoreError::new(op, location, ErrorKind::Network)
                    .with_retryable(true)
                    .with_detail(detail)
            }
            Failure::Certificate(detail) => StoreError::new(op, location, ErrorKind::Network)
                .with_retryable(false)
                .with_detail(format!("endpoint refused: {detail}")),
            Failure::Credentials(detail) => {
                StoreError::new(op, location, ErrorKind::InvalidCredentials)
                    .with_retryable(false)
                    .with_detail(detail)
            }
            Failure::Request(detail) => StoreError::new(op, location, ErrorKind::InvalidRequest)
                .with_retryable(false)
                .with_detail(detail),
        }
    }

    fn is_transient(&self, op: Op) -> bool {
        match self {
            Failure::Status { status, code, .. } => classify(op, *status, code).1,
            Failure::Transport { .. } => true,
            Failure::Certificate(_) | Failure::Credentials(_) | Failure::Request(_) => false,
        }
    }
}

/// One bucket's GET/HEAD/PUT path.
pub(crate) struct Direct {
    http: Http,
    /// The bucket's URL from S3's endpoint rules, without a trailing `/`:
    /// `http://127.0.0.1:3900/bucket` (path-style) or `https://bucket.<host>`.
    base: String,
    /// `Host`, as the signature covers it: the URL's authority without a default port.
    host: HeaderValue,
    signing_name: String,
    signing_region: String,
    credentials: SharedCredentialsProvider,
    /// Async: one task asks the provider (a credential process, say) while the others
    /// wait for its answer.
    cached: tokio::sync::Mutex<Option<Credentials>>,
    /// How long a request from memory waits for the server's answer.
    answer_timeout: Duration,
}

impl fmt::Debug for Direct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Direct")
            .field("base", &self.base)
            .field("signing_region", &self.signing_region)
            .finish_non_exhaustive()
    }
}

/// The SigV4 parameters of an endpoint's first auth scheme, if it is plain SigV4.
fn sigv4_scheme(endpoint: &aws_smithy_types::endpoint::Endpoint) -> Option<(String, String)> {
    // Typed since aws-smithy-types 1.9; before that a property.
    let scheme = match endpoint.auth_schemes().first() {
        Some(s) => s.as_document(),
        None => match endpoint.properties().get("authSchemes") {
            Some(Document::Array(schemes)) => schemes.first()?.clone(),
            _ => return None,
        },
    };
    let Document::Object(scheme) = scheme else {
        return None;
    };
    let text = |k: &str| match scheme.get(k) {
        Some(Document::String(s)) => Some(s.clone()),
        _ => None,
    };
    // S3's rules always disable double encoding; anything else is not what we sign.
    let single_encoding = matches!(
        scheme.get("disableDoubleEncoding"),
        Some(Document::Bool(true))
    );
    (text("name").as_deref() == Some("sigv4") && single_encoding)
        .then(|| Some((text("signingName")?, text("signingRegion")?)))
        .flatten()
}

/// `Host` as the signer derives it: the URL's host, and its port unless the default.
fn host_of(uri: &http::Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let value = match uri.port_u16() {
        Some(p) if p != default => format!("{host}:{p}"),
        _ => host.to_string(),
    };
    HeaderValue::from_str(&value).ok()
}

/// Percent-encode a key into `out`: everything but unreserved characters and `/` (S3's
/// greedy label, as the SDK encodes the path; also the copy source's form).
pub(crate) fn encode_key(out: &mut String, key: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// An error and its sources on one line.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

/// Why a request to the server failed, on one line. For a failed connection the HTTP
/// client's own layer ("client error (Connect)") is left out: "endpoint unreachable"
/// already says that much, the cause ("dns error: …", "tcp connect error: …") is what
/// helps.
pub(crate) fn transport_detail(e: &hyper_util::client::legacy::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) if e.is_connect() => chain(cause),
        _ => chain(e),
    }
}

/// Whether `e` comes from a refused server certificate (unknown issuer, wrong name,
/// expired, ...), which no retry can mend. rustls's error sits inside an `io::Error`,
/// whose `source` skips the error it wraps, so an `io::Error` is opened instead.
pub(crate) fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    use rustls::Error as Tls;
    let refused = |e: &(dyn std::error::Error + 'static)| {
        matches!(
            e.downcast_ref::<Tls>(),
            Some(
                Tls::InvalidCertificate(_)
                    | Tls::NoCertificatesPresented
                    | Tls::UnsupportedNameType
            )
        )
    };
    let mut cur = Some(e);
    while let Some(err) = cur {
        if refused(err) {
            return true;
        }
        cur = match err.downcast_ref::<io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|i| i as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

/// A uniform fraction in [0, 1) for backoff jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match getrandom::getrandom(&mut b) {
        Ok(()) => u32::from_le_bytes(b) as f64 / (u32::MAX as f64 + 1.0),
        Err(_) => 0.5,
    }
}

/// The backoff before attempt `attempt + 1` (the first retry has `attempt == 1`).
fn backoff(attempt: u32) -> Duration {
    let cap = INITIAL_BACKOFF
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(MAX_BACKOFF);
    cap.mul_f64(jitter())
}

impl Direct {
    /// The direct path for `bucket`, or `None` where the store keeps the SDK for all
    /// requests (see the module docs).
    pub(crate) fn new(
        bucket: &str,
        region: &str,
        endpoint: Option<&str>,
        path_style: bool,
        credentials: Option<SharedCredentialsProvider>,
        answer_timeout: Duration,
    ) -> Option<Direct> {
        // The SDK's client honours these (since behavior version 2025-08-07); this path
        // has no proxy support, so it steps aside.
        if PROXY_VARIABLES
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
        {
            return None;
        }
        let params = store_params(bucket, region, endpoint, path_style).ok()?;
        let resolved = futures_util::FutureExt::now_or_never(ResolveEndpoint::resolve_endpoint(
            &DefaultResolver::new(),
            &params,
        ))?
        .ok()?;
        let (signing_name, signing_region) = sigv4_scheme(&resolved)?;
        let base = resolved.url().trim_end_matches('/').to_string();
        let host = host_of(&base.parse().ok()?)?;

        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .ok()?
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new()).build(tls);
        Some(Direct {
            http,
            base,
            host,
            signing_name,
            signing_region,
            credentials: credentials?,
            cached: tokio::sync::Mutex::new(None),
            answer_timeout,
        })
    }

    /// Current credentials: cached until `CREDENTIALS_MARGIN` before they expire.
    async fn credentials(&self) -> Result<Credentials, Failure> {
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|t| t > SystemTime::now() + CREDENTIALS_MARGIN)
        };
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| fresh(c)) {
            return Ok(c.clone());
        }
        let c = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| Failure::Credentials(chain(&e)))?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// The signed request for one attempt.
    async fn request(
        &self,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
        payload: &mut Payload,
    ) -> Result<http::Request<RequestBody>, Failure> {
        let creds = self.credentials().await?;
        let identity = creds.into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.signing_region)
            .name(&self.signing_name)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| Failure::Request(e.to_string()))?
            .into();

        let (signable_body, body) = match payload {
            Payload::Empty => (
                SignableBody::Precomputed(EMPTY_SHA256.into()),
                http_body_util::Empty::new().map_err(|e| match e {}).boxed(),
            ),
            Payload::Bytes { body, unsigned } => (
                if *unsigned {
                    SignableBody::UnsignedPayload
                } else {
                    SignableBody::Bytes(body)
                },
                http_body_util::Full::new(body.clone())
                    .map_err(|e| match e {})
                    .boxed(),
            ),
            Payload::Stream(stream) => (
                SignableBody::UnsignedPayload,
                std::mem::replace(
                    stream,
                    http_body_util::Empty::new().map_err(|e| match e {}).boxed(),
                ),
            ),
        };
        let mut shown = Vec::with_capacity(headers.len() + 1);
        shown.push(("host", self.host.to_str().unwrap_or_default()));
        for (k, v) in headers {
            let v = v
                .to_str()
                .map_err(|_| Failure::Request(format!("header {k} is not visible ASCII")))?;
            shown.push((k.as_str(), v));
        }
        let signable = SignableRequest::new(method.as_str(), url, shown.into_iter(), signable_body)
            .map_err(|e| Failure::Request(chain(&e)))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| Failure::Request(chain(&e)))?
            .into_parts();

        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .body(body)
            .map_err(|e| Failure::Request(chain(&e)))?;
        *req.headers_mut() = headers.clone();
        req.headers_mut()
            .insert(http::header::HOST, self.host.clone());
        req.headers_mut().insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("r2seal/", env!("CARGO_PKG_VERSION"))),
        );
        instructions.apply_to_request_http1x(&mut req);
        Ok(req)
    }

    /// Sends a request for the object at `full_key` (prefix included) and returns a
    /// successful answer; error answers and transport failures become a [`Failure`],
    /// after the standard retries where the body can be sent again.
    pub(crate) async fn send(
        &self,
        op: Op,
        method: Method,
        full_key: &str,
        headers: HeaderMap,
        mut payload: Payload,
    ) -> Result<http::Response<hyper::body::Incoming>, Failure> {
        let mut url = String::with_capacity(self.base.len() + full_key.len() + 8);
        url.push_str(&self.base);
        url.push('/');
        encode_key(&mut url, full_key);
        let replayable = !matches!(payload, Payload::Stream(_));
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(&method, &url, &headers, &mut payload).await {
                Ok(resp) => return Ok(resp),
                Err(f) => f,
            };
            if !(replayable && attempt < MAX_ATTEMPTS && failure.is_transient(op)) {
                return Err(failure);
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
        payload: &mut Payload,
    ) -> Result<http::Response<hyper::body::Incoming>, Failure> {
        let streamed = matches!(payload, Payload::Stream(_));
        let req = self.request(method, url, headers, payload).await?;
        let answer = self.http.request(req);
        let resp = if streamed {
            // The caller watches a streamed body and its answer (`send_streamed`).
            answer.await
        } else {
            match tokio::time::timeout(self.answer_timeout, answer).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Failure::Transport {
                        detail: format!("no answer within {} s", self.answer_timeout.as_secs_f32()),
                        connect: false,
                    })
                }
            }
        };
        let resp = resp.map_err(|e| {
            if is_certificate_error(&e) {
                Failure::Certificate(chain(&e))
            } else {
                Failure::Transport {
                    connect: e.is_connect(),
                    detail: transport_detail(&e),
                }
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        Err(self.error_answer(method, status, resp).await)
    }

    /// An error answer's status with the `<Code>` and `<Message>` of its body.
    async fn error_answer(
        &self,
        method: &Method,
        status: StatusCode,
        resp: http::Response<hyper::body::Incoming>,
    ) -> Failure {
        let mut body = Vec::new();
        if method != Method::HEAD {
            let mut incoming = resp.into_body();
            let read = async {
                while let Some(frame) = incoming.frame().await {
                    let Ok(frame) = frame else { break };
                    if let Some(data) = frame.data_ref() {
                        body.extend_from_slice(data);
                        if body.len() > MAX_ERROR_BODY {
                            break;
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(self.answer_timeout, read).await;
        }
        let (code, message) = parse_error_body(&body);
        Failure::Status {
            status: status.as_u16(),
            code,
            message,
        }
    }
}

/// Sets header `name` to `value` if it is given.
pub(crate) fn set_header(
    headers: &mut HeaderMap,
    name: HeaderName,
    value: Option<&str>,
) -> Result<(), Failure> {
    if let Some(v) = value {
        let v = HeaderValue::from_str(v)
            .map_err(|_| Failure::Request(format!("header {name} is not a valid value")))?;
        headers.insert(name, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_like_the_sdks_greedy_label() {
        let mut s = String::new();
        encode_key(&mut s, "a b/ü/x+y?z=1&%~._-");
        assert_eq!(s, "a%20b/%C3%BC/x%2By%3Fz%3D1%26%25~._-");
    }

    #[test]
    fn refused_certificates_are_found_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let handshake = io::Error::new(io::ErrorKind::InvalidData, tls);
        // As aws-smithy-http-client nests it: an io::Error around the handshake's.
        let nested = io::Error::other(handshake);
        assert!(is_certificate_error(&nested));
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        assert!(!is_certificate_error(&io::Error::other(refused)));
        let other_tls = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert!(!is_certificate_error(&other_tls));
    }

    #[test]
    fn host_drops_only_default_ports() {
        let h = |u: &str| host_of(&u.parse().unwrap()).unwrap();
        assert_eq!(h("http://127.0.0.1:3900/b"), "127.0.0.1:3900");
        assert_eq!(h("http://example.com:80/b"), "example.com");
        assert_eq!(h("https://b.example.com:443"), "b.example.com");
        assert_eq!(h("https://b.example.com:8443"), "b.example.com:8443");
    }

    #[test]
    fn backoff_is_jittered_below_a_doubling_cap() {
        for attempt in 1..6 {
            let cap = INITIAL_BACKOFF * (1 << (attempt - 1));
            for _ in 0..50 {
                assert!(backoff(attempt) < cap.min(MAX_BACKOFF));
            }
        }
        assert!(backoff(40) < MAX_BACKOFF);
    }

    #[test]
    fn endpoints_resolve_to_path_style_or_virtual_hosts() {
        let creds = SharedCredentialsProvider::new(Credentials::new("a", "b", None, None, "t"));
        let t = Duration::from_secs(1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let d = |endpoint: Option<&str>, path_style| {
            Direct::new("bkt", "auto", endpoint, path_style, Some(creds.clone()), t)
        };
        let garage = d(Some("http://127.0.0.1:3900"), true).unwrap();
        assert_eq!(garage.base, "http://127.0.0.1:3900/bkt");
        assert_eq!(garage.host, "127.0.0.1:3900");
        assert_eq!(
            (garage.signing_name.as_str(), garage.signing_region.as_str()),
            ("s3", "auto")
        );
        let r2 = d(Some("https://acct.r2.cloudflarestorage.com"), false).unwrap();
        assert_eq!(r2.base, "https://bkt.acct.r2.cloudflarestorage.com");
        let aws = Direct::new("bkt", "eu-west-1", None, false, Some(creds.clone()), t).unwrap();
        assert_eq!(aws.base, "https://bkt.s3.eu-west-1.amazonaws.com");
        assert_eq!(aws.signing_region, "eu-west-1");
        // No credentials provider: the SDK keeps every request.
        assert!(Direct::new("bkt", "auto", Some("http://h"), true, None, t).is_none());
    }
}
