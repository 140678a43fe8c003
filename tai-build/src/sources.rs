//! Where `.proto` files come from: the include directories, then tai's own
//! `tai/v1/options.proto` (bundled, so a project needs no copy), then Google's
//! well-known types; and how a file is named in an error.
//!
//! Why a chain of resolvers with the user's directories first: a project that
//! keeps its own copy of the options (like tai's repository) uses that copy, and
//! an error names a file by the path the user knows (`proto/governor.proto`).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};

use crate::Error;
use crate::builder::Builder;

/// `tai/v1/options.proto`, shipped inside tai-build so that `.proto` files can
/// import it without a copy.
pub(crate) const OPTIONS_PROTO: &str = include_str!("../../proto/tai/v1/options.proto");

/// The name `.proto` files import the options by.
pub(crate) const OPTIONS_PROTO_NAME: &str = "tai/v1/options.proto";

impl Builder {
    /// The include directories, then tai's options, then the Google types. The user's
    /// directories come first, so a project that keeps its own copy of
    /// `tai/v1/options.proto` (like tai's repository) uses that copy.
    pub(crate) fn resolver(&self) -> ChainFileResolver {
        let mut resolver = ChainFileResolver::new();
        for dir in &self.includes {
            resolver.add(IncludeFileResolver::new(dir.clone()));
        }
        resolver.add(BundledOptions);
        resolver.add(GoogleFileResolver::new());
        resolver
    }

    /// The path to show for a proto file name: as found under an include directory
    /// (`proto/governor.proto`), else the name itself.
    pub(crate) fn display_path(&self, name: &str) -> PathBuf {
        self.includes
            .iter()
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
            .unwrap_or_else(|| PathBuf::from(name))
    }

    /// protox's message (its `Debug` form has the `file:line:column:` prefix), with
    /// the file shown by its path.
    pub(crate) fn describe_proto_error(&self, error: &protox::Error) -> String {
        let text = format!("{error:?}");
        match error.file() {
            Some(name) => {
                let path = self.display_path(name).display().to_string();
                match text.strip_prefix(name) {
                    Some(rest) if rest.starts_with(':') => format!("{path}{rest}"),
                    _ if text.contains(name) => text,
                    _ => format!("{path}: {text}"),
                }
            }
            None => text,
        }
    }
}

/// Serves `tai/v1/options.proto` from memory.
struct BundledOptions;

impl FileResolver for BundledOptions {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == OPTIONS_PROTO_NAME {
            File::from_source(name, OPTIONS_PROTO)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// Collects every `.proto` file under `dir`, recursively.
pub(crate) fn find_protos(dir: &Path, found: &mut BTreeSet<PathBuf>) -> Result<(), Error> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io("read", &path, e))?;
        if kind.is_dir() || (kind.is_symlink() && path.is_dir()) {
            find_protos(&path, found)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            found.insert(path);
        }
    }
    Ok(())
}
