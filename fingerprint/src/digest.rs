//! Content digests as newtypes: [`Blake3`] (blobs, trees, fingerprints) and [`Sha256`] (archives, as
//! TheRock's `.sha256sum` sidecars name them).
//!
//! Both print and parse as 64 lowercase hex characters; parsing rejects anything else, so a digest that
//! reached Cairn from outside is validated once at the boundary.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a {algorithm} digest (expected 64 lowercase hex characters)")]
pub struct DigestParseError {
    /// The rejected text (truncated to 80 characters).
    pub input: String,
    /// `blake3` or `sha256`.
    pub algorithm: &'static str,
}

fn hex_into(bytes: &[u8; 32], out: &mut [u8; 64]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

fn parse_hex32(s: &str, algorithm: &'static str) -> Result<[u8; 32], DigestParseError> {
    let err = || DigestParseError {
        input: s.chars().take(80).collect(),
        algorithm,
    };
    // Decoded by hand, validating as it goes: a warm stage fetch parses ~100k digests.
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return Err(err());
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => *o = hi << 4 | lo,
            _ => return Err(err()),
        }
    }
    Ok(out)
}

macro_rules! digest_type {
    ($(#[$doc:meta])* $name:ident, $algo:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Lowercase hex, 64 characters.
            pub fn to_hex(&self) -> String {
                let mut out = [0u8; 64];
                hex_into(&self.0, &mut out);
                String::from_utf8(out.to_vec()).expect("hex digits are ASCII")
            }

            /// Lowercase hex into `out` without allocating (hot paths format tens of thousands).
            pub fn hex_into(&self, out: &mut [u8; 64]) {
                hex_into(&self.0, out);
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut out = [0u8; 64];
                hex_into(&self.0, &mut out);
                f.write_str(std::str::from_utf8(&out).expect("hex digits are ASCII"))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($algo, ":{}"), hex::encode(self.0))
            }
        }

        impl FromStr for $name {
            type Err = DigestParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex32(s, $algo).map($name)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

digest_type!(
    /// A BLAKE3-256 digest: names CAS blobs, tree manifests and fingerprints.
    Blake3,
    "blake3"
);
digest_type!(
    /// A SHA-256 digest: names whole archives, as in TheRock's `.sha256sum` sidecars.
    Sha256,
    "sha256"
);

impl From<blake3::Hash> for Blake3 {
    fn from(h: blake3::Hash) -> Self {
        Blake3(*h.as_bytes())
    }
}

impl Blake3 {
    /// BLAKE3 of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        blake3::hash(bytes).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_the_reference_encoding() {
        for input in [&b""[..], b"abc", &[0xff; 100], &[0x00; 3]] {
            let d = Blake3::of(input);
            assert_eq!(d.to_hex(), hex::encode(d.0));
            assert_eq!(d.to_string(), hex::encode(d.0));
            assert_eq!(format!("{d:?}"), format!("blake3:{}", hex::encode(d.0)));
        }
        let all: [u8; 32] = std::array::from_fn(|i| (i * 8 + 3) as u8);
        assert_eq!(Sha256(all).to_hex(), hex::encode(all));
        assert_eq!(Sha256(all).to_hex().parse::<Sha256>().unwrap(), Sha256(all));
    }

    #[test]
    fn round_trips_and_rejects_bad_hex() {
        let d = Blake3::of(b"abc");
        assert_eq!(d.to_string().parse::<Blake3>().unwrap(), d);
        assert!("ABC".parse::<Blake3>().is_err());
        assert!(d.to_string().to_uppercase().parse::<Blake3>().is_err());
        assert!(format!("{d}0").parse::<Sha256>().is_err());
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Blake3>(&json).unwrap(), d);
    }
}
