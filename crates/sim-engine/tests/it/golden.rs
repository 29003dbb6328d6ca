//! Whole roasts pinned byte for byte: any change to the model, the profiles, the randomness or
//! the rounding shows up here as a diff to review (see the top of `main.rs` to regenerate).

use std::path::PathBuf;

use sim_engine::{Roast, RoastConfig, simulate};

use crate::config;

#[test]
fn golden_roasts_are_unchanged() {
    let cases = [
        ("medium-seed-1", config("medium", 1, 4000.0)),
        ("light-seed-2", config("light", 2, 4000.0)),
        ("dark-seed-3", config("dark", 3, 4000.0)),
        (
            "medium-seed-4-3000g-2s",
            RoastConfig {
                sample_interval_ms: 2000,
                ..config("medium", 4, 3000.0)
            },
        ),
    ];
    let update = std::env::var("SIMCORP_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    for (name, config) in cases {
        let roast = simulate(&config).unwrap();
        let text = render(&roast);
        // The rendering is only a layout of the JSON: it reads back as the same roast.
        assert_eq!(serde_json::from_str::<Roast>(&text).unwrap(), roast);
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(format!("{name}.json"));
        if update {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let pinned = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; set SIMCORP_UPDATE_GOLDEN=1 to create it",
                path.display()
            )
        });
        if pinned != text {
            let (line, (want, got)) = pinned
                .lines()
                .zip(text.lines())
                .enumerate()
                .find(|(_, (a, b))| a != b)
                .unwrap_or((0, ("(lengths differ)", "")));
            panic!(
                "{name}: the roast differs from {} at line {}:\n  pinned: {want}\n  now:    {got}\n\
                 if the change is intended, regenerate with SIMCORP_UPDATE_GOLDEN=1 and review the diff",
                path.display(),
                line + 1
            );
        }
    }
}

/// The roast's JSON with one sample or event per line, so a diff shows what moved.
fn render(roast: &Roast) -> String {
    let lines = |items: Vec<String>| items.join(",\n");
    format!(
        "{{\"samples\":[\n{}\n],\"events\":[\n{}\n]}}\n",
        lines(roast.samples.iter().map(to_json).collect()),
        lines(roast.events.iter().map(to_json).collect()),
    )
}

fn to_json(item: &impl serde::Serialize) -> String {
    serde_json::to_string(item).unwrap()
}
