//! The policy file's YAML shapes, typed and bounded: every value is a
//! scalar, a list of scalars or a map, so a value of the wrong shape is
//! refused where it starts instead of being built first; no list or map
//! holds more than [`MAX_POLICY_ENTRIES`]; and the whole document may not
//! expand past [`MAX_VALUES`] values, so anchors and aliases (`&x`, `*x`,
//! which the YAML parser replays rather than copies) cannot multiply a
//! small file into a huge policy.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use meshdns_proto::convert::MAX_POLICY_ENTRIES;
use meshdns_proto::model::MAX_SCOPES;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Most values (scalars, list items, map entries) one document may
/// expand to: one per byte of the largest file, which no file without
/// aliases reaches.
pub const MAX_VALUES: usize = super::file::MAX_FILE_BYTES;

thread_local! {
    /// Values left to the document being parsed on this thread.
    static LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Whether the document being parsed ran out of values.
    static SPENT: Cell<bool> = const { Cell::new(false) };
}

/// A budget of [`MAX_VALUES`] for the parse that runs inside `f`.
pub fn within_budget<T>(f: impl FnOnce() -> T) -> (T, bool) {
    LEFT.with(|l| l.set(MAX_VALUES));
    SPENT.with(|s| s.set(false));
    let out = f();
    LEFT.with(|l| l.set(usize::MAX));
    (out, SPENT.with(Cell::get))
}

/// Takes one value from the budget.
fn spend<E: de::Error>() -> Result<(), E> {
    let left = LEFT.with(Cell::get);
    if left == 0 {
        SPENT.with(|s| s.set(true));
        return Err(E::custom(format!(
            "the file expands to more than {MAX_VALUES} values (anchors and aliases may not multiply it)"
        )));
    }
    LEFT.with(|l| l.set(left - 1));
    Ok(())
}

/// One scalar: a number or a string, never a list or a map.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Int(i128),
    Float(f64),
    Text(String),
}

impl Scalar {
    /// The scalar as text (a name, a scope, a threshold).
    pub fn text(&self) -> String {
        match self {
            Scalar::Int(n) => n.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Text(s) => s.clone(),
        }
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a string")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        spend()?;
        Ok(Scalar::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        spend()?;
        Ok(Scalar::Int(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        spend()?;
        Ok(Scalar::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        spend()?;
        Ok(Scalar::Text(v.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// A map's entries in file order, at most [`MAX_POLICY_ENTRIES`]; keys
/// are scalars taken as text.
#[derive(Debug)]
pub struct Entries<V>(pub Vec<(String, V)>);

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

struct EntriesVisitor<V>(PhantomData<V>);

impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
    type Value = Entries<V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<V>, A::Error> {
        let mut out = Vec::new();
        while let Some(key) = map.next_key::<Scalar>()? {
            if out.len() == MAX_POLICY_ENTRIES {
                return Err(de::Error::custom(format!(
                    "more than {MAX_POLICY_ENTRIES} entries"
                )));
            }
            let value = map.next_value::<V>()?;
            out.push((key.text(), value));
        }
        Ok(Entries(out))
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EntriesVisitor(PhantomData))
    }
}

/// A failover order as written: a list of places, or the annotation's
/// comma-separated text. A list longer than [`MAX_SCOPES`] is refused at
/// its first item too many.
#[derive(Debug)]
pub enum Order {
    List(Vec<Scalar>),
    Text(String),
}

struct OrderVisitor;

impl<'de> Visitor<'de> for OrderVisitor {
    type Value = Order;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of places or a comma-separated string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Order, E> {
        spend()?;
        Ok(Order::Text(v.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Order, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<Scalar>()? {
            if out.len() == MAX_SCOPES {
                return Err(de::Error::custom(format!("more than {MAX_SCOPES} places")));
            }
            out.push(item);
        }
        Ok(Order::List(out))
    }
}

impl<'de> Deserialize<'de> for Order {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OrderVisitor)
    }
}
