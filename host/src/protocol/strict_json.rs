//! JSON as the gateway reads it from clients: like `serde_json`, except that an object with
//! the same key twice is refused. Parsers disagree on which duplicate wins (the first, the
//! last), so a body that a proxy, a policy and a plugin could each read differently is
//! refused at every layer with one answer, wherever in the document the duplicate hides.

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `bytes` as one JSON document, refusing duplicate object keys at any depth.
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Whether a parse error is a duplicate key (rather than broken JSON).
pub fn is_duplicate_key(error: &serde_json::Error) -> bool {
    error.is_data() && error.to_string().starts_with(DUPLICATE)
}

const DUPLICATE: &str = "duplicate key";

struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(A::Error::custom(format!("{DUPLICATE} `{shown}`")));
            }
            let value = access.next_value_seed(Strict)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_key_is_refused_at_any_depth_and_everything_else_parses_as_serde_json_does() {
        for text in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"payload": {"amount": 1, "amount": 2}}"#,
            r#"[{"x": [{"k": true, "k": false}]}]"#,
        ] {
            let error = parse(text.as_bytes()).expect_err(text);
            assert!(is_duplicate_key(&error), "{text}: {error}");
        }
        for text in [
            r#"{"a": 1, "b": [1, -2, 3.5, "x", null, true], "c": {"a": 1}}"#,
            "18446744073709551615",
            r#""é""#,
        ] {
            let want: Value = serde_json::from_str(text).unwrap();
            assert_eq!(parse(text.as_bytes()).unwrap(), want, "{text}");
        }
        let broken = parse(b"{\"a\": ").expect_err("broken");
        assert!(!is_duplicate_key(&broken));
        assert!(parse(b"{} {}").is_err(), "one document only");
    }
}
