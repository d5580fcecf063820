//! `keygen`, `recipient` and `key …`: identities and the keyring.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use r2seal::keys::keyring::{Key, KeyMaterial, KeyStatus};
use r2seal::keys::passphrase::{self, Argon2Params};
use r2seal::keys::{Identity, Recipient, SymKey};
use serde_json::json;

use crate::cli::KeyCommand;
use crate::io::{self as cio, print_line, LoadedKeyring};

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// age-keygen's file layout: two comment lines, then the key.
fn identity_file_text(identity: &Identity) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(format!(
        "# created: {}\n# public key: {}\n{}\n",
        now_rfc3339(),
        identity.to_recipient().describe(),
        identity.to_secret_string().as_str()
    ))
}

pub fn keygen(output: Option<&Path>, protect: bool) -> Result<()> {
    let identity = Identity::generate_x25519();
    let recipient = identity.to_recipient().describe();
    let text = identity_file_text(&identity);
    let bytes = if protect {
        // Without -o the key goes to stdout: the prompt names no file.
        let pass = cio::ask_passphrase(output.unwrap_or(Path::new("the new key")), true)?;
        zeroize::Zeroizing::new(passphrase::protect(
            text.as_bytes(),
            &pass,
            Argon2Params::DEFAULT,
        )?)
    } else {
        zeroize::Zeroizing::new(text.as_bytes().to_vec())
    };
    match output {
        Some(path) => {
            cio::write_new_secret_file(path, &bytes)?;
            print_line(format_args!("{recipient}"))?;
        }
        None => {
            if protect && std::io::stdout().is_terminal() {
                bail!("refusing to print a passphrase-protected (binary) key to a terminal: use -o FILE");
            }
            std::io::stdout().lock().write_all(&bytes)?;
            eprintln!("Public key: {recipient}");
        }
    }
    Ok(())
}

pub fn recipient(files: &[PathBuf]) -> Result<()> {
    let identities = cio::load_identity_files(files)?;
    let mut printed = 0;
    for id in &identities {
        match id {
            Identity::X25519(_) => {
                print_line(format_args!("{}", id.to_recipient().describe()))?;
                printed += 1;
            }
            Identity::Sym(k) => eprintln!(
                "r2seal: symmetric key {} has no public recipient (seal with -i FILE)",
                k.id()
            ),
        }
    }
    if printed == 0 {
        bail!("no age identities in the given files");
    }
    Ok(())
}

pub fn key(cmd: KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::List { json, keyring } => list(cio::require_keyring(&keyring.keyring)?, json),
        KeyCommand::Add {
            name,
            sym,
            age,
            recipient,
            import,
            recovery,
            passphrase,
            keyring,
        } => {
            let path = cio::require_keyring(&keyring.keyring)?;
            let mut loaded = LoadedKeyring::load_or_create(path, passphrase)?;
            let material = if sym {
                KeyMaterial::Sym(SymKey::generate())
            } else if age {
                KeyMaterial::X25519(Identity::generate_x25519())
            } else if let Some(r) = recipient {
                match crate::local::parse_recipient_arg(&r)? {
                    Recipient::X25519(x) => KeyMaterial::RecipientOnly(Recipient::X25519(x)),
                    Recipient::Sym(_) => bail!(
                        "--recipient takes an age1… recipient; add symmetric keys with --import"
                    ),
                }
            } else if let Some(file) = import {
                let mut ids = cio::load_identity_files(std::slice::from_ref(&file))?;
                if ids.len() != 1 {
                    bail!(
                        "{} holds {} identities; import takes a file with exactly one",
                        file.display(),
                        ids.len()
                    );
                }
                match ids.remove(0) {
                    Identity::Sym(k) => KeyMaterial::Sym(k),
                    x => KeyMaterial::X25519(x),
                }
            } else {
                bail!("say what to add: --sym, --age, --recipient AGE1… or --import FILE");
            };
            let key = Key {
                name: name.clone(),
                material,
                created: now_rfc3339(),
                status: KeyStatus::Active,
                recovery,
            };
            let (id, kind) = (key.id(), key.kind());
            let public = match &key.material {
                KeyMaterial::Sym(_) => None,
                _ => Some(key.recipient().describe()),
            };
            loaded.ring.add(key)?;
            loaded.save()?;
            match public {
                Some(r) => print_line(format_args!("added {kind} key {name:?} (id {id}): {r}"))?,
                None => print_line(format_args!("added {kind} key {name:?} (id {id})"))?,
            }
            Ok(())
        }
        KeyCommand::Retire { name, keyring } => set_status(
            cio::require_keyring(&keyring.keyring)?,
            &name,
            KeyStatus::Retired,
        ),
        KeyCommand::Revoke { name, keyring } => set_status(
            cio::require_keyring(&keyring.keyring)?,
            &name,
            KeyStatus::Revoked,
        ),
        KeyCommand::Default { keys, keyring } => {
            let mut loaded = LoadedKeyring::load(cio::require_keyring(&keyring.keyring)?)?;
            loaded.ring.set_defaults(keys.clone())?;
            loaded.save()?;
            print_line(format_args!("default recipients: {}", keys.join(", ")))?;
            Ok(())
        }
        KeyCommand::Policy {
            prefix,
            keys,
            remove,
            keyring,
        } => {
            let mut loaded = LoadedKeyring::load(cio::require_keyring(&keyring.keyring)?)?;
            if remove {
                if !loaded.ring.policies().iter().any(|p| p.prefix == prefix) {
                    bail!("no policy for prefix {prefix:?}");
                }
                loaded.ring.set_policy(&prefix, Vec::new())?;
                loaded.save()?;
                print_line(format_args!("removed policy for {prefix:?}"))?;
            } else {
                loaded.ring.set_policy(&prefix, keys.clone())?;
                loaded.save()?;
                print_line(format_args!(
                    "objects under {prefix:?} are sealed to: {}",
                    keys.join(", ")
                ))?;
            }
            Ok(())
        }
        KeyCommand::Names { key, off, keyring } => {
            let mut loaded = LoadedKeyring::load(cio::require_keyring(&keyring.keyring)?)?;
            if off {
                loaded.ring.set_names(None)?;
                loaded.save()?;
                print_line(format_args!("names of new objects are no longer encrypted"))?;
            } else {
                let name = key.expect("clap requires KEY without --off");
                loaded.ring.set_names(Some(name.clone()))?;
                loaded.save()?;
                let id = loaded.ring.name_key().expect("set above").id();
                print_line(format_args!(
                    "object names are encrypted under key {name:?} (name key id {id})"
                ))?;
            }
            Ok(())
        }
        KeyCommand::ExportSecret { name, keyring } => {
            let loaded = LoadedKeyring::load(cio::require_keyring(&keyring.keyring)?)?;
            let key = loaded
                .ring
                .find(&name)
                .with_context(|| format!("no key named {name:?} in the keyring"))?;
            let secret = match &key.material {
                KeyMaterial::Sym(k) => k.to_secret_string(),
                KeyMaterial::X25519(i) => i.to_secret_string(),
                KeyMaterial::RecipientOnly(_) => {
                    bail!("key {name:?} is a public recipient only; it has no secret")
                }
            };
            if key.status == KeyStatus::Revoked {
                eprintln!("r2seal: warning: key {name:?} is revoked: anything sealed to it must be re-keyed, and this copy of its secret is one more to keep safe");
            }
            if std::io::stdout().is_terminal() {
                eprintln!("r2seal: warning: printing a secret key to the terminal");
            }
            // The bare value, one line: what `wrangler secret put NAME` reads from stdin.
            let mut out = std::io::stdout().lock();
            out.write_all(secret.as_bytes())?;
            out.write_all(b"\n")?;
            Ok(())
        }
    }
}

fn set_status(path: &Path, name: &str, status: KeyStatus) -> Result<()> {
    let mut loaded = LoadedKeyring::load(path)?;
    let old = loaded.ring.set_status(name, status)?;
    if old == status {
        print_line(format_args!("key {name:?} is already {status}"))?;
        return Ok(());
    }
    loaded.save()?;
    print_line(format_args!("key {name:?}: {old} -> {status}"))?;
    if status == KeyStatus::Revoked {
        eprintln!("r2seal: objects sealed to this key stay readable by whoever holds a copy of it; re-key them");
    }
    // Sealing fails while anything names a key that no longer seals: say so now.
    for named_by in loaded.ring.named_by(name) {
        match named_by {
            None => eprintln!(
                "r2seal: warning: the defaults still name {name:?}, so sealing with them fails: set them without it (r2seal key default KEY…)"
            ),
            Some(prefix) => eprintln!(
                "r2seal: warning: the policy for {prefix:?} still names {name:?}, so sealing under it fails: set it without it (r2seal key policy {prefix:?} KEY…, or --remove)"
            ),
        }
    }
    Ok(())
}

fn list(path: &Path, as_json: bool) -> Result<()> {
    let loaded = LoadedKeyring::load(path)?;
    let ring = &loaded.ring;
    if as_json {
        let keys: Vec<_> = ring
            .keys()
            .iter()
            .map(|k| {
                json!({
                    "name": k.name, "id": k.id().to_string(), "kind": k.kind(), "status": k.status.to_string(),
                    "created": k.created, "recovery": k.recovery,
                    "recipient": match k.material { KeyMaterial::Sym(_) => None, _ => Some(k.recipient().describe()) },
                })
            })
            .collect();
        let policies: Vec<_> = ring
            .policies()
            .iter()
            .map(|p| json!({"prefix": p.prefix, "keys": p.keys}))
            .collect();
        print_line(format_args!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"keys": keys, "default": ring.defaults(), "policies": policies})
            )?
        ))?;
        return Ok(());
    }
    if ring.keys().is_empty() {
        print_line(format_args!("(no keys)"))?;
    }
    for k in ring.keys() {
        let flags = if k.recovery { " recovery" } else { "" };
        print_line(format_args!(
            "{:<16} {:<12} {:<10} {:<8} {}{flags}",
            k.name,
            k.id(),
            k.kind(),
            k.status,
            k.created
        ))?;
    }
    if !ring.defaults().is_empty() {
        print_line(format_args!("default: {}", ring.defaults().join(", ")))?;
    }
    for p in ring.policies() {
        print_line(format_args!(
            "policy:  {:<20} -> {}",
            p.prefix,
            p.keys.join(", ")
        ))?;
    }
    Ok(())
}
