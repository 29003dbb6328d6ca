//! A service's real binary as a child process, configured through the environment as a
//! container is: for drills that kill it, terminate it, or measure its memory.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// A running service binary with its HTTP API on 127.0.0.1.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub http: String,
}

impl ServiceProcess {
    /// Starts `binary` (a test's `env!("CARGO_BIN_EXE_<name>")`) with `SIMCORP_<SECTION>_HTTP_ADDR`
    /// on `port` and `env` on top, and waits (at most 30 s) until it is ready.
    pub async fn start(binary: &str, section: &str, port: u16, env: &[(&str, &str)]) -> Self {
        let child = Command::new(binary)
            .env(
                format!("SIMCORP_{}_HTTP_ADDR", section.to_ascii_uppercase()),
                format!("127.0.0.1:{port}"),
            )
            .env("SIMCORP_LOG_LEVEL", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let process = ServiceProcess {
            child,
            http: format!("http://127.0.0.1:{port}"),
        };
        let ready = format!("{}/ready", process.http);
        crate::eventually(
            Duration::from_secs(30),
            &format!("{binary} to be ready"),
            || {
                let ready = ready.clone();
                async move {
                    let resp = reqwest::get(&ready).await.ok()?;
                    resp.status().is_success().then_some(())
                }
            },
        )
        .await;
        process
    }

    /// The most memory the process has had resident so far (the kernel's `VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// SIGKILL: no drain, no goodbye to the broker or the database.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let status = self.child.wait().await.unwrap();
        assert!(!status.success(), "the process survived kill -9: {status}");
    }

    /// SIGTERM, then waits (at most 35 s: the 30 s drain deadline and the disconnect); asserts a
    /// clean exit and returns how long the process took.
    pub async fn terminate(mut self) -> Duration {
        let pid = self.child.id().unwrap();
        let started = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap()
            .success();
        assert!(ok);
        let status = tokio::time::timeout(Duration::from_secs(35), self.child.wait())
            .await
            .expect("the process did not exit within 35 s of SIGTERM")
            .unwrap();
        assert!(status.success(), "the process exited with {status}");
        started.elapsed()
    }
}
