//! PostgreSQL's binary `numeric` (base-10000 digits) to exact scaled integers or decimal text.
//!
//! Wire format: `ndigits: i16, weight: i16, sign: u16, dscale: u16`, then `ndigits` base-10000
//! digits, most significant first. The value is `Σ digit[i] · 10000^(weight − i)`. Trailing and
//! leading zero digits are not sent.

use arrow::datatypes::i256;

/// What a `numeric` value is, before it is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    /// `NaN`.
    NaN,
    /// `Infinity` (PostgreSQL 14+).
    Infinity,
    /// `-Infinity` (PostgreSQL 14+).
    NegInfinity,
}

impl Special {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Special::NaN => "NaN",
            Special::Infinity => "Infinity",
            Special::NegInfinity => "-Infinity",
        }
    }
}

/// Why a numeric could not be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NumericError {
    /// NaN or ±Infinity.
    Special(Special),
    /// More fractional digits than the target scale, or more digits than the precision.
    DoesNotFit(String),
    /// Malformed wire data.
    Malformed(&'static str),
}

/// A parsed numeric header and its digits (borrowed from the wire buffer).
pub(crate) struct Numeric<'a> {
    weight: i32,
    negative: bool,
    dscale: u16,
    digits: &'a [u8],
}

impl<'a> Numeric<'a> {
    pub(crate) fn parse(buf: &'a [u8]) -> Result<Self, NumericError> {
        if buf.len() < 8 {
            return Err(NumericError::Malformed("numeric shorter than its header"));
        }
        let ndigits = i16::from_be_bytes([buf[0], buf[1]]);
        let weight = i16::from_be_bytes([buf[2], buf[3]]);
        let sign = u16::from_be_bytes([buf[4], buf[5]]);
        let dscale = u16::from_be_bytes([buf[6], buf[7]]);
        let negative = match sign {
            0x0000 => false,
            0x4000 => true,
            0xC000 => return Err(NumericError::Special(Special::NaN)),
            0xD000 => return Err(NumericError::Special(Special::Infinity)),
            0xF000 => return Err(NumericError::Special(Special::NegInfinity)),
            _ => return Err(NumericError::Malformed("numeric with an unknown sign")),
        };
        if ndigits < 0 || buf.len() != 8 + 2 * ndigits as usize {
            return Err(NumericError::Malformed("numeric digit count does not match its length"));
        }
        Ok(Numeric {
            weight: i32::from(weight),
            negative,
            dscale,
            digits: &buf[8..],
        })
    }

    fn ndigits(&self) -> usize {
        self.digits.len() / 2
    }

    /// Base-10000 digit `i` (0 outside the sent digits).
    #[inline]
    fn digit(&self, i: i64) -> u16 {
        if i < 0 || i as usize >= self.ndigits() {
            return 0;
        }
        let i = i as usize;
        u16::from_be_bytes([self.digits[2 * i], self.digits[2 * i + 1]])
    }

    /// The value times `10^scale` as an integer of at most `precision` digits; a value that
    /// needs more fractional digits or more digits in total is an error, never rounded.
    pub(crate) fn to_scaled<T: ScaledInt>(&self, precision: u8, scale: u8) -> Result<T, NumericError> {
        let scale_i = i32::from(scale);
        let mut acc = T::ZERO;
        // Exponent (power of ten) of the unit digit of base-10000 digit i in the scaled value.
        let exp = |i: usize| 4 * (self.weight - i as i32) + scale_i;
        let n = self.ndigits();
        // Digits whose unit lies at or above the scale: Horner in base 10000, then shifted.
        let whole = (0..n).take_while(|&i| exp(i) >= 0).count();
        let overflow = || NumericError::DoesNotFit(format!("more than {precision} digits"));
        for i in 0..whole {
            acc = acc
                .checked_mul(T::pow10(4).ok_or_else(overflow)?)
                .and_then(|a| a.checked_add(T::from_u16(self.digit(i as i64))))
                .ok_or_else(overflow)?;
        }
        if whole > 0 {
            let shift = exp(whole - 1) as u32;
            acc = T::pow10(shift).and_then(|p| acc.checked_mul(p)).ok_or_else(overflow)?;
        }
        // The remaining digits reach below the scale. The first may straddle it (its upper
        // decimal places land on the units of the scaled value); the cut-off places, and every
        // later digit, must be zero, or the value has more decimals than the scale.
        for i in whole..n {
            let d = self.digit(i as i64);
            let cut = -exp(i);
            if cut >= 4 {
                if d != 0 {
                    return Err(self.too_many_decimals(scale));
                }
                continue;
            }
            let div = 10u16.pow(cut as u32);
            if !d.is_multiple_of(div) {
                return Err(self.too_many_decimals(scale));
            }
            acc = acc.checked_add(T::from_u16(d / div)).ok_or_else(overflow)?;
        }
        if !acc.fits_precision(precision) {
            return Err(overflow());
        }
        Ok(if self.negative { acc.neg() } else { acc })
    }

    fn too_many_decimals(&self, scale: u8) -> NumericError {
        NumericError::DoesNotFit(format!("more than {scale} digits after the decimal point"))
    }

    /// Exact decimal text with `dscale` fractional digits, as PostgreSQL prints it.
    pub(crate) fn write_text(&self, out: &mut String) {
        use std::fmt::Write;
        if self.negative && self.ndigits() > 0 {
            out.push('-');
        }
        if self.weight < 0 {
            out.push('0');
        } else {
            for k in 0..=self.weight {
                let d = self.digit(i64::from(k));
                if k == 0 {
                    let _ = write!(out, "{d}");
                } else {
                    let _ = write!(out, "{d:04}");
                }
            }
        }
        let dscale = usize::from(self.dscale);
        if dscale > 0 {
            out.push('.');
            let start = out.len();
            let mut k = 1i64;
            while out.len() - start < dscale {
                let d = self.digit(i64::from(self.weight) + k);
                let _ = write!(out, "{d:04}");
                k += 1;
            }
            out.truncate(start + dscale);
        }
    }
}

/// The integer types decimals are built in: `i128` (Decimal128) and `i256` (Decimal256).
pub(crate) trait ScaledInt: Copy + Sized {
    const ZERO: Self;
    fn from_u16(v: u16) -> Self;
    fn checked_mul(self, other: Self) -> Option<Self>;
    fn checked_add(self, other: Self) -> Option<Self>;
    fn pow10(n: u32) -> Option<Self>;
    fn neg(self) -> Self;
    fn fits_precision(self, precision: u8) -> bool;
}

impl ScaledInt for i128 {
    const ZERO: Self = 0;
    #[inline]
    fn from_u16(v: u16) -> Self {
        i128::from(v)
    }
    #[inline]
    fn checked_mul(self, other: Self) -> Option<Self> {
        i128::checked_mul(self, other)
    }
    #[inline]
    fn checked_add(self, other: Self) -> Option<Self> {
        i128::checked_add(self, other)
    }
    #[inline]
    fn pow10(n: u32) -> Option<Self> {
        10i128.checked_pow(n)
    }
    #[inline]
    fn neg(self) -> Self {
        -self
    }
    #[inline]
    fn fits_precision(self, precision: u8) -> bool {
        match 10i128.checked_pow(u32::from(precision)) {
            Some(limit) => self < limit,
            None => true, // precision 39+ never reaches i128 (Decimal256 is used there)
        }
    }
}

impl ScaledInt for i256 {
    const ZERO: Self = i256::ZERO;
    #[inline]
    fn from_u16(v: u16) -> Self {
        i256::from_i128(i128::from(v))
    }
    #[inline]
    fn checked_mul(self, other: Self) -> Option<Self> {
        i256::checked_mul(self, other)
    }
    #[inline]
    fn checked_add(self, other: Self) -> Option<Self> {
        i256::checked_add(self, other)
    }
    #[inline]
    fn pow10(n: u32) -> Option<Self> {
        i256::from_i128(10).checked_pow(n)
    }
    #[inline]
    fn neg(self) -> Self {
        self.wrapping_neg()
    }
    #[inline]
    fn fits_precision(self, precision: u8) -> bool {
        match i256::from_i128(10).checked_pow(u32::from(precision)) {
            Some(limit) => self < limit,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a decimal string the way PostgreSQL sends it.
    pub(crate) fn encode(text: &str) -> Vec<u8> {
        let (negative, t) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        let dscale = frac.len() as u16;
        let int = int.trim_start_matches('0');
        // Pad the integer part to a multiple of 4 on the left and the fraction on the right.
        let int_pad = (4 - int.len() % 4) % 4;
        let frac_pad = (4 - frac.len() % 4) % 4;
        let all = format!("{}{int}{frac}{}", "0".repeat(int_pad), "0".repeat(frac_pad));
        let mut digits: Vec<u16> = all
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap().parse().unwrap())
            .collect();
        let mut weight = ((int.len() + int_pad) / 4) as i16 - 1;
        while digits.first() == Some(&0) {
            digits.remove(0);
            weight -= 1;
        }
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            weight = 0;
        }
        let mut out = Vec::new();
        out.extend((digits.len() as i16).to_be_bytes());
        out.extend(weight.to_be_bytes());
        out.extend((if negative { 0x4000u16 } else { 0 }).to_be_bytes());
        out.extend(dscale.to_be_bytes());
        for d in digits {
            out.extend(d.to_be_bytes());
        }
        out
    }

    fn scaled(text: &str, p: u8, s: u8) -> Result<i128, NumericError> {
        Numeric::parse(&encode(text)).unwrap().to_scaled::<i128>(p, s)
    }

    fn text(text: &str) -> String {
        let mut out = String::new();
        Numeric::parse(&encode(text)).unwrap().write_text(&mut out);
        out
    }

    #[test]
    fn scales_exactly() {
        assert_eq!(scaled("12345.67", 15, 2), Ok(1_234_567));
        assert_eq!(scaled("-0.05", 15, 2), Ok(-5));
        assert_eq!(scaled("0", 5, 2), Ok(0));
        assert_eq!(scaled("0.00", 5, 2), Ok(0));
        assert_eq!(scaled("100000000", 12, 0), Ok(100_000_000));
        assert_eq!(scaled("1.5", 10, 4), Ok(15_000));
        assert_eq!(scaled("0.00012345", 20, 8), Ok(12_345));
        assert_eq!(scaled("0.000000001", 20, 9), Ok(1));
        let max38 = "99999999999999999999999999999.999999999";
        assert_eq!(
            scaled(max38, 38, 9),
            Ok(99_999_999_999_999_999_999_999_999_999_999_999_999)
        );
        assert_eq!(
            scaled(&format!("-{max38}"), 38, 9),
            Ok(-99_999_999_999_999_999_999_999_999_999_999_999_999)
        );
        assert!(matches!(scaled("1.234", 10, 2), Err(NumericError::DoesNotFit(_))));
        assert!(matches!(scaled("0.00001", 10, 4), Err(NumericError::DoesNotFit(_))));
        assert!(matches!(scaled("1000", 5, 2), Err(NumericError::DoesNotFit(_))));
        assert!(matches!(
            scaled("999999999999999999999999999999999999999999", 38, 0),
            Err(NumericError::DoesNotFit(_))
        ));
    }

    #[test]
    fn scales_into_256_bits() {
        let v = "12345678901234567890123456789012345678901234567890.0123456789";
        let got = Numeric::parse(&encode(v)).unwrap().to_scaled::<i256>(60, 10).unwrap();
        assert_eq!(got.to_string(), v.replace('.', ""));
        let neg = Numeric::parse(&encode(&format!("-{v}")))
            .unwrap()
            .to_scaled::<i256>(60, 10)
            .unwrap();
        assert_eq!(neg.to_string(), format!("-{}", v.replace('.', "")));
    }

    #[test]
    fn specials_are_reported() {
        let mut nan = encode("0");
        nan[4..6].copy_from_slice(&0xC000u16.to_be_bytes());
        assert!(matches!(Numeric::parse(&nan), Err(NumericError::Special(Special::NaN))));
    }

    #[test]
    fn writes_exact_text() {
        for v in [
            "0",
            "0.00",
            "1",
            "-1.50",
            "12345678.9",
            "0.0001",
            "0.00000123",
            "10000",
            "-99990000.0001",
        ] {
            assert_eq!(text(v), v.trim_start_matches('+'));
        }
    }
}
