//! Types and schema pieces shared by both custom resources.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// Status conditions: the standard `metav1.Condition` (type, status, reason, message,
/// lastTransitionTime, observedGeneration). Lists of them are list-maps keyed by `type`.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Most conditions a status may carry (the list is bounded so the API server can cost rules).
pub const MAX_CONDITIONS: usize = 16;

/// A DNS-1123 label: namespace and tenant names.
pub const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS-1123 subdomain: names of cluster-scoped objects (pools).
pub const DNS_SUBDOMAIN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Longest quantity string accepted ("1.5Gi" is 5; the bound keeps CEL cost estimates small).
pub const QUANTITY_MAX_LENGTH: usize = 32;

/// A Kubernetes resource quantity ("2", "500m", "4Gi", "1e3"), kept as written.
///
/// In the schema it is a string of at most [`QUANTITY_MAX_LENGTH`] characters that must parse as
/// a non-negative quantity (checked by the API server's CEL `isQuantity`/`quantity` library).
/// Deserialising also accepts a bare number, so objects written by hand in tests read back.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Quantity(String);

impl Quantity {
    /// Wraps a quantity string without checking it; see [`Quantity::value`] and
    /// [`Quantity::millis`] for parsing.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The quantity as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value in whole units, rounded up (as Kubernetes' `Value()`): bytes for memory.
    pub fn value(&self) -> Result<i128> {
        self.parse()?
            .ceil_scaled(0)
            .map_err(|reason| self.invalid(reason))
    }

    /// The value in thousandths, rounded up (as Kubernetes' `MilliValue()`): millicores for CPU.
    pub fn millis(&self) -> Result<i128> {
        self.parse()?
            .ceil_scaled(3)
            .map_err(|reason| self.invalid(reason))
    }

    fn invalid(&self, reason: &'static str) -> Error {
        Error::InvalidQuantity {
            value: self.0.clone(),
            reason,
        }
    }

    fn parse(&self) -> Result<Parsed> {
        parse_quantity(&self.0).map_err(|reason| self.invalid(reason))
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&Quantity> for k8s_openapi::apimachinery::pkg::api::resource::Quantity {
    fn from(q: &Quantity) -> Self {
        Self(q.0.clone())
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as \"2\", \"500m\" or \"4Gi\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for Quantity {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": QUANTITY_MAX_LENGTH,
            "x-kubernetes-validations": [{
                "rule": "isQuantity(self) && !quantity(self).isLessThan(quantity('0'))",
                "messageExpression": "'\"' + self + '\" is not a non-negative Kubernetes quantity (examples: \"2\", \"500m\", \"4Gi\")'",
            }],
        })
    }
}

/// A parsed quantity: `(-1)^negative * mantissa * 10^exp10 * 2^pow2`.
#[derive(Debug, PartialEq)]
struct Parsed {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    pow2: u32,
}

impl Parsed {
    /// `ceil(value * 10^scale)`.
    fn ceil_scaled(&self, scale: i32) -> Result<i128, &'static str> {
        const TOO_LARGE: &str = "too large";
        let n = self
            .mantissa
            .checked_mul(1u128.checked_shl(self.pow2).ok_or(TOO_LARGE)?)
            .ok_or(TOO_LARGE)?;
        let e = self.exp10 + scale;
        let magnitude = if e >= 0 {
            let factor = 10u128.checked_pow(e as u32).ok_or(TOO_LARGE)?;
            (n.checked_mul(factor).ok_or(TOO_LARGE)?, false)
        } else {
            match 10u128.checked_pow(e.unsigned_abs()) {
                Some(d) => (n / d, n % d != 0),
                // Dividing by more than 10^38 leaves only a fraction (or nothing).
                None => (0, n != 0),
            }
        };
        let (whole, has_fraction) = magnitude;
        let whole = i128::try_from(whole).map_err(|_| TOO_LARGE)?;
        Ok(if self.negative {
            -whole // ceil of a negative number drops the fraction
        } else {
            whole + i128::from(has_fraction)
        })
    }
}

/// Parses Kubernetes' quantity grammar: an optionally signed decimal number followed by a
/// binary-SI suffix (Ki..Ei), a decimal-SI suffix (n, u, m, k, M, G, T, P, E) or an exponent
/// (e3, E-2).
fn parse_quantity(text: &str) -> Result<Parsed, &'static str> {
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        Some(_) => (false, text),
        None => return Err("empty"),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err("no digits");
    }
    if frac_part.contains('.') {
        return Err("more than one decimal point");
    }
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 38 {
        return Err("too many digits");
    }
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| "not a number")?
    };
    let frac_len = i32::try_from(frac_part.len()).map_err(|_| "too many digits")?;
    let (suffix_exp10, pow2) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exponent = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or("unknown suffix (use Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or an exponent)")?;
            let unsigned = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err("malformed exponent");
            }
            (
                exponent
                    .parse::<i32>()
                    .map_err(|_| "exponent out of range")?,
                0,
            )
        }
    };
    let exp10 = suffix_exp10
        .checked_sub(frac_len)
        .ok_or("exponent out of range")?;
    Ok(Parsed {
        negative: negative && mantissa != 0,
        mantissa,
        exp10,
        pow2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(s: &str) -> i128 {
        Quantity::new(s).millis().unwrap()
    }

    fn value(s: &str) -> i128 {
        Quantity::new(s).value().unwrap()
    }

    #[test]
    fn cpu_quantities_in_millicores() {
        assert_eq!(millis("2"), 2000);
        assert_eq!(millis("500m"), 500);
        assert_eq!(millis("0.5"), 500);
        assert_eq!(millis(".25"), 250);
        assert_eq!(millis("1."), 1000);
        assert_eq!(millis("+3"), 3000);
        assert_eq!(millis("1e3"), 1_000_000);
        assert_eq!(millis("1E-3"), 1);
        // Below a millicore rounds up, as the API server does.
        assert_eq!(millis("100u"), 1);
        assert_eq!(millis("1n"), 1);
        assert_eq!(millis("0"), 0);
        assert_eq!(millis("-1.5"), -1500);
        assert_eq!(millis("-0.0001"), 0);
    }

    #[test]
    fn memory_quantities_in_bytes() {
        assert_eq!(value("4Gi"), 4 << 30);
        assert_eq!(value("512Mi"), 512 << 20);
        assert_eq!(value("1.5Ki"), 1536);
        assert_eq!(value("2G"), 2_000_000_000);
        assert_eq!(value("1k"), 1000);
        assert_eq!(value("1Ei"), 1 << 60);
        assert_eq!(value("1500m"), 2);
        assert_eq!(value("123"), 123);
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for bad in [
            "", "-", "Gi", "1GB", "1gi", "1.2.3", "1e", "1e+", "abc", "1 Gi", "1Gi ",
        ] {
            let err = Quantity::new(bad).value().unwrap_err();
            assert!(
                matches!(err, Error::InvalidQuantity { ref value, .. } if value == bad),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn too_large_is_an_error_not_a_wrap() {
        let err = Quantity::new("1e40").millis().unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        assert!(Quantity::new("99999999999999999999999999999999999999999")
            .value()
            .is_err());
    }

    #[test]
    fn reads_strings_and_bare_numbers() {
        let q: Quantity = serde_json::from_str("\"250m\"").unwrap();
        assert_eq!(q.as_str(), "250m");
        let q: Quantity = serde_json::from_str("4").unwrap();
        assert_eq!(q.as_str(), "4");
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"4\"");
        assert!(serde_json::from_str::<Quantity>("true").is_err());
    }

    #[test]
    fn converts_to_the_k8s_openapi_quantity() {
        let q =
            k8s_openapi::apimachinery::pkg::api::resource::Quantity::from(&Quantity::new("2Gi"));
        assert_eq!(q.0, "2Gi");
    }
}
