//! The Coordinator's semantics, over the wire through the generated client:
//! signals, the action queue, acknowledgement, and redelivery.

mod common;

use common::{TestServer, assert_status, next};
use tai_examples::coordinator::Coordinator;
use tai_examples::fault::{FaultInjector, FaultPlan};
use tai_examples::proto::coordinator_client::CoordinatorClient;
use tai_examples::proto::{
    AcknowledgeActionRequest, Action, GetStatusRequest, RequestActionRequest, Signal,
    StreamActionsRequest, SubmitSignalRequest,
};
use tai_examples::server::MeshServer;
use tonic::Code;

fn signal(request_id: &str, signal_type: &str) -> SubmitSignalRequest {
    SubmitSignalRequest {
        request_id: request_id.to_owned(),
        signal: Some(Signal {
            signal_type: signal_type.to_owned(),
            source: "test".to_owned(),
            ..Signal::default()
        }),
    }
}

fn action(id: &str, priority: i32) -> RequestActionRequest {
    RequestActionRequest {
        request_id: format!("req-{id}"),
        action: Some(Action {
            id: id.to_owned(),
            action_type: "restart".to_owned(),
            target: "api".to_owned(),
            priority,
            ..Action::default()
        }),
    }
}

fn ack(request_id: &str, action_id: &str) -> AcknowledgeActionRequest {
    AcknowledgeActionRequest {
        request_id: request_id.to_owned(),
        action_id: action_id.to_owned(),
        subscriber_id: "test".to_owned(),
        success: true,
        message: String::new(),
    }
}

fn subscribe(name: &str, max_in_flight: u32) -> StreamActionsRequest {
    StreamActionsRequest {
        subscriber_id: name.to_owned(),
        max_in_flight,
        ..StreamActionsRequest::default()
    }
}

async fn server() -> (TestServer, CoordinatorClient) {
    let server = TestServer::start(MeshServer::new().coordinator(Coordinator::new())).await;
    let client = server.coordinator();
    (server, client)
}

#[tokio::test]
async fn signals_are_recorded_once_and_counted_by_type() {
    let (_server, c) = server().await;
    for (r, t) in [
        ("s1", "deployment"),
        ("s2", "deployment"),
        ("s3", "scaling"),
    ] {
        let receipt = c.submit_signal(signal(r, t)).await.unwrap().into_inner();
        assert!(receipt.accepted);
        assert_eq!(
            receipt.resource,
            format!("signals/{r}"),
            "the id defaults to the request_id"
        );
    }
    let repeat = c
        .submit_signal(signal("s1", "deployment"))
        .await
        .unwrap()
        .into_inner();
    assert!(repeat.duplicate);
    let mut same_id = signal("s4", "deployment");
    same_id.signal.as_mut().unwrap().id = "s1".to_owned();
    assert_status(
        c.submit_signal(same_id).await,
        Code::AlreadyExists,
        "signal `s1` was already submitted",
    );
    let status = c
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.signals_received, 3);
    assert_eq!(status.signals_by_type.get("deployment"), Some(&2));
    assert_eq!(status.signals_by_type.get("scaling"), Some(&1));
}

#[tokio::test]
async fn actions_wait_in_the_queue_until_acknowledged() {
    let (_server, c) = server().await;
    c.request_action(action("a1", 0)).await.unwrap();
    let status = c
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.actions_pending, status.actions_in_flight), (1, 0));

    let mut stream = c
        .stream_actions(subscribe("w1", 0))
        .await
        .unwrap()
        .into_inner();
    let a = next(&mut stream).await;
    assert_eq!((a.id.as_str(), a.delivery_attempt), ("a1", 1));
    assert!(a.requested_at.is_some());
    let status = c
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            status.actions_pending,
            status.actions_in_flight,
            status.subscribers
        ),
        (0, 1, 1)
    );

    let r = c
        .acknowledge_action(ack("k1", "a1"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted, "{}", r.message);
    let status = c
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status.actions_in_flight, status.actions_acknowledged),
        (0, 1)
    );

    let again = c
        .acknowledge_action(ack("k2", "a1"))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.accepted);
    assert!(
        again.message.contains("already acknowledged by `test`"),
        "{}",
        again.message
    );
    assert_status(
        c.acknowledge_action(ack("k3", "zz")).await,
        Code::NotFound,
        "no action `zz`",
    );
}

#[tokio::test]
async fn an_action_is_redelivered_to_another_subscriber_when_its_subscriber_disconnects() {
    let coordinator = Coordinator::new();
    let server = TestServer::start(MeshServer::new().coordinator(coordinator.clone())).await;
    let c = server.coordinator();
    let mut first = c
        .stream_actions(subscribe("first", 0))
        .await
        .unwrap()
        .into_inner();
    c.request_action(action("a1", 0)).await.unwrap();
    let a = next(&mut first).await;
    assert_eq!((a.id.as_str(), a.delivery_attempt), ("a1", 1));

    // The second subscriber joins while a1 is in flight with the first.
    let mut second = c
        .stream_actions(subscribe("second", 0))
        .await
        .unwrap()
        .into_inner();
    // The first disconnects without acknowledging.
    drop(first);
    let again = next(&mut second).await;
    assert_eq!((again.id.as_str(), again.delivery_attempt), ("a1", 2));
    assert!(
        c.acknowledge_action(ack("k1", "a1"))
            .await
            .unwrap()
            .into_inner()
            .accepted
    );
    let status = c
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            status.redeliveries,
            status.actions_acknowledged,
            status.subscribers
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn an_unacknowledged_action_is_redelivered_after_its_ack_timeout() {
    let (_server, c) = server().await;
    let mut stream = c
        .stream_actions(StreamActionsRequest {
            subscriber_id: "slow".to_owned(),
            // Long enough that a busy machine does not redeliver the second
            // delivery before the test acknowledges it.
            ack_timeout: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..StreamActionsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    c.request_action(action("a1", 0)).await.unwrap();
    assert_eq!(next(&mut stream).await.delivery_attempt, 1);
    // Not acknowledged: it comes again once the ack timeout passes.
    let again = next(&mut stream).await;
    assert_eq!((again.id.as_str(), again.delivery_attempt), ("a1", 2));
    assert!(
        c.acknowledge_action(ack("k1", "a1"))
            .await
            .unwrap()
            .into_inner()
            .accepted
    );
    let status = c
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            status.redeliveries,
            status.actions_acknowledged,
            status.actions_in_flight,
            status.actions_pending
        ),
        (1, 1, 0, 0)
    );
}

#[tokio::test]
async fn higher_priority_actions_go_first_and_max_in_flight_holds_back_the_rest() {
    let (_server, c) = server().await;
    c.request_action(action("low", 0)).await.unwrap();
    c.request_action(action("high", 5)).await.unwrap();
    c.request_action(action("mid", 2)).await.unwrap();
    let mut stream = c
        .stream_actions(subscribe("one-at-a-time", 1))
        .await
        .unwrap()
        .into_inner();
    for expected in ["high", "mid", "low"] {
        let a = next(&mut stream).await;
        assert_eq!(a.id, expected);
        let status = c
            .get_status(GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status.actions_in_flight, 1,
            "max_in_flight 1 holds back the rest"
        );
        c.acknowledge_action(ack(&format!("k-{expected}"), &a.id))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn bad_input_is_invalid_argument() {
    let (_server, c) = server().await;
    assert_status(
        c.submit_signal(signal("", "x")).await,
        Code::InvalidArgument,
        "request_id is empty",
    );
    assert_status(
        c.submit_signal(signal("s1", "")).await,
        Code::InvalidArgument,
        "signal.signal_type is empty",
    );
    let mut no_type = action("a1", 0);
    no_type.action.as_mut().unwrap().action_type.clear();
    assert_status(
        c.request_action(no_type).await,
        Code::InvalidArgument,
        "action.action_type is empty",
    );
    assert_status(
        c.stream_actions(subscribe("", 0)).await,
        Code::InvalidArgument,
        "subscriber_id is empty",
    );
    assert_status(
        c.stream_actions(subscribe("w", 5000)).await,
        Code::InvalidArgument,
        "max_in_flight is 5000",
    );
    assert_status(
        c.acknowledge_action(ack("k", "")).await,
        Code::InvalidArgument,
        "action_id is empty",
    );
}

/// The dedup rule under retries for the Coordinator: a lost response to
/// RequestAction must not queue the action twice.
#[tokio::test]
async fn a_retried_request_action_queues_the_action_once() {
    let coordinator = Coordinator::new();
    let faults = FaultInjector::new("coordinator");
    faults.set(FaultPlan::lose_first_responses(
        1,
        &["/tai.v1.mesh.Coordinator/RequestAction"],
    ));
    let server = TestServer::start(
        MeshServer::new()
            .coordinator(coordinator.clone())
            .faults(faults.clone()),
    )
    .await;
    let c = server.coordinator();
    let r = c
        .request_action(action("a1", 0))
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted && r.duplicate, "{r:?}");
    assert_eq!(faults.counts().dropped, 1);
    assert_eq!(coordinator.status().actions_pending, 1);
    assert_eq!((coordinator.applied(), coordinator.duplicates()), (1, 1));
}
