//! Costs per option, table and month, from a profile, the price tables and the cost config.
//!
//! Every charge line names the price rows it used; the report collects them (with their
//! validity and confidence) and flags unconfirmed ones. A price that is missing on the `--as-of`
//! date leaves the line unpriced and the option's total marked incomplete, never guessed.
//! Formulas are in `docs/cost.md#formulas`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::config::{AirbyteSourceType, CostConfig, OptionId, StageKind, StorageBilling, SyncMode};
use crate::error::{CostError, Result};
use crate::mar::{MONTH_DAYS, SteadyMonth, steady_month};
use crate::money::{Dec, Schedule, quantity, usd};
use crate::prices::{Citation, Confidence, PriceBook};
use crate::profile::{Bound, Measured, Profile, TableProfile};
use crate::units::Unit;

/// Which month a line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// The month the initial load (backfill) runs in.
    Backfill,
    /// A later month of incremental syncs.
    Steady,
}

impl Period {
    /// Both, in report order.
    pub const BOTH: [Period; 2] = [Period::Backfill, Period::Steady];

    /// For people.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Backfill => "backfill month",
            Period::Steady => "steady month",
        }
    }
}

/// A charge (money, possibly unknown) or a usage figure (never summed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// Money; `cost = None` when a price is missing.
    Charge,
    /// A quantity shown for understanding (MAR per table, quota use).
    Usage,
}

/// One line of an option's estimate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// Backfill or steady month.
    pub period: Period,
    /// Table, or `None` for connection/account-level lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Charge or usage.
    pub kind: LineKind,
    /// What is counted or charged.
    pub item: String,
    /// How much.
    pub quantity: Dec,
    /// Of what.
    pub unit: String,
    /// Dollars; `None` when a price is missing (charges) or for usage lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<Dec>,
    /// How far the quantity (and so the cost) can be trusted.
    pub bound: Bound,
    /// Price rows used.
    pub cites: Vec<String>,
    /// Caveat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An option's total for one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Total {
    /// Sum of the priced charge lines.
    pub cost: Dec,
    /// Whether every charge line had a price (otherwise `cost` is a lower bound).
    pub complete: bool,
    /// Combined bound of the charge lines.
    pub bound: Bound,
}

/// One compared option (or a storage group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionReport {
    /// Stable id.
    pub id: String,
    /// For people.
    pub title: String,
    /// Backfill month total.
    pub backfill: Total,
    /// Steady month total.
    pub steady: Total,
    /// Lines.
    pub lines: Vec<Line>,
    /// What the option leaves out.
    pub notes: Vec<String>,
}

/// A quota and how much of it a plan uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaUse {
    /// Option it belongs to.
    pub option: String,
    /// Table.
    pub table: String,
    /// Month.
    pub period: Period,
    /// What is limited.
    pub what: String,
    /// Use.
    pub used: Dec,
    /// Limit.
    pub limit: Dec,
    /// Unit of both.
    pub unit: String,
    /// Use as a percentage of the limit.
    pub percent: Dec,
    /// Price row of the limit.
    pub cites: Vec<String>,
}

/// Per-table facts the estimates rest on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableSummary {
    /// Table.
    pub name: String,
    /// Rows the backfill loads.
    pub rows: Measured,
    /// Primary key columns (empty: keyless).
    pub primary_key: Vec<String>,
    /// Bytes per row as zstd Parquet.
    pub parquet_bytes_per_row: Dec,
    /// Uncompressed.
    pub logical_bytes_per_row: Dec,
    /// Airbyte JSON.
    pub json_bytes_per_row: Dec,
    /// Activity window.
    pub window: String,
    /// Where the activity came from.
    pub activity_method: String,
    /// Steady-month numbers.
    pub steady: SteadyMonth,
    /// Billable MAR in the backfill month (historical sync and free period excluded).
    pub backfill_mar: u64,
    /// Caveats from the profile.
    pub notes: Vec<String>,
    /// For an API source: the requests the backfill takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<crate::profile::ApiRequests>,
}

/// The whole estimate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Job.
    pub job: String,
    /// Price date.
    pub as_of: String,
    /// When the profile was taken.
    pub profile_taken_at: String,
    /// Spec fingerprint of the profile.
    pub spec_fingerprint: String,
    /// Tables.
    pub tables: Vec<TableSummary>,
    /// Loading options compared.
    pub options: Vec<OptionReport>,
    /// Destination storage, the same whichever option loads it.
    pub storage: Vec<OptionReport>,
    /// Quota use.
    pub quotas: Vec<QuotaUse>,
    /// Prices missing on the `as_of` date.
    pub missing: Vec<String>,
    /// Unconfirmed rows used (flagged; `--strict` refuses them).
    pub unconfirmed: Vec<String>,
    /// Assumptions the whole estimate makes.
    pub assumptions: Vec<String>,
    /// Every price row used.
    pub citations: Vec<Citation>,
}

/// Cost figures are rounded to millionths of a dollar, quantities to six decimals.
fn money(d: Decimal) -> Dec {
    Dec(d
        .round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero)
        .normalize())
}

fn qty(d: Decimal) -> Dec {
    Dec(d
        .round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero)
        .normalize())
}

fn dec(n: u64) -> Decimal {
    Decimal::from(n)
}

const GB: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
const TB: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0); // 10^12
const GIB: Decimal = Decimal::from_parts(1 << 30, 0, 0, false, 0);
const TIB: Decimal = Decimal::from_parts(0, 256, 0, false, 0); // 2^40
const MILLION: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);
const HOURS_PER_MONTH: Decimal = Decimal::from_parts(720, 0, 0, false, 0);

/// Looks prices up on one date and remembers every row used and every row missing.
struct Prices<'a> {
    book: &'a PriceBook,
    as_of: NaiveDate,
    used: BTreeMap<String, Citation>,
    missing: BTreeSet<String>,
}

impl Prices<'_> {
    /// The value of `id` on the date, checked to be in `unit`.
    fn value(&mut self, id: &str, unit: Unit) -> Result<Option<Decimal>> {
        Ok(self.row_schedule(id, unit, false)?.map(|s| s.tiers[0].unit_price))
    }

    /// The schedule of `id` (flat or tiered).
    fn schedule(&mut self, id: &str, unit: Unit) -> Result<Option<Schedule>> {
        self.row_schedule(id, unit, true)
    }

    fn row_schedule(&mut self, id: &str, unit: Unit, tiers_ok: bool) -> Result<Option<Schedule>> {
        let Some(row) = self.book.lookup(id, self.as_of) else {
            let why = if self.book.knows(id) {
                format!(
                    "`{id}`: no row valid on {} (known periods: {})",
                    self.as_of,
                    self.book.periods(id).join(", ")
                )
            } else {
                format!("`{id}`: no such row in the price tables or overlays")
            };
            self.missing.insert(why);
            return Ok(None);
        };
        if row.unit != unit {
            return Err(CostError::invalid(
                &row.file,
                format!("row[{id}].unit"),
                format!("the estimator needs this row in {unit}, the table says {}", row.unit),
            ));
        }
        if !tiers_ok && row.value().is_none() {
            return Err(CostError::invalid(
                &row.file,
                format!("row[{id}].tiers"),
                "the estimator needs a single value here, not tiers",
            ));
        }
        self.used.insert(id.to_string(), row.citation());
        Ok(Some(row.schedule()))
    }
}

/// Accumulates an option's lines.
struct OptionBuilder {
    id: OptionId,
    title: String,
    lines: Vec<Line>,
    notes: Vec<String>,
}

#[derive(Default)]
struct LineSpec<'a> {
    table: Option<&'a str>,
    note: Option<String>,
}

impl OptionBuilder {
    fn new(id: OptionId, title: String) -> Self {
        OptionBuilder {
            id,
            title,
            lines: Vec::new(),
            notes: Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn charge(
        &mut self,
        period: Period,
        item: impl Into<String>,
        quantity: Decimal,
        unit: &str,
        cost: Option<Decimal>,
        bound: Bound,
        cites: &[&str],
        extra: LineSpec<'_>,
    ) {
        self.lines.push(Line {
            period,
            table: extra.table.map(str::to_string),
            kind: LineKind::Charge,
            item: item.into(),
            quantity: qty(quantity),
            unit: unit.to_string(),
            cost: cost.map(money),
            bound,
            cites: cites.iter().map(|c| c.to_string()).collect(),
            note: extra.note,
        });
    }

    fn usage(
        &mut self,
        period: Period,
        table: Option<&str>,
        item: impl Into<String>,
        quantity: Decimal,
        unit: &str,
        bound: Bound,
    ) {
        self.lines.push(Line {
            period,
            table: table.map(str::to_string),
            kind: LineKind::Usage,
            item: item.into(),
            quantity: qty(quantity),
            unit: unit.to_string(),
            cost: None,
            bound,
            cites: Vec::new(),
            note: None,
        });
    }

    fn total(&self, period: Period) -> Total {
        let mut cost = Decimal::ZERO;
        let mut complete = true;
        let mut bound = Bound::Exact;
        for l in self
            .lines
            .iter()
            .filter(|l| l.period == period && l.kind == LineKind::Charge)
        {
            match l.cost {
                Some(c) => cost += c.0,
                None => complete = false,
            }
            bound = bound.combine(l.bound);
        }
        if !complete {
            bound = bound.combine(Bound::LowerBound);
        }
        Total {
            cost: money(cost),
            complete,
            bound,
        }
    }

    fn finish(self) -> OptionReport {
        OptionReport {
            id: self.id.as_str().to_string(),
            title: self.title.clone(),
            backfill: self.total(Period::Backfill),
            steady: self.total(Period::Steady),
            lines: self.lines,
            notes: self.notes,
        }
    }
}

/// Per-table quantities every option uses.
struct TableFacts<'a> {
    t: &'a TableProfile,
    rows: Decimal,
    rows_bound: Bound,
    parquet: Decimal,
    logical: Decimal,
    json: Decimal,
    steady: SteadyMonth,
}

impl TableFacts<'_> {
    fn name(&self) -> Option<&str> {
        Some(self.t.name.as_str())
    }
    fn records(&self) -> Decimal {
        dec(self.steady.records)
    }
}

/// Inputs of [`estimate`].
pub struct EstimateInput<'a> {
    /// The profile.
    pub profile: &'a Profile,
    /// Prices (tables plus overlays).
    pub book: &'a PriceBook,
    /// Cost config.
    pub config: &'a CostConfig,
    /// Price date.
    pub as_of: NaiveDate,
    /// Refuse unconfirmed rows.
    pub strict: bool,
}

/// Computes the report.
pub fn estimate(input: &EstimateInput<'_>) -> Result<Report> {
    let config = input.config;
    let mut prices = Prices {
        book: input.book,
        as_of: input.as_of,
        used: BTreeMap::new(),
        missing: BTreeSet::new(),
    };
    let keyless_factor = prices
        .value("fivetran.keyless_mar_per_changed_row", Unit::Ratio)?
        .unwrap_or(Decimal::TWO);
    let facts: Vec<TableFacts<'_>> = input
        .profile
        .tables
        .iter()
        .map(|t| TableFacts {
            t,
            rows: dec(t.rows.value),
            rows_bound: t.rows.bound,
            parquet: t.bytes_per_row.parquet_zstd.0,
            logical: t.bytes_per_row.logical.0,
            json: t.bytes_per_row.airbyte_json.0,
            steady: steady_month(t, Dec(keyless_factor)),
        })
        .collect();

    let syncs_per_month = Decimal::from(config.plan.syncs_per_day) * Decimal::from(MONTH_DAYS);
    let compute = backhaul_compute(&facts, config, &mut prices)?;
    let mut options = Vec::new();
    let mut quotas = Vec::new();
    let mut backfill_mar = BTreeMap::new();
    for id in OptionId::ALL {
        if !config.plan.options.contains(&id) {
            continue;
        }
        let report = match id {
            OptionId::Fivetran => fivetran(&facts, config, &mut prices, &mut backfill_mar)?,
            OptionId::Airbyte => airbyte(&facts, config, &mut prices, syncs_per_month)?,
            OptionId::SnowflakeCopy | OptionId::SnowflakeSnowpipe => {
                let mut b = snowflake(id, &facts, config, &mut prices, syncs_per_month)?;
                staging(
                    &mut b,
                    &facts,
                    config,
                    &mut prices,
                    syncs_per_month,
                    config.snowflake.stage,
                )?;
                add_compute(&mut b, &compute);
                b.finish()
            }
            OptionId::BigqueryLoad | OptionId::BigqueryWriteApi => {
                let mut b = bigquery(id, &facts, config, &mut prices, syncs_per_month, &compute, &mut quotas)?;
                if id == OptionId::BigqueryLoad {
                    staging(&mut b, &facts, config, &mut prices, syncs_per_month, StageKind::Gcs)?;
                }
                add_compute(&mut b, &compute);
                b.finish()
            }
        };
        options.push(report);
    }
    let mut storage = Vec::new();
    let wants = |ids: &[OptionId]| ids.iter().any(|i| config.plan.options.contains(i));
    if wants(&[OptionId::SnowflakeCopy, OptionId::SnowflakeSnowpipe]) {
        storage.push(snowflake_storage(&facts, config, &mut prices)?);
    }
    if wants(&[OptionId::BigqueryLoad, OptionId::BigqueryWriteApi]) {
        storage.push(bigquery_storage(&facts, config, &mut prices)?);
    }

    let unconfirmed: Vec<String> = prices
        .used
        .values()
        .filter(|c| c.confidence == Confidence::Unconfirmed)
        .map(|c| format!("{} (from {})", c.id, c.effective_from))
        .collect();
    if input.strict && !unconfirmed.is_empty() {
        return Err(CostError::Unconfirmed { rows: unconfirmed });
    }
    let tables = facts
        .iter()
        .map(|f| {
            let mut notes = f.t.activity.notes.clone();
            notes.extend(f.steady.notes.iter().cloned());
            TableSummary {
                name: f.t.name.clone(),
                rows: f.t.rows.clone(),
                primary_key: f.t.primary_key.clone(),
                parquet_bytes_per_row: f.t.bytes_per_row.parquet_zstd,
                logical_bytes_per_row: f.t.bytes_per_row.logical,
                json_bytes_per_row: f.t.bytes_per_row.airbyte_json,
                window: format!(
                    "{} .. {} ({} days)",
                    f.t.activity.window_from, f.t.activity.window_to, f.t.activity.window_days
                ),
                activity_method: format!("{:?}", f.t.activity.method).to_lowercase(),
                steady: f.steady.clone(),
                backfill_mar: backfill_mar.get(&f.t.name).copied().unwrap_or(0),
                notes,
                api: f.t.api.clone(),
            }
        })
        .collect();
    let assumptions = vec![
        format!("a month is {MONTH_DAYS} days; the steady state syncs {} times a day", config.plan.syncs_per_day),
        "the backfill starts on the 1st of its month and its historical sync ends within a day".into(),
        "bytes per row come from a sample encoded in small files; full-size files compress somewhat better".into(),
        "logical size (BigQuery data-type sizes) stands in for uncompressed warehouse bytes and COPY input; zstd Parquet size for compressed storage".into(),
    ];
    Ok(Report {
        job: input.profile.job.clone(),
        as_of: input.as_of.to_string(),
        profile_taken_at: input.profile.taken_at.clone(),
        spec_fingerprint: input.profile.spec_fingerprint.clone(),
        tables,
        options,
        storage,
        quotas,
        missing: prices.missing.into_iter().collect(),
        unconfirmed,
        assumptions,
        citations: prices.used.into_values().collect(),
    })
}

fn fivetran(
    facts: &[TableFacts<'_>],
    config: &CostConfig,
    prices: &mut Prices<'_>,
    backfill_mar: &mut BTreeMap<String, u64>,
) -> Result<OptionReport> {
    let plan = config.fivetran.plan.as_str();
    let mut b = OptionBuilder::new(OptionId::Fivetran, format!("Fivetran ({plan} plan)"));
    let free_share = prices.value("fivetran.historical_sync_free_share", Unit::Ratio)?;
    let free_days = prices.value("fivetran.new_connection_free_days", Unit::Day)?;
    let billable_days = free_days.map(|d| (Decimal::from(MONTH_DAYS) - d - Decimal::ONE).max(Decimal::ZERO));
    let month = Decimal::from(MONTH_DAYS);
    let mut connection = [(Decimal::ZERO, Bound::Exact), (Decimal::ZERO, Bound::Exact)];
    for f in facts {
        let mar = dec(f.steady.mar);
        // Backfill month: the historical sync is free (share), then the new connection's free
        // period; the rest of the month is billed like a steady month, pro rata.
        let historical_billable = f.rows * (Decimal::ONE - free_share.unwrap_or(Decimal::ZERO));
        b.usage(
            Period::Backfill,
            f.name(),
            format!("historical sync of {} rows, billable part", quantity(f.rows, 0)),
            historical_billable,
            "MAR",
            f.rows_bound,
        );
        let line = b.lines.last_mut().expect("pushed");
        line.cites = vec!["fivetran.historical_sync_free_share".into()];
        line.note = Some(match free_share {
            Some(s) if s == Decimal::ONE => "initial syncs are free".into(),
            Some(_) => "part of the initial sync is billed".into(),
            None => "no rule for initial syncs on this date: billed as MAR".into(),
        });
        let incremental = match billable_days {
            Some(days) => mar * days / month,
            None => mar,
        };
        let backfill_total = historical_billable + incremental;
        backfill_mar.insert(
            f.t.name.clone(),
            u64::try_from(backfill_total.round()).unwrap_or(u64::MAX),
        );
        b.usage(
            Period::Backfill,
            f.name(),
            match billable_days {
                Some(days) => format!(
                    "incremental MAR after the {}-day free period: {} of {MONTH_DAYS} days",
                    free_days.unwrap_or_default(),
                    days
                ),
                None => "incremental MAR (no free-period rule on this date)".into(),
            },
            incremental,
            "MAR",
            f.steady.mar_bound,
        );
        b.lines.last_mut().expect("pushed").cites = vec!["fivetran.new_connection_free_days".into()];
        b.usage(
            Period::Steady,
            f.name(),
            "distinct keys touched",
            mar,
            "MAR",
            f.steady.mar_bound,
        );
        for (i, q) in [(0, backfill_total), (1, mar)] {
            connection[i].0 += q;
            connection[i].1 = connection[i].1.combine(if i == 0 {
                f.steady.mar_bound.combine(f.rows_bound)
            } else {
                f.steady.mar_bound
            });
        }
    }
    let rate_id = format!("fivetran.mar.{plan}");
    let minimum = prices.value("fivetran.connection_minimum", Unit::UsdPerConnectionMonth)?;
    for (i, period) in Period::BOTH.into_iter().enumerate() {
        let (mar, bound) = connection[i];
        if mar.is_zero() {
            b.charge(
                period,
                "connection: no billable MAR",
                mar,
                "MAR",
                Some(Decimal::ZERO),
                bound,
                &[],
                LineSpec::default(),
            );
            continue;
        }
        if plan == "free" {
            let allowance = prices.value("fivetran.free_plan_mar", Unit::MarPerMonth)?;
            let (cost, note) = match allowance {
                Some(a) if mar <= a => (Some(Decimal::ZERO), None),
                Some(a) => (
                    None,
                    Some(format!(
                        "above the free plan's {} MAR: choose a paid plan",
                        quantity(a, 0)
                    )),
                ),
                None => (None, None),
            };
            b.charge(
                period,
                "connection MAR on the free plan",
                mar,
                "MAR",
                cost,
                bound,
                &["fivetran.free_plan_mar"],
                LineSpec { table: None, note },
            );
            continue;
        }
        let rate = if prices.book.knows(&rate_id) {
            prices.schedule(&rate_id, Unit::UsdPerMillionMar)?
        } else {
            None
        };
        let minimum_cite = if minimum.is_some() {
            vec!["fivetran.connection_minimum"]
        } else {
            vec![]
        };
        match rate {
            Some(schedule) => {
                let schedule = schedule.with_minimum(minimum.unwrap_or(Decimal::ZERO));
                let cost = schedule.charge(mar / MILLION);
                let mut cites = vec![rate_id.as_str()];
                cites.extend(minimum_cite);
                b.charge(
                    period,
                    "connection MAR at the plan rate (per-connection tiers)",
                    mar,
                    "MAR",
                    Some(cost),
                    bound,
                    &cites,
                    LineSpec::default(),
                );
            }
            None => {
                if let Some(min) = minimum {
                    b.charge(
                        period,
                        "connection minimum charge",
                        Decimal::ONE,
                        "connection",
                        Some(min),
                        Bound::LowerBound,
                        &minimum_cite,
                        LineSpec::default(),
                    );
                }
                b.charge(
                    period,
                    "connection MAR at the plan rate",
                    mar,
                    "MAR",
                    None,
                    bound,
                    &[],
                    LineSpec {
                        table: None,
                        note: Some(format!(
                            "Fivetran publishes no per-MAR rate: add `{rate_id}` (USD/million-MAR) to an --overlay"
                        )),
                    },
                );
                prices.missing.insert(format!(
                    "`{rate_id}`: Fivetran publishes no per-MAR rate table; put your contract rate (USD/million-MAR) in an --overlay"
                ));
            }
        }
    }
    b.notes.push(
        "the destination warehouse's compute for Fivetran's merges is billed by the warehouse and not included".into(),
    );
    Ok(b.finish())
}

fn airbyte(
    facts: &[TableFacts<'_>],
    config: &CostConfig,
    prices: &mut Prices<'_>,
    syncs_per_month: Decimal,
) -> Result<OptionReport> {
    let a = &config.airbyte;
    let source_type = match a.source_type {
        AirbyteSourceType::Database => "database source",
        AirbyteSourceType::File => "file source",
        AirbyteSourceType::Api => "API source",
    };
    let mode = match a.sync_mode {
        SyncMode::Incremental => "incremental",
        SyncMode::FullRefresh => "full refresh",
    };
    let mut b = OptionBuilder::new(
        OptionId::Airbyte,
        format!("Airbyte Cloud ({} plan, {source_type}, {mode})", a.plan),
    );
    let price_id = format!("airbyte.credit_price.{}", a.plan);
    let credit_price = prices.value(&price_id, Unit::UsdPerCredit)?;
    let by_rows = a.source_type == AirbyteSourceType::Api;
    let rate_id = if by_rows {
        "airbyte.credits.api_million_rows"
    } else {
        "airbyte.credits.database_gb"
    };
    let rate = prices.value(
        rate_id,
        if by_rows {
            Unit::CreditPerMillionRows
        } else {
            Unit::CreditPerGb
        },
    )?;
    let mut credits_total = [Decimal::ZERO, Decimal::ZERO];
    for f in facts {
        for (i, period) in Period::BOTH.into_iter().enumerate() {
            let (rows, bound, what) = match (a.sync_mode, period) {
                (SyncMode::FullRefresh, _) => (
                    f.rows * syncs_per_month,
                    f.rows_bound,
                    format!("full refresh: {} rows × {} syncs", quantity(f.rows, 0), syncs_per_month),
                ),
                (SyncMode::Incremental, Period::Backfill) => (
                    f.rows + f.records(),
                    f.rows_bound.combine(f.steady.records_bound),
                    format!("initial sync of {} rows + a month of changes", quantity(f.rows, 0)),
                ),
                (SyncMode::Incremental, Period::Steady) => (
                    f.records(),
                    f.steady.records_bound,
                    "records changed in a month".to_string(),
                ),
            };
            let (amount, unit) = if by_rows {
                (rows / MILLION, "million rows")
            } else {
                (rows * f.json / GB, "GB serialized")
            };
            let credits = rate.map(|r| amount * r);
            if let Some(c) = credits {
                credits_total[i] += c;
            }
            b.charge(
                period,
                match credits {
                    Some(c) => format!("{what} → {} credits", quantity(c, 4)),
                    None => what,
                },
                amount,
                unit,
                credits.zip(credit_price).map(|(c, p)| c * p),
                bound,
                &[rate_id, price_id.as_str()],
                LineSpec {
                    table: f.name(),
                    note: (!by_rows).then(|| format!("{} B of Airbyte-protocol JSON per row", f.json.normalize())),
                },
            );
        }
    }
    let fee_id = format!("airbyte.base_fee.{}", a.plan);
    let included_id = format!("airbyte.included_credits.{}", a.plan);
    let fee = prices.value(&fee_id, Unit::UsdPerMonth)?;
    let included = prices.value(&included_id, Unit::CreditPerMonth)?;
    for (i, period) in Period::BOTH.into_iter().enumerate() {
        b.charge(
            period,
            "plan fee",
            Decimal::ONE,
            "month",
            fee,
            Bound::Exact,
            &[&fee_id],
            LineSpec::default(),
        );
        if let (Some(inc), Some(p)) = (included, credit_price) {
            let used = inc.min(credits_total[i]);
            b.charge(
                period,
                format!("credits included in the plan fee ({} a month)", quantity(inc, 2)),
                used,
                "credits",
                Some(-(used * p)),
                Bound::Exact,
                &[&included_id, &price_id],
                LineSpec::default(),
            );
        }
    }
    b.notes
        .push("the destination warehouse's compute for Airbyte's typing and deduplication is not included".into());
    Ok(b.finish())
}

fn credit_price_id(config: &CostConfig) -> String {
    format!(
        "snowflake.credit.{}.{}",
        config.snowflake.edition, config.snowflake.region
    )
}

fn snowflake(
    id: OptionId,
    facts: &[TableFacts<'_>],
    config: &CostConfig,
    prices: &mut Prices<'_>,
    syncs_per_month: Decimal,
) -> Result<OptionBuilder> {
    let size = config.snowflake.warehouse.as_str();
    let price_id = credit_price_id(config);
    let credit_price = prices.value(&price_id, Unit::UsdPerCredit)?;
    if id == OptionId::SnowflakeSnowpipe {
        let mut b = OptionBuilder::new(id, "backhaul → Snowpipe (serverless, per GB)".into());
        let rate_id = "snowflake.snowpipe.credits_per_gb";
        let rate = prices.value(rate_id, Unit::CreditPerGb)?;
        for f in facts {
            for period in Period::BOTH {
                let (rows, bound) = match period {
                    Period::Backfill => (f.rows, f.rows_bound),
                    Period::Steady => (f.records(), f.steady.records_bound),
                };
                let gb = rows * f.parquet / GB;
                let credits = rate.map(|r| gb * r);
                b.charge(
                    period,
                    format!(
                        "{} rows as zstd Parquet{}",
                        quantity(rows, 0),
                        credits.map_or(String::new(), |c| format!(" → {} credits", quantity(c, 4)))
                    ),
                    gb,
                    "GB",
                    credits.zip(credit_price).map(|(c, p)| c * p),
                    bound,
                    &[rate_id, &price_id],
                    LineSpec {
                        table: f.name(),
                        note: Some("Parquet is billed on file size".into()),
                    },
                );
            }
        }
        return Ok(b);
    }
    let stage = match config.snowflake.stage {
        StageKind::S3 => "S3 stage",
        StageKind::Gcs => "GCS stage",
        StageKind::Internal => "internal stage",
    };
    let mut b = OptionBuilder::new(
        id,
        format!("backhaul → Snowflake COPY ({} warehouse, {stage})", size.to_uppercase()),
    );
    let cph_id = format!("snowflake.warehouse.credits_per_hour.{size}");
    let tp_id = format!("snowflake.copy.throughput.parquet.{size}");
    let min_id = "snowflake.warehouse.minimum_billed_seconds";
    let cph = prices.value(&cph_id, Unit::CreditPerHour)?;
    let throughput = prices.value(&tp_id, Unit::MbPerSecond)?;
    let minimum = prices.value(min_id, Unit::Second)?.unwrap_or(Decimal::ZERO);
    let Some(tp) = throughput.filter(|t| !t.is_zero()) else {
        b.notes.push(format!(
            "no COPY throughput benchmark `{tp_id}`: warehouse time not estimated"
        ));
        return Ok(b);
    };
    // One warehouse loads every table: the backfill resumes it once, each steady sync once,
    // and each resume bills at least the minimum.
    for period in Period::BOTH {
        let resumes = match period {
            Period::Backfill => Decimal::ONE,
            Period::Steady => syncs_per_month,
        };
        let mut seconds = Decimal::ZERO;
        let mut bound = Bound::Exact;
        for f in facts {
            let (rows, rows_bound) = match period {
                Period::Backfill => (f.rows, f.rows_bound),
                Period::Steady => (f.records(), f.steady.records_bound),
            };
            let bytes = rows * f.logical;
            let work = bytes / (tp * MILLION);
            seconds += work;
            bound = bound.combine(rows_bound);
            b.usage(
                period,
                f.name(),
                format!(
                    "COPY {} GB (logical) at {} MB/s",
                    quantity(bytes / GB, 3),
                    quantity(tp, 0)
                ),
                work,
                "warehouse-seconds",
                rows_bound,
            );
            let line = b.lines.last_mut().expect("pushed");
            line.cites = vec![tp_id.clone()];
            if period == Period::Steady && f.steady.mutates {
                line.note = Some("the MERGE of updates and deletes runs on the warehouse too: not modelled".into());
            }
        }
        let billed = (seconds / resumes).max(minimum) * resumes;
        let credits = cph.map(|c| billed * c / Decimal::from(3600));
        b.charge(
            period,
            format!(
                "warehouse {}: {} resume(s), {} s of work, {} s billed ({} s minimum per resume)",
                size.to_uppercase(),
                quantity(resumes, 0),
                quantity(seconds, 1),
                quantity(billed, 0),
                quantity(minimum, 0)
            ),
            credits.unwrap_or(Decimal::ZERO),
            "credits",
            credits.zip(credit_price).map(|(c, p)| c * p),
            bound,
            &[&cph_id, min_id, &price_id],
            LineSpec::default(),
        );
    }
    Ok(b)
}

/// Files a load stages: one per chunk at least, more when chunks exceed the file size.
fn files(f: &TableFacts<'_>, period: Period, syncs_per_month: Decimal) -> Decimal {
    match period {
        Period::Backfill => {
            let bytes = f.rows * f.parquet;
            let by_size = (bytes / dec(f.t.file_size.max(1))).ceil();
            by_size.max(dec(f.t.chunks.max(1)))
        }
        Period::Steady => syncs_per_month,
    }
}

fn staging(
    b: &mut OptionBuilder,
    facts: &[TableFacts<'_>],
    config: &CostConfig,
    prices: &mut Prices<'_>,
    syncs_per_month: Decimal,
    stage: StageKind,
) -> Result<()> {
    let s = &config.staging;
    let (put_id, get_id, storage_id, egress_id) = match stage {
        StageKind::S3 => (
            "s3.requests.put".to_string(),
            "s3.requests.get".to_string(),
            format!("s3.storage.standard.{}", s.s3_region),
            "s3.egress.inter_region".to_string(),
        ),
        StageKind::Gcs => (
            "gcs.requests.class_a".to_string(),
            "gcs.requests.class_b".to_string(),
            format!("gcs.storage.standard.{}", s.gcs_region),
            "gcs.egress.inter_region".to_string(),
        ),
        StageKind::Internal => {
            b.notes.push("internal stage: staged files are billed as Snowflake storage for the hours they wait; no request charges".into());
            let id = format!("snowflake.storage.on_demand.{}", config.snowflake.region);
            let price = prices.value(&id, Unit::UsdPerTbMonth)?;
            for f in facts {
                for period in Period::BOTH {
                    let rows = if period == Period::Backfill {
                        f.rows
                    } else {
                        f.records()
                    };
                    let tb_months = rows * f.parquet / TB * Decimal::from(s.staged_hours) / HOURS_PER_MONTH;
                    b.charge(
                        period,
                        format!("staged files for {} hours", s.staged_hours),
                        tb_months,
                        "TB-months",
                        price.map(|p| tb_months * p),
                        Bound::Estimate,
                        &[&id],
                        LineSpec {
                            table: f.name(),
                            note: None,
                        },
                    );
                }
            }
            return Ok(());
        }
    };
    let put = prices.value(&put_id, Unit::UsdPer1000Requests)?;
    let get = prices.value(&get_id, Unit::UsdPer1000Requests)?;
    let storage = prices.value(&storage_id, Unit::UsdPerGbMonth)?;
    let egress = if s.cross_region {
        prices.value(&egress_id, Unit::UsdPerGb)?
    } else {
        None
    };
    for f in facts {
        for period in Period::BOTH {
            let (rows, bound) = match period {
                Period::Backfill => (f.rows, f.rows_bound),
                Period::Steady => (f.records(), f.steady.records_bound),
            };
            let n = files(f, period, syncs_per_month);
            let gb = rows * f.parquet / GB;
            let line = LineSpec {
                table: f.name(),
                note: None,
            };
            b.charge(
                period,
                "stage writes (one per file)",
                n,
                "requests",
                put.map(|p| n / Decimal::from(1000) * p),
                Bound::Estimate,
                &[&put_id],
                line,
            );
            b.charge(
                period,
                "stage reads by the load (one per file)",
                n,
                "requests",
                get.map(|p| n / Decimal::from(1000) * p),
                Bound::Estimate,
                &[&get_id],
                LineSpec {
                    table: f.name(),
                    note: None,
                },
            );
            let gb_months = gb * Decimal::from(s.staged_hours) / HOURS_PER_MONTH;
            b.charge(
                period,
                format!("{} GB staged for {} hours", quantity(gb, 3), s.staged_hours),
                gb_months,
                "GB-months",
                storage.map(|p| gb_months * p),
                bound,
                &[&storage_id],
                LineSpec {
                    table: f.name(),
                    note: None,
                },
            );
            if s.cross_region {
                b.charge(
                    period,
                    "transfer from the stage to the warehouse's region",
                    gb,
                    "GB",
                    egress.map(|p| gb * p),
                    bound,
                    &[&egress_id],
                    LineSpec {
                        table: f.name(),
                        note: None,
                    },
                );
            }
        }
    }
    Ok(())
}

/// Worker-hours of backhaul itself, per table and month, and their cost.
struct ComputeLines {
    lines: Vec<Line>,
    /// Wall-clock days of the backfill with the configured workers, at least 1.
    backfill_days: Decimal,
}

fn backhaul_compute(facts: &[TableFacts<'_>], config: &CostConfig, prices: &mut Prices<'_>) -> Result<ComputeLines> {
    let instance_id = format!("compute.instance.{}", config.backhaul.instance);
    let price = prices.value(&instance_id, Unit::UsdPerHour)?;
    let mut lines = Vec::new();
    let mut backfill_hours = Decimal::ZERO;
    for f in facts {
        let benchmark_id = if f.t.source_kind == "embedded" {
            "compute.backhaul.rows_per_second.embedded"
        } else {
            "compute.backhaul.rows_per_second.database"
        };
        let (rps, basis, cites) = match (&config.backhaul.rows_per_second, &f.t.throughput) {
            (Some(r), _) => (
                Some(r.0),
                "backhaul.rows_per_second from the config".to_string(),
                vec![],
            ),
            (None, Some(t)) if !t.rows_per_second.0.is_zero() => (
                Some(t.rows_per_second.0),
                format!(
                    "{} rows/s measured while profiling this source",
                    quantity(t.rows_per_second.0, 0)
                ),
                vec![],
            ),
            _ => {
                let v = prices.value(benchmark_id, Unit::RowPerSecond)?;
                (
                    v,
                    format!("benchmark `{benchmark_id}` (nothing measured)"),
                    vec![benchmark_id.to_string()],
                )
            }
        };
        for period in Period::BOTH {
            let (rows, bound) = match period {
                Period::Backfill => (f.rows, f.rows_bound),
                Period::Steady => (f.records(), f.steady.records_bound),
            };
            let hours = rps.filter(|r| !r.is_zero()).map(|r| rows / r / Decimal::from(3600));
            if period == Period::Backfill {
                backfill_hours += hours.unwrap_or_default();
            }
            let mut cites = cites.clone();
            cites.push(instance_id.clone());
            lines.push(Line {
                period,
                table: Some(f.t.name.clone()),
                kind: LineKind::Charge,
                item: format!("backhaul workers: {} rows at {basis}", quantity(rows, 0)),
                quantity: qty(hours.unwrap_or_default()),
                unit: "worker-hours".into(),
                cost: hours.zip(price).map(|(h, p)| money(h * p)),
                bound,
                cites,
                note: Some(format!(
                    "{} on {}",
                    config.backhaul.instance, "on-demand machines, billed only while loading"
                )),
            });
        }
    }
    let wall_hours = backfill_hours / Decimal::from(config.backhaul.workers.max(1));
    Ok(ComputeLines {
        lines,
        backfill_days: (wall_hours / Decimal::from(24)).ceil().max(Decimal::ONE),
    })
}

fn add_compute(b: &mut OptionBuilder, compute: &ComputeLines) {
    b.lines.extend(compute.lines.iter().cloned());
}

fn merge_lines(
    b: &mut OptionBuilder,
    facts: &[TableFacts<'_>],
    config: &CostConfig,
    prices: &mut Prices<'_>,
    syncs_per_month: Decimal,
) -> Result<()> {
    let price_id = "bigquery.on_demand.price";
    let free_id = "bigquery.on_demand.free_tib";
    let mut total_tib = Decimal::ZERO;
    let mut any = false;
    let price = prices.value(price_id, Unit::UsdPerTib)?;
    for f in facts.iter().filter(|f| f.steady.mutates) {
        any = true;
        // Each sync's MERGE bills the changed rows it reads plus the whole target when the
        // target is not partitioned.
        let table_bytes = (f.rows + dec(f.steady.inserts.unwrap_or(0))) * f.logical;
        let changed_bytes = f.records() * f.logical / syncs_per_month;
        let bytes = syncs_per_month * (changed_bytes + table_bytes);
        let tib = bytes / TIB;
        total_tib += tib;
        b.charge(
            Period::Steady,
            format!(
                "MERGE per sync: changed rows + the whole {} GiB target, {} syncs",
                quantity(table_bytes / GIB, 2),
                syncs_per_month
            ),
            tib,
            "TiB billed",
            price.map(|p| tib * p),
            if config.bigquery.partitioned {
                Bound::UpperBound
            } else {
                f.steady.records_bound.combine(f.rows_bound)
            },
            &[price_id],
            LineSpec {
                table: f.name(),
                note: Some(if config.bigquery.partitioned {
                    "partitioned target: only touched partitions are billed (upper bound shown)".into()
                } else {
                    "unpartitioned target: partition it (or use slots) to avoid billing the whole table per MERGE"
                        .into()
                }),
            },
        );
    }
    if any {
        let free = prices.value(free_id, Unit::TibPerMonth)?;
        if let (Some(free), Some(p)) = (free, price) {
            let used = free.min(total_tib);
            b.charge(
                Period::Steady,
                "on-demand bytes free each month",
                used,
                "TiB",
                Some(-(used * p)),
                Bound::Exact,
                &[free_id, price_id],
                LineSpec::default(),
            );
        }
    }
    Ok(())
}

fn bigquery(
    id: OptionId,
    facts: &[TableFacts<'_>],
    config: &CostConfig,
    prices: &mut Prices<'_>,
    syncs_per_month: Decimal,
    compute: &ComputeLines,
    quotas: &mut Vec<QuotaUse>,
) -> Result<OptionBuilder> {
    if id == OptionId::BigqueryWriteApi {
        let mut b = OptionBuilder::new(id, "backhaul → BigQuery Storage Write API".into());
        let price_id = "bigquery.write_api.price";
        let free_id = "bigquery.write_api.free_tib";
        let price = prices.value(price_id, Unit::UsdPerGib)?;
        let free = prices.value(free_id, Unit::TibPerMonth)?;
        let mut total = [Decimal::ZERO, Decimal::ZERO];
        for f in facts {
            for (i, period) in Period::BOTH.into_iter().enumerate() {
                let (rows, bound) = match period {
                    Period::Backfill => (f.rows, f.rows_bound),
                    Period::Steady => (f.records(), f.steady.records_bound),
                };
                let gib = rows * f.logical / GIB;
                total[i] += gib;
                b.charge(
                    period,
                    format!("{} rows written", quantity(rows, 0)),
                    gib,
                    "GiB",
                    price.map(|p| gib * p),
                    bound,
                    &[price_id],
                    LineSpec {
                        table: f.name(),
                        note: Some("billed bytes approximated by logical size".into()),
                    },
                );
            }
        }
        if let (Some(free), Some(p)) = (free, price) {
            for (i, period) in Period::BOTH.into_iter().enumerate() {
                let used = (free * Decimal::from(1024)).min(total[i]);
                b.charge(
                    period,
                    format!("{} TiB free each month", quantity(free, 2)),
                    used,
                    "GiB",
                    Some(-(used * p)),
                    Bound::Exact,
                    &[free_id, price_id],
                    LineSpec::default(),
                );
            }
        }
        merge_lines(&mut b, facts, config, prices, syncs_per_month)?;
        return Ok(b);
    }
    let mut b = OptionBuilder::new(id, "backhaul → BigQuery load jobs (GCS stage)".into());
    let price_id = "bigquery.load_job.price";
    let quota_id = "bigquery.load_jobs.per_table_day";
    let size_id = "bigquery.load_job.max_tb";
    let price = prices.value(price_id, Unit::UsdPerGib)?;
    let quota = prices.value(quota_id, Unit::JobPerTableDay)?;
    let max_tb = prices.value(size_id, Unit::TbPerJob)?;
    for f in facts {
        for period in Period::BOTH {
            let (rows, bound) = match period {
                Period::Backfill => (f.rows, f.rows_bound),
                Period::Steady => (f.records(), f.steady.records_bound),
            };
            let jobs = match period {
                Period::Backfill => dec(f.t.chunks.max(1)),
                Period::Steady => syncs_per_month,
            };
            let gib = rows * f.parquet / GIB;
            b.charge(
                period,
                format!("{} load jobs, {} GiB of Parquet", quantity(jobs, 0), quantity(gib, 3)),
                gib,
                "GiB",
                price.map(|p| gib * p),
                bound,
                &[price_id],
                LineSpec {
                    table: f.name(),
                    note: Some("batch loads on the shared slot pool: free, no throughput guarantee".into()),
                },
            );
            if let Some(limit) = quota {
                let per_day = match period {
                    Period::Backfill => jobs / compute.backfill_days,
                    Period::Steady => Decimal::from(config.plan.syncs_per_day),
                };
                quotas.push(QuotaUse {
                    option: OptionId::BigqueryLoad.as_str().into(),
                    table: f.t.name.clone(),
                    period,
                    what: match period {
                        Period::Backfill => format!(
                            "load jobs per table per day ({} chunks over {} day(s))",
                            quantity(jobs, 0),
                            compute.backfill_days
                        ),
                        Period::Steady => "load jobs per table per day (one per sync)".into(),
                    },
                    used: qty(per_day),
                    limit: Dec(limit),
                    unit: "job/table-day".into(),
                    percent: qty(per_day * Decimal::from(100) / limit),
                    cites: vec![quota_id.into()],
                });
            }
            if let (Some(limit), Period::Backfill) = (max_tb, period) {
                let per_job = rows * f.parquet / jobs / TB;
                quotas.push(QuotaUse {
                    option: OptionId::BigqueryLoad.as_str().into(),
                    table: f.t.name.clone(),
                    period,
                    what: "input bytes per load job".into(),
                    used: qty(per_job),
                    limit: Dec(limit),
                    unit: "TB/job".into(),
                    percent: qty(per_job * Decimal::from(100) / limit),
                    cites: vec![size_id.into()],
                });
            }
        }
    }
    merge_lines(&mut b, facts, config, prices, syncs_per_month)?;
    Ok(b)
}

fn snowflake_storage(facts: &[TableFacts<'_>], config: &CostConfig, prices: &mut Prices<'_>) -> Result<OptionReport> {
    let id = format!("snowflake.storage.on_demand.{}", config.snowflake.region);
    let mut b = OptionBuilder::new(
        OptionId::SnowflakeCopy,
        format!("Snowflake storage ({})", config.snowflake.region),
    );
    let price = prices.value(&id, Unit::UsdPerTbMonth)?;
    for f in facts {
        for period in Period::BOTH {
            let rows = match period {
                Period::Backfill => f.rows,
                Period::Steady => f.rows + dec(f.steady.inserts.unwrap_or(0)),
            };
            let tb = rows * f.parquet / TB;
            b.charge(
                period,
                format!("{} rows compressed", quantity(rows, 0)),
                tb,
                "TB-months",
                price.map(|p| tb * p),
                f.rows_bound,
                &[&id],
                LineSpec {
                    table: f.name(),
                    note: Some("compressed size approximated by zstd Parquet".into()),
                },
            );
        }
    }
    let mut r = b.finish();
    r.id = "snowflake_storage".into();
    r.notes
        .push("the same whichever option loads the data; time travel and fail-safe add to it".into());
    Ok(r)
}

fn bigquery_storage(facts: &[TableFacts<'_>], config: &CostConfig, prices: &mut Prices<'_>) -> Result<OptionReport> {
    let (model, id) = match config.bigquery.storage_billing {
        StorageBilling::Logical => ("logical", "bigquery.storage.logical.active"),
        StorageBilling::Physical => ("physical", "bigquery.storage.physical.active"),
    };
    let free_id = "bigquery.storage.free_gib";
    let mut b = OptionBuilder::new(OptionId::BigqueryLoad, format!("BigQuery storage ({model} billing)"));
    let price = prices.value(id, Unit::UsdPerGibMonth)?;
    let mut total = [Decimal::ZERO, Decimal::ZERO];
    for f in facts {
        for (i, period) in Period::BOTH.into_iter().enumerate() {
            let rows = match period {
                Period::Backfill => f.rows,
                Period::Steady => f.rows + dec(f.steady.inserts.unwrap_or(0)),
            };
            let per_row = match config.bigquery.storage_billing {
                StorageBilling::Logical => f.logical,
                StorageBilling::Physical => f.parquet,
            };
            let gib = rows * per_row / GIB;
            total[i] += gib;
            b.charge(
                period,
                format!("{} rows, active storage", quantity(rows, 0)),
                gib,
                "GiB-months",
                price.map(|p| gib * p),
                f.rows_bound,
                &[id],
                LineSpec {
                    table: f.name(),
                    note: None,
                },
            );
        }
    }
    let free = prices.value(free_id, Unit::GibPerMonth)?;
    if let (Some(free), Some(p)) = (free, price) {
        for (i, period) in Period::BOTH.into_iter().enumerate() {
            let used = free.min(total[i]);
            b.charge(
                period,
                "storage free each month",
                used,
                "GiB-months",
                Some(-(used * p)),
                Bound::Exact,
                &[free_id, id],
                LineSpec::default(),
            );
        }
    }
    let mut r = b.finish();
    r.id = "bigquery_storage".into();
    r.notes
        .push("the same whichever option loads the data; tables unmodified for 90 days drop to long-term rates".into());
    Ok(r)
}

/// `usd` with a `≥` when a total is incomplete.
pub fn total_text(t: &Total) -> String {
    let mark = match (t.complete, t.bound) {
        (false, _) | (true, Bound::LowerBound) => "≥ ",
        (true, Bound::UpperBound) => "≤ ",
        (true, Bound::Estimate) => "~",
        (true, Bound::Exact) => "",
    };
    format!("{mark}{}", usd(t.cost.0))
}
