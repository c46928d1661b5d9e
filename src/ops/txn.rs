//! `POST /v1/kv/txn`: a compare-then-else transaction in the JSON of etcd's gateway
//! (`/v3/kv/txn`), keys and values in base64:
//!
//! ```text
//! {"compare": [{"key": B64, "target": "VALUE", "result": "EQUAL", "value": B64},
//!              {"key": B64, "target": "MOD", "result": "LESS", "mod_revision": 7}],
//!  "success": [{"request_put": {"key": B64, "value": B64}},
//!              {"request_range": {"key": B64}},
//!              {"request_delete_range": {"key": B64}}],
//!  "failure": [...]}
//! -> {"succeeded": bool, "revision": N,
//!     "responses": [{"response_put": {}}, {"response_range": {"count": 1, "kvs": [...]}},
//!                   {"response_delete_range": {"deleted": 1}}]}
//! ```
//!
//! It runs as one rangedb transaction through the node's client (strictly
//! serializable across ranges, retried from the start on a conflict), with the same
//! semantics as `rangedb txn` (client/compare.rs): `CREATE` and `VERSION` compare 0
//! for an absent key, more for a present one.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::kv::{client_error, decode, kv_json, parse_json, KeyBody, Refusal};
use crate::client::compare::{Cmp, Compare, CompareTxn, Op, OpResult, Target};
use crate::client::Client;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnBody {
    #[serde(default)]
    compare: Vec<CompareBody>,
    #[serde(default)]
    success: Vec<OpBody>,
    #[serde(default)]
    failure: Vec<OpBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareBody {
    key: String,
    target: String,
    result: String,
    value: Option<String>,
    mod_revision: Option<u64>,
    create_revision: Option<u64>,
    version: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyValueBody {
    key: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpBody {
    request_put: Option<KeyValueBody>,
    request_range: Option<KeyBody>,
    request_delete_range: Option<KeyBody>,
}

fn compare(body: CompareBody) -> Result<Compare, Refusal> {
    let key = decode("key", &body.key)?;
    let cmp = match body.result.as_str() {
        "EQUAL" => Cmp::Equal,
        "NOT_EQUAL" => Cmp::NotEqual,
        "LESS" => Cmp::Less,
        "GREATER" => Cmp::Greater,
        other => {
            return Err(Refusal(format!(
                "compare result {other:?}: expected EQUAL, NOT_EQUAL, LESS or GREATER"
            )))
        }
    };
    let missing = |field: &str| Refusal(format!("a {} compare needs \"{field}\"", body.target));
    let number = |n: Option<u64>| n.map(|n| n.to_string().into_bytes());
    let (target, operand) = match body.target.as_str() {
        "VALUE" => {
            let value = body.value.as_deref().ok_or_else(|| missing("value"))?;
            (Target::Value, decode("value", value)?)
        }
        "MOD" => (Target::Mod, number(body.mod_revision).ok_or_else(|| missing("mod_revision"))?),
        "CREATE" => (
            Target::Create,
            number(body.create_revision).ok_or_else(|| missing("create_revision"))?,
        ),
        "VERSION" => (Target::Version, number(body.version).ok_or_else(|| missing("version"))?),
        other => {
            return Err(Refusal(format!(
                "compare target {other:?}: expected VALUE, MOD, CREATE or VERSION"
            )))
        }
    };
    Ok(Compare { target, key, cmp, operand })
}

fn operation(body: OpBody) -> Result<Op, Refusal> {
    match (body.request_put, body.request_range, body.request_delete_range) {
        (Some(put), None, None) => {
            Ok(Op::Put { key: decode("key", &put.key)?, value: decode("value", &put.value)? })
        }
        (None, Some(range), None) => Ok(Op::Get { key: decode("key", &range.key)? }),
        (None, None, Some(delete)) => Ok(Op::Del { key: decode("key", &delete.key)? }),
        _ => Err(Refusal(
            "each operation is exactly one of request_put, request_range, request_delete_range"
                .into(),
        )),
    }
}

fn parse(body: &[u8]) -> Result<CompareTxn, Refusal> {
    let body: TxnBody = parse_json(body)?;
    Ok(CompareTxn {
        compares: body.compare.into_iter().map(compare).collect::<Result<_, _>>()?,
        success: body.success.into_iter().map(operation).collect::<Result<_, _>>()?,
        failure: body.failure.into_iter().map(operation).collect::<Result<_, _>>()?,
    })
}

pub async fn txn(State(client): State<Client>, body: Bytes) -> Response {
    let txn = match parse(&body) {
        Ok(txn) => txn,
        Err(refusal) => return refusal.into_response(),
    };
    let outcome = match client.compare_txn(&txn).await {
        Ok(outcome) => outcome,
        Err(failure) => return client_error(failure),
    };
    let responses: Vec<serde_json::Value> = outcome
        .results
        .iter()
        .map(|result| match result {
            OpResult::Put { .. } => json!({"response_put": {}}),
            OpResult::Get { kv, .. } => {
                let kvs: Vec<serde_json::Value> = kv.iter().map(kv_json).collect();
                json!({"response_range": {"count": kvs.len(), "kvs": kvs}})
            }
            OpResult::Del { deleted, .. } => json!({"response_delete_range": {"deleted": deleted}}),
        })
        .collect();
    Json(json!({
        "succeeded": outcome.succeeded,
        "revision": outcome.revision,
        "responses": responses,
    }))
    .into_response()
}
