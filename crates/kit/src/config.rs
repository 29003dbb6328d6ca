//! Typed configuration: defaults, then a TOML file, then the environment, then explicit overrides
//! (command-line flags); each layer replaces what the previous one set.
//!
//! Environment variables are `SIMCORP_<SECTION>_<KEY>` for a key in a `[section]` of the file,
//! e.g. `SIMCORP_POSTGRES_URL` sets `[postgres] url`, and `SIMCORP_<KEY>` for a top-level key.
//! Appending `_FILE` reads the value from that file instead (`SIMCORP_POSTGRES_URL_FILE=
//! /run/secrets/pg`), which is how Compose and Kubernetes hand out secrets. Variables naming a
//! section this program does not have are ignored, because one environment is often shared by
//! several services; an unknown key inside a known section is an error, because it is a typo.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The environment variable prefix of every setting.
pub const ENV_PREFIX: &str = "SIMCORP_";

/// Every section of the platform's configuration. One file (and one environment) may configure
/// all services, so a service ignores the sections of others — but a section that belongs to no
/// service at all is a typo, and is reported as one.
pub const PLATFORM_SECTIONS: &[&str] = &[
    "log",
    "runtime",
    "mqtt",
    "postgres",
    "sqlite",
    "store",
    "redis",
    "pipeline",
    "broker",
    "ingestion",
    "sim_twin",
    "sim_publisher",
    "driver_bridge",
    "event_inference",
    "analytics",
    "eval",
    "report_worker",
    "dispatcher",
    "company_kernel",
    "command",
    "loadtest",
];

/// Top-level settings shared by the whole platform (not in a section).
pub const PLATFORM_KEYS: &[&str] = &["data_dir"];

/// Where configuration comes from, beyond defaults and the environment.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Defaults of the command being run (e.g. `simcorp up` binds to localhost), as dotted keys,
    /// applied above the types' own defaults and below everything else.
    pub defaults: Vec<(String, Value)>,
    /// A TOML file; when `None`, `SIMCORP_CONFIG` may name one.
    pub file: Option<PathBuf>,
    /// Explicit overrides (command-line flags) as dotted keys, applied last.
    pub overrides: Vec<(String, Value)>,
}

impl Sources {
    /// Adds an override such as `("postgres.url", url)`.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.overrides.push((key.to_owned(), value.into()));
        self
    }

    /// Adds a command default such as `("ingestion.http_addr", "127.0.0.1:4001")`.
    pub fn default_to(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.defaults.push((key.to_owned(), value.into()));
        self
    }
}

/// Checks of a loaded configuration that types alone cannot express.
pub trait Validate {
    /// Returns a message naming the setting and what is wrong with it.
    fn validate(&self) -> Result<(), String>;
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("secret file {path} (from {var}): {source}")]
    SecretFile {
        var: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Loads and validates `T`.
///
/// `T::default()` must be a configuration that works locally with no servers installed; its
/// serialized form also tells which sections exist (secret fields are `skip_serializing`).
pub fn load<T>(sources: &Sources) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    let figment = figment::<T>(sources)?;
    let config: T = figment.extract().map_err(Box::new)?;
    config.validate().map_err(ConfigError::Invalid)?;
    Ok(config)
}

/// The layered figment for `T`, for callers that extract several sections themselves.
pub fn figment<T: Serialize + Default>(sources: &Sources) -> Result<Figment, ConfigError> {
    build::<T>(sources, std::env::vars())
}

fn build<T: Serialize + Default>(
    sources: &Sources,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<Figment, ConfigError> {
    let shape = Value::serialize(T::default()).map_err(Box::new)?;
    let mut figment = Figment::new();
    figment = figment.merge(Layer {
        name: "the defaults of this command",
        pairs: &sources.defaults,
    });
    let file = sources
        .file
        .clone()
        .or_else(|| std::env::var_os(format!("{ENV_PREFIX}CONFIG")).map(PathBuf::from));
    if let Some(path) = file {
        check_file(&path)?;
        figment = figment.merge(Toml::file_exact(&path));
    }
    figment = figment.merge(Environment::for_shape(&shape, vars)?);
    figment = figment.merge(Layer {
        name: "command-line flags",
        pairs: &sources.overrides,
    });
    check_top_level(&figment, &shape)?;
    Ok(figment)
}

/// Rejects top-level keys that neither this program nor any other part of the platform has.
fn check_top_level(figment: &Figment, shape: &Value) -> Result<(), ConfigError> {
    let known = |key: &str| {
        PLATFORM_SECTIONS.contains(&key)
            || PLATFORM_KEYS.contains(&key)
            || shape.as_dict().is_some_and(|d| d.contains_key(key))
    };
    let data = figment.data().map_err(Box::new)?;
    if let Some(key) = data.values().flat_map(|d| d.keys()).find(|k| !known(k)) {
        let source = figment
            .find_metadata(key)
            .map(|m| format!(" (from {})", m.name))
            .unwrap_or_default();
        return Err(ConfigError::Invalid(format!(
            "unknown setting `{key}`{source}; sections are: {}",
            PLATFORM_SECTIONS.join(", ")
        )));
    }
    Ok(())
}

/// Extracts one section of `figment` (its defaults when the section is absent) — for commands
/// that run several services from one configuration.
pub fn section<T: DeserializeOwned + Default>(
    figment: &Figment,
    name: &str,
) -> Result<T, ConfigError> {
    if figment.find_value(name).is_err() {
        return Ok(T::default());
    }
    figment
        .extract_inner(name)
        .map_err(|e| ConfigError::Load(Box::new(e)))
}

fn check_file(path: &Path) -> Result<(), ConfigError> {
    // figment would treat a missing file as an empty one only with `Toml::file`; with
    // `file_exact` it fails, but this message says plainly which file and why.
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Dotted `key = value` pairs as a named figment provider, so errors say where a value came from.
struct Layer<'a> {
    name: &'static str,
    pairs: &'a [(String, Value)],
}

impl Provider for Layer<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        // Untagged values in figment's default profile: merge order alone decides which layer
        // wins (a `(key, value)` tuple would land in the global profile and beat files and the
        // environment), and figment attributes each value to this layer.
        let mut dict = Dict::new();
        for (key, value) in self.pairs {
            if let Value::Dict(_, nested) = figment::util::nest(key, value.clone()) {
                merge_into(&mut dict, nested);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Deep-merges `from` into `into`, later values winning.
fn merge_into(into: &mut Dict, from: Dict) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, incoming)) => {
                merge_into(existing, incoming)
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// The `SIMCORP_*` environment as a figment provider.
struct Environment {
    dict: Dict,
}

impl Environment {
    fn for_shape(
        shape: &Value,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (mut sections, mut scalars) = (Vec::new(), Vec::new());
        if let Some(dict) = shape.as_dict() {
            for (key, value) in dict {
                if value.as_dict().is_some() {
                    sections.push(key.clone());
                } else {
                    scalars.push(key.clone());
                }
            }
        }
        for key in PLATFORM_KEYS {
            if !scalars.iter().any(|s| s == key) {
                scalars.push((*key).to_owned());
            }
        }
        for section in PLATFORM_SECTIONS {
            if !sections.iter().any(|s| s == section) {
                sections.push((*section).to_owned());
            }
        }
        // Longest first, so `sim_publisher_x` is not taken for a `sim` section.
        sections.sort_by_key(|s| std::cmp::Reverse(s.len()));

        let mut dict = Dict::new();
        for (var, raw) in vars {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if rest == "CONFIG" {
                continue;
            }
            let (name, from_file) = match rest.strip_suffix("_FILE") {
                Some(name) => (name.to_ascii_lowercase(), true),
                None => (rest.to_ascii_lowercase(), false),
            };
            let value = if from_file {
                let text =
                    std::fs::read_to_string(&raw).map_err(|source| ConfigError::SecretFile {
                        var: var.clone(),
                        path: raw.clone().into(),
                        source,
                    })?;
                // Secret files conventionally end with a newline that is not part of the secret.
                Value::from(text.trim_end_matches(['\n', '\r']).to_owned())
            } else {
                raw.parse::<Value>().unwrap_or_else(|never| match never {})
            };
            if scalars.contains(&name) {
                dict.insert(name, value);
            } else if let Some(section) = sections.iter().find(|s| {
                name.len() > s.len()
                    && name.starts_with(s.as_str())
                    && name.as_bytes()[s.len()] == b'_'
            }) {
                let key = name[section.len() + 1..].to_owned();
                let entry = dict
                    .entry(section.clone())
                    .or_insert_with(|| Value::from(Dict::new()));
                if let Value::Dict(_, inner) = entry {
                    inner.insert(key, value);
                }
            }
        }
        Ok(Environment { dict })
    }
}

impl Provider for Environment {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment")
            .interpolater(|_, keys| format!("{ENV_PREFIX}{}", keys.join("_").to_ascii_uppercase()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::{ExposeSecret, SecretString};
    use serde::Deserialize;

    use super::*;

    /// Like a service's config: strict inside its sections, tolerant of other services' sections.
    #[derive(Debug, Deserialize, Serialize)]
    #[serde(default)]
    struct Demo {
        data_dir: String,
        postgres: Pg,
        sim_publisher: Section,
        sim: Section,
    }

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(default, deny_unknown_fields)]
    struct Pg {
        #[serde(skip_serializing)]
        url: Option<SecretString>,
        max_connections: u32,
    }

    #[derive(Debug, Default, Deserialize, Serialize)]
    #[serde(default, deny_unknown_fields)]
    struct Section {
        rate: u32,
    }

    impl Default for Demo {
        fn default() -> Self {
            Demo {
                data_dir: "./data".into(),
                postgres: Pg::default(),
                sim_publisher: Section::default(),
                sim: Section::default(),
            }
        }
    }

    impl Default for Pg {
        fn default() -> Self {
            Pg {
                url: None,
                max_connections: 8,
            }
        }
    }

    impl Validate for Demo {
        fn validate(&self) -> Result<(), String> {
            if self.postgres.max_connections == 0 {
                return Err("postgres.max_connections must be at least 1".into());
            }
            Ok(())
        }
    }

    fn load_with(vars: &[(&str, &str)], sources: &Sources) -> Result<Demo, ConfigError> {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let demo: Demo = build::<Demo>(sources, vars)?.extract().map_err(Box::new)?;
        demo.validate().map_err(ConfigError::Invalid)?;
        Ok(demo)
    }

    fn file(text: &str) -> (tempfile::TempDir, Sources) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("simcorp.toml");
        std::fs::write(&path, text).unwrap();
        let sources = Sources {
            file: Some(path),
            ..Sources::default()
        };
        (dir, sources)
    }

    #[test]
    fn a_shared_file_may_configure_other_services_but_not_unknown_sections() {
        let (_dir, sources) = file("[postgres]\nmax_connections = 3\n[broker]\nmax_queued = 9\n");
        assert_eq!(
            load_with(&[], &sources).unwrap().postgres.max_connections,
            3
        );
        let (_dir, sources) = file("[postgress]\nmax_connections = 3\n");
        let err = load_with(&[], &sources).unwrap_err().to_string();
        assert!(err.contains("unknown setting `postgress`"), "{err}");
        // A platform-wide key this program does not use is fine; where a mistake came from is
        // named.
        let sources = Sources::default().set("log", 3).set("bogus", 1);
        let err = load_with(&[], &sources).unwrap_err().to_string();
        assert!(err.contains("`bogus` (from command-line flags)"), "{err}");
    }

    #[test]
    fn command_defaults_sit_below_files_and_environment() {
        let sources = Sources::default().default_to("data_dir", "/from/command");
        assert_eq!(load_with(&[], &sources).unwrap().data_dir, "/from/command");
        let d = load_with(&[("SIMCORP_DATA_DIR", "/from/env")], &sources).unwrap();
        assert_eq!(d.data_dir, "/from/env");
    }

    #[test]
    fn defaults_work_without_anything() {
        let d = load_with(&[], &Sources::default()).unwrap();
        assert_eq!(d.postgres.max_connections, 8);
        assert!(d.postgres.url.is_none());
    }

    #[test]
    fn environment_maps_sections_and_top_level_keys() {
        let d = load_with(
            &[
                ("SIMCORP_POSTGRES_URL", "postgres://db/x"),
                ("SIMCORP_POSTGRES_MAX_CONNECTIONS", "3"),
                ("SIMCORP_DATA_DIR", "/var/lib/simcorp"),
                ("SIMCORP_SIM_PUBLISHER_RATE", "5"),
                ("SIMCORP_SIM_RATE", "7"),
                // A section this program does not have: ignored, the environment is shared.
                ("SIMCORP_ANALYTICS_WINDOW", "9"),
                ("OTHER_VAR", "x"),
            ],
            &Sources::default(),
        )
        .unwrap();
        assert_eq!(d.postgres.url.unwrap().expose_secret(), "postgres://db/x");
        assert_eq!(d.postgres.max_connections, 3);
        assert_eq!(d.data_dir, "/var/lib/simcorp");
        assert_eq!((d.sim_publisher.rate, d.sim.rate), (5, 7));
    }

    #[test]
    fn secrets_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg");
        std::fs::write(&path, "postgres://secret@db/x\n").unwrap();
        let d = load_with(
            &[("SIMCORP_POSTGRES_URL_FILE", path.to_str().unwrap())],
            &Sources::default(),
        )
        .unwrap();
        assert_eq!(
            d.postgres.url.unwrap().expose_secret(),
            "postgres://secret@db/x"
        );
        let err = load_with(
            &[("SIMCORP_POSTGRES_URL_FILE", "/nonexistent/x")],
            &Sources::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("SIMCORP_POSTGRES_URL_FILE"),
            "{err}"
        );
    }

    #[test]
    fn file_then_environment_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("simcorp.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\n[postgres]\nmax_connections = 4\n",
        )
        .unwrap();
        let sources = Sources {
            file: Some(file),
            ..Sources::default()
        };
        let d = load_with(&[("SIMCORP_POSTGRES_MAX_CONNECTIONS", "5")], &sources).unwrap();
        assert_eq!(
            (d.data_dir.as_str(), d.postgres.max_connections),
            ("/from/file", 5)
        );
        let d = load_with(
            &[("SIMCORP_POSTGRES_MAX_CONNECTIONS", "5")],
            &sources.clone().set("postgres.max_connections", 6),
        )
        .unwrap();
        assert_eq!(d.postgres.max_connections, 6);
    }

    #[test]
    fn mistakes_are_reported_with_their_source() {
        let err = load_with(
            &[("SIMCORP_POSTGRES_MAX_CONECTIONS", "5")],
            &Sources::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_conections"), "{err}");
        let err = load_with(
            &[("SIMCORP_POSTGRES_MAX_CONNECTIONS", "many")],
            &Sources::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("SIMCORP_POSTGRES_MAX_CONNECTIONS"), "{err}");
        let err = load_with(
            &[("SIMCORP_POSTGRES_MAX_CONNECTIONS", "0")],
            &Sources::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("at least 1"), "{err}");
    }
}
