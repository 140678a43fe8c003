//! `mesh call`: one call through a generated client, JSON in, JSON out.
//!
//! The request is read with the proto3 JSON mapping (field names in camelCase or
//! as in the .proto, timestamps as RFC 3339 strings, durations as `"1.5s"`) into
//! a dynamic message described by the descriptor set tai-build wrote, encoded,
//! and decoded into the generated request type; the reply goes the other way.
//! So the call runs through the typed, resilient client — with the policies of
//! the .proto — and not through a generic one.

use std::io::Write;
use std::time::Duration;

use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions,
};
use tai_runtime::{ResponseStream, Status};

use crate::proto::coordinator_client::CoordinatorClient;
use crate::proto::governor_client::GovernorClient;
use crate::proto::scheduler_client::SchedulerClient;
use crate::server::DESCRIPTOR_SET;

/// Why `mesh call` failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The service name is not one of the mesh's.
    #[error("unknown service `{0}`; the services are: governor, coordinator, scheduler")]
    UnknownService(String),
    /// The method is not one of the service's.
    #[error("unknown method `{method}` of {service}; its methods are: {valid}")]
    UnknownMethod {
        /// The service.
        service: String,
        /// What was asked for.
        method: String,
        /// The methods there are.
        valid: String,
    },
    /// The JSON does not describe a request of the method.
    #[error("bad JSON for {message}: {reason}")]
    BadJson {
        /// The request message type.
        message: String,
        /// What is wrong, with the line and column.
        reason: String,
    },
    /// The server cannot be reached: why, and what to do
    /// ([`probe`](crate::probe)).
    #[error("{0}")]
    Unreachable(String),
    /// The address is not valid.
    #[error("{0}")]
    Address(#[from] tai_runtime::ConnectError),
    /// The call failed.
    #[error("the call failed: {code:?}: {message}")]
    Status {
        /// The gRPC code.
        code: tai_runtime::Code,
        /// The server's (or the client's) message.
        message: String,
    },
    /// The output could not be written.
    #[error("cannot write the reply: {0}")]
    Io(#[from] std::io::Error),
}

impl From<Status> for CallError {
    fn from(s: Status) -> Self {
        CallError::Status {
            code: s.code(),
            message: s.message().to_owned(),
        }
    }
}

/// The descriptors of the mesh services.
pub fn descriptor_pool() -> DescriptorPool {
    DescriptorPool::decode(DESCRIPTOR_SET).expect("tai-build writes a valid descriptor set")
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Finds a method by service (`governor`, `Governor` or `tai.v1.mesh.Governor`)
/// and method (`ProposePolicy`, `propose_policy` or `propose-policy`).
///
/// # Errors
///
/// [`CallError::UnknownService`] or [`CallError::UnknownMethod`], listing what exists.
pub fn find_method(
    pool: &DescriptorPool,
    service: &str,
    method: &str,
) -> Result<MethodDescriptor, CallError> {
    let short = service.rsplit('.').next().unwrap_or(service);
    let descriptor = pool
        .services()
        .filter(|s| s.package_name() == "tai.v1.mesh")
        .find(|s| normalize(s.name()) == normalize(short))
        .ok_or_else(|| CallError::UnknownService(service.to_owned()))?;
    descriptor
        .methods()
        .find(|m| normalize(m.name()) == normalize(method))
        .ok_or_else(|| CallError::UnknownMethod {
            service: descriptor.name().to_owned(),
            method: method.to_owned(),
            valid: descriptor
                .methods()
                .map(|m| m.name().to_owned())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Reads `json` as a request of type `M` (described by `desc`).
///
/// # Errors
///
/// [`CallError::BadJson`] saying what is wrong and where.
pub fn request_from_json<M: Message + Default>(
    desc: &MessageDescriptor,
    json: &str,
) -> Result<M, CallError> {
    let bad = |reason: String| CallError::BadJson {
        message: desc.full_name().to_owned(),
        reason,
    };
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let dynamic = DynamicMessage::deserialize(desc.clone(), &mut deserializer)
        .map_err(|e| bad(e.to_string()))?;
    deserializer.end().map_err(|e| bad(e.to_string()))?;
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| bad(e.to_string()))
}

/// A reply as pretty JSON, default values included (so `"accepted": false` shows).
pub fn reply_to_json<M: Message>(desc: &MessageDescriptor, reply: &M) -> String {
    let dynamic = DynamicMessage::decode(desc.clone(), reply.encode_to_vec().as_slice())
        .expect("a message the generated code encoded decodes with its own descriptor");
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::pretty(&mut out);
    let options = SerializeOptions::new().skip_default_fields(false);
    dynamic
        .serialize_with_options(&mut serializer, &options)
        .expect("serializing to memory cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// What to call and how.
#[derive(Clone, Debug)]
pub struct CallSpec {
    /// `host:port` or `http://host:port`.
    pub addr: String,
    /// Service name.
    pub service: String,
    /// Method name.
    pub method: String,
    /// The request, as JSON.
    pub json: String,
    /// For streaming methods: stop after this many messages.
    pub limit: Option<usize>,
    /// How long to wait for the connection.
    pub connect_timeout: Duration,
    /// The connection preset.
    pub config: tai_runtime::config::ClientConfig,
    /// mTLS, or plaintext if `None`.
    pub tls: Option<tai_runtime::tls::ClientTls>,
    /// The bearer token sent with the call, if any.
    pub token: Option<tai_runtime::auth::TokenSource>,
}

/// Makes the call and writes the reply (for a stream, each message) to `out` as JSON.
///
/// # Errors
///
/// See [`CallError`]: every case carries a message for people.
pub async fn run(spec: &CallSpec, out: &mut (dyn Write + Send)) -> Result<(), CallError> {
    let pool = descriptor_pool();
    let method = find_method(&pool, &spec.service, &spec.method)?;
    let input = method.input();
    let output = method.output();
    let tls = spec.tls.as_ref();
    let channel = crate::client::channel(&spec.addr, spec.config.clone(), tls)?;
    crate::probe::ready(&channel, &spec.addr, tls, spec.connect_timeout)
        .await
        .map_err(CallError::Unreachable)?;
    let limit = spec.limit.unwrap_or(usize::MAX);
    // Sends `authorization: Bearer <token>` when `--token` is given.
    let authorize = crate::client::bearer(spec.token.clone());

    macro_rules! unary {
        ($client:expr, $call:ident) => {{
            // A `Request` around the message, so that its type is the method's.
            let request = tai_runtime::Request::new(request_from_json(&input, &spec.json)?);
            let reply = $client.$call(request).await?.into_inner();
            writeln!(out, "{}", reply_to_json(&output, &reply))?;
            Ok(())
        }};
    }
    macro_rules! streaming {
        ($client:expr, $call:ident) => {{
            let request = tai_runtime::Request::new(request_from_json(&input, &spec.json)?);
            let stream = $client.$call(request).await?.into_inner();
            print_stream(stream, &output, limit, out).await
        }};
    }

    match (method.parent_service().name(), method.name()) {
        ("Governor", m) => {
            let c = GovernorClient::with_interceptor(channel, authorize);
            match m {
                "ProposePolicy" => unary!(c, propose_policy),
                "EnforcePolicy" => unary!(c, enforce_policy),
                "RevokePolicy" => unary!(c, revoke_policy),
                "GetPolicies" => unary!(c, get_policies),
                "StreamPolicies" => streaming!(c, stream_policies),
                "HealthCheck" => unary!(c, health_check),
                _ => unreachable!("find_method returns methods of the proto"),
            }
        }
        ("Coordinator", m) => {
            let c = CoordinatorClient::with_interceptor(channel, authorize);
            match m {
                "SubmitSignal" => unary!(c, submit_signal),
                "RequestAction" => unary!(c, request_action),
                "StreamActions" => streaming!(c, stream_actions),
                "AcknowledgeAction" => unary!(c, acknowledge_action),
                "GetStatus" => unary!(c, get_status),
                "HealthCheck" => unary!(c, health_check),
                _ => unreachable!("find_method returns methods of the proto"),
            }
        }
        ("Scheduler", m) => {
            let c = SchedulerClient::with_interceptor(channel, authorize);
            match m {
                "SubmitTask" => unary!(c, submit_task),
                "CancelTask" => unary!(c, cancel_task),
                "GetTaskStatus" => unary!(c, get_task_status),
                "StreamTaskUpdates" => streaming!(c, stream_task_updates),
                "HealthCheck" => unary!(c, health_check),
                _ => unreachable!("find_method returns methods of the proto"),
            }
        }
        _ => unreachable!("find_method returns mesh services"),
    }
}

async fn print_stream<M: Message>(
    mut stream: ResponseStream<M>,
    desc: &MessageDescriptor,
    limit: usize,
    out: &mut (dyn Write + Send),
) -> Result<(), CallError> {
    let mut seen = 0;
    while seen < limit {
        tokio::select! {
            message = stream.message() => match message? {
                Some(m) => {
                    writeln!(out, "{}", reply_to_json(desc, &m))?;
                    out.flush()?;
                    seen += 1;
                }
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}
