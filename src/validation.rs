//! Request validation: turns a raw body into a checked [`Applicant`] or a list of per-field problems.
//!
//! A well-formed body is read straight into the three fields it needs ([`Fields`]). Any other body is parsed
//! as a generic JSON value (serde_json bounds nesting depth), so that every field can be judged on its own and
//! a client learns about all of its mistakes in one answer. Both roads end in the same checks.

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::de::{Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::domain::Applicant;

/// One problem with one field, as shown in an error's `details`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub message: &'static str,
    pub code: &'static str,
}

const MAX_NAME_CHARS: usize = 100;

/// The fields of a body that is an object whose three fields, where present, are strings, borrowed from the
/// body unless an escape forces a copy.
///
/// Tried before the generic [`Value`], which costs a map node and a string for every key and every value; on
/// the request path that walk was the largest share of validation's allocations (docs/benchmarks.md). A body
/// this cannot take (not an object, a field that is null or not a string, a repeated field, bad JSON) goes the
/// `Value` way, which names every problem. Other keys' values are read through ([`Skip`]) as strictly as the
/// `Value` road reads them, so that both roads take the same bodies.
#[derive(Default)]
struct Fields<'a> {
    first_name: Field<'a>,
    last_name: Field<'a>,
    id_number: Field<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Object<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'a>, A::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let (slot, name) = match key {
                        Key::FirstName => (&mut fields.first_name, "firstName"),
                        Key::LastName => (&mut fields.last_name, "lastName"),
                        Key::IdNumber => (&mut fields.id_number, "idNumber"),
                        Key::Other => {
                            map.next_value::<Skip>()?;
                            continue;
                        }
                    };
                    if !matches!(slot, Field::Missing) {
                        return Err(A::Error::duplicate_field(name));
                    }
                    *slot = map.next_value()?;
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(Object(PhantomData))
    }
}

/// A key of the body's object: one of the three fields, or another.
enum Key {
    FirstName,
    LastName,
    IdNumber,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "firstName" => Key::FirstName,
                    "lastName" => Key::LastName,
                    "idNumber" => Key::IdNumber,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(Name)
    }
}

/// A value of another key, read and dropped. Read as any value, as the `Value` road reads it: serde's
/// `IgnoredAny` only scans, and takes what that road refuses (a number out of range, nesting past serde_json's
/// depth limit, a lone surrogate or bytes that are not UTF-8 in a string).
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// A string field of [`Fields`], or its absence. Deliberately not an `Option`: serde reads `null` into `None`,
/// and null must be judged "must be a string", not "is required".
#[derive(Default)]
enum Field<'a> {
    #[default]
    Missing,
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Text<'a> {
            type Value = Field<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Text(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(Text(std::marker::PhantomData))
    }
}

impl Field<'_> {
    fn input(&self) -> Input<'_> {
        match self {
            Field::Missing => Input::Missing,
            Field::Text(text) => Input::Text(text),
        }
    }
}

/// What a body holds for one field.
enum Input<'a> {
    Missing,
    Text(&'a str),
    NotAString,
}

impl<'a> Input<'a> {
    fn of(object: &'a serde_json::Map<String, Value>, field: &str) -> Self {
        match object.get(field) {
            None => Input::Missing,
            Some(Value::String(s)) => Input::Text(s),
            Some(_) => Input::NotAString,
        }
    }
}

/// Validates a request body. `strict` adds the ID number's date and Luhn checks.
pub fn validate(body: &[u8], strict: bool) -> Result<Applicant, Vec<FieldError>> {
    // `Fields` reads an object and nothing else (serde_json refuses an array or a scalar for a map), so any
    // other body fails here and takes the Value road, which names the problem.
    //
    // The body is checked as UTF-8 once, and read as text: from bytes, serde_json checks each string on its
    // own, at about 100 instructions a string however short (callgrind, docs/benchmarks.md). A body that is not
    // UTF-8 is not JSON, and the Value road refuses it as such.
    let fields = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_json::from_str::<Fields>(text).ok());
    if let Some(fields) = fields {
        return judge(
            fields.first_name.input(),
            fields.last_name.input(),
            fields.id_number.input(),
            strict,
        );
    }
    validate_generic(body, strict)
}

/// The `Value` road of [`validate`], which every body can take.
pub(crate) fn validate_generic(body: &[u8], strict: bool) -> Result<Applicant, Vec<FieldError>> {
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => object,
        _ => {
            return Err(vec![FieldError {
                field: "body",
                message: "the body must be a JSON object",
                code: "invalid_json",
            }]);
        }
    };
    judge(
        Input::of(&object, "firstName"),
        Input::of(&object, "lastName"),
        Input::of(&object, "idNumber"),
        strict,
    )
}

/// Every field's checks, in the order the errors are listed.
fn judge(
    first_name: Input<'_>,
    last_name: Input<'_>,
    id_number: Input<'_>,
    strict: bool,
) -> Result<Applicant, Vec<FieldError>> {
    let mut errors = Vec::new();
    let first_name = check_field(first_name, "firstName", &mut errors, check_name);
    let last_name = check_field(last_name, "lastName", &mut errors, check_name);
    let id_number = check_field(id_number, "idNumber", &mut errors, |v| {
        check_id_number(v, strict)
    });
    match (first_name, last_name, id_number) {
        (Some(first_name), Some(last_name), Some(id_number)) if errors.is_empty() => {
            Ok(Applicant {
                first_name,
                last_name,
                id_number,
            })
        }
        _ => Err(errors),
    }
}

fn check_field(
    input: Input<'_>,
    field: &'static str,
    errors: &mut Vec<FieldError>,
    check: impl FnOnce(&str) -> Result<String, (&'static str, &'static str)>,
) -> Option<String> {
    let problem = match input {
        Input::Missing => ("is required", "missing"),
        Input::Text(s) => match check(s) {
            Ok(value) => return Some(value),
            Err(problem) => problem,
        },
        Input::NotAString => ("must be a string", "invalid_type"),
    };
    errors.push(FieldError {
        field,
        message: problem.0,
        code: problem.1,
    });
    None
}

/// Characters a name may hold besides letters and combining marks.
fn is_name_punctuation(c: char) -> bool {
    matches!(c, ' ' | '-' | '\'' | '\u{2019}' | '.')
}

fn check_name(raw: &str) -> Result<String, (&'static str, &'static str)> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 {
        return Err(("must not be empty", "too_short"));
    }
    if chars > MAX_NAME_CHARS {
        return Err(("must be at most 100 characters", "too_long"));
    }
    let allowed = |c: char| {
        c.is_alphabetic()
            || unicode_normalization::char::is_combining_mark(c)
            || is_name_punctuation(c)
    };
    if !name.chars().all(allowed) {
        return Err((
            "may contain only letters, combining marks, spaces, hyphens, apostrophes and periods",
            "invalid_characters",
        ));
    }
    Ok(name.to_owned())
}

fn check_id_number(id: &str, strict: bool) -> Result<String, (&'static str, &'static str)> {
    if id.len() != 13 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(("must be exactly 13 digits", "invalid_format"));
    }
    if strict {
        if !has_valid_date(id.as_bytes()) {
            return Err((
                "must start with a valid date of birth (YYMMDD)",
                "invalid_date",
            ));
        }
        if !luhn_valid(id.as_bytes()) {
            return Err(("has an invalid check digit", "invalid_checksum"));
        }
    }
    Ok(id.to_owned())
}

fn two_digits(digits: &[u8]) -> u32 {
    u32::from(digits[0] - b'0') * 10 + u32::from(digits[1] - b'0')
}

/// YYMMDD must be a real date. The century is not encoded, so 29 February is accepted whenever YY can be a
/// leap year in either the 1900s or the 2000s (YY divisible by 4; 00 is 2000).
fn has_valid_date(digits: &[u8]) -> bool {
    let (yy, mm, dd) = (
        two_digits(&digits[0..2]),
        two_digits(&digits[2..4]),
        two_digits(&digits[4..6]),
    );
    let days_in_month = match mm {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if yy.is_multiple_of(4) => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days_in_month).contains(&dd)
}

/// The Luhn checksum over all 13 digits (the last one is the check digit).
pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Bodies at the edges between the two roads: both must give the same answer.
    #[test]
    fn the_direct_read_and_the_value_walk_agree() {
        for body in [
            r#"{"firstName":"Thandi","lastName":"Nkosi","idNumber":"9001011234088"}"#,
            r#"{"firstName":"Jos\u00e9","lastName":"N\"k","idNumber":"9001011234088"}"#,
            r#"{"firstName":null,"lastName":"Nkosi","idNumber":"9001011234088"}"#,
            r#"{"firstName":5,"lastName":["x"],"idNumber":{"a":1}}"#,
            r#"{"firstName":"A","firstName":"B","lastName":"C","idNumber":"9001011234088"}"#,
            r#"{"firstName":"A","firstName":7,"lastName":"C","idNumber":"9001011234088"}"#,
            r#"{"lastName":"Nkosi"}"#,
            r#"{"firstName":"","lastName":"  ","idNumber":"123"}"#,
            r#"{"extra":{"deep":[1,2,{"x":null}]},"firstName":"A","lastName":"B","idNumber":"9001011234088"}"#,
            r#"{}"#,
            r#"[]"#,
            r#""text""#,
            r#"{"firstName":"A","lastName":"B","idNumber":"9001011234088"} trailing"#,
            r#"{"firstName":"A","lastName":"B","idNumber":"9001011234088""#,
            "",
        ] {
            for strict in [false, true] {
                assert_eq!(
                    validate(body.as_bytes(), strict),
                    validate_generic(body.as_bytes(), strict),
                    "{body}"
                );
            }
        }
    }

    /// Found by the `validation` fuzz target (docs/fuzzing.md): the direct read skipped the values of other keys without checking
    /// them as the `Value` road reads them, so a body the `Value` road refuses as JSON (a number out of range,
    /// nesting past the depth limit, a lone surrogate or bytes that are not UTF-8 in a string) was accepted.
    #[test]
    fn other_keys_are_read_as_strictly_on_both_roads() {
        let fields = br#""firstName":"A","lastName":"B","idNumber":"9001011234088""#;
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let others: [&[u8]; 7] = [
            b"1e400",
            b"-1e400",
            deep.as_bytes(),
            br#""\ud800""#,
            br#""\udc00x""#,
            b"\"\xff\"",
            br#"{"\ud800":1}"#,
        ];
        let mut differ = Vec::new();
        for other in others {
            for body in [
                [&b"{\"x\":"[..], other, b",", fields, b"}"].concat(),
                [&b"{"[..], fields, b",\"x\":", other, b"}"].concat(),
            ] {
                if validate(&body, false) != validate_generic(&body, false) {
                    differ.push(String::from_utf8_lossy(&body).into_owned());
                }
            }
        }
        // The input the fuzzer found: every field missing on one road, not JSON on the other.
        let found = b"{\"firstN!ame\":\"A\",\"firr\":\"900101\xbc1234088\"}";
        if validate(found, false) != validate_generic(found, false) {
            differ.push(String::from_utf8_lossy(found).into_owned());
        }
        assert_eq!(differ, Vec::<String>::new());
    }

    proptest! {
        /// Objects of arbitrary values under the three names and others: both roads agree.
        #[test]
        fn both_roads_agree_on_arbitrary_objects(
            fields in proptest::collection::vec(
                (
                    prop_oneof![
                        Just("firstName".to_owned()),
                        Just("lastName".to_owned()),
                        Just("idNumber".to_owned()),
                        "[a-zA-Z]{1,8}",
                    ],
                    prop_oneof![
                        Just(Value::Null),
                        any::<bool>().prop_map(Value::from),
                        any::<i64>().prop_map(Value::from),
                        "\\PC{0,20}".prop_map(Value::from),
                        "[0-9]{13}".prop_map(Value::from),
                        Just(json!({"nested": [1, "two"]})),
                    ],
                ),
                0..6,
            ),
            strict in any::<bool>(),
        ) {
            let body = format!(
                "{{{}}}",
                fields
                    .iter()
                    .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            prop_assert_eq!(
                validate(body.as_bytes(), strict),
                validate_generic(body.as_bytes(), strict),
                "{}", body
            );
        }
    }

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).expect("serialisable")
    }

    fn codes(v: Value) -> Vec<(&'static str, &'static str)> {
        match validate(&body(v), false) {
            Ok(a) => panic!("expected errors, got {a:?}"),
            Err(errors) => errors.iter().map(|e| (e.field, e.code)).collect(),
        }
    }

    #[test]
    fn a_valid_applicant_is_trimmed() {
        let a = validate(&body(json!({"firstName": "  Thandi ", "lastName": "Nkosi", "idNumber": "9001011234088", "extra": 1})), false)
            .expect("valid");
        assert_eq!(a.first_name, "Thandi");
        assert_eq!(a.id_number, "9001011234088");
    }

    #[test]
    fn names_of_any_script_with_marks_and_punctuation() {
        for name in [
            "José",
            "Jose\u{301}",
            "Zoë",
            "O'Brien",
            "D’Arcy",
            "Mary-Jane",
            "J. R. R.",
            "李",
            "Ngũgĩ",
            "Ζωή",
            "Дмитрий",
            "नमस्ते",
            "محمد",
        ] {
            let v = json!({"firstName": name, "lastName": name, "idNumber": "9001011234088"});
            assert!(
                validate(&body(v), false).is_ok(),
                "{name} should be accepted"
            );
        }
    }

    #[test]
    fn bad_names() {
        for (name, code) in [
            ("", "too_short"),
            ("   ", "too_short"),
            ("Bob1", "invalid_characters"),
            ("Bob\tSmith", "invalid_characters"),
            ("<script>", "invalid_characters"),
            ("Bob_Smith", "invalid_characters"),
        ] {
            assert_eq!(
                codes(json!({"firstName": name, "lastName": "Smith", "idNumber": "9001011234088"})),
                vec![("firstName", code)],
                "{name:?}"
            );
        }
    }

    #[test]
    fn name_length_counts_characters_not_bytes() {
        let hundred = "é".repeat(100);
        assert!(
            validate(
                &body(json!({"firstName": hundred, "lastName": "A", "idNumber": "9001011234088"})),
                false
            )
            .is_ok()
        );
        let long = "a".repeat(101);
        assert_eq!(
            codes(json!({"firstName": long, "lastName": "A", "idNumber": "9001011234088"})),
            vec![("firstName", "too_long")]
        );
    }

    #[test]
    fn id_number_format() {
        for id in [
            "900101123408",
            "90010112340888",
            "900101123408a",
            "９００１０１１２３４０８８",
            " 9001011234088",
        ] {
            assert_eq!(
                codes(json!({"firstName": "A", "lastName": "B", "idNumber": id})),
                vec![("idNumber", "invalid_format")],
                "{id:?}"
            );
        }
    }

    #[test]
    fn missing_fields_and_wrong_types_are_all_reported() {
        assert_eq!(
            codes(json!({})),
            vec![
                ("firstName", "missing"),
                ("lastName", "missing"),
                ("idNumber", "missing")
            ]
        );
        assert_eq!(
            codes(json!({"firstName": null, "lastName": 5, "idNumber": 9001011234088u64})),
            vec![
                ("firstName", "invalid_type"),
                ("lastName", "invalid_type"),
                ("idNumber", "invalid_type")
            ]
        );
    }

    #[test]
    fn non_objects_are_invalid_json() {
        for raw in [
            &b"not json"[..],
            b"[1,2]",
            b"\"str\"",
            b"",
            b"{\"a\":",
            b"\xff\xfe",
        ] {
            let errors = validate(raw, false).expect_err("invalid");
            assert_eq!(errors.len(), 1);
            assert_eq!((errors[0].field, errors[0].code), ("body", "invalid_json"));
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            validate(deep.as_bytes(), false).expect_err("too deep")[0].code,
            "invalid_json"
        );
    }

    #[test]
    fn strict_mode_checks_date_and_luhn() {
        let check = |id: &str| {
            validate(
                &body(json!({"firstName": "A", "lastName": "B", "idNumber": id})),
                true,
            )
        };
        // The well-known example fails Luhn.
        assert_eq!(
            check("9001011234088").expect_err("luhn")[0].code,
            "invalid_checksum"
        );
        assert!(check("8001015009087").is_ok());
        assert_eq!(
            check("9013011234088").expect_err("month 13")[0].code,
            "invalid_date"
        );
        assert_eq!(
            check("9002301234088").expect_err("30 Feb")[0].code,
            "invalid_date"
        );
        assert_ne!(
            check("0002291234088").map_err(|e| e[0].code),
            Err("invalid_date")
        );
        assert_eq!(
            check("0102291234088").expect_err("2001 not leap")[0].code,
            "invalid_date"
        );
        // Not strict: any 13 digits.
        assert!(
            validate(
                &body(json!({"firstName": "A", "lastName": "B", "idNumber": "9913991234088"})),
                false
            )
            .is_ok()
        );
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid(b"8001015009087"));
        assert!(!luhn_valid(b"8001015009088"));
        assert!(!luhn_valid(b"9001011234088"));
    }

    fn is_date(yy: u32, mm: u32, dd: u32) -> bool {
        has_valid_date(format!("{yy:02}{mm:02}{dd:02}").as_bytes())
    }

    #[test]
    fn the_last_day_of_every_month_is_a_date_and_the_day_after_is_not() {
        // YY 01 is no leap year in either century.
        for (mm, last) in [
            (1, 31),
            (2, 28),
            (3, 31),
            (4, 30),
            (5, 31),
            (6, 30),
            (7, 31),
            (8, 31),
            (9, 30),
            (10, 31),
            (11, 30),
            (12, 31),
        ] {
            assert!(is_date(1, mm, 1), "01-{mm}-01");
            assert!(is_date(1, mm, last), "01-{mm}-{last}");
            assert!(!is_date(1, mm, last + 1), "01-{mm}-{}", last + 1);
            assert!(!is_date(1, mm, 0), "01-{mm}-00");
        }
        for mm in [0, 13, 99] {
            assert!(!is_date(1, mm, 1), "month {mm}");
        }
    }

    #[test]
    fn february_has_29_days_when_yy_is_a_multiple_of_4_and_28_otherwise() {
        for yy in 0..100 {
            assert!(is_date(yy, 2, 28), "{yy:02}-02-28");
            assert_eq!(is_date(yy, 2, 29), yy % 4 == 0, "{yy:02}-02-29");
            assert!(!is_date(yy, 2, 30), "{yy:02}-02-30");
        }
    }

    /// The first twelve digits followed by their Luhn check digit, computed here without `luhn_valid`.
    fn with_check_digit(first12: &str) -> String {
        let sum: u32 = first12
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let d = u32::from(b - b'0');
                // Counted from the check digit, the prefix's last digit is the first one doubled.
                if i % 2 == 0 {
                    (d * 2) / 10 + (d * 2) % 10
                } else {
                    d
                }
            })
            .sum();
        format!("{first12}{}", (10 - sum % 10) % 10)
    }

    #[test]
    fn with_strict_id_numbers_30_april_passes_and_31_april_or_30_february_does_not() {
        let strict = |id: &str| {
            validate(
                &body(json!({"firstName": "A", "lastName": "B", "idNumber": id})),
                true,
            )
            .map(|a| a.id_number)
            .map_err(|e| e[0].code)
        };
        assert_eq!(with_check_digit("800101500908"), "8001015009087");
        for date in ["900430", "010228", "000229", "991231"] {
            let id = with_check_digit(&format!("{date}500908"));
            assert_eq!(strict(&id), Ok(id.clone()), "{date}");
        }
        for date in ["900431", "010229", "000230", "900631", "900931", "901131"] {
            let id = with_check_digit(&format!("{date}500908"));
            assert_eq!(strict(&id), Err("invalid_date"), "{date}");
        }
    }

    proptest! {
        /// Any twelve digits with their check digit pass the Luhn check, and every other last digit fails.
        #[test]
        fn exactly_one_check_digit_passes_luhn(first12 in "[0-9]{12}") {
            let id = with_check_digit(&first12);
            prop_assert!(luhn_valid(id.as_bytes()), "{}", id);
            for other in (b'0'..=b'9').filter(|d| *d != id.as_bytes()[12]) {
                let mut wrong = id.clone().into_bytes();
                wrong[12] = other;
                prop_assert!(!luhn_valid(&wrong), "{}", String::from_utf8_lossy(&wrong));
            }
        }
    }
}
