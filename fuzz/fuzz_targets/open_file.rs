//! A whole file-form object opened with the vectors' identities: never panics, and
//! the one-shot and incremental openers agree. Seeds sealed to those identities
//! keep a valid header MAC under payload mutations, so the STREAM code is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r2seal::format::header::Header;
use r2seal::format::Envelope;
use r2seal::keys::Identity;
use r2seal::seal::{open_file, PayloadOpener};
use r2seal::Error;
use std::sync::OnceLock;

fn ids() -> &'static [Identity] {
    static IDS: OnceLock<Vec<Identity>> = OnceLock::new();
    IDS.get_or_init(r2seal_fuzz::identities)
}

/// The streaming path: header from the front, body pushed in `step`-byte pieces.
fn incremental(data: &[u8], name: Option<&str>, step: usize) -> Result<Vec<u8>, Error> {
    let (header, used) = Header::parse_prefix(data)?.ok_or(if data.is_empty() {
        Error::NotSealed
    } else {
        Error::Malformed("header is truncated")
    })?;
    let mut opener = PayloadOpener::new(Envelope::open(&header, ids(), name)?);
    let mut out = Vec::new();
    for piece in data[used..].chunks(step) {
        opener.update(piece, &mut out)?;
    }
    opener.finish(&mut out)?;
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    // The vectors use these names; a fuzzed object is opened under each.
    for name in [None, Some("sessions/2026-11-25/chat.jsonl")] {
        let whole = open_file(ids(), name, data).map(|o| o.plaintext.to_vec());
        let step = 1 + data.len() % 977;
        let sliced = incremental(data, name, step);
        match (&whole, &sliced) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(
                std::mem::discriminant(a),
                std::mem::discriminant(b),
                "{a:?} vs {b:?}"
            ),
            _ => panic!(
                "one-shot {:?} vs incremental {:?}",
                whole.map(|p| p.len()),
                sliced.map(|p| p.len())
            ),
        }
    }
});
