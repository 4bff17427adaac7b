use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower::Service;

use crate::endpoint::Endpoint;
use crate::transport::{Transport, TransportConfig, TransportError};

/// The providers behind the gateway, as a [`tower::Service`]: a request to
/// `/v1/messages` goes to the Anthropic upstream with `x-api-key`, every
/// other path to the OpenAI-compatible one with a Bearer token. The
/// request's method, path, query, headers and body go as they are; the
/// answer comes back as it is, its body unread.
///
/// The transports follow no redirect and answer within their timeout (the
/// answer's head; the body is read by the caller, who bounds it).
#[derive(Debug, Clone)]
pub struct Upstream {
    openai: Transport,
    anthropic: Transport,
}

impl Upstream {
    pub fn new(
        openai: TransportConfig,
        anthropic: TransportConfig,
    ) -> Result<Upstream, TransportError> {
        Ok(Upstream {
            openai: Transport::new(openai)?,
            anthropic: Transport::new(anthropic)?,
        })
    }

    /// The transport a path goes to.
    pub fn transport_for(&self, endpoint: Endpoint) -> &Transport {
        if endpoint.is_anthropic() {
            &self.anthropic
        } else {
            &self.openai
        }
    }
}

impl Service<Request<Bytes>> for Upstream {
    type Response = Response<reqwest::Body>;
    type Error = TransportError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, TransportError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let endpoint = Endpoint::from_path(parts.uri.path());
        let transport = self.transport_for(endpoint).clone();
        Box::pin(async move {
            let path = parts
                .uri
                .path_and_query()
                .map_or(parts.uri.path(), |p| p.as_str());
            let resp = transport
                .forward(parts.method, path, endpoint, parts.headers, body)
                .await?;
            Ok(Response::from(resp))
        })
    }
}
