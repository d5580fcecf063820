//! Shared by the integration suites that run one set of cases against every backend
//! (`sealed_bucket`, `rotate`, `bucket_names`): the runtime, test data, the S3 servers
//! `.ci/services.sh` starts, and the `suite!` macro that instantiates the cases per
//! backend. Each suite uses a subset, hence `dead_code` allowances.
#![allow(dead_code, unused_macros)]

use std::sync::Arc;

use r2seal::store::fs::FsStore;
use r2seal::store::Store;

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

/// An S3 store on `server` under the fresh prefix `<suite>/<run id>/<case>/`.
/// Without the server's variables: a loud SKIPPED line and `None` in a local run, a
/// panic under `CI=true` (CI must never skip).
#[cfg(feature = "s3")]
pub async fn s3_store(server: Server, suite: &str, case: &str) -> Option<Arc<dyn Store>> {
    use r2seal::store::s3::{S3Credentials, S3Options, S3Store};
    let (endpoint_var, bucket_var) = match server {
        Server::Garage => ("R2SEAL_TEST_S3_ENDPOINT", "R2SEAL_TEST_S3_BUCKET"),
        Server::Cond => ("R2SEAL_TEST_S3_COND_ENDPOINT", "R2SEAL_TEST_S3_COND_BUCKET"),
    };
    let Some(endpoint) = var(endpoint_var) else {
        if var("CI").as_deref() == Some("true") {
            panic!("{endpoint_var} is not set and CI=true: {suite} needs its server (source .ci/services.sh)");
        }
        eprintln!(
            "\n*** SKIPPED: no S3 server configured (set {endpoint_var}) — {case} did not run ***"
        );
        return None;
    };
    let own_keys = var("R2SEAL_TEST_S3_COND_ACCESS_KEY_ID").filter(|_| server == Server::Cond);
    let credentials = match own_keys {
        Some(id) => S3Credentials::new(id, required("R2SEAL_TEST_S3_COND_SECRET_ACCESS_KEY")),
        None => S3Credentials::new(
            required("AWS_ACCESS_KEY_ID"),
            required("AWS_SECRET_ACCESS_KEY"),
        ),
    };
    let opts = S3Options {
        endpoint: Some(endpoint),
        region: Some(var("AWS_REGION").unwrap_or_else(|| "auto".into())),
        credentials: Some(credentials),
        ..Default::default()
    };
    let prefix = format!("{suite}/{}/{case}/", run_id());
    let store = S3Store::new(&required(bucket_var), &prefix, opts)
        .await
        .expect("S3 store");
    assert!(store.url().ends_with(&prefix), "{}", store.url());
    Some(Arc::new(store))
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
