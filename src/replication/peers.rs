//! The cluster's voters as an operator writes them (`--peers 1=10.0.0.1:7001,2=…`, SPEC 8), read
//! strictly: a typo in a peer list must stop a node at start-up with a message naming the
//! entry, not form a cluster of the wrong shape.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::{NodeId, NodeInfo};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeersError {
    #[error("--peers is empty: list every voter as ID=HOST:PORT, separated by commas")]
    Empty,
    #[error("--peers entry {entry:?} is not ID=HOST:PORT")]
    Malformed { entry: String },
    #[error("--peers entry {entry:?}: the node id must be a whole number from 1 to 2^64-1")]
    BadId { entry: String },
    #[error("--peers entry {entry:?}: {problem}")]
    BadAddress { entry: String, problem: &'static str },
    #[error("--peers names node {id} twice")]
    DuplicateId { id: NodeId },
    #[error("--peers gives nodes {first} and {second} the same address {addr}")]
    DuplicateAddress { first: NodeId, second: NodeId, addr: String },
    #[error("--node-id {id} is not in --peers ({listed}): a voter lists itself too")]
    SelfMissing { id: NodeId, listed: String },
    #[error(
        "--peers gives this node (node {id}) port {peer_port}, but --raft-listen is {listen}: the ports must match"
    )]
    PortMismatch { id: NodeId, peer_port: u16, listen: SocketAddr },
}

/// Parses `ID=HOST:PORT,…` (spaces around entries allowed). Hosts are names or IP addresses
/// (IPv6 in brackets); ports 1 to 65535; ids and addresses unique.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, NodeInfo>, PeersError> {
    let mut peers = BTreeMap::new();
    let mut by_addr: BTreeMap<String, NodeId> = BTreeMap::new();
    for entry in text.split(',').map(str::trim) {
        if entry.is_empty() {
            if text.trim().is_empty() {
                return Err(PeersError::Empty);
            }
            return Err(PeersError::Malformed { entry: entry.to_owned() });
        }
        let (id, addr) = entry.split_once('=').ok_or_else(|| PeersError::Malformed { entry: entry.to_owned() })?;
        let id: NodeId = match id.trim().parse() {
            Ok(id) if id > 0 => id,
            _ => return Err(PeersError::BadId { entry: entry.to_owned() }),
        };
        let addr = addr.trim();
        check_address(addr).map_err(|problem| PeersError::BadAddress { entry: entry.to_owned(), problem })?;
        let key = addr.to_ascii_lowercase();
        if let Some(first) = by_addr.insert(key, id) {
            return Err(PeersError::DuplicateAddress { first, second: id, addr: addr.to_owned() });
        }
        if peers.insert(id, NodeInfo { raft_addr: addr.to_owned() }).is_some() {
            return Err(PeersError::DuplicateId { id });
        }
    }
    if peers.is_empty() {
        return Err(PeersError::Empty);
    }
    Ok(peers)
}

/// Checks that this node is among `peers` and that its listed port is the one it listens on
/// (its listed host may differ from the bind address: `0.0.0.0` binds, a name is advertised).
pub fn check_self(
    node_id: NodeId,
    raft_listen: SocketAddr,
    peers: &BTreeMap<NodeId, NodeInfo>,
) -> Result<(), PeersError> {
    let Some(me) = peers.get(&node_id) else {
        let listed = peers.keys().map(|id| id.to_string()).collect::<Vec<_>>().join(", ");
        return Err(PeersError::SelfMissing { id: node_id, listed });
    };
    let peer_port = port_of(&me.raft_addr).unwrap_or(0);
    if peer_port != raft_listen.port() {
        return Err(PeersError::PortMismatch { id: node_id, peer_port, listen: raft_listen });
    }
    Ok(())
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':').and_then(|(_, port)| port.parse().ok())
}

fn check_address(addr: &str) -> Result<(), &'static str> {
    let (host, port) = addr.rsplit_once(':').ok_or("the address has no :PORT")?;
    match port.parse::<u16>() {
        Ok(port) if port > 0 => {}
        _ => return Err("the port must be a number from 1 to 65535"),
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("an IPv6 host must be in brackets, [::1]:7001")?;
        return inner.parse::<std::net::Ipv6Addr>().map(drop).map_err(|_| "the bracketed host is not an IPv6 address");
    }
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host.contains(':') {
        return Err("an IPv6 host must be in brackets, [::1]:7001");
    }
    let name_ok = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if name_ok { Ok(()) } else { Err("the host is neither an IP address nor a DNS name") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(peers: &BTreeMap<NodeId, NodeInfo>) -> Vec<(NodeId, &str)> {
        peers.iter().map(|(id, node)| (*id, node.raft_addr.as_str())).collect()
    }

    #[test]
    fn peer_lists_parse_as_written() {
        let peers = parse_peers("1=10.0.0.1:7001, 2=node-b.dc2.example:7001 ,3=[fd00::3]:7001").unwrap();
        assert_eq!(addrs(&peers), [(1, "10.0.0.1:7001"), (2, "node-b.dc2.example:7001"), (3, "[fd00::3]:7001")]);
        assert_eq!(addrs(&parse_peers("7=localhost:1").unwrap()), [(7, "localhost:1")]);
    }

    #[test]
    fn every_mistake_is_named() {
        type Expected = fn(&PeersError) -> bool;
        let cases: [(&str, Expected); 14] = [
            ("", |e| *e == PeersError::Empty),
            ("  ", |e| *e == PeersError::Empty),
            ("1=a:1,,2=b:1", |e| matches!(e, PeersError::Malformed { .. })),
            ("1=a:1,", |e| matches!(e, PeersError::Malformed { .. })),
            ("10.0.0.1:7001", |e| matches!(e, PeersError::Malformed { .. })),
            ("0=a:1", |e| matches!(e, PeersError::BadId { .. })),
            ("x=a:1", |e| matches!(e, PeersError::BadId { .. })),
            ("1=a", |e| matches!(e, PeersError::BadAddress { .. })),
            ("1=a:0", |e| matches!(e, PeersError::BadAddress { .. })),
            ("1=a:70000", |e| matches!(e, PeersError::BadAddress { .. })),
            ("1=fd00::3:7001", |e| matches!(e, PeersError::BadAddress { .. })),
            ("1=bad_host:7001", |e| matches!(e, PeersError::BadAddress { .. })),
            ("1=a:1,1=b:1", |e| *e == PeersError::DuplicateId { id: 1 }),
            ("1=A:1,2=a:1", |e| matches!(e, PeersError::DuplicateAddress { first: 1, second: 2, .. })),
        ];
        for (text, expected) in cases {
            let error = parse_peers(text).unwrap_err();
            assert!(expected(&error), "{text:?} gave {error:?}");
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn a_node_must_list_itself_on_its_own_port() {
        let peers = parse_peers("1=10.0.0.1:7001,2=10.0.0.2:7001,3=10.0.0.3:7001").unwrap();
        let listen: SocketAddr = "0.0.0.0:7001".parse().unwrap();
        assert_eq!(check_self(2, listen, &peers), Ok(()));
        assert!(matches!(check_self(4, listen, &peers), Err(PeersError::SelfMissing { id: 4, .. })));
        let other: SocketAddr = "0.0.0.0:7002".parse().unwrap();
        assert!(matches!(check_self(2, other, &peers), Err(PeersError::PortMismatch { peer_port: 7001, .. })));
    }
}
