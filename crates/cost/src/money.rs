//! Exact decimals in files, and the arithmetic of tiered prices.
//!
//! Money is never a float. Files write every number as a string (`"2.50"`) that parses to a
//! [`Decimal`]; a bare TOML float or integer is refused so a value can never be rounded on its way
//! in. [`Schedule::charge`] implements graduated and volume tiers, free allowances and minimum
//! charges; all of it is data from the price tables.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// A [`Decimal`] that (de)serializes as a string, e.g. `"0.0037"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dec(pub Decimal);

impl Dec {
    /// The decimal.
    pub fn get(self) -> Decimal {
        self.0
    }
}

impl From<Decimal> for Dec {
    fn from(d: Decimal) -> Self {
        Dec(d)
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Dec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.normalize().to_string())
    }
}

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Dec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an exact decimal written as a string, e.g. \"2.50\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dec, E> {
                parse_decimal(v).map(Dec).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dec, E> {
                Err(E::custom(format!(
                    "write decimal values as strings (\"{v}\"), not as floats: a float may already be rounded"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dec, E> {
                Err(E::custom(format!("write decimal values as strings (\"{v}\")")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dec, E> {
                Err(E::custom(format!("write decimal values as strings (\"{v}\")")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Parses `"2.50"`, `"1500"` or `"0.0037"` exactly; scientific notation and separators are refused.
pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let t = text.trim();
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-') {
        return Err(format!(
            "`{text}` is not a plain decimal; write digits with an optional point, e.g. \"2.50\""
        ));
    }
    Decimal::from_str(t).map_err(|e| format!("`{text}` is not a decimal: {e}"))
}

/// Money for people: two decimals, or four when below one cent but not zero.
pub fn usd(amount: Decimal) -> String {
    let abs = amount.abs();
    let dp = if !abs.is_zero() && abs < Decimal::new(1, 2) {
        4
    } else {
        2
    };
    let rounded = amount.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
    let text = format!("{:.*}", dp as usize, rounded.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let sign = if rounded.is_sign_negative() && !rounded.is_zero() {
        "-"
    } else {
        ""
    };
    format!("{sign}${}.{frac}", group_digits(int))
}

/// A quantity for people: grouped integer part, at most `dp` decimals, trailing zeros dropped.
pub fn quantity(value: Decimal, dp: u32) -> String {
    let rounded = value
        .round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero)
        .normalize();
    let text = rounded.abs().to_string();
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let sign = if rounded.is_sign_negative() && !rounded.is_zero() {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{}", group_digits(int))
    } else {
        format!("{sign}{}.{frac}", group_digits(int))
    }
}

/// `1234567` → `1,234,567`.
pub fn group_digits(int: &str) -> String {
    let mut out = String::with_capacity(int.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How a tiered price applies to a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierMode {
    /// Each unit is priced by the band it falls in (like income tax brackets).
    Graduated,
    /// Every unit is priced at the band the total reaches.
    Volume,
}

/// One band: units up to `upto` (inclusive, cumulative from zero; `None` = no limit) cost
/// `unit_price` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// Upper end of the band, or `None` for the last, open band.
    pub upto: Option<Decimal>,
    /// Price per unit in this band.
    pub unit_price: Decimal,
}

/// A complete price: bands, a free allowance taken off the quantity first, and a minimum
/// charge applied whenever the quantity is above zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Graduated or volume.
    pub mode: TierMode,
    /// Bands in ascending order; the last one is open (`upto = None`).
    pub tiers: Vec<Tier>,
    /// Units free before any band applies.
    pub free: Decimal,
    /// Smallest charge for a non-zero quantity.
    pub minimum: Decimal,
}

impl Schedule {
    /// One price for every unit.
    pub fn flat(unit_price: Decimal) -> Self {
        Schedule {
            mode: TierMode::Graduated,
            tiers: vec![Tier { upto: None, unit_price }],
            free: Decimal::ZERO,
            minimum: Decimal::ZERO,
        }
    }

    /// With a free allowance.
    pub fn with_free(mut self, free: Decimal) -> Self {
        self.free = free;
        self
    }

    /// With a minimum charge.
    pub fn with_minimum(mut self, minimum: Decimal) -> Self {
        self.minimum = minimum;
        self
    }

    /// Checks bands ascend, only the last is open, and nothing is negative.
    pub fn check(&self) -> Result<(), String> {
        if self.tiers.is_empty() {
            return Err("a price needs at least one tier".into());
        }
        let mut previous = Decimal::ZERO;
        for (i, tier) in self.tiers.iter().enumerate() {
            let last = i + 1 == self.tiers.len();
            if tier.unit_price.is_sign_negative() {
                return Err(format!("tier {i}: negative unit price {}", tier.unit_price));
            }
            match (tier.upto, last) {
                (None, true) => {}
                (None, false) => return Err(format!("tier {i}: only the last tier may omit `upto`")),
                (Some(_), true) => return Err(format!("tier {i}: the last tier must omit `upto` (open band)")),
                (Some(upto), false) => {
                    if upto <= previous {
                        return Err(format!(
                            "tier {i}: `upto` {upto} must be above the previous bound {previous}"
                        ));
                    }
                    previous = upto;
                }
            }
        }
        if self.free.is_sign_negative() || self.minimum.is_sign_negative() {
            return Err("free allowance and minimum must not be negative".into());
        }
        Ok(())
    }

    /// Price of `quantity` units before allowance and minimum.
    pub fn tiered(&self, quantity: Decimal) -> Decimal {
        if quantity <= Decimal::ZERO {
            return Decimal::ZERO;
        }
        match self.mode {
            TierMode::Graduated => {
                let mut total = Decimal::ZERO;
                let mut lower = Decimal::ZERO;
                for tier in &self.tiers {
                    let upper = tier.upto.map_or(quantity, |u| u.min(quantity));
                    if upper > lower {
                        total += (upper - lower) * tier.unit_price;
                    }
                    match tier.upto {
                        Some(u) if u < quantity => lower = u,
                        _ => break,
                    }
                }
                total
            }
            TierMode::Volume => {
                let tier = self
                    .tiers
                    .iter()
                    .find(|t| t.upto.is_none_or(|u| quantity <= u))
                    .or(self.tiers.last());
                tier.map_or(Decimal::ZERO, |t| quantity * t.unit_price)
            }
        }
    }

    /// The charge for `quantity`: allowance first, then bands, then the minimum if any unit was
    /// used at all.
    pub fn charge(&self, quantity: Decimal) -> Decimal {
        if quantity <= Decimal::ZERO {
            return Decimal::ZERO;
        }
        let billable = (quantity - self.free).max(Decimal::ZERO);
        self.tiered(billable).max(self.minimum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        parse_decimal(s).unwrap()
    }

    #[test]
    fn formats_money_and_quantities() {
        assert_eq!(usd(d("1234.5")), "$1,234.50");
        assert_eq!(usd(d("0.004")), "$0.0040");
        assert_eq!(usd(d("0")), "$0.00");
        assert_eq!(usd(d("-3.125")), "-$3.13");
        assert_eq!(quantity(d("1234567.891"), 2), "1,234,567.89");
        assert_eq!(quantity(d("12.000"), 2), "12");
    }

    #[test]
    fn refuses_floats_and_sloppy_text() {
        assert!(parse_decimal("1e3").is_err());
        assert!(parse_decimal("1,000").is_err());
        assert!(toml::from_str::<std::collections::BTreeMap<String, Dec>>("v = 2.5").is_err());
        assert!(toml::from_str::<std::collections::BTreeMap<String, Dec>>("v = 2").is_err());
        let ok: std::collections::BTreeMap<String, Dec> = toml::from_str("v = \"2.50\"").unwrap();
        assert_eq!(ok["v"].0, d("2.50"));
    }

    #[test]
    fn graduated_and_volume_bands() {
        let tiers = vec![
            Tier {
                upto: Some(d("100")),
                unit_price: d("1.0"),
            },
            Tier {
                upto: None,
                unit_price: d("0.5"),
            },
        ];
        let graduated = Schedule {
            mode: TierMode::Graduated,
            tiers: tiers.clone(),
            free: Decimal::ZERO,
            minimum: Decimal::ZERO,
        };
        let volume = Schedule {
            mode: TierMode::Volume,
            ..graduated.clone()
        };
        assert_eq!(graduated.tiered(d("150")), d("125"));
        assert_eq!(volume.tiered(d("150")), d("75"));
        assert_eq!(volume.tiered(d("100")), d("100"));
        let with = graduated.clone().with_free(d("50")).with_minimum(d("5"));
        assert_eq!(with.charge(d("40")), d("5"));
        assert_eq!(with.charge(d("0")), d("0"));
        assert_eq!(with.charge(d("200")), d("125"));
    }
}
