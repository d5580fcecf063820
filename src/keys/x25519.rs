//! age's X25519 recipient stanza (C2SP age, "X25519 recipient stanza"; SECURITY.md §4.1).
//!
//! ```text
//! -> X25519 <base64: ephemeral share>
//! <ChaCha20-Poly1305(HKDF-SHA256(ikm = shared secret, salt = share || recipient,
//!                                info = "age-encryption.org/v1/X25519"), nonce 0, file key)>
//! ```
//!
//! Native builds (feature `aws-lc`) compute the scalar multiplications with aws-lc, which
//! the S3 layer links for TLS anyway: the X25519 work was the largest single cost of
//! sealing or opening a small object, and aws-lc's takes about half of x25519-dalek's
//! (what the `age` crate uses) here. Everything else is age-core's HKDF and AEAD, and the
//! tests hold both directions to the `age` crate's answers. Without the feature (wasm32)
//! age's own recipient and identity do the work. Small-order recipients are refused on
//! both paths (age itself panics on them).

use age_core::format::FileKey;
use age_core::primitives::bech32_decode;
#[cfg(feature = "aws-lc")]
use age_core::secrecy::ExposeSecret;
#[cfg(feature = "aws-lc")]
use zeroize::Zeroizing;

use crate::format::header::Stanza;
use crate::Error;

/// The X25519 points of small order (on the curve or its twist), as u-coordinates,
/// including the non-canonical encodings p and p + 1 (libsodium's list). Sealing to one
/// gives an all-zero shared secret that anyone can compute, so such a recipient is
/// refused where it is parsed and again where a file key is wrapped to it.
const SMALL_ORDER: [[u8; 32]; 7] = [
    [0; 32],
    {
        let mut one = [0; 32];
        one[0] = 1;
        one
    },
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    p_plus(-1),
    p_plus(0),
    p_plus(1),
];

/// p + delta, little-endian, for p = 2^255 - 19 and a small delta.
const fn p_plus(delta: i8) -> [u8; 32] {
    let mut u = [0xff; 32];
    u[31] = 0x7f;
    u[0] = (0xed_i16 + delta as i16) as u8;
    u
}

/// Whether `u` is a point of small order. X25519 ignores the top bit (RFC 7748), so
/// this does too.
pub(crate) fn is_small_order(u: &[u8; 32]) -> bool {
    let mut masked = *u;
    masked[31] &= 0x7f;
    SMALL_ORDER.contains(&masked)
}

/// The recipient's public key: age does not expose it but through its text form.
pub(crate) fn public_key(recipient: &age::x25519::Recipient) -> [u8; 32] {
    bech32_decode(
        &recipient.to_string(),
        |_| (),
        |_| Ok(()),
        |_, bytes| bytes.collect::<Vec<u8>>().try_into().map_err(|_| ()),
    )
    .expect("age writes its own recipients as 32 bytes of Bech32")
}

#[cfg(feature = "aws-lc")]
const TAG: &str = "X25519";
#[cfg(feature = "aws-lc")]
const LABEL: &[u8] = b"age-encryption.org/v1/X25519";

const SMALL_ORDER_ERROR: Error =
    Error::InvalidRecipients("an X25519 recipient is a point of small order");

/// Wraps `file_key` to `recipient` in one age X25519 stanza.
pub(crate) fn wrap(
    recipient: &age::x25519::Recipient,
    file_key: &FileKey,
) -> Result<Stanza, Error> {
    let public = public_key(recipient);
    if is_small_order(&public) {
        return Err(SMALL_ORDER_ERROR);
    }
    wrap_with(recipient, &public, file_key)
}

#[cfg(feature = "aws-lc")]
fn wrap_with(
    _: &age::x25519::Recipient,
    public: &[u8; 32],
    file_key: &FileKey,
) -> Result<Stanza, Error> {
    use age_core::primitives::aead_encrypt;
    use aws_lc_rs::agreement::{agree, PrivateKey, UnparsedPublicKey, X25519};
    use base64::{prelude::BASE64_STANDARD_NO_PAD, Engine};

    let failed = || Error::InvalidRecipients("X25519 key agreement failed");
    // The ephemeral scalar from the crate's one randomness source (src/random.rs).
    let mut scalar = Zeroizing::new([0u8; 32]);
    crate::random::fill(scalar.as_mut());
    let ephemeral = PrivateKey::from_private_key(&X25519, scalar.as_ref()).map_err(|_| failed())?;
    let share = ephemeral.compute_public_key().map_err(|_| failed())?;
    let share: &[u8; 32] = share.as_ref().try_into().map_err(|_| failed())?;
    // aws-lc refuses an all-zero shared secret (RFC 7748 §6.1's check, which age makes).
    let body = agree(
        &ephemeral,
        UnparsedPublicKey::new(&X25519, public),
        SMALL_ORDER_ERROR,
        |shared| {
            let key = wrap_key(share, public, shared);
            Ok(aead_encrypt(&key, file_key.expose_secret()))
        },
    )?;
    Ok(Stanza {
        tag: TAG.to_owned(),
        args: vec![BASE64_STANDARD_NO_PAD.encode(share)],
        body,
    })
}

/// HKDF-SHA256(ikm = shared secret, salt = ephemeral share || recipient, info = label).
#[cfg(feature = "aws-lc")]
fn wrap_key(share: &[u8; 32], public: &[u8; 32], shared: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(share);
    salt[32..].copy_from_slice(public);
    Zeroizing::new(age_core::primitives::hkdf(&salt, LABEL, shared))
}

/// An age X25519 identity, with what the native unwrap needs made once when the
/// identity is loaded, not for every stanza it tries: aws-lc's key (deriving it costs a
/// scalar multiplication) and the public key, part of every wrap key's salt.
#[derive(Clone)]
pub struct X25519Identity {
    age: age::x25519::Identity,
    #[cfg(feature = "aws-lc")]
    native: std::sync::Arc<NativeIdentity>,
}

impl std::fmt::Debug for X25519Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("X25519Identity(<redacted>)")
    }
}

#[cfg(feature = "aws-lc")]
struct NativeIdentity {
    private: aws_lc_rs::agreement::PrivateKey,
    public: [u8; 32],
}

impl X25519Identity {
    pub(crate) fn new(age: age::x25519::Identity) -> X25519Identity {
        X25519Identity {
            #[cfg(feature = "aws-lc")]
            native: std::sync::Arc::new(NativeIdentity::of(&age)),
            age,
        }
    }

    /// The `age` crate's identity.
    pub fn age(&self) -> &age::x25519::Identity {
        &self.age
    }
}

#[cfg(feature = "aws-lc")]
impl NativeIdentity {
    fn of(identity: &age::x25519::Identity) -> NativeIdentity {
        use aws_lc_rs::agreement::{PrivateKey, X25519};
        let secret = secret_key(identity);
        let private = PrivateKey::from_private_key(&X25519, secret.as_ref())
            .expect("any 32 bytes are an X25519 private key");
        let public = private
            .compute_public_key()
            .expect("an X25519 key has a public key")
            .as_ref()
            .try_into()
            .expect("32 bytes");
        NativeIdentity { private, public }
    }
}

/// Unwraps an age X25519 stanza with `identity`, with the `age` crate's rules and
/// answers: `None` for another type or a stanza this identity cannot decrypt (it may be
/// someone else's: X25519 stanzas are anonymous); `Some(Err)` for an invalid one (not
/// exactly one argument of canonical base64 for 32 bytes, a body other than 32 bytes,
/// or an all-zero shared secret).
#[cfg(feature = "aws-lc")]
pub(crate) fn unwrap(identity: &X25519Identity, stanza: &Stanza) -> Option<Result<FileKey, Error>> {
    use age_core::primitives::aead_decrypt;
    use aws_lc_rs::agreement::{agree, UnparsedPublicKey, X25519};
    use base64::{prelude::BASE64_STANDARD_NO_PAD, Engine};

    if stanza.tag != TAG {
        return None;
    }
    let invalid = || Some(Err(Error::Malformed("invalid X25519 stanza")));
    let [arg] = &stanza.args[..] else {
        return invalid();
    };
    let mut share = [0u8; 33];
    match BASE64_STANDARD_NO_PAD.decode_slice(arg, &mut share) {
        Ok(32) => {}
        _ => return invalid(),
    }
    let share: &[u8; 32] = share[..32].try_into().expect("32 bytes");
    if stanza.body.len() != 32 {
        return invalid();
    }
    let NativeIdentity { private, public } = &*identity.native;
    // aws-lc refuses an all-zero shared secret: age's `InvalidHeader` for it.
    let Ok(key) = agree(
        private,
        UnparsedPublicKey::new(&X25519, share),
        (),
        |shared| Ok(wrap_key(share, public, shared)),
    ) else {
        return invalid();
    };
    // Not decrypting is not an error: the stanza may be for another recipient.
    let opened = Zeroizing::new(aead_decrypt(&key, 16, &stanza.body).ok()?);
    // Straight into the key's own (zeroized) box: no copy left on the stack.
    Some(Ok(FileKey::init_with_mut(|file_key| {
        file_key.copy_from_slice(&opened)
    })))
}

#[cfg(not(feature = "aws-lc"))]
pub(crate) fn unwrap(identity: &X25519Identity, stanza: &Stanza) -> Option<Result<FileKey, Error>> {
    age::Identity::unwrap_stanza(&identity.age, &stanza.to_age())
        .map(|r| r.map_err(|_| Error::Malformed("invalid X25519 stanza")))
}

/// The identity's scalar: age does not expose it but through its text form.
#[cfg(feature = "aws-lc")]
fn secret_key(identity: &age::x25519::Identity) -> Zeroizing<[u8; 32]> {
    use age_core::secrecy::ExposeSecret as _;
    let text = identity.to_string();
    let lower = Zeroizing::new(text.expose_secret().to_ascii_lowercase());
    let mut key = Zeroizing::new([0u8; 32]);
    bech32_decode(
        &lower,
        |_| (),
        |_| Ok(()),
        |_, bytes| {
            let mut n = 0;
            for (slot, byte) in key.iter_mut().zip(bytes) {
                *slot = byte;
                n += 1;
            }
            (n == 32).then_some(()).ok_or(())
        },
    )
    .expect("age writes its own identities as 32 bytes of Bech32");
    key
}

#[cfg(not(feature = "aws-lc"))]
fn wrap_with(
    recipient: &age::x25519::Recipient,
    _: &[u8; 32],
    file_key: &FileKey,
) -> Result<Stanza, Error> {
    let (mut stanzas, _labels) = age::Recipient::wrap_file_key(recipient, file_key)
        .map_err(|_| Error::InvalidRecipients("age could not wrap the file key"))?;
    // age's X25519 recipient always yields exactly one stanza.
    stanzas
        .pop()
        .map(Stanza::from)
        .ok_or(Error::InvalidRecipients("empty stanza set"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use age_core::primitives::bech32_encode;
    use age_core::secrecy::ExposeSecret;
    use proptest::prelude::*;

    fn recipient_string(public: &[u8; 32]) -> String {
        bech32_encode(bech32::Hrp::parse_unchecked("age"), public)
    }

    fn recipient_of(public: &[u8; 32]) -> age::x25519::Recipient {
        recipient_string(public)
            .parse()
            .expect("any 32 bytes make an age recipient")
    }

    fn small_order_points() -> impl Iterator<Item = [u8; 32]> {
        SMALL_ORDER.into_iter().flat_map(|u| {
            let mut high = u;
            high[31] |= 0x80;
            [u, high]
        })
    }

    #[test]
    fn public_key_round_trips_through_the_text_form() {
        let identity = age::x25519::Identity::generate();
        let public = public_key(&identity.to_public());
        assert_eq!(recipient_of(&public), identity.to_public());
    }

    #[test]
    fn small_order_recipients_are_refused_with_an_error_not_a_panic() {
        // age's own wrap panics on these ("all-zero esk"): they must never reach it.
        let file_key = FileKey::new(Box::new([7; 16]));
        for u in small_order_points() {
            assert!(is_small_order(&u), "{u:02x?}");
            let recipient = recipient_of(&u);
            assert!(matches!(
                wrap(&recipient, &file_key),
                Err(Error::InvalidRecipients(_))
            ));
            assert!(matches!(
                crate::keys::Recipient::parse(&recipient_string(&u)),
                Err(Error::InvalidKey(_))
            ));
        }
    }

    /// Without the list, aws-lc's own check refuses every one of these points too: the
    /// list is the small-order set, and the feature's agreement is not the only guard.
    #[cfg(feature = "aws-lc")]
    #[test]
    fn aws_lc_refuses_the_small_order_points_itself() {
        let file_key = FileKey::new(Box::new([7; 16]));
        for u in small_order_points() {
            assert!(matches!(
                wrap_with(&recipient_of(&u), &u, &file_key),
                Err(Error::InvalidRecipients(_))
            ));
        }
        let identity = age::x25519::Identity::generate();
        let public = public_key(&identity.to_public());
        assert!(!is_small_order(&public));
        assert!(wrap_with(&identity.to_public(), &public, &file_key).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// What this module seals, age's reference identity opens, to the same file key,
        /// and only the intended identity does.
        #[test]
        fn age_opens_what_this_module_seals(bytes in any::<[u8; 16]>()) {
            let identity = age::x25519::Identity::generate();
            let other = age::x25519::Identity::generate();
            let stanza = wrap(&identity.to_public(), &FileKey::new(Box::new(bytes))).unwrap();
            prop_assert_eq!(stanza.tag.as_str(), "X25519");
            prop_assert_eq!(stanza.args.len(), 1);
            prop_assert_eq!(stanza.args[0].len(), 43);
            prop_assert_eq!(stanza.body.len(), 32);
            let opened = age::Identity::unwrap_stanza(&identity, &stanza.to_age())
                .expect("the stanza is for this identity")
                .expect("and it opens");
            prop_assert_eq!(opened.expose_secret(), &bytes);
            prop_assert!(age::Identity::unwrap_stanza(&other, &stanza.to_age()).is_none());
        }
    }

    /// The answer of an unwrap, comparable across implementations.
    #[cfg(feature = "aws-lc")]
    #[derive(Debug, PartialEq)]
    enum Answer {
        NotMine,
        Invalid,
        Opened([u8; 16]),
    }

    #[cfg(feature = "aws-lc")]
    fn answer<E>(result: Option<Result<FileKey, E>>) -> Answer {
        match result {
            None => Answer::NotMine,
            Some(Err(_)) => Answer::Invalid,
            Some(Ok(k)) => Answer::Opened(*k.expose_secret()),
        }
    }

    /// Ways to spoil an X25519 stanza, each applied to one that age wrote.
    #[cfg(feature = "aws-lc")]
    fn spoilt(stanza: &mut Stanza, how: u8, junk: &str, bytes: &[u8]) {
        use base64::{prelude::BASE64_STANDARD_NO_PAD, Engine};
        let last = stanza.args[0].pop().unwrap();
        match how {
            0 => stanza.args[0].push(last), // untouched
            1 => stanza.tag = "x25519".into(),
            2 => stanza.args.clear(),
            3 => stanza.args = vec![format!("{}{last}", stanza.args[0]), junk.into()],
            4 => {} // one character short
            5 => stanza.args[0].push_str(&format!("{last}A")),
            6 => stanza.args[0].push_str(&format!("{last}=")),
            // The same 256 bits with a trailing bit set: not canonical.
            7 => stanza.args[0].push(match last {
                'A' => 'B',
                _ => 'A',
            }),
            8 => stanza.args[0] = junk.into(),
            9 => {
                let point = SMALL_ORDER[bytes.len() % SMALL_ORDER.len()];
                stanza.args[0] = BASE64_STANDARD_NO_PAD.encode(point);
            }
            10 => {
                stanza.args[0].push(last);
                stanza.body.truncate(bytes.len() % 32);
            }
            11 => {
                stanza.args[0].push(last);
                stanza.body.extend_from_slice(bytes);
            }
            12 => {
                stanza.args[0].push(last);
                let i = bytes.len() % stanza.body.len();
                stanza.body[i] ^= 1 << (bytes.len() % 8);
            }
            _ => {
                stanza.args[0].push(last);
                stanza.body = bytes.to_vec();
            }
        }
    }

    #[cfg(feature = "aws-lc")]
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// On stanzas age wrote, intact or spoilt, this module's unwrap gives exactly
        /// age's answer: the same file key, "not mine", or invalid.
        #[test]
        fn unwrap_answers_as_age_does(
            file_key in any::<[u8; 16]>(),
            how in 0u8..14,
            junk in "[A-Za-z0-9+/=]{0,46}",
            bytes in proptest::collection::vec(any::<u8>(), 1..40),
        ) {
            let identity = age::x25519::Identity::generate();
            let (mut stanzas, _) = age::Recipient::wrap_file_key(
                &identity.to_public(),
                &FileKey::new(Box::new(file_key)),
            ).unwrap();
            let mut stanza = Stanza::from(stanzas.pop().unwrap());
            spoilt(&mut stanza, how, &junk, &bytes);
            let ours = answer(unwrap(&X25519Identity::new(identity.clone()), &stanza));
            let ages = answer(age::Identity::unwrap_stanza(&identity, &stanza.to_age()));
            prop_assert_eq!(&ours, &ages);
            if how == 0 {
                prop_assert_eq!(ours, Answer::Opened(file_key));
            }
            let other = age::x25519::Identity::generate();
            prop_assert_eq!(
                answer(unwrap(&X25519Identity::new(other.clone()), &stanza)),
                answer(age::Identity::unwrap_stanza(&other, &stanza.to_age()))
            );
        }
    }
}
