//! `RangePlan` and `plaintext_len` on arbitrary sizes and ranges, for every parts
//! layout a header can carry (exactly those `Envelope::seal` accepts, which are
//! those opening accepts): never panics, and plans stay inside the object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r2seal::format::stream::{ENCRYPTED_CHUNK_SIZE, PAYLOAD_NONCE_SIZE};
use r2seal::format::{Binding, Envelope, PartsLayout};
use r2seal::keys::{Identity, SymKey};
use r2seal::seal::{plaintext_len, RangePlan};
use r2seal::Error;
use r2seal_fuzz::Reader;
use std::sync::OnceLock;

fn key() -> &'static Identity {
    static KEY: OnceLock<Identity> = OnceLock::new();
    KEY.get_or_init(|| Identity::Sym(SymKey::generate()))
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader(data);
    let chunk = ENCRYPTED_CHUNK_SIZE as u64;
    let parts = r.u8() % 2 == 1;
    let layout = parts.then(|| PartsLayout {
        count: (r.u64() % 10_002) as u32,
        part_size: r.size(chunk),
        last_size: r.size(chunk),
        salts_digest: [0; 32],
    });
    let binding = Binding {
        parts: layout,
        ..Default::default()
    };
    // A layout a header can carry is one the sealer accepts (and open re-validates).
    let Ok(envelope) = Envelope::seal(&[key().to_recipient()], binding) else {
        return;
    };
    let stored = match layout {
        Some(l) if r.u8() % 2 == 0 => l.stored_len(),
        _ => r.size(chunk),
    };
    let (start, end) = (r.size(chunk), r.size(chunk));

    let total = plaintext_len(layout.as_ref(), stored);
    let plan = match RangePlan::new(layout.as_ref(), stored, start, end) {
        Ok(plan) => plan,
        Err(Error::RangeNotSatisfiable | Error::Corrupt) => return,
        Err(e) => panic!("unexpected error {e:?}"),
    };
    let total = total.expect("a plan implies a valid length");
    assert_eq!((plan.start, plan.total), (start, total));
    assert!(plan.start <= plan.end && plan.end <= end && plan.end < total);
    let mut last_end = 0;
    for p in &plan.pieces {
        assert_eq!(p.salt.1 - p.salt.0, PAYLOAD_NONCE_SIZE as u64);
        assert!(
            last_end <= p.salt.0
                && p.salt.1 <= p.chunks.0
                && p.chunks.0 < p.chunks.1
                && p.chunks.1 <= stored
        );
        assert_eq!((p.chunks.0 - p.salt.1) % chunk, 0, "chunks not aligned");
        last_end = p.chunks.1;
    }
    // Open a zero-filled object of that size: every chunk must fail to authenticate.
    if stored <= 1 << 20 {
        let body = vec![0u8; stored as usize];
        let fetched: Vec<(&[u8], &[u8])> = plan.slices(&body).unwrap();
        assert!(matches!(
            plan.open(&envelope, &fetched),
            Err(Error::Corrupt)
        ));
    }
});
