//! The S3 store over TLS, on both request paths (GET/HEAD/PUT direct, and everything
//! through aws-sdk-s3): the CLI talks to the test Garage through a TLS terminator whose
//! certificate comes from a test CA (`tests/fixtures/tls`, valid until 2125), trusted
//! through `SSL_CERT_FILE`, which both paths' root loading (rustls-native-certs) reads.
//! An unrelated CA must fail the connection with a one-line error that does not call
//! itself retryable.
#![cfg(feature = "cli")]

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use assert_cmd::Command;
use support::{S3Env, Server};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// Starts a TLS terminator on loopback that forwards each connection to `upstream`
/// (`host:port`); returns its port. It runs on `rt` until the test ends.
fn tls_terminator(rt: &tokio::runtime::Runtime, upstream: String) -> u16 {
    let certs = CertificateDer::pem_file_iter(fixture("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("server-key.pem")).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                // A client that rejects the certificate ends the handshake: nothing to do.
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    return;
                };
                if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                }
            });
        }
    });
    port
}

#[test]
fn both_request_paths_work_over_tls_and_refuse_an_unknown_issuer() {
    let Some(s3) = S3Env::get(Server::Garage, "s3_tls") else {
        return;
    };
    let upstream = s3
        .endpoint
        .split_once("://")
        .map_or(s3.endpoint.as_str(), |(_, rest)| rest)
        .trim_end_matches('/')
        .to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let port = tls_terminator(&rt, upstream);
    let endpoint = format!("https://127.0.0.1:{port}");

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    let input = dir.path().join("in.bin");
    std::fs::write(&input, support::pattern(300_000, 7)).unwrap();
    let r2seal = |ca: &str, sdk_only: &str| {
        let mut cmd = Command::cargo_bin("r2seal").unwrap();
        cmd.env("SSL_CERT_FILE", fixture(ca))
            .env("R2SEAL_S3_SDK_ONLY", sdk_only)
            .env("AWS_ACCESS_KEY_ID", &s3.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &s3.secret_access_key)
            .env("AWS_REGION", &s3.region)
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_S3");
        cmd
    };
    r2seal("ca.pem", "0")
        .args(["keygen", "-o"])
        .arg(&key)
        .assert()
        .success();

    let prefix = support::fresh_prefix("s3_tls", "paths");
    // `r2seal VERB -i KEY --endpoint ENDPOINT FROM TO`, trusting `ca`.
    let transfer = |ca: &str, sdk_only: &str, verb: &str, from: &OsStr, to: &OsStr| {
        let mut cmd = r2seal(ca, sdk_only);
        cmd.args([verb, "-i"])
            .arg(&key)
            .args(["--endpoint", &endpoint])
            .arg(from)
            .arg(to);
        cmd.assert()
    };
    for sdk_only in ["0", "1"] {
        let url = format!("s3://{}/{prefix}{sdk_only}/in.bin", s3.bucket);
        let url = OsStr::new(&url);
        let output = dir.path().join(format!("out-{sdk_only}.bin"));
        transfer("ca.pem", sdk_only, "put", input.as_os_str(), url).success();
        transfer("ca.pem", sdk_only, "get", url, output.as_os_str()).success();
        assert_eq!(
            std::fs::read(&output).unwrap(),
            std::fs::read(&input).unwrap(),
            "sdk_only={sdk_only}"
        );

        let refused = dir.path().join(format!("refused-{sdk_only}.bin"));
        let out = transfer("other-ca.pem", sdk_only, "get", url, refused.as_os_str())
            .failure()
            .get_output()
            .clone();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("invalid peer certificate") && stderr.lines().count() == 1,
            "sdk_only={sdk_only}: {stderr}"
        );
        // A refused certificate is not a passing failure: no retry can mend it.
        assert!(
            stderr.contains("endpoint refused") && !stderr.contains("retryable"),
            "sdk_only={sdk_only}: {stderr}"
        );
        assert!(!refused.exists(), "sdk_only={sdk_only}: no output file");
    }
}
