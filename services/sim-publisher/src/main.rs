//! `sim-publisher`: simulated roasters as their own process (one container, one Deployment).

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let sources = kit::config::Sources::default();
    kit::runtime::start(&sources)?.block_on(serve(sources))
}

async fn serve(sources: kit::config::Sources) -> anyhow::Result<()> {
    let config = sim_publisher::Config::load(&sources)?;
    kit::logging::init(&config.log);
    let addr = config.sim_publisher.http_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    sim_publisher::run(config, listener, kit::shutdown::signal()).await?;
    Ok(())
}
