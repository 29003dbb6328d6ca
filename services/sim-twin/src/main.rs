//! `sim-twin`: the simulation service as its own process (one container, one Deployment).

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = sim_twin::Config::load(&kit::config::Sources::default())?;
    kit::logging::init(&config.log);
    let listener = tokio::net::TcpListener::bind(config.sim_twin.http_addr)
        .await
        .with_context(|| format!("binding {}", config.sim_twin.http_addr))?;
    sim_twin::run(config, listener, kit::shutdown::signal()).await?;
    Ok(())
}
