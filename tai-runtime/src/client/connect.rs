//! The channel a generated client's `connect` / `connect_lazy` builds: the
//! production preset with the service's compiled balancer, and tonic's meaning of
//! the two (wait until ready or fail naming the address and why; or return at once).

/// Builds a channel to `dst` for the generated `connect`: the production preset
/// with the service's balancer. With `wait`, returns once the channel is ready,
/// or fails after the connect timeout with the address and why (tonic's
/// `connect`); without, returns at once (tonic's `connect_lazy`), and the first
/// call waits for the connection.
pub async fn connect(
    dst: String,
    policy: &'static crate::policy::ServicePolicy,
) -> Result<crate::Channel, crate::ConnectError> {
    let channel = connect_lazy(dst.clone(), policy)?;
    let timeout = channel.config().connection.connect_timeout;
    if channel.ready(timeout).await {
        return Ok(channel);
    }
    Err(crate::ConnectError::new(
        &dst,
        format!(
            "not ready after the connect timeout ({timeout:?}): {}",
            channel.unready_reason()
        ),
    ))
}

/// Builds a channel to `dst` without waiting for it (see [`connect`]).
pub fn connect_lazy(
    dst: String,
    policy: &'static crate::policy::ServicePolicy,
) -> Result<crate::Channel, crate::ConnectError> {
    let mut config = crate::config::ClientConfig::default();
    if let Some(balancer) = policy.balancer {
        config.balancer = balancer;
    }
    crate::Channel::builder(crate::channel::Endpoints::one(dst))
        .config(config)
        .build()
}
