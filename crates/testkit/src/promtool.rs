//! Checks of `/metrics` text: Prometheus' own linter, and help text for every metric.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Runs `promtool check metrics` on `text` (Prometheus' own parser and linter: duplicate or
/// misplaced `# HELP`/`# TYPE` lines, counters without `_total`, units not in base units, …)
/// and panics with what it reported when it finds anything.
///
/// A missing promtool fails too — `cargo xtask servers` installs it (Debian package
/// `prometheus`) — unless `SIMCORP_SKIP_PROMTOOL=1` says to skip, which CI never may.
pub fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let msg = "promtool is not installed; `cargo xtask servers` installs it (Debian package prometheus)";
            let skip = std::env::var("SIMCORP_SKIP_PROMTOOL").is_ok_and(|v| v == "1");
            if crate::ci() || !skip {
                panic!("{msg} (SIMCORP_SKIP_PROMTOOL=1 skips the check, outside CI)");
            }
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED promtool check: {msg}; SIMCORP_SKIP_PROMTOOL=1 ***\n"
            );
            return;
        }
        Err(e) => panic!("could not run promtool: {e}"),
    };
    // Written and closed before reading: promtool reads all of stdin before it reports.
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        panic!(
            "promtool check metrics failed ({}):\n{}{}\n--- the metrics text ---\n{text}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
    }
}

/// Panics naming every metric of `text` with a `# TYPE` but no `# HELP`: one that was never
/// described (`describe_counter!` and the like, from its crate's `metrics::describe`).
pub fn assert_every_type_has_help(text: &str) {
    let named = |prefix: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    };
    let helped = named("# HELP ");
    let undescribed: Vec<String> = named("# TYPE ")
        .into_iter()
        .filter(|name| !helped.contains(name))
        .collect();
    assert!(
        undescribed.is_empty(),
        "metrics without # HELP (never described): {undescribed:?}\n--- the metrics text ---\n{text}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_without_help_is_named() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n";
        assert_every_type_has_help(good);
        let bad = format!("{good}# TYPE b_total counter\nb_total 2\n");
        let caught = std::panic::catch_unwind(|| assert_every_type_has_help(&bad));
        let message = caught.unwrap_err();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(message.contains(r#"["b_total"]"#), "{message}");
    }

    #[test]
    fn promtool_refuses_what_prometheus_would_not_take() {
        if std::env::var("SIMCORP_SKIP_PROMTOOL").is_ok_and(|v| v == "1") && !crate::ci() {
            return;
        }
        promtool_check("# HELP a_total A.\n# TYPE a_total counter\na_total 1\n");
        let bad = "# HELP a A.\n# TYPE a counter\na 1\n";
        let caught = std::panic::catch_unwind(|| promtool_check(bad));
        let message = caught.unwrap_err();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(message.contains("_total"), "{message}");
    }
}
