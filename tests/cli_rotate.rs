//! `r2seal rotate`, `export` and `import` as a user runs them, on `file://` buckets (the
//! library tests in tests/rotate.rs cover Garage and moto): the README walkthrough (add a
//! key, retire one, revoke one), keyring statuses, export/import round trips, and bad input.
#![cfg(feature = "cli")]

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

struct Ctx {
    dir: TempDir,
}

impl Ctx {
    fn new() -> Ctx {
        let ctx = Ctx {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(ctx.path("bucket")).unwrap();
        fs::create_dir_all(ctx.path("src/sub")).unwrap();
        for (name, body) in [
            ("src/a.json", &b"{\"token\":\"secret-a\"}"[..]),
            ("src/sub/b.jsonl", &b"{\"role\":\"user\"}\n"[..]),
            ("src/sub/c.bin", &vec![7u8; 200_000][..]),
        ] {
            fs::write(ctx.path(name), body).unwrap();
        }
        ctx
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn bucket(&self, key: &str) -> String {
        format!("file://{}/{key}", self.path("bucket").display())
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("r2seal").unwrap();
        cmd.current_dir(self.dir.path())
            .env("R2SEAL_KEYRING", self.path("ring.toml"))
            .env_remove("R2SEAL_PASSPHRASE")
            .env_remove("R2SEAL_NAMES_KEY");
        cmd
    }

    fn run(&self, args: &[&str]) -> (String, String) {
        let out = self.cmd().args(args).assert().success();
        let o = out.get_output();
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn fail(&self, args: &[&str], code: i32) -> String {
        let out = self.cmd().args(args).assert().failure().code(code);
        String::from_utf8_lossy(&out.get_output().stderr).into_owned()
    }

    fn secret(&self, name: &str) -> PathBuf {
        let (out, _) = self.run(&["key", "export-secret", name]);
        let path = self.path(&format!("{name}.key"));
        fs::write(&path, out).unwrap();
        path
    }

    fn key_status(&self, name: &str) -> String {
        let (out, _) = self.run(&["key", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .map(|k| k["status"].as_str().unwrap().to_string())
            .unwrap()
    }

    /// `cat` the object with only the identity in `key_file`.
    fn cat_with(&self, key_file: &Path, key: &str) -> Result<Vec<u8>, String> {
        let out = self
            .cmd()
            .env_remove("R2SEAL_KEYRING")
            .args(["cat", "-i", key_file.to_str().unwrap(), &self.bucket(key)])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

#[test]
fn walkthrough_add_retire_revoke() {
    let c = Ctx::new();
    c.run(&["key", "add", "agent", "--sym"]);
    c.run(&["key", "add", "laptop", "--age"]);
    c.run(&["key", "add", "spare", "--age"]);
    c.run(&["key", "default", "agent"]);
    let src = c.path("src");
    c.run(&["put", "--recursive", src.to_str().unwrap(), &c.bucket("")]);
    let (agent, laptop, spare) = (c.secret("agent"), c.secret("laptop"), c.secret("spare"));
    assert!(c.cat_with(&laptop, "sub/b.jsonl").is_err());

    // Add a key through the policy; dry run first, then for real, then a no-op rerun.
    c.run(&["key", "default", "agent", "laptop", "spare"]);
    let (out, err) = c.run(&["rotate", "--dry-run", &c.bucket("")]);
    assert!(err.contains("target set = the keyring's policy"), "{err}");
    assert!(out.contains("3 would be rotated"), "{out}");
    assert!(
        c.cat_with(&laptop, "sub/b.jsonl").is_err(),
        "dry run wrote nothing"
    );
    let (out, _) = c.run(&["rotate", &c.bucket("")]);
    assert!(
        out.contains("3 rotated (3 rewrapped, 0 re-keyed), body bytes through this client (0 B)"),
        "{out}"
    );
    assert_eq!(
        c.cat_with(&laptop, "sub/b.jsonl").unwrap(),
        b"{\"role\":\"user\"}\n"
    );
    let (out, _) = c.run(&["rotate", &c.bucket("")]);
    assert!(
        out.contains("0 rewrapped, 0 re-keyed") && out.contains("3 skipped"),
        "{out}"
    );

    // Retire: out of the defaults, removed from every object, then retired.
    c.run(&["key", "default", "agent", "laptop"]);
    let (out, err) = c.run(&["rotate", "--remove", "spare", &c.bucket("")]);
    assert!(out.contains("3 rewrapped"), "{out}");
    assert!(err.contains("spare") && err.contains("retired"), "{err}");
    assert_eq!(c.key_status("spare"), "retired");
    assert!(c.cat_with(&spare, "a.json").is_err());

    // Revoke: removing a revoked key re-keys; the key stays revoked.
    c.run(&["key", "revoke", "agent"]);
    c.run(&["key", "default", "laptop"]);
    let (out, err) = c.run(&["rotate", "--remove", "agent", &c.bucket("")]);
    assert!(
        err.contains("re-key objects whose file key was ever wrapped to a revoked key"),
        "{err}"
    );
    assert!(out.contains("0 rewrapped, 3 re-keyed"), "{out}");
    assert_eq!(c.key_status("agent"), "revoked");
    assert!(c.cat_with(&agent, "a.json").is_err());
    assert_eq!(
        c.cat_with(&laptop, "a.json").unwrap(),
        b"{\"token\":\"secret-a\"}"
    );
    let (out, _) = c.run(&["rotate", "--remove", "agent", &c.bucket("")]);
    assert!(out.contains("3 skipped"), "rerun is a no-op: {out}");

    // --rekey: everything keyed to its set already, so nothing to do.
    let (out, _) = c.run(&["rotate", "--rekey", &c.bucket("")]);
    assert!(out.contains("3 skipped"), "{out}");
}

/// Review finding #3: `--rekey` leaves objects already keyed to their set alone;
/// `--rekey-all` gives every object a fresh file key, and `--rekey-before` with the start
/// time an interrupted run printed finishes it without re-keying what it did.
#[test]
fn rekey_all_rekeys_everything_and_resumes_from_its_start_time() {
    let c = Ctx::new();
    c.run(&["key", "add", "agent", "--sym"]);
    c.run(&["key", "default", "agent"]);
    let src = c.path("src");
    c.run(&["put", "--recursive", src.to_str().unwrap(), &c.bucket("")]);
    let stored = |rel: &str| fs::read(c.path("bucket").join(rel)).unwrap();
    let rels = ["a.json", "sub/b.jsonl", "sub/c.bin"];
    let before: Vec<Vec<u8>> = rels.iter().map(|r| stored(r)).collect();
    let (out, _) = c.run(&["rotate", "--rekey", &c.bucket("")]);
    assert!(
        out.contains("0 re-keyed") && out.contains("3 skipped"),
        "{out}"
    );

    // The start time, from a dry run's rule; then a run "interrupted" after sub/.
    let (_, err) = c.run(&["rotate", "--rekey-all", "--dry-run", &c.bucket("")]);
    let cutoff = err
        .split("--rekey-before ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("the rule names the start time: {err}"))
        .to_string();
    let (out, _) = c.run(&["rotate", "--rekey-before", &cutoff, &c.bucket("sub/")]);
    assert!(out.contains("0 rewrapped, 2 re-keyed"), "{out}");
    let (out, _) = c.run(&["rotate", "--rekey-before", &cutoff, &c.bucket("")]);
    assert!(
        out.contains("0 rewrapped, 1 re-keyed") && out.contains("2 skipped"),
        "only a.json is left: {out}"
    );
    for (rel, old) in rels.iter().zip(&before) {
        assert!(stored(rel) != *old, "{rel}: re-encrypted");
    }
    let key = c.secret("agent");
    assert_eq!(
        c.cat_with(&key, "a.json").unwrap(),
        b"{\"token\":\"secret-a\"}"
    );

    // A fresh --rekey-all starts over.
    let again: Vec<Vec<u8>> = rels.iter().map(|r| stored(r)).collect();
    let (out, err) = c.run(&["rotate", "--rekey-all", &c.bucket("")]);
    assert!(
        err.contains("re-key every object last written before"),
        "{err}"
    );
    assert!(out.contains("0 rewrapped, 3 re-keyed"), "{out}");
    for (rel, old) in rels.iter().zip(&again) {
        assert!(stored(rel) != *old, "{rel}: re-encrypted again");
    }
    assert_eq!(c.cat_with(&key, "sub/c.bin").unwrap(), vec![7u8; 200_000]);
    let e = c.fail(&["rotate", "--rekey-before", "yesterday", &c.bucket("")], 1);
    assert!(e.contains("RFC 3339"), "{e}");
}

#[test]
fn removing_a_revoked_key_with_no_rekey_warns_and_prefix_runs_keep_the_keyring() {
    let c = Ctx::new();
    c.run(&["key", "add", "a", "--sym"]);
    c.run(&["key", "add", "b", "--sym"]);
    c.run(&["key", "default", "a", "b"]);
    let src = c.path("src");
    c.run(&["put", "--recursive", src.to_str().unwrap(), &c.bucket("")]);
    c.run(&["key", "revoke", "b"]);
    let (out, err) = c.run(&["rotate", "--no-rekey", "--remove", "b", &c.bucket("sub/")]);
    assert!(err.contains("warning: removing revoked key"), "{err}");
    assert!(err.contains("keyring unchanged"), "{err}");
    assert!(out.contains("2 rewrapped, 0 re-keyed"), "{out}");
    assert_eq!(c.key_status("b"), "revoked");
    // The prefix outside sub/ was not touched: a.json still has b.
    let b = c.secret("b");
    assert!(c.cat_with(&b, "sub/b.jsonl").is_err());
}

#[test]
fn export_import_round_trip() {
    let c = Ctx::new();
    c.run(&["key", "add", "agent", "--sym"]);
    let src = c.path("src");
    c.run(&[
        "put",
        "--recursive",
        src.to_str().unwrap(),
        &c.bucket("state/"),
    ]);
    let out_dir = c.path("backup");
    let (out, _) = c.run(&["export", &c.bucket("state/"), out_dir.to_str().unwrap()]);
    assert!(out.contains("3 exported"), "{out}");
    for rel in ["a.json", "sub/b.jsonl", "sub/c.bin"] {
        assert_eq!(
            fs::read(out_dir.join(rel)).unwrap(),
            fs::read(src.join(rel)).unwrap(),
            "{rel}"
        );
    }
    let (out, _) = c.run(&["export", &c.bucket("state/"), out_dir.to_str().unwrap()]);
    assert!(
        out.contains("0 exported") && out.contains("3 skipped"),
        "{out}"
    );

    let (out, _) = c.run(&["import", out_dir.to_str().unwrap(), &c.bucket("restored/")]);
    assert!(out.contains("3 imported"), "{out}");
    let (out, _) = c.run(&["import", out_dir.to_str().unwrap(), &c.bucket("restored/")]);
    assert!(out.contains("3 skipped"), "{out}");
    let (out, _) = c.run(&["cat", &c.bucket("restored/sub/b.jsonl")]);
    assert_eq!(out, "{\"role\":\"user\"}\n");
    // Nothing but ciphertext in the bucket.
    let raw = fs::read(c.path("bucket/restored/a.json")).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("secret-a"));
}

#[test]
fn bad_input_is_one_clear_line() {
    let c = Ctx::new();
    // Usage errors: exit 2.
    c.fail(&["rotate", "--rekey", "--no-rekey", &c.bucket("")], 2);
    c.fail(&["rotate"], 2);
    c.run(&["key", "add", "agent", "--sym"]);
    let src = c.path("src");
    c.run(&["put", "--recursive", src.to_str().unwrap(), &c.bucket("")]);
    // No keys at all.
    let e = c
        .cmd()
        .env_remove("R2SEAL_KEYRING")
        .args(["rotate", &c.bucket("")])
        .assert()
        .failure()
        .code(1);
    let e = String::from_utf8_lossy(&e.get_output().stderr).into_owned();
    assert!(e.contains("rotate needs the recipient set"), "{e}");
    let e = c.fail(&["rotate", "--remove", "nonsense!", &c.bucket("")], 1);
    assert!(e.contains("--remove \"nonsense!\""), "{e}");
    let e = c.fail(&["rotate", "--add", "age1nope", &c.bucket("")], 1);
    assert!(e.contains("--add"), "{e}");
    let e = c.fail(
        &[
            "rotate",
            "--add",
            "agent",
            "--remove",
            "agent",
            &c.bucket(""),
        ],
        1,
    );
    assert!(e.contains("both added and removed"), "{e}");
    let e = c.fail(&["rotate", "file:///nonexistent-r2seal-bucket/"], 1);
    assert!(e.contains("no such bucket"), "{e}");
    let e = c.fail(
        &["import", c.path("missing").to_str().unwrap(), &c.bucket("")],
        1,
    );
    assert!(e.contains("not a directory"), "{e}");
    fs::write(c.path("a-file"), b"x").unwrap();
    let e = c.fail(
        &["export", &c.bucket(""), c.path("a-file").to_str().unwrap()],
        1,
    );
    assert!(
        e.starts_with("r2seal: ") && e.trim_end().lines().count() == 1,
        "{e}"
    );
    assert!(!e.contains("R2SEAL-SYM-KEY"), "no secrets in errors: {e}");
}

/// Review finding #8: files whose objects were deleted are reported, and `--delete`
/// removes them, and only them (not a file the export did not write, not one changed
/// since, not the files of another source's export).
#[test]
fn export_reports_and_deletes_files_whose_objects_are_gone() {
    let c = Ctx::new();
    c.run(&["key", "add", "agent", "--sym"]);
    let src = c.path("src");
    c.run(&[
        "put",
        "--recursive",
        src.to_str().unwrap(),
        &c.bucket("state/"),
    ]);
    let out_dir = c.path("backup");
    let dir = out_dir.to_str().unwrap();
    c.run(&["export", &c.bucket("state/"), dir]);
    fs::write(out_dir.join("mine.txt"), "not from the bucket").unwrap();
    c.run(&["rm", &c.bucket("state/a.json")]);
    c.run(&["rm", &c.bucket("state/sub/b.jsonl")]);
    fs::write(
        out_dir.join("sub/b.jsonl"),
        "edited locally, longer than before",
    )
    .unwrap();

    let (out, _) = c.run(&["export", &c.bucket("state/"), dir]);
    assert!(
        out.contains(
            "2 local files no longer in the bucket: a.json, sub/b.jsonl (--delete removes them)"
        ),
        "{out}"
    );
    assert!(out_dir.join("a.json").is_file(), "kept without --delete");
    let (out, _) = c.run(&["export", "--delete", "--dry-run", &c.bucket("state/"), dir]);
    assert!(
        out.contains("would be deleted: a.json, sub/b.jsonl"),
        "{out}"
    );
    assert!(
        out_dir.join("a.json").is_file(),
        "a dry run deletes nothing"
    );

    let (out, _) = c.run(&["export", "--delete", &c.bucket("state/"), dir]);
    assert!(
        out.contains("Deleted 1 local file no longer in the bucket: a.json")
            && out.contains("Kept 1 changed since exported: sub/b.jsonl"),
        "{out}"
    );
    assert!(!out_dir.join("a.json").exists());
    assert!(out_dir.join("sub/b.jsonl").is_file());
    assert!(out_dir.join("mine.txt").is_file(), "never another file");
    assert_eq!(
        fs::read(out_dir.join("sub/c.bin")).unwrap(),
        vec![7u8; 200_000]
    );
}

/// Review finding #11, job summaries: a dry run gives no rate; failures a rerun cannot
/// fix do not ask for one; `verify -q` counts its problems once; with `--json` no hint
/// to the report; `cleanup --older-than 0` says no more than it means.
#[test]
fn job_summaries_say_what_a_rerun_can_do() {
    let c = Ctx::new();
    c.run(&["key", "add", "agent", "--sym"]);
    let src = c.path("src");
    c.run(&["put", "--recursive", src.to_str().unwrap(), &c.bucket("")]);
    let (out, _) = c.run(&["rotate", "--rekey-all", "--dry-run", &c.bucket("")]);
    assert!(
        out.contains("3 would be rotated") && !out.contains("/s)"),
        "{out}"
    );

    // Objects sealed to a key that is not held: permanent.
    let other = c.path("other.txt");
    c.cmd()
        .args(["keygen", "-o", other.to_str().unwrap()])
        .assert()
        .success();
    let out = c
        .cmd()
        .env_remove("R2SEAL_KEYRING")
        .args([
            "export",
            "-i",
            other.to_str().unwrap(),
            &c.bucket(""),
            "out",
        ])
        .assert()
        .failure()
        .code(1);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.get_output().stdout).into_owned(),
        String::from_utf8_lossy(&out.get_output().stderr).into_owned(),
    );
    assert!(stdout.contains("3 failures will not go away"), "{stdout}");
    assert!(
        !stdout.contains("rerun") && !stderr.contains("rerun"),
        "{stdout}{stderr}"
    );
    assert!(
        stderr.contains("3 failures that running it again will not fix"),
        "{stderr}"
    );

    // More problems than are printed one per line; plaintext objects are problems.
    for i in 0..22 {
        fs::write(c.path("bucket").join(format!("plain{i:02}")), "x").unwrap();
    }
    let out = c
        .cmd()
        .args(["verify", "--json", &c.bucket("")])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(!stderr.contains("more"), "{stderr}");
    let out = c.cmd().args(["verify", &c.bucket("")]).assert().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("… more: --report FILE lists them all"),
        "{stderr}"
    );
    let out = c
        .cmd()
        .args(["verify", "-q", &c.bucket("")])
        .assert()
        .failure();
    let o = out.get_output();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(all.matches("with problems").count(), 1, "{all}");

    let out = c
        .cmd()
        .args(["cleanup", "--older-than", "0", &c.bucket("")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("older than 0"), "{stderr}");
}
