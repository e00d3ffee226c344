//! What Cedar policies see of a tool's arguments (and of an app's data policy), as plain
//! data: the type a JSON Schema maps to, and typed, hashable values. No Cedar types here;
//! `authz` turns both into Cedar's schema and expressions.
//!
//! The mapping (docs/policies.md): string → String, integer → Long, number → `decimal`,
//! boolean → Bool, string enum → String, array → Set, object with `properties` → Record,
//! `format: date`/`date-time` → `datetime`; properties not in `required` are optional.
//! Everything else (`oneOf`, `$ref`, free-form objects, …) is left out with a warning.

use std::collections::BTreeMap;

use serde_json::Value;

/// The Cedar type of an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgType {
    String,
    Long,
    /// Cedar's `decimal`: four fractional digits, |x| < 922337203685477.5808.
    Decimal,
    Bool,
    /// Cedar's `datetime`, from `format: date` or `date-time` strings.
    DateTime,
    Set(Box<ArgType>),
    Record(BTreeMap<String, Field>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub ty: ArgType,
    pub required: bool,
}

/// A typed value: what a policy compares. `Decimal` is in ten-thousandths, `DateTime`
/// in milliseconds since the Unix epoch, as Cedar holds them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attr {
    String(String),
    Long(i64),
    Decimal(i64),
    Bool(bool),
    DateTime(i64),
    Set(Vec<Attr>),
    Record(BTreeMap<String, Attr>),
}

/// An argument the policy vocabulary leaves out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Omitted {
    pub path: Vec<String>,
    pub reason: String,
}

/// A value that does not have the type its schema maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub path: Vec<String>,
    /// `out_of_range` for numbers Cedar cannot hold, `invalid_type` otherwise.
    pub code: &'static str,
    pub message: String,
}

impl ArgType {
    /// The record type of a tool's input schema, and the properties left out of it.
    pub fn of_input_schema(schema: &Value) -> (ArgType, Vec<Omitted>) {
        let mut omitted = Vec::new();
        let ty = match record(schema, &mut Vec::new(), &mut omitted) {
            Some(ty) => ty,
            None => ArgType::Record(BTreeMap::new()),
        };
        (ty, omitted)
    }

    /// The typed value of `value`; properties the type leaves out are skipped, and a
    /// `null` optional property counts as absent.
    pub fn value_of(&self, value: &Value) -> Result<Attr, Mismatch> {
        self.convert(value, &mut Vec::new())
    }

    fn convert(&self, value: &Value, path: &mut Vec<String>) -> Result<Attr, Mismatch> {
        let mismatch = |path: &[String], code, message: String| Mismatch {
            path: path.to_vec(),
            code,
            message,
        };
        match (self, value) {
            (ArgType::String, Value::String(s)) => Ok(Attr::String(s.clone())),
            (ArgType::Bool, Value::Bool(b)) => Ok(Attr::Bool(*b)),
            (ArgType::Long, Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(Attr::Long(i)),
                None => match n.as_f64() {
                    Some(x) if x.fract() == 0.0 && x.abs() < 9.0e18 => Ok(Attr::Long(x as i64)),
                    _ => Err(mismatch(
                        path,
                        "out_of_range",
                        format!("{n} is not an integer Cedar's Long can hold"),
                    )),
                },
            },
            (ArgType::Decimal, Value::Number(n)) => {
                let scaled = n.as_f64().map(|x| (x * 10_000.0).round());
                match scaled {
                    Some(s) if s.is_finite() && s.abs() < 9.2e18 => Ok(Attr::Decimal(s as i64)),
                    _ => Err(mismatch(
                        path,
                        "out_of_range",
                        format!("{n} is beyond Cedar's decimal range (±922337203685477.5807)"),
                    )),
                }
            }
            (ArgType::DateTime, Value::String(s)) => parse_datetime(s).map(Attr::DateTime).ok_or_else(|| {
                mismatch(
                    path,
                    "invalid_format",
                    format!("`{s}` is not a date (YYYY-MM-DD) or an RFC 3339 date-time"),
                )
            }),
            (ArgType::Set(element), Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    path.push(i.to_string());
                    out.push(element.convert(item, path)?);
                    path.pop();
                }
                // A set: one order and no repeats, so equal sets hash and compare equal.
                out.sort();
                out.dedup();
                Ok(Attr::Set(out))
            }
            (ArgType::Record(fields), Value::Object(map)) => {
                let mut out = BTreeMap::new();
                for (name, field) in fields {
                    match map.get(name) {
                        None | Some(Value::Null) if !field.required => {}
                        None => {
                            return Err(Mismatch {
                                path: [path.as_slice(), std::slice::from_ref(name)].concat(),
                                code: "required",
                                message: format!("`{name}` is required"),
                            });
                        }
                        Some(v) => {
                            path.push(name.clone());
                            out.insert(name.clone(), field.ty.convert(v, path)?);
                            path.pop();
                        }
                    }
                }
                Ok(Attr::Record(out))
            }
            (ty, v) => Err(mismatch(
                path,
                "invalid_type",
                format!("expected {}, got {}", ty.describe(), kind_of(v)),
            )),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            ArgType::String => "a string",
            ArgType::Long => "an integer",
            ArgType::Decimal => "a number",
            ArgType::Bool => "a boolean",
            ArgType::DateTime => "a date",
            ArgType::Set(_) => "an array",
            ArgType::Record(_) => "an object",
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Keywords whose meaning no Cedar type can carry: a property using one is left out
/// rather than typed by half of its schema.
const UNTYPEABLE: &[&str] = &[
    "oneOf",
    "anyOf",
    "allOf",
    "not",
    "$ref",
    "if",
    "patternProperties",
    "dependentSchemas",
    "const",
];

/// The type of one schema, or `None` (recorded in `omitted`) when it has none.
fn type_of(schema: &Value, path: &mut Vec<String>, omitted: &mut Vec<Omitted>) -> Option<ArgType> {
    let mut omit = |reason: String| {
        omitted.push(Omitted {
            path: path.clone(),
            reason,
        });
        None
    };
    let Some(map) = schema.as_object() else {
        return omit("its schema is not an object".into());
    };
    if let Some(keyword) = UNTYPEABLE.iter().find(|k| map.contains_key(**k)) {
        return omit(format!("`{keyword}` has no Cedar type"));
    }
    // `["string", "null"]`: nullable; null counts as absent.
    let declared: Vec<&str> = match map.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect(),
        _ => Vec::new(),
    };
    let declared = match (declared.as_slice(), map.get("enum")) {
        ([t], _) => *t,
        ([], Some(Value::Array(values))) if !values.is_empty() && values.iter().all(Value::is_string) => "string",
        ([], _) => return omit("it declares no `type`".into()),
        _ => return omit("it allows several types".into()),
    };
    match declared {
        "string" => match map.get("format").and_then(Value::as_str) {
            Some("date" | "date-time") => Some(ArgType::DateTime),
            _ => Some(ArgType::String),
        },
        "integer" => Some(ArgType::Long),
        "number" => Some(ArgType::Decimal),
        "boolean" => Some(ArgType::Bool),
        "array" => {
            let Some(items) = map.get("items") else {
                return omit("an array without `items` has no element type".into());
            };
            path.push("[]".into());
            let element = type_of(items, path, omitted);
            path.pop();
            element.map(|e| ArgType::Set(Box::new(e)))
        }
        "object" => record(schema, path, omitted),
        other => omit(format!("type `{other}` has no Cedar type")),
    }
}

fn record(schema: &Value, path: &mut Vec<String>, omitted: &mut Vec<Omitted>) -> Option<ArgType> {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        omitted.push(Omitted {
            path: path.clone(),
            reason: "an object without `properties` has no Cedar record type".into(),
        });
        return None;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields = BTreeMap::new();
    for (name, property) in properties {
        path.push(name.clone());
        if let Some(ty) = type_of(property, path, omitted) {
            let nullable = matches!(property.get("type"), Some(Value::Array(ts)) if ts.iter().any(|t| t == "null"));
            let required = required.contains(&name.as_str()) && !nullable;
            fields.insert(name.clone(), Field { ty, required });
        }
        path.pop();
    }
    Some(ArgType::Record(fields))
}

/// Milliseconds since the epoch of `YYYY-MM-DD` or an RFC 3339 date-time (sub-millisecond
/// digits are dropped, as Cedar's `datetime` keeps milliseconds).
pub fn parse_datetime(text: &str) -> Option<i64> {
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    let instant = if text.len() == 10 {
        time::Date::parse(text, &date_format).ok()?.midnight().assume_utc()
    } else {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?
    };
    i64::try_from(instant.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Cedar's text for a `datetime` held in milliseconds: `YYYY-MM-DDThh:mm:ss.sssZ`.
pub fn datetime_text(millis: i64) -> Option<String> {
    let instant = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok()?;
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    instant.format(&format).ok()
}

/// Cedar's text for a `decimal` held in ten-thousandths.
pub fn decimal_text(scaled: i64) -> String {
    let sign = if scaled < 0 { "-" } else { "" };
    let magnitude = scaled.unsigned_abs();
    format!("{sign}{}.{:04}", magnitude / 10_000, magnitude % 10_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_mapping_follows_the_json_schema_types() {
        let (ty, omitted) = ArgType::of_input_schema(&json!({
            "type": "object",
            "required": ["title"],
            "properties": {
                "title": {"type": "string"},
                "priority": {"type": "string", "enum": ["low", "urgent"]},
                "quantity": {"type": "integer"},
                "amount": {"type": "number"},
                "rush": {"type": "boolean"},
                "due": {"type": "string", "format": "date"},
                "labels": {"type": "array", "items": {"type": "string"}},
                "address": {"type": "object", "properties": {"city": {"type": "string"}}},
                "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                "note": {"type": ["string", "null"]}
            }
        }));
        let ArgType::Record(fields) = ty else {
            panic!("a record")
        };
        assert!(fields["title"].required);
        assert!(!fields["priority"].required);
        assert_eq!(fields["quantity"].ty, ArgType::Long);
        assert_eq!(fields["amount"].ty, ArgType::Decimal);
        assert_eq!(fields["due"].ty, ArgType::DateTime);
        assert_eq!(fields["labels"].ty, ArgType::Set(Box::new(ArgType::String)));
        assert!(matches!(fields["address"].ty, ArgType::Record(_)));
        assert!(!fields.contains_key("either"));
        assert_eq!(fields["note"].ty, ArgType::String);
        assert_eq!(omitted.len(), 1);
        assert_eq!(omitted[0].path, ["either"]);
        assert!(omitted[0].reason.contains("oneOf"), "{omitted:?}");
    }

    #[test]
    fn values_are_typed_and_mismatches_name_the_path() {
        let (ty, _) = ArgType::of_input_schema(&json!({
            "type": "object",
            "required": ["n"],
            "properties": {"n": {"type": "integer"}, "x": {"type": "number"}, "d": {"type": "string", "format": "date-time"}}
        }));
        let value = ty
            .value_of(&json!({"n": 3, "x": 12.5, "d": "2026-01-02T03:04:05+01:00", "extra": true}))
            .expect("typed");
        let Attr::Record(map) = value else { panic!("a record") };
        assert_eq!(map["n"], Attr::Long(3));
        assert_eq!(map["x"], Attr::Decimal(125_000));
        assert_eq!(
            datetime_text(match map["d"] {
                Attr::DateTime(ms) => ms,
                _ => 0,
            })
            .as_deref(),
            Some("2026-01-02T02:04:05.000Z")
        );
        assert!(!map.contains_key("extra"));
        let wrong = ty.value_of(&json!({"n": "3"})).expect_err("a string is not an integer");
        assert_eq!(
            (wrong.path.as_slice(), wrong.code),
            (&["n".to_string()][..], "invalid_type")
        );
        let huge = ty.value_of(&json!({"n": 1, "x": 1e300})).expect_err("out of range");
        assert_eq!(huge.code, "out_of_range");
        let missing = ty.value_of(&json!({})).expect_err("required");
        assert_eq!(missing.code, "required");
    }

    #[test]
    fn decimal_text_is_what_cedar_parses() {
        assert_eq!(decimal_text(125_000), "12.5000");
        assert_eq!(decimal_text(-5), "-0.0005");
    }
}
