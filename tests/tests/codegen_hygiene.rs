//! Generated code keeps compiling next to user items that shadow the names it could
//! rely on: prelude types and traits, and modules named like the crates it uses.
//! Everything it names goes through absolute paths (`::core`, `::tai_runtime`).

#![allow(missing_docs, dead_code, non_camel_case_types)]

/// Declares, in the module it is used in, items named like what generated code uses.
macro_rules! shadow_everything {
    () => {
        pub struct Result;
        pub struct Option;
        pub struct Box;
        pub struct String;
        pub struct Vec;
        pub struct Status;
        pub struct Channel;
        pub trait Send {}
        pub trait Sync {}
        pub trait Future {}
        pub trait Clone {}
        pub trait Default {}
        pub trait Debug {}
        pub mod core {}
        pub mod std {}
        pub mod alloc {}
        pub mod tonic {}
        pub mod tonic_prost {}
        pub mod prost {}
        pub mod prost_types {}
        pub mod http {}
        pub mod tai_runtime {}
        pub mod __private {}
    };
}

pub mod common {
    shadow_everything!();
    ::tai_runtime::include_proto!("common");
}

pub mod edge {
    pub mod v1 {
        shadow_everything!();
        ::tai_runtime::include_proto!("edge.v1");
    }
}

pub mod streams {
    shadow_everything!();
    ::tai_runtime::include_proto!("streams");
}

pub mod wkt {
    shadow_everything!();
    ::tai_runtime::include_proto!("wkt");
}

#[test]
fn shadowed_names_do_not_reach_generated_code() {
    let item = edge::v1::Item {
        r#type: "t".into(),
        tag: Some(common::Tag { name: "n".into() }),
    };
    assert_eq!(item.clone().r#type, "t");
    assert_eq!(streams::Chunk::default().seq, 0);
    assert_eq!(streams::streamer_server::SERVICE_NAME, "streams.Streamer");
}
