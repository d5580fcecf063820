//! `seal`, `open` and `inspect` on local files and streams (the file form).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use r2seal::format::header::{Header, METADATA_LINE_SEPARATOR};
use r2seal::format::stream::PAYLOAD_NONCE_SIZE;
use r2seal::format::{Binding, Envelope};
use r2seal::keys::{Identity, Recipient};
use r2seal::seal::{plaintext_len, PayloadOpener, PayloadSealer, RangePlan};
use r2seal::store::{ByteRange, ContentRange};
use serde_json::json;

use crate::cli::{IdentityArgs, RecipientArgs};
use crate::io::{self as cio, print_line, Output, IO_BUFFER};
use crate::objects::parse_range;
use crate::pipeline;

/// R2's limit on user metadata, which the metadata form must fit.
const R2_METADATA_LIMIT: usize = 8192;
/// Ranged reads of files are opened in windows of this many plaintext bytes, so a
/// huge range never sits in memory at once.
const RANGE_WINDOW: u64 = 16 * 1024 * 1024;

/// A recipient given on the command line. An age recipient is public and is quoted in
/// errors; a secret key given by mistake never is (stderr ends up in CI logs). A valid
/// symmetric key is a recipient too: it seals to itself.
pub fn parse_recipient_arg(value: &str) -> Result<Recipient> {
    let trimmed = value.trim();
    let starts_with = |prefix: &str| {
        trimmed
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    if starts_with("AGE-SECRET-KEY-") {
        bail!("recipient: this is a secret key, not a recipient (give its recipient: r2seal recipient -i FILE)");
    }
    if starts_with("R2SEAL-SYM-KEY-") {
        // The parse error names the format, never the value.
        return Recipient::parse(trimmed).context("recipient: a symmetric secret key");
    }
    Recipient::parse(trimmed).with_context(|| format!("recipient {value:?}"))
}

pub fn resolve_recipients(args: &RecipientArgs, name: Option<&str>) -> Result<Vec<Recipient>> {
    let mut recipients = Vec::new();
    for r in &args.recipients {
        recipients.push(parse_recipient_arg(r)?);
    }
    recipients.extend(cio::load_recipient_files(&args.recipient_files)?);
    recipients.extend(
        cio::load_identity_files(&args.identities)?
            .iter()
            .map(Identity::to_recipient),
    );
    if !recipients.is_empty() {
        return Ok(recipients);
    }
    let Some(path) = &args.keyring.keyring else {
        bail!("no recipients: pass -r, -R or -i, or a keyring with --keyring / R2SEAL_KEYRING");
    };
    let ring = cio::LoadedKeyring::load(path)?.ring;
    let plan = ring.plan(name.unwrap_or(""))?;
    if plan.lacks_recovery {
        eprintln!("r2seal: warning: sealing without a recovery key: if these keys are lost, so is the data (mark one with `r2seal key add … --recovery`)");
    }
    Ok(plan.recipients)
}

/// Identities from `-i`, or else from the keyring (explicit files win, as for
/// recipients: a keyring in the environment never widens what `-i` asked for).
pub fn resolve_identities(args: &IdentityArgs) -> Result<Vec<Identity>> {
    if !args.identities.is_empty() {
        return cio::load_identity_files(&args.identities);
    }
    let Some(path) = &args.keyring.keyring else {
        bail!("no identities: pass -i FILE, or a keyring with --keyring / R2SEAL_KEYRING");
    };
    let identities = cio::LoadedKeyring::load(path)?.ring.identities();
    if identities.is_empty() {
        bail!("the keyring holds no key that can open objects (only public recipients, or revoked keys)");
    }
    Ok(identities)
}

pub fn seal(
    args: &RecipientArgs,
    name: Option<String>,
    output: Option<&Path>,
    input: Option<&Path>,
) -> Result<()> {
    let recipients = resolve_recipients(args, name.as_deref())?;
    let envelope = Envelope::seal(
        &recipients,
        Binding {
            name,
            ..Default::default()
        },
    )?;
    let reader = cio::open_input(input)?;
    let mut out = Output::new(output)?;
    out.write_all(&envelope.header().to_file_bytes())?;
    let (nonce, key) = PayloadSealer::new(&envelope).into_stream();
    out.write_all(&nonce)?;
    pipeline::run(pipeline::Mode::Seal, &key, reader, &mut out)?;
    out.commit()
}

/// Reads a file-form header from the front of `reader`; returns it and the bytes
/// read past it.
fn read_header(reader: &mut dyn Read) -> Result<(Header, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((header, used)) = Header::parse_prefix(&buf)? {
            return Ok((header, buf.split_off(used)));
        }
        let n = reader.read(&mut chunk).context("cannot read input")?;
        if n == 0 {
            if buf.is_empty() {
                return Err(r2seal::Error::NotSealed.into());
            }
            // Ask the parser for the precise reason an incomplete header is invalid.
            Header::parse_exact(&buf)?;
            bail!("input ended inside the header");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub fn open(
    args: &IdentityArgs,
    name: Option<&str>,
    range: Option<&str>,
    output: Option<&Path>,
    input: Option<&Path>,
) -> Result<()> {
    let identities = resolve_identities(args)?;
    let range = range.map(parse_range).transpose()?;
    let seekable = input.filter(|p| p.as_os_str() != "-" && p.is_file());
    if let (Some(range), Some(path)) = (range, seekable) {
        return open_range_of_file(&identities, name, range, output, path);
    }
    let mut reader = cio::open_input(input)?;
    let (header, rest) = read_header(&mut reader)?;
    let envelope = Envelope::open(&header, &identities, name)?;
    if range.is_none() && envelope.parts().is_none() {
        // The common case, a whole single-stream file: on every core.
        let mut reader: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(rest).chain(reader));
        let mut nonce = [0u8; PAYLOAD_NONCE_SIZE];
        if cio::read_full(&mut reader, &mut nonce).context("cannot read input")? < nonce.len() {
            return Err(r2seal::Error::Corrupt.into());
        }
        let key = envelope.payload_key(&nonce);
        let mut out = Output::new(output)?;
        pipeline::run(pipeline::Mode::Open, &key, reader, &mut out)?;
        return out.commit();
    }
    let mut opener = PayloadOpener::new(envelope);
    let mut out = Output::new(output)?;
    let mut window = RangeWindow::new(range)?;
    let mut plain = Vec::with_capacity(IO_BUFFER);
    opener.update(&rest, &mut plain)?;
    let mut input = cio::ReadAhead::new(reader);
    loop {
        if window.emit(&mut out, &plain)? {
            // A range is complete once its covering chunks authenticated.
            return out.commit();
        }
        plain.clear();
        let Some(buf) = input.next_buffer().context("cannot read input")? else {
            break;
        };
        opener.update(&buf, &mut plain)?;
        input.recycle(buf);
    }
    opener.finish(&mut plain)?;
    window.emit(&mut out, &plain)?;
    window.check_satisfied()?;
    out.commit()
}

/// Random access on a file: read only the header and the chunks covering the range.
fn open_range_of_file(
    identities: &[Identity],
    name: Option<&str>,
    range: ByteRange,
    output: Option<&Path>,
    path: &Path,
) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let file_len = file.metadata()?.len();
    let (header, rest) = read_header(&mut file)?;
    let header_len = header.to_file_bytes().len() as u64;
    debug_assert!(rest.len() as u64 <= file_len - header_len);
    let envelope = Envelope::open(&header, identities, name)?;
    let body_len = file_len - header_len;
    let total = plaintext_len(envelope.parts(), body_len)?;
    let ContentRange { start, end } = range
        .resolve(total)
        .ok_or_else(|| anyhow::anyhow!("range not satisfiable: the object has {total} bytes"))?;
    let mut out = Output::new(output)?;
    let mut window_start = start;
    while window_start <= end {
        let window_end = end.min(window_start + RANGE_WINDOW - 1);
        let plan = RangePlan::new(envelope.parts(), body_len, window_start, window_end)?;
        let mut fetched = Vec::with_capacity(plan.pieces.len());
        for piece in &plan.pieces {
            let salt = read_at(
                &mut file,
                header_len + piece.salt.0,
                piece.salt.1 - piece.salt.0,
            )?;
            let chunks = read_at(
                &mut file,
                header_len + piece.chunks.0,
                piece.chunks.1 - piece.chunks.0,
            )?;
            fetched.push((salt, chunks));
        }
        let views: Vec<(&[u8], &[u8])> = fetched.iter().map(|(s, c)| (&s[..], &c[..])).collect();
        out.write_all(&plan.open(&envelope, &views)?)?;
        window_start = window_end + 1;
    }
    out.commit()
}

fn read_at(file: &mut File, offset: u64, len: u64) -> Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf)
        .context("input changed or ended while reading")?;
    Ok(buf)
}

/// Slices a streamed plaintext to a range (for inputs that cannot seek).
struct RangeWindow {
    range: Option<(u64, u64)>,
    position: u64,
    emitted_any: bool,
}

impl RangeWindow {
    fn new(range: Option<ByteRange>) -> Result<RangeWindow> {
        let range = match range {
            None => None,
            Some(ByteRange::Inclusive { start, end }) => Some((start, end)),
            Some(ByteRange::From(start)) => Some((start, u64::MAX)),
            Some(ByteRange::Suffix(_)) => {
                bail!("a suffix range (-N) needs a file input, not a stream")
            }
        };
        Ok(RangeWindow {
            range,
            position: 0,
            emitted_any: false,
        })
    }

    /// Writes the part of `plain` inside the range; true once the range is done.
    fn emit(&mut self, out: &mut Output, plain: &[u8]) -> Result<bool> {
        let from = self.position;
        self.position += plain.len() as u64;
        let Some((start, end)) = self.range else {
            out.write_all(plain)?;
            return Ok(false);
        };
        let lo = start.max(from);
        let hi = end.saturating_add(1).min(self.position);
        if lo < hi {
            out.write_all(&plain[(lo - from) as usize..(hi - from) as usize])?;
            self.emitted_any = true;
        }
        Ok(self.position > end)
    }

    fn check_satisfied(&self) -> Result<()> {
        match self.range {
            Some(_) if !self.emitted_any => {
                bail!(
                    "range not satisfiable: the object has {} bytes",
                    self.position
                )
            }
            _ => Ok(()),
        }
    }
}

pub fn inspect(json_output: bool, input: Option<&PathBuf>) -> Result<()> {
    let mut reader = cio::open_input(input.map(PathBuf::as_path))?;
    let mut head = Vec::new();
    let mut probe = [0u8; 4096];
    let n = reader.read(&mut probe).context("cannot read input")?;
    head.extend_from_slice(&probe[..n]);
    let first_line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let metadata_form = head[..first_line_end].contains(&(METADATA_LINE_SEPARATOR as u8));
    let (header, form, body_len) = if metadata_form {
        reader.read_to_end(&mut head)?;
        let text = std::str::from_utf8(&head).context("metadata value is not text")?;
        (
            Header::from_metadata_value(text.trim_end())?,
            "metadata",
            None,
        )
    } else {
        let mut chained = std::io::Cursor::new(head).chain(reader);
        let (header, rest) = read_header(&mut chained)?;
        let mut count = rest.len() as u64;
        count += std::io::copy(&mut chained, &mut std::io::sink())?;
        (header, "file", Some(count))
    };
    let summary = summarize(&header, form, body_len)?;
    if json_output {
        print_line(format_args!("{}", serde_json::to_string_pretty(&summary)?))?;
    } else {
        print_summary(&summary)?;
    }
    Ok(())
}

fn summarize(header: &Header, form: &str, body_len: Option<u64>) -> Result<serde_json::Value> {
    let stanzas: Vec<serde_json::Value> = header
        .stanzas
        .iter()
        .map(|s| match s.tag.as_str() {
            "X25519" => json!({"type": "X25519", "recipient": "anonymous (age X25519)"}),
            "r2seal-sym" => json!({"type": "r2seal-sym", "key_id": s.args.first()}),
            "r2seal-name" => json!({"type": "r2seal-name", "bound": true}),
            "r2seal-meta" => json!({"type": "r2seal-meta", "sealed_bytes": s.body.len()}),
            "r2seal-parts" => json!({"type": "r2seal-parts", "count": s.args.first(), "part_size": s.args.get(1), "last_size": s.args.get(2)}),
            "r2seal-salts" => json!({"type": "r2seal-salts", "salts": s.body.len() / 16}),
            other => json!({"type": other, "args": s.args.len()}),
        })
        .collect();
    let parts = header.stanzas.iter().find(|s| s.tag == "r2seal-parts");
    let metadata_value = header.to_metadata_value().ok();
    let plaintext = match (body_len, parts) {
        (Some(len), None) => plaintext_len(None, len).ok(),
        (Some(_), Some(p)) => {
            // Unauthenticated without a key, but it is what a reader would expect.
            let n: Option<u64> = p.args.first().and_then(|a| a.parse().ok());
            let size: Option<u64> = p.args.get(1).and_then(|a| a.parse().ok());
            let last: Option<u64> = p.args.get(2).and_then(|a| a.parse().ok());
            match (n, size, last) {
                (Some(n), Some(size), Some(last)) if n > 0 => Some((n - 1) * size + last),
                _ => None,
            }
        }
        (None, _) => None,
    };
    Ok(json!({
        "form": form,
        "version": "age-encryption.org/v1",
        "stanzas": stanzas,
        "name_bound": header.stanzas.iter().any(|s| s.tag == "r2seal-name"),
        "sealed_metadata": header.stanzas.iter().any(|s| s.tag == "r2seal-meta"),
        "layout": if parts.is_some() { "parts" } else { "single stream" },
        "header_bytes": header.to_file_bytes().len(),
        "metadata_form_bytes": metadata_value.as_ref().map(String::len),
        "fits_r2_metadata": metadata_value.as_ref().map(|v| v.len() + "r2seal".len() <= R2_METADATA_LIMIT),
        "body_bytes": body_len,
        "plaintext_bytes": plaintext,
    }))
}

fn print_summary(v: &serde_json::Value) -> Result<()> {
    print_line(format_args!(
        "form:            {}",
        v["form"].as_str().unwrap_or_default()
    ))?;
    print_line(format_args!(
        "version:         {}",
        v["version"].as_str().unwrap_or_default()
    ))?;
    print_line(format_args!(
        "layout:          {}",
        v["layout"].as_str().unwrap_or_default()
    ))?;
    print_line(format_args!("name bound:      {}", v["name_bound"]))?;
    print_line(format_args!("sealed metadata: {}", v["sealed_metadata"]))?;
    print_line(format_args!("stanzas:"))?;
    for s in v["stanzas"].as_array().into_iter().flatten() {
        let detail = match s["type"].as_str().unwrap_or_default() {
            "X25519" => "anonymous age recipient".to_owned(),
            "r2seal-sym" => format!("symmetric key id {}", s["key_id"].as_str().unwrap_or("?")),
            "r2seal-name" => "name binding".to_owned(),
            "r2seal-meta" => format!("sealed metadata, {} bytes", s["sealed_bytes"]),
            "r2seal-parts" => format!(
                "{} parts of {} bytes, last {}",
                s["count"].as_str().unwrap_or("?"),
                s["part_size"].as_str().unwrap_or("?"),
                s["last_size"].as_str().unwrap_or("?")
            ),
            "r2seal-salts" => format!("{} part salts", s["salts"]),
            _ => "not used by r2seal (ignored)".to_owned(),
        };
        print_line(format_args!(
            "  {:<14} {detail}",
            s["type"].as_str().unwrap_or_default()
        ))?;
    }
    print_line(format_args!("header bytes:    {}", v["header_bytes"]))?;
    if let Some(n) = v["metadata_form_bytes"].as_u64() {
        let fits = if v["fits_r2_metadata"].as_bool() == Some(true) {
            "fits"
        } else {
            "does NOT fit"
        };
        print_line(format_args!(
            "metadata form:   {n} bytes ({fits} R2's 8,192-byte metadata limit)"
        ))?;
    }
    if let Some(n) = v["body_bytes"].as_u64() {
        print_line(format_args!("body bytes:      {n}"))?;
    }
    match v["plaintext_bytes"].as_u64() {
        Some(n) => print_line(format_args!("plaintext bytes: {n}"))?,
        None if v["body_bytes"].is_u64() => print_line(format_args!(
            "plaintext bytes: (no valid object has this length)"
        ))?,
        None => {}
    }
    Ok(())
}
