//! Byte sizes as people type them (`50G`, `512MiB`, `1.5GB`, `1073741824`): the one grammar of every
//! byte-count flag and setting (`cairnd serve --max-bytes`, `CAIRN_MAX_BYTES`, `cairn gc --max-bytes`).
//!
//! # Grammar
//! ```text
//! size   = number [ " "* unit ]         (surrounding whitespace is ignored)
//! number = digits [ "." digits ]        (ASCII digits; a fraction needs a unit of K or more)
//! unit   = "B" | prefix [ "B" | "iB" ]  (any case)
//! prefix = "K" | "M" | "G" | "T"        (1024, 1024², 1024³, 1024⁴)
//! ```
//! Every prefix is a **binary** multiple whichever spelling is used: `K`, `KB` and `KiB` all mean
//! 1024 bytes (as `cairnd` has always read them; nobody sizes a cache in powers of ten). A fraction
//! is rounded down to a whole byte (`0.1K` is 102). Rejected, with an error that quotes the input and
//! shows the grammar: the empty string, a sign (`-1G`, `+1G`), a fraction without digits on both
//! sides of the point (`.5G`, `1.G`) or with more than [`MAX_FRACTION_DIGITS`], a fraction of a plain
//! byte (`1.5`, `1.5B`), any other unit or trailing text (`1GG`, `1 GiBs`, `1e9`, `1_000`), and a
//! size that does not fit in a `u64` (`99999999999T`).

use std::fmt;
use std::str::FromStr;

/// A number of bytes, parsed from and printed in the [grammar](self) above.
///
/// ```
/// use cairn_fingerprint::units::ByteSize;
///
/// assert_eq!("50G".parse::<ByteSize>()?.as_u64(), 50 << 30);
/// assert_eq!("1.5GiB".parse::<ByteSize>()?, ByteSize(3 << 29));
/// assert_eq!(ByteSize(50 << 30).to_string(), "50GiB");
/// assert!("99999999999T".parse::<ByteSize>().is_err());
/// # Ok::<(), cairn_fingerprint::units::ByteSizeError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// The longest fraction accepted (`1.` followed by this many digits), far below a byte at 1 TiB.
pub const MAX_FRACTION_DIGITS: usize = 20;

/// The grammar in one line, as errors and `--help` texts show it.
pub const BYTE_SIZE_GRAMMAR: &str = "an integer with an optional unit K, M, G or T (powers of 1024; \
     KB/KiB spellings, a trailing B and any case accepted; a fraction needs a unit), e.g. 1073741824, \
     512M, 50G, 1.5GiB";

/// Units, largest first, with the exponent of 1024 they stand for.
const PREFIXES: [(char, u32); 4] = [('T', 4), ('G', 3), ('M', 2), ('K', 1)];

impl ByteSize {
    /// The number of bytes.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Parse `s` in the [grammar](self).
    pub fn parse(s: &str) -> Result<ByteSize, ByteSizeError> {
        let err = |reason: &'static str| ByteSizeError {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty"));
        }
        if t.starts_with(['-', '+']) {
            return Err(err("a size has no sign"));
        }
        let number_end = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(number_end);
        let exponent = unit_exponent(unit.trim_start()).ok_or_else(|| err("unknown unit"))?;
        let (int, frac) = match number.split_once('.') {
            None => (number, ""),
            Some((int, frac)) => {
                if int.is_empty() || frac.is_empty() || frac.contains('.') {
                    return Err(err("a fraction needs digits on both sides of one `.`"));
                }
                if exponent == 0 {
                    return Err(err("a fraction of a byte"));
                }
                if frac.len() > MAX_FRACTION_DIGITS {
                    return Err(err("too many fractional digits"));
                }
                (int, frac)
            }
        };
        if int.is_empty() {
            return Err(err("no number"));
        }
        let too_large = || err("larger than 2^64 - 1 bytes");
        let multiplier = 1u128 << (10 * exponent);
        // Digits only, so a parse error can only be an overflow.
        let whole = int.parse::<u128>().map_err(|_| too_large())?;
        let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_large)?;
        if !frac.is_empty() {
            // At most 20 digits (< 2^67) times at most 2^40: fits in a u128.
            let numerator = frac.parse::<u128>().expect("digits") * multiplier;
            bytes += numerator / 10u128.pow(frac.len() as u32);
        }
        u64::try_from(bytes).map(ByteSize).map_err(|_| too_large())
    }
}

/// The power of 1024 a unit stands for: `""`/`B` 0, `K`/`KB`/`KiB` 1, ... (any case).
fn unit_exponent(unit: &str) -> Option<u32> {
    let u = unit.to_ascii_uppercase();
    if u.is_empty() || u == "B" {
        return Some(0);
    }
    let mut chars = u.chars();
    let prefix = chars.next()?;
    let rest = chars.as_str();
    let (_, exponent) = PREFIXES.iter().find(|(p, _)| *p == prefix)?;
    matches!(rest, "" | "B" | "IB").then_some(*exponent)
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    /// [`ByteSize::parse`].
    fn from_str(s: &str) -> Result<ByteSize, ByteSizeError> {
        ByteSize::parse(s)
    }
}

impl fmt::Display for ByteSize {
    /// Exact and re-parseable: the largest unit that divides the size (`50GiB`, `1536KiB`), else
    /// plain bytes (`1500`); zero is `0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (prefix, exponent) in PREFIXES {
            let unit = 1u64 << (10 * exponent);
            if self.0 != 0 && self.0.is_multiple_of(unit) {
                return write!(f, "{}{prefix}iB", self.0 / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl From<u64> for ByteSize {
    fn from(bytes: u64) -> ByteSize {
        ByteSize(bytes)
    }
}

impl From<ByteSize> for u64 {
    fn from(size: ByteSize) -> u64 {
        size.0
    }
}

/// Why a string is not a [`ByteSize`]: names the input, says what is wrong and shows the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a byte size ({reason}): expected {BYTE_SIZE_GRAMMAR}")]
pub struct ByteSizeError {
    /// The rejected input, as given.
    pub input: String,
    /// What is wrong with it, in a few words.
    pub reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;
    const G: u64 = 1 << 30;
    const T: u64 = 1 << 40;

    fn parse(s: &str) -> Result<u64, ByteSizeError> {
        s.parse::<ByteSize>().map(u64::from)
    }

    #[test]
    fn plain_integers_are_bytes() {
        for (s, n) in [
            ("0", 0),
            ("12", 12),
            ("007", 7),
            ("53687091200", 50 * G),
            ("18446744073709551615", u64::MAX),
            ("12B", 12),
            ("12 b", 12),
            ("  12\n", 12),
        ] {
            assert_eq!(parse(s), Ok(n), "{s:?}");
        }
    }

    #[test]
    fn every_unit_spelling_is_a_binary_multiple_in_any_case() {
        for (prefix, mult) in [("k", K), ("m", M), ("g", G), ("t", T)] {
            for suffix in ["", "b", "ib"] {
                let unit = format!("{prefix}{suffix}");
                for spelled in [
                    unit.clone(),
                    unit.to_uppercase(),
                    format!(
                        "{}{}",
                        prefix.to_uppercase(),
                        suffix.replace("ib", "iB").replace('b', "B")
                    ),
                ] {
                    assert_eq!(parse(&format!("5{spelled}")), Ok(5 * mult), "5{spelled}");
                    assert_eq!(parse(&format!("5 {spelled}")), Ok(5 * mult), "5 {spelled}");
                }
            }
        }
        // What both old parsers accepted keeps its meaning.
        for (s, n) in [
            ("10K", 10 * K),
            ("5MiB", 5 * M),
            ("50G", 50 * G),
            ("1TB", T),
            ("2G", 2 * G),
            ("1M", M),
            ("50gib", 50 * G),
        ] {
            assert_eq!(parse(s), Ok(n), "{s}");
        }
    }

    #[test]
    fn fractions_need_a_unit_and_round_down() {
        for (s, n) in [
            ("1.5GiB", 1_610_612_736),
            ("1.5GB", 3 * G / 2),
            ("0.5K", 512),
            ("0.1K", 102),
            ("1.0T", T),
            ("2.25 M", 9 * M / 4),
            ("0.00000000000000000001T", 0),
            ("15.99999999999999999999T", 16 * T - 1),
        ] {
            assert_eq!(parse(s), Ok(n), "{s}");
        }
        for s in ["1.5", "1.5B", "0.5b"] {
            let e = parse(s).unwrap_err();
            assert_eq!(e.reason, "a fraction of a byte", "{s}");
        }
        let e = parse(&format!("1.{}K", "1".repeat(MAX_FRACTION_DIGITS + 1))).unwrap_err();
        assert_eq!(e.reason, "too many fractional digits");
    }

    #[test]
    fn garbage_is_rejected_with_the_input_and_the_grammar() {
        for s in [
            "", " ", "-1", "-1G", "+1G", "x", "lots", "G", "KiB", ".5G", "1.G", "1..5G", "1.2.3G",
            ".", "1GG", "1 GiBs", "1Gi", "1iB", "1P", "1PiB", "1e9", "1_000", "1,5G", "1 2",
            "0x10", "1 K B", "½G", "１G",
        ] {
            let e = parse(s).expect_err(s);
            assert_eq!(e.input, s);
            let shown = e.to_string();
            assert!(shown.contains(&format!("`{s}`")), "{shown}");
            assert!(shown.contains(BYTE_SIZE_GRAMMAR), "{shown}");
        }
    }

    #[test]
    fn sizes_beyond_u64_are_errors_not_wrapped_or_saturated() {
        for s in [
            "99999999999T",
            "16777216T",
            "18446744073709551616",
            "17179869184G",
            "99999999999999999999999999999999999999999999",
            "16777215.99999999999999999999T1",
        ] {
            assert!(parse(s).is_err(), "{s}");
        }
        for s in ["99999999999T", "16777216T", "18446744073709551616"] {
            assert_eq!(parse(s).unwrap_err().reason, "larger than 2^64 - 1 bytes");
        }
        assert_eq!(parse("16777215T"), Ok(16_777_215 * T));
        assert_eq!(parse("16777215.99999999999999999999T"), Ok(u64::MAX));
    }

    #[test]
    fn display_is_exact_and_parses_back() {
        for (n, shown) in [
            (0, "0"),
            (1, "1"),
            (1000, "1000"),
            (1536, "1536"),
            (K, "1KiB"),
            (3 * K, "3KiB"),
            (50 * G, "50GiB"),
            (1536 * M, "1536MiB"),
            (T, "1TiB"),
            (16_777_215 * T, "16777215TiB"),
            (u64::MAX, "18446744073709551615"),
        ] {
            assert_eq!(ByteSize(n).to_string(), shown, "{n}");
            assert_eq!(parse(shown), Ok(n), "{shown}");
        }
    }

    #[cfg(feature = "clap")]
    #[test]
    fn clap_takes_it_as_a_flag_type() {
        use clap::Parser;

        #[derive(Parser)]
        struct Args {
            #[arg(long)]
            max_bytes: Option<ByteSize>,
        }
        let args = Args::try_parse_from(["x", "--max-bytes", "50G"]).unwrap();
        assert_eq!(args.max_bytes, Some(ByteSize(50 * G)));
        let err = Args::try_parse_from(["x", "--max-bytes", "50X"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("`50X` is not a byte size"), "{err}");
    }
}
