//! Spawning the service and talking to it.

use std::net::SocketAddr;

use sim_twin::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running sim-twin and an HTTP client.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), sim_twin::Error>>>,
}

impl TestApp {
    /// Starts the service in this process on a free port.
    pub async fn spawn(change: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = Config::default();
        config.sim_twin.http_addr = "127.0.0.1:0".parse().unwrap();
        config.log.format = kit::logging::LogFormat::Text;
        change(&mut config);
        kit::logging::init(&config.log);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(sim_twin::run(config, listener, async move {
            let _ = stopped.await;
        }));
        TestApp {
            addr,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, String) {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// POSTs `body` as it is (not necessarily valid JSON).
    pub async fn post(&self, path: &str, body: impl Into<String>) -> (reqwest::StatusCode, String) {
        let resp = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// Asks the service to stop and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}
