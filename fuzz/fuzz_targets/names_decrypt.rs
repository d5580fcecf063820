//! `NameKey::decrypt` on arbitrary stored keys (bucket listings are attacker input):
//! never panics, and whatever decrypts re-encrypts to exactly the input (one stored
//! form per name: base32 is canonical, segments authenticate in place).
#![no_main]

use libfuzzer_sys::fuzz_target;
use r2seal::keys::SymKey;
use r2seal::names::NameKey;
use std::sync::OnceLock;

/// The key of tests/vectors/names (bytes 1..=32), so seeds decrypt.
fn key() -> &'static NameKey {
    static KEY: OnceLock<NameKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = 1 + i as u8;
        }
        NameKey::from_sym_key(&SymKey::from_bytes(zeroize::Zeroizing::new(k)))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(stored) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(plain) = key().decrypt(stored) {
        assert_eq!(key().encrypt(&plain), stored);
    }
    let lp = key().list_prefix(stored);
    assert!(lp.stored.matches('/').count() <= stored.matches('/').count());
});
