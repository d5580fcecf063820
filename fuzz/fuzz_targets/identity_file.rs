//! Identity files (plain, or passphrase-protected with no passphrase available):
//! never panics, never hangs on hostile KDF parameters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r2seal::keys::files::parse_identity_file;
use r2seal::Error;

fuzz_target!(|data: &[u8]| {
    match parse_identity_file(data, &mut r2seal_fuzz::no_passphrase) {
        Ok(ids) => assert!(!ids.is_empty()),
        Err(Error::InvalidKeyFile(msg)) => {
            // The message must not echo the secret part of a key-like line (a
            // secret, even when malformed): 24+ alphanumerics after the prefix,
            // which no fixed error text contains.
            if let Ok(text) = std::str::from_utf8(data) {
                for line in text.lines().map(str::trim) {
                    let secret = line
                        .strip_prefix("AGE-SECRET-KEY-1")
                        .or_else(|| line.strip_prefix("R2SEAL-SYM-KEY-1"));
                    if let Some(secret) = secret
                        .filter(|s| s.len() >= 24 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
                    {
                        assert!(
                            !msg.contains(secret),
                            "error echoes a secret line of the file"
                        );
                    }
                }
            }
        }
        Err(_) => {}
    }
});
