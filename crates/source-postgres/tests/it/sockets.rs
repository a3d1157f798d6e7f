//! The source opens its own sockets (buffered reads, crates/source-postgres/src/transport.rs):
//! a host name is resolved, a directory is a Unix socket, and a large COPY reads whole.

use backhaul_core::ErrorClass;
use backhaul_core::connector::Source;
use backhaul_testkit::postgres::{PostgresOptions, PostgresServer};

use crate::util::{all_time, extract_all, rows, source, spec};

const ROWS: usize = 100_000;

fn table(server: &PostgresServer) {
    server
        .psql(
            "postgres",
            &format!(
                "CREATE TABLE t (id bigint PRIMARY KEY, ts timestamptz NOT NULL, pad text NOT NULL); \
                 INSERT INTO t SELECT g, timestamptz '2024-01-01' + g * interval '1 second', repeat('x', g % 300) \
                 FROM generate_series(1, {ROWS}) g;"
            ),
        )
        .unwrap();
}

#[tokio::test]
async fn host_names_and_unix_socket_directories_connect() {
    let server = PostgresServer::start(PostgresOptions::default()).unwrap();
    table(&server);

    let mut by_name = spec(&server, "postgres", "t", "ts");
    by_name.connection.host = "localhost".into();
    let batches = extract_all(&source(&by_name), all_time(), 8_192).await.unwrap();
    assert_eq!(rows(&batches), ROWS);

    let mut by_socket = spec(&server, "postgres", "t", "ts");
    by_socket.connection.host = server.socket_dir().display().to_string();
    let batches = extract_all(&source(&by_socket), all_time(), 8_192).await.unwrap();
    assert_eq!(rows(&batches), ROWS);

    // No server behind a socket directory is as transient as a refused TCP port.
    let mut nowhere = by_socket.clone();
    nowhere.connection.port = Some(1);
    let e = source(&nowhere).describe().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");
    assert!(e.to_string().contains("connect"), "{e}");
}
