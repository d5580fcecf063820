//! Known-answer vectors (tests/vectors/, format in `r2seal::testkit`), interop with
//! Debian's `age` binary both ways, and an optional runner for C2SP/CCTV's age
//! vectors.
//!
//! - `cargo test --test vectors`: checks every vector file, and (when `age` is on
//!   PATH; required when `CI=true`) runs plain age on the file-form ones and on
//!   files it encrypts itself.
//! - `cargo test --test vectors -- --ignored generate`: rewrites the vector files.
//!   Sealing is randomized, so every run writes new bytes for the same cases.
//! - `R2SEAL_CCTV_AGE_DIR=…/CCTV/age/testdata cargo test --test vectors cctv -- --nocapture`:
//!   runs CCTV's X25519 vectors through r2seal's opener.
#![cfg(feature = "testkit")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use age_core::format::FileKey;
use age_core::secrecy::ExposeSecret;
use base64::{prelude::BASE64_STANDARD, prelude::BASE64_STANDARD_NO_PAD, Engine};
use chacha20poly1305::{aead::AeadInPlace, ChaCha20Poly1305, KeyInit};
use hmac::{Hmac, Mac};
use r2seal::format::header::{Header, Stanza};
use r2seal::format::stream::{
    StreamKey, CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, PAYLOAD_NONCE_SIZE, TAG_SIZE,
};
use r2seal::format::{Binding, Envelope, SealedMetadata};
use r2seal::keys::passphrase::{self, Argon2Params, Passphrase};
use r2seal::keys::{Identity, Recipient, SymKey};
use r2seal::seal::{open_file, seal_file, seal_part, seal_parts, PayloadOpener, PayloadSealer};
use r2seal::testkit::{self, hex, sha256, AgeExpect, Expect, Form};
use r2seal::Error;
use sha2::Sha256;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// Every object vector file (every file in the directory but README.md; name vectors
/// live in names/), sorted.
fn vector_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(vectors_dir())
        .expect("tests/vectors exists")
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("readable vector"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_vector_passes_the_testkit() {
    let files = vector_files();
    assert!(
        files.len() >= 40,
        "tests/vectors holds only {} vectors",
        files.len()
    );
    let mut failures = Vec::new();
    for (name, bytes) in &files {
        if let Err(why) = testkit::check(bytes) {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    println!("{} vectors passed", files.len());
}

#[test]
fn the_checker_catches_a_wrong_expectation() {
    // Every vector, with any one of its claims edited, must fail the checker: guards
    // against a checker that passes everything or ignores a key.
    let files = vector_files();
    let empty_sha = hex(&sha256(b""));
    let mut mutated = 0;
    for (name, bytes) in &files {
        let text_end = bytes.windows(2).position(|w| w == b"\n\n").unwrap() + 1;
        let text = std::str::from_utf8(&bytes[..text_end]).unwrap();
        let line = |key: &str| text.lines().find(|l| l.starts_with(&format!("{key}: ")));
        let mut edits = Vec::new();
        let expect = line("expect").unwrap();
        if expect == "expect: success" {
            edits.push(text.replacen(expect, "expect: corrupt", 1));
            edits.push(text.replacen(
                line("payload").unwrap(),
                &format!("payload: {}", "ab".repeat(32)),
                1,
            ));
        } else {
            // Claimed to open (to the empty plaintext, unless the file names one).
            let success = match line("payload") {
                Some(_) => "expect: success".to_owned(),
                None => format!("expect: success\npayload: {empty_sha}"),
            };
            edits.push(text.replacen(expect, &success, 1));
            // Claimed to fail in another way.
            let other = if expect == "expect: malformed" {
                "expect: corrupt"
            } else {
                "expect: malformed"
            };
            edits.push(text.replacen(expect, other, 1));
        }
        if let Some(range) = line("range") {
            let (span, _) = range.split_at(range.rfind(' ').unwrap());
            edits.push(text.replacen(range, &format!("{span} {}", "cd".repeat(32)), 1));
        }
        if let Some(metadata) = line("metadata") {
            edits.push(text.replacen(metadata, "metadata: {}", 1));
        }
        if let Some(parts) = line("parts") {
            edits.push(text.replacen(parts, "parts: 1 1 1", 1));
        }
        for edit in edits {
            let mut file = edit.into_bytes();
            file.extend_from_slice(&bytes[text_end..]);
            assert!(
                testkit::parse(&file).is_ok(),
                "{name}: the edit itself is invalid"
            );
            assert!(
                testkit::check(&file).is_err(),
                "{name}: an edited copy still passes"
            );
            mutated += 1;
        }
    }
    assert!(mutated >= 2 * files.len());
}

// ---------------------------------------------------------------------------------
// Plain age (Debian's `age` package) on r2seal's objects, and r2seal on age's.

/// The `age` binary, or `None` after a loud skip message. Under `CI=true` a missing
/// binary fails the test instead: CI must install it (apt package `age`).
fn age_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("age"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    if found.is_none() {
        let msg = "`age` is not on PATH: the interop tests with plain age did NOT run (apt-get install age)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
    }
    found
}

struct AgeRun {
    ok: bool,
    stdout: Vec<u8>,
    stderr: String,
}

fn run_age(age: &Path, args: &[&str], stdin: &[u8]) -> AgeRun {
    let mut child = Command::new(age)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("age runs");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // age may stop reading early on bad input: a broken pipe is not our failure.
        let _ = input.write_all(&stdin);
    });
    let out = child.wait_with_output().expect("age finishes");
    writer.join().unwrap();
    AgeRun {
        ok: out.status.success(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write_temp(dir: &Path, name: &str, contents: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn plain_age_agrees_on_file_form_vectors() {
    let Some(age) = age_binary() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut ran = 0;
    let mut failures = Vec::new();
    for (name, bytes) in vector_files() {
        let v = testkit::parse(&bytes).unwrap();
        let x25519: Vec<&str> = v
            .identities
            .iter()
            .copied()
            .filter(|i| i.starts_with("AGE-SECRET-KEY-1"))
            .collect();
        let parts = Header::parse_prefix(v.body)
            .ok()
            .flatten()
            .is_some_and(|(h, _)| h.stanzas.iter().any(|s| s.tag == "r2seal-parts"));
        let age_readable = v.form == Form::File && !x25519.is_empty() && !parts;
        let Some(want) = v.age else {
            if age_readable {
                failures.push(format!(
                    "{name}: plain age can read this form; the vector needs an `age:` line"
                ));
            }
            continue;
        };
        if v.form != Form::File || x25519.is_empty() {
            failures.push(format!("{name}: `age:` on a vector plain age cannot run"));
            continue;
        }
        let want_ok = match want {
            AgeExpect::Success => true,
            AgeExpect::Failure => false,
            AgeExpect::Unchecked => continue,
        };
        let identity_file = write_temp(
            tmp.path(),
            "identity",
            (x25519.join("\n") + "\n").as_bytes(),
        );
        let run = run_age(&age, &["-d", "-i", &identity_file], v.body);
        ran += 1;
        match (want_ok, run.ok) {
            (true, true) if Some(sha256(&run.stdout)) == v.payload => {}
            (true, true) => failures.push(format!(
                "{name}: age decrypted to SHA-256 {}",
                hex(&sha256(&run.stdout))
            )),
            (false, false) => {}
            (true, false) => failures.push(format!("{name}: age failed: {}", run.stderr.trim())),
            (false, true) => failures.push(format!(
                "{name}: age succeeded ({} bytes), expected failure",
                run.stdout.len()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(ran >= 20, "only {ran} vectors ran through age");
    println!("plain age agreed on {ran} file-form vectors");
}

#[test]
fn files_encrypted_by_plain_age_open_with_r2seal() {
    let Some(age) = age_binary() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let a = Identity::generate_x25519();
    let b = Identity::generate_x25519();
    let recipient = |i: &Identity| match i.to_recipient() {
        Recipient::X25519(r) => r.to_string(),
        Recipient::Sym(_) => unreachable!(),
    };
    let (ra, rb) = (recipient(&a), recipient(&b));
    let key_file = write_temp(
        tmp.path(),
        "a.key",
        format!("# test\n{}\n", a.to_secret_string().as_str()).as_bytes(),
    );
    for len in [
        0,
        1,
        CHUNK_SIZE - 1,
        CHUNK_SIZE,
        CHUNK_SIZE + 1,
        2 * CHUNK_SIZE + 4321,
    ] {
        let plaintext = data(len, len as u64);
        let runs = [
            ("age -r", vec!["-e", "-r", ra.as_str()]),
            (
                "age -r -r",
                vec!["-e", "-r", rb.as_str(), "-r", ra.as_str()],
            ),
            ("age -e -i", vec!["-e", "-i", key_file.as_str()]),
        ];
        for (what, args) in runs {
            let run = run_age(&age, &args, &plaintext);
            assert!(run.ok, "{what}: {}", run.stderr);
            let opened = open_file(std::slice::from_ref(&a), None, &run.stdout)
                .unwrap_or_else(|e| panic!("{what}, {len} bytes: r2seal refused age's file: {e}"));
            assert_eq!(&opened.plaintext[..], &plaintext[..], "{what}, {len} bytes");
            assert!(!opened.envelope.is_name_bound());
            // Named opens of an unbound file fail; other keys find no stanza.
            assert_eq!(
                open_file(std::slice::from_ref(&a), Some("x"), &run.stdout).err(),
                Some(Error::WrongName)
            );
            let other = Identity::generate_x25519();
            assert_eq!(
                open_file(&[other], None, &run.stdout).err(),
                Some(Error::NoMatchingIdentity)
            );
        }
    }
    // Armor is refused cleanly; a passphrase file is not ours to open.
    let armored = run_age(&age, &["-e", "-a", "-r", &ra], b"hi");
    assert!(matches!(
        open_file(std::slice::from_ref(&a), None, &armored.stdout),
        Err(Error::Malformed(_))
    ));
    // And what r2seal seals, age opens (the vectors cover the edge cases).
    let sealed = seal_file(
        &[b.to_recipient(), a.to_recipient()],
        Binding::default(),
        b"from r2seal",
    )
    .unwrap();
    let run = run_age(&age, &["-d", "-i", &key_file], &sealed);
    assert!(run.ok && run.stdout == b"from r2seal", "{}", run.stderr);
}

// ---------------------------------------------------------------------------------
// C2SP/CCTV's age vectors (optional: needs a checkout of CCTV's age/testdata).

#[derive(Debug, Default)]
struct CctvTally {
    passed: usize,
    notes: Vec<String>,
    failed: Vec<String>,
    unsupported: Vec<String>,
}

#[test]
fn cctv_age_vectors() {
    let Some(dir) = std::env::var_os("R2SEAL_CCTV_AGE_DIR") else {
        eprintln!(
            "\n!!!!!!!! SKIPPED: R2SEAL_CCTV_AGE_DIR is not set: C2SP/CCTV's age vectors did NOT run \
             (point it at a checkout's age/testdata) !!!!!!!!\n"
        );
        return;
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("R2SEAL_CCTV_AGE_DIR is a directory")
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "R2SEAL_CCTV_AGE_DIR is empty");
    let mut tally = CctvTally::default();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        match run_cctv_vector(&bytes) {
            Cctv::Pass(None) => tally.passed += 1,
            Cctv::Pass(Some(note)) => {
                tally.passed += 1;
                tally.notes.push(format!("{name}: {note}"));
            }
            Cctv::Fail(why) => tally.failed.push(format!("{name}: {why}")),
            Cctv::Unsupported(why) => tally.unsupported.push(format!("{name}: {why}")),
        }
    }
    println!(
        "CCTV age vectors: {} passed, {} failed, {} unsupported",
        tally.passed,
        tally.failed.len(),
        tally.unsupported.len()
    );
    for (label, lines) in [
        ("unsupported", &tally.unsupported),
        ("passed, note", &tally.notes),
        ("FAILED", &tally.failed),
    ] {
        for line in lines {
            println!("  {label:<13} {line}");
        }
    }
    assert!(
        tally.failed.is_empty(),
        "{} CCTV vectors failed",
        tally.failed.len()
    );
}

enum Cctv {
    /// As expected; a note when the failure is of another class than CCTV's, or
    /// r2seal released a different amount of plaintext before failing.
    Pass(Option<String>),
    Fail(String),
    Unsupported(String),
}

fn run_cctv_vector(file: &[u8]) -> Cctv {
    let (fields, body) = match testkit::parse_fields(file) {
        Ok(parsed) => parsed,
        Err(e) => return Cctv::Fail(format!("unreadable vector: {e}")),
    };
    let get = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|&(_, v)| v);
    let expect = get("expect").unwrap_or_default();
    let body = match get("compressed") {
        None => body.to_vec(),
        Some("zlib") => match zlib_decompress(body) {
            Some(bytes) => bytes,
            None => return Cctv::Unsupported("zlib-compressed and python3 is unavailable".into()),
        },
        Some(other) => return Cctv::Fail(format!("unknown compression {other}")),
    };
    if get("armored") == Some("yes") {
        // r2seal never reads armor: it must refuse it, cleanly.
        return match open_file(&[], None, &body) {
            Err(e @ (Error::Malformed(_) | Error::NotSealed)) => {
                Cctv::Unsupported(format!("armored: clean {e:?}"))
            }
            other => Cctv::Fail(format!("armored input gave {:?}", other.map(|_| ()))),
        };
    }
    let mut identities = Vec::new();
    let mut unsupported_identity = false;
    for (_, text) in fields.iter().filter(|(k, _)| *k == "identity") {
        match Identity::parse(text) {
            Ok(id) => identities.push(id),
            Err(_) => unsupported_identity = true,
        }
    }
    // Opened one chunk at a time, as a reader would, to see what is released before
    // a failure (CCTV's payload hash covers that).
    let mut released = Vec::new();
    let result = (|| {
        let (header, used) =
            Header::parse_prefix(&body)?.ok_or(Error::Malformed("header is truncated"))?;
        let envelope = Envelope::open(&header, &identities, None)?;
        let mut opener = PayloadOpener::new(envelope);
        for piece in body[used..].chunks(ENCRYPTED_CHUNK_SIZE) {
            opener.update(piece, &mut released)?;
        }
        opener.finish(&mut released).map(|_| ())
    })();
    let same_payload = get("payload").map(|h| h == hex(&sha256(&released)));
    if get("passphrase").is_some() || unsupported_identity {
        let what = if unsupported_identity {
            "hybrid (post-quantum) identity"
        } else {
            "scrypt passphrase"
        };
        return match &result {
            Ok(()) => Cctv::Fail(format!("{what} unsupported, yet r2seal opened it")),
            Err(e) if Expect::of_error(e).is_some() => {
                Cctv::Unsupported(format!("{what}: clean {e:?}"))
            }
            Err(e) => Cctv::Fail(format!("{what}: unclean error {e:?}")),
        };
    }
    let should_fail = |class: &[Expect]| match &result {
        Ok(()) => Cctv::Fail(format!("expected {expect}, r2seal opened it")),
        Err(e) => {
            let mut notes = Vec::new();
            if !class.contains(&Expect::of_error(e).unwrap_or(Expect::Success)) {
                notes.push(format!("{expect} reported as {e:?}"));
            }
            if same_payload == Some(false) {
                notes.push(format!(
                    "released {} authenticated bytes before failing, not CCTV's amount (r2seal holds a chunk back until it knows whether it is the last)",
                    released.len()
                ));
            }
            Cctv::Pass((!notes.is_empty()).then(|| notes.join("; ")))
        }
    };
    match expect {
        "success" => match (&result, same_payload) {
            (Ok(()), Some(true)) => Cctv::Pass(None),
            (Ok(()), _) => Cctv::Fail("opened, but the plaintext hash differs".into()),
            (Err(e), _) => Cctv::Fail(format!("expected success, got {e:?}")),
        },
        "no match" => should_fail(&[Expect::NoMatch]),
        "HMAC failure" => should_fail(&[Expect::Corrupt]),
        "header failure" => should_fail(&[
            Expect::Malformed,
            Expect::UnsupportedVersion,
            Expect::NotSealed,
        ]),
        "payload failure" => should_fail(&[Expect::Corrupt]),
        other => Cctv::Fail(format!("unknown expectation {other:?}")),
    }
}

/// zlib through python3 (no inflate crate among the dependencies); `None` if
/// python3 is missing.
fn zlib_decompress(data: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys,zlib;sys.stdout.buffer.write(zlib.decompress(sys.stdin.buffer.read()))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut input = child.stdin.take()?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&data));
    let out = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    out.status.success().then_some(out.stdout)
}

// ---------------------------------------------------------------------------------
// The generator. Fixed test identities: they are public, in every vector file.

const X25519_A: &str = "AGE-SECRET-KEY-12FACRT7YCL0M2NT8SA2YE4LHNEUD732L856SNKU3VGWQLF4JP8XS92ZQZU";
const X25519_B: &str = "AGE-SECRET-KEY-1GNLTX0SW683LFZD4D3QWMFCT2XN2250SA3RW2GYU804ZTN3MYZYSZ22UYP";
const X25519_WRONG: &str =
    "AGE-SECRET-KEY-1GTL9CYKPLQU09PFEMDXAKFWVA2CUJMNA0R62L230JQJMJK95J36SWMTW72";
const NAME: &str = "sessions/2026-11-25/chat.jsonl";

fn sym_a() -> Identity {
    Identity::Sym(SymKey::from_bytes(zeroize::Zeroizing::new(
        *b"r2seal test vector symmetric key",
    )))
}

fn id(s: &str) -> Identity {
    Identity::parse(s).unwrap()
}

fn secret(i: &Identity) -> String {
    i.to_secret_string().to_string()
}

/// Deterministic, incompressible-looking test data.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

struct Out {
    dir: PathBuf,
    written: Vec<String>,
    /// Vectors that do not check: written anyway (they say what the format
    /// requires), reported at the end so a bug in r2seal is never papered over.
    failing: Vec<String>,
}

/// One vector under construction: its `key: value` lines and bytes.
struct Vector {
    lines: Vec<(String, String)>,
}

impl Vector {
    fn new(expect: &str, form: &str) -> Vector {
        Vector {
            lines: vec![
                ("expect".into(), expect.into()),
                ("form".into(), form.into()),
            ],
        }
    }
    fn with(mut self, key: &str, value: impl Into<String>) -> Vector {
        self.lines.push((key.into(), value.into()));
        self
    }
    fn identity(self, i: &Identity) -> Vector {
        self.with("identity", secret(i))
    }
    fn payload(self, plaintext: &[u8]) -> Vector {
        self.with("payload", hex(&sha256(plaintext)))
    }
    fn range(self, plaintext: &[u8], start: usize, end: usize) -> Vector {
        let served = &plaintext[start..=end.min(plaintext.len() - 1)];
        self.with("range", format!("{start}-{end} {}", hex(&sha256(served))))
    }
    fn comment(self, text: &str) -> Vector {
        self.with("comment", text)
    }
}

impl Out {
    fn write(&mut self, name: &str, v: Vector, body: &[u8]) {
        let mut file = Vec::new();
        for (k, val) in &v.lines {
            assert!(!val.contains('\n'), "{name}: {k} spans lines");
            writeln!(file, "{k}: {val}").unwrap();
        }
        file.push(b'\n');
        file.extend_from_slice(body);
        if let Err(why) = testkit::check(&file) {
            self.failing.push(format!("{name}: {why}"));
        }
        std::fs::write(self.dir.join(name), &file).unwrap();
        self.written.push(name.to_owned());
    }
}

/// Seals like `seal_file` but returns the envelope too, for crafting payloads.
fn seal_with(recipients: &[Recipient], binding: Binding, plaintext: &[u8]) -> (Envelope, Vec<u8>) {
    let envelope = Envelope::seal(recipients, binding).unwrap();
    let mut out = envelope.header().to_file_bytes();
    let mut sealer = PayloadSealer::new(&envelope);
    sealer.update(plaintext, &mut out);
    sealer.finish(&mut out);
    (envelope, out)
}

/// A file whose header MAC is valid but whose chunks are `(index, last, plaintext)`
/// sealed as given: how a bad STREAM with an authentic header is made.
fn crafted_stream(recipient: &Recipient, chunks: &[(u64, bool, &[u8])]) -> Vec<u8> {
    let envelope = Envelope::seal(std::slice::from_ref(recipient), Binding::default()).unwrap();
    let nonce = [0x4e; PAYLOAD_NONCE_SIZE];
    let key = envelope.payload_key(&nonce);
    let mut out = envelope.header().to_file_bytes();
    out.extend_from_slice(&nonce);
    for &(index, last, pt) in chunks {
        let mut ct = vec![0; pt.len() + TAG_SIZE];
        key.seal_chunk_into(index, last, pt, &mut ct);
        out.extend_from_slice(&ct);
    }
    out
}

/// Builds headers from first principles (age spec and the formulas in
/// format::envelope), with a file key the generator knows: for stanzas r2seal's API
/// will not write, under a valid MAC.
struct Manual {
    file_key: [u8; 16],
}

impl Manual {
    fn file_key(&self) -> FileKey {
        FileKey::new(Box::new(self.file_key))
    }

    fn x25519_stanza(&self, identity: &Identity) -> Stanza {
        let Recipient::X25519(r) = identity.to_recipient() else {
            panic!("not X25519")
        };
        let (mut stanzas, _) = age::Recipient::wrap_file_key(&r, &self.file_key()).unwrap();
        let s = stanzas.pop().unwrap();
        Stanza {
            tag: s.tag,
            args: s.args,
            body: s.body,
        }
    }

    fn hmac(&self, label: &[u8], message: &[u8]) -> Vec<u8> {
        let key = age_core::primitives::hkdf(&[], label, self.file_key().expose_secret());
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }

    fn name_stanza(&self, name: &str) -> Stanza {
        Stanza {
            tag: "r2seal-name".into(),
            args: vec![],
            body: self.hmac(b"r2seal/v1 name", name.as_bytes()),
        }
    }

    /// `r2seal-meta`: a fixed salt, the HKDF meta key, ChaCha20-Poly1305 with a zero nonce.
    fn meta_stanza(&self, json: &[u8]) -> Stanza {
        let salt = [0x5a; 16];
        let key =
            age_core::primitives::hkdf(&salt, b"r2seal/v1 meta", self.file_key().expose_secret());
        let mut body = json.to_vec();
        ChaCha20Poly1305::new(&key.into())
            .encrypt_in_place(&[0; 12].into(), &[], &mut body)
            .unwrap();
        Stanza {
            tag: "r2seal-meta".into(),
            args: vec![BASE64_STANDARD_NO_PAD.encode(salt)],
            body,
        }
    }

    /// age's header MAC over the header text up to "---".
    fn header(&self, stanzas: Vec<Stanza>) -> Header {
        let unsigned = Header {
            stanzas,
            mac: [0; 32],
        };
        let mac = self.hmac(b"header", &unsigned.mac_input());
        Header {
            mac: mac.try_into().unwrap(),
            ..unsigned
        }
    }

    /// nonce ‖ STREAM, with ChaCha20-Poly1305 called directly (not r2seal's code).
    fn payload(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = [0x6d; PAYLOAD_NONCE_SIZE];
        let key = age_core::primitives::hkdf(&nonce, b"payload", self.file_key().expose_secret());
        let aead = ChaCha20Poly1305::new(&key.into());
        let mut out = nonce.to_vec();
        let chunks: Vec<&[u8]> = if plaintext.is_empty() {
            vec![&[]]
        } else {
            plaintext.chunks(CHUNK_SIZE).collect()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            let mut n = [0u8; 12];
            n[3..11].copy_from_slice(&(i as u64).to_be_bytes());
            n[11] = u8::from(i + 1 == chunks.len());
            let mut buf = chunk.to_vec();
            aead.encrypt_in_place(&n.into(), &[], &mut buf).unwrap();
            out.extend_from_slice(&buf);
        }
        out
    }

    fn file(&self, stanzas: Vec<Stanza>, plaintext: &[u8]) -> Vec<u8> {
        let mut out = self.header(stanzas).to_file_bytes();
        out.extend_from_slice(&self.payload(plaintext));
        out
    }
}

fn header_len(file: &[u8]) -> usize {
    Header::parse_prefix(file).unwrap().unwrap().1
}

fn with_header(file: &[u8], edit: impl FnOnce(&mut Header)) -> Vec<u8> {
    let (mut header, used) = Header::parse_prefix(file).unwrap().unwrap();
    edit(&mut header);
    let mut out = header.to_file_bytes();
    out.extend_from_slice(&file[used..]);
    out
}

fn replace_once(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = haystack
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    [&haystack[..at], to, &haystack[at + from.len()..]].concat()
}

#[test]
#[ignore = "rewrites tests/vectors: run with `-- --ignored generate`"]
fn generate() {
    let dir = vectors_dir();
    for (name, _) in vector_files() {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
    let mut out = Out {
        dir,
        written: Vec::new(),
        failing: Vec::new(),
    };
    let (a, b, wrong, sym) = (id(X25519_A), id(X25519_B), id(X25519_WRONG), sym_a());
    let ra = a.to_recipient();
    let none = Binding::default;
    let named = || Binding {
        name: Some(NAME.into()),
        ..Default::default()
    };
    let c = CHUNK_SIZE;

    // --- Successes: sizes around the chunk size -------------------------------
    for (name, len, ranges) in [
        ("success_empty", 0, &[][..]),
        ("success_one_byte", 1, &[(0, 0)][..]),
        (
            "success_64k_exactly",
            c,
            &[(0, c - 1), (c - 1, c - 1), (100, u32::MAX as usize)][..],
        ),
        ("success_64k_plus_one", c + 1, &[(c - 5, c), (c, c)][..]),
        (
            "success_multi_chunk",
            2 * c + 1000,
            &[
                (c - 6, c + 9),
                (c - 1, 2 * c),
                (2 * c + 999, 3 * c),
                (5, 2 * c + 5),
            ][..],
        ),
    ] {
        let pt = data(len, len as u64 + 1);
        let mut v = Vector::new("success", "file")
            .with("age", "success")
            .identity(&a)
            .payload(&pt)
            .comment(&format!(
                "{len}-byte payload sealed to one X25519 recipient; ranges read through RangePlan"
            ));
        for &(s, e) in ranges {
            v = v.range(&pt, s, e);
        }
        out.write(
            name,
            v,
            &seal_file(std::slice::from_ref(&ra), none(), &pt).unwrap(),
        );
    }

    let pt = data(1500, 7);
    out.write(
        "success_sym",
        Vector::new("success", "file").identity(&sym).payload(&pt).range(&pt, 1000, 1499).comment(
            "r2seal-sym stanza (symmetric keyring key); plain age cannot read it, so no `age:` line",
        ),
        &seal_file(&[sym.to_recipient()], none(), &pt).unwrap(),
    );

    let pt = data(3000, 8);
    out.write(
        "success_multiple_recipients",
        Vector::new("success", "file")
            .with("age", "success")
            .identity(&wrong)
            .identity(&b)
            .payload(&pt)
            .comment("sealed to X25519 A, the symmetric key and X25519 B; opened with an unrelated key, then B"),
        &seal_file(&[ra.clone(), sym.to_recipient(), b.to_recipient()], none(), &pt).unwrap(),
    );

    let pt = data(777, 9);
    out.write(
        "success_multiple_recipients_sym",
        Vector::new("success", "file")
            .identity(&sym)
            .payload(&pt)
            .comment("the same shape, opened by the symmetric key"),
        &seal_file(
            &[ra.clone(), sym.to_recipient(), b.to_recipient()],
            none(),
            &pt,
        )
        .unwrap(),
    );

    let pt = b"{\"role\":\"user\",\"content\":\"hello\"}\n".to_vec();
    out.write(
        "success_name_bound",
        Vector::new("success", "file")
            .with("age", "success")
            .identity(&a)
            .with("name", NAME)
            .payload(&pt)
            .comment(
                "r2seal-name stanza: opens under this name only; plain age ignores the stanza",
            ),
        &seal_file(std::slice::from_ref(&ra), named(), &pt).unwrap(),
    );

    let pt = data(2048, 10);
    let meta = SealedMetadata {
        size: Some(pt.len() as u64),
        md5: Some("9e107d9d372bb6826bd81d3542a419d6".into()),
        content_encoding: Some("gzip".into()),
        content_disposition: Some("attachment; filename=\"chat.jsonl\"".into()),
        content_language: None,
        user: [
            ("mtime".to_string(), "1764079200".to_string()),
            ("owner".to_string(), "ops".to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let meta_json = serde_json::to_string(&meta).unwrap();
    out.write(
        "success_sealed_metadata",
        Vector::new("success", "file")
            .with("age", "success")
            .identity(&a)
            .with("name", NAME)
            .payload(&pt)
            .with("metadata", meta_json.clone())
            .comment("r2seal-meta stanza: sealed metadata, opened and compared"),
        &seal_file(
            std::slice::from_ref(&ra),
            Binding {
                metadata: Some(meta.clone()),
                ..named()
            },
            &pt,
        )
        .unwrap(),
    );

    // The key-id claims rotation reads (SECURITY.md §3.2, §4.5): carried and compared
    // verbatim. `wrapped_to` also names a key a rewrap removed (`wrong`'s).
    let pt = data(300, 14);
    let key_ids = |ids: &[&Identity]| ids.iter().map(|i| i.key_id().to_string()).collect();
    let claims = SealedMetadata {
        size: Some(pt.len() as u64),
        recipients: key_ids(&[&a, &sym]),
        wrapped_to: key_ids(&[&a, &sym, &wrong]),
        ..Default::default()
    };
    out.write(
        "success_sealed_metadata_key_ids",
        Vector::new("success", "file")
            .identity(&sym)
            .with("name", NAME)
            .payload(&pt)
            .with("metadata", serde_json::to_string(&claims).unwrap())
            .comment(
                "sealed metadata with `recipients` and `wrapped_to` key ids, opened and compared",
            ),
        &seal_file(
            &[ra.clone(), sym.to_recipient()],
            Binding {
                metadata: Some(claims),
                ..named()
            },
            &pt,
        )
        .unwrap(),
    );

    // A file built without r2seal's sealing code: pins the formulas, not the code.
    let manual = Manual {
        file_key: *b"YELLOW SUBMARINE",
    };
    let pt = data(c + 10, 11);
    out.write(
        "success_independent_construction",
        Vector::new("success", "file")
            .with("age", "success")
            .identity(&a)
            .with("name", NAME)
            .payload(&pt)
            .comment("built from the spec: age's X25519 wrap, HMAC name tag, header MAC, ChaCha20-Poly1305 STREAM"),
        &manual.file(vec![manual.x25519_stanza(&a), manual.name_stanza(NAME)], &pt),
    );

    // Claims that are not key ids open (the opener does not check them; rotation ignores
    // them), claims that are not arrays of strings are malformed metadata.
    let pt = data(100, 15);
    let unchecked = r#"{"recipients":["not a key id",""],"wrapped_to":["AAAA"]}"#;
    out.write(
        "success_sealed_metadata_unchecked_key_ids",
        Vector::new("success", "file")
            .with("age", "success")
            .identity(&a)
            .payload(&pt)
            .with("metadata", unchecked)
            .comment("built from the spec: key-id claims are carried verbatim, not validated"),
        &manual.file(
            vec![
                manual.x25519_stanza(&a),
                manual.meta_stanza(unchecked.as_bytes()),
            ],
            &pt,
        ),
    );
    for (name, json) in [
        (
            "malformed_metadata_recipients_not_array",
            r#"{"recipients":"AAAA"}"#,
        ),
        (
            "malformed_metadata_wrapped_to_not_strings",
            r#"{"wrapped_to":[1,2]}"#,
        ),
    ] {
        out.write(
            name,
            Vector::new("malformed", "file")
                .with("age", "success")
                .identity(&a)
                .payload(&pt)
                .comment("sealed metadata whose key-id claims are not arrays of strings (age ignores the stanza)"),
            &manual.file(
                vec![
                    manual.x25519_stanza(&a),
                    manual.meta_stanza(json.as_bytes()),
                ],
                &pt,
            ),
        );
    }

    let grease = Stanza {
        tag: "grease-Xy!".into(),
        args: vec!["arg1".into(), "#$%".into()],
        body: data(50, 12),
    };
    let pt = data(100, 13);
    out.write(
        "success_unknown_foreign_stanza",
        Vector::new("success", "file")
            .with("age", "success")
            .identity(&a)
            .payload(&pt)
            .comment("a non-r2seal stanza type r2seal does not know is ignored, as age ignores it"),
        &manual.file(vec![grease.clone(), manual.x25519_stanza(&a)], &pt),
    );

    // --- Metadata form ----------------------------------------------------------
    let pt = data(3000, 14);
    let (envelope, file) = seal_with(
        &[sym.to_recipient()],
        Binding {
            metadata: Some(meta.clone()),
            ..named()
        },
        &pt,
    );
    out.write(
        "success_metadata_form",
        Vector::new("success", "metadata")
            .with("header", envelope.header().to_metadata_value().unwrap())
            .identity(&sym)
            .with("name", NAME)
            .payload(&pt)
            .with("metadata", meta_json.clone())
            .range(&pt, 2990, 2999)
            .comment("header in x-amz-meta-r2seal, body = nonce ‖ STREAM"),
        &file[header_len(&file)..],
    );
    let pt = data(5000, 15);
    let (envelope, file) = seal_with(&[ra.clone(), sym.to_recipient()], none(), &pt);
    out.write(
        "success_metadata_form_x25519",
        Vector::new("success", "metadata")
            .with("header", envelope.header().to_metadata_value().unwrap())
            .identity(&a)
            .payload(&pt)
            .comment(
                "metadata form with an X25519 stanza (its base64 has + and /) and a sym stanza",
            ),
        &file[header_len(&file)..],
    );
    out.write(
        "malformed_metadata_form_header",
        Vector::new("malformed", "metadata")
            .with(
                "header",
                envelope
                    .header()
                    .to_metadata_value()
                    .unwrap()
                    .replacen(';', ";;", 1),
            )
            .identity(&a)
            .comment("an empty line inside the metadata-form header"),
        &file[header_len(&file)..],
    );
    let body = &file[header_len(&file)..];
    out.write(
        "corrupt_metadata_form_body_truncated",
        Vector::new("corrupt", "metadata")
            .with("header", envelope.header().to_metadata_value().unwrap())
            .identity(&a)
            .comment("metadata form, body cut by one byte"),
        &body[..body.len() - 1],
    );

    // --- Parts layout -----------------------------------------------------------
    let pt = data(4 * 1000 + 321, 16);
    let (header, body) = seal_parts(&[sym.to_recipient()], named(), &pt, 1000).unwrap();
    out.write(
        "success_parts",
        Vector::new("success", "metadata")
            .with("header", header.to_metadata_value().unwrap())
            .identity(&sym)
            .with("name", NAME)
            .payload(&pt)
            .with("parts", "5 1000 321")
            .range(&pt, 990, 1010)
            .range(&pt, 500, 2500)
            .range(&pt, 4000, 4320)
            .range(&pt, 0, 4320)
            .range(&pt, 4320, 9999)
            .comment("parts layout, 5 parts (1000 bytes, last 321); ranges across part boundaries"),
        &body,
    );
    let part_stored = 16 + 1000 + 16;
    let mut swapped = body.clone();
    swapped[..part_stored].copy_from_slice(&body[part_stored..2 * part_stored]);
    swapped[part_stored..2 * part_stored].copy_from_slice(&body[..part_stored]);
    let meta_header = header.to_metadata_value().unwrap();
    out.write(
        "corrupt_parts_reordered",
        Vector::new("corrupt", "metadata")
            .with("header", meta_header.clone())
            .identity(&sym)
            .with("name", NAME)
            .range(&pt, 2500, 2510)
            .with("range", "1500-1510 corrupt")
            .comment("parts 1 and 2 swapped: each part's key binds its number; ranges into them fail, a range in part 3 reads"),
        &swapped,
    );
    let dropped = [&body[..part_stored], &body[2 * part_stored..]].concat();
    out.write(
        "corrupt_part_dropped",
        Vector::new("corrupt", "metadata")
            .with("header", meta_header.clone())
            .identity(&sym)
            .with("name", NAME)
            .comment("part 2 of 5 dropped"),
        &dropped,
    );
    let envelope = Envelope::open(&header, std::slice::from_ref(&sym), Some(NAME)).unwrap();
    let (_, retry) = seal_part(&envelope, 2, &pt[1000..2000]);
    let replaced = [&body[..part_stored], &retry[..], &body[2 * part_stored..]].concat();
    out.write(
        "corrupt_part_from_another_attempt",
        Vector::new("corrupt", "metadata")
            .with("header", meta_header)
            .identity(&sym)
            .with("name", NAME)
            .comment("part 2 replaced by another upload attempt of part 2 (same plaintext, fresh salt): the header commits to the salts"),
        &replaced,
    );
    // The same object as SealedBucket's uploads head it: the final header carries the
    // part salts themselves (r2seal-salts, up to 128 parts), so a ranged read checks
    // them without fetching them.
    let salts: Vec<[u8; PAYLOAD_NONCE_SIZE]> = (0..5)
        .map(|i| {
            body[i * part_stored..][..PAYLOAD_NONCE_SIZE]
                .try_into()
                .unwrap()
        })
        .collect();
    let with_salts = envelope
        .rewrap(
            &[sym.to_recipient()],
            Binding {
                parts: envelope.parts().copied(),
                part_salts: Some(salts),
                ..named()
            },
        )
        .unwrap()
        .into_header();
    assert!(with_salts.stanzas.iter().any(|s| s.tag == "r2seal-salts"));
    let salts_header = with_salts.to_metadata_value().unwrap();
    out.write(
        "success_parts_salts_in_header",
        Vector::new("success", "metadata")
            .with("header", salts_header.clone())
            .identity(&sym)
            .with("name", NAME)
            .payload(&pt)
            .with("parts", "5 1000 321")
            .range(&pt, 990, 1010)
            .range(&pt, 500, 2500)
            .range(&pt, 4000, 4320)
            .range(&pt, 0, 4320)
            .comment("parts layout, 5 parts, with an r2seal-salts stanza: the parts' salts in part order, matching the r2seal-parts digest"),
        &body,
    );
    out.write(
        "corrupt_part_from_another_attempt_salts_in_header",
        Vector::new("corrupt", "metadata")
            .with("header", salts_header)
            .identity(&sym)
            .with("name", NAME)
            .comment("as corrupt_part_from_another_attempt, under a header that carries the salts: the body's salt for part 2 is not the header's"),
        &replaced,
    );

    let pt = data(c + 1 + 10, 17);
    let (header, body) = seal_parts(std::slice::from_ref(&ra), none(), &pt, c + 1).unwrap();
    let mut file = header.to_file_bytes();
    file.extend_from_slice(&body);
    out.write(
        "success_parts_file_form",
        Vector::new("success", "file")
            .with("age", "failure")
            .identity(&a)
            .payload(&pt)
            .with("parts", &*format!("2 {} 10", c + 1))
            .range(&pt, c - 3, c + 3)
            .range(&pt, c, c)
            .range(&pt, c - 1, c + 9)
            .comment("parts layout in file form: part 1 has two chunks; ranges cross the chunk and the part boundary; plain age must refuse it (part keys are not age's payload key)"),
        &file,
    );

    // --- Payload failures under an authentic header -------------------------------
    let pt = data(1000, 18);
    let file = seal_file(std::slice::from_ref(&ra), none(), &pt).unwrap();
    let mut bad = file.clone();
    *bad.last_mut().unwrap() ^= 0x01;
    out.write(
        "corrupt_bad_chunk_tag",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("one bit of the only chunk's tag flipped"),
        &bad,
    );
    let h = header_len(&file);
    out.write(
        "corrupt_truncated_mid_chunk",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("the only chunk cut in half"),
        &file[..h + PAYLOAD_NONCE_SIZE + 500],
    );
    out.write(
        "corrupt_truncated_in_nonce",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("the payload ends inside the nonce"),
        &file[..h + 10],
    );
    out.write(
        "corrupt_no_payload",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("a header and nothing after it"),
        &file[..h],
    );
    let mut extended = file.clone();
    extended.push(0);
    out.write(
        "corrupt_trailing_byte",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("one byte after the final chunk"),
        &extended,
    );

    let empty = seal_file(std::slice::from_ref(&ra), none(), b"").unwrap();
    let mut bad = empty.clone();
    *bad.last_mut().unwrap() ^= 0x01;
    out.write(
        "corrupt_empty_payload_bad_tag",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("empty payload whose only (empty) chunk has a flipped tag bit: an empty chunk's tag is checked too"),
        &bad,
    );

    let pt = data(500, 23);
    let file = seal_file(std::slice::from_ref(&ra), named(), &pt).unwrap();
    out.write(
        "corrupt_truncated_to_fake_empty_payload",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .with("name", NAME)
            .comment("truncation attack: a 500-byte object's header and nonce kept, the rest replaced by 16 zero bytes posing as the empty final chunk of an empty payload"),
        &[&file[..header_len(&file) + PAYLOAD_NONCE_SIZE], &[0u8; TAG_SIZE][..]].concat(),
    );

    let pt = data(c + 100, 19);
    let file = seal_file(std::slice::from_ref(&ra), none(), &pt).unwrap();
    let boundary = header_len(&file) + PAYLOAD_NONCE_SIZE + ENCRYPTED_CHUNK_SIZE;
    out.write(
        "corrupt_truncated_then_fake_empty_chunk",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("truncation attack: cut after the first full chunk and append 16 zero bytes posing as an empty final chunk"),
        &[&file[..boundary], &[0u8; TAG_SIZE][..]].concat(),
    );
    out.write(
        "corrupt_truncated_at_chunk_boundary",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("a 64 KiB + 100 payload cut after its first (full, non-final) chunk"),
        &file[..header_len(&file) + PAYLOAD_NONCE_SIZE + ENCRYPTED_CHUNK_SIZE],
    );

    let full = data(c, 20);
    let tail = data(100, 21);
    out.write(
        "corrupt_two_final_chunks",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment(
                "a full chunk sealed with the last flag, then a second chunk also marked last",
            ),
        &crafted_stream(&ra, &[(0, true, &full), (1, true, &tail)]),
    );
    out.write(
        "corrupt_empty_final_chunk_after_full",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("a full non-final chunk, then an empty chunk marked last: only an empty payload may end in an empty chunk"),
        &crafted_stream(&ra, &[(0, false, &full), (1, true, &[])]),
    );
    out.write(
        "corrupt_short_chunk_not_last",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("a 100-byte chunk sealed as non-final with nothing after it"),
        &crafted_stream(&ra, &[(0, false, &tail)]),
    );
    out.write(
        "corrupt_chunk_counter_skipped",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("chunk 0 missing: the only chunk is sealed as index 1"),
        &crafted_stream(&ra, &[(1, true, &tail)]),
    );

    // --- Header and envelope failures ----------------------------------------------
    let pt = data(500, 22);
    let file = seal_file(std::slice::from_ref(&ra), named(), &pt).unwrap();
    out.write(
        "wrong_name",
        Vector::new("wrong name", "file")
            .with("age", "success")
            .identity(&a)
            .with("name", "sessions/2026-11-25/other.jsonl")
            .payload(&pt)
            .comment("bound to sessions/2026-11-25/chat.jsonl, opened under another name; age knows no names"),
        &file,
    );
    out.write(
        "name_required",
        Vector::new("name required", "file")
            .with("age", "success")
            .identity(&a)
            .payload(&pt)
            .comment("bound to a name, opened without one"),
        &file,
    );
    let unbound = seal_file(std::slice::from_ref(&ra), none(), &pt).unwrap();
    out.write(
        "wrong_name_unbound_object",
        Vector::new("wrong name", "file")
            .with("age", "success")
            .identity(&a)
            .with("name", NAME)
            .payload(&pt)
            .comment("not bound to any name, opened under one"),
        &unbound,
    );
    out.write(
        "no_match_wrong_key",
        Vector::new("no match", "file")
            .with("age", "failure")
            .identity(&wrong)
            .comment("sealed to X25519 A, opened with another key"),
        &unbound,
    );
    let sym_file = seal_file(&[sym.to_recipient()], none(), &pt).unwrap();
    out.write(
        "no_match_sym_object_x25519_key",
        Vector::new("no match", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("sealed to the symmetric key only: to an X25519 key it is just a stanza that is not its own"),
        &sym_file,
    );
    out.write(
        "corrupt_sym_stanza_body",
        Vector::new("corrupt", "file")
            .identity(&sym)
            .comment("r2seal-sym stanza body tampered: the key id matches, the wrap fails to open"),
        &with_header(&sym_file, |h| h.stanzas[0].body[5] ^= 0x10),
    );
    out.write(
        "malformed_sym_stanza_args",
        Vector::new("malformed", "file")
            .identity(&sym)
            .comment("r2seal-sym stanza with a missing argument"),
        &with_header(&sym_file, |h| {
            h.stanzas[0].args.pop();
        }),
    );
    out.write(
        "corrupt_header_mac",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("one bit of the header MAC flipped"),
        &with_header(&unbound, |h| h.mac[31] ^= 0x01),
    );
    out.write(
        "corrupt_name_stanza_removed",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("the r2seal-name stanza removed: the header MAC covers it"),
        &with_header(&file, |h| h.stanzas.retain(|s| s.tag != "r2seal-name")),
    );
    out.write(
        "unsupported_version_v2",
        Vector::new("unsupported version", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("version line age-encryption.org/v2"),
        &replace_once(
            &unbound,
            b"age-encryption.org/v1\n",
            b"age-encryption.org/v2\n",
        ),
    );
    out.write(
        "unsupported_r2seal_stanza",
        Vector::new("unsupported version", "file")
            .with("age", "success")
            .identity(&a)
            .payload(&pt)
            .comment("an r2seal-* stanza this release does not know, under a valid MAC: refused, never ignored (age ignores it)"),
        &manual.file(
            vec![
                manual.x25519_stanza(&a),
                Stanza { tag: "r2seal-future".into(), args: vec!["1".into()], body: vec![0; 32] },
            ],
            &pt,
        ),
    );
    out.write(
        "malformed_duplicate_name_stanza",
        Vector::new("malformed", "file")
            .with("age", "success")
            .identity(&a)
            .with("name", NAME)
            .payload(&pt)
            .comment("two r2seal-name stanzas under a valid MAC"),
        &manual.file(
            vec![
                manual.x25519_stanza(&a),
                manual.name_stanza(NAME),
                manual.name_stanza(NAME),
            ],
            &pt,
        ),
    );
    out.write(
        "malformed_parts_stanza_leading_zero",
        Vector::new("malformed", "file")
            .with("age", "success")
            .identity(&a)
            .payload(&pt)
            .comment("r2seal-parts with a non-canonical number (01) under a valid MAC (the payload is age's single stream)"),
        &manual.file(
            vec![
                manual.x25519_stanza(&a),
                Stanza { tag: "r2seal-parts".into(), args: vec!["01".into(), "5".into(), "5".into()], body: vec![0; 32] },
            ],
            &pt,
        ),
    );
    // r2seal-salts that the API will not write, under a valid MAC, over a real 2-part
    // body (parts of 5 bytes) whose salts match the r2seal-parts digest: so only the
    // check of the salts stanza itself can refuse the first two.
    let keyed = Envelope::open(
        &manual.header(vec![manual.x25519_stanza(&a)]),
        std::slice::from_ref(&a),
        None,
    )
    .unwrap();
    let parts_pt = data(10, 23);
    let (salt_1, part_1) = seal_part(&keyed, 1, &parts_pt[..5]);
    let (salt_2, part_2) = seal_part(&keyed, 2, &parts_pt[5..]);
    let parts_body = [part_1, part_2].concat();
    let parts_stanza = Stanza {
        tag: "r2seal-parts".into(),
        args: vec!["2".into(), "5".into(), "5".into()],
        body: sha256(&[salt_1, salt_2].concat()).to_vec(),
    };
    let salts_stanza = |salts: &[[u8; PAYLOAD_NONCE_SIZE]]| Stanza {
        tag: "r2seal-salts".into(),
        args: vec![],
        body: salts.concat(),
    };
    // The 2-part body under a header of the X25519 stanza, r2seal-parts and these salts.
    let parts_file = |salts: &[[u8; PAYLOAD_NONCE_SIZE]]| {
        let stanzas = vec![
            manual.x25519_stanza(&a),
            parts_stanza.clone(),
            salts_stanza(salts),
        ];
        let mut file = manual.header(stanzas).to_file_bytes();
        file.extend_from_slice(&parts_body);
        file
    };
    // The control: the same header and body with the right salts open.
    out.write(
        "success_parts_salts_in_header_file_form",
        Vector::new("success", "file")
            .with("age", "failure")
            .identity(&a)
            .payload(&parts_pt)
            .with("parts", "2 5 5")
            .range(&parts_pt, 3, 7)
            .comment("a 2-part object built from first principles with r2seal-parts and r2seal-salts (plain age must refuse it: part keys are not age's payload key)"),
        &parts_file(&[salt_1, salt_2]),
    );
    let mut salt_x = salt_2;
    salt_x[0] ^= 0x01;
    out.write(
        "corrupt_salts_stanza_not_the_digest",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("r2seal-salts of the right length whose SHA-256 is not the r2seal-parts digest (one bit of salt 2 flipped), under a valid MAC, over a body that matches the digest: never trusted"),
        &parts_file(&[salt_1, salt_x]),
    );
    out.write(
        "corrupt_salts_stanza_reordered",
        Vector::new("corrupt", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("r2seal-salts holding the right salts in the wrong order, under a valid MAC: the digest is over the salts in part order"),
        &parts_file(&[salt_2, salt_1]),
    );
    out.write(
        "malformed_salts_stanza_wrong_length",
        Vector::new("malformed", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("r2seal-salts with one salt for a 2-part r2seal-parts, under a valid MAC"),
        &parts_file(&[salt_1]),
    );
    out.write(
        "malformed_salts_stanza_without_parts",
        Vector::new("malformed", "file")
            .with("age", "success")
            .identity(&a)
            .payload(&pt)
            .comment("r2seal-salts without an r2seal-parts stanza, under a valid MAC (the payload is age's single stream)"),
        &manual.file(
            vec![manual.x25519_stanza(&a), salts_stanza(&[salt_1, salt_2])],
            &pt,
        ),
    );
    out.write(
        "malformed_scrypt_not_alone",
        Vector::new("malformed", "file")
            .with("age", "unchecked")
            .identity(&a)
            .comment("an scrypt stanza next to an X25519 one: the age spec requires scrypt to be alone (CCTV scrypt_and_x25519); Debian's age 1.1.1 does not check it when it holds no passphrase"),
        &manual.file(
            vec![
                manual.x25519_stanza(&a),
                Stanza { tag: "scrypt".into(), args: vec!["c2FsdHNhbHRzYWx0c2FsdA".into(), "10".into()], body: vec![1; 32] },
            ],
            &pt,
        ),
    );
    // Non-canonical base64: the X25519 body's last character with its unused low
    // bits set.
    let text = String::from_utf8_lossy(&unbound[..header_len(&unbound)]).into_owned();
    let body_line = text.lines().nth(2).unwrap();
    assert_eq!(body_line.len(), 43);
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let last = alphabet.find(body_line.chars().last().unwrap()).unwrap();
    let noncanonical = format!(
        "{}{}",
        &body_line[..42],
        &alphabet[last | 1..(last | 1) + 1]
    );
    out.write(
        "malformed_non_canonical_base64",
        Vector::new("malformed", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("X25519 stanza body whose last base64 character has non-zero unused bits"),
        &replace_once(&unbound, body_line.as_bytes(), noncanonical.as_bytes()),
    );
    out.write(
        "malformed_stanza_body_line_too_long",
        Vector::new("malformed", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("a stanza body line of 65 columns"),
        &long_body_line(&unbound),
    );
    out.write(
        "malformed_mac_missing",
        Vector::new("malformed", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("the header ends in \"---\" without a MAC"),
        &{
            let mac_line_start = unbound[..header_len(&unbound) - 1]
                .iter()
                .rposition(|&b| b == b'\n')
                .unwrap()
                + 1;
            [
                &unbound[..mac_line_start],
                b"---\n",
                &unbound[header_len(&unbound)..],
            ]
            .concat()
        },
    );
    let armored = armor(&unbound);
    out.write(
        "malformed_armored",
        Vector::new("malformed", "file")
            .with("age", "success")
            .identity(&a)
            .payload(&pt)
            .comment("ASCII-armored age file: age reads it, r2seal objects are never armored"),
        &armored,
    );
    out.write(
        "not_sealed_plaintext",
        Vector::new("not sealed", "file")
            .with("age", "failure")
            .identity(&a)
            .comment("a plaintext object that was never sealed"),
        b"{\"role\":\"user\",\"content\":\"hello\"}\n",
    );

    // --- Passphrase-protected key files ----------------------------------------------
    let key_file = format!("# test identity\n{X25519_A}\n");
    let pass = Passphrase::new("correct horse battery staple".into());
    let fast = Argon2Params {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let protected = passphrase::protect(key_file.as_bytes(), &pass, fast).unwrap();
    out.write(
        "success_protected_identity_file",
        Vector::new("success", "protected")
            .with("passphrase", pass.expose())
            .payload(key_file.as_bytes())
            .comment("an identity file under r2seal-argon2id (m=64 KiB, t=1, p=1)"),
        &protected,
    );
    out.write(
        "wrong_passphrase_protected",
        Vector::new("wrong passphrase", "protected")
            .with("passphrase", "correct horse battery stable"),
        &protected,
    );
    out.write(
        "kdf_too_expensive_protected",
        Vector::new("kdf too expensive", "protected")
            .with("passphrase", pass.expose())
            .comment("Argon2id m raised to 2 GiB: refused before any work (the MAC is stale, never reached)"),
        &replace_once(&protected, b" 64 1 1\n", b" 2097152 1 1\n"),
    );

    let total: u64 = vector_files().iter().map(|(_, b)| b.len() as u64).sum();
    println!("wrote {} vectors, {total} bytes", out.written.len());
    assert!(total < 768 * 1024, "vectors grew to {total} bytes");
    assert!(
        out.failing.is_empty(),
        "vectors that r2seal fails:\n{}",
        out.failing.join("\n")
    );
}

/// `file` with its first stanza body line extended to 65 columns.
fn long_body_line(file: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(&file[..header_len(file)]).into_owned();
    let line = text.lines().nth(2).unwrap();
    let long = BASE64_STANDARD_NO_PAD.encode(vec![0u8; 48]) + "A";
    replace_once(file, line.as_bytes(), long.as_bytes())
}

/// age's ASCII armor (PEM, 64 columns, padded base64).
fn armor(file: &[u8]) -> Vec<u8> {
    let b64 = BASE64_STANDARD.encode(file);
    let mut out = String::from("-----BEGIN AGE ENCRYPTED FILE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END AGE ENCRYPTED FILE-----\n");
    out.into_bytes()
}

#[test]
fn generator_helpers_are_sound() {
    // The manual construction agrees with r2seal's own code.
    let m = Manual { file_key: [9; 16] };
    let a = id(X25519_A);
    let pt = data(CHUNK_SIZE + 10, 1);
    let file = m.file(vec![m.x25519_stanza(&a), m.name_stanza("n")], &pt);
    assert_eq!(
        &open_file(std::slice::from_ref(&a), Some("n"), &file)
            .unwrap()
            .plaintext[..],
        &pt[..]
    );
    let key = StreamKey::derive(&[9; 16], &[0x6d; 16], b"payload");
    let mut ct = vec![0; 10 + TAG_SIZE];
    key.seal_chunk_into(1, true, &pt[CHUNK_SIZE..], &mut ct);
    assert!(file.ends_with(&ct));
    // Armor round-trips through base64.
    let armored = String::from_utf8(armor(b"xyz")).unwrap();
    assert!(armored.contains("eHl6\n"));
}
