//! The platform a roast test runs against: a private broker (the project's config), ingestion
//! on a fresh PostgreSQL database, event-inference, and analytics reading the same database.

use analytics::Analytics;
use event_inference::EventInference;
use ingestion::Ingestion;
use testkit::{PrivateMosquitto, Server, TestService};

pub(crate) struct Platform {
    pub(crate) broker: PrivateMosquitto,
    pub(crate) ingestion: TestService<Ingestion>,
    pub(crate) _events: TestService<EventInference>,
}

pub(crate) fn require(test: &str) -> bool {
    testkit::require(Server::Postgres, test)
}

impl Platform {
    pub(crate) async fn start() -> Platform {
        let broker = PrivateMosquitto::start().await;
        let ingestion = testkit::spawn::<Ingestion>()
            .mqtt(&broker.url())
            .postgres()
            .await
            .start()
            .await;
        let events = testkit::spawn::<EventInference>()
            .mqtt(&broker.url())
            .set("event_inference.catch_up_url", ingestion.url(""))
            .start()
            .await;
        Platform {
            broker,
            ingestion,
            _events: events,
        }
    }

    /// analytics on the platform's database (its profiles there too).
    pub(crate) async fn analytics(&self) -> TestService<Analytics> {
        let url = self.ingestion.database().unwrap().url.clone();
        testkit::spawn::<Analytics>()
            .mqtt(&self.broker.url())
            .postgres_url(&url)
            .start()
            .await
    }
}

/// `method path` with a JSON body: status and body.
pub(crate) async fn send(
    method: reqwest::Method,
    url: String,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (reqwest::StatusCode, String) {
    let resp = reqwest::Client::new()
        .request(method, url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.text().await.unwrap())
}
