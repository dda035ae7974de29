//! The edge of `cairnd`: thin `cairn.v1` handlers over [`Service`], plus `grpc.health.v1` and server
//! reflection. Wire types stop here — every handler converts its request once ([`convert`]), calls
//! the service, and converts back; gRPC codes are chosen only in [`status`]; every RPC is timed and
//! counted once, by [`CairnService::observed`].
//!
//! - [`convert`] — wire ⇄ domain, and the defaults an empty field stands for;
//! - [`status`] — `From<ServiceError> for Status`;
//! - [`auth`] — the TCP listener's bearer token;
//! - [`listen`] — binding sockets (modes, systemd socket activation);
//! - [`lifecycle`] — `cairnd serve`: configuration, signals, listeners, graceful shutdown;
//! - [`http`] — the optional metrics listener (`/metrics`, `/status`, `/healthz`).
//!
//! May import: `service` (and through its types, `store`, `storage`, `records`); nothing imports
//! `server` but `main.rs`.
//!
//! [`run`] takes a bound listener and a shutdown future (mini-redis style): the binary passes a
//! signal, tests pass a oneshot.

pub mod auth;
pub mod convert;
pub mod http;
pub mod lifecycle;
pub mod listen;
pub mod notify;
pub mod peer;
pub mod status;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::info;

use cairn_proto::v1::cairn_server::{Cairn, CairnServer};
use cairn_proto::v1::{self as pb};

use crate::buildtree::FsIdentity;
use crate::service::{Caller, Service, ServiceError};

/// The tonic service.
#[derive(Debug, Clone)]
pub struct CairnService {
    inner: Arc<Service>,
}

impl CairnService {
    /// Wrap a service.
    pub fn new(inner: Arc<Service>) -> CairnService {
        CairnService { inner }
    }

    /// Run one RPC's work and record it (count, outcome, latency) under `method`, `stage` and
    /// `family`: the only place per-RPC metrics are recorded.
    async fn observed<T>(
        &self,
        method: &str,
        stage: &str,
        family: &str,
        work: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = work.await;
        self.inner
            .metrics
            .observe(method, stage, family, result.is_ok(), started.elapsed());
        Ok(Response::new(result?))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::FetchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Cairn for CairnService {
    async fn resolve(
        &self,
        req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        let req = req.into_inner();
        let (stage, family) = (req.stage.clone(), req.family.clone());
        self.observed("Resolve", &stage, &family, async {
            let input = convert::resolve_request(req)?;
            Ok(convert::resolved_to_pb(&self.inner.resolve(&input).await?))
        })
        .await
    }

    type FetchStream = EventStream;

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let started = Instant::now();
        let req = req.into_inner();
        let labels = req
            .resolve
            .as_ref()
            .map(|r| (r.stage.clone(), r.family.clone()))
            .unwrap_or_default();
        let service = self.inner.clone();
        service
            .counters
            .fetch_requests
            .fetch_add(1, Ordering::Relaxed);
        let prepared = async {
            let request = convert::fetch_request(req)?;
            let resolutions = service.resolve(&request.resolve).await?;
            Ok::<_, ServiceError>((request, resolutions))
        }
        .await;
        let (request, resolutions) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let (stage, family) = &labels;
                service
                    .metrics
                    .observe("Fetch", stage, family, false, started.elapsed());
                return Err(e.into());
            }
        };
        // The stream's end (the client closing it) ends the request: it is recorded then.
        let (tx, rx) = mpsc::channel(64);
        let delivery = request.delivery;
        tokio::spawn(async move {
            let ok = service.fetch(resolutions, &request, tx).await;
            let (stage, family) = &labels;
            service
                .metrics
                .observe("Fetch", stage, family, ok, started.elapsed());
        });
        let stream = ReceiverStream::new(rx).flat_map(move |event| {
            let messages: Vec<Result<pb::FetchEvent, Status>> = match event {
                Ok(e) => convert::fetch_event_to_pb(e, delivery)
                    .into_iter()
                    .map(Ok)
                    .collect(),
                Err(e) => vec![Err(Status::from(e))],
            };
            futures::stream::iter(messages)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let caller = caller_of(&req);
        let req = req.into_inner();
        let (stage, family) = (req.stage.clone(), req.family.clone());
        self.observed("Publish", &stage, &family, async {
            let input = convert::publish_request(req)?;
            let out = self.inner.publish_as(input, caller?).await?;
            info!(archives = out.archives.len(), prefix = %out.prefix, "published");
            Ok(convert::publish_outcome_to_pb(out))
        })
        .await
    }

    async fn publish_stream(
        &self,
        req: Request<tonic::Streaming<pb::PublishStreamRequest>>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let mut stream = req.into_inner();
        // The header first: it names the stage and family the RPC is observed under.
        let header = match stream.message().await? {
            Some(pb::PublishStreamRequest {
                part: Some(pb::publish_stream_request::Part::Header(h)),
            }) => h,
            _ => {
                return Err(Status::from(ServiceError::InvalidArgument(
                    "a publish stream must start with its `header` (a PublishRequest)".into(),
                )));
            }
        };
        let (stage, family) = (header.stage.clone(), header.family.clone());
        self.observed("PublishStream", &stage, &family, async {
            let input = convert::publish_stream_header(header)?;
            let parts = stream.map(convert::publish_stream_part);
            let out = self.inner.publish_stream(input, parts).await?;
            info!(archives = out.archives.len(), prefix = %out.prefix, "published (streamed)");
            Ok(convert::publish_outcome_to_pb(out))
        })
        .await
    }

    async fn import(
        &self,
        req: Request<pb::ImportRequest>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        let req = req.into_inner();
        self.observed("Import", "", "", async {
            let input = convert::import_request(req)?;
            let (listing, ingested, failures) = self.inner.import(&input).await?;
            Ok(pb::ImportResponse {
                prefix: listing.prefix,
                archives: listing.archives.into_iter().map(|a| a.key).collect(),
                ingested,
                failures: failures
                    .into_iter()
                    .map(|(key, message)| pb::ImportFailure { key, message })
                    .collect(),
            })
        })
        .await
    }

    async fn stats(
        &self,
        _req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        self.observed("Stats", "", "", async {
            let store = self.inner.store().stats()?;
            let t = self.inner.backends().transfer_totals();
            let c = &self.inner.counters;
            Ok(pb::StatsResponse {
                store_bytes: store.bytes,
                blobs: store.blobs,
                max_bytes: store.max_bytes.unwrap_or(0),
                trees: store.trees,
                hits: c.hits.load(Ordering::Relaxed),
                misses: c.misses.load(Ordering::Relaxed),
                storage_gets: t.get_requests,
                storage_bytes: t.get_bytes,
                in_flight: c.in_flight.load(Ordering::Relaxed),
                ingests: store.ingests,
                evicted_blobs: store.evicted_blobs,
                evicted_bytes: store.evicted_bytes,
                resolve_requests: c.resolve_requests.load(Ordering::Relaxed),
                fetch_requests: c.fetch_requests.load(Ordering::Relaxed),
                leased_bytes: store.leased_bytes,
                leased_blobs: store.leased_blobs,
                quota_state: store.quota_state().as_str().to_string(),
                warmup: Some(convert::warmup_to_pb(self.inner.warmup.status())),
                pins: self
                    .inner
                    .store()
                    .pins()
                    .into_iter()
                    .map(convert::pin_to_pb)
                    .collect(),
            })
        })
        .await
    }

    async fn gc(&self, req: Request<pb::GcRequest>) -> Result<Response<pb::GcResponse>, Status> {
        let quota = match req.into_inner().max_bytes {
            0 => None,
            n => Some(n),
        };
        self.observed("Gc", "", "", async {
            let report = self.inner.gc(quota).await?;
            Ok(pb::GcResponse {
                evicted_blobs: report.evicted_blobs,
                evicted_bytes: report.evicted_bytes,
                store_bytes: report.bytes_after,
            })
        })
        .await
    }

    async fn verify(
        &self,
        req: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let sample = match req.into_inner().sample {
            0 => None,
            n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        };
        self.observed("Verify", "", "", async {
            let started = Instant::now();
            let report = self.inner.verify(sample).await?;
            let mut response = convert::verify_to_pb(&report);
            response.seconds = started.elapsed().as_secs_f64();
            Ok(response)
        })
        .await
    }

    async fn pin(&self, req: Request<pb::PinRequest>) -> Result<Response<pb::PinResponse>, Status> {
        let req = req.into_inner();
        self.observed("Pin", "", "", async {
            let (name, trees, ttl) = convert::pin_request(req)?;
            let store = self.inner.store().clone();
            let info = tokio::task::spawn_blocking(move || store.pin(&name, &trees, ttl))
                .await
                .map_err(|e| ServiceError::Internal(e.to_string()))??;
            Ok(pb::PinResponse {
                pin: Some(convert::pin_to_pb(info)),
            })
        })
        .await
    }

    async fn unpin(
        &self,
        req: Request<pb::UnpinRequest>,
    ) -> Result<Response<pb::UnpinResponse>, Status> {
        let name = req.into_inner().name;
        self.observed("Unpin", "", "", async {
            let removed = self.inner.store().unpin(&name)?;
            Ok(pb::UnpinResponse { removed })
        })
        .await
    }

    async fn find_runs(
        &self,
        req: Request<pb::FindRunsRequest>,
    ) -> Result<Response<pb::FindRunsResponse>, Status> {
        let req = req.into_inner();
        self.observed("FindRuns", "", "", async {
            let input = convert::find_runs_request(req)?;
            let runs = self.inner.find_runs(&input).await?;
            Ok(pb::FindRunsResponse {
                runs: runs.iter().map(convert::commit_run_to_pb).collect(),
            })
        })
        .await
    }

    async fn run_trees(
        &self,
        req: Request<pb::RunTreesRequest>,
    ) -> Result<Response<pb::RunTreesResponse>, Status> {
        let req = req.into_inner();
        self.observed("RunTrees", "", "", async {
            let spec = convert::run_trees_request(req)?;
            Ok(convert::run_trees_to_pb(
                &self.inner.run_trees(&spec).await?,
            ))
        })
        .await
    }
}

/// Who sent a request, from the connection it came on: the Unix socket's peer credentials and groups
/// (`SO_PEERCRED`, `SO_PEERGROUPS`, read at accept by [`peer`]), or a TCP client. A Unix connection without credentials is refused rather than
/// served with the daemon's rights.
fn caller_of<T>(req: &Request<T>) -> Result<Caller, ServiceError> {
    if let Some(peer::UnixPeer(peer)) = req.extensions().get::<peer::UnixPeer>() {
        return match peer {
            Some(cred) => Ok(Caller::Local(FsIdentity {
                uid: cred.uid,
                gid: cred.gid,
                groups: cred.groups.clone(),
            })),
            None => Err(ServiceError::Unauthenticated(
                "the Unix socket's peer credentials are unavailable; publish needs them".into(),
            )),
        };
    }
    if req
        .extensions()
        .get::<tonic::transport::server::TcpConnectInfo>()
        .is_some()
    {
        return Ok(Caller::Remote);
    }
    // Neither (an in-process transport): the daemon's own rights, as `Service::publish`.
    Ok(Caller::Daemon)
}

/// Where `run` listens.
pub enum Listener {
    /// A bound Unix socket.
    Unix(tokio::net::UnixListener),
    /// A bound TCP listener.
    Tcp(tokio::net::TcpListener),
}

/// Serve `cairn.v1`, health and reflection on `listener` until `shutdown` resolves; in-flight requests
/// finish (tonic's graceful shutdown) before this returns.
pub async fn run(
    service: CairnService,
    listener: Listener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    run_authenticated(service, listener, None, shutdown).await
}

/// [`run`], refusing every request (health and reflection included) that lacks the bearer token of
/// `auth` when it is given.
pub async fn run_authenticated(
    service: CairnService,
    listener: Listener,
    auth: Option<auth::BearerAuth>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CairnServer<CairnService>>()
        .await;
    // Reflection in both versions: grpcurl speaks v1, Python's `grpcio-reflection` client and
    // older tools still speak v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cairn_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .expect("descriptor sets are valid");
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .expect("descriptor sets are valid");
    let cairn = CairnServer::new(service)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    let router = tonic::transport::Server::builder()
        .layer(tonic::service::InterceptorLayer::new(auth::Access::new(
            auth,
        )))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(cairn);
    match listener {
        Listener::Unix(l) => {
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::StreamExt::map(
                        tokio_stream::wrappers::UnixListenerStream::new(l),
                        |conn| conn.map(peer::PeerStream::accept),
                    ),
                    shutdown,
                )
                .await
        }
        Listener::Tcp(l) => {
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(l),
                    shutdown,
                )
                .await
        }
    }
}
