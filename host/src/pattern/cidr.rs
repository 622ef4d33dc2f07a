//! `cidr`: IPv4 and IPv6 address ranges.
//!
//! As in aws/event-ruler, the range runs from the address as written up to the
//! address with every host bit set: `10.0.0.0/24` is `10.0.0.0`–`10.0.0.255`.
//! (event-ruler does not clear host bits first, so `10.0.0.9/24` starts at
//! `10.0.0.9`; busbar keeps that behaviour.) Event values match when they are
//! strings that parse as an address of the same family inside the range.

use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    v6: bool,
    low: u128,
    high: u128,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let parts: Vec<&str> = text.split('/').collect();
        if parts.len() != 2 {
            return Err("Malformed CIDR, one '/' required".into());
        }
        let bits: i64 = parts[1]
            .parse()
            .map_err(|_| "Malformed CIDR, mask bits must be an integer".to_string())?;
        if bits < 0 {
            return Err("Malformed CIDR, mask bits must not be negative".into());
        }
        let ip: IpAddr = parts[0]
            .parse()
            .map_err(|_| format!("Invalid IP address: {}", parts[0]))?;
        let (v6, width, base) = match ip {
            IpAddr::V4(a) => (false, 32u32, u32::from(a) as u128),
            IpAddr::V6(a) => (true, 128u32, u128::from(a)),
        };
        if !v6 && bits > 31 {
            return Err("IPv4 mask bits must be < 32".into());
        }
        if v6 && bits > 127 {
            return Err("IPv6 mask bits must be < 128".into());
        }
        let host_bits = width - bits as u32;
        let host_mask: u128 = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        Ok(Cidr {
            v6,
            low: base,
            high: base | host_mask,
        })
    }

    /// Whether `value` is an address inside the range.
    #[inline]
    pub fn contains_text(&self, value: &str) -> bool {
        match parse_ip(value) {
            Some(ip) => self.contains(ip),
            None => false,
        }
    }

    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v6, n) = match ip {
            IpAddr::V4(a) => (false, u32::from(a) as u128),
            IpAddr::V6(a) => (true, u128::from(a)),
        };
        v6 == self.v6 && self.low <= n && n <= self.high
    }
}

/// Every `cidr` range tested at one path, sorted by (family, first address)
/// with the running highest last address of the family, so an address finds
/// the ranges holding it by binary search and a short walk back: CIDR blocks
/// are nested or disjoint, so the walk meets only blocks around the address.
#[derive(Default)]
pub(crate) struct CidrIndex {
    ranges: Vec<(Cidr, u32)>,
    reach: Vec<u128>,
}

impl CidrIndex {
    pub fn insert(&mut self, cidr: Cidr, pred: u32) {
        self.ranges.push((cidr, pred));
        self.reach.clear();
    }

    /// Sorts after the last insert; lookups need it.
    pub fn finish(&mut self) {
        self.ranges.sort_by_key(|(c, _)| (c.v6, c.low));
        let mut reach = (false, 0u128);
        self.reach = self
            .ranges
            .iter()
            .map(|(c, _)| {
                reach = if reach.0 == c.v6 {
                    (c.v6, reach.1.max(c.high))
                } else {
                    (c.v6, c.high)
                };
                reach.1
            })
            .collect();
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    #[inline]
    pub fn containing(&self, ip: IpAddr, hit: &mut impl FnMut(u32)) {
        let (v6, n) = match ip {
            IpAddr::V4(a) => (false, u32::from(a) as u128),
            IpAddr::V6(a) => (true, u128::from(a)),
        };
        let end = self
            .ranges
            .partition_point(|(c, _)| (c.v6, c.low) <= (v6, n));
        for j in (0..end).rev() {
            let (c, p) = &self.ranges[j];
            if c.v6 != v6 || self.reach[j] < n {
                break;
            }
            if c.contains(ip) {
                hit(*p);
            }
        }
    }
}

/// Parses an event value as an address; cheap rejection first, since most
/// strings at a path with a `cidr` rule are addresses and the rest are not close.
#[inline]
pub(crate) fn parse_ip(value: &str) -> Option<IpAddr> {
    if value.is_empty() || value.len() > 45 {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_finds_what_a_scan_finds() {
        let texts = [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.0/24",
            "10.0.0.9/24",
            "192.168.0.0/16",
            "0.0.0.0/0",
            "2001:db8::/32",
            "::/0",
        ];
        let cidrs: Vec<Cidr> = texts.iter().map(|t| Cidr::parse(t).unwrap()).collect();
        let mut index = CidrIndex::default();
        for (p, c) in cidrs.iter().enumerate() {
            index.insert(*c, p as u32);
        }
        index.finish();
        for ip in [
            "10.0.0.5",
            "10.0.0.9",
            "10.0.0.200",
            "10.1.2.3",
            "10.1.9.9",
            "10.2.0.1",
            "192.168.5.5",
            "8.8.8.8",
            "2001:db8::1",
            "2001:db9::1",
            "::1",
        ] {
            let addr = parse_ip(ip).unwrap();
            let mut got = Vec::new();
            index.containing(addr, &mut |p| got.push(p));
            got.sort();
            let want: Vec<u32> = (0..cidrs.len() as u32)
                .filter(|&p| cidrs[p as usize].contains(addr))
                .collect();
            assert_eq!(got, want, "at {ip}");
        }
    }

    #[test]
    fn v4_range() {
        let c = Cidr::parse("10.0.0.0/24").unwrap();
        assert!(c.contains_text("10.0.0.0"));
        assert!(c.contains_text("10.0.0.255"));
        assert!(!c.contains_text("10.0.1.0"));
        assert!(!c.contains_text("not an ip"));
        assert!(!c.contains_text("::1"));
    }

    #[test]
    fn v6_range() {
        let c = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c.contains_text("2001:db8::1"));
        assert!(c.contains_text("2001:0db8:ffff::"));
        assert!(!c.contains_text("2001:db9::1"));
        assert!(!c.contains_text("10.0.0.1"));
    }

    #[test]
    fn malformed() {
        assert_eq!(
            Cidr::parse("10.0.0.0").unwrap_err(),
            "Malformed CIDR, one '/' required"
        );
        assert_eq!(
            Cidr::parse("10.0.0.0/x").unwrap_err(),
            "Malformed CIDR, mask bits must be an integer"
        );
        assert_eq!(
            Cidr::parse("10.0.0.0/-1").unwrap_err(),
            "Malformed CIDR, mask bits must not be negative"
        );
        assert_eq!(
            Cidr::parse("10.0.0.0/32").unwrap_err(),
            "IPv4 mask bits must be < 32"
        );
        assert_eq!(
            Cidr::parse("::/128").unwrap_err(),
            "IPv6 mask bits must be < 128"
        );
        assert_eq!(
            Cidr::parse("10.0.0/8").unwrap_err(),
            "Invalid IP address: 10.0.0"
        );
    }
}
