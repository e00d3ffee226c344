//! Client addresses and network allow-lists (pipeline step 7).

use std::net::IpAddr;

use ipnet::IpNet;

/// The client address: the socket peer, or the right-most untrusted hop of
/// `X-Forwarded-For` when the peer is a configured trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted_proxies.iter().any(|net| net.contains(&peer)) {
        return peer;
    }
    let Some(header) = forwarded_for else { return peer };
    // Walk from the nearest hop back; the first address not ours is the client.
    let mut client = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !trusted_proxies.iter().any(|net| net.contains(&client)) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Parses one `allowed_ips` entry: an address or a CIDR, IPv4 or IPv6.
pub fn parse_entry(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Whether `ip` is allowed by the list. An empty list allows every address; an entry
/// that does not parse allows nothing (fail closed).
pub fn allowed(ip: IpAddr, list: &[String]) -> bool {
    list.is_empty()
        || list
            .iter()
            .filter_map(|e| parse_entry(e))
            .any(|net| net.contains(&canonical(ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn allow_lists_take_v4_and_v6_addresses_and_cidrs() {
        let list = vec![
            "10.0.0.0/8".to_string(),
            "2001:db8::/32".to_string(),
            "192.168.1.7".to_string(),
        ];
        assert!(allowed(ip("10.1.2.3"), &list));
        assert!(allowed(ip("::ffff:10.1.2.3"), &list));
        assert!(allowed(ip("2001:db8::1"), &list));
        assert!(allowed(ip("192.168.1.7"), &list));
        assert!(!allowed(ip("192.168.1.8"), &list));
        assert!(!allowed(ip("2001:db9::1"), &list));
        assert!(allowed(ip("203.0.113.9"), &[]));
        assert!(!allowed(ip("203.0.113.9"), &["not-an-ip".to_string()]));
    }

    #[test]
    fn forwarded_for_is_trusted_only_from_trusted_proxies() {
        let proxies = vec!["127.0.0.1/32".parse().expect("net")];
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some("203.0.113.9"), &proxies),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("198.51.100.1"), Some("203.0.113.9"), &proxies),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some("1.1.1.1, 203.0.113.9, 127.0.0.1"), &proxies),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("127.0.0.1"), None, &proxies), ip("127.0.0.1"));
    }
}
