//! An agent keeps its state in a bucket it does not trust: a session transcript (JSONL),
//! bot credentials and a pending pairing code, all sealed before they leave the process.
//!
//! ```text
//! cargo run --example agent_sessions                       # a temporary file:// bucket
//! R2SEAL_EXAMPLE_URL=s3://bucket/agent/ cargo run --example agent_sessions
//! ```
//! With an `s3://` or `r2://` URL the endpoint and credentials come from the usual
//! environment (`AWS_ENDPOINT_URL` or `R2_ACCOUNT_ID`, `AWS_ACCESS_KEY_ID`, ...).

use std::collections::BTreeMap;

use r2seal::keys::{Identity, SymKey};
use r2seal::sealed::{PutOptions, Recipients, SealedBucket};
use r2seal::store::{self, GetOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct BotCredentials {
    bot: String,
    token: String,
    refresh_token: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct PairingCode {
    code: String,
    user: String,
    expires_unix: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let url = std::env::var("R2SEAL_EXAMPLE_URL")
        .unwrap_or_else(|_| format!("file://{}", temp.path().display()));
    let store = store::open(&url).await?;

    // A symmetric key: what a Worker holds as a secret (`r2seal key export-secret`).
    let key = Identity::Sym(SymKey::generate());
    let bucket = SealedBucket::new(store.clone())
        .with_recipients(Recipients::fixed(vec![key.to_recipient()]))
        .with_identities(vec![key]);

    // 1. The transcript, as JSON Lines, with sealed user metadata.
    let transcript = [
        r#"{"role":"user","text":"remind me to renew the TLS cert on friday"}"#,
        r#"{"role":"assistant","text":"Done: reminder set for Friday 09:00."}"#,
    ]
    .join("\n")
        + "\n";
    let session_key = "sessions/2026-11-25/agent-42.jsonl";
    bucket
        .put(
            session_key,
            transcript.clone().into_bytes(),
            &PutOptions {
                content_type: Some("application/jsonl".into()),
                metadata: BTreeMap::from([("turns".to_string(), "2".to_string())]),
                ..Default::default()
            },
        )
        .await?;

    // 2. Bot credentials and 3. a pending pairing code, as JSON; the code only if new.
    let creds = BotCredentials {
        bot: "support-bot".into(),
        token: "xoxb-1234-secret-token".into(),
        refresh_token: "refresh-5678-secret".into(),
    };
    bucket
        .put_json(
            "credentials/support-bot.json",
            &creds,
            &PutOptions::default(),
        )
        .await?;
    let pairing = PairingCode {
        code: "839-271".into(),
        user: "alice@example.com".into(),
        expires_unix: 1_795_700_000,
    };
    bucket
        .put_json("pairing/839-271.json", &pairing, &PutOptions::create_only())
        .await?;

    // Read everything back: authenticated, bound to its key.
    let (head, got) = bucket.get_bytes(session_key).await?;
    assert_eq!(&got[..], transcript.as_bytes());
    println!(
        "session: {} bytes, {} turns, content-type {}",
        head.size,
        head.metadata.user["turns"],
        head.content_type.as_deref().unwrap_or("-")
    );
    let back: BotCredentials = bucket.get_json("credentials/support-bot.json").await?;
    assert_eq!(back, creds);
    println!("credentials: {} (token restored)", back.bot);
    let back: PairingCode = bucket.get_json("pairing/839-271.json").await?;
    assert_eq!(back, pairing);
    println!("pairing code {} for {}", back.code, back.user);

    // What the bucket holds: ciphertext and an envelope, never the secrets.
    let listing = bucket.list_all("", None).await?;
    let secrets = [
        "TLS cert",
        "xoxb-1234",
        "refresh-5678",
        "alice@example.com",
        "839-271\"",
    ];
    for o in &listing.objects {
        let raw = store.get(&o.key, None, &GetOptions::default()).await?;
        let metadata = raw.info.metadata.clone();
        let body = raw.bytes().await?;
        for s in secrets {
            let in_body = body.windows(s.len()).any(|w| w == s.as_bytes());
            let in_meta = metadata.values().any(|v| v.contains(s));
            assert!(
                !in_body && !in_meta,
                "{s:?} found in the raw object {}",
                o.key
            );
        }
        assert!(metadata.contains_key("r2seal"), "{} has no envelope", o.key);
        println!(
            "raw {:<40} {:>5} stored bytes, {:>5} plaintext bytes, only ciphertext",
            o.key,
            o.stored_size,
            o.size.unwrap_or(0)
        );
    }

    // A second pairing code under the same key is refused: create-only writes.
    let again = bucket
        .put_json("pairing/839-271.json", &pairing, &PutOptions::create_only())
        .await;
    match again {
        Err(e) if e.is_precondition_failed() => println!("pairing code already pending: {e}"),
        Err(e) => return Err(e.into()),
        // Some S3-compatible servers ignore conditional writes (Garage does).
        Ok(_) => println!("note: this store ignored If-None-Match"),
    }
    println!("ok: {} objects at {url}, all sealed", listing.objects.len());
    Ok(())
}
