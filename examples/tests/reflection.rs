//! Server reflection as grpc-go and grpc C++ answer it: a file comes with the
//! files it imports that this stream has not been sent yet, so one request is
//! enough for clients that never ask for a dependency by name (grpcio's
//! descriptor pool, several GUI tools). Real tonic-reflection clients, v1 and
//! v1alpha, against a real `mesh serve` on loopback.

mod common;

use std::collections::{BTreeSet, HashSet};

use common::{EVENTUALLY, TestServer};
use prost::Message as _;
use prost_reflect::{DescriptorPool, FileDescriptor};
use tai_examples::server::{DESCRIPTOR_SET, MeshServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

/// One reflection stream, asked one question at a time.
struct Stream {
    requests: mpsc::Sender<ServerReflectionRequest>,
    replies: tonic::Streaming<ServerReflectionResponse>,
}

impl Stream {
    async fn open(server: &TestServer) -> Self {
        let mut client = ServerReflectionClient::new(server.tonic_channel().await);
        let (requests, rx) = mpsc::channel(4);
        let replies = client
            .server_reflection_info(ReceiverStream::new(rx))
            .await
            .expect("reflection stream opens")
            .into_inner();
        Self { requests, replies }
    }

    async fn ask(&mut self, message: MessageRequest) -> MessageResponse {
        self.requests
            .send(ServerReflectionRequest {
                host: String::new(),
                message_request: Some(message),
            })
            .await
            .expect("stream open");
        let reply = tokio::time::timeout(EVENTUALLY, self.replies.message())
            .await
            .expect("a reply in time")
            .expect("not a stream error")
            .expect("a reply, not the end of the stream");
        reply.message_response.expect("a response")
    }

    /// The names of the files a file request was answered with, in order.
    async fn files(&mut self, message: MessageRequest) -> Vec<String> {
        match self.ask(message).await {
            MessageResponse::FileDescriptorResponse(files) => files
                .file_descriptor_proto
                .iter()
                .map(|bytes| {
                    prost_types::FileDescriptorProto::decode(bytes.as_slice())
                        .expect("a FileDescriptorProto")
                        .name()
                        .to_owned()
                })
                .collect(),
            other => panic!("not files: {other:?}"),
        }
    }
}

fn symbol(name: &str) -> MessageRequest {
    MessageRequest::FileContainingSymbol(name.to_owned())
}

/// `file` and everything it imports, directly or not.
fn closure(file: &FileDescriptor) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut todo = vec![file.clone()];
    while let Some(file) = todo.pop() {
        if names.insert(file.name().to_owned()) {
            todo.extend(file.dependencies());
        }
    }
    names
}

fn file_of_service(pool: &DescriptorPool, service: &str) -> FileDescriptor {
    pool.get_service_by_name(service)
        .expect("a mesh service")
        .parent_file()
}

fn assert_once(names: &[String]) {
    let unique: HashSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "a file sent twice: {names:?}");
}

#[tokio::test]
async fn a_symbols_file_comes_with_its_imports_once_per_stream() {
    let pool = DescriptorPool::decode(DESCRIPTOR_SET).unwrap();
    let server = TestServer::start(MeshServer::all()).await;
    let mut stream = Stream::open(&server).await;

    let scheduler = file_of_service(&pool, "tai.v1.mesh.Scheduler");
    let sent = stream.files(symbol("tai.v1.mesh.Scheduler")).await;
    assert_eq!(sent[0], scheduler.name(), "the file asked for comes first");
    assert_once(&sent);
    let expected = closure(&scheduler);
    assert_eq!(sent.iter().cloned().collect::<BTreeSet<_>>(), expected);
    for import in [
        "tai/v1/options.proto",
        "tai/v1/mesh/common.proto",
        "google/protobuf/descriptor.proto",
        "google/protobuf/timestamp.proto",
        "google/protobuf/duration.proto",
    ] {
        assert!(
            sent.iter().any(|n| n == import),
            "{import} missing: {sent:?}"
        );
    }

    // Another service on the same stream: its own file, and nothing sent before.
    let coordinator = file_of_service(&pool, "tai.v1.mesh.Coordinator");
    let more = stream.files(symbol("tai.v1.mesh.Coordinator")).await;
    assert_eq!(more[0], coordinator.name());
    assert_once(&more);
    let new: BTreeSet<String> = closure(&coordinator)
        .difference(&expected)
        .cloned()
        .collect();
    assert_eq!(more.iter().cloned().collect::<BTreeSet<_>>(), new);

    // Asked again, a file is sent again (it was asked for), but its imports are not.
    assert_eq!(
        stream
            .files(symbol("tai.v1.mesh.Scheduler.SubmitTask"))
            .await,
        [scheduler.name()]
    );
    assert_eq!(
        stream
            .files(MessageRequest::FileByFilename(
                "tai/v1/options.proto".to_owned()
            ))
            .await,
        ["tai/v1/options.proto"]
    );
}

#[tokio::test]
async fn file_by_filename_sends_imports_on_a_fresh_stream() {
    let pool = DescriptorPool::decode(DESCRIPTOR_SET).unwrap();
    let server = TestServer::start(MeshServer::all()).await;
    let governor = file_of_service(&pool, "tai.v1.mesh.Governor");
    let mut stream = Stream::open(&server).await;
    let sent = stream
        .files(MessageRequest::FileByFilename(governor.name().to_owned()))
        .await;
    assert_eq!(sent[0], governor.name());
    assert_once(&sent);
    assert_eq!(
        sent.into_iter().collect::<BTreeSet<_>>(),
        closure(&governor)
    );

    // A second stream starts with nothing sent.
    let mut other = Stream::open(&server).await;
    let again = other.files(symbol("tai.v1.mesh.Governor")).await;
    assert_eq!(
        again.into_iter().collect::<BTreeSet<_>>(),
        closure(&governor)
    );
}

#[tokio::test]
async fn unknown_names_are_not_found_and_the_stream_goes_on() {
    let server = TestServer::start(MeshServer::all()).await;
    let mut stream = Stream::open(&server).await;
    for (request, name) in [
        (symbol("tai.v1.mesh.Nope"), "tai.v1.mesh.Nope"),
        (
            MessageRequest::FileByFilename("nope.proto".to_owned()),
            "nope.proto",
        ),
    ] {
        match stream.ask(request).await {
            MessageResponse::ErrorResponse(error) => {
                assert_eq!(error.error_code, Code::NotFound as i32);
                assert!(error.error_message.contains(name), "{error:?}");
            }
            other => panic!("not an error: {other:?}"),
        }
    }
    let MessageResponse::ListServicesResponse(list) = stream
        .ask(MessageRequest::ListServices(String::new()))
        .await
    else {
        panic!("not a service list")
    };
    let names: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "tai.v1.mesh.Governor",
        "tai.v1.mesh.Coordinator",
        "tai.v1.mesh.Scheduler",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn v1alpha_sends_imports_too() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let pool = DescriptorPool::decode(DESCRIPTOR_SET).unwrap();
    let server = TestServer::start(MeshServer::all()).await;
    let mut client = ServerReflectionClient::new(server.tonic_channel().await);
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "tai.v1.mesh.Scheduler".to_owned(),
            )),
        }]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().expect("a reply");
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
        panic!("not files: {reply:?}")
    };
    let names: BTreeSet<String> = files
        .file_descriptor_proto
        .iter()
        .map(|b| {
            prost_types::FileDescriptorProto::decode(b.as_slice())
                .unwrap()
                .name()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        closure(&file_of_service(&pool, "tai.v1.mesh.Scheduler"))
    );
}
