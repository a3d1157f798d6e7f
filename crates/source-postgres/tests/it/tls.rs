//! TLS with rustls: verify_full against the right CA works, verify_ca ignores the host name,
//! a wrong CA or no TLS at all is refused permanently.

use backhaul_core::ErrorClass;
use backhaul_core::connector::Source;
use backhaul_core::spec::database::{TlsMode, TlsSpec};
use backhaul_testkit::postgres::{PostgresOptions, PostgresServer};

use crate::util::{all_time, extract_all, rows, source, spec};

#[tokio::test]
async fn tls_modes_verify_the_server() {
    let server = PostgresServer::start(PostgresOptions { tls: true }).unwrap();
    server
        .psql(
            "postgres",
            "CREATE TABLE t (ts timestamptz NOT NULL); INSERT INTO t VALUES ('2024-01-01'), ('2024-01-02');",
        )
        .unwrap();
    let files = server.tls_files().unwrap().clone();
    let base = spec(&server, "postgres", "t", "ts");

    // No TLS: the server's pg_hba rejects plain TCP.
    let e = source(&base).describe().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");

    // verify_full by name: the certificate is for `localhost`.
    let mut full = base.clone();
    full.connection.host = "localhost".into();
    full.connection.tls = TlsSpec {
        mode: TlsMode::VerifyFull,
        ca_file: Some(files.ca_cert.clone()),
    };
    assert_eq!(rows(&extract_all(&source(&full), all_time(), 10).await.unwrap()), 2);

    // A CA that did not sign the server's certificate: refused, permanently.
    let mut wrong = full.clone();
    wrong.connection.tls.ca_file = Some(files.other_ca_cert.clone());
    let e = source(&wrong).describe().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");

    // By address, the name on the certificate does not match: verify_full refuses,
    // verify_ca (chain only) accepts, and still refuses a wrong CA.
    let mut by_ip = full.clone();
    by_ip.connection.host = "127.0.0.1".into();
    let e = source(&by_ip).describe().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    by_ip.connection.tls.mode = TlsMode::VerifyCa;
    assert_eq!(rows(&extract_all(&source(&by_ip), all_time(), 10).await.unwrap()), 2);
    let mut wrong_ca = by_ip.clone();
    wrong_ca.connection.tls.ca_file = Some(files.other_ca_cert.clone());
    let e = source(&wrong_ca).describe().await.unwrap_err();
    assert_eq!(
        e.class(),
        ErrorClass::Permanent,
        "verify_ca still checks the chain: {e}"
    );
}
