//! Compile-time behaviour of `#[resilient]`: forms that must compile, and invalid
//! forms whose errors must say what is wrong at the token that is wrong.
//!
//! Regenerate the expected errors with `TRYBUILD=overwrite cargo test -p tai-macros --test ui`,
//! then read every changed `.stderr`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
