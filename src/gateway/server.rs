//! Accepting connections: hyper 1 over tokio, one task per connection, s3s as the service.

use std::fmt;
use std::future::Future;
use std::io;
use std::time::Duration;

use futures_util::future::BoxFuture;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{service_fn, Service};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{s3_error, HttpError, HttpResponse, S3Result};
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use super::Gateway;
use crate::keys::Identity;
use crate::names::NameKey;
use crate::sealed::Recipients;
use crate::store::s3::S3Options;

/// How a gateway reaches its upstream, whom it seals to, and whom it lets in.
pub struct GatewayConfig {
    /// Endpoint, region and credentials of the upstream (`None` fields: the environment).
    pub upstream: S3Options,
    pub recipients: Recipients,
    pub identities: Vec<Identity>,
    /// Encrypt object names with this key (SECURITY.md §3.10); clients see plaintext keys.
    pub name_key: Option<NameKey>,
    /// The key pair clients sign requests with (SigV4).
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    /// How long a shutdown waits for requests in flight before it cuts them.
    pub shutdown_grace: Duration,
    /// The migration window: serve objects stored without an r2seal envelope as they
    /// are stored. Off, reading one is refused (AccessDenied): anyone who can write the
    /// bucket could otherwise put chosen plaintext in a sealed object's place.
    pub allow_plaintext: bool,
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("upstream", &self.upstream)
            .field("identities", &self.identities.len())
            .field("name_key", &self.name_key)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("shutdown_grace", &self.shutdown_grace)
            .field("allow_plaintext", &self.allow_plaintext)
            .finish()
    }
}

/// Serve the S3 API on `listener` until `shutdown` resolves. Each connection runs in its
/// own task; a failing connection or request never stops the gateway. On shutdown it
/// stops accepting, lets the requests in flight finish (idle connections close at once)
/// for up to `config.shutdown_grace`, then cuts the rest: a request cut before its end
/// commits nothing upstream.
pub async fn serve(
    listener: TcpListener,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut builder = S3ServiceBuilder::new(Gateway::new(&config));
    builder.set_auth(Auth {
        access_key_id: config.access_key_id.clone(),
        secret: Zeroizing::new(config.secret_access_key.to_string()),
    });
    let service = builder.build();
    let connections = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors and the like: keep serving the others.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service_fn(logging_refusals(service)));
        let conn = connections.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    let grace = config.shutdown_grace;
    if tokio::time::timeout(grace, connections.shutdown())
        .await
        .is_err()
    {
        eprintln!(
            "r2seal gateway: requests still in flight after {} s were cut (none of them committed)",
            grace.as_secs()
        );
    }
    Ok(())
}

/// The service, printing a line on stderr for each refused request (403: a bad
/// signature, an unknown access key, or the upstream refusing the gateway's own
/// credentials) with its method and path. Never the query: a presigned URL's signature is
/// there.
fn logging_refusals(
    service: S3Service,
) -> impl Fn(Request<Incoming>) -> BoxFuture<'static, Result<HttpResponse, HttpError>> + Clone {
    move |req| {
        let (method, uri) = (req.method().clone(), req.uri().clone());
        let response = Service::call(&service, req);
        Box::pin(async move {
            let response = response.await?;
            if response.status() == StatusCode::FORBIDDEN {
                eprintln!("r2seal gateway: refused {method} {} (403)", uri.path());
            }
            Ok(response)
        })
    }
}

/// The one key pair clients sign with; an unknown key id is S3's `InvalidAccessKeyId`.
struct Auth {
    access_key_id: String,
    secret: Zeroizing<String>,
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.access_key_id {
            Ok(SecretKey::from(self.secret.as_str()))
        } else {
            Err(s3_error!(
                InvalidAccessKeyId,
                "the access key id is not this gateway's"
            ))
        }
    }
}
