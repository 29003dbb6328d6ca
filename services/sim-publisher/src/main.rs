//! `sim-publisher` as its own process (one container, one Deployment); the same as
//! `simcorp serve sim-publisher`.

fn main() -> std::process::ExitCode {
    kit::service::main::<sim_publisher::SimPublisher>()
}
