//! Object commands against a bucket: put, get, cat, ls, rm, head, cp, mv, cleanup.
//!
//! Everything goes through `r2seal::sealed::SealedBucket`: this module parses URLs,
//! walks directories, runs transfers concurrently and prints results.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use r2seal::descriptor::{Authenticity, DESCRIPTOR_KEY};
use r2seal::keys::keyring::Keyring;
use r2seal::keys::{Identity, SymKey};
use r2seal::names::NameKey;
use r2seal::sealed::{ObjectHead, PutOptions, Recipients, SealedBucket};
use r2seal::store::fs::{FsStore, META_DIR};
use r2seal::store::s3::{S3Options, S3Store};
use r2seal::store::{ByteRange, ErrorKind, Store};
use serde_json::json;

use crate::cli::{
    BucketCommand, CatArgs, CleanupArgs, CopyArgs, GetArgs, HeadArgs, IdentityArgs, KeyringArg,
    LsArgs, PutArgs, RecipientArgs, RmArgs,
};
use crate::io::{self as cio, print_line, Output};
use crate::local;

/// Transfers at least this large get a progress line (when stderr is a terminal).
const PROGRESS_MIN: u64 = 8 * 1024 * 1024;
/// Further attempts at putting a local file after a failure a retry can help.
const PUT_FILE_RETRIES: u32 = 3;

/// One line, no cause chain: library errors already say what, where and why.
pub(crate) fn flat(e: impl Display) -> anyhow::Error {
    anyhow!("{e}")
}

/// The commands' runtime: one thread for the requests. The heavy work (sealing and
/// opening bodies, hashing large ones) goes to blocking threads, so a second async thread
/// would mostly hand tasks back and forth: small-object migrations spent 15–25% more
/// client CPU with one async thread per core (A/B runs, 3,000 and 10,000 × 4 KiB).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

// ---------------------------------------------------------------------------------------
// URLs

/// A parsed object URL: how to open its store, and the key (or prefix) inside it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `s3://bucket`, `r2://bucket`, or `file://` + the bucket directory.
    pub store_url: String,
    /// Key or prefix relative to the store (may be empty).
    pub key: String,
}

impl Target {
    pub fn parse(url: &str, for_write: bool) -> Result<Target> {
        if let Some((scheme @ ("s3" | "r2"), rest)) = url.split_once("://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("invalid URL {url:?}: no bucket (expected {scheme}://BUCKET/KEY)");
            }
            return Ok(Target {
                store_url: format!("{scheme}://{bucket}"),
                key: key.to_string(),
            });
        }
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                bail!("invalid URL {url:?}: expected file://DIR/KEY");
            }
            return Self::parse_file(url, Path::new(path), for_write);
        }
        bail!("invalid URL {url:?}: expected s3://BUCKET/KEY, r2://BUCKET/KEY or file://DIR/KEY")
    }

    /// For `file://`: the bucket is the nearest directory at or above the path that holds
    /// `.r2seal-meta/`; failing that (writes only), the nearest existing directory above.
    fn parse_file(url: &str, path: &Path, for_write: bool) -> Result<Target> {
        let trailing = url.ends_with('/');
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()?.join(path)
        };
        let mut norm = PathBuf::new();
        for c in abs.components() {
            match c {
                Component::ParentDir => {
                    norm.pop();
                }
                Component::CurDir => {}
                other => norm.push(other),
            }
        }
        let mut root = None;
        for dir in norm.ancestors() {
            if dir.join(META_DIR).is_dir() {
                root = Some(dir.to_path_buf());
                break;
            }
        }
        let root = match root {
            Some(r) => r,
            None if for_write => {
                // A directory URL is the bucket itself; an object's bucket is above it.
                let start = if trailing || norm.is_dir() {
                    norm.as_path()
                } else {
                    norm.parent().unwrap_or(Path::new("/"))
                };
                start
                    .ancestors()
                    .find(|d| d.is_dir())
                    .map(Path::to_path_buf)
                    .ok_or_else(|| anyhow!("{url}: no such directory"))?
            }
            None => bail!(
                "{url}: no such bucket (no file:// bucket at or above {})",
                norm.display()
            ),
        };
        let rel = norm.strip_prefix(&root).expect("root is an ancestor");
        let mut key = rel
            .components()
            .map(|c| c.as_os_str().to_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| anyhow!("{url}: the path is not UTF-8"))?
            .join("/");
        if trailing && !key.is_empty() {
            key.push('/');
        }
        Ok(Target {
            store_url: format!("file://{}", root.display()),
            key,
        })
    }

    pub fn url_of(&self, key: &str) -> String {
        format!("{}/{key}", self.store_url)
    }

    /// The key, which must name an object (not a bucket or a prefix).
    fn object_key(&self) -> Result<&str> {
        if self.key.is_empty() || self.key.ends_with('/') {
            bail!(
                "{}: a URL naming an object is needed here, not a bucket or a prefix",
                self.url_of(&self.key)
            );
        }
        Ok(&self.key)
    }
}

pub(crate) async fn open_store(t: &Target, endpoint: Option<&str>) -> Result<Arc<dyn Store>> {
    if let Some(dir) = t.store_url.strip_prefix("file://") {
        return Ok(Arc::new(FsStore::create(dir).map_err(flat)?));
    }
    let opts = S3Options {
        endpoint: endpoint.map(str::to_owned),
        ..Default::default()
    };
    let store = S3Store::from_url(&t.store_url, opts).await.map_err(flat)?;
    Ok(Arc::new(store))
}

// ---------------------------------------------------------------------------------------
// Keys

pub(crate) fn has_explicit_recipients(args: &RecipientArgs) -> bool {
    !(args.recipients.is_empty() && args.recipient_files.is_empty() && args.identities.is_empty())
}

/// Recipients (and, for cp/mv, identities) for writing objects whose first key is
/// `first_key`: explicit -r/-R/-i, else the keyring's policy per key.
pub(crate) fn write_keys(
    args: &RecipientArgs,
    first_key: &str,
) -> Result<(Recipients, Vec<Identity>)> {
    if has_explicit_recipients(args) {
        let recipients = local::resolve_recipients(args, Some(first_key))?;
        let identities = cio::load_identity_files(&args.identities)?;
        return Ok((Recipients::fixed(recipients), identities));
    }
    let Some(path) = &args.keyring.keyring else {
        bail!("no recipients: pass -r, -R or -i, or a keyring with --keyring / R2SEAL_KEYRING");
    };
    let ring: Keyring = cio::LoadedKeyring::load(path)?.ring;
    let plan = ring.plan(first_key)?;
    if plan.lacks_recovery {
        eprintln!("r2seal: warning: sealing without a recovery key: if these keys are lost, so is the data (mark one with `r2seal key add … --recovery`)");
    }
    let identities = ring.identities();
    Ok((Recipients::Keyring(Arc::new(ring)), identities))
}

/// The name key when object names are encrypted: `R2SEAL_NAMES_KEY` (a symmetric key,
/// as a Worker gets it), else the keyring's `names` setting, else none.
pub(crate) fn name_key(keyring: &KeyringArg) -> Result<Option<NameKey>> {
    if let Some(s) = std::env::var("R2SEAL_NAMES_KEY")
        .ok()
        .filter(|s| !s.trim().is_empty())
    {
        let k = SymKey::parse(&s).context("R2SEAL_NAMES_KEY")?;
        return Ok(Some(NameKey::from_sym_key(&k)));
    }
    match &keyring.keyring {
        Some(path) => Ok(cio::LoadedKeyring::load(path)?.ring.name_key()),
        None => Ok(None),
    }
}

/// A sealed view of `store`, with names encrypted under `names` when given.
pub(crate) fn sealed_bucket(store: Arc<dyn Store>, names: &Option<NameKey>) -> SealedBucket {
    let bucket = SealedBucket::new(store);
    match names {
        Some(k) => bucket.with_name_key(k.clone()),
        None => bucket,
    }
}

fn read_identities(args: &IdentityArgs, allow_plaintext: bool) -> Result<Vec<Identity>> {
    if allow_plaintext && args.identities.is_empty() && args.keyring.keyring.is_none() {
        return Ok(Vec::new());
    }
    local::resolve_identities(args)
}

// ---------------------------------------------------------------------------------------
// Output helpers

fn print_json(v: serde_json::Value) -> Result<()> {
    print_line(v)
}

fn unix_secs(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

fn rfc3339(t: Option<SystemTime>) -> String {
    match t {
        Some(t) => time::OffsetDateTime::from(t)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| "-".into()),
        None => "-".into(),
    }
}

/// `ls --long`'s date column: UTC to the second, always 20 characters (stores differ in
/// the fraction they give: file:// tenths, Garage milliseconds).
fn listing_date(t: Option<SystemTime>) -> String {
    match t {
        Some(t) => {
            let t = time::OffsetDateTime::from(t);
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        None => "-".into(),
    }
}

/// `ls --long`'s ETag column: an MD5 in hex; a multipart ETag (`…-N`) is longer and
/// shifts its key.
const ETAG_WIDTH: usize = 32;

/// A progress line on stderr, redrawn a few times a second, for large transfers only
/// and only when stderr is a terminal.
struct Progress {
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(label: String, total: Option<u64>) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let show = std::io::stderr().is_terminal() && total.is_none_or(|t| t >= PROGRESS_MIN);
        let task = show.then(|| {
            let (done, stop) = (done.clone(), stop.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let n = done.load(Ordering::Relaxed);
                    let rate = mib(n) / started.elapsed().as_secs_f64().max(0.001);
                    let of = total
                        .map(|t| format!(" / {:.1}", mib(t)))
                        .unwrap_or_default();
                    eprint!("\r\x1b[2K{label}: {:.1}{of} MiB  {rate:.1} MiB/s", mib(n));
                }
                eprint!("\r\x1b[2K");
            })
        });
        Progress { done, stop, task }
    }

    fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    async fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Ranges

/// `START-END` (inclusive), `START-` or `-SUFFIX`, as HTTP.
pub(crate) fn parse_range(s: &str) -> Result<ByteRange> {
    ByteRange::parse(s).ok_or_else(|| {
        anyhow!("invalid range {s:?}: expected START-END, START- or -SUFFIX (inclusive, in bytes)")
    })
}

// ---------------------------------------------------------------------------------------
// put

fn parse_meta(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("invalid --meta {p:?}: expected KEY=VALUE"))?;
        if k.is_empty() {
            bail!("invalid --meta {p:?}: empty key");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Files under `dir`, as (path, `/`-separated relative path), sorted. Symlinks to files
/// are followed; hidden bucket metadata is skipped.
fn walk(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?
        {
            let entry = entry?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|n| anyhow!("{}: file name is not UTF-8", d.join(n).display()))?;
            if name == META_DIR {
                continue;
            }
            let path = entry.path();
            let rel_name = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::metadata(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if meta.is_dir() {
                stack.push((path, rel_name));
            } else if meta.is_file() {
                out.push((path, rel_name));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

fn join_key(prefix: &str, rel: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        format!("{prefix}{rel}")
    } else {
        format!("{prefix}/{rel}")
    }
}

pub fn put(args: PutArgs) -> Result<()> {
    if args.part_size < 5 {
        bail!("--part-size must be at least 5 (MiB): S3 and R2 refuse smaller parts");
    }
    let target = Target::parse(&args.url, true)?;
    let stdin = args.local.as_os_str() == "-";
    // (local path or None for stdin, key)
    let jobs: Vec<(Option<PathBuf>, String)> = if args.recursive {
        if stdin || !args.local.is_dir() {
            bail!(
                "--recursive needs a local directory: {}",
                args.local.display()
            );
        }
        walk(&args.local)?
            .into_iter()
            .map(|(p, rel)| (Some(p), join_key(&target.key, &rel)))
            .collect()
    } else if stdin {
        vec![(None, target.object_key()?.to_string())]
    } else {
        if args.local.is_dir() {
            bail!(
                "{} is a directory: pass --recursive to upload it",
                args.local.display()
            );
        }
        let key = if target.key.is_empty() || target.key.ends_with('/') {
            let name = args
                .local
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| anyhow!("{}: no usable file name", args.local.display()))?;
            format!("{}{name}", target.key)
        } else {
            target.key.clone()
        };
        // Fail on a missing input before touching keys or the network.
        std::fs::metadata(&args.local)
            .with_context(|| format!("cannot read {}", args.local.display()))?;
        vec![(Some(args.local.clone()), key)]
    };
    if jobs.is_empty() {
        bail!("{}: no files to upload", args.local.display());
    }
    let (recipients, _) = write_keys(&args.recipients, &jobs[0].1)?;
    let names = name_key(&args.recipients.keyring)?;
    let opts = PutOptions {
        content_type: args.content_type.clone(),
        cache_control: args.cache_control.clone(),
        content_encoding: args.content_encoding.clone(),
        content_disposition: args.content_disposition.clone(),
        content_language: None,
        metadata: parse_meta(&args.meta)?,
        if_match: args.if_match.clone(),
        if_none_match: args.no_clobber.then(|| "*".to_string()),
    };
    let rt = runtime()?;
    rt.block_on(async {
        let store = open_store(&target, args.remote.endpoint.as_deref()).await?;
        let bucket = sealed_bucket(store, &names)
            .with_recipients(recipients)
            .with_part_size(args.part_size * 1024 * 1024)
            .with_multipart_threshold(args.multipart_threshold * 1024 * 1024);
        let json = args.remote.json;
        let results = stream::iter(jobs.into_iter().map(|(path, key)| {
            let (bucket, opts, target) = (bucket.clone(), opts.clone(), target.clone());
            tokio::spawn(async move { put_one(&bucket, &target, path, key, &opts, json).await })
        }))
        .buffered(args.jobs.max(1))
        .collect::<Vec<_>>()
        .await;
        first_error(results)
    })
}

fn first_error(results: Vec<Result<Result<()>, tokio::task::JoinError>>) -> Result<()> {
    let mut failed = 0;
    let mut first = None;
    for r in results {
        let r = r
            .map_err(|e| anyhow!("a transfer task failed: {e}"))
            .and_then(|r| r);
        if let Err(e) = r {
            failed += 1;
            if first.is_none() {
                first = Some(e);
            } else {
                eprintln!("r2seal: {e:#}");
            }
        }
    }
    match first {
        None => Ok(()),
        Some(e) if failed == 1 => Err(e),
        Some(e) => Err(e.context(format!("{failed} transfers failed; the first"))),
    }
}

async fn put_one(
    bucket: &SealedBucket,
    target: &Target,
    path: Option<PathBuf>,
    key: String,
    opts: &PutOptions,
    json: bool,
) -> Result<()> {
    let url = target.url_of(&key);
    let (result, shown) = match &path {
        None => {
            let progress = Progress::start(format!("put {url}"), None);
            let reader = Counting {
                inner: tokio::io::stdin(),
                progress: progress.done.clone(),
            };
            let r = bucket.put_reader(&key, reader, None, opts).await;
            progress.finish().await;
            (r, "-".to_string())
        }
        Some(p) => {
            // A file can be read again: a put that failed in a way a retry can help (a
            // streamed request, which the SDK cannot replay, cut by the network) is
            // sent again, as the SDK does for requests from memory.
            let mut attempt = 0;
            loop {
                let file = tokio::fs::File::open(p)
                    .await
                    .with_context(|| format!("cannot open {}", p.display()))?;
                let len = file
                    .metadata()
                    .await
                    .with_context(|| format!("cannot read {}", p.display()))?
                    .len();
                let progress = Progress::start(format!("put {url}"), Some(len));
                let reader = Counting {
                    inner: file,
                    progress: progress.done.clone(),
                };
                let r = bucket.put_reader(&key, reader, Some(len), opts).await;
                progress.finish().await;
                match r {
                    Err(e) if e.is_retryable() && attempt < PUT_FILE_RETRIES => {
                        tokio::time::sleep(r2seal::jobs::backoff(attempt)).await;
                        attempt += 1;
                    }
                    r => break (r, p.display().to_string()),
                }
            }
        }
    };
    let put = result.map_err(flat)?;
    if json {
        print_json(json!({
            "op": "put", "local": shown, "url": url, "key": key, "size": put.size,
            "stored_size": put.stored_size, "etag": put.etag, "parts": put.parts,
        }))
    } else {
        print_line(format_args!("put {shown} -> {url} ({} bytes)", put.size))
    }
}

/// Counts bytes read, for the progress line.
struct Counting<R> {
    inner: R,
    progress: Arc<AtomicU64>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counting<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

// ---------------------------------------------------------------------------------------
// get / cat

/// A local path for `key` under `dir`, refusing keys that would escape it.
fn local_path_for(dir: &Path, rel: &str) -> Result<PathBuf> {
    let mut out = dir.to_path_buf();
    for seg in rel.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." || seg.contains('\\') {
            bail!("refusing to download key {rel:?}: it is not a plain relative path");
        }
        out.push(seg);
    }
    Ok(out)
}

pub fn get(args: GetArgs) -> Result<()> {
    let target = Target::parse(&args.url, false)?;
    let range = args.range.as_deref().map(parse_range).transpose()?;
    if args.recursive && range.is_some() {
        bail!("--range applies to one object, not to --recursive");
    }
    if !args.recursive {
        target.object_key()?;
    }
    let identities = read_identities(&args.identities, args.allow_plaintext)?;
    let names = name_key(&args.identities.keyring)?;
    let rt = runtime()?;
    rt.block_on(async {
        let store = open_store(&target, args.remote.endpoint.as_deref()).await?;
        let bucket = sealed_bucket(store, &names)
            .with_identities(identities)
            .allow_plaintext(args.allow_plaintext);
        let json = args.remote.json;
        if !args.recursive {
            let key = target.key.clone();
            let dest = match &args.local {
                Some(p) if p.is_dir() => p.join(file_name_of(&key)?),
                Some(p) => p.clone(),
                None => PathBuf::from(file_name_of(&key)?),
            };
            return get_one(&bucket, &target, key, dest, range, json).await;
        }
        let dir = args.local.clone().unwrap_or_else(|| PathBuf::from("."));
        let listing = bucket.list_all(&target.key, None).await.map_err(flat)?;
        if listing.objects.is_empty() {
            bail!(
                "{}: no objects under this prefix",
                target.url_of(&target.key)
            );
        }
        let mut jobs = Vec::new();
        for o in listing.objects {
            let rel = o.key[target.key.len()..]
                .trim_start_matches('/')
                .to_string();
            jobs.push((o.key, local_path_for(&dir, &rel)?));
        }
        let results = stream::iter(jobs.into_iter().map(|(key, dest)| {
            let (bucket, target) = (bucket.clone(), target.clone());
            // Not spawned (the local output holds a stdout lock type that is not Send):
            // the downloads still overlap, polled together.
            async move {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
                get_one(&bucket, &target, key, dest, None, json).await
            }
        }))
        .buffered(args.jobs.max(1))
        .collect::<Vec<_>>()
        .await;
        first_error(results.into_iter().map(Ok).collect())
    })
}

fn file_name_of(key: &str) -> Result<&str> {
    match key.rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." && n != ".." => Ok(n),
        _ => bail!("cannot derive a local file name from key {key:?}: give LOCAL"),
    }
}

async fn get_one(
    bucket: &SealedBucket,
    target: &Target,
    key: String,
    dest: PathBuf,
    range: Option<ByteRange>,
    json: bool,
) -> Result<()> {
    let url = target.url_of(&key);
    let got = bucket.get(&key, range).await.map_err(flat)?;
    let head = got.head.clone();
    let to_stdout = dest.as_os_str() == "-";
    // Created only now: a failed open leaves no file, and nothing is overwritten.
    let mut out = Output::new(Some(&dest))?;
    let total = got.range.map(|r| r.len()).unwrap_or(head.size);
    let progress = Progress::start(format!("get {url}"), Some(total));
    let mut body = got.body;
    let mut written = 0u64;
    let result: Result<()> = async {
        while let Some(chunk) = body.try_next().await.map_err(flat)? {
            out.write_all(&chunk)?;
            written += chunk.len() as u64;
            progress.add(chunk.len() as u64);
        }
        Ok(())
    }
    .await;
    progress.finish().await;
    result?;
    out.commit()?;
    if !head.sealed {
        eprintln!("r2seal: warning: {url} is a plaintext object (not sealed): returned as stored, unauthenticated");
    }
    let shown = dest.display().to_string();
    if json {
        let v = json!({
            "op": "get", "url": url, "key": key, "local": shown, "size": written,
            "object_size": head.size, "sealed": head.sealed, "etag": head.etag,
        });
        if to_stdout {
            eprintln!("{v}");
            Ok(())
        } else {
            print_json(v)
        }
    } else if to_stdout {
        Ok(())
    } else {
        print_line(format_args!("get {url} -> {shown} ({written} bytes)"))
    }
}

pub fn cat(args: CatArgs) -> Result<()> {
    let target = Target::parse(&args.url, false)?;
    let key = target.object_key()?.to_string();
    let range = args.range.as_deref().map(parse_range).transpose()?;
    let identities = read_identities(&args.identities, args.allow_plaintext)?;
    let names = name_key(&args.identities.keyring)?;
    let rt = runtime()?;
    rt.block_on(async {
        let store = open_store(&target, args.endpoint.as_deref()).await?;
        let bucket = sealed_bucket(store, &names)
            .with_identities(identities)
            .allow_plaintext(args.allow_plaintext);
        let got = bucket.get(&key, range).await.map_err(flat)?;
        if !got.head.sealed {
            eprintln!(
                "r2seal: warning: {} is a plaintext object (not sealed): printed as stored, unauthenticated",
                target.url_of(&key)
            );
        }
        let mut out = std::io::stdout().lock();
        let mut body = got.body;
        while let Some(chunk) = body.try_next().await.map_err(flat)? {
            out.write_all(&chunk)?;
        }
        out.flush()?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// ls, rm, head

pub fn ls(args: LsArgs) -> Result<()> {
    let target = Target::parse(&args.url, false)?;
    let names = name_key(&args.keyring)?;
    let rt = runtime()?;
    rt.block_on(async {
        let store = open_store(&target, args.remote.endpoint.as_deref()).await?;
        let bucket = sealed_bucket(store, &names);
        let delimiter = (!args.recursive).then_some("/");
        let mut token = None;
        loop {
            let page = bucket
                .list(&target.key, delimiter, token, None)
                .await
                .map_err(flat)?;
            for p in &page.common_prefixes {
                if args.remote.json {
                    print_json(json!({"prefix": p, "url": target.url_of(p)}))?;
                } else if args.long {
                    print_line(format_args!(
                        "{:>14}  {:<20}  {:<ETAG_WIDTH$}  {p}",
                        "PRE", "", ""
                    ))?;
                } else {
                    print_line(p)?;
                }
            }
            for o in &page.objects {
                if args.remote.json {
                    print_json(json!({
                        "key": o.key, "url": target.url_of(&o.key), "size": o.size,
                        "stored_size": o.stored_size, "etag": o.etag,
                        "last_modified": unix_secs(o.last_modified),
                    }))?;
                } else if args.long {
                    let size = o.size.map_or_else(|| "?".to_string(), |s| s.to_string());
                    print_line(format_args!(
                        "{size:>14}  {:<20}  {:<ETAG_WIDTH$}  {}",
                        listing_date(o.last_modified),
                        o.etag.trim_matches('"'),
                        o.key
                    ))?;
                } else {
                    print_line(&o.key)?;
                }
            }
            for o in &page.undecryptable {
                if args.remote.json {
                    print_json(json!({
                        "stored_key": o.key, "url": target.url_of(&o.key),
                        "stored_size": o.stored_size, "undecryptable": true,
                    }))?;
                }
                eprintln!(
                    "r2seal: warning: {} does not decrypt under the name key (a plaintext name, or another key's): skipped",
                    target.url_of(&o.key)
                );
            }
            for p in &page.undecryptable_prefixes {
                eprintln!(
                    "r2seal: warning: prefix {} does not decrypt under the name key: skipped",
                    target.url_of(p)
                );
            }
            match page.next_continuation {
                Some(t) => token = Some(t),
                None => return Ok(()),
            }
        }
    })
}

pub fn rm(args: RmArgs) -> Result<()> {
    let target = Target::parse(&args.url, false)?;
    let key = target.object_key()?.to_string();
    let names = name_key(&args.keyring)?;
    let rt = runtime()?;
    rt.block_on(async {
        let store = open_store(&target, args.remote.endpoint.as_deref()).await?;
        let bucket = sealed_bucket(store.clone(), &names);
        let stored = bucket.stored_key(&key).map_err(flat)?;
        // S3 deletes a missing key "successfully": check first so a typo is reported.
        store.head(&stored).await.map_err(flat)?;
        bucket.delete(&key).await.map_err(flat)?;
        let url = target.url_of(&key);
        if args.remote.json {
            print_json(json!({"op": "rm", "url": url, "key": key}))
        } else {
            print_line(format_args!("rm {url}"))
        }
    })
}

fn head_json(url: &str, h: &ObjectHead) -> serde_json::Value {
    json!({
        "url": url, "key": h.key, "sealed": h.sealed, "size": h.size,
        "stored_size": h.stored_size, "etag": h.etag,
        "last_modified": unix_secs(h.last_modified),
        "content_type": h.content_type, "cache_control": h.cache_control,
        "content_encoding": h.metadata.content_encoding,
        "content_disposition": h.metadata.content_disposition,
        "content_language": h.metadata.content_language,
        "md5": h.metadata.md5, "metadata": h.metadata.user,
    })
}

pub fn head(args: HeadArgs) -> Result<()> {
    let target = Target::parse(&args.url, false)?;
    let key = target.object_key()?.to_string();
    let identities = read_identities(&args.identities, args.allow_plaintext)?;
    let names = name_key(&args.identities.keyring)?;
    let rt = runtime()?;
    rt.block_on(async {
        let store = open_store(&target, args.remote.endpoint.as_deref()).await?;
        let bucket = sealed_bucket(store, &names)
            .with_identities(identities)
            .allow_plaintext(args.allow_plaintext);
        let h = bucket.head(&key).await.map_err(flat)?;
        let url = target.url_of(&key);
        let v = head_json(&url, &h);
        if args.remote.json {
            return print_json(v);
        }
        let mut lines = vec![
            format!("url:            {url}"),
            format!("sealed:         {}", h.sealed),
            format!("size:           {}", h.size),
            format!("stored size:    {}", h.stored_size),
            format!("etag:           {}", h.etag),
            format!("last modified:  {}", rfc3339(h.last_modified)),
        ];
        let opt = |label: &str, v: &Option<String>| v.as_ref().map(|v| format!("{label:<16}{v}"));
        lines.extend(opt("content-type:", &h.content_type));
        lines.extend(opt("cache-control:", &h.cache_control));
        lines.extend(opt("content-encoding:", &h.metadata.content_encoding));
        lines.extend(opt("content-disposition:", &h.metadata.content_disposition));
        lines.extend(opt("content-language:", &h.metadata.content_language));
        lines.extend(opt("md5:", &h.metadata.md5));
        for (k, v) in &h.metadata.user {
            lines.push(format!("meta {k}: {v}"));
        }
        if !h.sealed {
            lines.push("warning:        plaintext object (not sealed)".into());
        }
        print_line(lines.join("\n"))
    })
}

// ---------------------------------------------------------------------------------------
// cp, mv

pub fn copy(args: CopyArgs, remove_source: bool) -> Result<()> {
    let verb = if remove_source { "mv" } else { "cp" };
    let src = Target::parse(&args.src, false)?;
    let dst = Target::parse(&args.dst, true)?;
    if !args.recursive {
        src.object_key()?;
    }
    // (src key, dst key)
    let single_dst = |src_key: &str| -> Result<String> {
        if dst.key.is_empty() || dst.key.ends_with('/') {
            Ok(format!("{}{}", dst.key, file_name_of(src_key)?))
        } else {
            Ok(dst.key.clone())
        }
    };
    let first_dst = if args.recursive {
        dst.key.clone()
    } else {
        single_dst(&src.key)?
    };
    let (recipients, mut identities) = write_keys(&args.recipients, &first_dst)?;
    let names = name_key(&args.recipients.keyring)?;
    if identities.is_empty() && !args.allow_plaintext {
        // -r/-R only: the source still has to be opened.
        if let Some(path) = &args.recipients.keyring.keyring {
            identities = cio::LoadedKeyring::load(path)?.ring.identities();
        }
        if identities.is_empty() {
            bail!("no identities to open the source: pass -i FILE, or a keyring with --keyring / R2SEAL_KEYRING");
        }
    }
    let rt = runtime()?;
    rt.block_on(async {
        let endpoint = args.remote.endpoint.as_deref();
        let src_store = open_store(&src, endpoint).await?;
        let same_store = src.store_url == dst.store_url;
        let dst_store = if same_store {
            src_store.clone()
        } else {
            open_store(&dst, endpoint).await?
        };
        let make = |store| {
            sealed_bucket(store, &names)
                .with_recipients(recipients.clone())
                .with_identities(identities.clone())
                .allow_plaintext(args.allow_plaintext)
        };
        let (from, to) = (make(src_store), make(dst_store));
        let pairs: Vec<(String, String)> = if args.recursive {
            let listing = from.list_all(&src.key, None).await.map_err(flat)?;
            if listing.objects.is_empty() {
                bail!("{}: no objects under this prefix", src.url_of(&src.key));
            }
            listing
                .objects
                .into_iter()
                .map(|o| {
                    let rel = o.key[src.key.len()..].trim_start_matches('/').to_string();
                    let d = join_key(&dst.key, &rel);
                    (o.key, d)
                })
                .collect()
        } else {
            vec![(src.key.clone(), first_dst.clone())]
        };
        let json = args.remote.json;
        let results = stream::iter(pairs.into_iter().map(|(s, d)| {
            let (from, to, src, dst) = (from.clone(), to.clone(), src.clone(), dst.clone());
            tokio::spawn(async move {
                let size = if same_store {
                    let put = if remove_source {
                        from.rename(&s, &d).await
                    } else {
                        from.copy(&s, &d).await
                    };
                    put.map_err(flat)?.size
                } else {
                    // Another bucket or store: stream through, opening and re-sealing.
                    let got = from.get(&s, None).await.map_err(flat)?;
                    let len = got.head.size;
                    let opts = PutOptions {
                        content_type: got.head.content_type.clone(),
                        cache_control: got.head.cache_control.clone(),
                        content_encoding: got.head.metadata.content_encoding.clone(),
                        content_disposition: got.head.metadata.content_disposition.clone(),
                        content_language: got.head.metadata.content_language.clone(),
                        metadata: got.head.metadata.user.clone(),
                        ..Default::default()
                    };
                    let body = got.body.map_err(|e| std::io::Error::other(e.to_string()));
                    let put = to
                        .put_stream(&d, body, Some(len), &opts)
                        .await
                        .map_err(flat)?;
                    if remove_source {
                        from.delete(&s).await.map_err(flat)?;
                    }
                    put.size
                };
                let (su, du) = (src.url_of(&s), dst.url_of(&d));
                if json {
                    print_json(json!({"op": verb, "src": su, "dst": du, "size": size}))
                } else {
                    print_line(format_args!("{verb} {su} -> {du} ({size} bytes)"))
                }
            })
        }))
        .buffered(args.jobs.max(1))
        .collect::<Vec<_>>()
        .await;
        first_error(results)
    })
}

// ---------------------------------------------------------------------------------------
// cleanup

fn parse_age(s: &str) -> Result<Duration> {
    let bad = || anyhow!("invalid age {s:?}: expected a number with s, m, h or d (e.g. 24h), or 0");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let (num, unit) = s.split_at(s.len().checked_sub(1).ok_or_else(bad)?);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(secs))
}

pub fn cleanup(args: CleanupArgs) -> Result<()> {
    let target = Target::parse(&args.url, false)?;
    let age = parse_age(&args.older_than)?;
    let names = name_key(&args.keyring)?;
    let rt = runtime()?;
    rt.block_on(async {
        let store = open_store(&target, args.remote.endpoint.as_deref()).await?;
        let bucket = sealed_bucket(store, &names);
        let uploads = if args.dry_run {
            bucket.stale_uploads(&target.key, age).await
        } else {
            bucket.cleanup(&target.key, age).await
        }
        .map_err(|e| match e.store_error().map(|s| s.kind()) {
            Some(ErrorKind::Unsupported) => anyhow!("{e} (this store cannot list uploads)"),
            _ => flat(e),
        })?;
        let verb = if args.dry_run {
            "would abort"
        } else {
            "aborted"
        };
        for u in &uploads {
            let url = target.url_of(&u.key);
            if args.remote.json {
                print_json(json!({
                    "op": "cleanup", "url": url, "key": u.key, "upload_id": u.upload_id,
                    "initiated": unix_secs(u.initiated), "aborted": !args.dry_run,
                }))?;
            } else {
                print_line(format_args!(
                    "{verb} {url} (upload {}, started {})",
                    u.upload_id,
                    rfc3339(u.initiated)
                ))?;
            }
        }
        if uploads.is_empty() && !args.remote.json {
            if age.is_zero() {
                eprintln!("r2seal: no unfinished uploads");
            } else {
                eprintln!(
                    "r2seal: no unfinished uploads older than {}",
                    args.older_than
                );
            }
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// bucket init / show

/// The keyring a bucket command describes, and a sealed view of the store root with it.
async fn keyring_bucket(
    url: &str,
    keyring: &KeyringArg,
    endpoint: Option<&str>,
    for_write: bool,
) -> Result<(Target, SealedBucket)> {
    let target = Target::parse(url, for_write)?;
    if !target.key.is_empty() {
        bail!(
            "{url}: the descriptor belongs to a bucket (or store root): give the URL without a key"
        );
    }
    let path = cio::require_keyring(&keyring.keyring)?;
    let ring = cio::LoadedKeyring::load(path)?.ring;
    let names = ring.name_key();
    let store = open_store(&target, endpoint).await?;
    let bucket = sealed_bucket(store, &names).with_keyring(ring);
    Ok((target, bucket))
}

pub fn bucket(cmd: BucketCommand) -> Result<()> {
    let rt = runtime()?;
    match cmd {
        BucketCommand::Init {
            url,
            replace,
            keyring,
            remote,
        } => rt.block_on(async {
            let (target, bucket) = keyring_bucket(&url, &keyring, remote.endpoint.as_deref(), true).await?;
            let d = bucket.write_descriptor(replace).await.map_err(flat)?;
            let where_ = target.url_of(DESCRIPTOR_KEY);
            if remote.json {
                return print_json(json!({
                    "op": "bucket init", "url": where_, "config": d.config,
                    "mac_keys": d.mac_key_ids().iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                }));
            }
            print_line(format_args!("wrote {where_}"))?;
            if d.mac_key_ids().is_empty() {
                eprintln!("r2seal: warning: the keyring holds no symmetric key: the descriptor carries no MAC, so readers can only compare it, not authenticate it");
            }
            print_line(String::from_utf8_lossy(&d.to_bytes()).trim_end())
        }),
        BucketCommand::Show {
            url,
            keyring,
            remote,
        } => rt.block_on(async {
            let (target, bucket) = keyring_bucket(&url, &keyring, remote.endpoint.as_deref(), false).await?;
            let Some((d, auth)) = bucket.read_descriptor().await.map_err(flat)? else {
                bail!("{}: no bucket descriptor (write one with `r2seal bucket init`)", target.url_of(DESCRIPTOR_KEY));
            };
            let mine = bucket.bucket_config();
            let diff = mine.as_ref().map(|m| d.config.differences(m)).unwrap_or_default();
            let authenticated = match &auth {
                Authenticity::Authenticated(ids) => Some(ids.iter().map(|k| k.to_string()).collect::<Vec<_>>()),
                Authenticity::Unauthenticated => None,
            };
            // A difference is a failure after the report, so `bucket show` works as a check.
            let refused = || -> Result<()> {
                ensure!(
                    diff.is_empty(),
                    "{}: this keyring differs from the descriptor: its writes are refused",
                    target.url_of(DESCRIPTOR_KEY)
                );
                Ok(())
            };
            if remote.json {
                print_json(json!({
                    "url": target.url_of(DESCRIPTOR_KEY), "config": d.config,
                    "mac_keys": d.mac_key_ids().iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                    "authenticated_by": authenticated, "matches_keyring": diff.is_empty(),
                    "differences": diff,
                }))?;
                return refused();
            }
            let c = &d.config;
            let mut lines = vec![
                format!("descriptor:     {}", target.url_of(DESCRIPTOR_KEY)),
                format!("form:           {}", c.form),
                format!("names:          {}", c.names.as_deref().map_or("plaintext".to_string(), |n| format!("encrypted (name key {n})"))),
                format!("default:        {}", c.default.join(" ")),
            ];
            for p in &c.policies {
                lines.push(format!("policy:         {:?} -> {}", p.prefix, p.keys.join(" ")));
            }
            lines.push(match authenticated {
                Some(ids) => format!("authenticated:  yes, MAC under key {}", ids.join(" ")),
                None => "authenticated:  no (no MAC under a symmetric key of this keyring): compared only".to_string(),
            });
            if diff.is_empty() {
                lines.push("this keyring:   matches (writes are allowed)".into());
            } else {
                lines.push("this keyring:   DIFFERS (writes are refused):".into());
                lines.extend(diff.iter().map(|d| format!("  - {d}")));
            }
            print_line(lines.join("\n"))?;
            refused()
        }),
    }
}
