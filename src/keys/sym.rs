//! Symmetric keyring keys and their `r2seal-sym` stanza (SECURITY.md §4.2).
//!
//! ```text
//! -> r2seal-sym <key id> <salt>
//! <ChaCha20-Poly1305(HKDF-SHA256(K, salt, "r2seal/v1 sym"), nonce 0, file key)>
//! key id = HKDF-SHA256(K, "", "r2seal/v1 sym key id")[..8]
//! ```
//! The same shape as age's scrypt stanza with HKDF in place of scrypt: the wrap key
//! is fresh for every stanza (random 16-byte salt), so the zero nonce is never reused.

use age_core::format::FileKey;
use age_core::primitives::{aead_decrypt, aead_encrypt, bech32_decode, bech32_encode, hkdf};
use age_core::secrecy::ExposeSecret;
use base64::{prelude::BASE64_STANDARD_NO_PAD, Engine};
use zeroize::{Zeroize, Zeroizing};

use super::KeyId;
use crate::format::header::Stanza;
use crate::Error;

pub(crate) const STANZA_TAG: &str = "r2seal-sym";
/// Upper-case prefix of the text form, as age writes `AGE-SECRET-KEY-1…`.
pub(crate) const SYM_KEY_PREFIX: &str = "R2SEAL-SYM-KEY-1";
const HRP: bech32::Hrp = bech32::Hrp::parse_unchecked("r2seal-sym-key-");
const WRAP_LABEL: &[u8] = b"r2seal/v1 sym";
const ID_LABEL: &[u8] = b"r2seal/v1 sym key id";
const SALT_BYTES: usize = 16;

/// A 256-bit symmetric key. Zeroized on drop; `Debug` shows only its id.
#[derive(Clone)]
pub struct SymKey {
    key: Zeroizing<[u8; 32]>,
    id: KeyId,
}

impl SymKey {
    pub fn generate() -> SymKey {
        let mut key = Zeroizing::new([0u8; 32]);
        crate::random::fill(key.as_mut());
        SymKey::from_bytes(key)
    }

    pub fn from_bytes(key: Zeroizing<[u8; 32]>) -> SymKey {
        let derived = hkdf(&[], ID_LABEL, key.as_ref());
        let id = KeyId(derived[..8].try_into().expect("8 bytes"));
        SymKey { key, id }
    }

    /// Parses `R2SEAL-SYM-KEY-1…` (Bech32, either case, as age accepts its keys).
    pub fn parse(s: &str) -> Result<SymKey, Error> {
        let invalid = || Error::InvalidKey("not a valid R2SEAL-SYM-KEY-1… key");
        let s = s.trim();
        // Bech32 forbids mixed case; either all-upper (as written) or all-lower.
        if s.bytes().any(|b| b.is_ascii_lowercase()) && s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid());
        }
        let lower = Zeroizing::new(s.to_ascii_lowercase());
        bech32_decode(
            &lower,
            |_| invalid(),
            |hrp| if hrp == HRP { Ok(()) } else { Err(invalid()) },
            |_, bytes| {
                let mut bytes: Zeroizing<Vec<u8>> = Zeroizing::new(bytes.collect());
                let key: [u8; 32] = bytes[..].try_into().map_err(|_| invalid())?;
                bytes.zeroize();
                Ok(SymKey::from_bytes(Zeroizing::new(key)))
            },
        )
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The raw key, for derivations elsewhere in the crate (name key, descriptor MAC).
    pub(crate) fn secret_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The text form. Explicit declassification, like [`super::Identity::to_secret_string`].
    pub fn to_secret_string(&self) -> Zeroizing<String> {
        let mut lower = bech32_encode(HRP, self.key.as_ref());
        let upper = Zeroizing::new(lower.to_ascii_uppercase());
        lower.zeroize();
        upper
    }

    fn wrap_key(&self, salt: &[u8]) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(hkdf(salt, WRAP_LABEL, self.key.as_ref()))
    }

    pub(crate) fn wrap(&self, file_key: &FileKey) -> Stanza {
        let mut salt = [0u8; SALT_BYTES];
        crate::random::fill(&mut salt);
        let body = aead_encrypt(&self.wrap_key(&salt), file_key.expose_secret());
        Stanza {
            tag: STANZA_TAG.to_owned(),
            args: vec![self.id.to_string(), BASE64_STANDARD_NO_PAD.encode(salt)],
            body,
        }
    }

    pub(crate) fn unwrap(&self, stanza: &Stanza) -> Option<Result<FileKey, Error>> {
        if stanza.tag != STANZA_TAG {
            return None;
        }
        let (id, salt) = match parse_stanza(stanza) {
            Ok(parts) => parts,
            Err(e) => return Some(Err(e)),
        };
        if id != self.id {
            return None;
        }
        // A matching id with a body that fails to open means the stanza was forged or
        // damaged (or an id collision, 2^-64): report it, coarsely, rather than skip.
        Some(
            aead_decrypt(&self.wrap_key(&salt), 16, &stanza.body)
                .map_err(|_| Error::Corrupt)
                .map(|mut pt| {
                    let key = FileKey::init_with_mut(|k| k.copy_from_slice(&pt));
                    pt.zeroize();
                    key
                }),
        )
    }
}

/// Checks an `r2seal-sym` stanza's grammar: two arguments (id, 16-byte salt), a
/// 32-byte body.
pub(crate) fn parse_stanza(stanza: &Stanza) -> Result<(KeyId, [u8; SALT_BYTES]), Error> {
    let bad = || Error::Malformed("invalid r2seal-sym stanza");
    let [id, salt] = &stanza.args[..] else {
        return Err(bad());
    };
    let id: KeyId = id.parse().map_err(|_| bad())?;
    let mut salt_bytes = [0u8; SALT_BYTES];
    match BASE64_STANDARD_NO_PAD.decode_slice(salt, &mut salt_bytes) {
        Ok(SALT_BYTES) if salt.len() == 22 => {}
        _ => return Err(bad()),
    }
    if stanza.body.len() != 32 {
        return Err(bad());
    }
    Ok((id, salt_bytes))
}

impl std::fmt::Debug for SymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SymKey({}, <redacted>)", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_in_either_case() {
        let k = SymKey::generate();
        let text = k.to_secret_string();
        assert!(text.starts_with(SYM_KEY_PREFIX));
        assert_eq!(SymKey::parse(&text).unwrap().id(), k.id());
        assert_eq!(SymKey::parse(&text.to_lowercase()).unwrap().id(), k.id());
        let mut broken = text.to_string();
        broken.pop();
        broken.push('q');
        assert!(SymKey::parse(&broken).is_err());
        // Lower-case one letter of the data part (digits have no case).
        let at = text
            .char_indices()
            .skip(16)
            .find(|(_, c)| c.is_ascii_alphabetic())
            .unwrap()
            .0;
        let mut mixed = text.to_string();
        mixed.replace_range(at..at + 1, &text[at..at + 1].to_lowercase());
        assert!(SymKey::parse(&mixed).is_err());
    }

    #[test]
    fn wrap_unwrap_and_foreign_keys() {
        let k = SymKey::generate();
        let other = SymKey::generate();
        let fk = FileKey::new(Box::new([3; 16]));
        let stanza = k.wrap(&fk);
        let back = k.unwrap(&stanza).unwrap().unwrap();
        assert_eq!(back.expose_secret(), fk.expose_secret());
        assert!(other.unwrap(&stanza).is_none());
        let mut forged = stanza.clone();
        forged.body[0] ^= 1;
        assert_eq!(k.unwrap(&forged).unwrap().err(), Some(Error::Corrupt));
    }
}
