//! Request validation: turns a raw body into a checked [`Applicant`] or a list of per-field problems.
//!
//! The body is parsed as a generic JSON value first (serde_json bounds nesting depth), so that every field can
//! be judged on its own and a client learns about all of its mistakes in one answer.

use serde::Serialize;
use serde_json::Value;

use crate::domain::Applicant;

/// One problem with one field, as shown in an error's `details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub message: &'static str,
    pub code: &'static str,
}

const MAX_NAME_CHARS: usize = 100;

/// Validates a request body. `strict` adds the ID number's date and Luhn checks.
pub fn validate(body: &[u8], strict: bool) -> Result<Applicant, Vec<FieldError>> {
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
    let mut errors = Vec::new();
    let first_name = check_field(&object, "firstName", &mut errors, check_name);
    let last_name = check_field(&object, "lastName", &mut errors, check_name);
    let id_number = check_field(&object, "idNumber", &mut errors, |v| {
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
    object: &serde_json::Map<String, Value>,
    field: &'static str,
    errors: &mut Vec<FieldError>,
    check: impl FnOnce(&str) -> Result<String, (&'static str, &'static str)>,
) -> Option<String> {
    let problem = match object.get(field) {
        None => ("is required", "missing"),
        Some(Value::String(s)) => match check(s) {
            Ok(value) => return Some(value),
            Err(problem) => problem,
        },
        Some(_) => ("must be a string", "invalid_type"),
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
    use serde_json::json;

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
}
