//! Which addresses refreshd may connect to.
//!
//! Developers choose the URLs refreshd fetches, so every address a connection could go
//! to is judged here: IP literals before a request is built, and every address a name
//! resolves to before it is dialled. Private, loopback, link-local, shared, multicast,
//! reserved, documentation and benchmark ranges are blocked, and so are IPv6 forms that
//! carry an IPv4 address inside (mapped, compatible, NAT64, 6to4, Teredo), which are
//! judged by the IPv4 they carry. Operators may trust specific ranges
//! (`--allow-destination`): internal cloud-function endpoints, loopback in tests.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Blocked IPv4 ranges, with what they are.
const BLOCKED_V4: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved and broadcast"),
];

/// Blocked IPv6 ranges that do not carry an IPv4 address.
const BLOCKED_V6: &[(&str, &str)] = &[
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
    ("2001:db8::/32", "documentation"),
    ("100::/64", "discard"),
];

/// Why an address may not be dialled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("destination {address} is blocked: {range} ({what})")]
pub struct Blocked {
    pub address: IpAddr,
    /// The blocked range, or for [`BlockReason::OwnListener`] the listener's address.
    pub range: String,
    pub what: &'static str,
    pub reason: BlockReason,
}

/// Which rule blocked an address: the operator can lift one and not the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// A private, loopback or reserved range that the operator did not trust.
    Range,
    /// refreshd's own API or metrics listener, blocked whatever is trusted.
    OwnListener,
}

/// What [`Blocked::what`] says for refreshd's own listeners.
pub const OWN_LISTENER: &str = "refreshd's own listener";

impl Blocked {
    /// One line telling the developer or operator what would make the URL work.
    pub fn hint(&self) -> &'static str {
        match self.reason {
            BlockReason::Range => {
                "refreshd only reaches public addresses unless the operator trusts the \
                 range: start refreshd with --allow-destination CIDR (for example \
                 --allow-destination 127.0.0.1/32 for a test server on loopback)"
            }
            BlockReason::OwnListener => {
                "this is refreshd's own API or metrics address; refreshd never fetches \
                 from or delivers to itself, whatever --allow-destination trusts: use \
                 another server or port"
            }
        }
    }
}

/// A CIDR given to `--allow-destination` that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a CIDR range such as 10.1.0.0/16 or fd00::/8")]
pub struct BadCidr(pub String);

/// The operator's destination rules: the fixed block list, trusted ranges, and
/// refreshd's own listeners.
#[derive(Clone, Debug, Default)]
pub struct DestinationPolicy {
    trusted: Vec<IpNet>,
    own_listeners: Vec<SocketAddr>,
}

impl DestinationPolicy {
    /// A policy that trusts `trusted` ranges (they may be private or loopback, and may be
    /// reached over plain `http://`).
    pub fn new(trusted: Vec<IpNet>) -> Self {
        DestinationPolicy {
            trusted,
            own_listeners: Vec::new(),
        }
    }

    /// The same policy, also refusing refreshd's own listening sockets (API, metrics),
    /// whatever is trusted: a trusted loopback range must not let a developer's URL
    /// read `/metrics` or call the API as refreshd. A listener on an unspecified
    /// address (`0.0.0.0`, `::`) stands for its port on every local address.
    pub fn with_own_listeners(mut self, listeners: Vec<SocketAddr>) -> Self {
        self.own_listeners = listeners;
        self
    }

    pub fn own_listeners(&self) -> &[SocketAddr] {
        &self.own_listeners
    }

    /// Is `port` the port of one of refreshd's own listeners? Only then can a
    /// connection on it reach refreshd itself.
    pub fn is_own_port(&self, port: u16) -> bool {
        self.own_listeners.iter().any(|own| own.port() == port)
    }

    /// May refreshd connect to `address`? Its own listeners never; then as
    /// [`DestinationPolicy::check`].
    pub fn check_socket(&self, address: SocketAddr) -> Result<(), Blocked> {
        let ip = canonical(address.ip());
        let own = self.own_listeners.iter().find(|own| {
            own.port() == address.port()
                && (canonical(own.ip()) == ip || (own.ip().is_unspecified() && is_local(ip)))
        });
        if let Some(own) = own {
            return Err(Blocked {
                address: address.ip(),
                range: own.to_string(),
                what: OWN_LISTENER,
                reason: BlockReason::OwnListener,
            });
        }
        self.check(address.ip())
    }

    /// Parses `--allow-destination` values; a bare address means that one address.
    pub fn parse_trusted<S: AsRef<str>>(values: &[S]) -> Result<Vec<IpNet>, BadCidr> {
        values
            .iter()
            .map(|v| {
                let v = v.as_ref().trim();
                IpNet::from_str(v)
                    .or_else(|_| IpAddr::from_str(v).map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| BadCidr(v.to_string()))
            })
            .collect()
    }

    pub fn trusted(&self) -> &[IpNet] {
        &self.trusted
    }

    /// The address is in a range the operator trusts.
    pub fn is_trusted(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.trusted.iter().any(|net| net.contains(&address))
    }

    /// May refreshd connect to `address`? Trusted ranges win over the block list.
    pub fn check(&self, address: IpAddr) -> Result<(), Blocked> {
        if self.is_trusted(address) {
            return Ok(());
        }
        match blocked_range(address) {
            Some(blocked) => Err(blocked),
            None => Ok(()),
        }
    }
}

/// Is `ip` an address of this host? Loopback and unspecified addresses always are (a
/// connection to 0.0.0.0 reaches the local host); any other is local when a socket can
/// be bound to it, which is the kernel's own answer and needs no interface list.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// `::ffff:a.b.c.d` is the IPv4 address a.b.c.d on the wire; treat it as such.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The blocked range `address` falls in, if any, ignoring trusted ranges.
pub fn blocked_range(address: IpAddr) -> Option<Blocked> {
    match address {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(v4: Ipv4Addr) -> Option<Blocked> {
    BLOCKED_V4.iter().find_map(|(range, what)| {
        let net = Ipv4Net::from_str(range).expect("constant ranges parse");
        net.contains(&v4).then(|| Blocked {
            address: IpAddr::V4(v4),
            range: (*range).to_string(),
            what,
            reason: BlockReason::Range,
        })
    })
}

fn in_v6(v6: Ipv6Addr, range: &str) -> bool {
    Ipv6Net::from_str(range)
        .expect("constant ranges parse")
        .contains(&v6)
}

fn v4_at(v6: Ipv6Addr, byte: usize) -> Ipv4Addr {
    let o = v6.octets();
    Ipv4Addr::new(o[byte], o[byte + 1], o[byte + 2], o[byte + 3])
}

/// Judges an embedded IPv4 address, reporting the IPv6 address and the form it came in.
fn embedded(v6: Ipv6Addr, v4: Ipv4Addr, form: &'static str) -> Option<Blocked> {
    blocked_v4(v4).map(|inner| Blocked {
        address: IpAddr::V6(v6),
        range: format!("{form} of {} in {}", inner.address, inner.range),
        what: inner.what,
        reason: BlockReason::Range,
    })
}

fn blocked_v6(v6: Ipv6Addr) -> Option<Blocked> {
    if let Some((range, what)) = BLOCKED_V6.iter().find(|(range, _)| in_v6(v6, range)) {
        return Some(Blocked {
            address: IpAddr::V6(v6),
            range: (*range).to_string(),
            what,
            reason: BlockReason::Range,
        });
    }
    if in_v6(v6, "::ffff:0:0/96") {
        return embedded(v6, v4_at(v6, 12), "IPv4-mapped");
    }
    if in_v6(v6, "::/96") {
        return embedded(v6, v4_at(v6, 12), "IPv4-compatible");
    }
    if in_v6(v6, "64:ff9b::/96") {
        return embedded(v6, v4_at(v6, 12), "NAT64");
    }
    if in_v6(v6, "64:ff9b:1::/48") {
        return embedded(v6, v4_at(v6, 12), "local NAT64");
    }
    if in_v6(v6, "2002::/16") {
        return embedded(v6, v4_at(v6, 2), "6to4");
    }
    if in_v6(v6, "2001::/32") {
        // Teredo carries the server's IPv4 in bits 32–63 and the client's, inverted,
        // in the last 32 bits; either may point inward.
        let server = v4_at(v6, 4);
        let client = Ipv4Addr::from(!u32::from(v4_at(v6, 12)));
        return embedded(v6, server, "Teredo server")
            .or_else(|| embedded(v6, client, "Teredo client"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(text: &str) -> bool {
        blocked_range(text.parse().unwrap()).is_some()
    }

    #[test]
    fn every_v4_range_blocks_its_first_and_last_address_and_not_its_neighbours() {
        for (range, _) in BLOCKED_V4 {
            let net = Ipv4Net::from_str(range).unwrap();
            assert!(blocked_v4(net.network()).is_some(), "{range} first");
            assert!(blocked_v4(net.broadcast()).is_some(), "{range} last");
            let before = u32::from(net.network()).checked_sub(1).map(Ipv4Addr::from);
            let after = u32::from(net.broadcast())
                .checked_add(1)
                .map(Ipv4Addr::from);
            for neighbour in [before, after].into_iter().flatten() {
                let inside_other = BLOCKED_V4
                    .iter()
                    .any(|(r, _)| Ipv4Net::from_str(r).unwrap().contains(&neighbour));
                assert_eq!(
                    blocked_v4(neighbour).is_some(),
                    inside_other,
                    "{range} neighbour {neighbour}"
                );
            }
        }
    }

    #[test]
    fn every_v6_range_blocks_its_first_and_last_address() {
        for (range, _) in BLOCKED_V6 {
            let net = Ipv6Net::from_str(range).unwrap();
            assert!(blocked_v6(net.network()).is_some(), "{range} first");
            assert!(blocked_v6(net.broadcast()).is_some(), "{range} last");
        }
        // Ranges that carry an IPv4 address: their ends carry 0.0.0.0 and
        // 255.255.255.255 (both blocked); a public IPv4 inside is allowed.
        for (range, public_inside) in [
            ("::ffff:0:0/96", "::ffff:8.8.8.8"),
            ("::/96", "::8.8.8.8"),
            ("64:ff9b::/96", "64:ff9b::8.8.8.8"),
            ("64:ff9b:1::/48", "64:ff9b:1::808:808"),
            ("2002::/16", "2002:808:808::"),
            ("2001::/32", "2001:0:808:808::f7f7:f7f7"),
        ] {
            let net = Ipv6Net::from_str(range).unwrap();
            assert!(blocked_v6(net.network()).is_some(), "{range} first");
            assert!(blocked_v6(net.broadcast()).is_some(), "{range} last");
            assert!(!blocked(public_inside), "{public_inside}");
        }
    }

    #[test]
    fn v6_neighbours_just_outside_are_allowed() {
        for outside in [
            "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", // before fc00::/7
            "fe00::",                                  // after fc00::/7
            "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", // before fe80::/10
            "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",  // before 2001:db8::/32
            "2001:db9::",                              // after 2001:db8::/32
            "ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",   // before 100::/64
            "100:0:0:1::",                             // after 100::/64
            "2001:1::",                                // after 2001::/32 (Teredo)
            "2003::",                                  // after 2002::/16 (6to4)
            "64:ff9b::1:0:0",                          // after 64:ff9b::/96
        ] {
            assert!(!blocked(outside), "{outside}");
        }
    }

    #[test]
    fn cgnat_edges() {
        assert!(!blocked("100.63.255.255"));
        assert!(blocked("100.64.0.0"));
        assert!(blocked("100.127.255.255"));
        assert!(!blocked("100.128.0.0"));
    }

    #[test]
    fn ipv6_ranges_and_embedded_ipv4() {
        for bad in [
            "::",
            "::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "100::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2001:0:7f00:1::",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
        ] {
            assert!(blocked(bad), "{bad}");
        }
        for good in [
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:4860:4860::8888",
        ] {
            assert!(!blocked(good), "{good}");
        }
    }

    #[test]
    fn metadata_addresses_are_blocked() {
        for metadata in [
            "169.254.169.254",
            "100.100.100.200",
            "192.0.0.192",
            "fd00:ec2::254",
        ] {
            assert!(blocked(metadata), "{metadata}");
        }
    }

    #[test]
    fn trusted_ranges_win_and_cover_mapped_forms() {
        let policy = DestinationPolicy::new(
            DestinationPolicy::parse_trusted(&["127.0.0.2/32", "10.1.0.0/16"]).unwrap(),
        );
        assert!(policy.check("127.0.0.2".parse().unwrap()).is_ok());
        assert!(policy.check("::ffff:127.0.0.2".parse().unwrap()).is_ok());
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_err());
        assert!(policy.check("10.1.2.3".parse().unwrap()).is_ok());
        assert!(policy.check("10.2.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn own_listeners_are_blocked_whatever_is_trusted() {
        let sock = |s: &str| s.parse::<SocketAddr>().unwrap();
        let policy =
            DestinationPolicy::new(DestinationPolicy::parse_trusted(&["127.0.0.0/8"]).unwrap())
                .with_own_listeners(vec![sock("127.0.0.1:8080"), sock("0.0.0.0:9464")]);
        for own in [
            "127.0.0.1:8080",
            "[::ffff:127.0.0.1]:8080",
            "127.0.0.1:9464",
            "127.0.0.9:9464",
            "0.0.0.0:9464",
            "[::1]:9464",
        ] {
            let blocked = policy.check_socket(sock(own)).unwrap_err();
            assert_eq!(blocked.reason, BlockReason::OwnListener, "{own}");
            assert!(blocked.hint().contains("--allow-destination"), "{own}");
        }
        // Another port on the same address, or 8080 on another loopback address, is not
        // refreshd's and stays trusted.
        for other in ["127.0.0.1:8000", "127.0.0.2:8080"] {
            assert!(policy.check_socket(sock(other)).is_ok(), "{other}");
        }
        // A public address is not local, so an unspecified listener does not cover it.
        assert!(policy.check_socket(sock("8.8.8.8:9464")).is_ok());
    }

    #[test]
    fn a_blocked_range_hints_at_allow_destination() {
        let blocked = DestinationPolicy::default()
            .check("127.0.0.1".parse().unwrap())
            .unwrap_err();
        assert_eq!(blocked.reason, BlockReason::Range);
        assert!(blocked.hint().contains("--allow-destination"));
    }

    #[test]
    fn bad_cidr_is_named() {
        assert_eq!(
            DestinationPolicy::parse_trusted(&["10.0.0.0/33"]),
            Err(BadCidr("10.0.0.0/33".into()))
        );
        assert_eq!(
            DestinationPolicy::parse_trusted(&["::1"]).unwrap()[0].to_string(),
            "::1/128"
        );
    }
}
