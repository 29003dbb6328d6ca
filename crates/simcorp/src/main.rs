//! `simcorp`: the platform's command.
//!
//! - `simcorp up` runs every service in one process on embedded defaults — an in-process MQTT
//!   broker on 127.0.0.1:1884 (never colliding with a system broker on 1883), SQLite under
//!   `./data/`, the in-process cache — or on real servers given with `--mqtt`, `--postgres`,
//!   `--redis` (or `SIMCORP_MQTT_URL`, …). It is what a developer runs.
//! - `simcorp serve <service>` runs one service, as a container does.
//! - `simcorp migrate` applies the database migrations.
//!
//! Each service is a library implementing `kit::service::Service`; this command only holds the
//! registry of them (`registry::SERVICES`) and composes their `run`s.

mod cli;
mod registry;
mod up;

use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    // Sized before anything runs on it, from the same file/environment/flags as the services.
    kit::runtime::start(&cli.sources())?.block_on(cli.run())
}
