//! `export` and `import`: a decrypted local copy of a bucket, and the way back.
//!
//! Export writes every object under a prefix to `DIR/<key relative to the prefix>`:
//! - atomically per file: the plaintext streams into a hidden temp file in the target
//!   directory (mode 0600 on Unix), which is renamed into place only after the whole object
//!   authenticated; a failure removes it, so no partial or unauthenticated file appears
//!   under an object's name;
//! - incrementally: `DIR/.r2seal-export.json` records the stored ETag and plaintext size
//!   of each file written; an object whose ETag (from the listing) and local file are
//!   unchanged is skipped. A rewrap (rotation, `cp`) keeps the body, so usually the ETag;
//! - refusing keys that would escape DIR or cannot be a relative path (`..`, `.`, empty
//!   segments, a leading `/`, backslashes, NUL, the manifest's own name), with a clear
//!   error for that object;
//! - restoring the modification time from rclone's `mtime` metadata (Unix seconds with an
//!   optional fraction) when the object has it;
//! - noticing files it wrote whose objects are gone (in the manifest, not listed by a
//!   complete walk of the same source): reported, and with `delete_gone` removed (only
//!   those, and only while their size is what was written).
//!
//! Import seals every file under a directory into the bucket (`put_file`, streamed),
//! storing the file's mtime as rclone does (`mtime` user metadata, sealed); a file whose
//! object already exists with the same plaintext size and mtime is skipped.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::rotate::outcome_of;
use super::{Item, JobConfig, Outcome, Report};
use crate::sealed::{PutOptions, SealedBucket};
use crate::tempfiles::LiveTemp;

/// The manifest's file name at the top of an export directory.
pub const MANIFEST: &str = ".r2seal-export.json";
/// Prefix of temp files written next to their final name; no key maps to such a name.
pub const TEMP_PREFIX: &str = ".r2seal-tmp-";
/// Objects exported between two saves of the manifest (so a crash loses little).
const SAVE_EVERY: u64 = 256;

/// What an export wrote for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The stored object's ETag when it was exported.
    pub etag: String,
    /// Plaintext bytes written.
    pub size: u64,
}

/// `DIR/.r2seal-export.json`: key (relative to the exported prefix) → what was written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// The bucket and prefix exported (absent in manifests of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Another source was exported into the same directory too: which files belong to
    /// which is unknown, so none is ever reported or deleted as gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mixed_sources: bool,
    pub files: BTreeMap<String, ManifestEntry>,
}

impl Manifest {
    /// The manifest in `dir`, or an empty one if there is none yet.
    pub fn load(dir: &Path) -> std::io::Result<Manifest> {
        match std::fs::read(dir.join(MANIFEST)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: not an export manifest: {e}",
                        dir.join(MANIFEST).display()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest {
                version: 1,
                source: None,
                mixed_sources: false,
                files: BTreeMap::new(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Write atomically (temp file, fsync, rename).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("manifest serializes");
        // Dropped on an error, the registration removes the temp file.
        let (mut f, live) = LiveTemp::create_in(dir, TEMP_PREFIX, "")?;
        f.write_all(&json)?;
        f.sync_all()?;
        drop(f);
        live.persist(&dir.join(MANIFEST))
    }
}

/// The relative path an object key maps to under an export directory, or why it cannot:
/// keys are `/`-separated; every segment must be a plain name.
pub fn local_path(rel_key: &str) -> Result<PathBuf, String> {
    if rel_key.is_empty() {
        return Err("empty key".into());
    }
    if rel_key.starts_with('/') {
        return Err("absolute key (starts with /) would escape the directory".into());
    }
    if rel_key.ends_with('/') {
        return Err("a directory marker (ends with /), not a file".into());
    }
    if rel_key.contains('\\') || rel_key.contains('\0') {
        return Err("contains a backslash or NUL, which is not portable as a path".into());
    }
    let mut path = PathBuf::new();
    for seg in rel_key.split('/') {
        match seg {
            "" => return Err("empty path segment (//)".into()),
            "." | ".." => return Err(format!("path segment {seg:?} would escape the directory")),
            s if s.starts_with(TEMP_PREFIX) => {
                return Err("name reserved for export's temp files".into())
            }
            s => path.push(s),
        }
    }
    if rel_key == MANIFEST {
        return Err("name reserved for the export manifest".into());
    }
    Ok(path)
}

/// rclone's `mtime` metadata: Unix seconds, optionally with a fraction.
pub fn parse_mtime(v: &str) -> Option<SystemTime> {
    let (secs, frac) = v.trim().split_once('.').unwrap_or((v.trim(), ""));
    let secs: u64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// `mtime` as rclone writes it: seconds and nanoseconds.
pub fn format_mtime(t: SystemTime) -> Option<String> {
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    Some(format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
}

/// Export one object to `dir`. `rel` is its key relative to the exported prefix.
pub async fn export_object(
    bucket: &SealedBucket,
    dir: &Path,
    item: &Item,
    rel: &str,
    manifest: &Mutex<Manifest>,
    dry_run: bool,
) -> Outcome {
    let path = match local_path(rel) {
        Ok(p) => dir.join(p),
        Err(why) => {
            return Outcome::Failed(format!("refusing key {:?}: {why}", item.key));
        }
    };
    let known = manifest
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .files
        .get(rel)
        .cloned();
    if let (Some(known), Some(etag)) = (&known, &item.etag) {
        let same_file =
            std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == known.size);
        if crate::store::etag_eq(&known.etag, etag) && same_file {
            return Outcome::Skipped("unchanged since the last export".into());
        }
    }
    if dry_run {
        return Outcome::Done { bytes: item.size };
    }
    match write_object(bucket, &path, &item.key).await {
        Ok((etag, size)) => {
            let mut m = manifest.lock().unwrap_or_else(|p| p.into_inner());
            m.files
                .insert(rel.to_string(), ManifestEntry { etag, size });
            Outcome::Done { bytes: size }
        }
        Err(ExportError::Sealed(e)) => outcome_of(&e),
        Err(ExportError::Local(why)) => Outcome::Failed(why),
    }
}

enum ExportError {
    Sealed(crate::sealed::SealedError),
    Local(String),
}

async fn write_object(
    bucket: &SealedBucket,
    path: &Path,
    key: &str,
) -> Result<(String, u64), ExportError> {
    let local = |what: &str, e: std::io::Error| {
        ExportError::Local(format!("{}: {what}: {e}", path.display()))
    };
    let parent = path.parent().expect("under the export directory");
    std::fs::create_dir_all(parent).map_err(|e| local("cannot create the directory", e))?;
    if path.is_dir() {
        return Err(ExportError::Local(format!(
            "{}: a directory is in the way (another key is a prefix of this one)",
            path.display()
        )));
    }
    let got = bucket.get(key, None).await.map_err(ExportError::Sealed)?;
    // Registered so that an interrupted process removes it (crate::tempfiles); dropped on
    // an error, the registration removes it too.
    let (file, live) = LiveTemp::create_in(parent, TEMP_PREFIX, "")
        .map_err(|e| local("cannot create a temp file", e))?;
    let result = async {
        let mut file = tokio::fs::File::from_std(file);
        let mut body = got.body;
        let mut size = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(ExportError::Sealed)? {
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(|e| local("cannot write", e))?;
            size += chunk.len() as u64;
        }
        let file = file.into_std().await;
        file.sync_all().map_err(|e| local("cannot sync", e))?;
        if let Some(t) = got
            .head
            .metadata
            .user
            .get("mtime")
            .and_then(|v| parse_mtime(v))
        {
            file.set_modified(t)
                .map_err(|e| local("cannot set the modification time", e))?;
        }
        drop(file);
        Ok((got.head.etag.clone(), size))
    }
    .await;
    let done = result?;
    // Only now, with every byte authenticated, does the file get its name.
    live.persist(path)
        .map_err(|e| local("cannot rename into place", e))?;
    Ok(done)
}

/// How an export treats local files.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Remove files an earlier export wrote whose objects are gone from the bucket.
    pub delete_gone: bool,
}

/// Local files the report lists by name, at most.
const GONE_LISTED: usize = 5;

/// Export every object under `prefix` (relative to the store root) into `dir`. The
/// manifest is saved every few hundred objects and at the end.
pub async fn run_export(
    bucket: SealedBucket,
    prefix: &str,
    dir: &Path,
    cfg: &JobConfig,
) -> std::io::Result<Report> {
    run_export_with(bucket, prefix, dir, cfg, &ExportOptions::default()).await
}

/// [`run_export`] with options. Files in the manifest whose keys a complete walk (no
/// listing error, shard, sample or undecryptable name) did not list are reported in
/// [`Report::notes`], and with [`ExportOptions::delete_gone`] removed.
pub async fn run_export_with(
    bucket: SealedBucket,
    prefix: &str,
    dir: &Path,
    cfg: &JobConfig,
    opts: &ExportOptions,
) -> std::io::Result<Report> {
    std::fs::create_dir_all(dir)?;
    let mut loaded = Manifest::load(dir)?;
    let source = format!("{}/{prefix}", bucket.store().url().trim_end_matches('/'));
    // Files of another source's export are not this walk's to judge, now or later.
    if loaded.source.as_ref().is_some_and(|s| *s != source) {
        loaded.mixed_sources = true;
    }
    let same_source = !loaded.mixed_sources;
    loaded.source.get_or_insert(source);
    let manifest = Arc::new(Mutex::new(loaded));
    // Keys (relative to the prefix) the walk listed, and whether some did not decrypt.
    let listed: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let undecryptable = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = bucket.store().clone();
    let bucket_for_prefix = bucket.clone();
    let (dir_buf, prefix_owned, dry_run) = (dir.to_path_buf(), prefix.to_string(), cfg.dry_run);
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let work = {
        let (manifest, listed, undecryptable) =
            (manifest.clone(), listed.clone(), undecryptable.clone());
        move |item: Item| {
            let (bucket, manifest, dir, prefix, counter) = (
                bucket.clone(),
                manifest.clone(),
                dir_buf.clone(),
                prefix_owned.clone(),
                counter.clone(),
            );
            let (listed, undecryptable) = (listed.clone(), undecryptable.clone());
            async move {
                // The walker lists stored keys; with encrypted names they differ.
                let plain = match super::rotate::plain_key_in(&bucket, &item.key, &prefix) {
                    Ok(k) => k,
                    Err(out) => {
                        if matches!(out, Outcome::Failed(_)) {
                            undecryptable.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        return out;
                    }
                };
                let rel = plain.strip_prefix(&prefix).unwrap_or(&plain).to_string();
                listed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(rel.clone());
                let item = Item { key: plain, ..item };
                let out = export_object(&bucket, &dir, &item, &rel, &manifest, dry_run).await;
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if !dry_run && n % SAVE_EVERY == 0 {
                    let snapshot = manifest.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let _ = snapshot.save(&dir);
                }
                out
            }
        }
    };
    let walk = super::rotate::walk_prefix(&bucket_for_prefix, prefix);
    let mut report = super::run(store, &walk, cfg, work).await;
    let walk_complete = report.list_error.is_none()
        && cfg.shard.is_none()
        && cfg.sample.is_none()
        && !undecryptable.load(std::sync::atomic::Ordering::Relaxed);
    if same_source && walk_complete {
        let listed = std::mem::take(&mut *listed.lock().unwrap_or_else(|p| p.into_inner()));
        let mut m = manifest.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> = m
            .files
            .keys()
            .filter(|rel| !listed.contains(*rel))
            .cloned()
            .collect();
        if let Some(note) = handle_gone(dir, &mut m, &gone, opts.delete_gone, cfg.dry_run) {
            report.notes.push(note);
        }
    }
    if !cfg.dry_run {
        let m = manifest.lock().unwrap_or_else(|p| p.into_inner()).clone();
        m.save(dir)?;
    }
    Ok(report)
}

/// Report (and with `delete`, remove) the files the manifest `m` lists under `gone`:
/// written by an earlier export, their objects no longer listed. A file is removed
/// only if it still is a regular file of the size written; removed ones leave the
/// manifest. Returns the sentence for the report.
fn handle_gone(
    dir: &Path,
    m: &mut Manifest,
    gone: &[String],
    delete: bool,
    dry_run: bool,
) -> Option<String> {
    let present: Vec<&String> = gone
        .iter()
        .filter(|rel| local_path(rel).is_ok_and(|p| dir.join(p).is_file()))
        .collect();
    for rel in gone.iter().filter(|rel| !present.contains(rel)) {
        if !dry_run {
            m.files.remove(rel); // deleted locally already
        }
    }
    if present.is_empty() {
        return None;
    }
    let names = |list: &[&String]| {
        let mut s: Vec<String> = list
            .iter()
            .take(GONE_LISTED)
            .map(|r| r.to_string())
            .collect();
        if list.len() > GONE_LISTED {
            s.push(format!("… {} more", list.len() - GONE_LISTED));
        }
        s.join(", ")
    };
    let n = present.len();
    let files = if n == 1 { "file" } else { "files" };
    if !delete {
        return Some(format!(
            "{n} local {files} no longer in the bucket: {} (--delete removes them).",
            names(&present)
        ));
    }
    if dry_run {
        return Some(format!(
            "{n} local {files} no longer in the bucket would be deleted: {}.",
            names(&present)
        ));
    }
    let (mut deleted, mut kept, mut problems) = (Vec::new(), Vec::new(), Vec::new());
    for rel in present {
        let path = dir.join(local_path(rel).expect("checked above"));
        let written = m.files.get(rel).map(|e| e.size);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() && Some(meta.len()) == written => {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        m.files.remove(rel);
                        deleted.push(rel);
                    }
                    Err(e) => problems.push(format!("{}: {e}", path.display())),
                }
            }
            _ => kept.push(rel),
        }
    }
    let mut note = String::new();
    if !deleted.is_empty() {
        note.push_str(&format!(
            "Deleted {} local {} no longer in the bucket: {}.",
            deleted.len(),
            if deleted.len() == 1 { "file" } else { "files" },
            names(&deleted)
        ));
    }
    if !kept.is_empty() {
        note.push_str(&format!(
            " Kept {} changed since exported: {}.",
            kept.len(),
            names(&kept)
        ));
    }
    if !problems.is_empty() {
        note.push_str(&format!(" Could not delete: {}.", problems.join("; ")));
    }
    Some(note.trim_start().to_string())
}

/// Files under `dir` as (path, `/`-separated relative path), sorted; symlinks are not
/// followed, export's manifest and temp files are left out.
pub fn walk_dir(dir: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: file name is not UTF-8", entry.path().display()),
                ));
            };
            if rel.is_empty() && name == MANIFEST || name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let r = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push((entry.path(), r));
            } else if ft.is_file() {
                out.push((entry.path(), r));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Seal every file under `dir` into the bucket under `prefix`, `cfg.jobs` at a time.
/// Incremental: a file whose object exists with the same plaintext size and the same
/// sealed `mtime` is skipped (one listing, then a HEAD only for same-size candidates).
pub async fn run_import(
    bucket: SealedBucket,
    dir: &Path,
    prefix: &str,
    cfg: &JobConfig,
) -> std::io::Result<Report> {
    let started = std::time::Instant::now();
    let files = walk_dir(dir)?;
    let listing = bucket
        .list_all(prefix, None)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let sizes: BTreeMap<String, Option<u64>> = listing
        .objects
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let sizes = Arc::new(sizes);
    let dry_run = cfg.dry_run;
    let results: Vec<(String, Outcome)> = futures_util::stream::iter(files)
        .map(|(path, rel)| {
            let (bucket, sizes) = (bucket.clone(), sizes.clone());
            let key = format!("{prefix}{rel}");
            async move {
                let out = import_file(&bucket, &path, &key, &sizes, dry_run).await;
                (key, out)
            }
        })
        .buffer_unordered(cfg.jobs.max(1))
        .collect()
        .await;
    let mut report = Report {
        job: cfg.label.clone(),
        url: format!("{}/{prefix}", bucket.store().url().trim_end_matches('/')),
        dry_run,
        listed: results.len() as u64,
        processed: results.len() as u64,
        ..Default::default()
    };
    for (key, out) in results {
        report.record(key, out, 1, cfg.record_done);
    }
    report.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn import_file(
    bucket: &SealedBucket,
    path: &Path,
    key: &str,
    sizes: &BTreeMap<String, Option<u64>>,
    dry_run: bool,
) -> Outcome {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Outcome::Failed(format!("{}: {e}", path.display())),
    };
    let mtime = meta.modified().ok().and_then(format_mtime);
    if let Some(Some(size)) = sizes.get(key) {
        if *size == meta.len() {
            match bucket.head(key).await {
                Ok(h) if h.metadata.user.get("mtime") == mtime.as_ref() && mtime.is_some() => {
                    return Outcome::Skipped("unchanged since the last import".into())
                }
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return outcome_of(&e),
            }
        }
    }
    if dry_run {
        return Outcome::Done { bytes: meta.len() };
    }
    let mut opts = PutOptions::default();
    if let Some(m) = mtime {
        opts.metadata.insert("mtime".into(), m);
    }
    match bucket.put_file(key, path, &opts).await {
        Ok(put) => Outcome::Done { bytes: put.size },
        Err(e) => outcome_of(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_keys_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "dir/",
            "a\\..\\b",
            "a\0b",
            MANIFEST,
            "x/.r2seal-tmp-1",
        ] {
            assert!(local_path(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(
            local_path("a/b.json").unwrap(),
            PathBuf::from("a").join("b.json")
        );
        assert_eq!(
            local_path("sub/.r2seal-export.json").unwrap(),
            PathBuf::from("sub/.r2seal-export.json")
        );
    }

    #[test]
    fn rclone_mtime_round_trips() {
        let t = parse_mtime("1700000000.123456789").unwrap();
        assert_eq!(format_mtime(t).unwrap(), "1700000000.123456789");
        assert_eq!(
            parse_mtime("1700000000").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert_eq!(
            parse_mtime("1700000000.5").unwrap(),
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)
        );
        for bad in ["", "x", "-1", "1.2.3", "1.1234567890"] {
            assert!(parse_mtime(bad).is_none(), "{bad:?}");
        }
    }
}
