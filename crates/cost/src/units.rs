//! The closed list of units a price-table row may use.
//!
//! A unit names both the quantity and, where it matters, decimal versus binary bytes: `GB` is
//! 10^9 bytes, `GiB` 2^30. The estimator asks for a row *with* the unit it expects, so a table
//! that changes a unit (say from `USD/GB` to `USD/GiB`) fails loudly instead of being misread.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! units {
    ($($variant:ident => $text:literal, $meaning:literal;)*) => {
        /// A unit from the closed list; see [`Unit::ALL`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Unit {
            $(#[doc = $meaning] $variant,)*
        }

        impl Unit {
            /// Every unit with its spelling in files and its meaning.
            pub const ALL: &'static [(Unit, &'static str, &'static str)] = &[
                $((Unit::$variant, $text, $meaning),)*
            ];

            /// Spelling in files.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Unit::$variant => $text,)*
                }
            }
        }
    };
}

units! {
    UsdPerCredit => "USD/credit", "dollars per warehouse or platform credit";
    UsdPerGb => "USD/GB", "dollars per 10^9 bytes";
    UsdPerGib => "USD/GiB", "dollars per 2^30 bytes";
    UsdPerTib => "USD/TiB", "dollars per 2^40 bytes";
    UsdPerGbMonth => "USD/GB-month", "dollars per 10^9 bytes stored for a month";
    UsdPerGibMonth => "USD/GiB-month", "dollars per 2^30 bytes stored for a month";
    UsdPerTbMonth => "USD/TB-month", "dollars per 10^12 bytes stored for a month";
    UsdPer1000Requests => "USD/1000-requests", "dollars per thousand API requests";
    UsdPerMonth => "USD/month", "a fixed monthly fee";
    UsdPerConnectionMonth => "USD/connection-month", "a fixed fee per connection per month";
    UsdPerMillionMar => "USD/million-MAR", "dollars per million monthly active rows";
    UsdPerMillionRows => "USD/million-rows", "dollars per million rows";
    UsdPerHour => "USD/hour", "dollars per hour of a machine";
    CreditPerHour => "credit/hour", "credits per hour of running";
    CreditPerGb => "credit/GB", "credits per 10^9 bytes";
    CreditPerMillionRows => "credit/million-rows", "credits per million rows";
    CreditPer1000Files => "credit/1000-files", "credits per thousand files";
    CreditPerMonth => "credit/month", "credits per month (e.g. included in a plan)";
    GbPerMonth => "GB/month", "10^9 bytes per month (e.g. a free allowance)";
    GibPerMonth => "GiB/month", "2^30 bytes per month (e.g. a free allowance)";
    TibPerMonth => "TiB/month", "2^40 bytes per month (e.g. a free allowance)";
    MarPerMonth => "MAR/month", "monthly active rows per month (e.g. a free allowance)";
    JobPerTableDay => "job/table-day", "jobs per table per day (a quota)";
    JobPerProjectDay => "job/project-day", "jobs per project per day (a quota)";
    TbPerJob => "TB/job", "10^12 bytes per job (a limit)";
    MbPerSecond => "MB/second", "10^6 bytes per second (a throughput)";
    RowPerSecond => "row/second", "rows per second (a throughput)";
    Second => "second", "a duration in seconds (e.g. a minimum billed time)";
    Day => "day", "a duration in days (e.g. a free period)";
    Ratio => "ratio", "a dimensionless factor";
}

impl Unit {
    /// Parses a spelling from [`Unit::ALL`], or explains which spellings exist.
    pub fn parse(text: &str) -> Result<Self, String> {
        Unit::ALL
            .iter()
            .find(|(_, t, _)| *t == text)
            .map(|(u, _, _)| *u)
            .ok_or_else(|| {
                let known: Vec<&str> = Unit::ALL.iter().map(|(_, t, _)| *t).collect();
                format!("unknown unit `{text}`; known units: {}", known.join(", "))
            })
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Unit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Unit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Unit::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_round_trips_and_unknown_ones_are_listed() {
        for (unit, text, _) in Unit::ALL {
            assert_eq!(Unit::parse(text), Ok(*unit));
        }
        let err = Unit::parse("USD/gigabyte").unwrap_err();
        assert!(
            err.contains("unknown unit `USD/gigabyte`") && err.contains("USD/GB"),
            "{err}"
        );
    }
}
