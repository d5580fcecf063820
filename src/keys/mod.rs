//! Identities and recipients: age X25519 (through the `age` crate) and r2seal's
//! symmetric keyring keys (SECURITY.md §4).
//!
//! Every secret here zeroizes on drop and has a `Debug` that prints only its key id.

pub mod files;
pub mod keyring;
pub mod passphrase;
mod sym;
mod x25519;

use std::fmt;
use std::str::FromStr;

use crate::format::header::Stanza;
use age::secrecy::ExposeSecret;
use age_core::format::FileKey;
use base64::{prelude::BASE64_STANDARD_NO_PAD, Engine};
use sha2::{Digest, Sha256};

pub use sym::SymKey;
pub(crate) use sym::STANZA_TAG as SYM_STANZA_TAG;
pub use x25519::X25519Identity;

use crate::Error;

/// A short public identifier of a key: 8 bytes, written as unpadded base64.
///
/// For symmetric keys it appears in their stanzas (so a holder finds its stanza
/// without trial decryption); X25519 stanzas stay anonymous, as in age, and their id
/// exists only for keyrings and policies.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of an age recipient: SHA-256("r2seal/v1 recipient id" ‖ recipient)[..8].
    fn of_recipient_string(recipient: &str) -> KeyId {
        let digest = Sha256::new()
            .chain_update(b"r2seal/v1 recipient id\0")
            .chain_update(recipient.as_bytes())
            .finalize();
        KeyId(digest[..8].try_into().expect("8 bytes"))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64_STANDARD_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut id = [0u8; 8];
        match BASE64_STANDARD_NO_PAD.decode_slice(s, &mut id) {
            Ok(8) if s.len() == 11 => Ok(KeyId(id)),
            _ => Err(Error::InvalidKey("a key id is 11 characters of base64")),
        }
    }
}

/// Case-insensitive prefix test that copies nothing: `s` may be a secret.
fn has_prefix_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Someone an object can be sealed to.
#[derive(Clone)]
pub enum Recipient {
    /// An age X25519 recipient (`age1…`). Its stanzas are anonymous.
    X25519(age::x25519::Recipient),
    /// A symmetric keyring key: whoever seals with it can also open.
    Sym(SymKey),
}

impl Recipient {
    /// Parses an `age1…` recipient (or, for completeness, a symmetric key string).
    pub fn parse(s: &str) -> Result<Recipient, Error> {
        let s = s.trim();
        if s.starts_with("age1pq1") || s.starts_with("age1tag") {
            Err(Error::InvalidKey(
                "post-quantum and tagged age recipients are not supported yet (see SECURITY.md §7)",
            ))
        } else if s.starts_with("age1") {
            let recipient = age::x25519::Recipient::from_str(s)
                .map_err(|_| Error::InvalidKey("not a valid age X25519 recipient"))?;
            if x25519::is_small_order(&x25519::public_key(&recipient)) {
                return Err(Error::InvalidKey(
                    "not a usable age X25519 recipient: a point of small order",
                ));
            }
            Ok(Recipient::X25519(recipient))
        } else if has_prefix_ignore_case(s, sym::SYM_KEY_PREFIX) {
            SymKey::parse(s).map(Recipient::Sym)
        } else {
            Err(Error::InvalidKey("expected an age recipient (age1…)"))
        }
    }

    pub fn key_id(&self) -> KeyId {
        match self {
            Recipient::X25519(r) => KeyId::of_recipient_string(&r.to_string()),
            Recipient::Sym(k) => k.id(),
        }
    }

    /// Whether `other` is the same key (what is sealed to one opens with the other's
    /// identity).
    pub fn same_key(&self, other: &Recipient) -> bool {
        match (self, other) {
            (Recipient::X25519(a), Recipient::X25519(b)) => a == b,
            (Recipient::Sym(a), Recipient::Sym(b)) => bool::from(subtle::ConstantTimeEq::ct_eq(
                &a.secret_bytes()[..],
                &b.secret_bytes()[..],
            )),
            _ => false,
        }
    }

    /// Wraps `file_key` into this recipient's stanza.
    pub(crate) fn wrap(&self, file_key: &FileKey) -> Result<Stanza, Error> {
        match self {
            Recipient::X25519(r) => x25519::wrap(r, file_key),
            Recipient::Sym(k) => Ok(k.wrap(file_key)),
        }
    }

    /// A short human description: the `age1…` string, or `sym:<key id>`.
    pub fn describe(&self) -> String {
        match self {
            Recipient::X25519(r) => r.to_string(),
            Recipient::Sym(k) => format!("sym:{}", k.id()),
        }
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipient::X25519(r) => write!(f, "Recipient::X25519({r})"),
            Recipient::Sym(k) => write!(f, "Recipient::Sym({:?})", k.id()),
        }
    }
}

/// Something that can open objects: an age X25519 identity or a symmetric key.
#[derive(Clone)]
pub enum Identity {
    X25519(X25519Identity),
    Sym(SymKey),
}

impl Identity {
    /// Parses one identity line: `AGE-SECRET-KEY-1…` or `R2SEAL-SYM-KEY-1…`.
    pub fn parse(s: &str) -> Result<Identity, Error> {
        let s = s.trim();
        if s.starts_with("AGE-SECRET-KEY-1") {
            age::x25519::Identity::from_str(s)
                .map(|i| Identity::X25519(X25519Identity::new(i)))
                .map_err(|_| Error::InvalidKey("not a valid age identity"))
        } else if has_prefix_ignore_case(s, sym::SYM_KEY_PREFIX) {
            SymKey::parse(s).map(Identity::Sym)
        } else if s.starts_with("AGE-SECRET-KEY-PQ-") {
            Err(Error::InvalidKey(
                "post-quantum age identities are not supported yet (see SECURITY.md §7)",
            ))
        } else if s.starts_with("AGE-PLUGIN-") {
            Err(Error::InvalidKey("age plugin identities are not supported"))
        } else {
            Err(Error::InvalidKey(
                "expected AGE-SECRET-KEY-1… or R2SEAL-SYM-KEY-1…",
            ))
        }
    }

    pub fn generate_x25519() -> Identity {
        Identity::X25519(X25519Identity::new(age::x25519::Identity::generate()))
    }

    pub fn to_recipient(&self) -> Recipient {
        match self {
            Identity::X25519(i) => Recipient::X25519(i.age().to_public()),
            Identity::Sym(k) => Recipient::Sym(k.clone()),
        }
    }

    pub fn key_id(&self) -> KeyId {
        self.to_recipient().key_id()
    }

    /// The secret in its text form. Explicit declassification: the caller decides
    /// where this may go (a 0600 file, `wrangler secret put`), nothing else prints it.
    pub fn to_secret_string(&self) -> zeroize::Zeroizing<String> {
        match self {
            Identity::X25519(i) => {
                zeroize::Zeroizing::new(i.age().to_string().expose_secret().to_owned())
            }
            Identity::Sym(k) => k.to_secret_string(),
        }
    }

    /// Tries to unwrap one stanza. `None`: not ours. `Some(Err)`: ours but invalid.
    pub(crate) fn unwrap(&self, stanza: &Stanza) -> Option<Result<FileKey, Error>> {
        match self {
            Identity::X25519(i) => x25519::unwrap(i, stanza),
            Identity::Sym(k) => k.unwrap(stanza),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::X25519(_) => write!(f, "Identity::X25519({:?}, <redacted>)", self.key_id()),
            Identity::Sym(k) => write!(f, "Identity::Sym({:?}, <redacted>)", k.id()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_secrets() {
        let x = Identity::generate_x25519();
        let s = Identity::Sym(SymKey::generate());
        for id in [&x, &s] {
            let secret = id.to_secret_string();
            let debug = format!("{id:?} {:?}", id.to_recipient());
            assert!(!debug.contains(secret.as_str()), "{debug}");
            // Not even a fragment of the encoded secret.
            assert!(!debug.contains(&secret[20..40]), "{debug}");
            assert!(debug.contains("redacted"));
        }
    }

    #[test]
    fn unsupported_recipient_kinds_say_so() {
        for s in ["age1pq1qqqq", "age1tag1qqqq", "age1tagpq1qqqq"] {
            let err = Recipient::parse(s).unwrap_err().to_string();
            assert!(err.contains("post-quantum"), "{s}: {err}");
        }
        let err = Identity::parse("AGE-SECRET-KEY-PQ-1QQQQ")
            .unwrap_err()
            .to_string();
        assert!(err.contains("post-quantum"), "{err}");
    }

    #[test]
    fn key_ids_round_trip_as_text() {
        let id = Identity::generate_x25519().key_id();
        assert_eq!(id.to_string().parse::<KeyId>().unwrap(), id);
        assert!("short".parse::<KeyId>().is_err());
    }
}
