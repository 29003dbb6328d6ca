//! simcorp's project tasks, run as `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! `cargo xtask test` is the one test command, for people and for CI (`.ci/run`): servers up,
//! formatting, clippy, the whole test suite, then a short fuzzing run of every fuzz target.

mod clean_dbs;
mod cmd;
mod fuzz;
mod servers;

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "simcorp's project tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// The test command (README and CI): servers, fmt, clippy, leftover test databases, tests.
    Test(TestArgs),
    /// Installs, starts and waits for PostgreSQL, Redis and Mosquitto (before a bare `cargo test`).
    Servers,
    /// Drops `simcorp_test_*` databases left behind by killed test runs.
    CleanTestDbs(CleanArgs),
    /// Runs the fuzz targets in `fuzz/` (installs cargo-fuzz if needed).
    Fuzz(FuzzArgs),
    /// Runs the fault drills at full load (every service's `tests/drills`), one after another on
    /// a release build: about a minute and a half each.
    Drills(DrillArgs),
    /// Scores the platform's roast events through its real path (MQTT in, ingestion's API out):
    /// the ten real roasts and 210 seeded simulated ones at 20×, on a release build.
    ScoreEvents(ScoreArgs),
    /// Scores analytics' live first-crack predictions at 50 % and 75 % of the way from CHARGE
    /// to first crack, against the naive baseline: the ten real roasts (leave-one-out
    /// references) and seeded simulated roasts over every profile and batch size.
    ScorePredictions,
}

#[derive(Debug, Args)]
struct ScoreArgs {
    /// Seeded simulated roasts (over every profile, batch size and two sampling intervals).
    #[arg(long, default_value_t = 210)]
    seeded: u32,
    /// How many times faster than real time the roasts are replayed.
    #[arg(long, default_value_t = 20.0)]
    acceleration: f64,
}

#[derive(Debug, Args)]
struct DrillArgs {
    /// Drills to run, by (part of) their test name (default: all), e.g. `kill_9 postgres`.
    drills: Vec<String>,
}

#[derive(Debug, Args)]
struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Targets to run (default: all).
    targets: Vec<String>,
}

#[derive(Debug, Args)]
struct TestArgs {
    /// Skip `cargo fmt --check` and clippy (quick local runs).
    #[arg(long)]
    no_lint: bool,
    /// Do not check, install or start the servers.
    #[arg(long)]
    no_servers: bool,
    /// Skip the short fuzzing run after the tests.
    #[arg(long)]
    no_fuzz: bool,
    /// Seconds each fuzz target runs for after the tests.
    #[arg(long, default_value_t = 20)]
    fuzz_seconds: u64,
    /// Passed to the test runner, after `--` (e.g. `-- -p model`).
    #[arg(last = true)]
    test_args: Vec<String>,
}

#[derive(Debug, Args)]
struct CleanArgs {
    /// Keep databases whose files changed less than this many minutes ago (a run in progress).
    #[arg(long, default_value_t = 10)]
    min_age_mins: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = workspace_root().and_then(|root| {
        std::env::set_current_dir(&root).with_context(|| format!("cd {}", root.display()))
    }) {
        eprintln!("xtask: {e:#}");
        return ExitCode::FAILURE;
    }
    let mut steps = Steps::default();
    let result = match cli.task {
        Task::Test(args) => test(&mut steps, &args),
        Task::Servers => steps.run("servers", servers::ensure),
        Task::CleanTestDbs(args) => steps.run("clean-test-dbs", || {
            clean_dbs::clean(Duration::from_secs(args.min_age_mins * 60))
        }),
        Task::Fuzz(args) => steps.run("fuzz", || {
            fuzz::run(Duration::from_secs(args.seconds), &args.targets)
        }),
        Task::Drills(args) => steps.run("drills", || drills(&args.drills)),
        Task::ScoreEvents(args) => steps.run("score-events", || score_events(&args)),
        Task::ScorePredictions => steps.run("score-predictions", score_predictions),
    };
    steps.summary();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn test(steps: &mut Steps, args: &TestArgs) -> Result<()> {
    if ci() {
        println!("CI=true: a missing server fails the tests");
    } else {
        println!("CI is not true: tests skip (loudly) when a server is missing");
    }
    if args.no_servers {
        steps.skip("servers", "--no-servers");
    } else {
        steps.run("servers", servers::ensure)?;
    }
    if args.no_lint {
        steps.skip("fmt", "--no-lint");
        steps.skip("clippy", "--no-lint");
    } else {
        steps.run("fmt", fmt)?;
        steps.run("clippy", clippy)?;
    }
    // Housekeeping: a failure here must not stop the tests.
    steps.run_soft("clean-test-dbs", || {
        clean_dbs::clean(Duration::from_secs(10 * 60))
    });
    let runner = TestRunner::detect();
    steps.run(runner.step_name(), || runner.run(&args.test_args))?;
    if runner == TestRunner::Nextest {
        if args.test_args.is_empty() {
            steps.run("doc-tests", doc_tests)?;
        } else {
            steps.skip("doc-tests", "test arguments given");
        }
    }
    if args.no_fuzz {
        steps.skip("fuzz", "--no-fuzz");
    } else if !args.test_args.is_empty() {
        steps.skip("fuzz", "test arguments given");
    } else {
        steps.run("fuzz", || {
            fuzz::run(Duration::from_secs(args.fuzz_seconds), &[])
        })?;
    }
    Ok(())
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn fmt() -> Result<()> {
    require_cargo_tool("fmt", "rustfmt")?;
    cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs (diff above): run `cargo fmt -p <crate>` on those crates")
}

fn clippy() -> Result<()> {
    require_cargo_tool("clippy", "clippy")?;
    cmd::run(cmd::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy found problems (above)")
}

/// Fails clearly when a rustup component is missing rather than with cargo's "no such command".
fn require_cargo_tool(subcommand: &str, component: &str) -> Result<()> {
    let ok = cmd::cargo()
        .args([subcommand, "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("`cargo {subcommand}` is not installed: `rustup component add {component}`");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestRunner {
    Nextest,
    CargoTest,
}

impl TestRunner {
    fn detect() -> Self {
        let nextest = cmd::cargo()
            .args(["nextest", "--version"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if nextest {
            TestRunner::Nextest
        } else {
            TestRunner::CargoTest
        }
    }

    fn step_name(self) -> &'static str {
        match self {
            TestRunner::Nextest => "tests (nextest)",
            TestRunner::CargoTest => "tests (cargo test)",
        }
    }

    fn run(self, extra: &[String]) -> Result<()> {
        let mut c = cmd::cargo();
        match self {
            TestRunner::Nextest => {
                println!("cargo-nextest is installed: running the tests with it");
                c.args(["nextest", "run"]);
            }
            TestRunner::CargoTest => {
                println!("cargo-nextest is not installed: running the tests with cargo test");
                c.arg("test");
            }
        }
        // Cargo ignores `-p` next to `--workspace`: let a package selection win.
        if !selects_packages(extra) {
            c.arg("--workspace");
        }
        c.args(extra);
        cmd::run(&mut c).context("tests failed (see above)")
    }
}

/// The drills are a test binary of their own (`tests/drills`) that runs only with
/// `SIMCORP_DRILLS=1`: a release build carries the load, and one at a time (nextest's
/// `--no-capture` runs tests serially) keeps each drill's figures its own. Each prints its row of
/// the table in docs/reliability.md. Only the packages that have drills are built (with the
/// binaries they start): a release build of every test of the workspace took 14 minutes of CI.
fn drills(names: &[String]) -> Result<()> {
    servers::ensure()?;
    let mut packages = Vec::new();
    for dir in ["services", "crates"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.path().join("tests/drills").is_dir() {
                packages.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    packages.sort();
    if packages.is_empty() {
        bail!("no package has drills (tests/drills)");
    }
    // event-inference's drill starts ingestion's binary, which only a build of ingestion makes.
    if !packages.iter().any(|p| p == "ingestion") {
        packages.push("ingestion".to_owned());
    }
    let filter = if names.is_empty() {
        "binary(drills)".to_owned()
    } else {
        let names = names
            .iter()
            .map(|n| format!("test(/{n}/)"))
            .collect::<Vec<_>>()
            .join(" | ");
        format!("binary(drills) & ({names})")
    };
    cmd::run(
        cmd::cargo()
            .args([
                "nextest",
                "run",
                "--release",
                "--ignore-default-filter",
                "--no-capture",
                "-E",
                &filter,
            ])
            .args(packages.iter().flat_map(|p| ["-p", p.as_str()]))
            .env("SIMCORP_DRILLS", "1"),
    )
    .context("a drill failed")
}

/// The score is event-inference's scoring test (`tests/it/score.rs`: a private broker,
/// ingestion and event-inference, `loadtest::score` replaying roasts into them) at full size.
/// `loadtest score-events` scores a platform that is already running (e.g. the compose stack).
fn score_events(args: &ScoreArgs) -> Result<()> {
    servers::ensure()?;
    cmd::run(
        cmd::cargo()
            .args([
                "nextest",
                "run",
                "--release",
                "-p",
                "event-inference",
                "--no-capture",
                "-E",
                "test(events_are_found_where_the_truth_has_them)",
            ])
            .env("SIMCORP_SCORE_SEEDED", args.seeded.to_string())
            .env("SIMCORP_SCORE_ACCELERATION", args.acceleration.to_string()),
    )
    .context("scoring the events failed")
}

/// The score is the roast crate's prediction test (`crates/roast/tests/it/predict.rs`), whose
/// tables it prints: the predictions are the pure `roast::predict` that analytics runs live, so
/// no server is needed.
fn score_predictions() -> Result<()> {
    cmd::run(cmd::cargo().args([
        "nextest",
        "run",
        "--release",
        "-p",
        "roast",
        "--no-capture",
        "-E",
        "test(first_crack_is_predicted)",
    ]))
    .context("scoring the predictions failed")
}

/// nextest does not run doc-tests; `cargo test --doc` does.
fn doc_tests() -> Result<()> {
    println!("nextest does not run doc-tests: running them with cargo test");
    cmd::run(cmd::cargo().args(["test", "--workspace", "--doc"])).context("doc-tests failed")
}

fn selects_packages(args: &[String]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--package" || a.starts_with("--package=") || a.starts_with("-p"))
}

/// The workspace root: `cargo run` tells us our manifest's directory; the root is the nearest
/// ancestor whose Cargo.toml has `[workspace]`.
fn workspace_root() -> Result<PathBuf> {
    let start = match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_dir()?,
    };
    start
        .ancestors()
        .find(|dir| is_workspace_root(dir))
        .map(Path::to_path_buf)
        .with_context(|| format!("no workspace Cargo.toml above {}", start.display()))
}

fn is_workspace_root(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Outcome {
    Ok,
    Failed,
    Warning,
    Skipped(&'static str),
}

/// The steps run so far, with how long each took, for the summary at the end.
#[derive(Debug, Default)]
struct Steps {
    done: Vec<(String, Duration, Outcome)>,
}

impl Steps {
    fn run(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        println!("\n==> {name}");
        let start = Instant::now();
        let result = f();
        let outcome = if result.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        self.done.push((name.to_owned(), start.elapsed(), outcome));
        result.with_context(|| format!("step `{name}`"))
    }

    /// Like [`run`](Self::run) for a step whose failure is only a warning.
    fn run_soft(&mut self, name: &str, f: impl FnOnce() -> Result<()>) {
        if let Err(e) = self.run(name, f) {
            println!("warning (carrying on): {e:#}");
            if let Some(last) = self.done.last_mut() {
                last.2 = Outcome::Warning;
            }
        }
    }

    fn skip(&mut self, name: &str, why: &'static str) {
        println!("\n==> {name}: skipped ({why})");
        self.done
            .push((name.to_owned(), Duration::ZERO, Outcome::Skipped(why)));
    }

    fn summary(&self) {
        println!("\n==> summary");
        let width = self.done.iter().map(|(n, ..)| n.len()).max().unwrap_or(0);
        for (name, took, outcome) in &self.done {
            let took = match outcome {
                Outcome::Skipped(_) => "-".to_owned(),
                _ => format_duration(*took),
            };
            let outcome = match outcome {
                Outcome::Ok => "ok".to_owned(),
                Outcome::Failed => "FAILED".to_owned(),
                Outcome::Warning => "warning (see above)".to_owned(),
                Outcome::Skipped(why) => format!("skipped ({why})"),
            };
            println!("    {name:<width$}  {took:>7}  {outcome}");
        }
        let total: Duration = self.done.iter().map(|(_, d, _)| *d).sum();
        println!("    {:<width$}  {:>7}", "total", format_duration(total));
    }
}

fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}
