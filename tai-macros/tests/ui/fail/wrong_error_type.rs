use tai_macros::resilient;

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Req {
    #[prost(uint32, tag = "1")]
    pub n: u32,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Resp {}

#[resilient()]
pub trait Svc {
    async fn call(&self, request: Req) -> Result<Resp, String>;
}

fn main() {}
