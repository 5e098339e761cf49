//! The API's OpenAPI 3.1 document, made from the code: every route is
//! registered through [`utoipa_axum::routes!`] from its handler's
//! `#[utoipa::path]`, so a route cannot exist without its documentation, nor
//! the reverse. [`finish`] adds what every operation shares (the error
//! responses, the request id) in one place. Served as `/openapi.json`, and
//! as a plain page at `/docs` ([`page`]).
//!
//! The bodies the handlers answer with are the types below, so the schemas
//! are those of what is sent.

use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{Modify, PartialSchema, ToSchema};

use kumulus_core::job::{JobId, JobRecord, JobState};

/// Every error: a stable `code` to match on, and a sentence for people.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// One of `bad_request`, `unauthorized`, `not_found`,
    /// `method_not_allowed`, `request_timeout`, `uri_too_long`,
    /// `headers_too_large`, `conflict`, `payload_too_large`,
    /// `invalid_field`, `rate_limited`, `unavailable`,
    /// `insufficient_storage`, `internal`.
    pub code: String,
    pub message: String,
    /// The request's id (its `X-Request-Id`), as in the server's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A job to run. Unknown fields are refused.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(dead_code)] // a schema only: the handlers validate with `JobSpec`
pub struct Submission {
    /// The git repository: an `https://` URL by default (`repos.*` in the
    /// configuration can allow others), at most 2048 characters.
    #[schema(
        pattern = "^https://[^\\s]+$",
        max_length = 2048,
        example = "https://git.example.com/you/repo.git"
    )]
    url: String,
    /// The `start` script's arguments: a list, or one command line split
    /// into words as a shell would (no shell ever runs it).
    args: Option<Args>,
    /// Written to the job's `config.json`: text, or any JSON value.
    config: Option<serde_json::Value>,
    /// Seconds the job may run, from 1 to `limits.max_timeout_secs`.
    #[schema(minimum = 1)]
    timeout_secs: Option<u64>,
    /// Per-job limits, each up to the worker's own.
    limits: Option<kumulus_core::job::JobLimits>,
    /// Where the record is POSTed when the job ends (see the README's
    /// Webhooks: the host must be allowed).
    callback_url: Option<String>,
}

/// A list of words, or one command line.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum Args {
    List(Vec<String>),
    Line(String),
}

/// The seed's HTML form for `addJob`: `args` once is a command line, several
/// times (or as `args[]`) a list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct SubmissionForm {
    url: String,
    args: Option<String>,
    config: Option<String>,
    timeout_secs: Option<u64>,
    callback_url: Option<String>,
}

/// A job accepted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Created {
    pub id: JobId,
    pub state: JobState,
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// The job's files, as `GET /api/jobs/{id}/files/{path}` takes them.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FileList {
    pub files: Vec<String>,
}

/// The autoscaler's recent history (`GET /api/autoscaler`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AutoscalerView {
    /// Newest first.
    pub decisions: Vec<kumulus_core::observation::ScalingDecision>,
    /// The seed's observations, newest first.
    pub observations: Vec<kumulus_core::observation::Observation>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Credentials {
    #[schema(min_length = 1)]
    pub username: String,
    #[schema(min_length = 1)]
    pub password: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the token is good for.
    pub expires_in: u64,
}

/// The seed's login answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SeedToken {
    pub token: String,
}

/// The seed's submit answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedJobId {
    pub job_id: JobId,
}

/// The seed's status of a job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedStatus {
    pub id: JobId,
    /// The seed's names: `En espera`, `Lanzado`, `Finalizado`, `Fallido`,
    /// `Eliminado`.
    pub status: String,
    /// Links to `GET /api/results/{id}/{file}`.
    pub output_files: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    pub version: String,
}

/// The document's fixed parts: its title, the bearer scheme and the tags.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Kumulus",
        description = "Run a git repository as a job: submit it, follow it, download what it wrote.\n\nEvery `/api` route takes `Authorization: Bearer <token>`, from `POST /auth/token`. A user sees only their own jobs: another user's are 404.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&Bearer),
    components(schemas(kumulus_core::logs::LogChunk, kumulus_core::logs::LogStream)),
    tags(
        (name = "jobs", description = "Submit, list, follow, cancel and delete jobs"),
        (name = "files", description = "What a job wrote under output/, and its logs"),
        (name = "auth", description = "Tokens"),
        (name = "seed", description = "The seed project's routes, same shapes, for its clients"),
        (name = "service", description = "Health, load and metrics")
    )
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The name of the error schema in `components`.
const ERROR: &str = "ErrorBody";

/// Adds what every operation shares, from what it declares:
/// - `X-Request-Id`, which every route takes and echoes;
/// - the errors any route can give (414, 431, 500);
/// - those of a route that takes a bearer token (401, 429, 503);
/// - those of a route that reads a body (400, 408, 413).
///
/// It also writes axum's `{*path}` as OpenAPI's `{path}`.
pub fn finish(doc: &mut OpenApi) {
    let paths = std::mem::take(&mut doc.paths.paths);
    for (path, mut item) in paths {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.delete,
            &mut item.put,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            shared(op);
        }
        doc.paths.paths.insert(path.replace("{*", "{"), item);
    }
    let components = doc.components.get_or_insert_with(Default::default);
    for (name, schema) in [
        ("ErrorBody", ErrorBody::schema()),
        ("ErrorDetail", ErrorDetail::schema()),
    ] {
        components.schemas.insert(name.into(), schema);
    }
}

fn shared(op: &mut Operation) {
    op.parameters.get_or_insert_with(Vec::new).push(
        ParameterBuilder::new()
            .name("X-Request-Id")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Your id for this request (1 to 128 of A-Z a-z 0-9 - _ . :), or a new one is made; echoed in the response header and error bodies",
            ))
            .schema(Some(String::schema()))
            .build(),
    );
    let mut errors = vec![
        (414, "The request target is too long"),
        (431, "The request headers are too large"),
        (500, "Internal error"),
    ];
    if op.security.is_some() {
        errors.extend([
            (401, "No bearer token, or one that is invalid or expired"),
            (429, "Over the per-user request rate; see Retry-After"),
            (503, "A backend is unavailable; try again"),
        ]);
    }
    if op.request_body.is_some() {
        errors.extend([
            (400, "The body is not what it says it is (JSON, or a form)"),
            (408, "The body took too long to arrive"),
            (413, "The body is larger than `api.body_limit_bytes`"),
        ]);
    }
    for (status, description) in errors {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(description));
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(ERROR)))
                    .build(),
            )
            .build(),
    )
}

/// The document as served: utoipa 5 writes a link's fields in snake case
/// (`operation_id`), where OpenAPI has camel case (`operationId`).
pub fn json(doc: &OpenApi) -> serde_json::Value {
    let mut v = serde_json::to_value(doc).unwrap_or_default();
    if let Some(paths) = v.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for op in paths
            .values_mut()
            .filter_map(|i| i.as_object_mut())
            .flat_map(|i| i.values_mut())
        {
            let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                continue;
            };
            for links in responses
                .values_mut()
                .filter_map(|r| r.get_mut("links"))
                .filter_map(|l| l.as_object_mut())
            {
                for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
                    for (from, to) in [
                        ("operation_id", "operationId"),
                        ("operation_ref", "operationRef"),
                        ("request_body", "requestBody"),
                    ] {
                        if let Some(x) = link.remove(from) {
                            link.insert(to.into(), x);
                        }
                    }
                }
            }
        }
    }
    v
}

/// `/docs`: the document as one plain page, with no script, so it reads
/// anywhere (no CDN to reach).
pub fn page(doc: &OpenApi) -> String {
    let mut out = String::new();
    let title = esc(&doc.info.title);
    out.push_str(&format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} API</title>\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <style>body{{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}\
         code,pre{{font:13px ui-monospace,monospace;background:#f4f4f4}}pre{{padding:.5rem;overflow:auto}}\
         h3{{margin-bottom:.2rem}}.m{{display:inline-block;min-width:4.5rem;font-weight:bold}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;vertical-align:top}}</style>\
         </head><body><h1>{title} API <small>{}</small></h1><p>{}</p>\
         <p>The machine-readable document: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI {}).</p>",
        esc(&doc.info.version),
        esc(doc.info.description.as_deref().unwrap_or_default()).replace("\n\n", "</p><p>"),
        esc(serde_json::to_value(&doc.openapi).ok().as_ref().and_then(|v| v.as_str()).unwrap_or_default()),
    ));
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("DELETE", &item.delete),
        ] {
            let Some(op) = op else { continue };
            out.push_str(&format!(
                "<h3 id=\"{}\"><span class=\"m\">{method}</span><code>{}</code></h3>",
                esc(op.operation_id.as_deref().unwrap_or_default()),
                esc(path)
            ));
            if let Some(s) = &op.summary {
                out.push_str(&format!("<p><b>{}</b></p>", esc(s)));
            }
            if let Some(d) = &op.description {
                out.push_str(&format!("<p>{}</p>", esc(d).replace("\n\n", "</p><p>")));
            }
            if op.security.is_some() {
                out.push_str("<p>Takes a bearer token.</p>");
            }
            if let Some(ps) = op.parameters.as_ref().filter(|p| !p.is_empty()) {
                out.push_str("<table><tr><th>parameter</th><th>in</th><th></th></tr>");
                for p in ps {
                    out.push_str(&format!(
                        "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&p.name),
                        if matches!(p.required, Required::True) {
                            " (required)"
                        } else {
                            ""
                        },
                        esc(serde_json::to_value(&p.parameter_in)
                            .ok()
                            .as_ref()
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()),
                        esc(p.description.as_deref().unwrap_or_default())
                    ));
                }
                out.push_str("</table>");
            }
            if let Some(body) = &op.request_body {
                let types: Vec<String> = body
                    .content
                    .iter()
                    .map(|(t, c)| {
                        format!("<code>{}</code> {}", esc(t), schema_name(c.schema.as_ref()))
                    })
                    .collect();
                out.push_str(&format!("<p>Body: {}</p>", types.join(", or ")));
            }
            out.push_str("<table><tr><th>status</th><th></th><th>body</th></tr>");
            for (status, resp) in &op.responses.responses {
                let (desc, body) = match resp {
                    RefOr::T(r) => (
                        r.description.clone(),
                        r.content
                            .iter()
                            .map(|(t, c)| {
                                format!(
                                    "<code>{}</code> {}",
                                    esc(t),
                                    schema_name(c.schema.as_ref())
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    RefOr::Ref(r) => (r.ref_location.clone(), String::new()),
                };
                out.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{body}</td></tr>",
                    esc(status),
                    esc(&desc)
                ));
            }
            out.push_str("</table>");
        }
    }
    if let Some(components) = &doc.components {
        out.push_str("<h2>Schemas</h2>");
        for (name, schema) in &components.schemas {
            out.push_str(&format!(
                "<h3 id=\"schema-{0}\">{0}</h3><pre>{1}</pre>",
                esc(name),
                esc(&serde_json::to_string_pretty(schema).unwrap_or_default())
            ));
        }
    }
    out.push_str("</body></html>");
    out
}

fn schema_name(schema: Option<&RefOr<utoipa::openapi::schema::Schema>>) -> String {
    match schema {
        Some(RefOr::Ref(r)) => {
            let name = r.ref_location.rsplit('/').next().unwrap_or_default();
            format!("<a href=\"#schema-{0}\">{0}</a>", esc(name))
        }
        Some(RefOr::T(s)) => format!(
            "<code>{}</code>",
            esc(&serde_json::to_string(s).unwrap_or_default())
        ),
        None => String::new(),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
