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

/// The sections of the platform's configuration that belong to no one service: those of the
/// shared crates (`[mqtt]`, `[postgres]`, …), the process (`[log]`, `[otel]`, `[runtime]`), the embedded
/// broker of `simcorp up` and the load harness. One file (and one environment) may configure all
/// services, so every program accepts these whether it reads them or not. Each service's own
/// section comes from the service itself (`kit::service::Spec::section`), and the list of all
/// of them from the `simcorp` command's registry ([`Sources::services`]).
pub const SHARED_SECTIONS: &[&str] = &[
    "log", "otel", "runtime", "mqtt", "postgres", "sqlite", "store", "redis", "pipeline", "broker",
    "loadtest", "hsm",
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
    /// The sections of every service of the platform, when the caller knows them (the `simcorp`
    /// command does, from its registry). Then a top-level section that is neither shared nor one
    /// of these is an error. A service's own binary knows only its own section: another one is
    /// taken for another service's and ignored, unless it is a near miss of a name this program
    /// reads (`[postgress]`), which is an error too.
    pub services: Option<Vec<&'static str>>,
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
    figment = figment.merge(Environment::for_shape(
        &shape,
        vars,
        sources.services.as_deref(),
    )?);
    figment = figment.merge(Layer {
        name: "command-line flags",
        pairs: &sources.overrides,
    });
    check_top_level(&figment, &shape, sources.services.as_deref())?;
    Ok(figment)
}

/// Rejects top-level keys that neither this program nor any other part of the platform has (see
/// [`Sources::services`] for what a program that does not know the whole platform accepts).
fn check_top_level(
    figment: &Figment,
    shape: &Value,
    services: Option<&[&'static str]>,
) -> Result<(), ConfigError> {
    let own: Vec<&str> = shape
        .as_dict()
        .map(|d| d.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let readable: Vec<&str> = SHARED_SECTIONS
        .iter()
        .chain(PLATFORM_KEYS)
        .copied()
        .chain(own.iter().copied())
        .collect();
    let data = figment.data().map_err(Box::new)?;
    for key in data.values().flat_map(|d| d.keys()) {
        let key = key.as_str();
        if readable.contains(&key) || services.is_some_and(|s| s.contains(&key)) {
            continue;
        }
        let source = figment
            .find_metadata(key)
            .map(|m| format!(" (from {})", m.name))
            .unwrap_or_default();
        let message = match services {
            Some(services) => {
                let mut sections: Vec<&str> = SHARED_SECTIONS.to_vec();
                sections.extend(services);
                sections.sort_unstable();
                sections.dedup();
                format!(
                    "unknown setting `{key}`{source}{}; sections are: {}",
                    did_you_mean(key, &sections),
                    sections.join(", ")
                )
            }
            None => match near_miss(key, &readable) {
                Some(near) => format!("unknown setting `{key}`{source}: did you mean `{near}`?"),
                // Another service's section, in a file shared by the platform.
                None => continue,
            },
        };
        return Err(ConfigError::Invalid(message));
    }
    Ok(())
}

/// The known name `key` is most likely a misspelling of: at most two edits away.
fn near_miss<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .filter(|(distance, k)| *distance <= 2 && *distance < k.len())
        .min()
        .map(|(_, k)| k)
}

fn did_you_mean(key: &str, known: &[&str]) -> String {
    near_miss(key, known)
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
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
    /// Maps `SIMCORP_<SECTION>_<KEY>` onto the sections of `shape`, the shared sections and
    /// `services`; within a section `shape` knows, onto its nested tables too
    /// (`SIMCORP_INGESTION_HTTP_ADDR` is `[ingestion.http] addr`).
    fn for_shape(
        shape: &Value,
        vars: impl Iterator<Item = (String, String)>,
        services: Option<&[&'static str]>,
    ) -> Result<Self, ConfigError> {
        let empty = Dict::new();
        let shape = shape.as_dict().unwrap_or(&empty);
        let mut scalars: Vec<&str> = shape
            .iter()
            .filter(|(_, v)| v.as_dict().is_none())
            .map(|(k, _)| k.as_str())
            .collect();
        scalars.extend(PLATFORM_KEYS);
        let mut sections: Vec<(&str, Option<&Dict>)> = shape
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), Some(v.as_dict()?))))
            .collect();
        for section in SHARED_SECTIONS.iter().chain(services.unwrap_or_default()) {
            if !sections.iter().any(|(s, _)| s == section) {
                sections.push((section, None));
            }
        }

        let mut dict = Dict::new();
        for (var, raw) in vars {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if rest == "CONFIG" {
                continue;
            }
            // A setting whose own name ends in `_file` (`[command] tokens_file`, a path) is set
            // by its variable as it stands; only other names read a secret from a file.
            let whole = rest.to_ascii_lowercase();
            let names_a_setting = key_path(&whole, &sections).is_some_and(|p| declared(shape, &p));
            let (name, from_file) = match rest.strip_suffix("_FILE") {
                Some(name) if !names_a_setting => (name.to_ascii_lowercase(), true),
                _ => (whole, false),
            };
            let path = if scalars.contains(&name.as_str()) {
                vec![name]
            } else {
                match key_path(&name, &sections) {
                    Some(path) => path,
                    None => continue,
                }
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
            if let Value::Dict(_, nested) = figment::util::nest(&path.join("."), value) {
                merge_into(&mut dict, nested);
            }
        }
        Ok(Environment { dict })
    }
}

/// Whether `path` is a key of `shape` (the defaults, serialized), table by table.
fn declared(shape: &Dict, path: &[String]) -> bool {
    let Some((key, tables)) = path.split_last() else {
        return false;
    };
    let mut dict = shape;
    for t in tables {
        match dict.get(t).and_then(Value::as_dict) {
            Some(d) => dict = d,
            None => return false,
        }
    }
    dict.contains_key(key)
}

/// Where `name` (`ingestion_http_addr`) goes: the longest table name it starts with (so
/// `sim_publisher_x` is not taken for a `sim` section), then, where the table's shape is known,
/// the longest nested table within it, and so on; the rest is the key.
fn key_path(name: &str, tables: &[(&str, Option<&Dict>)]) -> Option<Vec<String>> {
    let (table, shape) = tables
        .iter()
        .filter(|(t, _)| {
            name.len() > t.len() && name.starts_with(t) && name.as_bytes()[t.len()] == b'_'
        })
        .max_by_key(|(t, _)| t.len())?;
    let rest = &name[table.len() + 1..];
    let nested: Vec<(&str, Option<&Dict>)> = shape
        .map(|d| {
            d.iter()
                .filter_map(|(k, v)| Some((k.as_str(), Some(v.as_dict()?))))
                .collect()
        })
        .unwrap_or_default();
    let mut path = vec![(*table).to_owned()];
    match key_path(rest, &nested) {
        Some(inner) => path.extend(inner),
        None => path.push(rest.to_owned()),
    }
    Some(path)
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
        /// A path that is a setting itself, not a secret (`SIMCORP_SIM_TOKENS_FILE` sets it).
        tokens_file: Option<String>,
        http: Http,
    }

    #[derive(Debug, Default, Deserialize, Serialize)]
    #[serde(default, deny_unknown_fields)]
    struct Http {
        addr: Option<String>,
        request_timeout_secs: u64,
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

    /// What the `simcorp` command passes: it knows every service of the platform.
    fn platform() -> Sources {
        Sources {
            services: Some(vec!["analytics", "sim_publisher", "sim"]),
            ..Sources::default()
        }
    }

    #[test]
    fn a_shared_file_may_configure_other_services_but_not_unknown_sections() {
        let (_dir, f) = file("[postgres]\nmax_connections = 3\n[analytics]\nwindow = 9\n");
        let sources = Sources {
            file: f.file,
            ..platform()
        };
        assert_eq!(
            load_with(&[], &sources).unwrap().postgres.max_connections,
            3
        );
        let (_dir, f) = file("[postgress]\nmax_connections = 3\n");
        let sources = Sources {
            file: f.file,
            ..platform()
        };
        let err = load_with(&[], &sources).unwrap_err().to_string();
        assert!(err.contains("unknown setting `postgress`"), "{err}");
        assert!(err.contains("did you mean `postgres`?"), "{err}");
        // A platform-wide key this program does not use is fine; where a mistake came from is
        // named.
        let sources = platform().set("log", 3).set("bogus", 1);
        let err = load_with(&[], &sources).unwrap_err().to_string();
        assert!(err.contains("`bogus` (from command-line flags)"), "{err}");
    }

    #[test]
    fn a_single_service_ignores_sections_it_does_not_know_but_catches_near_misses() {
        // Without the platform's registry, `[analytics]` may be another service's section.
        let (_dir, sources) = file("[analytics]\nwindow = 9\n[postgres]\nmax_connections = 3\n");
        assert_eq!(
            load_with(&[], &sources).unwrap().postgres.max_connections,
            3
        );
        let (_dir, sources) = file("[postgress]\nmax_connections = 3\n");
        let err = load_with(&[], &sources).unwrap_err().to_string();
        assert!(err.contains("did you mean `postgres`?"), "{err}");
        let err = load_with(&[], &Sources::default().set("data_dirr", "/x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean `data_dir`?"), "{err}");
    }

    #[test]
    fn environment_reaches_nested_tables() {
        let d = load_with(
            &[
                ("SIMCORP_SIM_HTTP_ADDR", "127.0.0.1:9"),
                ("SIMCORP_SIM_HTTP_REQUEST_TIMEOUT_SECS", "4"),
                ("SIMCORP_SIM_RATE", "7"),
            ],
            &Sources::default(),
        )
        .unwrap();
        assert_eq!(d.sim.http.addr.as_deref(), Some("127.0.0.1:9"));
        assert_eq!((d.sim.http.request_timeout_secs, d.sim.rate), (4, 7));
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
    fn a_shared_section_comes_from_the_environment_without_the_service_knowing_it() {
        let vars = [("SIMCORP_OTEL_ENDPOINT", "http://collector:4318")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()));
        let figment = build::<Demo>(&Sources::default(), vars).unwrap();
        let otel: crate::telemetry::OtelConfig = section(&figment, "otel").unwrap();
        assert_eq!(otel.endpoint.as_deref(), Some("http://collector:4318"));
        assert_eq!(otel.sample_ratio, 1.0);
        let off: crate::telemetry::OtelConfig = section(
            &build::<Demo>(&Sources::default(), std::iter::empty()).unwrap(),
            "otel",
        )
        .unwrap();
        assert_eq!(off.endpoint, None);
    }

    #[test]
    fn a_setting_named_file_is_set_by_its_own_variable() {
        let d = load_with(
            &[("SIMCORP_SIM_TOKENS_FILE", "/run/secrets/tokens")],
            &platform(),
        )
        .unwrap();
        assert_eq!(d.sim.tokens_file.as_deref(), Some("/run/secrets/tokens"));
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
