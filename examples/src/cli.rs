//! The `mesh` command line.
//!
//! Subcommands share option groups — [`ClientOptions`] for everything that
//! connects, [`ServerOptions`] for everything that listens — so that TLS,
//! authentication and metrics flags can be added to a group once and reach every
//! subcommand that needs them.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tai_runtime::auth::TokenSource;
use tai_runtime::config::ClientConfig;
use tai_runtime::server::rate_limit::{Quota, RateLimitLayer, RedisStore};

use crate::call::{self, CallSpec};
use crate::fault::{FaultInjector, FaultPlan};
use crate::server::{self, MeshServer};
use crate::tour::{self, Live, TourOptions};

/// The tai mesh: three resilient gRPC services, their generated clients, and a
/// tour of what resilience does when things break.
///
/// With no command, runs the tour.
#[derive(Debug, Parser)]
#[command(name = "mesh", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; the tour if left out.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The tour's options, when no command is given.
    #[command(flatten)]
    pub tour: TourArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the Governor, Coordinator and three Scheduler replicas on loopback,
    /// run a workload through the generated clients while faults are injected,
    /// and check that every idempotent call succeeded (exit 0) or not (exit 1).
    Tour(TourArgs),
    /// Serve all three services, with grpc.health.v1 and server reflection, on
    /// one address until Ctrl-C; then drain in-flight calls and exit 0.
    ///
    /// Example (mTLS): mesh certs --out certs && mesh serve --tls-dir certs
    Serve(ServeArgs),
    /// Make one call through the generated client and print the reply as JSON.
    ///
    /// Example: mesh call governor ProposePolicy --json '{"requestId": "r1", "policy": {"id": "p1", "policyType": "security"}}'
    ///
    /// Over mTLS: mesh call governor GetPolicies --tls-dir certs
    Call(CallArgs),
    /// Print every method's effective policy (Governor, Coordinator, Scheduler),
    /// one field a line in the `#[resilient(...)]` grammar.
    Policies,
    /// Scrape a running `mesh serve --metrics-addr` and print a table: per
    /// method calls, ok% and mean latency; then rate-limit and channel series.
    ///
    /// Example: mesh stats --addr 127.0.0.1:9090
    Stats(StatsArgs),
    /// Mint a development JWT (HS256) for a server started with the same
    /// --jwt-secret, and print it.
    ///
    /// Example: mesh call governor GetPolicies --token "$(mesh token --jwt-secret S --sub ada --scope governor.read)"
    Token(TokenArgs),
    /// Write a development CA and certificates (ca.pem, server.pem, server.key,
    /// client.pem, client.key) for `serve --tls-dir` and `call --tls-dir`.
    Certs(CertsArgs),
}

/// `mesh stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// The metrics address of the server (its `--metrics-addr`).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub addr: String,
}

/// `mesh certs`.
#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    /// The directory to write them into (created if missing).
    #[arg(long, default_value = "mesh-certs")]
    pub out: std::path::PathBuf,
}

/// `mesh token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The server's HS256 secret (at least 32 bytes), as given to `serve --jwt-secret`.
    #[arg(long, value_name = "SECRET")]
    pub jwt_secret: String,
    /// The token's `aud`.
    #[arg(long, default_value = crate::auth::DEFAULT_AUDIENCE)]
    pub jwt_audience: String,
    /// The token's `iss`.
    #[arg(long, default_value = crate::auth::DEFAULT_ISSUER)]
    pub jwt_issuer: String,
    /// The token's subject (who calls; rate limits are per subject).
    #[arg(long, default_value = "developer")]
    pub sub: String,
    /// A scope to grant, repeatable: `governor.read`, `scheduler.write`, ...
    /// (reads need `<service>.read`, writes `<service>.write`).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// How long the token lives, e.g. `1h`, `10m`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
}

/// Authentication and rate limits of a server.
#[derive(Debug, Clone, Args)]
pub struct AuthOptions {
    /// Require a bearer JWT signed with this HS256 secret (at least 32
    /// bytes). Reads then need the scope `<service>.read`, writes
    /// `<service>.write`; health stays public. Tokens: `mesh token`.
    #[arg(long, value_name = "SECRET", group = "jwt_keys")]
    pub jwt_secret: Option<String>,
    /// Require a bearer JWT verified with this PEM public key (RSA: RS256, EC
    /// P-256: ES256, Ed25519: EdDSA).
    #[arg(long, value_name = "FILE", group = "jwt_keys")]
    pub jwt_public_key: Option<PathBuf>,
    /// Require a bearer JWT verified with the keys of this JWKS file (read
    /// again when it changes; never fetched over the network).
    #[arg(long, value_name = "FILE", group = "jwt_keys")]
    pub jwks: Option<PathBuf>,
    /// The `aud` tokens must carry.
    #[arg(long, default_value = crate::auth::DEFAULT_AUDIENCE)]
    pub jwt_audience: String,
    /// The `iss` tokens must carry.
    #[arg(long, default_value = crate::auth::DEFAULT_ISSUER)]
    pub jwt_issuer: String,
    /// Limit each caller to N calls a second (`N/s`; a burst of N), keyed by
    /// the token's subject, else the peer address; over it, RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub rate_limit: Option<NonZeroU32>,
    /// Share the --rate-limit quotas with every replica using the same Redis
    /// (e.g. `redis://127.0.0.1:6379`); each falls back to its own quotas
    /// while Redis is down.
    #[arg(long, value_name = "URL", requires = "rate_limit")]
    pub redis: Option<String>,
}

impl AuthOptions {
    /// The token settings, if a key source was given.
    pub fn jwt(&self) -> Option<crate::auth::JwtSettings> {
        use crate::auth::KeySource;
        let keys = match (&self.jwt_secret, &self.jwt_public_key, &self.jwks) {
            (Some(secret), _, _) => KeySource::Secret(secret.clone()),
            (_, Some(path), _) => KeySource::PublicKey(path.clone()),
            (_, _, Some(path)) => KeySource::Jwks(path.clone()),
            _ => return None,
        };
        Some(crate::auth::JwtSettings {
            keys,
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
        })
    }
}

/// Options of every command that connects to a server.
#[derive(Debug, Clone, Args)]
pub struct ClientOptions {
    /// Connection preset of the clients.
    #[arg(long, value_enum, default_value_t = Preset::Default)]
    pub preset: Preset,
}

/// mTLS from a directory of PEM files: of the commands that serve or call one
/// server (the tour makes its own certificates).
#[derive(Debug, Clone, Args)]
pub struct TlsOptions {
    /// Use mTLS with the PEM files in DIR: ca.pem (the CAs trusted), and
    /// server.pem + server.key (serve) or client.pem + client.key (call), as
    /// `mesh certs --out DIR` writes them or any issuer does (RSA or EC keys;
    /// PKCS#8, PKCS#1 or SEC1). A server requires a client certificate signed by
    /// a CA of ca.pem.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// How often the files of --tls-dir are checked for changes (a changed pair
    /// serves new connections; a pair that does not load is refused and the
    /// last good one kept), e.g. `10s`, `500ms`.
    #[arg(long, value_name = "INTERVAL", default_value = "10s", value_parser = parse_duration, requires = "tls_dir")]
    pub tls_reload: Duration,
}

/// The connection presets of tai-runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// Production settings: 30s connect timeout, reconnect backoff up to 2 minutes.
    Default,
    /// Fast feedback: 5s connect timeout, reconnect backoff up to 10s.
    Development,
    /// A pool of 10 connections per endpoint, 16 MiB messages, no idle timeout.
    HighThroughput,
    /// Least-loaded balancing.
    HighReliability,
    /// Random balancing.
    LowLatency,
}

impl Preset {
    /// The configuration.
    pub fn config(self) -> ClientConfig {
        match self {
            Preset::Default => ClientConfig::production(),
            Preset::Development => ClientConfig::development(),
            Preset::HighThroughput => ClientConfig::high_throughput(),
            Preset::HighReliability => ClientConfig::high_reliability(),
            Preset::LowLatency => ClientConfig::low_latency(),
        }
    }
}

/// Options of every command that listens.
#[derive(Debug, Clone, Args)]
pub struct ServerOptions {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// How long in-flight calls get to finish after Ctrl-C, e.g. `10s`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Delay every call by this much, e.g. `200ms`: to try deadlines, retries
    /// and draining from `mesh call`.
    #[arg(long, value_parser = parse_duration)]
    pub latency: Option<Duration>,
    /// mTLS.
    #[command(flatten)]
    pub tls: TlsOptions,
    /// Authentication and rate limits.
    #[command(flatten)]
    pub auth: AuthOptions,
}

/// `mesh tour`.
#[derive(Debug, Clone, Args)]
pub struct TourArgs {
    /// Run the schedule compressed (about 5s instead of 34s), for tests.
    #[arg(long)]
    pub fast: bool,
    /// How to show progress: a refreshing table, plain lines, or `auto` (the
    /// table on a terminal).
    #[arg(long, value_enum, default_value_t = LiveArg::Auto)]
    pub live: LiveArg,
    /// Seed of the workload and of the retry jitter.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Run in plaintext. By default every connection is mTLS, with
    /// certificates made at start in a temporary directory, and the server
    /// certificate is rotated midway.
    #[arg(long, alias = "plaintext")]
    pub no_tls: bool,
    /// Run without authentication. By default every server requires a bearer
    /// JWT (HS256, a secret made at start), each client carries a token with
    /// its service's scopes, and two calls that must be refused (no token, a
    /// wrong scope) end the tour.
    #[arg(long)]
    pub no_jwt: bool,
    /// Client options.
    #[command(flatten)]
    pub client: ClientOptions,
}

/// `--live`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LiveArg {
    /// The table on a terminal, lines otherwise.
    Auto,
    /// The refreshing table.
    Table,
    /// Plain progress lines.
    Lines,
}

/// `mesh serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Server options.
    #[command(flatten)]
    pub server: ServerOptions,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// `mesh call`.
#[derive(Debug, Clone, Args)]
pub struct CallArgs {
    /// The service: governor, coordinator or scheduler.
    pub service: String,
    /// The method, e.g. ProposePolicy (or propose_policy).
    pub method: String,
    /// The request, in the proto3 JSON mapping.
    #[arg(long, default_value = "{}")]
    pub json: String,
    /// The server.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// For streaming methods: stop after this many messages (else at the end of
    /// the stream or Ctrl-C).
    #[arg(long)]
    pub limit: Option<usize>,
    /// How long to wait for the connection.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Send `authorization: Bearer TOKEN` (see `mesh token`).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Client options.
    #[command(flatten)]
    pub client: ClientOptions,
    /// mTLS.
    #[command(flatten)]
    pub tls: TlsOptions,
}

/// Parses `100/s` (or `100`).
fn parse_rate(text: &str) -> Result<NonZeroU32, String> {
    text.strip_suffix("/s")
        .unwrap_or(text)
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a rate: give calls a second as `N/s`, N at least 1"))
}

/// Parses `250ms`, `2s`, `1.5m`, ...
fn parse_duration(text: &str) -> Result<Duration, String> {
    tai_model::parse_duration(text)
}

/// Runs the command line: the body of `main`.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        None => run_tour(cli.tour).await,
        Some(Command::Tour(args)) => run_tour(args).await,
        Some(Command::Serve(args)) => run_serve(args).await,
        Some(Command::Call(args)) => run_call(args).await,
        Some(Command::Token(args)) => run_token(&args),
        Some(Command::Certs(args)) => run_certs(&args),
        Some(Command::Policies) => run_policies(),
        Some(Command::Stats(args)) => run_stats(&args).await,
    }
}

fn run_policies() -> ExitCode {
    use crate::proto::coordinator_client::CoordinatorClient;
    use crate::proto::governor_client::GovernorClient;
    use crate::proto::scheduler_client::SchedulerClient;
    for service in [
        GovernorClient::SERVICE_POLICY,
        CoordinatorClient::SERVICE_POLICY,
        SchedulerClient::SERVICE_POLICY,
    ] {
        for policy in service.methods {
            let view = tai_runtime::PolicyView::compiled(service.name, *policy);
            println!("{view}");
        }
    }
    ExitCode::SUCCESS
}

async fn run_stats(args: &StatsArgs) -> ExitCode {
    let scrape = match crate::stats::fetch(&args.addr).await {
        Ok(text) => crate::stats::parse(&text),
        Err(e) => Err(e),
    };
    match scrape {
        Ok(scrape) => {
            print!("{}", crate::stats::table(&scrape));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mesh: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_token(args: &TokenArgs) -> ExitCode {
    let settings = crate::auth::JwtSettings {
        keys: crate::auth::KeySource::Secret(args.jwt_secret.clone()),
        audience: args.jwt_audience.clone(),
        issuer: args.jwt_issuer.clone(),
    };
    // Refuse what a server would refuse (a short secret), rather than print a
    // token no server accepts.
    if let Err(e) = settings.build() {
        eprintln!("mesh: {e}");
        return ExitCode::from(2);
    }
    match settings.mint(&args.sub, &args.scopes, args.ttl) {
        Some(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("mesh: cannot sign the token");
            ExitCode::FAILURE
        }
    }
}

fn run_certs(args: &CertsArgs) -> ExitCode {
    let written = crate::certs::DevCerts::generate()
        .map_err(|e| format!("cannot make the certificates: {e}"))
        .and_then(|certs| {
            certs
                .write(&args.out)
                .map_err(|e| format!("cannot write into {}: {e}", args.out.display()))
        });
    match written {
        Ok(paths) => {
            for path in paths {
                println!("mesh: wrote {}", path.display());
            }
            println!(
                "mesh: a development CA and certificates for {} (server) and {} (client)",
                crate::certs::SERVER_NAMES.join(", "),
                crate::certs::CLIENT_SPIFFE_ID
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mesh: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_tour(args: TourArgs) -> ExitCode {
    let options = TourOptions {
        fast: args.fast,
        live: match args.live {
            LiveArg::Auto => Live::Auto,
            LiveArg::Table => Live::Table,
            LiveArg::Lines => Live::Lines,
        },
        config: args.client.preset.config(),
        seed: args.seed,
        tls: !args.no_tls,
        jwt: !args.no_jwt,
    };
    let mut out = std::io::stdout();
    match tour::run(options, &mut out).await {
        Ok(outcome) if outcome.passed => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("mesh: the tour could not run: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_serve(args: ServeArgs) -> ExitCode {
    let options = args.server;
    let tls = match &options.tls.tls_dir {
        None => None,
        Some(dir) => match server::server_tls(dir, options.tls.tls_reload) {
            Ok(tls) => Some((dir, tls)),
            Err(e) => {
                eprintln!("mesh: cannot serve TLS from {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let listener = match server::bind(options.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mesh: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| options.addr.to_string(), |a| a.to_string());
    let faults = FaultInjector::new("this server");
    if let Some(latency) = options.latency {
        faults.set(FaultPlan::latency(latency));
    }
    let server = MeshServer::all()
        .faults(faults)
        .drain_timeout(options.drain_timeout);
    let (mut server, access) = match with_auth(server, &options.auth) {
        Ok(configured) => configured,
        Err(e) => {
            eprintln!("mesh: {e}");
            return ExitCode::FAILURE;
        }
    };
    let security = match tls {
        Some((dir, tls)) => {
            server = server.tls(tls);
            format!(
                "mTLS from {} (client certificate required, files checked every {:?})",
                dir.display(),
                options.tls.tls_reload
            )
        }
        None => "plaintext".to_owned(),
    };
    let in_flight = server.in_flight();
    let _metrics = match args.metrics_addr {
        None => None,
        Some(metrics_addr) => match tokio::net::TcpListener::bind(metrics_addr).await {
            Ok(listener) => {
                let (url, task) = crate::metrics::serve(listener, std::sync::Arc::new(String::new));
                println!("mesh: metrics at {url}");
                Some(AbortOnDrop(task))
            }
            Err(e) => {
                eprintln!("mesh: cannot serve metrics on {metrics_addr}: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    println!(
        "mesh: serving Governor, Coordinator and Scheduler on {addr} (with grpc.health.v1 and reflection), {security}, {access}; Ctrl-C or SIGTERM stops"
    );
    let shutdown = async move {
        tai_runtime::server::shutdown_signal().await;
        println!(
            "mesh: shutting down: draining {} in-flight call(s), for up to {:?}",
            in_flight.get(),
            options.drain_timeout
        );
    };
    match server.serve(listener, shutdown).await {
        Ok(drained) if drained.complete => {
            println!("mesh: drained {} in-flight call(s); bye", drained.in_flight);
            ExitCode::SUCCESS
        }
        Ok(drained) => {
            println!(
                "mesh: stopped after {:?} with calls still in flight ({} were in flight at shutdown)",
                options.drain_timeout, drained.in_flight
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mesh: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `server` with the JWT check and rate limit of `auth`, and a phrase saying
/// what they are.
fn with_auth(mut server: MeshServer, auth: &AuthOptions) -> Result<(MeshServer, String), String> {
    let mut access = match auth.jwt() {
        None => "no authentication".to_owned(),
        Some(settings) => {
            let jwt = settings
                .build()
                .map_err(|e| format!("cannot check tokens: {e}"))?;
            server = server.auth(jwt);
            format!(
                "JWT required (aud {:?}, iss {:?}; scopes <service>.read / .write; health public)",
                settings.audience, settings.issuer
            )
        }
    };
    if let Some(rate) = auth.rate_limit {
        let mut limit = RateLimitLayer::per_client(Quota::per_second(rate));
        if let Some(url) = &auth.redis {
            let store =
                RedisStore::open(url).map_err(|e| format!("cannot use Redis at {url}: {e}"))?;
            limit = limit.shared_in(store);
        }
        server = server.rate_limit(limit);
        write!(access, ", at most {rate} calls/s per caller").ok();
        if let Some(url) = &auth.redis {
            write!(access, " (shared in {url})").ok();
        }
    }
    Ok((server, access))
}

async fn run_call(args: CallArgs) -> ExitCode {
    let tls = match &args.tls.tls_dir {
        None => None,
        Some(dir) => match crate::client::client_tls(dir, args.tls.tls_reload) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("mesh: cannot call with TLS from {}: {e}", dir.display());
                return ExitCode::from(2);
            }
        },
    };
    let token = match args.token.as_deref().map(TokenSource::fixed).transpose() {
        Ok(token) => token,
        Err(e) => {
            eprintln!("mesh: --token: {e}");
            return ExitCode::from(2);
        }
    };
    let spec = CallSpec {
        token,
        addr: args.addr,
        service: args.service,
        method: args.method,
        json: args.json,
        limit: args.limit,
        connect_timeout: args.connect_timeout,
        config: args.client.preset.config(),
        tls,
    };
    let mut out = std::io::stdout();
    match call::run(&spec, &mut out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh: {e}");
            match e {
                call::CallError::UnknownService(_)
                | call::CallError::UnknownMethod { .. }
                | call::CallError::BadJson { .. }
                | call::CallError::Address(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Stops a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
