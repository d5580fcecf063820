//! Throughput of sealed vs plain transfers over the same store client, for bench/bucket.sh.
//!
//! ```text
//! bucket_bench sealed|plain put|get URL LOCAL_DIR COUNT SIZE [JOBS]
//! ```
//! - `put`: uploads COUNT objects `obj-N` of SIZE bytes (read from LOCAL_DIR/obj-N, written
//!   there first if missing) with JOBS objects in flight; objects above 16 MiB go multipart
//!   with 16 MiB parts, 4 in flight, in both modes.
//! - `get`: downloads them, discarding the bytes (after authentication, when sealed).
//!
//! Prints one JSON line: seconds, MiB/s, objects/s and the peak RSS (VmHWM) of the process.
//! `plain` is the store layer (aws-sdk-s3) alone: the same client with no sealing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt};
use r2seal::keys::{Identity, SymKey};
use r2seal::sealed::{PutOptions, Recipients, SealedBucket, DEFAULT_PART_SIZE};
use r2seal::store::{self, Bytes, GetOptions, Store};
use tokio::io::AsyncReadExt;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!("usage: bucket_bench sealed|plain put|get URL LOCAL_DIR COUNT SIZE [JOBS]");
        std::process::exit(2);
    }
    let (mode, op, url) = (args[1].clone(), args[2].clone(), args[3].clone());
    let dir = PathBuf::from(&args[4]);
    let count: usize = args[5].parse()?;
    let size: u64 = args[6].parse()?;
    let jobs: usize = args.get(7).map(|j| j.parse()).transpose()?.unwrap_or(16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let store = store::open(&url).await?;
        // The key comes from a file so put and get runs share it.
        let key_path = dir.join("bench.key");
        let key = match std::fs::read_to_string(&key_path) {
            Ok(s) => Identity::parse(&s)?,
            Err(_) => {
                let k = SymKey::generate();
                std::fs::write(&key_path, k.to_secret_string().as_bytes())?;
                Identity::Sym(k)
            }
        };
        let bucket = SealedBucket::new(store.clone())
            .with_recipients(Recipients::fixed(vec![key.to_recipient()]))
            .with_identities(vec![key]);
        if op == "put" {
            for i in 0..count {
                let p = dir.join(format!("obj-{i}"));
                if std::fs::metadata(&p).ok().map(|m| m.len()) != Some(size) {
                    write_random(&p, size)?;
                }
            }
        }
        let started = Instant::now();
        let results: Vec<Res<u64>> = futures_util::stream::iter(0..count)
            .map(|i| {
                let (bucket, store, dir, mode, op) = (
                    bucket.clone(),
                    store.clone(),
                    dir.clone(),
                    mode.clone(),
                    op.clone(),
                );
                tokio::spawn(async move {
                    let key = format!("bench/obj-{i}");
                    let path = dir.join(format!("obj-{i}"));
                    match (mode.as_str(), op.as_str()) {
                        ("sealed", "put") => Ok(bucket
                            .put_file(&key, &path, &PutOptions::default())
                            .await?
                            .size),
                        ("sealed", "get") => {
                            let mut body = bucket.get(&key, None).await?.body;
                            let mut n = 0u64;
                            while let Some(c) = body.try_next().await? {
                                n += c.len() as u64;
                            }
                            Ok(n)
                        }
                        ("plain", "put") => plain_put(store, &key, &path).await,
                        ("plain", "get") => {
                            let got = store.get(&key, None, &GetOptions::default()).await?;
                            let mut body = got.body;
                            let mut n = 0u64;
                            while let Some(c) = body.try_next().await? {
                                n += c.len() as u64;
                            }
                            Ok(n)
                        }
                        _ => Err("mode is sealed|plain and op put|get".into()),
                    }
                })
            })
            .buffer_unordered(jobs)
            .map(|r| r.map_err(|e| e.into()).and_then(|r| r))
            .collect()
            .await;
        let secs = started.elapsed().as_secs_f64();
        let mut bytes = 0u64;
        for r in results {
            bytes += r?;
        }
        println!(
            "{{\"mode\":\"{mode}\",\"op\":\"{op}\",\"count\":{count},\"size\":{size},\"seconds\":{secs:.4},\"mib_per_s\":{:.2},\"objects_per_s\":{:.1},\"peak_rss_kib\":{}}}",
            bytes as f64 / 1048576.0 / secs,
            count as f64 / secs,
            peak_rss_kib()
        );
        Ok(())
    })
}

fn write_random(path: &Path, size: u64) -> Res<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state = 0x9e3779b97f4a7c15u64 ^ size;
    let mut left = size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        for b in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b.copy_from_slice(&state.to_le_bytes()[..b.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// The plain baseline: one PUT up to 16 MiB, else 16 MiB parts with 4 in flight.
async fn plain_put(store: Arc<dyn Store>, key: &str, path: &Path) -> Res<u64> {
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    if len <= DEFAULT_PART_SIZE {
        let mut buf = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buf).await?;
        store
            .put(key, buf.into(), &store::PutOptions::default())
            .await?;
        return Ok(len);
    }
    let id = store
        .create_multipart(key, &store::PutOptions::default())
        .await?;
    let mut set = tokio::task::JoinSet::new();
    let mut parts = Vec::new();
    let mut n = 1u32;
    loop {
        let mut buf = vec![0u8; DEFAULT_PART_SIZE as usize];
        let mut filled = 0;
        while filled < buf.len() {
            let r = file.read(&mut buf[filled..]).await?;
            if r == 0 {
                break;
            }
            filled += r;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        while set.len() >= 4 {
            parts.push(set.join_next().await.expect("in flight")??);
        }
        let (s, k, i) = (store.clone(), key.to_string(), id.clone());
        set.spawn(async move { s.upload_part(&k, &i, n, Bytes::from(buf)).await });
        n += 1;
    }
    while let Some(p) = set.join_next().await {
        parts.push(p??);
    }
    parts.sort_by_key(|p| p.part_number);
    store.complete_multipart(key, &id, &parts).await?;
    Ok(len)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}
