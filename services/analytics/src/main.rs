//! `analytics` as its own process; the same as `simcorp serve analytics`.

fn main() -> std::process::ExitCode {
    kit::service::main::<analytics::Analytics>()
}
