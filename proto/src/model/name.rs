//! Name newtypes: each checks its syntax once, in its constructor.

use std::fmt;
use std::sync::Arc;

use crate::error::{InvalidField, Problem};

/// Checks an RFC 1123 label as Kubernetes names it (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`,
/// at most 63 characters). Lowercase only, so that DNS lookups, which fold
/// case, can compare bytes.
pub fn check_label(value: &str) -> Result<(), &'static str> {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Err("empty");
    }
    if bytes.len() > 63 {
        return Err("longer than 63 characters");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        return Err("only lowercase letters, digits and '-' are allowed");
    }
    if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// A shared, immutable string one pointer wide, and so is an
/// `Option` of it: an endpoint carries three optional names, and across a
/// million endpoints the width is what counts. Compares by content.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SharedStr(Arc<Box<str>>);

impl SharedStr {
    fn new(value: &str) -> Self {
        SharedStr(Arc::new(Box::from(value)))
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! label_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(SharedStr);

        impl $name {
            /// Validates `value` as an RFC 1123 label.
            pub fn new(value: &str) -> Result<Self, InvalidField> {
                check_label(value).map_err(|why| {
                    InvalidField::new("", Problem::BadLabel { value: value.to_owned(), why })
                })?;
                Ok(Self(SharedStr::new(value)))
            }

            /// The label, as validated.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0.as_str())
            }
        }
    };
}

label_type!(
    /// The name a syncer exports under; unique in the fleet.
    ClusterName
);
label_type!(
    /// A Kubernetes namespace.
    Namespace
);
label_type!(
    /// A Kubernetes Service name.
    ServiceName
);
label_type!(
    /// An endpoint's hostname (headless services, StatefulSet pods).
    Hostname
);
label_type!(
    /// A port's name, as SRV queries name it (`_http._tcp.web.shop.global`).
    PortName
);

/// A Kubernetes label value such as a region or zone
/// (`topology.kubernetes.io/zone`): at most 63 characters of
/// `[A-Za-z0-9._-]`, beginning and ending with a letter or digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelValue(SharedStr);

impl LabelValue {
    /// Validates `value` as a Kubernetes label value (not empty: an
    /// absent topology label is `None`, not an empty value).
    pub fn new(value: &str) -> Result<Self, InvalidField> {
        let bad = |why| {
            InvalidField::new(
                "",
                Problem::BadLabelValue {
                    value: value.to_owned(),
                    why,
                },
            )
        };
        let b = value.as_bytes();
        if b.is_empty() {
            return Err(bad("empty"));
        }
        if b.len() > 63 {
            return Err(bad("longer than 63 characters"));
        }
        if !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        {
            return Err(bad("only letters, digits, '-', '_' and '.' are allowed"));
        }
        if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
            return Err(bad("must start and end with a letter or digit"));
        }
        Ok(Self(SharedStr::new(value)))
    }

    /// `None` for the empty string (the field is optional), else validated.
    pub fn optional(value: &str) -> Result<Option<Self>, InvalidField> {
        if value.is_empty() {
            Ok(None)
        } else {
            Self::new(value).map(Some)
        }
    }

    /// The value, as validated.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for LabelValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Debug for LabelValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

/// A Kubernetes node name: an RFC 1123 subdomain (labels joined by dots,
/// at most 253 characters).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(SharedStr);

impl NodeName {
    /// Validates `value` as an RFC 1123 subdomain: dot-joined labels, at
    /// most 253 characters.
    pub fn new(value: &str) -> Result<Self, InvalidField> {
        let why = if value.len() > 253 {
            Some("longer than 253 characters")
        } else {
            value.split('.').find_map(|l| check_label(l).err())
        };
        match why {
            Some(why) => Err(InvalidField::new(
                "",
                Problem::BadLabel {
                    value: value.to_owned(),
                    why,
                },
            )),
            None => Ok(Self(SharedStr::new(value))),
        }
    }

    /// The value, as validated.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_names_are_one_pointer_wide() {
        assert_eq!(std::mem::size_of::<Option<LabelValue>>(), 8);
        assert_eq!(std::mem::size_of::<Option<NodeName>>(), 8);
        assert_eq!(std::mem::size_of::<Option<Hostname>>(), 8);
        let a = LabelValue::new("eu-west-1a").unwrap();
        assert_eq!(a, LabelValue::new("eu-west-1a").unwrap());
        assert!(a < LabelValue::new("eu-west-1b").unwrap());
        assert_eq!(a.as_str(), "eu-west-1a");
    }

    fn check(input: &str, expected: Result<(), &str>) {
        assert_eq!(check_label(input), expected, "label {input:?}");
    }

    #[test]
    fn labels() {
        check("web", Ok(()));
        check("a", Ok(()));
        check("0abc", Ok(()));
        check("web-1", Ok(()));
        check(&"a".repeat(63), Ok(()));
        check(&"a".repeat(64), Err("longer than 63 characters"));
        check("", Err("empty"));
        check(
            "Web",
            Err("only lowercase letters, digits and '-' are allowed"),
        );
        check(
            "we_b",
            Err("only lowercase letters, digits and '-' are allowed"),
        );
        check(
            "we.b",
            Err("only lowercase letters, digits and '-' are allowed"),
        );
        check("-web", Err("must start and end with a letter or digit"));
        check("web-", Err("must start and end with a letter or digit"));
    }

    #[test]
    fn label_values() {
        assert!(LabelValue::new("us-east-1a").is_ok());
        assert!(LabelValue::new("Zone_A.1").is_ok());
        assert!(LabelValue::new(".zone").is_err());
        assert!(LabelValue::new("zone a").is_err());
        assert_eq!(LabelValue::optional("").unwrap(), None);
    }

    #[test]
    fn node_names() {
        assert!(NodeName::new("ip-10-0-0-1.ec2.internal").is_ok());
        assert!(NodeName::new("node..a").is_err());
        assert!(NodeName::new("Node").is_err());
    }
}
