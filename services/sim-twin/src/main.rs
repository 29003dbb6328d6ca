//! `sim-twin` as its own process (one container, one Deployment); the same as `simcorp serve sim-twin`.

fn main() -> std::process::ExitCode {
    kit::service::main::<sim_twin::SimTwin>()
}
