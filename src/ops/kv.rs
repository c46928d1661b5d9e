//! The HTTP/JSON key-value API (`/v1/kv/...`), through the node's own client: each
//! request goes through `client::Client` to the range's leader as a CLI command does,
//! so reads are linearizable and writes retried and deduplicated the same way.
//!
//! Two styles, because etcd users ask for both:
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/kv/{key}` | 200 the raw value (header `x-rangedb-revision`), 404 if absent |
//! | `PUT /v1/kv/{key}` (body: the raw value) | 200 `{"revision":N}` |
//! | `DELETE /v1/kv/{key}` | 200 `{"deleted":true\|false}` |
//! | `POST /v1/kv/get` `{"key":B64}` | 200 `{"kvs":[...],"count":0\|1}` |
//! | `POST /v1/kv/put` `{"key":B64,"value":B64}` | 200 `{"revision":N}` |
//! | `POST /v1/kv/delete` `{"key":B64}` | 200 `{"deleted":bool}` |
//! | `POST /v1/kv/range` `{"key":B64,"range_end":B64,"limit":N}` | 200 `{"kvs":[{"key","value","revision"}],"count":n,"more":bool}` |
//! | `POST /v1/kv/txn` | compare, then success or failure operations (txn.rs) |
//! | `GET /v1/status` | 200 `{"ranges":[...],"nodes":[...]}`, as `rangedb status` |
//!
//! In the path, a key is everything after `/v1/kv/` (slashes included),
//! percent-decoded, and must be UTF-8 (other bytes go through the JSON forms); the
//! keys `get`, `put`, `delete` and `range` are the JSON forms' paths, so read them
//! through `POST /v1/kv/get`. In JSON, keys and values are base64 (standard
//! alphabet, padded), as in etcd's JSON gateway; `range_end` absent reads one key,
//! `"AA=="` (a zero byte) reads to the end of the keyspace, as in etcd. Errors are
//! JSON `{"error":...}`: 400 bad JSON, base64 or key, 404 absent key, 413 a body
//! over `BODY_BYTES_MAX`, 503 no quorum, 504 a write whose outcome is unknown.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

pub use crate::client::kv_json;
use crate::client::{Client, ClientError};

/// The largest request body: a 4 MiB value in base64 and its key, with room to
/// spare. Larger bodies get 413.
pub const BODY_BYTES_MAX: usize = 8 << 20;
/// `range` answers at most this many keys when the request gives no limit...
pub const RANGE_LIMIT_DEFAULT: u64 = 1_000;
/// ... and never more than this many.
pub const RANGE_LIMIT_MAX: u64 = 10_000;

/// Answers 413 at once to a request that declares a body over `BODY_BYTES_MAX`,
/// before any of it is read (a client that sent `Expect: 100-continue` sends none);
/// a body without a declared length is cut at the limit by `DefaultBodyLimit`.
pub async fn refuse_oversized(request: axum::extract::Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(bytes) if bytes > BODY_BYTES_MAX as u64 => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is {bytes} bytes, over the limit of {BODY_BYTES_MAX}"),
        ),
        _ => next.run(request).await,
    }
}

/// An error answer: `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// A client error as an HTTP answer.
pub fn client_error(failure: ClientError) -> Response {
    let status = match &failure {
        ClientError::Invalid { .. } | ClientError::RevisionUnavailable { .. } => {
            StatusCode::BAD_REQUEST
        }
        ClientError::OutcomeUnknown { .. } | ClientError::Timeout { .. } => {
            StatusCode::GATEWAY_TIMEOUT
        }
        ClientError::Conflict { .. } => StatusCode::CONFLICT,
        ClientError::Protocol { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, failure.to_string())
}

/// A request refused before it reaches the cluster: answered 400 with its reason.
pub struct Refusal(pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, self.0)
    }
}

/// Parses a JSON body, or says what is wrong with it.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal(format!("bad JSON body: {e}")))
}

/// Decodes the base64 field `field`, or says why not.
pub fn decode(field: &str, text: &str) -> Result<Vec<u8>, Refusal> {
    BASE64
        .decode(text)
        .map_err(|e| Refusal(format!("\"{field}\" is not base64 (standard, padded): {e}")))
}

pub async fn get_path(State(client): State<Client>, Path(key): Path<String>) -> Response {
    match client.get(key.as_bytes()).await {
        Ok(Some(kv)) => {
            let revision = HeaderValue::from(kv.revision);
            let headers = [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
                (header::HeaderName::from_static("x-rangedb-revision"), revision),
            ];
            (headers, kv.value).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("key not found: {key}")),
        Err(e) => client_error(e),
    }
}

pub async fn put_path(
    State(client): State<Client>,
    Path(key): Path<String>,
    value: Bytes,
) -> Response {
    match client.put(key.as_bytes(), &value).await {
        Ok(revision) => Json(json!({"revision": revision})).into_response(),
        Err(e) => client_error(e),
    }
}

pub async fn delete_path(State(client): State<Client>, Path(key): Path<String>) -> Response {
    match client.delete(key.as_bytes()).await {
        Ok(deleted) => Json(json!({"deleted": deleted})).into_response(),
        Err(e) => client_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyBody {
    pub(super) key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    key: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeBody {
    key: String,
    range_end: Option<String>,
    limit: Option<u64>,
}

pub async fn get_json(State(client): State<Client>, body: Bytes) -> Response {
    let key = match parse_json::<KeyBody>(&body).and_then(|b| decode("key", &b.key)) {
        Ok(key) => key,
        Err(refusal) => return refusal.into_response(),
    };
    match client.get(&key).await {
        Ok(found) => {
            let kvs: Vec<serde_json::Value> = found.iter().map(kv_json).collect();
            Json(json!({"count": kvs.len(), "kvs": kvs})).into_response()
        }
        Err(e) => client_error(e),
    }
}

pub async fn put_json(State(client): State<Client>, body: Bytes) -> Response {
    let decoded = parse_json::<PutBody>(&body)
        .and_then(|b| Ok((decode("key", &b.key)?, decode("value", &b.value)?)));
    let (key, value) = match decoded {
        Ok(pair) => pair,
        Err(refusal) => return refusal.into_response(),
    };
    match client.put(&key, &value).await {
        Ok(revision) => Json(json!({"revision": revision})).into_response(),
        Err(e) => client_error(e),
    }
}

pub async fn delete_json(State(client): State<Client>, body: Bytes) -> Response {
    let key = match parse_json::<KeyBody>(&body).and_then(|b| decode("key", &b.key)) {
        Ok(key) => key,
        Err(refusal) => return refusal.into_response(),
    };
    match client.delete(&key).await {
        Ok(deleted) => Json(json!({"deleted": deleted})).into_response(),
        Err(e) => client_error(e),
    }
}

pub async fn range_json(State(client): State<Client>, body: Bytes) -> Response {
    let request = match parse_json::<RangeBody>(&body) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let limit = match request.limit.unwrap_or(0) {
        0 => RANGE_LIMIT_DEFAULT,
        n if n > RANGE_LIMIT_MAX => {
            return Refusal(format!("limit {n} is over the maximum {RANGE_LIMIT_MAX}"))
                .into_response();
        }
        n => n,
    };
    let parsed = decode("key", &request.key).and_then(|key| {
        let end = request.range_end.as_deref().map(|end| decode("range_end", end)).transpose()?;
        Ok((key, end))
    });
    let (key, end) = match parsed {
        Ok(parsed) => parsed,
        Err(refusal) => return refusal.into_response(),
    };
    let result = match end {
        // One key, as etcd's range without range_end.
        None => client.get(&key).await.map(|found| (found.into_iter().collect(), false)),
        Some(end) => {
            // A zero byte: to the end of the keyspace (etcd's "\0").
            let end = (end != [0]).then_some(end);
            // One more than asked, to tell whether there is more.
            let mut kvs = match client.scan(&key, end.as_deref(), limit + 1).await {
                Ok(kvs) => kvs,
                Err(e) => return client_error(e),
            };
            let more = kvs.len() as u64 > limit;
            kvs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            Ok((kvs, more))
        }
    };
    match result {
        Ok((kvs, more)) => {
            let kvs: Vec<serde_json::Value> = kvs.iter().map(kv_json).collect();
            Json(json!({"count": kvs.len(), "kvs": kvs, "more": more})).into_response()
        }
        Err(e) => client_error(e),
    }
}

/// `GET /v1/status`: what `rangedb status` prints, as JSON (`client::status_json`).
pub async fn status(State(client): State<Client>) -> Response {
    Json(crate::client::status_json(&client.status().await)).into_response()
}
