//! `ingestion`: the ingestion service as its own process (one container, one Deployment).

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ingestion::Config::load(&kit::config::Sources::default())?;
    kit::logging::init(&config.log);
    let listener = tokio::net::TcpListener::bind(config.ingestion.http_addr)
        .await
        .with_context(|| format!("binding {}", config.ingestion.http_addr))?;
    ingestion::run(config, listener, kit::shutdown::signal()).await?;
    Ok(())
}
