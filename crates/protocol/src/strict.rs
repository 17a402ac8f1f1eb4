//! Strict JSON for the ERP API: an object that names a key twice is refused (`serde_json`
//! would keep the last silently, so `{"total": "1", "total": "1000"}` could mean one thing to
//! the ERP's log and another to the invoice).

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};

/// The path (`items[2].name`) of the first key an object of `body` repeats, if any; `None`
/// also when `body` is not JSON at all (the caller's parse says why).
#[must_use]
pub fn duplicate_key(body: &[u8]) -> Option<String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    match (Walk {
        path: String::new(),
    })
    .deserialize(&mut de)
    {
        Err(e) => e
            .to_string()
            .strip_prefix(MARK)
            .and_then(|rest| rest.split(MARK).next())
            .map(str::to_owned),
        Ok(()) => None,
    }
}

/// What marks the path in the error the walk stops with.
const MARK: &str = "\u{1}duplicate:";

/// Walks a JSON value, remembering where it is.
struct Walk {
    path: String,
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        while seq
            .next_element_seed(Self {
                path: format!("{}[{i}]", self.path),
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key) {
                return Err(A::Error::custom(format!("{MARK}{path}{MARK}")));
            }
            map.next_value_seed(Self { path })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_is_found_with_its_path() {
        assert_eq!(duplicate_key(br#"{"a": 1, "b": 2}"#), None);
        assert_eq!(duplicate_key(br#"{"a": 1, "a": 2}"#).as_deref(), Some("a"));
        assert_eq!(
            duplicate_key(
                br#"{"items": [{"name": "x"}, {"name": "y", "amount": "1", "amount": "9"}]}"#
            )
            .as_deref(),
            Some("items[1].amount")
        );
        assert_eq!(
            duplicate_key(r#"{"buyer": {"name": "甲", "name": "乙"}}"#.as_bytes()).as_deref(),
            Some("buyer.name")
        );
        // The same key in different objects is fine; not JSON is for the parser to report.
        assert_eq!(duplicate_key(br#"[{"a": 1}, {"a": 1}]"#), None);
        assert_eq!(duplicate_key(b"{\"a\": "), None);
    }
}
