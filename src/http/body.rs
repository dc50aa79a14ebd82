//! The body of every response: whole (JSON, errors, probes), or streamed
//! from a service's [`BodyStream`] (an export) as its producer writes it.
//! One enum rather than a boxed body, so the whole-body path, every
//! request but the exports, costs no allocation more.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use actors::api::BodyStream;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Frame, SizeHint};

pub enum Body {
    Full(Full<Bytes>),
    Stream(BodyStream),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Full::new(bytes.into()))
    }

    pub fn empty() -> Self {
        Body::full(Bytes::new())
    }

    /// The bytes of a whole body; `None` for a stream (written as it comes).
    pub fn into_whole(self) -> Option<Bytes> {
        match self {
            Body::Full(full) => full.into_inner(),
            Body::Stream(_) => None,
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(full) => Pin::new(full).poll_frame(cx),
            Body::Stream(stream) => stream
                .poll_chunk(cx)
                .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(full) => full.is_end_stream(),
            Body::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(full) => full.size_hint(),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}
