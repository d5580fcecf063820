//! The envelope: a file key, the stanzas that wrap it, r2seal's own stanzas, and the
//! header MAC that binds them all (SECURITY.md §3.2–§3.5).
//!
//! ```text
//! age-encryption.org/v1
//! -> X25519 …                         recipient stanzas (age's, or r2seal-sym)
//! -> r2seal-name                      HMAC-SHA256(HKDF(fk, "", "r2seal/v1 name"), object key)
//! -> r2seal-meta <salt>               AEAD(HKDF(fk, salt, "r2seal/v1 meta"), JSON metadata)
//! -> r2seal-parts <n> <size> <last>   SHA-256 of the part salts (parts layout only)
//! -> r2seal-salts                     the part salts themselves, in part order
//!                                     (parts layout of at most 128 parts only)
//! --- HMAC-SHA256(HKDF(fk, "", "header"), header up to "---")
//! ```
//! Nothing leaves [`Envelope::open`] until the header MAC has been checked under
//! the unwrapped file key.

use std::collections::{BTreeMap, BTreeSet};

use age_core::format::{FileKey, FILE_KEY_BYTES};
use age_core::primitives::{aead_decrypt, aead_encrypt, hkdf};
use age_core::secrecy::ExposeSecret;
use base64::{prelude::BASE64_STANDARD_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::file_keys::{stanzas_id, FileKeyCache};
use super::header::{write_mac_input, Header, Stanza};
use super::stream::{StreamKey, PAYLOAD_NONCE_SIZE};
use crate::keys::{Identity, KeyId, Recipient};
use crate::Error;

pub(crate) const NAME_TAG: &str = "r2seal-name";
pub(crate) const META_TAG: &str = "r2seal-meta";
pub(crate) const PARTS_TAG: &str = "r2seal-parts";
pub(crate) const SALTS_TAG: &str = "r2seal-salts";
/// Stanza types under this prefix are r2seal's. One this release does not know may
/// change how the object must be read, so it is refused, never ignored.
const R2SEAL_TAG_PREFIX: &str = "r2seal-";
const KNOWN_R2SEAL_TAGS: &[&str] = &[
    NAME_TAG,
    META_TAG,
    PARTS_TAG,
    SALTS_TAG,
    crate::keys::passphrase::STANZA_TAG,
    "r2seal-sym",
];

const HEADER_LABEL: &[u8] = b"header";
const PAYLOAD_LABEL: &[u8] = b"payload";
const NAME_LABEL: &[u8] = b"r2seal/v1 name";
const META_LABEL: &[u8] = b"r2seal/v1 meta";
const PART_LABEL: &[u8] = b"r2seal/v1 part";
const META_SALT_BYTES: usize = 16;

/// Metadata sealed inside the envelope. Content-Type is *not* here: it stays a
/// readable (unauthenticated) header so browsers and CDNs keep working.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedMetadata {
    /// Plaintext size in bytes, when known before sealing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Hex MD5 of the plaintext, when known (S3 clients compare ETags with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// User metadata (`x-amz-meta-*` / R2 `customMetadata`), sealed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
    /// Key ids (`KeyId` text) of the recipients this header wraps the file key to, as the
    /// writer claims (SECURITY.md §3.2). X25519 stanzas are anonymous: this is how rotation
    /// recognises the stanza of a key it holds no secret for (an offline recovery key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Key ids the file key has ever been wrapped to: `recipients` plus every key a
    /// rewrap removed since the payload was sealed. A holder of any of them may know the
    /// file key, so rotation re-keys when one of them is revoked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wrapped_to: Vec<String>,
}

/// The parts layout of an object uploaded in parts whose total size was unknown up
/// front (SECURITY.md §3.5): `count` parts of `part_size` plaintext bytes, the last
/// of `last_size`, each `salt ‖ STREAM` under its own key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartsLayout {
    pub count: u32,
    pub part_size: u64,
    pub last_size: u64,
    /// SHA-256 over the parts' salts, in part order.
    pub salts_digest: [u8; 32],
}

impl PartsLayout {
    /// Upper bound from S3 and R2.
    pub const MAX_PARTS: u32 = 10_000;

    /// The most parts whose salts a final header carries (`r2seal-salts`), so that a
    /// ranged read needs no GET per part to check them (SECURITY.md §3.6). With
    /// `b = ⌈16n·4/3⌉` base64 characters, the stanza costs `16 + b + ⌊b/64⌋ + 1` bytes of
    /// the metadata form: 2,790 for n = 128 (16 for the `-> r2seal-salts` line, 2,731 of
    /// base64, 43 line ends; tested), a third of R2's 8,192-byte metadata limit, leaving
    /// over 5,000 bytes for the rest of the header (recipients, name, sealed metadata,
    /// parts stanza, MAC). A writer that would still overflow leaves the salts out.
    pub const MAX_SALTS_IN_HEADER: u32 = 128;

    pub fn new(part_sizes: &[u64], salts: &[[u8; PAYLOAD_NONCE_SIZE]]) -> Result<Self, Error> {
        let bad = Error::Malformed;
        if part_sizes.is_empty() || part_sizes.len() != salts.len() {
            return Err(bad("a parts layout needs one salt per part"));
        }
        let count = u32::try_from(part_sizes.len())
            .ok()
            .filter(|&n| n <= Self::MAX_PARTS)
            .ok_or(bad("more than 10,000 parts"))?;
        let part_size = part_sizes[0];
        let last_size = *part_sizes.last().expect("non-empty");
        if part_sizes[..part_sizes.len() - 1]
            .iter()
            .any(|&s| s != part_size)
        {
            return Err(bad("all parts but the last must have the same size"));
        }
        let layout = PartsLayout {
            count,
            part_size,
            last_size,
            salts_digest: Self::digest_salts(salts),
        };
        layout.validate()?;
        Ok(layout)
    }

    pub fn digest_salts(salts: &[[u8; PAYLOAD_NONCE_SIZE]]) -> [u8; 32] {
        let mut h = Sha256::new();
        for s in salts {
            h.update(s);
        }
        h.finalize().into()
    }

    /// Whether `salts` (in part order) are the ones this layout commits to, compared in
    /// constant time. A ranged read checks this before it releases any byte, so a part
    /// from another upload attempt is refused there too (SECURITY.md §3.6).
    pub fn check_salts(&self, salts: &[[u8; PAYLOAD_NONCE_SIZE]]) -> Result<(), Error> {
        let digest = Self::digest_salts(salts);
        let same = subtle::ConstantTimeEq::ct_eq(&digest[..], &self.salts_digest[..]);
        if salts.len() == self.count as usize && bool::from(same) {
            Ok(())
        } else {
            Err(Error::Corrupt)
        }
    }

    /// S3's and R2's largest part: 5 GiB.
    pub const MAX_PART_SIZE: u64 = 5 << 30;

    fn validate(&self) -> Result<(), Error> {
        // Bounded sizes keep every offset below 2^63: no arithmetic here can overflow.
        let ok = self.part_size <= Self::MAX_PART_SIZE
            && self.count >= 1
            && self.count <= Self::MAX_PARTS
            && self.last_size <= self.part_size
            && (self.count == 1 || (self.part_size > 0 && self.last_size > 0))
            && (self.count > 1 || self.part_size == self.last_size);
        if ok {
            Ok(())
        } else {
            Err(Error::Malformed("inconsistent parts layout"))
        }
    }

    /// Plaintext size of part `index` (0-based).
    pub fn plaintext_size(&self, index: u32) -> u64 {
        if index + 1 == self.count {
            self.last_size
        } else {
            self.part_size
        }
    }

    pub fn plaintext_len(&self) -> u64 {
        (self.count as u64 - 1) * self.part_size + self.last_size
    }

    /// Stored bytes of part `index`: salt ‖ STREAM.
    pub fn stored_size(&self, index: u32) -> u64 {
        super::stream::payload_len(self.plaintext_size(index))
    }

    pub fn stored_len(&self) -> u64 {
        (self.count as u64 - 1) * self.stored_size(0) + self.stored_size(self.count - 1)
    }

    fn to_stanza(self) -> Stanza {
        Stanza {
            tag: PARTS_TAG.to_owned(),
            args: vec![
                self.count.to_string(),
                self.part_size.to_string(),
                self.last_size.to_string(),
            ],
            body: self.salts_digest.to_vec(),
        }
    }

    fn salts_stanza(salts: &[[u8; PAYLOAD_NONCE_SIZE]]) -> Stanza {
        Stanza {
            tag: SALTS_TAG.to_owned(),
            args: vec![],
            body: salts.concat(),
        }
    }

    /// The salts of an `r2seal-salts` stanza, refused unless they are exactly the
    /// `count` salts this layout's digest commits to: the header MAC only says the
    /// writer wrote them, not that they are the parts' salts.
    fn salts_from_stanza(&self, stanza: &Stanza) -> Result<Vec<[u8; PAYLOAD_NONCE_SIZE]>, Error> {
        if !stanza.args.is_empty()
            || stanza.body.len() as u64 != self.count as u64 * PAYLOAD_NONCE_SIZE as u64
        {
            return Err(Error::Malformed("invalid r2seal-salts stanza"));
        }
        let salts: Vec<[u8; PAYLOAD_NONCE_SIZE]> = stanza
            .body
            .chunks_exact(PAYLOAD_NONCE_SIZE)
            .map(|s| s.try_into().expect("exact chunks"))
            .collect();
        self.check_salts(&salts)?;
        Ok(salts)
    }

    fn from_stanza(stanza: &Stanza) -> Result<Self, Error> {
        let bad = || Error::Malformed("invalid r2seal-parts stanza");
        let [count, part_size, last_size] = &stanza.args[..] else {
            return Err(bad());
        };
        let layout = PartsLayout {
            count: canonical_decimal(count)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(bad)?,
            part_size: canonical_decimal(part_size).ok_or_else(bad)?,
            last_size: canonical_decimal(last_size).ok_or_else(bad)?,
            salts_digest: stanza.body[..].try_into().map_err(|_| bad())?,
        };
        layout.validate()?;
        Ok(layout)
    }
}

/// Decimal without sign or leading zeros, so every number has exactly one encoding.
fn canonical_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

/// What an envelope binds besides the file key.
#[derive(Clone, Debug, Default)]
pub struct Binding {
    /// The object key (path in the bucket) the object is bound to. Not stored.
    pub name: Option<String>,
    pub metadata: Option<SealedMetadata>,
    pub parts: Option<PartsLayout>,
    /// The parts' salts, in part order: with `parts` only, and matching its digest.
    /// Written (`r2seal-salts`) only when the layout has at most
    /// [`PartsLayout::MAX_SALTS_IN_HEADER`] parts; ignored above that.
    pub part_salts: Option<Vec<[u8; PAYLOAD_NONCE_SIZE]>>,
}

/// An open (or freshly sealed) envelope: the file key and the header that wraps it.
pub struct Envelope {
    file_key: FileKey,
    /// True only for an envelope made by [`Envelope::seal`]: the one allowed to seal a
    /// single-stream payload (age: a file key must never seal two files).
    fresh: bool,
    header: Header,
    name_bound: bool,
    metadata: Option<SealedMetadata>,
    parts: Option<PartsLayout>,
    /// The parts' salts from `r2seal-salts`, checked against `parts`' digest.
    part_salts: Option<Vec<[u8; PAYLOAD_NONCE_SIZE]>>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("file_key", &"<redacted>")
            .field("header", &self.header)
            .field("name_bound", &self.name_bound)
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}

impl Envelope {
    /// A fresh file key wrapped to `recipients`, with `binding`.
    pub fn seal(recipients: &[Recipient], binding: Binding) -> Result<Envelope, Error> {
        let file_key = FileKey::init_with_mut(|k| crate::random::fill(k));
        let mut envelope = Envelope::build(file_key, recipients, binding)?;
        envelope.fresh = true;
        Ok(envelope)
    }

    /// The same file key (so the same payload) under a new recipient set and binding:
    /// rotation without re-encrypting, and `cp`/`mv` re-binding to a new name. The
    /// result re-heads the existing payload only; it cannot seal a new one.
    pub fn rewrap(&self, recipients: &[Recipient], binding: Binding) -> Result<Envelope, Error> {
        let copy = FileKey::init_with_mut(|k| k.copy_from_slice(self.file_key.expose_secret()));
        Envelope::build(copy, recipients, binding)
    }

    fn build(
        file_key: FileKey,
        recipients: &[Recipient],
        binding: Binding,
    ) -> Result<Envelope, Error> {
        if recipients.is_empty() {
            return Err(Error::InvalidRecipients("no recipients"));
        }
        let mut stanzas = Vec::with_capacity(recipients.len() + 3);
        let mut seen = std::collections::HashSet::new();
        for r in recipients {
            // One stanza per distinct key: duplicates only grow the header.
            if seen.insert(r.key_id()) {
                stanzas.push(r.wrap(&file_key)?);
            }
        }
        if let Some(name) = &binding.name {
            stanzas.push(Stanza {
                tag: NAME_TAG.to_owned(),
                args: vec![],
                body: name_tag(&file_key, name).to_vec(),
            });
        }
        if let Some(meta) = &binding.metadata {
            stanzas.push(seal_metadata(&file_key, meta));
        }
        if let Some(parts) = binding.parts {
            parts.validate()?;
            stanzas.push(parts.to_stanza());
        }
        let part_salts = match (&binding.parts, binding.part_salts) {
            (_, None) => None,
            (None, Some(_)) => return Err(Error::Malformed("part salts without a parts layout")),
            (Some(parts), Some(salts)) => {
                parts
                    .check_salts(&salts)
                    .map_err(|_| Error::Malformed("part salts that do not match the layout"))?;
                (parts.count <= PartsLayout::MAX_SALTS_IN_HEADER).then_some(salts)
            }
        };
        if let Some(salts) = &part_salts {
            stanzas.push(PartsLayout::salts_stanza(salts));
        }
        let mac = header_mac(&file_key, &stanzas);
        Ok(Envelope {
            file_key,
            fresh: false,
            header: Header { stanzas, mac },
            name_bound: binding.name.is_some(),
            metadata: binding.metadata,
            parts: binding.parts,
            part_salts,
        })
    }

    /// Unwraps the file key with the first identity that matches, checks the header
    /// MAC, then the name binding, then opens the sealed metadata.
    ///
    /// `name`: the object key this object is expected to be bound to. An object bound
    /// to a name opens only under that name; an unbound object opens only without one.
    pub fn open(
        header: &Header,
        identities: &[Identity],
        name: Option<&str>,
    ) -> Result<Envelope, Error> {
        let known = check_structure(header)?;
        let file_key = unwrap_file_key(header, identities)?;
        Self::open_with_key(header, known, file_key, name)
    }

    /// [`Envelope::open`], taking the file key from `cache` when these recipient stanzas
    /// were opened (or sealed) before with the same identities, and remembering it
    /// there once the envelope opened. Every check but the unwrap still runs.
    pub fn open_cached(
        header: &Header,
        identities: &[Identity],
        name: Option<&str>,
        cache: &FileKeyCache,
    ) -> Result<Envelope, Error> {
        let known = check_structure(header)?;
        let id = stanzas_id(header);
        if let Some(file_key) = cache.get(&id) {
            return Self::open_with_key(header, known, file_key, name);
        }
        let file_key = unwrap_file_key(header, identities)?;
        let envelope = Self::open_with_key(header, known, file_key, name)?;
        cache.insert(id, &envelope.file_key);
        Ok(envelope)
    }

    fn open_with_key(
        header: &Header,
        known: KnownStanzas<'_>,
        file_key: FileKey,
        name: Option<&str>,
    ) -> Result<Envelope, Error> {
        let expected = header_mac(&file_key, &header.stanzas);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            &expected[..],
            &header.mac[..],
        )) {
            return Err(Error::Corrupt);
        }
        match (known.name, name) {
            (Some(stanza), Some(name)) => {
                let tag = name_tag(&file_key, name);
                if !bool::from(subtle::ConstantTimeEq::ct_eq(&tag[..], &stanza.body[..])) {
                    return Err(Error::WrongName);
                }
            }
            (Some(_), None) => return Err(Error::NameRequired),
            (None, Some(_)) => return Err(Error::WrongName),
            (None, None) => {}
        }
        let metadata = known
            .meta
            .map(|s| open_metadata(&file_key, s))
            .transpose()?;
        let parts = known.parts.map(PartsLayout::from_stanza).transpose()?;
        let part_salts = match (&parts, known.salts) {
            (Some(layout), Some(stanza)) => Some(layout.salts_from_stanza(stanza)?),
            _ => None,
        };
        Ok(Envelope {
            file_key,
            fresh: false,
            header: header.clone(),
            name_bound: known.name.is_some(),
            metadata,
            parts,
            part_salts,
        })
    }

    pub(crate) fn file_key(&self) -> &FileKey {
        &self.file_key
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Made by [`Envelope::seal`], so its file key has sealed nothing yet.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    pub fn into_header(self) -> Header {
        self.header.clone()
    }

    pub fn metadata(&self) -> Option<&SealedMetadata> {
        self.metadata.as_ref()
    }

    pub fn parts(&self) -> Option<&PartsLayout> {
        self.parts.as_ref()
    }

    /// The parts' salts in part order, when the header carries them (`r2seal-salts`),
    /// already checked against [`parts`](Self::parts)' digest.
    pub fn part_salts(&self) -> Option<&[[u8; PAYLOAD_NONCE_SIZE]]> {
        self.part_salts.as_deref()
    }

    pub fn is_name_bound(&self) -> bool {
        self.name_bound
    }

    /// The STREAM key of a single-stream payload: age's own derivation.
    pub fn payload_key(&self, nonce: &[u8; PAYLOAD_NONCE_SIZE]) -> StreamKey {
        StreamKey::derive(self.file_key.expose_secret(), nonce, PAYLOAD_LABEL)
    }

    /// The STREAM key of part `part_number` (1-based, as in S3) with its salt.
    /// Binding the number into the key makes reordered parts fail to open.
    pub fn part_key(&self, part_number: u32, salt: &[u8; PAYLOAD_NONCE_SIZE]) -> StreamKey {
        let mut info = Vec::with_capacity(PART_LABEL.len() + 4);
        info.extend_from_slice(PART_LABEL);
        info.extend_from_slice(&part_number.to_be_bytes());
        StreamKey::derive(self.file_key.expose_secret(), salt, &info)
    }
}

/// Whom a header's recipient stanzas are for, as far as a set of identities can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StanzaOwners {
    /// `r2seal-sym` stanzas by their visible key id; X25519 stanzas from which one of the
    /// identities unwraps this envelope's own file key.
    pub known: BTreeSet<KeyId>,
    /// Recipient stanzas none of the identities claims (X25519 stanzas are anonymous:
    /// without the secret nobody can tell whose they are), or of other types.
    pub anonymous: usize,
}

impl Envelope {
    /// Attribute each recipient stanza of this (opened) envelope's header, by trial
    /// unwrapping with `identities` (SECURITY.md §4.4, rotation). A stanza counts as an
    /// identity's only if it yields this envelope's file key.
    pub fn stanza_owners(&self, identities: &[Identity]) -> StanzaOwners {
        let mut owners = StanzaOwners::default();
        for stanza in &self.header.stanzas {
            match stanza.tag.as_str() {
                NAME_TAG | META_TAG | PARTS_TAG | SALTS_TAG => continue,
                crate::keys::SYM_STANZA_TAG => {
                    match stanza.args.first().and_then(|id| id.parse::<KeyId>().ok()) {
                        Some(id) => {
                            owners.known.insert(id);
                        }
                        None => owners.anonymous += 1,
                    }
                }
                _ => {
                    let owner = identities.iter().find(|id| {
                        matches!(id, Identity::X25519(_))
                            && matches!(id.unwrap(stanza), Some(Ok(fk)) if bool::from(
                                subtle::ConstantTimeEq::ct_eq(
                                    &fk.expose_secret()[..],
                                    &self.file_key.expose_secret()[..],
                                )
                            ))
                    });
                    match owner {
                        Some(id) => {
                            owners.known.insert(id.key_id());
                        }
                        None => owners.anonymous += 1,
                    }
                }
            }
        }
        owners
    }
}

/// The r2seal stanzas of a header, after the structural rules have been checked.
struct KnownStanzas<'a> {
    name: Option<&'a Stanza>,
    meta: Option<&'a Stanza>,
    parts: Option<&'a Stanza>,
    salts: Option<&'a Stanza>,
}

fn check_structure(header: &Header) -> Result<KnownStanzas<'_>, Error> {
    let mut known = KnownStanzas {
        name: None,
        meta: None,
        parts: None,
        salts: None,
    };
    for stanza in &header.stanzas {
        let slot = match stanza.tag.as_str() {
            NAME_TAG => &mut known.name,
            META_TAG => &mut known.meta,
            PARTS_TAG => &mut known.parts,
            SALTS_TAG => &mut known.salts,
            "scrypt" | crate::keys::passphrase::STANZA_TAG if header.stanzas.len() > 1 => {
                // age's rule: a passphrase stanza must be the only one.
                return Err(Error::Malformed("a passphrase stanza must be alone"));
            }
            tag if tag.starts_with(R2SEAL_TAG_PREFIX) && !KNOWN_R2SEAL_TAGS.contains(&tag) => {
                return Err(Error::UnsupportedVersion);
            }
            _ => continue,
        };
        if slot.replace(stanza).is_some() {
            return Err(Error::Malformed("duplicate r2seal stanza"));
        }
    }
    if let Some(name) = known.name {
        if !name.args.is_empty() || name.body.len() != 32 {
            return Err(Error::Malformed("invalid r2seal-name stanza"));
        }
    }
    if known.salts.is_some() && known.parts.is_none() {
        return Err(Error::Malformed("r2seal-salts without r2seal-parts"));
    }
    Ok(known)
}

fn unwrap_file_key(header: &Header, identities: &[Identity]) -> Result<FileKey, Error> {
    for identity in identities {
        for stanza in &header.stanzas {
            if let Some(result) = identity.unwrap(stanza) {
                return result;
            }
        }
    }
    Err(Error::NoMatchingIdentity)
}

/// age's header MAC: HMAC-SHA256 keyed by HKDF(file key, "", "header") over the
/// header text up to and including "---".
pub(crate) fn header_mac(file_key: &FileKey, stanzas: &[Stanza]) -> [u8; 32] {
    let mac_key = Zeroizing::new(hkdf(&[], HEADER_LABEL, file_key.expose_secret()));
    let mut input = Vec::with_capacity(512);
    write_mac_input(stanzas, &mut input);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key.as_ref()).expect("any key length");
    mac.update(&input);
    mac.finalize().into_bytes().into()
}

fn name_tag(file_key: &FileKey, name: &str) -> [u8; 32] {
    let key = Zeroizing::new(hkdf(&[], NAME_LABEL, file_key.expose_secret()));
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref()).expect("any key length");
    mac.update(name.as_bytes());
    mac.finalize().into_bytes().into()
}

fn seal_metadata(file_key: &FileKey, meta: &SealedMetadata) -> Stanza {
    let mut salt = [0u8; META_SALT_BYTES];
    crate::random::fill(&mut salt);
    let key = Zeroizing::new(hkdf(&salt, META_LABEL, file_key.expose_secret()));
    let json = Zeroizing::new(serde_json::to_vec(meta).expect("metadata serializes"));
    Stanza {
        tag: META_TAG.to_owned(),
        args: vec![BASE64_STANDARD_NO_PAD.encode(salt)],
        body: aead_encrypt(&key, &json),
    }
}

fn open_metadata(file_key: &FileKey, stanza: &Stanza) -> Result<SealedMetadata, Error> {
    let [salt] = &stanza.args[..] else {
        return Err(Error::Malformed("invalid r2seal-meta stanza"));
    };
    let mut salt_bytes = [0u8; META_SALT_BYTES];
    match BASE64_STANDARD_NO_PAD.decode_slice(salt, &mut salt_bytes) {
        Ok(META_SALT_BYTES) if salt.len() == 22 => {}
        _ => return Err(Error::Malformed("invalid r2seal-meta stanza")),
    }
    if stanza.body.len() < 16 {
        return Err(Error::Malformed("invalid r2seal-meta stanza"));
    }
    let key = Zeroizing::new(hkdf(&salt_bytes, META_LABEL, file_key.expose_secret()));
    let json = Zeroizing::new(
        aead_decrypt(&key, stanza.body.len() - 16, &stanza.body).map_err(|_| Error::Corrupt)?,
    );
    // The blob is authentic, so a parse failure is a writer bug, not an attack.
    serde_json::from_slice(&json).map_err(|_| Error::Malformed("sealed metadata is not valid JSON"))
}

/// Compile-time check that age's file key size is what the format says.
const _: () = assert!(FILE_KEY_BYTES == 16);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SymKey;

    fn keys() -> (Identity, Identity) {
        (
            Identity::generate_x25519(),
            Identity::Sym(SymKey::generate()),
        )
    }

    #[test]
    fn seal_then_open_with_each_identity() {
        let (x, s) = keys();
        let recipients = [x.to_recipient(), s.to_recipient()];
        let meta = SealedMetadata {
            size: Some(5),
            user: [("mtime".to_string(), "1700000000".to_string())].into(),
            ..Default::default()
        };
        let env = Envelope::seal(
            &recipients,
            Binding {
                name: Some("a/b.json".into()),
                metadata: Some(meta.clone()),
                parts: None,
                part_salts: None,
            },
        )
        .unwrap();
        for id in [x, s] {
            let opened = Envelope::open(env.header(), &[id], Some("a/b.json")).unwrap();
            assert_eq!(opened.metadata(), Some(&meta));
            assert!(opened.is_name_bound());
        }
    }

    #[test]
    fn name_binding_is_enforced_both_ways() {
        let (x, _) = keys();
        let bound = Envelope::seal(
            &[x.to_recipient()],
            Binding {
                name: Some("k".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let id = std::slice::from_ref(&x);
        assert_eq!(
            Envelope::open(bound.header(), id, Some("other")).err(),
            Some(Error::WrongName)
        );
        assert_eq!(
            Envelope::open(bound.header(), id, None).err(),
            Some(Error::NameRequired)
        );
        let unbound = Envelope::seal(&[x.to_recipient()], Binding::default()).unwrap();
        assert_eq!(
            Envelope::open(unbound.header(), id, Some("k")).err(),
            Some(Error::WrongName)
        );
    }

    #[test]
    fn rewrap_keeps_the_file_key_and_rebinds() {
        let (x, s) = keys();
        let env = Envelope::seal(
            &[x.to_recipient()],
            Binding {
                name: Some("old".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let moved = env
            .rewrap(
                &[s.to_recipient()],
                Binding {
                    name: Some("new".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        let opened = Envelope::open(moved.header(), &[s], Some("new")).unwrap();
        let nonce = [4; 16];
        let mut a = Vec::new();
        let mut b = Vec::new();
        super::super::stream::seal_chunks(&env.payload_key(&nonce), 0, true, b"hi", &mut a);
        super::super::stream::seal_chunks(&opened.payload_key(&nonce), 0, true, b"hi", &mut b);
        assert_eq!(a, b);
        assert_eq!(
            Envelope::open(moved.header(), &[x], Some("new")).err(),
            Some(Error::NoMatchingIdentity)
        );
    }

    #[test]
    fn any_header_change_breaks_the_mac() {
        let (x, _) = keys();
        let env = Envelope::seal(
            &[x.to_recipient()],
            Binding {
                name: Some("n".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let mut h = env.header().clone();
        h.stanzas.push(Stanza {
            tag: "grease".into(),
            args: vec![],
            body: vec![],
        });
        assert_eq!(
            Envelope::open(&h, std::slice::from_ref(&x), Some("n")).err(),
            Some(Error::Corrupt)
        );
        let mut h = env.header().clone();
        h.stanzas.retain(|s| s.tag != NAME_TAG);
        assert_eq!(
            Envelope::open(&h, std::slice::from_ref(&x), None).err(),
            Some(Error::Corrupt)
        );
    }

    #[test]
    fn unknown_r2seal_stanzas_are_refused() {
        let (x, _) = keys();
        let env = Envelope::seal(&[x.to_recipient()], Binding::default()).unwrap();
        let mut h = env.header().clone();
        h.stanzas.push(Stanza {
            tag: "r2seal-future".into(),
            args: vec![],
            body: vec![],
        });
        assert_eq!(
            Envelope::open(&h, &[x], None).err(),
            Some(Error::UnsupportedVersion)
        );
    }

    #[test]
    fn parts_layout_validates() {
        let salts = [[1u8; 16], [2; 16], [3; 16]];
        let l = PartsLayout::new(&[10, 10, 4], &salts).unwrap();
        assert_eq!(l.plaintext_len(), 24);
        assert!(PartsLayout::new(&[10, 9, 4], &salts).is_err());
        assert!(PartsLayout::new(&[10, 10, 11], &salts).is_err());
        // Sizes that would overflow u64 offsets are refused, not wrapped.
        let huge = PartsLayout {
            count: 10_000,
            part_size: u64::MAX / 2,
            last_size: 1,
            salts_digest: [0; 32],
        };
        assert!(huge.validate().is_err());
        assert_eq!(PartsLayout::from_stanza(&l.to_stanza()).unwrap(), l);
        assert!(canonical_decimal("01").is_none() && canonical_decimal("0") == Some(0));
    }

    fn salts(n: u32) -> Vec<[u8; 16]> {
        (0..n)
            .map(|i| {
                let mut s = [0x5a; 16];
                s[..4].copy_from_slice(&i.to_be_bytes());
                s
            })
            .collect()
    }

    /// A parts envelope of `n` parts of 10 bytes, the final header given the salts.
    fn parts_envelope(x: &Identity, n: u32) -> (Envelope, Vec<[u8; 16]>) {
        let salts = salts(n);
        let layout = PartsLayout::new(&vec![10; n as usize], &salts).unwrap();
        let env = Envelope::seal(
            &[x.to_recipient()],
            Binding {
                name: Some("k".into()),
                parts: Some(layout),
                part_salts: Some(salts.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        (env, salts)
    }

    /// `env`'s header edited by `edit`, under a MAC that is valid for the edit.
    fn remacked(env: &Envelope, edit: impl FnOnce(&mut Vec<Stanza>)) -> Header {
        let mut h = env.header().clone();
        edit(&mut h.stanzas);
        h.mac = header_mac(&env.file_key, &h.stanzas);
        h
    }

    #[test]
    fn part_salts_round_trip_up_to_the_cap() {
        let (x, s) = keys();
        for n in [1, 3, PartsLayout::MAX_SALTS_IN_HEADER] {
            let (env, salts) = parts_envelope(&x, n);
            assert_eq!(env.part_salts(), Some(&salts[..]));
            // Through the metadata form, as R2 stores it.
            let value = env.header().to_metadata_value().unwrap();
            let header = Header::from_metadata_value(&value).unwrap();
            let opened = Envelope::open(&header, std::slice::from_ref(&x), Some("k")).unwrap();
            assert_eq!(opened.part_salts(), Some(&salts[..]));
            assert_eq!(opened.parts(), env.parts());
            // A rewrap that carries them keeps them, and they are not a recipient.
            let moved = opened
                .rewrap(
                    &[s.to_recipient()],
                    Binding {
                        parts: opened.parts().copied(),
                        part_salts: opened.part_salts().map(<[_]>::to_vec),
                        ..Default::default()
                    },
                )
                .unwrap();
            let reopened = Envelope::open(moved.header(), std::slice::from_ref(&s), None).unwrap();
            assert_eq!(reopened.part_salts(), Some(&salts[..]));
            assert_eq!(reopened.stanza_owners(&[]).anonymous, 0);
        }
        // The arithmetic in MAX_SALTS_IN_HEADER's comment: 2,790 bytes for 128 salts.
        let (env, _) = parts_envelope(&x, PartsLayout::MAX_SALTS_IN_HEADER);
        let without = remacked(&env, |st| st.retain(|s| s.tag != SALTS_TAG));
        assert_eq!(
            env.header().to_metadata_value().unwrap().len()
                - without.to_metadata_value().unwrap().len(),
            2790
        );
    }

    #[test]
    fn more_parts_than_the_cap_carry_no_salts() {
        let (x, _) = keys();
        let (env, _) = parts_envelope(&x, PartsLayout::MAX_SALTS_IN_HEADER + 1);
        assert_eq!(env.part_salts(), None);
        assert!(!env.header().stanzas.iter().any(|s| s.tag == SALTS_TAG));
        let opened = Envelope::open(env.header(), &[x], Some("k")).unwrap();
        assert_eq!(opened.part_salts(), None);
        assert_eq!(opened.parts().unwrap().count, 129);
    }

    #[test]
    fn the_writer_refuses_salts_that_do_not_fit_the_layout() {
        let (x, _) = keys();
        let layout = PartsLayout::new(&[10, 10], &salts(2)).unwrap();
        let seal = |parts, part_salts| {
            Envelope::seal(
                &[x.to_recipient()],
                Binding {
                    parts,
                    part_salts,
                    ..Default::default()
                },
            )
        };
        assert!(matches!(
            seal(None, Some(salts(2))),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            seal(Some(layout), Some(salts(3))),
            Err(Error::Malformed(_))
        ));
        let mut other = salts(2);
        other[1][15] ^= 1;
        assert!(matches!(
            seal(Some(layout), Some(other)),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn salts_that_do_not_match_the_digest_are_refused_under_a_valid_mac() {
        let (x, _) = keys();
        let (env, _) = parts_envelope(&x, 3);
        let id = std::slice::from_ref(&x);
        let salts_of =
            |st: &mut Vec<Stanza>| -> usize { st.iter().position(|s| s.tag == SALTS_TAG).unwrap() };
        // The control: re-MACing an unchanged header opens.
        assert!(Envelope::open(&remacked(&env, |_| {}), id, Some("k")).is_ok());
        // One salt changed: the length is right, the digest is not.
        let h = remacked(&env, |st| {
            let i = salts_of(st);
            st[i].body[20] ^= 1;
        });
        assert_eq!(
            Envelope::open(&h, id, Some("k")).err(),
            Some(Error::Corrupt)
        );
        // Two salts swapped: the same set, in the wrong order.
        let h = remacked(&env, |st| {
            let i = salts_of(st);
            let b = &mut st[i].body;
            let first: [u8; 16] = b[..16].try_into().unwrap();
            b.copy_within(16..32, 0);
            b[16..32].copy_from_slice(&first);
        });
        assert_eq!(
            Envelope::open(&h, id, Some("k")).err(),
            Some(Error::Corrupt)
        );
        // Without the parts stanza they vouch for.
        let h = remacked(&env, |st| st.retain(|s| s.tag != PARTS_TAG));
        assert!(matches!(
            Envelope::open(&h, id, Some("k")),
            Err(Error::Malformed(_))
        ));
        // Not exactly count × 16 bytes: one salt missing, or one byte more.
        for edit in [
            (|b: &mut Vec<u8>| b.truncate(32)) as fn(&mut Vec<u8>),
            |b| b.push(0),
            |b| b.clear(),
        ] {
            let h = remacked(&env, |st| {
                let i = salts_of(st);
                edit(&mut st[i].body);
            });
            assert!(matches!(
                Envelope::open(&h, id, Some("k")),
                Err(Error::Malformed(_))
            ));
        }
        // Arguments are not part of the stanza.
        let h = remacked(&env, |st| {
            let i = salts_of(st);
            st[i].args.push("3".into());
        });
        assert!(matches!(
            Envelope::open(&h, id, Some("k")),
            Err(Error::Malformed(_))
        ));
        // Twice: the existing duplicate rule.
        let h = remacked(&env, |st| {
            let i = salts_of(st);
            let dup = st[i].clone();
            st.push(dup);
        });
        assert_eq!(
            Envelope::open(&h, id, Some("k")).err(),
            Some(Error::Malformed("duplicate r2seal stanza"))
        );
    }
}
