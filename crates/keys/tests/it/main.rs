//! The `keys` crate against a real PKCS#11 module: SoftHSM2, one token per test.
#![allow(clippy::unwrap_used)]

mod hsm;
