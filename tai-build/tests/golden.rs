//! Golden-file tests: every directory under `tests/golden/` holds `proto/` (the input,
//! also the include directory) and `expected/` (every `.rs` file tai-build writes for
//! it). A difference fails the test with both texts.
//!
//! After an intended change of the output, regenerate the expected files with
//! `TAI_BLESS=1 cargo test -p tai-build --test golden` and review the diff.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                files.insert(name, fs::read_to_string(&path).unwrap());
            }
        }
    }
    files
}

fn check(case: &str) {
    let root: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "golden", case]
        .iter()
        .collect();
    let out = tempfile::tempdir().unwrap();
    tai_build::Builder::new()
        .include(root.join("proto"))
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile()
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let actual = rust_files(out.path());
    let expected_dir = root.join("expected");

    if std::env::var_os("TAI_BLESS").is_some() {
        let _ = fs::remove_dir_all(&expected_dir);
        fs::create_dir_all(&expected_dir).unwrap();
        for (name, text) in &actual {
            fs::write(expected_dir.join(name), text).unwrap();
        }
        return;
    }

    let expected = rust_files(&expected_dir);
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{case}: the set of generated files differs (TAI_BLESS=1 regenerates)"
    );
    for (name, text) in &actual {
        if text != &expected[name] {
            let first = text
                .lines()
                .zip(expected[name].lines())
                .position(|(a, b)| a != b)
                .map_or(0, |i| i + 1);
            panic!(
                "{case}/{name} differs from tests/golden/{case}/expected/{name} (first at line \
                 {first}; TAI_BLESS=1 regenerates)\n--- generated ---\n{text}"
            );
        }
    }
}

/// File, service and method levels; long (`= { ... }`) and short (`.field = ...`)
/// option forms; `disabled`, `timeout: "none"`, `rate_disabled`; a service without
/// options.
#[test]
fn annotated() {
    check("annotated");
}

/// Unary, server-, client- and bidi-streaming methods; well-known types as request
/// and response; a file without a package.
#[test]
fn streaming() {
    check("streaming");
}
