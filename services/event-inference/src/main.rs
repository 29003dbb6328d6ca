//! `event-inference` as its own process; the same as `simcorp serve event-inference`.

fn main() -> std::process::ExitCode {
    kit::service::main::<event_inference::EventInference>()
}
