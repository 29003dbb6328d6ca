//! Architecture invariant, checked: only the store crate knows SQL.
//!
//! Every Rust file of the platform's code (`crates/*/src`, `services/*/src`, `loadtest/src`,
//! `benches/`, `xtask/src`) is scanned for SQL and for the database driver; a hit outside
//! `crates/store` and `migrations/` fails the test unless [`ALLOWED`] names the file and says why.
//! Integration tests (`<crate>/tests/`) are not scanned: like the load harness's verification
//! they are independent readers of what was stored, and they may also arrange a database (a
//! locked table, rows written by an older version), which no store API should offer.
//!
//! Comment lines are skipped: prose may talk about SQL.

use std::path::{Path, PathBuf};

/// Files outside the store that may hold SQL, each with the reason it must.
const ALLOWED: &[(&str, &str)] = &[
    (
        "loadtest/src/verify.rs",
        "the load harness checks what ingestion stored with its own SQL, independently of the \
         store code under test: a bug in the store's reads cannot hide a loss",
    ),
    (
        "loadtest/src/lib.rs",
        "the harness's error type carries the sqlx errors of verify.rs's queries",
    ),
    (
        "crates/testkit/src/postgres.rs",
        "tests' throwaway databases: CREATE DATABASE and DROP DATABASE on the server, outside \
         any domain's schema",
    ),
    (
        "xtask/src/clean_dbs.rs",
        "drops leftover test databases through psql: server administration, not storage",
    ),
    (
        "xtask/src/servers.rs",
        "`SELECT 1` through psql: whether the local PostgreSQL answers",
    ),
];

/// What counts as SQL or as talking to the database directly. Keywords are matched in upper
/// case, as every statement in this code base is written; `UPDATE <table> SET` is matched apart.
const PATTERNS: &[&str] = &[
    "SELECT ",
    "INSERT INTO",
    "DELETE FROM",
    "CREATE TABLE",
    "ALTER TABLE",
    "DROP TABLE",
    "CREATE INDEX",
    "CREATE DATABASE",
    "DROP DATABASE",
    "sqlx::",
    ".sql\"",
];

/// Roots scanned, relative to the workspace.
const ROOTS: &[&str] = &["crates", "services", "loadtest/src", "benches", "xtask/src"];

#[derive(Debug, PartialEq, Eq)]
struct Hit {
    line: usize,
    pattern: String,
}

/// The SQL in `text`, line by line.
fn scan(text: &str) -> Vec<Hit> {
    let mut hits = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for p in PATTERNS {
            if line.contains(p) {
                hits.push(Hit {
                    line: i + 1,
                    pattern: (*p).to_owned(),
                });
            }
        }
        if has_update_set(line) {
            hits.push(Hit {
                line: i + 1,
                pattern: "UPDATE … SET".to_owned(),
            });
        }
    }
    hits
}

/// `UPDATE <identifier> SET`, with any whitespace between.
fn has_update_set(line: &str) -> bool {
    line.match_indices("UPDATE").any(|(at, _)| {
        let mut words = line[at + "UPDATE".len()..].split_whitespace();
        let table = words.next().unwrap_or("");
        !table.is_empty()
            && table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            && words.next() == Some("SET")
    })
}

/// Whether `path` (relative, with `/`) is exempt from the rule by where it lives.
fn exempt(path: &str) -> bool {
    path.starts_with("crates/store/")
        || path.starts_with("migrations/")
        || path
            .split('/')
            .any(|part| part == "tests" || part == "target")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_owned()
}

/// Which of the scanned files hold SQL: (relative path, hits).
fn sql_outside_the_store() -> Vec<(String, Vec<Hit>)> {
    let root = workspace();
    let mut files = Vec::new();
    for r in ROOTS {
        rust_files(&root.join(r), &mut files);
    }
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&root)
            .expect("scanned below the root")
            .to_string_lossy()
            .replace('\\', "/");
        if exempt(&rel) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let hits = scan(&text);
        if !hits.is_empty() {
            found.push((rel, hits));
        }
    }
    found
}

/// The members (other than the store) whose manifest depends on sqlx outside
/// `[dev-dependencies]`, i.e. whose code, not only tests, can talk to a database.
fn sqlx_dependents() -> Vec<String> {
    let root = workspace();
    let mut dirs = Vec::new();
    for group in ["crates", "services"] {
        let Ok(entries) = std::fs::read_dir(root.join(group)) else {
            continue;
        };
        for e in entries.flatten() {
            dirs.push(format!("{group}/{}", e.file_name().to_string_lossy()));
        }
    }
    dirs.extend(["loadtest", "benches", "xtask"].map(String::from));
    dirs.sort();
    dirs.into_iter()
        .filter(|dir| dir != "crates/store")
        .filter(|dir| {
            let manifest = std::fs::read_to_string(root.join(dir).join("Cargo.toml"));
            depends_on_sqlx(&manifest.unwrap_or_default())
        })
        .collect()
}

/// Whether a manifest names sqlx in a section other than `[dev-dependencies]`.
fn depends_on_sqlx(manifest: &str) -> bool {
    let mut section = "";
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section != "[dev-dependencies]"
            && section.ends_with("dependencies]")
            && line.starts_with("sqlx")
        {
            return true;
        }
    }
    false
}

#[test]
fn only_the_store_knows_sql() {
    let found = sql_outside_the_store();
    let mut problems = Vec::new();
    for (path, hits) in &found {
        if ALLOWED.iter().any(|(p, _)| p == path) {
            continue;
        }
        for h in hits {
            problems.push(format!("{path}:{}: `{}`", h.line, h.pattern));
        }
    }
    assert!(
        problems.is_empty(),
        "SQL outside crates/store (move it behind a store API, or add the file to ALLOWED in \
         xtask/tests/tidy_sql.rs with the reason it must know SQL):\n  {}",
        problems.join("\n  ")
    );
    // The driver itself: only members with an allowed file may depend on it.
    for dir in sqlx_dependents() {
        let prefix = format!("{dir}/");
        if !ALLOWED.iter().any(|(p, _)| p.starts_with(&prefix)) {
            problems.push(format!("{dir}/Cargo.toml: depends on sqlx"));
        }
    }
    assert!(
        problems.is_empty(),
        "a member depends on sqlx outside [dev-dependencies] without a reason in ALLOWED:\n  {}",
        problems.join("\n  ")
    );
    // An exception that no longer holds SQL is one less: drop it rather than let it cover
    // whatever is written there next.
    for (path, _) in ALLOWED {
        assert!(
            found.iter().any(|(p, _)| p == path),
            "{path} is in ALLOWED but holds no SQL any more: remove it from the list"
        );
    }
}

#[test]
fn the_scanner_finds_sql() {
    let bad = r#"
fn sneaky(pool: &PgPool) {
    // SELECT in a comment is prose, not SQL.
    let q = "SELECT device_id FROM telemetry";
    sqlx::query(q);
    let u = "UPDATE sessions  SET ended_at = now()";
    let d = "DELETE FROM dead_letters";
    let m = include_str!("schema.sql");
}
"#;
    let hits: Vec<(usize, String)> = scan(bad).into_iter().map(|h| (h.line, h.pattern)).collect();
    assert_eq!(
        hits,
        [
            (4, "SELECT ".to_owned()),
            (5, "sqlx::".to_owned()),
            (6, "UPDATE … SET".to_owned()),
            (7, "DELETE FROM".to_owned()),
            (8, ".sql\"".to_owned()),
        ]
    );
    let good = "// INSERT INTO is mentioned here only\nlet updated = \"UPDATE the docs\";\n";
    assert_eq!(scan(good), []);
    assert!(depends_on_sqlx(
        "[dependencies]\nsqlx = { workspace = true }\n"
    ));
    assert!(depends_on_sqlx(
        "[target.'cfg(unix)'.dependencies]\nsqlx.workspace = true\n"
    ));
    assert!(!depends_on_sqlx(
        "[dev-dependencies]\nsqlx = { workspace = true }\n"
    ));
    assert!(exempt("crates/store/src/pg/mod.rs"));
    assert!(exempt("services/ingestion/tests/it/helpers.rs"));
    assert!(!exempt("services/ingestion/src/api.rs"));
}
