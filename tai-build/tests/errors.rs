//! Invalid input fails the build with messages that name the file, line, service,
//! method and option field, and report every problem at once.

use std::fs;
use std::path::{Path, PathBuf};

use tai_build::{Builder, ErrorKind};

/// The first lines of every fixture; service bodies start on line 6.
const HEAD: &str = "syntax = \"proto3\";\npackage demo;\nimport \"tai/v1/options.proto\";\nmessage M {}\nmessage N { M inner = 1; }\n";

struct Fixture {
    _dir: tempfile::TempDir,
    proto: PathBuf,
    out: PathBuf,
}

impl Fixture {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let proto = dir.path().join("proto");
        for (name, text) in files {
            let path = proto.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        let out = dir.path().join("out");
        Fixture {
            _dir: dir,
            proto,
            out,
        }
    }

    fn compile(&self) -> Result<(), tai_build::Error> {
        self.builder().compile()
    }

    fn builder(&self) -> Builder {
        Builder::new()
            .include(&self.proto)
            .out_dir(&self.out)
            .emit_rerun_if_changed(false)
    }

    /// The build with a service config `json` written beside the protos.
    fn error_with_config(&self, json: &str) -> tai_build::Error {
        let path = self.proto.join("svc.json");
        fs::write(&path, json).unwrap();
        let err = self
            .builder()
            .service_config(&path)
            .compile()
            .expect_err("the build should fail");
        assert!(
            !self.out.exists(),
            "nothing is written when the build fails"
        );
        err
    }

    fn error(&self) -> tai_build::Error {
        let err = self.compile().expect_err("the build should fail");
        assert!(
            !self.out.exists(),
            "nothing is written when the build fails: {}",
            self.out.display()
        );
        err
    }

    /// The path a message shows for a proto file.
    fn path(&self, name: &str) -> String {
        self.proto.join(name).display().to_string()
    }
}

/// A fixture with one file `svc.proto` = HEAD + `body`.
fn one(body: &str) -> Fixture {
    Fixture::new(&[("svc.proto", &format!("{HEAD}{body}"))])
}

fn policy_problems(fixture: &Fixture) -> Vec<String> {
    let err = fixture.error();
    assert_eq!(err.kind(), ErrorKind::Policy, "{err}");
    let problems = err.problems().to_vec();
    // Display lists every problem too.
    let text = err.to_string();
    for p in &problems {
        assert!(text.contains(p.as_str()), "{text}");
    }
    assert_eq!(
        format!("{err:?}"),
        text,
        "Debug is the readable text (for unwrap)"
    );
    problems
}

#[test]
fn unknown_code_name() {
    let f = one("service Svc {
  rpc Get(M) returns (M) {
    option (tai.v1.method) = {
      idempotent: true
      retry: { retryable_codes: [\"UNAVAILABLE\", \"UNAVAILBLE\"] }
    };
  }
}
");
    let problems = policy_problems(&f);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(
        problems[0],
        format!(
            "{}:10: demo.Svc/Get: option (tai.v1.method).retry.retryable_codes: unknown status code \
             `UNAVAILBLE`; valid codes are: {}",
            f.path("svc.proto"),
            tai_model::Code::valid_names()
        )
    );
}

#[test]
fn bad_durations() {
    let f = one("service Svc {
  option (tai.v1.service).timeout = \"10\";
  rpc Get(M) returns (M) {
    option (tai.v1.method).retry = { initial_backoff: \"5 parsecs\" };
  }
}
");
    let problems = policy_problems(&f);
    let path = f.path("svc.proto");
    assert_eq!(
        problems,
        vec![
            format!(
                "{path}:7: demo.Svc: option (tai.v1.service).timeout: `10` has no unit: write it \
                 like \"250ms\", \"2s\" or \"1.5m\""
            ),
            format!(
                "{path}:9: demo.Svc/Get: option (tai.v1.method).retry.initial_backoff: `5 parsecs` \
                 has an unknown unit ` parsecs`: use one of ns, us, ms, s, m, h"
            ),
        ]
    );
}

#[test]
fn none_is_only_for_timeout() {
    let f = one("service Svc {
  option (tai.v1.service) = { timeout: \"none\", max_timeout: \"none\" };
  rpc Get(M) returns (M);
}
");
    assert_eq!(
        policy_problems(&f),
        vec![format!(
            "{}:7: demo.Svc: option (tai.v1.service).max_timeout: cannot be \"none\" (only \
             `timeout` can): leave it unset instead",
            f.path("svc.proto")
        )]
    );
}

#[test]
fn max_attempts_below_two() {
    let f = one("service Svc {
  rpc Get(M) returns (M) {
    option (tai.v1.method) = {
      retry: {
        initial_backoff: \"10ms\"
        max_attempts: 1
      }
    };
  }
}
");
    assert_eq!(
        policy_problems(&f),
        vec![format!(
            "{}:11: demo.Svc/Get: option (tai.v1.method).retry.max_attempts: is 1, but must be at least 2",
            f.path("svc.proto")
        )]
    );
}

#[test]
fn zero_backoff() {
    let f = one("service Svc {
  rpc Get(M) returns (M) {
    option (tai.v1.method).retry = { initial_backoff: \"0s\", max_backoff: \"0ms\" };
  }
}
");
    let path = f.path("svc.proto");
    assert_eq!(
        policy_problems(&f),
        vec![
            format!(
                "{path}:8: demo.Svc/Get: option (tai.v1.method).retry.initial_backoff: must be greater than zero"
            ),
            format!(
                "{path}:8: demo.Svc/Get: option (tai.v1.method).retry.max_backoff: must be greater than zero"
            ),
        ]
    );
}

#[test]
fn retry_and_hedging_on_one_method() {
    let f = one("service Svc {
  rpc Get(M) returns (M) {
    option (tai.v1.method).idempotent = true;
    option (tai.v1.method).retry = {};
    option (tai.v1.method).hedging = { delay: \"10ms\" };
  }
}
");
    let problems = policy_problems(&f);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with(&format!(
            "{}:10: demo.Svc/Get: option (tai.v1.method).hedging: cannot be combined with retry",
            f.path("svc.proto")
        )),
        "{problems:#?}"
    );
}

#[test]
fn retry_on_non_idempotent_method_with_aborted() {
    let f = one("service Svc {
  rpc Write(M) returns (M) {
    option (tai.v1.method) = { retry: { retryable_codes: [\"UNAVAILABLE\", \"ABORTED\"] } };
  }
}
");
    let problems = policy_problems(&f);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let prefix = format!(
        "{}:8: demo.Svc/Write: option (tai.v1.method).retry.retryable_codes: retries a method that \
         is not marked idempotent on ABORTED",
        f.path("svc.proto")
    );
    assert!(problems[0].starts_with(&prefix), "{problems:#?}");
}

#[test]
fn throttle_on_a_method() {
    let f = one("service Svc {
  rpc Get(M) returns (M) {
    option (tai.v1.method).throttle = { max_tokens: 10 };
  }
}
");
    let problems = policy_problems(&f);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with(&format!(
            "{}:8: demo.Svc/Get: option (tai.v1.method).throttle: is shared by every method",
            f.path("svc.proto")
        )),
        "{problems:#?}"
    );
}

#[test]
fn hedging_needs_idempotent() {
    let f = one("service Svc {
  rpc Get(M) returns (M) { option (tai.v1.method).hedging = {}; }
}
");
    let problems = policy_problems(&f);
    assert!(
        problems[0].starts_with(&format!(
            "{}:7: demo.Svc/Get: option (tai.v1.method).hedging: sends the same call more than once",
            f.path("svc.proto")
        )),
        "{problems:#?}"
    );
}

#[test]
fn retry_on_a_request_stream() {
    let f = one("service Svc {
  rpc Upload(stream M) returns (M) {
    option (tai.v1.method).retry = {};
  }
}
");
    let problems = policy_problems(&f);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with(&format!(
            "{}:8: demo.Svc/Upload: option (tai.v1.method).retry: cannot apply to a client-streaming",
            f.path("svc.proto")
        )),
        "{problems:#?}"
    );
}

#[test]
fn disabled_with_other_fields() {
    let f = one("service Svc {
  option (tai.v1.service).breaker = { disabled: true, failure_threshold: 3 };
  rpc Get(M) returns (M) {
    option (tai.v1.method).breaker = { rate_disabled: true, window: \"5s\" };
  }
}
");
    let path = f.path("svc.proto");
    assert_eq!(
        policy_problems(&f),
        vec![
            format!(
                "{path}:7: demo.Svc: option (tai.v1.service).breaker.disabled: turns breaker off \
                 here, so failure_threshold has no effect; remove it or `disabled`"
            ),
            format!(
                "{path}:9: demo.Svc/Get: option (tai.v1.method).breaker.rate_disabled: turns the \
                 failure-rate rule off, so window has no effect; remove it or `rate_disabled`"
            ),
        ]
    );
}

/// A problem of an outer level is reported once, not once per method; a rule that
/// also depends on the method names the methods it fails for.
#[test]
fn outer_level_problems_are_reported_once() {
    let f = one("option (tai.v1.file) = { max_timeout: \"0s\" };
service Svc {
  option (tai.v1.service) = {
    retry: { max_attempts: 1 }
  };
  rpc A(M) returns (M) { option (tai.v1.method).idempotent = true; }
  rpc B(M) returns (M);
  rpc C(M) returns (M);
}
");
    let path = f.path("svc.proto");
    let problems = policy_problems(&f);
    assert_eq!(
        problems,
        vec![
            format!("{path}:6: option (tai.v1.file).max_timeout: must be greater than zero"),
            format!(
                "{path}:9: demo.Svc: option (tai.v1.service).retry.max_attempts: is 1, but must be at least 2"
            ),
        ]
    );

    let f = one("service Svc {
  option (tai.v1.service).retry = { retryable_codes: [\"ABORTED\"] };
  rpc A(M) returns (M) { option (tai.v1.method).idempotent = true; }
  rpc B(M) returns (M);
  rpc C(M) returns (M);
}
");
    let problems = policy_problems(&f);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with(&format!(
            "{}:7: demo.Svc/B, demo.Svc/C: option (tai.v1.service).retry.retryable_codes: retries \
             a method that is not marked idempotent on ABORTED",
            f.path("svc.proto")
        )),
        "{problems:#?}"
    );
}

/// Every problem of every file, service and method is in the one error, in file and
/// line order.
#[test]
fn all_problems_together() {
    let f = Fixture::new(&[
        (
            "a.proto",
            &format!(
                "{HEAD}service Alpha {{
  rpc One(M) returns (M) {{ option (tai.v1.method).timeout = \"fast\"; }}
  rpc Two(M) returns (M) {{
    option (tai.v1.method) = {{
      idempotent: true
      retry: {{ max_attempts: 0, backoff_multiplier: -1 }}
      hedging: {{ non_fatal_codes: [\"OK\"] }}
    }};
  }}
}}
"
            ),
        ),
        (
            "nested/b.proto",
            "syntax = \"proto3\";
package other.v2;
import \"tai/v1/options.proto\";
import \"a.proto\";
service Beta {
  option (tai.v1.service).throttle = { max_tokens: 5000 };
  rpc Three(demo.M) returns (demo.N) {
    option (tai.v1.method).breaker = { failure_rate: 1.5, failure_codes: [\"NOPE\"] };
  }
}
",
        ),
    ]);
    let a = f.path("a.proto");
    let b = f.path("nested/b.proto");
    let problems = policy_problems(&f);
    assert_eq!(
        problems,
        vec![
            format!(
                "{a}:7: demo.Alpha/One: option (tai.v1.method).timeout: `fast` has an unknown unit `fast`: use one of ns, us, ms, s, m, h"
            ),
            format!(
                "{a}:11: demo.Alpha/Two: option (tai.v1.method).retry.max_attempts: is 0, but must be at least 2"
            ),
            format!(
                "{a}:11: demo.Alpha/Two: option (tai.v1.method).retry.backoff_multiplier: is -1, but must be greater than 0"
            ),
            format!(
                "{a}:12: demo.Alpha/Two: option (tai.v1.method).hedging.non_fatal_codes: cannot contain OK: OK is a success"
            ),
            format!(
                "{a}:12: demo.Alpha/Two: option (tai.v1.method).hedging: cannot be combined with retry on the same method: a call either retries after a failure or hedges ahead of one; keep one"
            ),
            format!(
                "{b}:6: other.v2.Beta: option (tai.v1.service).throttle.max_tokens: is 5000, but must be in 1..=1000"
            ),
            format!(
                "{b}:8: other.v2.Beta/Three: option (tai.v1.method).breaker.failure_codes: unknown status code `NOPE`; valid codes are: {}",
                tai_model::Code::valid_names()
            ),
            format!(
                "{b}:8: other.v2.Beta/Three: option (tai.v1.method).breaker.failure_rate: is 1.5, but must be in (0, 1]"
            ),
        ]
    );
    let err = f.error();
    assert!(
        err.to_string().starts_with("8 problems in tai options:\n"),
        "{err}"
    );
}

#[test]
fn syntax_error_keeps_file_and_line() {
    let f = Fixture::new(&[(
        "broken.proto",
        "syntax = \"proto3\";\npackage demo;\n\nmessage M {\n  string name = 1\n}\n",
    )]);
    let err = f.error();
    assert_eq!(err.kind(), ErrorKind::Proto);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:6:1: ", f.path("broken.proto"))),
        "{text}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn unknown_type_keeps_file_and_line() {
    let f = one("service Svc {\n  rpc Get(Missing) returns (M);\n}\n");
    let err = f.error();
    assert_eq!(err.kind(), ErrorKind::Proto);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:7:", f.path("svc.proto"))),
        "{text}"
    );
    assert!(text.contains("Missing"), "{text}");
}

#[test]
fn missing_import() {
    let f = Fixture::new(&[(
        "a.proto",
        "syntax = \"proto3\";\nimport \"nowhere/b.proto\";\n",
    )]);
    let err = f.error();
    assert_eq!(err.kind(), ErrorKind::Proto);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:2:", f.path("a.proto"))),
        "{text}"
    );
    assert!(text.contains("nowhere/b.proto"), "{text}");
}

/// A message `SvcClient` with nested types would generate a module `svc_client`, as
/// does the client of service `Svc`.
#[test]
fn module_name_collision() {
    let f = one(
        "message SvcClient { message Inner {} }\nservice Svc { rpc Get(M) returns (SvcClient); }\n",
    );
    let err = f.error();
    assert_eq!(err.kind(), ErrorKind::Codegen);
    assert!(
        err.to_string().contains("two modules named `svc_client`"),
        "{err}"
    );
}

#[test]
fn setup_errors() {
    let err = Builder::new().compile().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("no include directory"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = Builder::new()
        .include(empty.path())
        .out_dir(empty.path())
        .compile()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().starts_with("no .proto file under "),
        "{err}"
    );

    let err = Builder::new()
        .include(Path::new("/no/such/dir"))
        .out_dir(empty.path())
        .compile()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
}

#[test]
fn balancer_unknown_or_on_a_method() {
    let f = one("service Svc {
  option (tai.v1.service).balancer = \"fastest\";
  rpc Get(M) returns (M) {
    option (tai.v1.method).balancer = \"least_loaded\";
  }
}
");
    let problems = policy_problems(&f);
    let path = f.path("svc.proto");
    assert_eq!(
        problems,
        vec![
            format!(
                "{path}:7: demo.Svc: option (tai.v1.service).balancer: unknown balancer `fastest`; \
                 valid balancers are: round_robin, least_loaded, peak_ewma, random"
            ),
            format!(
                "{path}:9: demo.Svc/Get: option (tai.v1.method).balancer: is chosen per client: set \
                 it on the service or the file, not on a method"
            ),
        ]
    );
}

#[test]
fn invalid_access_rules_name_the_proto_line() {
    let f = one("service Svc {
  option (tai.v1.service).auth = { scopes: [\"policies.read\", \"\"] };
  rpc Get(M) returns (M) {
    option (tai.v1.method).auth = { public: true, scopes: [\"policies.write\"] };
  }
  rpc Put(M) returns (M) {
    option (tai.v1.method).auth = { required: false, roles: [\"has space\"] };
  }
}
");
    let problems = policy_problems(&f);
    let path = f.path("svc.proto");
    assert_eq!(
        problems,
        vec![
            format!(
                "{path}:7: demo.Svc: option (tai.v1.service).auth.scopes: `` is empty: name a scope or role, or leave it out"
            ),
            format!(
                "{path}:9: demo.Svc/Get: option (tai.v1.method).auth.scopes: cannot be combined \
                 with `public`: a public method takes calls without an identity; remove `public` or this"
            ),
            format!(
                "{path}:12: demo.Svc/Put: option (tai.v1.method).auth.roles: `has space` may hold \
                 only visible ASCII characters other than `\"` and `\\` (no spaces)"
            ),
            format!(
                "{path}:12: demo.Svc/Put: option (tai.v1.method).auth.roles: needs an identity to \
                 check, but the rule says `required = false`; remove one of them"
            ),
        ]
    );
}

/// A retry policy for the service config with `attempts` and `codes`.
fn json_retry(attempts: u32, codes: &str) -> String {
    format!(
        r#""retryPolicy": {{"maxAttempts": {attempts}, "initialBackoff": "0.1s",
            "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": [{codes}]}}"#
    )
}

#[test]
fn service_config_problems_name_the_json_file_and_path() {
    let f = one("service Svc {\n  rpc Get(M) returns (M);\n}\n");
    let json = f.proto.join("svc.json").display().to_string();
    // Read on its own: every problem, each at its JSON path.
    let err = f.error_with_config(&format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "demo.Svc"}}], "waitForReady": true,
            {}}}], "retryThrottling": {{"maxTokens": 0, "tokenRatio": 1}}}}"#,
        json_retry(1, r#""UNAVAILABLE""#)
    ));
    assert_eq!(err.kind(), ErrorKind::Policy);
    assert_eq!(
        err.problems(),
        [
            format!("{json}: retryThrottling.maxTokens: is 0, but must be in 1..=1000"),
            format!(
                "{json}: methodConfig[0].waitForReady: is not supported yet: tai has no \
                 per-method wait-for-ready switch; remove it"
            ),
            format!(
                "{json}: methodConfig[0].retryPolicy.maxAttempts: is 1, but must be at least 2"
            ),
        ]
    );
    // Checked with the proto's levels: Get is not idempotent, so retrying it on
    // ABORTED is refused, at the JSON that asked for it and for the method it hits.
    let err = f.error_with_config(&format!(
        r#"{{"methodConfig": [{{"name": [{{}}], {}}}]}}"#,
        json_retry(3, r#""ABORTED", 14"#)
    ));
    assert_eq!(
        err.problems(),
        [format!(
            "{json}: methodConfig[0].retryPolicy.retryableStatusCodes: demo.Svc/Get: retries a \
             method that is not marked idempotent on ABORTED, which does not prove the server \
             never ran it; mark the method idempotent or retry only on UNAVAILABLE"
        )]
    );
}

#[test]
fn service_config_retry_meets_a_streaming_method() {
    // A service-wide retry leaves a client-streaming method alone (it cannot be
    // re-sent); naming the method itself is an error, as on the proto method.
    let f = one("service Svc {\n  rpc Up(stream M) returns (M);\n}\n");
    let path = f.proto.join("svc.json");
    let service_wide = format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "demo.Svc"}}], {}}}]}}"#,
        json_retry(3, r#""UNAVAILABLE""#)
    );
    fs::write(&path, service_wide).unwrap();
    f.builder().service_config(&path).compile().unwrap();
    fs::remove_dir_all(&f.out).unwrap();
    let err = f.error_with_config(&format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "demo.Svc", "method": "Up"}}], {}}}]}}"#,
        json_retry(3, r#""UNAVAILABLE""#)
    ));
    assert_eq!(
        err.problems(),
        [format!(
            "{}: methodConfig[0].retryPolicy: demo.Svc/Up: cannot apply to a client-streaming or \
             bidi method: its requests are a stream that cannot be re-sent",
            path.display()
        )]
    );
}

#[test]
fn a_missing_service_config_is_an_io_error() {
    let f = one("service Svc {\n  rpc Get(M) returns (M);\n}\n");
    let err = f
        .builder()
        .service_config(f.proto.join("nope.json"))
        .compile()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.to_string().contains("nope.json"), "{err}");
}
