//! `ingestion` as its own process (one container, one Deployment); the same as
//! `simcorp serve ingestion`.

fn main() -> std::process::ExitCode {
    kit::service::main::<ingestion::Ingestion>()
}
