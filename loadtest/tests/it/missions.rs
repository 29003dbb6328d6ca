//! `loadtest missions` against a real company-kernel on PostgreSQL, spawned in this process,
//! with real worker processes (this package's `loadtest mission-worker`) killed with SIGKILL
//! while they work: every mission is done, none is lost or dead, each took effect.

use std::time::Duration;

use company_kernel::CompanyKernel;
use loadtest::missions::MissionsConfig;
use testkit::Server;

#[tokio::test(flavor = "multi_thread")]
async fn missions_survive_their_workers_being_killed() {
    let name = "missions_survive_their_workers_being_killed";
    if !testkit::require(Server::Postgres, name) {
        return;
    }
    let kernel = testkit::spawn::<CompanyKernel>()
        .set("company_kernel.backoff_base_ms", 100)
        .set("company_kernel.sweep_interval_ms", 100)
        .postgres()
        .await
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = MissionsConfig {
        kernel: kernel.url(""),
        per_min: 600,
        duration: Duration::from_secs(6),
        workers: 2,
        kill_every: Duration::from_secs(2),
        work: Duration::from_millis(100),
        lease_secs: 1,
        settle: Duration::from_secs(60),
        worker_exe: Some(env!("CARGO_BIN_EXE_loadtest").into()),
        dir: dir.path().to_owned(),
        run_id: loadtest::plan::new_run_id(),
    };
    let report = loadtest::missions::run(&config).await.unwrap();
    let text = report.print();
    assert_eq!(report.submitted, 60, "{text}");
    assert_eq!(
        (report.done, report.lost, report.dead),
        (60, 0, 0),
        "{text}"
    );
    assert_eq!(report.done_without_effect, 0, "{text}");
    assert!(report.kills >= 2, "{text}");
    assert!(report.claim.count >= 60, "{text}");
    assert!(report.failures().is_empty(), "{text}");
}
