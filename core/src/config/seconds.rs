//! A duration the autoscaler either is told or measures itself:
//! `startup_secs = 20` or `startup_secs = "measured"`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seconds {
    /// This many seconds.
    Fixed(f64),
    /// Measured on the running system; the default value until the first
    /// measurement.
    Measured,
}

impl Seconds {
    /// The fixed value, or `prior` while it is to be measured.
    pub fn or(self, prior: f64) -> f64 {
        match self {
            Self::Fixed(v) => v,
            Self::Measured => prior,
        }
    }

    pub fn is_measured(self) -> bool {
        self == Self::Measured
    }

    /// Whether a fixed value is a valid duration (measured is always).
    pub fn is_valid(self) -> bool {
        match self {
            Self::Fixed(v) => v.is_finite() && v >= 0.0,
            Self::Measured => true,
        }
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Fixed(v) => s.serialize_f64(*v),
            Self::Measured => s.serialize_str("measured"),
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of seconds or \"measured\"")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Seconds, E> {
                Ok(Seconds::Fixed(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Seconds, E> {
                Ok(Seconds::Fixed(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds::Fixed(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Seconds, E> {
                match v.trim() {
                    "measured" => Ok(Seconds::Measured),
                    other => other.parse::<f64>().map(Seconds::Fixed).map_err(|_| {
                        E::custom(format!(
                            "`{other}` is neither a number of seconds nor \"measured\""
                        ))
                    }),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_and_measured() {
        #[derive(Deserialize)]
        struct T {
            s: Seconds,
        }
        for (toml, want) in [
            ("s = 20", Some(Seconds::Fixed(20.0))),
            ("s = 2.5", Some(Seconds::Fixed(2.5))),
            ("s = \"measured\"", Some(Seconds::Measured)),
            ("s = \"7\"", Some(Seconds::Fixed(7.0))),
            ("s = \"soon\"", None),
            ("s = true", None),
        ] {
            use figment::providers::Format;
            let got: Result<T, _> =
                figment::Figment::from(figment::providers::Toml::string(toml)).extract();
            assert_eq!(got.ok().map(|t| t.s), want, "{toml}");
        }
        assert_eq!(Seconds::Measured.or(10.0), 10.0);
        assert_eq!(Seconds::Fixed(4.0).or(10.0), 4.0);
        assert!(!Seconds::Fixed(-1.0).is_valid());
    }
}
