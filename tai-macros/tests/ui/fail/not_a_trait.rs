use tai_macros::resilient;

#[resilient(service = "x.v1.Svc")]
pub struct Svc {
    pub n: u32,
}

fn main() {
    // The struct is still emitted, so code that uses it has no further errors.
    let _ = Svc { n: 1 };
}
