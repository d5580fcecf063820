//! The age v1 header: parse and serialize, in both of r2seal's forms.
//!
//! Owns the header *text* only (SECURITY.md §3.1). It never sees a key: the header
//! MAC is computed by `envelope`, which hands this module the bytes to MAC.
//!
//! Parsing is strict and canonical, as age requires: one space between arguments,
//! arguments of VCHAR, bodies in unpadded base64 wrapped at 64 columns with a final
//! short (possibly empty) line, and a 32-byte MAC. Anything else is `Malformed`.

use base64::{prelude::BASE64_STANDARD_NO_PAD, Engine};

use crate::Error;

/// First line of every age v1 file.
pub const VERSION_LINE: &str = "age-encryption.org/v1";
const VERSION_PREFIX: &str = "age-encryption.org/";
const STANZA_PREFIX: &str = "-> ";
const MAC_PREFIX: &str = "--- ";
const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";
const BODY_COLUMNS: usize = 64;
/// Length of the base64 encoding of the 32-byte header MAC.
const MAC_B64_LEN: usize = 43;

/// Largest header accepted in file form. Real headers are a few hundred bytes; the cap
/// keeps a hostile input from making us buffer without bound.
pub const MAX_HEADER_BYTES: usize = 256 * 1024;

/// The user-metadata key that carries the header in the metadata form
/// (`x-amz-meta-r2seal` over S3, `customMetadata.r2seal` in a Worker).
pub const METADATA_KEY: &str = "r2seal";
/// R2's limit on user metadata, keys and values together.
pub const R2_METADATA_LIMIT: usize = 8192;

/// Separator that stands for "\n" in the metadata form (HTTP header values cannot
/// carry newlines). It never occurs in a canonical header r2seal accepts: base64 and
/// the stanza arguments r2seal writes do not use it, and `encode_metadata` refuses
/// a header whose foreign stanza arguments contain it.
pub const METADATA_LINE_SEPARATOR: char = ';';

/// One recipient (or r2seal) stanza: `-> tag args…` and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stanza {
    pub tag: String,
    pub args: Vec<String>,
    pub body: Vec<u8>,
}

impl Stanza {
    /// age's own stanza type, for handing to age's identities.
    #[cfg(any(test, not(feature = "aws-lc")))]
    pub(crate) fn to_age(&self) -> age_core::format::Stanza {
        age_core::format::Stanza {
            tag: self.tag.clone(),
            args: self.args.clone(),
            body: self.body.clone(),
        }
    }
}

impl From<age_core::format::Stanza> for Stanza {
    fn from(s: age_core::format::Stanza) -> Self {
        Stanza {
            tag: s.tag,
            args: s.args,
            body: s.body,
        }
    }
}

/// A parsed age v1 header: the stanzas in order and the MAC that ends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub stanzas: Vec<Stanza>,
    pub mac: [u8; 32],
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Stanza bodies are ciphertext, but printing them helps nobody; keep Debug short.
        let tags: Vec<&str> = self.stanzas.iter().map(|s| s.tag.as_str()).collect();
        f.debug_struct("Header").field("stanzas", &tags).finish()
    }
}

/// Appends the canonical text of `stanzas` and the "---" that precedes the MAC.
/// These are exactly the bytes the header MAC covers.
pub fn write_mac_input(stanzas: &[Stanza], out: &mut Vec<u8>) {
    out.extend_from_slice(VERSION_LINE.as_bytes());
    out.push(b'\n');
    for stanza in stanzas {
        out.extend_from_slice(STANZA_PREFIX.as_bytes());
        out.extend_from_slice(stanza.tag.as_bytes());
        for arg in &stanza.args {
            out.push(b' ');
            out.extend_from_slice(arg.as_bytes());
        }
        out.push(b'\n');
        let encoded = BASE64_STANDARD_NO_PAD.encode(&stanza.body);
        // Full 64-column lines, then a final short line (empty when the body fills the
        // last line exactly) — the canonical wrapping age requires.
        let mut rest = encoded.as_bytes();
        while rest.len() >= BODY_COLUMNS {
            out.extend_from_slice(&rest[..BODY_COLUMNS]);
            out.push(b'\n');
            rest = &rest[BODY_COLUMNS..];
        }
        out.extend_from_slice(rest);
        out.push(b'\n');
    }
    out.extend_from_slice(b"---");
}

impl Header {
    /// Serializes the header in file form: the exact bytes that precede the payload.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + 100 * self.stanzas.len());
        write_mac_input(&self.stanzas, &mut out);
        out.push(b' ');
        out.extend_from_slice(BASE64_STANDARD_NO_PAD.encode(self.mac).as_bytes());
        out.push(b'\n');
        out
    }

    /// The bytes covered by the header MAC.
    pub fn mac_input(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_mac_input(&self.stanzas, &mut out);
        out
    }

    /// Parses a file-form header from the start of `input`.
    ///
    /// Returns the header and the number of bytes it occupied, or `Ok(None)` when
    /// `input` ends before the header does (feed more bytes and call again).
    pub fn parse_prefix(input: &[u8]) -> Result<Option<(Header, usize)>, Error> {
        let mut lines = LineReader { input, pos: 0 };
        let first = match lines.next_line()? {
            Some(line) => line,
            // Plaintext (a JSON token, say) need not contain a newline: decide
            // "not sealed" as soon as the bytes cannot start a version line.
            None if !could_start_version_line(input) => return Err(Error::NotSealed),
            None => return incomplete(input),
        };
        check_version_line(first)?;

        let mut stanzas = Vec::new();
        loop {
            let line = match lines.next_line()? {
                Some(line) => line,
                None => return incomplete(input),
            };
            if let Some(rest) = line.strip_prefix(STANZA_PREFIX.as_bytes()) {
                let (tag, args) = parse_stanza_line(rest)?;
                let mut encoded = Vec::new();
                loop {
                    let body_line = match lines.next_line()? {
                        Some(line) => line,
                        None => return incomplete(input),
                    };
                    if body_line.len() > BODY_COLUMNS {
                        return Err(Error::Malformed("stanza body line too long"));
                    }
                    encoded.extend_from_slice(body_line);
                    if body_line.len() < BODY_COLUMNS {
                        break;
                    }
                }
                let body = BASE64_STANDARD_NO_PAD
                    .decode(&encoded)
                    .map_err(|_| Error::Malformed("stanza body is not canonical base64"))?;
                stanzas.push(Stanza { tag, args, body });
            } else if let Some(mac) = line.strip_prefix(MAC_PREFIX.as_bytes()) {
                if lines.pos > MAX_HEADER_BYTES {
                    return Err(Error::Malformed("header is larger than 256 KiB"));
                }
                let mac = decode_mac(mac)?;
                if stanzas.is_empty() {
                    return Err(Error::Malformed("header has no recipient stanzas"));
                }
                return Ok(Some((Header { stanzas, mac }, lines.pos)));
            } else {
                return Err(Error::Malformed("unexpected line in header"));
            }
        }
    }

    /// Parses a complete file-form header followed by nothing else.
    pub fn parse_exact(input: &[u8]) -> Result<Header, Error> {
        match Header::parse_prefix(input)? {
            Some((header, used)) if used == input.len() => Ok(header),
            Some(_) => Err(Error::Malformed("trailing bytes after header")),
            None => Err(Error::Malformed("header is truncated")),
        }
    }

    /// The metadata form: the file-form header on one line, with every "\n" replaced
    /// by [`METADATA_LINE_SEPARATOR`] and the final newline dropped. Printable ASCII
    /// only, so it survives as an HTTP header value (`x-amz-meta-r2seal`).
    pub fn to_metadata_value(&self) -> Result<String, Error> {
        let sep = METADATA_LINE_SEPARATOR;
        if self
            .stanzas
            .iter()
            .any(|s| s.tag.contains(sep) || s.args.iter().any(|a| a.contains(sep)))
        {
            return Err(Error::Malformed(
                "a stanza argument contains ';', which the metadata form cannot carry",
            ));
        }
        let bytes = self.to_file_bytes();
        let text = std::str::from_utf8(&bytes[..bytes.len() - 1]).expect("header is ASCII");
        Ok(text.replace('\n', &sep.to_string()))
    }

    /// The metadata form, refused with [`Error::HeaderTooLarge`] if the metadata entry
    /// (`r2seal` key plus value) would exceed `limit` bytes: check before writing.
    pub fn to_metadata_value_within(&self, limit: usize) -> Result<String, Error> {
        let value = self.to_metadata_value()?;
        let size = METADATA_KEY.len() + value.len();
        if size > limit {
            return Err(Error::HeaderTooLarge { size, limit });
        }
        Ok(value)
    }

    /// Parses the metadata form (see [`Header::to_metadata_value`]).
    pub fn from_metadata_value(value: &str) -> Result<Header, Error> {
        if value.contains('\n') {
            return Err(Error::Malformed("metadata header contains a newline"));
        }
        let mut text = value.replace(METADATA_LINE_SEPARATOR, "\n");
        text.push('\n');
        Header::parse_exact(text.as_bytes())
    }
}

fn incomplete(input: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    if input.len() > MAX_HEADER_BYTES {
        Err(Error::Malformed("header is larger than 256 KiB"))
    } else {
        Ok(None)
    }
}

fn could_start_version_line(input: &[u8]) -> bool {
    let n = input.len().min(VERSION_PREFIX.len());
    input[..n] == VERSION_PREFIX.as_bytes()[..n]
        || ARMOR_BEGIN
            .as_bytes()
            .starts_with(&input[..input.len().min(ARMOR_BEGIN.len())])
}

/// Distinguishes "not age at all", "age but a version we do not know" and "armored".
fn check_version_line(line: &[u8]) -> Result<(), Error> {
    if line == VERSION_LINE.as_bytes() {
        Ok(())
    } else if line.starts_with(VERSION_PREFIX.as_bytes()) {
        Err(Error::UnsupportedVersion)
    } else if line == ARMOR_BEGIN.as_bytes() {
        Err(Error::Malformed(
            "input is ASCII-armored; remove the armor first (age -d can)",
        ))
    } else {
        Err(Error::NotSealed)
    }
}

fn parse_stanza_line(rest: &[u8]) -> Result<(String, Vec<String>), Error> {
    let text = std::str::from_utf8(rest).map_err(|_| Error::Malformed("non-ASCII stanza"))?;
    let mut parts = text.split(' ');
    let tag = parts.next().unwrap_or_default();
    let args: Vec<String> = parts.map(str::to_owned).collect();
    if !is_vchar_string(&tag) || !args.iter().all(is_vchar_string) {
        return Err(Error::Malformed("invalid stanza argument"));
    }
    Ok((tag.to_owned(), args))
}

/// age's `1*VCHAR`: printable ASCII without space, at least one character.
fn is_vchar_string<S: AsRef<str>>(s: &S) -> bool {
    let s = s.as_ref();
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn decode_mac(encoded: &[u8]) -> Result<[u8; 32], Error> {
    if encoded.len() != MAC_B64_LEN {
        return Err(Error::Malformed("header MAC has the wrong length"));
    }
    let mut mac = [0u8; 32];
    let n = BASE64_STANDARD_NO_PAD
        .decode_slice(encoded, &mut mac)
        .map_err(|_| Error::Malformed("header MAC is not canonical base64"))?;
    debug_assert_eq!(n, 32);
    Ok(mac)
}

struct LineReader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> LineReader<'a> {
    /// The next "\n"-terminated line without its newline, or `None` if the input ends
    /// first. No line of a header ends past [`MAX_HEADER_BYTES`]: the search stops there,
    /// so a hostile input is refused before it is scanned or parsed any further (a 1 GiB
    /// "header" of one-character stanzas would otherwise become a vector of stanzas
    /// many times its size before the limit was checked).
    fn next_line(&mut self) -> Result<Option<&'a [u8]>, Error> {
        let rest = &self.input[self.pos..];
        let window = &rest[..rest.len().min(MAX_HEADER_BYTES.saturating_sub(self.pos))];
        match window.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = &rest[..end];
                if line.contains(&b'\r') {
                    return Err(Error::Malformed("header contains a carriage return"));
                }
                self.pos += end + 1;
                Ok(Some(line))
            }
            None if window.len() < rest.len() => {
                Err(Error::Malformed("header is larger than 256 KiB"))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            stanzas: vec![
                Stanza {
                    tag: "X25519".into(),
                    args: vec!["abc".into()],
                    body: vec![7; 32],
                },
                Stanza {
                    tag: "r2seal-name".into(),
                    args: vec![],
                    body: vec![1; 48], // 64 base64 chars: exercises the empty final line
                },
            ],
            mac: [9; 32],
        }
    }

    #[test]
    fn file_form_round_trips() {
        let header = sample();
        let bytes = header.to_file_bytes();
        let (parsed, used) = Header::parse_prefix(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(parsed, header);
    }

    #[test]
    fn metadata_form_round_trips_and_is_one_line() {
        let header = sample();
        let value = header.to_metadata_value().unwrap();
        assert!(!value.contains('\n'));
        assert!(value.bytes().all(|b| (0x20..0x7f).contains(&b)));
        assert_eq!(Header::from_metadata_value(&value).unwrap(), header);
    }

    #[test]
    fn metadata_budget_is_enforced() {
        let header = sample();
        let value = header.to_metadata_value().unwrap();
        let exact = METADATA_KEY.len() + value.len();
        assert!(header.to_metadata_value_within(exact).is_ok());
        assert_eq!(
            header.to_metadata_value_within(exact - 1),
            Err(Error::HeaderTooLarge {
                size: exact,
                limit: exact - 1
            })
        );
    }

    #[test]
    fn plaintext_without_newlines_is_not_sealed() {
        assert_eq!(
            Header::parse_prefix(b"{\"token\":\"abc\"}"),
            Err(Error::NotSealed)
        );
        assert_eq!(Header::parse_prefix(b"age-encryp"), Ok(None));
        assert_eq!(Header::parse_prefix(b""), Ok(None));
    }

    #[test]
    fn oversized_complete_headers_are_refused() {
        let mut h = sample();
        h.stanzas[1].body = vec![0; 300 * 1024];
        assert!(Header::parse_prefix(&h.to_file_bytes()).is_err());
        // Lines past the limit are never reached: neither a long line without an end
        // nor many small stanzas.
        let too_large = |input: &[u8]| {
            matches!(
                Header::parse_prefix(input),
                Err(Error::Malformed(m)) if m.contains("256 KiB")
            )
        };
        let mut endless = VERSION_LINE.as_bytes().to_vec();
        endless.extend_from_slice(b"\n-> X25519 ");
        endless.resize(MAX_HEADER_BYTES + 1, b'a');
        assert!(too_large(&endless));
        let mut many = VERSION_LINE.as_bytes().to_vec();
        many.push(b'\n');
        while many.len() <= 4 * MAX_HEADER_BYTES {
            many.extend_from_slice(b"-> a\n\n");
        }
        assert!(too_large(&many));
        // Exactly at the limit, a header still parses.
        let mut fits = sample();
        let room = MAX_HEADER_BYTES - fits.to_file_bytes().len();
        fits.stanzas[0].args.push("b".repeat(room - 1)); // and its space
        assert_eq!(fits.to_file_bytes().len(), MAX_HEADER_BYTES);
        let (parsed, used) = Header::parse_prefix(&fits.to_file_bytes())
            .unwrap()
            .unwrap();
        assert_eq!((parsed, used), (fits, MAX_HEADER_BYTES));
    }

    #[test]
    fn truncated_header_asks_for_more() {
        let bytes = sample().to_file_bytes();
        for cut in 0..bytes.len() {
            assert!(
                Header::parse_prefix(&bytes[..cut]).unwrap().is_none(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn rejects_non_canonical_forms() {
        let good = String::from_utf8(sample().to_file_bytes()).unwrap();
        let bad = [
            good.replace("-> X25519 abc", "-> X25519  abc"),
            good.replace("age-encryption.org/v1", "age-encryption.org/v2"),
            good.replace("---", "--"),
            good.replacen('\n', "\r\n", 1),
        ];
        for b in &bad {
            assert!(Header::parse_exact(b.as_bytes()).is_err(), "{b:?}");
        }
        assert!(matches!(
            Header::parse_exact(bad[1].as_bytes()),
            Err(Error::UnsupportedVersion)
        ));
    }
}
