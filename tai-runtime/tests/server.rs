//! `tai_runtime::server::Server` on loopback, seen by real clients: tonic's,
//! the standard health and reflection clients, and raw h2 where a test needs
//! to see frames (SETTINGS, PING, GOAWAY).
//!
//! Calls a test must hold in flight wait on a semaphore it releases, and say
//! they arrived on a channel: no test waits for a guessed time.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prometheus_client::registry::Registry;
use prost::Message;
use support::{Echo, Script, echo};
use tai_runtime::metrics::Metrics;
use tai_runtime::server::{ConnectInfo, Drained, KeepalivePolicy, Server, ServerLayer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Bound on waiting for something that should come at once.
const EVENTUALLY: Duration = Duration::from_secs(10);

/// A server running on a loopback port.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Drained>,
}

impl Running {
    async fn start(server: Server) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve_with_incoming(listener, async move {
                    let _ = stopped.await;
                })
                .await
                .expect("server ran")
        });
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }

    fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    async fn drained(mut self) -> Drained {
        self.begin_shutdown();
        tokio::time::timeout(EVENTUALLY, self.task)
            .await
            .expect("the server stops")
            .unwrap()
    }
}

/// `/test.Echo/Unary` through a plain tonic client.
async fn unary(channel: Channel, request: Echo) -> Result<Echo, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Echo, Echo>::default();
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Unary");
    grpc.unary(tonic::Request::new(request), path, codec)
        .await
        .map(tonic::Response::into_inner)
}

/// A script whose calls say they arrived on the returned receiver, then wait
/// for a permit of `gate` (given back when they answer).
fn held(gate: &Arc<Semaphore>) -> (Script, mpsc::UnboundedReceiver<usize>) {
    let (arrived, arrivals) = mpsc::unbounded_channel();
    let gate = Arc::clone(gate);
    let script = Script::unary(move |index, request| {
        let (gate, arrived) = (Arc::clone(&gate), arrived.clone());
        async move {
            let _ = arrived.send(index);
            let _permit = gate.acquire().await.unwrap();
            Ok(request)
        }
    });
    (script, arrivals)
}

async fn arrival(arrivals: &mut mpsc::UnboundedReceiver<usize>) -> usize {
    tokio::time::timeout(EVENTUALLY, arrivals.recv())
        .await
        .expect("the call reaches the handler")
        .unwrap()
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test]
async fn health_reports_every_service_and_turns_not_serving_before_the_drain() {
    let gate = Arc::new(Semaphore::new(0));
    let (script, mut arrivals) = held(&gate);
    let mut server = Running::start(Server::builder().add_service(script)).await;
    let channel = server.channel().await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "test.Echo"] {
        let status = health.check(check(service)).await.unwrap().into_inner();
        assert_eq!(status.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health.check(check("test.Nope")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let mut watch = health.watch(check("test.Echo")).await.unwrap().into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    let call = tokio::spawn(unary(channel, echo("in flight")));
    arrival(&mut arrivals).await;
    server.begin_shutdown();

    // The call is still held: the watcher hears NOT_SERVING before the drain ends,
    // then its stream ends (it would otherwise hold the drain open).
    let status = tokio::time::timeout(EVENTUALLY, watch.next())
        .await
        .unwrap();
    assert_eq!(
        status.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    assert!(
        tokio::time::timeout(EVENTUALLY, watch.next())
            .await
            .unwrap()
            .is_none()
    );
    assert!(!call.is_finished());

    // The listener is closed: a new call is refused with UNAVAILABLE.
    let refused = Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await;
    assert!(refused.is_err(), "a new connection is refused");
    let fresh = Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_lazy();
    let refused = unary(fresh, echo("late")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");

    gate.add_permits(1);
    let answered = call.await.unwrap().expect("the call in flight completes");
    assert_eq!(answered.msg, "in flight");
    let drained = server.drained().await;
    // The held call and the health watch were in flight.
    assert_eq!((drained.in_flight, drained.complete), (2, true));
}

#[tokio::test]
async fn calls_still_running_after_the_drain_timeout_are_cut_off() {
    let gate = Arc::new(Semaphore::new(0));
    let (script, mut arrivals) = held(&gate);
    let server = Server::builder()
        .add_service(script)
        .drain_timeout(Duration::from_millis(200));
    let server = Running::start(server).await;
    let call = tokio::spawn(unary(server.channel().await, echo("stuck")));
    arrival(&mut arrivals).await;
    let drained = server.drained().await;
    assert_eq!((drained.in_flight, drained.complete), (1, false));
    let cut = tokio::time::timeout(EVENTUALLY, call)
        .await
        .unwrap()
        .unwrap();
    assert!(cut.is_err(), "{cut:?}");
}

/// Reflection over a descriptor set in which `svc.proto` imports `dep.proto`.
#[tokio::test]
async fn reflection_lists_the_services_and_sends_a_file_with_its_imports() {
    use prost_types::{
        DescriptorProto, FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto,
        ServiceDescriptorProto,
    };
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let dep = FileDescriptorProto {
        name: Some("dep.proto".to_owned()),
        package: Some("dep".to_owned()),
        message_type: vec![DescriptorProto {
            name: Some("Dep".to_owned()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let svc = FileDescriptorProto {
        name: Some("svc.proto".to_owned()),
        package: Some("test".to_owned()),
        dependency: vec!["dep.proto".to_owned()],
        service: vec![ServiceDescriptorProto {
            name: Some("Svc".to_owned()),
            method: vec![MethodDescriptorProto {
                name: Some("Get".to_owned()),
                input_type: Some(".dep.Dep".to_owned()),
                output_type: Some(".dep.Dep".to_owned()),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let set = FileDescriptorSet {
        file: vec![dep, svc],
    };
    let set: &'static [u8] = Box::leak(set.encode_to_vec().into_boxed_slice());
    let script = Script::unary(|_, request| async move { Ok(request) });
    let server = Running::start(Server::builder().add_service(script).descriptor_set(set)).await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let mut ask = async |question: MessageRequest| -> ServerReflectionResponse {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(question),
        };
        let mut replies = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        replies.next().await.unwrap().unwrap()
    };

    let reply = ask(MessageRequest::ListServices(String::new())).await;
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("not a list: {reply:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "test.Svc",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }

    let reply = ask(MessageRequest::FileContainingSymbol("test.Svc".to_owned())).await;
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
        panic!("not files: {reply:?}")
    };
    let files: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|f| {
            FileDescriptorProto::decode(f.as_slice())
                .unwrap()
                .name()
                .to_owned()
        })
        .collect();
    assert_eq!(files, ["svc.proto", "dep.proto"]);
}

#[tokio::test]
async fn builtins_can_be_switched_off() {
    let script = Script::unary(|_, request| async move { Ok(request) });
    let server = Server::builder()
        .add_service(script)
        .health(false)
        .reflection(false);
    assert!(server.health_reporter().is_none());
    let server = Running::start(server).await;
    let mut health = HealthClient::new(server.channel().await);
    let missing = health.check(check("")).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unimplemented);
    let answered = unary(server.channel().await, echo("still served"))
        .await
        .unwrap();
    assert_eq!(answered.msg, "still served");
}

#[tokio::test]
async fn messages_over_the_limits_are_resource_exhausted_both_ways() {
    let script = Script::unary(|_, request: Echo| async move {
        // Asked for a long answer: give it.
        Ok(echo(&"a".repeat(request.n as usize)))
    });
    let server = Server::builder()
        .add_service(script.clone())
        .max_receive_message_size(1024)
        .max_send_message_size(1024);
    let server = Running::start(server).await;
    let channel = server.channel().await;

    let big = echo(&"q".repeat(2000));
    let refused = unary(channel.clone(), big).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    assert!(
        refused.message().contains("request message is 2003 bytes")
            && refused.message().contains("limit of 1024 bytes"),
        "{refused}"
    );
    assert_eq!(script.calls(), 0, "the handler never saw it");

    let asks_for = |n| Echo {
        msg: String::new(),
        n,
    };
    let fine = unary(channel.clone(), asks_for(100)).await.unwrap();
    assert_eq!(fine.msg.len(), 100);
    let refused = unary(channel.clone(), asks_for(2000)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    assert!(
        refused.message().contains("response message is 2003 bytes"),
        "{refused}"
    );
    // The connection is fine after both.
    assert!(unary(channel, asks_for(10)).await.is_ok());
}

/// A service's own tonic limit (4 MiB by default) under a higher server limit
/// says RESOURCE_EXHAUSTED too, not tonic's OUT_OF_RANGE.
#[tokio::test]
async fn a_services_own_tonic_limit_is_resource_exhausted_too() {
    let script = Script::unary(|_, request| async move { Ok(request) });
    let server = Server::builder()
        .add_service(script)
        .max_receive_message_size(8 << 20);
    let server = Running::start(server).await;
    let refused = unary(server.channel().await, echo(&"q".repeat(5 << 20)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    assert!(
        refused.message().contains("message length too large"),
        "{refused}"
    );
}

/// The server's metrics count a call refused for a message's size under the code
/// its client sees, RESOURCE_EXHAUSTED, whichever limit it hit: the server's
/// for a request, the server's for a response (the limit ends the response
/// itself, before the handler's trailers), a service's own tonic limit (whose
/// OUT_OF_RANGE the server rewrites).
#[tokio::test]
async fn calls_refused_for_a_messages_size_are_counted_as_resource_exhausted() {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let script =
        Script::unary(|_, request: Echo| async move { Ok(echo(&"a".repeat(request.n as usize))) });
    let server = Server::builder()
        .add_service(script)
        .server_layer(Some(ServerLayer::with_metrics(&metrics)))
        .max_receive_message_size(8 << 20)
        .max_send_message_size(1024);
    let server = Running::start(server).await;
    let channel = server.channel().await;
    let asks_for = |n| Echo {
        msg: String::new(),
        n,
    };
    let requests = [
        ("the server's request limit", echo(&"q".repeat(9 << 20))),
        ("tonic's request limit", echo(&"q".repeat(5 << 20))),
        ("the server's response limit", asks_for(2000)),
    ];
    for (limit, request) in requests {
        let refused = unary(channel.clone(), request).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::ResourceExhausted,
            "{limit}: {refused}"
        );
    }
    unary(channel, asks_for(10)).await.unwrap();

    let series = |code: &str| {
        format!(r#"tai_server_calls_total{{service="test.Echo",method="Unary",code="{code}"}} "#)
    };
    let count = |text: &str, code: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series(code).as_str()))
            .map(|v| v.parse::<f64>().unwrap())
    };
    // The last answer's end is recorded as its body ends, just after the
    // client has it.
    let mut text = String::new();
    for _ in 0..100 {
        text.clear();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        if count(&text, "Ok") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(count(&text, "ResourceExhausted"), Some(3.0), "{text}");
    assert_eq!(count(&text, "Ok"), Some(1.0), "{text}");
    for other in ["Cancelled", "OutOfRange"] {
        assert!(
            matches!(count(&text, other), None | Some(0.0)),
            "{other}: {text}"
        );
    }
}

#[tokio::test]
async fn calls_over_the_concurrency_limit_are_shed_at_once() {
    let gate = Arc::new(Semaphore::new(0));
    let (script, mut arrivals) = held(&gate);
    let server = Server::builder()
        .add_service(script.clone())
        .concurrency_limit(Some(2));
    let in_flight = server.in_flight();
    let server = Running::start(server).await;
    let channel = server.channel().await;
    let first = tokio::spawn(unary(channel.clone(), echo("1")));
    let second = tokio::spawn(unary(channel.clone(), echo("2")));
    arrival(&mut arrivals).await;
    arrival(&mut arrivals).await;
    assert_eq!(in_flight.get(), 2);

    let shed = unary(channel.clone(), echo("3")).await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed}");
    assert!(shed.message().contains("limit of 2 calls"), "{shed}");
    assert_eq!(script.calls(), 2, "the shed call never reached the handler");

    gate.add_permits(2);
    assert_eq!(first.await.unwrap().unwrap().msg, "1");
    assert_eq!(second.await.unwrap().unwrap().msg, "2");
    gate.add_permits(1);
    assert_eq!(unary(channel, echo("4")).await.unwrap().msg, "4");
    assert_eq!(in_flight.get(), 0);
}

fn grpc_request() -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri("http://server/test.Echo/Unary")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

fn grpc_body(message: &Echo) -> Bytes {
    let encoded = message.encode_to_vec();
    let mut body = BytesMut::with_capacity(5 + encoded.len());
    body.put_u8(0);
    body.put_u32(encoded.len() as u32);
    body.put_slice(&encoded);
    body.freeze()
}

/// A raw h2 client's call to `/test.Echo/Unary`; the grpc-status it ends with.
async fn h2_unary(client: &mut h2::client::SendRequest<Bytes>, message: &Echo) -> String {
    let (response, mut send) = client.send_request(grpc_request(), false).unwrap();
    send.send_data(grpc_body(message), true).unwrap();
    let mut body = response.await.unwrap().into_body();
    while let Some(data) = body.data().await {
        let _ = body.flow_control().release_capacity(data.unwrap().len());
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    trailers["grpc-status"].to_str().unwrap().to_owned()
}

/// An error answer without messages goes as gRPC's Trailers-Only: one HEADERS
/// frame carrying the status and ending the stream, not headers followed by an
/// empty DATA frame (which grpc-go reads as a stream ended without trailers).
#[tokio::test]
async fn an_answer_without_messages_is_trailers_only() {
    let script = Script::unary(|_, _| async { Err(tonic::Status::not_found("no such echo")) });
    let server = Running::start(Server::builder().add_service(script)).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let (response, mut send) = client.send_request(grpc_request(), false).unwrap();
    send.send_data(grpc_body(&echo("missing")), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "5", "NOT_FOUND");
    let mut body = response.into_body();
    assert!(body.is_end_stream(), "the HEADERS frame ended the stream");
    assert!(body.data().await.is_none(), "no DATA frame");
}

#[tokio::test]
async fn a_connection_gets_its_limit_of_concurrent_streams() {
    let gate = Arc::new(Semaphore::new(0));
    let (script, mut arrivals) = held(&gate);
    let server = Server::builder()
        .add_service(script)
        .max_concurrent_streams(Some(1));
    let server = Running::start(server).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    // One call, driving the connection here: its SETTINGS come before the answer.
    gate.add_permits(1);
    let message = echo("first");
    let first = tokio::select! {
        status = h2_unary(&mut client, &message) => status,
        ended = &mut connection => panic!("connection ended: {ended:?}"),
    };
    assert_eq!(first, "0");
    assert_eq!(connection.max_concurrent_send_streams(), 1);
    let mut ping_pong = connection.ping_pong().expect("ping pong");
    tokio::spawn(connection);
    arrival(&mut arrivals).await;

    // A second call while one is held waits in the client (the limit is the
    // server's SETTINGS, asserted above; this shows it is obeyed end to end).
    let held_call = {
        let (response, mut send) = client.send_request(grpc_request(), false).unwrap();
        send.send_data(grpc_body(&echo("held")), true).unwrap();
        response
    };
    arrival(&mut arrivals).await;
    let (waiting, _) = client.send_request(grpc_request(), true).unwrap();
    ping_pong.ping(h2::Ping::opaque()).await.unwrap();
    assert!(arrivals.try_recv().is_err(), "the second call is held back");
    gate.add_permits(2);
    assert_eq!(held_call.await.unwrap().status(), 200);
    assert_eq!(waiting.await.unwrap().status(), 200);
}

/// gRFC A8: a client pinging without calls (here back to back, each after the
/// last one's answer) gets three pings answered, then GOAWAY ENHANCE_YOUR_CALM
/// `too_many_pings`, and the connection ends.
#[tokio::test]
async fn a_client_pinging_too_often_is_told_too_many_pings() {
    let script = Script::unary(|_, request| async move { Ok(request) });
    let server = Running::start(Server::builder().add_service(script)).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (_client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let mut ping_pong = connection.ping_pong().expect("ping pong");
    let ended = tokio::spawn(connection);
    let mut answered = 0;
    for _ in 0..10 {
        match tokio::time::timeout(EVENTUALLY, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => answered += 1,
            Ok(Err(_)) => break,
            Err(_) => panic!("a ping was neither answered nor refused"),
        }
    }
    assert_eq!(answered, 3);
    let error = tokio::time::timeout(EVENTUALLY, ended)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(error.is_go_away() && error.is_remote(), "{error}");
    assert_eq!(
        error.reason(),
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "{error}"
    );
    assert!(error.to_string().contains("too_many_pings"), "{error}");
}

/// Pings no more often than the policy allows are answered, however many.
#[tokio::test]
async fn pings_at_the_allowed_pace_are_answered() {
    let script = Script::unary(|_, request| async move { Ok(request) });
    let policy = KeepalivePolicy::DEFAULT
        .min_time(Duration::from_millis(50))
        .permit_without_calls(true);
    let server = Server::builder()
        .add_service(script)
        .keepalive(Some(policy));
    let server = Running::start(server).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let mut ping_pong = connection.ping_pong().expect("ping pong");
    tokio::spawn(connection);
    for _ in 0..6 {
        // Real time, and longer than the policy's 50 ms: only ever safe.
        tokio::time::sleep(Duration::from_millis(80)).await;
        ping_pong.ping(h2::Ping::opaque()).await.expect("answered");
    }
    assert_eq!(h2_unary(&mut client, &echo("still here")).await, "0");
}

#[tokio::test]
async fn a_connection_over_the_limit_is_closed_at_once() {
    let script = Script::unary(|_, request| async move { Ok(request) });
    let server = Server::builder()
        .add_service(script)
        .max_connections(Some(1));
    let server = Running::start(server).await;
    let channel = server.channel().await;
    assert!(unary(channel.clone(), echo("in")).await.is_ok());
    let mut over = TcpStream::connect(server.addr).await.unwrap();
    let mut byte = [0; 1];
    let read = tokio::time::timeout(EVENTUALLY, over.read(&mut byte))
        .await
        .expect("closed, not left waiting");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(unary(channel, echo("still in")).await.is_ok());
}

/// A call the routes are not ready for waits until they are, then is served.
/// Under tower's concurrency limit of one (a layer added with `Server::layer`),
/// a second call on the same connection waits while the first runs, and goes
/// through when it ends, with no third call needed to move it on; a third is
/// then served too.
#[tokio::test]
async fn a_call_the_routes_are_not_ready_for_waits_then_is_served() {
    let gate = Arc::new(Semaphore::new(0));
    let (script, mut arrivals) = held(&gate);
    let server = Server::builder()
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .add_service(script);
    let server = Running::start(server).await;
    let channel = server.channel().await;

    let first = tokio::spawn(unary(channel.clone(), echo("first")));
    assert_eq!(arrival(&mut arrivals).await, 0);
    let second = tokio::spawn(unary(channel.clone(), echo("second")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        arrivals.try_recv().is_err(),
        "the limit holds the second call"
    );

    gate.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap().msg, "first");
    assert_eq!(arrival(&mut arrivals).await, 1);
    gate.add_permits(1);
    let second = tokio::time::timeout(EVENTUALLY, second).await;
    assert_eq!(second.expect("served").unwrap().unwrap().msg, "second");

    gate.add_permits(1);
    assert_eq!(unary(channel, echo("third")).await.unwrap().msg, "third");
    assert_eq!(arrival(&mut arrivals).await, 2);
}

/// tonic's `remote_addr()` and tai's `ConnectInfo` are in every request.
#[tokio::test]
async fn handlers_see_who_is_calling() {
    let server = Running::start(Server::builder().add_service(WhoAmI)).await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Echo, Echo>::default();
    let path = http::uri::PathAndQuery::from_static("/test.WhoAmI/Unary");
    let answer = grpc
        .unary(tonic::Request::new(echo("")), path, codec)
        .await
        .unwrap()
        .into_inner();
    let (tonic_addr, tai_addr) = answer.msg.split_once(' ').unwrap();
    assert_eq!(tonic_addr, tai_addr);
    assert!(tonic_addr.starts_with("127.0.0.1:"), "{tonic_addr}");
}

/// Answers with the caller's address as tonic and as tai see it.
#[derive(Clone)]
struct WhoAmI;

impl NamedService for WhoAmI {
    const NAME: &'static str = "test.WhoAmI";
}

impl UnaryService<Echo> for WhoAmI {
    type Response = Echo;
    type Future = std::future::Ready<Result<tonic::Response<Echo>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Echo>) -> Self::Future {
        let tonic_addr = request.remote_addr().map(|a| a.to_string());
        let tai_addr = request
            .extensions()
            .get::<ConnectInfo>()
            .map(|i| i.remote_addr().to_string());
        std::future::ready(Ok(tonic::Response::new(echo(&format!(
            "{} {}",
            tonic_addr.unwrap_or_default(),
            tai_addr.unwrap_or_default()
        )))))
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for WhoAmI {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<Echo, Echo>::default();
            Ok(Grpc::new(codec).unary(WhoAmI, request).await)
        })
    }
}
