//! A MariaDB table backfilled to the local warehouse by the `backhaul` binary, planned from the
//! server's statistics, while the chunk's connection is killed from another session: the chunk
//! fails as transient, is retried, and the job ends with exact counts that `verify` confirms.

use std::time::{Duration, Instant};

use backhaul_testkit::mariadb::MariaDb;

use crate::util::{JobDir, text};

const DB: &str = "e2e";
const PASSWORD_VAR: &str = "BACKHAUL_E2E_MYSQL_PASSWORD";
const ROWS: u64 = 240_000;

fn spec(server: &MariaDb) -> String {
    format!(
        r#"version = 1
name = "mysql-orders"

[source]
kind = "mysql"
host = "{host}"
port = {port}
user = "loader"
database = "{DB}"
table = "orders"
cursor = "created_at"

[source.password]
env = "{PASSWORD_VAR}"

[range]
from = "2024-01-01"
to = "2024-01-11"

[chunking]
policy = "target_bytes"
target_bytes = "8MiB"

[stage]
path = "stage"

[destination]
kind = "local"
path = "warehouse"
table = "orders"
file_size = "4MiB"
allow_small_files = true
"#,
        host = server.host(),
        port = server.port(),
    )
}

fn load(server: &MariaDb) {
    server.create_database(DB);
    server.sql(&format!(
        "USE `{DB}`; SET time_zone = '+00:00';
         CREATE TABLE orders (
             id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
             created_at DATETIME(6) NOT NULL,
             amount DECIMAL(18,2) NOT NULL,
             note VARCHAR(255),
             doc JSON,
             KEY (created_at)
         );
         INSERT INTO orders SELECT
             IF(seq = 1, 18446744073709551615, seq),
             '2024-01-01' + INTERVAL ((seq - 1) * 3600000) MICROSECOND,
             seq * 1.25,
             IF(seq % 9 = 0, NULL, CONCAT('order ', seq, ' 🦀 ', REPEAT(MD5(seq), 4))),
             JSON_OBJECT('seq', seq, 'tags', JSON_ARRAY('a', 'ü'))
         FROM seq_1_to_{ROWS};
         ANALYZE TABLE orders;"
    ));
    server.create_user("loader", "e2e-secret-password", DB);
}

/// Kills the connection running a chunk query, once there is one.
fn kill_a_chunk_query(server: &MariaDb) -> bool {
    let ids = server.sql(&format!(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'loader' AND DB = '{DB}' \
         AND INFO LIKE 'SELECT%FROM `{DB}`.`orders` WHERE%'"
    ));
    ids.lines()
        .filter(|id| !id.trim().is_empty())
        .any(|id| server.try_sql(&format!("KILL CONNECTION {}", id.trim())).is_ok())
}

fn failures(job: &JobDir) -> i64 {
    rusqlite::Connection::open(job.path().join("state.db"))
        .and_then(|c| c.query_row("SELECT COALESCE(SUM(failures), 0) FROM chunks", [], |r| r.get(0)))
        .unwrap_or(0)
}

#[test]
fn mysql_backfill_survives_a_killed_connection_with_exact_counts() {
    let server = MariaDb::shared();
    load(server);
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let spec_path = job.write_spec("job.toml", &spec(server));
    let spec_arg = spec_path.to_str().unwrap();

    let plan = job
        .cmd()
        .env(PASSWORD_VAR, "e2e-secret-password")
        .args(["plan", spec_arg, "--output", "json"])
        .output()
        .unwrap();
    assert!(plan.status.success(), "plan failed: {}", text(&plan.stderr));
    assert!(
        !text(&plan.stdout).contains("e2e-secret"),
        "the plan shows the password"
    );

    let mut child = job
        .cmd()
        .env(PASSWORD_VAR, "e2e-secret-password")
        .args(["backfill", spec_arg, "--workers", "1", "--retry-backoff", "200ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    job.wait_for_commits(&mut child, "mysql-orders", 1);
    // Kill chunk connections until one chunk has recorded a failure (a kill can land just as
    // a chunk finishes reading, which fails nothing).
    let deadline = Instant::now() + Duration::from_secs(120);
    while failures(&job) == 0 {
        assert!(
            Instant::now() < deadline,
            "no chunk failed after killing its connection"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if kill_a_chunk_query(server) {
            std::thread::sleep(Duration::from_millis(300));
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "backfill failed: {stderr}");
    assert!(!stderr.contains("e2e-secret") && !text(&out.stdout).contains("e2e-secret"));

    let chunks = job.json(&["status", "mysql-orders", "--chunks"]);
    let retried = chunks["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["failures"].as_u64().unwrap() > 0)
        .count();
    assert!(retried >= 1, "no chunk recorded a transient failure: {chunks}");
    assert_eq!(chunks["summary"]["parked"], 0, "{chunks}");
    assert!(
        chunks["chunks"].as_array().unwrap().len() >= 3,
        "8MiB chunks of this table should be several: {chunks}"
    );
    assert_eq!(job.json(&["verify", "mysql-orders"])["verified"], true);

    let counts = job.json(&[
        "query",
        "--warehouse",
        "warehouse",
        "SELECT count(*) AS n, count(DISTINCT id) AS d, max(id) AS top, CAST(sum(amount) AS VARCHAR) AS total FROM orders",
    ]);
    assert_eq!(counts[0]["n"].as_u64(), Some(ROWS), "{counts}");
    assert_eq!(counts[0]["d"].as_u64(), Some(ROWS), "{counts}");
    assert_eq!(
        counts[0]["top"].as_u64(),
        Some(u64::MAX),
        "BIGINT UNSIGNED max: {counts}"
    );
    let source_total = server.sql(&format!("SELECT SUM(amount) FROM `{DB}`.orders"));
    let total = counts[0]["total"].to_string();
    assert_eq!(total.trim_matches('"'), source_total.trim(), "{counts}");
    let note = job.json(&[
        "query",
        "--warehouse",
        "warehouse",
        "SELECT note, doc FROM orders WHERE id = 7",
    ]);
    assert_eq!(
        note[0]["note"].as_str().unwrap(),
        server
            .sql(&format!("SELECT note FROM `{DB}`.orders WHERE id = 7"))
            .trim()
    );
    assert_eq!(note[0]["doc"].as_str().unwrap(), r#"{"seq": 7, "tags": ["a", "ü"]}"#);
}
