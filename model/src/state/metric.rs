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

/// Short text kept inline (up to 24 bytes) instead of on the heap: worker
/// fields and metric names are short and repeated across 100k workers.
pub type Key = compact_str::CompactString;

/// A small map as a sorted vector: a few entries cost a few dozen bytes, where
/// a `BTreeMap` node costs hundreds. Serialized as a plain map.
#[derive(Debug, PartialEq)]
pub struct SmallMap<V>(Vec<(Key, V)>);

impl<V: Clone> Clone for SmallMap<V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }

    /// Reuses this map's buffer (and its values' own) when the source has
    /// exactly as many entries, as a worker's every heartbeat usually does:
    /// no malloc then. Otherwise an exact-size copy, as `clone` gives, so a
    /// map never keeps room for a larger heartbeat (100k workers keep these).
    fn clone_from(&mut self, src: &Self) {
        if self.0.capacity() != src.0.len() {
            *self = src.clone();
            return;
        }
        self.0.truncate(src.0.len());
        let kept = self.0.len();
        for ((k, v), (src_k, src_v)) in self.0.iter_mut().zip(&src.0) {
            k.clone_from(src_k);
            v.clone_from(src_v);
        }
        self.0.extend_from_slice(&src.0[kept..]);
    }
}

impl<V> Default for SmallMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> SmallMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| &self.0[i].1)
    }

    pub fn insert(&mut self, key: impl Into<Key>, value: V) -> Option<V> {
        let key = key.into();
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(key.as_str())) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }
}

impl<V> SmallMap<V> {
    /// Sort by key, keeping the last value of a repeated key, unless the
    /// entries already come sorted and unique (as our own encoding sends
    /// them), which costs one pass and no move.
    fn from_entries(mut entries: Vec<(Key, V)>) -> Self {
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            // dedup_by keeps the first of a run; move the later value into it.
            entries.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    std::mem::swap(&mut later.1, &mut kept.1);
                }
                same
            });
        }
        entries.shrink_to_fit();
        Self(entries)
    }
}

impl<K: Into<Key>, V> FromIterator<(K, V)> for SmallMap<V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_entries(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl<K: Into<Key>, V, const N: usize> From<[(K, V); N]> for SmallMap<V> {
    fn from(items: [(K, V); N]) -> Self {
        items.into_iter().collect()
    }
}

impl<V: Serialize> Serialize for SmallMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k.as_str(), v)?;
        }
        m.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SmallMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = SmallMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v: Vec<(Key, V)> = Vec::with_capacity(a.size_hint().unwrap_or(0).min(256));
                while let Some((k, val)) = a.next_entry::<Key, V>()? {
                    v.push((k, val));
                }
                Ok(SmallMap::from_entries(v))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// Counters by name, e.g. `processed`, `errors`, `in_flight`.
pub type MetricMap = SmallMap<Metric>;
/// Counters by group then name, e.g. provider → outcome → count.
pub type NestedMetrics = SmallMap<MetricMap>;

#[cfg(test)]
mod small_map_tests {
    use super::*;

    #[test]
    fn sorted_unique_and_round_trips_in_both_codecs() {
        let m: MetricMap = [("b", Metric(2.0)), ("a", Metric(1.0)), ("b", Metric(3.0))].into();
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("b"), Some(&Metric(3.0)));
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"a":1,"b":3}"#);
        let back: MetricMap = serde_json::from_str(r#"{"z":1,"a":2,"z":5}"#).unwrap();
        assert_eq!(back.iter().map(|(k, v)| (k.as_str(), v.value())).collect::<Vec<_>>(), [("a", 2.0), ("z", 5.0)]);
        let sorted: MetricMap = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        assert_eq!(sorted, [("a", Metric(1.0)), ("b", Metric(2.0))].into());
        let n: NestedMetrics = [("gmail", m.clone())].into();
        let bytes = crate::codec::encode(&n).unwrap();
        assert_eq!(crate::codec::decode::<NestedMetrics>(&bytes).unwrap(), n);
    }

    #[test]
    fn clone_from_copies_any_shape_and_reuses_the_allocation() {
        let three: NestedMetrics =
            [("a", [("x", Metric(1.0))].into()), ("b", MetricMap::new()), ("c", [("y", Metric(2.0))].into())].into();
        let one: NestedMetrics = [("z", [("q", Metric(9.0)), ("r", Metric(8.0))].into())].into();
        let mut m = three.clone();
        assert_eq!(m.0.capacity(), 3, "clone keeps the exact capacity");
        let buffer = m.0.as_ptr();
        let mut next = three.clone();
        next.0[1].1.insert("w", Metric(4.0));
        m.clone_from(&next);
        assert_eq!(m, next);
        assert_eq!(m.0.as_ptr(), buffer, "the same number of entries reuses the buffer");
        m.clone_from(&one);
        assert_eq!((m.0.capacity(), &m), (1, &one), "a shorter source leaves no spare room");
        m.clone_from(&three);
        assert_eq!((m.0.capacity(), &m), (3, &three));
        let mut empty = NestedMetrics::new();
        empty.clone_from(&three);
        assert_eq!((empty.0.capacity(), &empty), (3, &three), "a new map is sized exactly");
    }
}
