//! `file://DIR`: a bucket in a local directory, so everything works without an account.
//!
//! # Layout
//! ```text
//! DIR/<key>                              the object's bytes, as a plain file
//! DIR/.r2seal-meta/obj/<key>.json        sidecar: ETag, size, headers, user metadata
//! DIR/.r2seal-meta/tmp/                  files being written (same filesystem: rename is atomic)
//! DIR/.r2seal-meta/uploads/<id>/         a multipart upload: upload.json and part-NNNNN
//! ```
//! Keys must be plain relative paths: `/`-separated non-empty segments, none of them `.`
//! or `..`, no backslash, and not under `.r2seal-meta/`. A file cannot also be a
//! directory, so `a` and `a/b` cannot both exist here (S3 allows it): the second put is
//! refused with [`ErrorKind::InvalidRequest`]. A file dropped into DIR by hand is an
//! object too (ETag computed from its bytes, no metadata).
//!
//! # Guarantees
//! - Every write goes to a temp file, is fsynced, then renamed into place (body first,
//!   sidecar second, directories fsynced), so no reader ever sees a partial body.
//! - Within one process, every `FsStore` on the same directory shares one lock: a reader
//!   sees a body and its sidecar from the same write, and conditional puts, conditional
//!   copies and `complete_multipart` are atomic with respect to each other.
//! - Across processes only the renames are atomic: two processes may both pass the same
//!   `if_none_match` check. A reader that catches another process between the two renames
//!   notices (the sidecar records the body's inode and size), retries briefly, then fails
//!   with an error rather than pairing a body with another write's metadata; the same
//!   error reports a writer that crashed between the two renames. (A key's very first
//!   write is the exception: until its sidecar lands, another process sees the body as a
//!   hand-placed file, without metadata.)

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::{
    body_error, check_copy_range, check_headers, check_key, check_max_keys, check_part_number,
    check_parts, check_put_options, etag_eq, exact_len, ByteRange, CopyOptions, ErrorKind,
    GetOptions, GetResult, ListPage, MultipartUpload, ObjectInfo, ObjectMeta, Op, PartBody,
    PartCopySource, PutOptions, PutResult, Store, StoreError, UploadedPart, MIN_PART_SIZE,
};
use crate::tempfiles::LiveTemp;

/// Name of the hidden directory under the root that holds everything but object bodies.
pub const META_DIR: &str = ".r2seal-meta";
const SIDECAR_VERSION: u32 = 1;
/// Chunk size of a streamed get.
const READ_CHUNK: usize = 256 * 1024;
/// A streamed part is written to its temp file in batches of about this many bytes.
const WRITE_BATCH: usize = 1024 * 1024;

/// A store in a local directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FsStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    url: String,
    /// Shared by every `FsStore` on the same directory in this process.
    lock: Arc<RwLock<()>>,
}

/// One lock per canonical root, so two `FsStore`s on one directory still exclude each other.
fn lock_for(root: &Path) -> Arc<RwLock<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<RwLock<()>>>>> = OnceLock::new();
    let mut map = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.entry(root.to_path_buf()).or_default().clone()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sidecar {
    v: u32,
    etag: String,
    size: u64,
    /// Inode of the body this sidecar describes (Unix), to detect a torn body/sidecar pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ino: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_control: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Milliseconds since the Unix epoch.
    modified_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct UploadRecord {
    key: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    cache_control: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    initiated_ms: u64,
}

type Res<T> = Result<T, StoreError>;

impl FsStore {
    /// A store over an existing directory ([`ErrorKind::NoSuchBucket`] if it is missing).
    pub fn new(root: impl AsRef<Path>) -> Res<FsStore> {
        let given = root.as_ref();
        let shown = format!("file://{}", given.display());
        let root = fs::canonicalize(given).map_err(|e| {
            let kind = if e.kind() == io::ErrorKind::NotFound {
                ErrorKind::NoSuchBucket
            } else {
                io_kind(&e)
            };
            StoreError::new(Op::Open, &shown, kind).with_detail(e.to_string())
        })?;
        if !root.is_dir() {
            return Err(StoreError::new(Op::Open, &shown, ErrorKind::NoSuchBucket)
                .with_detail("not a directory"));
        }
        let url = format!("file://{}", root.display());
        for sub in ["obj", "tmp", "uploads"] {
            fs::create_dir_all(root.join(META_DIR).join(sub)).map_err(|e| {
                StoreError::new(Op::Open, &url, io_kind(&e)).with_detail(e.to_string())
            })?;
        }
        let lock = lock_for(&root);
        Ok(FsStore {
            inner: Arc::new(Inner { root, url, lock }),
        })
    }

    /// Like [`FsStore::new`], creating the directory (and its parents) first if needed.
    pub fn create(root: impl AsRef<Path>) -> Res<FsStore> {
        let root = root.as_ref();
        fs::create_dir_all(root).map_err(|e| {
            StoreError::new(Op::Open, format!("file://{}", root.display()), io_kind(&e))
                .with_detail(e.to_string())
        })?;
        FsStore::new(root)
    }

    /// The canonical directory this store keeps its objects in.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: Op,
        key: &str,
        f: impl FnOnce(&Inner) -> Res<T> + Send + 'static,
    ) -> Res<T> {
        let inner = self.inner.clone();
        let loc = inner.loc(key);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::new(op, loc, ErrorKind::Other)
                    .with_detail(format!("worker task: {e}")))
            })
    }

    /// Write `body` (exactly `len` bytes) to `tmp` batch by batch on blocking threads and
    /// sync it; returns it with its quoted MD5 ETag. An error drops `tmp`, which removes
    /// the file.
    async fn write_stream(
        &self,
        op: Op,
        key: &str,
        mut tmp: TempFile,
        body: PartBody,
        len: u64,
    ) -> Res<(TempFile, String)> {
        use futures_util::StreamExt;
        let mut md5 = Md5::new();
        let mut body = exact_len(body, len);
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batched = 0;
        loop {
            let next = body
                .next()
                .await
                .transpose()
                .map_err(|e| body_error(op, self.inner.loc(key), e))?;
            let ended = next.is_none();
            if let Some(chunk) = next {
                md5.update(&chunk);
                batched += chunk.len();
                batch.push(chunk);
            }
            if batched >= WRITE_BATCH || ended {
                let pieces = std::mem::take(&mut batch);
                batched = 0;
                let k = key.to_string();
                tmp = self
                    .blocking(op, key, move |i| {
                        for piece in &pieces {
                            tmp.file()
                                .write_all(piece)
                                .map_err(|e| i.io_err(op, &k, e))?;
                        }
                        if ended {
                            tmp.sync().map_err(|e| i.io_err(op, &k, e))?;
                        }
                        Ok(tmp)
                    })
                    .await?;
            }
            if ended {
                return Ok((tmp, format!("\"{}\"", hex(&md5.finalize()))));
            }
        }
    }
}

impl Inner {
    fn loc(&self, key: &str) -> String {
        if key.is_empty() {
            self.url.clone()
        } else {
            format!("{}/{}", self.url, key)
        }
    }

    fn err(&self, op: Op, key: &str, kind: ErrorKind) -> StoreError {
        StoreError::new(op, self.loc(key), kind)
    }

    fn io_err(&self, op: Op, key: &str, e: io::Error) -> StoreError {
        self.err(op, key, io_kind(&e)).with_detail(e.to_string())
    }

    fn meta_dir(&self) -> PathBuf {
        self.root.join(META_DIR)
    }

    fn body_path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn sidecar_path(&self, key: &str) -> PathBuf {
        self.meta_dir().join("obj").join(format!("{key}.json"))
    }

    fn upload_dir(&self, upload_id: &str) -> PathBuf {
        self.meta_dir().join("uploads").join(upload_id)
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        // A panic while holding the lock leaves nothing half-done on disk (renames are
        // atomic), so a poisoned lock is safe to keep using.
        self.lock.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.lock.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Make a written (and synced) temp file of `size` bytes the object `key`, with its
    /// sidecar, if `opts`' conditions hold (checked under the write lock).
    fn commit_put(
        &self,
        op: Op,
        key: &str,
        mut tmp: TempFile,
        etag: String,
        size: u64,
        opts: &PutOptions,
    ) -> Res<PutResult> {
        let sc = Sidecar {
            v: SIDECAR_VERSION,
            etag: etag.clone(),
            size,
            ino: tmp.ino(),
            content_type: opts.content_type.clone(),
            cache_control: opts.cache_control.clone(),
            metadata: opts.metadata.clone(),
            modified_ms: to_ms(SystemTime::now()),
        };
        let sc_tmp = self.stage_sidecar(op, key, &sc)?;
        let _guard = self.write_lock();
        self.check_conditions(op, key, opts)?;
        self.commit(op, key, Some(tmp), sc_tmp)?;
        Ok(PutResult { etag })
    }

    /// The key and part number of an upload's part.
    fn check_part(&self, op: Op, key: &str, part_number: u32) -> Res<()> {
        let bad = |m: &str| self.err(op, key, ErrorKind::InvalidRequest).with_detail(m);
        check_fs_key(key).map_err(bad)?;
        check_part_number(part_number).map_err(bad)
    }

    /// Make a written (and synced) temp file part `part_number` of upload `upload_id`,
    /// replacing an earlier attempt. Fails if the upload was aborted meanwhile (its
    /// directory is gone).
    fn persist_part(
        &self,
        op: Op,
        key: &str,
        upload_id: &str,
        part_number: u32,
        tmp: TempFile,
    ) -> Res<()> {
        let dest = self
            .upload_dir(upload_id)
            .join(format!("part-{part_number:05}"));
        tmp.persist(&dest).map_err(|e| {
            if is_absent(&e) {
                self.err(op, key, ErrorKind::NotFound)
                    .with_detail(format!("no such multipart upload: {upload_id}"))
            } else {
                self.io_err(op, key, e)
            }
        })
    }

    /// A new temp file in the tmp dir, removed on drop unless persisted, and registered
    /// (crate::tempfiles) so that a CLI interrupted by a signal removes it too.
    fn temp_file(&self, op: Op, key: &str) -> Res<TempFile> {
        let path = self.meta_dir().join("tmp").join(random_hex(12));
        let (file, temp) = LiveTemp::create(|| {
            let file = OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                .open(&path)?;
            Ok((file, path.clone()))
        })
        .map_err(|e| self.io_err(op, key, e))?;
        Ok(TempFile {
            file: Some(file),
            temp,
        })
    }

    /// Open the body and read its sidecar as one consistent pair (caller holds a lock).
    /// `Ok(None)` if there is no such object.
    fn open_object(&self, op: Op, key: &str) -> Res<Option<(File, Sidecar)>> {
        let mut attempts = 0;
        loop {
            let file = match File::open(self.body_path(key)) {
                Ok(f) => f,
                Err(e) if is_absent(&e) => return Ok(None),
                Err(e) => return Err(self.io_err(op, key, e)),
            };
            let fmeta = file.metadata().map_err(|e| self.io_err(op, key, e))?;
            if !fmeta.is_file() {
                return Ok(None);
            }
            match self.read_sidecar(op, key)? {
                Some(sc)
                    if sc.size == fmeta.len() && (sc.ino.is_none() || sc.ino == ino(&fmeta)) =>
                {
                    return Ok(Some((file, sc)))
                }
                Some(_) => {
                    // Another process is between its two renames, or one crashed there.
                    attempts += 1;
                    if attempts >= 5 {
                        return Err(self.err(op, key, ErrorKind::Other).with_detail(
                            "object body and metadata sidecar disagree (interrupted write?): put the object again",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                None => {
                    // A file put there by hand: describe it from its bytes.
                    let mut f = file;
                    let etag = quoted_md5_of_reader(&mut f).map_err(|e| self.io_err(op, key, e))?;
                    f.seek(SeekFrom::Start(0))
                        .map_err(|e| self.io_err(op, key, e))?;
                    let sc = Sidecar {
                        v: SIDECAR_VERSION,
                        etag,
                        size: fmeta.len(),
                        ino: None,
                        content_type: None,
                        cache_control: None,
                        metadata: BTreeMap::new(),
                        modified_ms: fmeta.modified().map(to_ms).unwrap_or(0),
                    };
                    return Ok(Some((f, sc)));
                }
            }
        }
    }

    fn read_sidecar(&self, op: Op, key: &str) -> Res<Option<Sidecar>> {
        match fs::read(self.sidecar_path(key)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                self.err(op, key, ErrorKind::Other)
                    .with_detail(format!("unreadable metadata sidecar: {e}"))
            }),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(self.io_err(op, key, e)),
        }
    }

    /// Write a sidecar to a temp file (not yet renamed into place).
    fn stage_sidecar(&self, op: Op, key: &str, sc: &Sidecar) -> Res<TempFile> {
        let mut tmp = self.temp_file(op, key)?;
        let json = serde_json::to_vec(sc).expect("sidecar serializes");
        tmp.write_all_sync(&json)
            .map_err(|e| self.io_err(op, key, e))?;
        Ok(tmp)
    }

    /// Make the parent directories of `key`'s body and sidecar. A path component that is a
    /// file means `key` would nest under an existing object.
    fn make_parents(&self, op: Op, key: &str) -> Res<()> {
        let body = self.body_path(key);
        if body.is_dir() {
            return Err(self.err(op, key, ErrorKind::InvalidRequest).with_detail(
                "the file:// store cannot hold an object whose key is a prefix of other keys",
            ));
        }
        for dir in [body.parent(), self.sidecar_path(key).parent()]
            .into_iter()
            .flatten()
        {
            if let Err(e) = fs::create_dir_all(dir) {
                let conflict = matches!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory
                );
                return Err(if conflict {
                    self.err(op, key, ErrorKind::InvalidRequest).with_detail(
                        "the file:// store cannot hold an object under a key that is itself an object",
                    )
                } else {
                    self.io_err(op, key, e)
                });
            }
        }
        Ok(())
    }

    /// Rename a staged body and sidecar into place (caller holds the write lock).
    fn commit(&self, op: Op, key: &str, body: Option<TempFile>, sidecar: TempFile) -> Res<()> {
        self.make_parents(op, key)?;
        let body_path = self.body_path(key);
        if let Some(body) = body {
            body.persist(&body_path)
                .map_err(|e| self.io_err(op, key, e))?;
            sync_dir(body_path.parent()).map_err(|e| self.io_err(op, key, e))?;
        }
        let sc_path = self.sidecar_path(key);
        sidecar
            .persist(&sc_path)
            .map_err(|e| self.io_err(op, key, e))?;
        sync_dir(sc_path.parent()).map_err(|e| self.io_err(op, key, e))?;
        Ok(())
    }

    fn check_conditions(&self, op: Op, key: &str, opts: &PutOptions) -> Res<()> {
        if opts.if_match.is_none() && opts.if_none_match.is_none() {
            return Ok(());
        }
        let current = self.open_object(op, key)?.map(|(_, sc)| sc.etag);
        if opts.if_none_match.is_some() && current.is_some() {
            return Err(self
                .err(op, key, ErrorKind::PreconditionFailed)
                .with_detail("if_none_match: the object exists"));
        }
        if let Some(want) = &opts.if_match {
            match current {
                None => {
                    return Err(self
                        .err(op, key, ErrorKind::PreconditionFailed)
                        .with_detail("if_match: the object does not exist"))
                }
                Some(etag) if !etag_eq(&etag, want) => {
                    return Err(self
                        .err(op, key, ErrorKind::PreconditionFailed)
                        .with_detail("if_match: the object has another ETag"))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn info(&self, key: &str, sc: Sidecar) -> ObjectInfo {
        ObjectInfo {
            meta: ObjectMeta {
                key: key.to_string(),
                size: sc.size,
                etag: sc.etag,
                last_modified: Some(from_ms(sc.modified_ms)),
            },
            content_type: sc.content_type,
            cache_control: sc.cache_control,
            metadata: sc.metadata,
        }
    }

    fn read_upload(&self, op: Op, key: &str, upload_id: &str) -> Res<UploadRecord> {
        let no_upload = || {
            self.err(op, key, ErrorKind::NotFound)
                .with_detail(format!("no such multipart upload: {upload_id}"))
        };
        if upload_id.len() != 32 || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(no_upload());
        }
        let rec: UploadRecord = match fs::read(self.upload_dir(upload_id).join("upload.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                self.err(op, key, ErrorKind::Other)
                    .with_detail(format!("unreadable upload record: {e}"))
            })?,
            Err(e) if is_absent(&e) => return Err(no_upload()),
            Err(e) => return Err(self.io_err(op, key, e)),
        };
        if rec.key != key {
            return Err(no_upload());
        }
        Ok(rec)
    }

    /// All keys under the root starting with `prefix`, sorted bytewise.
    fn keys_with_prefix(&self, prefix: &str) -> io::Result<Vec<String>> {
        // Walk only the directory the prefix pins down: "a/b/c" can only match under "a/b".
        let base = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let mut out = Vec::new();
        // A prefix no valid key can have (absolute, `..`, ...) must not steer the walk out
        // of the root: `root.join("/etc")` is `/etc`.
        if !base.is_empty() && check_fs_key(base).is_err() {
            return Ok(out);
        }
        let start = if base.is_empty() {
            self.root.clone()
        } else {
            self.root.join(base)
        };
        let mut stack = vec![(start, base.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if rel.is_empty() && name == META_DIR {
                    continue;
                }
                let key = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                // Symlinks are not followed: they could lead out of the root.
                let ft = entry.file_type()?;
                if ft.is_dir() {
                    let dir_prefix = format!("{key}/");
                    if dir_prefix.starts_with(prefix) || prefix.starts_with(&dir_prefix) {
                        stack.push((entry.path(), key));
                    }
                } else if ft.is_file() && key.starts_with(prefix) {
                    out.push(key);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn remove_empty_parents(&self, mut path: &Path, stop: &Path) {
        while let Some(parent) = path.parent() {
            if parent == stop || !parent.starts_with(stop) || fs::remove_dir(parent).is_err() {
                break;
            }
            path = parent;
        }
    }
}

/// Check a key for the `fs` backend: the shared rules plus "a plain relative path".
fn check_fs_key(key: &str) -> Result<(), &'static str> {
    check_key(key)?;
    if key.starts_with('/') || key.ends_with('/') || key.contains('\\') {
        return Err(
            "file:// keys must be relative paths without a leading or trailing '/' or any '\\'",
        );
    }
    for seg in key.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err("file:// keys cannot contain empty, '.' or '..' path segments");
        }
    }
    if key.split('/').next() == Some(META_DIR) {
        return Err("keys under .r2seal-meta/ are reserved by the file:// store");
    }
    // Belt and braces: whatever the checks above miss, the path must stay relative.
    if !Path::new(key)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err("file:// keys must be plain relative paths");
    }
    Ok(())
}

#[async_trait]
impl Store for FsStore {
    fn url(&self) -> &str {
        &self.inner.url
    }

    async fn put(&self, key: &str, body: Bytes, opts: &PutOptions) -> Res<PutResult> {
        let op = Op::Put;
        let i = &self.inner;
        check_fs_key(key).map_err(|m| i.err(op, key, ErrorKind::InvalidRequest).with_detail(m))?;
        check_put_options(opts)
            .map_err(|m| i.err(op, key, ErrorKind::InvalidRequest).with_detail(m))?;
        let (key, opts) = (key.to_string(), opts.clone());
        self.blocking(op, &key.clone(), move |i| {
            let etag = quoted_md5(&body);
            let mut tmp = i.temp_file(op, &key)?;
            tmp.write_all_sync(&body)
                .map_err(|e| i.io_err(op, &key, e))?;
            i.commit_put(op, &key, tmp, etag, body.len() as u64, &opts)
        })
        .await
    }

    /// Like `put`, with the body written to a temp file as it arrives (see
    /// `write_stream`); conditions are checked at the end, under the write lock.
    async fn put_stream(
        &self,
        key: &str,
        len: u64,
        body: PartBody,
        opts: &PutOptions,
    ) -> Res<PutResult> {
        let op = Op::Put;
        let i = &self.inner;
        check_fs_key(key).map_err(|m| i.err(op, key, ErrorKind::InvalidRequest).with_detail(m))?;
        check_put_options(opts)
            .map_err(|m| i.err(op, key, ErrorKind::InvalidRequest).with_detail(m))?;
        let k = key.to_string();
        let tmp = self.blocking(op, key, move |i| i.temp_file(op, &k)).await?;
        let (tmp, etag) = self.write_stream(op, key, tmp, body, len).await?;
        let (key, opts) = (key.to_string(), opts.clone());
        self.blocking(op, &key.clone(), move |i| {
            i.commit_put(op, &key, tmp, etag, len, &opts)
        })
        .await
    }

    async fn get(&self, key: &str, range: Option<ByteRange>, opts: &GetOptions) -> Res<GetResult> {
        let op = Op::Get;
        let i = &self.inner;
        check_fs_key(key).map_err(|m| i.err(op, key, ErrorKind::InvalidRequest).with_detail(m))?;
        if let Some(r) = range {
            r.validate()
                .map_err(|m| i.err(op, key, ErrorKind::InvalidRequest).with_detail(m))?;
        }
        let (k, if_match) = (key.to_string(), opts.if_match.clone());
        let (file, info, served) = self
            .blocking(op, key, move |i| {
                let (mut file, sc) = {
                    let _guard = i.read_lock();
                    i.open_object(op, &k)?
                        .ok_or_else(|| i.err(op, &k, ErrorKind::NotFound))?
                };
                if let Some(want) = &if_match {
                    if !etag_eq(&sc.etag, want) {
                        return Err(i
                            .err(op, &k, ErrorKind::PreconditionFailed)
                            .with_detail("if_match: the object has another ETag"));
                    }
                }
                let size = sc.size;
                let served = match range {
                    None => None,
                    Some(r) => Some(r.resolve(size).ok_or_else(|| {
                        i.err(op, &k, ErrorKind::RangeNotSatisfiable)
                            .with_detail(format!("{} of a {size}-byte object", r.to_header()))
                    })?),
                };
                let start = served.map_or(0, |r| r.start);
                file.seek(SeekFrom::Start(start))
                    .map_err(|e| i.io_err(op, &k, e))?;
                Ok((file, i.info(&k, sc), served))
            })
            .await?;
        let len = served.map_or(info.meta.size, |r| r.len());
        let body = stream_file(tokio::fs::File::from_std(file), len, i.loc(key));
        Ok(GetResult {
            info,
            range: served,
            body,
        })
    }

    async fn head(&self, key: &str) -> Res<ObjectInfo> {
        let op = Op::Head;
        let i = &self.inner;
        check_fs_key(key).map_err(|m| i.err(op, key, ErrorKind::InvalidRequest).with_detail(m))?;
        let k = key.to_string();
        self.blocking(op, key, move |i| {
            let _guard = i.read_lock();
            let (_, sc) = i
                .open_object(op, &k)?
                .ok_or_else(|| i.err(op, &k, ErrorKind::NotFound))?;
            Ok(i.info(&k, sc))
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
        max_keys: Option<u32>,
    ) -> Res<ListPage> {
        let op = Op::List;
        let i = &self.inner;
        let max = check_max_keys(max_keys)
            .map_err(|m| i.err(op, prefix, ErrorKind::InvalidRequest).with_detail(m))?
            as usize;
        if delimiter == Some("") {
            return Err(i
                .err(op, prefix, ErrorKind::InvalidRequest)
                .with_detail("empty delimiter"));
        }
        let (prefix, delimiter) = (prefix.to_string(), delimiter.map(str::to_string));
        self.blocking(op, &prefix.clone(), move |i| {
            let _guard = i.read_lock();
            let keys = i
                .keys_with_prefix(&prefix)
                .map_err(|e| i.io_err(op, &prefix, e))?;
            // Roll keys up into entries; since a common prefix sorts before every key it
            // covers, the entries come out sorted and duplicates are adjacent.
            let mut entries: Vec<(String, bool)> = Vec::new(); // (name, is_prefix)
            for key in keys {
                let entry = match &delimiter {
                    Some(d) => match key[prefix.len()..].find(d.as_str()) {
                        Some(at) => (key[..prefix.len() + at + d.len()].to_string(), true),
                        None => (key, false),
                    },
                    None => (key, false),
                };
                if entries.last() != Some(&entry) {
                    entries.push(entry);
                }
            }
            // The continuation token is the last entry of the previous page.
            let from = match &continuation {
                Some(after) => entries.partition_point(|(name, _)| name.as_str() <= after.as_str()),
                None => 0,
            };
            let rest = &entries[from..];
            let page = &rest[..rest.len().min(max)];
            let next_continuation = (rest.len() > page.len())
                .then(|| page.last().map(|(n, _)| n.clone()))
                .flatten();
            let mut out = ListPage {
                next_continuation,
                ..Default::default()
            };
            for (name, is_prefix) in page {
                if *is_prefix {
                    out.common_prefixes.push(name.clone());
                } else if let Some((_, sc)) = i.open_object(op, name)? {
                    out.objects.push(i.info(name, sc).meta);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Res<()> {
        let op = Op::Delete;
        let i = &self.inner;
        check_fs_key(key).map_err(|m| i.err(op, key, ErrorKind::InvalidRequest).with_detail(m))?;
        let k = key.to_string();
        self.blocking(op, key, move |i| {
            let _guard = i.write_lock();
            let body = i.body_path(&k);
            if body.is_file() {
                match fs::remove_file(&body) {
                    Err(e) if !is_absent(&e) => return Err(i.io_err(op, &k, e)),
                    _ => {}
                }
                i.remove_empty_parents(&body, &i.root);
            }
            let sc = i.sidecar_path(&k);
            match fs::remove_file(&sc) {
                Err(e) if !is_absent(&e) => return Err(i.io_err(op, &k, e)),
                _ => {}
            }
            i.remove_empty_parents(&sc, &i.meta_dir().join("obj"));
            Ok(())
        })
        .await
    }

    async fn copy(&self, src_key: &str, dst_key: &str, opts: &CopyOptions) -> Res<PutResult> {
        let op = Op::Copy;
        let i = &self.inner;
        let shown = format!("{} -> {dst_key}", src_key);
        let bad = |m: &str| i.err(op, &shown, ErrorKind::InvalidRequest).with_detail(m);
        check_fs_key(src_key).map_err(bad)?;
        check_fs_key(dst_key).map_err(bad)?;
        if let Some(r) = &opts.replace_metadata {
            check_headers(
                r.content_type.as_deref(),
                r.cache_control.as_deref(),
                &r.metadata,
            )
            .map_err(bad)?;
        } else if src_key == dst_key {
            return Err(bad(
                "copying an object onto itself requires replacing its metadata",
            ));
        }
        let (src, dst, opts) = (src_key.to_string(), dst_key.to_string(), opts.clone());
        self.blocking(op, &shown.clone(), move |i| {
            let check_src = |sc: &Sidecar| match &opts.if_match {
                Some(want) if !etag_eq(&sc.etag, want) => Err(i
                    .err(op, &shown, ErrorKind::PreconditionFailed)
                    .with_detail("if_match: the source has another ETag")),
                _ => Ok(()),
            };
            let not_found = || {
                i.err(op, &shown, ErrorKind::NotFound)
                    .with_detail("no such source object")
            };
            let headers = |sc: &Sidecar| match &opts.replace_metadata {
                Some(r) => (
                    r.content_type.clone(),
                    r.cache_control.clone(),
                    r.metadata.clone(),
                ),
                None => (
                    sc.content_type.clone(),
                    sc.cache_control.clone(),
                    sc.metadata.clone(),
                ),
            };
            if src == dst {
                // Rewrite the sidecar only: the body (and so the ETag) stays as it is.
                let _guard = i.write_lock();
                let (_, sc) = i.open_object(op, &src)?.ok_or_else(not_found)?;
                check_src(&sc)?;
                let (content_type, cache_control, metadata) = headers(&sc);
                let ino = match sc.ino {
                    Some(n) => Some(n),
                    None => fs::metadata(i.body_path(&src)).ok().as_ref().and_then(ino),
                };
                let new = Sidecar {
                    content_type,
                    cache_control,
                    metadata,
                    ino,
                    modified_ms: to_ms(SystemTime::now()),
                    ..sc
                };
                let sc_tmp = i.stage_sidecar(op, &dst, &new)?;
                i.commit(op, &dst, None, sc_tmp)?;
                return Ok(PutResult { etag: new.etag });
            }
            let (mut file, sc) = {
                let _guard = i.read_lock();
                i.open_object(op, &src)?.ok_or_else(not_found)?
            };
            check_src(&sc)?;
            // The open handle pins the version checked above, whatever happens meanwhile.
            let mut tmp = i.temp_file(op, &dst)?;
            let copied = io::copy(&mut file, tmp.file()).map_err(|e| i.io_err(op, &shown, e))?;
            if copied != sc.size {
                return Err(i
                    .err(op, &shown, ErrorKind::Other)
                    .with_detail("source changed size while copying"));
            }
            tmp.sync().map_err(|e| i.io_err(op, &shown, e))?;
            let (content_type, cache_control, metadata) = headers(&sc);
            let new = Sidecar {
                content_type,
                cache_control,
                metadata,
                ino: tmp.ino(),
                modified_ms: to_ms(SystemTime::now()),
                ..sc
            };
            let sc_tmp = i.stage_sidecar(op, &dst, &new)?;
            let _guard = i.write_lock();
            i.commit(op, &dst, Some(tmp), sc_tmp)?;
            Ok(PutResult { etag: new.etag })
        })
        .await
    }

    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Res<String> {
        let op = Op::CreateMultipart;
        let i = &self.inner;
        let bad = |m: &str| i.err(op, key, ErrorKind::InvalidRequest).with_detail(m);
        check_fs_key(key).map_err(bad)?;
        check_put_options(opts).map_err(bad)?;
        if opts.if_match.is_some() || opts.if_none_match.is_some() {
            return Err(bad("conditions are not supported on multipart uploads"));
        }
        let rec = UploadRecord {
            key: key.to_string(),
            content_type: opts.content_type.clone(),
            cache_control: opts.cache_control.clone(),
            metadata: opts.metadata.clone(),
            initiated_ms: to_ms(SystemTime::now()),
        };
        self.blocking(op, key, move |i| {
            let id = random_hex(16);
            let dir = i.upload_dir(&id);
            fs::create_dir(&dir).map_err(|e| i.io_err(op, &rec.key, e))?;
            let mut tmp = i.temp_file(op, &rec.key)?;
            let json = serde_json::to_vec(&rec).expect("upload record serializes");
            tmp.write_all_sync(&json)
                .map_err(|e| i.io_err(op, &rec.key, e))?;
            tmp.persist(&dir.join("upload.json"))
                .map_err(|e| i.io_err(op, &rec.key, e))?;
            Ok(id)
        })
        .await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> Res<UploadedPart> {
        let op = Op::UploadPart;
        self.inner.check_part(op, key, part_number)?;
        let (k, id) = (key.to_string(), upload_id.to_string());
        self.blocking(op, key, move |i| {
            i.read_upload(op, &k, &id)?;
            let mut tmp = i.temp_file(op, &k)?;
            tmp.write_all_sync(&body).map_err(|e| i.io_err(op, &k, e))?;
            i.persist_part(op, &k, &id, part_number, tmp)?;
            Ok(UploadedPart {
                part_number,
                etag: quoted_md5(&body),
            })
        })
        .await
    }

    /// Written to a temp file batch by batch on blocking threads; only the final rename,
    /// once the body ended after exactly `len` bytes, makes it the part.
    async fn upload_part_stream(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        len: u64,
        body: PartBody,
    ) -> Res<UploadedPart> {
        let op = Op::UploadPart;
        self.inner.check_part(op, key, part_number)?;
        let (k, id) = (key.to_string(), upload_id.to_string());
        let tmp = self
            .blocking(op, key, move |i| {
                i.read_upload(op, &k, &id)?;
                i.temp_file(op, &k)
            })
            .await?;
        let (tmp, etag) = self.write_stream(op, key, tmp, body, len).await?;
        let (k, id) = (key.to_string(), upload_id.to_string());
        self.blocking(op, key, move |i| {
            i.persist_part(op, &k, &id, part_number, tmp)?;
            Ok(UploadedPart { part_number, etag })
        })
        .await
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source: &PartCopySource,
    ) -> Res<UploadedPart> {
        let op = Op::UploadPartCopy;
        let i = &self.inner;
        let bad = |m: &str| i.err(op, key, ErrorKind::InvalidRequest).with_detail(m);
        check_fs_key(key).map_err(bad)?;
        check_fs_key(&source.key).map_err(bad)?;
        check_part_number(part_number).map_err(bad)?;
        check_copy_range(source.range).map_err(bad)?;
        let (k, id, src) = (key.to_string(), upload_id.to_string(), source.clone());
        self.blocking(op, key, move |i| {
            i.read_upload(op, &k, &id)?;
            let (mut file, sc) = {
                let _guard = i.read_lock();
                i.open_object(op, &src.key)?.ok_or_else(|| {
                    i.err(op, &src.key, ErrorKind::NotFound)
                        .with_detail("no such source object")
                })?
            };
            if let Some(want) = &src.if_match {
                if !etag_eq(&sc.etag, want) {
                    return Err(i
                        .err(op, &src.key, ErrorKind::PreconditionFailed)
                        .with_detail("if_match: the source has another ETag"));
                }
            }
            // The open handle pins the version checked above.
            let (start, len) = match src.range {
                None => (0, sc.size),
                Some((start, end)) if end < sc.size => (start, end - start + 1),
                Some(_) => {
                    return Err(i.err(op, &src.key, ErrorKind::InvalidRequest).with_detail(
                        format!("copy range past the end of the source ({} bytes)", sc.size),
                    ))
                }
            };
            file.seek(SeekFrom::Start(start))
                .map_err(|e| i.io_err(op, &src.key, e))?;
            let mut tmp = i.temp_file(op, &k)?;
            let mut h = Md5::new();
            let mut buf = vec![0u8; READ_CHUNK];
            let mut left = len;
            while left > 0 {
                let want = left.min(READ_CHUNK as u64) as usize;
                let n = file
                    .read(&mut buf[..want])
                    .map_err(|e| i.io_err(op, &src.key, e))?;
                if n == 0 {
                    return Err(i
                        .err(op, &src.key, ErrorKind::Other)
                        .with_detail("source changed size while copying"));
                }
                h.update(&buf[..n]);
                tmp.file()
                    .write_all(&buf[..n])
                    .map_err(|e| i.io_err(op, &k, e))?;
                left -= n as u64;
            }
            tmp.sync().map_err(|e| i.io_err(op, &k, e))?;
            i.persist_part(op, &k, &id, part_number, tmp)?;
            Ok(UploadedPart {
                part_number,
                etag: format!("\"{}\"", hex(&h.finalize())),
            })
        })
        .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Res<PutResult> {
        let op = Op::CompleteMultipart;
        let i = &self.inner;
        let bad = |m: &str| i.err(op, key, ErrorKind::InvalidRequest).with_detail(m);
        check_fs_key(key).map_err(bad)?;
        check_parts(parts).map_err(bad)?;
        let (k, id, parts) = (key.to_string(), upload_id.to_string(), parts.to_vec());
        self.blocking(op, key, move |i| {
            let rec = i.read_upload(op, &k, &id)?;
            let dir = i.upload_dir(&id);
            let bad = |m: String| i.err(op, &k, ErrorKind::InvalidRequest).with_detail(m);
            // Size rules first (cheap): S3's 5 MiB minimum, and R2's equal-size rule, so that
            // code tested here does not fail on the first real multipart upload.
            let mut sizes = Vec::with_capacity(parts.len());
            for p in &parts {
                match fs::metadata(dir.join(format!("part-{:05}", p.part_number))) {
                    Ok(m) => sizes.push(m.len()),
                    Err(e) if is_absent(&e) => {
                        return Err(bad(format!("part {} was not uploaded", p.part_number)))
                    }
                    Err(e) => return Err(i.io_err(op, &k, e)),
                }
            }
            if let Some((last, rest)) = sizes.split_last() {
                let _ = last;
                if rest.iter().any(|&s| s < MIN_PART_SIZE) {
                    return Err(bad("every part but the last must be at least 5 MiB".into()));
                }
                if rest.windows(2).any(|w| w[0] != w[1]) {
                    return Err(bad(
                        "every part but the last must have the same size (R2 requires it)".into(),
                    ));
                }
            }
            let mut tmp = i.temp_file(op, &k)?;
            let mut md5s = Md5::new();
            let mut total = 0u64;
            for p in &parts {
                let mut f = File::open(dir.join(format!("part-{:05}", p.part_number)))
                    .map_err(|e| i.io_err(op, &k, e))?;
                let mut h = Md5::new();
                let mut buf = vec![0u8; READ_CHUNK];
                loop {
                    let n = f.read(&mut buf).map_err(|e| i.io_err(op, &k, e))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    tmp.file()
                        .write_all(&buf[..n])
                        .map_err(|e| i.io_err(op, &k, e))?;
                    total += n as u64;
                }
                let digest = h.finalize();
                if !etag_eq(&p.etag, &hex(&digest)) {
                    return Err(bad(format!(
                        "part {} does not have ETag {}",
                        p.part_number, p.etag
                    )));
                }
                md5s.update(digest);
            }
            tmp.sync().map_err(|e| i.io_err(op, &k, e))?;
            let etag = format!("\"{}-{}\"", hex(&md5s.finalize()), parts.len());
            let sc = Sidecar {
                v: SIDECAR_VERSION,
                etag: etag.clone(),
                size: total,
                ino: tmp.ino(),
                content_type: rec.content_type,
                cache_control: rec.cache_control,
                metadata: rec.metadata,
                modified_ms: to_ms(SystemTime::now()),
            };
            let sc_tmp = i.stage_sidecar(op, &k, &sc)?;
            {
                let _guard = i.write_lock();
                // Re-check under the lock: a concurrent abort or complete wins.
                i.read_upload(op, &k, &id)?;
                i.commit(op, &k, Some(tmp), sc_tmp)?;
                let _ = fs::remove_dir_all(&dir);
            }
            Ok(PutResult { etag })
        })
        .await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Res<()> {
        let op = Op::AbortMultipart;
        let i = &self.inner;
        check_fs_key(key).map_err(|m| i.err(op, key, ErrorKind::InvalidRequest).with_detail(m))?;
        let (k, id) = (key.to_string(), upload_id.to_string());
        self.blocking(op, key, move |i| {
            let _guard = i.write_lock();
            i.read_upload(op, &k, &id)?;
            fs::remove_dir_all(i.upload_dir(&id)).map_err(|e| i.io_err(op, &k, e))
        })
        .await
    }

    async fn list_multipart_uploads(&self, prefix: &str) -> Res<Vec<MultipartUpload>> {
        let op = Op::ListMultipartUploads;
        let p = prefix.to_string();
        self.blocking(op, prefix, move |i| {
            let dir = i.meta_dir().join("uploads");
            let mut out = Vec::new();
            for entry in fs::read_dir(&dir).map_err(|e| i.io_err(op, &p, e))? {
                let entry = entry.map_err(|e| i.io_err(op, &p, e))?;
                let Ok(id) = entry.file_name().into_string() else {
                    continue;
                };
                // A directory without a record is an upload being created or removed.
                let Ok(bytes) = fs::read(entry.path().join("upload.json")) else {
                    continue;
                };
                let Ok(rec) = serde_json::from_slice::<UploadRecord>(&bytes) else {
                    continue;
                };
                if rec.key.starts_with(&p) {
                    out.push(MultipartUpload {
                        key: rec.key,
                        upload_id: id,
                        initiated: Some(from_ms(rec.initiated_ms)),
                    });
                }
            }
            out.sort_by(|a, b| (&a.key, a.initiated).cmp(&(&b.key, b.initiated)));
            Ok(out)
        })
        .await
    }
}

/// Stream `len` bytes from `file` (already positioned) in bounded chunks.
fn stream_file(file: tokio::fs::File, len: u64, loc: String) -> super::ByteStream {
    let state = (file, len, loc);
    Box::pin(futures_util::stream::try_unfold(
        state,
        |(mut file, remaining, loc)| async move {
            if remaining == 0 {
                return Ok(None);
            }
            let want = remaining.min(READ_CHUNK as u64) as usize;
            let mut buf = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                let n = file.read(&mut buf[filled..]).await.map_err(|e| {
                    StoreError::new(Op::Get, loc.clone(), io_kind(&e)).with_detail(e.to_string())
                })?;
                if n == 0 {
                    return Err(StoreError::new(Op::Get, loc, ErrorKind::Other)
                        .with_detail("object shrank while being read"));
                }
                filled += n;
            }
            Ok(Some((
                Bytes::from(buf),
                (file, remaining - want as u64, loc),
            )))
        },
    ))
}

/// A temp file in the store's tmp dir, deleted on drop unless persisted.
struct TempFile {
    file: Option<File>,
    temp: LiveTemp,
}

impl TempFile {
    fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("temp file is open until persisted")
    }

    fn write_all_sync(&mut self, data: &[u8]) -> io::Result<()> {
        self.file().write_all(data)?;
        self.sync()
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file().sync_all()
    }

    fn ino(&mut self) -> Option<u64> {
        self.file().metadata().ok().as_ref().and_then(ino)
    }

    fn persist(mut self, dest: &Path) -> io::Result<()> {
        drop(self.file.take());
        self.temp.persist(dest)
    }
}

#[cfg(unix)]
fn ino(m: &fs::Metadata) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    Some(m.ino())
}

#[cfg(not(unix))]
fn ino(_: &fs::Metadata) -> Option<u64> {
    None
}

/// Make a rename durable: fsync the directory that holds it (a no-op where unsupported).
fn sync_dir(dir: Option<&Path>) -> io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = dir {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn io_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => ErrorKind::AccessDenied,
        _ => ErrorKind::Other,
    }
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn quoted_md5(data: &[u8]) -> String {
    format!("\"{}\"", hex(&Md5::digest(data)))
}

fn quoted_md5_of_reader(r: &mut impl Read) -> io::Result<String> {
    let mut h = Md5::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(format!("\"{}\"", hex(&h.finalize())));
        }
        h.update(&buf[..n]);
    }
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf).expect("OS random number generator");
    hex(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn keys_that_escape_or_collide_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/",
            "./a",
            "a\\b",
            ".r2seal-meta/obj/x.json",
            "a/./b",
        ] {
            assert!(check_fs_key(bad).is_err(), "{bad:?} should be refused");
        }
        for good in [
            "a",
            "a/b/c.txt",
            ".hidden",
            "a..b",
            "sessions/2026-11-25.jsonl",
            "x/.r2seal-meta",
        ] {
            assert!(check_fs_key(good).is_ok(), "{good:?} should be accepted");
        }
    }

    /// Temp files are registered while they live, so an interrupted CLI removes them.
    #[test]
    fn temp_files_are_registered_until_persisted_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path()).unwrap();
        let mut tmp = store.inner.temp_file(Op::Put, "k").unwrap();
        let path = tmp.temp.path().to_owned();
        tmp.write_all_sync(b"x").unwrap();
        assert!(crate::tempfiles::is_registered(&path));
        tmp.persist(&dir.path().join("done")).unwrap();
        assert!(!crate::tempfiles::is_registered(&path) && !path.exists());
        let tmp = store.inner.temp_file(Op::Put, "k").unwrap();
        let path = tmp.temp.path().to_owned();
        assert!(crate::tempfiles::is_registered(&path) && path.exists());
        drop(tmp);
        assert!(!crate::tempfiles::is_registered(&path) && !path.exists());
    }

    #[test]
    fn refused_key_never_touches_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path().join("bucket"))
            .err()
            .map(|e| e.kind());
        assert_eq!(store, Some(ErrorKind::NoSuchBucket));
        let store = FsStore::create(dir.path().join("bucket")).unwrap();
        let e = rt()
            .block_on(store.put(
                "../escape",
                Bytes::from_static(b"x"),
                &PutOptions::default(),
            ))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn multipart_part_sizes_follow_s3_and_r2_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path()).unwrap();
        rt().block_on(async {
            let mib = 1024 * 1024;
            // Too small a first part.
            let id = store
                .create_multipart("small", &PutOptions::default())
                .await
                .unwrap();
            let p1 = store
                .upload_part("small", &id, 1, Bytes::from(vec![1u8; 1024]))
                .await
                .unwrap();
            let p2 = store
                .upload_part("small", &id, 2, Bytes::from(vec![2u8; 10]))
                .await
                .unwrap();
            let e = store
                .complete_multipart("small", &id, &[p1, p2])
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidRequest);
            assert!(e.to_string().contains("5 MiB"), "{e}");
            // Unequal non-final parts (R2).
            let id = store
                .create_multipart("uneven", &PutOptions::default())
                .await
                .unwrap();
            let p1 = store
                .upload_part("uneven", &id, 1, Bytes::from(vec![1u8; 5 * mib]))
                .await
                .unwrap();
            let p2 = store
                .upload_part("uneven", &id, 2, Bytes::from(vec![2u8; 6 * mib]))
                .await
                .unwrap();
            let p3 = store
                .upload_part("uneven", &id, 3, Bytes::from(vec![3u8; 1]))
                .await
                .unwrap();
            let e = store
                .complete_multipart("uneven", &id, &[p1.clone(), p2, p3])
                .await
                .unwrap_err();
            assert!(e.to_string().contains("same size"), "{e}");
            // Wrong ETag for a part.
            let forged = UploadedPart {
                part_number: 1,
                etag: "\"00\"".into(),
            };
            let e = store
                .complete_multipart("uneven", &id, &[forged])
                .await
                .unwrap_err();
            assert!(e.to_string().contains("ETag"), "{e}");
            // Nothing was written by the failed completions.
            assert!(store.head("uneven").await.unwrap_err().is_not_found());
            assert!(store.head("small").await.unwrap_err().is_not_found());
        });
    }

    #[test]
    fn nested_key_conflicts_are_refused_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path()).unwrap();
        rt().block_on(async {
            let o = PutOptions::default();
            store
                .put("a", Bytes::from_static(b"file"), &o)
                .await
                .unwrap();
            let e = store
                .put("a/b", Bytes::from_static(b"x"), &o)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidRequest, "{e}");
            store
                .put("d/e", Bytes::from_static(b"x"), &o)
                .await
                .unwrap();
            let e = store
                .put("d", Bytes::from_static(b"x"), &o)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidRequest, "{e}");
            // Deleting d/e prunes the empty directory, after which `d` is a free key.
            store.delete("d/e").await.unwrap();
            store
                .put("d", Bytes::from_static(b"now"), &o)
                .await
                .unwrap();
            assert_eq!(
                &store
                    .get("a", None, &GetOptions::default())
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()[..],
                b"file"
            );
        });
    }

    #[test]
    fn hand_placed_files_are_objects_and_torn_pairs_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path()).unwrap();
        rt().block_on(async {
            fs::write(dir.path().join("manual.txt"), b"hello").unwrap();
            let info = store.head("manual.txt").await.unwrap();
            assert_eq!(info.meta.etag, "\"5d41402abc4b2a76b9719d911017c592\"");
            assert_eq!(info.meta.size, 5);

            store
                .put("k", Bytes::from_static(b"one"), &PutOptions::default())
                .await
                .unwrap();
            // Simulate another writer that renamed a new body but not yet its sidecar.
            let p = dir.path().join("k");
            fs::write(p.with_extension("new"), b"two!").unwrap();
            fs::rename(p.with_extension("new"), &p).unwrap();
            let e = store.head("k").await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Other);
            assert!(e.to_string().contains("disagree"), "{e}");
        });
    }

    #[test]
    fn list_prefixes_cannot_walk_out_of_the_root() {
        let outer = tempfile::tempdir().unwrap();
        fs::write(outer.path().join("outside.txt"), b"secret").unwrap();
        let root = outer.path().join("root");
        let store = FsStore::create(&root).unwrap();
        let abs = format!("{}/", outer.path().display());
        rt().block_on(async {
            store
                .put("inside", Bytes::from_static(b"x"), &PutOptions::default())
                .await
                .unwrap();
            for prefix in ["../", "../o", abs.as_str(), "/", "./", "a/../../"] {
                let page = store.list(prefix, None, None, None).await.unwrap();
                assert_eq!(page, ListPage::default(), "prefix {prefix:?}");
            }
            let page = store.list("", None, None, None).await.unwrap();
            let keys: Vec<_> = page.objects.iter().map(|o| o.key.as_str()).collect();
            assert_eq!(keys, ["inside"]);
        });
    }

    #[test]
    fn two_stores_on_one_directory_share_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let a = FsStore::new(dir.path()).unwrap();
        let b = FsStore::new(dir.path()).unwrap();
        assert!(Arc::ptr_eq(&a.inner.lock, &b.inner.lock));
    }
}
