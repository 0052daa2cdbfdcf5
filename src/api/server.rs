//! Listeners and the server: every service on every listener (unix sockets for CNI plugins and
//! vipctl, TCP for people), with server reflection (v1 and v1alpha, which grpcurl 1.8 asks for)
//! and grpc.health.v1.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::info;

use super::proto::{v1 as pb, FILE_DESCRIPTOR_SET};
use super::services::Api;
use crate::config::{GrpcTls, Listen};
use crate::registry::Registry;
use crate::telemetry::GrpcLayer;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        listen: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection setup failed: {0}")]
    Reflection(String),
}

/// How the listeners are secured.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// TLS on every TCP listener; with a client CA, clients must present a certificate it signed.
    /// Unix sockets are protected by their mode and group instead.
    pub tls: Option<GrpcTls>,
    /// Group of the unix sockets (mode 0660).
    pub socket_group: Option<u32>,
    /// The daemon's role: a standby refuses mutating calls and reports the overall health
    /// service (`""`) as `NOT_SERVING`.
    pub role: crate::role::RoleWatch,
    /// Told the bound address of each TCP listener as soon as it accepts connections (with the
    /// port the kernel chose when the configured port is 0): for embedding the daemon, e.g. tests
    /// that must not guess a free port. Nobody listening is not an error.
    pub bound: Option<tokio::sync::mpsc::UnboundedSender<std::net::SocketAddr>>,
}

/// Binds every listener now (so a caller knows the API is reachable when this returns) and
/// returns a future that serves until `shutdown` fires.
pub async fn serve(
    listeners: Vec<Listen>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> Result<impl std::future::Future<Output = Result<(), ServeError>>, ServeError> {
    let mut servers = Vec::new();
    for listen in listeners {
        let api = Api {
            registry: registry.clone(),
            shutdown: shutdown.clone(),
            role: options.role.clone(),
        };
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc error details, so clients such as grpcurl can decode BadRequest.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|error| ServeError::Reflection(error.to_string()))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc error details, so clients such as grpcurl can decode BadRequest.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|error| ServeError::Reflection(error.to_string()))?;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<pb::vip_service_server::VipServiceServer<Api>>()
            .await;
        // The overall service ("") follows the role: NOT_SERVING on a standby, so load balancers
        // and clients that check health send changes to the active daemon.
        let mut role = options.role.clone();
        let reporter = health_reporter.clone();
        let stop_health = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let status = if *role.borrow_and_update() == crate::role::Role::Standby {
                    tonic_health::ServingStatus::NotServing
                } else {
                    tonic_health::ServingStatus::Serving
                };
                reporter.set_service_status("", status).await;
                tokio::select! {
                    _ = stop_health.cancelled() => return,
                    changed = role.changed() => if changed.is_err() { return },
                }
            }
        });
        let mut builder = Server::builder();
        if let (Listen::Tcp(_), Some(tls)) = (&listen, &options.tls) {
            let mut config =
                ServerTlsConfig::new().identity(Identity::from_pem(&tls.certificate_pem, &tls.private_key_pem));
            if let Some(client_ca) = &tls.client_ca_pem {
                config = config.client_ca_root(Certificate::from_pem(client_ca));
            }
            builder = builder.tls_config(config)?;
        }
        let router = builder
            .layer(GrpcLayer)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(pb::subnet_service_server::SubnetServiceServer::new(api.clone()))
            .add_service(pb::vip_service_server::VipServiceServer::new(api.clone()))
            .add_service(pb::pod_service_server::PodServiceServer::new(api.clone()))
            .add_service(pb::switch_lb_rule_service_server::SwitchLbRuleServiceServer::new(api));
        let stop = shutdown.clone();
        let bind_error = |source| ServeError::Bind {
            listen: listen.to_string(),
            source,
        };
        match &listen {
            Listen::Unix(path) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(bind_error)?;
                }
                // A socket left by a previous run would make bind fail.
                let _ = std::fs::remove_file(path);
                let listener = tokio::net::UnixListener::bind(path).map_err(bind_error)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_error)?;
                if let Some(gid) = options.socket_group {
                    std::os::unix::fs::chown(path, None, Some(gid)).map_err(bind_error)?;
                }
                info!(%listen, "gRPC listening");
                servers.push(tokio::spawn(
                    router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                        stop.cancelled().await
                    }),
                ));
            }
            Listen::Tcp(address) => {
                let listener = tokio::net::TcpListener::bind(address).await.map_err(bind_error)?;
                let local = listener.local_addr().map_err(bind_error)?;
                info!(listen = %format!("tcp:{local}"), tls = options.tls.is_some(), "gRPC listening");
                if let Some(bound) = &options.bound {
                    let _ = bound.send(local);
                }
                servers.push(tokio::spawn(
                    router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                        stop.cancelled().await
                    }),
                ));
            }
        }
    }
    Ok(async move {
        for server in servers {
            if let Ok(result) = server.await {
                result?
            }
        }
        Ok(())
    })
}
