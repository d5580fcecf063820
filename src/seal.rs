//! Incremental sealing and opening: the state machines every shell drives (CLI,
//! stores, the Worker). Push bytes in, take bytes out; no I/O, no async.
//!
//! This is the one place the envelope and the stream meet (SECURITY.md §3.3–§3.6).
//! Openers release a chunk only after its tag verified, and report truncation,
//! extension and reordering as [`Error::Corrupt`].

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::format::envelope::{Binding, Envelope, PartsLayout};
use crate::format::header::Header;
use crate::format::stream::{
    self, chunk_span, open_chunks, seal_chunks, StreamKey, CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE,
    PAYLOAD_NONCE_SIZE,
};
use crate::keys::{Identity, Recipient};
use crate::Error;

/// The STREAM half of a sealer: chunks sealed as plaintext arrives, the final one
/// (flagged last) only at [`finish`](Self::finish). Shared by [`PayloadSealer`] and
/// [`PartSealer`], which differ only in the key and the 16 bytes written before it.
struct ChunkSealer {
    key: StreamKey,
    next_chunk: u64,
    pending: Zeroizing<Vec<u8>>,
}

impl ChunkSealer {
    fn new(key: StreamKey) -> Self {
        ChunkSealer {
            key,
            next_chunk: 0,
            pending: Zeroizing::new(Vec::new()),
        }
    }

    fn is_started(&self) -> bool {
        self.next_chunk > 0 || !self.pending.is_empty()
    }

    fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        // A full chunk may be the last one: seal only chunks that more bytes follow.
        // Whole chunks are sealed straight from `input`; only a tail is buffered.
        if !self.pending.is_empty() {
            let need = CHUNK_SIZE - self.pending.len();
            if input.len() <= need {
                self.pending.extend_from_slice(input);
                return;
            }
            self.pending.extend_from_slice(&input[..need]);
            input = &input[need..];
            seal_chunks(&self.key, self.next_chunk, false, &self.pending, out);
            self.next_chunk += 1;
            self.pending.clear();
        }
        let sealable = (input.len().saturating_sub(1) / CHUNK_SIZE) * CHUNK_SIZE;
        if sealable > 0 {
            seal_chunks(&self.key, self.next_chunk, false, &input[..sealable], out);
            self.next_chunk += (sealable / CHUNK_SIZE) as u64;
        }
        self.pending.extend_from_slice(&input[sealable..]);
    }

    fn finish(self, out: &mut Vec<u8>) {
        seal_chunks(&self.key, self.next_chunk, true, &self.pending, out);
    }
}

/// Seals a single-stream payload: nonce ‖ STREAM chunks.
///
/// Feed plaintext with [`update`](Self::update) in any slicing; call
/// [`finish`](Self::finish) once at the end. The output is the body of the metadata
/// form, or what follows the header in the file form.
pub struct PayloadSealer {
    nonce: [u8; PAYLOAD_NONCE_SIZE],
    nonce_written: bool,
    chunks: ChunkSealer,
}

impl std::fmt::Debug for PayloadSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadSealer")
            .field("next_chunk", &self.chunks.next_chunk)
            .finish_non_exhaustive()
    }
}

impl PayloadSealer {
    /// # Panics
    /// If `envelope` is not fresh (it came from `open` or `rewrap`): sealing a second
    /// payload under one file key is a programming error, like nonce reuse.
    pub fn new(envelope: &Envelope) -> Self {
        assert!(
            envelope.is_fresh(),
            "a file key may seal only one payload: use Envelope::seal"
        );
        let mut nonce = [0u8; PAYLOAD_NONCE_SIZE];
        crate::random::fill(&mut nonce);
        Self::with_nonce_for_vectors(envelope, nonce)
    }

    /// A sealer with a caller-chosen nonce: for known-answer vectors only. Reusing a
    /// nonce with the same file key reuses the payload key.
    #[doc(hidden)]
    pub fn with_nonce_for_vectors(envelope: &Envelope, nonce: [u8; PAYLOAD_NONCE_SIZE]) -> Self {
        PayloadSealer {
            nonce,
            nonce_written: false,
            chunks: ChunkSealer::new(envelope.payload_key(&nonce)),
        }
    }

    /// For shells that seal chunks themselves, on threads of their own (the CLI): the
    /// nonce that starts the payload and the key its chunks are sealed under with
    /// [`stream::seal_run_in_place`], chunk indices counting from 0 and only the
    /// final chunk flagged last.
    ///
    /// # Panics
    /// After `update`: the sealer has already started the payload.
    pub fn into_stream(self) -> ([u8; PAYLOAD_NONCE_SIZE], StreamKey) {
        assert!(
            !self.nonce_written && !self.chunks.is_started(),
            "into_stream on a started sealer"
        );
        (self.nonce, self.chunks.key)
    }

    pub fn update(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.write_nonce(out);
        self.chunks.update(input, out);
    }

    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.write_nonce(out);
        self.chunks.finish(out);
    }

    fn write_nonce(&mut self, out: &mut Vec<u8>) {
        if !self.nonce_written {
            out.extend_from_slice(&self.nonce);
            self.nonce_written = true;
        }
    }
}

/// Seals one part of a parts-layout object (SECURITY.md §3.5) incrementally:
/// `salt ‖ STREAM`, under a key bound to `part_number` and a fresh salt. Feed the
/// part's plaintext with [`update`](Self::update) in any slicing and call
/// [`finish`](Self::finish) once at its end; the output is what [`seal_part`] returns
/// for the same salt. `update` never writes the final chunk, so a part whose input
/// fails before `finish` is never complete. The final header commits to
/// [`salt`](Self::salt).
pub struct PartSealer {
    salt: [u8; PAYLOAD_NONCE_SIZE],
    salt_written: bool,
    chunks: ChunkSealer,
}

impl std::fmt::Debug for PartSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartSealer")
            .field("next_chunk", &self.chunks.next_chunk)
            .finish_non_exhaustive()
    }
}

impl PartSealer {
    /// A sealer for part `part_number` (from 1) under a fresh random salt. Parts can be
    /// sealed in any order, in parallel, and re-sealed on retry (a new salt each time).
    pub fn new(envelope: &Envelope, part_number: u32) -> Self {
        let mut salt = [0u8; PAYLOAD_NONCE_SIZE];
        crate::random::fill(&mut salt);
        Self::with_salt_for_vectors(envelope, part_number, salt)
    }

    /// A sealer with a caller-chosen salt: for known-answer vectors and tests only.
    /// Reusing a salt for the same part number and file key reuses the part's key.
    #[doc(hidden)]
    pub fn with_salt_for_vectors(
        envelope: &Envelope,
        part_number: u32,
        salt: [u8; PAYLOAD_NONCE_SIZE],
    ) -> Self {
        PartSealer {
            salt,
            salt_written: false,
            chunks: ChunkSealer::new(envelope.part_key(part_number, &salt)),
        }
    }

    /// The salt the part's key comes from: what the final header commits to.
    pub fn salt(&self) -> [u8; PAYLOAD_NONCE_SIZE] {
        self.salt
    }

    pub fn update(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.write_salt(out);
        self.chunks.update(input, out);
    }

    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.write_salt(out);
        self.chunks.finish(out);
    }

    fn write_salt(&mut self, out: &mut Vec<u8>) {
        if !self.salt_written {
            out.extend_from_slice(&self.salt);
            self.salt_written = true;
        }
    }
}

/// Seals one part of a parts-layout object held in memory: [`PartSealer`] in one go.
/// Returns the salt the final header must commit to, and the part's stored bytes.
pub fn seal_part(
    envelope: &Envelope,
    part_number: u32,
    plaintext: &[u8],
) -> ([u8; PAYLOAD_NONCE_SIZE], Vec<u8>) {
    let mut sealer = PartSealer::new(envelope, part_number);
    let salt = sealer.salt();
    let mut out = Vec::with_capacity(stream::payload_len(plaintext.len() as u64) as usize);
    sealer.update(plaintext, &mut out);
    sealer.finish(&mut out);
    (salt, out)
}

struct Segment {
    key: StreamKey,
    next_chunk: u64,
    /// STREAM bytes left in this segment, when known (parts); `None` for a single
    /// stream, whose end is wherever the input ends.
    remaining: Option<u64>,
}

/// Opens a payload (either layout) incrementally. Every byte it writes to `out` has
/// been authenticated; the caller learns of truncation from [`finish`](Self::finish).
pub struct PayloadOpener {
    envelope: Envelope,
    pending: Vec<u8>,
    segment: Option<Segment>,
    next_part: u32,
    salts: Sha256,
    opened_any_chunk: bool,
}

impl std::fmt::Debug for PayloadOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadOpener")
            .field("next_part", &self.next_part)
            .finish_non_exhaustive()
    }
}

impl PayloadOpener {
    pub fn new(envelope: Envelope) -> Self {
        PayloadOpener {
            envelope,
            pending: Vec::new(),
            segment: None,
            next_part: 0,
            salts: Sha256::new(),
            opened_any_chunk: false,
        }
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    pub fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        if !self.pending.is_empty() {
            // Complete the buffered tail (at most a chunk and a nonce) with only as much of
            // `input` as opening it needs, rather than copying all of `input` behind it.
            let mut pending = std::mem::take(&mut self.pending);
            let held = pending.len();
            let borrowed = input
                .len()
                .min(2 * ENCRYPTED_CHUNK_SIZE + PAYLOAD_NONCE_SIZE);
            pending.extend_from_slice(&input[..borrowed]);
            let consumed = self.process(&pending, false, out)?;
            if consumed < held {
                pending.drain(..consumed);
                pending.extend_from_slice(&input[borrowed..]);
                self.pending = pending;
                return Ok(());
            }
            // The tail is opened; whatever of the borrowed bytes was not is read again
            // from `input` below.
            input = &input[consumed - held..];
            pending.clear();
            self.pending = pending;
        }
        // Whole chunks are opened straight from `input`; only a tail is buffered.
        let consumed = self.process(input, false, out)?;
        self.pending.extend_from_slice(&input[consumed..]);
        Ok(())
    }

    /// Ends the input. Fails if the payload was truncated or had trailing bytes;
    /// on success returns the envelope (its metadata, layout) for the caller.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<Envelope, Error> {
        let pending = std::mem::take(&mut self.pending);
        let consumed = self.process(&pending, true, out)?;
        let done = match self.envelope.parts() {
            Some(layout) => self.segment.is_none() && self.next_part == layout.count,
            None => self.opened_any_chunk && self.segment.is_some(),
        };
        if consumed != pending.len() || !done {
            return Err(Error::Corrupt);
        }
        Ok(self.envelope)
    }

    /// Opens what it can of `data`; returns how many bytes it consumed.
    fn process(&mut self, data: &[u8], at_end: bool, out: &mut Vec<u8>) -> Result<usize, Error> {
        let mut consumed = 0;
        loop {
            let avail = &data[consumed..];
            let Some(segment) = self.segment.as_mut() else {
                if avail.len() < PAYLOAD_NONCE_SIZE {
                    return Ok(consumed);
                }
                let salt: [u8; PAYLOAD_NONCE_SIZE] =
                    avail[..PAYLOAD_NONCE_SIZE].try_into().expect("16 bytes");
                self.segment = Some(self.start_segment(&salt)?);
                consumed += PAYLOAD_NONCE_SIZE;
                continue;
            };
            let (openable, ends_segment) = match segment.remaining {
                // Single stream: hold back the final chunk until the input ends.
                None if at_end => (avail.len(), true),
                None => (
                    (avail.len().saturating_sub(1) / ENCRYPTED_CHUNK_SIZE) * ENCRYPTED_CHUNK_SIZE,
                    false,
                ),
                // Parts: every segment's length is known, so is its last chunk.
                Some(remaining) => {
                    let take = (avail.len() as u64).min(remaining) as usize;
                    if take as u64 == remaining {
                        (take, true)
                    } else {
                        ((take / ENCRYPTED_CHUNK_SIZE) * ENCRYPTED_CHUNK_SIZE, false)
                    }
                }
            };
            if openable == 0 {
                if at_end && segment.remaining.is_none() && !self.opened_any_chunk {
                    return Err(Error::Corrupt);
                }
                return Ok(consumed);
            }
            open_chunks(
                &segment.key,
                segment.next_chunk,
                ends_segment,
                &avail[..openable],
                out,
            )?;
            segment.next_chunk += openable.div_ceil(ENCRYPTED_CHUNK_SIZE) as u64;
            consumed += openable;
            self.opened_any_chunk = true;
            match segment.remaining {
                None => return Ok(consumed),
                Some(_) if ends_segment => self.segment = None,
                Some(remaining) => segment.remaining = Some(remaining - openable as u64),
            }
        }
    }

    fn start_segment(&mut self, salt: &[u8; PAYLOAD_NONCE_SIZE]) -> Result<Segment, Error> {
        match self.envelope.parts().copied() {
            None => {
                if self.opened_any_chunk {
                    return Err(Error::Corrupt);
                }
                Ok(Segment {
                    key: self.envelope.payload_key(salt),
                    next_chunk: 0,
                    remaining: None,
                })
            }
            Some(layout) => {
                if self.next_part >= layout.count {
                    return Err(Error::Corrupt); // bytes after the last part
                }
                self.salts.update(salt);
                let index = self.next_part;
                self.next_part += 1;
                if self.next_part == layout.count {
                    // All salts seen before the final part releases a byte: a part
                    // swapped for another upload attempt of it fails here.
                    let digest: [u8; 32] = std::mem::take(&mut self.salts).finalize().into();
                    if !bool::from(subtle::ConstantTimeEq::ct_eq(
                        &digest[..],
                        &layout.salts_digest[..],
                    )) {
                        return Err(Error::Corrupt);
                    }
                }
                Ok(Segment {
                    key: self.envelope.part_key(index + 1, salt),
                    next_chunk: 0,
                    remaining: Some(stream::stream_len(layout.plaintext_size(index))),
                })
            }
        }
    }
}

/// The plaintext length of a stored body under `envelope`'s layout: a pure
/// function of the stored length (SECURITY.md §3.4), so listings show true sizes.
pub fn plaintext_len(parts: Option<&PartsLayout>, stored_len: u64) -> Result<u64, Error> {
    match parts {
        None => stream::plaintext_len_of_payload(stored_len),
        Some(layout) if layout.stored_len() == stored_len => Ok(layout.plaintext_len()),
        Some(_) => Err(Error::Corrupt),
    }
}

/// One contiguous piece of a ranged read: a salt (or nonce) and the chunks after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangePiece {
    /// Stored bytes of the nonce/salt that keys these chunks, half-open.
    pub salt: (u64, u64),
    /// Stored bytes of the covering chunks, half-open.
    pub chunks: (u64, u64),
    part_number: Option<u32>,
    first_chunk: u64,
    ends_segment: bool,
    skip: u64,
    take: u64,
}

/// A plan for reading plaintext bytes `start..=end` of a stored object: which stored
/// byte ranges to fetch (only the chunks that cover the range, plus their salts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangePlan {
    pub pieces: Vec<RangePiece>,
    /// The plaintext range actually served, inclusive (end clamped to the object).
    pub start: u64,
    pub end: u64,
    pub total: u64,
}

impl RangePlan {
    /// Plans an inclusive range over a body of `stored_len` bytes.
    pub fn new(
        parts: Option<&PartsLayout>,
        stored_len: u64,
        start: u64,
        end: u64,
    ) -> Result<RangePlan, Error> {
        let total = plaintext_len(parts, stored_len)?;
        if start > end || start >= total {
            return Err(Error::RangeNotSatisfiable);
        }
        let end = end.min(total - 1);
        let mut pieces = Vec::new();
        match parts {
            None => pieces.push(piece(None, 0, total, start, end)?),
            Some(layout) => {
                let mut stored_offset = 0;
                let mut plain_offset = 0;
                for index in 0..layout.count {
                    let size = layout.plaintext_size(index);
                    let (lo, hi) = (plain_offset, plain_offset + size);
                    if size > 0 && start < hi && end >= lo {
                        pieces.push(piece(
                            Some(index + 1),
                            stored_offset,
                            size,
                            start.max(lo) - lo,
                            end.min(hi - 1) - lo,
                        )?);
                    }
                    stored_offset += layout.stored_size(index);
                    plain_offset = hi;
                }
            }
        }
        Ok(RangePlan {
            pieces,
            start,
            end,
            total,
        })
    }

    /// The pieces' salt and chunk bytes cut from a whole stored body held in memory
    /// (tests, tools); `None` if the body is shorter than the plan expects.
    pub fn slices<'a>(&self, body: &'a [u8]) -> Option<Vec<(&'a [u8], &'a [u8])>> {
        let cut = |(a, b): (u64, u64)| body.get(a as usize..b as usize);
        self.pieces
            .iter()
            .map(|p| Some((cut(p.salt)?, cut(p.chunks)?)))
            .collect()
    }

    /// Opens the fetched bytes: for each piece, its salt and its chunk bytes.
    pub fn open(
        &self,
        envelope: &Envelope,
        fetched: &[(&[u8], &[u8])],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let mut out = Zeroizing::new(Vec::new());
        let wanted = self.open_into(envelope, fetched, &mut out)?;
        out.truncate(wanted.end);
        out.drain(..wanted.start);
        Ok(out)
    }

    /// Like [`open`](Self::open), without copying: appends the plaintext of every
    /// covering chunk to `out` and returns where the requested bytes lie in it (only
    /// the first chunk has bytes before them, only the last after). On an error, `out`
    /// is as it was.
    pub fn open_into(
        &self,
        envelope: &Envelope,
        fetched: &[(&[u8], &[u8])],
        out: &mut Vec<u8>,
    ) -> Result<std::ops::Range<usize>, Error> {
        if fetched.len() != self.pieces.len() {
            return Err(Error::Corrupt);
        }
        let base = out.len();
        // The chunks' stored size: a little more than their plaintext, one allocation.
        let stored: u64 = self.pieces.iter().map(|p| p.chunks.1 - p.chunks.0).sum();
        out.reserve(stored as usize);
        let mut wanted = None::<std::ops::Range<usize>>;
        for (p, (salt, chunks)) in self.pieces.iter().zip(fetched) {
            let opened = (|| {
                let salt: &[u8; PAYLOAD_NONCE_SIZE] =
                    (*salt).try_into().map_err(|_| Error::Corrupt)?;
                if chunks.len() as u64 != p.chunks.1 - p.chunks.0 {
                    return Err(Error::Corrupt);
                }
                let key = match p.part_number {
                    None => envelope.payload_key(salt),
                    Some(n) => envelope.part_key(n, salt),
                };
                let at = out.len();
                open_chunks(&key, p.first_chunk, p.ends_segment, chunks, out)?;
                let from = at + p.skip as usize;
                let to = from + p.take as usize;
                // Pieces abut: bytes may be cut before the first and after the last only.
                match &mut wanted {
                    None => wanted = Some(from..to),
                    Some(w) if w.end == at && from == at => w.end = to,
                    Some(_) => return Err(Error::Corrupt),
                }
                Ok(())
            })();
            if let Err(e) = opened {
                out[base..].fill(0);
                out.truncate(base);
                return Err(e);
            }
        }
        let wanted = wanted.ok_or(Error::Corrupt)?;
        if wanted.end > out.len() {
            out[base..].fill(0);
            out.truncate(base);
            return Err(Error::Corrupt);
        }
        Ok(wanted)
    }
}

fn piece(
    part: Option<u32>,
    stored_offset: u64,
    seg_plain: u64,
    start: u64,
    end: u64,
) -> Result<RangePiece, Error> {
    let span = chunk_span(seg_plain, start, end)?;
    let base = stored_offset + PAYLOAD_NONCE_SIZE as u64;
    Ok(RangePiece {
        salt: (stored_offset, base),
        chunks: (base + span.stream_start, base + span.stream_end),
        part_number: part,
        first_chunk: span.first_chunk,
        ends_segment: span.last_chunk + 1 == stream::chunk_count(seg_plain),
        skip: span.skip,
        take: end - start + 1,
    })
}

/// A fully opened file-form object.
#[derive(Debug)]
pub struct Opened {
    pub envelope: Envelope,
    pub plaintext: Zeroizing<Vec<u8>>,
}

/// Seals `plaintext` into a complete file-form object (an age v1 file).
pub fn seal_file(
    recipients: &[Recipient],
    binding: Binding,
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    let envelope = Envelope::seal(recipients, binding)?;
    let mut out = envelope.header().to_file_bytes();
    out.reserve(stream::payload_len(plaintext.len() as u64) as usize);
    let mut sealer = PayloadSealer::new(&envelope);
    sealer.update(plaintext, &mut out);
    sealer.finish(&mut out);
    Ok(out)
}

/// Opens a complete file-form object held in memory.
pub fn open_file(
    identities: &[Identity],
    name: Option<&str>,
    file: &[u8],
) -> Result<Opened, Error> {
    let (header, used) = Header::parse_prefix(file)?.ok_or(if file.is_empty() {
        Error::NotSealed
    } else {
        Error::Malformed("header is truncated")
    })?;
    open_body(&header, identities, name, &file[used..])
}

/// Opens a metadata-form object: the header from metadata, the body as stored.
pub fn open_body(
    header: &Header,
    identities: &[Identity],
    name: Option<&str>,
    body: &[u8],
) -> Result<Opened, Error> {
    let envelope = Envelope::open(header, identities, name)?;
    let mut plaintext = Zeroizing::new(Vec::with_capacity(body.len()));
    let mut opener = PayloadOpener::new(envelope);
    opener.update(body, &mut plaintext)?;
    let envelope = opener.finish(&mut plaintext)?;
    Ok(Opened {
        envelope,
        plaintext,
    })
}

/// Seals `plaintext` as the parts layout, `part_size` plaintext bytes per part:
/// what a writer that learns the part count only at the end produces. For tests,
/// vectors and tools; real uploaders call [`seal_part`] per part. The header does not
/// carry the part salts (`r2seal-salts`; `binding.part_salts` is ignored): it is that
/// of an object of more than [`PartsLayout::MAX_SALTS_IN_HEADER`] parts, or written
/// before that stanza. Rewrap the envelope with the salts for the other kind.
pub fn seal_parts(
    recipients: &[Recipient],
    binding: Binding,
    plaintext: &[u8],
    part_size: usize,
) -> Result<(Header, Vec<u8>), Error> {
    let pending = Envelope::seal(
        recipients,
        Binding {
            parts: None,
            part_salts: None,
            ..binding.clone()
        },
    )?;
    let pieces: Vec<&[u8]> = if plaintext.is_empty() {
        vec![&[][..]]
    } else {
        plaintext.chunks(part_size.max(1)).collect()
    };
    let mut body = Vec::new();
    let mut salts = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let (salt, bytes) = seal_part(&pending, i as u32 + 1, piece);
        salts.push(salt);
        body.extend_from_slice(&bytes);
    }
    let sizes: Vec<u64> = pieces.iter().map(|p| p.len() as u64).collect();
    let layout = PartsLayout::new(&sizes, &salts)?;
    let final_envelope = pending.rewrap(
        recipients,
        Binding {
            parts: Some(layout),
            part_salts: None,
            ..binding
        },
    )?;
    Ok((final_envelope.into_header(), body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SymKey;

    fn ids() -> (Identity, Vec<Recipient>) {
        let id = Identity::Sym(SymKey::generate());
        let r = vec![id.to_recipient()];
        (id, r)
    }

    #[test]
    fn file_round_trip_any_slicing() {
        let (id, r) = ids();
        let data: Vec<u8> = (0..(2 * CHUNK_SIZE + 7)).map(|i| (i * 7) as u8).collect();
        let env = Envelope::seal(&r, Binding::default()).unwrap();
        for step in [1usize, 1000, CHUNK_SIZE, CHUNK_SIZE + 1, usize::MAX] {
            let mut body = Vec::new();
            let mut s = PayloadSealer::new(&env);
            for piece in data.chunks(step.min(data.len())) {
                s.update(piece, &mut body);
            }
            s.finish(&mut body);
            assert_eq!(body.len() as u64, stream::payload_len(data.len() as u64));
            let opened = open_body(env.header(), std::slice::from_ref(&id), None, &body).unwrap();
            assert_eq!(&opened.plaintext[..], &data[..]);
            // Incremental open in odd slices.
            let env2 = Envelope::open(env.header(), std::slice::from_ref(&id), None).unwrap();
            let mut o = PayloadOpener::new(env2);
            let mut out = Vec::new();
            for piece in body.chunks(step.clamp(1, 70_000)) {
                o.update(piece, &mut out).unwrap();
            }
            o.finish(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    /// What a part is, written out: `salt ‖ STREAM` in one call of the chunk sealer.
    fn part_by_definition(env: &Envelope, n: u32, salt: [u8; 16], plain: &[u8]) -> Vec<u8> {
        let mut out = salt.to_vec();
        seal_chunks(&env.part_key(n, &salt), 0, true, plain, &mut out);
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn part_sealer_in_any_slicing_is_seal_part(
            len in proptest::prop_oneof![
                0usize..300,
                (CHUNK_SIZE - 2)..(CHUNK_SIZE + 2),
                0usize..(3 * CHUNK_SIZE + 100),
            ],
            cuts in proptest::collection::vec(0usize..(3 * CHUNK_SIZE + 100), 0..8),
            part_number in 1u32..=10_000,
        ) {
            let (id, r) = ids();
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let pending = Envelope::seal(&r, Binding { name: Some("p".into()), ..Default::default() }).unwrap();
            let (salt, whole) = seal_part(&pending, part_number, &plain);
            proptest::prop_assert_eq!(&whole, &part_by_definition(&pending, part_number, salt, &plain));

            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(len)).collect();
            cuts.sort_unstable();
            let mut sealer = PartSealer::with_salt_for_vectors(&pending, part_number, salt);
            proptest::prop_assert_eq!(sealer.salt(), salt);
            let mut streamed = Vec::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([len]) {
                sealer.update(&plain[at..cut], &mut streamed);
                // Everything but the final chunk may be out; the final one never is.
                proptest::prop_assert!(streamed.len() < whole.len());
                at = cut;
            }
            sealer.finish(&mut streamed);
            proptest::prop_assert_eq!(&streamed, &whole);

            // It opens as the only part of an object, when the layout says it is part 1.
            if part_number == 1 {
                let layout = PartsLayout::new(&[len as u64], &[salt]).unwrap();
                let header = pending
                    .rewrap(&r, Binding { name: Some("p".into()), parts: Some(layout), ..Default::default() })
                    .unwrap()
                    .into_header();
                let opened = open_body(&header, &[id], Some("p"), &streamed).unwrap();
                proptest::prop_assert_eq!(&opened.plaintext[..], &plain[..]);
            }
        }
    }

    #[test]
    fn streamed_parts_open_in_a_parts_object() {
        let (id, r) = ids();
        let binding = || Binding {
            name: Some("k".into()),
            ..Default::default()
        };
        let pending = Envelope::seal(&r, binding()).unwrap();
        let part = CHUNK_SIZE + 5;
        let data: Vec<u8> = (0..(2 * part + 9)).map(|i| (i % 241) as u8).collect();
        let mut body = Vec::new();
        let mut salts = Vec::new();
        for (i, piece) in data.chunks(part).enumerate() {
            let mut sealer = PartSealer::new(&pending, i as u32 + 1);
            for slice in piece.chunks(1000) {
                sealer.update(slice, &mut body);
            }
            salts.push(sealer.salt());
            sealer.finish(&mut body);
        }
        let sizes: Vec<u64> = data.chunks(part).map(|p| p.len() as u64).collect();
        let layout = PartsLayout::new(&sizes, &salts).unwrap();
        let header = pending
            .rewrap(
                &r,
                Binding {
                    parts: Some(layout),
                    ..binding()
                },
            )
            .unwrap()
            .into_header();
        let opened = open_body(&header, &[id], Some("k"), &body).unwrap();
        assert_eq!(&opened.plaintext[..], &data[..]);
    }

    #[test]
    fn truncation_at_a_chunk_boundary_is_detected() {
        let (id, r) = ids();
        let data = vec![1u8; 2 * CHUNK_SIZE + 5];
        let file = seal_file(&r, Binding::default(), &data).unwrap();
        let header_len = Header::parse_prefix(&file).unwrap().unwrap().1;
        let cut = header_len + PAYLOAD_NONCE_SIZE + 2 * ENCRYPTED_CHUNK_SIZE;
        assert_eq!(
            open_file(std::slice::from_ref(&id), None, &file[..cut]).err(),
            Some(Error::Corrupt)
        );
        let mut extended = file.clone();
        extended.push(0);
        assert_eq!(
            open_file(&[id], None, &extended).err(),
            Some(Error::Corrupt)
        );
    }

    #[test]
    fn ranges_fetch_only_covering_chunks() {
        let (id, r) = ids();
        let data: Vec<u8> = (0..(5 * CHUNK_SIZE + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        let env = Envelope::seal(&r, Binding::default()).unwrap();
        let mut body = Vec::new();
        let mut s = PayloadSealer::new(&env);
        s.update(&data, &mut body);
        s.finish(&mut body);
        for (a, b) in [
            (0, 0),
            (CHUNK_SIZE as u64 - 1, CHUNK_SIZE as u64),
            (3 * CHUNK_SIZE as u64 + 9, u64::MAX),
        ] {
            let plan = RangePlan::new(None, body.len() as u64, a, b).unwrap();
            let p = &plan.pieces[0];
            let covering = plan.end / CHUNK_SIZE as u64 - plan.start / CHUNK_SIZE as u64 + 1;
            assert!(p.chunks.1 - p.chunks.0 <= covering * ENCRYPTED_CHUNK_SIZE as u64);
            assert!(p.chunks.1 - p.chunks.0 > (covering - 1) * ENCRYPTED_CHUNK_SIZE as u64);
            let fetched: Vec<(&[u8], &[u8])> = plan.slices(&body).unwrap();
            let got = plan.open(&env, &fetched).unwrap();
            assert_eq!(&got[..], &data[plan.start as usize..=plan.end as usize]);
        }
        let _ = id;
    }

    #[test]
    fn parts_layout_round_trips_and_detects_reordering() {
        let (id, r) = ids();
        let data: Vec<u8> = (0..(3 * CHUNK_SIZE + 11)).map(|i| (i % 13) as u8).collect();
        let part = CHUNK_SIZE + 3;
        let (header, body) = seal_parts(
            &r,
            Binding {
                name: Some("k".into()),
                ..Default::default()
            },
            &data,
            part,
        )
        .unwrap();
        let opened = open_body(&header, std::slice::from_ref(&id), Some("k"), &body).unwrap();
        assert_eq!(&opened.plaintext[..], &data[..]);
        let layout = *opened.envelope.parts().unwrap();
        assert_eq!(
            plaintext_len(Some(&layout), body.len() as u64).unwrap(),
            data.len() as u64
        );
        // Ranged read across a part boundary.
        let env = Envelope::open(&header, std::slice::from_ref(&id), Some("k")).unwrap();
        let plan = RangePlan::new(
            Some(&layout),
            body.len() as u64,
            part as u64 - 2,
            part as u64 + 2,
        )
        .unwrap();
        assert_eq!(plan.pieces.len(), 2);
        let fetched: Vec<(&[u8], &[u8])> = plan.slices(&body).unwrap();
        assert_eq!(
            &plan.open(&env, &fetched).unwrap()[..],
            &data[part - 2..=part + 2]
        );
        // Without the copy: whole chunks appended after what `out` held, and where the
        // range lies in them; a tampered second piece leaves `out` as it was.
        let mut out = b"kept".to_vec();
        let at = plan.open_into(&env, &fetched, &mut out).unwrap();
        assert_eq!(&out[..4], b"kept");
        assert_eq!(&out[at], &data[part - 2..=part + 2]);
        let mut bad: Vec<u8> = fetched[1].1.to_vec();
        bad[0] ^= 1;
        let mut out = b"kept".to_vec();
        let tampered = [fetched[0], (fetched[1].0, &bad[..])];
        assert_eq!(
            plan.open_into(&env, &tampered, &mut out),
            Err(Error::Corrupt)
        );
        assert_eq!(out, b"kept");
        // Swap parts 1 and 2 (same stored size): the part-number binding catches it.
        let ps = layout.stored_size(0) as usize;
        let mut swapped = body.clone();
        swapped[..ps].copy_from_slice(&body[ps..2 * ps]);
        swapped[ps..2 * ps].copy_from_slice(&body[..ps]);
        assert_eq!(
            open_body(&header, std::slice::from_ref(&id), Some("k"), &swapped).err(),
            Some(Error::Corrupt)
        );
        // Drop the last part: the layout's size check catches it.
        let short = &body[..body.len() - layout.stored_size(layout.count - 1) as usize];
        assert_eq!(
            open_body(&header, &[id], Some("k"), short).err(),
            Some(Error::Corrupt)
        );
    }
}
