//! The one error type of tai-build.
//!
//! A build script shows an error with `unwrap()`, which prints `Debug`; so `Debug`
//! prints the same readable text as `Display`: one problem per line, each starting
//! with the `.proto` file and line it is about.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What kind of thing went wrong. The message ([`Error`]'s `Display`) says exactly what.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let err = tai_build::Builder::new().include(dir.path()).compile().unwrap_err();
/// // An empty directory has no `.proto` file to compile.
/// assert_eq!(err.kind(), tai_build::ErrorKind::Config);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A `.proto` file could not be found, parsed or linked. The message is protox's,
    /// with the file and line it points at.
    Proto,
    /// One or more tai options, or the service config, are invalid.
    /// [`Error::problems`] lists every one.
    Policy,
    /// The generated Rust could not be assembled, e.g. two modules got the same name.
    Codegen,
    /// A file could not be read or written.
    Io,
    /// The builder was set up wrongly: no include directory, no `.proto` file, no
    /// `OUT_DIR`.
    Config,
}

/// An error of [`compile`](crate::compile) or [`Builder::compile`](crate::Builder::compile).
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// std::fs::write(
///     dir.path().join("bad.proto"),
///     r#"syntax = "proto3";
///     import "tai/v1/options.proto";
///     message M {}
///     service S {
///       rpc Call(M) returns (M) {
///         option (tai.v1.method) = { retry: { max_attempts: 1 } };
///       }
///     }"#,
/// ).unwrap();
/// let err = tai_build::Builder::new()
///     .include(dir.path())
///     .out_dir(dir.path())
///     .emit_rerun_if_changed(false)
///     .compile()
///     .unwrap_err();
/// assert_eq!(err.kind(), tai_build::ErrorKind::Policy);
/// assert!(err.problems()[0].ends_with(
///     "bad.proto:6: S/Call: option (tai.v1.method).retry.max_attempts: is 1, but must be at least 2"
/// ));
/// ```
pub struct Error {
    inner: Box<Repr>,
}

#[derive(Debug, thiserror::Error)]
enum Repr {
    #[error("{message}")]
    Proto {
        message: String,
        #[source]
        source: protox::Error,
    },
    #[error("{}", policy_message(.0))]
    Policy(Vec<String>),
    #[error("{0}")]
    Codegen(String),
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Config(String),
}

fn policy_message(problems: &[String]) -> String {
    match problems {
        [one] => one.clone(),
        many => {
            let mut text = format!("{} problems in tai options:", many.len());
            for problem in many {
                text.push('\n');
                text.push_str(problem);
            }
            text
        }
    }
}

impl Error {
    /// What kind of error this is.
    ///
    /// ```
    /// let err = tai_build::Builder::new()
    ///     .include("/no/such/dir")
    ///     .out_dir(std::env::temp_dir())
    ///     .compile()
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), tai_build::ErrorKind::Io);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match &*self.inner {
            Repr::Proto { .. } => ErrorKind::Proto,
            Repr::Policy(_) => ErrorKind::Policy,
            Repr::Codegen(_) => ErrorKind::Codegen,
            Repr::Io { .. } => ErrorKind::Io,
            Repr::Config(_) => ErrorKind::Config,
        }
    }

    /// Every problem of an [`ErrorKind::Policy`] error, one message each, in file and
    /// line order; empty for the other kinds, whose one message is the `Display` text.
    ///
    /// Each message reads `file:line: service/method: option (tai.v1.method).field: what is wrong`.
    ///
    /// ```
    /// // Not a policy error: no include directory was given.
    /// let err = tai_build::Builder::new().compile().unwrap_err();
    /// assert_eq!(err.kind(), tai_build::ErrorKind::Config);
    /// assert!(err.problems().is_empty());
    /// ```
    pub fn problems(&self) -> &[String] {
        match &*self.inner {
            Repr::Policy(problems) => problems,
            _ => &[],
        }
    }

    fn new(repr: Repr) -> Self {
        Error {
            inner: Box::new(repr),
        }
    }

    pub(crate) fn proto(message: String, source: protox::Error) -> Self {
        Error::new(Repr::Proto { message, source })
    }

    pub(crate) fn policy(problems: Vec<String>) -> Self {
        Error::new(Repr::Policy(problems))
    }

    pub(crate) fn codegen(message: impl Into<String>) -> Self {
        Error::new(Repr::Codegen(message.into()))
    }

    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        Error::new(Repr::Io {
            action,
            path: path.to_owned(),
            source,
        })
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(Repr::Config(message.into()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `unwrap()` in a build script prints this: keep it the readable text.
        fmt::Display::fmt(&self.inner, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.inner)
    }
}
