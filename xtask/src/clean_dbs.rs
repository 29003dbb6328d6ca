//! `cargo xtask clean-test-dbs`: drops the `simcorp_test_*` databases that killed test runs
//! left on the shared PostgreSQL (a test drops its own database when it ends normally).
//!
//! Several runs share the server (engineers' and CI's), so a database is only dropped when
//! nobody is connected to it and its files have not changed for `min_age`: a live run's
//! database is left alone.

use std::time::Duration;

use anyhow::{Result, bail};

use crate::cmd;
use crate::servers::{Server, answers, psql};

/// Database name, seconds since its directory last changed (-1: unknown), open connections.
const LIST: &str = r"
SELECT quote_ident(d.datname),
       coalesce(floor(extract(epoch FROM now()
                - (pg_stat_file('base/' || d.oid, true)).modification))::bigint, -1),
       (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid)
FROM pg_database d
WHERE d.datname LIKE 'simcorp\_test\_%'
ORDER BY 1";

pub(crate) fn clean(min_age: Duration) -> Result<()> {
    let addr = Server::Postgres.addr();
    if !answers(&addr) {
        bail!("PostgreSQL does not answer at {addr} (`cargo xtask servers` starts it)");
    }
    let out = cmd::output(&mut psql(LIST))?;
    if !out.status.success() {
        bail!(
            "listing the test databases failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let (mut dropped, mut kept) = (0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split('|');
        let (Some(name), Some(age), Some(conns)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let age: i64 = age.parse().unwrap_or(-1);
        let conns: u64 = conns.parse().unwrap_or(1);
        let recent = u64::try_from(age).is_ok_and(|a| a < min_age.as_secs());
        if conns > 0 || recent {
            let why = if conns > 0 {
                format!("{conns} connection(s)")
            } else {
                format!("changed {age} s ago")
            };
            println!("kept    {name} ({why}: maybe a test run in progress)");
            kept += 1;
            continue;
        }
        // Without FORCE: fails, rather than cutting someone off, if a client connected since.
        let drop = cmd::output(&mut psql(&format!("DROP DATABASE IF EXISTS {name}")))?;
        if drop.status.success() {
            println!("dropped {name}");
            dropped += 1;
        } else {
            println!(
                "kept    {name} ({})",
                String::from_utf8_lossy(&drop.stderr).trim()
            );
            kept += 1;
        }
    }
    match (dropped, kept) {
        (0, 0) => println!("no leftover test databases"),
        (d, k) => println!("{d} dropped, {k} kept"),
    }
    Ok(())
}
