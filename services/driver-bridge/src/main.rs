//! `driver-bridge` as its own process (one container, one Deployment); the same as
//! `simcorp serve driver-bridge`.

fn main() -> std::process::ExitCode {
    kit::service::main::<driver_bridge::DriverBridge>()
}
