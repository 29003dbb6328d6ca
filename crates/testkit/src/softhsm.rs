//! A SoftHSM2 token of a test's own, for code that keeps keys in a PKCS#11 HSM.
//!
//! Tests cannot point SoftHSM2 at a config of their own (`SOFTHSM2_CONF` would have to be set
//! in-process), so they share its default config (`/etc/softhsm/softhsm2.conf`) and keep apart
//! by token: each test initializes a token with a unique label and random PINs, and deletes it
//! when done. `cargo xtask servers` installs SoftHSM2 (Debian package `softhsm2`).
//!
//! SoftHSM2 reads its token directory once, when a process initializes it: a process's tokens
//! are those that existed when its first keystore opened the module, until the last one closes.
//! Under nextest every test is a process of its own; under `cargo test` tests share one, so a
//! token holds a process-wide lock until dropped: one test token at a time per process, and a
//! test's keystores (declared after its token, so dropped before it) are gone before the next
//! token is made. Hence one token per test: several keystores, and services, share it, apart
//! by key labels.
//!
//! This crate does not depend on `keys` (whose tests use this): the token's fields are what a
//! `keys::Config` needs (`enabled = true`, `module`, `token = label`, `pin`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Condvar, Mutex};

/// Where Debian (and most distributions) put SoftHSM2's PKCS#11 module.
const MODULES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// An initialized SoftHSM2 token, deleted on drop.
#[derive(Debug)]
pub struct SoftHsmToken {
    /// The token's label (unique to this test run; at most 32 bytes, PKCS#11's limit).
    pub label: String,
    /// The user PIN.
    pub pin: String,
    /// The security officer's PIN.
    pub so_pin: String,
    /// SoftHSM2's PKCS#11 module.
    pub module: PathBuf,
}

/// Whether a token of this process exists (a flag and a condition variable rather than a held
/// `MutexGuard`, so that a token stays `Send`).
static TOKEN_EXISTS: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

fn wait_for_no_token() {
    let (exists, changed) = &TOKEN_EXISTS;
    // Poisoned only by a panic between these few lines; the flag is still right.
    let mut exists = exists.lock().unwrap_or_else(|p| p.into_inner());
    while *exists {
        exists = changed.wait(exists).unwrap_or_else(|p| p.into_inner());
    }
    *exists = true;
}

fn no_token_now() {
    let (exists, changed) = &TOKEN_EXISTS;
    *exists.lock().unwrap_or_else(|p| p.into_inner()) = false;
    changed.notify_one();
}

impl SoftHsmToken {
    /// A fresh token; waits while another test of this process holds one (so never make two in
    /// one test: the second would wait forever). Without SoftHSM2, says so loudly and returns
    /// `None` (the caller returns early), except under `CI=true`, where it panics.
    pub fn create(test: &str) -> Option<SoftHsmToken> {
        let Some(module) = MODULES.iter().map(PathBuf::from).find(|m| m.is_file()) else {
            return missing(
                test,
                &format!("no SoftHSM2 module at {}", MODULES.join(" or ")),
            );
        };
        let token = SoftHsmToken {
            label: crate::unique_name("test"),
            pin: format!("{:016x}", rand::random::<u64>()),
            so_pin: format!("{:016x}", rand::random::<u64>()),
            module,
        };
        wait_for_no_token();
        let out = softhsm2_util(&[
            "--init-token",
            "--free",
            "--label",
            &token.label,
            "--pin",
            &token.pin,
            "--so-pin",
            &token.so_pin,
        ]);
        if out.as_ref().is_ok_and(|o| o.status.success()) {
            return Some(token);
        }
        // No token was made: nothing to delete, only the turn to give back.
        let label = token.label.clone();
        std::mem::forget(token);
        no_token_now();
        match out {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing(test, "softhsm2-util is not installed")
            }
            Err(e) => panic!("could not run softhsm2-util: {e}"),
            Ok(out) => panic!(
                "softhsm2-util --init-token --label {label} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

impl Drop for SoftHsmToken {
    fn drop(&mut self) {
        match softhsm2_util(&["--delete-token", "--token", &self.label]) {
            Ok(out) if out.status.success() => {}
            // Not a panic in drop (it would abort a test already unwinding): a leftover test
            // token harms nothing but disk space.
            Ok(out) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "softhsm2-util --delete-token --token {} failed ({}): {}",
                    self.label,
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "could not run softhsm2-util: {e}");
            }
        }
        no_token_now();
    }
}

/// Runs `softhsm2-util`, one at a time across test processes: tokens of the shared token
/// directory are created and deleted by concurrent tests.
fn softhsm2_util(args: &[&str]) -> std::io::Result<Output> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("simcorp-softhsm2-util.lock"))?;
    lock.lock()?;
    let out = Command::new("softhsm2-util").args(args).output();
    let _ = lock.unlock();
    out
}

fn missing(test: &str, what: &str) -> Option<SoftHsmToken> {
    let msg = format!("{what}; `cargo xtask servers` installs SoftHSM2 (Debian package softhsm2)");
    if crate::ci() {
        panic!("CI=true: {msg}");
    }
    // Written to stderr directly: the test harness captures print!/eprint!, not this.
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {msg} ***\n");
    None
}
