//! The bucket-job walker (`r2seal::jobs::run`) over a `file://` store: every object once,
//! shards partition, retries only what the work says is retryable, conflicts retried
//! then reported, concurrency bounded. Server-backed job tests are in tests/jobs.rs.
#![cfg(feature = "store")]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use r2seal::jobs::{self, JobConfig, Outcome, Shard};
use r2seal::store::fs::FsStore;
use r2seal::store::{PutOptions, Store};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A file:// store with `n` objects under `data/` and a few outside it.
async fn store_with(n: usize) -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::create(dir.path()).unwrap());
    for i in 0..n {
        let body = vec![b'x'; i % 7];
        store
            .put(&format!("data/{i:04}"), body.into(), &PutOptions::default())
            .await
            .unwrap();
    }
    store
        .put("other/x", b"x".to_vec().into(), &PutOptions::default())
        .await
        .unwrap();
    (dir, store)
}

fn cfg() -> JobConfig {
    JobConfig {
        jobs: 4,
        label: "test".into(),
        ..Default::default()
    }
}

#[test]
fn every_object_under_the_prefix_once_across_pages() {
    rt().block_on(async {
        // Several listing pages.
        let (_dir, store) = store_with(23).await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let cfg = JobConfig {
            page_size: 5,
            ..cfg()
        };
        let report = jobs::run(store, "data/", &cfg, move |item| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(item.key.clone());
                Outcome::Done { bytes: item.size }
            }
        })
        .await;
        let seen = seen.lock().unwrap().clone();
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), 23);
        assert_eq!(unique.len(), 23);
        assert!(unique.iter().all(|k| k.starts_with("data/")));
        assert_eq!((report.listed, report.processed, report.done), (23, 23, 23));
        let bytes: u64 = (0..23u64).map(|i| i % 7).sum();
        assert_eq!(report.bytes, bytes);
        assert!(report.is_complete());
        assert_eq!(report.entries.len(), 23);
    });
}

#[test]
fn shards_cover_every_object_exactly_once() {
    rt().block_on(async {
        let (_dir, store) = store_with(60).await;
        let mut all = Vec::new();
        for index in 1..=3 {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let s = seen.clone();
            let cfg = JobConfig {
                shard: Some(Shard { index, count: 3 }),
                page_size: 7,
                ..cfg()
            };
            let report = jobs::run(store.clone(), "data/", &cfg, move |item| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(item.key);
                    Outcome::Done { bytes: 0 }
                }
            })
            .await;
            assert_eq!(report.listed, 60);
            let seen = seen.lock().unwrap().clone();
            assert_eq!(report.processed as usize, seen.len());
            assert!(seen.len() > 5, "shard {index}: {}", seen.len());
            all.extend(seen);
        }
        all.sort();
        let before = all.len();
        all.dedup();
        assert_eq!(before, all.len(), "no object in two shards");
        assert_eq!(all.len(), 60, "every object in some shard");
    });
}

#[test]
fn retries_transient_failures_and_conflicts_then_reports_them() {
    rt().block_on(async {
        let (_dir, store) = store_with(4).await;
        let calls = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u32>::new()));
        let c = calls.clone();
        let cfg = JobConfig {
            max_retries: 2,
            ..cfg()
        };
        let report = jobs::run(store, "data/", &cfg, move |item| {
            let c = c.clone();
            async move {
                let n = {
                    let mut c = c.lock().unwrap();
                    let n = c.entry(item.key.clone()).or_default();
                    *n += 1;
                    *n
                };
                match item.key.as_str() {
                    // Transient once, then fine.
                    "data/0000" if n == 1 => Outcome::Retry("503".into()),
                    "data/0000" => Outcome::Done { bytes: 1 },
                    // Always changing under us: retried, then a conflict.
                    "data/0001" => Outcome::Conflict("changed".into()),
                    // Permanent: never retried.
                    "data/0002" => Outcome::Failed("access denied".into()),
                    // Always transient: retried, then a failure.
                    _ => Outcome::Retry("timeout".into()),
                }
            }
        })
        .await;
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls["data/0000"], 2);
        assert_eq!(calls["data/0001"], 3);
        assert_eq!(calls["data/0002"], 1);
        assert_eq!(calls["data/0003"], 3);
        assert_eq!((report.done, report.conflicts, report.failures), (1, 1, 2));
        assert!(!report.is_complete());
        let e = report
            .entries
            .iter()
            .find(|e| e.key == "data/0001")
            .unwrap();
        assert_eq!((e.outcome, e.attempts), ("conflict", 3));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["conflicts"], 1);
        assert_eq!(json["entries"].as_array().unwrap().len(), 4);
    });
}

#[test]
fn concurrency_is_bounded_by_jobs() {
    rt().block_on(async {
        let (_dir, store) = store_with(40).await;
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (n, p) = (now.clone(), peak.clone());
        let cfg = JobConfig { jobs: 3, ..cfg() };
        let report = jobs::run(store, "data/", &cfg, move |_item| {
            let (n, p) = (n.clone(), p.clone());
            async move {
                let cur = n.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(cur, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                Outcome::Skipped("nothing to do".into())
            }
        })
        .await;
        assert_eq!(report.skipped, 40);
        assert_eq!(report.skipped_by_reason["nothing to do"], 40);
        let peak = peak.load(Ordering::SeqCst);
        assert!((2..=3).contains(&peak), "peak concurrency {peak}");
    });
}
