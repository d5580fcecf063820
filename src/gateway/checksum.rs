//! Client checksums (Content-MD5, `x-amz-checksum-*` in headers or aws-chunked trailers)
//! verified against the plaintext as it streams through. They are never forwarded: the
//! upstream sees ciphertext, which they do not describe.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

use base64::prelude::{Engine, BASE64_STANDARD};
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use md5::{Digest, Md5};
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::StreamingBlob;
use s3s::TrailingHeaders;

/// The checksums a request declared (header values, base64 as on the wire).
#[derive(Debug, Default, Clone)]
pub(crate) struct Declared {
    pub content_md5: Option<String>,
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub crc64nvme: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    /// Names announced in `x-amz-trailer` (lowercase).
    pub trailer: Vec<String>,
}

const ALGORITHMS: [&str; 5] = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

impl Declared {
    fn slot(&mut self, algorithm: &str) -> &mut Option<String> {
        match algorithm {
            "crc32" => &mut self.crc32,
            "crc32c" => &mut self.crc32c,
            "crc64nvme" => &mut self.crc64nvme,
            "sha1" => &mut self.sha1,
            _ => &mut self.sha256,
        }
    }

    fn get(&self, algorithm: &str) -> &Option<String> {
        match algorithm {
            "crc32" => &self.crc32,
            "crc32c" => &self.crc32c,
            "crc64nvme" => &self.crc64nvme,
            "sha1" => &self.sha1,
            _ => &self.sha256,
        }
    }

    fn wants(&self, algorithm: &str) -> bool {
        self.get(algorithm).is_some()
            || self
                .trailer
                .iter()
                .any(|t| t.strip_prefix("x-amz-checksum-") == Some(algorithm))
    }

    fn hasher(&self) -> ChecksumHasher {
        use s3s::crypto::{Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
        ChecksumHasher {
            crc32: self.wants("crc32").then(Crc32::new),
            crc32c: self.wants("crc32c").then(Crc32c::new),
            sha1: self.wants("sha1").then(Sha1::new),
            sha256: self.wants("sha256").then(Sha256::new),
            crc64nvme: self.wants("crc64nvme").then(Crc64Nvme::new),
        }
    }
}

/// A declared checksum did not match the plaintext (S3's `BadDigest`).
#[derive(Debug)]
pub(crate) struct DigestMismatch(pub &'static str);

impl fmt::Display for DigestMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} you specified did not match the calculated checksum",
            self.0
        )
    }
}

impl std::error::Error for DigestMismatch {}

/// The MD5 of a body that passed every check, once the body ended.
pub(crate) type Md5Slot = Arc<Mutex<Option<[u8; 16]>>>;

struct State {
    body: StreamingBlob,
    declared: Declared,
    md5: Md5,
    hasher: Option<ChecksumHasher>,
    trailers: Option<TrailingHeaders>,
    slot: Md5Slot,
    done: bool,
}

fn err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::other(e)
}

impl State {
    fn finish(&mut self) -> Result<[u8; 16], io::Error> {
        let md5: [u8; 16] = std::mem::take(&mut self.md5).finalize().into();
        if let Some(want) = &self.declared.content_md5 {
            if BASE64_STANDARD.decode(want.trim()).ok().as_deref() != Some(&md5[..]) {
                return Err(err(DigestMismatch("Content-MD5")));
            }
        }
        let mut declared = self.declared.clone();
        if let Some(trailers) = self.trailers.as_ref().and_then(TrailingHeaders::take) {
            for a in ALGORITHMS {
                if let Some(v) = trailers.get(format!("x-amz-checksum-{a}")) {
                    let v = v.to_str().map_err(err)?.to_string();
                    *declared.slot(a) = Some(v);
                }
            }
        }
        let got = self.hasher.take().map(ChecksumHasher::finalize);
        if let Some(got) = got {
            let pairs = [
                ("CRC32", &declared.crc32, &got.checksum_crc32),
                ("CRC32C", &declared.crc32c, &got.checksum_crc32c),
                ("CRC64NVME", &declared.crc64nvme, &got.checksum_crc64nvme),
                ("SHA1", &declared.sha1, &got.checksum_sha1),
                ("SHA256", &declared.sha256, &got.checksum_sha256),
            ];
            for (name, want, got) in pairs {
                if let Some(want) = want {
                    if got.as_deref() != Some(want.trim()) {
                        return Err(err(DigestMismatch(name)));
                    }
                }
            }
        }
        Ok(md5)
    }
}

/// The request body as plaintext chunks, checked against `declared` at its end: the
/// stream ends with an error (a [`DigestMismatch`] inside an `io::Error`) instead of
/// `None` if a checksum does not match, so nothing built from it is committed.
pub(crate) fn verified(
    body: StreamingBlob,
    declared: Declared,
    trailers: Option<TrailingHeaders>,
) -> (BoxStream<'static, io::Result<Bytes>>, Md5Slot) {
    let slot: Md5Slot = Arc::new(Mutex::new(None));
    let hasher = declared.hasher();
    let state = State {
        body,
        declared,
        md5: Md5::new(),
        hasher: Some(hasher),
        trailers,
        slot: slot.clone(),
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        match st.body.next().await {
            Some(Ok(chunk)) => {
                st.md5.update(&chunk);
                if let Some(h) = st.hasher.as_mut() {
                    h.update(&chunk);
                }
                Some((Ok(chunk), st))
            }
            Some(Err(e)) => {
                st.done = true;
                Some((Err(err(e.to_string())), st))
            }
            None => {
                st.done = true;
                match st.finish() {
                    Ok(md5) => {
                        *st.slot.lock().expect("not poisoned") = Some(md5);
                        None
                    }
                    Err(e) => Some((Err(e), st)),
                }
            }
        }
    });
    (stream.boxed(), slot)
}

/// The `DigestMismatch` inside an error chain, if any.
pub(crate) fn digest_mismatch(e: &io::Error) -> Option<&DigestMismatch> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<DigestMismatch>())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
