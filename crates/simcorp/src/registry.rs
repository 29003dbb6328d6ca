//! Every service of the platform, in one list: `simcorp serve <name>`, `simcorp up` (start
//! order, readiness gate, banner) and the platform's configuration sections all come from here.
//! Adding a service is its crate and one line below.

use kit::service::Entry;

/// In start order: `simcorp up` starts each once the ones before it are ready, and stops them in
/// reverse. sim-publisher comes after the consumers (ingestion, event-inference, analytics) because a
/// broker drops what is published before anyone subscribed; driver-bridge after command, whose
/// signing key it trusts and where it registers its devices' keys.
pub(crate) const SERVICES: &[Entry] = &[
    Entry::of::<sim_twin::SimTwin>(),
    Entry::of::<ingestion::Ingestion>(),
    Entry::of::<event_inference::EventInference>(),
    Entry::of::<analytics::Analytics>(),
    Entry::of::<company_kernel::CompanyKernel>(),
    Entry::of::<command::CommandService>(),
    Entry::of::<driver_bridge::DriverBridge>(),
    Entry::of::<sim_publisher::SimPublisher>(),
];

pub(crate) fn find(name: &str) -> Option<&'static Entry> {
    SERVICES.iter().find(|e| e.name == name)
}

/// The configuration section of every service.
pub(crate) fn sections() -> Vec<&'static str> {
    SERVICES.iter().map(|e| e.section).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use serde::Deserialize;

    use super::*;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// The crates under `services/`: what a new service adds first.
    fn service_crates() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(workspace().join("services"))
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter(|entry| entry.path().join("Cargo.toml").is_file())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[derive(Deserialize)]
    struct Compose {
        services: BTreeMap<String, ComposeService>,
    }

    #[derive(Deserialize)]
    struct ComposeService {
        #[serde(default)]
        command: Vec<String>,
        #[serde(default)]
        ports: Vec<String>,
    }

    #[test]
    fn every_service_crate_is_registered_composed_and_mapped() {
        let registered: Vec<&str> = SERVICES.iter().map(|e| e.name).collect();
        let text = std::fs::read_to_string(workspace().join("compose/docker-compose.yml")).unwrap();
        let compose: Compose = serde_saphyr::from_str(&text).unwrap();
        let codemap = std::fs::read_to_string(workspace().join("docs/ARCHITECTURE.md")).unwrap();
        for name in service_crates() {
            assert!(
                registered.contains(&name.as_str()),
                "services/{name} is not in crates/simcorp/src/registry.rs: add `Entry::of::<…>()`"
            );
            let entry = find(&name).unwrap();
            let composed = compose.services.get(&name).unwrap_or_else(|| {
                panic!("services/{name} has no service in compose/docker-compose.yml")
            });
            assert_eq!(
                composed.command,
                ["serve", name.as_str()],
                "compose service {name} must run `simcorp serve {name}`"
            );
            let port = format!("127.0.0.1:{0}:{0}", entry.port);
            assert!(
                composed.ports.contains(&port),
                "compose service {name} must publish its port as \"{port}\", has {:?}",
                composed.ports
            );
            assert!(
                codemap.contains(&format!("### `services/{name}`")),
                "docs/ARCHITECTURE.md has no `### `services/{name}`` section"
            );
        }
        for name in registered {
            assert!(
                service_crates().iter().any(|c| c == name),
                "the registry names {name}, which is not a crate under services/"
            );
        }
    }

    #[test]
    fn names_sections_and_ports_are_unique() {
        for (i, a) in SERVICES.iter().enumerate() {
            assert_eq!(a.section, a.name.replace('-', "_"), "{}", a.name);
            for b in &SERVICES[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.port, b.port, "{} and {}", a.name, b.name);
            }
        }
    }
}
