//! The Arrow Flight data plane: previews over TLS and mutual TLS (and who is refused), TLS
//! files that are missing or not PEM, and cluster-mode profiling, where only a worker holds
//! the source's credentials.

use std::path::Path;
use std::time::Duration;

use backhaul_proto::{ClientConfig, ClientTls, Token};
use backhaul_testkit::postgres::PostgresServer;
use backhaul_worker::flight::DataPlaneClient;
use futures::TryStreamExt;

use crate::auth::{TOKEN, make_certs, with_token_file};
use crate::cluster::{Coordinator, client, client_json, start_worker, start_worker_with_env, wait_until};
use crate::util::{JobDir, JobParams, text};

fn path(job: &JobDir, name: &str) -> String {
    job.path().join(name).to_str().unwrap().to_string()
}

/// The worker flags of a Flight port serving `server.pem` over TLS, wanting client
/// certificates signed by `client_ca`.
fn flight_tls_flags(job: &JobDir, client_ca: &str) -> Vec<String> {
    vec![
        "--flight-listen".into(),
        "127.0.0.1:0".into(),
        "--flight-tls-cert".into(),
        path(job, "server.pem"),
        "--flight-tls-key".into(),
        path(job, "server.key"),
        "--flight-tls-client-ca".into(),
        client_ca.into(),
    ]
}

/// Reads a DoGet on `ticket` from `url` with `config`'s token and TLS; the error text if it fails.
async fn fetch(config: ClientConfig, ticket: Vec<u8>) -> Result<usize, String> {
    let worker = DataPlaneClient::connect(&config).map_err(|e| e.to_string())?;
    let batches: Vec<_> = worker
        .do_get(ticket)
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(batches.iter().map(|b| b.num_rows()).sum())
}

#[test]
fn preview_over_mutual_tls_and_who_is_refused() {
    let job = JobDir::new(&JobParams::default());
    make_certs(job.path());
    let token = with_token_file(&job);
    let (ca, cert, key) = (path(&job, "ca.pem"), path(&job, "client.pem"), path(&job, "client.key"));
    let coordinator = Coordinator::start(
        &job,
        "127.0.0.1:0",
        &[
            "--token-file",
            &token,
            "--tls-cert",
            &path(&job, "server.pem"),
            "--tls-key",
            &path(&job, "server.key"),
        ],
    );
    let url = format!("https://{}", coordinator.addr);
    let spec = job.spec();
    client_json(
        &job,
        &[
            "submit",
            spec.to_str().unwrap(),
            "--coordinator",
            &url,
            "--tls-ca",
            &ca,
            "--token-file",
            &token,
        ],
        &[],
    );
    // The worker's Flight port serves TLS and wants client certificates from the same CA.
    let flight_tls = flight_tls_flags(&job, &ca);
    let mut worker_args = vec!["--tls-ca", &ca, "--token-file", &token];
    worker_args.extend(flight_tls.iter().map(String::as_str));
    let mut w = start_worker(&job, &url, "tls-flight-worker", &worker_args);
    wait_until("the job to finish", Duration::from_secs(120), || {
        job.count_committed("orders") == 10
    });
    assert!(w.log_text().contains("mutual_tls=true"), "{}", w.log_text());
    let preview = |tls: &[&str]| {
        let mut args = vec![
            "preview",
            "orders",
            "--chunk",
            "4",
            "--limit",
            "3",
            "--coordinator",
            &url,
            "--token-file",
            &token,
            "--output",
            "json",
        ];
        args.extend_from_slice(tls);
        client(&job, &args, &[])
    };

    // CA and client certificate: the rows arrive, from an https:// Flight URL.
    let out = preview(&["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), w.log_text());
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(3), "{v}");
    let flight_url = v["worker"].as_str().unwrap().to_string();
    assert!(flight_url.starts_with("https://127.0.0.1:"), "{v}");

    // Without a client certificate the coordinator answers (it does not ask for one), the
    // worker's Flight port does not.
    let out = preview(&["--tls-ca", &ca]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stdout);
    assert!(err.contains(&format!("worker at {flight_url}")), "{err}");

    // Straight at the Flight port, with a ticket the coordinator issued.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut coordinator_client = ClientConfig {
            token: Some(Token::new(TOKEN).unwrap()),
            tls: Some(ClientTls {
                ca: Some(ca.clone().into()),
                ..ClientTls::default()
            }),
            ..ClientConfig::plain(url.clone())
        }
        .connect_lazy()
        .unwrap();
        let ticket = coordinator_client
            .preview_chunk(backhaul_proto::v1::PreviewChunkRequest {
                job_id: "orders".into(),
                chunk_id: 4,
                limit: 3,
            })
            .await
            .unwrap()
            .into_inner()
            .ticket;
        let trusted = ClientTls {
            ca: Some(ca.clone().into()),
            cert: Some(cert.clone().into()),
            key: Some(key.clone().into()),
            domain: None,
        };
        let config = |url: &str, token: Option<&str>, tls: Option<ClientTls>| ClientConfig {
            token: token.map(|t| Token::new(t).unwrap()),
            tls,
            ..ClientConfig::plain(url)
        };
        assert_eq!(
            fetch(config(&flight_url, Some(TOKEN), Some(trusted.clone())), ticket.clone()).await,
            Ok(3)
        );
        // Plain text against the TLS port.
        let plain_url = flight_url.replace("https://", "http://");
        let err = fetch(config(&plain_url, Some(TOKEN), None), ticket.clone())
            .await
            .expect_err("plain text was served");
        assert!(err.contains(&format!("worker at {plain_url}")), "{err}");
        // A CA that did not sign the worker's certificate.
        let wrong_ca = ClientTls {
            ca: Some(job.path().join("other-ca.pem")),
            ..trusted.clone()
        };
        let err = fetch(config(&flight_url, Some(TOKEN), Some(wrong_ca)), ticket.clone())
            .await
            .expect_err("a server certificate from an untrusted CA was accepted");
        assert!(err.contains("UnknownIssuer"), "{err}");
        // A client certificate from another CA.
        let stranger = ClientTls {
            cert: Some(job.path().join("stranger.pem")),
            key: Some(job.path().join("stranger.key")),
            ..trusted.clone()
        };
        fetch(config(&flight_url, Some(TOKEN), Some(stranger)), ticket.clone())
            .await
            .expect_err("a stranger's client certificate was accepted");
        // No token, or a wrong one: refused by the worker, whose log keeps no secret.
        let err = fetch(config(&flight_url, None, Some(trusted.clone())), ticket.clone())
            .await
            .expect_err("served without a token");
        assert!(
            err.contains("requires a valid token") && err.contains("Unauthenticated"),
            "{err}"
        );
        let wrong = "tok-wrong-0000000000";
        fetch(config(&flight_url, Some(wrong), Some(trusted)), ticket)
            .await
            .expect_err("served with a wrong token");
        let log = w.log_text();
        assert!(log.contains("refused an unauthenticated gRPC call"), "{log}");
        assert!(
            log.contains("no authorization header") && log.contains("wrong token"),
            "{log}"
        );
        assert!(
            !log.contains(TOKEN) && !log.contains(wrong),
            "the worker logged a token"
        );
    });
    drop(rt);
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

#[test]
fn missing_or_malformed_tls_files_and_an_open_flight_port_stop_at_start() {
    let job = JobDir::new(&JobParams::default());
    make_certs(job.path());
    std::fs::write(job.path().join("notes.pem"), "not a certificate\n").unwrap();
    let (missing, notes) = (path(&job, "missing-ca.pem"), path(&job, "notes.pem"));

    // A client: before any connection is tried.
    for (ca, expect) in [(&missing, "No such file"), (&notes, "holds no PEM certificate")] {
        let out = client(
            &job,
            &["status", "--coordinator", "https://127.0.0.1:9", "--tls-ca", ca],
            &[],
        );
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains(&format!("{ca}: ")) && err.contains(expect), "{err}");
    }
    // A client key that is not a key.
    let out = client(
        &job,
        &[
            "status",
            "--coordinator",
            "https://127.0.0.1:9",
            "--tls-ca",
            &path(&job, "ca.pem"),
            "--tls-cert",
            &path(&job, "client.pem"),
            "--tls-key",
            &path(&job, "client.pem"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("client.pem: holds no readable PEM private key"), "{err}");

    // A coordinator and a worker's Flight port refuse to start.
    let out = job.run(&[
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &path(&job, "server.pem"),
        "--tls-key",
        &path(&job, "server.key"),
        "--tls-client-ca",
        &notes,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("{notes}: holds no PEM certificate")),
        "{}",
        text(&out.stderr)
    );
    for (ca, expect) in [(&missing, "No such file"), (&notes, "holds no PEM certificate")] {
        let mut args = vec!["worker", "--coordinator", "http://127.0.0.1:9"];
        let flight_tls = flight_tls_flags(&job, ca);
        args.extend(flight_tls.iter().map(String::as_str));
        let out = job.run(&args);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.contains("--flight-tls") && err.contains(&format!("{ca}: ")) && err.contains(expect),
            "{err}"
        );
    }
    // A Flight port reachable from other machines needs a token.
    let out = client(
        &job,
        &[
            "worker",
            "--coordinator",
            "http://127.0.0.1:9",
            "--flight-listen",
            "0.0.0.0:0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("without a token"), "{}", text(&out.stderr));
}

/// A PostgreSQL table of 60,000 events over ten days, analyzed.
fn events_table(server: &PostgresServer) -> String {
    let db = server.fresh_database();
    server
        .psql(
            &db,
            "CREATE TABLE events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, amount numeric(12,2), note text); \
             INSERT INTO events SELECT g, timestamptz '2024-02-01 00:00:00+00' + (g - 1) * interval '14.4 seconds', \
               (g % 1000) / 10.0, CASE WHEN g % 7 = 0 THEN NULL ELSE repeat('x', g % 40) END \
             FROM generate_series(1, 60000) g; \
             CREATE INDEX ON events (ts); ANALYZE events;",
        )
        .unwrap();
    db
}

const PASSWORD_ENV: &str = "BACKHAUL_TEST_WORKER_PG_PASSWORD";

fn events_spec(server: &PostgresServer, db: &str, table: &str) -> String {
    format!(
        r#"version = 1
name = "events"

[source]
kind = "postgres"
host = "{host}"
port = {port}
user = "{user}"
database = "{db}"
table = "{table}"
cursor = "ts"

[source.password]
env = "{PASSWORD_ENV}"

[range]
from = "2024-02-01"
to = "2024-02-11"

[chunking]
policy = "fixed"
every = "1d"

[stage]
path = "/nonexistent/backhaul-stage-only-on-workers"

[destination]
kind = "local"
path = "/nonexistent/backhaul-warehouse-only-on-workers"
table = "events"
"#,
        host = server.host(),
        port = server.port(),
        user = server.user(),
    )
}

fn load_profile(file: &Path) -> backhaul_cost::profile::TableProfile {
    let mut p = backhaul_cost::profile::Profile::load(file).unwrap();
    assert_eq!(p.tables.len(), 1);
    p.tables.remove(0)
}

fn number(d: &backhaul_cost::money::Dec) -> f64 {
    d.0.to_string().parse().unwrap()
}

#[test]
fn profile_in_cluster_mode_reads_the_source_on_a_worker() {
    let server = PostgresServer::shared();
    let db = events_table(server);
    let job = JobDir::new(&JobParams::default());
    job.write_spec("events.toml", &events_spec(server, &db, "public.events"));
    let password = server.password().to_string();

    // This machine alone has no password: the clear missing-credential error.
    let out = job.run(&["profile", "events.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(PASSWORD_ENV) && err.contains("is not set"), "{err}");

    // With the password here: the reference profile (stage and destination are not touched).
    let out = job
        .cmd()
        .args(["profile", "events.toml", "-o", "local.json"])
        .env(PASSWORD_ENV, &password)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let local = load_profile(&job.path().join("local.json"));

    // A cluster whose worker alone has the password.
    let token = with_token_file(&job);
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &["--token-file", &token]);
    let url = coordinator.url();
    let mut w = start_worker_with_env(
        &job,
        &url,
        "profiling-worker",
        &["--token-file", &token, "--flight-listen", "127.0.0.1:0"],
        &[(PASSWORD_ENV, &password)],
    );
    wait_until("the worker to ask for work", Duration::from_secs(60), || {
        coordinator.metric("backhaul_coordinator_lease_requests_empty_total") >= 1.0
    });
    let cluster = ["--coordinator", url.as_str(), "--token-file", token.as_str()];
    let mut args = vec!["profile", "events.toml", "-o", "remote.json"];
    args.extend_from_slice(&cluster);
    let out = client(&job, &args, &[]);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), w.log_text());
    let remote = load_profile(&job.path().join("remote.json"));
    assert!(w.log_text().contains("serving an extract"), "{}", w.log_text());

    assert_eq!(remote.rows.value, local.rows.value);
    assert_eq!(remote.rows.bound, local.rows.bound);
    assert_eq!(remote.chunks, local.chunks);
    assert_eq!(remote.primary_key, vec!["id".to_string()]);
    assert_eq!(remote.sample.rows, local.sample.rows);
    assert_eq!(remote.bytes_per_row.logical, local.bytes_per_row.logical);
    assert_eq!(remote.bytes_per_row.airbyte_json, local.bytes_per_row.airbyte_json);
    // Batches may be cut differently on the wire, which moves Parquet page boundaries a little.
    let (r, l) = (
        number(&remote.bytes_per_row.parquet_zstd),
        number(&local.bytes_per_row.parquet_zstd),
    );
    assert!(
        (r - l).abs() <= 0.05 * l,
        "zstd Parquet bytes/row: remote {r}, local {l}"
    );
    assert_eq!(
        remote.activity.inserts.map(|m| m.value),
        local.activity.inserts.map(|m| m.value)
    );

    // `cost` profiles live through the cluster too.
    let mut args = vec!["cost", "events.toml", "--as-of", "2026-11-01"];
    args.extend_from_slice(&cluster);
    let report = client_json(&job, &args, &[]);
    assert_eq!(report["job"], "events", "{report}");

    // A source error on the worker arrives typed: permanent, naming the worker.
    job.write_spec("missing.toml", &events_spec(server, &db, "public.no_such_table"));
    let mut args = vec!["profile", "missing.toml", "--output", "json"];
    args.extend_from_slice(&cluster);
    let out = client(&job, &args, &[]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).expect("json error");
    assert_eq!(v["error"]["class"], "permanent", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("worker at http://127.0.0.1:") && message.contains("no_such_table"),
        "{v}"
    );

    // Nothing the CLI printed or the worker logged holds the password or the token.
    for log in [w.log_text(), coordinator.proc.log_text()] {
        assert!(!log.contains(&password) && !log.contains(TOKEN));
    }
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait_exit(Duration::from_secs(30)).code(), Some(0));
}
