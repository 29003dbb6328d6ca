//! Keys in an HSM, through PKCS#11 (the `cryptoki` crate).
//!
//! Each key is a pair of token objects sharing a label (and a random `CKA_ID`): an Ed25519
//! private key generated inside the token with `CKA_SENSITIVE = true`, `CKA_EXTRACTABLE = false`,
//! and its public key. Nothing here ever asks for the private key's value; every signature is
//! made by the token (`CKM_EDDSA`, pure Ed25519).
//!
//! PKCS#11 state is per process, not per handle: `C_Initialize` may be called once per module
//! and process, and a login holds for every session of the process on that token. Hence the
//! process-wide [`Module`] registry below, and one login per keystore whose sessions stay open
//! in a small pool (closing a token's last session logs the process out).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;

use crate::{Config, KeyError, PublicKey, Signature};

/// DER of the OID 1.3.101.112 (id-Ed25519, RFC 8410): the `CKA_EC_PARAMS` naming the curve.
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2B, 0x65, 0x70];

/// The security attributes of a key's private half, as the token reports them: what an audit
/// (and the tests) check to know the key cannot leave the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivateKeyAttributes {
    /// `CKA_SENSITIVE`: the token refuses to reveal the key's value.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`: whether the key may be wrapped (exported encrypted) at all.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: sensitive since it was generated.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`: never was extractable.
    pub never_extractable: bool,
    /// Whether asking for `CKA_VALUE` (the private scalar) returned anything. The token answers
    /// `CKR_ATTRIBUTE_SENSITIVE` for a sensitive key, so this is false.
    pub value_readable: bool,
}

pub(crate) struct HsmKeystore {
    // Declared before `module`: sessions close before the module may be finalized.
    sessions: Mutex<Vec<Session>>,
    // Serializes "is the label free? then generate" within this process. PKCS#11 has no unique
    // labels, so two processes generating the same label at once could both succeed.
    generating: Mutex<()>,
    // Private key handles by label: a lookup (C_FindObjects*) costs as much again as a
    // signature. Handles hold for the whole process; one gone stale (the key destroyed by
    // another process) fails with *_HANDLE_INVALID, and the key is looked up again.
    handles: Mutex<HashMap<String, ObjectHandle>>,
    slot: Slot,
    describe: String,
    module: Arc<Module>,
}

// A `Keystore` is shared across threads: a session pool behind a mutex makes that sound, since
// `Session` is `Send` but not `Sync`.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<HsmKeystore>();
};

impl HsmKeystore {
    pub(crate) fn open(config: &Config) -> Result<HsmKeystore, KeyError> {
        let pin = config
            .pin
            .as_ref()
            .ok_or_else(|| KeyError::Config("hsm.pin: required when hsm.enabled = true".into()))?;
        let (module, fresh) = Module::get(&config.module)?;
        let slot = find_slot(&module, &config.token, fresh)?;
        check_mechanisms(&module, slot, &config.token)?;
        let session = module
            .pkcs11
            .open_rw_session(slot)
            .map_err(hsm(format!("opening a session on token {}", config.token)))?;
        login(&session, pin, &config.token)?;
        let describe = format!("hsm ({}, token {})", config.module.display(), config.token);
        tracing::info!(keystore = %describe, "keys in a PKCS#11 token");
        Ok(HsmKeystore {
            sessions: Mutex::new(vec![session]),
            generating: Mutex::new(()),
            handles: Mutex::new(HashMap::new()),
            slot,
            describe,
            module,
        })
    }

    pub(crate) fn describe(&self) -> String {
        self.describe.clone()
    }

    pub(crate) fn generate(&self, label: &str) -> Result<PublicKey, KeyError> {
        let _generating = lock(&self.generating);
        let session = self.session()?;
        if !find(&session, label, None)?.is_empty() {
            return Err(KeyError::Exists(label.to_owned()));
        }
        let id: [u8; 16] = rand::random();
        let common = [
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let public_template = [
            &common[..],
            &[
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::EcParams(ED25519_OID.to_vec()),
            ],
        ]
        .concat();
        let private_template = [
            &common[..],
            &[
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
            ],
        ]
        .concat();
        let (public, private) = session
            .generate_key_pair(
                &Mechanism::EccEdwardsKeyPairGen,
                &public_template,
                &private_template,
            )
            .map_err(hsm(format!("generating Ed25519 key pair {label}")))?;
        match read_public_key(&session, public, label) {
            Ok(key) => Ok(key),
            Err(e) => {
                // A pair whose public half is unreadable is of no use: leave nothing behind.
                let _ = session.destroy_object(private);
                let _ = session.destroy_object(public);
                Err(e)
            }
        }
    }

    pub(crate) fn public_key(&self, label: &str) -> Result<Option<PublicKey>, KeyError> {
        let session = self.session()?;
        if private_key(&session, label)?.is_none() {
            return Ok(None);
        }
        let public = match find(&session, label, Some(ObjectClass::PUBLIC_KEY))?.as_slice() {
            [one] => *one,
            [] => {
                return Err(KeyError::Hsm(format!(
                    "key {label}: the token holds its private key but no public key"
                )));
            }
            many => return Err(ambiguous(label, "public", many.len())),
        };
        read_public_key(&session, public, label).map(Some)
    }

    pub(crate) fn sign(&self, label: &str, message: &[u8]) -> Result<Signature, KeyError> {
        let session = self.session()?;
        let cached = lock(&self.handles).get(label).copied();
        let result = match cached {
            Some(key) => match sign_with(&session, key, message) {
                Err(CkError::Pkcs11(
                    RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid,
                    _,
                )) => {
                    lock(&self.handles).remove(label);
                    None
                }
                other => Some(other),
            },
            None => None,
        };
        let result = match result {
            Some(r) => r,
            None => {
                let key = private_key(&session, label)?
                    .ok_or_else(|| KeyError::NotFound(label.into()))?;
                lock(&self.handles).insert(label.to_owned(), key);
                sign_with(&session, key, message)
            }
        };
        let sig = result.map_err(hsm(format!("signing with key {label}")))?;
        sig.try_into().map_err(|sig: Vec<u8>| {
            KeyError::Hsm(format!(
                "signing with key {label}: the token returned {} bytes, not an Ed25519 signature's 64",
                sig.len()
            ))
        })
    }

    pub(crate) fn destroy(&self, label: &str) -> Result<bool, KeyError> {
        let session = self.session()?;
        lock(&self.handles).remove(label);
        let objects = find(&session, label, None)?;
        for &object in &objects {
            session
                .destroy_object(object)
                .map_err(hsm(format!("destroying key {label}")))?;
        }
        Ok(!objects.is_empty())
    }

    pub(crate) fn private_key_attributes(
        &self,
        label: &str,
    ) -> Result<Option<PrivateKeyAttributes>, KeyError> {
        let session = self.session()?;
        let Some(key) = private_key(&session, label)? else {
            return Ok(None);
        };
        let doing = || format!("reading the attributes of key {label}");
        let attributes = session
            .get_attributes(
                key,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                ],
            )
            .map_err(hsm(doing()))?;
        let flag = |wanted: AttributeType| {
            attributes
                .iter()
                .find_map(|a| match (a, wanted) {
                    (Attribute::Sensitive(v), AttributeType::Sensitive)
                    | (Attribute::Extractable(v), AttributeType::Extractable)
                    | (Attribute::AlwaysSensitive(v), AttributeType::AlwaysSensitive)
                    | (Attribute::NeverExtractable(v), AttributeType::NeverExtractable) => Some(*v),
                    _ => None,
                })
                .ok_or_else(|| KeyError::Hsm(format!("{}: no {wanted:?}", doing())))
        };
        let value = session
            .get_attribute_info(key, &[AttributeType::Value])
            .map_err(hsm(doing()))?;
        Ok(Some(PrivateKeyAttributes {
            sensitive: flag(AttributeType::Sensitive)?,
            extractable: flag(AttributeType::Extractable)?,
            always_sensitive: flag(AttributeType::AlwaysSensitive)?,
            never_extractable: flag(AttributeType::NeverExtractable)?,
            value_readable: matches!(value.first(), Some(AttributeInfo::Available(_))),
        }))
    }

    /// A logged-in session of the pool, returned to it when dropped. Another thread's session
    /// is never shared (`Session` is not `Sync`); a new one is opened when all are busy, and is
    /// logged in already, since a login holds for the whole process.
    fn session(&self) -> Result<PooledSession<'_>, KeyError> {
        let idle = lock(&self.sessions).pop();
        let session = match idle {
            Some(s) => s,
            None => self
                .module
                .pkcs11
                .open_rw_session(self.slot)
                .map_err(hsm("opening a session"))?,
        };
        Ok(PooledSession {
            session: Some(session),
            pool: &self.sessions,
        })
    }
}

struct PooledSession<'a> {
    session: Option<Session>,
    pool: &'a Mutex<Vec<Session>>,
}

impl std::ops::Deref for PooledSession<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        // Only `drop` takes it out.
        self.session
            .as_ref()
            .expect("a pooled session until dropped")
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            lock(self.pool).push(s);
        }
    }
}

/// A loaded and initialized PKCS#11 module, shared by every keystore of this process on it.
struct Module {
    path: PathBuf,
    pkcs11: Pkcs11,
}

/// Live modules by path. Weak: the last keystore on a module finalizes it, and a later `open`
/// starts afresh (a new `Pkcs11`, `C_Initialize`, login).
static MODULES: Mutex<Option<HashMap<PathBuf, Weak<Module>>>> = Mutex::new(None);

impl Module {
    /// The module at `path`, and whether it was loaded and initialized just now.
    fn get(path: &Path) -> Result<(Arc<Module>, bool), KeyError> {
        let mut modules = lock(&MODULES);
        let modules = modules.get_or_insert_with(HashMap::new);
        if let Some(live) = modules.get(path).and_then(Weak::upgrade) {
            return Ok((live, false));
        }
        if !path.is_file() {
            return Err(KeyError::Hsm(format!(
                "PKCS#11 module {}: no such file (hsm.module; SoftHSM2's is /usr/lib/softhsm/libsofthsm2.so, from the Debian package softhsm2)",
                path.display()
            )));
        }
        let pkcs11 = Pkcs11::new(path).map_err(|e| {
            KeyError::Hsm(format!(
                "loading PKCS#11 module {}: {}",
                path.display(),
                describe(&e)
            ))
        })?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // Already initialized: a module of this process still being dropped (it then sees
            // this one registered and leaves it initialized), or another library in-process.
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => {
                return Err(KeyError::Hsm(format!(
                    "initializing PKCS#11 module {}: {}",
                    path.display(),
                    describe(&e)
                )));
            }
        }
        let module = Arc::new(Module {
            path: path.to_owned(),
            pkcs11,
        });
        modules.insert(path.to_owned(), Arc::downgrade(&module));
        Ok((module, true))
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        let mut modules = lock(&MODULES);
        let Some(modules) = modules.as_mut() else {
            return;
        };
        // A newer module for the same path was registered meanwhile: it relies on the library
        // staying initialized, and will finalize it in turn.
        // (`strong_count`, not `upgrade`: a temporary `Arc` dropped here could be the last one,
        // and its drop would wait for the lock this thread holds.)
        if modules
            .get(&self.path)
            .is_some_and(|w| w.strong_count() > 0)
        {
            return;
        }
        modules.remove(&self.path);
        if let Err(e) = self.pkcs11.clone().finalize() {
            tracing::warn!(module = %self.path.display(), error = %describe(&e), "finalizing the PKCS#11 module");
        }
    }
}

fn find_slot(module: &Module, token: &str, fresh: bool) -> Result<Slot, KeyError> {
    let slots = module
        .pkcs11
        .get_slots_with_token()
        .map_err(hsm("listing the module's slots"))?;
    let mut labels = Vec::new();
    let mut matching = Vec::new();
    for slot in slots {
        let Ok(info) = module.pkcs11.get_token_info(slot) else {
            continue;
        };
        if !info.token_initialized() {
            continue;
        }
        let label = info.label().trim_end().to_owned();
        if label == token {
            if !info.user_pin_initialized() {
                return Err(KeyError::Hsm(format!(
                    "token {token}: its user PIN was never set (softhsm2-util --init-token sets it)"
                )));
            }
            matching.push(slot);
        }
        labels.push(label);
    }
    match matching.as_slice() {
        [one] => Ok(*one),
        [] => Err(KeyError::Hsm(format!(
            "no token labelled {token:?} in PKCS#11 module {} (hsm.token; tokens there: {}); `softhsm2-util --init-token --free --label {token}` makes one{}",
            module.path.display(),
            if labels.is_empty() {
                "none".to_owned()
            } else {
                labels.join(", ")
            },
            if fresh {
                ""
            } else {
                // SoftHSM2 reads its token directory at C_Initialize only.
                "; the module was already in use by this process, and may list only the tokens that existed when it was loaded"
            }
        ))),
        many => Err(KeyError::Hsm(format!(
            "{} tokens labelled {token:?} in PKCS#11 module {}: which one holds the keys is ambiguous",
            many.len(),
            module.path.display()
        ))),
    }
}

fn check_mechanisms(module: &Module, slot: Slot, token: &str) -> Result<(), KeyError> {
    let mechanisms = module
        .pkcs11
        .get_mechanism_list(slot)
        .map_err(hsm(format!("listing the mechanisms of token {token}")))?;
    for (wanted, name) in [
        (
            MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
            "CKM_EC_EDWARDS_KEY_PAIR_GEN",
        ),
        (MechanismType::EDDSA, "CKM_EDDSA"),
    ] {
        if !mechanisms.contains(&wanted) {
            return Err(KeyError::Hsm(format!(
                "token {token} does not support Ed25519: no {name}"
            )));
        }
    }
    Ok(())
}

fn login(session: &Session, pin: &SecretString, token: &str) -> Result<(), KeyError> {
    match session.login(UserType::User, Some(pin)) {
        // This process is logged in to the token already (another keystore on it): the login
        // holds for all its sessions.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => {
            let hint = match &e {
                CkError::Pkcs11(RvError::PinIncorrect, _) => {
                    " (hsm.pin is not the token's user PIN)"
                }
                CkError::Pkcs11(RvError::PinLocked, _) => {
                    " (too many wrong PINs: the security officer must reset it)"
                }
                _ => "",
            };
            Err(KeyError::Hsm(format!(
                "logging in to token {token}: {}{hint}",
                describe(&e)
            )))
        }
    }
}

/// Pure Ed25519 (RFC 8032): no context, no prehash.
fn sign_with(session: &Session, key: ObjectHandle, message: &[u8]) -> Result<Vec<u8>, CkError> {
    session.sign(
        &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
        key,
        message,
    )
}

/// The key pair's objects labelled `label`, of `class` or of both key classes.
fn find(
    session: &Session,
    label: &str,
    class: Option<ObjectClass>,
) -> Result<Vec<ObjectHandle>, KeyError> {
    let classes = match class {
        Some(c) => vec![c],
        None => vec![ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY],
    };
    let mut found = Vec::new();
    for class in classes {
        found.extend(
            session
                .find_objects(&[
                    Attribute::Class(class),
                    Attribute::KeyType(KeyType::EC_EDWARDS),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .map_err(hsm(format!("looking up key {label}")))?,
        );
    }
    Ok(found)
}

fn private_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>, KeyError> {
    match find(session, label, Some(ObjectClass::PRIVATE_KEY))?.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(ambiguous(label, "private", many.len())),
    }
}

fn read_public_key(
    session: &Session,
    object: ObjectHandle,
    label: &str,
) -> Result<PublicKey, KeyError> {
    let doing = format!("reading the public key of {label}");
    let point = session
        .get_attributes(object, &[AttributeType::EcPoint])
        .map_err(hsm(&doing))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or_else(|| KeyError::Hsm(format!("{doing}: no CKA_EC_POINT")))?;
    let bytes = ec_point_bytes(&point).ok_or_else(|| {
        KeyError::Hsm(format!(
            "{doing}: CKA_EC_POINT is {} bytes, neither a DER OCTET STRING of 32 bytes nor 32 bytes",
            point.len()
        ))
    })?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| KeyError::Hsm(format!("{doing}: not an Ed25519 point")))?;
    Ok(PublicKey(bytes))
}

/// `CKA_EC_POINT` of an Edwards key: PKCS#11 3.0 says a DER OCTET STRING (`04 20 <32 bytes>`),
/// which SoftHSM2 gives; some modules give the raw 32 bytes.
fn ec_point_bytes(point: &[u8]) -> Option<[u8; 32]> {
    match point {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest.try_into().ok(),
        raw => raw.try_into().ok(),
    }
}

fn ambiguous(label: &str, half: &str, n: usize) -> KeyError {
    KeyError::Hsm(format!(
        "key {label}: {n} {half} keys carry that label in the token"
    ))
}

/// Maps a cryptoki error to `KeyError::Hsm`, saying what was being done.
fn hsm(doing: impl std::fmt::Display) -> impl FnOnce(CkError) -> KeyError {
    move |e| KeyError::Hsm(format!("{doing}: {}", describe(&e)))
}

/// `CKR_PIN_INCORRECT` rather than cryptoki's paragraph-long description: the code is what
/// the module's documentation and the PKCS#11 specification are searched by.
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, _) => {
            let name = format!("{rv:?}");
            let mut code = String::from("CKR");
            for c in name.chars() {
                if c.is_ascii_uppercase() {
                    code.push('_');
                }
                code.push(c.to_ascii_uppercase());
            }
            code
        }
        other => other.to_string(),
    }
}

/// A poisoned lock only means another thread panicked while holding it; the data (a session
/// list, a registry) stays consistent, so carry on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_are_taken_der_wrapped_or_raw() {
        let key = [7u8; 32];
        let mut der = vec![0x04, 0x20];
        der.extend_from_slice(&key);
        assert_eq!(ec_point_bytes(&der), Some(key));
        assert_eq!(ec_point_bytes(&key), Some(key));
        assert_eq!(ec_point_bytes(&der[..33]), None);
        assert_eq!(ec_point_bytes(&[0x04, 0x21, 1, 2]), None);
    }

    #[test]
    fn errors_name_the_pkcs11_return_code() {
        let e = CkError::Pkcs11(RvError::PinIncorrect, cryptoki::context::Function::Login);
        assert_eq!(describe(&e), "CKR_PIN_INCORRECT");
        let e = CkError::Pkcs11(
            RvError::CryptokiAlreadyInitialized,
            cryptoki::context::Function::Initialize,
        );
        assert_eq!(describe(&e), "CKR_CRYPTOKI_ALREADY_INITIALIZED");
    }
}
