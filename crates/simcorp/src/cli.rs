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
    /// Apply every domain's database migrations (to PostgreSQL when configured, else to each
    /// domain's SQLite file under the data directory).
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

/// What `simcorp migrate` reads: the store's own sections, whichever services will use them.
/// Other sections of a shared file are the services' and are ignored here.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default)]
struct MigrateConfig {
    /// Where the SQLite files live when there is no PostgreSQL.
    data_dir: PathBuf,
    postgres: store::PostgresConfig,
    sqlite: store::SqliteConfig,
}

impl Default for MigrateConfig {
    fn default() -> Self {
        MigrateConfig {
            // The same default as every service's, so that both find the same files.
            data_dir: PathBuf::from("./data"),
            postgres: store::PostgresConfig::default(),
            sqlite: store::SqliteConfig::default(),
        }
    }
}

impl kit::config::Validate for MigrateConfig {
    fn validate(&self) -> Result<(), String> {
        if self.data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty".into());
        }
        Ok(())
    }
}

/// Applies every domain's migrations: to PostgreSQL when configured, else to each domain's
/// SQLite file under `data_dir`. Prints one line per domain.
async fn migrate(sources: Sources) -> anyhow::Result<()> {
    let config: MigrateConfig = kit::config::load(&sources)?;
    let lines: Vec<String> = match &config.postgres.url {
        Some(url) => {
            let pool = store::postgres_pool(url.expose_secret(), &config.postgres)?;
            let migrated = store::migrate_all(store::MigrationTarget::Postgres(&pool)).await;
            pool.close().await;
            let migrated = migrated.context("migrating PostgreSQL")?;
            migrated
                .iter()
                .map(|m| format!("PostgreSQL: {}", describe(m)))
                .collect()
        }
        None => {
            let target = store::MigrationTarget::Sqlite {
                dir: &config.data_dir,
                config: &config.sqlite,
            };
            let migrated = store::migrate_all(target)
                .await
                .with_context(|| format!("migrating SQLite under {}", config.data_dir.display()))?;
            let file = |domain: &str| {
                store::domains()
                    .iter()
                    .find(|d| d.name() == domain)
                    .map_or("?", |d| d.sqlite_file())
            };
            migrated
                .iter()
                .map(|m| {
                    let path = config.data_dir.join(file(m.domain));
                    format!("SQLite {}: {}", path.display(), describe(m))
                })
                .collect()
        }
    };
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// `telemetry: applied 1, 2 (now at version 2)` or `telemetry: up to date (version 2)`.
fn describe(m: &store::Migrated) -> String {
    let version = m
        .version
        .map_or_else(|| "no migrations".to_owned(), |v| format!("version {v}"));
    if m.applied.is_empty() {
        return format!("{}: up to date ({version})", m.domain);
    }
    let applied: Vec<String> = m.applied.iter().map(i64::to_string).collect();
    format!(
        "{}: applied {} (now at {version})",
        m.domain,
        applied.join(", ")
    )
}
