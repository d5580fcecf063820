//! Passphrase-protected files (identities, keyrings) as age files whose only stanza
//! is `r2seal-argon2id` (SECURITY.md §4.3).
//!
//! ```text
//! -> r2seal-argon2id <salt> <m KiB> <t> <p>
//! <ChaCha20-Poly1305(Argon2id(passphrase, "r2seal/v1 argon2id" ‖ salt, m, t, p), nonce 0, file key)>
//! ```
//! age's scrypt stanza with Argon2id (RFC 9106) as the KDF. The parameters live in
//! the file; opening refuses any above [`Argon2Params::CAP`] instead of hanging.

use age_core::format::FileKey;
use age_core::primitives::{aead_decrypt, aead_encrypt};
use age_core::secrecy::ExposeSecret;
use base64::{prelude::BASE64_STANDARD_NO_PAD, Engine};
use zeroize::{Zeroize, Zeroizing};

use crate::format::envelope::header_mac;
use crate::format::header::{Header, Stanza};
use crate::format::stream::{open_chunks, seal_chunks, StreamKey, PAYLOAD_NONCE_SIZE};
use crate::Error;

pub const STANZA_TAG: &str = "r2seal-argon2id";
const SALT_LABEL: &[u8] = b"r2seal/v1 argon2id";
const SALT_BYTES: usize = 16;

/// A passphrase. Zeroized on drop; `Debug` never shows it.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    pub fn new(s: String) -> Passphrase {
        Passphrase(Zeroizing::new(s))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// Argon2id cost parameters: memory in KiB, passes, lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Argon2Params {
    /// 64 MiB, 3 passes, 1 lane: RFC 9106's second recommendation scaled to one lane,
    /// about half a second on a laptop core.
    pub const DEFAULT: Argon2Params = Argon2Params {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };
    /// The most a file may ask for: 1 GiB, 10 passes, 8 lanes.
    pub const CAP: Argon2Params = Argon2Params {
        m_kib: 1024 * 1024,
        t: 10,
        p: 8,
    };

    fn check(&self, cap: &Argon2Params) -> Result<(), Error> {
        if self.m_kib > cap.m_kib || self.t > cap.t || self.p > cap.p {
            return Err(Error::KdfTooExpensive(format!(
                "Argon2id m={} KiB t={} p={} (cap m={} t={} p={})",
                self.m_kib, self.t, self.p, cap.m_kib, cap.t, cap.p
            )));
        }
        // Below argon2's own minimums (m ≥ 8p, t ≥ 1, p ≥ 1) is malformed, not cheap.
        if self.t == 0 || self.p == 0 || self.m_kib < 8 * self.p {
            return Err(Error::Malformed("invalid Argon2id parameters"));
        }
        Ok(())
    }

    fn wrap_key(
        &self,
        passphrase: &Passphrase,
        salt: &[u8; SALT_BYTES],
    ) -> Result<Zeroizing<[u8; 32]>, Error> {
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|_| Error::Malformed("invalid Argon2id parameters"))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut full_salt = Vec::with_capacity(SALT_LABEL.len() + SALT_BYTES);
        full_salt.extend_from_slice(SALT_LABEL);
        full_salt.extend_from_slice(salt);
        let mut key = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase.expose().as_bytes(), &full_salt, key.as_mut())
            .map_err(|_| Error::Malformed("invalid Argon2id parameters"))?;
        Ok(key)
    }
}

/// True if `bytes` is an age file protected by an r2seal Argon2id passphrase.
pub fn is_protected(bytes: &[u8]) -> bool {
    matches!(Header::parse_prefix(bytes), Ok(Some((h, _))) if h.stanzas.len() == 1 && h.stanzas[0].tag == STANZA_TAG)
}

/// Seals `plaintext` (a key file) under `passphrase` as a complete age file.
pub fn protect(
    plaintext: &[u8],
    passphrase: &Passphrase,
    params: Argon2Params,
) -> Result<Vec<u8>, Error> {
    params.check(&Argon2Params::CAP)?;
    let mut salt = [0u8; SALT_BYTES];
    crate::random::fill(&mut salt);
    let file_key = FileKey::init_with_mut(|k| crate::random::fill(k));
    let wrap_key = params.wrap_key(passphrase, &salt)?;
    let stanza = Stanza {
        tag: STANZA_TAG.to_owned(),
        args: vec![
            BASE64_STANDARD_NO_PAD.encode(salt),
            params.m_kib.to_string(),
            params.t.to_string(),
            params.p.to_string(),
        ],
        body: aead_encrypt(&wrap_key, file_key.expose_secret()),
    };
    let stanzas = vec![stanza];
    let mac = header_mac(&file_key, &stanzas);
    let mut out = Header { stanzas, mac }.to_file_bytes();
    let mut nonce = [0u8; PAYLOAD_NONCE_SIZE];
    crate::random::fill(&mut nonce);
    out.extend_from_slice(&nonce);
    let key = StreamKey::derive(file_key.expose_secret(), &nonce, b"payload");
    seal_chunks(&key, 0, true, plaintext, &mut out);
    Ok(out)
}

/// Opens a file written by [`protect`]. Wrong passphrase and tampering give the same
/// error on purpose.
pub fn unprotect(
    file: &[u8],
    passphrase: &Passphrase,
    cap: &Argon2Params,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let (header, used) =
        Header::parse_prefix(file)?.ok_or(Error::Malformed("header is truncated"))?;
    let [stanza] = &header.stanzas[..] else {
        return Err(Error::Malformed("a passphrase stanza must be alone"));
    };
    if stanza.tag != STANZA_TAG {
        return Err(Error::Malformed("not an r2seal passphrase-protected file"));
    }
    let (salt, params) = parse_stanza(stanza)?;
    params.check(cap)?;
    let wrap_key = params.wrap_key(passphrase, &salt)?;
    let mut fk = aead_decrypt(&wrap_key, 16, &stanza.body).map_err(|_| Error::WrongPassphrase)?;
    let file_key = FileKey::init_with_mut(|k| k.copy_from_slice(&fk));
    fk.zeroize();
    let expected = header_mac(&file_key, &header.stanzas);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        &expected[..],
        &header.mac[..],
    )) {
        return Err(Error::WrongPassphrase);
    }
    let payload = &file[used..];
    if payload.len() < PAYLOAD_NONCE_SIZE {
        return Err(Error::WrongPassphrase);
    }
    let (nonce, stream) = payload.split_at(PAYLOAD_NONCE_SIZE);
    let key = StreamKey::derive(
        file_key.expose_secret(),
        nonce.try_into().expect("16 bytes"),
        b"payload",
    );
    let mut out = Zeroizing::new(Vec::with_capacity(stream.len()));
    open_chunks(&key, 0, true, stream, &mut out).map_err(|_| Error::WrongPassphrase)?;
    Ok(out)
}

fn parse_stanza(stanza: &Stanza) -> Result<([u8; SALT_BYTES], Argon2Params), Error> {
    let bad = || Error::Malformed("invalid r2seal-argon2id stanza");
    let [salt, m, t, p] = &stanza.args[..] else {
        return Err(bad());
    };
    let mut salt_bytes = [0u8; SALT_BYTES];
    match BASE64_STANDARD_NO_PAD.decode_slice(salt, &mut salt_bytes) {
        Ok(SALT_BYTES) if salt.len() == 22 => {}
        _ => return Err(bad()),
    }
    let num = |s: &str| -> Result<u32, Error> {
        if s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    if stanza.body.len() != 32 {
        return Err(bad());
    }
    Ok((
        salt_bytes,
        Argon2Params {
            m_kib: num(m)?,
            t: num(t)?,
            p: num(p)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Argon2Params = Argon2Params {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    #[test]
    fn protect_round_trips_and_wrong_passphrase_fails() {
        let pass = Passphrase::new("correct horse".into());
        let file = protect(b"AGE-SECRET-KEY-1...", &pass, FAST).unwrap();
        assert!(is_protected(&file));
        let back = unprotect(&file, &pass, &Argon2Params::CAP).unwrap();
        assert_eq!(&back[..], b"AGE-SECRET-KEY-1...");
        let wrong = Passphrase::new("battery staple".into());
        assert_eq!(
            unprotect(&file, &wrong, &Argon2Params::CAP).err(),
            Some(Error::WrongPassphrase)
        );
    }

    #[test]
    fn expensive_parameters_are_refused_before_any_work() {
        let pass = Passphrase::new("p".into());
        let file = protect(b"x", &pass, FAST).unwrap();
        let text = String::from_utf8_lossy(&file).into_owned();
        let hostile = text.replacen(" 64 1 1\n", " 4194304 1 1\n", 1);
        let err = unprotect(hostile.as_bytes(), &pass, &Argon2Params::CAP).unwrap_err();
        assert!(matches!(err, Error::KdfTooExpensive(_)), "{err:?}");
    }

    #[test]
    fn passphrase_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Passphrase::new("hunter2".into())),
            "Passphrase(<redacted>)"
        );
    }
}
