//! What standard tools see: grpc.health.v1 and server reflection, through their
//! own (tonic-health, tonic-reflection) clients; and the graceful shutdown.

mod common;

use std::time::Duration;

use common::{EVENTUALLY, TestServer};
use tai_examples::fault::{FaultInjector, FaultPlan};
use tai_examples::proto::{HealthCheckRequest, StreamTaskUpdatesRequest};
use tai_examples::server::MeshServer;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

fn check(service: &str) -> tonic_health::pb::HealthCheckRequest {
    tonic_health::pb::HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test]
async fn the_standard_health_service_reports_each_mesh_service() {
    let server = TestServer::start(MeshServer::all()).await;
    let mut health = HealthClient::new(server.tonic_channel().await);
    for service in [
        "",
        "tai.v1.mesh.Governor",
        "tai.v1.mesh.Coordinator",
        "tai.v1.mesh.Scheduler",
    ] {
        let status = health
            .check(check(service))
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health.check(check("tai.v1.mesh.Nope")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_the_services_and_describes_them() {
    let server = TestServer::start(MeshServer::all()).await;
    let mut reflection = ServerReflectionClient::new(server.tonic_channel().await);
    let ask = |message: MessageRequest| {
        tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message),
        }])
    };
    let mut replies = reflection
        .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(reply)) = replies.next().await else {
        panic!("no reflection reply")
    };
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("not a service list: {reply:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "tai.v1.mesh.Governor",
        "tai.v1.mesh.Coordinator",
        "tai.v1.mesh.Scheduler",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let mut replies = reflection
        .server_reflection_info(ask(MessageRequest::FileContainingSymbol(
            "tai.v1.mesh.Scheduler".to_owned(),
        )))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(reply)) = replies.next().await else {
        panic!("no reflection reply")
    };
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
        panic!("not a file descriptor: {reply:?}")
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

/// Shutdown waits for a call in flight (here held 500ms by a latency fault),
/// answers it, ends open subscriptions with UNAVAILABLE, and turns health
/// NOT_SERVING for watchers.
#[tokio::test]
async fn graceful_shutdown_drains_an_in_flight_call() {
    let faults = FaultInjector::new("server");
    let mesh = MeshServer::all().faults(faults.clone());
    let in_flight = mesh.in_flight();
    let mut server = TestServer::start(mesh).await;
    let governor = server.governor();
    let scheduler = server.scheduler();
    let mut health = HealthClient::new(server.tonic_channel().await);
    let mut watch = health
        .watch(check("tai.v1.mesh.Governor"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    let mut updates = scheduler
        .stream_task_updates(StreamTaskUpdatesRequest::default())
        .await
        .unwrap()
        .into_inner();

    faults.set(FaultPlan {
        latency: Duration::from_millis(500),
        paths: vec!["/tai.v1.mesh.Governor/HealthCheck".to_owned()],
        ..FaultPlan::default()
    });
    let call = tokio::spawn(async move { governor.health_check(HealthCheckRequest {}).await });
    // Wait until the server counts the call, not for a guessed time.
    tokio::time::timeout(EVENTUALLY, async {
        while in_flight.get() == 0 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the call reaches the server");

    server.begin_shutdown();
    let reply = call.await.unwrap();
    assert!(reply.is_ok(), "the in-flight call was answered: {reply:?}");
    let drained = server.shutdown().await;
    assert!(drained.complete, "{drained:?}");
    assert!(drained.in_flight >= 1, "{drained:?}");

    let ended = tokio::time::timeout(EVENTUALLY, updates.message())
        .await
        .unwrap();
    assert_eq!(
        ended.unwrap_err().code(),
        Code::Unavailable,
        "subscriptions end with UNAVAILABLE"
    );
    let last = tokio::time::timeout(EVENTUALLY, async {
        let mut last = None;
        while let Some(Ok(m)) = watch.next().await {
            last = Some(m.status);
        }
        last
    })
    .await
    .unwrap();
    assert_eq!(
        last,
        Some(ServingStatus::NotServing as i32),
        "watchers saw NOT_SERVING before the end"
    );
}

/// The server's message limit is explicit: a client allowed to send 16 MiB still
/// cannot make the server take more than 4 MiB, and gets a clear status.
#[tokio::test]
async fn servers_refuse_messages_over_their_limit() {
    let server = TestServer::start(MeshServer::all()).await;
    let channel =
        tai_runtime::Channel::builder(tai_runtime::Endpoints::one(server.addr.to_string()))
            .config(tai_runtime::config::ClientConfig::high_throughput())
            .build()
            .unwrap();
    let governor = tai_examples::proto::governor_client::GovernorClient::new(channel);
    let huge = tai_examples::proto::ProposePolicyRequest {
        request_id: "big".to_owned(),
        policy: Some(tai_examples::proto::Policy {
            id: "p".to_owned(),
            policy_type: "security".to_owned(),
            name: "x".repeat(tai_examples::server::MAX_MESSAGE + 1),
            ..Default::default()
        }),
    };
    let err = governor.propose_policy(huge).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("over this server's limit"), "{err}");
    server.shutdown().await;
}
