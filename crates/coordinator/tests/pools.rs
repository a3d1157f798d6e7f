//! Rate-limit pools over the real gRPC service: leasing, merging, reports, status and metrics.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use backhaul_coordinator::clock::ManualClock;
use backhaul_coordinator::{CoordinatorService, RatePools, RetryPolicy, ServeOptions, Store, serve};
use backhaul_core::registry::Registry;
use backhaul_proto::ClientConfig;
use backhaul_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

fn pool(rate: f64, burst: u32, cap: Option<u64>) -> pb::RatePool {
    pb::RatePool {
        name: "vendor".into(),
        requests_per_second: rate,
        burst,
        daily_cap: cap,
    }
}

fn ask(pool: pb::RatePool, want: u32) -> pb::LeaseTokensRequest {
    pb::LeaseTokensRequest {
        worker_id: "w".into(),
        pool: Some(pool),
        want,
        throttled: 0,
        retry_after_ms: 0,
    }
}

#[tokio::test]
async fn workers_lease_tokens_over_grpc_and_status_shows_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_exclusive(&dir.path().join("state.db")).unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let pools = Arc::new(RatePools::new(clock.clone()));
    let service = CoordinatorService::new(
        Arc::new(store.clone()),
        Arc::new(Registry::new()),
        Duration::from_secs(30),
        RetryPolicy::default(),
    )
    .with_pools(pools.clone());
    let metrics = service.metrics();
    let stop = CancellationToken::new();
    let (addr, server) = serve(
        service,
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ServeOptions::default(),
        stop.clone(),
    )
    .await
    .unwrap();
    let server = tokio::spawn(server);
    let mut client = ClientConfig::plain(format!("http://{addr}")).connect_lazy().unwrap();

    // 20/s burst 10: the bucket holds 5, tokens are good for 225 ms.
    let r = client
        .lease_tokens(ask(pool(20.0, 10, None), 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.granted, r.valid_ms, r.wait_ms, r.daily_cap_spent),
        (5, 225, 0, false)
    );
    let r = client
        .lease_tokens(ask(pool(20.0, 10, None), 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.granted, r.wait_ms), (0, 50));

    // A second job declares it stricter (10/s, cap 100): the strictest of each is in force.
    clock.advance(Duration::from_secs(1));
    let r = client
        .lease_tokens(ask(pool(10.0, 30, Some(100)), 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.granted, r.valid_ms), (5, 450));

    // Two 429s with Retry-After 3 s: closed for 3 s, rate halved.
    let mut report = ask(pool(20.0, 10, None), 1);
    report.throttled = 2;
    report.retry_after_ms = 3000;
    let r = client.lease_tokens(report).await.unwrap().into_inner();
    assert_eq!((r.granted, r.wait_ms), (0, 3000));

    // A pool that cannot be valid is refused, naming the key.
    let e = client.lease_tokens(ask(pool(0.0, 1, None), 1)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("pool.requests_per_second"), "{}", e.message());

    let listed = client.list_jobs(pb::ListJobsRequest {}).await.unwrap().into_inner();
    assert_eq!(listed.pools.len(), 1);
    let p = &listed.pools[0];
    assert_eq!(
        (p.name.as_str(), p.configured_rate, p.burst, p.daily_cap),
        ("vendor", 10.0, 10, Some(100))
    );
    assert_eq!(
        (
            p.current_rate,
            p.tokens_granted,
            p.waits,
            p.throttled_reported,
            p.daily_used
        ),
        (5.0, 10, 2, 2, 10)
    );

    let text = metrics.render(&store, &pools.snapshot()).await.unwrap();
    for line in [
        "backhaul_coordinator_pool_tokens_granted_total{pool=\"vendor\"} 10",
        "backhaul_coordinator_pool_lease_waits_total{pool=\"vendor\"} 2",
        "backhaul_coordinator_pool_throttled_total{pool=\"vendor\"} 2",
        "backhaul_coordinator_pool_rate{pool=\"vendor\"} 5",
        "backhaul_coordinator_pool_configured_rate{pool=\"vendor\"} 10",
        "backhaul_coordinator_pool_daily_used{pool=\"vendor\"} 10",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    let page = backhaul_coordinator::page::index_page(&[], &pools.snapshot());
    assert!(page.contains("<tr data-pool=\"vendor\">"), "{page}");

    stop.cancel();
    server.await.unwrap().unwrap();
}
