//! `r2seal gateway` with real clients (Debian's rclone, the aws CLI, curl for bad input)
//! in front of Garage (`source .ci/services.sh`). Without the server or a client these
//! tests skip with a loud message locally; with CI=true they fail instead.
#![cfg(feature = "cli")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use r2seal::store::s3::{S3Credentials, S3Options, S3Store};
use r2seal::store::{PutOptions, Store};

const GW_KEY: &str = "gateway-test-key";
const GW_SECRET: &str = "gateway-test-secret-0123456789";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn skip(why: &str) {
    assert!(!ci(), "CI=true but {why}");
    eprintln!("\n!!!! SKIPPING gateway test: {why} !!!!\n");
}

#[derive(Clone)]
struct Upstream {
    endpoint: String,
    bucket: String,
    access: String,
    secret: String,
}

fn upstream() -> Option<Upstream> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    match (
        var("R2SEAL_TEST_S3_ENDPOINT"),
        var("R2SEAL_TEST_S3_BUCKET"),
        var("AWS_ACCESS_KEY_ID"),
        var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(endpoint), Some(bucket), Some(access), Some(secret)) => Some(Upstream {
            endpoint,
            bucket,
            access,
            secret,
        }),
        _ => {
            skip("no S3 server: run `source .ci/services.sh` first");
            None
        }
    }
}

/// The upstream, if it is configured and every client in `tools` is installed (each
/// missing one skips the test loudly, or fails it under CI).
fn upstream_with(tools: &[&str]) -> Option<Upstream> {
    let up = upstream()?;
    let version_arg = |tool: &str| {
        if tool == "rclone" {
            "version"
        } else {
            "--version"
        }
    };
    tools
        .iter()
        .all(|tool| have(tool, version_arg(tool)))
        .then_some(up)
}

fn have(tool: &str, arg: &str) -> bool {
    let ok = Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(&format!("`{tool}` is not installed"));
    }
    ok
}

fn unique(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("gw-{label}-{}-{nanos:x}/", std::process::id())
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_r2seal")
}

/// A running gateway; killed on drop.
struct Gateway {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    key: PathBuf,
    log: Arc<std::sync::Mutex<String>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(up: &Upstream, upstream_endpoint: &str) -> Gateway {
        Self::start_with(up, upstream_endpoint, None)
    }

    /// With `keyring`: seal by its policies, open with its keys, encrypt names if it says.
    fn start_with(up: &Upstream, upstream_endpoint: &str, keyring: Option<&Path>) -> Gateway {
        Self::start_with_args(up, upstream_endpoint, keyring, &[])
    }

    fn start_with_args(
        up: &Upstream,
        upstream_endpoint: &str,
        keyring: Option<&Path>,
        extra: &[&str],
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.txt");
        let out = Command::new(bin())
            .args(["keygen", "-o"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut cmd = Command::new(bin());
        cmd.args(["gateway", "--listen", "127.0.0.1:0", "--upstream"])
            .arg(upstream_endpoint);
        match keyring {
            Some(k) => cmd.arg("--keyring").arg(k),
            None => cmd.arg("-i").arg(&key),
        };
        cmd.args(extra);
        let mut child = cmd
            .env("R2SEAL_GATEWAY_ACCESS_KEY_ID", GW_KEY)
            .env("R2SEAL_GATEWAY_SECRET_ACCESS_KEY", GW_SECRET)
            .env("AWS_ACCESS_KEY_ID", &up.access)
            .env("AWS_SECRET_ACCESS_KEY", &up.secret)
            .env("AWS_REGION", "auto")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = loop {
            let line = lines.next().expect("the gateway printed nothing").unwrap();
            if !line.contains("warning:") {
                break line;
            }
        };
        let port = first
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {first}"));
        // Keep draining stderr so the gateway never blocks on it, kept for `log`.
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        Gateway {
            child,
            port,
            _dir: dir,
            key,
            log,
        }
    }

    /// What the gateway printed on stderr after its first line, waiting up to 5 s for
    /// `expected` to appear (the gateway writes, then a thread here reads).
    fn log_after(&self, expected: &str) -> String {
        for _ in 0..100 {
            let log = self.log.lock().unwrap().clone();
            if log.contains(expected) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log.lock().unwrap().clone()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the gateway exited"
        );
    }
}

fn raw_store(up: &Upstream) -> (tokio::runtime::Runtime, Arc<dyn Store>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = S3Options {
        endpoint: Some(up.endpoint.clone()),
        region: Some("auto".into()),
        credentials: Some(S3Credentials::new(&up.access, &up.secret)),
        ..Default::default()
    };
    let store = rt.block_on(S3Store::new(&up.bucket, "", opts)).unwrap();
    (rt, Arc::new(store))
}

/// Every stored object under `prefix`: key → (raw bytes, stored metadata).
fn raw_objects(
    up: &Upstream,
    prefix: &str,
) -> BTreeMap<String, (Vec<u8>, BTreeMap<String, String>)> {
    let (rt, store) = raw_store(up);
    rt.block_on(async {
        let mut out = BTreeMap::new();
        let mut token = None;
        loop {
            let page = store.list(prefix, None, token, None).await.unwrap();
            for o in page.objects {
                let got = store.get(&o.key, None, &Default::default()).await.unwrap();
                let meta = got.info.metadata.clone();
                out.insert(o.key.clone(), (got.bytes().await.unwrap().to_vec(), meta));
            }
            match page.next_continuation {
                Some(t) => token = Some(t),
                None => return out,
            }
        }
    })
}

/// Every stored key in the bucket.
fn raw_keys(up: &Upstream) -> std::collections::BTreeSet<String> {
    let (rt, store) = raw_store(up);
    rt.block_on(async {
        let mut out = std::collections::BTreeSet::new();
        let mut token = None;
        loop {
            let page = store.list("", None, token, None).await.unwrap();
            out.extend(page.objects.into_iter().map(|o| o.key));
            match page.next_continuation {
                Some(t) => token = Some(t),
                None => return out,
            }
        }
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------------------------------
// rclone

fn rclone_config(dir: &Path, gw: &Gateway) -> PathBuf {
    let path = dir.join("rclone.conf");
    std::fs::write(
        &path,
        format!(
            "[gw]\ntype = s3\nprovider = Other\nendpoint = {}\naccess_key_id = {GW_KEY}\nsecret_access_key = {GW_SECRET}\nregion = auto\nlist_version = 2\n",
            gw.url()
        ),
    )
    .unwrap();
    path
}

fn rclone(config: &Path) -> Command {
    let mut c = Command::new("rclone");
    c.arg("--config").arg(config).env_remove("AWS_CA_BUNDLE");
    c
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An agent's state directory: config with a bot token, credentials, device files,
/// session transcripts, a binary, unicode names, an empty file, a 20 MiB file.
fn state_tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        (
            "config.json",
            br#"{"telegram":{"bot_token":"MARKER-bot-token-7f3a9c"},"model":"x"}"#.to_vec(),
        ),
        (
            "credentials/oauth.json",
            br#"{"refresh_token":"MARKER-refresh-51de0b","scopes":["a","b"]}"#.to_vec(),
        ),
        (
            "devices/pairing/phone.json",
            br#"{"device":"MARKER-device-pairing-c0ffee","paired":true}"#.to_vec(),
        ),
        ("devices/empty.lock", Vec::new()),
        ("identity/avatar.png", pseudo_random(70_000, 7)),
        (
            "notes/Zürich — 東京 ✓.md",
            "MARKER-unicode-name-body\n".as_bytes().to_vec(),
        ),
    ];
    let mut transcript = Vec::new();
    for i in 0..2000 {
        transcript.extend_from_slice(
            format!("{{\"turn\":{i},\"role\":\"user\",\"text\":\"MARKER-transcript-line\"}}\n")
                .as_bytes(),
        );
    }
    files.push(("sessions/2026-11-25/main.jsonl", transcript));
    files.push(("cache/model.bin", pseudo_random(20 * 1024 * 1024, 20)));
    files
        .into_iter()
        .map(|(rel, body)| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &body).unwrap();
            (PathBuf::from(rel), body)
        })
        .collect()
}

fn copied(out: &Output) -> usize {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(": Copied ("))
        .count()
}

/// A gateway in front of the upstream, an rclone config for it, and a state tree to sync
/// to a fresh prefix (`gw:BUCKET/PREFIX`).
struct StateSync {
    gw: Gateway,
    dir: tempfile::TempDir,
    conf: PathBuf,
    src: PathBuf,
    files: Vec<(PathBuf, Vec<u8>)>,
    prefix: String,
    remote: String,
}

impl StateSync {
    /// `None` (the test skips) without rclone.
    fn start(up: &Upstream, label: &str) -> Option<StateSync> {
        if !have("rclone", "version") {
            return None;
        }
        let gw = Gateway::start(up, &up.endpoint);
        let dir = tempfile::tempdir().unwrap();
        let conf = rclone_config(dir.path(), &gw);
        let src = dir.path().join("state");
        let files = state_tree(&src);
        let prefix = unique(label);
        let remote = format!("gw:{}/{}", up.bucket, prefix.trim_end_matches('/'));
        Some(StateSync {
            gw,
            dir,
            conf,
            src,
            files,
            prefix,
            remote,
        })
    }

    /// `rclone sync -v [FLAGS] SRC REMOTE`, which must succeed.
    fn sync(&self, flags: &[&str]) -> Output {
        run(rclone(&self.conf)
            .args(["sync", "-v"])
            .args(flags)
            .arg(&self.src)
            .arg(&self.remote))
    }
}

#[test]
fn rclone_sync_of_a_state_tree_stores_only_ciphertext() {
    let Some(up) = upstream() else { return };
    let Some(mut t) = StateSync::start(&up, "rclone") else {
        return;
    };

    let first = t.sync(&[]);
    assert_eq!(copied(&first), t.files.len(), "{first:?}");
    let second = t.sync(&[]);
    assert_eq!(
        copied(&second),
        0,
        "a second sync transfers nothing: {second:?}"
    );
    run(rclone(&t.conf).arg("check").arg(&t.src).arg(&t.remote));

    // Plaintext sizes in listings, plaintext bytes back.
    let listed = run(rclone(&t.conf).args(["ls"]).arg(&t.remote));
    let listed = String::from_utf8_lossy(&listed.stdout);
    for (rel, body) in &t.files {
        let line = format!("{} {}", body.len(), rel.display());
        assert!(
            listed.lines().any(|l| l.trim() == line),
            "{line:?} not in {listed}"
        );
    }
    let back = t.dir.path().join("back");
    run(rclone(&t.conf).arg("copy").arg(&t.remote).arg(&back));
    for (rel, body) in &t.files {
        assert_eq!(&std::fs::read(back.join(rel)).unwrap(), body, "{rel:?}");
    }

    // The bucket holds none of the plaintext, and every object is sealed.
    let raw = raw_objects(&up, &t.prefix);
    assert_eq!(raw.len(), t.files.len());
    for (key, (bytes, meta)) in &raw {
        assert!(meta.contains_key("r2seal"), "{key} is not sealed: {meta:?}");
        assert!(!contains(bytes, b"MARKER"), "{key} holds plaintext");
        assert!(
            !meta
                .values()
                .any(|v| v.contains("MARKER") || v.contains("mtime")),
            "{key}: readable metadata {meta:?}"
        );
    }
    let (_, big) = t
        .files
        .iter()
        .find(|(r, _)| r.ends_with("model.bin"))
        .unwrap();
    let model = &raw[&format!("{}cache/model.bin", t.prefix)].0;
    assert!(!contains(model, &big[5_000_000..5_000_064]));

    // rclone's mtime update: a metadata-replacing self-copy, re-sealed.
    let touched = t.src.join("config.json");
    let when = std::fs::File::options().write(true).open(&touched).unwrap();
    when.set_modified(SystemTime::now() - Duration::from_secs(86_400))
        .unwrap();
    let third = t.sync(&[]);
    assert_eq!(copied(&third), 0, "{third:?}");
    assert!(
        String::from_utf8_lossy(&third.stderr).contains("Updated modification time"),
        "{third:?}"
    );
    run(rclone(&t.conf).arg("check").arg(&t.src).arg(&t.remote));
    let raw = raw_objects(&up, &format!("{}config.json", t.prefix));
    let (bytes, meta) = raw.values().next().unwrap();
    assert!(meta.contains_key("r2seal") && !contains(bytes, b"MARKER"));
    t.gw.assert_alive();
}

/// README recommends `no_head = true` for mirrors: rclone then trusts the PUT's answer,
/// so that answer must carry the ETag rclone checks (the plaintext MD5), for bodies
/// sealed in one piece and for those sealed as they stream (the 20 MiB file).
#[test]
fn rclone_without_head_after_put_gets_what_it_checks() {
    let Some(up) = upstream() else { return };
    let Some(mut t) = StateSync::start(&up, "nohead") else {
        return;
    };
    let first = t.sync(&["--s3-no-head"]);
    assert_eq!(copied(&first), t.files.len(), "{first:?}");
    let log = String::from_utf8_lossy(&first.stderr);
    assert!(
        !log.contains("corrupted") && !log.contains("differ"),
        "{log}"
    );
    let second = t.sync(&["--s3-no-head"]);
    assert_eq!(copied(&second), 0, "{second:?}");
    run(rclone(&t.conf).arg("check").arg(&t.src).arg(&t.remote));
    let raw = raw_objects(&up, &t.prefix);
    assert_eq!(raw.len(), t.files.len());
    assert!(raw
        .values()
        .all(|(bytes, meta)| meta.contains_key("r2seal") && !contains(bytes, b"MARKER")));
    t.gw.assert_alive();
}

#[test]
fn rclone_multipart_upload_opens_natively() {
    let Some(up) = upstream_with(&["rclone"]) else {
        return;
    };
    let gw = Gateway::start(&up, &up.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let conf = rclone_config(dir.path(), &gw);
    let body = pseudo_random(12 * 1024 * 1024 + 12345, 12);
    std::fs::create_dir(dir.path().join("up")).unwrap();
    let file = dir.path().join("up/upload.bin");
    std::fs::write(&file, &body).unwrap();
    let prefix = unique("mp");
    let remote = format!("gw:{}/{}", up.bucket, prefix.trim_end_matches('/'));
    // 5 MiB parts, in parallel; rclone checks the multipart ETag it computes itself.
    run(rclone(&conf)
        .args([
            "copy",
            "--s3-upload-cutoff",
            "5M",
            "--s3-chunk-size",
            "5M",
            "--s3-upload-concurrency",
            "3",
            "--s3-use-multipart-etag=true",
        ])
        .arg(&file)
        .arg(&remote));
    run(rclone(&conf)
        .arg("check")
        .arg(dir.path().join("up"))
        .arg(&remote));
    let raw = raw_objects(&up, &prefix);
    let (stored, meta) = raw.values().next().unwrap();
    assert!(meta.contains_key("r2seal") && !meta.contains_key("r2seal-pending"));
    assert!(!contains(stored, &body[1_000_000..1_000_064]));

    // The r2seal CLI opens it as it opens its own objects (parts layout).
    let out = dir.path().join("native.bin");
    run(Command::new(bin())
        .args(["get", "--endpoint", &up.endpoint, "-i"])
        .arg(&gw.key)
        .arg(format!("s3://{}/{prefix}upload.bin", up.bucket))
        .arg(&out)
        .env("AWS_ACCESS_KEY_ID", &up.access)
        .env("AWS_SECRET_ACCESS_KEY", &up.secret)
        .env("AWS_REGION", "auto"));
    assert_eq!(std::fs::read(&out).unwrap(), body);

    // Ranged reads through the gateway across part boundaries.
    let range = run(rclone(&conf)
        .args(["cat", "--offset", "5242000", "--count", "2000"])
        .arg(format!("{remote}/upload.bin")));
    assert_eq!(range.stdout, &body[5_242_000..5_244_000]);
}

#[test]
fn rclone_through_a_keyring_that_encrypts_names() {
    let Some(up) = upstream_with(&["rclone", "aws"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("keyring.toml");
    run(Command::new(bin())
        .args(["key", "add", "main", "--sym", "--keyring"])
        .arg(&ring));
    let text = std::fs::read_to_string(&ring).unwrap();
    std::fs::write(&ring, format!("names = \"main\"\n{text}")).unwrap();
    let gw = Gateway::start_with(&up, &up.endpoint, Some(&ring));
    let conf = rclone_config(dir.path(), &gw);
    let src = dir.path().join("state");
    let files = [
        ("agents/alpha/SECRETNAME-config.json", "{}"),
        ("agents/alpha/sessions/SECRETNAME-2026.jsonl", "{\"a\":1}\n"),
        ("SECRETNAME-Zürich.txt", "x"),
    ];
    for (rel, body) in files {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let prefix = unique("names");
    let remote = format!("gw:{}/{}", up.bucket, prefix.trim_end_matches('/'));
    let before = raw_keys(&up);
    let first = run(rclone(&conf).args(["sync", "-v"]).arg(&src).arg(&remote));
    assert_eq!(copied(&first), files.len(), "{first:?}");
    let second = run(rclone(&conf).args(["sync", "-v"]).arg(&src).arg(&remote));
    assert_eq!(copied(&second), 0, "{second:?}");
    run(rclone(&conf).arg("check").arg(&src).arg(&remote));
    // The stored keys name nothing the client wrote (the prefix is encrypted too).
    // (Other tests of this file write under plaintext `gw-…` prefixes meanwhile.)
    let new: Vec<String> = raw_keys(&up)
        .difference(&before)
        .filter(|k| !k.starts_with("gw-"))
        .cloned()
        .collect();
    assert!(new.len() >= files.len(), "{new:?}");
    for key in &new {
        assert!(
            !key.contains("SECRETNAME") && !key.contains("agents"),
            "{key}"
        );
        if key.starts_with(".r2seal/") {
            continue; // the bucket descriptor
        }
        let raw = raw_objects(&up, key);
        let (bytes, meta) = &raw[key];
        assert!(meta.contains_key("r2seal") && !contains(bytes, b"SECRETNAME"));
    }

    // Listings come in plaintext key order, page after page, as S3 lists: `aws s3 sync`
    // merges them with the local tree and takes anything out of place for missing.
    let tree = dir.path().join("listing");
    let mut want: Vec<String> = (0..10).map(|i| format!("f{i:02}")).collect();
    want.extend(["a/x".into(), "z".into(), "Z".into(), "é".into()]);
    for rel in &want {
        let p = tree.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, rel.as_bytes()).unwrap();
    }
    let base = format!("{prefix}list/");
    run(rclone(&conf)
        .arg("copy")
        .arg(&tree)
        .arg(format!("gw:{}/{base}", up.bucket)));
    want.sort();
    let want: Vec<String> = want.iter().map(|k| format!("{base}{k}")).collect();
    let page = |op: &str, extra: &[&str]| {
        json(&run(s3api(&gw, op, &up.bucket)
            .args(["--prefix", &base, "--page-size", "3"])
            .args(extra)))
    };
    assert_eq!(
        listed(&page("list-objects-v2", &[]), "Contents", "Key"),
        want
    );
    assert_eq!(listed(&page("list-objects", &[]), "Contents", "Key"), want);
    let after = format!("{base}f04");
    let from = listed(
        &page("list-objects-v2", &["--start-after", &after]),
        "Contents",
        "Key",
    );
    assert_eq!(
        from,
        want[want.iter().position(|k| *k == after).unwrap() + 1..]
    );
    // Later pages are cut from the listing the first page sorted (not listed again per
    // page, which made a listing of n objects cost n² entries): an object deleted after
    // the first page was made still shows on the next, as S3 may show it too.
    let raw_page = |extra: &[&str]| {
        json(&run(s3api(&gw, "list-objects-v2", &up.bucket)
            .args(["--prefix", &base, "--max-keys", "3", "--no-paginate"])
            .args(extra)))
    };
    let first = raw_page(&[]);
    assert_eq!(listed(&first, "Contents", "Key"), want[..3]);
    let token = first["NextContinuationToken"].as_str().unwrap().to_string();
    run(s3api(&gw, "delete-object", &up.bucket).args(["--key", &want[4]]));
    let second = raw_page(&["--continuation-token", &token]);
    assert_eq!(listed(&second, "Contents", "Key"), want[3..6]);
    // A listing started afresh lists again.
    let again = listed(&page("list-objects-v2", &[]), "Contents", "Key");
    assert!(
        !again.contains(&want[4]) && again.len() == want.len() - 1,
        "{again:?}"
    );
    run(rclone(&conf)
        .arg("copy")
        .arg(&tree)
        .arg(format!("gw:{}/{base}", up.bucket)));
    let level = page("list-objects-v2", &["--delimiter", "/"]);
    let mut both = listed(&level, "Contents", "Key");
    both.extend(listed(&level, "CommonPrefixes", "Prefix"));
    let mut sorted = both.clone();
    sorted.sort();
    assert_eq!(both.len(), 14, "{level}");
    assert!(sorted.contains(&format!("{base}a/")), "{level}");

    // Uploads in progress are listed and aborted by their plaintext keys, also by a
    // gateway that never saw them (a restart forgets them).
    let mpu = format!("{prefix}mpu/a b.bin");
    let created = json(&run(
        s3api(&gw, "create-multipart-upload", &up.bucket).args(["--key", &mpu])
    ));
    let upload_id = created["UploadId"].as_str().unwrap().to_string();
    let uploads = |gw: &Gateway| {
        let out = run(s3api(gw, "list-multipart-uploads", &up.bucket)
            .args(["--prefix", &format!("{prefix}mpu/")]));
        listed(&json(&out), "Uploads", "Key")
    };
    assert_eq!(uploads(&gw), std::slice::from_ref(&mpu));
    // Paged as S3 pages them: a second upload, one per page, the markers lead on.
    let mpu2 = format!("{prefix}mpu/b.bin");
    let created2 = json(&run(
        s3api(&gw, "create-multipart-upload", &up.bucket).args(["--key", &mpu2])
    ));
    let first = json(&run(s3api(&gw, "list-multipart-uploads", &up.bucket).args(
        [
            "--prefix",
            &format!("{prefix}mpu/"),
            "--max-uploads",
            "1",
            "--no-paginate",
        ],
    )));
    assert_eq!(listed(&first, "Uploads", "Key"), std::slice::from_ref(&mpu));
    assert_eq!(first["IsTruncated"], true, "{first}");
    let second = json(&run(s3api(&gw, "list-multipart-uploads", &up.bucket).args(
        [
            "--prefix",
            &format!("{prefix}mpu/"),
            "--max-uploads",
            "1",
            "--no-paginate",
            "--key-marker",
            first["NextKeyMarker"].as_str().unwrap(),
            "--upload-id-marker",
            first["NextUploadIdMarker"].as_str().unwrap(),
        ],
    )));
    assert_eq!(
        listed(&second, "Uploads", "Key"),
        std::slice::from_ref(&mpu2)
    );
    assert_eq!(second["IsTruncated"], false, "{second}");
    run(s3api(&gw, "abort-multipart-upload", &up.bucket).args([
        "--key",
        &mpu2,
        "--upload-id",
        created2["UploadId"].as_str().unwrap(),
    ]));
    let restarted = Gateway::start_with(&up, &up.endpoint, Some(&ring));
    run(
        s3api(&restarted, "abort-multipart-upload", &up.bucket).args([
            "--key",
            &mpu,
            "--upload-id",
            &upload_id,
        ]),
    );
    assert!(uploads(&restarted).is_empty());
}

#[test]
fn metadata_past_the_budget_is_the_clients_to_shorten_and_never_fails_a_stored_write() {
    let Some(up) = upstream_with(&["curl"]) else {
        return;
    };
    let gw = Gateway::start(&up, &up.endpoint);
    let prefix = unique("budget");
    let good = format!("{GW_KEY}:{GW_SECRET}");
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::write(&small, b"small").unwrap();
    let put = |len: usize, file: &Path, key: &str| {
        let meta = format!("x-amz-meta-blob: {}", "x".repeat(len));
        let data = format!("@{}", file.display());
        curl(
            &gw,
            &good,
            &["-D", "-", "-X", "PUT", "-H", &meta, "--data-binary", &data],
            &format!("/{}/{prefix}{key}", up.bucket),
        )
    };
    // Metadata that cannot fit beside the envelope (sealed, it grows by a third): refused
    // as the client's to shorten, with nothing stored.
    let (s, out) = put(7000, &small, "small");
    assert_eq!((s, code_of(&out)), (400, "MetadataTooLarge"), "{out}");
    let (s, _) = curl(
        &gw,
        &good,
        &["-I"],
        &format!("/{}/{prefix}small", up.bucket),
    );
    assert_eq!(s, 404);
    // A body past one in-memory part streams with its header sent first, and gets its MD5
    // sealed afterwards. With the most metadata whose first header fits (found by
    // bisection; a longer value is refused before anything is written), the MD5 no longer
    // does, yet the object is stored: the PUT succeeds, with an ETag no client takes for
    // an MD5.
    let large = dir.path().join("large");
    std::fs::write(&large, pseudo_random(17 << 20, 5)).unwrap();
    let (mut fits, mut refused) = (0, 8192);
    let mut last = None;
    while refused - fits > 1 {
        let mid = (fits + refused) / 2;
        let (s, out) = put(mid, &large, "large");
        if s == 400 && code_of(&out) == "MetadataTooLarge" {
            refused = mid;
        } else {
            assert_eq!(s, 200, "{mid}: {out}");
            fits = mid;
            last = Some(out);
        }
    }
    let out = match last {
        Some(out) => out,
        None => panic!("no metadata at all fits"),
    };
    let last_put = put(fits, &large, "large");
    assert_eq!(last_put.0, 200, "{}", last_put.1);
    let len = fits;
    for out in [out, last_put.1] {
        assert!(
            out.to_ascii_lowercase().contains("etag: \"r2seal-"),
            "{len}: {out}"
        );
    }
    let (s, out) = curl(
        &gw,
        &good,
        &["-I"],
        &format!("/{}/{prefix}large", up.bucket),
    );
    assert_eq!(s, 200, "{out}");
    assert!(
        out.contains(&"x".repeat(len)),
        "the metadata is kept: {out}"
    );
}

#[test]
fn a_key_no_xml_can_carry_does_not_break_listings() {
    let Some(up) = upstream_with(&["curl", "aws"]) else {
        return;
    };
    let gw = Gateway::start(&up, &up.endpoint);
    let prefix = unique("ctl");
    // Written straight to the bucket by another client: a key holding U+0001.
    let (s, body) = curl_at(
        &up.endpoint,
        &format!("{}:{}", up.access, up.secret),
        &["-X", "PUT", "--data-binary", "x"],
        &format!("/{}/{prefix}soh%01x", up.bucket),
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = curl(
        &gw,
        &format!("{GW_KEY}:{GW_SECRET}"),
        &["-X", "PUT", "--data-binary", "fine"],
        &format!("/{}/{prefix}fine.txt", up.bucket),
    );
    assert_eq!(s, 200, "{body}");
    let listing = json(&run(
        s3api(&gw, "list-objects-v2", &up.bucket).args(["--prefix", &prefix])
    ));
    assert_eq!(
        listed(&listing, "Contents", "Key"),
        [format!("{prefix}fine.txt"), format!("{prefix}soh\u{1}x")]
    );
}

#[test]
fn plaintext_objects_stay_readable_while_writes_are_sealed() {
    let Some(up) = upstream_with(&["rclone"]) else {
        return;
    };
    // The migration window is the operator's choice.
    let gw = Gateway::start_with_args(&up, &up.endpoint, None, &["--allow-plaintext"]);
    let prefix = unique("migrate");
    let (rt, store) = raw_store(&up);
    let key = format!("{prefix}legacy.json");
    let legacy = br#"{"written":"before the gateway"}"#;
    let mut legacy_opts = PutOptions::default();
    legacy_opts
        .metadata
        .insert("mtime".into(), "1700000000.000000000".into());
    rt.block_on(store.put(&key, legacy.to_vec().into(), &legacy_opts))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = rclone_config(dir.path(), &gw);
    let got = run(rclone(&conf)
        .arg("cat")
        .arg(format!("gw:{}/{key}", up.bucket)));
    assert_eq!(got.stdout, legacy);
    // A server-side copy of it is a write: sealed, its readable metadata with it.
    let copy = format!("{prefix}copy.json");
    run(rclone(&conf)
        .arg("copyto")
        .arg(format!("gw:{}/{key}", up.bucket))
        .arg(format!("gw:{}/{copy}", up.bucket)));
    let raw = raw_objects(&up, &copy);
    let (bytes, meta) = raw.values().next().unwrap();
    assert!(meta.contains_key("r2seal"), "{meta:?}");
    assert!(!contains(bytes, b"before the gateway") && !meta.contains_key("mtime"));
    let got = run(rclone(&conf)
        .arg("cat")
        .arg(format!("gw:{}/{copy}", up.bucket)));
    assert_eq!(got.stdout, legacy);
    // Written back through the gateway, it is sealed.
    let local = dir.path().join("legacy.json");
    std::fs::write(&local, b"{\"written\":\"through the gateway\"}").unwrap();
    run(rclone(&conf)
        .arg("copyto")
        .arg(&local)
        .arg(format!("gw:{}/{key}", up.bucket)));
    let raw = raw_objects(&up, &key);
    let (bytes, meta) = raw.values().next().unwrap();
    assert!(meta.contains_key("r2seal"));
    assert!(!contains(bytes, b"through the gateway"));
}

#[test]
fn plaintext_objects_are_refused_outside_a_migration_window() {
    let Some(up) = upstream_with(&["rclone"]) else {
        return;
    };
    let gw = Gateway::start(&up, &up.endpoint);
    let prefix = unique("planted");
    let (rt, store) = raw_store(&up);
    // Whoever can write the bucket puts plaintext where a sealed object was.
    let key = format!("{prefix}credentials.json");
    let planted = br#"{"token":"chosen by whoever wrote the bucket"}"#;
    rt.block_on(store.put(&key, planted.to_vec().into(), &PutOptions::default()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = rclone_config(dir.path(), &gw);
    let out = rclone(&conf)
        .args(["cat", "--retries", "1", "--low-level-retries", "1"])
        .arg(format!("gw:{}/{key}", up.bucket))
        .output()
        .unwrap();
    // (rclone takes the refused HEAD for "not a file" and prints nothing.)
    assert!(!contains(&out.stdout, b"chosen"), "{out:?}");
    let (status, body) = curl(
        &gw,
        &format!("{GW_KEY}:{GW_SECRET}"),
        &[],
        &format!("/{}/{key}", up.bucket),
    );
    assert_eq!((status, code_of(&body)), (403, "AccessDenied"), "{body}");
    assert!(!body.contains("chosen"), "{body}");
    // Nor does a copy launder it into a sealed object.
    let (status, body) = curl(
        &gw,
        &format!("{GW_KEY}:{GW_SECRET}"),
        &[
            "-X",
            "PUT",
            "-H",
            &format!("x-amz-copy-source: /{}/{key}", up.bucket),
        ],
        &format!("/{}/{prefix}copy.json", up.bucket),
    );
    assert_eq!((status, code_of(&body)), (403, "AccessDenied"), "{body}");
    // The operator is told what was refused and how to open the window.
    let log = gw.log_after("--allow-plaintext");
    assert!(
        log.contains(&key) && log.contains("plaintext") && log.contains("--allow-plaintext"),
        "{log}"
    );
    // Objects past one minimum part are HEADed for their size by a listing: one stored
    // in plaintext, and one whose header opens with no key of this gateway, are listed
    // with their stored sizes instead of failing the page.
    let big = vec![7u8; 6 << 20];
    let mut foreign = PutOptions::default();
    foreign.metadata.insert(
        "r2seal".into(),
        "age-encryption.org/v1;-> X25519 bm90IG91cnM;AAAA;--- AAAA".into(),
    );
    rt.block_on(async {
        let (plain, other) = (
            format!("{prefix}big-plain.bin"),
            format!("{prefix}big-foreign.bin"),
        );
        store
            .put(&plain, big.clone().into(), &PutOptions::default())
            .await
            .unwrap();
        store
            .put(&other, big.clone().into(), &foreign)
            .await
            .unwrap();
    });
    let listed = run(rclone(&conf)
        // Sizes and names only: `lsl` would HEAD each object for rclone's mtime.
        .args(["lsf", "--format", "sp", "--separator", " "])
        .arg(format!("gw:{}/{prefix}", up.bucket)));
    let listed = String::from_utf8_lossy(&listed.stdout);
    let names: Vec<(&str, &str)> = listed.lines().filter_map(|l| l.split_once(' ')).collect();
    let six_mib = (6 << 20).to_string();
    assert!(
        names.contains(&(six_mib.as_str(), "big-plain.bin")),
        "{listed}"
    );
    assert!(
        names.contains(&(six_mib.as_str(), "big-foreign.bin")),
        "{listed}"
    );
    assert!(
        names.iter().any(|(_, n)| *n == "credentials.json"),
        "{listed}"
    );
    let log = gw.log_after("listed with its stored size");
    assert!(
        log.contains("listed with its stored size") && log.contains("big-foreign.bin"),
        "{log}"
    );
    assert_eq!(
        raw_keys(&up)
            .iter()
            .filter(|k| k.starts_with(&prefix))
            .count(),
        3
    );
}

// ---------------------------------------------------------------------------------------
// aws CLI

fn aws(gw: &Gateway) -> Command {
    let mut c = Command::new("aws");
    c.args(["--endpoint-url", &gw.url(), "--region", "us-east-1"])
        .env("AWS_ACCESS_KEY_ID", GW_KEY)
        .env("AWS_SECRET_ACCESS_KEY", GW_SECRET)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN");
    c
}

/// `aws s3api OP --bucket BUCKET`.
fn s3api(gw: &Gateway, op: &str, bucket: &str) -> Command {
    let mut c = aws(gw);
    c.args(["s3api", op, "--bucket", bucket]);
    c
}

/// `aws s3 cp FROM TO`, which must succeed.
fn aws_cp(gw: &Gateway, from: impl AsRef<std::ffi::OsStr>, to: impl AsRef<std::ffi::OsStr>) {
    run(aws(gw)
        .args(["s3", "cp", "--only-show-errors"])
        .arg(from)
        .arg(to));
}

#[test]
fn aws_cli_sees_plaintext_sizes_and_ranges() {
    let Some(up) = upstream_with(&["aws"]) else {
        return;
    };
    let gw = Gateway::start(&up, &up.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("aws");
    let small = br#"{"session":"MARKER-aws-small","n":[1,2,3]}"#.to_vec();
    let large = pseudo_random(20 * 1024 * 1024 + 777, 99); // multipart in 8 MiB parts
    std::fs::write(dir.path().join("small.json"), &small).unwrap();
    std::fs::write(dir.path().join("large.bin"), &large).unwrap();
    let s3 = format!("s3://{}/{prefix}", up.bucket);
    run(aws(&gw)
        .args(["s3", "cp", "--recursive", "--only-show-errors"])
        .arg(dir.path())
        .arg(&s3));

    let ls = run(aws(&gw).args(["s3", "ls", "--recursive"]).arg(&s3));
    let ls = String::from_utf8_lossy(&ls.stdout);
    for (name, len) in [("small.json", small.len()), ("large.bin", large.len())] {
        assert!(
            ls.lines().any(|l| l.ends_with(&format!("{prefix}{name}"))
                && l.split_whitespace().nth(2) == Some(&len.to_string())),
            "{name} with {len} bytes not in:\n{ls}"
        );
    }

    for (key, body, start, end) in [
        ("small.json", &small, 5usize, 20usize),
        ("large.bin", &large, 65_530, 65_545),
        (
            "large.bin",
            &large,
            8 * 1024 * 1024 - 10,
            8 * 1024 * 1024 + 10,
        ),
        ("large.bin", &large, large.len() - 100, large.len() - 1),
    ] {
        let out = dir.path().join("range.out");
        run(aws(&gw)
            .args(["s3api", "get-object", "--bucket", &up.bucket, "--key"])
            .arg(format!("{prefix}{key}"))
            .arg("--range")
            .arg(format!("bytes={start}-{end}"))
            .arg(&out));
        assert_eq!(
            std::fs::read(&out).unwrap(),
            &body[start..=end],
            "{key} {start}-{end}"
        );
    }

    // The ETag of a single-request upload is the plaintext MD5.
    let head = run(aws(&gw)
        .args(["s3api", "head-object", "--bucket", &up.bucket, "--key"])
        .arg(format!("{prefix}small.json")));
    let md5 = {
        use md5::{Digest, Md5};
        hex::encode(Md5::digest(&small))
    };
    let head = String::from_utf8_lossy(&head.stdout);
    assert!(head.contains(&md5), "{head}");
    assert!(
        head.contains(&format!("\"ContentLength\": {}", small.len())),
        "{head}"
    );

    // Server-side copy, re-bound to its new key; then delete both.
    aws_cp(
        &gw,
        format!("{s3}small.json"),
        format!("{s3}copy/small.json"),
    );
    let back = dir.path().join("copy.json");
    aws_cp(&gw, format!("{s3}copy/small.json"), &back);
    assert_eq!(std::fs::read(&back).unwrap(), small);
    let raw = raw_objects(&up, &prefix);
    assert_eq!(raw.len(), 3);
    assert!(raw
        .values()
        .all(|(b, m)| m.contains_key("r2seal") && !contains(b, b"MARKER")));
    run(aws(&gw)
        .args(["s3", "rm", "--recursive", "--only-show-errors"])
        .arg(&s3));
    assert!(raw_objects(&up, &prefix).is_empty());
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The values of `field` in the objects of `array` of every page of an aws CLI listing.
fn listed(v: &serde_json::Value, array: &str, field: &str) -> Vec<String> {
    v[array]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| o[field].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn aws_cli_lists_from_markers_and_reads_parts() {
    let Some(up) = upstream_with(&["aws"]) else {
        return;
    };
    let gw = Gateway::start(&up, &up.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("aws-list");
    let tree = dir.path().join("tree");
    let large = pseudo_random(20 * 1024 * 1024 + 777, 7); // aws s3 cp: 8 MiB parts
    let files: [(&str, &[u8]); 6] = [
        ("a.txt", b"a"),
        ("b/1.txt", b"b1"),
        ("b/2.txt", b"b2"),
        ("c.txt", b"c"),
        ("d/3.txt", b"d3"),
        ("large.bin", &large),
    ];
    for (name, body) in files {
        let path = tree.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let s3 = format!("s3://{}/{prefix}", up.bucket);
    run(aws(&gw)
        .args(["s3", "cp", "--recursive", "--only-show-errors"])
        .arg(&tree)
        .arg(&s3));
    let keys =
        |names: &[&str]| -> Vec<String> { names.iter().map(|n| format!("{prefix}{n}")).collect() };
    let api = |op: &str| s3api(&gw, op, &up.bucket);

    // ListObjects (v1), one entry a page: the CLI follows NextMarker to the end.
    let v1 = json(&run(api("list-objects").args([
        "--prefix",
        &prefix,
        "--page-size",
        "1",
    ])));
    assert_eq!(
        listed(&v1, "Contents", "Key"),
        keys(&[
            "a.txt",
            "b/1.txt",
            "b/2.txt",
            "c.txt",
            "d/3.txt",
            "large.bin"
        ])
    );
    let sizes: Vec<u64> = v1["Contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["Size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [1, 2, 2, 1, 2, large.len() as u64]);
    // With a delimiter a page may end on a common prefix; it is not listed twice.
    let v1 = json(&run(api("list-objects").args([
        "--prefix",
        &prefix,
        "--delimiter",
        "/",
        "--page-size",
        "1",
    ])));
    assert_eq!(
        listed(&v1, "Contents", "Key"),
        keys(&["a.txt", "c.txt", "large.bin"])
    );
    assert_eq!(listed(&v1, "CommonPrefixes", "Prefix"), keys(&["b/", "d/"]));
    let after = json(&run(api("list-objects").args([
        "--prefix",
        &prefix,
        "--marker",
        &format!("{prefix}b/2.txt"),
        "--no-paginate",
    ])));
    assert_eq!(
        listed(&after, "Contents", "Key"),
        keys(&["c.txt", "d/3.txt", "large.bin"])
    );

    // ListObjectsV2 start-after, alone and across pages.
    for page_size in ["1000", "1"] {
        let v2 = json(&run(api("list-objects-v2").args([
            "--prefix",
            &prefix,
            "--start-after",
            &format!("{prefix}b/1.txt"),
            "--page-size",
            page_size,
        ])));
        assert_eq!(
            listed(&v2, "Contents", "Key"),
            keys(&["b/2.txt", "c.txt", "d/3.txt", "large.bin"]),
            "page size {page_size}"
        );
    }

    // partNumber: the plaintext of that part of a multipart upload, and the part count.
    let part = dir.path().join("part.out");
    let got = json(&run(api("get-object")
        .args(["--key", &format!("{prefix}large.bin"), "--part-number", "2"])
        .arg(&part)));
    let mib8 = 8 * 1024 * 1024;
    assert_eq!(std::fs::read(&part).unwrap(), &large[mib8..2 * mib8]);
    assert_eq!(got["PartsCount"], 3, "{got}");
    assert_eq!(
        got["ContentRange"],
        format!("bytes {}-{}/{}", mib8, 2 * mib8 - 1, large.len())
    );
    let head = json(&run(api("head-object").args([
        "--key",
        &format!("{prefix}large.bin"),
        "--part-number",
        "3",
    ])));
    assert_eq!(
        head["ContentLength"],
        (large.len() - 2 * mib8) as u64,
        "{head}"
    );
    assert_eq!(head["PartsCount"], 3);
    // An object written in one request is one part.
    run(api("get-object")
        .args(["--key", &format!("{prefix}c.txt"), "--part-number", "1"])
        .arg(&part));
    assert_eq!(std::fs::read(&part).unwrap(), b"c");
    for (key, n) in [("large.bin", "4"), ("c.txt", "2")] {
        let out = api("get-object")
            .args(["--key", &format!("{prefix}{key}"), "--part-number", n])
            .arg(&part)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("InvalidPartNumber"),
            "{key} part {n}: {err}"
        );
    }
    run(aws(&gw)
        .args(["s3", "rm", "--recursive", "--only-show-errors"])
        .arg(&s3));
}

/// Bucket-level requests are answered from the upstream: `aws s3 ls` and `rclone lsd`
/// list its buckets, and a bucket's location and versioning status are the upstream's.
#[test]
fn bucket_level_requests_answer_as_the_upstream() {
    let Some(up) = upstream_with(&["aws"]) else {
        return;
    };
    let gw = Gateway::start(&up, &up.endpoint);
    let ls = run(aws(&gw).args(["s3", "ls"]));
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.lines().any(|l| l.ends_with(&format!(" {}", up.bucket))),
        "{ls}"
    );
    let (rt, _) = raw_store(&up);
    let raw = rt
        .block_on(S3Store::new(
            &up.bucket,
            "",
            S3Options {
                endpoint: Some(up.endpoint.clone()),
                credentials: Some(S3Credentials::new(&up.access, &up.secret)),
                ..Default::default()
            },
        ))
        .unwrap();
    let location = rt.block_on(raw.bucket_location()).unwrap();
    let versioning = rt.block_on(raw.bucket_versioning()).unwrap();
    let api = |op: &str, bucket: &str| s3api(&gw, op, bucket);
    let got = json(&run(&mut api("get-bucket-location", &up.bucket)));
    assert_eq!(
        got["LocationConstraint"].as_str(),
        location.as_deref(),
        "{got}"
    );
    let got = run(&mut api("get-bucket-versioning", &up.bucket));
    let status = (!got.stdout.is_empty()).then(|| json(&got)["Status"].clone());
    assert_eq!(
        status.as_ref().and_then(|s| s.as_str()),
        versioning.as_deref(),
        "{status:?}"
    );
    let out = api("get-bucket-location", "r2seal-no-such-bucket")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("NoSuchBucket"),
        "{err}"
    );
    if have("rclone", "version") {
        let dir = tempfile::tempdir().unwrap();
        let config = rclone_config(dir.path(), &gw);
        let lsd = run(rclone(&config).args(["lsd", "gw:"]));
        let lsd = String::from_utf8_lossy(&lsd.stdout);
        assert!(
            lsd.lines().any(|l| l.ends_with(&format!(" {}", up.bucket))),
            "{lsd}"
        );
    }
}

/// `aws s3 cp` between keys copies an object past its 8 MiB threshold in parts
/// (UploadPartCopy); by hand, a part copied from a range of the source, its conditions,
/// and a range the source does not have.
#[test]
fn aws_cli_copies_large_objects_part_by_part() {
    let Some(up) = upstream_with(&["aws"]) else {
        return;
    };
    let gw = Gateway::start(&up, &up.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("awscopy");
    let s3 = format!("s3://{}/{prefix}", up.bucket);
    let large = pseudo_random(20 * 1024 * 1024 + 321, 17);
    let file = dir.path().join("large.bin");
    std::fs::write(&file, &large).unwrap();
    run(aws(&gw)
        .args([
            "s3",
            "cp",
            "--only-show-errors",
            "--metadata",
            "mtime=1700000000",
        ])
        .arg(&file)
        .arg(format!("{s3}large.bin")));
    // (The v1 CLI does not carry metadata over in a copy by parts, as against S3: it is
    // given anew.)
    run(aws(&gw)
        .args([
            "s3",
            "cp",
            "--only-show-errors",
            "--metadata",
            "mtime=1700000001",
        ])
        .arg(format!("{s3}large.bin"))
        .arg(format!("{s3}copy/large.bin")));
    let back = dir.path().join("back.bin");
    aws_cp(&gw, format!("{s3}copy/large.bin"), &back);
    assert!(std::fs::read(&back).unwrap() == large, "the copy differs");
    let api = |op: &str| s3api(&gw, op, &up.bucket);
    let head = json(&run(
        api("head-object").args(["--key", &format!("{prefix}copy/large.bin")])
    ));
    assert_eq!(head["ContentLength"], large.len() as u64, "{head}");
    assert_eq!(head["Metadata"]["mtime"], "1700000001", "{head}");
    assert!(
        head["ETag"].as_str().unwrap().ends_with("-3\""),
        "copied in the CLI's three parts: {head}"
    );
    let source_etag = json(&run(
        api("head-object").args(["--key", &format!("{prefix}large.bin")])
    ))["ETag"]
        .as_str()
        .unwrap()
        .to_string();

    let key = format!("{prefix}parts.bin");
    let upload = json(&run(api("create-multipart-upload").args(["--key", &key])));
    let upload_id = upload["UploadId"].as_str().unwrap().to_string();
    let copy_part = |n: &str, range: &str, extra: &[&str]| {
        api("upload-part-copy")
            .args(["--key", &key, "--upload-id", &upload_id, "--part-number", n])
            .args(["--copy-source", &format!("{}/{prefix}large.bin", up.bucket)])
            .args(["--copy-source-range", range])
            .args(extra)
            .output()
            .unwrap()
    };
    let (first, second) = (5_000_000usize..=10_242_879, 100usize..=199);
    let mut etags = Vec::new();
    for (n, r, extra) in [
        ("1", &first, vec![]),
        (
            "2",
            &second,
            // As on S3, a matching if-match overrides a failing if-unmodified-since.
            vec![
                "--copy-source-if-match",
                source_etag.as_str(),
                "--copy-source-if-unmodified-since",
                "2000-01-01T00:00:00Z",
            ],
        ),
    ] {
        let out = copy_part(n, &format!("bytes={}-{}", r.start(), r.end()), &extra);
        assert!(out.status.success(), "part {n}: {out:?}");
        let tag = json(&out)["CopyPartResult"]["ETag"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            tag.trim_matches('"'),
            md5_hex(&large[r.clone()]),
            "part {n}"
        );
        etags.push(tag);
    }
    for (range, extra, code) in [
        (
            "bytes=0-99".to_string(),
            vec!["--copy-source-if-none-match", source_etag.as_str()],
            "PreconditionFailed",
        ),
        (
            "bytes=0-99".to_string(),
            vec!["--copy-source-if-unmodified-since", "2000-01-01T00:00:00Z"],
            "PreconditionFailed",
        ),
        (
            format!("bytes={}-{}", large.len() - 10, large.len()),
            vec![],
            "InvalidArgument",
        ),
        ("bytes=10-".to_string(), vec![], "InvalidArgument"),
    ] {
        let out = copy_part("3", &range, &extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(code),
            "{range}: {err}"
        );
    }
    // A source that fails to open mid-way fails the part with its own error and records
    // nothing: a bit of its stored body flipped about 12 MiB in.
    let stored = format!("{prefix}large.bin");
    let (rt, store) = raw_store(&up);
    rt.block_on(async {
        let got = store.get(&stored, None, &Default::default()).await.unwrap();
        let opts = PutOptions {
            metadata: got.info.metadata.clone(),
            ..Default::default()
        };
        let mut body = got.bytes().await.unwrap().to_vec();
        body[12 * 1024 * 1024] ^= 1;
        store.put(&stored, body.into(), &opts).await.unwrap();
    });
    let out = copy_part("3", &format!("bytes=0-{}", large.len() - 1), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("InternalError"),
        "{err}"
    );
    let listed_parts = json(&run(api("list-parts").args([
        "--key",
        &key,
        "--upload-id",
        &upload_id,
    ])));
    let numbers: Vec<u64> = listed_parts["Parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["PartNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2], "{listed_parts}");
    // The operator is told which object failed to open: for the copy, and for a GET
    // whose answer had begun (its first window opened) before the flipped bit.
    let cut = dir.path().join("cut.bin");
    let get = api("get-object")
        .args(["--key", &stored])
        .arg(&cut)
        .output()
        .unwrap();
    assert!(!get.status.success(), "{get:?}");
    let log = gw.log_after("cut short");
    let about = |what: &str| {
        log.lines()
            .any(|l| l.starts_with("r2seal gateway: ") && l.contains(what) && l.contains(&stored))
    };
    assert!(
        about("a response was cut short") && about("cannot open"),
        "{log}"
    );
    let parts = serde_json::json!({ "Parts": [
        { "PartNumber": 1, "ETag": etags[0] },
        { "PartNumber": 2, "ETag": etags[1] },
    ]});
    run(api("complete-multipart-upload")
        .args(["--key", &key, "--upload-id", &upload_id])
        .args(["--multipart-upload", &parts.to_string()]));
    aws_cp(&gw, format!("{s3}parts.bin"), &back);
    let mut want = large[first].to_vec();
    want.extend_from_slice(&large[second]);
    assert!(
        std::fs::read(&back).unwrap() == want,
        "the copied parts differ"
    );

    let raw = raw_objects(&up, &prefix);
    assert_eq!(raw.len(), 3, "{:?}", raw.keys());
    assert!(raw
        .values()
        .all(|(b, m)| m.contains_key("r2seal") && !contains(b, &large[100..164])));
    run(aws(&gw)
        .args(["s3", "rm", "--recursive", "--only-show-errors"])
        .arg(&s3));
}

// ---------------------------------------------------------------------------------------
// Bad input

/// (HTTP status, body) of a request signed by curl.
fn curl(gw: &Gateway, user: &str, args: &[&str], path: &str) -> (u16, String) {
    curl_at(&gw.url(), user, args, path)
}

/// `curl` against a gateway's base URL (for a thread that cannot borrow the gateway).
fn curl_at(base: &str, user: &str, args: &[&str], path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--aws-sigv4",
            "aws:amz:auto:s3",
        ])
        .args([
            "-H",
            "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            "--user",
            user,
        ])
        .args(args)
        .arg(format!("{base}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn code_of(body: &str) -> &str {
    body.split("<Code>")
        .nth(1)
        .and_then(|r| r.split("</Code>").next())
        .unwrap_or("")
}

#[test]
fn bad_requests_get_s3_errors_and_write_nothing() {
    let Some(up) = upstream_with(&["curl"]) else {
        return;
    };
    let mut gw = Gateway::start(&up, &up.endpoint);
    let prefix = unique("bad");
    let good = format!("{GW_KEY}:{GW_SECRET}");
    let obj = format!("/{}/{prefix}obj", up.bucket);
    let put = ["-X", "PUT", "--data-binary", "MARKER-never-stored"];
    let copy_self = format!("x-amz-copy-source: {obj}");

    // (what, user:secret, curl args, path, status, S3 code)
    type Case<'a> = (&'a str, String, Vec<&'a str>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "bad signature",
            format!("{GW_KEY}:wrong"),
            put.to_vec(),
            obj.clone(),
            403,
            "SignatureDoesNotMatch",
        ),
        (
            "unknown access key",
            "nobody:wrong".into(),
            put.to_vec(),
            obj.clone(),
            403,
            "InvalidAccessKeyId",
        ),
        (
            "malformed XML",
            good.clone(),
            vec![
                "-X",
                "POST",
                "--data-binary",
                "<Delete><Object><Key>x</Key></Obj",
            ],
            format!("/{}?delete=", up.bucket),
            400,
            "MalformedXML",
        ),
        (
            "unsupported operation",
            good.clone(),
            vec!["-X", "PUT", "--data-binary", "<AccessControlPolicy/>"],
            format!("{obj}?acl="),
            501,
            "NotImplemented",
        ),
        (
            "Content-MD5 that does not match",
            good.clone(),
            vec![
                "-X",
                "PUT",
                "-H",
                "Content-MD5: AAAAAAAAAAAAAAAAAAAAAA==",
                "--data-binary",
                "MARKER-never-stored",
            ],
            obj.clone(),
            400,
            "BadDigest",
        ),
        (
            "x-amz-checksum-crc32 that does not match",
            good.clone(),
            vec![
                "-X",
                "PUT",
                "-H",
                "x-amz-checksum-crc32: AAAAAA==",
                "--data-binary",
                "MARKER-never-stored",
            ],
            obj.clone(),
            400,
            "BadDigest",
        ),
        (
            "part of an unknown upload",
            good.clone(),
            put.to_vec(),
            format!("{obj}?partNumber=1&uploadId=nonexistent"),
            404,
            "NoSuchUpload",
        ),
        (
            "missing object",
            good.clone(),
            vec![],
            obj.clone(),
            404,
            "NoSuchKey",
        ),
        (
            "object tags, which the gateway would not keep",
            good.clone(),
            vec![
                "-X",
                "PUT",
                "-H",
                "x-amz-tagging: team=agents",
                "--data-binary",
                "MARKER-never-stored",
            ],
            obj.clone(),
            501,
            "NotImplemented",
        ),
        (
            "copy onto itself without changes",
            good.clone(),
            vec!["-X", "PUT", "-H", &copy_self],
            obj.clone(),
            400,
            "InvalidRequest",
        ),
    ];
    for (what, user, args, path, status, code) in &cases {
        let (got, body) = curl(&gw, user, args, path);
        assert_eq!((got, code_of(&body)), (*status, *code), "{what}: {body}");
        gw.assert_alive();
    }
    assert!(
        raw_objects(&up, &prefix).is_empty(),
        "a refused request wrote something"
    );
    // The operator sees each refusal with its method and path, and no client error.
    let log = gw.log_after("refused PUT");
    let refused = format!("r2seal gateway: refused PUT {obj} (403)");
    assert_eq!(log.matches(&refused).count(), 2, "{log}");
    assert!(
        log.lines().all(|l| l.contains(&refused)) && !log.contains(GW_SECRET),
        "{log}"
    );

    // The gateway still serves good requests, and a sealed PUT with the right MD5 works.
    let (s, body) = curl(
        &gw,
        &good,
        &[
            "-X",
            "PUT",
            "-H",
            "Content-MD5: XUFAKrxLKna5cZ2REBfFkg==",
            "--data-binary",
            "hello",
        ],
        &obj,
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = curl(&gw, &good, &[], &obj);
    assert_eq!((s, body.as_str()), (200, "hello"));
    // A conditional GET of what the client holds: 304, naming it (ETag, Last-Modified).
    let md5 = md5_hex(b"hello");
    let held = format!("If-None-Match: \"{md5}\"");
    let (s, out) = curl(&gw, &good, &["-D", "-", "-H", &held], &obj);
    let headers = out.to_ascii_lowercase();
    assert_eq!(s, 304, "{out}");
    assert!(
        headers.contains(&format!("etag: \"{md5}\"")) && headers.contains("last-modified: "),
        "{out}"
    );
    let (s, body) = curl(&gw, &good, &["-H", "If-None-Match: \"0123\""], &obj);
    assert_eq!((s, body.as_str()), (200, "hello"));
    let (s, body) = curl(&gw, &good, &["-H", "Range: bytes=1-3"], &obj);
    assert_eq!((s, body.as_str()), (206, "ell"));
    let (s, body) = curl(&gw, &good, &["-H", "Range: bytes=10-20"], &obj);
    assert_eq!((s, code_of(&body)), (416, "InvalidRange"));
    // Requests naming an object version are refused, not served (or carried out) on the
    // current object.
    for args in [vec![], vec!["-X", "DELETE"]] {
        let (s, body) = curl(
            &gw,
            &good,
            &args,
            &format!("{obj}?versionId=3HL4kqtJlcpXroDTDmJ"),
        );
        assert_eq!(
            (s, code_of(&body)),
            (501, "NotImplemented"),
            "{args:?}: {body}"
        );
    }
    let key = format!("{prefix}obj");
    let (s, body) = curl(
        &gw,
        &good,
        &[
            "-X",
            "POST",
            "--data-binary",
            &format!("<Delete><Object><Key>{key}</Key><VersionId>3HL4kqtJlcpXroDTDmJ</VersionId></Object></Delete>"),
        ],
        &format!("/{}?delete=", up.bucket),
    );
    assert_eq!(s, 200, "{body}");
    assert!(
        body.contains("<Code>NotImplemented</Code>") && !body.contains("<Deleted>"),
        "{body}"
    );
    let (s, body) = curl(&gw, &good, &[], &obj);
    assert_eq!((s, body.as_str()), (200, "hello"), "still there");
    // Its stored body changed by whoever can write the bucket: it fails to open before
    // the answer starts, so the client gets an S3 error rather than a cut connection.
    let (rt, store) = raw_store(&up);
    let stored = format!("{prefix}obj");
    rt.block_on(async {
        let got = store.get(&stored, None, &Default::default()).await.unwrap();
        let opts = PutOptions {
            metadata: got.info.metadata.clone(),
            ..Default::default()
        };
        let mut body = got.bytes().await.unwrap().to_vec();
        *body.last_mut().unwrap() ^= 1;
        store.put(&stored, body.into(), &opts).await.unwrap();
    });
    let (s, body) = curl(&gw, &good, &[], &obj);
    assert_eq!((s, code_of(&body)), (500, "InternalError"), "{body}");
    assert!(!body.contains("hello"), "{body}");
    let (s, _) = curl(&gw, &good, &["-X", "DELETE"], &obj);
    assert_eq!(s, 204);

    // A restart forgets uploads in flight (their file keys lived in memory): the client
    // is told NoSuchUpload, and can still abort the upstream upload.
    let (s, body) = curl(&gw, &good, &["-X", "POST"], &format!("{obj}?uploads="));
    assert_eq!(s, 200, "{body}");
    let upload_id = upload_id_of(&body);
    let mut restarted = Gateway::start(&up, &up.endpoint);
    let part = format!("{obj}?partNumber=1&uploadId={upload_id}");
    let (s, body) = curl(&restarted, &good, &put, &part);
    assert_eq!((s, code_of(&body)), (404, "NoSuchUpload"), "{body}");
    let (s, body) = curl(
        &restarted,
        &good,
        &["-X", "DELETE"],
        &format!("{obj}?uploadId={upload_id}"),
    );
    assert_eq!(s, 204, "{body}");
    let (rt, store) = raw_store(&up);
    let left = rt.block_on(store.list_multipart_uploads(&prefix)).unwrap();
    assert!(left.is_empty(), "{left:?}");
    restarted.assert_alive();

    // Upstream down: 503 ServiceUnavailable, and the gateway stays up.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut down = Gateway::start(&up, &format!("http://127.0.0.1:{closed}"));
    for args in [vec![], put.to_vec()] {
        let (s, body) = curl(&down, &good, &args, &obj);
        assert_eq!((s, code_of(&body)), (503, "ServiceUnavailable"), "{body}");
        down.assert_alive();
    }
    assert!(raw_objects(&up, &prefix).is_empty());
    // The operator is told what failed, where, and that a retry can help.
    let log = down.log_after("network failure");
    let told: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("network failure (retryable)"))
        .filter(|l| l.contains(&format!("s3://{}/", up.bucket)))
        .collect();
    assert!(
        told.len() >= 2 && told.iter().any(|l| l.contains(&format!("{prefix}obj"))),
        "{log}"
    );
}

/// A key the local Garage knows but that has no permission on any bucket (an R2 token
/// scoped to another bucket), made with Garage's own CLI.
fn garage_key_without_permissions(name: &str) -> Option<(String, String)> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let (Some(garage), Some(dir)) = (var("R2SEAL_GARAGE_BIN"), var("R2SEAL_SERVICES_DIR")) else {
        skip("no Garage CLI: run `source .ci/services.sh` first");
        return None;
    };
    let out = run(Command::new(garage)
        .arg("-c")
        .arg(Path::new(&dir).join("garage/garage.toml"))
        .args(["key", "create", name]));
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {label} in: {text}"))
    };
    Some((field("Key ID:"), field("Secret key:")))
}

#[test]
fn upstream_refusals_reach_the_client_and_the_operator() {
    let Some(up) = upstream_with(&["curl"]) else {
        return;
    };
    let Some((access, secret)) = garage_key_without_permissions(&unique("noperm")) else {
        return;
    };
    let prefix = unique("refused");
    let obj = format!("/{}/{prefix}obj", up.bucket);
    let good = format!("{GW_KEY}:{GW_SECRET}");
    let put = ["-X", "PUT", "--data-binary", "MARKER-never-stored"];

    // The upstream denies the gateway's key this bucket: the client is told AccessDenied,
    // and the operator, who can fix it, what was denied and where (not just "refused").
    let mut denied = Gateway::start(
        &Upstream {
            access,
            secret,
            ..up.clone()
        },
        &up.endpoint,
    );
    for args in [put.to_vec(), vec![]] {
        let (s, body) = curl(&denied, &good, &args, &obj);
        assert_eq!((s, code_of(&body)), (403, "AccessDenied"), "{body}");
        denied.assert_alive();
    }
    // (The PUT is denied at its first upstream request, the bucket's descriptor.)
    let log = denied.log_after("refused GET");
    let told: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with(&format!("r2seal gateway: get s3://{}/", up.bucket)))
        .filter(|l| l.contains("access denied"))
        .collect();
    assert!(
        told.len() >= 2 && told.iter().any(|l| l.contains(&format!("{prefix}obj"))),
        "{log}"
    );
    for method in ["PUT", "GET"] {
        assert!(
            log.contains(&format!("refused {method} {obj} (403)")),
            "{log}"
        );
    }

    // A secret the upstream does not accept: Garage says AccessDenied ("Invalid
    // signature"), AWS and R2 SignatureDoesNotMatch (the gateway's fault: InternalError).
    // Either way the operator is told, and the secret is not printed.
    let wrong_secret = "0".repeat(64);
    let mut wrong = Gateway::start(
        &Upstream {
            secret: wrong_secret.clone(),
            ..up.clone()
        },
        &up.endpoint,
    );
    for args in [put.to_vec(), vec![]] {
        let (s, body) = curl(&wrong, &good, &args, &obj);
        assert!(
            matches!(
                (s, code_of(&body)),
                (403, "AccessDenied") | (500, "InternalError")
            ),
            "{s} {body}"
        );
        wrong.assert_alive();
    }
    let log = wrong.log_after(&format!("{prefix}obj"));
    let told = log
        .lines()
        .filter(|l| l.starts_with(&format!("r2seal gateway: get s3://{}/", up.bucket)))
        .count();
    assert!(told >= 2 && !log.contains(&wrong_secret), "{log}");
    assert!(
        raw_objects(&up, &prefix).is_empty(),
        "a refused write stored something"
    );
}

impl Gateway {
    /// PUTs `file` to `key` at `rate` (curl's `--limit-rate`) on a thread: (status, body).
    fn slow_put(
        &self,
        file: &Path,
        bucket: &str,
        key: &str,
        rate: &str,
    ) -> std::thread::JoinHandle<(u16, String)> {
        let (base, user) = (self.url(), format!("{GW_KEY}:{GW_SECRET}"));
        let (file, obj, rate) = (
            file.display().to_string(),
            format!("/{bucket}/{key}"),
            rate.to_string(),
        );
        std::thread::spawn(move || {
            curl_at(&base, &user, &["-T", &file, "--limit-rate", &rate], &obj)
        })
    }

    /// SIGTERM, after `after`.
    fn terminate(&self, after: Duration) {
        std::thread::sleep(after);
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
    }

    /// Waits up to 10 s for the gateway to exit: whether it did, with success.
    fn exited_cleanly(&mut self) -> bool {
        let exited = (0..100).find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            self.child.try_wait().unwrap()
        });
        exited.is_some_and(|s| s.success())
    }
}

/// SIGTERM (`docker stop`, systemd): the gateway stops accepting at once, lets an upload
/// in flight finish and commit, says so, and exits 0; past the grace period it cuts the
/// upload, which commits nothing.
#[test]
fn sigterm_stops_accepting_and_lets_requests_in_flight_finish() {
    let Some(up) = upstream_with(&["curl"]) else {
        return;
    };
    let mut gw = Gateway::start(&up, &up.endpoint);
    let prefix = unique("drain");
    let dir = tempfile::tempdir().unwrap();
    let body = pseudo_random(600 * 1024, 5);
    let file = dir.path().join("slow.bin");
    std::fs::write(&file, &body).unwrap();
    // About 6 s at 100 KiB/s.
    let upload = gw.slow_put(&file, &up.bucket, &format!("{prefix}slow"), "100k");
    gw.terminate(Duration::from_millis(800));
    // New connections are refused while the upload goes on.
    let refused = (0..40).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", gw.port)).is_err()
    });
    assert!(refused, "still accepting after SIGTERM");
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "exited with an upload in flight"
    );
    let (status, answer) = upload.join().unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(gw.exited_cleanly());
    let log = gw.log_after("stopped");
    assert!(
        log.contains("r2seal gateway: stopping") && log.contains("r2seal gateway: stopped"),
        "{log}"
    );
    let stored = raw_objects(&up, &prefix);
    let lens: Vec<u64> = stored.values().map(|(b, _)| b.len() as u64).collect();
    assert_eq!(lens, [sealed_len(body.len())], "{:?}", stored.keys());

    // Past the grace period an upload is cut, commits nothing, and the gateway says so.
    let mut gw = Gateway::start_with_args(&up, &up.endpoint, None, &["--shutdown-grace", "1"]);
    let prefix = unique("cut");
    let upload = gw.slow_put(&file, &up.bucket, &format!("{prefix}slow"), "50k");
    gw.terminate(Duration::from_millis(800));
    assert_ne!(upload.join().unwrap().0, 200);
    assert!(gw.exited_cleanly());
    let log = gw.log_after("were cut");
    assert!(log.contains("after 1 s were cut"), "{log}");
    assert!(raw_objects(&up, &prefix).is_empty());
}

// ---------------------------------------------------------------------------------------
// Multipart parts stream through

fn content_md5(body: &[u8]) -> String {
    use base64::prelude::{Engine, BASE64_STANDARD};
    use md5::{Digest, Md5};
    BASE64_STANDARD.encode(Md5::digest(body))
}

fn md5_hex(body: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(body))
}

/// (part number, stored size, stored ETag) of the parts the upstream holds for an
/// upload, asked of the upstream directly.
fn upstream_parts(up: &Upstream, key: &str, upload_id: &str) -> Vec<(u64, u64, String)> {
    let out = run(Command::new("aws")
        .args(["--endpoint-url", &up.endpoint, "--region"])
        .arg(std::env::var("AWS_REGION").unwrap_or_else(|_| "auto".into()))
        .args(["s3api", "list-parts", "--bucket", &up.bucket, "--key", key])
        .args(["--upload-id", upload_id])
        .env("AWS_ACCESS_KEY_ID", &up.access)
        .env("AWS_SECRET_ACCESS_KEY", &up.secret)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN"));
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Vec::new(); // the aws CLI prints nothing for an upload without parts
    }
    let v = json(&out);
    v["Parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .map(|p| {
                    (
                        p["PartNumber"].as_u64().unwrap(),
                        p["Size"].as_u64().unwrap(),
                        p["ETag"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Stored size of a part of `plain` bytes: salt ‖ 64 KiB chunks with 16-byte tags.
fn sealed_len(plain: usize) -> u64 {
    let chunks = plain.div_ceil(64 * 1024).max(1);
    (16 + plain + 16 * chunks) as u64
}

#[test]
fn parts_stream_through_and_failed_parts_replace_nothing() {
    let Some(up) = upstream_with(&["curl", "aws"]) else {
        return;
    };
    let mut gw = Gateway::start(&up, &up.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("stream");
    let key = format!("{prefix}big.bin");
    let obj = format!("/{}/{key}", up.bucket);
    let good = format!("{GW_KEY}:{GW_SECRET}");
    let file = |name: &str, body: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.to_str().unwrap().to_string()
    };
    let first = pseudo_random(6 * 1024 * 1024 + 3, 7);
    let last = pseudo_random(1024 * 1024 + 5, 8);
    let other = pseudo_random(last.len(), 11); // seeds are made odd: not 9
    let (first_path, last_path, other_path) = (
        file("first", &first),
        file("last", &last),
        file("other", &other),
    );

    let (s, body) = curl(&gw, &good, &["-X", "POST"], &format!("{obj}?uploads="));
    assert_eq!(s, 200, "{body}");
    let upload_id = upload_id_of(&body);
    let part = |n: u32| format!("{obj}?partNumber={n}&uploadId={upload_id}");
    let put_part = |n: u32, path: &str, md5: &str| {
        let data = format!("@{path}");
        let md5 = format!("Content-MD5: {md5}");
        curl(
            &gw,
            &good,
            &["-X", "PUT", "-H", &md5, "--data-binary", &data],
            &part(n),
        )
    };

    // A 6 MiB part with a wrong Content-MD5: BadDigest, and the upstream holds no part.
    let (s, body) = put_part(1, &first_path, &content_md5(&last));
    assert_eq!((s, code_of(&body)), (400, "BadDigest"), "{body}");
    assert_eq!(upstream_parts(&up, &key, &upload_id), vec![]);
    // Sent again, right: six times the 1 MiB limit, streamed (the aws CLI, its own way
    // of declaring the length and checksum).
    let out = run(aws(&gw)
        .args([
            "s3api",
            "upload-part",
            "--bucket",
            &up.bucket,
            "--key",
            &key,
        ])
        .args(["--part-number", "1", "--upload-id", &upload_id, "--body"])
        .arg(&first_path));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&md5_hex(&first)),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (s, body) = put_part(2, &last_path, &content_md5(&last));
    assert_eq!(s, 200, "{body}");
    let recorded = upstream_parts(&up, &key, &upload_id);
    let sizes: Vec<(u64, u64)> = recorded.iter().map(|(n, size, _)| (*n, *size)).collect();
    assert_eq!(
        sizes,
        [(1, sealed_len(first.len())), (2, sealed_len(last.len()))]
    );

    // Attempts to replace part 2 that fail must leave it as it was, upstream and at the
    // gateway: a wrong Content-MD5, a wrong CRC32, and a body cut short (the client
    // declares 2 MiB, sends 1 MiB, and hangs up).
    let (s, body) = put_part(2, &other_path, &content_md5(&last));
    assert_eq!((s, code_of(&body)), (400, "BadDigest"), "{body}");
    let data = format!("@{other_path}");
    let (s, body) = curl(
        &gw,
        &good,
        &[
            "-X",
            "PUT",
            "-H",
            "x-amz-checksum-crc32: AAAAAA==",
            "--data-binary",
            &data,
        ],
        &part(2),
    );
    assert_eq!((s, code_of(&body)), (400, "BadDigest"), "{body}");
    let cut = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "3",
            "--aws-sigv4",
            "aws:amz:auto:s3",
        ])
        .args([
            "-H",
            "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            "--user",
            &good,
        ])
        .args(["-X", "PUT", "-H"])
        .arg(format!("Content-Length: {}", 2 * other.len()))
        .args(["--data-binary", &data])
        .arg(format!("{}{}", gw.url(), part(2)))
        .status()
        .unwrap();
    assert_eq!(
        cut.code(),
        Some(28),
        "curl did not time out waiting for an answer"
    );
    // The gateway saw the connection end; give it a moment to fail the upstream request.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(upstream_parts(&up, &key, &upload_id), recorded);

    // Sent again, right, with other bytes; completed: the parts that succeeded, in order.
    // (Garage needs the re-send: a failed UploadPart leaves an entry that shadows the
    // part it did not replace, so completing with that part fails there.)
    let (s, body) = put_part(2, &other_path, &content_md5(&other));
    assert_eq!(s, 200, "{body}");
    // A Complete whose parts cannot form a sealed object (part 2 shorter than the part
    // after it) is refused, and the upload stays open for another attempt, as on S3.
    let (s, body) = put_part(3, &first_path, &content_md5(&first));
    assert_eq!(s, 200, "{body}");
    let uneven = format!(
        r#"{{"Parts":[{{"ETag":"\"{}\"","PartNumber":1}},{{"ETag":"\"{}\"","PartNumber":2}},{{"ETag":"\"{}\"","PartNumber":3}}]}}"#,
        md5_hex(&first),
        md5_hex(&other),
        md5_hex(&first)
    );
    let refused = aws(&gw)
        .args([
            "s3api",
            "complete-multipart-upload",
            "--bucket",
            &up.bucket,
            "--key",
            &key,
        ])
        .args(["--upload-id", &upload_id, "--multipart-upload", &uneven])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("InvalidRequest"),
        "{err}"
    );
    let parts = format!(
        r#"{{"Parts":[{{"ETag":"\"{}\"","PartNumber":1}},{{"ETag":"\"{}\"","PartNumber":2}}]}}"#,
        md5_hex(&first),
        md5_hex(&other)
    );
    run(aws(&gw)
        .args([
            "s3api",
            "complete-multipart-upload",
            "--bucket",
            &up.bucket,
            "--key",
            &key,
        ])
        .args(["--upload-id", &upload_id, "--multipart-upload", &parts]));
    let back = dir.path().join("back");
    run(aws(&gw)
        .args(["s3api", "get-object", "--bucket", &up.bucket, "--key", &key])
        .arg(&back));
    let got = std::fs::read(&back).unwrap();
    assert_eq!(got.len(), first.len() + other.len());
    assert!(got == [first, other].concat(), "the object's bytes differ");
    let raw = raw_objects(&up, &prefix);
    assert!(raw.values().all(|(_, m)| m.contains_key("r2seal")));
    run(aws(&gw)
        .args(["s3", "rm", "--recursive", "--only-show-errors"])
        .arg(format!("s3://{}/{prefix}", up.bucket)));
    gw.assert_alive();
}

/// The UploadId of a CreateMultipartUpload answer.
fn upload_id_of(xml: &str) -> String {
    xml.split("<UploadId>")
        .nth(1)
        .and_then(|r| r.split("</UploadId>").next())
        .expect("an upload id")
        .to_string()
}
