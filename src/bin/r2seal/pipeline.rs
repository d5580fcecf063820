//! Sealing and opening a single-stream payload on every core: reader → workers →
//! writer. Workers take turns reading the next batch of chunks straight into the
//! stored layout (no copy), seal or open it on their own core, and hand it to the
//! calling thread, which writes batches strictly in order. Memory is a fixed pool of
//! batch buffers whatever the input size.
//!
//! The STREAM rules live in the library (`stream::seal_run_in_place`,
//! `open_run_in_place`); this module decides only where the payload ends: a batch
//! is the last when its read met the end of input (a one-byte peek after a full
//! batch tells). A batch is written only after every chunk in it authenticated and
//! every earlier batch was written; after a failure nothing more is written.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

use anyhow::{anyhow, Context, Result};
use r2seal::format::stream::{self, StreamKey, CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, TAG_SIZE};

use crate::io::{read_full, Output};

/// Chunks per batch: 8 × 64 KiB stays in a core's L2 cache from the read through
/// the cipher to the write (bench/format.sh).
const BATCH_CHUNKS: usize = 8;
const BATCH_BYTES: usize = BATCH_CHUNKS * ENCRYPTED_CHUNK_SIZE;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Seal,
    Open,
}

struct Input {
    reader: Box<dyn Read + Send>,
    /// A byte read past a full batch to learn whether the input goes on.
    carry: Option<u8>,
    next_seq: u64,
    ended: bool,
}

struct Batch {
    buf: Vec<u8>,
    len: usize,
    last: bool,
}

/// Seals (plaintext in, STREAM out) or opens (STREAM in, plaintext out) everything
/// `reader` yields under `key`, writing to `out` in order. The payload nonce is the
/// caller's business (it precedes the chunks).
pub fn run(
    mode: Mode,
    key: &StreamKey,
    reader: Box<dyn Read + Send>,
    out: &mut Output,
) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let input = Mutex::new(Input {
        reader,
        carry: None,
        next_seq: 0,
        ended: false,
    });
    let stop = AtomicBool::new(false);
    let (pool_tx, pool_rx) = mpsc::channel::<Vec<u8>>();
    // Two batches per worker: one being processed while the other waits to be written.
    for _ in 0..2 * threads {
        pool_tx
            .send(vec![0u8; BATCH_BYTES])
            .expect("receiver alive");
    }
    let pool_rx = Mutex::new(pool_rx);
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let (input, pool_rx, stop) = (&input, &pool_rx, &stop);
            scope.spawn(move || worker(mode, key, input, pool_rx, &done_tx, stop));
        }
        drop(done_tx);
        let result = write_in_order(mode, out, &done_rx, &pool_tx);
        // Unblock and end the workers before the scope joins them.
        stop.store(true, Ordering::Relaxed);
        drop(pool_tx);
        drop(done_rx);
        result
    })
}

fn write_in_order(
    mode: Mode,
    out: &mut Output,
    done: &mpsc::Receiver<(u64, Result<Batch>)>,
    pool: &mpsc::Sender<Vec<u8>>,
) -> Result<()> {
    let mut next = 0u64;
    let mut waiting = BTreeMap::new();
    loop {
        let (seq, batch) = done
            .recv()
            .map_err(|_| anyhow!("the sealing workers stopped early"))?;
        waiting.insert(seq, batch);
        while let Some(batch) = waiting.remove(&next) {
            let batch = batch?;
            let run = &batch.buf[..batch.len];
            match mode {
                Mode::Seal => out.write_all(run)?,
                Mode::Open => {
                    for plain in stream::run_plaintexts(run) {
                        out.write_all(plain)?;
                    }
                }
            }
            if batch.last {
                return Ok(());
            }
            next += 1;
            let _ = pool.send(batch.buf);
        }
    }
}

fn worker(
    mode: Mode,
    key: &StreamKey,
    input: &Mutex<Input>,
    pool: &Mutex<mpsc::Receiver<Vec<u8>>>,
    done: &mpsc::Sender<(u64, Result<Batch>)>,
    stop: &AtomicBool,
) {
    loop {
        let Ok(mut buf) = pool.lock().expect("pool lock").recv() else {
            return;
        };
        let (seq, read) = {
            let mut input = input.lock().expect("input lock");
            if input.ended || stop.load(Ordering::Relaxed) {
                return;
            }
            let seq = input.next_seq;
            input.next_seq += 1;
            let read = match mode {
                Mode::Seal => read_plain_batch(&mut input, &mut buf),
                Mode::Open => read_sealed_batch(&mut input, &mut buf),
            };
            // The last batch, or a failed read, ends the input for every worker.
            input.ended = !matches!(read, Ok((_, false)));
            (seq, read)
        };
        let batch = read.context("cannot read input").and_then(|(len, last)| {
            let first_index = seq * BATCH_CHUNKS as u64;
            let run = &mut buf[..len];
            match mode {
                Mode::Seal => stream::seal_run_in_place(key, first_index, last, run),
                Mode::Open => stream::open_run_in_place(key, first_index, last, run)?,
            }
            Ok((len, last))
        });
        let batch = batch.map(|(len, last)| Batch { buf, len, last });
        if done.send((seq, batch)).is_err() {
            return;
        }
    }
}

/// Reads the next batch of plaintext into the stored layout: each 64 KiB chunk at
/// its ciphertext offset, with room for its tag. Returns the run's stored length
/// and whether it ends the payload.
fn read_plain_batch(input: &mut Input, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    for i in 0..BATCH_CHUNKS {
        let slot = &mut buf[i * ENCRYPTED_CHUNK_SIZE..i * ENCRYPTED_CHUNK_SIZE + CHUNK_SIZE];
        let n = fill(input, slot)?;
        if n < CHUNK_SIZE {
            // The input ended in this chunk. An empty chunk is the payload's last only
            // when it is its only chunk (age); otherwise the previous full chunk is.
            // (A batch after the first always starts with a carried byte: n ≥ 1.)
            return Ok(if n == 0 && i > 0 {
                (i * ENCRYPTED_CHUNK_SIZE, true)
            } else {
                (i * ENCRYPTED_CHUNK_SIZE + n + TAG_SIZE, true)
            });
        }
    }
    Ok((BATCH_BYTES, peek_end(input)?))
}

/// Reads the next batch of stored chunks as they are. Returns the bytes read and
/// whether the input ended there.
fn read_sealed_batch(input: &mut Input, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    let n = fill(input, buf)?;
    if n < buf.len() {
        return Ok((n, true));
    }
    Ok((n, peek_end(input)?))
}

/// Fills `buf` from the input, starting with a carried byte; short only at the end.
fn fill(input: &mut Input, buf: &mut [u8]) -> io::Result<usize> {
    let carried = match input.carry.take() {
        Some(b) => {
            buf[0] = b;
            1
        }
        None => 0,
    };
    Ok(carried + read_full(&mut input.reader, &mut buf[carried..])?)
}

/// True if the input has ended; otherwise keeps the byte it read for the next batch.
fn peek_end(input: &mut Input) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    if read_full(&mut input.reader, &mut byte)? == 0 {
        return Ok(true);
    }
    input.carry = Some(byte[0]);
    Ok(false)
}
