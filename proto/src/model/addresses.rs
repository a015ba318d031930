//! An endpoint's addresses. Nearly every endpoint has exactly one (a pod
//! IP), a dual-stack one two: one is kept inline and more on the heap, so
//! a million endpoints are not a million extra allocations.

use std::fmt;
use std::net::IpAddr;
use std::ops::Deref;

/// The addresses of one endpoint, in the order given; reads as a slice.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Addresses(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    One(IpAddr),
    /// None, or two and more.
    Many(Box<[IpAddr]>),
}

impl Addresses {
    /// Exactly `address` (no allocation).
    pub fn one(address: IpAddr) -> Self {
        Addresses(Repr::One(address))
    }

    /// The addresses in the order given (also what `Deref` gives).
    pub fn as_slice(&self) -> &[IpAddr] {
        match &self.0 {
            Repr::One(a) => std::slice::from_ref(a),
            Repr::Many(all) => all,
        }
    }

    /// Keeps the addresses `keep` says yes to, in order.
    pub fn retain(&mut self, keep: impl FnMut(&IpAddr) -> bool) {
        let mut all = self.to_vec();
        all.retain(keep);
        *self = all.into();
    }
}

impl Default for Addresses {
    fn default() -> Self {
        Addresses(Repr::Many(Box::default()))
    }
}

impl Deref for Addresses {
    type Target = [IpAddr];

    fn deref(&self) -> &[IpAddr] {
        self.as_slice()
    }
}

impl From<Vec<IpAddr>> for Addresses {
    fn from(all: Vec<IpAddr>) -> Self {
        match all.as_slice() {
            [one] => Addresses::one(*one),
            _ => Addresses(Repr::Many(all.into_boxed_slice())),
        }
    }
}

impl FromIterator<IpAddr> for Addresses {
    fn from_iter<I: IntoIterator<Item = IpAddr>>(iter: I) -> Self {
        let mut iter = iter.into_iter();
        match (iter.next(), iter.next()) {
            (None, _) => Addresses::default(),
            (Some(one), None) => Addresses::one(one),
            (Some(a), Some(b)) => {
                let mut all = vec![a, b];
                all.extend(iter);
                Addresses(Repr::Many(all.into_boxed_slice()))
            }
        }
    }
}

impl<'a> IntoIterator for &'a Addresses {
    type Item = &'a IpAddr;
    type IntoIter = std::slice::Iter<'a, IpAddr>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl fmt::Debug for Addresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_is_inline_and_reads_as_a_slice() {
        let one = Addresses::from(vec![ip("10.0.0.1")]);
        assert!(matches!(one.0, Repr::One(_)));
        assert_eq!(one.as_slice(), &[ip("10.0.0.1")]);
        assert_eq!(one, Addresses::one(ip("10.0.0.1")));
        // No heap block for the common case, and no bigger than a Vec.
        assert!(std::mem::size_of::<Addresses>() <= std::mem::size_of::<Vec<IpAddr>>());
    }

    #[test]
    fn many_and_none_keep_order_and_compare_by_content() {
        let both: Addresses = [ip("10.0.0.1"), ip("fd00::1")].into_iter().collect();
        assert_eq!(&*both, &[ip("10.0.0.1"), ip("fd00::1")]);
        assert_eq!(both, Addresses::from(vec![ip("10.0.0.1"), ip("fd00::1")]));
        let none: Addresses = std::iter::empty().collect();
        assert!(none.is_empty());
        assert_eq!(none, Addresses::from(Vec::new()));
        let mut fewer = both.clone();
        fewer.retain(|a| a.is_ipv6());
        assert_eq!(fewer, Addresses::one(ip("fd00::1")));
        fewer.retain(|_| false);
        assert_eq!(fewer, Addresses::default());
    }
}
