//! Known-answer vector files: parser and checker, sans-IO so the native tests and
//! the wasm build run the very same files (tests/vectors/).
//!
//! # Vector file format
//!
//! Modeled on C2SP/CCTV's age testkit: `key: value` lines (ASCII, "\n"-terminated),
//! one empty line, then the object bytes, verbatim, to the end of the file.
//!
//! ```text
//! expect: success
//! form: file
//! identity: AGE-SECRET-KEY-1…
//! name: logs/2026-11-25.jsonl
//! payload: <hex SHA-256 of the plaintext>
//! range: 65530-65545 <hex SHA-256 of plaintext[65530..=65545]>
//! comment: why this vector exists
//!
//! age-encryption.org/v1
//! …
//! ```
//!
//! | key | | meaning |
//! |---|---|---|
//! | `expect` | once, required | outcome of opening: `success`, `no match`, `corrupt`, `wrong name`, `name required`, `unsupported version`, `malformed`, `not sealed`; for `form: protected` also `wrong passphrase`, `kdf too expensive` |
//! | `form` | once, required | `file` (the bytes are a whole age file), `metadata` (the bytes are the stored body, `header:` the `x-amz-meta-r2seal` value) or `protected` (an r2seal Argon2id passphrase file, opened with `passphrase:`) |
//! | `header` | once, metadata form only | the metadata-form header line |
//! | `identity` | one or more (file, metadata) | `AGE-SECRET-KEY-1…` or `R2SEAL-SYM-KEY-1…`, tried in order |
//! | `passphrase` | once, protected form only | the passphrase |
//! | `name` | at most once | the object name to open under; absent: open without a name |
//! | `payload` | required for `success` | hex SHA-256 of the whole plaintext; on other outcomes, of the plaintext the object holds (used by the plain-age interop test) |
//! | `metadata` | at most once | the sealed metadata the envelope must carry, as JSON |
//! | `parts` | at most once | the parts layout the envelope must carry: `<count> <part size> <last size>` |
//! | `range` | any number | `<start>-<end> <hex SHA-256>` (inclusive range, read through [`RangePlan`] fetching only the planned pieces) or `<start>-<end> <outcome>` for a ranged read that must fail |
//! | `age` | at most once | `success`, `failure` or `unchecked` (age versions disagree): what Debian's `age -d` must do with a file-form object (native interop test only; the checker ignores it) |
//! | `comment` | any number | free text |
//!
//! Unknown keys are an error (a typo must not silently disable a check).
//! [`check`] opens the object twice: in one call (`open_file`/`open_body`) and
//! incrementally ([`Header::parse_prefix`] and [`PayloadOpener`] fed in odd-sized
//! slices); both must give the expected outcome.

use sha2::{Digest, Sha256};

use crate::format::{Envelope, Header, SealedMetadata};
use crate::keys::passphrase::{self, Argon2Params, Passphrase};
use crate::keys::Identity;
use crate::seal::{open_body, open_file, PayloadOpener, RangePlan};
use crate::Error;

/// The outcome a vector expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Success,
    NoMatch,
    Corrupt,
    WrongName,
    NameRequired,
    UnsupportedVersion,
    Malformed,
    NotSealed,
    WrongPassphrase,
    KdfTooExpensive,
}

const EXPECTATIONS: &[(&str, Expect)] = &[
    ("success", Expect::Success),
    ("no match", Expect::NoMatch),
    ("corrupt", Expect::Corrupt),
    ("wrong name", Expect::WrongName),
    ("name required", Expect::NameRequired),
    ("unsupported version", Expect::UnsupportedVersion),
    ("malformed", Expect::Malformed),
    ("not sealed", Expect::NotSealed),
    ("wrong passphrase", Expect::WrongPassphrase),
    ("kdf too expensive", Expect::KdfTooExpensive),
];

impl Expect {
    pub fn parse(s: &str) -> Result<Expect, String> {
        EXPECTATIONS
            .iter()
            .find(|(text, _)| *text == s)
            .map(|&(_, e)| e)
            .ok_or_else(|| format!("unknown expectation {s:?}"))
    }

    pub fn as_str(self) -> &'static str {
        EXPECTATIONS
            .iter()
            .find(|(_, e)| *e == self)
            .map(|(t, _)| *t)
            .expect("listed")
    }

    /// The expectation an error satisfies, or `None` for errors no vector expects.
    pub fn of_error(error: &Error) -> Option<Expect> {
        Some(match error {
            Error::NoMatchingIdentity => Expect::NoMatch,
            Error::Corrupt => Expect::Corrupt,
            Error::WrongName => Expect::WrongName,
            Error::NameRequired => Expect::NameRequired,
            Error::UnsupportedVersion => Expect::UnsupportedVersion,
            Error::Malformed(_) => Expect::Malformed,
            Error::NotSealed => Expect::NotSealed,
            Error::WrongPassphrase => Expect::WrongPassphrase,
            Error::KdfTooExpensive(_) => Expect::KdfTooExpensive,
            _ => return None,
        })
    }
}

/// How the object bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    File,
    Metadata,
    Protected,
}

/// What plain age must do with a file-form vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgeExpect {
    /// Decrypts to the `payload` hash.
    Success,
    Failure,
    /// Not compared: age releases disagree (the comment says why).
    Unchecked,
}

/// A ranged read and what it must give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeCheck {
    pub start: u64,
    pub end: u64,
    /// `Ok(sha256)` of the served bytes, or the error outcome.
    pub expect: Result<[u8; 32], Expect>,
}

/// A parsed vector file. Borrowed from the file's bytes.
#[derive(Clone, Debug)]
pub struct Vector<'a> {
    pub expect: Expect,
    pub form: Form,
    pub header: Option<&'a str>,
    pub identities: Vec<&'a str>,
    pub passphrase: Option<&'a str>,
    pub name: Option<&'a str>,
    pub payload: Option<[u8; 32]>,
    pub metadata: Option<&'a str>,
    pub parts: Option<(u32, u64, u64)>,
    pub ranges: Vec<RangeCheck>,
    /// What plain `age -d` must do with the object, if the vector says.
    pub age: Option<AgeExpect>,
    pub comments: Vec<&'a str>,
    pub body: &'a [u8],
}

/// A vector file's `key: value` lines, in order.
pub type Fields<'a> = Vec<(&'a str, &'a str)>;

/// Splits a vector file into its `key: value` lines and the object bytes. Shared
/// with C2SP/CCTV's files, which have the same shape.
pub fn parse_fields(file: &[u8]) -> Result<(Fields<'_>, &[u8]), String> {
    let mut fields = Vec::new();
    let mut rest = file;
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("the text header does not end with an empty line")?;
        let (line, after) = (&rest[..end], &rest[end + 1..]);
        rest = after;
        if line.is_empty() {
            return Ok((fields, rest));
        }
        let line = std::str::from_utf8(line).map_err(|_| "header line is not UTF-8")?;
        let (key, value) = line
            .split_once(": ")
            .ok_or_else(|| format!("header line {line:?} is not `key: value`"))?;
        fields.push((key, value));
    }
}

/// Parses a vector file (see the module docs).
pub fn parse(file: &[u8]) -> Result<Vector<'_>, String> {
    let (fields, body) = parse_fields(file)?;
    let mut once: Vec<&str> = Vec::new();
    let mut expect = None;
    let mut form = None;
    let mut v = Vector {
        expect: Expect::Success,
        form: Form::File,
        header: None,
        identities: Vec::new(),
        passphrase: None,
        name: None,
        payload: None,
        metadata: None,
        parts: None,
        ranges: Vec::new(),
        age: None,
        comments: Vec::new(),
        body,
    };
    for (key, value) in fields {
        if !matches!(key, "identity" | "range" | "comment") {
            if once.contains(&key) {
                return Err(format!("key {key:?} given twice"));
            }
            once.push(key);
        }
        match key {
            "expect" => expect = Some(Expect::parse(value)?),
            "form" => {
                form = Some(match value {
                    "file" => Form::File,
                    "metadata" => Form::Metadata,
                    "protected" => Form::Protected,
                    _ => return Err(format!("unknown form {value:?}")),
                })
            }
            "header" => v.header = Some(value),
            "identity" => v.identities.push(value),
            "passphrase" => v.passphrase = Some(value),
            "name" => v.name = Some(value),
            "payload" => v.payload = Some(parse_sha256(value)?),
            "metadata" => v.metadata = Some(value),
            "parts" => v.parts = Some(parse_parts(value)?),
            "range" => v.ranges.push(parse_range(value)?),
            "age" => {
                v.age = Some(match value {
                    "success" => AgeExpect::Success,
                    "failure" => AgeExpect::Failure,
                    "unchecked" => AgeExpect::Unchecked,
                    _ => {
                        return Err(format!(
                            "age: expects success, failure or unchecked, not {value:?}"
                        ))
                    }
                })
            }
            "comment" => v.comments.push(value),
            _ => return Err(format!("unknown key {key:?}")),
        }
    }
    v.expect = expect.ok_or("missing `expect`")?;
    v.form = form.ok_or("missing `form`")?;
    if v.expect == Expect::Success && v.payload.is_none() {
        return Err("a success vector needs `payload`".into());
    }
    let object_form = v.form != Form::Protected;
    if (v.form == Form::Metadata) != v.header.is_some() {
        return Err("`header` goes with, and only with, `form: metadata`".into());
    }
    if object_form == v.passphrase.is_some() {
        return Err("`passphrase` goes with, and only with, `form: protected`".into());
    }
    if object_form && v.identities.is_empty() {
        return Err("missing `identity`".into());
    }
    if !object_form && (!v.identities.is_empty() || v.name.is_some() || !v.ranges.is_empty()) {
        return Err("`form: protected` takes no identity, name or range".into());
    }
    if matches!(v.expect, Expect::WrongPassphrase | Expect::KdfTooExpensive) && object_form {
        return Err(format!(
            "`expect: {}` is for `form: protected`",
            v.expect.as_str()
        ));
    }
    Ok(v)
}

/// Parses and checks one vector file: `Ok(())` when the object behaves as the file
/// says, otherwise a description of the first mismatch.
pub fn check(file: &[u8]) -> Result<(), String> {
    parse(file)?.check()
}

/// The result of opening an object, reduced to what vectors compare.
type Outcome = Result<Opened, Error>;

#[derive(PartialEq)]
struct Opened {
    sha256: [u8; 32],
    metadata: Option<SealedMetadata>,
    parts: Option<(u32, u64, u64)>,
}

impl Vector<'_> {
    pub fn check(&self) -> Result<(), String> {
        if self.form == Form::Protected {
            return self.check_protected();
        }
        let identities = self
            .identities
            .iter()
            .enumerate()
            .map(|(i, s)| Identity::parse(s).map_err(|e| format!("identity #{}: {e}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let whole = self.open_whole(&identities);
        for step in [1000, 65_553] {
            let sliced = self.open_sliced(&identities, step);
            if !same_outcome(&whole, &sliced) {
                return Err(format!(
                    "one-shot open gave {}, incremental open in {step}-byte slices gave {}",
                    describe(&whole),
                    describe(&sliced)
                ));
            }
        }
        self.compare(&whole)?;
        for range in &self.ranges {
            self.check_range(&identities, range)?;
        }
        Ok(())
    }

    fn compare(&self, outcome: &Outcome) -> Result<(), String> {
        let opened = match (outcome, self.expect) {
            (Ok(opened), Expect::Success) => opened,
            (Err(e), expect) if Expect::of_error(e) == Some(expect) => return Ok(()),
            _ => {
                return Err(format!(
                    "expected {}, got {}",
                    self.expect.as_str(),
                    describe(outcome)
                ))
            }
        };
        if Some(opened.sha256) != self.payload {
            return Err(format!("plaintext SHA-256 is {}", hex(&opened.sha256)));
        }
        if let Some(json) = self.metadata {
            let want: SealedMetadata =
                serde_json::from_str(json).map_err(|e| format!("`metadata` is not valid: {e}"))?;
            if opened.metadata.as_ref() != Some(&want) {
                return Err(format!("sealed metadata is {:?}", opened.metadata));
            }
        }
        if self.parts.is_some() && opened.parts != self.parts {
            return Err(format!("parts layout is {:?}", opened.parts));
        }
        Ok(())
    }

    /// The header (parsed) and the stored body, as a reader of this form sees them.
    fn split(&self) -> Result<(Header, &[u8]), Error> {
        match self.header {
            Some(value) => Ok((Header::from_metadata_value(value)?, self.body)),
            None => {
                let (header, used) = Header::parse_prefix(self.body)?
                    .ok_or(Error::Malformed("header is truncated"))?;
                Ok((header, &self.body[used..]))
            }
        }
    }

    fn open_whole(&self, identities: &[Identity]) -> Outcome {
        let opened = match self.header {
            Some(value) => open_body(
                &Header::from_metadata_value(value)?,
                identities,
                self.name,
                self.body,
            )?,
            None => open_file(identities, self.name, self.body)?,
        };
        Ok(summarize(&opened.envelope, &opened.plaintext))
    }

    /// Opens as a streaming reader would: the header from a growing prefix, then
    /// the body pushed through [`PayloadOpener`] `step` bytes at a time.
    fn open_sliced(&self, identities: &[Identity], step: usize) -> Outcome {
        let (header, body) = match self.header {
            Some(value) => (Header::from_metadata_value(value)?, self.body),
            None => {
                let mut seen = 0;
                loop {
                    seen = (seen + step).min(self.body.len());
                    match Header::parse_prefix(&self.body[..seen])? {
                        Some((header, used)) => break (header, &self.body[used..]),
                        None if seen == self.body.len() => {
                            return Err(Error::Malformed("header is truncated"))
                        }
                        None => {}
                    }
                }
            }
        };
        let envelope = Envelope::open(&header, identities, self.name)?;
        let mut opener = PayloadOpener::new(envelope);
        let mut plaintext = Vec::new();
        for piece in body.chunks(step) {
            opener.update(piece, &mut plaintext)?;
        }
        let envelope = opener.finish(&mut plaintext)?;
        Ok(summarize(&envelope, &plaintext))
    }

    fn check_range(&self, identities: &[Identity], range: &RangeCheck) -> Result<(), String> {
        let got = (|| {
            let (header, body) = self.split()?;
            let envelope = Envelope::open(&header, identities, self.name)?;
            let plan = RangePlan::new(envelope.parts(), body.len() as u64, range.start, range.end)?;
            let mut fetched = Vec::with_capacity(plan.pieces.len());
            for p in &plan.pieces {
                let slice =
                    |(a, b): (u64, u64)| body.get(a as usize..b as usize).ok_or(Error::Corrupt);
                fetched.push((slice(p.salt)?, slice(p.chunks)?));
            }
            plan.open(&envelope, &fetched)
        })();
        match (&got, &range.expect) {
            (Ok(bytes), Ok(want)) if sha256(bytes) == *want => Ok(()),
            (Err(e), Err(want)) if Expect::of_error(e) == Some(*want) => Ok(()),
            (Ok(bytes), _) => Err(format!(
                "range {}-{}: got {} bytes with SHA-256 {}",
                range.start,
                range.end,
                bytes.len(),
                hex(&sha256(bytes))
            )),
            (Err(e), _) => Err(format!(
                "range {}-{}: got error {e:?}",
                range.start, range.end
            )),
        }
    }

    fn check_protected(&self) -> Result<(), String> {
        let pass = Passphrase::new(self.passphrase.unwrap_or_default().to_owned());
        let outcome =
            passphrase::unprotect(self.body, &pass, &Argon2Params::CAP).map(|plaintext| Opened {
                sha256: sha256(&plaintext),
                metadata: None,
                parts: None,
            });
        if outcome.is_ok() && !passphrase::is_protected(self.body) {
            return Err("unprotect succeeded but is_protected says no".into());
        }
        self.compare(&outcome)
    }
}

fn summarize(envelope: &Envelope, plaintext: &[u8]) -> Opened {
    Opened {
        sha256: sha256(plaintext),
        metadata: envelope.metadata().cloned(),
        parts: envelope
            .parts()
            .map(|p| (p.count, p.part_size, p.last_size)),
    }
}

fn same_outcome(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => Expect::of_error(a) == Expect::of_error(b),
        _ => false,
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Ok(opened) => format!("success (plaintext SHA-256 {})", hex(&opened.sha256)),
        Err(e) => match Expect::of_error(e) {
            Some(kind) => format!("{} ({e})", kind.as_str()),
            None => format!("unexpected error {e:?}"),
        },
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_sha256(s: &str) -> Result<[u8; 32], String> {
    let bad = || format!("{s:?} is not a hex SHA-256");
    if s.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = s.get(2 * i..2 * i + 2).ok_or_else(bad)?;
        if !pair
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn parse_number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a decimal number"));
    }
    s.parse().map_err(|_| format!("{s:?} is out of range"))
}

fn parse_parts(s: &str) -> Result<(u32, u64, u64), String> {
    match s.split(' ').collect::<Vec<_>>()[..] {
        [count, size, last] => Ok((
            parse_number(count)?,
            parse_number(size)?,
            parse_number(last)?,
        )),
        _ => Err(format!(
            "parts: expects `<count> <part size> <last size>`, not {s:?}"
        )),
    }
}

fn parse_range(s: &str) -> Result<RangeCheck, String> {
    let (span, want) = s
        .split_once(' ')
        .ok_or_else(|| format!("range {s:?} lacks an expectation"))?;
    let (start, end) = span
        .split_once('-')
        .ok_or_else(|| format!("range {span:?} is not start-end"))?;
    let expect = if want.len() == 64 {
        Ok(parse_sha256(want)?)
    } else {
        Err(Expect::parse(want)?)
    };
    if expect == Err(Expect::Success) {
        return Err("a successful range gives its SHA-256, not `success`".into());
    }
    Ok(RangeCheck {
        start: parse_number(start)?,
        end: parse_number(end)?,
        expect,
    })
}

// ---------------------------------------------------------------------------------------
// Name-encryption vectors (tests/vectors/names/)

/// Checks one name-encryption vector (SECURITY.md §3.10). Same shape as object vectors
/// (`key: value` lines, an empty line) and no body:
///
/// | key | | meaning |
/// |---|---|---|
/// | `expect` | once | `success`, `corrupt`, `malformed` or `name too long` |
/// | `key` | once | the `R2SEAL-SYM-KEY-1…` the name key derives from |
/// | `key id` | once | the name key's id |
/// | `plain` | success, name too long | the plaintext object key |
/// | `stored` | success, corrupt, malformed | the stored (encrypted) key |
/// | `prefix` | any number (success) | `<plaintext prefix> -> <stored prefix> <partial or whole>` |
/// | `comment` | any number | free text |
///
/// `success`: `plain` encrypts to exactly `stored` and `stored` decrypts to `plain`.
/// `name too long`: `plain` encrypts to more than 1,024 bytes and is refused. The
/// failures: `stored` does not decrypt, with that error.
pub fn check_name_vector(file: &[u8]) -> Result<(), String> {
    use crate::names::{NameKey, MAX_STORED_KEY_LEN};
    let (fields, body) = parse_fields(file)?;
    if !body.is_empty() {
        return Err("a name vector has no body".into());
    }
    let one = |k: &str| -> Result<Option<&str>, String> {
        let mut it = fields.iter().filter(|(key, _)| *key == k).map(|(_, v)| *v);
        let v = it.next();
        if it.next().is_some() {
            return Err(format!("`{k}` given twice"));
        }
        Ok(v)
    };
    let expect = one("expect")?.ok_or("no `expect`")?;
    let sym = one("key")?.ok_or("no `key`")?;
    let id = one("key id")?.ok_or("no `key id`")?;
    let plain = one("plain")?;
    let stored = one("stored")?;
    for (k, _) in &fields {
        if ![
            "expect", "key", "key id", "plain", "stored", "prefix", "comment",
        ]
        .contains(k)
        {
            return Err(format!("unknown key `{k}`"));
        }
    }
    let sym = crate::keys::SymKey::parse(sym).map_err(|e| format!("key: {e}"))?;
    let nk = NameKey::from_sym_key(&sym);
    if nk.id().to_string() != id {
        return Err(format!("key id is {}, the file says {id}", nk.id()));
    }
    match (expect, plain, stored) {
        ("success", Some(plain), Some(stored)) => {
            let got = nk
                .encrypt_within(plain, MAX_STORED_KEY_LEN)
                .map_err(|e| format!("encrypting {plain:?}: {e}"))?;
            if got != stored {
                return Err(format!(
                    "{plain:?} encrypts to {got}, the file says {stored}"
                ));
            }
            let back = nk
                .decrypt(stored)
                .map_err(|e| format!("decrypting {stored}: {e}"))?;
            if back != plain {
                return Err(format!("{stored} decrypts to {back:?}, not {plain:?}"));
            }
            for (_, p) in fields.iter().filter(|(k, _)| *k == "prefix") {
                let (from, to) = p
                    .split_once(" -> ")
                    .ok_or("prefix: expected `A -> B kind`")?;
                let (to, kind) = to
                    .rsplit_once(' ')
                    .ok_or("prefix: expected `A -> B kind`")?;
                let lp = nk.list_prefix(from);
                let want_partial = match kind {
                    "partial" => true,
                    "whole" => false,
                    _ => return Err(format!("prefix: unknown kind {kind:?}")),
                };
                if lp.stored != to || lp.partial != want_partial {
                    return Err(format!(
                        "prefix {from:?} lists {} ({}), the file says {to} {kind}",
                        lp.stored, lp.partial
                    ));
                }
            }
            Ok(())
        }
        ("name too long", Some(plain), None) => {
            match nk.encrypt_within(plain, MAX_STORED_KEY_LEN) {
                Err(Error::NameTooLong { .. }) => Ok(()),
                other => Err(format!("expected name too long, got {other:?}")),
            }
        }
        (want @ ("corrupt" | "malformed"), None, Some(stored)) => {
            let got = nk.decrypt(stored);
            let ok = matches!(
                (&got, want),
                (Err(Error::Corrupt), "corrupt") | (Err(Error::Malformed(_)), "malformed")
            );
            if ok {
                Ok(())
            } else {
                Err(format!("expected {want}, got {got:?}"))
            }
        }
        _ => Err(format!(
            "expect {expect:?} with these fields is not a valid vector"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_body_verbatim() {
        let file = b"expect: corrupt\nform: file\nidentity: X\ncomment: a: b\n\n\nbody\n\n";
        let v = parse(file).unwrap();
        assert_eq!(v.expect, Expect::Corrupt);
        assert_eq!(v.comments, ["a: b"]);
        assert_eq!(v.body, b"\nbody\n\n");
    }

    #[test]
    fn rejects_what_would_disable_a_check() {
        for bad in [
            &b"expect: success\nform: file\nidentity: X\n\n"[..], // no payload
            b"expect: sucess\nform: file\nidentity: X\n\n",
            b"expect: corrupt\nform: file\nidentity: X\npayloda: 00\n\n",
            b"expect: corrupt\nexpect: success\nform: file\nidentity: X\n\n",
            b"expect: corrupt\nform: file\nidentity: X\n", // no empty line
            b"expect: corrupt\nform: metadata\nidentity: X\n\n", // no header
            b"expect: corrupt\nform: file\n\n",            // no identity
            b"expect: corrupt\nform: file\nidentity: X\nrange: 1-2 success\n\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn ranges_and_hashes_parse() {
        let h = "00".repeat(31) + "ff";
        assert_eq!(parse_sha256(&h).unwrap()[31], 0xff);
        assert!(parse_sha256(&h.to_uppercase().replace("FF", "fG")).is_err());
        let r = parse_range(&format!("5-70000 {h}")).unwrap();
        assert_eq!((r.start, r.end), (5, 70000));
        assert_eq!(
            parse_range("0-1 corrupt").unwrap().expect,
            Err(Expect::Corrupt)
        );
        assert!(parse_range("-1 corrupt").is_err());
        assert!(parse_range("1-+2 corrupt").is_err());
    }
}
