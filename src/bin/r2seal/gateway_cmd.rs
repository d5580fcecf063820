//! `r2seal gateway`: load keys and credentials, bind, and hand over to `r2seal::gateway`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use r2seal::gateway::{serve, GatewayConfig};
use r2seal::sealed::Recipients;
use r2seal::store::s3::S3Options;
use zeroize::Zeroizing;

use crate::cli::GatewayArgs;
use crate::io as cio;
use crate::objects::write_keys;

fn env_var(name: &str) -> Result<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| anyhow!("{name} is not set: clients authenticate to the gateway with R2SEAL_GATEWAY_ACCESS_KEY_ID / R2SEAL_GATEWAY_SECRET_ACCESS_KEY"))
}

pub fn run(args: GatewayArgs) -> Result<()> {
    let addr: SocketAddr = args
        .listen
        .parse()
        .with_context(|| format!("--listen {:?}: expected IP:PORT", args.listen))?;
    if !addr.ip().is_loopback() && !args.allow_public {
        bail!(
            "refusing to listen on {addr}: not a loopback address (clients there would read plaintext); pass --allow-public to do it anyway"
        );
    }
    let access_key_id = env_var("R2SEAL_GATEWAY_ACCESS_KEY_ID")?;
    let secret = Zeroizing::new(env_var("R2SEAL_GATEWAY_SECRET_ACCESS_KEY")?);
    let (recipients, mut identities) = write_keys(&args.recipients, "")?;
    if identities.is_empty() {
        if let Some(path) = &args.recipients.keyring.keyring {
            identities = cio::LoadedKeyring::load(path)?.ring.identities();
        }
    }
    if identities.is_empty() {
        bail!("no identities: the gateway opens what clients read; pass -i FILE, or a keyring with --keyring / R2SEAL_KEYRING");
    }
    // A keyring that encrypts names (`names = KEY`) does so through the gateway too.
    let name_key = match &recipients {
        Recipients::Keyring(ring) => ring.name_key(),
        Recipients::Fixed(_) => None,
    };
    let config = GatewayConfig {
        upstream: S3Options {
            endpoint: args.upstream.clone(),
            ..Default::default()
        },
        recipients,
        identities,
        name_key,
        access_key_id,
        secret_access_key: secret,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        allow_plaintext: args.allow_plaintext,
    };
    // A server: connections are served on every core (signature checks and the MD5 of
    // each client body run on the async threads).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        eprintln!(
            "r2seal gateway: listening on http://{bound} (upstream: {})",
            args.upstream.as_deref().unwrap_or("from the environment")
        );
        if args.allow_plaintext {
            eprintln!(
                "r2seal gateway: warning: --allow-plaintext: objects stored without an envelope are served as stored, unauthenticated"
            );
        }
        let grace = args.shutdown_grace;
        serve(listener, config, stop_requested(grace)).await?;
        eprintln!("r2seal gateway: stopped");
        Ok(())
    })
}

/// Ctrl-C or SIGTERM (`docker stop`, systemd, Kubernetes): the gateway stops accepting
/// and drains.
async fn stop_requested(grace: u64) {
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    eprintln!(
        "r2seal gateway: stopping: no new connections; requests in flight have up to {grace} s to finish"
    );
}
