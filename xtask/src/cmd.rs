//! Running programs: echoing them, capturing or showing their output, finding them, and
//! running them as root when they need it.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, Result, bail};

/// `cargo` itself: the binary that ran us (`$CARGO`), so nested builds use the same toolchain.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The command line as a human would type it (the program by its file name).
pub(crate) fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program());
    std::iter::once(program)
        .chain(cmd.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` with its output shown; an error if it cannot start or does not succeed.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("    $ {line}");
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not run `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns what it printed (whether or not it succeeded).
pub(crate) fn output(cmd: &mut Command) -> Result<Output> {
    let line = display(cmd);
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run `{line}`"))
}

/// Runs a command that starts a daemon. Its output goes to a file rather than a pipe: a daemon
/// that kept an inherited pipe open would make us wait for it forever. The output is shown
/// indented afterwards.
pub(crate) fn run_starting_daemon(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("    $ {line}");
    let log_path = std::env::temp_dir().join(format!("xtask-start-{}.log", std::process::id()));
    let log = File::create(&log_path)
        .with_context(|| format!("could not create {}", log_path.display()))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("could not run `{line}`"));
    let printed = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    for l in printed.lines().filter(|l| !l.trim().is_empty()) {
        println!("      {l}");
    }
    let status = status?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Finds `name` on `$PATH`, then in the sbin directories a non-root `$PATH` often lacks.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether we run as root. `/proc/self` belongs to the process's effective user.
pub(crate) fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::metadata("/proc/self") {
        Ok(m) => m.uid() == 0,
        Err(_) => output(Command::new("id").arg("-u"))
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0"),
    }
}

/// A command for `program` that runs as root: directly when we are root, else through
/// `sudo -n` (which fails at once rather than asking for a password nobody will type).
pub(crate) fn as_root(program: impl AsRef<OsStr>) -> Result<Command> {
    if is_root() {
        return Ok(Command::new(program));
    }
    let Some(sudo) = find_program("sudo") else {
        bail!(
            "`{}` needs root: run xtask as root or give this user passwordless sudo",
            program.as_ref().to_string_lossy()
        );
    };
    let mut cmd = Command::new(sudo);
    cmd.arg("-n").arg(program);
    Ok(cmd)
}

/// The last `n` lines of a log file, indented, for error messages.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            let mut out = format!("last lines of {}:", path.display());
            for l in &lines[start..] {
                out.push_str("\n    ");
                out.push_str(l);
            }
            out
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}
