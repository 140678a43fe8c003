//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`) that answers the
//! way grpc-go and gRPC C++ do.
//!
//! A file request (`file_containing_symbol`, `file_by_filename`,
//! `file_containing_extension`) is answered with the file **and every file it
//! imports, directly or not, that this stream has not been sent yet**. The file
//! asked for comes first and is always sent, even if it was sent before. One
//! request is then enough to build the file. Clients that never ask for an import
//! by name can only load services this way: grpcio's descriptor pool and several
//! GUI tools are among them. tonic-reflection sends the file alone.
//!
//! What a stream remembers is one flag per file of the descriptor set, so its
//! memory is bounded by the server's own descriptors, whatever a peer asks.
//! A name that is not found gets an in-stream `ErrorResponse` with NOT_FOUND,
//! and the stream stays open, as in grpc-go. A request with no question ends the
//! stream with INVALID_ARGUMENT.
//!
//! Files are served as the descriptor set encoded them, custom options (tai's own
//! among them) included.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // In a crate that tai-build compiles protos for, this would be
//! // `tai_runtime::include_descriptor_set!()`.
//! const DESCRIPTORS: &[u8] = tonic_health::pb::FILE_DESCRIPTOR_SET;
//! let reflection = tai_runtime::server::reflection::Reflection::new(DESCRIPTORS)?;
//! tonic::transport::Server::builder()
//!     .add_service(reflection.v1())
//!     .add_service(reflection.v1alpha())
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use prost_reflect::{DescriptorError, DescriptorPool};
use tonic::{Code, Request, Response, Status, Streaming};

/// The descriptors a reflection service answers from, shared by every stream and
/// by the v1 and v1alpha services.
#[derive(Clone, Debug)]
pub struct Reflection {
    state: Arc<State>,
}

/// The descriptor set given to [`Reflection::new`] could not be read.
#[derive(Debug)]
pub struct ReflectionError(DescriptorError);

impl fmt::Display for ReflectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid file descriptor set: {}", self.0)
    }
}

impl std::error::Error for ReflectionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl Reflection {
    /// Reflection over one encoded `FileDescriptorSet`, such as
    /// [`include_descriptor_set!`](crate::include_descriptor_set) gives, plus the
    /// reflection protos themselves (so that the reflection services are listed
    /// and described, as tonic-reflection does).
    ///
    /// ```
    /// use tai_runtime::server::reflection::Reflection;
    ///
    /// let reflection = Reflection::new(tonic_health::pb::FILE_DESCRIPTOR_SET).unwrap();
    /// assert!(reflection.services().any(|s| s == "grpc.health.v1.Health"));
    /// assert!(Reflection::new(b"not a descriptor set").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// If the bytes are not a valid, complete `FileDescriptorSet` (every import
    /// must be in it).
    pub fn new(encoded_file_descriptor_set: &[u8]) -> Result<Self, ReflectionError> {
        Self::from_sets([encoded_file_descriptor_set])
    }

    /// Reflection over several encoded `FileDescriptorSet`s (for example yours and
    /// `tonic_health::pb::FILE_DESCRIPTOR_SET`), plus the reflection protos. A
    /// file that is in more than one set is kept once. A set may import files of
    /// the sets before it.
    ///
    /// ```
    /// use tai_runtime::server::reflection::Reflection;
    ///
    /// let reflection = Reflection::from_sets([
    ///     tonic_health::pb::FILE_DESCRIPTOR_SET,
    ///     tonic_health::pb::FILE_DESCRIPTOR_SET,
    /// ])
    /// .unwrap();
    /// assert_eq!(reflection.services().filter(|s| *s == "grpc.health.v1.Health").count(), 1);
    /// ```
    ///
    /// # Errors
    ///
    /// If a set is not a valid `FileDescriptorSet`, or imports a file that no set
    /// before it (or it) has.
    pub fn from_sets<'a>(
        encoded_file_descriptor_sets: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, ReflectionError> {
        let mut pool = DescriptorPool::new();
        for set in encoded_file_descriptor_sets.into_iter().chain([
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]) {
            pool.decode_file_descriptor_set(set)
                .map_err(ReflectionError)?;
        }
        Ok(Self {
            state: Arc::new(State::new(pool)),
        })
    }

    /// The services listed to clients, by full name.
    pub fn services(&self) -> impl Iterator<Item = &str> + '_ {
        self.state.services.iter().map(String::as_str)
    }

    /// The `grpc.reflection.v1.ServerReflection` service, for tonic's router.
    ///
    /// ```
    /// let reflection =
    ///     tai_runtime::server::reflection::Reflection::new(tonic_health::pb::FILE_DESCRIPTOR_SET).unwrap();
    /// let router = tonic::transport::Server::builder().add_service(reflection.v1());
    /// # drop(router);
    /// ```
    pub fn v1(&self) -> v1::ServerReflectionServer<v1::ReflectionService> {
        v1::ServerReflectionServer::new(v1::ReflectionService {
            state: Arc::clone(&self.state),
        })
    }

    /// The `grpc.reflection.v1alpha.ServerReflection` service (older clients,
    /// grpcurl before 1.9 among them), for tonic's router.
    ///
    /// ```
    /// let reflection =
    ///     tai_runtime::server::reflection::Reflection::new(tonic_health::pb::FILE_DESCRIPTOR_SET).unwrap();
    /// let router = tonic::transport::Server::builder().add_service(reflection.v1alpha());
    /// # drop(router);
    /// ```
    pub fn v1alpha(&self) -> v1alpha::ServerReflectionServer<v1alpha::ReflectionService> {
        v1alpha::ServerReflectionServer::new(v1alpha::ReflectionService {
            state: Arc::clone(&self.state),
        })
    }
}

/// Everything the streams look up, built once.
struct State {
    pool: DescriptorPool,
    /// Each file as the descriptor set encoded it, by pool index.
    encoded: Box<[Vec<u8>]>,
    /// Each file's imports, by pool index.
    imports: Box<[Box<[usize]>]>,
    files: HashMap<Box<str>, usize>,
    /// Every full name a client may ask about (services, methods, messages,
    /// fields, oneofs, enums, enum values, extensions), to its file.
    symbols: HashMap<Box<str>, usize>,
    services: Box<[String]>,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("files", &self.encoded.len())
            .field("symbols", &self.symbols.len())
            .field("services", &self.services)
            .finish()
    }
}

impl State {
    fn new(pool: DescriptorPool) -> Self {
        let files = pool.files();
        let mut encoded = Vec::with_capacity(files.len());
        let mut imports = Vec::with_capacity(files.len());
        let mut names = HashMap::with_capacity(files.len());
        for file in files {
            encoded.push(file.encode_to_vec());
            imports.push(file.dependencies().map(|d| d.index()).collect());
            names.insert(file.name().into(), file.index());
        }
        let mut symbols: HashMap<Box<str>, usize> = HashMap::new();
        let mut add = |name: &str, file: usize| {
            symbols.insert(name.into(), file);
        };
        let mut services = Vec::new();
        for service in pool.services() {
            let file = service.parent_file().index();
            add(service.full_name(), file);
            for method in service.methods() {
                add(method.full_name(), file);
            }
            services.push(service.full_name().to_owned());
        }
        for message in pool.all_messages() {
            let file = message.parent_file().index();
            add(message.full_name(), file);
            for field in message.fields() {
                add(field.full_name(), file);
            }
            for oneof in message.oneofs() {
                add(oneof.full_name(), file);
            }
        }
        for enumeration in pool.all_enums() {
            let file = enumeration.parent_file().index();
            add(enumeration.full_name(), file);
            for value in enumeration.values() {
                add(value.full_name(), file);
            }
        }
        for extension in pool.all_extensions() {
            add(extension.full_name(), extension.parent_file().index());
        }
        Self {
            pool,
            encoded: encoded.into(),
            imports: imports.into(),
            files: names,
            symbols,
            services: services.into(),
        }
    }

    /// `root`, then (breadth first) its imports not yet `sent`, all marked sent.
    ///
    /// Whenever a file is marked sent, so is everything it imports, so an import
    /// already sent needs no walk below it.
    fn files_from(&self, root: usize, sent: &mut Sent) -> Vec<Vec<u8>> {
        let mut out = vec![self.encoded[root].clone()];
        sent.0[root] = true;
        let mut queue = std::collections::VecDeque::from([root]);
        while let Some(file) = queue.pop_front() {
            for &import in &self.imports[file] {
                if !sent.0[import] {
                    sent.0[import] = true;
                    out.push(self.encoded[import].clone());
                    queue.push_back(import);
                }
            }
        }
        out
    }

    fn answer(&self, question: Question<'_>, sent: &mut Sent) -> Answer {
        let not_found = |what: String| Answer::Error(Code::NotFound, what);
        match question {
            Question::FileByFilename(name) => match self.files.get(name) {
                Some(&file) => Answer::Files(self.files_from(file, sent)),
                None => not_found(format!("file not found: {name:?}")),
            },
            Question::FileContainingSymbol(name) => match self.symbols.get(name) {
                Some(&file) => Answer::Files(self.files_from(file, sent)),
                None => not_found(format!("symbol not found: {name:?}")),
            },
            Question::FileContainingExtension(message, number) => {
                let Some(descriptor) = self.pool.get_message_by_name(message) else {
                    return not_found(format!("message type not found: {message:?}"));
                };
                let extension = u32::try_from(number)
                    .ok()
                    .and_then(|n| descriptor.extensions().find(|e| e.number() == n));
                match extension {
                    Some(e) => Answer::Files(self.files_from(e.parent_file().index(), sent)),
                    None => not_found(format!(
                        "no extension numbered {number} extends {message:?}"
                    )),
                }
            }
            Question::AllExtensionNumbersOfType(message) => {
                match self.pool.get_message_by_name(message) {
                    Some(descriptor) => Answer::ExtensionNumbers(
                        descriptor.full_name().to_owned(),
                        descriptor
                            .extensions()
                            .filter_map(|e| i32::try_from(e.number()).ok())
                            .collect(),
                    ),
                    None => not_found(format!("message type not found: {message:?}")),
                }
            }
            Question::ListServices => Answer::Services(self.services.to_vec()),
        }
    }
}

/// The files a stream has been sent: one flag per file of the server's own
/// descriptor set, so bounded whatever the peer asks.
struct Sent(Box<[bool]>);

impl Sent {
    fn new(state: &State) -> Self {
        Self(vec![false; state.encoded.len()].into())
    }
}

/// A request, whichever reflection version it came in.
enum Question<'a> {
    FileByFilename(&'a str),
    FileContainingSymbol(&'a str),
    FileContainingExtension(&'a str, i32),
    AllExtensionNumbersOfType(&'a str),
    ListServices,
}

/// An answer, to be put in whichever reflection version was asked.
enum Answer {
    Files(Vec<Vec<u8>>),
    ExtensionNumbers(String, Vec<i32>),
    Services(Vec<String>),
    Error(Code, String),
}

/// The request with no question in it: grpc-go ends the stream so too.
fn no_question() -> Status {
    Status::invalid_argument("a ServerReflectionRequest must set message_request")
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The service of one reflection version; v1 and v1alpha have the same messages
/// in different packages.
macro_rules! reflection_version {
    ($version:ident, $name:literal) => {
        #[doc = concat!("The `grpc.reflection.", $name, "` service.")]
        pub mod $version {
            use super::*;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$version::{
                ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse,
                ListServiceResponse, ServerReflectionRequest, ServerReflectionResponse,
                ServiceResponse,
            };

            pub use tonic_reflection::pb::$version::server_reflection_server::{
                ServerReflection, ServerReflectionServer,
            };

            /// Answers reflection streams; made by
            #[doc = concat!("[`Reflection::", stringify!($version), "`](super::Reflection::", stringify!($version), ").")]
            #[derive(Debug)]
            pub struct ReflectionService {
                pub(super) state: Arc<State>,
            }

            fn answer(
                state: &State,
                sent: &mut Sent,
                request: ServerReflectionRequest,
            ) -> Result<ServerReflectionResponse, Status> {
                let question = match &request.message_request {
                    None => return Err(no_question()),
                    Some(MessageRequest::FileByFilename(name)) => Question::FileByFilename(name),
                    Some(MessageRequest::FileContainingSymbol(name)) => {
                        Question::FileContainingSymbol(name)
                    }
                    Some(MessageRequest::FileContainingExtension(e)) => {
                        Question::FileContainingExtension(&e.containing_type, e.extension_number)
                    }
                    Some(MessageRequest::AllExtensionNumbersOfType(name)) => {
                        Question::AllExtensionNumbersOfType(name)
                    }
                    Some(MessageRequest::ListServices(_)) => Question::ListServices,
                };
                let response = match state.answer(question, sent) {
                    Answer::Files(file_descriptor_proto) => {
                        MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                            file_descriptor_proto,
                        })
                    }
                    Answer::ExtensionNumbers(base_type_name, extension_number) => {
                        MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                            base_type_name,
                            extension_number,
                        })
                    }
                    Answer::Services(names) => {
                        MessageResponse::ListServicesResponse(ListServiceResponse {
                            service: names
                                .into_iter()
                                .map(|name| ServiceResponse { name })
                                .collect(),
                        })
                    }
                    Answer::Error(code, error_message) => {
                        MessageResponse::ErrorResponse(ErrorResponse {
                            error_code: code as i32,
                            error_message,
                        })
                    }
                };
                Ok(ServerReflectionResponse {
                    valid_host: request.host.clone(),
                    original_request: Some(request),
                    message_response: Some(response),
                })
            }

            #[tonic::async_trait]
            impl ServerReflection for ReflectionService {
                type ServerReflectionInfoStream = BoxStream<ServerReflectionResponse>;

                async fn server_reflection_info(
                    &self,
                    request: Request<Streaming<ServerReflectionRequest>>,
                ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
                    let state = Arc::clone(&self.state);
                    let mut sent = Sent::new(&state);
                    let replies = request
                        .into_inner()
                        .map(move |request| answer(&state, &mut sent, request?));
                    Ok(Response::new(Box::pin(replies)))
                }
            }
        }
    };
}

reflection_version!(v1, "v1");
reflection_version!(v1alpha, "v1alpha");

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use prost_types::{FileDescriptorProto, FileDescriptorSet};

    /// A diamond: `top` imports `left` and `right`, which both import `base`;
    /// `other` imports `base`.
    fn diamond() -> Reflection {
        let file = |name: &str, deps: &[&str]| FileDescriptorProto {
            name: Some(name.to_owned()),
            package: Some(name.trim_end_matches(".proto").to_owned()),
            dependency: deps.iter().map(|d| (*d).to_owned()).collect(),
            message_type: vec![prost_types::DescriptorProto {
                name: Some("M".to_owned()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let set = FileDescriptorSet {
            file: vec![
                file("base.proto", &[]),
                file("left.proto", &["base.proto"]),
                file("right.proto", &["base.proto"]),
                file("top.proto", &["left.proto", "right.proto"]),
                file("other.proto", &["base.proto"]),
            ],
        };
        Reflection::new(&set.encode_to_vec()).unwrap()
    }

    fn names(answer: Answer) -> Vec<String> {
        let Answer::Files(files) = answer else {
            panic!("not files")
        };
        files
            .iter()
            .map(|b| {
                FileDescriptorProto::decode(b.as_slice())
                    .unwrap()
                    .name()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn a_file_comes_first_then_its_unsent_imports_breadth_first_each_once() {
        let reflection = diamond();
        let state = &reflection.state;
        let mut sent = Sent::new(state);
        assert_eq!(
            names(state.answer(Question::FileContainingSymbol("top.M"), &mut sent)),
            ["top.proto", "left.proto", "right.proto", "base.proto"]
        );
        assert_eq!(
            names(state.answer(Question::FileByFilename("other.proto"), &mut sent)),
            ["other.proto"]
        );
        assert_eq!(
            names(state.answer(Question::FileByFilename("left.proto"), &mut sent)),
            ["left.proto"]
        );
        let mut fresh = Sent::new(state);
        assert_eq!(
            names(state.answer(Question::FileByFilename("left.proto"), &mut fresh)),
            ["left.proto", "base.proto"]
        );
    }

    #[test]
    fn unknown_names_are_not_found_and_nothing_is_remembered() {
        let reflection = diamond();
        let state = &reflection.state;
        let mut sent = Sent::new(state);
        for question in [
            Question::FileContainingSymbol("nope.M"),
            Question::FileByFilename("nope.proto"),
            Question::FileContainingExtension("top.M", 7),
            Question::FileContainingExtension("nope.M", -1),
            Question::AllExtensionNumbersOfType("nope.M"),
        ] {
            assert!(matches!(
                state.answer(question, &mut sent),
                Answer::Error(Code::NotFound, _)
            ));
        }
        assert!(sent.0.iter().all(|s| !s));
        assert_eq!(sent.0.len(), state.encoded.len());
    }

    #[test]
    fn invalid_sets_are_errors() {
        let missing_import = FileDescriptorSet {
            file: vec![FileDescriptorProto {
                name: Some("a.proto".to_owned()),
                dependency: vec!["missing.proto".to_owned()],
                ..Default::default()
            }],
        };
        let error = Reflection::new(&missing_import.encode_to_vec()).unwrap_err();
        assert!(error.to_string().contains("missing.proto"), "{error}");
        assert!(Reflection::new(&[0xff, 0xff]).is_err());
    }
}
