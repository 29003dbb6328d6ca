//! Tidy: the metrics rule of docs/ARCHITECTURE.md, enforced on the source.
//!
//! - A metric is emitted or described only from a `metrics.rs`: the `metrics` macros
//!   (`counter!`, `gauge!`, `histogram!`, `describe_*!`) and kit's hand-rendering helpers
//!   (`render_counter`, `render_hdr_latency`, `render_hdr_histogram`) appear nowhere else.
//! - Its name starts with its crate's prefix, `simcorp_<crate>_` (`-` as `_`); the kit's, its
//!   HTTP layer's, with `simcorp_http_`.
//!
//! Plain string scanning, not parsing: it only has to catch what a person slips in, and a
//! false alarm is fixed by following the rule.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

use std::fmt;
use std::path::{Path, PathBuf};

/// The macros whose first argument is a metric's name.
const NAMED: &[&str] = &[
    "counter!",
    "gauge!",
    "histogram!",
    "describe_counter!",
    "describe_gauge!",
    "describe_histogram!",
];

/// The kit's renderers, which emit the metric they are given.
const RENDERERS: &[&str] = &[
    "render_counter(",
    "render_hdr_latency(",
    "render_hdr_histogram(",
];

#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// The prefix every metric name of crate `name` starts with.
fn prefix(name: &str) -> String {
    match name {
        "kit" => "simcorp_http_".to_owned(),
        other => format!("simcorp_{}_", other.replace('-', "_")),
    }
}

/// The violations in one source file (`file` as reported; `metrics_rs`: it is a `metrics.rs`)
/// of the crate whose names start with `prefix`.
fn scan(file: &str, metrics_rs: bool, prefix: &str, text: &str) -> Vec<Violation> {
    // Line comments dropped (doc comments name metrics and macros freely); lines kept, so that
    // offsets still give line numbers.
    let code: String = text
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n");
    let line_of = |offset: usize| code[..offset].matches('\n').count() + 1;
    let mut found = Vec::new();
    let mut violation = |offset: usize, message: String| {
        found.push(Violation {
            file: file.to_owned(),
            line: line_of(offset),
            message,
        })
    };

    // What may only appear in a `metrics.rs`.
    for emitter in NAMED.iter().chain(RENDERERS) {
        for (at, _) in code.match_indices(emitter) {
            // `describe_counter!` must not also count as `counter!`; `fn render_counter(` is the
            // helper's definition, in kit's own metrics.rs.
            let whole_word = code[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            if !whole_word {
                continue;
            }
            if !metrics_rs {
                violation(
                    at,
                    format!(
                        "`{emitter}` outside a metrics.rs: emit metrics from the crate's metrics module"
                    ),
                );
            } else if NAMED.contains(emitter) {
                let args = code[at + emitter.len()..].trim_start_matches(['(', ' ', '\n']);
                if let Some(name) = args.strip_prefix('"').and_then(|a| a.split('"').next())
                    && !name.starts_with(prefix)
                {
                    violation(
                        at,
                        format!("metric `{name}` does not start with `{prefix}`"),
                    );
                }
            }
        }
    }
    if metrics_rs {
        for (at, literal) in string_literals(&code) {
            if literal.starts_with("simcorp_") && !literal.starts_with(prefix) {
                violation(
                    at,
                    format!("metric `{literal}` does not start with `{prefix}`"),
                );
            }
        }
    }
    found.sort_by_key(|v| v.line);
    found.dedup();
    found
}

/// The `"…"` literals of `code`, with their offsets (escapes kept as written).
fn string_literals(code: &str) -> Vec<(usize, &str)> {
    let bytes = code.as_bytes();
    let mut literals = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // A quote as a char literal opens no string.
            b'\'' if bytes.get(i + 1) == Some(&b'"') && bytes.get(i + 2) == Some(&b'\'') => i += 3,
            b'"' => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end] != b'"' {
                    end += if bytes[end] == b'\\' { 2 } else { 1 };
                }
                let end = end.min(bytes.len());
                literals.push((i, &code[start..end]));
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    literals
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every crate the rule covers: `crates/*`, `services/*`, `loadtest`.
fn crate_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.join("loadtest")];
    for parent in ["crates", "services"] {
        for entry in std::fs::read_dir(root.join(parent)).unwrap() {
            let dir = entry.unwrap().path();
            if dir.join("Cargo.toml").is_file() {
                dirs.push(dir);
            }
        }
    }
    dirs.sort();
    dirs
}

/// The package name in `dir/Cargo.toml`.
fn crate_name(dir: &Path) -> String {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    manifest
        .lines()
        .find_map(|l| {
            let value = l
                .trim()
                .strip_prefix("name")?
                .trim_start()
                .strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no package name in {}", dir.display()))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn metrics_are_named_for_their_crate_and_emitted_from_its_metrics_module() {
    let root = workspace_root();
    let mut violations = Vec::new();
    let (mut files, mut metrics_modules) = (0, 0);
    for dir in crate_dirs(&root) {
        let prefix = prefix(&crate_name(&dir));
        let mut sources = Vec::new();
        rust_files(&dir.join("src"), &mut sources);
        for path in sources {
            let metrics_rs = path.file_name().is_some_and(|n| n == "metrics.rs");
            let shown = path.strip_prefix(&root).unwrap().display().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            violations.extend(scan(&shown, metrics_rs, &prefix, &text));
            files += 1;
            metrics_modules += usize::from(metrics_rs);
        }
    }
    // A walk that found nothing would pass vacuously.
    assert!(
        files > 50 && metrics_modules >= 9,
        "scanned only {files} files, {metrics_modules} metrics.rs"
    );
    assert!(
        violations.is_empty(),
        "the metrics rule (docs/ARCHITECTURE.md, Metrics) is broken:\n{}",
        violations
            .iter()
            .map(Violation::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_scanner_catches_what_the_rule_forbids() {
    let check = |metrics_rs: bool, prefix: &str, text: &str, expected: &[(usize, &str)]| {
        let found: Vec<(usize, String)> = scan("x.rs", metrics_rs, prefix, text)
            .into_iter()
            .map(|v| (v.line, v.message))
            .collect();
        let expected: Vec<(usize, String)> = expected
            .iter()
            .map(|(l, m)| (*l, (*m).to_owned()))
            .collect();
        assert_eq!(found, expected, "in:\n{text}");
    };

    // Emitted outside a metrics.rs, however it is spelt; comments do not count.
    check(
        false,
        "simcorp_cache_",
        "fn note() {\n    // counter!(\"simcorp_cache_up\") once lived here\n    \
         metrics::gauge!(\"simcorp_cache_up\").set(1.0);\n    counter!(ERRORS).increment(1);\n    \
         describe_histogram!(X, \"x\");\n    kit::metrics::render_counter(out, \"n\", \"h\", &[]);\n}\n",
        &[
            (
                3,
                "`gauge!` outside a metrics.rs: emit metrics from the crate's metrics module",
            ),
            (
                4,
                "`counter!` outside a metrics.rs: emit metrics from the crate's metrics module",
            ),
            (
                5,
                "`describe_histogram!` outside a metrics.rs: emit metrics from the crate's metrics module",
            ),
            (
                6,
                "`render_counter(` outside a metrics.rs: emit metrics from the crate's metrics module",
            ),
        ],
    );

    // In a metrics.rs: names with another crate's prefix, or none, in a macro or a constant.
    check(
        true,
        "simcorp_pipeline_",
        "const OLD: &str = \"simcorp_ingest_batches_total\";\n\
         pub(crate) fn f() {\n    counter!(\"simcorp_pipeline_ok_total\").increment(1);\n    \
         gauge!(\n        \"queue_depth\"\n    ).set(0.0);\n    let q = '\"';\n}\n",
        &[
            (
                1,
                "metric `simcorp_ingest_batches_total` does not start with `simcorp_pipeline_`",
            ),
            (
                4,
                "metric `queue_depth` does not start with `simcorp_pipeline_`",
            ),
        ],
    );

    // What the rule allows: the crate's own names, help text, label values, the helpers'
    // definitions, and kit's standard process metrics.
    check(
        true,
        "simcorp_http_",
        "const A: &str = \"simcorp_http_requests_total\";\n\
         pub fn render_counter(out: &mut String) {}\n\
         fn p() { render_family(out, \"process_cpu_seconds_total\", \"CPU.\", \"counter\"); }\n\
         fn r() { histogram!(A, \"route\" => route).record(1.0); }\n",
        &[],
    );
    assert_eq!(prefix("sim-twin"), "simcorp_sim_twin_");
    assert_eq!(prefix("kit"), "simcorp_http_");
}
