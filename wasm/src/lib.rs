//! r2seal for Cloudflare Workers: the sans-IO core (`r2seal` with
//! `default-features = false`) exported to JavaScript through wasm-bindgen.
//!
//! This crate holds no I/O and no policy of its own: the TypeScript `SealedBucket`
//! (wasm/ts/) drives these state machines over the R2 binding. Every function here
//! is a thin shell over the core:
//!
//! - [`Keys`]: a [`Keyring`] built from Worker secrets; [`Keyring::plan`] picks the
//!   recipients for an object key (longest prefix wins), [`Keyring::identities`] opens.
//! - [`Sealer`]: [`Envelope::seal`] + [`PayloadSealer`]; the header is refused before any
//!   byte is written if its metadata form does not fit R2's metadata budget.
//! - [`Opener`]: [`Envelope::open`] + [`PayloadOpener`] and [`RangePlan`]: no byte is
//!   returned before its chunk authenticated; truncation surfaces at `finish`.
//! - `check_vector` (feature `vectors`, tests only): runs one `tests/vectors` file through
//!   `r2seal::testkit`.
//! - [`NameCipher`]: object-name encryption (`r2seal::names`, SECURITY.md §3.10).
//! - [`check_descriptor`]: the bucket-descriptor check every writer runs before its
//!   first write (`r2seal::descriptor`, SECURITY.md §3.11).
//!
//! Errors cross into JavaScript as strings `"<CODE>\u{1f}<message>"` that the
//! TypeScript layer turns into `SealError` classes. Messages come from the core's
//! `Display`, which never quotes key material.

use std::collections::BTreeMap;

use r2seal::descriptor::{BucketConfig, Descriptor, StoredForm};
use r2seal::format::header::R2_METADATA_LIMIT;
use r2seal::format::stream::payload_len;
use r2seal::format::{Binding, Envelope, Header, SealedMetadata};
use r2seal::keys::keyring::{Key, KeyMaterial, KeyStatus, Keyring};
use r2seal::keys::{Identity, Recipient, SymKey};
use r2seal::names::{NameKey, MAX_STORED_KEY_LEN};
use r2seal::seal::{plaintext_len as stored_to_plaintext, PayloadOpener, PayloadSealer, RangePlan};
use r2seal::Error;
use wasm_bindgen::prelude::*;
use zeroize::Zeroize;

/// Separates an error's code from its message in the strings thrown to JS.
const SEP: char = '\u{1f}';

fn code(error: &Error) -> &'static str {
    match error {
        Error::NotSealed => "NOT_SEALED",
        Error::UnsupportedVersion => "UNSUPPORTED_VERSION",
        Error::Malformed(_) => "MALFORMED",
        Error::NoMatchingIdentity => "NO_MATCHING_KEY",
        Error::Corrupt => "CORRUPT",
        Error::WrongName => "WRONG_NAME",
        Error::NameRequired => "NAME_REQUIRED",
        Error::RangeNotSatisfiable => "RANGE_NOT_SATISFIABLE",
        Error::HeaderTooLarge { .. } => "HEADER_TOO_LARGE",
        Error::InvalidKey(_) => "INVALID_KEY",
        Error::InvalidKeyFile(_) | Error::Keyring(_) => "INVALID_CONFIG",
        Error::InvalidRecipients(_) => "INVALID_RECIPIENTS",
        Error::NameTooLong { .. } => "NAME_TOO_LONG",
        Error::WrongPassphrase | Error::KdfTooExpensive(_) | Error::PassphraseUnavailable => {
            "INVALID_KEY"
        }
        _ => "ERROR",
    }
}

fn js_err(error: Error) -> JsValue {
    JsValue::from_str(&format!("{}{SEP}{error}", code(&error)))
}

fn js_err_code(code: &str, message: &str) -> JsValue {
    JsValue::from_str(&format!("{code}{SEP}{message}"))
}

/// Copies `buf` into a fresh JS `Uint8Array`, then wipes `buf` (keeping its capacity):
/// plaintext does not linger in linear memory after it has been handed over.
fn hand_over(buf: &mut Vec<u8>) -> js_sys::Uint8Array {
    let array = js_sys::Uint8Array::from(&buf[..]);
    buf.as_mut_slice().zeroize();
    buf.clear();
    array
}

/// Lengths cross as JS numbers: integers up to 2^53.
fn to_u64(n: f64, what: &str) -> Result<u64, JsValue> {
    if n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0 {
        Ok(n as u64)
    } else {
        Err(js_err_code(
            "INVALID_ARGUMENT",
            &format!("{what} must be a non-negative integer"),
        ))
    }
}

/// The keys a Worker holds: read-write identities (`R2SEAL-SYM-KEY-1…`,
/// `AGE-SECRET-KEY-1…`), write-only recipients (`age1…`), defaults and per-prefix
/// policies: a [`Keyring`], so recipient choice is exactly `Keyring::plan`'s.
#[wasm_bindgen]
#[derive(Debug, Default)]
pub struct Keys {
    ring: Keyring,
    identities: Vec<Identity>,
}

#[wasm_bindgen]
impl Keys {
    #[wasm_bindgen(constructor)]
    pub fn new() -> Keys {
        Keys::default()
    }

    /// Adds a key that seals and opens. The secret is never echoed in an error.
    #[wasm_bindgen(js_name = addIdentity)]
    pub fn add_identity(&mut self, name: &str, secret: &str) -> Result<(), JsValue> {
        let identity = Identity::parse(secret).map_err(js_err)?;
        let material = match &identity {
            Identity::Sym(k) => KeyMaterial::Sym(k.clone()),
            Identity::X25519(_) => KeyMaterial::X25519(identity.clone()),
        };
        self.add(name, material, false)?;
        self.identities = self.ring.identities();
        Ok(())
    }

    /// Adds a write-only `age1…` recipient: objects can be sealed to it, and only the
    /// holder of its identity (not this Worker) opens them.
    #[wasm_bindgen(js_name = addRecipient)]
    pub fn add_recipient(
        &mut self,
        name: &str,
        recipient: &str,
        recovery: bool,
    ) -> Result<(), JsValue> {
        if !recipient.trim_start().starts_with("age1") {
            // A symmetric key is a secret: it belongs with the identities.
            return Err(js_err(Error::InvalidKey(
                "a write-only recipient must be an age1… recipient",
            )));
        }
        let r = Recipient::parse(recipient).map_err(js_err)?;
        self.add(name, KeyMaterial::RecipientOnly(r), recovery)
    }

    /// Names sealed to when no policy matches (default: every key).
    #[wasm_bindgen(js_name = setDefaults)]
    pub fn set_defaults(&mut self, names: Vec<String>) -> Result<(), JsValue> {
        self.ring.set_defaults(names).map_err(js_err)
    }

    /// Seals objects whose key starts with `prefix` only to `names` (longest prefix wins).
    #[wasm_bindgen(js_name = setPolicy)]
    pub fn set_policy(&mut self, prefix: &str, names: Vec<String>) -> Result<(), JsValue> {
        if names.is_empty() {
            return Err(js_err_code(
                "INVALID_CONFIG",
                &format!("the policy for prefix {prefix:?} names no key"),
            ));
        }
        self.ring.set_policy(prefix, names).map_err(js_err)
    }

    /// Descriptions of the recipients an object at `key` is sealed to (`age1…` or
    /// `sym:<key id>`), for diagnostics and tests.
    #[wasm_bindgen(js_name = recipientsFor)]
    pub fn recipients_for(&self, key: &str) -> Result<Vec<String>, JsValue> {
        let plan = self.ring.plan(key).map_err(js_err)?;
        Ok(plan.recipients.iter().map(Recipient::describe).collect())
    }

    /// How many keys can open objects.
    #[wasm_bindgen(getter, js_name = identityCount)]
    pub fn identity_count(&self) -> usize {
        self.identities.len()
    }

    /// How many keys there are in all (identities and recipients).
    #[wasm_bindgen(getter, js_name = keyCount)]
    pub fn key_count(&self) -> usize {
        self.ring.keys().len()
    }

    fn add(&mut self, name: &str, material: KeyMaterial, recovery: bool) -> Result<(), JsValue> {
        self.ring
            .add(Key {
                name: name.to_owned(),
                material,
                created: String::new(),
                status: KeyStatus::Active,
                recovery,
            })
            .map_err(js_err)
    }
}

/// The caller-facing shape of [`SealedMetadata`] (camelCase, as R2's binding spells it).
fn metadata_from_json(json: &str) -> Result<Option<SealedMetadata>, JsValue> {
    if json.is_empty() {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|_| js_err_code("INVALID_ARGUMENT", "sealed metadata is not valid JSON"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| js_err_code("INVALID_ARGUMENT", "sealed metadata is not an object"))?;
    let string = |field: &str| -> Result<Option<String>, JsValue> {
        match obj.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(js_err_code(
                "INVALID_ARGUMENT",
                &format!("{field} must be a string"),
            )),
        }
    };
    let mut meta = SealedMetadata {
        size: match obj.get("size") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| js_err_code("INVALID_ARGUMENT", "size must be an integer"))?,
            ),
        },
        md5: string("md5")?,
        content_encoding: string("contentEncoding")?,
        content_disposition: string("contentDisposition")?,
        content_language: string("contentLanguage")?,
        user: BTreeMap::new(),
        ..Default::default()
    };
    if let Some(user) = obj.get("customMetadata") {
        let user = user
            .as_object()
            .ok_or_else(|| js_err_code("INVALID_ARGUMENT", "customMetadata must be an object"))?;
        for (k, v) in user {
            let v = v.as_str().ok_or_else(|| {
                js_err_code(
                    "INVALID_ARGUMENT",
                    &format!("customMetadata[{k:?}] must be a string"),
                )
            })?;
            meta.user.insert(k.clone(), v.to_owned());
        }
    }
    Ok((meta != SealedMetadata::default()).then_some(meta))
}

fn metadata_to_json(meta: Option<&SealedMetadata>) -> String {
    let mut obj = serde_json::Map::new();
    if let Some(m) = meta {
        if let Some(size) = m.size {
            obj.insert("size".into(), size.into());
        }
        for (field, value) in [
            ("md5", &m.md5),
            ("contentEncoding", &m.content_encoding),
            ("contentDisposition", &m.content_disposition),
            ("contentLanguage", &m.content_language),
        ] {
            if let Some(v) = value {
                obj.insert(field.into(), v.clone().into());
            }
        }
        let user: serde_json::Map<String, serde_json::Value> = m
            .user
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        obj.insert("customMetadata".into(), user.into());
    } else {
        obj.insert("customMetadata".into(), serde_json::Map::new().into());
    }
    serde_json::Value::Object(obj).to_string()
}

/// Seals one object: a fresh envelope bound to its key, then the payload
/// (16-byte nonce ‖ STREAM) fed in any slicing.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Sealer {
    sealer: Option<PayloadSealer>,
    header: String,
    recipients: usize,
    out: Vec<u8>,
}

#[wasm_bindgen]
impl Sealer {
    /// `name` is the object key exactly as stored; `metadata` is the JSON of the sealed
    /// metadata (`{size, md5, contentEncoding, contentDisposition, contentLanguage,
    /// customMetadata}`), or "" for none. Fails with `HEADER_TOO_LARGE` if the header's
    /// metadata form exceeds R2's 8,192-byte budget: before anything is written.
    #[wasm_bindgen(constructor)]
    pub fn new(keys: &Keys, name: &str, metadata: &str) -> Result<Sealer, JsValue> {
        let plan = keys.ring.plan(name).map_err(js_err)?;
        let binding = Binding {
            name: Some(name.to_owned()),
            metadata: metadata_from_json(metadata)?,
            parts: None,
            part_salts: None,
        };
        let envelope = Envelope::seal(&plan.recipients, binding).map_err(js_err)?;
        let header = envelope
            .header()
            .to_metadata_value_within(R2_METADATA_LIMIT)
            .map_err(js_err)?;
        Ok(Sealer {
            sealer: Some(PayloadSealer::new(&envelope)),
            header,
            recipients: plan.recipients.len(),
            out: Vec::new(),
        })
    }

    /// The value of `customMetadata.r2seal`.
    #[wasm_bindgen(getter)]
    pub fn header(&self) -> String {
        self.header.clone()
    }

    #[wasm_bindgen(getter)]
    pub fn recipients(&self) -> usize {
        self.recipients
    }

    /// Seals more plaintext; returns the payload bytes now ready (may be empty).
    pub fn update(&mut self, plaintext: &[u8]) -> Result<js_sys::Uint8Array, JsValue> {
        let sealer = self
            .sealer
            .as_mut()
            .ok_or_else(|| js_err_code("INVALID_STATE", "the sealer is finished"))?;
        sealer.update(plaintext, &mut self.out);
        Ok(hand_over(&mut self.out))
    }

    /// Ends the payload; returns its last bytes (the final chunk).
    pub fn finish(&mut self) -> Result<js_sys::Uint8Array, JsValue> {
        let sealer = self
            .sealer
            .take()
            .ok_or_else(|| js_err_code("INVALID_STATE", "the sealer is finished"))?;
        sealer.finish(&mut self.out);
        Ok(hand_over(&mut self.out))
    }
}

/// Opens one object (metadata form): the envelope from `customMetadata.r2seal`, then
/// the stored body whole (`update`/`finish`) or by ranges (`rangePlan`/`openRange`).
#[wasm_bindgen]
#[derive(Debug)]
pub struct Opener {
    opener: Option<PayloadOpener>,
    metadata: String,
    out: Vec<u8>,
}

#[wasm_bindgen]
impl Opener {
    /// Unwraps the file key with the Worker's identities and checks the header MAC and
    /// the name binding (`name` = the object key as stored).
    #[wasm_bindgen(constructor)]
    pub fn new(keys: &Keys, header: &str, name: &str) -> Result<Opener, JsValue> {
        let header = Header::from_metadata_value(header).map_err(js_err)?;
        if keys.identities.is_empty() {
            return Err(js_err(Error::NoMatchingIdentity));
        }
        let envelope = Envelope::open(&header, &keys.identities, Some(name)).map_err(js_err)?;
        let metadata = metadata_to_json(envelope.metadata());
        Ok(Opener {
            opener: Some(PayloadOpener::new(envelope)),
            metadata,
            out: Vec::new(),
        })
    }

    /// The sealed metadata as JSON (same shape as the sealer's input).
    #[wasm_bindgen(getter)]
    pub fn metadata(&self) -> String {
        self.metadata.clone()
    }

    /// The plaintext length of a body of `stored_len` bytes under this envelope's layout.
    #[wasm_bindgen(js_name = plaintextLen)]
    pub fn plaintext_len(&self, stored_len: f64) -> Result<f64, JsValue> {
        let opener = self.opener()?;
        let stored = to_u64(stored_len, "stored length")?;
        stored_to_plaintext(opener.envelope().parts(), stored)
            .map(|n| n as f64)
            .map_err(js_err)
    }

    /// Opens more of the body; returns only authenticated plaintext (may be empty).
    pub fn update(&mut self, body: &[u8]) -> Result<js_sys::Uint8Array, JsValue> {
        let opener = self
            .opener
            .as_mut()
            .ok_or_else(|| js_err_code("INVALID_STATE", "the opener is finished"))?;
        if let Err(e) = opener.update(body, &mut self.out) {
            self.opener = None;
            self.out.as_mut_slice().zeroize();
            self.out.clear();
            return Err(js_err(e));
        }
        Ok(hand_over(&mut self.out))
    }

    /// Ends the body: `CORRUPT` if it was truncated or extended.
    pub fn finish(&mut self) -> Result<js_sys::Uint8Array, JsValue> {
        let opener = self
            .opener
            .take()
            .ok_or_else(|| js_err_code("INVALID_STATE", "the opener is finished"))?;
        match opener.finish(&mut self.out) {
            Ok(_) => Ok(hand_over(&mut self.out)),
            Err(e) => {
                self.out.as_mut_slice().zeroize();
                self.out.clear();
                Err(js_err(e))
            }
        }
    }

    /// Plans plaintext bytes `start..=end` of a body of `stored_len` bytes. Returns
    /// `[start, end, total, (saltStart, saltEnd, chunksStart, chunksEnd)*]`: the
    /// plaintext range served (end clamped), the plaintext total, and per piece the
    /// stored half-open byte ranges to fetch.
    #[wasm_bindgen(js_name = rangePlan)]
    pub fn range_plan(&self, stored_len: f64, start: f64, end: f64) -> Result<Vec<f64>, JsValue> {
        let plan = self.plan(stored_len, start, end)?;
        let mut out = vec![plan.start as f64, plan.end as f64, plan.total as f64];
        for p in &plan.pieces {
            out.extend([p.salt.0, p.salt.1, p.chunks.0, p.chunks.1].map(|n| n as f64));
        }
        Ok(out)
    }

    /// Opens a planned range: `fetched` is, for each piece of `rangePlan(stored_len,
    /// start, end)` in order, its salt bytes then its chunk bytes, concatenated.
    #[wasm_bindgen(js_name = openRange)]
    pub fn open_range(
        &self,
        stored_len: f64,
        start: f64,
        end: f64,
        fetched: &[u8],
    ) -> Result<js_sys::Uint8Array, JsValue> {
        let plan = self.plan(stored_len, start, end)?;
        let mut pieces = Vec::with_capacity(plan.pieces.len());
        let mut rest = fetched;
        for p in &plan.pieces {
            let salt_len = (p.salt.1 - p.salt.0) as usize;
            let chunks_len = (p.chunks.1 - p.chunks.0) as usize;
            if rest.len() < salt_len + chunks_len {
                return Err(js_err(Error::Corrupt));
            }
            let (salt, after) = rest.split_at(salt_len);
            let (chunks, after) = after.split_at(chunks_len);
            pieces.push((salt, chunks));
            rest = after;
        }
        if !rest.is_empty() {
            return Err(js_err(Error::Corrupt));
        }
        let opened = plan
            .open(self.opener()?.envelope(), &pieces)
            .map_err(js_err)?;
        Ok(js_sys::Uint8Array::from(&opened[..]))
    }

    fn opener(&self) -> Result<&PayloadOpener, JsValue> {
        self.opener
            .as_ref()
            .ok_or_else(|| js_err_code("INVALID_STATE", "the opener is finished"))
    }

    fn plan(&self, stored_len: f64, start: f64, end: f64) -> Result<RangePlan, JsValue> {
        let opener = self.opener()?;
        RangePlan::new(
            opener.envelope().parts(),
            to_u64(stored_len, "stored length")?,
            to_u64(start, "range start")?,
            to_u64(end, "range end")?,
        )
        .map_err(js_err)
    }
}

/// The stored length of a single-stream payload of `plaintext_len` bytes
/// (SECURITY.md §3.4): what a streamed put must declare up front.
#[wasm_bindgen(js_name = sealedLength)]
pub fn sealed_length(plaintext_len: f64) -> Result<f64, JsValue> {
    Ok(payload_len(to_u64(plaintext_len, "plaintext length")?) as f64)
}

/// The plaintext length of a stored single-stream body (metadata form), without a key.
#[wasm_bindgen(js_name = plaintextLength)]
pub fn plaintext_length(stored_len: f64) -> Result<f64, JsValue> {
    stored_to_plaintext(None, to_u64(stored_len, "stored length")?)
        .map(|n| n as f64)
        .map_err(js_err)
}

/// Splits a file-form object's header off: returns `[metadataValue, headerLength]`.
#[wasm_bindgen(js_name = splitFileForm)]
pub fn split_file_form(file: &[u8]) -> Result<Vec<JsValue>, JsValue> {
    let (header, used) = Header::parse_prefix(file)
        .map_err(js_err)?
        .ok_or_else(|| js_err(Error::Malformed("header is truncated")))?;
    let value = header.to_metadata_value().map_err(js_err)?;
    Ok(vec![
        JsValue::from_str(&value),
        JsValue::from_f64(used as f64),
    ])
}

/// The file-form header bytes of a metadata-form value (prepend them to the body).
#[wasm_bindgen(js_name = fileFormHeader)]
pub fn file_form_header(value: &str) -> Result<Vec<u8>, JsValue> {
    Ok(Header::from_metadata_value(value)
        .map_err(js_err)?
        .to_file_bytes())
}

/// A new symmetric keyring key, `R2SEAL-SYM-KEY-1…` (for provisioning and tests).
#[wasm_bindgen(js_name = generateSymKey)]
pub fn generate_sym_key() -> String {
    SymKey::generate().to_secret_string().to_string()
}

/// A new age X25519 identity: `[AGE-SECRET-KEY-1…, age1…]`.
#[wasm_bindgen(js_name = generateX25519)]
pub fn generate_x25519() -> Vec<String> {
    let identity = Identity::generate_x25519();
    vec![
        identity.to_secret_string().to_string(),
        identity.to_recipient().describe(),
    ]
}

/// Runs one known-answer vector file (tests/vectors/*) through `r2seal::testkit`, the
/// checker the native tests use. `Ok` when the object behaves as the file says.
#[cfg(feature = "vectors")]
#[wasm_bindgen(js_name = checkVector)]
pub fn check_vector(file: &[u8]) -> Result<(), JsValue> {
    r2seal::testkit::check(file).map_err(|why| js_err_code("VECTOR_FAILED", &why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_json_round_trips() {
        let json = r#"{"size":5,"md5":"ab","contentEncoding":"gzip","customMetadata":{"a":"b"}}"#;
        let meta = metadata_from_json(json).ok().flatten().expect("metadata");
        assert_eq!(meta.size, Some(5));
        assert_eq!(meta.user.get("a").map(String::as_str), Some("b"));
        let back: serde_json::Value = serde_json::from_str(&metadata_to_json(Some(&meta))).unwrap();
        assert_eq!(back["contentEncoding"], "gzip");
        assert_eq!(back["customMetadata"]["a"], "b");
        assert!(metadata_from_json("{}").ok().flatten().is_none());
    }
}

/// Object-name encryption under the name key derived from a symmetric key
/// (`R2SEAL_NAMES_KEY`): AES-SIV per path segment, base32 (SECURITY.md §3.10).
#[wasm_bindgen]
#[derive(Debug)]
pub struct NameCipher {
    key: NameKey,
}

#[wasm_bindgen]
impl NameCipher {
    /// From an `R2SEAL-SYM-KEY-1…` secret.
    #[wasm_bindgen(constructor)]
    pub fn new(secret: &str) -> Result<NameCipher, JsValue> {
        let k = SymKey::parse(secret).map_err(js_err)?;
        Ok(NameCipher {
            key: NameKey::from_sym_key(&k),
        })
    }

    /// The name key id (what a bucket descriptor records).
    #[wasm_bindgen(getter, js_name = keyId)]
    pub fn key_id(&self) -> String {
        self.key.id().to_string()
    }

    /// The stored key of `plain`; `NAME_TOO_LONG` past R2's 1,024-byte limit.
    pub fn encrypt(&self, plain: &str) -> Result<String, JsValue> {
        self.key
            .encrypt_within(plain, MAX_STORED_KEY_LEN)
            .map_err(js_err)
    }

    /// The plaintext key of `stored`: `CORRUPT` or `MALFORMED` when it does not decrypt.
    pub fn decrypt(&self, stored: &str) -> Result<String, JsValue> {
        self.key.decrypt(stored).map_err(js_err)
    }

    /// `[stored prefix, "partial" | "whole"]` for listing plaintext prefix `prefix`.
    #[wasm_bindgen(js_name = listPrefix)]
    pub fn list_prefix(&self, prefix: &str) -> Vec<String> {
        let lp = self.key.list_prefix(prefix);
        let kind = if lp.partial { "partial" } else { "whole" };
        vec![lp.stored, kind.to_string()]
    }
}

impl Keys {
    fn held_sym_keys(&self) -> Vec<SymKey> {
        self.identities
            .iter()
            .filter_map(|i| match i {
                Identity::Sym(k) => Some(k.clone()),
                Identity::X25519(_) => None,
            })
            .collect()
    }

    /// What these keys write, as a bucket descriptor records it (as the native
    /// `SealedBucket::bucket_config` computes it for a keyring).
    fn bucket_config(&self, names: Option<r2seal::keys::KeyId>) -> BucketConfig {
        let ring = &self.ring;
        BucketConfig::new(
            StoredForm::Metadata,
            names,
            ring.default_keys().iter().map(|k| k.id()),
            ring.policies().iter().map(|p| {
                let ids = p.keys.iter().filter_map(|n| ring.get(n)).map(|k| k.id());
                (p.prefix.clone(), ids.collect())
            }),
        )
    }
}

/// The check before a Worker's first write: `descriptor` (the bytes of
/// `.r2seal/descriptor`) must parse, every MAC under a symmetric key these `keys` hold
/// must verify (`CORRUPT`), and its content must equal what these keys write with the
/// name key `names_key_id` (`NameCipher.keyId`, or none for plaintext names)
/// (`DESCRIPTOR_MISMATCH`, naming each difference). Nothing is taken from it.
#[wasm_bindgen(js_name = checkDescriptor)]
pub fn check_descriptor(
    keys: &Keys,
    names_key_id: Option<String>,
    descriptor: &[u8],
) -> Result<(), JsValue> {
    let names = names_key_id
        .map(|id| id.parse::<r2seal::keys::KeyId>())
        .transpose()
        .map_err(js_err)?;
    let d = Descriptor::parse(descriptor).map_err(js_err)?;
    d.verify(&keys.held_sym_keys()).map_err(js_err)?;
    let diff = d.config.differences(&keys.bucket_config(names));
    if diff.is_empty() {
        Ok(())
    } else {
        Err(js_err_code(
            "DESCRIPTOR_MISMATCH",
            &format!(
                "this writer does not match the bucket descriptor: {}",
                diff.join("; ")
            ),
        ))
    }
}

/// The descriptor these `keys` (with name key `names_key_id`) would write, with a MAC
/// under each symmetric key they hold: the bytes of `.r2seal/descriptor`.
#[wasm_bindgen(js_name = descriptorFor)]
pub fn descriptor_for(keys: &Keys, names_key_id: Option<String>) -> Result<Vec<u8>, JsValue> {
    let names = names_key_id
        .map(|id| id.parse::<r2seal::keys::KeyId>())
        .transpose()
        .map_err(js_err)?;
    Ok(Descriptor::new(keys.bucket_config(names), &keys.held_sym_keys()).to_bytes())
}

/// Runs one name-encryption vector (tests/vectors/names/*) through
/// `r2seal::testkit::check_name_vector`.
#[cfg(feature = "vectors")]
#[wasm_bindgen(js_name = checkNameVector)]
pub fn check_name_vector(file: &[u8]) -> Result<(), JsValue> {
    r2seal::testkit::check_name_vector(file).map_err(|why| js_err_code("VECTOR_FAILED", &why))
}
