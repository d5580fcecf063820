//! The core's one error type.
//!
//! Errors about public structure (a malformed header, an unknown version) are
//! specific. Errors that involve a key are deliberately coarse: "no identity matches"
//! or "authentication failed", never which byte or which check, so an attacker
//! probing with forged objects learns nothing from the message.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The input is not an age file (for a bucket object: plaintext, not sealed).
    NotSealed,
    /// An age header of a version, or an r2seal stanza, this release does not know.
    UnsupportedVersion,
    /// The header or a stanza breaks the format's grammar.
    Malformed(&'static str),
    /// None of the given identities can unwrap the file key.
    NoMatchingIdentity,
    /// Authentication failed: header MAC, a chunk tag, sealed metadata, or a length
    /// no valid object can have. Deliberately one variant for all of them.
    Corrupt,
    /// The object is bound to a different name than the one it was opened under.
    WrongName,
    /// The object is bound to a name and none was given to check it against.
    NameRequired,
    /// A byte range outside the object.
    RangeNotSatisfiable,
    /// The envelope would not fit the store's metadata budget.
    HeaderTooLarge { size: usize, limit: usize },
    /// A key, recipient or identity string that does not parse.
    InvalidKey(&'static str),
    /// A keyring or key file that does not parse (never echoes file contents).
    InvalidKeyFile(String),
    /// A keyring change that cannot be made: an unknown or duplicate key name, a
    /// revocation undone, a setting naming the wrong kind of key.
    Keyring(String),
    /// Passphrase-protected file: wrong passphrase or tampered file (coarse on purpose).
    WrongPassphrase,
    /// Argon2id or scrypt parameters above the cap: refused rather than hang.
    KdfTooExpensive(String),
    /// A passphrase was needed and none could be obtained.
    PassphraseUnavailable,
    /// The passphrase given is empty: from `R2SEAL_PASSPHRASE` (set but empty) when
    /// `from_env`, else typed.
    EmptyPassphrase { from_env: bool },
    /// A new passphrase and its confirmation differ.
    PassphrasesDiffer,
    /// The recipient set is empty or mixes recipients that cannot be combined.
    InvalidRecipients(&'static str),
    /// A policy (`policy`: its prefix) or the defaults (`policy: None`) name a key that no
    /// longer seals: `status` is "retired" or "revoked".
    InactiveKeyNamed {
        key: String,
        status: &'static str,
        policy: Option<String>,
    },
    /// An object key whose encrypted form would exceed the store's key limit.
    NameTooLong { size: usize, limit: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotSealed => f.write_str("not sealed: the input is not an age/r2seal object"),
            Error::UnsupportedVersion => {
                f.write_str("unsupported format version: a newer r2seal may be needed")
            }
            Error::Malformed(what) => write!(f, "malformed header: {what}"),
            Error::NoMatchingIdentity => f.write_str(
                "no identity matches: the object is sealed to keys you do not hold",
            ),
            Error::Corrupt => f.write_str(
                "authentication failed: the object is corrupted or was tampered with",
            ),
            Error::WrongName => f.write_str("the object is not bound to this name"),
            Error::NameRequired => {
                f.write_str("the object is bound to a name; give the name to open it")
            }
            Error::RangeNotSatisfiable => f.write_str("range not satisfiable"),
            Error::HeaderTooLarge { size, limit } => write!(
                f,
                "envelope is {size} bytes, over the {limit}-byte metadata limit: use fewer recipients or less metadata"
            ),
            Error::InvalidKey(what) => write!(f, "invalid key: {what}"),
            Error::InvalidKeyFile(what) => write!(f, "invalid key file: {what}"),
            Error::Keyring(what) => write!(f, "keyring: {what}"),
            Error::WrongPassphrase => {
                f.write_str("wrong passphrase, or the protected file is corrupted")
            }
            Error::KdfTooExpensive(what) => {
                write!(f, "refusing key-derivation parameters above the cap: {what}")
            }
            Error::PassphraseUnavailable => f.write_str(
                "a passphrase is needed: set R2SEAL_PASSPHRASE or run from a terminal",
            ),
            Error::EmptyPassphrase { from_env: true } => f.write_str(
                "R2SEAL_PASSPHRASE is set but empty: give the passphrase there, or unset it to be asked on the terminal",
            ),
            Error::EmptyPassphrase { from_env: false } => {
                f.write_str("an empty passphrase is refused")
            }
            Error::PassphrasesDiffer => {
                f.write_str("the passphrase and its confirmation differ")
            }
            Error::InvalidRecipients(what) => write!(f, "invalid recipients: {what}"),
            Error::InactiveKeyNamed {
                key,
                status,
                policy: None,
            } => write!(
                f,
                "invalid recipients: the defaults name key {key:?}, which is {status}; update them (r2seal key default KEY…)"
            ),
            Error::InactiveKeyNamed {
                key,
                status,
                policy: Some(prefix),
            } => write!(
                f,
                "invalid recipients: the policy for {prefix:?} names key {key:?}, which is {status}; update it (r2seal key policy {prefix:?} KEY…, or --remove)"
            ),
            Error::NameTooLong { size, limit } => write!(
                f,
                "the encrypted object key would be {size} bytes, over the {limit}-byte key limit: use a shorter key (SECURITY.md §3.10)"
            ),
        }
    }
}

impl std::error::Error for Error {}
