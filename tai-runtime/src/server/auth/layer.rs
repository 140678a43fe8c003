//! Authentication as a tower layer: [`AuthLayer`] and the [`Authenticate`]
//! service.
//!
//! A call is decided before it reaches the service: its token is validated in
//! `call`, and the future is either the service's own (with the caller's
//! [`Identity`] in the request's extensions) or a refusal that is ready at
//! once ([`ResponseFuture`], shared with the rate limit), so an admitted call
//! costs no allocation here beyond the identity itself.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};

use super::identity::Identity;
use super::jwt::JwtAuth;
use super::refusal::{Refusal, RefusalCounters};
pub use crate::server::decided::ResponseFuture;

/// Refuses every call without a valid bearer JWT as UNAUTHENTICATED, before it
/// reaches the service, and hands the caller's [`Identity`] to the handler;
/// see the [module docs](super).
///
/// ```no_run
/// # async fn run(auth: tai_runtime::server::auth::JwtAuth) -> Result<(), Box<dyn std::error::Error>> {
/// # let (_, health) = tonic_health::server::health_reporter();
/// use tai_runtime::server::auth::AuthLayer;
///
/// tonic::transport::Server::builder()
///     .layer(AuthLayer::new(auth))
///     .add_service(health)
///     .serve("127.0.0.1:50051".parse()?)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    auth: JwtAuth,
    refusals: RefusalCounters,
    anonymous: bool,
}

impl AuthLayer {
    /// Validates each call's token with `auth`.
    pub fn new(auth: JwtAuth) -> Self {
        Self {
            shared: Arc::new(Shared {
                auth,
                refusals: RefusalCounters::new(),
                anonymous: false,
            }),
        }
    }

    /// Lets a call that carries no `authorization` entry at all go on without
    /// an [`Identity`], for the [access rules](super::AccessLayer) inside this
    /// layer to decide (a public method takes it, any other refuses it as
    /// UNAUTHENTICATED). A token that is there but invalid is still refused.
    ///
    /// ```no_run
    /// # fn f(auth: tai_runtime::server::auth::JwtAuth) {
    /// use tai_runtime::server::auth::AuthLayer;
    /// let layer = AuthLayer::new(auth).allow_anonymous();
    /// # drop(layer); }
    /// ```
    #[must_use]
    pub fn allow_anonymous(self) -> Self {
        let shared = Arc::try_unwrap(self.shared).unwrap_or_else(|shared| Shared {
            auth: shared.auth.clone(),
            refusals: shared.refusals.clone(),
            anonymous: shared.anonymous,
        });
        Self {
            shared: Arc::new(Shared {
                anonymous: true,
                ..shared
            }),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`AuthLayer`] wraps around a server (or around one service:
/// it keeps the service's name for tonic's router).
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for Authenticate<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticate")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S: NamedService> NamedService for Authenticate<S> {
    const NAME: &'static str = S::NAME;
}

impl Shared {
    /// Counts and logs a refusal; the caller's answer.
    #[cold]
    #[inline(never)]
    fn refuse<B>(&self, request: &http::Request<B>, refusal: &Refusal) -> Status {
        self.refusals.count(refusal.reason());
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        tracing::info!(
            method = request.uri().path(),
            reason = refusal.reason().as_str(),
            peer = ?peer,
            "call refused as UNAUTHENTICATED: {refusal}"
        );
        refusal.to_status()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Authenticate<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        if self.shared.anonymous && !request.headers().contains_key(http::header::AUTHORIZATION) {
            return ResponseFuture::admitted(self.inner.call(request));
        }
        match self.shared.auth.authenticate(request.headers()) {
            Ok(mut identity) => {
                // What an earlier layer (TLS) proved joins the token's claims.
                if let Some(earlier) = request.extensions_mut().remove::<Identity>() {
                    identity.merge(earlier);
                }
                request.extensions_mut().insert(identity);
                ResponseFuture::admitted(self.inner.call(request))
            }
            Err(refusal) => ResponseFuture::refused(self.shared.refuse(&request, &refusal)),
        }
    }
}
