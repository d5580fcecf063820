//! Shared pieces of the fuzz targets: the fixed identities the seed vectors
//! (tests/vectors/) are sealed to, and a passphrase source that never answers.

use r2seal::keys::passphrase::Passphrase;
use r2seal::keys::{Identity, SymKey};
use r2seal::Error;

/// X25519 identity "A" of tests/vectors/: seeds sealed to it open, so mutations of
/// their payloads reach the STREAM code behind a valid header MAC.
pub const X25519_A: &str =
    "AGE-SECRET-KEY-12FACRT7YCL0M2NT8SA2YE4LHNEUD732L856SNKU3VGWQLF4JP8XS92ZQZU";

/// The identities the vectors use: X25519 "A" and the symmetric test key.
pub fn identities() -> Vec<Identity> {
    vec![
        Identity::parse(X25519_A).expect("valid test identity"),
        Identity::Sym(SymKey::from_bytes(zeroize::Zeroizing::new(
            *b"r2seal test vector symmetric key",
        ))),
    ]
}

/// `parse_identity_file` / `Keyring::parse` never get a passphrase here.
pub fn no_passphrase() -> Result<Passphrase, Error> {
    Err(Error::PassphraseUnavailable)
}

/// A tiny cursor over fuzz input for targets that need numbers.
pub struct Reader<'a>(pub &'a [u8]);

impl Reader<'_> {
    pub fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }

    pub fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        let n = self.0.len().min(8);
        bytes[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u64::from_le_bytes(bytes)
    }

    /// A number drawn mostly near `scale` (sizes around chunks and parts), sometimes
    /// anywhere in u64.
    pub fn size(&mut self, scale: u64) -> u64 {
        match self.u8() % 4 {
            0 => self.u64(),
            1 => u64::MAX - self.u64() % (4 * scale),
            _ => self.u64() % (4 * scale),
        }
    }
}
