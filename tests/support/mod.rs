//! Shared by the integration suites that run against real stores (`sealed_bucket`,
//! `rotate`, `bucket_names`, `jobs`): the runtime, test data, the S3 servers
//! `.ci/services.sh` starts, a [`Watched`] store wrapper with its per-case [`Harness`],
//! and the `suite!` macro that instantiates the cases per backend. Each suite uses a
//! subset, hence `dead_code` allowances.
#![allow(dead_code, unused_macros)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::stream::StreamExt;
use r2seal::store::fs::FsStore;
use r2seal::store::{
    ByteRange, Bytes, CopyOptions, ErrorKind, GetOptions, GetResult, ListPage, MultipartUpload,
    ObjectInfo, Op, PartBody, PartCopySource, PutOptions, PutResult, Store, StoreError,
    UploadedPart,
};

/// A current-thread runtime: the crate enables no more of tokio than the store needs.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Two worker threads, for cases that need tasks to run while another blocks.
pub fn rt_multi() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Deterministic bytes that differ at every 64 KiB chunk boundary (so a moved chunk
/// cannot pass for another).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_mul(7).wrapping_add(seed) ^ ((i >> 16) as u8))
        .collect()
}

/// An object's info and stored bytes, as they are (no opening).
pub async fn raw(store: &dyn Store, key: &str) -> (ObjectInfo, Vec<u8>) {
    let got = store
        .get(key, None, &GetOptions::default())
        .await
        .expect("raw get");
    let info = got.info.clone();
    (info, got.bytes().await.expect("raw body").to_vec())
}

/// A fresh file:// store in a temp dir, kept alive by the returned guard.
pub fn fs_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStore::new(dir.path()).expect("fs store");
    (Arc::new(store), dir)
}

/// The servers `.ci/services.sh` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// Garage: real S3, ignores If-Match / If-None-Match on PUT.
    Garage,
    /// moto: enforces conditional writes.
    Cond,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(name: &str) -> String {
    var(name).unwrap_or_else(|| panic!("{name} must be set when its S3 endpoint is"))
}

/// Unique per test process: pid plus start time, so reruns and parallel runs never see
/// each other's objects.
pub fn run_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{}-{}", std::process::id(), nanos)
    })
}

/// `<suite>/<run id>/<case>/`: a prefix no other run or case writes under.
pub fn fresh_prefix(suite: &str, case: &str) -> String {
    format!("{suite}/{}/{case}/", run_id())
}

/// A server's endpoint, bucket and credentials, as `.ci/services.sh` exports them.
#[derive(Debug, Clone)]
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

impl S3Env {
    /// Without the server's variables: a loud SKIPPED line naming `case` and `None` in a
    /// local run, a panic under `CI=true` (CI must never skip).
    pub fn get(server: Server, case: &str) -> Option<S3Env> {
        let (endpoint_var, bucket_var) = match server {
            Server::Garage => ("R2SEAL_TEST_S3_ENDPOINT", "R2SEAL_TEST_S3_BUCKET"),
            Server::Cond => ("R2SEAL_TEST_S3_COND_ENDPOINT", "R2SEAL_TEST_S3_COND_BUCKET"),
        };
        let Some(endpoint) = var(endpoint_var) else {
            if var("CI").as_deref() == Some("true") {
                panic!("{endpoint_var} is not set and CI=true: {case} needs its server (source .ci/services.sh)");
            }
            eprintln!(
                "\n*** SKIPPED: no S3 server configured (set {endpoint_var}) — {case} did not run ***"
            );
            return None;
        };
        let own_keys = var("R2SEAL_TEST_S3_COND_ACCESS_KEY_ID").filter(|_| server == Server::Cond);
        let (access_key_id, secret_access_key) = match own_keys {
            Some(id) => (id, required("R2SEAL_TEST_S3_COND_SECRET_ACCESS_KEY")),
            None => (
                required("AWS_ACCESS_KEY_ID"),
                required("AWS_SECRET_ACCESS_KEY"),
            ),
        };
        Some(S3Env {
            endpoint,
            bucket: required(bucket_var),
            access_key_id,
            secret_access_key,
            region: var("AWS_REGION").unwrap_or_else(|| "auto".into()),
        })
    }

    /// An S3 store on this server's bucket, under `prefix` (`""`: the bucket's root).
    #[cfg(feature = "s3")]
    pub async fn store(&self, prefix: &str) -> Arc<dyn Store> {
        use r2seal::store::s3::{S3Credentials, S3Options, S3Store};
        let opts = S3Options {
            endpoint: Some(self.endpoint.clone()),
            region: Some(self.region.clone()),
            credentials: Some(S3Credentials::new(
                self.access_key_id.clone(),
                self.secret_access_key.clone(),
            )),
            ..Default::default()
        };
        let store = S3Store::new(&self.bucket, prefix, opts)
            .await
            .expect("S3 store");
        assert!(store.url().ends_with(prefix), "{}", store.url());
        Arc::new(store)
    }
}

/// An S3 store on `server` under [`fresh_prefix`]`(suite, case)`, or `None` when the
/// server is not configured (see [`S3Env::get`]).
#[cfg(feature = "s3")]
pub async fn s3_store(server: Server, suite: &str, case: &str) -> Option<Arc<dyn Store>> {
    let env = S3Env::get(server, &format!("{suite}::{case}"))?;
    Some(env.store(&fresh_prefix(suite, case)).await)
}

/// Abort every unfinished upload and delete every object in `store` (best effort).
pub async fn clear(store: &dyn Store) {
    if let Ok(ups) = store.list_multipart_uploads("").await {
        for u in ups {
            let _ = store.abort_multipart(&u.key, &u.upload_id).await;
        }
    }
    let mut token = None;
    loop {
        let Ok(page) = store.list("", None, token, None).await else {
            return;
        };
        for o in page.objects {
            let _ = store.delete(&o.key).await;
        }
        match page.next_continuation {
            Some(t) => token = Some(t),
            None => return,
        }
    }
}

/// `suite!(backend, make_harness, [case, ...])`: one `#[test]` per case in `mod backend`,
/// running `cases::case(&harness)` on the suite's `rt()` (in scope where the macro is
/// invoked) and then `harness.cleanup()`. `make_harness`
/// takes the test's name and returns `None` when the backend is skipped.
macro_rules! suite {
    ($backend:ident, $make:path, [$($case:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[test]
                fn $case() {
                    rt().block_on(async {
                        let Some(h) = $make(concat!(stringify!($backend), "-", stringify!($case))).await else {
                            return;
                        };
                        cases::$case(&h).await;
                        h.cleanup().await;
                    })
                }
            )*
        }
    };
}

// ---------------------------------------------------------------------------------------
// A store that watches what goes over the wire, and can play "someone else".

/// One call a [`Watched`] store forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Put {
        key: String,
        len: usize,
    },
    Get {
        key: String,
        range: Option<ByteRange>,
    },
    Head {
        key: String,
    },
    List,
    Delete {
        key: String,
    },
    Copy {
        src: String,
        dst: String,
    },
    CreateMultipart {
        key: String,
    },
    UploadPart {
        len: usize,
    },
    UploadPartCopy,
    /// `complete_multipart`, conditional or not.
    Complete,
    Abort,
    ListUploads,
}

impl Call {
    /// Whether the call changes what the store holds (aborts only discard parts).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Call::Put { .. }
                | Call::Delete { .. }
                | Call::Copy { .. }
                | Call::CreateMultipart { .. }
                | Call::UploadPart { .. }
                | Call::UploadPartCopy
                | Call::Complete
        )
    }
}

/// What "someone else" does to the object a write of ours (put, copy, completed upload)
/// is about to replace.
#[derive(Debug, Clone)]
pub enum Interfere {
    /// Overwrite the key just before our next write of it reaches the store.
    Before(String),
    /// Overwrite the key just after our next write of it succeeded.
    After(String),
    /// Overwrite whatever key we write, just before each of our next `n` writes.
    BeforeEach(u32),
    /// Delete whatever key we write, just before each of our next `n` writes.
    DeleteBeforeEach(u32),
    /// Overwrite the key just before our next GET of it reaches the store (after a HEAD
    /// of ours, say).
    BeforeGet(String),
    /// Cut each of our next `gets` GET bodies after `after` bytes with a retryable
    /// network error (a dropped connection mid-body).
    CutBodies { gets: u32, after: u64 },
}

/// Forwards every [`Store`] method to `inner`, logging each call, counting the body bytes
/// that pass through the client, and carrying out [`Interfere`] orders.
#[derive(Debug)]
pub struct Watched {
    pub inner: Arc<dyn Store>,
    calls: Mutex<Vec<Call>>,
    /// GET body bytes received (counted as the stream is read).
    down: Arc<AtomicU64>,
    /// PUT and part body bytes sent.
    up: Arc<AtomicU64>,
    interfere: Mutex<Option<Interfere>>,
    /// The last body "someone else" wrote to each key.
    their_writes: Mutex<BTreeMap<String, Bytes>>,
    /// GETs of this key wait this long before they are forwarded (see `slow_gets`).
    slow_get: Mutex<Option<(String, std::time::Duration)>>,
    /// A smaller user-metadata limit than the inner store's (AWS's 2 KB, say).
    metadata_limit: Mutex<Option<usize>>,
}

impl Watched {
    pub fn new(inner: Arc<dyn Store>) -> Watched {
        Watched {
            inner,
            calls: Mutex::default(),
            down: Arc::default(),
            up: Arc::default(),
            interfere: Mutex::new(None),
            their_writes: Mutex::default(),
            slow_get: Mutex::default(),
            metadata_limit: Mutex::default(),
        }
    }

    /// From now on, report `limit` as the store's user-metadata limit (`None`: the inner
    /// store's).
    pub fn limit_metadata(&self, limit: Option<usize>) {
        *self.metadata_limit.lock().unwrap() = limit;
    }

    /// Every later GET of `key` waits `delay` first: callers that start together are all
    /// in flight at once however fast the store answers.
    pub fn slow_gets(&self, key: &str, delay: std::time::Duration) {
        *self.slow_get.lock().unwrap() = Some((key.to_string(), delay));
    }

    /// The calls since the last `take` or `reset`.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    /// Forget the calls and the byte counts.
    pub fn reset(&self) {
        self.take();
        self.down.store(0, Ordering::SeqCst);
        self.up.store(0, Ordering::SeqCst);
    }

    /// Body bytes down and up since the last `reset`.
    pub fn body_bytes(&self) -> u64 {
        self.down.load(Ordering::SeqCst) + self.up.load(Ordering::SeqCst)
    }

    /// How many of the calls since the last `take` match.
    pub fn count(&self, which: impl Fn(&Call) -> bool) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| which(c))
            .count()
    }

    pub fn interfere(&self, order: Interfere) {
        *self.interfere.lock().unwrap() = Some(order);
    }

    /// The body of the last write "someone else" made to `key`.
    pub fn their_write(&self, key: &str) -> Option<Bytes> {
        self.their_writes.lock().unwrap().get(key).cloned()
    }

    fn log(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    /// Each interfering write differs (the same bytes would have the same ETag).
    async fn someone_writes(&self, key: &str) {
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let serial = SERIAL.fetch_add(1, Ordering::SeqCst);
        let body = Bytes::from(format!("REWRITTEN by someone else at {key} ({serial})"));
        self.inner
            .put(key, body.clone(), &PutOptions::default())
            .await
            .expect("interfering put");
        self.their_writes
            .lock()
            .unwrap()
            .insert(key.to_string(), body);
    }

    /// `body`, its bytes counted as uploaded as they pass.
    fn counted(&self, body: PartBody) -> PartBody {
        let up = self.up.clone();
        body.inspect(move |chunk| {
            if let Ok(b) = chunk {
                up.fetch_add(b.len() as u64, Ordering::SeqCst);
            }
        })
        .boxed()
    }

    /// Runs `write` (ours, to `key`) with whatever interference is ordered for it.
    async fn write<T>(
        &self,
        key: &str,
        write: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let (before, after, delete) = {
            let mut order = self.interfere.lock().unwrap();
            match order.as_mut() {
                Some(Interfere::Before(k)) if k == key => {
                    *order = None;
                    (true, false, false)
                }
                Some(Interfere::After(k)) if k == key => {
                    *order = None;
                    (false, true, false)
                }
                Some(Interfere::BeforeEach(n)) if *n > 0 => {
                    *n -= 1;
                    (true, false, false)
                }
                Some(Interfere::DeleteBeforeEach(n)) if *n > 0 => {
                    *n -= 1;
                    (false, false, true)
                }
                _ => (false, false, false),
            }
        };
        if before {
            self.someone_writes(key).await;
        }
        if delete {
            self.inner.delete(key).await.expect("interfering delete");
        }
        let result = write.await;
        if after && result.is_ok() {
            self.someone_writes(key).await;
        }
        result
    }
}

#[async_trait]
impl Store for Watched {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn metadata_limit(&self) -> usize {
        self.metadata_limit
            .lock()
            .unwrap()
            .unwrap_or_else(|| self.inner.metadata_limit())
    }
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        opts: &PutOptions,
    ) -> Result<PutResult, StoreError> {
        self.log(Call::Put {
            key: key.into(),
            len: body.len(),
        });
        self.up.fetch_add(body.len() as u64, Ordering::SeqCst);
        self.write(key, self.inner.put(key, body, opts)).await
    }
    async fn put_stream(
        &self,
        key: &str,
        len: u64,
        body: PartBody,
        opts: &PutOptions,
    ) -> Result<PutResult, StoreError> {
        self.log(Call::Put {
            key: key.into(),
            len: len as usize,
        });
        let body = self.counted(body);
        self.write(key, self.inner.put_stream(key, len, body, opts))
            .await
    }
    async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
        opts: &GetOptions,
    ) -> Result<GetResult, StoreError> {
        self.log(Call::Get {
            key: key.into(),
            range,
        });
        let delay = match &*self.slow_get.lock().unwrap() {
            Some((k, delay)) if k == key => Some(*delay),
            _ => None,
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let before = {
            let mut order = self.interfere.lock().unwrap();
            match order.as_ref() {
                Some(Interfere::BeforeGet(k)) if k == key => order.take().is_some(),
                _ => false,
            }
        };
        if before {
            self.someone_writes(key).await;
        }
        let cut_after = match self.interfere.lock().unwrap().as_mut() {
            Some(Interfere::CutBodies { gets, after }) if *gets > 0 => {
                *gets -= 1;
                Some(*after)
            }
            _ => None,
        };
        let mut got = self.inner.get(key, range, opts).await?;
        let down = self.down.clone();
        got.body = got
            .body
            .inspect(move |chunk| {
                if let Ok(b) = chunk {
                    down.fetch_add(b.len() as u64, Ordering::SeqCst);
                }
            })
            .boxed();
        if let Some(after) = cut_after {
            let key = key.to_string();
            // Deliver exactly `after` bytes, then the error, then nothing.
            got.body = futures_util::stream::unfold(
                (got.body, after, false),
                move |(mut body, left, done)| {
                    let key = key.clone();
                    async move {
                        if done {
                            return None;
                        }
                        if left == 0 {
                            let cut = StoreError::new(Op::Get, key, ErrorKind::Network)
                                .with_detail("connection cut by the test")
                                .with_retryable(true);
                            return Some((Err(cut), (body, 0, true)));
                        }
                        match body.next().await {
                            Some(Ok(mut chunk)) => {
                                let keep = chunk.len().min(left as usize);
                                chunk.truncate(keep);
                                Some((Ok(chunk), (body, left - keep as u64, false)))
                            }
                            other => other.map(|item| (item, (body, left, true))),
                        }
                    }
                },
            )
            .boxed();
        }
        Ok(got)
    }
    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        self.log(Call::Head { key: key.into() });
        self.inner.head(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
        max_keys: Option<u32>,
    ) -> Result<ListPage, StoreError> {
        self.log(Call::List);
        self.inner
            .list(prefix, delimiter, continuation, max_keys)
            .await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.log(Call::Delete { key: key.into() });
        self.inner.delete(key).await
    }
    async fn copy(
        &self,
        src_key: &str,
        dst_key: &str,
        opts: &CopyOptions,
    ) -> Result<PutResult, StoreError> {
        self.log(Call::Copy {
            src: src_key.into(),
            dst: dst_key.into(),
        });
        self.write(dst_key, self.inner.copy(src_key, dst_key, opts))
            .await
    }
    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Result<String, StoreError> {
        self.log(Call::CreateMultipart { key: key.into() });
        self.inner.create_multipart(key, opts).await
    }
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> Result<UploadedPart, StoreError> {
        self.log(Call::UploadPart { len: body.len() });
        self.up.fetch_add(body.len() as u64, Ordering::SeqCst);
        self.inner
            .upload_part(key, upload_id, part_number, body)
            .await
    }
    async fn upload_part_stream(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        len: u64,
        body: PartBody,
    ) -> Result<UploadedPart, StoreError> {
        self.log(Call::UploadPart { len: len as usize });
        let body = self.counted(body);
        self.inner
            .upload_part_stream(key, upload_id, part_number, len, body)
            .await
    }
    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source: &PartCopySource,
    ) -> Result<UploadedPart, StoreError> {
        self.log(Call::UploadPartCopy);
        self.inner
            .upload_part_copy(key, upload_id, part_number, source)
            .await
    }
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Result<PutResult, StoreError> {
        self.log(Call::Complete);
        self.write(key, self.inner.complete_multipart(key, upload_id, parts))
            .await
    }
    async fn complete_multipart_if_match(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        if_match: &str,
    ) -> Result<PutResult, StoreError> {
        self.log(Call::Complete);
        let complete = self
            .inner
            .complete_multipart_if_match(key, upload_id, parts, if_match);
        self.write(key, complete).await
    }
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.log(Call::Abort);
        self.inner.abort_multipart(key, upload_id).await
    }
    async fn list_multipart_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<MultipartUpload>, StoreError> {
        self.log(Call::ListUploads);
        self.inner.list_multipart_uploads(prefix).await
    }
}

/// A [`Watched`] store for one case of a per-backend suite; the suite adds its own
/// `bucket(..)` constructor in an `impl Harness` block.
pub struct Harness {
    pub wire: Arc<Watched>,
    /// The file:// store's directory; `None` on S3.
    dir: Option<tempfile::TempDir>,
}

impl Harness {
    fn new(inner: Arc<dyn Store>, dir: Option<tempfile::TempDir>) -> Harness {
        Harness {
            wire: Arc::new(Watched::new(inner)),
            dir,
        }
    }

    /// A file:// store in a fresh temp dir (the `case` name is for `suite!`).
    pub async fn fs(_case: &str) -> Option<Harness> {
        let (store, dir) = fs_store();
        Some(Harness::new(store, Some(dir)))
    }

    /// An S3 store under a fresh prefix; `None` when the server is not configured.
    #[cfg(feature = "s3")]
    pub async fn s3(server: Server, suite: &str, case: &str) -> Option<Harness> {
        Some(Harness::new(s3_store(server, suite, case).await?, None))
    }

    pub fn is_s3(&self) -> bool {
        self.dir.is_none()
    }

    /// The store the tests use (watched).
    pub fn store(&self) -> Arc<dyn Store> {
        self.wire.clone()
    }

    /// Empties an S3 prefix; a temp dir goes with the harness.
    pub async fn cleanup(&self) {
        if self.is_s3() {
            clear(&*self.wire.inner).await;
        }
    }
}
