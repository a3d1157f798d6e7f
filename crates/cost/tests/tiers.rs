//! Property tests of tier arithmetic: graduated and volume bands, free allowances, minimums.

use backhaul_cost::money::{Schedule, Tier, TierMode};
use proptest::prelude::*;
use rust_decimal::Decimal;

/// Prices with up to 4 decimals, quantities up to a billion with 2 decimals.
fn price() -> impl Strategy<Value = Decimal> {
    (0u64..1_000_000).prop_map(|p| Decimal::new(p as i64, 4))
}

fn amount() -> impl Strategy<Value = Decimal> {
    (0u64..100_000_000_000).prop_map(|q| Decimal::new(q as i64, 2))
}

/// 1-5 bands with ascending bounds.
fn tiers() -> impl Strategy<Value = Vec<Tier>> {
    (prop::collection::vec((1u64..1_000_000_000, price()), 0..4), price()).prop_map(|(bands, last)| {
        let mut bound = Decimal::ZERO;
        let mut tiers: Vec<Tier> = bands
            .into_iter()
            .map(|(step, p)| {
                bound += Decimal::from(step);
                Tier {
                    upto: Some(bound),
                    unit_price: p,
                }
            })
            .collect();
        tiers.push(Tier {
            upto: None,
            unit_price: last,
        });
        tiers
    })
}

fn schedule(mode: TierMode, tiers: Vec<Tier>) -> Schedule {
    Schedule {
        mode,
        tiers,
        free: Decimal::ZERO,
        minimum: Decimal::ZERO,
    }
}

/// Graduated price by brute force over bands, independent of the implementation's loop.
fn graduated_reference(tiers: &[Tier], q: Decimal) -> Decimal {
    let mut lower = Decimal::ZERO;
    let mut total = Decimal::ZERO;
    for t in tiers {
        let upper = t.upto.unwrap_or(Decimal::MAX);
        let in_band = (q.min(upper) - lower).max(Decimal::ZERO);
        total += in_band * t.unit_price;
        lower = upper;
    }
    total
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn graduated_sums_each_band_at_its_own_price(tiers in tiers(), q in amount()) {
        let s = schedule(TierMode::Graduated, tiers.clone());
        prop_assert!(s.check().is_ok());
        prop_assert_eq!(s.tiered(q), graduated_reference(&tiers, q));
    }

    #[test]
    fn volume_prices_every_unit_at_the_band_reached(tiers in tiers(), q in amount()) {
        let s = schedule(TierMode::Volume, tiers.clone());
        let band = tiers.iter().find(|t| t.upto.is_none_or(|u| q <= u)).unwrap();
        prop_assert_eq!(s.tiered(q), q * band.unit_price);
    }

    #[test]
    fn graduated_is_monotone_and_continuous(tiers in tiers(), q in amount(), step in 1u64..10_000) {
        let s = schedule(TierMode::Graduated, tiers.clone());
        let more = q + Decimal::new(step as i64, 2);
        let (a, b) = (s.tiered(q), s.tiered(more));
        prop_assert!(b >= a);
        // Continuity: the increase never exceeds the step at the highest band price.
        let top = tiers.iter().map(|t| t.unit_price).max().unwrap();
        prop_assert!(b - a <= (more - q) * top);
    }

    #[test]
    fn with_falling_prices_volume_never_exceeds_graduated(mut tiers in tiers(), q in amount()) {
        // Sort band prices so they fall as the bands rise (bulk discounts).
        let mut prices: Vec<Decimal> = tiers.iter().map(|t| t.unit_price).collect();
        prices.sort_by(|a, b| b.cmp(a));
        for (t, p) in tiers.iter_mut().zip(prices) {
            t.unit_price = p;
        }
        let graduated = schedule(TierMode::Graduated, tiers.clone()).tiered(q);
        let volume = schedule(TierMode::Volume, tiers).tiered(q);
        prop_assert!(volume <= graduated, "volume {} > graduated {}", volume, graduated);
    }

    #[test]
    fn a_free_allowance_is_taken_off_the_quantity_first(tiers in tiers(), q in amount(), free in amount(), graduated in any::<bool>()) {
        let mode = if graduated { TierMode::Graduated } else { TierMode::Volume };
        let s = schedule(mode, tiers);
        let with_free = s.clone().with_free(free);
        let expected = if q <= free { Decimal::ZERO } else { s.tiered(q - free) };
        prop_assert_eq!(with_free.charge(q), expected);
    }

    #[test]
    fn a_minimum_applies_to_any_use_and_only_to_use(tiers in tiers(), q in amount(), minimum in price(), free in amount()) {
        let s = schedule(TierMode::Graduated, tiers).with_free(free).with_minimum(minimum);
        let charge = s.charge(q);
        if q.is_zero() {
            prop_assert_eq!(charge, Decimal::ZERO);
        } else {
            prop_assert!(charge >= minimum);
            prop_assert_eq!(charge, s.tiered((q - free).max(Decimal::ZERO)).max(minimum));
        }
    }

    #[test]
    fn flat_prices_are_exact_products(p in price(), q in amount()) {
        prop_assert_eq!(Schedule::flat(p).charge(q), q * p);
    }
}
