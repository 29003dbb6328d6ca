//! `sim-publisher`: simulated roasters as their own process (one container, one Deployment).

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = sim_publisher::Config::load(&kit::config::Sources::default())?;
    kit::logging::init(&config.log);
    let addr = config.sim_publisher.http_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    sim_publisher::run(config, listener, kit::shutdown::signal()).await?;
    Ok(())
}
