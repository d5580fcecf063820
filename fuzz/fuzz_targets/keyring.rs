//! `Keyring::parse` (no passphrase available): never panics; a keyring that parses
//! is written back by `to_toml` in a form that parses to the same keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r2seal::keys::keyring::Keyring;

fuzz_target!(|data: &[u8]| {
    let Ok(ring) = Keyring::parse(data, &mut r2seal_fuzz::no_passphrase) else {
        return;
    };
    let text = ring.to_toml();
    let again = Keyring::parse(text.as_bytes(), &mut r2seal_fuzz::no_passphrase)
        .unwrap_or_else(|e| panic!("a parsed keyring does not survive to_toml: {e}"));
    let ids = |r: &Keyring| {
        r.keys()
            .iter()
            .map(|k| (k.name.clone(), k.id(), k.status))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&ring), ids(&again));
    assert_eq!(ring.defaults(), again.defaults());
    assert_eq!(ring.policies(), again.policies());
});
