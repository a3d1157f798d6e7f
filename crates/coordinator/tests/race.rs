//! Many workers racing over real gRPC for the same chunks: a chunk is never held by two
//! workers under the same attempt, and exactly one completion per chunk is accepted even when
//! leases expire and are re-leased while their first holders are still working.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backhaul_proto::ClientConfig;
use backhaul_proto::v1 as pb;

fn output(chunk: u64) -> pb::ChunkOutput {
    pb::ChunkOutput {
        files: vec![],
        extracted_rows: chunk,
        extracted_checksum: chunk * 7,
        committed_rows: chunk,
        committed_checksum: chunk * 7,
        // As a worker that predates proofs sends it: the coordinator reads an exact proof.
        ..Default::default()
    }
}

/// Each worker leases (up to `per_call` chunks a call) until the job is finished and works on
/// its chunks one after the other; `hold` says how long it works on a chunk.
async fn race(
    url: String,
    workers: usize,
    per_call: u32,
    hold: fn(u64, u32) -> Duration,
) -> (Vec<(u64, u32)>, Vec<(u64, u32)>) {
    let leased = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let mut client = ClientConfig::plain(url.clone()).connect_lazy().unwrap();
        let (leased, accepted) = (leased.clone(), accepted.clone());
        set.spawn(async move {
            loop {
                let resp = client
                    .lease_chunk(pb::LeaseChunkRequest {
                        worker_id: format!("w{w}"),
                        job_id: "race".into(),
                        flight_url: String::new(),
                        max_leases: per_call,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                match resp.outcome.unwrap() {
                    pb::lease_chunk_response::Outcome::Lease(first) => {
                        let held: Vec<_> = std::iter::once(first).chain(resp.more_leases).collect();
                        assert!(held.len() <= per_call.max(1) as usize, "more leases than asked for");
                        leased
                            .lock()
                            .unwrap()
                            .extend(held.iter().map(|l| (l.chunk_id, l.attempt)));
                        for l in held {
                            tokio::time::sleep(hold(l.chunk_id, l.attempt)).await;
                            let done = client
                                .complete_chunk(pb::CompleteChunkRequest {
                                    lease_id: l.lease_id.clone(),
                                    output: Some(output(l.chunk_id)),
                                    breaker: None,
                                })
                                .await;
                            match done {
                                Ok(_) => accepted.lock().unwrap().push((l.chunk_id, l.attempt)),
                                Err(s) => assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}"),
                            }
                        }
                    }
                    pb::lease_chunk_response::Outcome::NoWork(nw) if nw.job_finished => return,
                    pb::lease_chunk_response::Outcome::NoWork(nw) => {
                        tokio::time::sleep(Duration::from_millis(u64::from(nw.retry_after_ms.min(20)))).await
                    }
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let leased = leased.lock().unwrap().clone();
    let accepted = accepted.lock().unwrap().clone();
    (leased, accepted)
}

/// Racing workers asking for `per_call` leases a call get every chunk exactly once.
async fn distinct_chunks(per_call: u32) {
    let support::ServedJob {
        _dir,
        store,
        url,
        stop,
        server,
    } = support::serve_job("race", 400, Duration::from_secs(60)).await;
    let (leased, accepted) = race(url, 16, per_call, |_, _| Duration::ZERO).await;
    let unique: HashSet<_> = leased.iter().collect();
    assert_eq!(unique.len(), leased.len(), "a (chunk, attempt) was handed out twice");
    assert_eq!(leased.len(), 400, "every chunk leased exactly once");
    assert!(leased.iter().all(|(_, attempt)| *attempt == 1));
    assert_eq!(accepted.len(), 400);
    let s = store.call(|s, c| s.summary(c, "race")).await.unwrap();
    assert_eq!((s.committed, s.committed_rows), (400, (0..400).sum()));
    stop.cancel();
    let _ = server.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_workers_each_get_distinct_chunks() {
    distinct_chunks(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_batch_leases_each_get_distinct_chunks() {
    distinct_chunks(7).await;
}

/// Leases run out while their holders still work, chunks are re-leased, and both holders
/// try to complete: exactly one completion per chunk is accepted, the newest attempt's.
async fn one_completion_per_chunk(per_call: u32, hold: fn(u64, u32) -> Duration) {
    let support::ServedJob {
        _dir,
        store,
        url,
        stop,
        server,
    } = support::serve_job("race", 120, Duration::from_millis(150)).await;
    let (leased, accepted) = race(url, 12, per_call, hold).await;
    let unique: HashSet<_> = leased.iter().collect();
    assert_eq!(unique.len(), leased.len(), "a (chunk, attempt) was handed out twice");
    assert!(leased.len() > 120, "no lease expired, the test proves nothing");
    let mut per_chunk: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for (chunk, attempt) in &accepted {
        per_chunk.entry(*chunk).or_default().push(*attempt);
    }
    assert_eq!(per_chunk.len(), 120, "every chunk was completed");
    let chunks = store.call(|s, c| s.chunks(c, "race")).await.unwrap();
    for c in chunks {
        let got = &per_chunk[&c.chunk_id];
        assert_eq!(got.len(), 1, "chunk {} accepted {got:?}", c.chunk_id);
        assert_eq!(
            got[0], c.attempt,
            "the accepted completion is the chunk's newest attempt"
        );
    }
    stop.cancel();
    let _ = server.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiring_leases_let_exactly_one_completion_per_chunk_through() {
    // First holders of every third chunk work past the TTL without heartbeats.
    one_completion_per_chunk(1, |chunk, attempt| {
        Duration::from_millis(if chunk % 3 == 0 && attempt == 1 { 400 } else { 5 })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiring_batch_leases_let_exactly_one_completion_per_chunk_through() {
    // A worker holding four leases works on them in turn, so the later ones of a batch run
    // out (and are re-leased) before their holder gets to them.
    one_completion_per_chunk(4, |_, attempt| Duration::from_millis(if attempt == 1 { 60 } else { 5 })).await;
}
