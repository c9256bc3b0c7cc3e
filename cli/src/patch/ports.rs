//! Port lists as flags and annotations write them: `25,443,8000-8100`.

use std::fmt;
use std::str::FromStr;

/// A list of ports and inclusive port ranges, kept in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortList(Vec<(u16, u16)>);

/// Why a port list does not parse.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not a list of ports such as 25,443,8000-8100: {reason}")]
pub struct PortListError {
    input: String,
    reason: String,
}

impl PortList {
    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// This list followed by the entries of `other` it does not already hold.
    #[must_use]
    pub fn merged(&self, other: &PortList) -> PortList {
        let mut out = self.0.clone();
        for r in &other.0 {
            if !out.contains(r) {
                out.push(*r);
            }
        }
        PortList(out)
    }
}

impl FromStr for PortList {
    type Err = PortListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| PortListError {
            input: s.to_string(),
            reason,
        };
        let port = |p: &str| -> Result<u16, PortListError> {
            match p.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(err(format!("{:?} is not a port (1-65535)", p.trim()))),
                Ok(n) => Ok(n),
            }
        };
        let mut out = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let range = match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (port(lo)?, port(hi)?);
                    if lo > hi {
                        return Err(err(format!("range {lo}-{hi} is empty")));
                    }
                    (lo, hi)
                }
                None => {
                    let p = port(part)?;
                    (p, p)
                }
            };
            if !out.contains(&range) {
                out.push(range);
            }
        }
        Ok(PortList(out))
    }
}

impl fmt::Display for PortList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_and_ranges() {
        let l: PortList = "25, 443,8000-8100,25".parse().unwrap();
        assert_eq!(l.to_string(), "25,443,8000-8100");
        assert!("".parse::<PortList>().unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_ports() {
        for bad in ["0", "70000", "http", "9-3", "1-"] {
            let e = bad.parse::<PortList>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn merge_keeps_order_and_drops_duplicates() {
        let a: PortList = "4190,4191".parse().unwrap();
        let b: PortList = "4191,25".parse().unwrap();
        assert_eq!(a.merged(&b).to_string(), "4190,4191,25");
    }
}
