use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use loadtest::{RampConfig, RunConfig, Source, Verdict, parse_duration, verify};

/// Load harness for the ingestion core: replays roast sessions over MQTT at a target rate (or a
/// rising one, --ramp), watches ingestion's latency, throughput, CPU and memory every second,
/// then reports points lost and duplicated, in JSON and HTML. Exit code 1 on FAIL, 2 on error.
#[derive(Parser)]
#[command(name = "loadtest", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Worker threads of the harness's runtime (0: one per core). On a machine it shares with
    /// the system under test, 1 keeps its own scheduling out of the latency it measures.
    #[arg(
        long,
        global = true,
        default_value_t = 0,
        env = "LOADTEST_WORKER_THREADS"
    )]
    worker_threads: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Publish a load, verify what ingestion stored, judge it (p95 < 10 ms, 0 lost, 0 duplicated).
    Run(Box<RunArgs>),
    /// Re-run only the verification of an earlier run (e.g. after a crash drill).
    Check(CheckArgs),
    /// Score the platform's roast events: replay roasts with a known truth over MQTT, read the
    /// events back from ingestion's API (found, missed, false, errors, detection delays).
    ScoreEvents(ScoreArgs),
    /// Put the command path under load: proposals at --per-min over driver-bridge's devices,
    /// each approved, signed, executed and acked; API p95 < 200 ms, 0 lost, 0 executed twice.
    Commands(CommandsArgs),
    /// Put the mission queue under load with its workers killed: missions at --per-min to
    /// company-kernel, worker processes claiming them, one killed with SIGKILL every
    /// --kill-every; every mission done, none lost, claim latency and throughput reported.
    Missions(MissionsArgs),
    /// One worker of `loadtest missions` (started by it).
    #[command(hide = true)]
    MissionWorker(MissionWorkerArgs),
}

#[derive(Args)]
struct MissionsArgs {
    /// company-kernel's HTTP base URL.
    #[arg(
        long,
        env = "SIMCORP_LOADTEST_KERNEL",
        default_value = "http://127.0.0.1:3000"
    )]
    kernel: String,
    /// Missions submitted a minute.
    #[arg(long, default_value_t = 1000)]
    per_min: u64,
    /// How long to submit: 60s, 5m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// Kill one worker with SIGKILL this often (and start another).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    kill_every: Duration,
    /// How long each mission's work takes.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    work: Duration,
    /// The workers' lease: a killed worker's mission is retried once it runs out.
    #[arg(long, default_value_t = 3)]
    lease_secs: u64,
    /// How long to wait after the last submission for every mission to be done.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    settle: Duration,
    /// Where the workers write what they did (a new directory under it per run).
    #[arg(long, default_value = "results/missions")]
    dir: PathBuf,
    /// Where to write the JSON report.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct MissionWorkerArgs {
    #[arg(long)]
    kernel: String,
    #[arg(long)]
    kind: String,
    #[arg(long)]
    name: String,
    #[arg(long)]
    work_ms: u64,
    #[arg(long)]
    lease_secs: u64,
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Args)]
struct CommandsArgs {
    /// The command service's HTTP base URL.
    #[arg(
        long,
        env = "SIMCORP_LOADTEST_COMMAND",
        default_value = "http://127.0.0.1:3004"
    )]
    command: String,
    /// driver-bridge's HTTP base URL: its devices in a session are the ones commanded.
    #[arg(
        long,
        env = "SIMCORP_LOADTEST_DRIVER_BRIDGE",
        default_value = "http://127.0.0.1:4004"
    )]
    driver_bridge: String,
    /// A file holding a bearer token with the operator role (proposes).
    #[arg(long, env = "SIMCORP_LOADTEST_OPERATOR_TOKEN_FILE")]
    operator_token_file: PathBuf,
    /// A file holding an approver's token: another person than the operator.
    #[arg(long, env = "SIMCORP_LOADTEST_APPROVER_TOKEN_FILE")]
    approver_token_file: PathBuf,
    /// A file holding an admin token: the audit chain is verified at the end.
    #[arg(long, env = "SIMCORP_LOADTEST_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Proposals a minute, over all devices.
    #[arg(long, default_value_t = 1000)]
    per_min: u64,
    /// How long to propose: 60s, 5m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// How long to wait after the last approval for every command's answer.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    settle: Duration,
    /// Each proposal's change, % of the control's range (keep step × proposals a minute per
    /// control under the safety limits' rate).
    #[arg(long, default_value_t = 0.5)]
    step: f64,
    /// Command at most this many devices (0: every device in a session).
    #[arg(long, default_value_t = 0)]
    max_devices: usize,
    /// Where to write the JSON report.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct ScoreArgs {
    /// The MQTT broker the platform listens on.
    #[arg(
        long,
        env = "SIMCORP_LOADTEST_MQTT",
        default_value = "mqtt://127.0.0.1:1883"
    )]
    mqtt: String,
    /// Ingestion's HTTP base URL.
    #[arg(
        long,
        env = "SIMCORP_LOADTEST_INGESTION",
        default_value = "http://127.0.0.1:4001"
    )]
    ingestion: String,
    /// Real roasts with their roaster's marks (a folder of .alog files); `none` to skip.
    #[arg(long, default_value = "testdata/roast-logs/skywalker")]
    real: String,
    /// Seeded simulated roasts, over every profile, batch size and two sampling intervals.
    #[arg(long, default_value_t = 210)]
    seeded: u32,
    /// How many times faster than real time the roasts are replayed.
    #[arg(long, default_value_t = 20.0)]
    acceleration: f64,
    /// How long to wait for the events after the last roast ended.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    settle: Duration,
}

#[derive(Args)]
struct RunArgs {
    /// The MQTT broker ingestion subscribes to.
    #[arg(
        long,
        env = "SIMCORP_LOADTEST_MQTT",
        default_value = "mqtt://127.0.0.1:1883"
    )]
    mqtt: String,
    /// The database ingestion writes to: postgres://… or, for an embedded deployment,
    /// sqlite://<path to ingestion.db> (read-only).
    #[arg(
        long,
        env = "SIMCORP_LOADTEST_POSTGRES",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/simcorp"
    )]
    postgres: String,
    /// Ingestion's HTTP base URL (e.g. http://127.0.0.1:4001): latency (exact, per second and
    /// for the run, from its /stats/latency histograms, whatever its uptime), throughput,
    /// CPU and memory.
    #[arg(long, env = "SIMCORP_LOADTEST_INGESTION")]
    ingestion: Option<String>,
    /// Points per second, over all sessions. With --ramp: the rate the ramp must hold to pass.
    #[arg(long, env = "SIMCORP_LOADTEST_RATE", default_value_t = 10_000)]
    rate: u64,
    /// How long to publish: 60s, 5m, 1m30s, 500ms.
    #[arg(long, env = "SIMCORP_LOADTEST_DURATION", default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent sessions, each on a device of its own.
    #[arg(long, env = "SIMCORP_LOADTEST_SESSIONS", default_value_t = 1000)]
    sessions: u32,
    /// Where sessions' readings come from: `engine` (the sim-twin simulation, one roast per
    /// session) or `synthetic` (a precomputed curve: no simulation cost in the harness).
    #[arg(long, env = "SIMCORP_LOADTEST_SOURCE", default_value = "engine", value_parser = ["engine", "synthetic"])]
    source: String,
    /// Seed of the engine's roasts (the same seed replays the same sessions).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Replay recorded Artisan roasts (.alog, a file or a directory of them) instead; sessions
    /// cycle over the logs, each offset and jittered by its index.
    #[arg(long, env = "SIMCORP_LOADTEST_REPLAY", conflicts_with = "source")]
    replay: Option<PathBuf>,
    /// Points per telemetry message (1: single points; more: frames).
    #[arg(long, env = "SIMCORP_LOADTEST_FRAME", default_value_t = 1)]
    frame: u32,
    /// Publisher MQTT connections; sessions are spread over them.
    #[arg(long, env = "SIMCORP_LOADTEST_CONNECTIONS", default_value_t = 8)]
    connections: u32,
    /// Sign every message with a per-device Ed25519 key registered in --postgres's device key
    /// registry (docs/protocol.md, "Signed messages"): run ingestion with
    /// `require_signed_telemetry` to measure what verifying costs.
    #[arg(long)]
    sign: bool,
    /// With --sign: make each device's key in this PKCS#11 token and sign every message there
    /// (an HSM, e.g. SoftHSM2's), as a device keeping its key in an HSM does; the keys are
    /// destroyed after the run. The module is --hsm-module, the PIN --hsm-pin-file.
    #[arg(long, requires = "sign", requires = "hsm_pin_file")]
    hsm_token: Option<String>,
    /// The PKCS#11 module (shared library) of --hsm-token.
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    hsm_module: PathBuf,
    /// A file holding --hsm-token's user PIN.
    #[arg(long)]
    hsm_pin_file: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(
        long,
        env = "SIMCORP_LOADTEST_OUTPUT",
        default_value = "results/run.json"
    )]
    output: PathBuf,
    /// Where to write the HTML report (one self-contained file); default: --output with .html.
    #[arg(long, env = "SIMCORP_LOADTEST_HTML")]
    html: Option<PathBuf>,
    /// No progress bar or status lines.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    ramp: RampArgs,
    /// Run id (1-16 of [a-z0-9]); random by default.
    #[arg(long)]
    run_id: Option<String>,
    /// How long to wait, after publishing, for ingestion to store the run.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    verify_deadline: Duration,
    /// The row count not growing for this long means ingestion is done.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    settle: Duration,
}

/// --ramp: step the rate up until p95 publish→commit reaches 10 ms.
#[derive(Args)]
struct RampArgs {
    /// Find the highest rate that holds p95 < 10 ms, instead of publishing at --rate.
    #[arg(long, conflicts_with = "duration")]
    ramp: bool,
    /// Rate of the first stage, points/s.
    #[arg(long, default_value_t = 5_000, requires = "ramp")]
    ramp_start: u64,
    /// Each stage this many percent faster than the last.
    #[arg(long, default_value_t = 25.0, requires = "ramp")]
    ramp_step: f64,
    /// Length of a stage.
    #[arg(long, default_value = "10s", value_parser = parse_duration, requires = "ramp")]
    ramp_stage: Duration,
    /// The start of each stage left out of its judgement.
    #[arg(long, default_value = "2s", value_parser = parse_duration, requires = "ramp")]
    ramp_warmup: Duration,
    /// No stage faster than this.
    #[arg(long, default_value_t = 200_000, requires = "ramp")]
    ramp_max: u64,
    /// Stages spent bisecting between the last rate that held and the first that did not.
    #[arg(long, default_value_t = 2, requires = "ramp")]
    ramp_bisect: u32,
}

#[derive(Args)]
struct CheckArgs {
    /// The database ingestion writes to: postgres://… or, for an embedded deployment,
    /// sqlite://<path to ingestion.db> (read-only).
    #[arg(
        long,
        env = "SIMCORP_LOADTEST_POSTGRES",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/simcorp"
    )]
    postgres: String,
    /// The run id printed by `loadtest run`.
    #[arg(long = "run")]
    run_id: Option<String>,
    /// The run's JSON report: supplies the run id, session count and size, so that lost tails
    /// and sessions without rows are seen too.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Sessions the run published (without --results).
    #[arg(long, requires = "points_per_session")]
    sessions: Option<u32>,
    /// Points each session published (without --results).
    #[arg(long)]
    points_per_session: Option<u64>,
    /// Where to write the JSON result.
    #[arg(long)]
    output: Option<PathBuf>,
    /// How long to wait for the row count to settle.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    verify_deadline: Duration,
    /// The row count not growing for this long means ingestion is done.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    settle: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = kit::runtime::RuntimeConfig {
        worker_threads: cli.worker_threads,
    };
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Check(args) => check(args).await,
            Command::ScoreEvents(args) => score_events(args).await,
            Command::Commands(args) => commands(args).await,
            Command::Missions(args) => missions(args).await,
            Command::MissionWorker(a) => loadtest::missions::work(
                &a.kernel,
                &a.kind,
                &a.name,
                Duration::from_millis(a.work_ms),
                a.lease_secs,
                &a.dir,
            )
            .await
            .map(|()| Verdict::Pass)
            .map_err(anyhow::Error::from),
        }
    });
    match result {
        Ok(Verdict::Pass) => ExitCode::SUCCESS,
        Ok(Verdict::Fail) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<Verdict> {
    let mut config = RunConfig::new(&args.mqtt, &args.postgres);
    config.ingestion = args.ingestion;
    config.rate = args.rate;
    config.duration = args.duration;
    config.sessions = args.sessions;
    config.frame = args.frame;
    config.connections = args.connections;
    config.sign = args.sign;
    if let (Some(token), Some(pin)) = (&args.hsm_token, &args.hsm_pin_file) {
        let pin = std::fs::read_to_string(pin)
            .with_context(|| format!("reading the PIN file {}", pin.display()))?;
        config.sign_keystore = Some(keys::Config {
            enabled: true,
            module: args.hsm_module.clone(),
            token: token.clone(),
            pin: Some(pin.trim_end_matches(['\n', '\r']).to_owned().into()),
            dir: PathBuf::new(),
        });
    }
    config.run_id = args.run_id;
    config.verify.deadline = args.verify_deadline;
    config.verify.settle = args.settle;
    config.progress = !args.quiet;
    config.verify.progress_every = (!args.quiet).then_some(Duration::from_secs(5));
    config.source = match (&args.replay, args.source.as_str()) {
        (Some(path), _) => Source::replay(path).context("reading the roast logs to replay")?,
        (None, "synthetic") => Source::Synthetic,
        (None, _) => Source::Engine { seed: args.seed },
    };
    if args.ramp.ramp {
        let r = &args.ramp;
        config.ramp = Some(RampConfig {
            start: r.ramp_start,
            step_percent: r.ramp_step,
            stage: r.ramp_stage,
            warmup: r.ramp_warmup,
            max_rate: r.ramp_max,
            bisect: r.ramp_bisect,
            ..RampConfig::default()
        });
    }
    let html = args
        .html
        .clone()
        .unwrap_or_else(|| args.output.with_extension("html"));
    let report = loadtest::run(&config).await?;
    print!("{}", report.render());
    report
        .write_json(&args.output)
        .context("writing the report")?;
    loadtest::html::write(&report, &html).context("writing the HTML report")?;
    println!(
        "report written to {} and {}",
        args.output.display(),
        html.display()
    );
    Ok(report.verdict)
}

async fn score_events(args: ScoreArgs) -> anyhow::Result<Verdict> {
    let config = loadtest::score::ScoreConfig {
        mqtt: args.mqtt,
        ingestion: args.ingestion.trim_end_matches('/').to_owned(),
        real: (args.real != "none").then(|| PathBuf::from(&args.real)),
        seeded: args.seeded,
        acceleration: args.acceleration,
        settle: args.settle,
        run_id: loadtest::plan::new_run_id(),
    };
    let report = loadtest::score::run(&config).await?;
    print!("{}", report.print());
    // A measurement, not a judgement: the figures are the result.
    Ok(Verdict::Pass)
}

async fn missions(args: MissionsArgs) -> anyhow::Result<Verdict> {
    let run_id = loadtest::plan::new_run_id();
    let config = loadtest::missions::MissionsConfig {
        kernel: args.kernel.trim_end_matches('/').to_owned(),
        per_min: args.per_min,
        duration: args.duration,
        workers: args.workers,
        kill_every: args.kill_every,
        work: args.work,
        lease_secs: args.lease_secs,
        settle: args.settle,
        worker_exe: None,
        dir: args.dir.join(&run_id),
        run_id,
    };
    let report = loadtest::missions::run(&config).await?;
    finish(
        &report.print(),
        &report.failures(),
        &report,
        args.output.as_deref(),
    )
}

async fn commands(args: CommandsArgs) -> anyhow::Result<Verdict> {
    let token = |path: &PathBuf| -> anyhow::Result<String> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        Ok(text.trim_end_matches(['\n', '\r']).to_owned())
    };
    let mut config = loadtest::commands::CommandsConfig::new(&args.command, &args.driver_bridge);
    config.operator_token = token(&args.operator_token_file)?;
    config.approver_token = token(&args.approver_token_file)?;
    config.admin_token = args.admin_token_file.as_ref().map(token).transpose()?;
    config.per_min = args.per_min;
    config.duration = args.duration;
    config.settle = args.settle;
    config.step = args.step;
    config.max_devices = args.max_devices;
    let report = loadtest::commands::run(&config).await?;
    finish(
        &report.print(),
        &report.failures(),
        &report,
        args.output.as_deref(),
    )
}

/// Prints a mode's report, writes it as JSON to `output` if asked, and judges it.
fn finish(
    text: &str,
    failures: &[String],
    report: &impl serde::Serialize,
    output: Option<&std::path::Path>,
) -> anyhow::Result<Verdict> {
    print!("{text}");
    if let Some(path) = output {
        let json = serde_json::to_vec_pretty(report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if failures.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail
    })
}

async fn check(args: CheckArgs) -> anyhow::Result<Verdict> {
    let expected = match &args.results {
        Some(path) => {
            let json =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            loadtest::expected_from_results(&json)
                .with_context(|| format!("reading {}", path.display()))?
        }
        None => verify::Expected {
            run_id: args
                .run_id
                .clone()
                .context("give --run <run id> or --results <report.json>")?,
            sessions: args.sessions,
            points_per_session: args.points_per_session,
        },
    };
    if let Some(run_id) = args.run_id
        && run_id != expected.run_id
    {
        bail!(
            "--run {run_id} does not match the report's run {}",
            expected.run_id
        );
    }
    let config = verify::VerifyConfig {
        deadline: args.verify_deadline,
        settle: args.settle,
        ..Default::default()
    };
    let report = loadtest::check(&args.postgres, &expected, &config).await?;
    print!("{}", report.render());
    if let Some(path) = &args.output {
        report.write_json(path).context("writing the result")?;
    }
    Ok(report.verdict)
}
