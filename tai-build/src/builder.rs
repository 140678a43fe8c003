//! [`Builder`]: one documented method per knob, as prost-build's `Config` has.
//!
//! Why the knobs only: a builder is plain configuration a build script reads top
//! to bottom; what [`Builder::compile`] does with it is the pipeline
//! (`compile.rs`), where the `.proto` files come from is `sources.rs`, and what
//! prost is told about Rust paths is `prost_paths.rs`.

use std::path::{Path, PathBuf};

/// Configures and runs code generation. [`compile`](crate::compile) is
/// `Builder::new().include(dir).compile()`.
///
/// ```no_run
/// // build.rs
/// fn main() -> Result<(), tai_build::Error> {
///     tai_build::Builder::new()
///         .include("proto")
///         .file("proto/governor.proto")
///         .build_server(false)
///         .compile()
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    pub(crate) includes: Vec<PathBuf>,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) out_dir: Option<PathBuf>,
    pub(crate) descriptor_set_path: Option<PathBuf>,
    pub(crate) emit_rerun_if_changed: Option<bool>,
    pub(crate) build_server: bool,
    pub(crate) build_client: bool,
    pub(crate) extern_paths: Vec<(String, String)>,
    pub(crate) type_attributes: Vec<(String, String)>,
    pub(crate) service_config: Option<PathBuf>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// A builder with no include directory and no file yet; servers and clients on.
    ///
    /// ```
    /// let builder = tai_build::Builder::new();
    /// # drop(builder);
    /// ```
    pub fn new() -> Self {
        Builder {
            includes: Vec::new(),
            files: Vec::new(),
            out_dir: None,
            descriptor_set_path: None,
            emit_rerun_if_changed: None,
            build_server: true,
            build_client: true,
            extern_paths: Vec::new(),
            type_attributes: Vec::new(),
            service_config: None,
        }
    }

    /// Adds an include directory: `import` statements are resolved against it, in the
    /// order the directories were added. tai's own `tai/v1/options.proto` and the
    /// Google well-known types are always importable after them.
    ///
    /// If no [`file`](Self::file) is given, every `.proto` file under every include
    /// directory (recursively) is compiled.
    ///
    /// ```no_run
    /// tai_build::Builder::new()
    ///     .include("proto")
    ///     .include("third_party/proto")
    ///     .file("proto/governor.proto")
    ///     .compile()?;
    /// # Ok::<(), tai_build::Error>(())
    /// ```
    pub fn include(mut self, path: impl AsRef<Path>) -> Self {
        self.includes.push(path.as_ref().to_owned());
        self
    }

    /// Adds a `.proto` file to compile. It must be inside an include directory. Once
    /// a file is given, include directories are no longer scanned; the files they
    /// import are still generated, as prost does.
    ///
    /// ```no_run
    /// tai_build::Builder::new()
    ///     .include("proto")
    ///     .file("proto/governor.proto")
    ///     .file("proto/scheduler.proto")
    ///     .compile()?;
    /// # Ok::<(), tai_build::Error>(())
    /// ```
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.files.push(path.as_ref().to_owned());
        self
    }

    /// Where the generated `{package}.rs` files (and, by default, the descriptor set)
    /// go. Defaults to the `OUT_DIR` cargo gives a build script.
    ///
    /// ```no_run
    /// tai_build::Builder::new()
    ///     .include("proto")
    ///     .out_dir("src/generated")
    ///     .compile()?;
    /// # Ok::<(), tai_build::Error>(())
    /// ```
    pub fn out_dir(mut self, path: impl AsRef<Path>) -> Self {
        self.out_dir = Some(path.as_ref().to_owned());
        self
    }

    /// Where the encoded `FileDescriptorSet` goes (every compiled file and everything
    /// it imports, custom options kept), e.g. for `tonic-reflection`. Defaults to
    /// `tai_descriptor.bin` in the output directory, which
    /// `tai_runtime::include_descriptor_set!()` reads.
    ///
    /// ```no_run
    /// tai_build::Builder::new()
    ///     .include("proto")
    ///     .descriptor_set_path(std::env::var("OUT_DIR").unwrap() + "/governor.bin")
    ///     .compile()?;
    /// # Ok::<(), tai_build::Error>(())
    /// ```
    pub fn descriptor_set_path(mut self, path: impl AsRef<Path>) -> Self {
        self.descriptor_set_path = Some(path.as_ref().to_owned());
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for every file read (imports
    /// included, built-in ones excluded) and for every scanned include directory, so
    /// that cargo reruns the build script when a `.proto` changes or is added. On by
    /// default when running as a build script.
    ///
    /// ```no_run
    /// tai_build::Builder::new()
    ///     .include("proto")
    ///     .emit_rerun_if_changed(false)
    ///     .compile()?;
    /// # Ok::<(), tai_build::Error>(())
    /// ```
    pub fn emit_rerun_if_changed(mut self, enable: bool) -> Self {
        self.emit_rerun_if_changed = Some(enable);
        self
    }

    /// Whether to generate tonic's server module (`{service}_server`) per service.
    /// On by default.
    ///
    /// ```no_run
    /// // A crate that only calls these services.
    /// tai_build::Builder::new()
    ///     .include("proto")
    ///     .build_server(false)
    ///     .compile()?;
    /// # Ok::<(), tai_build::Error>(())
    /// ```
    pub fn build_server(mut self, enable: bool) -> Self {
        self.build_server = enable;
        self
    }

    /// Whether to generate tai's client module (`{service}_client`, the annotated
    /// trait that `#[resilient]` turns into a typed client) per service. On by default.
    ///
    /// ```no_run
    /// // A crate that only serves these services.
    /// tai_build::Builder::new()
    ///     .include("proto")
    ///     .build_client(false)
    ///     .compile()?;
    /// # Ok::<(), tai_build::Error>(())
    /// ```
    pub fn build_client(mut self, enable: bool) -> Self {
        self.build_client = enable;
        self
    }

    /// Uses an existing Rust type for a proto path instead of generating it; passed to
    /// `prost_build::Config::extern_path`. `.google.protobuf` is already mapped to
    /// `prost_types` through tai-runtime; don't map it again.
    ///
    /// ```no_run
    /// tai_build::Builder::new()
    ///     .include("proto")
    ///     .extern_path(".common.v1", "::common_protos::v1")
    ///     .compile()?;
    /// # Ok::<(), tai_build::Error>(())
    /// ```
    pub fn extern_path(
        mut self,
        proto_path: impl Into<String>,
        rust_path: impl Into<String>,
    ) -> Self {
        self.extern_paths
            .push((proto_path.into(), rust_path.into()));
        self
    }

    /// Adds an attribute to the generated messages and enums matched by `path`;
    /// passed to `prost_build::Config::type_attribute` (`"."` matches every type).
    ///
    /// ```no_run
    /// tai_build::Builder::new()
    ///     .include("proto")
    ///     .type_attribute(".tai.v1.Receipt", "#[derive(Eq, Hash)]")
    ///     .compile()?;
    /// # Ok::<(), tai_build::Error>(())
    /// ```
    pub fn type_attribute(mut self, path: impl Into<String>, attribute: impl Into<String>) -> Self {
        self.type_attributes.push((path.into(), attribute.into()));
        self
    }

    /// Reads a gRPC service config (the standard JSON: `methodConfig` with `timeout`,
    /// `retryPolicy`, `hedgingPolicy`; `retryThrottling`; and tai's `tai` object for
    /// the breaker, the balancer, `idempotent` and `max_timeout`) as one more level of
    /// policy, checked at build time like the proto options.
    ///
    /// For each method, the entry gRPC would pick (the one naming the method, else its
    /// service, else the default `[{}]`) sits just below the method's own
    /// `(tai.v1.method)` options, which win field by field; it overrides the file and
    /// service options. `retryThrottling` and `tai.balancer` join the service level.
    /// A problem is reported with the JSON file and path
    /// (`svc.json: methodConfig[0].retryPolicy.maxAttempts: ...`); the file is watched
    /// by `cargo:rerun-if-changed`. Calling this again replaces the file.
    ///
    /// ```no_run
    /// tai_build::Builder::new()
    ///     .include("proto")
    ///     .service_config("proto/service_config.json")
    ///     .compile()?;
    /// # Ok::<(), tai_build::Error>(())
    /// ```
    pub fn service_config(mut self, path: impl AsRef<Path>) -> Self {
        self.service_config = Some(path.as_ref().to_owned());
        self
    }
}
