//! `allowed_networks`: the networks a listener accepts connections from.
//! Empty means every network. A connection from elsewhere is closed right
//! after `accept`, before TLS or any RPC, and counted.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::{Error, Result};

/// A list of networks (CIDR); empty allows all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Networks(Arc<Vec<IpNet>>);

impl Networks {
    /// Every network.
    pub fn any() -> Self {
        Networks::default()
    }

    /// Parses `10.0.0.0/8`-style entries; a bare address is one host.
    pub fn parse(entries: &[String]) -> Result<Self> {
        let mut nets = Vec::with_capacity(entries.len());
        for e in entries {
            let e = e.trim();
            let net = e
                .parse::<IpNet>()
                .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    Error::InvalidArgument(format!(
                        "allowed_networks: {e:?} is not a network (like 10.0.0.0/8) or an address"
                    ))
                })?;
            nets.push(net);
        }
        Ok(Networks(Arc::new(nets)))
    }

    /// Whether a connection from `ip` is accepted.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_allows_all_and_a_list_allows_only_its_networks() {
        let any = Networks::any();
        assert!(any.allows("203.0.113.9".parse().unwrap()));
        let some =
            Networks::parse(&["10.0.0.0/8".into(), "::1".into(), "192.0.2.7".into()]).unwrap();
        assert!(some.allows("10.1.2.3".parse().unwrap()));
        assert!(some.allows("::1".parse().unwrap()));
        assert!(some.allows("192.0.2.7".parse().unwrap()));
        assert!(some.allows("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!some.allows("192.0.2.8".parse().unwrap()));
        assert!(!some.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn a_malformed_entry_is_refused_by_name() {
        let e = Networks::parse(&["10.0.0.0/33".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.0.0.0/33"), "{e}");
        assert!(Networks::parse(&["corp".into()]).is_err());
    }
}
