//! Who may talk to a coordinator: a shared token, refused calls logged without secrets,
//! malformed requests answered with errors (never a crash), and TLS / mutual TLS.

use std::io::Write;
use std::time::Duration;

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

use crate::cluster::{Coordinator, client, client_json, http_get_authorized, start_worker_with_env, wait_until};
use crate::util::{JobDir, JobParams, text};

pub(crate) const TOKEN: &str = "tok-3f9a1c7e5b2d4a60";

pub(crate) fn with_token_file(job: &JobDir) -> String {
    let path = job.path().join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn calls_without_the_token_are_refused_and_logged_without_secrets() {
    let job = JobDir::new(&JobParams::default());
    let token_file = with_token_file(&job);
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &["--token-file", &token_file]);
    let url = coordinator.url();

    // No token: refused, exit 1, and the message says what is missing.
    let out = client(&job, &["status", "--coordinator", &url], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("requires a valid token") && err.contains("Unauthenticated"),
        "{err}"
    );

    // A wrong token from the environment: refused too.
    let wrong = "tok-0000000000000000";
    let out = client(&job, &["status", "--coordinator", &url], &[("BACKHAUL_TOKEN", wrong)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    // The right one, from a file or the environment.
    client_json(
        &job,
        &["status", "--coordinator", &url, "--token-file", &token_file],
        &[],
    );
    client_json(&job, &["status", "--coordinator", &url], &[("BACKHAUL_TOKEN", TOKEN)]);
    let spec = job.spec();
    client_json(
        &job,
        &["submit", spec.to_str().unwrap(), "--coordinator", &url],
        &[("BACKHAUL_TOKEN", TOKEN)],
    );

    // A worker with the wrong token gets nothing and keeps asking; with the right one it runs the job.
    let intruder_http = job.path().join("intruder.http");
    let mut intruder = start_worker_with_env(
        &job,
        &url,
        "intruder",
        &[
            "--job",
            "orders",
            "--http-listen",
            "127.0.0.1:0",
            "--http-addr-file",
            intruder_http.to_str().unwrap(),
        ],
        &[("BACKHAUL_TOKEN", wrong)],
    );
    wait_until("the intruder to be refused", Duration::from_secs(30), || {
        intruder.log_text().contains("Unauthenticated")
    });
    // A worker's HTTP side takes the worker's own token (the intruder keeps running, so its
    // /metrics can be asked): refused without it, served with it, probes always open.
    let intruder_http: std::net::SocketAddr = std::fs::read_to_string(&intruder_http).unwrap().trim().parse().unwrap();
    assert_eq!(http_get_authorized(intruder_http, "/metrics", None).0, 401);
    let intruder_bearer = format!("Bearer {wrong}");
    assert_eq!(
        http_get_authorized(intruder_http, "/metrics", Some(&intruder_bearer)).0,
        200
    );
    assert_eq!(http_get_authorized(intruder_http, "/healthz", None).0, 200);
    assert!(intruder.is_running());
    assert_eq!(
        crate::cluster::chunks(&job, "orders")
            .iter()
            .filter(|c| c.attempt > 0)
            .count(),
        0
    );
    let mut w = start_worker_with_env(
        &job,
        &url,
        "worker",
        &["--job", "orders", "--token-file", &token_file],
        &[],
    );
    assert!(w.wait_exit(Duration::from_secs(120)).success(), "{}", w.log_text());
    intruder.signal(libc::SIGTERM);
    intruder.wait_exit(Duration::from_secs(30));

    // The coordinator's status page and /metrics: refused without the token (a browser is
    // asked for basic credentials), served with it as a bearer token or a basic password.
    let http = coordinator.http.expect("http listener");
    let bearer = format!("Bearer {TOKEN}");
    for path in ["/", "/jobs/orders", "/metrics"] {
        let (code, body) = http_get_authorized(http, path, None);
        assert_eq!(code, 401, "{path}: {body}");
        assert!(!body.contains("orders"), "{path} leaked content: {body}");
        assert_eq!(http_get_authorized(http, path, Some("Bearer tok-wrong")).0, 401);
        assert_eq!(http_get_authorized(http, path, Some(&bearer)).0, 200, "{path}");
    }
    // `anyone:<token>` in base64, as a browser sends it.
    let basic = format!("Basic {}", base64_encode(&format!("anyone:{TOKEN}")));
    let (code, page) = http_get_authorized(http, "/jobs/orders", Some(&basic));
    assert_eq!(code, 200);
    assert!(page.contains("orders"), "{page}");
    assert_eq!(
        http_get_authorized(http, "/healthz", None).0,
        200,
        "probes need no token"
    );

    let log = coordinator.proc.log_text();
    assert!(log.contains("refused an unauthenticated HTTP request"), "{log}");
    assert!(log.contains("refused an unauthenticated gRPC call"), "{log}");
    assert!(
        log.contains("/backhaul.v1.Coordinator/ListJobs"),
        "the refusal names the method: {log}"
    );
    assert!(
        log.contains("wrong token") && log.contains("no authorization header"),
        "{log}"
    );
    for secret in [TOKEN, wrong] {
        assert!(!log.contains(secret), "the coordinator logged a token");
        assert!(!intruder.log_text().contains(secret), "the worker logged its token");
    }
    assert_eq!(job.json(&["verify", "orders"])["verified"], true);
}

/// Standard base64 with padding (test-only; the server decodes with the `base64` crate).
fn base64_encode(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in text.as_bytes().chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn coordinator_on_a_public_address_needs_a_token() {
    let job = JobDir::new(&JobParams::default());
    let out = job.run(&["coordinator", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("without a token"), "{}", text(&out.stderr));
}

/// Sends raw bytes as a gRPC message body, whatever the method expects.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_call(url: &str, method: &'static str, body: Vec<u8>, token: Option<&str>) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut req = tonic::Request::new(body);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    grpc.unary::<_, Vec<u8>, _>(req, PathAndQuery::from_static(method), RawCodec)
        .await
        .expect_err("a malformed call must fail")
}

#[test]
fn malformed_requests_are_refused_and_the_coordinator_carries_on() {
    let job = JobDir::new(&JobParams::default());
    let token_file = with_token_file(&job);
    let coordinator = Coordinator::start(&job, "127.0.0.1:0", &["--token-file", &token_file]);
    let url = coordinator.url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Bytes that are not a protobuf message.
        let s = raw_call(&url, "/backhaul.v1.Coordinator/Heartbeat", vec![0xff; 7], Some(TOKEN)).await;
        assert_eq!(s.code(), tonic::Code::Internal, "{s:?}");
        // The same without a token is refused before it is even decoded.
        let s = raw_call(&url, "/backhaul.v1.Coordinator/Heartbeat", vec![0xff; 7], None).await;
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
        // A method that does not exist.
        let s = raw_call(&url, "/backhaul.v1.Coordinator/DropAllJobs", vec![], Some(TOKEN)).await;
        assert_eq!(s.code(), tonic::Code::Unimplemented, "{s:?}");
        // Well-formed messages with nonsense lease ids: fenced, not trusted.
        let mut c = backhaul_proto::ClientConfig {
            token: Some(backhaul_proto::Token::new(TOKEN).unwrap()),
            ..backhaul_proto::ClientConfig::plain(url.clone())
        }
        .connect_lazy()
        .unwrap();
        for lease_id in ["garbage", "orders/999/1", "/1/1", ""] {
            let s = c
                .heartbeat(backhaul_proto::v1::HeartbeatRequest {
                    lease_id: lease_id.into(),
                })
                .await
                .expect_err("nonsense lease");
            assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{lease_id}: {s:?}");
        }
        let s = c
            .complete_chunk(backhaul_proto::v1::CompleteChunkRequest {
                lease_id: "orders/0/1".into(),
                output: None,
                breaker: None,
            })
            .await
            .expect_err("no output");
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
        let s = c
            .get_job_status(backhaul_proto::v1::GetJobStatusRequest {
                job_id: "nope".into(),
                include_chunks: true,
            })
            .await
            .expect_err("unknown job");
        assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
    });
    // Not HTTP/2 at all: the connection is dropped, nothing else happens.
    let mut raw = std::net::TcpStream::connect(coordinator.addr).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02garbage")
        .unwrap();
    drop(raw);
    client_json(
        &job,
        &["status", "--coordinator", &url, "--token-file", &token_file],
        &[],
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`;
/// plus another CA (`other-ca.pem`) and a client certificate it signed, which servers must not
/// accept.
pub(crate) fn make_certs(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("backhaul test CA {name}"));
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
    let trusted = ca("trusted");
    let other = ca("other");
    write("ca.pem", trusted.pem());
    write("other-ca.pem", other.pem());
    let leaf = |sans: Vec<String>, issuer: &CertifiedIssuer<'_, KeyPair>, name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(sans).unwrap().signed_by(&key, issuer).unwrap();
        write(&format!("{name}.pem"), cert.pem());
        write(&format!("{name}.key"), key.serialize_pem());
    };
    leaf(vec!["127.0.0.1".into(), "localhost".into()], &trusted, "server");
    leaf(vec!["worker".into()], &trusted, "client");
    leaf(vec!["intruder".into()], &other, "stranger");
}

#[test]
fn mutual_tls_with_a_token() {
    let job = JobDir::new(&JobParams::default());
    make_certs(job.path());
    let token_file = with_token_file(&job);
    let p = |name: &str| job.path().join(name).to_str().unwrap().to_string();
    let coordinator = Coordinator::start(
        &job,
        "127.0.0.1:0",
        &[
            "--token-file",
            &token_file,
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
            "--tls-client-ca",
            &p("ca.pem"),
        ],
    );
    assert!(coordinator.proc.log_text().contains("mutual_tls=true"));
    let url = format!("https://{}", coordinator.addr);
    let (ca, cert, key, stranger, stranger_key) = (
        p("ca.pem"),
        p("client.pem"),
        p("client.key"),
        p("stranger.pem"),
        p("stranger.key"),
    );
    let tls = |cert: &str, key: &str| -> Vec<String> {
        [
            "--tls-ca",
            &ca,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--token-file",
            &token_file,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |extra: &[String], url: &str| {
        let mut args = vec!["status", "--coordinator", url];
        args.extend(extra.iter().map(String::as_str));
        client(&job, &args, &[])
    };

    // Trusted client certificate and token: accepted.
    let ok = run(&tls(&cert, &key), &url);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    // No client certificate, one from another CA, no CA to check the server, or plain HTTP: refused.
    let no_client_cert: Vec<String> = ["--tls-ca", &ca, "--token-file", &token_file]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (what, out) in [
        ("no client certificate", run(&no_client_cert, &url)),
        ("a stranger's certificate", run(&tls(&stranger, &stranger_key), &url)),
        (
            "no CA for the server",
            run(&["--token-file".to_string(), token_file.clone()], &url),
        ),
        (
            "plain HTTP",
            run(&["--token-file".to_string(), token_file.clone()], &coordinator.url()),
        ),
    ] {
        assert_eq!(out.status.code(), Some(1), "{what} was accepted: {}", text(&out.stdout));
        // Plain HTTP against TLS fails in whichever way the bytes happen to be misread.
        let err = text(&out.stderr);
        assert!(
            what == "plain HTTP" || err.contains("closed the connection") || err.contains("UnknownIssuer"),
            "{what}: {err}"
        );
    }

    // A worker over mutual TLS runs the job; the data arrive exactly once.
    let spec = job.spec();
    let mut submit = vec!["submit", spec.to_str().unwrap(), "--coordinator", &url];
    let creds = tls(&cert, &key);
    submit.extend(creds.iter().map(String::as_str));
    client_json(&job, &submit, &[]);
    let mut worker_args = vec!["--job", "orders"];
    worker_args.extend(creds.iter().map(String::as_str));
    let mut w = crate::cluster::start_worker(&job, &url, "tls-worker", &worker_args);
    assert!(w.wait_exit(Duration::from_secs(120)).success(), "{}", w.log_text());
    assert_eq!(job.json(&["verify", "orders"])["verified"], true);
}
