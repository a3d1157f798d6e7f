//! Behaviour the emulator cannot show, against an in-process server with the published
//! semantics and injected faults (`support/fake_server.rs`): lost answers, dropped
//! connections, throttling, refused rows, headers.

mod support;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use backhaul_bigquery_storage_write::{
    ClientConfig, CommitOutcome, Error, RetrySettings, Secret, StaticToken, TokenError, TokenProvider, WriteClient,
};
use backhaul_core::ErrorClass;
use futures::future::BoxFuture;
use support::fake_server::{FakeServer, Fault};
use tonic::Code;

const TABLE: &str = "projects/p/datasets/d/tables/t";

fn rows(first: i64, count: usize) -> RecordBatch {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(first..first + count as i64));
    let names: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..count).map(|i| format!("{:0>200}", i)),
    ));
    RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap()
}

fn config(server: &FakeServer) -> ClientConfig {
    let mut config = ClientConfig::new(server.endpoint.clone(), None);
    config.retry = RetrySettings {
        max_attempts: 4,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        throttle_factor: 2,
    };
    config.request_timeout = Duration::from_secs(20);
    config
}

async fn client(server: &FakeServer) -> WriteClient {
    WriteClient::connect_with(config(server)).await.unwrap()
}

#[tokio::test]
async fn an_append_whose_answer_was_lost_is_resent_and_applied_once() {
    let server = FakeServer::start().await;
    let client = client(&server).await;
    let mut stream = client.create_pending_stream(TABLE).await.unwrap();
    // The server applies the rows, then the connection drops before the answer arrives.
    server.inject([Fault::AfterApply(Code::Unavailable)]);
    assert_eq!(client.append(&mut stream, 0, &rows(0, 3)).await.unwrap(), 3);
    assert_eq!(client.append(&mut stream, 3, &rows(3, 2)).await.unwrap(), 5);
    client.flush(&mut stream).await.unwrap();
    // Sent twice at offset 0, the second answered ALREADY_EXISTS.
    assert_eq!(server.state.lock().unwrap().appends, [(0, 3), (0, 3), (3, 2)]);
    assert_eq!(client.finalize(&mut stream).await.unwrap(), 5);
    client.batch_commit(TABLE, &[stream.name()]).await.unwrap();
    assert_eq!(server.visible(TABLE), 5);
}

#[tokio::test]
async fn a_dropped_connection_is_retried_from_the_first_unacknowledged_piece() {
    let server = FakeServer::start().await;
    let mut config = config(&server);
    // ~200 bytes a row and a 64 KiB request limit: 1000 rows are several requests.
    config.max_request_bytes = 64 * 1024;
    let client = WriteClient::connect_with(config).await.unwrap();
    let mut stream = client.create_pending_stream(TABLE).await.unwrap();
    server.inject([
        Fault::Pass,
        Fault::Before(Code::Unavailable),
        Fault::Pass,
        Fault::InStream(Code::Internal),
    ]);
    assert_eq!(client.append(&mut stream, 0, &rows(0, 1000)).await.unwrap(), 1000);
    assert_eq!(client.finalize(&mut stream).await.unwrap(), 1000);
    let appends = server.state.lock().unwrap().appends.clone();
    let offsets: Vec<i64> = appends.iter().map(|(offset, _)| *offset).collect();
    let second = offsets[1];
    let third = offsets
        .iter()
        .copied()
        .filter(|&o| o > second)
        .min()
        .expect("a third request");
    // Re-sent from the first unacknowledged request, never from the batch's start.
    assert_eq!(offsets.iter().filter(|&&o| o == 0).count(), 1, "{offsets:?}");
    assert_eq!(offsets.iter().filter(|&&o| o == second).count(), 2, "{offsets:?}");
    assert!(offsets.iter().filter(|&&o| o == third).count() >= 2, "{offsets:?}");
    assert_eq!(server.state.lock().unwrap().rows_of_streams(), 1000);
}

#[tokio::test]
async fn throttling_is_retried_and_reported_as_throttled_when_it_persists() {
    let server = FakeServer::start().await;
    let client = client(&server).await;
    let mut stream = client.create_pending_stream(TABLE).await.unwrap();
    server.inject([Fault::InStream(Code::ResourceExhausted)]);
    assert_eq!(client.append(&mut stream, 0, &rows(0, 1)).await.unwrap(), 1);
    client.flush(&mut stream).await.unwrap();
    server.inject(std::iter::repeat_n(Fault::InStream(Code::ResourceExhausted), 4));
    client.append(&mut stream, 1, &rows(1, 1)).await.unwrap();
    let err = client.flush(&mut stream).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Throttled, "{err}");
    // Four attempts in all, as configured: 1 + 1 (first append, retried once) + 4.
    assert_eq!(server.state.lock().unwrap().appends.len(), 6);
}

#[tokio::test]
async fn a_permanent_failure_is_not_retried() {
    let server = FakeServer::start().await;
    let client = client(&server).await;
    let mut stream = client.create_pending_stream(TABLE).await.unwrap();
    server.inject([Fault::InStream(Code::InvalidArgument)]);
    client.append(&mut stream, 0, &rows(0, 2)).await.unwrap();
    let err = client.flush(&mut stream).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Append {
                code: Code::InvalidArgument,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(server.state.lock().unwrap().appends.len(), 1);
}

#[tokio::test]
async fn refused_rows_are_a_permanent_error_naming_the_rows_in_the_stream() {
    let server = FakeServer::start().await;
    let client = client(&server).await;
    let mut stream = client.create_pending_stream(TABLE).await.unwrap();
    client.append(&mut stream, 0, &rows(0, 3)).await.unwrap();
    client.flush(&mut stream).await.unwrap();
    server.inject([Fault::RowErrors(vec![1])]);
    client.append(&mut stream, 3, &rows(3, 3)).await.unwrap();
    let err = client.flush(&mut stream).await.unwrap_err();
    let Error::RowErrors { errors, offset, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*offset, 3);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].row, 4);
    assert!(errors[0].message.contains("amount"), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn a_table_that_does_not_exist_is_not_retried() {
    let server = FakeServer::start().await;
    let client = client(&server).await;
    let err = client
        .create_pending_stream("projects/p/datasets/d/tables/missing")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                code: Code::NotFound,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("tables/missing"),
        "the server's message: {err}"
    );
    assert_eq!(server.state.lock().unwrap().authorizations.len(), 1);
}

#[tokio::test]
async fn a_repeated_commit_of_committed_streams_is_success() {
    let server = FakeServer::start().await;
    let client = client(&server).await;
    let mut stream = client.create_pending_stream(TABLE).await.unwrap();
    client.append(&mut stream, 0, &rows(0, 2)).await.unwrap();
    client.finalize(&mut stream).await.unwrap();
    let first = client.batch_commit(TABLE, &[stream.name()]).await.unwrap();
    assert!(matches!(first, CommitOutcome::Committed { .. }));
    let again = client.batch_commit(TABLE, &[stream.name()]).await.unwrap();
    assert_eq!(again, CommitOutcome::AlreadyCommitted);
    assert_eq!(server.visible(TABLE), 2);
}

#[tokio::test]
async fn every_call_carries_the_bearer_token_and_the_routing_header() {
    let server = FakeServer::start().await;
    let mut config = config(&server);
    let token: Arc<dyn TokenProvider> = Arc::new(StaticToken(Secret::new("t0ken")));
    config.auth = Some(token);
    assert!(!format!("{config:?}").contains("t0ken"));
    let client = WriteClient::connect_with(config).await.unwrap();
    let mut stream = client.create_pending_stream(TABLE).await.unwrap();
    client.append(&mut stream, 0, &rows(0, 1)).await.unwrap();
    client.finalize(&mut stream).await.unwrap();
    client.batch_commit(TABLE, &[stream.name()]).await.unwrap();
    let state = server.state.lock().unwrap();
    assert_eq!(state.authorizations.len(), 4);
    assert!(
        state
            .authorizations
            .iter()
            .all(|a| a.as_deref() == Some("Bearer t0ken")),
        "{:?}",
        state.authorizations
    );
    let routings: Vec<&str> = state.routings.iter().map(|r| r.as_deref().unwrap_or("")).collect();
    assert_eq!(routings[0], "parent=projects%2Fp%2Fdatasets%2Fd%2Ftables%2Ft");
    assert!(routings[1].starts_with("write_stream=projects%2Fp%2F"), "{routings:?}");
    assert!(routings[2].starts_with("name=projects%2Fp%2F"), "{routings:?}");
    assert_eq!(routings[3], routings[0]);
}

#[tokio::test]
async fn a_silent_server_times_out_and_the_request_is_resent_once_applied() {
    let server = FakeServer::start().await;
    let mut config = config(&server);
    // Short, so the test does not wait long; a timeout is transient.
    config.request_timeout = Duration::from_millis(300);
    let client = WriteClient::connect_with(config).await.unwrap();
    let mut stream = client.create_pending_stream(TABLE).await.unwrap();
    server.inject([Fault::Silent]);
    client.append(&mut stream, 0, &rows(0, 4)).await.unwrap();
    client.flush(&mut stream).await.unwrap();
    assert_eq!(stream.acknowledged_rows(), 4);
    assert_eq!(server.state.lock().unwrap().rows_of_streams(), 4);
}

/// Fails `failures` times, the first `transient` of them as unavailable, then hands out a token.
struct FlakyToken {
    calls: std::sync::atomic::AtomicU32,
    failures: u32,
    refuse: bool,
}

impl TokenProvider for FlakyToken {
    fn token(&self) -> BoxFuture<'_, Result<Secret, TokenError>> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            match (call < self.failures, self.refuse) {
                (true, false) => Err(TokenError::Unavailable("metadata server unreachable".into())),
                (true, true) => Err(TokenError::Refused("no identity configured".into())),
                (false, _) => Ok(Secret::new("fresh")),
            }
        })
    }
}

#[tokio::test]
async fn an_unavailable_token_is_retried_and_a_refused_one_is_permanent() {
    let server = FakeServer::start().await;
    let mut config = config(&server);
    config.auth = Some(Arc::new(FlakyToken {
        calls: Default::default(),
        failures: 2,
        refuse: false,
    }));
    let client = WriteClient::connect_with(config.clone()).await.unwrap();
    client.create_pending_stream(TABLE).await.unwrap();
    assert_eq!(
        server.state.lock().unwrap().authorizations,
        [Some("Bearer fresh".to_string())]
    );

    config.auth = Some(Arc::new(FlakyToken {
        calls: Default::default(),
        failures: 1,
        refuse: true,
    }));
    let client = WriteClient::connect_with(config).await.unwrap();
    let err = client.create_pending_stream(TABLE).await.unwrap_err();
    assert!(matches!(err, Error::TokenRefused(_)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn endpoints_are_checked_and_an_unreachable_one_is_transient() {
    let err = WriteClient::connect("ftp://example.invalid", None).await.unwrap_err();
    assert!(matches!(err, Error::InvalidEndpoint { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent);

    // A port that accepts TCP and closes: the TLS handshake (rustls on ring) fails.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let closer = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let mut config = ClientConfig::new(format!("https://127.0.0.1:{port}"), None);
    config.connect_timeout = Duration::from_secs(5);
    let err = WriteClient::connect_with(config).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    closer.abort();
}
