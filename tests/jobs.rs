//! `r2seal migrate` and `r2seal verify` against real servers: Garage
//! (`R2SEAL_TEST_S3_ENDPOINT`) for the CLI cases, moto (`R2SEAL_TEST_S3_COND_ENDPOINT`,
//! which enforces If-Match) for the conflict cases. Without a server each case prints a
//! loud SKIPPED line and passes, except with `CI=true`, where it fails. Every case works
//! under a fresh prefix. Crash and restart cases are in tests/jobs_crash.rs.
#![cfg(feature = "cli")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use assert_cmd::Command;
use r2seal::jobs::migrate::{MigrateOptions, Migrator};
use r2seal::jobs::{self, JobConfig};
use r2seal::keys::Identity;
use r2seal::sealed::{Recipients, SealedBucket};
use r2seal::store::{self, Bytes, Store};
use support::{fresh_prefix, raw, rt_multi as rt, Interfere, S3Env, Server, Watched};
use tempfile::TempDir;

const SUITE: &str = "r2seal-jobs";
const MIB: usize = 1024 * 1024;

/// A server and a fresh prefix in it.
struct Site {
    env: S3Env,
    /// Fresh prefix for this case, ending in `/`.
    prefix: String,
}

impl Site {
    fn garage(case: &str) -> Option<Site> {
        Site::on(Server::Garage, case)
    }

    fn moto(case: &str) -> Option<Site> {
        Site::on(Server::Cond, case)
    }

    fn on(server: Server, case: &str) -> Option<Site> {
        Some(Site {
            env: S3Env::get(server, &format!("jobs::{case}"))?,
            prefix: fresh_prefix(SUITE, case),
        })
    }

    /// The bucket's root (keys are full keys, as the CLI's `s3://bucket/…` URLs use).
    async fn root(&self) -> Arc<dyn Store> {
        self.env.store("").await
    }

    fn url(&self, rel: &str) -> String {
        format!("s3://{}/{}{rel}", self.env.bucket, self.prefix)
    }

    fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A plaintext object as an operator's bucket holds it.
#[derive(Clone)]
struct Plain {
    rel: &'static str,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    cache_control: Option<&'static str>,
    mtime: Option<&'static str>,
}

fn mixed_tree() -> Vec<Plain> {
    let p = |rel, body, ct, cc, mtime| Plain {
        rel,
        body,
        content_type: ct,
        cache_control: cc,
        mtime,
    };
    let jsonl: Vec<u8> = (0..200)
        .flat_map(|i| {
            format!("{{\"role\":\"user\",\"turn\":{i},\"text\":\"SECRET-TRANSCRIPT\"}}\n")
                .into_bytes()
        })
        .collect();
    vec![
        p(
            "credentials/telegram.json",
            b"{\"token\":\"SECRET-BOT-TOKEN-123\"}".to_vec(),
            Some("application/json"),
            Some("no-store"),
            Some("1732500000.123456789"),
        ),
        p(
            "sessions/2026-11-25.jsonl",
            jsonl,
            Some("application/x-ndjson"),
            None,
            Some("1732500001"),
        ),
        p("blobs/random.bin", data(300_000, 3), None, None, None),
        p("empty", Vec::new(), Some("text/plain"), None, Some("1")),
        // More than one 5 MiB part (the tests' part size): a multipart migration.
        p(
            "blobs/large.bin",
            data(11 * MIB + 12345, 4),
            Some("application/octet-stream"),
            Some("max-age=60"),
            Some("1732500002"),
        ),
    ]
}

async fn plant(root: &Arc<dyn Store>, s: &Site, objects: &[Plain]) {
    for o in objects {
        let mut metadata = BTreeMap::new();
        if let Some(m) = o.mtime {
            metadata.insert("mtime".to_string(), m.to_string());
        }
        root.put(
            &s.key(o.rel),
            Bytes::from(o.body.clone()),
            &store::PutOptions {
                content_type: o.content_type.map(str::to_owned),
                cache_control: o.cache_control.map(str::to_owned),
                metadata,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
}

async fn etags(root: &Arc<dyn Store>, prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut token = None;
    loop {
        let page = root.list(prefix, None, token, None).await.unwrap();
        for o in page.objects {
            out.insert(o.key, o.etag);
        }
        match page.next_continuation {
            Some(t) => token = Some(t),
            None => return out,
        }
    }
}

struct Cli {
    dir: TempDir,
    env: Vec<(String, String)>,
    recipient: String,
}

impl Cli {
    fn new(s: &Site) -> Cli {
        let dir = TempDir::new().unwrap();
        let env = vec![
            ("AWS_ENDPOINT_URL".to_string(), s.env.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".to_string(), s.env.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                s.env.secret_access_key.clone(),
            ),
            ("AWS_REGION".to_string(), s.env.region.clone()),
        ];
        let mut cli = Cli {
            dir,
            env,
            recipient: String::new(),
        };
        let out = cli.ok(&["keygen", "-o", "key.txt"]);
        cli.recipient = String::from_utf8(out).unwrap().trim().to_string();
        cli.ok(&["keygen", "-o", "other.txt"]);
        cli
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("r2seal").unwrap();
        cmd.current_dir(self.dir.path())
            .env_remove("R2SEAL_KEYRING")
            .env_remove("R2SEAL_PASSPHRASE")
            .env_remove("R2SEAL_NAMES_KEY");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn ok(&self, args: &[&str]) -> Vec<u8> {
        self.cmd()
            .args(args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone()
    }

    /// Exit status 1; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).assert().failure().code(1);
        String::from_utf8_lossy(&out.get_output().stderr).into_owned()
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn report(&self, name: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.path(name)).unwrap()).unwrap()
    }

    fn identity(&self, file: &str) -> Identity {
        let text = std::fs::read_to_string(self.path(file)).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .unwrap();
        Identity::parse(line).unwrap()
    }
}

fn one_line(stderr: &str) -> &str {
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("r2seal: "), "{stderr:?}");
    stderr
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn keys_with(report: &serde_json::Value, outcome: &str) -> BTreeSet<String> {
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == outcome)
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect()
}

/// Open every object under the prefix with `identity` and compare with the originals.
async fn assert_sealed_originals(
    root: &Arc<dyn Store>,
    s: &Site,
    objects: &[Plain],
    identity: &Identity,
) {
    let bucket = SealedBucket::new(root.clone()).with_identities(vec![identity.clone()]);
    for o in objects {
        let key = s.key(o.rel);
        let (info, stored) = raw(&**root, &key).await;
        assert!(info.metadata.contains_key("r2seal"), "{key} is sealed");
        assert_eq!(
            info.metadata.keys().collect::<Vec<_>>(),
            vec!["r2seal"],
            "{key}: user metadata is sealed, not stored readable"
        );
        assert_eq!(
            info.content_type.as_deref(),
            o.content_type.or(info.content_type.as_deref())
        );
        if let Some(ct) = o.content_type {
            assert_eq!(info.content_type.as_deref(), Some(ct), "{key}");
        }
        assert_eq!(info.cache_control.as_deref(), o.cache_control, "{key}");
        for secret in [&b"SECRET"[..], &o.body[..o.body.len().min(64)]] {
            assert!(
                !contains(&stored, secret),
                "{key}: plaintext in the raw object"
            );
        }
        let (head, body) = bucket.get_bytes(&key).await.unwrap();
        assert_eq!(body.len(), o.body.len(), "{key}");
        assert!(body[..] == o.body[..], "{key}: opens to the original bytes");
        assert_eq!(
            head.metadata.user.get("mtime").map(String::as_str),
            o.mtime,
            "{key}: rclone's mtime survives, sealed"
        );
    }
}

#[test]
fn migrate_in_place_rerun_verify_reverse_garage() {
    let Some(s) = Site::garage("mixed") else {
        return;
    };
    let rt = rt();
    let root = rt.block_on(s.root());
    let tree = mixed_tree();
    rt.block_on(plant(&root, &s, &tree));
    let cli = Cli::new(&s);
    let url = s.url("");
    let r = cli.recipient.clone();
    let before = rt.block_on(etags(&root, &s.prefix));
    assert_eq!(before.len(), tree.len());

    // --dry-run writes nothing, and says what it would do.
    let out = cli.ok(&["migrate", "-r", &r, "--dry-run", "--json", &url]);
    let dry: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["done"], tree.len());
    assert_eq!(
        rt.block_on(etags(&root, &s.prefix)),
        before,
        "dry run wrote nothing"
    );

    // The migration, with read-back verification and a report.
    let out = cli.ok(&[
        "migrate",
        "-r",
        &r,
        "-i",
        "key.txt",
        "--verify",
        "--jobs",
        "3",
        "--part-size",
        "5",
        "--report",
        "report.json",
        &url,
    ]);
    let summary = String::from_utf8(out).unwrap();
    assert!(summary.contains("5 sealed"), "{summary}");
    let report = cli.report("report.json");
    assert_eq!(report["done"], 5);
    assert_eq!(report["conflicts"], 0);
    assert_eq!(report["failures"], 0);
    assert_eq!(report["listed"], 5);
    let expected: BTreeSet<String> = tree.iter().map(|o| s.key(o.rel)).collect();
    assert_eq!(keys_with(&report, "done"), expected);
    let bytes: u64 = tree.iter().map(|o| o.body.len() as u64).sum();
    assert_eq!(report["bytes"], bytes);
    let identity = cli.identity("key.txt");
    rt.block_on(assert_sealed_originals(&root, &s, &tree, &identity));
    // The large object went up in parts.
    let (info, _) = rt.block_on(raw(&*root, &s.key("blobs/large.bin")));
    assert!(
        info.meta.etag.contains('-'),
        "multipart ETag: {}",
        info.meta.etag
    );

    // A rerun is a no-op: everything skipped, nothing rewritten.
    let sealed = rt.block_on(etags(&root, &s.prefix));
    cli.ok(&["migrate", "-r", &r, "--report", "again.json", &url]);
    let again = cli.report("again.json");
    assert_eq!(
        (again["done"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(5))
    );
    assert_eq!(again["skipped_by_reason"]["already sealed"], 5);
    assert_eq!(
        rt.block_on(etags(&root, &s.prefix)),
        sealed,
        "rerun wrote nothing"
    );

    // verify: everything authenticates.
    let out = cli.ok(&["verify", "-i", "key.txt", "--json", &url]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (v["done"].as_u64(), v["failures"].as_u64()),
        (Some(5), Some(0))
    );
    // … and not with a key that cannot open them: non-zero exit, each one named.
    let err = cli.fails(&["verify", "-i", "other.txt", &url]);
    assert!(err.contains("undecryptable"), "{err}");
    assert!(err.contains("5 objects with problems"), "{err}");

    // --reverse restores the exact originals, headers and user metadata.
    cli.ok(&[
        "migrate",
        "-i",
        "key.txt",
        "--reverse",
        "--verify",
        "--part-size",
        "5",
        &url,
    ]);
    rt.block_on(async {
        for o in &tree {
            let (info, body) = raw(&*root, &s.key(o.rel)).await;
            assert!(body == o.body, "{}: original bytes back", o.rel);
            assert!(!info.metadata.contains_key("r2seal"));
            assert_eq!(info.metadata.get("mtime").map(String::as_str), o.mtime);
            if let Some(ct) = o.content_type {
                assert_eq!(info.content_type.as_deref(), Some(ct));
            }
            assert_eq!(info.cache_control.as_deref(), o.cache_control);
        }
    });
    // Reverse again: nothing sealed left, a no-op.
    let out = cli.ok(&["migrate", "-i", "key.txt", "--reverse", "--json", &url]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["skipped_by_reason"]["not sealed"], 5);
}

#[test]
fn migrate_to_another_prefix_leaves_the_source_untouched_garage() {
    let Some(s) = Site::garage("to") else {
        return;
    };
    let rt = rt();
    let root = rt.block_on(s.root());
    let tree: Vec<Plain> = mixed_tree()
        .into_iter()
        .filter(|o| o.body.len() < MIB)
        .collect();
    rt.block_on(plant(&root, &s, &tree));
    let cli = Cli::new(&s);
    let before = rt.block_on(etags(&root, &s.prefix));
    let src = s.url("");
    // A destination inside the source would be walked as it is written.
    let err = cli.fails(&[
        "migrate",
        "-r",
        &cli.recipient,
        "--to",
        &s.url("sealed/"),
        &src,
    ]);
    assert!(one_line(&err).contains("overlaps"), "{err}");
    let dst = format!("s3://{}/{}", s.env.bucket, fresh_prefix(SUITE, "to-dst"));
    cli.ok(&["migrate", "-r", &cli.recipient, "--to", &dst, &src]);
    let after = rt.block_on(etags(&root, &s.prefix));
    assert_eq!(before, after, "source untouched");
    for o in &tree {
        let (info, body) = rt.block_on(raw(&*root, &s.key(o.rel)));
        assert!(body == o.body && !info.metadata.contains_key("r2seal"));
    }
    let dst_server = Site {
        prefix: dst
            .trim_start_matches(&format!("s3://{}/", s.env.bucket))
            .to_string(),
        ..Site::garage("to").unwrap()
    };
    rt.block_on(assert_sealed_originals(
        &root,
        &dst_server,
        &tree,
        &cli.identity("key.txt"),
    ));
    // Rerun: destinations exist, nothing written.
    let out = cli.ok(&[
        "migrate",
        "-r",
        &cli.recipient,
        "--to",
        &dst,
        "--json",
        &src,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["skipped_by_reason"]["destination exists"], tree.len());
}

#[test]
fn shards_cover_every_object_exactly_once_garage() {
    let Some(s) = Site::garage("shards") else {
        return;
    };
    let rt = rt();
    let root = rt.block_on(s.root());
    let names: Vec<String> = (0..24).map(|i| format!("s/{i:02}.json")).collect();
    rt.block_on(async {
        for n in &names {
            root.put(
                &s.key(n),
                Bytes::from(format!("{{\"n\":\"{n}\"}}")),
                &Default::default(),
            )
            .await
            .unwrap();
        }
    });
    let cli = Cli::new(&s);
    let mut seen = Vec::new();
    for k in 1..=3 {
        let report = format!("shard{k}.json");
        cli.ok(&[
            "migrate",
            "-r",
            &cli.recipient,
            "--shard",
            &format!("{k}/3"),
            "--report",
            &report,
            "--quiet",
            &s.url(""),
        ]);
        let r = cli.report(&report);
        assert_eq!(r["listed"], 24);
        assert_eq!(r["shard"], format!("{k}/3"));
        let done = keys_with(&r, "done");
        assert!(!done.is_empty(), "shard {k} got some objects");
        seen.extend(done);
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), 24, "no object in two shards");
    assert_eq!(
        unique,
        names.iter().map(|n| s.key(n)).collect(),
        "every object in a shard"
    );
    // A bad shard is a usage error (clap's exit status 2).
    let out = cli
        .cmd()
        .args([
            "migrate",
            "-r",
            &cli.recipient,
            "--shard",
            "4/3",
            &s.url(""),
        ])
        .assert()
        .failure()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("1 <= K <= N"), "{err}");
}

#[test]
fn verify_reports_tampered_plaintext_and_revoked_garage() {
    let Some(s) = Site::garage("verify") else {
        return;
    };
    let rt = rt();
    let root = rt.block_on(s.root());
    let cli = Cli::new(&s);
    let ring = cli.path("ring.toml").display().to_string();
    let k = |args: &[&str]| {
        let mut all = vec!["key"];
        all.extend_from_slice(args);
        all.push("--keyring");
        all.push(&ring);
        cli.ok(&all);
    };
    k(&["add", "old", "--sym"]);
    k(&["add", "agent", "--sym", "--recovery"]);
    k(&["add", "spare", "--sym"]);
    std::fs::write(cli.path("doc.json"), b"{\"a\":\"SECRET\"}").unwrap();
    let put = |rel: &str| {
        cli.ok(&["put", "--keyring", &ring, "doc.json", &s.url(rel)]);
    };
    k(&["default", "old"]);
    put("by-old.json");
    k(&["default", "spare"]);
    put("by-spare.json");
    k(&["default", "agent"]);
    put("fine.json");
    put("tampered.json");
    k(&["revoke", "old"]);
    k(&["retire", "spare"]);
    rt.block_on(async {
        // Flip one byte of a sealed body, keeping its envelope.
        let key = s.key("tampered.json");
        let (info, mut body) = raw(&*root, &key).await;
        let last = body.len() - 1;
        body[last] ^= 1;
        root.put(
            &key,
            Bytes::from(body),
            &store::PutOptions {
                metadata: info.metadata,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        root.put(
            &s.key("plain.txt"),
            Bytes::from_static(b"SECRET"),
            &Default::default(),
        )
        .await
        .unwrap();
    });
    let out = cli
        .cmd()
        .args(["verify", "--keyring", &ring, "--json", &s.url("")])
        .assert()
        .failure()
        .code(1);
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert_eq!(report["done"], 1, "{report}");
    assert_eq!(report["failures"], 4, "{report}");
    let detail = |rel: &str| -> String {
        report["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == s.key(rel))
            .unwrap_or_else(|| panic!("{rel} in {report}"))["detail"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        detail("by-old.json").starts_with("revoked-keys-only:"),
        "{}",
        detail("by-old.json")
    );
    assert!(
        detail("by-spare.json").starts_with("retired-keys-only:"),
        "{}",
        detail("by-spare.json")
    );
    assert!(
        detail("tampered.json").starts_with("tampered:"),
        "{}",
        detail("tampered.json")
    );
    assert!(
        detail("plain.txt").starts_with("plaintext:"),
        "{}",
        detail("plain.txt")
    );
    assert!(stderr.contains("4 objects with problems"), "{stderr}");
    // A sample checks only that many.
    let out = cli
        .cmd()
        .args([
            "verify",
            "--keyring",
            &ring,
            "--json",
            "--sample",
            "2",
            &s.url(""),
        ])
        .assert();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["processed"], 2);
    assert_eq!(v["listed"], 5);
}

#[test]
fn bad_input_one_line_errors_garage() {
    let Some(s) = Site::garage("bad") else {
        return;
    };
    let rt = rt();
    let root = rt.block_on(s.root());
    rt.block_on(plant(&root, &s, &mixed_tree()[..1]));
    let cli = Cli::new(&s);
    let r = cli.recipient.clone();
    let err = cli.fails(&["migrate", "-r", &r, "s3://r2seal-no-such-bucket/x/"]);
    assert!(one_line(&err).contains("no such bucket"), "{err}");
    let mut cmd = cli.cmd();
    cmd.env("AWS_SECRET_ACCESS_KEY", "wrong")
        .args(["migrate", "-r", &r, &s.url("")]);
    let out = cmd.assert().failure().code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(one_line(&err).contains("list"), "{err}");
    let err = cli.fails(&["migrate", &s.url("")]);
    assert!(one_line(&err).contains("no recipients"), "{err}");
    let err = cli.fails(&["migrate", "--reverse", &s.url("")]);
    assert!(one_line(&err).contains("-i FILE"), "{err}");
    let err = cli.fails(&["migrate", "-r", &r, "--verify", &s.url("")]);
    assert!(one_line(&err).contains("--verify"), "{err}");
    // Sealed objects and a key that does not open them: each named, non-zero exit, and
    // nothing is written.
    cli.ok(&["migrate", "-r", &r, &s.url("")]);
    let sealed = rt.block_on(etags(&root, &s.prefix));
    let err = cli.fails(&["migrate", "-i", "other.txt", "--reverse", &s.url("")]);
    assert!(
        err.contains("no identity") || err.contains("identity"),
        "{err}"
    );
    assert!(err.lines().last().unwrap().contains("1 failures"), "{err}");
    assert_eq!(rt.block_on(etags(&root, &s.prefix)), sealed);
}

// ---------------------------------------------------------------------------------------
// Conflicts, against moto (which enforces If-Match on PutObject; it ignores it on
// CompleteMultipartUpload, where r2seal's check right before completing catches it).

/// `root`, where someone else rewrites each object right before every write of ours to
/// it, `rewrites` times at most.
fn meddled(root: &Arc<dyn Store>, rewrites: u32) -> Arc<dyn Store> {
    let store = Watched::new(root.clone());
    store.interfere(Interfere::BeforeEach(rewrites));
    Arc::new(store)
}

async fn migrate_with(
    store: Arc<dyn Store>,
    prefix: &str,
    id: &Identity,
    reverse: bool,
    retries: u32,
) -> jobs::Report {
    let bucket = SealedBucket::new(store.clone())
        .with_recipients(Recipients::fixed(vec![id.to_recipient()]))
        .with_identities(vec![id.clone()]);
    let m = Arc::new(Migrator::new(
        bucket,
        None,
        MigrateOptions {
            reverse,
            part_size: Some(5 * MIB as u64),
            ..Default::default()
        },
    ));
    let cfg = JobConfig {
        jobs: 2,
        max_retries: retries,
        label: "migrate".into(),
        ..Default::default()
    };
    jobs::run(store, prefix, &cfg, move |item| {
        let m = m.clone();
        async move { m.migrate_one(item).await }
    })
    .await
}

#[test]
fn an_object_rewritten_mid_migration_is_a_conflict_not_clobbered_moto() {
    let Some(s) = Site::moto("conflict") else {
        return;
    };
    let rt = rt();
    rt.block_on(async {
        let root = s.root().await;
        let small = s.key("small.json");
        let large = s.key("large.bin");
        root.put(
            &small,
            Bytes::from_static(b"{\"v\":1}"),
            &Default::default(),
        )
        .await
        .unwrap();
        root.put(&large, Bytes::from(data(6 * MIB, 9)), &Default::default())
            .await
            .unwrap();
        let id = Identity::generate_x25519();
        // Someone rewrites each object before every write of ours: with 1 retry, each is
        // tried twice and reported as a conflict; the rewrites survive.
        let meddler = meddled(&root, 4);
        let report = migrate_with(meddler, &s.prefix, &id, false, 1).await;
        assert_eq!(report.conflicts, 2, "{report:?}");
        assert_eq!(report.done, 0);
        assert!(!report.is_complete());
        for e in &report.entries {
            assert_eq!((e.outcome, e.attempts), ("conflict", 2), "{e:?}");
        }
        for key in [&small, &large] {
            let (info, body) = raw(&*root, key).await;
            assert!(
                !info.metadata.contains_key("r2seal"),
                "{key}: not clobbered"
            );
            assert!(body.starts_with(format!("REWRITTEN by someone else at {key} (").as_bytes()));
        }
        // Rewritten once only: the retry re-reads and seals the new version.
        let meddler = meddled(&root, 1);
        let report = migrate_with(meddler, &s.prefix, &id, false, 2).await;
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.done, 2);
        assert_eq!(report.entries.iter().map(|e| e.attempts).sum::<u32>(), 3);
        let bucket = SealedBucket::new(root.clone()).with_identities(vec![id.clone()]);
        for key in [&small, &large] {
            let (_, body) = bucket.get_bytes(key).await.unwrap();
            assert!(body.starts_with(format!("REWRITTEN by someone else at {key} (").as_bytes()));
        }
        // --reverse is conditional too.
        let meddler = meddled(&root, 10);
        let report = migrate_with(meddler, &s.prefix, &id, true, 0).await;
        assert_eq!(report.conflicts, 2, "{report:?}");
        for key in [&small, &large] {
            let (info, body) = raw(&*root, key).await;
            assert!(!info.metadata.contains_key("r2seal"));
            assert!(body.starts_with(format!("REWRITTEN by someone else at {key} (").as_bytes()));
        }
    });
}

#[test]
fn encrypt_names_writes_under_the_sealed_name_then_deletes_garage() {
    let Some(s) = Site::garage("names") else {
        return;
    };
    let rt = rt();
    let root = rt.block_on(s.root());
    let tree: Vec<Plain> = mixed_tree()
        .into_iter()
        .filter(|o| o.body.len() < MIB)
        .collect();
    rt.block_on(plant(&root, &s, &tree));
    let cli = Cli::new(&s);
    let ring = cli.path("ring.toml").display().to_string();
    for args in [
        vec!["key", "add", "agent", "--sym", "--recovery"],
        vec!["key", "names", "agent"],
        vec!["key", "default", "agent"],
    ] {
        let mut a = args.clone();
        a.extend(["--keyring", &ring]);
        cli.ok(&a);
    }
    let url = s.url("");
    // A keyring that encrypts names refuses to seal under plaintext names.
    let err = cli.fails(&["migrate", "--keyring", &ring, &url]);
    assert!(one_line(&err).contains("--encrypt-names"), "{err}");
    let before = rt.block_on(etags(&root, &s.prefix));
    assert_eq!(before.len(), tree.len());

    let out = cli.ok(&[
        "migrate",
        "--keyring",
        &ring,
        "--encrypt-names",
        "--json",
        &url,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["done"], tree.len(), "{v}");
    // The plaintext-named objects are gone; sealed ones exist under encrypted names.
    assert!(rt.block_on(etags(&root, &s.prefix)).is_empty());
    for o in &tree {
        let out = cli.ok(&["cat", "--keyring", &ring, &s.url(o.rel)]);
        assert!(
            out == o.body,
            "{}: opens to its original under its plaintext name",
            o.rel
        );
    }
    let out = cli.ok(&["verify", "--keyring", &ring, "--json", &url]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["done"], tree.len(), "{v}");
    let stored = keys_with(&v, "done");
    assert_eq!(stored.len(), tree.len());
    for key in &stored {
        let (info, _) = rt.block_on(raw(&*root, key));
        assert!(info.metadata.contains_key("r2seal"), "{key}");
        for o in &tree {
            let base = o.rel.rsplit('/').next().unwrap();
            assert!(!key.contains(base), "{key} leaks the name {base}");
        }
        assert!(
            !key.contains("r2seal-jobs"),
            "{key}: every segment is encrypted"
        );
    }
    // A rerun finds nothing left under plaintext names.
    let out = cli.ok(&[
        "migrate",
        "--keyring",
        &ring,
        "--encrypt-names",
        "--json",
        &url,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["done"], 0, "{v}");
}
