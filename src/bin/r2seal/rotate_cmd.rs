//! `rotate`, `export` and `import` on the command line: resolve keys and the plan, print
//! it, run `r2seal::jobs::{rotate, export}`, report, and update keyring statuses.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use r2seal::jobs::export::{run_export_with, run_import, ExportOptions};
use r2seal::jobs::rotate::run as run_rotate;
use r2seal::keys::keyring::{KeyStatus, Keyring};
use r2seal::keys::{Identity, KeyId, Recipient};
use r2seal::sealed::{Recipients, Rekey, RotationPlan};

use crate::cli::{ExportArgs, ImportArgs, RecipientArgs, RotateArgs};
use crate::io::{self as cio, LoadedKeyring};
use crate::jobs_cmd;
use crate::local;
use crate::objects::{name_key, open_store, runtime, sealed_bucket, write_keys, Target};

/// A key given to `--add`: a keyring key (name or id), else an `age1…` recipient.
fn resolve_add(ring: Option<&Keyring>, s: &str) -> Result<Recipient> {
    if let Some(k) = ring.and_then(|r| r.find(s)) {
        if k.status != KeyStatus::Active {
            bail!(
                "--add {s}: key {:?} is {}; only active keys can be added",
                k.name,
                k.status
            );
        }
        return Ok(k.recipient());
    }
    Recipient::parse(s).with_context(|| {
        format!("--add {s:?}: not a keyring key name or id, nor an age1… recipient")
    })
}

/// A key given to `--remove`: a keyring key (name or id), an `age1…` recipient, or a
/// bare key id (11 base64 characters, as `r2seal inspect` and `key list` show).
fn resolve_remove(ring: Option<&Keyring>, s: &str) -> Result<KeyId> {
    if let Some(k) = ring.and_then(|r| r.find(s)) {
        return Ok(k.id());
    }
    if let Ok(r) = Recipient::parse(s) {
        return Ok(r.key_id());
    }
    s.parse::<KeyId>().map_err(|_| {
        anyhow::anyhow!(
            "--remove {s:?}: not a keyring key name or id, an age1… recipient, or a key id"
        )
    })
}

fn describe(ring: Option<&Keyring>, id: &KeyId) -> String {
    match ring.and_then(|r| r.keys().iter().find(|k| k.id() == *id)) {
        Some(k) => format!("{} ({id}, {})", k.name, k.status),
        None => id.to_string(),
    }
}

fn has_explicit(args: &RecipientArgs) -> bool {
    !(args.recipients.is_empty() && args.recipient_files.is_empty() && args.identities.is_empty())
}

pub fn rotate(args: RotateArgs) -> Result<()> {
    let target = Target::parse(&args.url, false)?;
    let cfg = jobs_cmd::config(&args.job, "rotate")?;
    let shared: Option<Arc<Keyring>> = match &args.recipients.keyring.keyring {
        Some(p) => Some(Arc::new(LoadedKeyring::load(p)?.ring)),
        None => None,
    };
    let ring = shared.as_deref();
    let explicit = has_explicit(&args.recipients);
    if !explicit && ring.is_none() {
        bail!(
            "rotate needs the recipient set: a keyring (--keyring or R2SEAL_KEYRING) or -r/-R/-i"
        );
    }
    let add = args
        .add
        .iter()
        .map(|s| resolve_add(ring, s))
        .collect::<Result<Vec<_>>>()?;
    let remove: BTreeSet<KeyId> = args
        .remove
        .iter()
        .map(|s| resolve_remove(ring, s))
        .collect::<Result<_>>()?;
    if let Some(r) = add.iter().find(|r| remove.contains(&r.key_id())) {
        bail!("{} is both added and removed", r.describe());
    }
    let exposed: BTreeSet<KeyId> = ring
        .map(|r| {
            r.keys()
                .iter()
                .filter(|k| k.status == KeyStatus::Revoked)
                .map(|k| k.id())
                .collect()
        })
        .unwrap_or_default();
    let rekey = if let Some(t) = &args.rekey_before {
        Rekey::Before(parse_time(t)?)
    } else if args.rekey_all {
        Rekey::Before(std::time::SystemTime::now())
    } else if args.rekey {
        Rekey::Always
    } else if args.no_rekey {
        Rekey::Never
    } else {
        Rekey::Exposed
    };
    let removed_revoked: Vec<&KeyId> = remove.iter().filter(|id| exposed.contains(id)).collect();
    if rekey == Rekey::Never && !removed_revoked.is_empty() {
        eprintln!(
            "r2seal: warning: removing revoked key(s) {} with --no-rekey: a rewrap does not protect against anyone who kept a copy of an old envelope; their objects keep the same file keys",
            removed_revoked.iter().map(|id| describe(ring, id)).collect::<Vec<_>>().join(", ")
        );
    }

    // The recipients before changes and the identities that open objects (revoked keys
    // included: re-keying away from them is what they are kept for).
    let mut identities = cio::load_identity_files(&args.recipients.identities)?;
    let base = match &shared {
        _ if explicit => Recipients::fixed(local::resolve_recipients(&args.recipients, None)?),
        Some(r) => Recipients::Keyring(r.clone()),
        None => bail!("rotate needs the recipient set: a keyring or -r/-R/-i"),
    };
    if let Some(r) = ring {
        identities.extend(r.identities_for_rekey());
    }
    if identities.is_empty() {
        bail!("no identities to open objects with: pass -i FILE or a keyring holding secrets");
    }

    // Print the rule, precisely.
    let base_text = match (&base, ring) {
        (Recipients::Fixed(r), _) => {
            let ids: Vec<String> = r.iter().map(|x| describe(ring, &x.key_id())).collect();
            format!("[{}]", ids.join(", "))
        }
        (Recipients::Keyring(_), Some(r)) => {
            let mut t = format!(
                "the keyring's policy for each key (defaults: [{}]",
                r.defaults().join(", ")
            );
            for p in r.policies() {
                t.push_str(&format!("; {}* -> [{}]", p.prefix, p.keys.join(", ")));
            }
            t.push(')');
            t
        }
        (Recipients::Keyring(_), None) => "the keyring's policy".into(),
    };
    let mut rule = format!("rotate: target set = {base_text}");
    if !remove.is_empty() {
        let r: Vec<String> = remove.iter().map(|id| describe(ring, id)).collect();
        rule.push_str(&format!(" minus [{}]", r.join(", ")));
    }
    if !add.is_empty() {
        let a: Vec<String> = add.iter().map(|r| describe(ring, &r.key_id())).collect();
        rule.push_str(&format!(" plus [{}]", a.join(", ")));
    }
    let rekey_text = match rekey {
        Rekey::Always => {
            "; re-key every object whose file key was ever wrapped to a key outside its set".into()
        }
        Rekey::Exposed if exposed.is_empty() => {
            "; rewrap only (no revoked key in the keyring)".into()
        }
        Rekey::Exposed => {
            "; re-key objects whose file key was ever wrapped to a revoked key, rewrap the rest"
                .into()
        }
        Rekey::Never => "; rewrap only (--no-rekey)".into(),
        Rekey::Before(t) => format!(
            "; re-key every object last written before {} (to finish an interrupted run: --rekey-before {0})",
            format_time(t)
        ),
    };
    rule.push_str(&rekey_text);
    if !args.job.json && !args.job.quiet {
        eprintln!("{rule}");
    }

    let plan = RotationPlan {
        base,
        add,
        remove: remove.clone(),
        exposed,
        rekey,
    };
    let names = name_key(&args.recipients.keyring)?;
    let whole_bucket = target.key.is_empty() && cfg.shard.is_none();
    let rt = runtime()?;
    let summary = rt.block_on(async {
        let store = open_store(&target, args.job.endpoint.as_deref()).await?;
        let bucket = sealed_bucket(store, &names).with_identities(identities);
        let bucket = match &plan.base {
            Recipients::Keyring(k) => bucket.with_recipients(Recipients::Keyring(k.clone())),
            fixed => bucket.with_recipients(fixed.clone()),
        };
        anyhow::Ok(run_rotate(bucket, &target.key, plan, &cfg).await)
    })?;
    let word = format!(
        "rotated ({} rewrapped, {} re-keyed), body bytes through this client",
        summary.rotation.rewrapped, summary.rotation.rekeyed
    );
    if let (Rekey::Before(t), false) = (rekey, summary.report.is_complete()) {
        eprintln!(
            "r2seal: to finish re-keying without starting over: --rekey-before {}",
            format_time(t)
        );
    }
    let outcome = jobs_cmd::finish(&summary.report, &args.job, &word);

    // Keyring statuses, after a complete run over the whole bucket only.
    if !remove.is_empty() && !cfg.dry_run {
        match (&args.recipients.keyring.keyring, summary.retirable.is_empty(), whole_bucket) {
            (Some(path), false, true) => retire(path, &summary.retirable)?,
            (Some(_), _, false) => eprintln!("r2seal: keyring unchanged: only a whole-bucket run (no prefix, no --shard) can tell that no object references a removed key"),
            (Some(_), true, true) => eprintln!("r2seal: keyring unchanged: the run left work undone"),
            (None, ..) => {}
        }
    }
    outcome
}

/// An RFC 3339 time (`--rekey-before`).
fn parse_time(s: &str) -> Result<std::time::SystemTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(std::time::SystemTime::from)
        .with_context(|| {
            format!("--rekey-before {s:?}: expected an RFC 3339 time such as 2026-11-27T12:00:00Z")
        })
}

/// RFC 3339 in UTC, to the nanosecond, so that `--rekey-before` gets the exact cut back.
fn format_time(t: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "?".into())
}

/// Mark removed keys retired (active ones only; revoked stay revoked), unless defaults
/// or a policy still name them.
fn retire(path: &Path, ids: &BTreeSet<KeyId>) -> Result<()> {
    let mut loaded = LoadedKeyring::load(path)?;
    let mut changed = Vec::new();
    for id in ids {
        let Some(key) = loaded.ring.keys().iter().find(|k| k.id() == *id) else {
            continue;
        };
        let name = key.name.clone();
        let named = loaded.ring.defaults().contains(&name)
            || loaded
                .ring
                .policies()
                .iter()
                .any(|p| p.keys.contains(&name));
        if named {
            eprintln!("r2seal: key {name:?} is no longer on any object but the defaults or a policy still name it: not retired (update them with `r2seal key default` / `key policy`)");
            continue;
        }
        if key.status == KeyStatus::Active {
            loaded.ring.set_status(&name, KeyStatus::Retired)?;
            changed.push(name);
        }
    }
    if !changed.is_empty() {
        loaded.save()?;
        eprintln!(
            "r2seal: keyring: {} now retired (no object in the bucket is sealed to them)",
            changed.join(", ")
        );
    }
    Ok(())
}

pub fn export(args: ExportArgs) -> Result<()> {
    let target = Target::parse(&args.url, false)?;
    let cfg = jobs_cmd::config(&args.job, "export")?;
    let identities: Vec<Identity> = local::resolve_identities(&args.identities)?;
    let names = name_key(&args.identities.keyring)?;
    let rt = runtime()?;
    let report = rt.block_on(async {
        let store = open_store(&target, args.job.endpoint.as_deref()).await?;
        let bucket = sealed_bucket(store, &names).with_identities(identities);
        let opts = ExportOptions {
            delete_gone: args.delete,
        };
        run_export_with(bucket, &target.key, &args.dir, &cfg, &opts)
            .await
            .with_context(|| format!("export to {}", args.dir.display()))
    })?;
    jobs_cmd::finish(&report, &args.job, "exported")
}

pub fn import(args: ImportArgs) -> Result<()> {
    if !args.dir.is_dir() {
        bail!("{}: not a directory", args.dir.display());
    }
    let target = Target::parse(&args.url, true)?;
    let mut prefix = target.key.clone();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    let cfg = jobs_cmd::config(&args.job, "import")?;
    let (recipients, identities) = write_keys(&args.recipients, &prefix)?;
    let names = name_key(&args.recipients.keyring)?;
    let rt = runtime()?;
    let report = rt.block_on(async {
        let store = open_store(&target, args.job.endpoint.as_deref()).await?;
        let bucket = sealed_bucket(store, &names)
            .with_recipients(recipients)
            .with_identities(identities);
        run_import(bucket, &args.dir, &prefix, &cfg)
            .await
            .with_context(|| format!("import from {}", args.dir.display()))
    })?;
    jobs_cmd::finish(&report, &args.job, "imported")
}
