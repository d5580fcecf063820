//! The keyring: named keys with status, default recipients and per-prefix policies
//! (SECURITY.md §4.4). A TOML file, written 0600 and optionally Argon2id-protected
//! as a whole.
//!
//! ```toml
//! version = 1
//! default = ["main", "recovery"]
//!
//! [[key]]
//! name = "main"
//! kind = "sym"                 # sym | x25519 | recipient (public only)
//! secret = "R2SEAL-SYM-KEY-1…"
//! created = "2026-11-25T10:00:00Z"
//! status = "active"            # active | retired | revoked
//!
//! [[key]]
//! name = "recovery"
//! kind = "recipient"
//! recipient = "age1…"
//! recovery = true
//!
//! [[policy]]
//! prefix = "archive/"
//! keys = ["recovery"]          # a Worker can write here but never read
//! ```
//!
//! A top-level `names = "main"` names the symmetric key whose derived name key
//! encrypts object names (SECURITY.md §3.10).

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::files::{unwrap_protected, PassphraseSource};
use super::{Identity, KeyId, Recipient, SymKey};
use crate::Error;

const KEYRING_VERSION: u32 = 1;

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Seals and opens.
    Active,
    /// Opens only: kept so old objects stay readable until rotated.
    Retired,
    /// Suspected compromised: opens only to re-key objects away from it.
    Revoked,
}

impl std::fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyStatus::Active => "active",
            KeyStatus::Retired => "retired",
            KeyStatus::Revoked => "revoked",
        })
    }
}

/// What a key entry holds.
#[derive(Debug)]
pub enum KeyMaterial {
    /// A symmetric key (seals and opens).
    Sym(SymKey),
    /// An age X25519 identity (seals and opens).
    X25519(Identity),
    /// Only an age recipient: seals, never opens (e.g. an offline recovery key).
    RecipientOnly(Recipient),
}

/// One named key.
#[derive(Debug)]
pub struct Key {
    pub name: String,
    pub material: KeyMaterial,
    pub created: String,
    pub status: KeyStatus,
    /// A recovery key: sealing to a set without one prints a warning.
    pub recovery: bool,
}

impl Key {
    pub fn id(&self) -> KeyId {
        self.recipient().key_id()
    }

    pub fn kind(&self) -> &'static str {
        match self.material {
            KeyMaterial::Sym(_) => "sym",
            KeyMaterial::X25519(_) => "x25519",
            KeyMaterial::RecipientOnly(_) => "recipient",
        }
    }

    pub fn recipient(&self) -> Recipient {
        match &self.material {
            KeyMaterial::Sym(k) => Recipient::Sym(k.clone()),
            KeyMaterial::X25519(i) => i.to_recipient(),
            KeyMaterial::RecipientOnly(r) => r.clone(),
        }
    }

    /// The secret to open with, if the key holds one.
    pub fn identity(&self) -> Option<Identity> {
        match &self.material {
            KeyMaterial::Sym(k) => Some(Identity::Sym(k.clone())),
            KeyMaterial::X25519(i) => Some(i.clone()),
            KeyMaterial::RecipientOnly(_) => None,
        }
    }
}

/// A prefix and the keys objects under it are sealed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub prefix: String,
    pub keys: Vec<String>,
}

/// The recipients an object is sealed to, and why.
#[derive(Debug)]
pub struct SealPlan {
    pub recipients: Vec<Recipient>,
    /// The policy prefix that chose them, or `None` for the defaults.
    pub policy: Option<String>,
    /// No recovery key among the recipients: the caller should warn.
    pub lacks_recovery: bool,
}

#[derive(Debug, Default)]
pub struct Keyring {
    keys: Vec<Key>,
    default: Vec<String>,
    policies: Vec<Policy>,
    names: Option<String>,
}

/// The on-disk shape. Secrets pass through `String`s that are zeroized right after
/// parsing; the TOML parser's own buffers are outside our control (SECURITY.md).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    version: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    default: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    names: Option<String>,
    #[serde(default, rename = "key", skip_serializing_if = "Vec::is_empty")]
    keys: Vec<KeyRepr>,
    #[serde(default, rename = "policy", skip_serializing_if = "Vec::is_empty")]
    policies: Vec<Policy>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRepr {
    name: String,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recipient: Option<String>,
    #[serde(default)]
    created: String,
    status: KeyStatus,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    recovery: bool,
}

impl Drop for KeyRepr {
    fn drop(&mut self) {
        if let Some(s) = self.secret.as_mut() {
            s.zeroize();
        }
    }
}

impl Keyring {
    /// Parses a keyring file, removing a passphrase layer first if it has one.
    pub fn parse(bytes: &[u8], passphrase: PassphraseSource<'_>) -> Result<Keyring, Error> {
        let inner = unwrap_protected(bytes, passphrase)?;
        let text = std::str::from_utf8(&inner)
            .map_err(|_| Error::InvalidKeyFile("keyring is not UTF-8".into()))?;
        // toml's message quotes the offending line, which may hold a secret: keep
        // only its position.
        let repr: FileRepr = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(" at byte {}", s.start))
                .unwrap_or_default();
            Error::InvalidKeyFile(format!("keyring is not valid TOML{at}"))
        })?;
        if repr.version != KEYRING_VERSION {
            return Err(Error::InvalidKeyFile(format!(
                "unsupported keyring version {}",
                repr.version
            )));
        }
        let mut ring = Keyring {
            keys: Vec::new(),
            default: repr.default.clone(),
            policies: repr.policies.clone(),
            names: repr.names.clone(),
        };
        for k in &repr.keys {
            let bad = |what: &str| Error::InvalidKeyFile(format!("key {:?}: {what}", k.name));
            let material = match (k.kind.as_str(), &k.secret, &k.recipient) {
                ("sym", Some(s), None) => {
                    KeyMaterial::Sym(SymKey::parse(s).map_err(|_| bad("invalid secret"))?)
                }
                ("x25519", Some(s), _) => {
                    let id = Identity::parse(s).map_err(|_| bad("invalid secret"))?;
                    if !matches!(id, Identity::X25519(_)) {
                        return Err(bad("kind x25519 needs an AGE-SECRET-KEY-1… secret"));
                    }
                    if k.recipient
                        .as_deref()
                        .is_some_and(|r| r != id.to_recipient().describe())
                    {
                        return Err(bad("recipient does not match the secret"));
                    }
                    KeyMaterial::X25519(id)
                }
                ("recipient", None, Some(r)) => match Recipient::parse(r) {
                    // A symmetric key is a secret, never a public recipient: refusing it
                    // here keeps it from being rewritten as an unparsable `sym:<id>`.
                    Ok(Recipient::X25519(x)) => KeyMaterial::RecipientOnly(Recipient::X25519(x)),
                    _ => return Err(bad("invalid recipient: expected age1…")),
                },
                _ => {
                    return Err(bad(
                        "kind must be sym (secret), x25519 (secret) or recipient (recipient)",
                    ))
                }
            };
            let key = Key {
                name: k.name.clone(),
                material,
                created: k.created.clone(),
                status: k.status,
                recovery: k.recovery,
            };
            if let Some(id) = &k.id {
                if *id != key.id().to_string() {
                    return Err(bad("stored id does not match the key"));
                }
            }
            ring.add(key).map_err(in_file)?;
        }
        ring.check_references().map_err(in_file)?;
        Ok(ring)
    }

    /// The TOML text (contains secrets: write it 0600, or protect it).
    pub fn to_toml(&self) -> Zeroizing<String> {
        let repr = FileRepr {
            version: KEYRING_VERSION,
            default: self.default.clone(),
            keys: self
                .keys
                .iter()
                .map(|k| {
                    let (secret, recipient) = match &k.material {
                        KeyMaterial::Sym(s) => (Some(s.to_secret_string().to_string()), None),
                        KeyMaterial::X25519(i) => (
                            Some(i.to_secret_string().to_string()),
                            Some(i.to_recipient().describe()),
                        ),
                        KeyMaterial::RecipientOnly(r) => (None, Some(r.describe())),
                    };
                    KeyRepr {
                        name: k.name.clone(),
                        kind: k.kind().to_owned(),
                        id: Some(k.id().to_string()),
                        secret,
                        recipient,
                        created: k.created.clone(),
                        status: k.status,
                        recovery: k.recovery,
                    }
                })
                .collect(),
            policies: self.policies.clone(),
            names: self.names.clone(),
        };
        Zeroizing::new(toml::to_string_pretty(&repr).expect("keyring serializes"))
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    pub fn defaults(&self) -> &[String] {
        &self.default
    }

    pub fn get(&self, name: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// Finds a key by name or by its id.
    pub fn find(&self, name_or_id: &str) -> Option<&Key> {
        self.get(name_or_id)
            .or_else(|| self.keys.iter().find(|k| k.id().to_string() == name_or_id))
    }

    pub fn add(&mut self, key: Key) -> Result<(), Error> {
        if key.name.is_empty()
            || key
                .name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::Keyring(format!("invalid key name {:?}", key.name)));
        }
        if self.get(&key.name).is_some() {
            return Err(Error::Keyring(format!(
                "a key named {:?} already exists",
                key.name
            )));
        }
        if self.keys.iter().any(|k| k.id() == key.id()) {
            return Err(Error::Keyring(format!(
                "key {:?} is already in the keyring",
                key.name
            )));
        }
        self.keys.push(key);
        Ok(())
    }

    pub fn set_status(&mut self, name_or_id: &str, status: KeyStatus) -> Result<KeyStatus, Error> {
        let name = self
            .find(name_or_id)
            .map(|k| k.name.clone())
            .ok_or_else(|| no_such_key(name_or_id))?;
        let key = self
            .keys
            .iter_mut()
            .find(|k| k.name == name)
            .expect("found above");
        if key.status == KeyStatus::Revoked && status != KeyStatus::Revoked {
            return Err(Error::Keyring(format!(
                "key {name:?} is revoked; revocation cannot be undone"
            )));
        }
        Ok(std::mem::replace(&mut key.status, status))
    }

    /// Where the key `name_or_id` is named: `None` for the defaults, `Some(prefix)` for
    /// each policy that names it.
    pub fn named_by(&self, name_or_id: &str) -> Vec<Option<String>> {
        let Some(target) = self.find(name_or_id).map(|k| k.name.clone()) else {
            return Vec::new();
        };
        let names_it = |names: &[String]| {
            names
                .iter()
                .any(|n| self.get(n).is_some_and(|k| k.name == target))
        };
        let mut found = Vec::new();
        if names_it(&self.default) {
            found.push(None);
        }
        for p in &self.policies {
            if names_it(&p.keys) {
                found.push(Some(p.prefix.clone()));
            }
        }
        found
    }

    pub fn set_defaults(&mut self, names: Vec<String>) -> Result<(), Error> {
        let old = std::mem::replace(&mut self.default, names);
        self.check_references().inspect_err(|_| self.default = old)
    }

    /// Sets (or with an empty `keys`, removes) the policy for `prefix`.
    pub fn set_policy(&mut self, prefix: &str, keys: Vec<String>) -> Result<(), Error> {
        let old = self.policies.clone();
        self.policies.retain(|p| p.prefix != prefix);
        if !keys.is_empty() {
            self.policies.push(Policy {
                prefix: prefix.to_owned(),
                keys,
            });
            self.policies.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        }
        self.check_references().inspect_err(|_| self.policies = old)
    }

    /// The name of the symmetric key object names are encrypted under, if any.
    pub fn names(&self) -> Option<&str> {
        self.names.as_deref()
    }

    /// Encrypt object names under the key named `name` (a symmetric key), or stop
    /// (`None`: new objects get plaintext names; existing encrypted ones stay so).
    pub fn set_names(&mut self, name: Option<String>) -> Result<(), Error> {
        let old = std::mem::replace(&mut self.names, name);
        self.check_references().inspect_err(|_| self.names = old)
    }

    /// The name key (from the key `names` names, whatever its status: a retired key
    /// still names the objects it named).
    pub fn name_key(&self) -> Option<crate::names::NameKey> {
        match &self.get(self.names.as_deref()?)?.material {
            KeyMaterial::Sym(k) => Some(crate::names::NameKey::from_sym_key(k)),
            _ => None,
        }
    }

    /// The keys objects are sealed to where no policy matches: the defaults, else every
    /// active key (as [`plan`](Self::plan) chooses them).
    pub fn default_keys(&self) -> Vec<&Key> {
        if self.default.is_empty() {
            self.keys
                .iter()
                .filter(|k| k.status == KeyStatus::Active)
                .collect()
        } else {
            self.default.iter().filter_map(|n| self.get(n)).collect()
        }
    }

    /// Symmetric keys this keyring holds and that are not revoked (descriptor MACs).
    pub fn sym_keys(&self) -> Vec<SymKey> {
        self.keys
            .iter()
            .filter(|k| k.status != KeyStatus::Revoked)
            .filter_map(|k| match &k.material {
                KeyMaterial::Sym(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    fn check_references(&self) -> Result<(), Error> {
        if let Some(n) = &self.names {
            match self.get(n) {
                None => return Err(no_such_key(n)),
                Some(k) if !matches!(k.material, KeyMaterial::Sym(_)) => {
                    return Err(Error::Keyring(format!(
                        "names: key {n:?} is not a symmetric key (names are encrypted under a sym key)"
                    )))
                }
                Some(_) => {}
            }
        }
        let names = self
            .default
            .iter()
            .chain(self.policies.iter().flat_map(|p| &p.keys));
        for name in names {
            if self.get(name).is_none() {
                return Err(no_such_key(name));
            }
        }
        Ok(())
    }

    /// Identities for ordinary reads: active and retired keys with secrets.
    pub fn identities(&self) -> Vec<Identity> {
        self.identities_where(|s| s != KeyStatus::Revoked)
    }

    /// Identities for re-keying away from compromised keys: revoked ones too.
    pub fn identities_for_rekey(&self) -> Vec<Identity> {
        self.identities_where(|_| true)
    }

    fn identities_where(&self, keep: impl Fn(KeyStatus) -> bool) -> Vec<Identity> {
        self.keys
            .iter()
            .filter(|k| keep(k.status))
            .filter_map(Key::identity)
            .collect()
    }

    /// The recipients for an object at `object_key`: the longest matching policy
    /// prefix, else the defaults, else every active key. Only active keys seal.
    pub fn plan(&self, object_key: &str) -> Result<SealPlan, Error> {
        let plan = self.plan_without(object_key, &Default::default())?;
        if plan.recipients.is_empty() {
            return Err(Error::InvalidRecipients(
                "the keyring has no active key to seal to",
            ));
        }
        Ok(plan)
    }

    /// [`plan`](Self::plan) with the keys in `exclude` left out before anything is
    /// checked (rotation removing a revoked key that the defaults still name). The
    /// result may be empty.
    pub fn plan_without(
        &self,
        object_key: &str,
        exclude: &std::collections::BTreeSet<KeyId>,
    ) -> Result<SealPlan, Error> {
        let policy = self
            .policies
            .iter()
            .filter(|p| object_key.starts_with(&p.prefix))
            .max_by_key(|p| p.prefix.len());
        let chosen: Vec<&Key> = match (policy, self.default.is_empty()) {
            (Some(p), _) => p.keys.iter().filter_map(|n| self.get(n)).collect(),
            (None, false) => self.default.iter().filter_map(|n| self.get(n)).collect(),
            (None, true) => self
                .keys
                .iter()
                .filter(|k| k.status == KeyStatus::Active)
                .collect(),
        };
        let chosen: Vec<&Key> = chosen
            .into_iter()
            .filter(|k| !exclude.contains(&k.id()))
            .collect();
        if let Some(k) = chosen.iter().find(|k| k.status != KeyStatus::Active) {
            return Err(Error::InactiveKeyNamed {
                key: k.name.clone(),
                status: if k.status == KeyStatus::Revoked {
                    "revoked"
                } else {
                    "retired"
                },
                policy: policy.map(|p| p.prefix.clone()),
            });
        }
        Ok(SealPlan {
            lacks_recovery: !chosen.iter().any(|k| k.recovery),
            recipients: chosen.iter().map(|k| k.recipient()).collect(),
            policy: policy.map(|p| p.prefix.clone()),
        })
    }
}

/// A keyring error met while parsing a file is a problem with that file.
fn in_file(e: Error) -> Error {
    match e {
        Error::Keyring(what) => Error::InvalidKeyFile(what),
        other => other,
    }
}

fn no_such_key(name: &str) -> Error {
    Error::Keyring(format!("no key named {name:?} in the keyring"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_pass() -> Result<super::super::passphrase::Passphrase, Error> {
        Err(Error::PassphraseUnavailable)
    }

    fn sample() -> Keyring {
        let mut ring = Keyring::default();
        ring.add(Key {
            name: "main".into(),
            material: KeyMaterial::Sym(SymKey::generate()),
            created: "2026-11-25T00:00:00Z".into(),
            status: KeyStatus::Active,
            recovery: false,
        })
        .unwrap();
        ring.add(Key {
            name: "recovery".into(),
            material: KeyMaterial::RecipientOnly(Identity::generate_x25519().to_recipient()),
            created: "2026-11-25T00:00:00Z".into(),
            status: KeyStatus::Active,
            recovery: true,
        })
        .unwrap();
        ring
    }

    #[test]
    fn toml_round_trip_keeps_everything() {
        let mut ring = sample();
        ring.set_policy("archive/", vec!["recovery".into()])
            .unwrap();
        ring.set_defaults(vec!["main".into(), "recovery".into()])
            .unwrap();
        let text = ring.to_toml();
        let back = Keyring::parse(text.as_bytes(), &mut no_pass).unwrap();
        assert_eq!(back.to_toml().as_str(), text.as_str());
    }

    #[test]
    fn unknown_fields_are_refused_in_every_table() {
        let mut ring = sample();
        ring.set_policy("archive/", vec!["recovery".into()])
            .unwrap();
        let text = ring.to_toml();
        assert!(Keyring::parse(text.as_bytes(), &mut no_pass).is_ok());
        // A misspelt field would otherwise be ignored, and what it meant silently lost.
        for (table, typo) in [
            ("version = 1", "versoin = 1"),
            ("[[key]]", "[[key]]\nrecovry = true"),
            ("[[policy]]", "[[policy]]\nkyes = [\"main\"]"),
        ] {
            assert!(text.contains(table), "{table}");
            let bad = text.replacen(table, &format!("{table}\n{typo}"), 1);
            assert!(
                Keyring::parse(bad.as_bytes(), &mut no_pass).is_err(),
                "{typo} accepted"
            );
        }
    }

    #[test]
    fn policies_pick_the_longest_prefix_and_flag_missing_recovery() {
        let mut ring = sample();
        ring.set_policy("archive/", vec!["recovery".into()])
            .unwrap();
        ring.set_policy("archive/hot/", vec!["main".into()])
            .unwrap();
        let p = ring.plan("archive/x").unwrap();
        assert_eq!(p.policy.as_deref(), Some("archive/"));
        assert!(!p.lacks_recovery);
        let p = ring.plan("archive/hot/x").unwrap();
        assert!(p.lacks_recovery);
        assert_eq!(ring.plan("sessions/a").unwrap().recipients.len(), 2);
    }

    #[test]
    fn statuses_gate_sealing_and_opening() {
        let mut ring = sample();
        ring.set_defaults(vec!["main".into()]).unwrap();
        ring.set_status("main", KeyStatus::Retired).unwrap();
        assert!(ring.plan("x").is_err());
        assert_eq!(ring.identities().len(), 1);
        ring.set_status("main", KeyStatus::Revoked).unwrap();
        assert_eq!(ring.identities().len(), 0);
        assert_eq!(ring.identities_for_rekey().len(), 1);
        assert!(ring.set_status("main", KeyStatus::Active).is_err());
    }

    #[test]
    fn corrupt_keyrings_give_errors_that_do_not_echo_secrets() {
        let text = sample()
            .to_toml()
            .replace("R2SEAL-SYM-KEY-1", "R2SEAL-SYM-KEY-1X");
        let err = Keyring::parse(text.as_bytes(), &mut no_pass)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"main\"") && !err.contains("R2SEAL-SYM-KEY"),
            "{err}"
        );
        let err = Keyring::parse(
            b"version = 1\n[[key]]\nname = \"a\"\nsecret = \"AGE-SECRET-KEY-1ZZ\n",
            &mut no_pass,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("AGE-SECRET"), "{err}");
        assert!(Keyring::parse(b"version = 2\n", &mut no_pass).is_err());
        assert!(ring_with_dangling_policy().is_err());
    }

    /// Regression: a symmetric secret under `kind = "recipient"` was accepted and then
    /// saved as `sym:<id>`, which made the keyring unreadable.
    #[test]
    fn a_symmetric_key_is_not_a_recipient() {
        let secret = SymKey::generate().to_secret_string();
        let text = format!(
            "version = 1\n[[key]]\nname = \"k\"\nkind = \"recipient\"\nrecipient = \"{}\"\nstatus = \"active\"\n",
            secret.as_str()
        );
        let err = Keyring::parse(text.as_bytes(), &mut no_pass)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected age1") && !err.contains("R2SEAL-SYM"),
            "{err}"
        );
    }

    fn ring_with_dangling_policy() -> Result<Keyring, Error> {
        Keyring::parse(
            b"version = 1\n[[policy]]\nprefix = \"a/\"\nkeys = [\"ghost\"]\n",
            &mut no_pass,
        )
    }

    #[test]
    fn names_setting_round_trips_and_must_name_a_sym_key() {
        let mut ring = sample();
        assert!(ring.name_key().is_none());
        ring.set_names(Some("main".into())).unwrap();
        let id = ring.name_key().unwrap().id();
        let text = ring.to_toml();
        assert!(text.contains("names = \"main\""), "{}", text.as_str());
        let back = Keyring::parse(text.as_bytes(), &mut no_pass).unwrap();
        assert_eq!(back.name_key().unwrap().id(), id);
        assert!(ring.set_names(Some("recovery".into())).is_err());
        assert!(ring.set_names(Some("ghost".into())).is_err());
        assert_eq!(ring.names(), Some("main"));
        ring.set_names(None).unwrap();
        assert!(ring.name_key().is_none());
    }

    #[test]
    fn keyring_debug_is_redacted() {
        let ring = sample();
        let debug = format!("{ring:?}");
        let KeyMaterial::Sym(k) = &ring.keys()[0].material else {
            unreachable!()
        };
        assert!(!debug.contains(&k.to_secret_string()[20..]), "{debug}");
    }
}
