//! age v1 STREAM: the payload chunks, their nonces, and the size arithmetic.
//!
//! Owns the payload layout (SECURITY.md §3.3): ChaCha20-Poly1305 over 64 KiB
//! chunks, nonce = 11-byte big-endian chunk counter ‖ last-chunk flag. The final
//! chunk may be short; it may be empty only when the whole payload is empty.
//! Everything here is a pure function of its inputs: no I/O, no buffering policy.

#[cfg(not(feature = "ring"))]
use chacha20poly1305::{
    aead::{AeadInPlace, KeyInit},
    ChaCha20Poly1305, Key, Nonce, Tag,
};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::Error;

/// Plaintext bytes per chunk.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// Poly1305 tag appended to every chunk.
pub const TAG_SIZE: usize = 16;
/// Ciphertext bytes per full chunk.
pub const ENCRYPTED_CHUNK_SIZE: usize = CHUNK_SIZE + TAG_SIZE;
/// The random nonce that starts every age payload (and every r2seal part).
pub const PAYLOAD_NONCE_SIZE: usize = 16;
/// The largest chunk counter: 11 bytes.
const MAX_COUNTER: u64 = (1 << 56) - 1;
/// The largest payload r2seal sizes or plans ranges for: 1 EiB, far above any store's
/// object limit (S3 and R2: 5 TiB), and low enough that no size arithmetic overflows.
pub const MAX_PLAINTEXT_LEN: u64 = 1 << 60;

/// The ChaCha20-Poly1305 key of one STREAM instance; never printable, wiped on drop.
///
/// Two implementations of the same AEAD (RFC 8439): RustCrypto's `chacha20poly1305`
/// everywhere, and with the `ring` feature (native builds) ring's assembly, measured
/// at twice the throughput here (bench/README.md). The vectors run on both and
/// `tests::ring_and_rustcrypto_agree` checks they are interchangeable.
pub struct StreamKey {
    #[cfg(not(feature = "ring"))]
    aead: ChaCha20Poly1305,
    #[cfg(feature = "ring")]
    aead: ring::aead::LessSafeKey,
}

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(<redacted>)")
    }
}

#[cfg(feature = "ring")]
impl Drop for StreamKey {
    fn drop(&mut self) {
        // ring does not wipe its keys; overwrite ours in place with an all-zero key.
        // black_box keeps the compiler from eliding this last store.
        self.aead = ring_key(&[0u8; 32]);
        std::hint::black_box(&self.aead);
    }
}

#[cfg(feature = "ring")]
fn ring_key(key: &[u8; 32]) -> ring::aead::LessSafeKey {
    let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key)
        .expect("32 bytes is a ChaCha20-Poly1305 key");
    ring::aead::LessSafeKey::new(unbound)
}

impl StreamKey {
    /// payload key = HKDF-SHA256(ikm = file key, salt = nonce, info = `info`).
    /// age uses info "payload"; r2seal parts use their own label (SECURITY.md §3.5).
    pub fn derive(file_key: &[u8], nonce: &[u8; PAYLOAD_NONCE_SIZE], info: &[u8]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(nonce), file_key)
            .expand(info, key.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        StreamKey {
            #[cfg(not(feature = "ring"))]
            aead: ChaCha20Poly1305::new(Key::from_slice(key.as_ref())),
            #[cfg(feature = "ring")]
            aead: ring_key(&key),
        }
    }

    /// Seals chunk `index` in place: `chunk` holds the plaintext followed by 16 bytes
    /// of room for the tag.
    pub fn seal_chunk_in_place(&self, index: u64, last: bool, chunk: &mut [u8]) {
        debug_assert!(chunk.len() >= TAG_SIZE && chunk.len() <= ENCRYPTED_CHUNK_SIZE);
        let (body, tag_out) = chunk.split_at_mut(chunk.len() - TAG_SIZE);
        let nonce = stream_nonce(index, last);
        #[cfg(not(feature = "ring"))]
        let tag = self
            .aead
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &[], body)
            .expect("chunk is far below ChaCha20-Poly1305's length limit");
        #[cfg(feature = "ring")]
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                body,
            )
            .expect("chunk is far below ChaCha20-Poly1305's length limit");
        tag_out.copy_from_slice(tag.as_ref());
    }

    /// Seals `plaintext` (≤ 64 KiB) as chunk `index` into `out`, which must be exactly
    /// `plaintext.len() + TAG_SIZE` bytes.
    pub fn seal_chunk_into(&self, index: u64, last: bool, plaintext: &[u8], out: &mut [u8]) {
        out[..plaintext.len()].copy_from_slice(plaintext);
        self.seal_chunk_in_place(index, last, out);
    }

    /// Opens chunk `index` in place: `body` holds the ciphertext without its tag. On
    /// failure `body` is wiped, so no unauthenticated byte ever leaves this function.
    pub fn open_chunk_in_place(
        &self,
        index: u64,
        last: bool,
        body: &mut [u8],
        tag: &[u8; TAG_SIZE],
    ) -> Result<(), Error> {
        if body.len() > CHUNK_SIZE {
            return Err(Error::Corrupt);
        }
        let nonce = stream_nonce(index, last);
        #[cfg(not(feature = "ring"))]
        let ok = self
            .aead
            .decrypt_in_place_detached(Nonce::from_slice(&nonce), &[], body, Tag::from_slice(tag))
            .is_ok();
        #[cfg(feature = "ring")]
        let ok = self
            .aead
            .open_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                ring::aead::Tag::from(*tag),
                body,
                0..,
            )
            .is_ok();
        if ok {
            Ok(())
        } else {
            body.fill(0);
            Err(Error::Corrupt)
        }
    }
}

fn stream_nonce(index: u64, last: bool) -> [u8; 12] {
    assert!(index <= MAX_COUNTER, "STREAM counter overflow");
    let mut nonce = [0u8; 12];
    nonce[3..11].copy_from_slice(&index.to_be_bytes());
    nonce[11] = u8::from(last);
    nonce
}

/// Number of chunks a payload of `plaintext_len` bytes has (at least one).
pub fn chunk_count(plaintext_len: u64) -> u64 {
    if plaintext_len == 0 {
        1
    } else {
        plaintext_len.div_ceil(CHUNK_SIZE as u64)
    }
}

/// Bytes of STREAM ciphertext (without the payload nonce) for `plaintext_len` bytes.
pub fn stream_len(plaintext_len: u64) -> u64 {
    plaintext_len + chunk_count(plaintext_len) * TAG_SIZE as u64
}

/// Stored body length of a single-stream payload: nonce ‖ STREAM.
pub fn payload_len(plaintext_len: u64) -> u64 {
    PAYLOAD_NONCE_SIZE as u64 + stream_len(plaintext_len)
}

/// The inverse of [`stream_len`]: the plaintext length of `stream_len` bytes of
/// STREAM ciphertext, or `Corrupt` if no valid payload has that length (a final
/// chunk shorter than a tag, or an empty final chunk after a full one).
pub fn plaintext_len_of_stream(stream_len: u64) -> Result<u64, Error> {
    if stream_len > MAX_PLAINTEXT_LEN {
        return Err(Error::Corrupt);
    }
    let full = stream_len / ENCRYPTED_CHUNK_SIZE as u64;
    let rem = stream_len % ENCRYPTED_CHUNK_SIZE as u64;
    match (full, rem) {
        (0, r) if r >= TAG_SIZE as u64 => Ok(r - TAG_SIZE as u64),
        (f, 0) if f > 0 => Ok(f * CHUNK_SIZE as u64),
        (f, r) if r > TAG_SIZE as u64 => Ok(f * CHUNK_SIZE as u64 + r - TAG_SIZE as u64),
        _ => Err(Error::Corrupt),
    }
}

/// The plaintext length of a stored single-stream body (nonce ‖ STREAM).
pub fn plaintext_len_of_payload(payload_len: u64) -> Result<u64, Error> {
    payload_len
        .checked_sub(PAYLOAD_NONCE_SIZE as u64)
        .ok_or(Error::Corrupt)
        .and_then(plaintext_len_of_stream)
}

/// The chunks that cover an inclusive plaintext byte range, and where they are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSpan {
    /// First and last chunk index (inclusive).
    pub first_chunk: u64,
    pub last_chunk: u64,
    /// Offsets of those chunks within the STREAM (after the payload nonce), half-open.
    pub stream_start: u64,
    pub stream_end: u64,
    /// Bytes to drop from the start of the first opened chunk.
    pub skip: u64,
}

/// Maps an inclusive plaintext range `start..=end` of a payload of `plaintext_len`
/// bytes onto the chunks that cover it. `end` is clamped to the payload, as HTTP
/// ranges are; a `start` beyond the end is an error.
pub fn chunk_span(plaintext_len: u64, start: u64, end: u64) -> Result<ChunkSpan, Error> {
    if start > end || start >= plaintext_len || plaintext_len > MAX_PLAINTEXT_LEN {
        return Err(Error::RangeNotSatisfiable);
    }
    let end = end.min(plaintext_len - 1);
    let chunk = CHUNK_SIZE as u64;
    let first_chunk = start / chunk;
    let last_chunk = end / chunk;
    let stream_start = first_chunk * ENCRYPTED_CHUNK_SIZE as u64;
    let stream_end =
        ((last_chunk + 1) * ENCRYPTED_CHUNK_SIZE as u64).min(stream_len(plaintext_len));
    Ok(ChunkSpan {
        first_chunk,
        last_chunk,
        stream_start,
        stream_end,
        skip: start - first_chunk * chunk,
    })
}

/// Seals a run of whole chunks starting at `first_index`: `plaintext` is split into
/// 64 KiB chunks (the last may be short) and `out` receives their ciphertexts.
/// `last` marks the final chunk of this run as the payload's last chunk.
/// With the `parallel` feature, large runs are spread over all cores.
pub fn seal_chunks(
    key: &StreamKey,
    first_index: u64,
    last: bool,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) {
    let chunks = chunk_count(plaintext.len() as u64) as usize;
    let start = out.len();
    // Lay out [plaintext | tag space] per chunk in one copy, then seal in place.
    out.reserve(plaintext.len() + chunks * TAG_SIZE);
    for i in 0..chunks {
        out.extend_from_slice(
            &plaintext[(i * CHUNK_SIZE).min(plaintext.len())
                ..((i + 1) * CHUNK_SIZE).min(plaintext.len())],
        );
        out.extend_from_slice(&[0u8; TAG_SIZE]);
    }
    parallel::for_each_chunk(
        &mut out[start..],
        ENCRYPTED_CHUNK_SIZE,
        chunks,
        |i, chunk| {
            key.seal_chunk_in_place(first_index + i as u64, last && i == chunks - 1, chunk);
            Ok(())
        },
    )
    .expect("sealing cannot fail");
}

/// Seals, in place, a run of chunks laid out as they are stored: each chunk's
/// plaintext followed by 16 bytes of room for its tag, at `ENCRYPTED_CHUNK_SIZE`
/// strides; the final chunk may be short (an empty one is just its 16 bytes). For
/// shells that read straight into the stored layout and seal batches on threads of
/// their own: runs on the calling thread. `last` marks the run's final chunk as the
/// payload's last.
///
/// # Panics
/// If `buf` is not such a layout (empty, or a final chunk shorter than a tag).
pub fn seal_run_in_place(key: &StreamKey, first_index: u64, last: bool, buf: &mut [u8]) {
    let rem = buf.len() % ENCRYPTED_CHUNK_SIZE;
    assert!(
        !buf.is_empty() && (rem == 0 || rem >= TAG_SIZE),
        "not a run of chunks"
    );
    let chunks = buf.len().div_ceil(ENCRYPTED_CHUNK_SIZE);
    for (i, chunk) in buf.chunks_mut(ENCRYPTED_CHUNK_SIZE).enumerate() {
        key.seal_chunk_in_place(first_index + i as u64, last && i == chunks - 1, chunk);
    }
}

/// Opens, in place, a run of stored chunks (`ENCRYPTED_CHUNK_SIZE` strides, the last
/// possibly short), on the calling thread; [`run_plaintexts`] then yields their
/// plaintexts. The same rules as [`open_chunks`]; on error the whole of `buf` is
/// wiped, so nothing unauthenticated can be read from it.
pub fn open_run_in_place(
    key: &StreamKey,
    first_index: u64,
    last: bool,
    buf: &mut [u8],
) -> Result<(), Error> {
    let chunks = check_run(buf.len(), first_index, last).inspect_err(|_| buf.fill(0))?;
    for (i, chunk) in buf.chunks_mut(ENCRYPTED_CHUNK_SIZE).enumerate() {
        let (body, tag) = chunk.split_at_mut(chunk.len() - TAG_SIZE);
        let tag: &[u8; TAG_SIZE] = (&*tag).try_into().expect("16 bytes");
        if let Err(e) =
            key.open_chunk_in_place(first_index + i as u64, last && i == chunks - 1, body, tag)
        {
            buf.fill(0);
            return Err(e);
        }
    }
    Ok(())
}

/// The plaintexts of a run opened by [`open_run_in_place`], in order.
pub fn run_plaintexts(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.chunks(ENCRYPTED_CHUNK_SIZE)
        .map(|c| &c[..c.len() - TAG_SIZE])
}

/// How many chunks a run of `len` stored bytes holds, or `Corrupt` if no valid
/// payload has such a run there (the STREAM rules of SECURITY.md §3.3).
fn check_run(len: usize, first_index: u64, last: bool) -> Result<usize, Error> {
    let rem = len % ENCRYPTED_CHUNK_SIZE;
    let chunks = len.div_ceil(ENCRYPTED_CHUNK_SIZE);
    if chunks == 0 || (rem > 0 && rem < TAG_SIZE) {
        return Err(Error::Corrupt);
    }
    // A short chunk that is not last is a truncated or spliced stream.
    if rem > 0 && !last {
        return Err(Error::Corrupt);
    }
    // age: the final chunk may be empty only when it is the only chunk.
    if last && rem == TAG_SIZE && first_index + chunks as u64 > 1 {
        return Err(Error::Corrupt);
    }
    Ok(chunks)
}

/// Opens a run of whole ciphertext chunks starting at `first_index` into `out`.
/// `last` says the final chunk of this run is the payload's last chunk. On error,
/// `out` is restored to its original length: nothing unauthenticated is left in it.
pub fn open_chunks(
    key: &StreamKey,
    first_index: u64,
    last: bool,
    ciphertext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let chunks = check_run(ciphertext.len(), first_index, last)?;
    let start = out.len();
    // Copy the chunk bodies (not their tags) in one pass, then open them in place.
    out.reserve(ciphertext.len() - chunks * TAG_SIZE);
    for ct in ciphertext.chunks(ENCRYPTED_CHUNK_SIZE) {
        out.extend_from_slice(&ct[..ct.len() - TAG_SIZE]);
    }
    let result = parallel::for_each_chunk(&mut out[start..], CHUNK_SIZE, chunks, |i, body| {
        let ct = &ciphertext
            [i * ENCRYPTED_CHUNK_SIZE..((i + 1) * ENCRYPTED_CHUNK_SIZE).min(ciphertext.len())];
        let tag: &[u8; TAG_SIZE] = ct[ct.len() - TAG_SIZE..].try_into().expect("16 bytes");
        key.open_chunk_in_place(first_index + i as u64, last && i == chunks - 1, body, tag)
    });
    if result.is_err() {
        out[start..].fill(0);
        out.truncate(start);
    }
    result
}

mod parallel {
    use crate::Error;

    /// Below this many chunks a batch runs on the calling thread: spawning costs more
    /// than it saves.
    #[cfg(feature = "parallel")]
    const MIN_CHUNKS_PER_THREAD: usize = 8;

    /// Calls `f(i, chunk_i)` for `chunks` chunks of `buf`, cut every `step` bytes. The
    /// last chunk may be short — or empty: an empty final plaintext chunk still has a
    /// tag to check, so chunks are counted by the caller, never inferred from `buf`.
    pub(super) fn for_each_chunk<F>(
        buf: &mut [u8],
        step: usize,
        chunks: usize,
        f: F,
    ) -> Result<(), Error>
    where
        F: Fn(usize, &mut [u8]) -> Result<(), Error> + Sync,
    {
        #[cfg(feature = "parallel")]
        {
            let threads = thread_count().min(chunks / MIN_CHUNKS_PER_THREAD).max(1);
            if threads > 1 {
                let per_thread = chunks.div_ceil(threads);
                return std::thread::scope(|scope| {
                    let f = &f;
                    let workers: Vec<_> = buf
                        .chunks_mut(per_thread * step)
                        .enumerate()
                        .map(|(t, part)| {
                            let first = t * per_thread;
                            let n = per_thread.min(chunks - first);
                            scope.spawn(move || sequential(first, part, step, n, f))
                        })
                        .collect();
                    workers
                        .into_iter()
                        .map(|w| w.join().expect("chunk worker panicked"))
                        .collect::<Result<Vec<()>, _>>()
                        .map(|_| ())
                });
            }
        }
        sequential(0, buf, step, chunks, &f)
    }

    fn sequential<F>(
        first: usize,
        buf: &mut [u8],
        step: usize,
        chunks: usize,
        f: &F,
    ) -> Result<(), Error>
    where
        F: Fn(usize, &mut [u8]) -> Result<(), Error>,
    {
        for i in 0..chunks {
            let len = buf.len();
            f(
                first + i,
                &mut buf[(i * step).min(len)..((i + 1) * step).min(len)],
            )?;
        }
        Ok(())
    }

    #[cfg(feature = "parallel")]
    fn thread_count() -> usize {
        use std::sync::OnceLock;
        static THREADS: OnceLock<usize> = OnceLock::new();
        *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both AEAD backends must be interchangeable: seal with this build's backend,
    /// open with RustCrypto directly (and the reverse), for the same key and nonce.
    #[test]
    fn ring_and_rustcrypto_agree() {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let (fk, nonce) = ([9u8; 16], [8u8; 16]);
        let key = StreamKey::derive(&fk, &nonce, b"payload");
        let mut raw = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&nonce), &fk)
            .expand(b"payload", &mut raw)
            .unwrap();
        let reference =
            chacha20poly1305::ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&raw));
        let plain = b"interchangeable".to_vec();
        let mut ours = plain.clone();
        ours.extend_from_slice(&[0; TAG_SIZE]);
        key.seal_chunk_in_place(5, true, &mut ours);
        let mut theirs = plain.clone();
        let n = stream_nonce(5, true);
        let tag = reference
            .encrypt_in_place_detached(chacha20poly1305::Nonce::from_slice(&n), &[], &mut theirs)
            .unwrap();
        theirs.extend_from_slice(&tag);
        assert_eq!(ours, theirs);
        let (body, tag) = theirs.split_at_mut(plain.len());
        key.open_chunk_in_place(5, true, body, &(*tag).try_into().unwrap())
            .unwrap();
        assert_eq!(body, &plain[..]);
    }

    /// Regression: a final chunk cut down to 16 bytes (an "empty" chunk) was
    /// released without its tag being checked, hiding truncation.
    #[test]
    fn a_tag_sized_final_chunk_is_authenticated() {
        let key = StreamKey::derive(&[1; 16], &[2; 16], b"payload");
        let mut ct = Vec::new();
        seal_chunks(&key, 0, true, b"x", &mut ct);
        let mut out = Vec::new();
        assert_eq!(
            open_chunks(&key, 0, true, &ct[..TAG_SIZE], &mut out),
            Err(Error::Corrupt)
        );
        assert_eq!(
            open_chunks(&key, 0, true, &[0u8; TAG_SIZE], &mut out),
            Err(Error::Corrupt)
        );
        let mut empty = Vec::new();
        seal_chunks(&key, 0, true, b"", &mut empty);
        assert_eq!(empty.len(), TAG_SIZE);
        open_chunks(&key, 0, true, &empty, &mut out).unwrap();
        assert!(out.is_empty());
    }

    /// Regression (found by fuzzing range_plan): a hostile stored length near u64::MAX
    /// overflowed the chunk arithmetic.
    #[test]
    fn absurd_lengths_are_refused_not_overflowed() {
        assert_eq!(
            plaintext_len_of_payload(u64::MAX - 65280),
            Err(Error::Corrupt)
        );
        assert!(chunk_span(u64::MAX, 65535, u64::MAX).is_err());
        assert!(plaintext_len_of_payload(payload_len(MAX_PLAINTEXT_LEN - 5)).is_err());
    }

    #[test]
    fn size_arithmetic_inverts() {
        let c = CHUNK_SIZE as u64;
        for len in [0, 1, 15, 16, c - 1, c, c + 1, 2 * c, 2 * c + 17, 10 * c - 3] {
            assert_eq!(
                plaintext_len_of_stream(stream_len(len)).unwrap(),
                len,
                "len {len}"
            );
        }
    }

    #[test]
    fn impossible_lengths_are_corrupt() {
        let e = ENCRYPTED_CHUNK_SIZE as u64;
        for bad in [0, 1, 15, e + 1, e + 15, e + 16] {
            assert!(plaintext_len_of_stream(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chunk_span_covers_the_range() {
        let c = CHUNK_SIZE as u64;
        let span = chunk_span(3 * c, c - 1, c).unwrap();
        assert_eq!(
            (span.first_chunk, span.last_chunk, span.skip),
            (0, 1, c - 1)
        );
        assert_eq!(span.stream_end, 2 * ENCRYPTED_CHUNK_SIZE as u64);
        let tail = chunk_span(3 * c + 5, 3 * c, u64::MAX).unwrap();
        assert_eq!(tail.last_chunk, 3);
        assert_eq!(tail.stream_end, stream_len(3 * c + 5));
        assert!(chunk_span(10, 10, 20).is_err());
        assert!(chunk_span(0, 0, 0).is_err());
    }

    /// The in-place runs the CLI's workers use are the same STREAM as `seal_chunks`.
    #[test]
    fn in_place_runs_match_seal_chunks() {
        let key = StreamKey::derive(&[3; 16], &[4; 16], b"payload");
        for len in [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE - 7] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            // An empty payload is one empty chunk, at index 0.
            let first = if len == 0 { 0 } else { 2 };
            let mut expected = Vec::new();
            seal_chunks(&key, first, true, &data, &mut expected);
            let mut run = Vec::new();
            for piece in data.chunks(CHUNK_SIZE) {
                run.extend_from_slice(piece);
                run.extend_from_slice(&[0; TAG_SIZE]);
            }
            if data.is_empty() {
                run.extend_from_slice(&[0; TAG_SIZE]);
            }
            seal_run_in_place(&key, first, true, &mut run);
            assert_eq!(run, expected, "len {len}");
            // Wrong position or flag: refused, and nothing readable is left.
            let mut moved = run.clone();
            assert!(open_run_in_place(&key, first + 1, true, &mut moved).is_err());
            assert!(moved.iter().all(|&b| b == 0));
            let mut not_last = run.clone();
            assert!(open_run_in_place(&key, first, false, &mut not_last).is_err());
            open_run_in_place(&key, first, true, &mut run).unwrap();
            assert_eq!(
                run_plaintexts(&run).collect::<Vec<_>>().concat(),
                data,
                "len {len}"
            );
        }
        // An empty final chunk after others is a truncation, whatever its tag.
        let mut tail = vec![0u8; TAG_SIZE];
        seal_run_in_place(&key, 1, true, &mut tail);
        assert_eq!(
            open_run_in_place(&key, 1, true, &mut tail),
            Err(Error::Corrupt)
        );
    }

    #[test]
    fn chunks_round_trip_and_reject_wrong_position() {
        let key = StreamKey::derive(&[1; 16], &[2; 16], b"payload");
        let data: Vec<u8> = (0..(3 * CHUNK_SIZE + 100)).map(|i| i as u8).collect();
        let mut ct = Vec::new();
        seal_chunks(&key, 0, true, &data, &mut ct);
        assert_eq!(ct.len() as u64, stream_len(data.len() as u64));
        let mut pt = Vec::new();
        open_chunks(&key, 0, true, &ct, &mut pt).unwrap();
        assert_eq!(pt, data);
        // Same bytes, but claimed to be non-final: the last-chunk flag catches it.
        let mut pt = vec![5];
        assert!(open_chunks(&key, 0, false, &ct[..ENCRYPTED_CHUNK_SIZE * 3], &mut pt).is_ok());
        assert!(open_chunks(&key, 0, true, &ct[..ENCRYPTED_CHUNK_SIZE * 3], &mut pt).is_err());
        assert!(open_chunks(&key, 1, false, &ct[..ENCRYPTED_CHUNK_SIZE], &mut pt).is_err());
    }
}
