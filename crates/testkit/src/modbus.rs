//! A real Modbus TCP server for driver-bridge's tests: pymodbus (from PyPI, pinned, installed
//! into `~/.cache/simcorp/venv` by `cargo xtask servers`) serving holding and input registers
//! on a free port of 127.0.0.1. The test presets registers and reads them back through the
//! server's own datastore (stdin/stdout of the script), and can stop the server and start it
//! again on the same port — with the registers it last preset — to drill a roaster going away.
//!
//! Without pymodbus the test is skipped loudly; with `CI=true` it fails instead.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::{free_port, wait_for_port};

const SCRIPT: &str = include_str!("modbus_server.py");

/// Holding registers (function 3) and input registers (function 4).
pub const HOLDING: u8 = 3;
pub const INPUT: u8 = 4;

/// The interpreter of the virtual environment `cargo xtask servers` makes.
fn python() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/simcorp/venv/bin/python")
}

fn has_pymodbus() -> bool {
    std::process::Command::new(python())
        .args(["-c", "import pymodbus"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub struct PymodbusServer {
    pub port: u16,
    /// What the test preset, by function and address: given to the server again on a restart.
    presets: BTreeMap<u8, BTreeMap<u16, u16>>,
    child: Option<Running>,
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl PymodbusServer {
    /// Starts a server, or returns `None` (after saying so loudly) when pymodbus is not
    /// installed and this is not CI; under `CI=true` a missing pymodbus panics.
    pub async fn start(test: &str) -> Option<Self> {
        if !has_pymodbus() {
            let msg = format!(
                "pymodbus is not installed at {}; `cargo xtask servers` installs it",
                python().display()
            );
            if crate::ci() {
                panic!("CI=true: {msg}");
            }
            let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {msg} ***\n");
            return None;
        }
        let mut me = PymodbusServer {
            port: free_port(),
            presets: BTreeMap::new(),
            child: None,
        };
        me.spawn().await;
        Some(me)
    }

    /// `host:port`, as a driver's `address`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let presets: BTreeMap<String, BTreeMap<String, u16>> = self
            .presets
            .iter()
            .map(|(f, words)| {
                (
                    f.to_string(),
                    words.iter().map(|(a, v)| (a.to_string(), *v)).collect(),
                )
            })
            .collect();
        let mut child = Command::new(python())
            .arg("-c")
            .arg(SCRIPT)
            .arg(self.port.to_string())
            .arg(serde_json::to_string(&presets).unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting pymodbus");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        self.child = Some(Running {
            child,
            stdin,
            stdout,
        });
        wait_for_port(self.port, Duration::from_secs(20)).await;
    }

    async fn ask(&mut self, line: String) -> String {
        let running = self.child.as_mut().expect("the Modbus server is stopped");
        running.stdin.write_all(line.as_bytes()).await.unwrap();
        running.stdin.write_all(b"\n").await.unwrap();
        running.stdin.flush().await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), running.stdout.next_line())
            .await
            .expect("the Modbus server did not answer")
            .unwrap()
            .expect("the Modbus server exited");
        assert!(!answer.starts_with("error"), "{line}: {answer}");
        answer
    }

    /// Sets registers from `address` on (function [`HOLDING`] or [`INPUT`]).
    pub async fn set(&mut self, function: u8, address: u16, words: &[u16]) {
        for (i, w) in words.iter().enumerate() {
            self.presets
                .entry(function)
                .or_default()
                .insert(address + i as u16, *w);
        }
        let words: Vec<String> = words.iter().map(u16::to_string).collect();
        self.ask(format!("set {function} {address} {}", words.join(" ")))
            .await;
    }

    /// Changes a register for the next start only (while the server is stopped).
    pub fn set_preset(&mut self, function: u8, address: u16, word: u16) {
        self.presets
            .entry(function)
            .or_default()
            .insert(address, word);
    }

    /// Reads `count` registers from `address`, as the server holds them.
    pub async fn get(&mut self, function: u8, address: u16, count: u16) -> Vec<u16> {
        self.ask(format!("get {function} {address} {count}"))
            .await
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect()
    }

    /// Kills the server: its clients see the connection drop and the port refuse.
    pub async fn stop(&mut self) {
        if let Some(mut r) = self.child.take() {
            let _ = r.child.kill().await;
        }
    }

    /// Starts it again on the same port, with the registers preset so far.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }
}
