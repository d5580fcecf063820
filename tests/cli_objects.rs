//! The object commands (`put`, `get`, `cat`, `ls`, `rm`, `head`, `cp`, `mv`, `cleanup`) as
//! a user runs them: against `file://` always, and against the S3 server at
//! `R2SEAL_TEST_S3_ENDPOINT` (Garage from `.ci/services.sh`) when configured: a loud skip
//! otherwise, a failure with `CI=true`. Raw objects are inspected and planted through the
//! library's store, under the same root the CLI uses.
#![cfg(feature = "cli")]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use assert_cmd::Command;
use r2seal::store::fs::FsStore;
use r2seal::store::{self, Bytes, GetOptions, Store};
use tempfile::TempDir;

const MIB: usize = 1024 * 1024;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 % 251) as u8).wrapping_add(seed) ^ ((i >> 16) as u8))
        .collect()
}

fn one_line_error(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr).into_owned();
    assert_eq!(
        text.trim_end().lines().count(),
        1,
        "error should be one line: {text:?}"
    );
    assert!(text.starts_with("r2seal: "), "{text:?}");
    text
}

struct Ctx {
    dir: TempDir,
    /// URL prefix every case writes under, ending in `/`.
    base: String,
    /// Raw access to the same place (keys relative to `base`).
    raw: Arc<dyn Store>,
    env: Vec<(String, String)>,
    s3: bool,
    recipient: String,
}

impl Ctx {
    fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("r2seal").unwrap();
        cmd.current_dir(self.dir.path())
            .env_remove("R2SEAL_KEYRING")
            .env_remove("R2SEAL_PASSPHRASE");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = self.cmd().args(args).assert().success();
        out.get_output().stdout.clone()
    }

    /// Runs a command that must fail with exit 1 and one line on stderr.
    fn fail(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).assert().failure().code(1);
        one_line_error(&out.get_output().stderr)
    }

    fn url(&self, key: &str) -> String {
        format!("{}{key}", self.base)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, bytes).unwrap();
        p.display().to_string()
    }

    fn raw_get(&self, key: &str) -> (store::ObjectInfo, Vec<u8>) {
        rt().block_on(async {
            let got = self
                .raw
                .get(key, None, &GetOptions::default())
                .await
                .expect("raw get");
            let info = got.info.clone();
            (info, got.bytes().await.unwrap().to_vec())
        })
    }

    fn raw_put(
        &self,
        key: &str,
        body: Vec<u8>,
        metadata: std::collections::BTreeMap<String, String>,
    ) {
        rt().block_on(async {
            self.raw
                .put(
                    key,
                    Bytes::from(body),
                    &store::PutOptions {
                        metadata,
                        ..Default::default()
                    },
                )
                .await
                .expect("raw put");
        })
    }

    fn raw_exists(&self, key: &str) -> bool {
        rt().block_on(async {
            match self.raw.head(key).await {
                Ok(_) => true,
                Err(e) if e.is_not_found() => false,
                Err(e) => panic!("{e}"),
            }
        })
    }
}

fn keygen(dir: &Path) -> String {
    let out = Command::cargo_bin("r2seal")
        .unwrap()
        .current_dir(dir)
        .args(["keygen", "-o", "key.txt"])
        .assert()
        .success();
    let r = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let r = r.trim().to_string();
    Command::cargo_bin("r2seal")
        .unwrap()
        .current_dir(dir)
        .args(["keygen", "-o", "other.txt"])
        .assert()
        .success();
    r
}

fn fs_ctx(_case: &str) -> Option<Ctx> {
    let dir = TempDir::new().unwrap();
    let bucket = dir.path().join("bucket");
    fs::create_dir(&bucket).unwrap();
    let raw = Arc::new(FsStore::new(&bucket).unwrap());
    let recipient = keygen(dir.path());
    Some(Ctx {
        base: format!("file://{}/", bucket.display()),
        raw,
        env: Vec::new(),
        s3: false,
        recipient,
        dir,
    })
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn s3_ctx(case: &str) -> Option<Ctx> {
    let Some(endpoint) = var("R2SEAL_TEST_S3_ENDPOINT") else {
        if var("CI").as_deref() == Some("true") {
            panic!("R2SEAL_TEST_S3_ENDPOINT is not set and CI=true: the CLI object tests need their server (source .ci/services.sh)");
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: no S3 server configured (set R2SEAL_TEST_S3_ENDPOINT) — s3-{case} did not run ***"
        );
        return None;
    };
    let bucket = var("R2SEAL_TEST_S3_BUCKET").expect("R2SEAL_TEST_S3_BUCKET");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("r2seal-cli/{}-{nanos}/{case}/", std::process::id());
    let opts = r2seal::store::s3::S3Options {
        endpoint: Some(endpoint.clone()),
        ..Default::default()
    };
    let raw = rt()
        .block_on(r2seal::store::s3::S3Store::new(&bucket, &prefix, opts))
        .unwrap();
    let dir = TempDir::new().unwrap();
    let recipient = keygen(dir.path());
    Some(Ctx {
        base: format!("s3://{bucket}/{prefix}"),
        raw: Arc::new(raw),
        env: vec![("AWS_ENDPOINT_URL".into(), endpoint)],
        s3: true,
        recipient,
        dir,
    })
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

mod cases {
    use super::*;

    pub fn objects_round_trip(c: &Ctx) {
        let r = c.recipient.as_str();
        let plain = data(300_000, 1);
        let local = c.write("a.bin", &plain);
        let url = c.url("docs/a.bin");
        let out = c.run(&[
            "put",
            "-r",
            r,
            "--content-type",
            "application/x-test",
            "--meta",
            "owner=alice",
            "--json",
            &local,
            &url,
        ]);
        let put = &json_lines(&out)[0];
        assert_eq!(put["size"], 300_000);
        assert!(
            put["key"].as_str().unwrap().ends_with("docs/a.bin"),
            "{put}"
        );

        // Raw: ciphertext, envelope in metadata, Content-Type readable, user metadata sealed.
        let (info, body) = c.raw_get("docs/a.bin");
        assert!(!body.windows(32).any(|w| w == &plain[1000..1032]));
        assert_eq!(info.metadata.keys().collect::<Vec<_>>(), vec!["r2seal"]);
        assert_eq!(info.content_type.as_deref(), Some("application/x-test"));

        // cat, get (file, directory, stdout), ranges.
        assert!(c.run(&["cat", "-i", "key.txt", &url]) == plain);
        c.run(&["get", "-i", "key.txt", &url, "out.bin"]);
        assert!(fs::read(c.path("out.bin")).unwrap() == plain);
        fs::create_dir(c.path("dl")).unwrap();
        c.run(&["get", "-i", "key.txt", &url, "dl"]);
        assert!(fs::read(c.path("dl/a.bin")).unwrap() == plain);
        assert!(c.run(&["get", "-i", "key.txt", &url, "-"]) == plain);
        let got = c.run(&["cat", "-i", "key.txt", "--range", "65530-65545", &url]);
        assert_eq!(got, &plain[65530..=65545]);
        let got = c.run(&["cat", "-i", "key.txt", "--range", "-10", &url]);
        assert_eq!(got, &plain[plain.len() - 10..]);
        c.run(&[
            "get", "-i", "key.txt", "--range", "200000-", &url, "tail.bin",
        ]);
        assert!(fs::read(c.path("tail.bin")).unwrap() == plain[200_000..]);
        let e = c.fail(&["cat", "-i", "key.txt", "--range", "300000-300010", &url]);
        assert!(e.contains("not satisfiable"), "{e}");

        // head: plaintext size and sealed metadata.
        let h = &json_lines(&c.run(&["head", "-i", "key.txt", "--json", &url]))[0];
        assert_eq!(h["size"], 300_000);
        assert_eq!(h["sealed"], true);
        assert_eq!(h["content_type"], "application/x-test");
        assert_eq!(h["metadata"]["owner"], "alice");
        let text = String::from_utf8(c.run(&["head", "-i", "key.txt", &url])).unwrap();
        assert!(text.contains("size:           300000"), "{text}");

        // ls: plaintext sizes.
        let put_small = c.write("b.txt", b"hello\n");
        c.run(&["put", "-r", r, &put_small, &c.url("docs/")]);
        let ls = json_lines(&c.run(&["ls", "--json", &c.url("docs/")]));
        let sizes: Vec<(String, u64)> = ls
            .iter()
            .map(|o| {
                (
                    o["key"].as_str().unwrap().to_string(),
                    o["size"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(sizes.len(), 2, "{ls:?}");
        assert!(sizes
            .iter()
            .any(|(k, s)| k.ends_with("docs/a.bin") && *s == 300_000));
        assert!(sizes
            .iter()
            .any(|(k, s)| k.ends_with("docs/b.txt") && *s == 6));
        let long = String::from_utf8(c.run(&["ls", "--long", &c.url("docs/")])).unwrap();
        assert!(
            long.lines()
                .any(|l| l.contains(" 300000 ") && l.ends_with("docs/a.bin")),
            "{long}"
        );
        let top = String::from_utf8(c.run(&["ls", &c.base])).unwrap();
        assert!(top.lines().any(|l| l.ends_with("docs/")), "{top}");

        // cp and mv re-bind; the bodies stay the same ciphertext.
        c.run(&["cp", "-i", "key.txt", &url, &c.url("copy/a.bin")]);
        assert!(
            c.raw_get("copy/a.bin").1 == body,
            "cp moved no body: same ciphertext"
        );
        assert!(c.run(&["cat", "-i", "key.txt", &c.url("copy/a.bin")]) == plain);
        c.run(&[
            "mv",
            "-i",
            "key.txt",
            &c.url("copy/a.bin"),
            &c.url("moved/"),
        ]);
        assert!(!c.raw_exists("copy/a.bin"));
        assert!(c.run(&["cat", "-i", "key.txt", &c.url("moved/a.bin")]) == plain);

        // rm, then the object is gone and rm again is an error.
        c.run(&["rm", &c.url("moved/a.bin")]);
        assert!(!c.raw_exists("moved/a.bin"));
        let e = c.fail(&["rm", &c.url("moved/a.bin")]);
        assert!(e.contains("not found"), "{e}");

        // stdin, and a multipart upload with the smallest part size.
        c.cmd()
            .args(["put", "-r", r, "-", &c.url("stdin.txt")])
            .write_stdin("from stdin")
            .assert()
            .success();
        assert_eq!(
            c.run(&["cat", "-i", "key.txt", &c.url("stdin.txt")]),
            b"from stdin"
        );
        let big = data(11 * MIB + 5, 7);
        let big_local = c.write("big.bin", &big);
        let out = c.run(&[
            "put",
            "-r",
            r,
            "--part-size",
            "5",
            "--multipart-threshold",
            "5",
            "--json",
            &big_local,
            &c.url("big.bin"),
        ]);
        assert_eq!(json_lines(&out)[0]["parts"], 3);
        c.run(&["get", "-i", "key.txt", &c.url("big.bin"), "big.out"]);
        assert!(fs::read(c.path("big.out")).unwrap() == big);
        let got = c.run(&[
            "cat",
            "-i",
            "key.txt",
            "--range",
            "5242000-5243000",
            &c.url("big.bin"),
        ]);
        assert!(got == big[5_242_000..=5_243_000]);
    }

    pub fn recursive_transfers(c: &Ctx) {
        let r = c.recipient.as_str();
        let files = [
            ("tree/a.txt", data(10, 1)),
            ("tree/sub/b.bin", data(100_000, 2)),
            ("tree/sub/deeper/c.bin", data(0, 3)),
            ("tree/d.bin", data(70_000, 4)),
        ];
        for (name, bytes) in &files {
            c.write(name, bytes);
        }
        c.run(&[
            "put",
            "-r",
            r,
            "--recursive",
            "--jobs",
            "3",
            "tree",
            &c.url("t/"),
        ]);
        let keys: Vec<String> = json_lines(&c.run(&["ls", "--recursive", "--json", &c.url("t/")]))
            .iter()
            .map(|o| o["key"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(keys.len(), 4, "{keys:?}");
        assert!(
            keys.iter().any(|k| k.ends_with("t/sub/deeper/c.bin")),
            "{keys:?}"
        );
        c.run(&["get", "-i", "key.txt", "--recursive", &c.url("t/"), "back"]);
        for (name, bytes) in &files {
            let back = c.path(&name.replacen("tree/", "back/", 1));
            assert!(fs::read(&back).unwrap() == *bytes, "{}", back.display());
        }
        c.run(&[
            "cp",
            "-i",
            "key.txt",
            "--recursive",
            &c.url("t/sub/"),
            &c.url("t2/"),
        ]);
        assert_eq!(
            c.run(&["cat", "-i", "key.txt", &c.url("t2/deeper/c.bin")]),
            b""
        );
        assert!(c.run(&["cat", "-i", "key.txt", &c.url("t2/b.bin")]) == files[1].1);
        // A directory without --recursive is refused.
        let e = c.fail(&["put", "-r", r, "tree", &c.url("x")]);
        assert!(e.contains("--recursive"), "{e}");
    }

    pub fn bad_inputs(c: &Ctx) {
        let r = c.recipient.as_str();
        let local = c.write("p.txt", b"secret payload");
        let url = c.url("bad/p.txt");
        c.run(&["put", "-r", r, &local, &url]);
        fs::write(c.path("keep.txt"), b"old contents").unwrap();

        // Sealed to keys we do not hold: clear error, the existing local file untouched.
        let e = c.fail(&["get", "-i", "other.txt", &url, "keep.txt"]);
        assert!(e.contains("no identity matches"), "{e}");
        assert_eq!(fs::read(c.path("keep.txt")).unwrap(), b"old contents");
        // No such key: no local file appears.
        let e = c.fail(&["get", "-i", "key.txt", &c.url("bad/none"), "none.txt"]);
        assert!(e.contains("not found"), "{e}");
        assert!(!c.path("none.txt").exists());
        assert_no_partials(c.dir.path());

        // Tampered ciphertext: nothing written locally.
        let (info, mut body) = c.raw_get("bad/p.txt");
        body[20] ^= 1;
        c.raw_put("bad/tampered", body, info.metadata.clone());
        let e = c.fail(&["get", "-i", "key.txt", &c.url("bad/tampered"), "t.txt"]);
        assert!(
            e.contains("authentication failed") || e.contains("not bound"),
            "{e}"
        );
        assert!(!c.path("t.txt").exists());
        // The raw copy under another key is bound to the old name.
        let (_, body) = c.raw_get("bad/p.txt");
        c.raw_put("bad/renamed", body, info.metadata.clone());
        let e = c.fail(&["cat", "-i", "key.txt", &c.url("bad/renamed")]);
        assert!(e.contains("not bound to this name"), "{e}");

        // A plaintext object: refused, or returned with --allow-plaintext (and a warning).
        c.raw_put("bad/plain.txt", b"just text".to_vec(), Default::default());
        let e = c.fail(&["cat", "-i", "key.txt", &c.url("bad/plain.txt")]);
        assert!(e.contains("plaintext object"), "{e}");
        let out = c
            .cmd()
            .args(["cat", "--allow-plaintext", &c.url("bad/plain.txt")])
            .assert()
            .success();
        assert_eq!(out.get_output().stdout, b"just text");
        assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("plaintext"));

        // Oversized metadata: refused before anything is written.
        let blob = format!("blob={}", "x".repeat(9000));
        let e = c.fail(&[
            "put",
            "-r",
            r,
            "--meta",
            &blob,
            &local,
            &c.url("bad/big-meta"),
        ]);
        assert!(e.contains("metadata limit"), "{e}");
        assert!(!c.raw_exists("bad/big-meta"));

        // Keys and URLs.
        let e = c.fail(&["cat", &url]);
        assert!(e.contains("no identities"), "{e}");
        let e = c.fail(&["put", &local, &url]);
        assert!(e.contains("no recipients"), "{e}");
        let e = c.fail(&["cat", "-i", "key.txt", "ftp://x/y"]);
        assert!(e.contains("invalid URL"), "{e}");
        let e = c.fail(&["cat", "-i", "key.txt", &c.base]);
        assert!(e.contains("naming an object"), "{e}");
        let e = c.fail(&["put", "-r", r, "missing.txt", &url]);
        assert!(e.contains("missing.txt"), "{e}");
        // Nothing above overwrote the object.
        assert_eq!(c.run(&["cat", "-i", "key.txt", &url]), b"secret payload");
    }

    pub fn cleanup_aborts_unfinished_uploads(c: &Ctx) {
        let id = rt().block_on(async {
            let id = c
                .raw
                .create_multipart("up/crashed", &store::PutOptions::default())
                .await
                .unwrap();
            c.raw
                .upload_part("up/crashed", &id, 1, Bytes::from(vec![1u8; 100]))
                .await
                .unwrap();
            id
        });
        let dry = json_lines(&c.run(&[
            "cleanup",
            "--older-than",
            "0",
            "--dry-run",
            "--json",
            &c.url("up/"),
        ]));
        assert_eq!(dry.len(), 1);
        assert_eq!(dry[0]["upload_id"], id.as_str());
        assert_eq!(dry[0]["aborted"], false);
        let young = c.run(&["cleanup", "--json", &c.url("up/")]);
        assert!(young.is_empty(), "the default age spares young uploads");
        let done = json_lines(&c.run(&["cleanup", "--older-than", "0", "--json", &c.url("up/")]));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0]["aborted"], true);
        let left = rt().block_on(c.raw.list_multipart_uploads("up/")).unwrap();
        assert!(left.is_empty(), "{left:?}");
    }

    fn assert_no_partials(dir: &Path) {
        for e in fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(!name.ends_with(".partial"), "left behind: {name}");
        }
    }
}

macro_rules! suite {
    ($backend:ident, $make:path, [$($case:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[test]
                fn $case() {
                    let Some(c) = $make(stringify!($case)) else { return };
                    cases::$case(&c);
                    if c.s3 {
                        rt().block_on(async {
                            if let Ok(page) = c.raw.list("", None, None, None).await {
                                for o in page.objects {
                                    let _ = c.raw.delete(&o.key).await;
                                }
                            }
                        });
                    }
                }
            )*
        }
    };
}

suite!(
    file,
    fs_ctx,
    [
        objects_round_trip,
        recursive_transfers,
        bad_inputs,
        cleanup_aborts_unfinished_uploads,
    ]
);

suite!(
    s3,
    s3_ctx,
    [
        objects_round_trip,
        recursive_transfers,
        bad_inputs,
        cleanup_aborts_unfinished_uploads,
    ]
);

/// Conditional puts from the CLI (`--no-clobber`): the file:// store enforces them (Garage
/// does not, and the library suite covers them against moto).
#[test]
fn no_clobber_refuses_to_replace() {
    let c = fs_ctx("no_clobber").unwrap();
    let r = c.recipient.as_str();
    let a = c.write("a.txt", b"first");
    let b = c.write("b.txt", b"second");
    c.run(&["put", "-r", r, "--no-clobber", &a, &c.url("k")]);
    let e = c.fail(&["put", "-r", r, "--no-clobber", &b, &c.url("k")]);
    assert!(e.contains("precondition failed"), "{e}");
    assert_eq!(c.run(&["cat", "-i", "key.txt", &c.url("k")]), b"first");
    // A file above one part and under the multipart threshold goes up in one streamed
    // request, which carries the condition; above the threshold it is refused up front.
    let big = c.write("big.bin", &data(6 * MIB, 9));
    let out = c.run(&[
        "put",
        "-r",
        r,
        "--part-size",
        "5",
        "--no-clobber",
        "--json",
        &big,
        &c.url("big"),
    ]);
    assert_eq!(json_lines(&out)[0]["parts"], 0);
    let e = c.fail(&[
        "put",
        "-r",
        r,
        "--part-size",
        "5",
        "--no-clobber",
        &b,
        &c.url("big"),
    ]);
    assert!(e.contains("precondition failed"), "{e}");
    let e = c.fail(&[
        "put",
        "-r",
        r,
        "--part-size",
        "5",
        "--multipart-threshold",
        "5",
        "--no-clobber",
        &big,
        &c.url("big2"),
    ]);
    assert!(e.contains("multipart"), "{e}");
    assert!(c.run(&["cat", "-i", "key.txt", &c.url("big")]) == data(6 * MIB, 9));
}

/// `ls --long`: plaintext size, the date to the second, the stored ETag (as `--json`
/// gives it), then the key, in columns that line up whatever the store's date precision.
#[test]
fn ls_long_shows_the_etag_in_aligned_columns() {
    let c = fs_ctx("ls_long").unwrap();
    let r = c.recipient.as_str();
    let small = c.write("s.txt", b"x");
    let large = c.write("l.bin", &data(100_000, 1));
    c.run(&["put", "-r", r, &small, &c.url("d/a")]);
    c.run(&["put", "-r", r, &large, &c.url("d/sub/long-name.bin")]);
    let listed = String::from_utf8(c.run(&["ls", "--long", &c.url("d/")])).unwrap();
    let etags: std::collections::BTreeMap<String, String> =
        json_lines(&c.run(&["ls", "--json", "--recursive", &c.url("d/")]))
            .iter()
            .map(|v| {
                let etag = v["etag"].as_str().unwrap().trim_matches('"').to_owned();
                (v["key"].as_str().unwrap().to_owned(), etag)
            })
            .collect();
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    let mut key_columns = Vec::new();
    for line in &lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let key = *fields.last().unwrap();
        key_columns.push(line.rfind(key).unwrap());
        if key.ends_with('/') {
            assert_eq!(fields, ["PRE", key], "{line:?}");
            continue;
        }
        assert_eq!(fields.len(), 4, "{line:?}");
        assert_eq!(fields[0], "1", "{line:?}");
        let date = fields[1];
        assert_eq!(date.len(), 20, "{line:?}");
        assert!(
            date.ends_with('Z') && date.as_bytes()[10] == b'T',
            "{line:?}"
        );
        assert_eq!(fields[2], etags[key], "{line:?}");
    }
    assert_eq!(key_columns[0], key_columns[1], "{listed}");
}

/// A file:// bucket is found from any key below it, so names stay stable.
#[test]
fn file_bucket_root_is_stable() {
    let c = fs_ctx("root").unwrap();
    let r = c.recipient.as_str();
    let a = c.write("a.txt", b"nested");
    c.run(&["put", "-r", r, &a, &c.url("x/y/z.txt")]);
    // Opened through the raw store at the bucket root: bound to the full key.
    assert!(c.raw_exists("x/y/z.txt"));
    assert_eq!(
        c.run(&["cat", "-i", "key.txt", &c.url("x/y/z.txt")]),
        b"nested"
    );
    let e = c.fail(&[
        "cat",
        "-i",
        "key.txt",
        &format!("file://{}/nowhere/k", c.dir.path().display()),
    ]);
    assert!(e.contains("no such bucket"), "{e}");
}

#[test]
fn s3_errors_are_one_clear_line() {
    let Some(c) = s3_ctx("errors") else { return };
    let r = c.recipient.as_str();
    let local = c.write("a.txt", b"x");
    // No such bucket.
    let e = c.fail(&["put", "-r", r, &local, "s3://r2seal-no-such-bucket/k"]);
    assert!(e.contains("no such bucket"), "{e}");
    // Unreachable endpoint.
    let e = c.fail(&[
        "cat",
        "-i",
        "key.txt",
        "--endpoint",
        "http://127.0.0.1:9",
        &c.url("k"),
    ]);
    assert!(e.contains("unreachable"), "{e}");
    // Missing credentials: nothing in the environment or in a profile.
    let home = c.path("empty-home");
    fs::create_dir_all(&home).unwrap();
    let out = c
        .cmd()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("HOME", &home)
        .args(["put", "-r", r, &local, &c.url("k")])
        .assert()
        .failure()
        .code(1);
    let e = one_line_error(&out.get_output().stderr);
    assert!(e.contains("credentials"), "{e}");
    // Wrong secret: access denied or invalid credentials, never the secret itself.
    let out = c
        .cmd()
        .env("AWS_SECRET_ACCESS_KEY", "0".repeat(64))
        .args(["ls", &c.base])
        .assert()
        .failure()
        .code(1);
    let e = one_line_error(&out.get_output().stderr);
    assert!(
        e.contains("access denied") || e.contains("credentials"),
        "{e}"
    );
    assert!(!e.contains(&"0".repeat(64)));
}

/// A TCP proxy to `upstream` that cuts the first connection on which the client has sent
/// more than `cut_after` bytes (once), and counts the connections it cut.
fn cutting_proxy(
    upstream: &str,
    cut_after: usize,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cut = Arc::new(AtomicUsize::new(0));
    let armed = Arc::new(AtomicBool::new(true));
    let counted = cut.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(&upstream) else {
                return;
            };
            let (mut client_r, mut server_w) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (armed, counted) = (armed.clone(), counted.clone());
            // Client to server, cut once past `cut_after` bytes.
            std::thread::spawn(move || {
                let mut buf = [0u8; 64 * 1024];
                let mut sent = 0;
                loop {
                    let n = match client_r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    sent += n;
                    if sent > cut_after && armed.swap(false, Ordering::SeqCst) {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let _ = client_r.shutdown(Shutdown::Both);
                        let _ = server_w.shutdown(Shutdown::Both);
                        return;
                    }
                    if server_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server_w.shutdown(Shutdown::Write);
            });
            // Server to client.
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server, &mut client);
                let _ = client.shutdown(Shutdown::Write);
            });
        }
    });
    (url, cut)
}

/// `r2seal put FILE` of a file that goes up in one streamed request (which the SDK
/// cannot send again): the connection cut mid-body, the CLI puts the file again.
#[test]
fn put_of_a_file_is_sent_again_after_a_cut() {
    let Some(c) = s3_ctx("put_retry") else {
        return;
    };
    let endpoint = var("R2SEAL_TEST_S3_ENDPOINT").unwrap();
    let (proxy, cut) = cutting_proxy(&endpoint, 2 * MIB);
    let mut env = c.env.clone();
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL".into(), proxy));
    let c = Ctx { env, ..c };
    let big = data(6 * MIB, 11);
    let local = c.write("big.bin", &big);
    let out = c.run(&[
        "put",
        "-r",
        &c.recipient,
        "--part-size",
        "5",
        "--json",
        &local,
        &c.url("big.bin"),
    ]);
    assert_eq!(json_lines(&out)[0]["parts"], 0);
    assert_eq!(
        cut.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the proxy never cut"
    );
    assert!(c.run(&["cat", "-i", "key.txt", &c.url("big.bin")]) == big);
}
