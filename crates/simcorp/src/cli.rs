use std::path::PathBuf;

use anyhow::Context as _;
use kit::config::Sources;
use secrecy::ExposeSecret as _;

#[derive(Debug, clap::Parser)]
#[command(
    name = "simcorp",
    version,
    about = "Sim-Corp roaster telemetry platform"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the whole platform in this process (embedded broker, SQLite, in-process cache
    /// unless real servers are given).
    Up {
        #[command(flatten)]
        options: Options,
        /// Do not start the three simulated roasters (e.g. to measure with the load harness).
        #[arg(long)]
        no_fleet: bool,
    },
    /// Run one service, as a container would.
    Serve {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(
            crate::registry::SERVICES.iter().map(|e| e.name)
        ))]
        service: String,
        #[command(flatten)]
        options: Options,
    },
    /// Apply the database migrations (PostgreSQL when configured, else the SQLite store).
    Migrate(Options),
}

/// Where the servers are. Each flag overrides the configuration file and `SIMCORP_*` variables.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Configuration file (TOML) [env: SIMCORP_CONFIG]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// MQTT broker, e.g. mqtt://127.0.0.1:1883 [env: SIMCORP_MQTT_URL]
    #[arg(long, value_name = "URL")]
    mqtt: Option<String>,
    /// PostgreSQL, e.g. postgres://user@host/db [env: SIMCORP_POSTGRES_URL; prefer
    /// SIMCORP_POSTGRES_URL_FILE for URLs with passwords]
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Redis, e.g. redis://127.0.0.1:6379 [env: SIMCORP_REDIS_URL]
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Where SQLite files live [env: SIMCORP_DATA_DIR] [default: ./data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format [env: SIMCORP_LOG_FORMAT]
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

impl Options {
    pub(crate) fn sources(&self) -> Sources {
        let mut s = Sources {
            file: self.config.clone(),
            // This command knows the whole platform: a section no service has is a mistake.
            services: Some(crate::registry::sections()),
            ..Sources::default()
        };
        if let Some(v) = &self.mqtt {
            s = s.set("mqtt.url", v.as_str());
        }
        if let Some(v) = &self.postgres {
            s = s.set("postgres.url", v.as_str());
        }
        if let Some(v) = &self.redis {
            s = s.set("redis.url", v.as_str());
        }
        if let Some(v) = &self.data_dir {
            s = s.set("data_dir", v.to_string_lossy().as_ref());
        }
        if let Some(v) = self.log_format {
            s = s.set(
                "log.format",
                match v {
                    LogFormat::Json => "json",
                    LogFormat::Text => "text",
                },
            );
        }
        s
    }
}

impl Cli {
    /// Where the chosen command's configuration comes from.
    pub(crate) fn sources(&self) -> Sources {
        match &self.command {
            Command::Up { options, .. } | Command::Serve { options, .. } => options.sources(),
            Command::Migrate(options) => options.sources(),
        }
    }

    pub(crate) async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Up { options, no_fleet } => crate::up::run(options.sources(), !no_fleet).await,
            Command::Serve { service, options } => {
                let entry = crate::registry::find(&service)
                    .with_context(|| format!("no service named {service:?}"))?;
                Ok(entry.serve(&options.sources()).await?)
            }
            Command::Migrate(options) => migrate(options.sources()).await,
        }
    }
}

async fn migrate(sources: Sources) -> anyhow::Result<()> {
    // Ingestion's configuration names every store setting (and its SQLite file) there is today.
    let config: ingestion::Config = kit::config::load(&sources)?;
    match &config.postgres.url {
        Some(url) => {
            let pg = store::PgStore::connect(url.expose_secret(), &config.postgres)?;
            pg.migrate().await.context("migrating PostgreSQL")?;
            println!("PostgreSQL: migrations applied");
        }
        None => {
            let path = config.sqlite_path();
            // Opening the SQLite store applies its migrations.
            store::SqliteStore::open(&path, &config.sqlite)
                .await
                .with_context(|| format!("migrating {}", path.display()))?;
            println!("SQLite {}: migrations applied", path.display());
        }
    }
    Ok(())
}
