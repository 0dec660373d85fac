//! A reported metric value: any finite JSON number, shown back as an integer
//! when it is one (so `1200` stays `1200`, not `1200.0`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Default, utoipa::ToSchema)]
pub struct Metric(pub f64);

impl Metric {
    pub fn value(self) -> f64 {
        self.0
    }
}

impl Serialize for Metric {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Binary formats always carry f64 so that decoding is unambiguous.
        let v = self.0;
        if s.is_human_readable() && v.fract() == 0.0 && v.abs() < 9.0e15 {
            if v >= 0.0 {
                s.serialize_u64(v as u64)
            } else {
                s.serialize_i64(v as i64)
            }
        } else {
            s.serialize_f64(v)
        }
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if v.is_finite() {
            Ok(Metric(v))
        } else {
            Err(serde::de::Error::custom("metric must be a finite number"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_integers_and_binary_round_trips() {
        assert_eq!(serde_json::to_string(&Metric(1200.0)).unwrap(), "1200");
        assert_eq!(serde_json::to_string(&Metric(0.5)).unwrap(), "0.5");
        let m: Metric = serde_json::from_str("14").unwrap();
        assert_eq!(m, Metric(14.0));
        assert!(serde_json::from_str::<Metric>("\"x\"").is_err());
        let bytes = crate::codec::encode(&vec![Metric(3.0), Metric(-1.5)]).unwrap();
        assert_eq!(crate::codec::decode::<Vec<Metric>>(&bytes).unwrap(), vec![Metric(3.0), Metric(-1.5)]);
    }
}
