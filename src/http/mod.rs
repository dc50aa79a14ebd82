//! HTTP plumbing: the public front-end (routing, request ids, limits, error
//! mapping, probes) and the admin listener, both served by [`server`].

pub mod admin;
pub mod auth;
pub mod body;
pub mod docs;
pub mod edge;
pub mod frontend;
pub mod probes;
pub mod rate_limit;
pub mod request_id;
pub mod response;
pub mod router;
pub mod server;

pub use body::Body;
pub type Response = http::Response<Body>;
