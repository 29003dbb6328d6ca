//! `ingestion`: the ingestion service as its own process (one container, one Deployment).

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let sources = kit::config::Sources::default();
    kit::runtime::start(&sources)?.block_on(serve(sources))
}

async fn serve(sources: kit::config::Sources) -> anyhow::Result<()> {
    let config = ingestion::Config::load(&sources)?;
    kit::logging::init(&config.log);
    let listener = tokio::net::TcpListener::bind(config.ingestion.http_addr)
        .await
        .with_context(|| format!("binding {}", config.ingestion.http_addr))?;
    ingestion::run(config, listener, kit::shutdown::signal()).await?;
    Ok(())
}
