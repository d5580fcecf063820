//! The bucket descriptor (SECURITY.md §3.11): a small object at [`DESCRIPTOR_KEY`] that
//! records how a bucket is written (form, name-encryption key id, recipients by key id
//! per prefix), so that a writer configured differently is refused before it mixes
//! plaintext names or other recipients into the bucket. Sans-IO: bytes in, bytes out.
//!
//! ```text
//! r2seal-descriptor/v1 LF
//! {"form":"metadata","names":"<key id>"|null,"default":[ids],"policies":[{"prefix":…,"keys":[ids]}]} LF
//! mac <sym key id> <base64: HMAC-SHA-256(mac key, line 1 || line 2)> LF     ; zero or more
//! mac key = HKDF-SHA-256(ikm = K, salt = empty, info = "r2seal/v1 descriptor")
//! ```
//!
//! The rule this module serves: the descriptor never adds trust. Clients compare it with
//! their own configuration and refuse to write on a difference; they never take
//! recipients or keys from it. What it must never do: return a configuration whose MAC
//! under a key the caller holds failed.

use std::collections::BTreeSet;
use std::fmt;

use base64::{prelude::BASE64_STANDARD_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::keys::{KeyId, SymKey};
use crate::Error;

/// Where the descriptor lives, relative to the store root (under the reserved prefix).
pub const DESCRIPTOR_KEY: &str = ".r2seal/descriptor";
const VERSION_LINE: &str = "r2seal-descriptor/v1";
const MAC_LABEL: &[u8] = b"r2seal/v1 descriptor";
/// Descriptors larger than this are refused unread (a bucket writer controls them).
pub const MAX_DESCRIPTOR_LEN: usize = 64 * 1024;
const MAX_MACS: usize = 16;

/// The stored form every writer must use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredForm {
    /// Header in the `r2seal` user-metadata entry, body alone (SECURITY.md §3.9).
    Metadata,
    /// Header in front of the body: a plain age file.
    File,
}

impl fmt::Display for StoredForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoredForm::Metadata => "metadata",
            StoredForm::File => "file",
        })
    }
}

/// Recipients (by key id) for objects under a prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixPolicy {
    pub prefix: String,
    pub keys: Vec<String>,
}

/// How a bucket is written. Only public facts: key ids, never keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    pub form: StoredForm,
    /// Id of the name key ([`crate::names::NameKey::id`]), `None`: plaintext names.
    pub names: Option<String>,
    /// Recipients' key ids where no policy matches, sorted.
    pub default: Vec<String>,
    /// Per-prefix recipients, sorted by prefix, key ids sorted.
    pub policies: Vec<PrefixPolicy>,
}

impl BucketConfig {
    /// A configuration in canonical order (sorted, duplicates removed).
    pub fn new(
        form: StoredForm,
        names: Option<KeyId>,
        default: impl IntoIterator<Item = KeyId>,
        policies: impl IntoIterator<Item = (String, Vec<KeyId>)>,
    ) -> BucketConfig {
        let ids = |v: &mut dyn Iterator<Item = KeyId>| -> Vec<String> {
            v.map(|k| k.to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let mut policies: Vec<PrefixPolicy> = policies
            .into_iter()
            .map(|(prefix, keys)| PrefixPolicy {
                prefix,
                keys: ids(&mut keys.into_iter()),
            })
            .collect();
        policies.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        policies.dedup_by(|a, b| a.prefix == b.prefix);
        BucketConfig {
            form,
            names: names.map(|k| k.to_string()),
            default: ids(&mut default.into_iter()),
            policies,
        }
    }

    fn is_canonical(&self) -> bool {
        let sorted = |v: &[String]| v.windows(2).all(|w| w[0] < w[1]);
        sorted(&self.default)
            && self.policies.windows(2).all(|w| w[0].prefix < w[1].prefix)
            && self.policies.iter().all(|p| sorted(&p.keys))
    }

    /// Where `self` (the bucket's) and `mine` (a writer's) differ, one phrase each.
    pub fn differences(&self, mine: &BucketConfig) -> Vec<String> {
        let mut out = Vec::new();
        if self.form != mine.form {
            out.push(format!(
                "the bucket is written in the {} form, this writer uses the {} form",
                self.form, mine.form
            ));
        }
        match (&self.names, &mine.names) {
            (a, b) if a == b => {}
            (Some(a), None) => out.push(format!(
                "the bucket's names are encrypted (name key {a}) and this writer has no name key"
            )),
            (None, Some(b)) => out.push(format!(
                "the bucket's names are plaintext and this writer encrypts them (name key {b})"
            )),
            (Some(a), Some(b)) => out.push(format!(
                "the bucket's names are encrypted under name key {a}, this writer's is {b}"
            )),
            _ => unreachable!("equal cases handled above"),
        }
        if self.default != mine.default {
            out.push(format!(
                "default recipients differ: bucket [{}], this writer [{}]",
                self.default.join(" "),
                mine.default.join(" ")
            ));
        }
        let prefixes: BTreeSet<&str> = self
            .policies
            .iter()
            .chain(&mine.policies)
            .map(|p| p.prefix.as_str())
            .collect();
        for prefix in prefixes {
            let find = |c: &BucketConfig| {
                c.policies
                    .iter()
                    .find(|p| p.prefix == prefix)
                    .map(|p| p.keys.join(" "))
            };
            let (a, b) = (find(self), find(mine));
            if a != b {
                let show = |x: Option<String>| x.map_or("none".to_string(), |k| format!("[{k}]"));
                out.push(format!(
                    "policy {prefix:?} differs: bucket {}, this writer {}",
                    show(a),
                    show(b)
                ));
            }
        }
        out
    }
}

/// A parsed (or new) descriptor: the configuration and the MACs over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub config: BucketConfig,
    macs: Vec<(KeyId, [u8; 32])>,
}

/// What [`Descriptor::verify`] established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authenticity {
    /// A MAC under each of these held keys verified.
    Authenticated(Vec<KeyId>),
    /// No MAC is under a key the caller holds: the content is only compared, not trusted
    /// (anyone with write access to the bucket could have written it).
    Unauthenticated,
}

fn mac_key(k: &SymKey) -> Zeroizing<[u8; 32]> {
    let hk = hkdf::Hkdf::<Sha256>::new(None, k.secret_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(MAC_LABEL, key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA-256 length");
    key
}

fn json_line(config: &BucketConfig) -> String {
    serde_json::to_string(config).expect("a BucketConfig serializes")
}

fn mac(k: &SymKey, json: &str) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(mac_key(k).as_ref())
        .expect("HMAC takes any key length");
    m.update(VERSION_LINE.as_bytes());
    m.update(b"\n");
    m.update(json.as_bytes());
    m.update(b"\n");
    m.finalize().into_bytes().into()
}

impl Descriptor {
    /// A descriptor of `config`, with one MAC per key in `mac_keys` (symmetric keyring
    /// keys; none is allowed, the descriptor is then unauthenticated for everyone).
    pub fn new(config: BucketConfig, mac_keys: &[SymKey]) -> Descriptor {
        let json = json_line(&config);
        let mut macs: Vec<(KeyId, [u8; 32])> =
            mac_keys.iter().map(|k| (k.id(), mac(k, &json))).collect();
        macs.sort_by_key(|(id, _)| *id);
        macs.dedup_by_key(|(id, _)| *id);
        macs.truncate(MAX_MACS);
        Descriptor { config, macs }
    }

    /// Ids of the keys that carry a MAC.
    pub fn mac_key_ids(&self) -> Vec<KeyId> {
        self.macs.iter().map(|(id, _)| *id).collect()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{VERSION_LINE}\n{}\n", json_line(&self.config));
        for (id, tag) in &self.macs {
            out.push_str(&format!(
                "mac {id} {}\n",
                BASE64_STANDARD_NO_PAD.encode(tag)
            ));
        }
        out.into_bytes()
    }

    /// Strict parse: the version line, a canonical JSON line (as [`to_bytes`](Self::to_bytes) writes
    /// it), then `mac` lines with distinct ids. Anything else is `Malformed` (another
    /// `r2seal-descriptor/…` version: `UnsupportedVersion`).
    pub fn parse(bytes: &[u8]) -> Result<Descriptor, Error> {
        let bad = |what| Error::Malformed(what);
        if bytes.len() > MAX_DESCRIPTOR_LEN {
            return Err(bad("bucket descriptor: larger than 64 KiB"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("bucket descriptor: not UTF-8"))?;
        let body = text
            .strip_suffix('\n')
            .ok_or(bad("bucket descriptor: no final newline"))?;
        let mut lines = body.split('\n');
        match lines.next() {
            Some(VERSION_LINE) => {}
            Some(v) if v.starts_with("r2seal-descriptor/") => {
                return Err(Error::UnsupportedVersion)
            }
            _ => return Err(bad("bucket descriptor: no r2seal-descriptor/v1 line")),
        }
        let json = lines
            .next()
            .ok_or(bad("bucket descriptor: no configuration line"))?;
        let config: BucketConfig = serde_json::from_str(json)
            .map_err(|_| bad("bucket descriptor: invalid configuration JSON"))?;
        if !config.is_canonical() || json_line(&config) != json {
            return Err(bad(
                "bucket descriptor: configuration is not in canonical form",
            ));
        }
        for id in config
            .names
            .iter()
            .chain(&config.default)
            .chain(config.policies.iter().flat_map(|p| &p.keys))
        {
            id.parse::<KeyId>()
                .map_err(|_| bad("bucket descriptor: invalid key id"))?;
        }
        let mut macs = Vec::new();
        for line in lines {
            let mut f = line.split(' ');
            let (Some("mac"), Some(id), Some(tag), None) = (f.next(), f.next(), f.next(), f.next())
            else {
                return Err(bad("bucket descriptor: invalid mac line"));
            };
            let id: KeyId = id
                .parse()
                .map_err(|_| bad("bucket descriptor: invalid mac key id"))?;
            let mut t = [0u8; 32];
            match BASE64_STANDARD_NO_PAD.decode_slice(tag, &mut t) {
                Ok(32) if tag.len() == 43 => {}
                _ => return Err(bad("bucket descriptor: invalid mac")),
            }
            if macs.iter().any(|(i, _)| *i == id) || macs.len() == MAX_MACS {
                return Err(bad("bucket descriptor: duplicate or too many mac lines"));
            }
            macs.push((id, t));
        }
        Ok(Descriptor { config, macs })
    }

    /// Checks every MAC whose key the caller holds (`keys`). One that fails is
    /// `Corrupt`: the descriptor was forged or damaged, and must not be written under.
    pub fn verify(&self, keys: &[SymKey]) -> Result<Authenticity, Error> {
        let json = json_line(&self.config);
        let mut ok = Vec::new();
        for (id, tag) in &self.macs {
            if let Some(k) = keys.iter().find(|k| k.id() == *id) {
                if !bool::from(mac(k, &json).ct_eq(tag)) {
                    return Err(Error::Corrupt);
                }
                ok.push(*id);
            }
        }
        Ok(if ok.is_empty() {
            Authenticity::Unauthenticated
        } else {
            Authenticity::Authenticated(ok)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(names: Option<KeyId>) -> BucketConfig {
        BucketConfig::new(
            StoredForm::Metadata,
            names,
            [KeyId([2; 8]), KeyId([1; 8]), KeyId([1; 8])],
            [
                ("z/".to_string(), vec![KeyId([3; 8])]),
                ("archive/".to_string(), vec![KeyId([4; 8]), KeyId([3; 8])]),
            ],
        )
    }

    #[test]
    fn round_trips_canonically_and_verifies() {
        let k = SymKey::generate();
        let d = Descriptor::new(sample(Some(KeyId([9; 8]))), std::slice::from_ref(&k));
        let bytes = d.to_bytes();
        let back = Descriptor::parse(&bytes).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.config.default.len(), 2);
        assert_eq!(back.config.policies[0].prefix, "archive/");
        assert_eq!(
            back.verify(std::slice::from_ref(&k)).unwrap(),
            Authenticity::Authenticated(vec![k.id()])
        );
        assert_eq!(
            back.verify(&[SymKey::generate()]).unwrap(),
            Authenticity::Unauthenticated
        );
    }

    #[test]
    fn forged_or_edited_descriptors_fail_for_key_holders() {
        let k = SymKey::generate();
        let d = Descriptor::new(sample(None), std::slice::from_ref(&k));
        let text = String::from_utf8(d.to_bytes()).unwrap();
        // Edit the configuration, keep the MAC.
        let edited = text.replace(
            "\"names\":null",
            &format!("\"names\":\"{}\"", KeyId([5; 8])),
        );
        assert_ne!(edited, text);
        let e = Descriptor::parse(edited.as_bytes()).unwrap();
        assert_eq!(e.verify(std::slice::from_ref(&k)), Err(Error::Corrupt));
        // A forger without the key can only drop the MAC: then it is unauthenticated.
        let dropped: String = edited.lines().take(2).map(|l| format!("{l}\n")).collect();
        let e = Descriptor::parse(dropped.as_bytes()).unwrap();
        assert_eq!(e.verify(&[k]).unwrap(), Authenticity::Unauthenticated);
    }

    #[test]
    fn strict_parsing() {
        let d = Descriptor::new(sample(None), &[SymKey::generate()]);
        let text = String::from_utf8(d.to_bytes()).unwrap();
        for bad in [
            text.trim_end().to_string(),
            text.replacen("r2seal-descriptor/v1", "age-encryption.org/v1", 1),
            text.replacen("{\"form\"", "{ \"form\"", 1),
            text.replacen(
                "\"default\":[\"AQEBAQEBAQE\",\"AgICAgICAgI\"]",
                "\"default\":[\"AgICAgICAgI\",\"AQEBAQEBAQE\"]",
                1,
            ),
            text.replacen("\"form\":\"metadata\"", "\"form\":\"other\"", 1),
            text.replacen("mac ", "mac  ", 1),
            format!("{text}{}", text.lines().nth(2).unwrap()) + "\n",
            text.replacen("\"default\"", "\"extra\":1,\"default\"", 1),
            text.replace("AQEBAQEBAQE", "short"),
        ] {
            assert!(
                matches!(Descriptor::parse(bad.as_bytes()), Err(Error::Malformed(_))),
                "{bad}"
            );
        }
        assert_eq!(
            Descriptor::parse(b"r2seal-descriptor/v2\n{}\n"),
            Err(Error::UnsupportedVersion)
        );
    }

    #[test]
    fn differences_name_every_field() {
        let bucket = sample(Some(KeyId([9; 8])));
        assert!(bucket.differences(&bucket).is_empty());
        let mine = BucketConfig::new(StoredForm::File, None, [KeyId([1; 8])], []);
        let d = bucket.differences(&mine);
        assert_eq!(d.len(), 5, "{d:?}");
        assert!(d[1].contains("no name key"), "{d:?}");
    }
}
