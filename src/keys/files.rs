//! Identity and recipient files: age's plain identity files, age's scrypt-protected
//! ones, and r2seal's Argon2id-protected ones (SECURITY.md §4.3).

use std::iter;

use age::secrecy::SecretString;
use zeroize::Zeroizing;

use super::passphrase::{self, Argon2Params, Passphrase};
use super::{Identity, Recipient};
use crate::format::header::{Header, VERSION_LINE};
use crate::Error;

/// Highest scrypt work factor (log2 N) accepted from an age passphrase file:
/// 2^20 × 1 KiB = 1 GiB of memory. age itself writes 18.
pub const MAX_SCRYPT_WORK_FACTOR: u8 = 20;

/// Asks for a passphrase only when a file turns out to need one.
pub type PassphraseSource<'a> = &'a mut dyn FnMut() -> Result<Passphrase, Error>;

/// Removes a passphrase layer if the file has one: r2seal's Argon2id or age's scrypt.
/// Returns the inner bytes (or the input unchanged when it is not protected).
pub fn unwrap_protected(
    bytes: &[u8],
    passphrase: PassphraseSource<'_>,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    if !bytes.starts_with(VERSION_LINE.as_bytes()) {
        return Ok(Zeroizing::new(bytes.to_vec()));
    }
    if passphrase::is_protected(bytes) {
        let pass = passphrase()?;
        return passphrase::unprotect(bytes, &pass, &Argon2Params::CAP);
    }
    match Header::parse_prefix(bytes)? {
        Some((h, _)) if h.stanzas.len() == 1 && h.stanzas[0].tag == "scrypt" => {
            let pass = passphrase()?;
            let mut identity =
                age::scrypt::Identity::new(SecretString::from(pass.expose().to_owned()));
            identity.set_max_work_factor(MAX_SCRYPT_WORK_FACTOR);
            let decryptor =
                age::Decryptor::new(bytes).map_err(|_| Error::Malformed("invalid age file"))?;
            let mut reader = decryptor
                .decrypt(iter::once(&identity as &dyn age::Identity))
                .map_err(|e| match e {
                    age::DecryptError::ExcessiveWork { required, .. } => Error::KdfTooExpensive(
                        format!("scrypt work factor {required} (cap {MAX_SCRYPT_WORK_FACTOR})"),
                    ),
                    _ => Error::WrongPassphrase,
                })?;
            let mut out = Zeroizing::new(Vec::new());
            std::io::Read::read_to_end(&mut reader, &mut out)
                .map_err(|_| Error::WrongPassphrase)?;
            Ok(out)
        }
        _ => Err(Error::InvalidKeyFile(
            "an age-encrypted file that is not passphrase-protected".into(),
        )),
    }
}

/// Parses an identity file: one identity per line, `#` comments and blank lines
/// ignored, optionally passphrase-protected as a whole.
pub fn parse_identity_file(
    bytes: &[u8],
    passphrase: PassphraseSource<'_>,
) -> Result<Vec<Identity>, Error> {
    let inner = unwrap_protected(bytes, passphrase)?;
    let text =
        std::str::from_utf8(&inner).map_err(|_| Error::InvalidKeyFile("not UTF-8 text".into()))?;
    let mut identities = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Never echo the line: it is a secret, even when malformed.
        identities.push(
            Identity::parse(line)
                .map_err(|e| Error::InvalidKeyFile(format!("line {}: {e}", n + 1)))?,
        );
    }
    if identities.is_empty() {
        return Err(Error::InvalidKeyFile("no identities found".into()));
    }
    Ok(identities)
}

/// Parses a recipients file: one `age1…` per line, `#` comments and blank lines
/// ignored (age's `-R` format).
pub fn parse_recipients_file(text: &str) -> Result<Vec<Recipient>, Error> {
    let mut recipients = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        recipients.push(
            Recipient::parse(line)
                .map_err(|e| Error::InvalidKeyFile(format!("line {}: {e}", n + 1)))?,
        );
    }
    if recipients.is_empty() {
        return Err(Error::InvalidKeyFile("no recipients found".into()));
    }
    Ok(recipients)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_pass() -> Result<Passphrase, Error> {
        Err(Error::PassphraseUnavailable)
    }

    #[test]
    fn plain_identity_file_with_comments() {
        let id = Identity::generate_x25519();
        let text = format!(
            "# created: now\n# public key: x\n\n{}\n",
            id.to_secret_string().as_str()
        );
        let ids = parse_identity_file(text.as_bytes(), &mut no_pass).unwrap();
        assert_eq!(ids[0].key_id(), id.key_id());
    }

    #[test]
    fn malformed_line_error_does_not_echo_it() {
        let err = parse_identity_file(b"AGE-SECRET-KEY-1NOTAKEYATALLSECRETSTUFF\n", &mut no_pass)
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("line 1") && !msg.contains("SECRETSTUFF"),
            "{msg}"
        );
    }

    #[test]
    fn argon2id_protected_identity_file() {
        let id = Identity::generate_x25519();
        let pass = || Ok(Passphrase::new("pw".into()));
        let fast = Argon2Params {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let file = passphrase::protect(
            id.to_secret_string().as_bytes(),
            &Passphrase::new("pw".into()),
            fast,
        )
        .unwrap();
        let ids = parse_identity_file(&file, &mut { pass }).unwrap();
        assert_eq!(ids[0].key_id(), id.key_id());
        assert!(matches!(
            parse_identity_file(&file, &mut no_pass),
            Err(Error::PassphraseUnavailable)
        ));
    }

    #[test]
    fn age_scrypt_identity_file() {
        let id = Identity::generate_x25519();
        let mut recipient = age::scrypt::Recipient::new(SecretString::from("pw".to_owned()));
        recipient.set_work_factor(10);
        let file = age::encrypt(&recipient, id.to_secret_string().as_bytes()).unwrap();
        let ids = parse_identity_file(&file, &mut || Ok(Passphrase::new("pw".into()))).unwrap();
        assert_eq!(ids[0].key_id(), id.key_id());
        let err = parse_identity_file(&file, &mut || Ok(Passphrase::new("no".into()))).unwrap_err();
        assert_eq!(err, Error::WrongPassphrase);
    }
}
