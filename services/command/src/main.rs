//! `command` as its own process; the same as `simcorp serve command`.

fn main() -> std::process::ExitCode {
    kit::service::main::<command::CommandService>()
}
