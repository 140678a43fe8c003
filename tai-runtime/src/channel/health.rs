//! Active health checks: a `grpc.health.v1.Health/Watch` stream per endpoint.
//!
//! The server pushes every status change, so an endpoint that turns NOT_SERVING
//! leaves the rotation with the very next update, not at the next poll. A server
//! without the health service (UNIMPLEMENTED) is taken as serving, as gRPC's
//! client-side health checking does.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::connectivity::ConnectivityState;
use super::endpoint::Endpoint;
use super::{EndpointSet, ResponseBody, ResponseFuture};

/// Sends calls to one endpoint, bypassing the balancer (health checks must reach
/// the endpoint they check).
#[derive(Clone)]
struct Pinned {
    endpoint: Arc<Endpoint>,
    set: Arc<EndpointSet>,
}

impl tower::Service<http::Request<tonic::body::Body>> for Pinned {
    type Response = http::Response<ResponseBody>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> ResponseFuture {
        let (endpoint, set) = (Arc::clone(&self.endpoint), Arc::clone(&self.set));
        Box::pin(async move {
            let Some((connection, sender)) = endpoint.pick_connection() else {
                return Err(tonic::Status::unavailable(format!(
                    "{}: not connected",
                    endpoint.address
                ))
                .into());
            };
            let connection = Arc::clone(connection);
            match set
                .send((Arc::clone(&endpoint), connection, sender), request)
                .await
            {
                Ok(response) => Ok(response),
                Err(Ok(status)) => Err(status.into()),
                Err(Err(_)) => Err(tonic::Status::unavailable(format!(
                    "{}: connection closing",
                    endpoint.address
                ))
                .into()),
            }
        })
    }
}

/// Watches `service`'s health on `endpoint` until shutdown.
pub(crate) async fn watch(
    endpoint: Arc<Endpoint>,
    service: String,
    set: Arc<EndpointSet>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = set.changed.subscribe();
    let mut client = HealthClient::new(Pinned {
        endpoint: Arc::clone(&endpoint),
        set: Arc::clone(&set),
    });
    loop {
        // Wait for a connection to check over.
        while endpoint.state() != ConnectivityState::Ready {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
        let request = HealthCheckRequest {
            service: service.clone(),
        };
        let stream = tokio::select! {
            r = client.watch(request) => r,
            _ = shutdown.changed() => return,
        };
        match stream {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    let next = tokio::select! {
                        m = stream.message() => m,
                        _ = shutdown.changed() => return,
                    };
                    match next {
                        Ok(Some(update)) => {
                            let serving = update.status == ServingStatus::Serving as i32;
                            if endpoint.set_not_serving(!serving) {
                                tracing::info!(endpoint = %endpoint.address, serving, "health status changed");
                                set.changed.send_modify(|v| *v += 1);
                            }
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            Err(status) if status.code() == Code::Unimplemented => {
                endpoint.set_not_serving(false);
                return;
            }
            Err(status) => {
                tracing::debug!(endpoint = %endpoint.address, %status, "health watch failed")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
