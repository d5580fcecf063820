//! The `r2seal` binary as a user meets it: exit codes, one-line errors, files left
//! behind (or not), interop with Debian's `age`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::Command;
use predicates::prelude::*;
use tempfile::TempDir;

fn r2seal(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("r2seal").unwrap();
    cmd.current_dir(dir)
        .env_remove("R2SEAL_KEYRING")
        .env_remove("R2SEAL_PASSPHRASE");
    cmd
}

/// A temp dir with an identity `key.txt`; returns (dir, recipient).
fn setup() -> (TempDir, String) {
    let dir = TempDir::new().unwrap();
    let out = r2seal(dir.path())
        .args(["keygen", "-o", "key.txt"])
        .assert()
        .success();
    let recipient = String::from_utf8(out.get_output().stdout.clone())
        .unwrap()
        .trim()
        .to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (dir, recipient)
}

/// A temp dir with an identity `key.age` protected by `passphrase`; returns (dir, recipient).
fn protected_setup(passphrase: &str) -> (TempDir, String) {
    let dir = TempDir::new().unwrap();
    let out = r2seal(dir.path())
        .env("R2SEAL_PASSPHRASE", passphrase)
        .args(["keygen", "--passphrase", "-o", "key.age"])
        .assert()
        .success();
    let recipient = String::from_utf8(out.get_output().stdout.clone())
        .unwrap()
        .trim()
        .to_owned();
    (dir, recipient)
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
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

fn seal_file(dir: &Path, recipient: &str, plain: &[u8], name: Option<&str>) -> PathBuf {
    fs::write(dir.join("plain.bin"), plain).unwrap();
    let mut cmd = r2seal(dir);
    cmd.args(["seal", "-r", recipient, "-o", "sealed.age", "plain.bin"]);
    if let Some(n) = name {
        cmd.args(["--name", n]);
    }
    cmd.assert().success();
    dir.join("sealed.age")
}

#[test]
fn seal_and_open_round_trip_through_files_and_pipes() {
    let (dir, recipient) = setup();
    let plain = data(200_000);
    seal_file(dir.path(), &recipient, &plain, None);
    r2seal(dir.path())
        .args(["open", "-i", "key.txt", "-o", "out.bin", "sealed.age"])
        .assert()
        .success();
    assert_eq!(fs::read(dir.path().join("out.bin")).unwrap(), plain);
    // stdin → stdout both ways.
    let sealed = r2seal(dir.path())
        .args(["seal", "-r", &recipient])
        .write_stdin(plain.clone())
        .assert()
        .success();
    let sealed = sealed.get_output().stdout.clone();
    let opened = r2seal(dir.path())
        .args(["open", "-i", "key.txt"])
        .write_stdin(sealed)
        .assert()
        .success();
    assert_eq!(opened.get_output().stdout, plain);
}

#[test]
fn empty_input_round_trips() {
    let (dir, recipient) = setup();
    seal_file(dir.path(), &recipient, b"", None);
    r2seal(dir.path())
        .args(["open", "-i", "key.txt", "sealed.age"])
        .assert()
        .success()
        .stdout("");
}

#[test]
fn ranges_match_http_semantics() {
    let (dir, recipient) = setup();
    let plain = data(300_000);
    seal_file(dir.path(), &recipient, &plain, Some("k"));
    let cases: [(&str, &[u8]); 4] = [
        ("0-0", &plain[0..1]),
        ("65530-65545", &plain[65530..65546]),
        ("299990-", &plain[299990..]),
        ("-7", &plain[300_000 - 7..]),
    ];
    for (range, want) in cases {
        // From a file (random access) and from stdin (streamed) alike.
        let out = r2seal(dir.path())
            .args([
                "open",
                "-i",
                "key.txt",
                "--name",
                "k",
                "--range",
                range,
                "sealed.age",
            ])
            .assert()
            .success();
        assert_eq!(out.get_output().stdout, want, "file range {range}");
        if !range.starts_with('-') {
            let sealed = fs::read(dir.path().join("sealed.age")).unwrap();
            let out = r2seal(dir.path())
                .args(["open", "-i", "key.txt", "--name", "k", "--range", range])
                .write_stdin(sealed)
                .assert()
                .success();
            assert_eq!(out.get_output().stdout, want, "stdin range {range}");
        }
    }
    let out = r2seal(dir.path())
        .args([
            "open",
            "-i",
            "key.txt",
            "--name",
            "k",
            "--range",
            "300000-",
            "sealed.age",
        ])
        .assert()
        .failure();
    assert!(one_line_error(&out.get_output().stderr).contains("not satisfiable"));
    r2seal(dir.path())
        .args(["open", "-i", "key.txt", "--range", "9-3", "sealed.age"])
        .assert()
        .failure();
}

#[test]
fn wrong_identity_is_a_clear_error_and_leaves_no_file() {
    let (dir, recipient) = setup();
    seal_file(dir.path(), &recipient, b"secret", None);
    r2seal(dir.path())
        .args(["keygen", "-o", "other.txt"])
        .assert()
        .success();
    let out = r2seal(dir.path())
        .args(["open", "-i", "other.txt", "-o", "out.bin", "sealed.age"])
        .assert()
        .failure()
        .code(1);
    assert!(one_line_error(&out.get_output().stderr).contains("no identity matches"));
    assert_no_output_left(dir.path());
}

/// `open -o` must never leave a partial or unauthenticated plaintext file.
fn assert_no_output_left(dir: &Path) {
    assert!(!dir.join("out.bin").exists(), "output file left behind");
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains("partial"),
            "temporary file left behind: {name}"
        );
    }
}

#[test]
fn tampered_and_truncated_inputs_fail_without_output() {
    let (dir, recipient) = setup();
    let plain = data(3 * 65536 + 10);
    let sealed_path = seal_file(dir.path(), &recipient, &plain, None);
    let sealed = fs::read(&sealed_path).unwrap();
    let header_len = sealed.windows(4).position(|w| w == b"\n---").unwrap() + 48;
    let mut flipped = sealed.clone();
    flipped[header_len + 16 + 100_000] ^= 1; // inside chunk 1
    let truncated = sealed[..header_len + 16 + 2 * 65552].to_vec(); // at a chunk boundary
    let mut header_tampered = sealed.clone();
    header_tampered[30] ^= 1; // inside the X25519 stanza
    for (what, bytes) in [
        ("flipped", flipped),
        ("truncated", truncated),
        ("header", header_tampered),
    ] {
        fs::write(dir.path().join("bad.age"), &bytes).unwrap();
        let out = r2seal(dir.path())
            .args(["open", "-i", "key.txt", "-o", "out.bin", "bad.age"])
            .assert()
            .failure();
        let err = one_line_error(&out.get_output().stderr);
        assert!(
            err.contains("authentication failed")
                || err.contains("no identity matches")
                || err.contains("malformed"),
            "{what}: {err}"
        );
        assert_no_output_left(dir.path());
    }
}

/// Seal and open run on worker threads in batches of 8 chunks (512 KiB): lengths
/// around batch ends round-trip, and a stream cut or extended at a batch end fails
/// with nothing of the bad batch released.
#[test]
fn batch_boundaries_round_trip_and_cuts_there_fail() {
    const BATCH: usize = 8 * 65536;
    let (dir, recipient) = setup();
    for len in [
        BATCH - 1,
        BATCH,
        BATCH + 1,
        2 * BATCH,
        3 * BATCH + 65536 + 7,
    ] {
        let plain = data(len);
        seal_file(dir.path(), &recipient, &plain, None);
        let opened = r2seal(dir.path())
            .args(["open", "-i", "key.txt", "sealed.age"])
            .assert()
            .success();
        assert_eq!(opened.get_output().stdout, plain, "file, len {len}");
        let sealed = r2seal(dir.path())
            .args(["seal", "-r", &recipient])
            .write_stdin(plain.clone())
            .assert()
            .success();
        let opened = r2seal(dir.path())
            .args(["open", "-i", "key.txt"])
            .write_stdin(sealed.get_output().stdout.clone())
            .assert()
            .success();
        assert_eq!(opened.get_output().stdout, plain, "pipe, len {len}");
    }
    let plain = data(2 * BATCH);
    let sealed = fs::read(seal_file(dir.path(), &recipient, &plain, None)).unwrap();
    let header_len = sealed.windows(4).position(|w| w == b"\n---").unwrap() + 48;
    let batch_end = header_len + 16 + 8 * 65552;
    let mut extended = sealed.clone();
    extended.extend_from_slice(&sealed[batch_end..]);
    let mut flipped = sealed.clone();
    flipped[batch_end + 5] ^= 1; // first chunk of the second batch
    for (what, bytes) in [
        ("cut after one batch", sealed[..batch_end].to_vec()),
        ("extended by a batch", extended),
        ("flipped in batch two", flipped),
    ] {
        let out = r2seal(dir.path())
            .args(["open", "-i", "key.txt"])
            .write_stdin(bytes)
            .assert()
            .failure();
        let released = &out.get_output().stdout;
        assert!(
            released.len() <= BATCH,
            "{what}: released {}",
            released.len()
        );
        assert_eq!(&released[..], &plain[..released.len()], "{what}");
        one_line_error(&out.get_output().stderr);
    }
}

#[test]
fn an_existing_output_survives_a_failed_open() {
    let (dir, recipient) = setup();
    seal_file(dir.path(), &recipient, b"new", None);
    let mut sealed = fs::read(dir.path().join("sealed.age")).unwrap();
    let n = sealed.len();
    sealed[n - 1] ^= 1;
    fs::write(dir.path().join("bad.age"), sealed).unwrap();
    fs::write(dir.path().join("out.bin"), b"precious").unwrap();
    r2seal(dir.path())
        .args(["open", "-i", "key.txt", "-o", "out.bin", "bad.age"])
        .assert()
        .failure();
    assert_eq!(fs::read(dir.path().join("out.bin")).unwrap(), b"precious");
}

#[test]
fn name_binding_from_the_cli() {
    let (dir, recipient) = setup();
    seal_file(dir.path(), &recipient, b"x", Some("sessions/a.jsonl"));
    r2seal(dir.path())
        .args([
            "open",
            "-i",
            "key.txt",
            "--name",
            "sessions/a.jsonl",
            "sealed.age",
        ])
        .assert()
        .success()
        .stdout("x");
    let out = r2seal(dir.path())
        .args([
            "open",
            "-i",
            "key.txt",
            "--name",
            "sessions/b.jsonl",
            "sealed.age",
        ])
        .assert()
        .failure();
    assert!(one_line_error(&out.get_output().stderr).contains("not bound to this name"));
    let out = r2seal(dir.path())
        .args(["open", "-i", "key.txt", "sealed.age"])
        .assert()
        .failure();
    assert!(one_line_error(&out.get_output().stderr).contains("give the name"));
}

#[test]
fn bad_inputs_give_one_line_errors() {
    let (dir, _) = setup();
    fs::write(dir.path().join("plain.txt"), b"just some text\n").unwrap();
    fs::write(
        dir.path().join("v2.age"),
        b"age-encryption.org/v2\n-> X25519 a\nAAAA\n--- AAAA\n",
    )
    .unwrap();
    fs::write(dir.path().join("badkey.txt"), b"AGE-SECRET-KEY-1NOPE\n").unwrap();
    let cases: [(&[&str], &str); 7] = [
        (&["open", "-i", "key.txt", "plain.txt"], "not sealed"),
        (
            &["open", "-i", "key.txt", "v2.age"],
            "unsupported format version",
        ),
        (&["open", "-i", "badkey.txt", "v2.age"], "line 1"),
        (&["open", "-i", "missing.txt", "v2.age"], "missing.txt"),
        (
            &["seal", "-r", "age1notarecipient", "plain.txt"],
            "recipient",
        ),
        (&["seal", "plain.txt"], "no recipients"),
        // The all-zero point: age's own wrap panics on it ("all-zero esk").
        (
            &[
                "seal",
                "-r",
                "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq5cu47z",
                "plain.txt",
            ],
            "small order",
        ),
    ];
    for (args, want) in cases {
        let out = r2seal(dir.path()).args(args).assert().failure().code(1);
        let err = one_line_error(&out.get_output().stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Usage errors come from clap with exit code 2.
    r2seal(dir.path())
        .args(["open", "--range"])
        .assert()
        .failure()
        .code(2);
}

#[test]
fn broken_pipe_exits_zero() {
    let (dir, recipient) = setup();
    let plain = data(8 << 20);
    seal_file(dir.path(), &recipient, &plain, None);
    let bin = assert_cmd::cargo::cargo_bin("r2seal");
    let mut child = StdCommand::new(bin)
        .current_dir(dir.path())
        .args(["open", "-i", "key.txt", "sealed.age"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout); // like `| head -c 10`
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "status {:?}, stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn passphrase_protected_identity() {
    let (dir, recipient) = protected_setup("correct horse battery staple");
    let raw = fs::read(dir.path().join("key.age")).unwrap();
    assert!(raw.starts_with(b"age-encryption.org/v1\n-> r2seal-argon2id "));
    assert!(!String::from_utf8_lossy(&raw).contains("AGE-SECRET-KEY"));
    seal_file(dir.path(), &recipient, b"hello", None);
    r2seal(dir.path())
        .env("R2SEAL_PASSPHRASE", "correct horse battery staple")
        .args(["open", "-i", "key.age", "sealed.age"])
        .assert()
        .success()
        .stdout("hello");
    let out = r2seal(dir.path())
        .env("R2SEAL_PASSPHRASE", "wrong")
        .args(["open", "-i", "key.age", "sealed.age"])
        .assert()
        .failure();
    assert!(one_line_error(&out.get_output().stderr).contains("wrong passphrase"));
    // No terminal and no variable: a clear error, not a hang.
    let out = r2seal(dir.path())
        .args(["open", "-i", "key.age", "sealed.age"])
        .assert()
        .failure();
    assert!(one_line_error(&out.get_output().stderr).contains("R2SEAL_PASSPHRASE"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(dir.path().join("key.age"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn keyring_policies_drive_sealing() {
    let dir = TempDir::new().unwrap();
    let ring = |cmd: &mut Command| {
        cmd.env("R2SEAL_KEYRING", dir.path().join("ring.toml"));
    };
    let run = |args: &[&str]| {
        let mut cmd = r2seal(dir.path());
        ring(&mut cmd);
        cmd.args(args).assert()
    };
    run(&["key", "add", "main", "--sym"])
        .success()
        .stdout(predicate::str::contains("added sym key \"main\""));
    r2seal(dir.path())
        .args(["keygen", "-o", "offline.txt"])
        .assert()
        .success();
    let offline = r2seal(dir.path())
        .args(["recipient", "-i", "offline.txt"])
        .assert()
        .success();
    let offline = String::from_utf8(offline.get_output().stdout.clone())
        .unwrap()
        .trim()
        .to_owned();
    run(&[
        "key",
        "add",
        "recovery",
        "--recipient",
        &offline,
        "--recovery",
    ])
    .success();
    run(&["key", "policy", "archive/", "recovery"]).success();
    run(&["key", "default", "main", "recovery"]).success();
    fs::write(dir.path().join("p.txt"), b"payload").unwrap();
    // Under archive/ only the offline key can open: the keyring itself cannot.
    run(&["seal", "--name", "archive/x", "-o", "a.age", "p.txt"]).success();
    run(&["open", "--name", "archive/x", "a.age"]).failure();
    r2seal(dir.path())
        .args(["open", "-i", "offline.txt", "--name", "archive/x", "a.age"])
        .assert()
        .success()
        .stdout("payload");
    // Elsewhere the defaults apply: the keyring opens it.
    run(&["seal", "--name", "sessions/x", "-o", "s.age", "p.txt"]).success();
    run(&["open", "--name", "sessions/x", "s.age"])
        .success()
        .stdout("payload");
    // A retired key opens but no longer seals.
    run(&["key", "retire", "main"]).success();
    run(&["open", "--name", "sessions/x", "s.age"]).success();
    run(&["seal", "--name", "sessions/y", "p.txt"]).failure();
    // Revoked keys do not open for ordinary reads.
    run(&["key", "revoke", "main"]).success();
    run(&["open", "--name", "sessions/x", "s.age"]).failure();
    let list = run(&["key", "list", "--json"]).success();
    let v: serde_json::Value = serde_json::from_slice(&list.get_output().stdout).unwrap();
    assert_eq!(v["keys"][0]["status"], "revoked");
    assert_eq!(v["policies"][0]["prefix"], "archive/");
}

#[test]
fn export_secret_prints_one_line_for_wrangler() {
    let dir = TempDir::new().unwrap();
    let ring = dir.path().join("ring.toml");
    r2seal(dir.path())
        .env("R2SEAL_KEYRING", &ring)
        .args(["key", "add", "w", "--sym"])
        .assert()
        .success();
    let out = r2seal(dir.path())
        .env("R2SEAL_KEYRING", &ring)
        .args(["key", "export-secret", "w"])
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        text.starts_with("R2SEAL-SYM-KEY-1") && text.ends_with('\n') && text.lines().count() == 1
    );
    // The exported key works as an identity file by itself.
    fs::write(dir.path().join("w.key"), &text).unwrap();
    fs::write(dir.path().join("p.txt"), b"abc").unwrap();
    r2seal(dir.path())
        .args(["seal", "-i", "w.key", "-o", "p.age", "p.txt"])
        .assert()
        .success();
    r2seal(dir.path())
        .env("R2SEAL_KEYRING", &ring)
        .args(["open", "p.age"])
        .assert()
        .success()
        .stdout("abc");
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&ring).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn corrupt_keyring_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    fs::write(
        dir.path().join("ring.toml"),
        b"version = 1\n[[key]\nname = \"x\"\n",
    )
    .unwrap();
    let out = r2seal(dir.path())
        .env("R2SEAL_KEYRING", dir.path().join("ring.toml"))
        .args(["key", "list"])
        .assert()
        .failure();
    assert!(one_line_error(&out.get_output().stderr).contains("not valid TOML"));
}

#[test]
fn inspect_shows_the_header_without_keys() {
    let (dir, recipient) = setup();
    seal_file(dir.path(), &recipient, &data(70_000), Some("n"));
    let out = r2seal(dir.path())
        .args(["inspect", "--json", "sealed.age"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["plaintext_bytes"], 70_000);
    assert_eq!(v["name_bound"], true);
    assert_eq!(v["stanzas"][0]["type"], "X25519");
    assert_eq!(v["fits_r2_metadata"], true);
}

#[test]
fn keygen_never_overwrites() {
    let (dir, _) = setup();
    let before = fs::read(dir.path().join("key.txt")).unwrap();
    let out = r2seal(dir.path())
        .args(["keygen", "-o", "key.txt"])
        .assert()
        .failure();
    assert!(one_line_error(&out.get_output().stderr).contains("already exists"));
    assert_eq!(fs::read(dir.path().join("key.txt")).unwrap(), before);
}

#[test]
fn completions_and_help_work() {
    let dir = TempDir::new().unwrap();
    r2seal(dir.path())
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("r2seal"));
    r2seal(dir.path())
        .args(["open", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--range"));
}

/// Debian's `age` opens what r2seal seals, and r2seal opens what age seals.
#[test]
fn interoperates_with_age_both_ways() {
    if which("age").is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "age must be installed in CI"
        );
        eprintln!("SKIPPED: `age` is not installed (apt-get install age)");
        return;
    }
    let (dir, recipient) = setup();
    let plain = data(150_000);
    seal_file(dir.path(), &recipient, &plain, Some("bound/name"));
    let out = StdCommand::new("age")
        .current_dir(dir.path())
        .args(["-d", "-i", "key.txt", "sealed.age"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, plain);
    let mut child = StdCommand::new("age")
        .current_dir(dir.path())
        .args(["-r", &recipient, "-o", "by-age.age"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&plain).unwrap();
    assert!(child.wait().unwrap().success());
    let out = r2seal(dir.path())
        .args(["open", "-i", "key.txt", "by-age.age"])
        .assert()
        .success();
    assert_eq!(out.get_output().stdout, plain);
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// Regression: `-o /dev/null` once renamed a temporary file over the device node.
#[test]
fn output_to_a_device_writes_through_it() {
    use std::os::unix::fs::FileTypeExt;
    let (dir, recipient) = setup();
    seal_file(dir.path(), &recipient, b"abc", None);
    r2seal(dir.path())
        .args(["open", "-i", "key.txt", "-o", "/dev/null", "sealed.age"])
        .assert()
        .success();
    r2seal(dir.path())
        .args(["seal", "-r", &recipient, "-o", "/dev/null", "plain.bin"])
        .assert()
        .success();
    assert!(
        fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device(),
        "/dev/null was replaced"
    );
}

#[test]
fn output_through_a_symlink_replaces_the_target_not_the_link() {
    let (dir, recipient) = setup();
    seal_file(dir.path(), &recipient, b"fresh", None);
    fs::write(dir.path().join("real.txt"), b"old").unwrap();
    std::os::unix::fs::symlink("real.txt", dir.path().join("link.txt")).unwrap();
    r2seal(dir.path())
        .args(["open", "-i", "key.txt", "-o", "link.txt", "sealed.age"])
        .assert()
        .success();
    assert!(fs::symlink_metadata(dir.path().join("link.txt"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(dir.path().join("real.txt")).unwrap(), b"fresh");
}

/// Regression: a keyring in the environment once widened an explicit `-i`.
#[test]
fn explicit_identity_is_not_widened_by_the_keyring() {
    let dir = TempDir::new().unwrap();
    let ring = dir.path().join("ring.toml");
    r2seal(dir.path())
        .env("R2SEAL_KEYRING", &ring)
        .args(["key", "add", "k", "--sym"])
        .assert()
        .success();
    fs::write(dir.path().join("p.txt"), b"abc").unwrap();
    r2seal(dir.path())
        .env("R2SEAL_KEYRING", &ring)
        .args(["seal", "-o", "p.age", "p.txt"])
        .assert()
        .success();
    r2seal(dir.path())
        .args(["keygen", "-o", "stranger.txt"])
        .assert()
        .success();
    r2seal(dir.path())
        .env("R2SEAL_KEYRING", &ring)
        .args(["open", "-i", "stranger.txt", "p.age"])
        .assert()
        .failure();
}

/// Every temp file r2seal writes starts with `.r2seal-` (`.partial` for `-o`/`get`,
/// `.r2seal-tmp-` for `export`); the paths under `dir` that still do.
fn temps_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let (path, kind) = (entry.path(), entry.file_type().unwrap());
            if kind.is_dir() {
                todo.push(path);
            } else if entry.file_name().to_string_lossy().starts_with(".r2seal-")
                && !entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".r2seal-export")
            {
                found.push(path);
            }
        }
    }
    found
}

/// Waits until `child` has a temp file under `dir` holding some bytes, sends it
/// `signal` (by name, as for `kill -s`), and returns its exit code; fails if the child
/// finished first.
fn signal_once_writing(child: &mut std::process::Child, dir: &Path, signal: &str) -> Option<i32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let writing = temps_under(dir)
            .iter()
            .any(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0));
        if writing {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("finished ({status}) before a temp file was seen; make the input larger");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no temp file appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let sent = StdCommand::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    child.wait().unwrap().code()
}

/// Ctrl-C or SIGTERM during `seal -o`/`open -o` removes the temp file (partial,
/// unauthenticated plaintext for `open`) and exits 128 + the signal's number. Input
/// comes from a pipe kept open, so the command is mid-write when the signal arrives.
#[test]
fn a_signal_removes_partial_output() {
    let (dir, recipient) = setup();
    let plain = data(24 << 20);
    let sealed = fs::read(seal_file(dir.path(), &recipient, &plain, None)).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("r2seal");
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let mut open = StdCommand::new(&bin)
            .current_dir(dir.path())
            .args(["open", "-i", "key.txt", "-o", "out.bin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = open.stdin.take().unwrap();
        // Most of the file, never the end: the opener waits for more.
        stdin.write_all(&sealed[..16 << 20]).unwrap();
        assert_eq!(
            signal_once_writing(&mut open, dir.path(), signal),
            Some(code),
            "open, SIG{signal}"
        );
        drop(stdin);
        assert_no_output_left(dir.path());

        let mut seal = StdCommand::new(&bin)
            .current_dir(dir.path())
            .args(["seal", "-r", &recipient, "-o", "out.age"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = seal.stdin.take().unwrap();
        stdin.write_all(&plain[..8 << 20]).unwrap();
        assert_eq!(
            signal_once_writing(&mut seal, dir.path(), signal),
            Some(code),
            "seal, SIG{signal}"
        );
        drop(stdin);
        assert!(!dir.path().join("out.age").exists());
        assert_eq!(temps_under(dir.path()), Vec::<PathBuf>::new());
    }
}

/// The same for `get --recursive` and `export` from a file:// bucket: nothing under the
/// destination but finished files.
#[test]
fn a_signal_removes_partial_downloads_and_exports() {
    let (dir, recipient) = setup();
    fs::create_dir_all(dir.path().join("bucket")).unwrap();
    fs::create_dir_all(dir.path().join("src")).unwrap();
    for i in 0..6 {
        fs::write(dir.path().join(format!("src/f{i}.bin")), data(40 << 20)).unwrap();
    }
    let bucket = format!("file://{}/big/", dir.path().join("bucket").display());
    r2seal(dir.path())
        .args(["put", "-r", &recipient, "--recursive", "src", &bucket])
        .assert()
        .success();
    let bin = assert_cmd::cargo::cargo_bin("r2seal");
    for (args, dest) in [
        (["get", "--recursive", "--jobs", "1"], "got"),
        (["export", "--jobs", "1", "-i"], "exported"),
    ] {
        let mut cmd = StdCommand::new(&bin);
        cmd.current_dir(dir.path()).args(args);
        if args[0] == "export" {
            cmd.arg("key.txt");
        } else {
            cmd.args(["-i", "key.txt"]);
        }
        fs::create_dir_all(dir.path().join(dest)).unwrap();
        let mut child = cmd
            .args([bucket.as_str(), dest])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert_eq!(
            signal_once_writing(&mut child, &dir.path().join(dest), "INT"),
            Some(130),
            "{}",
            args[0]
        );
        assert_eq!(
            temps_under(&dir.path().join(dest)),
            Vec::<PathBuf>::new(),
            "{}",
            args[0]
        );
    }
}

/// A closed stdout (`| head -1` that already exited) ends every printing command
/// quietly with exit 0, never a panic. The read end is closed before the command
/// starts, so each of its writes fails.
#[test]
fn printing_to_a_closed_pipe_exits_zero() {
    let (dir, recipient) = setup();
    seal_file(dir.path(), &recipient, b"x", None);
    r2seal(dir.path())
        .args(["key", "add", "k", "--sym", "--keyring", "ring.toml"])
        .assert()
        .success();
    let bin = assert_cmd::cargo::cargo_bin("r2seal");
    for args in [
        &["completions", "bash"][..],
        &["key", "list", "--json", "--keyring", "ring.toml"],
        &["key", "list", "--keyring", "ring.toml"],
        &["inspect", "sealed.age"],
        &["inspect", "--json", "sealed.age"],
        &["recipient", "-i", "key.txt"],
        &["key", "default", "k", "--keyring", "ring.toml"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = StdCommand::new(&bin)
            .current_dir(dir.path())
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).as_ref()
            ),
            (Some(0), ""),
            "{args:?}"
        );
    }
}

/// A secret key given where a recipient goes is refused without being repeated: stderr
/// often ends up in CI logs.
#[test]
fn a_secret_given_as_a_recipient_is_never_echoed() {
    let (dir, _) = setup();
    fs::write(dir.path().join("p.txt"), b"abc").unwrap();
    let key_file = fs::read_to_string(dir.path().join("key.txt")).unwrap();
    let age_secret = key_file
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_owned();
    // Valid, lower-cased, and a symmetric key with a broken checksum.
    let mut sym = String::from("R2SEAL-SYM-KEY-1");
    sym.push_str(&"q".repeat(58));
    for secret in [age_secret.clone(), age_secret.to_lowercase(), sym] {
        for args in [
            vec!["seal", "-r", &secret, "-o", "p.age", "p.txt"],
            vec![
                "key",
                "add",
                "x",
                "--recipient",
                &secret,
                "--keyring",
                "ring.toml",
            ],
        ] {
            let out = r2seal(dir.path()).args(&args).assert().failure().code(1);
            let err = one_line_error(&out.get_output().stderr);
            // The key's data part, whatever the case.
            let body = &secret.to_lowercase()[20..];
            assert!(!err.to_lowercase().contains(body), "{args:?}: {err}");
            assert!(err.contains("recipient"), "{err}");
        }
    }
    assert!(!dir.path().join("p.age").exists());
}

/// Retiring or revoking a key that the defaults or a policy still name warns where, and
/// sealing then names the key and what names it; doing it twice says "already".
#[test]
fn retiring_a_named_key_warns_where_it_is_still_named() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.path().join("p.txt"), b"payload").unwrap();
    let run = |args: &[&str]| {
        r2seal(dir.path())
            .env("R2SEAL_KEYRING", dir.path().join("ring.toml"))
            .args(args)
            .assert()
    };
    run(&["key", "add", "agent", "--sym"]).success();
    run(&["key", "add", "other", "--sym", "--recovery"]).success();
    run(&["key", "default", "agent", "other"]).success();
    run(&["key", "policy", "archive/", "agent"]).success();

    let retired = run(&["key", "retire", "agent"]).success();
    let out = retired.get_output();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "key \"agent\": active -> retired\n"
    );
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        warnings.contains("the defaults still name \"agent\""),
        "{warnings}"
    );
    assert!(
        warnings.contains("the policy for \"archive/\" still names \"agent\""),
        "{warnings}"
    );

    let failed = run(&["seal", "--name", "notes", "-o", "n.age", "p.txt"]).failure();
    let err = one_line_error(&failed.get_output().stderr);
    assert!(
        err.contains("the defaults name key \"agent\", which is retired"),
        "{err}"
    );
    let failed = run(&["seal", "--name", "archive/a", "-o", "n.age", "p.txt"]).failure();
    let err = one_line_error(&failed.get_output().stderr);
    assert!(
        err.contains("the policy for \"archive/\" names key \"agent\", which is retired"),
        "{err}"
    );

    run(&["key", "retire", "agent"])
        .success()
        .stdout("key \"agent\" is already retired\n")
        .stderr("");
    run(&["key", "revoke", "agent"]).success();
    run(&["key", "revoke", "agent"])
        .success()
        .stdout("key \"agent\" is already revoked\n")
        .stderr("");
    // Once nothing names it, no warning.
    run(&["key", "add", "spare", "--sym"]).success();
    run(&["key", "retire", "spare"]).success().stderr("");
}

/// `R2SEAL_PASSPHRASE` set but empty is named as such, not as a missing passphrase.
#[test]
fn an_empty_passphrase_variable_is_named() {
    let (dir, _) = protected_setup("pw");
    let out = r2seal(dir.path())
        .env("R2SEAL_PASSPHRASE", "")
        .args(["recipient", "-i", "key.age"])
        .assert()
        .failure()
        .code(1);
    let err = one_line_error(&out.get_output().stderr);
    assert!(
        err.contains("identity file key.age: R2SEAL_PASSPHRASE is set but empty"),
        "{err}"
    );
}

/// Output errors name the path the user gave: never the internal temp file, and a
/// device that fails a write (/dev/full) is named too. A dangling symlink is refused:
/// following it would create a file wherever it points, replacing it would drop the link.
#[test]
fn output_errors_name_the_users_path() {
    let (dir, recipient) = setup();
    fs::write(dir.path().join("p.txt"), b"abc").unwrap();
    let seal_to = |out: &str| {
        let failed = r2seal(dir.path())
            .args(["seal", "-r", &recipient, "-o", out, "p.txt"])
            .assert()
            .failure()
            .code(1);
        one_line_error(&failed.get_output().stderr)
    };
    let err = seal_to("nodir/x");
    assert!(err.starts_with("r2seal: cannot write nodir/x: "), "{err}");
    assert!(!err.contains(".r2seal-"), "{err}");
    if Path::new("/dev/full").exists() {
        let err = seal_to("/dev/full");
        assert!(err.starts_with("r2seal: cannot write /dev/full: "), "{err}");
    }
    std::os::unix::fs::symlink("nowhere/target", dir.path().join("dangling")).unwrap();
    let err = seal_to("dangling");
    assert!(
        err.contains("symlink to a file that does not exist"),
        "{err}"
    );
    assert!(fs::symlink_metadata(dir.path().join("dangling"))
        .unwrap()
        .is_symlink());
    assert!(!dir.path().join("nowhere").exists());
    assert_eq!(temps_under(dir.path()), Vec::<PathBuf>::new());
}

/// Printing a revoked key's secret warns (on stderr; stdout stays the bare secret).
#[test]
fn export_secret_of_a_revoked_key_warns() {
    let dir = TempDir::new().unwrap();
    let run = |args: &[&str]| {
        r2seal(dir.path())
            .env("R2SEAL_KEYRING", dir.path().join("ring.toml"))
            .args(args)
            .assert()
    };
    run(&["key", "add", "k", "--sym"]).success();
    run(&["key", "export-secret", "k"]).success().stderr("");
    run(&["key", "revoke", "k"]).success();
    let out = run(&["key", "export-secret", "k"]).success();
    let out = out.get_output();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("R2SEAL-SYM-KEY-1"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: key \"k\" is revoked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A keyring command that cannot be done says "keyring: …", not "invalid key file: …"
/// (the keyring file is fine); a keyring file that breaks the same rules is invalid.
#[test]
fn keyring_command_errors_name_the_keyring() {
    let dir = TempDir::new().unwrap();
    let ring = dir.path().join("ring.toml");
    let run = |args: &[&str]| {
        r2seal(dir.path())
            .env("R2SEAL_KEYRING", &ring)
            .args(args)
            .assert()
    };
    run(&["key", "add", "main", "--sym"]).success();
    run(&["key", "add", "agent", "--age"]).success();
    let refused = |args: &[&str], expected: &str| {
        let out = run(args).failure().code(1);
        assert_eq!(
            one_line_error(&out.get_output().stderr).trim_end(),
            format!("r2seal: keyring: {expected}"),
            "{args:?}"
        );
    };
    refused(
        &["key", "add", "main", "--sym"],
        "a key named \"main\" already exists",
    );
    refused(
        &["key", "retire", "nosuch"],
        "no key named \"nosuch\" in the keyring",
    );
    refused(
        &["key", "default", "nosuch"],
        "no key named \"nosuch\" in the keyring",
    );
    refused(
        &["key", "names", "agent"],
        "names: key \"agent\" is not a symmetric key (names are encrypted under a sym key)",
    );
    run(&["key", "revoke", "main"]).success();
    refused(
        &["key", "retire", "main"],
        "key \"main\" is revoked; revocation cannot be undone",
    );

    fs::write(&ring, "version = 1\ndefault = [\"ghost\"]\n").unwrap();
    let out = run(&["key", "list"]).failure().code(1);
    let err = one_line_error(&out.get_output().stderr);
    assert!(
        err.contains("invalid key file: no key named \"ghost\" in the keyring"),
        "{err}"
    );
}

/// A connection that cannot be made is named by its cause, on one line, the same through
/// the SDK (`ls`) and the direct path (`cat`): no Debug dump of the SDK's error layers.
#[test]
fn an_unreachable_endpoint_reads_as_its_cause() {
    let (dir, _) = setup();
    let run = |sdk_only: &str, args: &[&str]| {
        let out = r2seal(dir.path())
            // An unresolvable name (RFC 2606 reserves .invalid): fails without a network.
            .env("AWS_ENDPOINT_URL", "http://no-such-host.invalid:9")
            .env("AWS_ACCESS_KEY_ID", "GKtest")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env("AWS_REGION", "auto")
            .env("HOME", dir.path())
            .env("R2SEAL_S3_SDK_ONLY", sdk_only)
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .args(args)
            .assert()
            .failure()
            .code(1);
        one_line_error(&out.get_output().stderr)
    };
    for (sdk_only, args, op) in [
        ("0", &["ls", "s3://b/"][..], "list s3://b/"),
        ("0", &["cat", "-i", "key.txt", "s3://b/k"], "get s3://b/k"),
        ("1", &["cat", "-i", "key.txt", "s3://b/k"], "get s3://b/k"),
    ] {
        let err = run(sdk_only, args);
        assert!(
            err.starts_with(&format!(
                "r2seal: {op}: network failure (retryable): endpoint unreachable: dns error: "
            )),
            "{args:?} sdk_only={sdk_only}: {err}"
        );
        assert!(
            !err.contains("DispatchFailure") && !err.contains('{') && !err.contains("(Connect)"),
            "{args:?} sdk_only={sdk_only}: {err}"
        );
    }
}

/// `R2SEAL_PASSPHRASE` is for r2seal alone: a process it starts (here an AWS
/// `credential_process`, run as the first request is signed) does not inherit it.
#[test]
fn the_passphrase_variable_is_not_inherited() {
    let passphrase = "correct horse battery staple";
    let (dir, _) = protected_setup(passphrase);
    let child_env = dir.path().join("child-env");
    let config = dir.path().join("aws-config");
    fs::write(
        &config,
        format!(
            "[default]\ncredential_process = sh -c 'env > {}; echo {{\\\"Version\\\": 1, \\\"AccessKeyId\\\": \\\"a\\\", \\\"SecretAccessKey\\\": \\\"b\\\"}}'\n",
            child_env.display()
        ),
    )
    .unwrap();
    r2seal(dir.path())
        .env("R2SEAL_PASSPHRASE", passphrase)
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .env("HOME", dir.path())
        .env("AWS_REGION", "auto")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .args(["cat", "-i", "key.age", "--endpoint", "http://127.0.0.1:9"])
        .arg("s3://bucket/k")
        .assert()
        .failure();
    let seen = fs::read_to_string(&child_env).expect("the credential process ran");
    assert!(seen.contains("AWS_CONFIG_FILE="), "{seen}");
    assert!(!seen.contains("R2SEAL_PASSPHRASE"), "{seen}");
    assert!(!seen.contains(passphrase), "{seen}");
}
