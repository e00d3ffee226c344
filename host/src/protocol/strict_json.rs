//! JSON as the gateway reads it from clients: like `serde_json`, except that an object with
//! the same key twice is refused. Parsers disagree on which duplicate wins (the first, the
//! last), so a body that a proxy, a policy and a plugin could each read differently is
//! refused at every layer with one answer, wherever in the document the duplicate hides.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Parses `bytes` as one JSON document, refusing duplicate object keys at any depth.
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Checks that `text` is one JSON document with no duplicate object key, without building
/// it: for JSON the gateway passes on as it was written (a plugin's read result). Answers,
/// from the same pass, how many elements the array at the top-level member `listing` has
/// (`None` when the document is not an object with such an array).
pub fn check(text: &str, listing: &str) -> Result<Option<usize>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let mut keys = Vec::new();
    let listed = Checked {
        listing: Some(listing),
        keys: &mut keys,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(listed)
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
            // One hash of the key: its slot is found once, to refuse or to fill.
            match map.entry(key) {
                Entry::Occupied(taken) => return Err(duplicate(taken.key())),
                Entry::Vacant(free) => {
                    free.insert(access.next_value_seed(Strict)?);
                }
            }
        }
        Ok(Value::Object(map))
    }
}

fn duplicate<E: serde::de::Error>(key: &str) -> E {
    let shown: String = key.chars().take(64).collect();
    E::custom(format!("{DUPLICATE} `{shown}`"))
}

/// Most keys of an object [`Checked`] compares one by one.
const SCANNED_KEYS: usize = 16;

/// [`Strict`] without the tree: every value visited, nothing kept but each object's keys.
/// It answers one count: with a `listing`, the elements of the array at that member of
/// the object visited; without, the elements of the array visited.
struct Checked<'l, 'k, 'de> {
    listing: Option<&'l str>,
    /// The scanned keys of the objects being read, outermost first: an object's own follow
    /// its parents' and are dropped when it ends. One buffer for the document, where a `Vec`
    /// of each object's own cost up to three allocations (eight for a page of the demo's
    /// ledger).
    keys: &'k mut Vec<Cow<'de, str>>,
}

impl<'de> Checked<'_, '_, 'de> {
    /// A value inside the document, counted only where its parent asks.
    fn inner<'k>(keys: &'k mut Vec<Cow<'de, str>>) -> Checked<'static, 'k, 'de> {
        Checked { listing: None, keys }
    }
}

impl<'de> DeserializeSeed<'de> for Checked<'_, '_, 'de> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked<'_, '_, 'de> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Option<usize>, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Option<usize>, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Option<usize>, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Option<usize>, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Option<usize>, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Option<usize>, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<usize>, A::Error> {
        let mut count = 0;
        while seq.next_element_seed(Checked::inner(self.keys))?.is_some() {
            count += 1;
        }
        Ok(self.listing.is_none().then_some(count))
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Option<usize>, A::Error> {
        let mut listed = None;
        check_members(access, self.keys, |key, access, keys| {
            let count = access.next_value_seed(Checked::inner(keys))?;
            if self.listing == Some(key) {
                listed = count;
            }
            Ok(())
        })?;
        Ok(listed)
    }
}

/// Reads an object's members, refusing a key given twice; `value` reads each member's
/// value after its key. The object's scanned keys go on `keys` after its parents' (a
/// member's value, read meanwhile, leaves it as it found it) and are dropped at its end.
fn check_members<'de, A: MapAccess<'de>>(
    mut access: A,
    keys: &mut Vec<Cow<'de, str>>,
    mut value: impl FnMut(&str, &mut A, &mut Vec<Cow<'de, str>>) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    // A short object's keys are scanned (hashing them cost more than the parse); a long
    // one's are hashed, so that many keys do not cost their square.
    let start = keys.len();
    let mut many: HashSet<Cow<'de, str>> = HashSet::new();
    while let Some(key) = access.next_key_seed(Key)? {
        if keys[start..].contains(&key) || many.contains(&key) {
            return Err(duplicate(&key));
        }
        value(&key, &mut access, keys)?;
        if keys.len() - start < SCANNED_KEYS {
            keys.push(key);
        } else {
            if many.is_empty() {
                many.extend(keys.drain(start..));
            }
            many.insert(key);
        }
    }
    keys.truncate(start);
    Ok(())
}

/// An object key, borrowed from the text where it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Documents that give a key twice, at different depths.
    const REPEATED: [&str; 4] = [
        r#"{"a": 1, "a": 2}"#,
        r#"{"payload": {"amount": 1, "amount": 2}}"#,
        r#"[{"x": [{"k": true, "k": false}]}]"#,
        r#"{"\u0061": 1, "a": 2}"#,
    ];

    /// Documents serde_json reads, each key once in its object.
    const PLAIN: [&str; 4] = [
        r#"{"a": 1, "b": [1, -2, 3.5, "x", null, true], "c": {"a": 1}}"#,
        r#"{"a": {"b": {"c": 1}, "c": 2}, "b": [{"c": 3}], "c": 4}"#,
        "18446744073709551615",
        r#""é""#,
    ];

    #[test]
    fn a_duplicate_key_is_refused_at_any_depth_and_everything_else_parses_as_serde_json_does() {
        for text in REPEATED {
            let error = parse(text.as_bytes()).expect_err(text);
            assert!(is_duplicate_key(&error), "{text}: {error}");
        }
        for text in PLAIN {
            let want: Value = serde_json::from_str(text).unwrap();
            assert_eq!(parse(text.as_bytes()).unwrap(), want, "{text}");
        }
        let broken = parse(b"{\"a\": ").expect_err("broken");
        assert!(!is_duplicate_key(&broken));
        assert!(parse(b"{} {}").is_err(), "one document only");
    }

    #[test]
    fn check_answers_as_parse_does_without_building_the_document() {
        let others = [
            r#"{"a\"b": {"a\"b": 1}}"#,
            "{\"a\": ",
            "{} {}",
            "[1,]",
            "",
            // A lone surrogate is no Unicode text: refused, though `RawValue` lets it by.
            r#"["\ud800"]"#,
        ];
        for text in REPEATED.into_iter().chain(PLAIN).chain(others) {
            let parsed = parse(text.as_bytes());
            let checked = check(text, "items");
            assert_eq!(checked.is_ok(), parsed.is_ok(), "{text}");
            if let (Err(checked), Err(parsed)) = (checked, parsed) {
                assert_eq!(is_duplicate_key(&checked), is_duplicate_key(&parsed), "{text}");
            }
        }
        for text in REPEATED {
            assert!(is_duplicate_key(&check(text, "items").expect_err(text)), "{text}");
        }
        assert!(check(r#"["\ud800"]"#, "items").is_err());
        assert!(
            check(r#"{"items": [{"a": 1}, {"a": 2}]}"#, "items").is_ok(),
            "one key per object"
        );
        // Past the scanned keys, a repeat is still found, early or late.
        let long = |repeat: &str| {
            let keys: Vec<String> = (0..40).map(|i| format!(r#""k{i}": {i}"#)).collect();
            format!("{{{}, {repeat}}}", keys.join(", "))
        };
        assert!(check(&long(r#""k99": 0"#), "items").is_ok());
        for repeat in [r#""k3": 0"#, r#""k39": 0"#] {
            assert!(
                is_duplicate_key(&check(&long(repeat), "items").expect_err(repeat)),
                "{repeat}"
            );
        }
    }

    #[test]
    fn check_counts_the_listing_members_elements_in_the_same_pass() {
        let listed = |text: &str| check(text, "items").unwrap();
        assert_eq!(listed(r#"{"items": [1, [2, 3], {"items": []}], "total": 3}"#), Some(3));
        assert_eq!(listed(r#"{"total": 0, "items": []}"#), Some(0));
        assert_eq!(listed(r#"{"items": {"a": [1]}}"#), None, "not an array");
        assert_eq!(listed(r#"{"page": {"items": [1]}}"#), None, "only at the top");
        assert_eq!(listed(r#"[[1, 2]]"#), None, "not an object");
        assert_eq!(listed(r#""items""#), None);
        assert!(check(r#"{"items": [1], "items": [1, 2]}"#, "items").is_err());
    }
}
