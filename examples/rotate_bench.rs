//! Benchmark: `rotate` (rewrap in place, server-side) against `rotate --rekey` (download,
//! re-encrypt, upload) over the same objects, interleaved. Run by `bench/rotate.sh`.
//!
//! ```text
//! rotate_bench URL COUNT SIZE_BYTES ROUNDS JOBS
//! ```
//! Objects start sealed to key A. Each round does both, in alternating order: a rewrap
//! to {A, a fresh key} (every object differs from its target, so every one is copied),
//! and a re-key to {A} (every object's file key was wrapped to the fresh key, so every
//! one is re-encrypted). Prints one JSON line per timed run and a summary line.

use std::collections::BTreeSet;
use std::time::Instant;

use r2seal::jobs::rotate::run;
use r2seal::jobs::JobConfig;
use r2seal::keys::{Identity, SymKey};
use r2seal::sealed::{PutOptions, Recipients, Rekey, RotationPlan, SealedBucket};
use r2seal::store;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: rotate_bench URL COUNT SIZE_BYTES ROUNDS JOBS");
        std::process::exit(2);
    }
    let (url, count, size, rounds, jobs) = (
        args[1].clone(),
        args[2].parse::<usize>().expect("COUNT"),
        args[3].parse::<usize>().expect("SIZE_BYTES"),
        args[4].parse::<usize>().expect("ROUNDS"),
        args[5].parse::<usize>().expect("JOBS"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = store::open(&url).await.expect("store");
        let a = Identity::Sym(SymKey::generate());
        let writer = SealedBucket::new(store.clone())
            .with_recipients(Recipients::fixed(vec![a.to_recipient()]))
            .with_identities(vec![a.clone()]);
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let started = Instant::now();
        let puts = futures_util::stream::iter(0..count).map(|i| {
            let (w, b) = (writer.clone(), body.clone());
            async move {
                w.put(&format!("o/{i:05}"), b, &PutOptions::default())
                    .await
                    .expect("put")
            }
        });
        use futures_util::StreamExt;
        let _: Vec<_> = puts.buffer_unordered(jobs).collect().await;
        eprintln!(
            "setup: {count} x {size} B in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let cfg = JobConfig {
            jobs,
            max_retries: 0,
            label: "rotate".into(),
            record_done: false,
            ..Default::default()
        };
        let mut rewrap = Vec::new();
        let mut rekey = Vec::new();
        for round in 0..rounds {
            let fresh = Identity::Sym(SymKey::generate());
            let ids = vec![a.clone(), fresh.clone()];
            let bucket = SealedBucket::new(store.clone()).with_identities(ids);
            let to_both = RotationPlan {
                base: Recipients::fixed(vec![a.to_recipient()]),
                add: vec![fresh.to_recipient()],
                remove: BTreeSet::new(),
                exposed: BTreeSet::new(),
                rekey: Rekey::Never,
            };
            let back = RotationPlan {
                base: Recipients::fixed(vec![a.to_recipient()]),
                add: vec![],
                remove: BTreeSet::new(),
                exposed: BTreeSet::new(),
                rekey: Rekey::Always,
            };
            // Alternate which goes first; the rewrap must precede the re-key it feeds, so
            // odd rounds do an extra untimed rewrap first and time the re-key before it.
            let time = |plan: RotationPlan, bucket: SealedBucket| {
                let cfg = cfg.clone();
                async move {
                    let t = Instant::now();
                    let s = run(bucket, "o/", plan, &cfg).await;
                    let secs = t.elapsed().as_secs_f64();
                    assert!(s.report.is_complete(), "{}", s.report.summary("rotated"));
                    assert_eq!(s.report.done as usize, count, "{}", s.report.summary("rotated"));
                    (secs, s.rotation.body_bytes)
                }
            };
            if round % 2 == 0 {
                let (t1, b1) = time(to_both.clone(), bucket.clone()).await;
                let (t2, b2) = time(back.clone(), bucket.clone()).await;
                println!("{{\"round\":{round},\"rewrap_s\":{t1:.3},\"rewrap_body_bytes\":{b1},\"rekey_s\":{t2:.3},\"rekey_body_bytes\":{b2}}}");
                rewrap.push(t1);
                rekey.push(t2);
            } else {
                // Objects are at {A} with a clean history: make the re-key due first.
                let _ = time(to_both.clone(), bucket.clone()).await;
                let (t2, b2) = time(back.clone(), bucket.clone()).await;
                let fresh2 = Identity::Sym(SymKey::generate());
                let bucket2 = SealedBucket::new(store.clone())
                    .with_identities(vec![a.clone(), fresh2.clone()]);
                let to_both2 = RotationPlan {
                    add: vec![fresh2.to_recipient()],
                    ..to_both.clone()
                };
                let (t1, b1) = time(to_both2, bucket2.clone()).await;
                // Back to {A}, keyed clean, for the next round.
                let _ = time(back.clone(), bucket2).await;
                println!("{{\"round\":{round},\"rekey_s\":{t2:.3},\"rekey_body_bytes\":{b2},\"rewrap_s\":{t1:.3},\"rewrap_body_bytes\":{b1}}}");
                rewrap.push(t1);
                rekey.push(t2);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        let (rw, rk) = (median(&mut rewrap), median(&mut rekey));
        println!(
            "{{\"summary\":true,\"count\":{count},\"size\":{size},\"rounds\":{rounds},\"jobs\":{jobs},\"rewrap_median_s\":{rw:.3},\"rekey_median_s\":{rk:.3},\"rekey_over_rewrap\":{:.2}}}",
            rk / rw
        );
        // Clean up.
        let page = writer.list_all("o/", None).await.expect("list");
        for o in page.objects {
            let _ = store.delete(&o.stored_key).await;
        }
    });
}
