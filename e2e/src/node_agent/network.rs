//! Pod addresses.
//!
//! Pods must be reachable at their own address from this machine (probes, clients, other pods),
//! and EndpointSlices must accept those addresses: the API server refuses endpoint addresses in
//! the loopback range (`may not be in the loopback range (127.0.0.0/8, ::1/128)`), so 127.x
//! addresses would leave every Service without endpoints.
//!
//! [`PodNetworkKind::Routed`] (the default) therefore uses 198.18.0.0/15 (reserved for network
//! benchmarking, RFC 2544, so never a real network here) made local the way 127.0.0.0/8 is: the
//! agent claims a free /21 block (a lock file per block under the temp dir, held for the agent's
//! life, so concurrent agents never share one, and a crashed agent's block is reused) and adds
//! `local <block> dev lo` to the kernel's local routing table (`ip route replace`; this needs
//! CAP_NET_ADMIN, i.e. root, which this machine has). Every address in the block can then be
//! bound and connected to without configuring anything per pod. The route is deleted when the
//! agent stops. [`PodNetworkKind::Loopback`] uses 127.x.0.0/16 instead, with no privileges,
//! where EndpointSlices stay empty.
//!
//! Node `n` (from 0) gets the block's `n`-th /24 as its pod CIDR, `.1` as its InternalIP, and
//! hands pod addresses `.2`–`.254` out round-robin, like the host-local IPAM plugin, so a
//! replacement pod gets a fresh address rather than its predecessor's.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Mutex;

use crate::{Error, Result};

/// Where pod addresses come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodNetworkKind {
    /// A block of 198.18.0.0/15 routed to loopback (needs CAP_NET_ADMIN). EndpointSlices work.
    #[default]
    Routed,
    /// A 127.x.0.0/16 (no privileges needed). The API server refuses these addresses in
    /// EndpointSlices, so Services have no endpoints.
    Loopback,
}

/// The routed range and the size of each agent's block.
const ROUTED_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const ROUTED_BLOCKS: u32 = 64; // /15 in /21 blocks
const BLOCK_PREFIX: u32 = 21;
/// Nodes per agent: one /24 each.
pub const MAX_NODES: usize = 1 << (24 - BLOCK_PREFIX);

/// The agent's claimed address block; dropping it removes the route and the claim.
#[derive(Debug)]
pub struct PodNetwork {
    kind: PodNetworkKind,
    base: Ipv4Addr,
    prefix: u32,
    /// Held (flock) while the block is ours.
    _lock: Option<File>,
    route: Option<String>,
}

impl PodNetwork {
    /// Claim a block for up to [`MAX_NODES`] nodes.
    pub fn claim(kind: PodNetworkKind) -> Result<PodNetwork> {
        match kind {
            PodNetworkKind::Loopback => {
                let octet = free_loopback_octet();
                Ok(PodNetwork {
                    kind,
                    base: Ipv4Addr::new(127, octet, 0, 0),
                    prefix: 16,
                    _lock: None,
                    route: None,
                })
            }
            PodNetworkKind::Routed => claim_routed(),
        }
    }

    pub fn kind(&self) -> PodNetworkKind {
        self.kind
    }

    /// The whole block, e.g. `198.18.8.0/21`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.base, self.prefix)
    }

    /// The network of node `index` (from 0).
    pub fn node(&self, index: usize) -> NodeNetwork {
        assert!(index < MAX_NODES, "at most {MAX_NODES} nodes per agent");
        // Loopback blocks skip 127.x.0.0/24 so no node address ends in .0.1 of a /16.
        let offset = if self.kind == PodNetworkKind::Loopback {
            index + 1
        } else {
            index
        };
        NodeNetwork::new(Ipv4Addr::from(
            u32::from(self.base) + ((offset as u32) << 8),
        ))
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        if let Some(route) = self.route.take() {
            let _ = Command::new("ip")
                .args(["route", "del", "local", &route, "dev", "lo"])
                .output();
        }
    }
}

fn claim_routed() -> Result<PodNetwork> {
    let dir = std::env::temp_dir().join("ryzanstein-e2e-pod-network");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let start = std::process::id() % ROUTED_BLOCKS;
    for i in 0..ROUTED_BLOCKS {
        let block = (start + i) % ROUTED_BLOCKS;
        let path = dir.join(format!("block-{block}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue; // another agent holds it
        }
        let base = Ipv4Addr::from(u32::from(ROUTED_BASE) + (block << (32 - BLOCK_PREFIX)));
        let cidr = format!("{base}/{BLOCK_PREFIX}");
        // `replace`: a route left by a crashed agent is taken over.
        let out = Command::new("ip")
            .args(["route", "replace", "local", &cidr, "dev", "lo"])
            .output()
            .map_err(|e| {
                Error::Network(format!(
                    "running `ip route` (iproute2) to route {cidr} to loopback: {e}"
                ))
            })?;
        if !out.status.success() {
            return Err(Error::Network(format!(
                "`ip route replace local {cidr} dev lo` failed ({}): {}; the routed pod network \
                 needs CAP_NET_ADMIN (root). PodNetworkKind::Loopback needs none, but the API \
                 server refuses loopback addresses in EndpointSlices",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        return Ok(PodNetwork {
            kind: PodNetworkKind::Routed,
            base,
            prefix: BLOCK_PREFIX,
            _lock: Some(file),
            route: Some(cidr),
        });
    }
    Err(Error::Network(format!(
        "all {ROUTED_BLOCKS} pod network blocks of {ROUTED_BASE}/15 are held by other agents"
    )))
}

/// Second octets never chosen for loopback networks (127.0.0.0/16 is where everything else
/// listens).
const FIRST_LOOPBACK_OCTET: u8 = 16;
const LAST_LOOPBACK_OCTET: u8 = 250;

/// A free `127.<octet>.0.0/16`: no TCP or UDP socket in /proc/net is bound inside it.
/// Starts from a pseudo-random octet (the process id) so concurrent agents spread out.
fn free_loopback_octet() -> u8 {
    let used = used_loopback_octets();
    let span = u32::from(LAST_LOOPBACK_OCTET - FIRST_LOOPBACK_OCTET) + 1;
    let start = (std::process::id().wrapping_mul(2_654_435_761) >> 8) % span;
    (0..span)
        .map(|i| FIRST_LOOPBACK_OCTET + ((start + i) % span) as u8)
        .find(|octet| !used.contains(octet))
        .unwrap_or(FIRST_LOOPBACK_OCTET)
}

/// Second octets of 127/8 addresses that sockets on this machine are bound to.
fn used_loopback_octets() -> BTreeSet<u8> {
    let mut used = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/udp"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // "  0: 0100007F:1F90 00000000:0000 0A ..."; the address is the kernel's __be32
            // printed as a native integer.
            let Some(local) = line.split_whitespace().nth(1) else {
                continue;
            };
            let Some((hex, _port)) = local.split_once(':') else {
                continue;
            };
            if let Ok(raw) = u32::from_str_radix(hex, 16) {
                let ip = Ipv4Addr::from(raw.to_ne_bytes());
                if ip.octets()[0] == 127 {
                    used.insert(ip.octets()[1]);
                }
            }
        }
    }
    used
}

/// One node's pod CIDR (a /24) and the addresses handed out from it.
#[derive(Debug)]
pub struct NodeNetwork {
    base: Ipv4Addr,
    state: Mutex<Allocations>,
}

#[derive(Debug, Default)]
struct Allocations {
    in_use: BTreeSet<u8>,
    last: u8,
}

impl NodeNetwork {
    /// The /24 starting at `base`.
    pub fn new(base: Ipv4Addr) -> NodeNetwork {
        NodeNetwork {
            base,
            state: Mutex::new(Allocations {
                in_use: BTreeSet::new(),
                last: 1,
            }),
        }
    }

    /// The node's InternalIP (`.1`).
    pub fn node_ip(&self) -> Ipv4Addr {
        self.ip(1)
    }

    /// The pod CIDR, e.g. `198.18.8.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/24", self.base)
    }

    /// The next free pod address after the last one handed out, or `None` when all 253 are
    /// in use.
    pub fn allocate(&self) -> Option<Ipv4Addr> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let start = state.last;
        let mut host = start;
        loop {
            host = if host >= 254 { 2 } else { host + 1 };
            if !state.in_use.contains(&host) {
                state.in_use.insert(host);
                state.last = host;
                return Some(self.ip(host));
            }
            if host == start || (start < 2 && host == 254) {
                return None;
            }
        }
    }

    /// Give `ip` back.
    pub fn release(&self, ip: Ipv4Addr) {
        let [a, b, c, host] = ip.octets();
        if [a, b, c] == self.base.octets()[..3] {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.in_use.remove(&host);
        }
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.base.octets();
        Ipv4Addr::new(a, b, c, host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_handed_out_round_robin() {
        let net = NodeNetwork::new(Ipv4Addr::new(198, 18, 8, 0));
        assert_eq!(net.node_ip(), Ipv4Addr::new(198, 18, 8, 1));
        assert_eq!(net.cidr(), "198.18.8.0/24");
        let a = net.allocate().unwrap();
        let b = net.allocate().unwrap();
        assert_eq!(
            (a, b),
            (Ipv4Addr::new(198, 18, 8, 2), Ipv4Addr::new(198, 18, 8, 3))
        );
        net.release(a);
        // A released address is not the next one handed out.
        assert_eq!(net.allocate().unwrap(), Ipv4Addr::new(198, 18, 8, 4));
    }

    #[test]
    fn all_253_addresses_then_none() {
        let net = NodeNetwork::new(Ipv4Addr::new(127, 42, 3, 0));
        let all: BTreeSet<Ipv4Addr> = (0..253).map(|_| net.allocate().unwrap()).collect();
        assert_eq!(all.len(), 253);
        assert!(all
            .iter()
            .all(|ip| ip.octets()[2] == 3 && ip.octets()[3] >= 2));
        assert_eq!(net.allocate(), None);
        net.release(Ipv4Addr::new(127, 42, 3, 77));
        assert_eq!(net.allocate(), Some(Ipv4Addr::new(127, 42, 3, 77)));
    }

    #[test]
    fn loopback_networks_avoid_used_octets() {
        let net = PodNetwork::claim(PodNetworkKind::Loopback).unwrap();
        let octet = net.base.octets()[1];
        assert!((FIRST_LOOPBACK_OCTET..=LAST_LOOPBACK_OCTET).contains(&octet));
        assert!(!used_loopback_octets().contains(&octet));
        assert_eq!(net.node(0).cidr(), format!("127.{octet}.1.0/24"));
    }

    #[test]
    fn routed_blocks_are_disjoint_and_in_range() {
        for block in [0u32, 1, 63] {
            let base = Ipv4Addr::from(u32::from(ROUTED_BASE) + (block << (32 - BLOCK_PREFIX)));
            let [a, b, ..] = base.octets();
            assert_eq!(a, 198);
            assert!(b == 18 || b == 19, "{base}");
        }
        let net = PodNetwork {
            kind: PodNetworkKind::Routed,
            base: Ipv4Addr::new(198, 18, 8, 0),
            prefix: BLOCK_PREFIX,
            _lock: None,
            route: None,
        };
        assert_eq!(net.node(0).cidr(), "198.18.8.0/24");
        assert_eq!(net.node(7).cidr(), "198.18.15.0/24");
        assert_eq!(net.cidr(), "198.18.8.0/21");
    }
}
