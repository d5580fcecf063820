//! `Descriptor::parse` on arbitrary bytes (the descriptor is bucket content anyone with
//! write access controls): never panics, and what parses serializes back to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r2seal::descriptor::Descriptor;
use r2seal::keys::SymKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Descriptor::parse(data) {
        assert_eq!(d.to_bytes(), data);
        let k = SymKey::from_bytes(zeroize::Zeroizing::new([7; 32]));
        let _ = d.verify(&[k]);
        let _ = d.config.differences(&d.config);
    }
});
