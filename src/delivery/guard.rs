//! Destination guard: keeps webhooks away from addresses they must not reach
//! (server-side request forgery).
//!
//! Endpoint URLs are chosen by whoever may create endpoints, and duehook runs
//! beside the operator's application, usually inside a private network. A URL
//! pointing at `127.0.0.1`, a database in `10.0.0.0/8` or the cloud metadata
//! service at `169.254.169.254` would turn duehook into a proxy into that
//! network. This module owns the rule of which addresses are allowed
//! ([`DestinationGuard::check_ip`]) and its two enforcement points:
//!
//! 1. [`DestinationGuard::check_url`], when an endpoint is created or updated
//!    and before each request: scheme, no credentials in the URL, and
//!    IP-literal hosts (which the HTTP client connects to without resolving);
//! 2. [`DestinationGuard::resolver`], a DNS resolver for reqwest that drops
//!    forbidden addresses from every lookup. The check therefore happens on
//!    the addresses the connection actually uses, at connect time, so a name
//!    that resolved to a public address when the endpoint was created and to
//!    `127.0.0.1` later (DNS rebinding) is still refused.
//!
//! Two ways around these checks must be closed by the client itself:
//! proxies (a proxy resolves names on its own) and redirects (a redirect to
//! an IP literal never reaches the resolver). [`DestinationGuard::client_builder`]
//! returns a reqwest builder with the guarded resolver, no proxy and no
//! redirects; the delivery worker should start from it.
//!
//! `allow_private` turns the address rule off (local development, tests, or
//! receivers on the same private network); `allowed_subnets` opens specific
//! ranges while keeping the rest closed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use url::{Host, Url};

/// Why a destination was refused.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("invalid URL: {0}")]
    InvalidUrl(#[from] url::ParseError),
    #[error("URL scheme {0:?} is not allowed (use http or https)")]
    UnsupportedScheme(String),
    #[error("only https destinations are allowed")]
    HttpsRequired,
    #[error("URL must not contain a user name or password")]
    UserInfo,
    #[error("URL has no host")]
    MissingHost,
    #[error("destination {ip} is not allowed: {reason}")]
    ForbiddenAddress { ip: IpAddr, reason: &'static str },
    #[error("destination host {host:?} is not allowed: it always refers to this machine")]
    ForbiddenHost { host: String },
    #[error("could not resolve {host:?}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host:?} resolves only to addresses that are not allowed ({refused})")]
    NoAllowedAddress { host: String, refused: RefusedList },
}

/// The addresses a lookup returned that were refused, with their reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedList(pub Vec<(IpAddr, &'static str)>);

impl fmt::Display for RefusedList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no addresses");
        }
        for (i, (ip, reason)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{ip}: {reason}")?;
        }
        Ok(())
    }
}

/// The destination rules of one deployment. Cheap to share behind an `Arc`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationGuard {
    allow_private: bool,
    allowed_subnets: Vec<IpNet>,
    https_only: bool,
}

/// IPv4 ranges that are never a public webhook receiver. Each with the
/// reason shown to the user. (Sources: IANA IPv4 Special-Purpose Address
/// Registry, RFC 6890.)
const FORBIDDEN_V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\" (0.0.0.0/8)"),
    (
        Ipv4Addr::new(10, 0, 0, 0),
        8,
        "private network (10.0.0.0/8)",
    ),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "carrier-grade NAT (100.64.0.0/10)",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback (127.0.0.0/8)"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local, including cloud metadata (169.254.0.0/16)",
    ),
    (
        Ipv4Addr::new(172, 16, 0, 0),
        12,
        "private network (172.16.0.0/12)",
    ),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        "IETF protocol assignments (192.0.0.0/24)",
    ),
    (
        Ipv4Addr::new(192, 0, 2, 0),
        24,
        "documentation (192.0.2.0/24)",
    ),
    (
        Ipv4Addr::new(192, 88, 99, 0),
        24,
        "6to4 relay anycast (192.88.99.0/24)",
    ),
    (
        Ipv4Addr::new(192, 168, 0, 0),
        16,
        "private network (192.168.0.0/16)",
    ),
    (
        Ipv4Addr::new(198, 18, 0, 0),
        15,
        "benchmarking (198.18.0.0/15)",
    ),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "documentation (198.51.100.0/24)",
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        "documentation (203.0.113.0/24)",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast (224.0.0.0/4)"),
    (
        Ipv4Addr::new(240, 0, 0, 0),
        4,
        "reserved, including broadcast (240.0.0.0/4)",
    ),
];

/// IPv6 ranges inside global unicast (2000::/3) that are still not public
/// receivers. Everything outside 2000::/3 is refused anyway, apart from the
/// IPv4-embedding forms handled separately.
const FORBIDDEN_V6_GLOBAL: &[(Ipv6Addr, u8, &str)] = &[
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF special-purpose, including Teredo and benchmarking (2001::/23)",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation (2001:db8::/32)",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation (3fff::/20)",
    ),
];

/// Named IPv6 ranges outside 2000::/3, for precise messages.
const NAMED_V6_OTHER: &[(Ipv6Addr, u8, &str)] = &[
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique local address (fc00::/7)",
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        "link-local (fe80::/10)",
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        "site-local (fec0::/10)",
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        "multicast (ff00::/8)",
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local-use NAT64 (64:ff9b:1::/48)",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only (100::/64)",
    ),
];

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// Why `ip` is not a public destination, or `None` if it is.
fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    FORBIDDEN_V4
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

/// The IPv4 address an IPv6 address carries, when connecting to it can end up
/// at that IPv4 address: IPv4-mapped (`::ffff:a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some((v4, "IPv4-mapped"));
    }
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return Some((low32, "NAT64"));
    }
    if in_v6(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return Some((Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32), "6to4"));
    }
    None
}

/// Why `ip` is not a public destination, or `None` if it is.
fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified address (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    if let Some((v4, form)) = embedded_v4(ip) {
        return v4_reason(v4).map(|_| match form {
            "IPv4-mapped" => "IPv4-mapped address of a forbidden IPv4 address",
            "NAT64" => "NAT64 address of a forbidden IPv4 address",
            _ => "6to4 address of a forbidden IPv4 address",
        });
    }
    // ::a.b.c.d, deprecated by RFC 4291 and never a real destination.
    if in_v6(ip, Ipv6Addr::UNSPECIFIED, 96) {
        return Some("deprecated IPv4-compatible address (::/96)");
    }
    if let Some((_, _, reason)) = FORBIDDEN_V6_GLOBAL
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
    {
        return Some(reason);
    }
    if in_v6(ip, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        return None;
    }
    Some(
        NAMED_V6_OTHER
            .iter()
            .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
            .map_or(
                "not a global unicast address (outside 2000::/3)",
                |(_, _, r)| r,
            ),
    )
}

fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

impl DestinationGuard {
    /// `allow_private`: allow every address (the `[delivery]
    /// allow_private_destinations` setting). `allowed_subnets`: ranges
    /// allowed even when `allow_private` is off. `https_only`: refuse `http`.
    pub fn new(allow_private: bool, allowed_subnets: Vec<IpNet>, https_only: bool) -> Self {
        Self {
            allow_private,
            allowed_subnets,
            https_only,
        }
    }

    /// Whether connecting to `ip` is allowed. An IPv4 address embedded in an
    /// IPv6 one (`::ffff:10.0.0.1`) counts as that IPv4 address for
    /// `allowed_subnets`, since that is where the connection goes.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), GuardError> {
        if self.allow_private || self.in_allowed_subnet(ip) {
            return Ok(());
        }
        match forbidden_reason(ip) {
            None => Ok(()),
            Some(reason) => Err(GuardError::ForbiddenAddress { ip, reason }),
        }
    }

    fn in_allowed_subnet(&self, ip: IpAddr) -> bool {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(|(v4, _)| IpAddr::V4(v4)),
            IpAddr::V4(_) => None,
        };
        self.allowed_subnets
            .iter()
            .any(|net| net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&v4)))
    }

    /// Parses and checks an endpoint URL: `http` or `https` (only `https`
    /// when `https_only`), no user name or password, a host, and, when the
    /// host is an IP address, an allowed one. The `url` crate has already
    /// turned the odd IPv4 spellings (`2130706433`, `0x7f.1`, `017700000001`,
    /// `127.1`) into plain addresses, so they are checked like any other.
    /// `localhost` and `*.localhost` (RFC 6761: always this machine) are
    /// refused unless loopback is allowed; other names are checked when they
    /// are resolved, by [`DestinationGuard::resolver`].
    pub fn check_url(&self, url: &str) -> Result<Url, GuardError> {
        let parsed = Url::parse(url.trim())?;
        match parsed.scheme() {
            "https" => {}
            "http" if !self.https_only => {}
            "http" => return Err(GuardError::HttpsRequired),
            other => return Err(GuardError::UnsupportedScheme(other.to_owned())),
        }
        // Credentials in URLs end up in logs and delivery records.
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(GuardError::UserInfo);
        }
        match parsed.host() {
            None => return Err(GuardError::MissingHost),
            Some(Host::Ipv4(v4)) => self.check_ip(IpAddr::V4(v4))?,
            Some(Host::Ipv6(v6)) => self.check_ip(IpAddr::V6(v6))?,
            Some(Host::Domain(domain)) => {
                let name = domain.trim_end_matches('.').to_ascii_lowercase();
                if name.is_empty() {
                    return Err(GuardError::MissingHost);
                }
                let loopback_allowed = self.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)).is_ok()
                    || self.check_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)).is_ok();
                if (name == "localhost" || name.ends_with(".localhost")) && !loopback_allowed {
                    return Err(GuardError::ForbiddenHost {
                        host: domain.to_owned(),
                    });
                }
            }
        }
        Ok(parsed)
    }

    /// A reqwest DNS resolver that resolves with the system resolver
    /// (`tokio::net::lookup_host`) and keeps only allowed addresses; a name
    /// left with none fails to resolve with [`GuardError::NoAllowedAddress`].
    pub fn resolver(self: Arc<Self>) -> GuardedResolver {
        GuardedResolver { guard: self }
    }

    /// A reqwest client builder that cannot be steered around this guard:
    /// the guarded resolver, no proxies (a proxy resolves names itself, and
    /// the environment's `HTTP_PROXY` would otherwise apply), and no
    /// redirects (a redirect target is neither checked by [`Self::check_url`]
    /// nor, when it is an IP literal, resolved). Add timeouts and the user
    /// agent on top.
    pub fn client_builder(self: &Arc<Self>) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(Arc::clone(self).resolver()))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
    }

    /// Resolves `host` and keeps the allowed addresses (the resolver's work,
    /// usable without reqwest).
    pub async fn resolve_allowed(&self, host: &str) -> Result<Vec<SocketAddr>, GuardError> {
        let addrs =
            tokio::net::lookup_host((host, 0))
                .await
                .map_err(|source| GuardError::Resolve {
                    host: host.to_owned(),
                    source,
                })?;
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for addr in addrs {
            match self.check_ip(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(GuardError::ForbiddenAddress { ip, reason }) => refused.push((ip, reason)),
                Err(_) => refused.push((addr.ip(), "refused")),
            }
        }
        if allowed.is_empty() {
            return Err(GuardError::NoAllowedAddress {
                host: host.to_owned(),
                refused: RefusedList(refused),
            });
        }
        Ok(allowed)
    }
}

/// The reqwest resolver made by [`DestinationGuard::resolver`].
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    guard: Arc<DestinationGuard>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = Arc::clone(&self.guard);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = guard.resolve_allowed(&host).await?;
            // Port 0: reqwest puts the URL's port (or the scheme's default) in.
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn strict() -> DestinationGuard {
        DestinationGuard::new(false, vec![], false)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip literal")
    }

    const FORBIDDEN: &[&str] = &[
        // IPv4
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "10.255.255.255",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.255.255.254",
        "169.254.169.254",
        "169.254.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.170",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        // IPv6
        "::",
        "::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "fc00::1",
        "fd12:3456:789a::1",
        "ff02::1",
        "ff0e::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "::8.8.8.8",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::1",
        "2002:7f00:1::",
        "2002:c0a8:101::1",
        "2002:a9fe:a9fe:1234::1",
        "2001::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "2001:2::1",
        "2001:db8::1",
        "3fff::1",
        "100::1",
        "::2",
        "1::1",
    ];

    const ALLOWED: &[&str] = &[
        "1.1.1.1",
        "8.8.8.8",
        "93.184.216.34",
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.167.255.255",
        "192.169.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "169.253.255.255",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "2001:4860:4860::8888",
    ];

    #[test]
    fn forbidden_addresses() {
        let g = strict();
        for s in FORBIDDEN {
            let addr = ip(s);
            assert!(
                matches!(g.check_ip(addr), Err(GuardError::ForbiddenAddress { .. })),
                "{s} should be forbidden"
            );
        }
    }

    #[test]
    fn allowed_addresses() {
        let g = strict();
        for s in ALLOWED {
            assert!(
                g.check_ip(ip(s)).is_ok(),
                "{s} should be allowed: {:?}",
                g.check_ip(ip(s))
            );
        }
    }

    #[test]
    fn allow_private_allows_everything() {
        let g = DestinationGuard::new(true, vec![], false);
        for s in FORBIDDEN.iter().chain(ALLOWED) {
            assert!(g.check_ip(ip(s)).is_ok(), "{s}");
        }
    }

    #[test]
    fn allowed_subnets_override() {
        let g = DestinationGuard::new(
            false,
            vec![
                "10.1.0.0/16".parse().expect("net"),
                "fd00:1::/64".parse().expect("net"),
            ],
            false,
        );
        assert!(g.check_ip(ip("10.1.2.3")).is_ok());
        assert!(g.check_ip(ip("::ffff:10.1.2.3")).is_ok());
        assert!(g.check_ip(ip("fd00:1::5")).is_ok());
        assert!(g.check_ip(ip("10.2.0.1")).is_err());
        assert!(g.check_ip(ip("fd00:2::5")).is_err());
        assert!(g.check_ip(ip("127.0.0.1")).is_err());
        assert!(g.check_ip(ip("8.8.8.8")).is_ok());
    }

    #[test]
    fn error_messages_name_the_range() {
        let err = strict()
            .check_ip(ip("169.254.169.254"))
            .expect_err("forbidden");
        assert!(err.to_string().contains("metadata"), "{err}");
        let err = strict()
            .check_ip(ip("::ffff:127.0.0.1"))
            .expect_err("forbidden");
        assert!(err.to_string().contains("IPv4-mapped"), "{err}");
    }

    #[test]
    fn url_forms() {
        let g = strict();
        // All of these are 127.0.0.1 once the url crate has normalised them.
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://017700000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.1/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:7f00:1]:8443/x",
            "http://[::1]/",
            "http://0/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://10.0.0.1:8080/hook",
            "http://localhost/",
            "http://LOCALHOST./",
            "http://api.localhost:3000/",
        ] {
            let r = g.check_url(url);
            assert!(
                matches!(
                    r,
                    Err(GuardError::ForbiddenAddress { .. } | GuardError::ForbiddenHost { .. })
                ),
                "{url}: {r:?}"
            );
        }
        for url in [
            "https://example.com/webhooks",
            "http://example.com:8080/x?y=1",
            "https://8.8.8.8/",
            "https://[2606:4700:4700::1111]/",
            "https://xn--bcher-kva.example/",
            "HTTPS://Example.COM/Path",
        ] {
            assert!(g.check_url(url).is_ok(), "{url}: {:?}", g.check_url(url));
        }
        assert_eq!(
            g.check_url("http://0x08.010.0x8.8/")
                .expect("public")
                .host_str(),
            Some("8.8.8.8")
        );
    }

    #[test]
    fn url_shape_rules() {
        let g = strict();
        assert!(matches!(
            g.check_url("not a url"),
            Err(GuardError::InvalidUrl(_))
        ));
        assert!(matches!(
            g.check_url("ftp://example.com/"),
            Err(GuardError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            g.check_url("file:///etc/passwd"),
            Err(GuardError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            g.check_url("gopher://example.com/"),
            Err(GuardError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            g.check_url("https://user@example.com/"),
            Err(GuardError::UserInfo)
        ));
        assert!(matches!(
            g.check_url("https://user:pw@example.com/"),
            Err(GuardError::UserInfo)
        ));
        assert!(matches!(
            g.check_url("https://:pw@example.com/"),
            Err(GuardError::UserInfo)
        ));
        assert!(
            g.check_url("http:///x")
                .is_ok_and(|u| u.host_str() == Some("x"))
        );
        assert!(matches!(
            g.check_url("unix:/run/sock"),
            Err(GuardError::UnsupportedScheme(_))
        ));

        let https_only = DestinationGuard::new(false, vec![], true);
        assert!(matches!(
            https_only.check_url("http://example.com/"),
            Err(GuardError::HttpsRequired)
        ));
        assert!(https_only.check_url("https://example.com/").is_ok());

        let dev = DestinationGuard::new(true, vec![], false);
        assert!(dev.check_url("http://localhost:8080/").is_ok());
        assert!(dev.check_url("http://127.0.0.1:8080/").is_ok());
        assert!(dev.check_url("https://user@example.com/").is_err());

        let loopback_open =
            DestinationGuard::new(false, vec!["127.0.0.0/8".parse().expect("net")], false);
        assert!(loopback_open.check_url("http://localhost/").is_ok());
        assert!(loopback_open.check_url("http://2130706433/").is_ok());
        assert!(loopback_open.check_url("http://10.0.0.1/").is_err());
    }

    /// Serves `n` tiny HTTP responses on 127.0.0.1 and returns the port.
    async fn serve_local(n: usize) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            for _ in 0..n {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = sock.shutdown().await;
            }
        });
        port
    }

    #[tokio::test]
    async fn resolver_refuses_loopback_unless_allowed() {
        let port = serve_local(2).await;
        let url = format!("http://localhost:{port}/");

        let strict = Arc::new(strict());
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(Arc::clone(&strict).resolver()))
            .no_proxy()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("client");
        let err = client
            .post(&url)
            .body("{}")
            .send()
            .await
            .expect_err("refused");
        assert!(err.is_connect(), "{err:?}");
        let mut source: Option<&dyn std::error::Error> = Some(&err);
        let mut found = false;
        while let Some(e) = source {
            if let Some(GuardError::NoAllowedAddress { refused, .. }) =
                e.downcast_ref::<GuardError>()
            {
                assert!(refused.0.iter().any(|(ip, _)| ip.is_loopback()));
                found = true;
            }
            source = e.source();
        }
        assert!(found, "the guard's error should be in the chain: {err:?}");

        let open = Arc::new(DestinationGuard::new(true, vec![], false));
        let client = open
            .client_builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("client");
        let resp = client.post(&url).body("{}").send().await.expect("allowed");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), "ok");

        // allowed_subnets opens loopback just as well.
        let subnet = Arc::new(DestinationGuard::new(
            false,
            vec!["127.0.0.1/32".parse().expect("net")],
            false,
        ));
        let client = subnet.client_builder().build().expect("client");
        let resp = client.get(&url).send().await.expect("allowed by subnet");
        assert_eq!(resp.status(), 200);
    }

    #[tokio::test]
    async fn resolve_allowed_reports_refusals() {
        let g = strict();
        match g.resolve_allowed("localhost").await {
            Err(GuardError::NoAllowedAddress { host, refused }) => {
                assert_eq!(host, "localhost");
                assert!(!refused.0.is_empty());
                assert!(refused.to_string().contains("loopback"));
            }
            other => panic!("expected NoAllowedAddress, got {other:?}"),
        }
        let ok = DestinationGuard::new(true, vec![], false)
            .resolve_allowed("localhost")
            .await
            .expect("allowed");
        assert!(ok.iter().all(|a| a.ip().is_loopback()));
    }
}
