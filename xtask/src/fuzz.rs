//! `cargo xtask fuzz`: every cargo-fuzz target in `fuzz/` for a fixed time each, on the stable
//! toolchain (libFuzzer's coverage guidance without a sanitizer: Rust code needs none to catch
//! panics and broken invariants, which is what the targets assert).
//!
//! Each target starts from its seed corpus (`fuzz/corpus/<target>`, read only) and writes what it
//! finds to a scratch directory, so a run never dirties the checkout. A crash fails the step and
//! leaves the input in `fuzz/artifacts/<target>/` with the command that replays it.

use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::cmd;

pub(crate) const TARGETS: &[&str] = &["decode_telemetry", "decode_session", "parse_topic"];

pub(crate) fn run(budget: Duration, targets: &[String]) -> Result<()> {
    ensure_cargo_fuzz()?;
    let targets: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    for target in targets {
        let scratch = std::env::temp_dir().join(format!("simcorp-fuzz-{target}"));
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let mut c = cmd::cargo();
        c.args(["fuzz", "run", "--sanitizer", "none", target])
            .arg(&scratch)
            .arg(format!("fuzz/corpus/{target}"))
            .args([
                "--",
                &format!("-max_total_time={}", budget.as_secs().max(1)),
                "-max_len=8192",
                "-timeout=10",
                "-rss_limit_mb=2048",
                "-print_final_stats=1",
            ]);
        // Instrumented builds must not replace the workspace's own artifacts in a shared target
        // directory (different RUSTFLAGS): give them a directory of their own.
        if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
            c.env("CARGO_TARGET_DIR", PathBuf::from(dir).join("fuzz"));
        }
        // libFuzzer prints a line for every input that finds new coverage: thousands. Keep them
        // in a log and show the summary (and, on failure, the end of the log).
        let log_path = std::env::temp_dir().join(format!("simcorp-fuzz-{target}.log"));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        println!(
            "    $ {}  (output: {})",
            cmd::display(&c),
            log_path.display()
        );
        let status = c
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .with_context(|| format!("could not run cargo fuzz for `{target}`"))?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        for line in text.lines().filter(|l| is_summary(l)) {
            println!("      {line}");
        }
        if !status.success() {
            bail!(
                "fuzz target `{target}` failed ({status}); the input is in fuzz/artifacts/{target}/\n{}",
                cmd::tail(&log_path, 80)
            );
        }
    }
    Ok(())
}

fn is_summary(line: &str) -> bool {
    [
        "INFO: Seed",
        "Done ",
        "stat::number_of_executed_units",
        "stat::new_units_added",
    ]
    .iter()
    .any(|p| line.starts_with(p))
        || line.contains("panicked")
        || line.contains("ERROR")
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = cmd::cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    println!("cargo-fuzz is not installed: installing it (cargo install cargo-fuzz --locked)");
    cmd::run(cmd::cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    if !cmd::cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        bail!("cargo-fuzz was installed but `cargo fuzz` does not run");
    }
    Ok(())
}
