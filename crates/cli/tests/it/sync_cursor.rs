//! A sync whose source cursor went backwards (rows rewritten with older `updated_at` values, as
//! a restore from an older backup or a writer with a wrong clock does) is refused before
//! anything is planned, naming the table and the `cursor` key; the warehouse is untouched.

use backhaul_testkit::postgres::PostgresServer;

use crate::sync::{chunk_ranges, source_rows, spec, warehouse_rows};
use crate::util::{JobDir, text};

#[test]
fn a_cursor_that_went_backwards_names_table_and_key_and_plans_nothing() {
    let server = PostgresServer::shared();
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE rewound (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, v text NOT NULL); \
             CREATE INDEX ON rewound (updated_at); \
             INSERT INTO rewound SELECT g, timestamptz '2024-03-01 00:00:00+00' + g * interval '5 minutes', 'v' || g \
               FROM generate_series(1, 100) g; ANALYZE rewound;",
        )
        .unwrap();
    let job = JobDir::in_dir(tempfile::tempdir().unwrap());
    let path = job.write_spec(
        "job.toml",
        &spec(server, &db, "rewound", "updated_at", "mode = \"dedup\""),
    );
    let path = path.to_str().unwrap();
    job.ok(&["sync", path, "--now", "2024-03-01T12:00:00Z"]);
    let loaded = warehouse_rows(&job, "rewound");
    assert_eq!(
        loaded,
        source_rows(server, &db, "SELECT id || ':' || v FROM rewound ORDER BY id")
    );

    // A source whose newest row is still newer than anything loaded is fine.
    server
        .psql(
            &db,
            "INSERT INTO rewound VALUES (101, '2024-03-01 12:30:00+00', 'new');",
        )
        .unwrap();
    job.ok(&["sync", path, "--now", "2024-03-01T13:00:00Z"]);
    let loaded = warehouse_rows(&job, "rewound");
    let planned = chunk_ranges(&job, "rewound");

    // Every cursor moves a day back: the newest value at the source is now older than the
    // newest one loaded, so a sync from the mark would never see these rows again.
    server
        .psql(
            &db,
            "UPDATE rewound SET updated_at = updated_at - interval '1 day', v = 'rewound' || id;",
        )
        .unwrap();
    let out = job.run(&["sync", path, "--now", "2024-03-01T14:00:00Z"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("source.cursor")
            && err.contains("public.rewound")
            && err.contains("2024-02-29T12:30:00Z")
            && err.contains("2024-03-01T12:30:00Z"),
        "{err}"
    );
    assert_eq!(chunk_ranges(&job, "rewound"), planned, "nothing planned");
    assert_eq!(warehouse_rows(&job, "rewound"), loaded, "nothing written");
}
