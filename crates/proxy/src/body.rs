//! The body type shared by the listener, the tunnel and the backend clients, and the short bodies the proxy
//! writes itself.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};

/// Error type carried by every body in the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one body type of the request service. Boxed once at the transport boundary so that the service is not
/// generic over the transport.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Converts any body with a convertible error into a [`ProxyBody`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Boxes a body whose error type already is [`BoxError`], without the error-mapping layer of [`boxed`] (one
/// indirection less on every poll of a response body).
pub fn boxed_exact<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    body.boxed_unsync()
}

/// A proxy-generated reply: a short `text/plain` line (routing.md §9). `head_only` drops the body for HEAD.
pub fn text_response(status: StatusCode, text: &'static str, head_only: bool) -> Response<ProxyBody> {
    let body = if head_only || text.is_empty() {
        empty()
    } else {
        full(Bytes::from_static(text.as_bytes()))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    resp
}

/// The body line for a status the proxy writes on behalf of a rule (`unavailableStatus`): its reason phrase.
pub fn reason_line(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad Request\n",
        401 => "Unauthorized\n",
        403 => "Forbidden\n",
        404 => "Not Found\n",
        405 => "Method Not Allowed\n",
        408 => "Request Timeout\n",
        409 => "Conflict\n",
        410 => "Gone\n",
        429 => "Too Many Requests\n",
        500 => "Internal Server Error\n",
        501 => "Not Implemented\n",
        502 => "Bad Gateway\n",
        503 => "Service Unavailable\n",
        504 => "Gateway Timeout\n",
        _ => "Unavailable\n",
    }
}
