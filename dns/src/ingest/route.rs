//! The Registry service as served: tonic's generated server for every RPC
//! but Export, whose request body is read by [`Frames`] so that an open
//! stream keeps no buffer the size of the largest message it carried
//! (frames.rs says why). The responses are encoded as the generated
//! server encodes them.

use std::convert::Infallible;
use std::task::{Context, Poll};

use meshdns_proto::codec::LeanCodec;
use meshdns_proto::wire;
use meshdns_proto::wire::registry_server::RegistryServer;
use tonic::codec::{Codec, EncodeBody, SingleMessageCompressionOverride};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Request, Status};

use super::Ingest;
use super::frames::Frames;

/// The Export RPC's path.
const EXPORT: &str = "/meshdns.v1.Registry/Export";

/// The `meshdns.v1.Registry` gRPC service ([`Ingest::into_server`]).
#[derive(Clone)]
pub struct RegistryService {
    ingest: Ingest,
    generated: RegistryServer<Ingest>,
}

impl RegistryService {
    pub(super) fn new(ingest: Ingest, generated: RegistryServer<Ingest>) -> Self {
        RegistryService { ingest, generated }
    }
}

impl std::fmt::Debug for RegistryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryService")
            .field("ingest", &self.ingest)
            .finish_non_exhaustive()
    }
}

impl NamedService for RegistryService {
    const NAME: &'static str = <RegistryServer<Ingest> as NamedService>::NAME;
}

impl Service<http::Request<tonic::body::Body>> for RegistryService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() != EXPORT {
            return self.generated.call(request);
        }
        let ingest = self.ingest.clone();
        Box::pin(async move { Ok(export(&ingest, request)) })
    }
}

/// An Export stream opened, or refused with its status.
fn export(
    ingest: &Ingest,
    request: http::Request<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    // No compression is accepted, as the generated server would say.
    if let Some(encoding) = request.headers().get("grpc-encoding")
        && encoding != "identity"
    {
        return Status::unimplemented(format!(
            "content is compressed with `{}`, which this registry does not accept",
            String::from_utf8_lossy(encoding.as_bytes())
        ))
        .into_http();
    }
    let limits = &ingest.export.limits;
    let (max, deadline) = (limits.max_grpc_message_bytes, limits.export_message_timeout);
    let budget = ingest.export.budget.clone();
    let request = Request::from_http(
        request.map(|body| Frames::<wire::ExportRequest>::new(body, max, deadline, budget)),
    );
    match ingest.open_export(request) {
        Err(status) => status.into_http(),
        Ok(response) => {
            let (metadata, responses, _) = response.into_parts();
            let encoder =
                LeanCodec::<wire::ExportResponse, wire::ExportRequest>::default().encoder();
            let body = EncodeBody::new_server(
                encoder,
                responses,
                None,
                SingleMessageCompressionOverride::default(),
                None,
            );
            let mut http = http::Response::new(tonic::body::Body::new(body));
            *http.headers_mut() = metadata.into_headers();
            http.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            http
        }
    }
}
