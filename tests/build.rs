//! Generates the code of `proto/` (awkward names, nested and cross-package imports,
//! every streaming shape, well-known types) for `tests/codegen*.rs`.

fn main() {
    tai_build::compile("proto").unwrap();
}
