//! What prost and tonic are told about Rust paths: the exact path of each Google
//! well-known type under `tai_runtime::__private::prost_types`, and which plain
//! Rust types tonic's server code may name for the wrappers prost maps itself.
//!
//! Why exact paths and a scoped allow-list: prost snake-cases a prefix mapping
//! (which would turn `__private` into `private`), and tonic's allow-list is a
//! global of tonic-prost-build, set only while generating and restored after.

use heck::{ToSnakeCase, ToUpperCamelCase};

use crate::generator::PRIVATE;

/// While alive, lets tonic's server code name the Rust types prost maps the
/// well-known wrappers to (`bool`, `i64`, ...) without a `super::` prefix.
pub(crate) struct WrapperTypes;

impl WrapperTypes {
    const ALLOWED: &'static [&'static str] =
        &["()", "bool", "i32", "i64", "u32", "u64", "f32", "f64"];

    pub(crate) fn allow() -> Self {
        tonic_prost_build::NON_PATH_TYPE_ALLOWLIST.set(Self::ALLOWED);
        WrapperTypes
    }
}

impl Drop for WrapperTypes {
    fn drop(&mut self) {
        tonic_prost_build::NON_PATH_TYPE_ALLOWLIST.set(&["()"]);
    }
}

/// Exact extern paths for every Google well-known message and enum in the pool.
///
/// prost maps `.google.protobuf` to `prost_types_path` as a prefix, and snake-cases
/// every segment of a prefix mapping, which would turn `__private` into `private`.
/// Exact mappings are used as written. The wrappers and `Empty`, which prost maps to
/// Rust types itself (`bool`, `()`, ...), are left to prost.
pub(crate) fn well_known_paths(pool: &prost_reflect::DescriptorPool) -> Vec<(String, String)> {
    const MAPPED_BY_PROST: [&str; 10] = [
        "BoolValue",
        "BytesValue",
        "DoubleValue",
        "Empty",
        "FloatValue",
        "Int32Value",
        "Int64Value",
        "StringValue",
        "UInt32Value",
        "UInt64Value",
    ];
    fn rust_path(full_name: &str) -> String {
        let mut parts: Vec<&str> = full_name
            .strip_prefix("google.protobuf.")
            .unwrap_or(full_name)
            .split('.')
            .collect();
        let last = parts.pop().unwrap_or_default().to_upper_camel_case();
        let mut path = format!("{PRIVATE}::prost_types");
        for module in parts {
            path.push_str("::");
            path.push_str(&module.to_snake_case());
        }
        format!("{path}::{last}")
    }
    let mut paths = Vec::new();
    for message in pool.all_messages() {
        let name = message.full_name();
        let in_package = name.strip_prefix("google.protobuf.");
        if in_package.is_some_and(|n| !MAPPED_BY_PROST.contains(&n)) && !message.is_map_entry() {
            paths.push((format!(".{name}"), rust_path(name)));
        }
    }
    for e in pool.all_enums() {
        if e.full_name().starts_with("google.protobuf.") {
            paths.push((format!(".{}", e.full_name()), rust_path(e.full_name())));
        }
    }
    paths
}
