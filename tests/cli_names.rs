//! Encrypted names and the bucket descriptor as a user runs them (`r2seal key names`,
//! object commands, `r2seal bucket init|show`), on a file:// bucket. The same paths
//! against Garage are covered by tests/bucket_names.rs through the library.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

struct Ctx {
    dir: TempDir,
}

impl Ctx {
    fn new() -> Ctx {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bucket")).unwrap();
        Ctx { dir }
    }

    fn keyring(&self) -> PathBuf {
        self.dir.path().join("keyring.toml")
    }

    fn bare(&self) -> Command {
        let mut cmd = Command::cargo_bin("r2seal").unwrap();
        cmd.current_dir(self.dir.path())
            .env_remove("R2SEAL_KEYRING")
            .env_remove("R2SEAL_PASSPHRASE")
            .env_remove("R2SEAL_NAMES_KEY");
        cmd
    }

    fn cmd(&self) -> Command {
        let mut cmd = self.bare();
        cmd.env("R2SEAL_KEYRING", self.keyring());
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).assert().success();
        String::from_utf8(out.get_output().stdout.clone()).unwrap()
    }

    fn fail(&self, cmd: &mut Command, args: &[&str]) -> String {
        let out = cmd.args(args).assert().failure().code(1);
        let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
        // The keyring has no recovery key: sealing warns first.
        let err: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.starts_with("r2seal: warning: sealing without a recovery key"))
            .collect();
        assert_eq!(err.len(), 1, "one line: {stderr:?}");
        err[0].to_string()
    }

    fn url(&self, key: &str) -> String {
        format!("file://{}/bucket/{key}", self.dir.path().display())
    }

    fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join("bucket")
    }

    fn file(&self, name: &str, body: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    }
}

/// Every file name under `dir` (relative paths), skipping the store's own metadata.
fn stored_paths(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if rel.starts_with(".r2seal-meta") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn names_are_encrypted_transparently_and_the_descriptor_guards_writers() {
    let c = Ctx::new();
    c.run(&["key", "add", "agent", "--sym"]);
    let out = c.run(&["key", "names", "agent"]);
    assert!(out.contains("name key id"), "{out}");
    let a = c.file("a.json", "{\"secret\":1}");
    let b = c.file("b.txt", "second");
    c.run(&["put", &a, &c.url("sessions/2026/a.json")]);
    c.run(&["put", &b, &c.url("credentials/b.txt")]);
    // The store holds no plaintext path segment.
    let stored = stored_paths(&c.bucket_dir());
    assert_eq!(stored.len(), 2, "{stored:?}");
    for p in &stored {
        for word in ["sessions", "2026", "a.json", "credentials", "b.txt"] {
            assert!(!p.contains(word), "{p} leaks {word}");
        }
    }
    // ls shows plaintext names; cat, head, cp, mv, rm take them.
    let ls = c.run(&["ls", "--recursive", &c.url("")]);
    let mut names: Vec<&str> = ls.lines().collect();
    names.sort();
    assert_eq!(names, ["credentials/b.txt", "sessions/2026/a.json"]);
    assert_eq!(c.run(&["ls", &c.url("")]).lines().count(), 2);
    assert_eq!(
        c.run(&["ls", "-r", &c.url("sess")]).trim(),
        "sessions/2026/a.json"
    );
    assert_eq!(
        c.run(&["cat", &c.url("sessions/2026/a.json")]),
        "{\"secret\":1}"
    );
    assert!(c
        .run(&["head", &c.url("credentials/b.txt")])
        .contains("size:           6"));
    c.run(&[
        "cp",
        &c.url("credentials/b.txt"),
        &c.url("credentials/c.txt"),
    ]);
    c.run(&["mv", &c.url("credentials/c.txt"), &c.url("old/c.txt")]);
    assert_eq!(c.run(&["cat", &c.url("old/c.txt")]), "second");
    c.run(&["rm", &c.url("old/c.txt")]);
    assert_eq!(stored_paths(&c.bucket_dir()).len(), 2);

    // A name too long for R2 is refused before anything is written.
    let long = format!("d/{}", "x".repeat(700));
    let err = c.fail(&mut c.cmd(), &["put", &b, &c.url(&long)]);
    assert!(err.contains("key limit"), "{err}");

    // The descriptor: written from the keyring, shown, hidden from ls.
    let init = c.run(&["bucket", "init", &c.url("")]);
    assert!(init.contains("r2seal-descriptor/v1"), "{init}");
    let show = c.run(&["bucket", "show", &c.url("")]);
    assert!(show.contains("names:          encrypted"), "{show}");
    assert!(show.contains("authenticated:  yes"), "{show}");
    assert!(show.contains("matches"), "{show}");
    assert_eq!(c.run(&["ls", &c.url("")]).lines().count(), 2);
    let err = c.fail(&mut c.cmd(), &["bucket", "init", &c.url("")]);
    assert!(
        err.contains("exists already") && err.contains("bucket init --replace"),
        "{err}"
    );
    c.run(&["put", &b, &c.url("credentials/d.txt")]);

    // A writer with explicit recipients and no name key is refused: nothing written.
    let key_file = c.file("agent.key", "");
    let secret = c.run(&["key", "export-secret", "agent"]);
    std::fs::write(&key_file, secret).unwrap();
    let before = stored_paths(&c.bucket_dir());
    let err = c.fail(
        &mut c.bare(),
        &["put", "-i", &key_file, &b, &c.url("plain.txt")],
    );
    assert!(
        err.contains("refusing to write") && err.contains("no name key"),
        "{err}"
    );
    assert_eq!(stored_paths(&c.bucket_dir()), before);
    // A keyring that stopped encrypting names is refused as well, and `bucket show`
    // says why.
    c.run(&["key", "names", "--off"]);
    let err = c.fail(&mut c.cmd(), &["put", &b, &c.url("plain.txt")]);
    assert!(err.contains("this writer has no name key"), "{err}");
    // It exits 1 then, after the report, so it serves as a check.
    let show = c
        .cmd()
        .args(["bucket", "show", &c.url("")])
        .assert()
        .code(1);
    let stdout = String::from_utf8_lossy(&show.get_output().stdout).into_owned();
    assert!(stdout.contains("DIFFERS (writes are refused)"), "{stdout}");
    let refused = format!(
        "r2seal: {}.r2seal/descriptor: this keyring differs from the descriptor: its writes are refused\n",
        c.url("")
    );
    assert_eq!(String::from_utf8_lossy(&show.get_output().stderr), refused);
    let show = c
        .cmd()
        .args(["bucket", "show", "--json", &c.url("")])
        .assert()
        .code(1);
    assert_eq!(String::from_utf8_lossy(&show.get_output().stderr), refused);
    let v: serde_json::Value = serde_json::from_slice(&show.get_output().stdout).unwrap();
    assert_eq!(v["matches_keyring"], false, "{v}");
    assert!(v["authenticated_by"].is_array(), "{v}");
    let help = c.run(&["bucket", "show", "--help"]);
    assert!(help.contains("1 when it differs"), "{help}");
    assert_eq!(stored_paths(&c.bucket_dir()), before);
    // With R2SEAL_NAMES_KEY (as a Worker gets it) the names decrypt again.
    let secret = std::fs::read_to_string(&key_file).unwrap();
    let out = c
        .cmd()
        .env("R2SEAL_NAMES_KEY", secret.trim())
        .args(["cat", &c.url("credentials/d.txt")])
        .assert()
        .success();
    assert_eq!(out.get_output().stdout, b"second");
}

/// Regression: `bucket init` on a fresh file:// directory said "no such bucket".
#[test]
fn bucket_init_works_on_a_new_bucket() {
    let c = Ctx::new();
    c.run(&["key", "add", "agent", "--sym"]);
    c.run(&["bucket", "init", &c.url("")]);
    assert!(c.bucket_dir().join(".r2seal/descriptor").is_file());
    assert!(c
        .run(&["bucket", "show", &c.url("")])
        .contains("names:          plaintext"));
}

#[test]
fn undecryptable_leftovers_are_reported_by_ls() {
    let c = Ctx::new();
    c.run(&["key", "add", "agent", "--sym"]);
    let b = c.file("b.txt", "x");
    c.run(&["put", &b, &c.url("plain/b.txt")]); // before names were switched on
    c.run(&["key", "names", "agent"]);
    c.run(&["put", &b, &c.url("named/b.txt")]);
    let out = c.cmd().args(["ls", "-r", &c.url("")]).assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert_eq!(stdout.trim(), "named/b.txt");
    assert!(
        stderr.contains("plain/b.txt") && stderr.contains("does not decrypt"),
        "{stderr}"
    );
    let err = c.fail(&mut c.cmd(), &["key", "names", "ghost"]);
    assert!(err.contains("ghost"), "{err}");
}

/// Review finding #1: objects sealed before names were switched on sit under their
/// plaintext names. `migrate --encrypt-names` moves them to their encrypted names (the
/// small one after its GET, the large one after a HEAD), a rerun does nothing, and
/// `migrate --reverse` brings back every object, sealed under a plaintext name or not.
#[test]
fn encrypt_names_moves_sealed_objects_and_reverse_takes_them_back() {
    let c = Ctx::new();
    c.run(&["key", "add", "agent", "--sym"]);
    let small = c.file("one.txt", "one\n");
    let large_body = "0123456789abcdef".repeat(128 * 1024); // 2 MiB: a HEAD first
    let large = c.file("large.bin", &large_body);
    c.run(&["put", &small, &c.url("x/sealed.txt")]);
    c.run(&["put", &large, &c.url("x/large.bin")]);
    c.run(&["put", &small, &c.url("y/late.txt")]);
    std::fs::write(c.bucket_dir().join("x/plain.txt"), "plain\n").unwrap();
    c.run(&["key", "names", "agent"]);

    let migrate = ["migrate", "--encrypt-names", "--verify", "--json"];
    let mut args = migrate.to_vec();
    let x = c.url("x/");
    args.push(&x);
    let v: serde_json::Value = serde_json::from_str(&c.run(&args)).unwrap();
    assert_eq!(
        (v["done"].as_u64(), v["failures"].as_u64()),
        (Some(3), Some(0)),
        "{v}"
    );
    assert_eq!(
        v["done_by_kind"]["already sealed, moved to the encrypted name"], 2,
        "{v}"
    );
    let stored = stored_paths(&c.bucket_dir());
    assert_eq!(stored.len(), 4, "{stored:?}");
    let plain_named: Vec<&String> = stored.iter().filter(|p| p.starts_with("x/")).collect();
    assert!(plain_named.is_empty(), "moved: {stored:?}");
    let ls = c.run(&["ls", "-r", &c.url("x/")]);
    let mut names: Vec<&str> = ls.lines().collect();
    names.sort();
    assert_eq!(names, ["x/large.bin", "x/plain.txt", "x/sealed.txt"]);
    assert_eq!(c.run(&["cat", &c.url("x/sealed.txt")]), "one\n");
    assert!(c.run(&["cat", &c.url("x/large.bin")]) == large_body);
    assert_eq!(c.run(&["cat", &c.url("x/plain.txt")]), "plain\n");

    // A rerun (over the whole bucket, whose walk lists the encrypted names) moves only
    // y/late.txt; the one after that does nothing.
    let root = c.url("");
    let mut args = migrate.to_vec();
    args.push(&root);
    let v: serde_json::Value = serde_json::from_str(&c.run(&args)).unwrap();
    assert_eq!(
        (v["done"].as_u64(), v["skipped"].as_u64()),
        (Some(1), Some(3)),
        "{v}"
    );
    let summary = c.run(&["migrate", "--encrypt-names", &root]);
    assert!(
        summary.contains("0 sealed (0 B), 4 skipped (4 already sealed)"),
        "{summary}"
    );
    assert_eq!(stored_paths(&c.bucket_dir()).len(), 4);

    // Back to plaintext: y/late.txt is sealed again under its plaintext name first (as
    // a bucket sealed before names were switched on holds it).
    c.run(&["rm", &c.url("y/late.txt")]);
    c.run(&["key", "names", "--off"]);
    c.run(&["put", &small, &c.url("y/late.txt")]);
    c.run(&["key", "names", "agent"]);
    let v: serde_json::Value =
        serde_json::from_str(&c.run(&["migrate", "--reverse", "--verify", "--json", &root]))
            .unwrap();
    assert_eq!(
        (v["done"].as_u64(), v["failures"].as_u64()),
        (Some(4), Some(0)),
        "{v}"
    );
    let mut stored = stored_paths(&c.bucket_dir());
    stored.sort();
    assert_eq!(
        stored,
        ["x/large.bin", "x/plain.txt", "x/sealed.txt", "y/late.txt"]
    );
    let read = |p: &str| std::fs::read_to_string(c.bucket_dir().join(p)).unwrap();
    assert_eq!(read("x/sealed.txt"), "one\n");
    assert_eq!(read("y/late.txt"), "one\n");
    assert_eq!(read("x/plain.txt"), "plain\n");
    assert!(read("x/large.bin") == large_body);
}
