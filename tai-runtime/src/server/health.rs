//! `grpc.health.v1.Health` for every service a server serves, and its part in
//! shutting down.
//!
//! Each added service is SERVING (and so is the server as a whole, `""`) from
//! the start. The moment shutdown begins, before any connection is told to go
//! away, every one turns NOT_SERVING: health-checking clients and load balancers
//! stop sending here while calls in flight drain. Watch streams are then ended
//! (after they have been sent NOT_SERVING): they never finish on their own and
//! would hold the drain open until its timeout. Checks still answer NOT_SERVING.

use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

/// The health statuses of a server's services.
#[derive(Clone, Debug)]
pub(crate) struct Health {
    reporter: HealthReporter,
    /// The services to report on, `""` (the whole server) first.
    services: Vec<&'static str>,
}

impl Health {
    pub(crate) fn new() -> Self {
        Self {
            reporter: HealthReporter::new(),
            services: vec![""],
        }
    }

    pub(crate) fn reporter(&self) -> HealthReporter {
        self.reporter.clone()
    }

    /// Reports on `service` too.
    pub(crate) fn add(&mut self, service: &'static str) {
        if !self.services.contains(&service) {
            self.services.push(service);
        }
    }

    /// The `grpc.health.v1.Health` service answering from these statuses.
    pub(crate) fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.reporter.clone()))
    }

    /// Every service SERVING.
    pub(crate) async fn serving(&self) {
        for service in &self.services {
            self.reporter
                .set_service_status(service, ServingStatus::Serving)
                .await;
        }
    }

    /// Every service NOT_SERVING; watchers told so, then their streams ended.
    pub(crate) async fn shutting_down(&mut self) {
        for service in &self.services {
            self.reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        for service in &self.services {
            // Dropping a status ends the streams watching it, after they have
            // had its last value; a new one answers checks.
            self.reporter.clear_service_status(service).await;
            self.reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
    }
}
