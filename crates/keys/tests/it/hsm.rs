//! Keys generated and used inside a SoftHSM2 token, through `Keystore` only.

use std::path::PathBuf;

use keys::{Config, KeyError, Keystore, verify};
use secrecy::SecretString;
use testkit::softhsm::SoftHsmToken;

fn config(token: &SoftHsmToken) -> Config {
    Config {
        enabled: true,
        module: token.module.clone(),
        token: token.label.clone(),
        pin: Some(SecretString::from(token.pin.clone())),
        dir: PathBuf::new(),
    }
}

/// The error `Keystore::open(config)` fails with, as text.
fn open_error(config: &Config) -> String {
    match Keystore::open(config) {
        Ok(store) => panic!("opened {store:?}, expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_hsm_key_signs_what_its_public_key_verifies_and_nothing_else() {
    let Some(token) = SoftHsmToken::create("an_hsm_key_signs_what_its_public_key_verifies") else {
        return;
    };
    let store = Keystore::open(&config(&token)).unwrap();
    assert_eq!(
        store.describe(),
        format!("hsm ({}, token {})", token.module.display(), token.label)
    );
    let key = store.generate("r-1.k1").unwrap();
    assert_eq!(key.label(), "r-1.k1");

    let sig = key.sign(b"gas=60").unwrap();
    assert!(verify(&key.public_key(), b"gas=60", &sig));
    assert!(!verify(&key.public_key(), b"gas=61", &sig));
    let mut forged = sig;
    forged[10] ^= 1;
    assert!(!verify(&key.public_key(), b"gas=60", &forged));

    let other = store.generate("r-2.k1").unwrap();
    assert_ne!(other.public_key(), key.public_key());
    assert!(!verify(&other.public_key(), b"gas=60", &sig));
    // Pure Ed25519 is deterministic (RFC 8032): the token signs as any implementation would.
    assert_eq!(key.sign(b"gas=60").unwrap(), sig);
}

#[test]
fn an_hsm_private_key_is_sensitive_not_extractable_and_its_value_unreadable() {
    let Some(token) = SoftHsmToken::create("an_hsm_private_key_is_sensitive") else {
        return;
    };
    let store = Keystore::open(&config(&token)).unwrap();
    store.generate("device-7").unwrap();
    let attributes = store.hsm_attributes("device-7").unwrap().unwrap();
    assert!(attributes.sensitive, "{attributes:?}");
    assert!(!attributes.extractable, "{attributes:?}");
    assert!(attributes.always_sensitive, "{attributes:?}");
    assert!(attributes.never_extractable, "{attributes:?}");
    assert!(!attributes.value_readable, "{attributes:?}");
    assert!(store.hsm_attributes("device-8").unwrap().is_none());

    // A file keystore has no such attributes, and says so rather than inventing them.
    let dir = tempfile::tempdir().unwrap();
    let file = Keystore::file(dir.path()).unwrap();
    file.generate("device-7").unwrap();
    assert!(matches!(
        file.hsm_attributes("device-7"),
        Err(KeyError::Config(_))
    ));
}

#[test]
fn an_hsm_key_outlives_its_keystore_until_destroyed_and_a_label_is_taken_once() {
    let Some(token) = SoftHsmToken::create("an_hsm_key_outlives_its_keystore") else {
        return;
    };
    let public = {
        let store = Keystore::open(&config(&token)).unwrap();
        let public = store.generate("gw-1").unwrap().public_key();
        assert!(matches!(store.generate("gw-1"), Err(KeyError::Exists(_))));
        public
    };
    // The last keystore is gone, so this loads, initializes and logs in to the module afresh.
    let store = Keystore::open(&config(&token)).unwrap();
    let found = store.find("gw-1").unwrap().unwrap();
    assert_eq!(found.public_key(), public);
    assert!(verify(&public, b"hello", &found.sign(b"hello").unwrap()));
    assert!(matches!(store.generate("gw-1"), Err(KeyError::Exists(_))));
    assert_eq!(store.find_or_generate("gw-1").unwrap().public_key(), public);

    assert!(store.destroy("gw-1").unwrap());
    assert!(store.find("gw-1").unwrap().is_none());
    assert!(!store.destroy("gw-1").unwrap());
    assert!(matches!(found.sign(b"hello"), Err(KeyError::NotFound(_))));
    let again = store.find_or_generate("gw-1").unwrap();
    assert_ne!(again.public_key(), public);
}

#[test]
fn keystores_on_one_token_share_it_and_sign_from_many_threads() {
    let Some(token) = SoftHsmToken::create("keystores_on_one_token_share_it") else {
        return;
    };
    let first = Keystore::open(&config(&token)).unwrap();
    let second = Keystore::open(&config(&token)).unwrap();
    let key = first.generate("shared").unwrap();
    // A key one keystore signed with (and keeps a handle of) and another destroyed is gone
    // for both.
    let doomed = first.generate("doomed").unwrap();
    doomed.sign(b"x").unwrap();
    assert!(second.destroy("doomed").unwrap());
    assert!(matches!(doomed.sign(b"x"), Err(KeyError::NotFound(_))));
    drop(first);
    // The second keystore's login still holds after the first is dropped.
    let same = second.find("shared").unwrap().unwrap();
    assert_eq!(same.public_key(), key.public_key());

    std::thread::scope(|s| {
        for t in 0..4u8 {
            let key = same.clone();
            s.spawn(move || {
                for i in 0..25u8 {
                    let msg = [t, i];
                    assert!(verify(&key.public_key(), &msg, &key.sign(&msg).unwrap()));
                }
            });
        }
    });
}

#[test]
fn a_wrong_pin_is_refused_at_open() {
    let Some(token) = SoftHsmToken::create("a_wrong_pin_is_refused_at_open") else {
        return;
    };
    let mut config = config(&token);
    config.pin = Some(SecretString::from("not-the-pin".to_owned()));
    let e = open_error(&config);
    assert!(
        e.contains(&format!("logging in to token {}", token.label))
            && e.contains("CKR_PIN_INCORRECT"),
        "{e}"
    );
}

#[test]
fn an_unknown_token_is_refused_at_open() {
    let Some(token) = SoftHsmToken::create("an_unknown_token_is_refused_at_open") else {
        return;
    };
    let mut config = config(&token);
    config.token = "no-such-token".into();
    let e = open_error(&config);
    assert!(e.contains("no token labelled \"no-such-token\""), "{e}");
    // The tokens it does have are named, so a typo shows.
    assert!(e.contains(&token.label), "{e}");
}

#[test]
fn a_missing_module_is_refused_at_open() {
    let config = Config {
        enabled: true,
        module: PathBuf::from("/nonexistent/libpkcs11.so"),
        token: "simcorp".into(),
        pin: Some(SecretString::from("1234".to_owned())),
        dir: PathBuf::new(),
    };
    let e = open_error(&config);
    assert!(
        e.contains("PKCS#11 module /nonexistent/libpkcs11.so: no such file"),
        "{e}"
    );

    // A file that is no PKCS#11 module at all.
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("libbogus.so");
    std::fs::write(&bogus, b"not a shared library").unwrap();
    let e = open_error(&Config {
        module: bogus.clone(),
        ..config
    });
    assert!(
        e.contains(&format!("loading PKCS#11 module {}", bogus.display())),
        "{e}"
    );
}

#[test]
fn an_enabled_hsm_without_a_pin_is_a_configuration_error() {
    let config = Config {
        enabled: true,
        pin: None,
        ..Config::default()
    };
    assert!(matches!(Keystore::open(&config), Err(KeyError::Config(e)) if e.contains("hsm.pin")));
}
