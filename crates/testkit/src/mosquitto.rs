use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{free_port, wait_for_port, workspace_root};

/// A Mosquitto of our own, started from the project's `compose/mosquitto/mosquitto.conf` on a
/// free port with its persistence in a temporary directory. For tests that depend on the
/// project's broker limits or must kill/restart the broker. Killed on drop.
#[derive(Debug)]
pub struct PrivateMosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateMosquitto {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut me = PrivateMosquitto {
            port: free_port(),
            dir,
            child: None,
        };
        me.write_config();
        me.spawn().await;
        me
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The project's config with only the listener, persistence path and log file changed.
    fn write_config(&self) {
        let base =
            std::fs::read_to_string(workspace_root().join("compose/mosquitto/mosquitto.conf"))
                .unwrap();
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut conf = String::new();
        for line in base.lines() {
            let key = line.split_whitespace().next().unwrap_or("");
            match key {
                "listener" => conf.push_str(&format!("listener {} 127.0.0.1\n", self.port)),
                "persistence_location" => {
                    conf.push_str(&format!("persistence_location {}/\n", data.display()))
                }
                "log_dest" => conf.push_str(&format!(
                    "log_dest file {}\n",
                    self.dir.path().join("mosquitto.log").display()
                )),
                _ => {
                    conf.push_str(line);
                    conf.push('\n');
                }
            }
        }
        if crate::is_root() {
            // Mosquitto started as root drops to the `mosquitto` user unless told otherwise,
            // and that user cannot write into our temporary directory.
            conf.push_str("user root\n");
        }
        std::fs::write(self.config_path(), conf).unwrap();
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    async fn spawn(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto must be installed (cargo xtask test installs it)");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10)).await;
    }

    /// SIGKILL: the broker loses what it had not yet saved (autosave is every second).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERM and wait: Mosquitto saves its persistent state on the way out.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                let _ = Command::new("kill").arg(pid.to_string()).status().await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        }
    }

    /// Starts it again on the same port with the same persistence directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// The broker's log so far, for assertions and failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}
