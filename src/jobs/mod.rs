//! Bucket jobs: one concurrent, resumable walker over a bucket (or a prefix of one) that
//! `migrate`, `verify`, `rotate` and `export` drive with their own per-object work.
//!
//! The walker owns listing (paginated, streamed: a lister task runs ahead of the workers
//! through a bounded queue, so a huge bucket is never held in memory), sharding by a
//! stable hash of the key, concurrency, retries with backoff, progress on stderr and the
//! final [`Report`]. It never touches object bodies or keys: that is the work closure's
//! job. Resumability comes from the work being idempotent (a rerun skips what is done),
//! not from any state file.

pub mod export;
pub mod migrate;
pub mod rotate;
pub mod verify;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// Listed entries queued ahead of the workers (bounds memory on huge buckets).
const QUEUE: usize = 4096;
/// First retry delay; doubles per attempt up to [`MAX_BACKOFF`], with jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How a job runs.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Objects processed concurrently (at least 1).
    pub jobs: usize,
    /// Only the objects of this shard (`--shard K/N`).
    pub shard: Option<Shard>,
    /// Decide and report, write nothing. The walker passes this on; the work honours it.
    pub dry_run: bool,
    /// Draw a progress line on stderr (only if stderr is a terminal).
    pub progress: bool,
    /// Further attempts after a [`Outcome::Retry`] or [`Outcome::Conflict`] (0: none).
    pub max_retries: u32,
    /// Keep an [`Entry`] for every object done, not only for skips and problems
    /// (`--report FILE` wants them; a huge bucket without a report does not).
    pub record_done: bool,
    /// Label for progress and summary (`migrate`, `verify`, …).
    pub label: String,
    /// Keys per listing page (1..=1000).
    pub page_size: u32,
    /// Only a uniform random sample of this many objects (of this shard), chosen once
    /// the listing is complete (reservoir sampling: memory for the sample only).
    pub sample: Option<u64>,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            jobs: 8,
            shard: None,
            dry_run: false,
            progress: false,
            max_retries: 3,
            record_done: true,
            label: "job".into(),
            page_size: crate::store::DEFAULT_MAX_KEYS,
            sample: None,
        }
    }
}

/// One shard of a bucket: objects whose key hashes to `index` of `count` (1-based, as
/// written on the command line: `--shard 2/3`). The hash is SHA-256 of the stored key,
/// so every machine and every version agrees on the split, and N runs over shards 1..=N
/// cover every object exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether `key` (relative to the store root) belongs to this shard.
    pub fn contains(&self, key: &str) -> bool {
        let digest = Sha256::digest(key.as_bytes());
        let h = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        h % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid shard {s:?}: expected K/N with 1 <= K <= N (e.g. 2/4)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// An object as the listing described it. The work must not trust `etag` for a
/// conditional write: it may be stale by the time the work runs (read the object first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Key relative to the store root.
    pub key: String,
    /// Stored size from the listing.
    pub size: u64,
    /// ETag from the listing.
    pub etag: Option<String>,
}

/// What the work did with one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or, in a dry run, would be done), moving `bytes` (plaintext) through.
    Done { bytes: u64 },
    /// Done in a way the report counts apart (`how`: "moved to its encrypted name", …).
    DoneAs { bytes: u64, how: String },
    /// Nothing to do, and why (already sealed, …). Not a problem.
    Skipped(String),
    /// The object changed under us (a conditional write was refused): nothing was
    /// written. The walker tries again (the work re-reads), then reports it.
    Conflict(String),
    /// Could not be done, and trying again will not help.
    Failed(String),
    /// Failed in a way a retry can help (network, 5xx): the walker backs off and tries
    /// again, up to `max_retries`, then records it as [`Outcome::Failed`].
    Retry(String),
}

impl Outcome {
    /// Map a store error: retryable ones to [`Outcome::Retry`], a refused condition to
    /// [`Outcome::Conflict`], the rest to [`Outcome::Failed`].
    pub fn from_store_error(e: &StoreError) -> Outcome {
        if e.is_precondition_failed() {
            Outcome::Conflict(e.to_string())
        } else if e.is_retryable() {
            Outcome::Retry(e.to_string())
        } else {
            Outcome::Failed(e.to_string())
        }
    }
}

/// What happened to one object, in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub key: String,
    /// `done`, `skipped`, `conflict` or `failed`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Times the work ran for this object (more than 1 after retries).
    pub attempts: u32,
}

/// The result of a job: counts and per-object entries (`--report FILE` writes it as JSON).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub job: String,
    /// The store and prefix walked.
    pub url: String,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Objects the listing returned (all shards).
    pub listed: u64,
    /// Objects in this shard, handed to the work.
    pub processed: u64,
    pub done: u64,
    pub skipped: u64,
    pub conflicts: u64,
    pub failures: u64,
    /// Of `failures`, those that failed transiently (network, 5xx) until the retries ran
    /// out: a rerun may finish them. The others need attention first (keys not held,
    /// names that do not decrypt, keys refused, …).
    pub transient_failures: u64,
    /// Skips by reason.
    pub skipped_by_reason: BTreeMap<String, u64>,
    /// Objects done in a way counted apart ([`Outcome::DoneAs`]), by how; also in `done`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub done_by_kind: BTreeMap<String, u64>,
    /// Plaintext bytes moved by the objects done.
    pub bytes: u64,
    pub elapsed_secs: f64,
    /// The listing failed part way: objects after that point were not seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_error: Option<String>,
    /// Further findings of the job, one sentence each (export: local files whose
    /// objects are gone); in the summary too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Entries for every skip, conflict and failure, and for objects done when
    /// [`JobConfig::record_done`] is set; in completion order.
    pub entries: Vec<Entry>,
}

impl Report {
    /// Nothing was left undone: no conflict, no failure, the listing finished.
    pub fn is_complete(&self) -> bool {
        self.conflicts == 0 && self.failures == 0 && self.list_error.is_none()
    }

    /// Something was left undone that running the job again may finish: conflicts,
    /// transient failures, a listing that broke off.
    pub fn rerun_may_finish(&self) -> bool {
        self.conflicts > 0 || self.transient_failures > 0 || self.list_error.is_some()
    }

    /// Failures a rerun alone will not fix.
    pub fn permanent_failures(&self) -> u64 {
        self.failures - self.transient_failures
    }

    /// One paragraph for a human; `done_word` says what "done" means (`sealed`, …).
    pub fn summary(&self, done_word: &str) -> String {
        let mut s = format!(
            "{}{} {}: {} object{} listed",
            self.job,
            if self.dry_run { " (dry run)" } else { "" },
            self.url,
            self.listed,
            if self.listed == 1 { "" } else { "s" },
        );
        if let Some(shard) = &self.shard {
            s.push_str(&format!(", {} in shard {shard}", self.processed));
        }
        let done_word = if self.dry_run {
            format!("would be {done_word}")
        } else {
            done_word.to_string()
        };
        let kinds: String = self
            .done_by_kind
            .iter()
            .map(|(how, n)| format!("; {n} {how}"))
            .collect();
        s.push_str(&format!(
            "; {} {done_word} ({}{kinds}), {} skipped",
            self.done,
            human_bytes(self.bytes),
            self.skipped
        ));
        if !self.skipped_by_reason.is_empty() {
            let reasons: Vec<String> = self
                .skipped_by_reason
                .iter()
                .map(|(r, n)| format!("{n} {r}"))
                .collect();
            s.push_str(&format!(" ({})", reasons.join(", ")));
        }
        s.push_str(&format!(
            ", {} conflict{}, {} failure{} in {:.1} s",
            self.conflicts,
            if self.conflicts == 1 { "" } else { "s" },
            self.failures,
            if self.failures == 1 { "" } else { "s" },
            self.elapsed_secs,
        ));
        // A dry run moves no bytes: a rate would be the listing's speed, not the job's.
        if !self.dry_run {
            s.push_str(&format!(
                " ({}/s)",
                human_bytes((self.bytes as f64 / self.elapsed_secs.max(0.001)) as u64)
            ));
        }
        s.push('.');
        if let Some(e) = &self.list_error {
            s.push_str(&format!(
                " The listing failed, so objects after that point were not seen: {e}."
            ));
        }
        for note in &self.notes {
            s.push(' ');
            s.push_str(note);
        }
        if self.rerun_may_finish() {
            s.push_str(" Work was left undone: rerun to finish (done objects are skipped).");
        }
        let permanent = self.permanent_failures();
        if permanent > 0 {
            s.push_str(&format!(
                " {permanent} failure{} will not go away by running it again: see {}.",
                if permanent == 1 { "" } else { "s" },
                if permanent == 1 {
                    "its message"
                } else {
                    "their messages"
                }
            ));
        }
        s
    }

    fn record(&mut self, key: String, outcome: Outcome, attempts: u32, record_done: bool) {
        let (name, bytes, detail) = match outcome {
            Outcome::Done { bytes } => {
                self.done += 1;
                self.bytes += bytes;
                if !record_done {
                    return;
                }
                ("done", Some(bytes), None)
            }
            Outcome::DoneAs { bytes, how } => {
                self.done += 1;
                self.bytes += bytes;
                *self.done_by_kind.entry(how.clone()).or_default() += 1;
                if !record_done {
                    return;
                }
                ("done", Some(bytes), Some(how))
            }
            Outcome::Skipped(why) => {
                self.skipped += 1;
                *self.skipped_by_reason.entry(why.clone()).or_default() += 1;
                ("skipped", None, Some(why))
            }
            Outcome::Conflict(why) => {
                self.conflicts += 1;
                ("conflict", None, Some(why))
            }
            Outcome::Failed(why) => {
                self.failures += 1;
                ("failed", None, Some(why))
            }
            Outcome::Retry(why) => {
                self.failures += 1;
                self.transient_failures += 1;
                ("failed", None, Some(why))
            }
        };
        self.entries.push(Entry {
            key,
            outcome: name,
            bytes,
            detail,
            attempts,
        });
    }
}

/// `1.5 MiB`-style sizes for messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Counters shared by the lister, the workers and the progress line.
#[derive(Default)]
struct Counters {
    listed: AtomicU64,
    /// Handed (or about to be handed) to the workers: this shard, or the sample.
    queued: AtomicU64,
    queued_bytes: AtomicU64,
    listing_done: AtomicBool,
    finished: AtomicU64,
    finished_bytes: AtomicU64,
}

/// Walk every object under `prefix` (relative to the store root) and run `work` on each
/// one of this shard, `cfg.jobs` at a time, each on its own task. Never fails as a whole:
/// problems (a listing that breaks off, objects that fail) are in the [`Report`].
pub async fn run<F, Fut>(store: Arc<dyn Store>, prefix: &str, cfg: &JobConfig, work: F) -> Report
where
    F: Fn(Item) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let list_error: Arc<Mutex<Option<String>>> = Arc::default();
    let (tx, rx) = tokio::sync::mpsc::channel::<Item>(QUEUE);

    // The lister: pages in, items out, retrying a page that fails transiently.
    let lister = {
        let (store, prefix, counters, list_error) = (
            store.clone(),
            prefix.to_string(),
            counters.clone(),
            list_error.clone(),
        );
        let (shard, max_retries, page_size, sample) =
            (cfg.shard, cfg.max_retries, cfg.page_size, cfg.sample);
        tokio::spawn(async move {
            let mut token = None;
            let mut reservoir = Vec::new();
            let mut eligible = 0u64; // objects of this shard seen, for the sample
            'pages: loop {
                let mut attempt = 0;
                let page = loop {
                    match store
                        .list(&prefix, None, token.clone(), Some(page_size))
                        .await
                    {
                        Ok(page) => break page,
                        Err(e) if e.is_retryable() && attempt < max_retries.max(3) => {
                            tokio::time::sleep(backoff(attempt)).await;
                            attempt += 1;
                        }
                        Err(e) => {
                            *list_error.lock().expect("not poisoned") = Some(e.to_string());
                            break 'pages;
                        }
                    }
                };
                for o in page.objects {
                    counters.listed.fetch_add(1, Ordering::Relaxed);
                    if is_reserved(&o.key) || !shard.is_none_or(|s| s.contains(&o.key)) {
                        continue;
                    }
                    let item = Item {
                        key: o.key,
                        size: o.size,
                        etag: Some(o.etag),
                    };
                    if let Some(n) = sample {
                        eligible += 1;
                        if (reservoir.len() as u64) < n {
                            reservoir.push(item);
                        } else {
                            let j = random_below(eligible);
                            if j < n {
                                reservoir[j as usize] = item;
                            }
                        }
                        continue;
                    }
                    counters.queued.fetch_add(1, Ordering::Relaxed);
                    counters
                        .queued_bytes
                        .fetch_add(item.size, Ordering::Relaxed);
                    if tx.send(item).await.is_err() {
                        break 'pages; // the workers are gone
                    }
                }
                match page.next_continuation {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            for item in &reservoir {
                counters.queued.fetch_add(1, Ordering::Relaxed);
                counters
                    .queued_bytes
                    .fetch_add(item.size, Ordering::Relaxed);
            }
            counters.listing_done.store(true, Ordering::Relaxed);
            for item in reservoir {
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        })
    };

    let progress = (cfg.progress && std::io::stderr().is_terminal())
        .then(|| spawn_progress(cfg.label.clone(), counters.clone()));

    let work = Arc::new(work);
    let items = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let max_retries = cfg.max_retries;
    let mut results = items
        .map(|item| {
            let work = work.clone();
            let counters = counters.clone();
            async move {
                let key = item.key.clone();
                let mut attempts = 0;
                let outcome = loop {
                    attempts += 1;
                    let outcome = match tokio::spawn(work(item.clone())).await {
                        Ok(o) => o,
                        Err(e) => Outcome::Failed(format!("internal error: the task failed: {e}")),
                    };
                    match outcome {
                        Outcome::Retry(_) | Outcome::Conflict(_) if attempts <= max_retries => {
                            tokio::time::sleep(backoff(attempts - 1)).await;
                        }
                        // Retries ran out: recorded as a (transient) failure.
                        other => break other,
                    }
                };
                counters.finished.fetch_add(1, Ordering::Relaxed);
                counters
                    .finished_bytes
                    .fetch_add(item.size, Ordering::Relaxed);
                (key, outcome, attempts)
            }
        })
        .buffer_unordered(cfg.jobs.max(1))
        .boxed();

    let mut report = Report {
        job: cfg.label.clone(),
        url: location(store.url(), prefix),
        dry_run: cfg.dry_run,
        shard: cfg.shard.map(|s| s.to_string()),
        ..Default::default()
    };
    while let Some((key, outcome, attempts)) = results.next().await {
        report.processed += 1;
        report.record(key, outcome, attempts, cfg.record_done);
    }
    let _ = lister.await;
    if let Some((stop, task)) = progress {
        stop.store(true, Ordering::Relaxed);
        let _ = task.await;
    }
    report.listed = counters.listed.load(Ordering::Relaxed);
    report.list_error = list_error.lock().expect("not poisoned").take();
    report.elapsed_secs = started.elapsed().as_secs_f64();
    report
}

/// Keys r2seal reserves for itself in a bucket (the descriptor): never handed to a
/// job's work.
fn is_reserved(key: &str) -> bool {
    key.starts_with(crate::sealed::RESERVED_PREFIX)
}

/// A uniform random number in `0..n` (`n > 0`).
fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("the operating system's random source failed");
    // 128 random bits reduced mod n: bias below 2^-64.
    (u128::from_le_bytes(b) % u128::from(n)) as u64
}

/// `store url` + `prefix`, for messages.
fn location(url: &str, prefix: &str) -> String {
    if url.ends_with('/') || prefix.is_empty() {
        format!("{url}{prefix}")
    } else {
        format!("{url}/{prefix}")
    }
}

/// Delay before retry number `attempt + 1`: exponential, capped, with up to 50% jitter so
/// that many workers hitting the same overloaded server do not retry in lockstep. Also
/// used by the CLI's `put` when it sends a file again.
pub fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF);
    let mut r = [0u8; 2];
    getrandom::getrandom(&mut r).unwrap_or_default();
    let jitter = u64::from(u16::from_le_bytes(r)) * (base.as_millis() as u64 / 2) / 65_535;
    base + Duration::from_millis(jitter)
}

fn spawn_progress(
    label: String,
    c: Arc<Counters>,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let line = progress_line(&label, &c, started.elapsed());
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{line}");
                let _ = err.flush();
            }
            eprint!("\r\x1b[2K");
        })
    };
    (stop, task)
}

fn progress_line(label: &str, c: &Counters, elapsed: Duration) -> String {
    let done = c.finished.load(Ordering::Relaxed);
    let bytes = c.finished_bytes.load(Ordering::Relaxed);
    let listed = c.listed.load(Ordering::Relaxed);
    let queued = c.queued.load(Ordering::Relaxed);
    let total_bytes = c.queued_bytes.load(Ordering::Relaxed);
    let listing_done = c.listing_done.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = bytes as f64 / secs;
    let mut line = format!(
        "{label}: {done}/{queued}{} objects, {} ({}/s)",
        if listing_done { "" } else { "+" },
        human_bytes(bytes),
        human_bytes(rate as u64)
    );
    if listing_done {
        // ETA from the larger of the object and byte fractions left.
        let obj_rate = done as f64 / secs;
        let left_objs = queued.saturating_sub(done) as f64;
        let left_bytes = total_bytes.saturating_sub(bytes) as f64;
        let by_objects = left_objs / obj_rate.max(1e-9);
        let by_bytes = if bytes > 0 { left_bytes / rate } else { 0.0 };
        let eta = by_objects.max(by_bytes);
        if done > 0 && eta.is_finite() {
            let eta = eta as u64;
            line.push_str(&format!(
                ", ETA {}:{:02}:{:02}",
                eta / 3600,
                eta / 60 % 60,
                eta % 60
            ));
        }
    } else {
        line.push_str(&format!(", {listed} listed so far"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition() {
        assert_eq!(
            "2/3".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 3 }
        );
        for bad in ["0/3", "4/3", "1/0", "x/3", "3", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let shards: Vec<Shard> = (1..=4).map(|i| Shard { index: i, count: 4 }).collect();
        let mut per = [0; 4];
        for n in 0..1000 {
            let key = format!("sessions/{n}.jsonl");
            let owners: Vec<usize> = (0..4).filter(|&i| shards[i].contains(&key)).collect();
            assert_eq!(owners.len(), 1, "{key} is in exactly one shard");
            per[owners[0]] += 1;
        }
        assert!(per.iter().all(|&n| n > 150), "roughly even: {per:?}");
        // Stable: the split must never change between versions (machines share it).
        assert!(Shard { index: 1, count: 1 }.contains("anything"));
        let fixed: Vec<bool> = (1..=3)
            .map(|i| Shard { index: i, count: 3 }.contains("a/b.json"))
            .collect();
        assert_eq!(fixed.iter().filter(|&&b| b).count(), 1);
    }

    #[test]
    fn report_summary_and_completeness() {
        let mut r = Report {
            job: "migrate".into(),
            url: "s3://b/pre/".into(),
            elapsed_secs: 2.0,
            ..Default::default()
        };
        r.record("a".into(), Outcome::Done { bytes: 2048 }, 1, true);
        r.record(
            "b".into(),
            Outcome::Skipped("already sealed".into()),
            1,
            true,
        );
        assert!(r.is_complete());
        r.record("c".into(), Outcome::Conflict("changed".into()), 4, true);
        r.record("d".into(), Outcome::Retry("503".into()), 4, true);
        assert!(!r.is_complete());
        assert_eq!((r.done, r.skipped, r.conflicts, r.failures), (1, 1, 1, 1));
        assert_eq!(r.entries[3].outcome, "failed");
        let s = r.summary("sealed");
        assert!(s.contains("1 sealed (2.0 KiB)"), "{s}");
        assert!(s.contains("1 already sealed"), "{s}");
        assert!(s.contains("(1.0 KiB/s)"), "{s}");
        assert!(s.contains("rerun to finish"), "{s}");
        assert!(!s.contains("will not go away"), "{s}");
        assert!(!s.contains('\n'));

        // Failures a rerun cannot fix do not ask for one; a dry run gives no rate.
        let mut permanent = Report {
            dry_run: true,
            ..Default::default()
        };
        permanent.record("e".into(), Outcome::Failed("no identity".into()), 1, true);
        let s = permanent.summary("sealed");
        assert!(!permanent.rerun_may_finish() && !permanent.is_complete());
        assert!(!s.contains("rerun"), "{s}");
        assert!(s.contains("1 failure will not go away"), "{s}");
        assert!(!s.contains("/s)"), "{s}");
        let mut quiet = Report::default();
        quiet.record("a".into(), Outcome::Done { bytes: 1 }, 1, false);
        assert!(quiet.entries.is_empty());
        assert_eq!(quiet.done, 1);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) >= FIRST_BACKOFF && backoff(0) <= FIRST_BACKOFF * 2);
        assert!(backoff(3) >= FIRST_BACKOFF * 8);
        assert!(backoff(40) <= MAX_BACKOFF + MAX_BACKOFF / 2);
    }
}
