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

fn parse_hex32(s: &str, algorithm: &'static str) -> Result<[u8; 32], DigestParseError> {
    let err = || DigestParseError {
        input: s.chars().take(80).collect(),
        algorithm,
    };
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(err());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| err())?;
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
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
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
