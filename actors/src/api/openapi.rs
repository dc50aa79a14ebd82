//! What every service's part of the OpenAPI 3.1 document shares: the error
//! shape of the contract, the list envelope, the bearer security scheme, the
//! headers the front-end adds to every answer (`x-request-id`, the rate-limit
//! quota, `retry-after`), and [`Op`], the builder a service's `openapi.rs`
//! describes each of its routes with.
//!
//! Each service folder has an `openapi.rs` returning its [`Document`]
//! (through [`crate::service::Service::openapi`]); the app merges them with
//! [`base`] and serves the result at `/api/v1/openapi.json`. Response schemas
//! are derived (`ToSchema`) on the types the handlers serialize, so the
//! document follows them; request schemas are structs kept next to the
//! hand-written parsers they describe.

use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApiBuilder, Ref, RefOr, Required,
    ResponseBuilder, Schema,
};
use utoipa::{PartialSchema, ToSchema};

pub use utoipa::openapi::OpenApi as Document;

use super::Pagination;
use crate::FieldError;

/// The name of the bearer scheme in `components.securitySchemes`.
pub const BEARER: &str = "bearer";

/// The `status` of every error body.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
enum ErrorStatus {
    Error,
}

/// The error codes of the contract ([`crate::ServiceError::code`]).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum ErrorCode {
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UriTooLong,
    HeadersTooLarge,
    RequestTimeout,
    ValidationError,
    RateLimited,
    Internal,
    ServiceUnavailable,
    Timeout,
}

/// `error` of the error body: what went wrong, its code, and on a 422 every
/// field at fault.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct ErrorDetail {
    message: String,
    code: ErrorCode,
    /// Present on 422 `VALIDATION_ERROR` only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    errors: Vec<FieldError>,
}

/// The error shape of the contract:
/// `{"status":"error","error":{"message","code","errors"?}}`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct Error {
    status: ErrorStatus,
    error: ErrorDetail,
}

/// The error answers a route can give, each a shared response in
/// `components.responses`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fail {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    PayloadTooLarge,
    Unprocessable,
    TooManyRequests,
    Internal,
    Unavailable,
    Timeout,
}

impl Fail {
    const ALL: [Fail; 11] = [
        Fail::BadRequest,
        Fail::Unauthorized,
        Fail::Forbidden,
        Fail::NotFound,
        Fail::Conflict,
        Fail::PayloadTooLarge,
        Fail::Unprocessable,
        Fail::TooManyRequests,
        Fail::Internal,
        Fail::Unavailable,
        Fail::Timeout,
    ];

    fn status(self) -> &'static str {
        match self {
            Fail::BadRequest => "400",
            Fail::Unauthorized => "401",
            Fail::Forbidden => "403",
            Fail::NotFound => "404",
            Fail::Conflict => "409",
            Fail::PayloadTooLarge => "413",
            Fail::Unprocessable => "422",
            Fail::TooManyRequests => "429",
            Fail::Internal => "500",
            Fail::Unavailable => "503",
            Fail::Timeout => "504",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fail::BadRequest => "BadRequest",
            Fail::Unauthorized => "Unauthorized",
            Fail::Forbidden => "Forbidden",
            Fail::NotFound => "NotFound",
            Fail::Conflict => "Conflict",
            Fail::PayloadTooLarge => "PayloadTooLarge",
            Fail::Unprocessable => "ValidationError",
            Fail::TooManyRequests => "RateLimited",
            Fail::Internal => "Internal",
            Fail::Unavailable => "Unavailable",
            Fail::Timeout => "Timeout",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Fail::BadRequest => {
                "BAD_REQUEST: the body is not JSON, has a key twice, or is not sent as application/json"
            }
            Fail::Unauthorized => {
                "UNAUTHENTICATED: no bearer access token, or one that is invalid, expired or revoked"
            }
            Fail::Forbidden => "FORBIDDEN: the caller may not do this (admin only)",
            Fail::NotFound => "NOT_FOUND: no such resource (or it is another user's)",
            Fail::Conflict => "CONFLICT: the resource's state forbids it",
            Fail::PayloadTooLarge => "PAYLOAD_TOO_LARGE: the body is over the limit",
            Fail::Unprocessable => "VALIDATION_ERROR: every field at fault is named in `errors`",
            Fail::TooManyRequests => "RATE_LIMITED: over the quota; retry after `retry-after` seconds",
            Fail::Internal => "INTERNAL: a bug; the message says nothing more",
            Fail::Unavailable => {
                "SERVICE_UNAVAILABLE: the service's circuit is open or its database is down; retry after `retry-after` seconds"
            }
            Fail::Timeout => "TIMEOUT: the service did not answer within the request timeout",
        }
    }
}

fn string_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(String::schema())
        .description(Some(description))
        .build()
}

fn integer_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .description(Some(description))
        .build()
}

/// The headers every answer of a rate-limited route may carry, and
/// `x-request-id`, which every answer carries.
fn common_headers(response: ResponseBuilder, rate_limited: bool) -> ResponseBuilder {
    let mut response = response.header(
        "x-request-id",
        string_header("The request's own `x-request-id`, or a new one"),
    );
    if rate_limited {
        response = response
            .header(
                "ratelimit-limit",
                integer_header("The quota of the tightest limit that applies"),
            )
            .header(
                "ratelimit-remaining",
                integer_header("Requests left in the quota"),
            )
            .header(
                "ratelimit-reset",
                integer_header("Seconds until the quota is whole again"),
            );
    }
    response
}

fn error_response(fail: Fail) -> utoipa::openapi::Response {
    let mut response = ResponseBuilder::new()
        .description(fail.description())
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        );
    response = common_headers(response, true);
    if matches!(fail, Fail::TooManyRequests | Fail::Unavailable) {
        response = response.header(
            "retry-after",
            integer_header("Seconds to wait before retrying (at least 1)"),
        );
    }
    response.build()
}

/// The document every service's part is merged into: info, the bearer
/// scheme, the shared schemas and error responses.
pub fn base() -> Document {
    let mut components = ComponentsBuilder::new()
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from POST /api/v1/auth/login or /refresh",
                    ))
                    .build(),
            ),
        )
        .schema_from::<Error>()
        .schema_from::<ErrorDetail>()
        .schema_from::<ErrorStatus>()
        .schema_from::<ErrorCode>()
        .schema_from::<FieldError>()
        .schema_from::<Pagination>();
    for fail in Fail::ALL {
        components = components.response(fail.name(), error_response(fail));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Stageworks")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The public API of Stageworks, generated from the code. Errors have one \
                     shape (`Error`); lists are `{data, pagination}`; routes with `security` \
                     take `authorization: Bearer <access token>`.",
                ))
                .build(),
        )
        .components(Some(components.build()))
        .build()
}

/// A `$ref` to a schema in `components.schemas`.
pub fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// A page of `item`s: `{data: [item], pagination}`.
pub fn page_of(item: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .property("data", ArrayBuilder::new().items(schema_ref(item)).build())
        .property("pagination", schema_ref("Pagination"))
        .required("data")
        .required("pagination")
        .into()
}

/// A UUID string.
pub fn uuid_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .into()
}

/// An RFC 3339 time string.
pub fn date_time_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .into()
}

/// One operation: a route's method and path, who may call it, what it
/// takes and what it answers. [`Op::add_to`] puts it in a document.
pub struct Op {
    method: HttpMethod,
    path: &'static str,
    operation: OperationBuilder,
    description: Vec<String>,
    rate_limited: bool,
    fails: Vec<Fail>,
    success: Vec<(&'static str, utoipa::openapi::Response)>,
    idempotent: bool,
}

impl Op {
    fn new(method: HttpMethod, path: &'static str, summary: &str) -> Self {
        let verb = match method {
            HttpMethod::Get => "get",
            HttpMethod::Post => "post",
            HttpMethod::Put => "put",
            HttpMethod::Delete => "delete",
            _ => "other",
        };
        // `get_api_v1_orders_id`: unique, as method and path are.
        let id: String = format!("{verb}{}", path.replace(['/', '{', '}', '.', '-'], "_"))
            .replace("__", "_")
            .trim_end_matches('_')
            .to_owned();
        Op {
            method,
            path,
            operation: OperationBuilder::new()
                .summary(Some(summary))
                .operation_id(Some(id)),
            description: Vec::new(),
            rate_limited: path.starts_with("/api/v1/"),
            // Every service call can find the circuit open or the database
            // down (503), run out of time (504) or hit a bug (500).
            fails: vec![Fail::Internal, Fail::Unavailable, Fail::Timeout],
            success: Vec::new(),
            idempotent: false,
        }
    }

    pub fn get(path: &'static str, summary: &str) -> Self {
        Self::new(HttpMethod::Get, path, summary)
    }

    pub fn post(path: &'static str, summary: &str) -> Self {
        Self::new(HttpMethod::Post, path, summary)
    }

    pub fn put(path: &'static str, summary: &str) -> Self {
        Self::new(HttpMethod::Put, path, summary)
    }

    pub fn delete(path: &'static str, summary: &str) -> Self {
        Self::new(HttpMethod::Delete, path, summary)
    }

    pub fn tag(mut self, tag: &str) -> Self {
        self.operation = self.operation.tag(tag);
        self
    }

    /// A paragraph of the operation's description.
    pub fn describe(mut self, text: &str) -> Self {
        self.description.push(text.to_owned());
        self
    }

    /// Anyone may call it (`security: []`).
    pub fn public(mut self) -> Self {
        self.operation = self.operation.securities(Some(Vec::new()));
        self
    }

    /// An authenticated user ([`super::Access::User`]): the bearer scheme, 401.
    pub fn user(mut self) -> Self {
        self.operation = self
            .operation
            .security(SecurityRequirement::new(BEARER, Vec::<String>::new()));
        self.fails.push(Fail::Unauthorized);
        self
    }

    /// For admins only: said in the description, 403 for anyone else.
    pub fn admin_only(self) -> Self {
        self.user()
            .describe("**Admin only**: any other caller gets 403.")
            .fails(&[Fail::Forbidden])
    }

    /// Not counted against the rate limits (the probes, the document).
    pub fn unlimited(mut self) -> Self {
        self.rate_limited = false;
        self.fails
            .retain(|f| !matches!(f, Fail::Unavailable | Fail::Timeout));
        self
    }

    pub fn fails(mut self, fails: &[Fail]) -> Self {
        for fail in fails {
            if !self.fails.contains(fail) {
                self.fails.push(*fail);
            }
        }
        self
    }

    /// A JSON body of `schema`: 400 for a body that is not one JSON object,
    /// 413 past the size limit, 422 naming the fields at fault.
    pub fn json_body(mut self, schema: impl Into<RefOr<Schema>>) -> Self {
        self.operation = self.operation.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema)).build(),
                )
                .build(),
        ));
        self.fails(&[Fail::BadRequest, Fail::PayloadTooLarge, Fail::Unprocessable])
    }

    /// Takes `idempotency-key`: a replay answers the stored status and body
    /// with `idempotent-replayed: true`; the key with another body is a 422,
    /// the key while its first request is in flight a 409.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self.operation = self.operation.parameter(
            ParameterBuilder::new()
                .name("idempotency-key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "1 to 255 visible ASCII characters. \
                     The same key with the same body replays the first answer \
                     (`idempotent-replayed: true`); with another body it is a 422 on \
                     `idempotency-key`; while the first request is in flight, a 409. \
                     Scoped to the caller and the route, kept at least 24 hours.",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[!-~]{1,255}$")),
                )),
        );
        self.fails(&[Fail::Conflict, Fail::Unprocessable])
    }

    /// A UUID path parameter (`{id}`); a malformed one names nothing: 404.
    pub fn path_uuid(mut self, name: &str, what: &str) -> Self {
        self.operation = self.operation.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(format!("The {what}'s id")))
                .schema(Some(uuid_schema())),
        );
        self.fails(&[Fail::NotFound])
    }

    /// A string path parameter.
    pub fn path_param(mut self, name: &str, schema: impl Into<RefOr<Schema>>) -> Self {
        self.operation = self.operation.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(schema)),
        );
        self
    }

    /// A query parameter; a malformed one is a 422 naming it.
    pub fn query(
        mut self,
        name: &str,
        required: bool,
        description: &str,
        schema: impl Into<RefOr<Schema>>,
    ) -> Self {
        self.operation = self.operation.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(if required {
                    Required::True
                } else {
                    Required::False
                })
                .description(Some(description))
                .schema(Some(schema)),
        );
        self.fails(&[Fail::Unprocessable])
    }

    /// `?page=&limit=` (page ≥ 1, limit 1..=100).
    pub fn paginated(self) -> Self {
        self.query(
            "page",
            false,
            "The page, from 1 (default 1)",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(u32::MAX)),
        )
        .query(
            "limit",
            false,
            "Items per page, 1 to 100 (default 20)",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(100)),
        )
    }

    /// `?user_id=`: admins only narrow to one user; others see their own.
    pub fn user_filter(self) -> Self {
        self.query(
            "user_id",
            false,
            "An admin narrows the list to one user (ignored for others, who see their own)",
            uuid_schema(),
        )
    }

    /// A success answer with a JSON body of `schema`.
    pub fn ok(
        mut self,
        status: &'static str,
        description: &str,
        schema: impl Into<RefOr<Schema>>,
    ) -> Self {
        let response = ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new().schema(Some(schema)).build(),
        );
        self.success.push((status, response.build()));
        self
    }

    /// A success answer with a body of another content type.
    pub fn ok_as(
        mut self,
        status: &'static str,
        description: &str,
        content_type: &str,
        schema: impl Into<RefOr<Schema>>,
    ) -> Self {
        let response = ResponseBuilder::new().description(description).content(
            content_type,
            ContentBuilder::new().schema(Some(schema)).build(),
        );
        self.success.push((status, response.build()));
        self
    }

    /// A success answer without a body.
    pub fn no_content(mut self, description: &str) -> Self {
        self.success.push((
            "204",
            ResponseBuilder::new().description(description).build(),
        ));
        self
    }

    pub fn add_to(self, doc: &mut Document) {
        let mut operation = self.operation;
        if !self.description.is_empty() {
            operation = operation.description(Some(self.description.join("\n\n")));
        }
        for (status, mut response) in self.success {
            let mut headers = common_headers(ResponseBuilder::new(), self.rate_limited)
                .build()
                .headers;
            if self.idempotent {
                headers.insert(
                    "idempotent-replayed".into(),
                    string_header("`true` when this is the stored answer of an earlier request with the same idempotency-key"),
                );
            }
            response.headers.extend(headers);
            operation = operation.response(status, response);
        }
        let mut fails = self.fails;
        if self.rate_limited {
            fails.push(Fail::TooManyRequests);
        }
        fails.sort_by_key(|f| f.status());
        fails.dedup();
        for fail in fails {
            operation = operation.response(
                fail.status(),
                RefOr::Ref(Ref::from_response_name(fail.name())),
            );
        }
        doc.paths
            .add_path_operation(self.path, vec![self.method], operation.build());
    }
}

/// Adds the schemas of `T` (and those it refers to) to the document.
pub fn schemas<T: ToSchema>(doc: &mut Document) {
    let components = doc.components.get_or_insert_with(Default::default);
    let mut found = Vec::new();
    <T as ToSchema>::schemas(&mut found);
    found.push((T::name().into_owned(), <T as PartialSchema>::schema()));
    for (name, schema) in found {
        components.schemas.insert(name, schema);
    }
}

/// An empty document for a service to add its operations and schemas to.
pub fn document() -> Document {
    OpenApiBuilder::new().build()
}
