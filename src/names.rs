//! Object-name encryption (SECURITY.md §3.10): deterministic, per path segment, so that
//! prefix listing keeps working at segment boundaries. Sans-IO: strings in, strings out.
//!
//! ```text
//! name key   = HKDF-SHA-256(ikm = K, salt = empty, info = "r2seal/v1 names"), 64 bytes
//! key id     = HKDF-SHA-256(ikm = K, salt = empty, info = "r2seal/v1 names key id")[..8]
//! segment s_i of the plaintext key (split on "/"), stored as
//! c_i        = base32(AES-SIV(name key, AD = [stored key bytes before c_i], s_i))
//! stored key = c_1 "/" c_2 "/" ... "/" c_n        (an empty s_i stays empty)
//! ```
//!
//! `K` is a symmetric keyring key (`R2SEAL-SYM-KEY-1…`); AES-SIV is RFC 5297 with
//! AES-256 (RustCrypto `aes-siv`, `Aes256Siv`), one associated-data component: the
//! stored bytes before the segment, separators included (`""` for the first segment,
//! `"c_1/"` for the second, ...). base32 is RFC 4648's alphabet in lower case, without
//! padding, canonical (non-zero trailing bits are refused).
//!
//! What this module must never do: touch a store, or return a decrypted name that did
//! not authenticate.

use aes_siv::{siv::Aes256Siv, KeyInit};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::keys::{KeyId, SymKey};
use crate::Error;

/// R2's (and S3's) largest object key, in bytes.
pub const MAX_STORED_KEY_LEN: usize = 1024;
/// The longest plaintext key that fits R2 as a single segment (no `/`).
pub const MAX_SINGLE_SEGMENT_LEN: usize = 624;

const KEY_LABEL: &[u8] = b"r2seal/v1 names";
const ID_LABEL: &[u8] = b"r2seal/v1 names key id";
const TAG_LEN: usize = 16;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The key that encrypts object names. Zeroized on drop; `Debug` shows only its id.
#[derive(Clone)]
pub struct NameKey {
    key: Zeroizing<[u8; 64]>,
    id: KeyId,
}

impl std::fmt::Debug for NameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NameKey({}, <redacted>)", self.id)
    }
}

/// Where to list for a plaintext prefix: list `stored` in the store, decrypt each key,
/// keep the plaintext keys that start with the plaintext prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPrefix {
    /// The stored prefix: the encrypted form of the plaintext prefix up to its last `/`.
    pub stored: String,
    /// `true` when the plaintext prefix ends inside a segment (`a/b/fo`): then the
    /// listing of `stored` holds more than the prefix selects and must be filtered.
    pub partial: bool,
}

impl NameKey {
    /// The name key of symmetric keyring key `k` (its own HKDF label: the name key
    /// never equals a wrap key, and its id differs from `k`'s).
    pub fn from_sym_key(k: &SymKey) -> NameKey {
        let hk = Hkdf::<Sha256>::new(None, k.secret_bytes());
        let mut key = Zeroizing::new([0u8; 64]);
        hk.expand(KEY_LABEL, key.as_mut())
            .expect("64 bytes is a valid HKDF-SHA-256 length");
        let mut id = [0u8; 8];
        hk.expand(ID_LABEL, &mut id)
            .expect("8 bytes is a valid HKDF-SHA-256 length");
        NameKey { key, id: KeyId(id) }
    }

    /// Public id of the name key: clients compare it (bucket descriptor) to learn
    /// whether they hold the key a bucket's names are encrypted under.
    pub fn id(&self) -> KeyId {
        self.id
    }

    fn siv(&self) -> Aes256Siv {
        Aes256Siv::new((&*self.key).into())
    }

    /// The stored key of plaintext key `plain`. Never fails: check the length with
    /// [`encrypt_within`](Self::encrypt_within) before writing.
    pub fn encrypt(&self, plain: &str) -> String {
        let mut siv = self.siv();
        let mut out = String::with_capacity(encrypted_len(plain));
        for (i, segment) in plain.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            if segment.is_empty() {
                continue;
            }
            let sealed = siv
                .encrypt([out.as_bytes()], segment.as_bytes())
                .expect("AES-SIV encrypts any length below 2^32");
            base32_encode(&sealed, &mut out);
        }
        debug_assert_eq!(out.len(), encrypted_len(plain));
        out
    }

    /// [`encrypt`](Self::encrypt), refusing a stored key of more than `limit` bytes
    /// (pass [`MAX_STORED_KEY_LEN`] minus any fixed prefix the store adds).
    pub fn encrypt_within(&self, plain: &str, limit: usize) -> Result<String, Error> {
        let size = encrypted_len(plain);
        if size > limit {
            return Err(Error::NameTooLong { size, limit });
        }
        Ok(self.encrypt(plain))
    }

    /// The plaintext key of stored key `stored`. Every segment must authenticate under
    /// this key at this position: another key, a changed byte or a segment moved under
    /// another parent is `Corrupt`; text that is not canonical base32 of at least a tag
    /// is `Malformed`.
    pub fn decrypt(&self, stored: &str) -> Result<String, Error> {
        let mut siv = self.siv();
        let mut out = String::with_capacity(stored.len());
        let mut at = 0;
        for (i, segment) in stored.split('/').enumerate() {
            if i > 0 {
                out.push('/');
                at += 1;
            }
            if !segment.is_empty() {
                let sealed = base32_decode(segment)
                    .filter(|b| b.len() >= TAG_LEN)
                    .ok_or(Error::Malformed(
                        "encrypted name: not base32 of an AES-SIV segment",
                    ))?;
                let plain = siv
                    .decrypt([&stored.as_bytes()[..at]], &sealed)
                    .map_err(|_| Error::Corrupt)?;
                let text = std::str::from_utf8(&plain)
                    .ok()
                    .filter(|t| !t.is_empty() && !t.contains('/'))
                    .ok_or(Error::Malformed("encrypted name: not a UTF-8 path segment"))?;
                out.push_str(text);
            }
            at += segment.len();
        }
        Ok(out)
    }

    /// How to list plaintext prefix `plain_prefix` (see [`ListPrefix`]).
    pub fn list_prefix(&self, plain_prefix: &str) -> ListPrefix {
        match plain_prefix.rfind('/') {
            Some(i) => ListPrefix {
                stored: self.encrypt(&plain_prefix[..=i]),
                partial: i + 1 < plain_prefix.len(),
            },
            None => ListPrefix {
                stored: String::new(),
                partial: !plain_prefix.is_empty(),
            },
        }
    }
}

/// Length in bytes of the stored key of `plain` (a function of its segment lengths).
pub fn encrypted_len(plain: &str) -> usize {
    plain
        .split('/')
        .map(|s| match s.len() {
            0 => 0,
            n => base32_len(n + TAG_LEN),
        })
        .sum::<usize>()
        + plain.bytes().filter(|&b| b == b'/').count()
}

fn base32_len(bytes: usize) -> usize {
    (bytes * 8).div_ceil(5)
}

/// RFC 4648 base32, lower case, no padding.
fn base32_encode(data: &[u8], out: &mut String) {
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &b in data {
        acc = (acc << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
}

/// Canonical decoding of [`base32_encode`]'s output: lower case only, no padding, a
/// length that some byte string encodes to, zero trailing bits. `None` otherwise.
fn base32_decode(text: &str) -> Option<Vec<u8>> {
    if matches!(text.len() % 8, 1 | 3 | 6) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &c in text.as_bytes() {
        let v = match c {
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> NameKey {
        NameKey::from_sym_key(&SymKey::from_bytes(Zeroizing::new([7; 32])))
    }

    #[test]
    fn base32_matches_rfc4648_test_vectors() {
        // RFC 4648 §10, lower-cased and without padding.
        for (plain, enc) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            let mut out = String::new();
            base32_encode(plain.as_bytes(), &mut out);
            assert_eq!(out, enc);
            assert_eq!(base32_decode(enc).unwrap(), plain.as_bytes());
        }
        for bad in [
            "MZXQ",
            "mzx",
            "m",
            "mzxw6y",
            "mz",
            "mzxr",
            "mzxw6ytb=",
            "my1",
        ] {
            assert_eq!(base32_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn segments_keep_the_tree_and_round_trip() {
        let k = key();
        for plain in [
            "a",
            "sessions/2026/a.json",
            "archive/",
            "a//b",
            "/lead",
            "./../x",
            "notes/über ✓.md",
        ] {
            let stored = k.encrypt(plain);
            assert_eq!(stored.len(), encrypted_len(plain));
            assert_eq!(
                stored.matches('/').count(),
                plain.matches('/').count(),
                "{plain}"
            );
            assert_eq!(k.decrypt(&stored).unwrap(), plain);
        }
        // Same parent, same stored prefix: prefix listing works at segment boundaries.
        let a = k.encrypt("sessions/a");
        let b = k.encrypt("sessions/b");
        assert_eq!(a.split('/').next(), b.split('/').next());
        assert_eq!(k.list_prefix("sessions/").stored, k.encrypt("sessions/"));
        assert!(a.starts_with(&k.list_prefix("sessions/").stored));
        // Same segment under another parent: unrelated ciphertext.
        let x = k.encrypt("x/a");
        assert_ne!(x.split('/').nth(1), a.split('/').nth(1));
    }

    #[test]
    fn moved_tampered_or_foreign_names_fail() {
        let k = key();
        let other = NameKey::from_sym_key(&SymKey::from_bytes(Zeroizing::new([8; 32])));
        let a = k.encrypt("p/a");
        let q = k.encrypt("q/a");
        let moved = format!(
            "{}/{}",
            q.split('/').next().unwrap(),
            a.split('/').nth(1).unwrap()
        );
        assert_eq!(k.decrypt(&moved), Err(Error::Corrupt));
        assert_eq!(other.decrypt(&a), Err(Error::Corrupt));
        assert!(matches!(k.decrypt("plain.txt"), Err(Error::Malformed(_))));
        assert!(matches!(k.decrypt("abc"), Err(Error::Malformed(_))));
    }

    #[test]
    fn length_limit_is_exact() {
        let k = key();
        let fits = "x".repeat(MAX_SINGLE_SEGMENT_LEN);
        assert_eq!(k.encrypt(&fits).len(), MAX_STORED_KEY_LEN);
        let over = "x".repeat(MAX_SINGLE_SEGMENT_LEN + 1);
        assert_eq!(
            k.encrypt_within(&over, MAX_STORED_KEY_LEN),
            Err(Error::NameTooLong {
                size: 1026,
                limit: 1024
            })
        );
    }

    #[test]
    fn partial_prefixes_list_the_parent() {
        let k = key();
        let p = k.list_prefix("a/b/fo");
        assert_eq!(p.stored, k.encrypt("a/b/"));
        assert!(p.partial);
        assert_eq!(
            k.list_prefix("fo"),
            ListPrefix {
                stored: String::new(),
                partial: true
            }
        );
        assert!(!k.list_prefix("").partial);
    }

    #[test]
    fn debug_is_redacted_and_ids_differ_from_the_sym_key() {
        let sym = SymKey::from_bytes(Zeroizing::new([7; 32]));
        let k = NameKey::from_sym_key(&sym);
        assert_ne!(k.id(), sym.id());
        let debug = format!("{k:?}");
        assert!(debug.contains("redacted") && debug.len() < 40, "{debug}");
    }
}
