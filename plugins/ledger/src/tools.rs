//! The ledger tools: descriptors, impact plans and execution.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::openport::plugin::host;
use crate::openport::plugin::types::{Effect, Risk};
use crate::{Error, Impact, ToolDescriptor};
use crate::{done_before, load, load_all, load_versioned, store_if};

type Payload = Map<String, Value>;

pub fn parse_payload(text: &str) -> Result<Payload, Error> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::InvalidInput("payload must be a JSON object".into())),
        Err(e) => Err(Error::InvalidInput(format!("payload is not JSON: {e}"))),
    }
}

struct Spec {
    name: &'static str,
    description: &'static str,
    scopes: &'static [&'static str],
    effect: Effect,
    risk: Risk,
    http_path: Option<&'static str>,
    idempotent: bool,
    schema: fn() -> Value,
}

const TRANSACTION_FIELDS: &str = r#"{
  "ledgerId": {"type": "string", "minLength": 1},
  "kind": {"type": "string", "enum": ["income", "expense", "transfer", "adjustment"]},
  "title": {"type": "string", "minLength": 1, "maxLength": 200},
  "amount_home": {"type": "number"},
  "currency_home": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
  "date": {"type": "string", "minLength": 10},
  "notes": {"type": ["string", "null"], "maxLength": 2000}
}"#;

fn transaction_fields() -> Value {
    serde_json::from_str(TRANSACTION_FIELDS).unwrap_or_else(|_| json!({}))
}

const SPECS: &[Spec] = &[
    Spec {
        name: "ledger.list",
        description: "List ledgers that this integration can access.",
        scopes: &["ledger.read"],
        effect: Effect::Read,
        risk: Risk::Low,
        http_path: Some("ledgers"),
        idempotent: true,
        schema: || json!({"type": "object", "properties": {}, "additionalProperties": false}),
    },
    Spec {
        name: "transaction.list",
        description: "List transactions for a ledger, with optional date filters and pagination.",
        scopes: &["transaction.read"],
        effect: Effect::Read,
        risk: Risk::Low,
        http_path: Some("transactions"),
        idempotent: true,
        schema: || {
            json!({
                "type": "object",
                "required": ["ledgerId"],
                "properties": {
                    "ledgerId": {"type": "string", "minLength": 1},
                    "startDate": {"type": "string", "format": "date"},
                    "endDate": {"type": "string", "format": "date"},
                    "page": {"type": "integer", "minimum": 1},
                    "pageSize": {"type": "integer", "minimum": 1, "maximum": 200}
                },
                "additionalProperties": false
            })
        },
    },
    Spec {
        name: "transaction.create",
        description: "Create a new transaction.",
        scopes: &["transaction.write"],
        effect: Effect::Write,
        risk: Risk::Medium,
        http_path: None,
        idempotent: false,
        schema: || {
            json!({
                "type": "object",
                "required": ["ledgerId", "kind", "title", "amount_home"],
                "properties": transaction_fields(),
                "additionalProperties": false
            })
        },
    },
    Spec {
        name: "transaction.update",
        description: "Update an existing transaction.",
        scopes: &["transaction.write"],
        effect: Effect::Write,
        risk: Risk::Medium,
        http_path: None,
        idempotent: true,
        schema: || {
            let mut fields = transaction_fields();
            if let Some(map) = fields.as_object_mut() {
                map.insert("transactionId".into(), json!({"type": "string", "minLength": 1}));
            }
            json!({
                "type": "object",
                "required": ["transactionId"],
                "properties": fields,
                "additionalProperties": false
            })
        },
    },
    Spec {
        name: "transaction.delete",
        description: "Soft delete a transaction.",
        scopes: &["transaction.delete"],
        effect: Effect::Delete,
        risk: Risk::High,
        http_path: None,
        idempotent: true,
        schema: transaction_id_schema,
    },
    Spec {
        name: "transaction.hard_delete",
        description: "Permanently delete a transaction.",
        scopes: &["transaction.delete"],
        effect: Effect::Delete,
        risk: Risk::High,
        http_path: None,
        idempotent: true,
        schema: transaction_id_schema,
    },
    Spec {
        name: "transactions.export_csv",
        description: "Export transactions as CSV.",
        scopes: &["transaction.read", "transaction.export"],
        effect: Effect::Write,
        risk: Risk::High,
        http_path: None,
        idempotent: true,
        schema: || {
            json!({
                "type": "object",
                "required": ["ledgerId"],
                "properties": {
                    "ledgerId": {"type": "string", "minLength": 1},
                    "startDate": {"type": "string", "format": "date"},
                    "endDate": {"type": "string", "format": "date"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 5000}
                },
                "additionalProperties": false
            })
        },
    },
];

fn transaction_id_schema() -> Value {
    json!({
        "type": "object",
        "required": ["transactionId"],
        "properties": {"transactionId": {"type": "string", "minLength": 1}},
        "additionalProperties": false
    })
}

pub fn descriptors() -> Vec<ToolDescriptor> {
    SPECS
        .iter()
        .map(|s| ToolDescriptor {
            name: s.name.into(),
            description: s.description.into(),
            input_schema: (s.schema)().to_string(),
            output_schema: None,
            effect: s.effect,
            risk: s.risk,
            required_scopes: s.scopes.iter().map(|s| s.to_string()).collect(),
            requires_confirmation: !matches!(s.effect, Effect::Read),
            http_path: s.http_path.map(Into::into),
            idempotent: s.idempotent,
        })
        .collect()
}

fn str_field<'a>(payload: &'a Payload, name: &str) -> Option<&'a str> {
    payload.get(name).and_then(Value::as_str)
}

fn required<'a>(payload: &'a Payload, name: &str) -> Result<&'a str, Error> {
    str_field(payload, name).ok_or_else(|| Error::InvalidInput(format!("`{name}` is required")))
}

fn ledger(id: &str) -> Result<Value, Error> {
    load(&format!("ledger/{id}"))?.ok_or_else(|| Error::NotFound("Ledger not found".into()))
}

fn live_transaction(id: &str) -> Result<Value, Error> {
    live_versioned(id).map(|(t, _)| t)
}

/// A transaction that is not deleted, with the version it was read at.
fn live_versioned(id: &str) -> Result<(Value, u64), Error> {
    match load_versioned(&format!("txn/{id}"))? {
        Some((t, version)) if t["is_deleted"] != json!(true) => Ok((t, version)),
        _ => Err(Error::NotFound("Transaction not found".into())),
    }
}

/// How often a change is retried when parallel calls keep changing the same record, and
/// how many taken ids a create may skip before it gives up.
const MAX_ATTEMPTS: usize = 64;

/// Reads a live transaction, applies `change`, and writes it back only if nobody wrote it
/// in between; otherwise reads again. Returns the call's result, `answer` of the stored
/// transaction (or the result an earlier attempt of this execution recorded).
fn change_transaction(
    id: &str,
    change: impl Fn(&mut Map<String, Value>),
    answer: impl Fn(&Value) -> Value,
) -> Result<Value, Error> {
    for _ in 0..MAX_ATTEMPTS {
        if let Some(done) = done_before()? {
            return Ok(done);
        }
        let (mut t, version) = match live_versioned(id) {
            Ok(found) => found,
            Err(e) => return done_or(e),
        };
        if let Some(map) = t.as_object_mut() {
            change(map);
        }
        let result = answer(&t);
        if store_if(&format!("txn/{id}"), Some(version), Some(&t), &result)? {
            return Ok(result);
        }
    }
    done_or(Error::Conflict("the transaction kept changing; try again".into()))
}

/// `error`, unless a parallel attempt of this execution has just made the change that
/// caused it (a delete that finds the record gone): then that attempt's result.
fn done_or(error: Error) -> Result<Value, Error> {
    match done_before()? {
        Some(done) => Ok(done),
        None => Err(error),
    }
}

/// The transaction fields the reference shows to agents (`is_deleted` stays internal).
fn public_transaction(t: &Value) -> Value {
    let mut out = Map::new();
    for field in [
        "id",
        "ledger_id",
        "kind",
        "title",
        "amount_home",
        "currency_home",
        "date",
        "notes",
        "created_at",
        "updated_at",
    ] {
        out.insert(field.into(), t.get(field).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

fn now_iso() -> Result<String, Error> {
    let ms = host::now_ms()?;
    Ok(iso_from_millis(ms))
}

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (proleptic Gregorian, UTC).
fn iso_from_millis(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days, Howard Hinnant's algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The end of a date filter: a bare date covers its whole day.
fn end_bound(end: &str) -> String {
    if end.len() <= 10 {
        format!("{end}T23:59:59.999Z")
    } else {
        end.to_string()
    }
}

fn transactions_in(payload: &Payload, ledger_id: &str) -> Result<Vec<Value>, Error> {
    let start = str_field(payload, "startDate");
    let end = str_field(payload, "endDate").map(end_bound);
    let mut rows: Vec<Value> = load_all("txn/")?
        .into_iter()
        .filter(|t| t["ledger_id"] == json!(ledger_id) && t["is_deleted"] != json!(true))
        .filter(|t| {
            let date = t["date"].as_str().unwrap_or_default();
            start.is_none_or(|s| date >= s) && end.as_deref().is_none_or(|e| date <= e)
        })
        .collect();
    rows.sort_by(|a, b| b["date"].as_str().cmp(&a["date"].as_str()));
    Ok(rows)
}

/// A stored transaction as the list reads it: every field's JSON borrowed as stored, and
/// only the three the filter and the order need decoded. The list is the governed read
/// agents call most; building a `Value` tree of each record was most of its guest time.
/// It writes the fields the reference shows to agents, in the order a `Value` map writes
/// them (so the answer is the same text as [`public_transaction`]'s). A field the record
/// lacks is `None` (serde's rule for `Option`), written as `null`.
#[derive(Deserialize, Serialize)]
struct Listed<'a> {
    #[serde(borrow)]
    amount_home: Option<&'a RawValue>,
    #[serde(borrow)]
    created_at: Option<&'a RawValue>,
    #[serde(borrow)]
    currency_home: Option<&'a RawValue>,
    #[serde(borrow)]
    date: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow, skip_serializing)]
    is_deleted: Option<&'a RawValue>,
    #[serde(borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    ledger_id: Option<&'a RawValue>,
    #[serde(borrow)]
    notes: Option<&'a RawValue>,
    #[serde(borrow)]
    title: Option<&'a RawValue>,
    #[serde(borrow)]
    updated_at: Option<&'a RawValue>,
}

/// A raw JSON string field, decoded; `None` when absent or not a string.
fn raw_str<'a>(raw: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
    raw.and_then(|r| serde_json::from_str::<Cow<'a, str>>(r.get()).ok())
}

/// One page of the ledger's live transactions, newest first (`transaction.list`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Page<'a> {
    has_more: bool,
    items: Vec<&'a Listed<'a>>,
    page: u64,
    page_size: u64,
    total: usize,
}

fn list_transactions(payload: &Payload) -> Result<String, Error> {
    let ledger_id = required(payload, "ledgerId")?;
    ledger(ledger_id)?;
    let start_date = str_field(payload, "startDate");
    let end_date = str_field(payload, "endDate").map(end_bound);
    let texts = host::kv_scan("txn/")?;
    // Each row keeps its decoded date for the order; its fields borrow from `texts`.
    let mut rows: Vec<(Cow<'_, str>, Listed<'_>)> = Vec::with_capacity(texts.len());
    for (key, text) in &texts {
        let listed: Listed<'_> = serde_json::from_str(text)
            .map_err(|e| Error::Internal(format!("stored `{key}` is not a transaction: {e}")))?;
        let live = listed.is_deleted.is_none_or(|d| d.get() != "true");
        let date = raw_str(listed.date);
        let in_range = {
            let d = date.as_deref().unwrap_or_default();
            start_date.is_none_or(|s| d >= s) && end_date.as_deref().is_none_or(|e| d <= e)
        };
        if live && in_range && raw_str(listed.ledger_id).as_deref() == Some(ledger_id) {
            rows.push((date.unwrap_or_default(), listed));
        }
    }
    rows.sort_by(|a, b| b.0.cmp(&a.0));
    let page = payload
        .get("page")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 10_000);
    let page_size = payload
        .get("pageSize")
        .and_then(Value::as_u64)
        .unwrap_or(50)
        .clamp(1, 200);
    let start = usize::try_from((page - 1) * page_size).unwrap_or(usize::MAX);
    let items: Vec<&Listed<'_>> = rows
        .iter()
        .skip(start)
        .take(page_size as usize)
        .map(|(_, t)| t)
        .collect();
    let has_more = start.saturating_add(items.len()) < rows.len();
    let page = Page {
        has_more,
        items,
        page,
        page_size,
        total: rows.len(),
    };
    serde_json::to_string(&page).map_err(|e| Error::Internal(format!("cannot write the page: {e}")))
}

/// The fields of a transaction taken from a create or update payload.
fn transaction_changes(payload: &Payload) -> Map<String, Value> {
    let mut out = Map::new();
    for (from, to) in [
        ("ledgerId", "ledger_id"),
        ("kind", "kind"),
        ("title", "title"),
        ("amount_home", "amount_home"),
        ("date", "date"),
        ("notes", "notes"),
    ] {
        if let Some(v) = payload.get(from) {
            out.insert(to.into(), v.clone());
        }
    }
    if let Some(c) = str_field(payload, "currency_home") {
        out.insert("currency_home".into(), json!(c.to_ascii_uppercase()));
    }
    out
}

fn impact_of(t: &Value) -> Value {
    json!({
        "id": t["id"],
        "ledger_id": t["ledger_id"],
        "title": t["title"],
        "amount_home": t["amount_home"],
        "date": t["date"],
        "is_deleted": t["is_deleted"],
    })
}

pub fn plan(tool: &str, payload: &Payload) -> Result<Impact, Error> {
    let (summary, detail) = match tool {
        "transaction.create" => {
            let ledger_id = required(payload, "ledgerId")?;
            ledger(ledger_id)?;
            (
                "Create 1 transaction".to_string(),
                json!({"transaction": transaction_changes(payload)}),
            )
        }
        "transaction.update" => {
            let t = live_transaction(required(payload, "transactionId")?)?;
            (
                "Update 1 transaction".to_string(),
                json!({"transaction": impact_of(&t), "changes": transaction_changes(payload)}),
            )
        }
        "transaction.delete" | "transaction.hard_delete" => {
            let t = live_transaction(required(payload, "transactionId")?)?;
            let verb = if tool == "transaction.delete" {
                "Delete"
            } else {
                "Hard delete"
            };
            (format!("{verb} 1 transaction"), json!({"transaction": impact_of(&t)}))
        }
        "transactions.export_csv" => {
            let ledger_id = required(payload, "ledgerId")?;
            ledger(ledger_id)?;
            let rows = transactions_in(payload, ledger_id)?;
            (
                "Export transactions as CSV".to_string(),
                json!({"export": {
                    "ledgerId": ledger_id,
                    "startDate": payload.get("startDate"),
                    "endDate": payload.get("endDate"),
                    "requestedLimit": payload.get("limit"),
                    "rowCount": rows.len(),
                }}),
            )
        }
        "ledger.list" | "transaction.list" => {
            return Err(Error::InvalidInput(format!("`{tool}` is a read and has no plan")));
        }
        other => return Err(Error::UnknownTool(other.to_string())),
    };
    let mut detail = detail;
    if let Some(map) = detail.as_object_mut() {
        map.insert("summary".into(), json!(summary));
    }
    Ok(Impact {
        summary,
        detail: detail.to_string(),
    })
}

/// Runs a tool; its result as JSON text. The list writes its text directly.
pub fn invoke(tool: &str, payload: &Payload, allow_sensitive_fields: bool) -> Result<String, Error> {
    match tool {
        "transaction.list" => list_transactions(payload),
        _ => execute(tool, payload, allow_sensitive_fields).map(|result| result.to_string()),
    }
}

fn execute(tool: &str, payload: &Payload, allow_sensitive_fields: bool) -> Result<Value, Error> {
    match tool {
        "ledger.list" => Ok(json!({"items": load_all("ledger/")?})),
        "transaction.create" => {
            if let Some(done) = done_before()? {
                return Ok(done);
            }
            let ledger_id = required(payload, "ledgerId")?;
            ledger(ledger_id)?;
            let now = now_iso()?;
            // A fresh id from an atomic counter, written only where no record is: parallel
            // creates never share an id. Taken ids the counter has not passed yet (the
            // demo's seeded ones) are skipped.
            for _ in 0..MAX_ATTEMPTS {
                let seq = host::kv_increment("seq/txn", 1)?;
                let mut t = Map::new();
                t.insert("id".into(), json!(format!("txn_{seq}")));
                t.insert("currency_home".into(), json!("USD"));
                t.insert("date".into(), json!(now));
                t.insert("notes".into(), Value::Null);
                t.extend(transaction_changes(payload));
                t.insert("is_deleted".into(), json!(false));
                t.insert("created_at".into(), json!(now));
                t.insert("updated_at".into(), json!(now));
                let t = Value::Object(t);
                let result = json!({"transaction": public_transaction(&t)});
                if store_if(&format!("txn/txn_{seq}"), None, Some(&t), &result)? {
                    return Ok(result);
                }
                if let Some(done) = done_before()? {
                    return Ok(done);
                }
            }
            Err(Error::Internal("no free transaction id".into()))
        }
        "transaction.update" => {
            if let Some(done) = done_before()? {
                return Ok(done);
            }
            let id = required(payload, "transactionId")?;
            live_transaction(id)?;
            if let Some(ledger_id) = str_field(payload, "ledgerId") {
                ledger(ledger_id)?;
            }
            let now = now_iso()?;
            change_transaction(
                id,
                |map| {
                    map.extend(transaction_changes(payload));
                    map.insert("updated_at".into(), json!(now));
                },
                |t| json!({"transaction": public_transaction(t)}),
            )
        }
        "transaction.delete" => {
            let id = required(payload, "transactionId")?;
            let now = now_iso()?;
            change_transaction(
                id,
                |map| {
                    map.insert("is_deleted".into(), json!(true));
                    map.insert("updated_at".into(), json!(now));
                },
                |_| json!({"deleted": {"id": id, "deleted": true}}),
            )
        }
        "transaction.hard_delete" => {
            let id = required(payload, "transactionId")?;
            let result = json!({"deleted": {"id": id, "deleted": true, "hard": true}});
            for _ in 0..MAX_ATTEMPTS {
                if let Some(done) = done_before()? {
                    return Ok(done);
                }
                let Some((_, version)) = load_versioned(&format!("txn/{id}"))? else {
                    return done_or(Error::NotFound("Transaction not found".into()));
                };
                if store_if(&format!("txn/{id}"), Some(version), None, &result)? {
                    return Ok(result);
                }
            }
            done_or(Error::Conflict("the transaction kept changing; try again".into()))
        }
        "transactions.export_csv" => {
            let ledger_id = required(payload, "ledgerId")?;
            ledger(ledger_id)?;
            let limit = payload
                .get("limit")
                .and_then(Value::as_u64)
                .unwrap_or(200)
                .clamp(1, 5000);
            let rows = transactions_in(payload, ledger_id)?;
            let mut lines = vec!["id,date,kind,title,amount_home,currency_home,created_at,updated_at".to_string()];
            for t in rows.iter().take(limit as usize) {
                // The title is sensitive: blank when the data policy disallows it.
                let cell = |f: &str| {
                    if f == "title" && !allow_sensitive_fields {
                        String::new()
                    } else {
                        csv_cell(&t[f])
                    }
                };
                lines.push(
                    [
                        "id",
                        "date",
                        "kind",
                        "title",
                        "amount_home",
                        "currency_home",
                        "created_at",
                        "updated_at",
                    ]
                    .map(cell)
                    .join(","),
                );
            }
            Ok(json!({"export": {
                "format": "csv",
                "ledgerId": ledger_id,
                "rowCount": lines.len() - 1,
                "csv": lines.join("\n"),
            }}))
        }
        other => Err(Error::UnknownTool(other.to_string())),
    }
}

/// One CSV cell, quoted when it needs to be, and defused against spreadsheet formulas.
fn csv_cell(v: &Value) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = if text.starts_with(['=', '+', '-', '@']) && !matches!(v, Value::Number(_)) {
        format!("'{text}")
    } else {
        text
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}
