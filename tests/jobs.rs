//! `r2seal migrate` and `r2seal verify` against real servers: Garage
//! (`R2SEAL_TEST_S3_ENDPOINT`) for the CLI cases, moto (`R2SEAL_TEST_S3_COND_ENDPOINT`,
//! which enforces If-Match) for the conflict cases. Without a server each case prints a
//! loud SKIPPED line and passes, except with `CI=true`, where it fails. Every case works
//! under a fresh prefix. Crash and restart cases are in tests/jobs_crash.rs.
#![cfg(feature = "cli")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use assert_cmd::Command;
use r2seal::jobs::migrate::{
    MigrateOptions, Migrator, HEAD_FIRST_ABOVE, MOVED_SEALED, RESEALED, SKIP_DEST_CURRENT,
    SKIP_DEST_EXISTS, SKIP_GONE, SKIP_PLAINTEXT, SKIP_SEALED,
};
use r2seal::jobs::{self, JobConfig};
use r2seal::keys::Identity;
use r2seal::sealed::{Recipients, SealedBucket};
use r2seal::store::{self, Bytes, Store};
use support::{fresh_prefix, raw, rt_multi as rt, run_id, Call, Interfere, S3Env, Server, Watched};
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

    /// This site with `tree` planted, the runtime the case goes on with and the bucket's
    /// root.
    fn planted(self, tree: &[Plain]) -> (Site, tokio::runtime::Runtime, Arc<dyn Store>) {
        let rt = rt();
        let root = rt.block_on(self.root());
        rt.block_on(plant(&root, &self, tree));
        (self, rt, root)
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

/// [`mixed_tree`] without the objects that go up in parts.
fn small_tree() -> Vec<Plain> {
    mixed_tree()
        .into_iter()
        .filter(|o| o.body.len() < MIB)
        .collect()
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

    /// A CLI whose keyring `ring.toml` (the returned path) seals under encrypted names.
    fn with_name_keyring(s: &Site) -> (Cli, String) {
        let cli = Cli::new(s);
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
        (cli, ring)
    }

    /// `r2seal cat` of every object of `tree` at `s`, under its plaintext name, gives
    /// its original bytes.
    fn assert_cat_originals(&self, ring: &str, s: &Site, tree: &[Plain]) {
        for o in tree {
            let out = self.ok(&["cat", "--keyring", ring, &s.url(o.rel)]);
            assert!(
                out == o.body,
                "{}: opens to its original under its plaintext name",
                o.rel
            );
        }
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
    let tree = mixed_tree();
    let (s, rt, root) = s.planted(&tree);
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
        "--multipart-threshold",
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
        "--multipart-threshold",
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
    let tree = small_tree();
    let (s, rt, root) = s.planted(&tree);
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
    // Without an identity the destinations cannot be compared with their sources.
    assert_eq!(v["skipped_by_reason"][SKIP_DEST_EXISTS], tree.len(), "{v}");

    // Review finding #7: with one, a rerun compares (plaintext size, and the MD5 sealed
    // in the destination against the source's ETag) and seals changed sources again.
    let rerun = ["migrate", "-i", "key.txt", "--to", &dst, "--json", &src];
    let v: serde_json::Value = serde_json::from_slice(&cli.ok(&rerun)).unwrap();
    assert_eq!(v["skipped_by_reason"][SKIP_DEST_CURRENT], tree.len(), "{v}");
    let changed = [
        (&tree[0], b"same length? no".to_vec()),
        (&tree[1], {
            let mut b = tree[1].body.clone();
            b[0] ^= 1; // same size, other bytes
            b
        }),
    ];
    for (o, body) in &changed {
        rt.block_on(root.put(
            &s.key(o.rel),
            Bytes::from(body.clone()),
            &Default::default(),
        ))
        .unwrap();
    }
    let v: serde_json::Value = serde_json::from_slice(&cli.ok(&rerun)).unwrap();
    assert_eq!(
        (v["done"].as_u64(), v["done_by_kind"][RESEALED].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    assert_eq!(
        v["skipped_by_reason"][SKIP_DEST_CURRENT],
        tree.len() - 2,
        "{v}"
    );
    let opener = SealedBucket::new(root.clone()).with_identities(vec![cli.identity("key.txt")]);
    for (o, body) in &changed {
        let key = format!("{}{}", dst_server.prefix, o.rel);
        let (_, got) = rt.block_on(opener.get_bytes(&key)).unwrap();
        assert!(got[..] == body[..], "{key}: the new version, sealed");
    }
    let v: serde_json::Value = serde_json::from_slice(&cli.ok(&rerun)).unwrap();
    assert_eq!(v["skipped_by_reason"][SKIP_DEST_CURRENT], tree.len(), "{v}");
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
    // The same with a keyring that lacks the key.
    let ring = cli.path("other-ring.toml").display().to_string();
    cli.ok(&[
        "key",
        "add",
        "other",
        "--sym",
        "--recovery",
        "--keyring",
        &ring,
    ]);
    let err = cli.fails(&["migrate", "--keyring", &ring, "--reverse", &s.url("")]);
    assert!(err.contains("identity"), "{err}");
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
            multipart_threshold: Some(5 * MIB as u64),
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
fn an_object_deleted_mid_migration_is_not_resurrected_moto() {
    let Some(s) = Site::moto("deleted") else {
        return;
    };
    rt().block_on(async {
        let root = s.root().await;
        let (small, large) = (s.key("small.json"), s.key("large.bin"));
        root.put(&small, Bytes::from_static(b"{}"), &Default::default())
            .await
            .unwrap();
        root.put(&large, Bytes::from(data(6 * MIB, 5)), &Default::default())
            .await
            .unwrap();
        // Someone deletes each object after it was read, right before it is written.
        let meddler = Watched::new(root.clone());
        meddler.interfere(Interfere::DeleteBeforeEach(2));
        let meddler: Arc<dyn Store> = Arc::new(meddler);
        let id = Identity::generate_x25519();
        let report = migrate_with(meddler, &s.prefix, &id, false, 2).await;
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(
            report.skipped_by_reason.get(SKIP_GONE),
            Some(&2),
            "{report:?}"
        );
        for key in [&small, &large] {
            let gone = root.head(key).await.unwrap_err();
            assert!(gone.is_not_found(), "{key}: not resurrected: {gone}");
        }
    });
}

/// (HEADs, GETs) of `key` among the calls `wire` saw since the last `take`.
fn reads_of(wire: &Watched, key: &str) -> (usize, usize) {
    let heads = wire.count(|c| matches!(c, Call::Head { key: k } if k == key));
    let gets = wire.count(|c| matches!(c, Call::Get { key: k, .. } if k == key));
    (heads, gets)
}

/// In place, objects listed larger than HEAD_FIRST_ABOVE get a HEAD first: a rerun skips
/// the sealed ones (and a reverse rerun the plaintext ones) without starting a body it
/// would drop; small objects keep their single GET. The write goes by what the GET read:
/// an object rewritten between the HEAD and the GET is sealed as read, If-Match its ETag
/// (moto enforces it; with no retries a stale ETag would be a conflict).
#[test]
fn large_objects_get_a_head_first_in_place_moto() {
    let Some(s) = Site::moto("head-first") else {
        return;
    };
    let rt = rt();
    rt.block_on(async {
        let root = s.root().await;
        let (small, mid, large, raced) = (
            s.key("small.json"),
            s.key("mid.bin"),
            s.key("large.bin"),
            s.key("raced.bin"),
        );
        let big = HEAD_FIRST_ABOVE as usize + 1;
        let originals = [
            (&small, b"{\"v\":1}".to_vec()),
            (&mid, data(big, 1)),
            // More than a 5 MiB part: multipart, completed If-Match.
            (&large, data(6 * MIB, 2)),
            (&raced, data(big, 3)),
        ];
        for (key, body) in &originals {
            root.put(key, Bytes::from(body.clone()), &Default::default())
                .await
                .unwrap();
        }
        let id = Identity::generate_x25519();
        let wire = Arc::new(Watched::new(root.clone()));
        let run = |reverse| migrate_with(wire.clone(), &s.prefix, &id, reverse, 0);

        // First run: the large ones are HEAD then GET; `raced` changes in between.
        wire.interfere(Interfere::BeforeGet(raced.clone()));
        let report = run(false).await;
        assert!(report.is_complete(), "{report:?}");
        assert_eq!((report.done, report.conflicts), (4, 0), "{report:?}");
        assert_eq!(reads_of(&wire, &small), (0, 1));
        for key in [&mid, &large, &raced] {
            assert_eq!(reads_of(&wire, key), (1, 1), "{key}");
        }
        let bucket = SealedBucket::new(root.clone()).with_identities(vec![id.clone()]);
        let rewritten = wire.their_write(&raced).unwrap().to_vec();
        for (key, body) in &originals {
            let (_, got) = bucket.get_bytes(key).await.unwrap();
            let want = if *key == &raced { &rewritten } else { body };
            assert!(got == *want, "{key}: sealed as read");
        }

        // Rerun: the large sealed ones are settled by their HEAD, no GET.
        wire.take();
        let report = run(false).await;
        assert_eq!(
            report.skipped_by_reason.get(SKIP_SEALED),
            Some(&4),
            "{report:?}"
        );
        assert_eq!(reads_of(&wire, &small), (0, 1));
        assert_eq!(
            reads_of(&wire, &raced),
            (0, 1),
            "small since it was rewritten"
        );
        for key in [&mid, &large] {
            assert_eq!(reads_of(&wire, key), (1, 0), "{key}");
        }

        // --reverse: the sealed large ones are read (HEAD, GET) and unsealed ...
        wire.take();
        let report = run(true).await;
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.done, 4, "{report:?}");
        for key in [&mid, &large] {
            assert_eq!(reads_of(&wire, key), (1, 1), "{key}");
        }
        // ... and a reverse rerun settles the large plaintext ones by their HEAD.
        wire.take();
        let report = run(true).await;
        let skipped = report.skipped_by_reason.get(SKIP_PLAINTEXT);
        assert_eq!(skipped, Some(&4), "{report:?}");
        assert_eq!(reads_of(&wire, &small), (0, 1));
        for key in [&mid, &large] {
            assert_eq!(reads_of(&wire, key), (1, 0), "{key}");
        }
        for (key, body) in &originals {
            let (info, got) = raw(&*root, key).await;
            assert!(!info.metadata.contains_key("r2seal"), "{key}");
            let want = if *key == &raced { &rewritten } else { body };
            assert!(got == *want, "{key}: plaintext again");
        }
    });
}

#[test]
fn encrypt_names_writes_under_the_sealed_name_then_deletes_garage() {
    let Some(s) = Site::garage("names") else {
        return;
    };
    let tree = small_tree();
    let (s, rt, root) = s.planted(&tree);
    let (cli, ring) = Cli::with_name_keyring(&s);
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
    cli.assert_cat_originals(&ring, &s, &tree);
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

    // --reverse brings them back under their plaintext names. Left as an interrupted
    // run leaves it: one plaintext copy written but its sealed one not yet deleted; and
    // someone else's object under another plaintext name, which is never overwritten.
    let (copied, taken) = (&tree[0], &tree[1]);
    rt.block_on(plant(&root, &s, std::slice::from_ref(copied)));
    let theirs = Bytes::from_static(b"someone else's object");
    rt.block_on(root.put(&s.key(taken.rel), theirs.clone(), &Default::default()))
        .unwrap();
    let reverse = ["migrate", "--keyring", &ring, "--reverse", "--json", &url];
    let out = cli.cmd().args(reverse).assert().failure().code(1);
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["done"], tree.len() - 1, "{v}");
    let failed: Vec<&serde_json::Value> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{v}");
    assert!(
        failed[0]["detail"]
            .as_str()
            .unwrap()
            .contains("already holds a different object"),
        "{v}"
    );
    assert_eq!(rt.block_on(raw(&*root, &s.key(taken.rel))).1, theirs);
    // Its sealed copy is kept and still opens.
    assert_eq!(
        cli.ok(&["cat", "--keyring", &ring, &s.url(taken.rel)]),
        taken.body
    );
    // Once the other object is out of the way, a rerun finishes.
    rt.block_on(root.delete(&s.key(taken.rel))).unwrap();
    let out = cli.ok(&reverse);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (v["done"].as_u64(), v["processed"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    rt.block_on(async {
        for o in &tree {
            let (info, body) = raw(&*root, &s.key(o.rel)).await;
            assert!(
                body == o.body,
                "{}: original bytes under its plaintext name",
                o.rel
            );
            assert!(!info.metadata.contains_key("r2seal"));
            assert_eq!(info.metadata.get("mtime").map(String::as_str), o.mtime);
            assert_eq!(info.cache_control.as_deref(), o.cache_control);
        }
    });
    // No sealed object is left under an encrypted name.
    let out = cli.ok(&["verify", "--keyring", &ring, "--json", &url]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["processed"], 0, "{v}");
}

/// Review finding #1 on a server: a bucket sealed first, with names switched on later.
/// `--encrypt-names` moves every sealed object (the large one, sealed in parts, after a
/// HEAD) to its encrypted name, server-side, and deletes it under its plaintext name.
#[test]
fn encrypt_names_moves_objects_sealed_before_garage() {
    let Some(s) = Site::garage("names-after") else {
        return;
    };
    let tree = mixed_tree();
    let (s, rt, root) = s.planted(&tree);
    let cli = Cli::new(&s);
    let ring = cli.path("ring.toml").display().to_string();
    for args in [
        &["key", "add", "agent", "--sym", "--recovery"][..],
        &["key", "default", "agent"],
    ] {
        cli.ok(&[args, &["--keyring", &ring]].concat());
    }
    let url = s.url("");
    let sizes = ["--part-size", "5", "--multipart-threshold", "5"];
    cli.ok(&[&["migrate", "--keyring", &ring][..], &sizes, &[&url]].concat());
    let sealed = rt.block_on(etags(&root, &s.prefix));
    assert_eq!(sealed.len(), tree.len());
    cli.ok(&["key", "names", "agent", "--keyring", &ring]);

    let migrate = [
        "migrate",
        "--keyring",
        &ring,
        "--encrypt-names",
        "--verify",
        "--json",
        &url,
    ];
    let v: serde_json::Value = serde_json::from_slice(&cli.ok(&migrate)).unwrap();
    assert_eq!(
        (
            v["done"].as_u64(),
            v["failures"].as_u64(),
            v["bytes"].as_u64()
        ),
        (Some(tree.len() as u64), Some(0), Some(0)),
        "{v}"
    );
    assert_eq!(v["done_by_kind"][MOVED_SEALED], tree.len(), "{v}");
    assert!(
        rt.block_on(etags(&root, &s.prefix)).is_empty(),
        "nothing left under plaintext names"
    );
    cli.assert_cat_originals(&ring, &s, &tree);
    let v: serde_json::Value = serde_json::from_slice(&cli.ok(&migrate)).unwrap();
    assert_eq!(
        (v["listed"].as_u64(), v["done"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------
// --encrypt-names run again, against moto: it enforces If-None-Match and If-Match, so a
// rerun that wrote anything conditionally would be seen failing, and one that wrote
// unconditionally changes an ETag.

/// A bucket of its own on moto (which creates any bucket asked for), its root as a site,
/// so that a case can migrate a whole bucket without walking other cases' objects.
fn own_bucket(s: &Site, name: &str) -> Site {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&s.env.endpoint)
        // moto files a bucket made from region "auto" under an invalid location.
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            &s.env.access_key_id,
            &s.env.secret_access_key,
            None,
            None,
            "test",
        ))
        .force_path_style(true)
        .build();
    let create = aws_sdk_s3::Client::from_conf(conf)
        .create_bucket()
        .bucket(name)
        .send();
    rt().block_on(create)
        .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    Site {
        env: S3Env {
            bucket: name.to_string(),
            ..s.env.clone()
        },
        prefix: String::new(),
    }
}

/// ETag of every sealed object under `url` (stored keys, as `verify` walks them), after
/// checking with `verify` that each one authenticates.
fn sealed_etags(
    rt: &tokio::runtime::Runtime,
    root: &Arc<dyn Store>,
    cli: &Cli,
    ring: &str,
    url: &str,
) -> BTreeMap<String, String> {
    let out = cli.ok(&["verify", "--keyring", ring, "--json", url]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["failures"], 0, "{v}");
    assert_eq!(v["done"], v["listed"], "{v}");
    keys_with(&v, "done")
        .into_iter()
        .map(|k| {
            let etag = rt.block_on(root.head(&k)).unwrap().meta.etag;
            (k, etag)
        })
        .collect()
}

/// `r2seal migrate --keyring RING --encrypt-names --part-size 5 --multipart-threshold 5 ARGS`, then the same
/// again: the rerun exits 0 with all `n` objects skipped for one of `reasons`, and the sealed
/// objects at `sealed` (each authenticated by `verify`) keep their ETags, which are
/// returned.
fn migrate_names_twice(
    cli: &Cli,
    ring: &str,
    args: &[&str],
    sealed: &Site,
    n: usize,
    reasons: &[&str],
) -> BTreeMap<String, String> {
    let mut migrate = vec![
        "migrate",
        "--keyring",
        ring,
        "--encrypt-names",
        "--part-size",
        "5",
        "--multipart-threshold",
        "5",
    ];
    migrate.extend(args);
    cli.ok(&migrate);
    let rt = rt();
    let root = rt.block_on(sealed.root());
    let before = sealed_etags(&rt, &root, cli, ring, &sealed.url(""));
    assert_eq!(before.len(), n);

    migrate.push("--json");
    let v: serde_json::Value = serde_json::from_slice(&cli.ok(&migrate)).unwrap();
    assert_eq!(
        (
            v["listed"].as_u64(),
            v["done"].as_u64(),
            v["skipped"].as_u64()
        ),
        (Some(n as u64), Some(0), Some(n as u64)),
        "{v}"
    );
    let skipped: u64 = reasons
        .iter()
        .filter_map(|r| v["skipped_by_reason"][r].as_u64())
        .sum();
    assert_eq!(skipped, n as u64, "{v}");
    assert_eq!(
        (v["failures"].as_u64(), v["conflicts"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
    assert_eq!(
        sealed_etags(&rt, &root, cli, ring, &sealed.url("")),
        before,
        "the rerun wrote nothing"
    );
    before
}

#[test]
fn encrypt_names_rerun_in_place_is_a_no_op_moto() {
    let Some(s) = Site::moto("names-rerun") else {
        return;
    };
    // The whole bucket, as names are encrypted bucket-wide: the rerun's walk then lists
    // the sealed objects under their encrypted names.
    let s = own_bucket(&s, &format!("r2seal-rerun-{}", run_id()));
    let mut tree = mixed_tree();
    // A name whose encrypted form fits a key, but whose encrypted form encrypted again
    // would not (a rerun must not take an encrypted name for a plaintext one to encrypt).
    tree.push(Plain {
        rel: format!("deep/{}", "n".repeat(500)).leak(),
        body: b"long name".to_vec(),
        content_type: None,
        cache_control: None,
        mtime: None,
    });
    let (s, rt, root) = s.planted(&tree);
    let (cli, ring) = Cli::with_name_keyring(&s);
    let sealed = migrate_names_twice(&cli, &ring, &[&s.url("")], &s, tree.len(), &[SKIP_SEALED]);
    assert_eq!(
        rt.block_on(etags(&root, "")),
        sealed,
        "only the sealed objects are left, under encrypted names"
    );
    cli.assert_cat_originals(&ring, &s, &tree);
}

#[test]
fn encrypt_names_rerun_to_another_prefix_is_a_no_op_moto() {
    let Some(s) = Site::moto("names-rerun-to") else {
        return;
    };
    let tree = mixed_tree();
    let (s, rt, root) = s.planted(&tree);
    let source = rt.block_on(etags(&root, &s.prefix));
    let (cli, ring) = Cli::with_name_keyring(&s);
    let dst = Site {
        prefix: fresh_prefix(SUITE, "names-rerun-to-dst"),
        ..Site::moto("names-rerun-to").unwrap()
    };
    let args = ["--to", &dst.url(""), &s.url("")];
    // The large object, sealed in parts, recorded no MD5 to compare.
    let reasons = [SKIP_DEST_CURRENT, SKIP_DEST_EXISTS];
    migrate_names_twice(&cli, &ring, &args, &dst, tree.len(), &reasons);
    assert_eq!(
        rt.block_on(etags(&root, &s.prefix)),
        source,
        "source untouched"
    );
    cli.assert_cat_originals(&ring, &dst, &tree);
}

// ---------------------------------------------------------------------------------------
// A server that drops connections.

/// A TCP proxy in front of a server that cuts the connection carrying the 2 MiB-th byte
/// of responses (mid-body of a large GET, or wherever the client is then) and the one
/// carrying the 4 MiB-th byte of requests (mid-upload of a part), again and again.
/// Counting bytes over all connections keeps the number of cuts independent of how the
/// client reuses connections. Small objects get through on a retry; the 11 MiB one never
/// does (every attempt is cut), so the run ends non-zero with it listed.
struct CuttingProxy {
    endpoint: String,
    cuts: Arc<AtomicU32>,
}

const CUT_DOWN_EVERY: u64 = 2 * MIB as u64;
const CUT_UP_EVERY: u64 = 4 * MIB as u64;

impl CuttingProxy {
    async fn start(upstream: &str) -> CuttingProxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let cuts = Arc::new(AtomicU32::new(0));
        let counter = cuts.clone();
        let (down, up) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (counter, down, up) = (counter.clone(), down.clone(), up.clone());
                tokio::spawn(async move {
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = pipe(cr, sw, &up, CUT_UP_EVERY);
                    let down = pipe(sr, cw, &down, CUT_DOWN_EVERY);
                    tokio::pin!(up, down);
                    // A cut drops both sockets at once: the client sees its connection
                    // end mid-request or mid-response. An end (half-close) waits for the
                    // other direction.
                    let cut = tokio::select! {
                        cut = &mut up => cut || down.await,
                        cut = &mut down => cut || up.await,
                    };
                    if cut {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        CuttingProxy { endpoint, cuts }
    }
}

/// Copy until the end, or (then `true`) until the bytes through every connection in this
/// direction (`total`) pass a multiple of `every`.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    total: &AtomicU64,
    every: u64,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return false;
            }
            Ok(n) => n as u64,
        };
        let before = total.fetch_add(n, Ordering::SeqCst);
        let boundary = (before / every + 1) * every;
        if before + n >= boundary {
            let _ = to.write_all(&buf[..(boundary - before) as usize]).await;
            return true;
        }
        if to.write_all(&buf[..n as usize]).await.is_err() {
            return false;
        }
    }
}

#[test]
fn dropped_connections_are_retried_and_nothing_is_half_written_garage() {
    let Some(s) = Site::garage("drops") else {
        return;
    };
    // Enough small objects that cut connections land on many of them, and a multipart one.
    let mut tree = mixed_tree();
    let small: Vec<String> = (0..40).map(|i| format!("many/{i:02}.json")).collect();
    for (i, rel) in small.iter().enumerate() {
        tree.push(Plain {
            rel: Box::leak(rel.clone().into_boxed_str()),
            body: data(2000 + i * 997, i as u8),
            content_type: Some("application/json"),
            cache_control: None,
            mtime: None,
        });
    }
    let (s, rt, root) = s.planted(&tree);
    let proxy = rt.block_on(CuttingProxy::start(&s.env.endpoint));
    let mut cli = Cli::new(&s);
    let direct = cli.env.clone();
    cli.env[0].1 = proxy.endpoint.clone();
    let r = cli.recipient.clone();
    let url = s.url("");
    let out = cli
        .cmd()
        .args([
            "migrate",
            "-r",
            &r,
            "--jobs",
            "4",
            "--part-size",
            "5",
            "--multipart-threshold",
            "5",
            "--retries",
            "6",
            "--report",
            "cut.json",
            &url,
        ])
        .output()
        .unwrap();
    let cuts = proxy.cuts.load(Ordering::SeqCst);
    assert!(cuts >= 3, "the proxy cut {cuts} connections");
    let report = cli.report("cut.json");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let left: BTreeSet<String> = keys_with(&report, "failed")
        .union(&keys_with(&report, "conflict"))
        .cloned()
        .collect();
    let retried = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["attempts"].as_u64() > Some(1))
        .count();
    eprintln!(
        "proxy cut {cuts} connections; migrate exited {:?}: {} done, {} left, {retried} retried",
        out.status.code(),
        report["done"],
        left.len()
    );
    // Done, or a non-zero exit that names what was left.
    if out.status.success() {
        assert!(left.is_empty(), "{report}");
        assert_eq!(report["done"], tree.len(), "{report}");
    } else {
        assert!(
            !left.is_empty(),
            "non-zero exit names what is left: {stderr}"
        );
        assert!(stderr.contains("rerun"), "{stderr}");
    }
    // Every object is its original plaintext or a complete sealed version of it.
    let identity = cli.identity("key.txt");
    rt.block_on(async {
        let bucket = SealedBucket::new(root.clone()).with_identities(vec![identity.clone()]);
        for o in &tree {
            let key = s.key(o.rel);
            let (info, stored) = raw(&*root, &key).await;
            if info.metadata.contains_key("r2seal") {
                let (_, body) = bucket.get_bytes(&key).await.unwrap();
                assert!(
                    body[..] == o.body[..],
                    "{key}: sealed, opens to the original"
                );
            } else {
                assert!(stored == o.body, "{key}: still the original plaintext");
                assert!(left.contains(&key), "{key}: left plaintext, so reported");
            }
        }
    });
    // A clean rerun finishes the job.
    cli.env = direct;
    cli.ok(&[
        "migrate",
        "-r",
        &r,
        "--part-size",
        "5",
        "--multipart-threshold",
        "5",
        &url,
    ]);
    rt.block_on(assert_sealed_originals(&root, &s, &tree, &identity));
}

/// `--reverse` writes an object larger than one part, up to the multipart threshold, in
/// one PutObject streamed as it is opened; one that fails to authenticate part-way (a
/// flipped byte near its end) writes nothing and stays sealed.
#[test]
fn reverse_streams_mid_sized_objects_in_one_put_and_writes_nothing_unauthenticated() {
    rt().block_on(async {
        let (fs, _dir) = support::fs_store();
        let id = Identity::generate_x25519();
        let sealer = SealedBucket::new(fs.clone())
            .with_recipients(Recipients::fixed(vec![id.to_recipient()]))
            .with_identities(vec![id.clone()]);
        let (good, bad) = ("good.bin", "bad.bin");
        for (key, seed) in [(good, 1), (bad, 2)] {
            sealer
                .put(key, data(7 * MIB, seed), &Default::default())
                .await
                .unwrap();
        }
        // Tamper with `bad` 6.5 MiB in: the opener fails after releasing most of it.
        let (info, body) = raw(&*fs, bad).await;
        let mut body = body.to_vec();
        body[13 * MIB / 2] ^= 1;
        let keep = store::PutOptions {
            metadata: info.metadata.clone(),
            ..Default::default()
        };
        fs.put(bad, Bytes::from(body.clone()), &keep).await.unwrap();

        let wire = Arc::new(Watched::new(fs.clone()));
        let m = Arc::new(Migrator::new(
            SealedBucket::new(wire.clone()).with_identities(vec![id.clone()]),
            None,
            MigrateOptions {
                reverse: true,
                part_size: Some(5 * MIB as u64),
                ..Default::default()
            },
        ));
        let cfg = JobConfig {
            jobs: 1,
            max_retries: 0,
            label: "migrate".into(),
            ..Default::default()
        };
        let report = jobs::run(wire.clone(), "", &cfg, move |item| {
            let m = m.clone();
            async move { m.migrate_one(item).await }
        })
        .await;
        assert_eq!((report.done, report.failures), (1, 1), "{report:?}");
        let failed = report.entries.iter().find(|e| e.key == bad).unwrap();
        let detail = failed.detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains("corrupt") || detail.contains("Corrupt"),
            "{detail}"
        );

        let calls = wire.take();
        let puts: Vec<&Call> = calls.iter().filter(|c| c.is_write()).collect();
        assert_eq!(
            puts,
            [
                &Call::Put {
                    key: bad.into(),
                    len: 7 * MIB
                },
                &Call::Put {
                    key: good.into(),
                    len: 7 * MIB
                }
            ],
            "one streamed PutObject each, no multipart: {calls:?}"
        );
        let (info, got) = raw(&*fs, good).await;
        assert!(!info.metadata.contains_key("r2seal"));
        assert!(got == data(7 * MIB, 1), "good: the plaintext back");
        let (info, got) = raw(&*fs, bad).await;
        assert!(info.metadata.contains_key("r2seal"), "bad: still sealed");
        assert!(got == body, "bad: untouched");
    });
}

// ---------------------------------------------------------------------------------------
// Objects whose body is migrated already but whose name is not, on a file:// store.

/// Review finding #1, the inverse: `--reverse` under encrypted names moves a plaintext
/// object found under its encrypted name to its plaintext name (never over another
/// object), unseals the rest, and a rerun does nothing.
#[test]
fn reverse_moves_plaintext_objects_off_their_encrypted_names_fs() {
    use r2seal::jobs::migrate::MOVED_PLAINTEXT;
    use r2seal::keys::SymKey;
    use r2seal::names::NameKey;
    let rt = rt();
    let (root, _dir) = support::fs_store();
    let sym = SymKey::generate();
    let bucket = SealedBucket::new(root.clone())
        .with_recipients(Recipients::fixed(vec![
            Identity::Sym(sym.clone()).to_recipient()
        ]))
        .with_identities(vec![Identity::Sym(sym.clone())])
        .with_name_key(NameKey::from_sym_key(&sym));
    let stored = |k: &str| bucket.stored_key(k).unwrap();
    let mtime = BTreeMap::from([("mtime".to_string(), "1732500000".to_string())]);
    rt.block_on(async {
        bucket
            .put(
                "a/sealed.txt",
                Bytes::from_static(b"sealed"),
                &Default::default(),
            )
            .await
            .unwrap();
        let plain_at_encrypted = store::PutOptions {
            content_type: Some("text/plain".into()),
            metadata: mtime.clone(),
            ..Default::default()
        };
        for (key, body) in [("a/moved.txt", "plain"), ("a/taken.txt", "ours")] {
            root.put(&stored(key), Bytes::from(body), &plain_at_encrypted)
                .await
                .unwrap();
        }
        // Someone else's object already holds one plaintext name.
        root.put(
            "a/taken.txt",
            Bytes::from_static(b"theirs"),
            &Default::default(),
        )
        .await
        .unwrap();
    });
    let reverse = || {
        let migrator = Arc::new(Migrator::new(
            bucket.clone(),
            None,
            MigrateOptions {
                reverse: true,
                verify: true,
                ..Default::default()
            },
        ));
        rt.block_on(jobs::run(
            root.clone(),
            "",
            &JobConfig::default(),
            move |item| {
                let m = migrator.clone();
                async move { m.migrate_one(item).await }
            },
        ))
    };
    let report = reverse();
    assert_eq!((report.done, report.failures), (2, 1), "{report:?}");
    assert_eq!(
        report.done_by_kind.get(MOVED_PLAINTEXT),
        Some(&1),
        "{report:?}"
    );
    let failed = report
        .entries
        .iter()
        .find(|e| e.outcome == "failed")
        .unwrap();
    assert_eq!(failed.key, stored("a/taken.txt"), "{report:?}");
    assert!(
        failed
            .detail
            .as_deref()
            .unwrap()
            .contains("already holds a different object"),
        "{report:?}"
    );
    rt.block_on(async {
        let (info, body) = raw(&*root, "a/moved.txt").await;
        assert_eq!((&body[..], info.metadata), (&b"plain"[..], mtime));
        assert_eq!(info.content_type.as_deref(), Some("text/plain"));
        assert!(root
            .head(&stored("a/moved.txt"))
            .await
            .unwrap_err()
            .is_not_found());
        assert_eq!(raw(&*root, "a/sealed.txt").await.1, b"sealed");
        // Both kept.
        assert_eq!(raw(&*root, "a/taken.txt").await.1, b"theirs");
        assert_eq!(raw(&*root, &stored("a/taken.txt")).await.1, b"ours");
    });
    // Once the other object is out of the way, a rerun finishes, and the next one does
    // nothing.
    rt.block_on(root.delete("a/taken.txt")).unwrap();
    let report = reverse();
    assert_eq!((report.done, report.failures), (1, 0), "{report:?}");
    assert_eq!(rt.block_on(raw(&*root, "a/taken.txt")).1, b"ours");
    let report = reverse();
    assert_eq!((report.done, report.skipped), (0, 3), "{report:?}");
    assert_eq!(
        report.skipped_by_reason.get(SKIP_PLAINTEXT),
        Some(&3),
        "{report:?}"
    );
}
