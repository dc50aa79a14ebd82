//! The OpenAPI document and its page on the public listener:
//! `GET /api/v1/openapi.json`, the services' parts ([`actors::Service::openapi`])
//! merged with the shared pieces and the routes the front-end answers itself
//! (probes, this document, its page); `GET /api/v1/docs` and
//! `GET /api/v1/docs/{file}`, Swagger UI, whose files come from the
//! `utoipa-swagger-ui-vendored` crate and are embedded in the binary: the
//! page fetches nothing but its own files and the document, which its
//! content security policy enforces.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::StatusCode;

use actors::api::openapi::{self, schema_ref, Document, Op};
use actors::ServiceError;

use super::probes::Health;
use super::response;
use super::Response;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/api/v1/openapi.json";
/// Where the page is served; its files are under it (`/api/v1/docs/{file}`).
pub const PAGE_PATH: &str = "/api/v1/docs";
pub const FILE_PATH: &str = "/api/v1/docs/{file}";

/// The page's policy: its own scripts and styles (Swagger UI sets inline
/// `style` attributes, hence `'unsafe-inline'` for styles only; no inline
/// script is allowed), its own images and `data:` icons, and requests to
/// this origin only.
const PAGE_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The operations of the routes the front-end answers itself.
pub fn own_routes() -> Document {
    let mut doc = openapi::document();
    openapi::schemas::<Health>(&mut doc);
    let tag = "operations";
    Op::get("/live", "Liveness")
        .tag(tag)
        .public()
        .unlimited()
        .describe("200 while the process serves; checks nothing else. Never rate limited.")
        .ok(
            "200",
            "Alive",
            utoipa::openapi::schema::ObjectBuilder::new()
                .property(
                    "status",
                    utoipa::openapi::schema::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String)
                        .enum_values(Some(["ok"])),
                )
                .required("status"),
        )
        .add_to(&mut doc);
    Op::get("/ready", "Readiness")
        .tag(tag)
        .public()
        .unlimited()
        .describe("200 when every service runs with a closed circuit and every dependency answers; 503 otherwise, and while shutting down.")
        .ok("200", "Ready", schema_ref("Health"))
        .ok("503", "Not ready: the details say why", schema_ref("Health"))
        .add_to(&mut doc);
    Op::get("/health", "Health, with details")
        .tag(tag)
        .public()
        .unlimited()
        .describe(
            "200 unless the process is down (503); dependencies, services and system figures.",
        )
        .ok("200", "Serving (ok or degraded)", schema_ref("Health"))
        .ok("503", "Down", schema_ref("Health"))
        .add_to(&mut doc);
    Op::get(DOCUMENT_PATH, "This document")
        .tag(tag)
        .public()
        .unlimited()
        .ok(
            "200",
            "The OpenAPI 3.1 document of every public route",
            utoipa::openapi::schema::ObjectBuilder::new(),
        )
        .add_to(&mut doc);
    Op::get(PAGE_PATH, "This document as a page")
        .tag(tag)
        .public()
        .unlimited()
        .ok_as(
            "200",
            "Swagger UI, working offline",
            "text/html",
            utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String),
        )
        .add_to(&mut doc);
    Op::get(FILE_PATH, "A file of the page")
        .tag(tag)
        .public()
        .unlimited()
        .path_param(
            "file",
            utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String),
        )
        .fails(&[openapi::Fail::NotFound])
        .ok_as(
            "200",
            "The file (script, style sheet, image, …)",
            "*/*",
            utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String),
        )
        .add_to(&mut doc);
    doc
}

/// The document and the page's configuration, made once at start-up.
pub struct Docs {
    document: Bytes,
    config: Arc<utoipa_swagger_ui::Config<'static>>,
}

impl Docs {
    /// Serves `document` (the services' parts and [`own_routes`], merged).
    pub fn new(document: &Document) -> Result<Self, serde_json::Error> {
        let document = Bytes::from(document.to_json()?);
        // No validator: Swagger UI would send the document to a public one.
        let config = utoipa_swagger_ui::Config::new([DOCUMENT_PATH])
            .validator_url("none")
            .try_it_out_enabled(true);
        Ok(Self {
            document,
            config: Arc::new(config),
        })
    }

    pub fn document(&self) -> Response {
        response::json(StatusCode::OK, self.document.clone())
    }

    /// The page (`file` is `None`) or one of its files.
    pub fn page(&self, file: Option<&str>) -> Result<Response, ServiceError> {
        let name = file.unwrap_or("index.html");
        let found = utoipa_swagger_ui::serve(name, self.config.clone())
            .map_err(|err| ServiceError::internal(format!("the docs page: {err}")))?
            .ok_or_else(|| ServiceError::NotFound(format!("no docs file {name}")))?;
        let mut body = found.bytes.into_owned();
        if name == "index.html" {
            // Served at /api/v1/docs, without the trailing slash, the
            // page's relative references would leave the folder.
            let html = String::from_utf8_lossy(&body)
                .replace("href=\"./", "href=\"/api/v1/docs/")
                .replace("src=\"./", "src=\"/api/v1/docs/")
                .replace("href=\"index.css", "href=\"/api/v1/docs/index.css");
            body = html.into_bytes();
        }
        let mut response = response::json(StatusCode::OK, body);
        let headers = response.headers_mut();
        let content_type = match found.content_type.as_str() {
            "text/javascript" | "application/javascript" => {
                "text/javascript; charset=utf-8".to_owned()
            }
            t @ ("text/html" | "text/css") => format!("{t}; charset=utf-8"),
            other => other.to_owned(),
        };
        if let Ok(value) = HeaderValue::from_str(&content_type) {
            headers.insert(CONTENT_TYPE, value);
        }
        headers.insert(
            "content-security-policy",
            HeaderValue::from_static(PAGE_POLICY),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Ok(response)
    }
}
