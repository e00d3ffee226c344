//! The arguments of a call on their way through the steps: typed from a query string,
//! bounded by a data policy's date window, checked for numbers the impact hash cannot bind,
//! refused with the reference's issue shape, and redacted on the way out.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::catalog::Tool;
use crate::hashing::MAX_EXACT_INTEGER;
use crate::outcome::Refused;
use crate::protocol::Failure;
use crate::protocol::codes;
use crate::tool::Issue;

/// Query parameters as the read tool's payload, typed by its input schema.
pub fn query_payload(query: Option<&str>, schema: &Value) -> Result<Value, Refused> {
    let mut payload = Map::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let kind = schema["properties"][key.as_ref()]["type"].as_str();
        let typed = match kind {
            Some("integer") => value
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(value.to_string())),
            Some("number") => value
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(value.to_string())),
            Some("boolean") => match value.as_ref() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(value.to_string()),
            },
            _ => Value::String(value.to_string()),
        };
        if payload.insert(key.to_string(), typed).is_some() {
            return Err(Failure::validation(&[key.as_ref()], format!("query parameter `{key}` is repeated")).into());
        }
    }
    Ok(Value::Object(payload))
}

/// A payload refused by validation: `common.validation` for reads, `agent.action_invalid`
/// for actions (the reference's codes).
pub fn invalid_payload(tool: &Tool, issues: &[Issue]) -> Refused {
    let (code, message) = if tool.is_read() {
        (codes::VALIDATION, "Validation failed")
    } else {
        (codes::ACTION_INVALID, "Invalid payload for the action")
    };
    let issues = serde_json::to_value(issues).unwrap_or_else(|_| json!([]));
    Failure::new(code, message).with("issues", issues).into()
}

/// Numbers the impact hash can bind and policies can see, checked before Cedar reads the
/// payload. RFC 8785 hashes numbers as IEEE doubles, so two integers past 2^53 could share a
/// hash (`unsafe_integer`); Cedar sees numbers as `decimal`, which ends near ±9.2 × 10^14, so
/// a larger number would make every policy over it an evaluation error, that is, a denial
/// that says nothing about the input (`out_of_range`). Both are refused as invalid input
/// and must travel as strings.
pub fn bindable_numbers(tool: &Tool, payload: &Value) -> Result<(), Refused> {
    let issue = if let Some(path) = unbindable_number(payload) {
        Issue {
            code: "unsafe_integer",
            path,
            message: "integers beyond ±2^53 cannot be bound by the impact hash; send them as strings".into(),
        }
    } else if let Some(path) = first_number(payload, &|n| n.as_f64().is_some_and(|x| x.abs() > MAX_POLICY_NUMBER)) {
        Issue {
            code: "out_of_range",
            path,
            message: format!("numbers beyond ±{MAX_POLICY_NUMBER} cannot be seen by policies; send them as strings"),
        }
    } else {
        return Ok(());
    };
    Err(invalid_payload(tool, &[issue]))
}

/// The arguments as Cedar sees them. Arguments that do not fit the types policies see are
/// refused, never passed on partly: a forbid on a field must not be dodged by sending it
/// mistyped.
pub fn typed_args(tool: &Tool, payload: &Value) -> Result<crate::attr::Attr, Refused> {
    tool.typed_args(payload)
        .map_err(|issue| invalid_payload(tool, &[issue]))
}

/// The largest magnitude a policy can compare: Cedar's `decimal` holds up to
/// 922337203685477.5807.
const MAX_POLICY_NUMBER: f64 = 900_000_000_000_000.0;

/// The path of the first number an IEEE double cannot hold exactly, if any.
pub fn unbindable_number(value: &Value) -> Option<Vec<String>> {
    first_number(value, &|n| {
        n.as_u64().is_some_and(|u| u > MAX_EXACT_INTEGER)
            || n.as_i64().is_some_and(|i| i.unsigned_abs() > MAX_EXACT_INTEGER)
    })
}

/// The path of the first number, at any depth, for which `found` holds.
fn first_number(value: &Value, found: &dyn Fn(&serde_json::Number) -> bool) -> Option<Vec<String>> {
    match value {
        Value::Number(n) => found(n).then(Vec::new),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            first_number(v, found).map(|mut path| {
                path.insert(0, i.to_string());
                path
            })
        }),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            first_number(v, found).map(|mut path| {
                path.insert(0, k.clone());
                path
            })
        }),
        _ => None,
    }
}

/// Applies a `max_days` window to the date range the tool's plugin declares
/// (`[data_policy] date_range` in its manifest): an open end becomes today (UTC) and an
/// open start `max_days - 1` days before the end, as the reference does. The plugin's
/// shipped policies then bound the range.
pub fn bound_dates(
    payload: &mut Value,
    range: Option<&[String; 2]>,
    max_days: i64,
    today: time::Date,
) -> Result<(), Refused> {
    let Some([start_field, end_field]) = range else {
        return Ok(());
    };
    if max_days <= 0 {
        return Ok(());
    }
    let Some(map) = payload.as_object_mut() else {
        return Ok(());
    };
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let parse = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(|s| time::Date::parse(s.get(..10).unwrap_or(s), &format))
    };
    let not_a_date =
        |field: &str| Failure::validation(&[field], format!("`{field}` must be a date (YYYY-MM-DD)")).into();
    let end = match parse(map.get(end_field)) {
        Some(Ok(date)) => date,
        Some(Err(_)) => return Err(not_a_date(end_field)),
        None => today,
    };
    let start = match parse(map.get(start_field)) {
        Some(Ok(date)) => date,
        Some(Err(_)) => return Err(not_a_date(start_field)),
        None => end.checked_sub(time::Duration::days(max_days - 1)).unwrap_or(end),
    };
    if start > end {
        return Err(Failure::new(codes::ACTION_INVALID, "Invalid date range").into());
    }
    let text = |d: time::Date| d.format(&format).unwrap_or_default();
    map.insert(start_field.clone(), text(start).into());
    map.insert(end_field.clone(), text(end).into());
    Ok(())
}

/// Replaces the named fields, at any depth, with `[redacted]`; records which it found.
pub fn redact_fields(value: &mut Value, fields: &[String], found: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if fields.iter().any(|f| f == key) {
                    if !v.is_null() {
                        *v = Value::String("[redacted]".into());
                    }
                    found.insert(key.clone());
                } else {
                    redact_fields(v, fields, found);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_fields(v, fields, found)),
        _ => {}
    }
}
