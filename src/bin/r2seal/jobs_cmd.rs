//! Bucket jobs on the command line: the flags every job shares ([`JobArgs`]) turned into
//! a [`JobConfig`], and the report printed, written and turned into an exit status.
//! The walking itself is `r2seal::jobs`.

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use r2seal::jobs::migrate::{Destination, MigrateOptions, Migrator};
use r2seal::jobs::verify::Verifier;
use r2seal::jobs::{self, JobConfig, Report};
use r2seal::keys::Identity;
use r2seal::sealed::SealedBucket;
use r2seal::store::Store;

use crate::cli::{JobArgs, MigrateArgs, RecipientArgs, VerifyArgs};
use crate::objects::{flat, name_key, open_store, runtime, write_keys, Target};

/// Problems printed one per line on stderr before the summary (all are in `--report`).
const MAX_PROBLEM_LINES: usize = 20;

/// The walker's configuration for a job called `label` (`migrate`, `verify`, …).
pub fn config(args: &JobArgs, label: &str) -> Result<JobConfig> {
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    Ok(JobConfig {
        jobs: args.jobs,
        shard: args.shard,
        dry_run: args.dry_run,
        progress: !args.quiet && !args.json,
        max_retries: args.retries,
        record_done: args.report.is_some() || args.json,
        label: label.to_string(),
        ..JobConfig::default()
    })
}

/// Write `--report`, print the summary (or the JSON report), and fail when anything
/// was left undone. `done_word` says what "done" means for this job (`sealed`, …).
pub fn finish(report: &Report, args: &JobArgs, done_word: &str) -> Result<()> {
    finish_with(report, args, &report.summary(done_word), None)
}

/// Like [`finish`] for a job whose failures are findings (verify): each is printed as
/// it is, and the error names how many objects have problems, by kind.
pub fn finish_findings(report: &Report, args: &JobArgs, done_word: &str) -> Result<()> {
    let mut kinds = std::collections::BTreeMap::<&str, u64>::new();
    for e in report.entries.iter().filter(|e| e.outcome == "failed") {
        let kind = e
            .detail
            .as_deref()
            .and_then(|d| d.split_once(':'))
            .map_or("failed", |(k, _)| k);
        *kinds.entry(kind).or_default() += 1;
    }
    let kinds = kinds
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let summary = format!(
        "{} {}: {} objects listed; {} {done_word} ({}), {} skipped, {} with problems{}{} in {:.1} s.",
        report.job,
        report.url,
        report.listed,
        report.done,
        jobs::human_bytes(report.bytes),
        report.skipped,
        report.failures,
        if kinds.is_empty() { String::new() } else { format!(" ({kinds})") },
        if report.conflicts > 0 { format!(", {} changed while read", report.conflicts) } else { String::new() },
        report.elapsed_secs,
    );
    let summary = match &report.list_error {
        Some(e) => format!(
            "{summary} The listing failed, so objects after that point were not checked: {e}."
        ),
        None => summary,
    };
    finish_with(report, args, &summary, Some(kinds))
}

fn finish_with(
    report: &Report,
    args: &JobArgs,
    summary: &str,
    findings: Option<String>,
) -> Result<()> {
    let json = serde_json::to_string_pretty(report).context("cannot serialize the report")?;
    if let Some(path) = &args.report {
        let mut out = crate::io::Output::new(Some(path))?;
        out.write_all(json.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
        out.commit()?;
    }
    // Quiet, with findings: the error below gives their count, once.
    let quiet_findings = args.quiet && findings.is_some() && report.failures > 0;
    let problems = report
        .entries
        .iter()
        .filter(|e| e.outcome == "conflict" || e.outcome == "failed");
    for (i, e) in problems.enumerate() {
        if i == MAX_PROBLEM_LINES {
            // With --json every entry is on stdout already.
            match (&args.report, args.json) {
                (_, true) => {}
                (Some(path), false) => eprintln!("r2seal: … more in {}", path.display()),
                (None, false) => eprintln!("r2seal: … more: --report FILE lists them all"),
            }
            break;
        }
        match (&findings, &e.detail) {
            (Some(_), Some(d)) if e.outcome == "failed" => eprintln!("r2seal: {d}"),
            _ => eprintln!(
                "r2seal: {} {}: {}",
                e.outcome,
                e.key,
                e.detail.as_deref().unwrap_or("")
            ),
        }
    }
    if args.json {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{json}")?;
    } else if !args.quiet || (!report.is_complete() && !quiet_findings) {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{summary}")?;
    }
    if let Some(kinds) = findings.filter(|_| report.failures > 0) {
        bail!(
            "{}: {} objects with problems ({kinds})",
            report.job,
            report.failures
        );
    }
    if !report.is_complete() {
        let mut what = Vec::new();
        if report.conflicts > 0 {
            what.push(format!("{} conflicts", report.conflicts));
        }
        if report.transient_failures > 0 {
            what.push(format!("{} failures", report.transient_failures));
        }
        if report.permanent_failures() > 0 {
            what.push(format!(
                "{} failures that running it again will not fix",
                report.permanent_failures()
            ));
        }
        if let Some(e) = &report.list_error {
            what.push(format!("listing failed: {e}"));
        }
        let rerun = if report.rerun_may_finish() {
            "; rerun to finish"
        } else {
            ""
        };
        bail!(
            "{}: work left undone ({}){rerun}",
            report.job,
            what.join(", ")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// migrate and verify

/// Open the store of `target` and check, with one small listing, that the bucket exists
/// and the credentials work: a one-line error before any work starts.
async fn open_checked(target: &Target, endpoint: Option<&str>) -> Result<Arc<dyn Store>> {
    let store = open_store(target, endpoint).await?;
    store
        .list(&target.key, None, None, Some(1))
        .await
        .map_err(flat)?;
    Ok(store)
}

pub fn migrate(args: MigrateArgs) -> Result<()> {
    if args.part_size < 5 {
        bail!("--part-size must be at least 5 (MiB): S3 and R2 refuse smaller parts");
    }
    let target = Target::parse(&args.url, false)?;
    let dest_target = args
        .to
        .as_deref()
        .map(|u| Target::parse(u, true))
        .transpose()?;
    if let Some(d) = &dest_target {
        if d.store_url == target.store_url
            && (d.key.starts_with(&target.key) || target.key.starts_with(&d.key))
        {
            bail!(
                "--to {} overlaps the source {}: pick a prefix outside it (or migrate in place without --to)",
                d.url_of(&d.key),
                target.url_of(&target.key)
            );
        }
    }
    let (recipients, identities) = if args.reverse {
        (None, reverse_identities(&args.recipients)?)
    } else {
        let first = if target.key.is_empty() {
            "x"
        } else {
            &target.key
        };
        let (r, i) = write_keys(&args.recipients, first)?;
        (Some(r), i)
    };
    if args.verify && !args.reverse && identities.is_empty() {
        bail!("--verify reads every sealed object back: it needs an identity that opens them (-i FILE or a keyring)");
    }
    let cfg = config(&args.job, "migrate")?;
    let opts = MigrateOptions {
        reverse: args.reverse,
        verify: args.verify,
        dry_run: args.job.dry_run,
        part_size: Some(args.part_size * 1024 * 1024),
        multipart_threshold: Some(args.multipart_threshold * 1024 * 1024),
        encrypt_names: args.encrypt_names,
        prefix: target.key.clone(),
    };
    let names = name_key(&args.recipients.keyring)?;
    match (&names, args.encrypt_names) {
        (None, true) => bail!(
            "--encrypt-names needs a name key: `r2seal key names KEY` in the keyring, or R2SEAL_NAMES_KEY"
        ),
        (Some(_), false) if !args.reverse => bail!(
            "this keyring encrypts object names: pass --encrypt-names to store migrated objects under encrypted names"
        ),
        (Some(_), true) if args.reverse => {
            bail!("--encrypt-names seals; --reverse unseals (back to plaintext names with a name key)")
        }
        _ => {}
    }
    let rt = runtime()?;
    let report = rt.block_on(async {
        let endpoint = args.job.endpoint.as_deref();
        let store = open_checked(&target, endpoint).await?;
        let dest = match &dest_target {
            Some(d) => Some(Destination {
                store: open_checked(d, endpoint).await?,
                src_prefix: target.key.clone(),
                dst_prefix: d.key.clone(),
            }),
            None => None,
        };
        let mut bucket = SealedBucket::new(store.clone()).with_identities(identities);
        if let Some(k) = names {
            bucket = bucket.with_name_key(k);
        }
        if let Some(r) = recipients {
            bucket = bucket.with_recipients(r);
        }
        // Unsealing under encrypted names walks the stored form of the prefix.
        let walk = if args.reverse {
            jobs::rotate::walk_prefix(&bucket, &target.key)
        } else {
            target.key.clone()
        };
        let migrator = Arc::new(Migrator::new(bucket, dest, opts));
        let report = jobs::run(store, &walk, &cfg, move |item| {
            let m = migrator.clone();
            async move { m.migrate_one(item).await }
        })
        .await;
        anyhow::Ok(report)
    })?;
    let word = if args.reverse { "unsealed" } else { "sealed" };
    finish(&report, &args.job, word)
}

/// Identities for --reverse: -i files, else every keyring key with a secret (revoked
/// ones too: this is the way out, and it writes nothing sealed).
fn reverse_identities(args: &RecipientArgs) -> Result<Vec<Identity>> {
    if !args.identities.is_empty() {
        return crate::io::load_identity_files(&args.identities);
    }
    let Some(path) = &args.keyring.keyring else {
        bail!(
            "--reverse opens objects: pass -i FILE, or a keyring with --keyring / R2SEAL_KEYRING"
        );
    };
    let ids = crate::io::LoadedKeyring::load(path)?
        .ring
        .identities_for_rekey();
    if ids.is_empty() {
        bail!("the keyring holds no key that can open objects (only public recipients)");
    }
    Ok(ids)
}

pub fn verify(args: VerifyArgs) -> Result<()> {
    let target = Target::parse(&args.url, false)?;
    let (identities, keyring) = if args.identities.identities.is_empty() {
        let Some(path) = &args.identities.keyring.keyring else {
            bail!("no identities: pass -i FILE, or a keyring with --keyring / R2SEAL_KEYRING");
        };
        let ring = crate::io::LoadedKeyring::load(path)?.ring;
        (ring.identities(), Some(Arc::new(ring)))
    } else {
        (
            crate::io::load_identity_files(&args.identities.identities)?,
            None,
        )
    };
    if args.sample == Some(0) {
        bail!("--sample must be at least 1");
    }
    let names = name_key(&args.identities.keyring)?;
    let mut cfg = config(&args.job, "verify")?;
    cfg.sample = args.sample;
    let rt = runtime()?;
    let report = rt.block_on(async {
        let store = open_checked(&target, args.job.endpoint.as_deref()).await?;
        let mut bucket = SealedBucket::new(store.clone()).with_identities(identities);
        if let Some(k) = names {
            bucket = bucket.with_name_key(k);
        }
        // With encrypted names, objects live under the encrypted form of the prefix.
        let walk = jobs::rotate::walk_prefix(&bucket, &target.key);
        let verifier = Arc::new(Verifier::new(bucket, keyring));
        let report = jobs::run(store, &walk, &cfg, move |item| {
            let v = verifier.clone();
            async move { v.verify_one(item).await }
        })
        .await;
        anyhow::Ok(report)
    })?;
    finish_findings(&report, &args.job, "authenticated")
}
