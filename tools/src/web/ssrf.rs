//! SSRF protection: which addresses a fetch may connect to.
//!
//! The check runs on resolved addresses. IP-literal hosts are vetted before any
//! request; host names are resolved by [`VettingResolver`], which reqwest calls in
//! place of its own resolver, so the addresses that were checked are exactly the
//! addresses connected to (a DNS answer that changes between check and connect — DNS
//! rebinding — cannot slip through). Every redirect hop goes through both again.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::error::WebError;

/// Why an address is refused by default, or `None` for a public unicast address.
///
/// Refused: unspecified, loopback, private (RFC 1918), shared/CGNAT (100.64/10),
/// link-local, IETF protocol and documentation ranges, benchmarking, multicast,
/// reserved and broadcast IPv4; and for IPv6 unspecified, loopback, unique-local,
/// link-local, site-local, multicast, documentation, discard-only, IETF protocol
/// (including Teredo), everything outside global unicast `2000::/3`, and IPv4-mapped,
/// IPv4-compatible, NAT64 and 6to4 forms of refused IPv4 addresses.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

/// IPv4 ranges refused by default: (network, prefix length, kind).
const V4_BLOCKED: &[(u32, u8, &str)] = &[
    (0x0000_0000, 8, "unspecified (this-network)"),
    (0x0a00_0000, 8, "private"),
    (0x6440_0000, 10, "shared (CGNAT)"),
    (0x7f00_0000, 8, "loopback"),
    (0xa9fe_0000, 16, "link-local"),
    (0xac10_0000, 12, "private"),
    (0xc000_0000, 24, "IETF protocol assignment"),
    (0xc000_0200, 24, "documentation"),
    (0xc058_6300, 24, "6to4 relay anycast"),
    (0xc0a8_0000, 16, "private"),
    (0xc612_0000, 15, "benchmarking"),
    (0xc633_6400, 24, "documentation"),
    (0xcb00_7100, 24, "documentation"),
    (0xe000_0000, 4, "multicast"),
    (0xffff_ffff, 32, "broadcast"),
    (0xf000_0000, 4, "reserved"),
];

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    V4_BLOCKED.iter().find_map(|&(net, len, kind)| {
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        (bits & mask == net).then_some(kind)
    })
}

/// IPv6 ranges refused by default (checked after the embedded-IPv4 forms).
const V6_BLOCKED: &[(u128, u8, &str)] = &[
    (0, 128, "unspecified"),
    (1, 128, "loopback"),
    (0, 96, "IPv4-compatible (deprecated)"),
    (0x0064_ff9b_0001 << 80, 48, "private (local-use NAT64)"),
    (0x0100 << 112, 64, "discard-only"),
    (0x2001_0db8 << 96, 32, "documentation"),
    (0x2001 << 112, 23, "IETF protocol assignment (incl. Teredo)"),
    (0x3fff << 112, 20, "documentation"),
    (0xfc00 << 112, 7, "unique-local"),
    (0xfe80 << 112, 10, "link-local"),
    (0xfec0 << 112, 10, "site-local (deprecated)"),
    (0xff00 << 112, 8, "multicast"),
];

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    let in_net = |net: u128, len: u8| {
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        bits & mask == net
    };
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the embedded IPv4 address.
    if in_net(0x0064_ff9b << 96, 96) {
        return blocked_v4(Ipv4Addr::from(bits as u32));
    }
    if in_net(0x2002 << 112, 16) {
        return blocked_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    if let Some(kind) = V6_BLOCKED
        .iter()
        .find_map(|&(net, len, kind)| in_net(net, len).then_some(kind))
    {
        return Some(kind);
    }
    // Only 2000::/3 is allocated for global unicast.
    if !in_net(0x2000 << 112, 3) {
        return Some("reserved");
    }
    None
}

/// The explicit exceptions to the SSRF rules (`allow_hosts`, `allow_cidrs`).
#[derive(Debug, Clone, Default)]
pub(crate) struct NetPolicy {
    /// Lower-cased host names or IP literals; `*.example.org` matches subdomains.
    allow_hosts: Vec<String>,
    allow_cidrs: Vec<IpNet>,
}

impl NetPolicy {
    pub(crate) fn new(allow_hosts: &[String], allow_cidrs: &[IpNet]) -> Self {
        NetPolicy {
            allow_hosts: allow_hosts.iter().map(|h| normalize_host(h)).collect(),
            allow_cidrs: allow_cidrs.to_vec(),
        }
    }

    /// Whether the URL host (name or IP literal) is explicitly allowed.
    pub(crate) fn host_allowed(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.allow_hosts.iter().any(|entry| {
            if let Some(suffix) = entry.strip_prefix("*.") {
                host.len() > suffix.len()
                    && host.ends_with(suffix)
                    && host[..host.len() - suffix.len()].ends_with('.')
            } else {
                *entry == host
            }
        })
    }

    /// Checks one address reached through `host`: `Err(kind)` when refused.
    pub(crate) fn check(&self, host: &str, ip: IpAddr) -> Result<(), &'static str> {
        if self.host_allowed(host) {
            return Ok(());
        }
        let canonical = ip.to_canonical();
        if self
            .allow_cidrs
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
        {
            return Ok(());
        }
        match blocked_reason(ip) {
            Some(kind) => Err(kind),
            None => Ok(()),
        }
    }
}

/// Lower-cases, drops IPv6 brackets and a trailing dot.
fn normalize_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('.');
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.to_ascii_lowercase()
}

/// A resolution that failed or was refused; travels through reqwest's error chain and
/// is turned back into a [`WebError`].
#[derive(Debug, Clone)]
pub(crate) enum ResolveFailure {
    Blocked {
        host: String,
        addr: IpAddr,
        reason: &'static str,
    },
    Dns {
        host: String,
        message: String,
    },
}

impl ResolveFailure {
    pub(crate) fn to_web_error(&self) -> WebError {
        match self {
            ResolveFailure::Blocked { host, addr, reason } => WebError::Blocked {
                host: host.clone(),
                addr: *addr,
                reason,
            },
            ResolveFailure::Dns { host, message } => WebError::Dns {
                host: host.clone(),
                message: message.clone(),
            },
        }
    }
}

impl std::fmt::Display for ResolveFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_web_error())
    }
}

impl std::error::Error for ResolveFailure {}

/// reqwest's resolver for fetches: resolves with the system resolver, then refuses the
/// whole answer if any address is forbidden, so only vetted addresses are connected to.
#[derive(Debug, Clone)]
pub(crate) struct VettingResolver {
    pub(crate) policy: Arc<NetPolicy>,
}

impl Resolve for VettingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let lookup_host = host.clone();
            let resolved = tokio::task::spawn_blocking(move || {
                (lookup_host.as_str(), 0)
                    .to_socket_addrs()
                    .map(|addrs| addrs.collect::<Vec<SocketAddr>>())
            })
            .await;
            let addrs = match resolved {
                Ok(Ok(addrs)) if !addrs.is_empty() => addrs,
                Ok(Ok(_)) => {
                    return Err(dns_error(&host, "no addresses found".to_owned()));
                }
                Ok(Err(err)) => return Err(dns_error(&host, err.to_string())),
                Err(err) => return Err(dns_error(&host, err.to_string())),
            };
            for addr in &addrs {
                if let Err(reason) = policy.check(&host, addr.ip()) {
                    tracing::warn!(%host, addr = %addr.ip(), reason, "fetch_url refused address");
                    return Err(Box::new(ResolveFailure::Blocked {
                        host: host.clone(),
                        addr: addr.ip(),
                        reason,
                    })
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

fn dns_error(host: &str, message: String) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(ResolveFailure::Dns {
        host: host.to_owned(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn host_patterns() {
        let policy = NetPolicy::new(
            &[
                "LocalHost.".to_owned(),
                "*.intranet.example".to_owned(),
                "[::1]".to_owned(),
            ],
            &[],
        );
        assert!(policy.host_allowed("localhost"));
        assert!(policy.host_allowed("wiki.intranet.example"));
        assert!(!policy.host_allowed("intranet.example"));
        assert!(!policy.host_allowed("evilintranet.example"));
        assert!(policy.host_allowed("::1"));
    }

    /// A name that resolves to loopback is refused by the resolver itself, and the
    /// refusal survives reqwest's error chain as [`WebError::Blocked`].
    #[tokio::test]
    async fn resolver_refuses_loopback_names_through_reqwest() {
        let resolver = Arc::new(VettingResolver {
            policy: Arc::new(NetPolicy::default()),
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(resolver)
            .build()
            .unwrap_or_else(|e| panic!("client: {e}"));
        let err = match client.get("http://localhost:1/").send().await {
            Ok(r) => panic!("connected: {}", r.status()),
            Err(e) => crate::web::http::map_reqwest_error(&e, "test", std::time::Duration::ZERO),
        };
        assert!(
            matches!(&err, WebError::Blocked { host, reason: "loopback", .. } if host == "localhost"),
            "{err:?}"
        );

        let allowed = VettingResolver {
            policy: Arc::new(NetPolicy::new(&["localhost".to_owned()], &[])),
        };
        let name: Name = "localhost".parse().unwrap_or_else(|_| unreachable!());
        let addrs: Vec<SocketAddr> = match allowed.resolve(name).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => panic!("resolve: {e}"),
        };
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    #[test]
    fn cidrs_cover_mapped_forms() {
        let policy = NetPolicy::new(
            &[],
            &["127.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())],
        );
        assert!(policy.check("x", ip("127.0.0.1")).is_ok());
        assert!(policy.check("x", ip("::ffff:127.0.0.1")).is_ok());
        assert!(policy.check("x", ip("10.0.0.1")).is_err());
    }
}
