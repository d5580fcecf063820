//! Crash safety of `r2seal migrate` (issue 4): the CLI is killed with SIGKILL at
//! pseudo-random moments (fixed seeds), and the S3 server is restarted mid-run, while a
//! checker polls every object. At every instant each object must be either its original
//! plaintext or a complete sealed version that opens to it; after a rerun every object
//! opens to its original bytes. The same for `--reverse`.
//!
//! The test runs its own Garage (so that restarting it disturbs no other test), from
//! `R2SEAL_GARAGE_BIN`, else the binary `.ci/services.sh` caches
//! (`${R2SEAL_CACHE:-~/.cache/r2seal-ci}/tools/bin/garage`). Garage keeps its data across
//! restarts. Without the binary: a loud SKIPPED line, or a failure with `CI=true`.
#![cfg(feature = "cli")]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use r2seal::keys::Identity;
use r2seal::sealed::SealedBucket;
use r2seal::store::s3::{S3Credentials, S3Options, S3Store};
use r2seal::store::{self, Bytes, GetOptions, Store};

const MIB: usize = 1024 * 1024;
const BUCKET: &str = "crash";
const ACCESS: &str = "GK0123456789abcdef01234567";
const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn garage_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("R2SEAL_GARAGE_BIN") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("R2SEAL_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/r2seal-ci")))?;
    let bin = cache.join("tools/bin/garage");
    bin.is_file().then_some(bin)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A single-node Garage of our own, restartable on the same ports and data.
struct Garage {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Garage {
    fn start(bin: PathBuf) -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let (port, rpc) = (free_port(), free_port());
        let d = dir.path().display();
        // The engine .ci/services.sh chose (Garage's default, LMDB, unless told otherwise).
        let engine = std::env::var("R2SEAL_GARAGE_DB_ENGINE").unwrap_or_else(|_| "lmdb".into());
        std::fs::write(
            dir.path().join("garage.toml"),
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"{engine}\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{SECRET}\"\n\n[s3_api]\ns3_region = \"auto\"\n\
                 api_bind_addr = \"127.0.0.1:{port}\"\n"
            ),
        )
        .unwrap();
        let mut g = Garage {
            bin,
            dir,
            port,
            child: None,
        };
        g.spawn();
        g
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET)
            .env("GARAGE_DEFAULT_BUCKET", BUCKET)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start garage");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM, then wait: a clean stop, as a restarted server would see.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn store(&self) -> Arc<dyn Store> {
        let opts = S3Options {
            endpoint: Some(self.endpoint()),
            region: Some("auto".into()),
            credentials: Some(S3Credentials::new(ACCESS, SECRET)),
            ..Default::default()
        };
        Arc::new(S3Store::new(BUCKET, "", opts).await.unwrap())
    }

    async fn wait_ready(&self, store: &Arc<dyn Store>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match store.list("", None, None, Some(1)).await {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(self.dir.path().join("garage.log"))
                        .unwrap_or_default();
                    panic!("garage did not come up: {e}\n{log}");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Deterministic delays from a seed (xorshift).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Polls every object until stopped; returns violations of "original plaintext or a
/// complete sealed version of it". Errors (the server restarting) are not violations.
fn spawn_checker(
    store: Arc<dyn Store>,
    identity: Identity,
    originals: Arc<BTreeMap<String, Vec<u8>>>,
    stop: Arc<AtomicBool>,
    checks: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let bucket = SealedBucket::new(store.clone())
            .with_identities(vec![identity])
            .allow_plaintext(true);
        let mut violations = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for (key, want) in originals.iter() {
                // One GET: the envelope and the body of the same version.
                match bucket.get_bytes(key).await {
                    Ok((head, body)) => {
                        checks.fetch_add(1, Ordering::Relaxed);
                        if body[..] != want[..] {
                            violations.push(format!(
                                "{key}: {} object of {} bytes is not the original",
                                if head.sealed { "sealed" } else { "plaintext" },
                                body.len()
                            ));
                        }
                    }
                    // The server restarting; but an object must never be missing.
                    Err(e) if e.store_error().is_some_and(|s| !s.is_not_found()) => {}
                    Err(e) => violations.push(format!("{key}: {e}")),
                }
            }
        }
        violations
    })
}

fn migrate_cmd(g: &Garage, dir: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_r2seal"));
    cmd.current_dir(dir)
        .env("AWS_ENDPOINT_URL", g.endpoint())
        .env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "auto")
        .env_remove("R2SEAL_KEYRING")
        .env_remove("R2SEAL_NAMES_KEY")
        .args([
            "migrate",
            "--quiet",
            "--jobs",
            "4",
            "--part-size",
            "5",
            "--multipart-threshold",
            "5",
            "--retries",
            "8",
        ])
        .args(extra)
        .arg(format!("s3://{BUCKET}/tree/"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn kill_9_and_server_restarts_never_lose_or_half_write_an_object() {
    let Some(bin) = garage_bin() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "no garage binary and CI=true: set R2SEAL_GARAGE_BIN or run .ci/services.sh first"
            );
        }
        eprintln!(
            "\n*** SKIPPED: no garage binary (R2SEAL_GARAGE_BIN) — jobs_crash did not run ***"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut garage = Garage::start(bin);
    let work = tempfile::tempdir().unwrap();
    let identity = Identity::generate_x25519();
    std::fs::write(
        work.path().join("key.txt"),
        identity.to_secret_string().as_bytes(),
    )
    .unwrap();
    let recipient = identity.to_recipient().describe();

    // 48 objects: small ones of many sizes, and two that go multipart (5 MiB parts).
    let mut originals = BTreeMap::new();
    for i in 0..46u64 {
        let len = (i * i * 97 % 70_000) as usize;
        originals.insert(format!("tree/small/{i:02}"), data(len, i + 1));
    }
    originals.insert("tree/large/a".into(), data(6 * MIB + 1, 100));
    originals.insert("tree/large/b".into(), data(11 * MIB, 101));
    let originals = Arc::new(originals);

    let store = rt.block_on(async {
        let store = garage.store().await;
        garage.wait_ready(&store).await;
        for (k, v) in originals.iter() {
            let mut md = BTreeMap::new();
            md.insert("mtime".to_string(), "1732500000".to_string());
            store
                .put(
                    k,
                    Bytes::from(v.clone()),
                    &store::PutOptions {
                        metadata: md,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
        store
    });

    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));
    let checker = {
        let _guard = rt.enter(); // tokio::spawn needs a runtime context
        spawn_checker(
            store.clone(),
            identity.clone(),
            originals.clone(),
            stop.clone(),
            checks.clone(),
        )
    };
    let log = Arc::new(Mutex::new(Vec::<String>::new()));

    let seal: Vec<&str> = vec!["-r", recipient.as_str()];
    let reverse: Vec<&str> = vec!["-i", "key.txt", "--reverse"];
    // Kill -9 at seeded moments, alternating directions so that every run finds work
    // (each leaves a mix of sealed and plaintext objects for the next).
    for (n, seed) in [11u64, 23, 37, 41, 53, 67].into_iter().enumerate() {
        let (phase, extra) = if n % 2 == 0 {
            ("seal", &seal)
        } else {
            ("reverse", &reverse)
        };
        let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let delay = Duration::from_millis(60 + rng.below(900));
        let mut child = migrate_cmd(&garage, work.path(), extra).spawn().unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        log.lock().unwrap().push(format!(
            "{phase} seed {seed}: killed after {delay:?} (finished first: {finished})"
        ));
    }
    for (phase, extra) in [("seal", &seal), ("reverse", &reverse)] {
        // Restart the server under a running migration: it retries, or leaves work for
        // the rerun, and never half-writes.
        let child = migrate_cmd(&garage, work.path(), extra)
            .arg("--json")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(250));
        garage.stop();
        std::thread::sleep(Duration::from_millis(500));
        garage.spawn();
        rt.block_on(garage.wait_ready(&store));
        let out = child.wait_with_output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let retried = report["entries"].as_array().map_or(0, |e| {
            e.iter()
                .filter(|e| e["attempts"].as_u64() > Some(1))
                .count()
        });
        log.lock().unwrap().push(format!(
            "{phase}: run across a restart exited {:?} after {} objects ({retried} retried): {}",
            out.status.code(),
            report["done"],
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
        // The rerun finishes whatever is left, and exits 0.
        let out = migrate_cmd(&garage, work.path(), extra).output().unwrap();
        assert!(
            out.status.success(),
            "{phase}: the final rerun failed: {}\n{:?}",
            String::from_utf8_lossy(&out.stderr),
            log.lock().unwrap()
        );
        // Everything is where the phase should leave it.
        rt.block_on(async {
            let bucket = SealedBucket::new(store.clone()).with_identities(vec![identity.clone()]);
            for (k, want) in originals.iter() {
                let got = store.get(k, None, &GetOptions::default()).await.unwrap();
                let sealed = got.info.metadata.contains_key("r2seal");
                assert_eq!(sealed, phase == "seal", "{phase}: {k}");
                if sealed {
                    let (head, body) = bucket.get_bytes(k).await.unwrap();
                    assert!(body[..] == want[..], "{k} opens to its original");
                    assert_eq!(
                        head.metadata.user.get("mtime").map(String::as_str),
                        Some("1732500000")
                    );
                } else {
                    assert_eq!(
                        got.info.metadata.get("mtime").map(String::as_str),
                        Some("1732500000")
                    );
                    let body = got.bytes().await.unwrap();
                    assert!(body[..] == want[..], "{k}: the original plaintext back");
                }
            }
        });
    }

    stop.store(true, Ordering::Relaxed);
    let violations = rt.block_on(checker).unwrap();
    let log = log.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "objects seen in a state other than original or complete sealed: {violations:?}\n{log:?}"
    );
    assert!(
        // That it ran throughout, not how fast: an idle machine finished with 190.
        checks.load(Ordering::Relaxed) > 50,
        "the checker ran: {} checks",
        checks.load(Ordering::Relaxed)
    );
    eprintln!(
        "jobs_crash: {} checks, no violations; {}",
        checks.load(Ordering::Relaxed),
        log.join("; ")
    );
    // Uploads the kills left behind are found and aborted by `cleanup`.
    let out = Command::new(env!("CARGO_BIN_EXE_r2seal"))
        .env("AWS_ENDPOINT_URL", garage.endpoint())
        .env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "auto")
        .args([
            "cleanup",
            "--older-than",
            "0",
            &format!("s3://{BUCKET}/tree/"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = rt.block_on(store.list_multipart_uploads("tree/")).unwrap();
    assert!(left.is_empty(), "{left:?}");
}
