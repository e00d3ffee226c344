//! DNS-rebinding protection for `/mcp`, on every revision: checked before anything else.

use super::Inbound;
use crate::gateway::Gateway;

/// DNS-rebinding protection. A browser page on another origin must not reach a gateway on
/// this machine: an `Origin` must be allowed, and a loopback listener accepts only loopback
/// `Host` names (plus the configured ones).
pub(super) fn rebinding_guard(gw: &Gateway, inbound: &Inbound) -> Result<(), &'static str> {
    let mcp = &gw.config.mcp;
    let loopback = gw.config.listen.ip().is_loopback();
    if let Some(origin) = inbound.mcp.origin.as_deref()
        && !(mcp.allowed_origins.iter().any(|o| o == origin) || loopback && is_loopback_origin(origin))
    {
        return Err("Origin");
    }
    let host = inbound.mcp.host.as_deref().unwrap_or("");
    let listed = mcp.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(host));
    // Loopback: loopback names or listed ones. Elsewhere: listed ones, if a list is set.
    let host_ok = if loopback {
        listed || is_loopback_authority(host)
    } else {
        listed || mcp.allowed_hosts.is_empty()
    };
    if !host_ok {
        return Err("Host");
    }
    Ok(())
}

fn is_loopback_origin(origin: &str) -> bool {
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(is_loopback_authority)
}

/// `localhost`, `127.0.0.1`, `[::1]` (any loopback address), with an optional port.
fn is_loopback_authority(authority: &str) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((host, tail)) if tail.is_empty() || tail.strip_prefix(':').is_some_and(is_port) => host,
            _ => return false,
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return false,
            None => authority,
        }
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A port number as written after the colon: one to five digits.
fn is_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_authorities() {
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]:9",
            "[::1]",
            "127.0.0.2",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "localhost.evil.com",
            "127.0.0.1:x",
            "[::1]x",
            "10.0.0.1:80",
            "",
        ] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
        assert!(is_loopback_origin("http://localhost:3000"));
        assert!(!is_loopback_origin("http://evil.example.com"));
        assert!(!is_loopback_origin("null"));
    }
}
