//! `rotate`: bring every object under a prefix to its target recipient set, through the
//! walker. The per-object work is [`SealedBucket::rotate`]: skip an object already sealed
//! to its set, else rewrap its envelope in place (server-side, no body through this
//! process), or re-key it when the plan says so (SECURITY.md §4.5).
//!
//! Resumable because rotation is idempotent: a rerun finds rotated objects at their target
//! and skips them. This module never edits the keyring; [`RotateSummary::retirable`] says
//! which removed keys no object in the walked range references any more, and the caller
//! decides what to do with that (the CLI retires them when the whole bucket was walked).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{Item, JobConfig, Outcome, Report};
use crate::keys::KeyId;
use crate::sealed::{RotateAction, RotationPlan, SealedBucket, SealedError};

/// Map a sealed-bucket error to the walker's outcome: plaintext objects are skipped
/// (`migrate` seals them), conflicts are retried, transient failures too.
pub fn outcome_of(e: &SealedError) -> Outcome {
    if e.is_plaintext() {
        Outcome::Skipped("plaintext (seal it with migrate first)".into())
    } else if e.is_conflict() {
        Outcome::Conflict(e.to_string())
    } else if e.is_retryable() {
        Outcome::Retry(e.to_string())
    } else {
        Outcome::Failed(e.to_string())
    }
}

/// The prefix the walker lists for plaintext prefix `prefix`: itself, or with encrypted
/// names the stored form of its directory part (the work then filters, see
/// [`plain_key_in`]).
pub fn walk_prefix(bucket: &SealedBucket, prefix: &str) -> String {
    match bucket.name_key() {
        None => prefix.to_string(),
        Some(k) => k.list_prefix(prefix).stored,
    }
}

/// The plaintext key of listed (stored) key `stored`, or the outcome to report instead:
/// a name that does not decrypt fails, one outside `prefix` is skipped.
pub fn plain_key_in(bucket: &SealedBucket, stored: &str, prefix: &str) -> Result<String, Outcome> {
    let key = bucket.plain_key(stored).map_err(|e| {
        Outcome::Failed(format!(
            "{e} (the name does not decrypt under the name key)"
        ))
    })?;
    if !key.starts_with(prefix) {
        return Err(Outcome::Skipped("outside the prefix".into()));
    }
    Ok(key)
}

/// Rotate one object (plaintext key). `Done { bytes }` counts the body bytes that passed through
/// this process (0 for a rewrap).
pub async fn rotate_object(
    bucket: &SealedBucket,
    plan: &RotationPlan,
    key: &str,
    dry_run: bool,
    stats: &Mutex<RotateStats>,
) -> Outcome {
    match bucket.rotate(key, plan, dry_run).await {
        Ok(r) => {
            let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
            s.body_bytes += r.body_bytes;
            match r.action {
                RotateAction::Unchanged => {
                    s.unchanged += 1;
                    Outcome::Skipped("already at the target set".into())
                }
                RotateAction::Rewrap => {
                    s.rewrapped += 1;
                    Outcome::Done {
                        bytes: r.body_bytes,
                    }
                }
                RotateAction::Rekey => {
                    s.rekeyed += 1;
                    Outcome::Done {
                        bytes: r.body_bytes,
                    }
                }
            }
        }
        Err(e) => outcome_of(&e),
    }
}

/// Counts by action, kept beside the walker's report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RotateStats {
    pub rewrapped: u64,
    pub rekeyed: u64,
    pub unchanged: u64,
    /// Body bytes that passed through this process (re-keys only).
    pub body_bytes: u64,
}

/// The walker's report plus rotation's own counts.
#[derive(Debug, Clone, Serialize)]
pub struct RotateSummary {
    #[serde(flatten)]
    pub report: Report,
    pub rotation: RotateStats,
    /// Removed keys that no walked object references any more: every object was
    /// rotated or already at its target, with no failure, conflict or listing error.
    /// Empty after a dry run or an incomplete one.
    #[serde(skip)]
    pub retirable: BTreeSet<KeyId>,
}

/// Rotate every object under `prefix` (relative to the bucket's store root).
pub async fn run(
    bucket: SealedBucket,
    prefix: &str,
    plan: RotationPlan,
    cfg: &JobConfig,
) -> RotateSummary {
    let stats = Arc::new(Mutex::new(RotateStats::default()));
    let plan = Arc::new(plan);
    let store = bucket.store().clone();
    let walk = walk_prefix(&bucket, prefix);
    let prefix_owned = prefix.to_string();
    let (dry_run, work_stats, work_plan) = (cfg.dry_run, stats.clone(), plan.clone());
    let work = move |item: Item| {
        let (bucket, plan, stats) = (bucket.clone(), work_plan.clone(), work_stats.clone());
        let prefix = prefix_owned.clone();
        async move {
            match plain_key_in(&bucket, &item.key, &prefix) {
                Ok(key) => rotate_object(&bucket, &plan, &key, dry_run, &stats).await,
                Err(out) => out,
            }
        }
    };
    let report = super::run(store, &walk, cfg, work).await;
    let rotation = stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let retirable = if report.is_complete() && !cfg.dry_run {
        plan.remove.clone()
    } else {
        BTreeSet::new()
    };
    RotateSummary {
        report,
        rotation,
        retirable,
    }
}
