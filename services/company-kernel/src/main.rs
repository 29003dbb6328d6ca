//! `company-kernel` as its own process; the same as `simcorp serve company-kernel`.

fn main() -> std::process::ExitCode {
    kit::service::main::<company_kernel::CompanyKernel>()
}
