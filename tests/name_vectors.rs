//! Known-answer vectors for object-name encryption (tests/vectors/names/, checked by
//! `r2seal::testkit::check_name_vector`, natively here and in the wasm build).
//!
//! - `cargo test --test name_vectors`: checks every file.
//! - `cargo test --test name_vectors -- --ignored generate`: rewrites them. AES-SIV is
//!   deterministic, so a rewrite gives the same bytes unless the construction changed.
#![cfg(feature = "testkit")]

use std::path::{Path, PathBuf};

use r2seal::keys::SymKey;
use r2seal::names::NameKey;
use r2seal::testkit::check_name_vector;
use zeroize::Zeroizing;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/names")
}

fn files() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir())
        .expect("tests/vectors/names exists")
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The test keys are public: they are in the files.
fn key(seed: u8) -> SymKey {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
    SymKey::from_bytes(Zeroizing::new(k))
}

#[test]
fn every_name_vector_passes() {
    let files = files();
    assert!(files.len() >= 12, "only {} name vectors", files.len());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|(n, b)| check_name_vector(b).err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_checker_catches_edited_name_vectors() {
    for (name, bytes) in files() {
        let text = String::from_utf8(bytes).unwrap();
        let mut edits = vec![text.replacen("expect: ", "expect: x", 1)];
        if let Some(line) = text.lines().find(|l| l.starts_with("stored: ")) {
            // Flip the last character of the stored key ('a' <-> 'b', else to 'a').
            let last = line.chars().last().unwrap();
            let flipped = format!(
                "{}{}",
                &line[..line.len() - 1],
                if last == 'a' { 'b' } else { 'a' }
            );
            if text.contains("expect: success") {
                edits.push(text.replacen(line, &flipped, 1));
            }
        }
        if let Some(line) = text.lines().find(|l| l.starts_with("key id: ")) {
            edits.push(text.replacen(line, "key id: AAAAAAAAAAA", 1));
        }
        for (i, e) in edits.iter().enumerate() {
            assert!(
                check_name_vector(e.as_bytes()).is_err(),
                "{name}: edit {i} passed"
            );
        }
    }
}

#[test]
#[ignore = "rewrites tests/vectors/names: run with `-- --ignored generate`"]
fn generate() {
    let d = dir();
    std::fs::create_dir_all(&d).unwrap();
    for (n, _) in files() {
        std::fs::remove_file(d.join(n)).unwrap();
    }
    let (k, wrong) = (key(1), key(101));
    let nk = NameKey::from_sym_key(&k);
    let head = |comment: &str, expect: &str| {
        format!(
            "comment: {comment}\nexpect: {expect}\nkey: {}\nkey id: {}\n",
            k.to_secret_string().as_str(),
            nk.id()
        )
    };
    let write = |name: &str, text: String| std::fs::write(d.join(name), text + "\n").unwrap();
    let success = |name: &str, comment: &str, plain: &str, prefixes: &[&str]| {
        let mut t = head(comment, "success");
        t += &format!("plain: {plain}\nstored: {}\n", nk.encrypt(plain));
        for p in prefixes {
            let lp = nk.list_prefix(p);
            let kind = if lp.partial { "partial" } else { "whole" };
            t += &format!("prefix: {p} -> {} {kind}\n", lp.stored);
        }
        write(name, t);
    };
    success(
        "success_one_segment",
        "a key without /",
        "credentials.json",
        &["cred", ""],
    );
    success(
        "success_path",
        "segments under one parent share the parent's stored form",
        "sessions/2026-11-25/agent.jsonl",
        &[
            "sessions/",
            "sessions/2026-11-25/ag",
            "sessions/2026-11-25/",
        ],
    );
    success(
        "success_trailing_slash",
        "a directory marker: the empty last segment stays empty",
        "archive/2026/",
        &[],
    );
    success(
        "success_empty_segments",
        "empty segments stay empty; the next one's AD includes the separators",
        "a//b",
        &[],
    );
    success(
        "success_leading_slash",
        "a leading empty segment",
        "/x",
        &[],
    );
    success(
        "success_dot_segments",
        ". and .. are ordinary segments",
        "./../x",
        &[],
    );
    success(
        "success_unicode",
        "UTF-8 as given, no normalization",
        "notes/über ✓.md",
        &[],
    );
    success(
        "success_max_single_segment",
        "624 bytes: the longest single segment, exactly 1,024 stored bytes",
        &"x".repeat(624),
        &[],
    );
    let mut t = head(
        "625 bytes in one segment: 1,026 stored bytes, refused before any write",
        "name too long",
    );
    t += &format!("plain: {}\n", "x".repeat(625));
    write("name_too_long_single_segment", t);
    let mut t = head(
        "20 segments of 20 bytes (419 bytes): 20 x 58 + 19 = 1,179 stored bytes",
        "name too long",
    );
    t += &format!("plain: {}\n", vec!["y".repeat(20); 20].join("/"));
    write("name_too_long_many_segments", t);
    let failure = |name: &str, comment: &str, expect: &str, stored: String| {
        write(name, head(comment, expect) + &format!("stored: {stored}\n"));
    };
    let good = nk.encrypt("sessions/a.json");
    let other = NameKey::from_sym_key(&wrong);
    failure(
        "corrupt_wrong_key",
        "encrypted under another key",
        "corrupt",
        other.encrypt("sessions/a.json"),
    );
    let mut tampered = good.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'a' { b'b' } else { b'a' };
    failure(
        "corrupt_tampered",
        "one base32 character changed",
        "corrupt",
        String::from_utf8(tampered).unwrap(),
    );
    let moved = format!(
        "{}/{}",
        nk.encrypt("archive").as_str(),
        good.split('/').nth(1).unwrap()
    );
    failure(
        "corrupt_wrong_parent",
        "a segment moved under another parent",
        "corrupt",
        moved,
    );
    let swapped = {
        let mut s: Vec<&str> = good.split('/').collect();
        s.swap(0, 1);
        s.join("/")
    };
    failure(
        "corrupt_segments_swapped",
        "the two segments in the other order",
        "corrupt",
        swapped,
    );
    failure(
        "malformed_upper_case",
        "base32 is lower case only",
        "malformed",
        good.to_uppercase(),
    );
    failure(
        "malformed_bad_alphabet",
        "0, 1, 8, 9 are not base32",
        "malformed",
        good.replacen(|c: char| c.is_ascii_lowercase(), "1", 1),
    );
    failure(
        "malformed_padding",
        "no = padding",
        "malformed",
        format!("{good}======"),
    );
    failure(
        "malformed_plaintext_name",
        "a plaintext key left over from before encryption",
        "malformed",
        "sessions/a.json".into(),
    );
    failure(
        "malformed_short",
        "fewer than 16 bytes: no room for the SIV tag",
        "malformed",
        "mzxw6ytboi".into(),
    );
    failure(
        "malformed_non_canonical_bits",
        "trailing bits not zero (len 2 -> 1 byte, 2 spare bits)",
        "malformed",
        "mz".into(),
    );
}
