//! The client variants and the operations they run.

use std::time::Duration;

use tonic::{Request, Status};

use crate::pb::{Item, Nested, Payload, StreamRequest};

/// The deadline of every call that has one: the `timeout` of `bench.proto`.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// tonic's generated client over a tonic `Channel`.
pub type RawClient = crate::raw::bench_client::BenchClient<tonic::transport::Channel>;
/// tai's generated client over a transport.
pub type TaiClient<T> = crate::pb::bench_client::BenchClient<T>;

/// One way of calling the server.
#[derive(Clone)]
pub enum Client {
    /// tonic's generated client; `deadline` set per call with `set_timeout`.
    Raw {
        /// The client.
        client: RawClient,
        /// `grpc-timeout` per call, if any.
        deadline: Option<Duration>,
    },
    /// tai's generated client over tai's channel: every policy of `bench.proto` on.
    Tai(TaiClient<tai_runtime::Channel>),
    /// tai's generated client over a tonic channel (separates channel and policy costs).
    TaiTonic(TaiClient<tonic::transport::Channel>),
    /// tonic's generated client behind tower-resilience's circuit breaker, retry
    /// and time limiter ([`resilient`]).
    Resilient(Resilient),
}

/// A call through tower-resilience's layers: the response is the number of
/// messages, as [`Client::run`] returns.
pub type Resilient = tower::util::BoxCloneSyncService<Op, u64, Status>;

/// What a tonic user builds today for retry, circuit breaker and time limit, as
/// tower-resilience's tonic example composes it: the layers wrap a `service_fn`
/// that re-issues the RPC from the (cloneable) message, since tonic's `Channel`
/// takes bodies that cannot be cloned. Circuit breaker outermost (failure rate
/// 50% over 100 calls), then retry (3 attempts on UNAVAILABLE, exponential
/// backoff from 100 ms), then a 5 s time limit per attempt. Like tai's, its
/// policies never act when nothing fails; unlike tai's, the time limit is not
/// sent to the server (no `grpc-timeout`).
pub fn resilient(client: RawClient) -> Resilient {
    use tower_resilience::circuitbreaker::CircuitBreakerLayer;
    use tower_resilience::retry::RetryLayer;
    use tower_resilience::timelimiter::{TimeLimiterError, TimeLimiterLayer};

    type Attempt = TimeLimiterError<Status>;
    let rpc = tower::service_fn(move |op: Op| {
        let mut client = Client::Raw {
            client: client.clone(),
            deadline: None,
        };
        async move { client.run(&op).await }
    });
    let time_limit = TimeLimiterLayer::builder()
        .timeout_duration(DEADLINE)
        .build();
    let retry = RetryLayer::<Op, u64, Attempt>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .retry_on(|e: &Attempt| {
            matches!(e, TimeLimiterError::Inner(s) if s.code() == tonic::Code::Unavailable)
        })
        .build();
    let breaker = CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .expect("a valid circuit breaker configuration");
    let service = tower::ServiceBuilder::new()
        .layer(breaker)
        .layer(retry)
        .layer(time_limit)
        .service(rpc);
    let service = tower::ServiceExt::map_err(service, |e| {
        use tower_resilience::circuitbreaker::CircuitBreakerError;
        match e {
            CircuitBreakerError::OpenCircuit => Status::unavailable("circuit open"),
            CircuitBreakerError::Inner(TimeLimiterError::Timeout) => {
                Status::deadline_exceeded("time limit")
            }
            CircuitBreakerError::Inner(TimeLimiterError::Inner(status)) => status,
        }
    });
    tower::util::BoxCloneSyncService::new(service)
}

/// What one request of a scenario is.
#[derive(Clone, Debug)]
pub enum Op {
    /// A unary call with a flat 100-byte payload.
    Echo(Payload),
    /// A unary call with a nested message of about 200 bytes.
    EchoNested(Nested),
    /// A server stream of `count` messages of `size` bytes.
    Stream(StreamRequest),
}

impl Op {
    /// A unary call with `size` bytes of payload.
    pub fn echo(size: usize) -> Op {
        Op::Echo(Payload {
            data: vec![0xab; size],
        })
    }

    /// A unary call with the nested message.
    pub fn nested() -> Op {
        let item = |i: i64| Item {
            name: format!("item-{i}"),
            value: i * 1_000_003,
            enabled: i % 2 == 0,
            blob: vec![i as u8; 16],
        };
        Op::EchoNested(Nested {
            id: "tasks/0123456789abcdef".to_owned(),
            version: 42,
            head: Some(item(0)),
            items: (1..=4).map(item).collect(),
            labels: [("zone", "eu-west-1a"), ("tier", "gold")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        })
    }

    /// A stream of `count` messages of `size` bytes.
    pub fn stream(count: u32, size: u32) -> Op {
        Op::Stream(StreamRequest { count, size })
    }

    /// Encoded size of the request message.
    pub fn encoded_len(&self) -> usize {
        use prost::Message;
        match self {
            Op::Echo(m) => m.encoded_len(),
            Op::EchoNested(m) => m.encoded_len(),
            Op::Stream(m) => m.encoded_len(),
        }
    }
}

fn with_deadline<T>(message: T, deadline: Option<Duration>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(d) = deadline {
        request.set_timeout(d);
    }
    request
}

impl Client {
    /// Runs `op` once; returns the number of response messages.
    pub async fn run(&mut self, op: &Op) -> Result<u64, Status> {
        match (self, op) {
            (Client::Raw { client, deadline }, Op::Echo(m)) => client
                .echo(with_deadline(m.clone(), *deadline))
                .await
                .map(|_| 1),
            (Client::Raw { client, deadline }, Op::EchoNested(m)) => client
                .echo_nested(with_deadline(m.clone(), *deadline))
                .await
                .map(|_| 1),
            (Client::Raw { client, deadline }, Op::Stream(m)) => {
                let mut stream = client
                    .stream(with_deadline(*m, *deadline))
                    .await?
                    .into_inner();
                let mut n = 0;
                while let Some(message) = stream.message().await? {
                    std::hint::black_box(message);
                    n += 1;
                }
                Ok(n)
            }
            (Client::Tai(client), op) => tai_run(client, op).await,
            (Client::TaiTonic(client), op) => tai_run(client, op).await,
            (Client::Resilient(service), op) => {
                use tower::{Service, ServiceExt};
                service.ready().await?.call(op.clone()).await
            }
        }
    }
}

async fn tai_run<T: tai_runtime::__private::Transport>(
    client: &TaiClient<T>,
    op: &Op,
) -> Result<u64, Status> {
    match op {
        Op::Echo(m) => client.echo(m.clone()).await.map(|_| 1),
        Op::EchoNested(m) => client.echo_nested(m.clone()).await.map(|_| 1),
        Op::Stream(m) => {
            let mut stream = client.stream(*m).await?.into_inner();
            let mut n = 0;
            // The same call site as raw's: `message()`, as a tonic user reads.
            while let Some(message) = stream.message().await? {
                std::hint::black_box(message);
                n += 1;
            }
            Ok(n)
        }
    }
}

/// A tonic channel to `addr` with tonic's defaults (what a tonic user writes).
pub async fn tonic_channel(
    addr: &str,
) -> Result<tonic::transport::Channel, Box<dyn std::error::Error>> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await?,
    )
}

/// A tonic channel to `addr` over mTLS with tonic's own TLS: trusts the
/// development CA in `dir`, presents its client certificate.
pub async fn tonic_tls_channel(
    addr: &str,
    dir: &std::path::Path,
) -> Result<tonic::transport::Channel, Box<dyn std::error::Error>> {
    use tai_examples::certs::files;
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |file| std::fs::read(dir.join(file));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(files::CA)?))
        .identity(Identity::from_pem(
            read(files::CLIENT_CERT)?,
            read(files::CLIENT_KEY)?,
        ))
        .domain_name("localhost");
    Ok(
        tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls)?
            .tcp_nodelay(true)
            .connect()
            .await?,
    )
}

/// A tai channel to `addr` with tai's default configuration.
pub async fn tai_channel(addr: &str) -> Result<tai_runtime::Channel, Box<dyn std::error::Error>> {
    let channel = tai_runtime::Channel::to(addr)?;
    if !channel.ready(Duration::from_secs(10)).await {
        return Err(format!("tai channel to {addr} did not become ready").into());
    }
    Ok(channel)
}
