//! Every service of the platform, in one list: `simcorp serve <name>`, `simcorp up` (start
//! order, readiness gate, banner) and the platform's configuration sections all come from here.
//! Adding a service is its crate and one line below.

use kit::service::Entry;

/// In start order: `simcorp up` starts each once the ones before it are ready, and stops them in
/// reverse. sim-publisher comes after ingestion because a broker drops what is published before
/// anyone subscribed.
pub(crate) const SERVICES: &[Entry] = &[
    Entry::of::<sim_twin::SimTwin>(),
    Entry::of::<ingestion::Ingestion>(),
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
    use super::*;

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
