//! The Scheduler's semantics: tasks run at their scheduled time (checked with
//! tokio's paused clock in process, and over the wire with real time), can be
//! cancelled before they run, and report every transition.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use common::{TestServer, assert_status, next};
use tai_examples::fault::{FaultInjector, FaultPlan};
use tai_examples::proto::scheduler_server::Scheduler as _;
use tai_examples::proto::{
    CancelTaskRequest, GetTaskStatusRequest, StreamTaskUpdatesRequest, SubmitTaskRequest, TaskState,
};
use tai_examples::scheduler::{DemoHandler, Scheduler, SchedulerConfig, Task, TaskHandler};
use tai_examples::server::MeshServer;
use tonic::{Code, Request};

fn submit(
    id: &str,
    task_type: &str,
    params: &[(&str, &str)],
    at: Option<SystemTime>,
) -> SubmitTaskRequest {
    SubmitTaskRequest {
        request_id: format!("req-{id}"),
        task_id: id.to_owned(),
        task_type: task_type.to_owned(),
        parameters: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
        scheduled_time: at.map(Into::into),
        priority: 0,
    }
}

fn cancel(request_id: &str, id: &str) -> CancelTaskRequest {
    CancelTaskRequest {
        request_id: request_id.to_owned(),
        task_id: id.to_owned(),
        reason: "changed my mind".to_owned(),
    }
}

async fn state_of(scheduler: &Scheduler, id: &str) -> (TaskState, String) {
    let request = Request::new(GetTaskStatusRequest {
        task_id: id.to_owned(),
    });
    let status = scheduler
        .get_task_status(request)
        .await
        .unwrap()
        .into_inner();
    (TaskState::try_from(status.state).unwrap(), status.result)
}

/// Paused time: the task stays SCHEDULED until the clock reaches its time, then
/// runs. Called in process, on the tonic trait, so the clock is the test's.
#[tokio::test(start_paused = true)]
async fn a_task_runs_at_its_scheduled_time() {
    let scheduler = Scheduler::default();
    let at = SystemTime::now() + Duration::from_secs(3600);
    let receipt = scheduler
        .submit_task(Request::new(submit(
            "t1",
            "sum",
            &[("values", "1,2,3")],
            Some(at),
        )))
        .await
        .unwrap()
        .into_inner();
    assert!(receipt.accepted, "{}", receipt.message);
    assert!(
        receipt.message.contains("scheduled to run in"),
        "{}",
        receipt.message
    );

    tokio::time::sleep(Duration::from_secs(3590)).await;
    assert_eq!(state_of(&scheduler, "t1").await.0, TaskState::Scheduled);
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        state_of(&scheduler, "t1").await,
        (TaskState::Succeeded, "6".to_owned())
    );
}

/// Paused time: of tasks due at once, the higher priority runs first.
#[tokio::test(start_paused = true)]
async fn due_tasks_run_highest_priority_first() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);
    impl TaskHandler for Recorder {
        async fn run(&self, task: Task) -> Result<String, String> {
            self.0.lock().unwrap().push(task.id.clone());
            Ok(String::new())
        }
    }
    let recorder = Recorder::default();
    let scheduler = Scheduler::with_config(
        recorder.clone(),
        SchedulerConfig {
            max_concurrent: 1,
            ..SchedulerConfig::default()
        },
    );
    let at = SystemTime::now() + Duration::from_secs(60);
    for (id, priority) in [("low", 0), ("high", 9), ("mid", 5)] {
        let mut request = submit(id, "any", &[], Some(at));
        request.priority = priority;
        scheduler.submit_task(Request::new(request)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(*recorder.0.lock().unwrap(), ["high", "mid", "low"]);
}

/// Over the wire, in real time: the transitions come on StreamTaskUpdates, and
/// the task did not start before its time.
#[tokio::test]
async fn transitions_are_streamed_and_the_task_starts_no_earlier_than_scheduled() {
    let server = TestServer::start(MeshServer::new().scheduler(Scheduler::default())).await;
    let c = server.scheduler();
    let mut updates = c
        .stream_task_updates(StreamTaskUpdatesRequest {
            task_ids: vec!["t1".to_owned()],
            include_current: true,
        })
        .await
        .unwrap()
        .into_inner();
    let at = SystemTime::now() + Duration::from_millis(300);
    let receipt = c
        .submit_task(submit("t1", "sleep", &[("ms", "20")], Some(at)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.resource, "tasks/t1");
    let status = c
        .get_task_status(GetTaskStatusRequest {
            task_id: "t1".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, TaskState::Scheduled as i32);

    let mut seen = Vec::new();
    while seen.last() != Some(&TaskState::Succeeded) {
        let u = next(&mut updates).await;
        assert_eq!(u.task_id, "t1");
        seen.push(TaskState::try_from(u.state).unwrap());
    }
    assert_eq!(
        seen,
        [
            TaskState::Scheduled,
            TaskState::Running,
            TaskState::Succeeded
        ]
    );
    let status = c
        .get_task_status(GetTaskStatusRequest {
            task_id: "t1".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.result, "slept 20ms");
    let started = SystemTime::try_from(status.started_at.unwrap()).unwrap();
    let finished = SystemTime::try_from(status.finished_at.unwrap()).unwrap();
    assert!(started >= at, "started {started:?}, scheduled {at:?}");
    assert!(finished >= started + Duration::from_millis(20));
}

#[tokio::test]
async fn a_task_can_be_cancelled_before_it_runs_but_not_after() {
    let server = TestServer::start(MeshServer::new().scheduler(Scheduler::default())).await;
    let c = server.scheduler();
    let mut updates = c
        .stream_task_updates(StreamTaskUpdatesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let later = SystemTime::now() + Duration::from_secs(3600);
    c.submit_task(submit("later", "echo", &[], Some(later)))
        .await
        .unwrap();
    assert_eq!(next(&mut updates).await.state, TaskState::Scheduled as i32);

    let r = c
        .cancel_task(cancel("c1", "later"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted, "{}", r.message);
    let u = next(&mut updates).await;
    assert_eq!(
        (u.state, u.previous_state),
        (TaskState::Cancelled as i32, TaskState::Scheduled as i32)
    );
    assert_eq!(u.message, "changed my mind");
    let status = c
        .get_task_status(GetTaskStatusRequest {
            task_id: "later".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status.state, status.error.as_str()),
        (TaskState::Cancelled as i32, "changed my mind")
    );
    let again = c
        .cancel_task(cancel("c2", "later"))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.accepted);
    assert!(again.message.contains("is cancelled"), "{}", again.message);

    // A task that already ran cannot be cancelled.
    c.submit_task(submit("now", "echo", &[("a", "1")], None))
        .await
        .unwrap();
    loop {
        let u = next(&mut updates).await;
        if u.task_id == "now" && u.state == TaskState::Succeeded as i32 {
            break;
        }
    }
    let late = c
        .cancel_task(cancel("c3", "now"))
        .await
        .unwrap()
        .into_inner();
    assert!(!late.accepted);
    assert!(
        late.message
            .contains("task `now` is succeeded; only a scheduled task can be cancelled"),
        "{}",
        late.message
    );
}

#[tokio::test]
async fn unknown_tasks_are_not_found_and_bad_input_is_invalid_argument() {
    let server = TestServer::start(MeshServer::new().scheduler(Scheduler::default())).await;
    let c = server.scheduler();
    assert_status(
        c.get_task_status(GetTaskStatusRequest {
            task_id: "ghost".to_owned(),
        })
        .await,
        Code::NotFound,
        "no task `ghost`",
    );
    assert_status(
        c.cancel_task(cancel("c1", "ghost")).await,
        Code::NotFound,
        "no task `ghost`",
    );
    assert_status(
        c.get_task_status(GetTaskStatusRequest {
            task_id: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "task_id is empty",
    );
    let mut no_request_id = submit("t1", "echo", &[], None);
    no_request_id.request_id.clear();
    assert_status(
        c.submit_task(no_request_id).await,
        Code::InvalidArgument,
        "request_id is empty",
    );
    assert_status(
        c.submit_task(submit("t1", "teleport", &[], None)).await,
        Code::InvalidArgument,
        "unknown task type `teleport`; the demo handler runs sleep, sum, echo and fail",
    );
    assert_status(
        c.submit_task(submit("t1", "sleep", &[("ms", "forever")], None))
            .await,
        Code::InvalidArgument,
        "parameter ms is `forever`",
    );
    let mut oversize = submit("t1", "echo", &[], None);
    oversize.parameters = (0..100).map(|i| (format!("k{i}"), String::new())).collect();
    assert_status(
        c.submit_task(oversize).await,
        Code::InvalidArgument,
        "parameters has 100 entries; at most 64",
    );
    c.submit_task(submit("t1", "echo", &[], None))
        .await
        .unwrap();
    let mut same_id = submit("t1", "echo", &[], None);
    same_id.request_id = "other".to_owned();
    assert_status(
        c.submit_task(same_id).await,
        Code::AlreadyExists,
        "task `t1` already exists",
    );
}

#[tokio::test]
async fn a_failing_task_ends_failed_with_its_error() {
    let server = TestServer::start(MeshServer::new().scheduler(Scheduler::new(DemoHandler))).await;
    let c = server.scheduler();
    let mut updates = c
        .stream_task_updates(StreamTaskUpdatesRequest {
            task_ids: vec!["f".to_owned()],
            include_current: false,
        })
        .await
        .unwrap()
        .into_inner();
    c.submit_task(submit("f", "fail", &[("message", "disk full")], None))
        .await
        .unwrap();
    loop {
        let u = next(&mut updates).await;
        if u.state == TaskState::Failed as i32 {
            assert_eq!(u.message, "disk full");
            break;
        }
    }
}

/// Replicas share one store: a task submitted through one is visible, and
/// cancellable, through another; and a retry after a lost response landing on
/// any replica is deduplicated.
#[tokio::test]
async fn replicas_share_the_task_store_and_deduplicate_retries() {
    let scheduler = Scheduler::default();
    let faults = FaultInjector::new("replica-a");
    faults.set(FaultPlan::lose_first_responses(
        1,
        &["/tai.v1.mesh.Scheduler/SubmitTask"],
    ));
    let a = TestServer::start(
        MeshServer::new()
            .scheduler(scheduler.clone())
            .faults(faults.clone()),
    )
    .await;
    let b = TestServer::start(MeshServer::new().scheduler(scheduler.clone())).await;
    let later = SystemTime::now() + Duration::from_secs(3600);
    let r = a
        .scheduler()
        .submit_task(submit("t1", "echo", &[], Some(later)))
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.accepted && r.duplicate,
        "applied once, the retry answered from the log: {r:?}"
    );
    assert_eq!(
        (
            scheduler.applied(),
            scheduler.duplicates(),
            faults.counts().dropped
        ),
        (1, 1, 1)
    );
    let status = b
        .scheduler()
        .get_task_status(GetTaskStatusRequest {
            task_id: "t1".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, TaskState::Scheduled as i32);
    assert!(
        b.scheduler()
            .cancel_task(cancel("c1", "t1"))
            .await
            .unwrap()
            .into_inner()
            .accepted
    );
}
