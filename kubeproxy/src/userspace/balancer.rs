//! The choice of a backend for one service port, as a pure state machine: the
//! userspace proxier's round robin (`roundrobin.go`) with its `ClientIP` affinity,
//! and the other schedulers IPVS offers under their IPVS names. Every endpoint has
//! weight 1, as kube-proxy gives IPVS real servers.
//!
//! The proxy asks [`Balancer::next`] for an endpoint, passing the endpoints it already
//! failed to connect to for this client (upstream's `sessionAffinityReset`), and
//! reports each connection it opens and closes so that the connection-counting
//! schedulers see the load.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How a backend is chosen, named as `ipvsadm` names its schedulers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// `rr`: the next endpoint in turn, the userspace proxier's own.
    RoundRobin,
    /// `lc`: the endpoint with the fewest open connections.
    LeastConnection,
    /// `dh`: a hash of the destination (the service's cluster IP).
    DestinationHashing,
    /// `sh`: a hash of the client's address.
    SourceHashing,
    /// `sed`: the endpoint with the shortest expected delay, (connections + 1) / weight.
    ShortestExpectedDelay,
    /// `nq`: an idle endpoint if there is one, else as `sed`.
    NeverQueue,
}

impl Scheduler {
    pub const NAMES: [&'static str; 6] = ["rr", "lc", "dh", "sh", "sed", "nq"];

    pub fn name(self) -> &'static str {
        match self {
            Scheduler::RoundRobin => "rr",
            Scheduler::LeastConnection => "lc",
            Scheduler::DestinationHashing => "dh",
            Scheduler::SourceHashing => "sh",
            Scheduler::ShortestExpectedDelay => "sed",
            Scheduler::NeverQueue => "nq",
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown scheduler {0:?}: use one of rr, lc, dh, sh, sed, nq")]
pub struct UnknownScheduler(String);

impl FromStr for Scheduler {
    type Err = UnknownScheduler;

    fn from_str(s: &str) -> Result<Scheduler, UnknownScheduler> {
        match s {
            "rr" => Ok(Scheduler::RoundRobin),
            "lc" => Ok(Scheduler::LeastConnection),
            "dh" => Ok(Scheduler::DestinationHashing),
            "sh" => Ok(Scheduler::SourceHashing),
            "sed" => Ok(Scheduler::ShortestExpectedDelay),
            "nq" => Ok(Scheduler::NeverQueue),
            other => Err(UnknownScheduler(other.to_owned())),
        }
    }
}

/// The buckets of IPVS's `dh` and `sh` tables (`IP_VS_DH_TAB_BITS` = 8).
const HASH_BUCKETS: u32 = 256;

/// The IPVS bucket of an address: a multiplicative hash of the address in host order.
fn bucket(ip: Ipv4Addr) -> usize {
    let hash = u32::from(ip).wrapping_mul(2_654_435_761) >> (32 - HASH_BUCKETS.trailing_zeros());
    hash as usize
}

/// The endpoint a client sticks to, and when it last used it.
#[derive(Debug, Clone, Copy)]
struct Sticky {
    endpoint: SocketAddrV4,
    last_used: Instant,
}

/// The balancer state of one service port.
#[derive(Debug)]
pub struct Balancer {
    scheduler: Scheduler,
    destination: Ipv4Addr,
    endpoints: Vec<SocketAddrV4>,
    /// The round-robin position.
    index: usize,
    active: BTreeMap<SocketAddrV4, usize>,
    affinity: Option<Duration>,
    sticky: HashMap<Ipv4Addr, Sticky>,
}

impl Balancer {
    /// A balancer for the service port at `destination` (its cluster IP).
    pub fn new(scheduler: Scheduler, destination: Ipv4Addr) -> Balancer {
        Balancer {
            scheduler,
            destination,
            endpoints: Vec::new(),
            index: 0,
            active: BTreeMap::new(),
            affinity: None,
            sticky: HashMap::new(),
        }
    }

    /// `sessionAffinity: ClientIP` with this timeout, or `None`. Changing it forgets
    /// every client, as upstream recreates the service's state.
    pub fn set_affinity(&mut self, affinity: Option<Duration>) {
        if self.affinity != affinity {
            self.affinity = affinity;
            self.sticky.clear();
        }
    }

    /// The endpoints now. When they changed, the round robin starts over and clients
    /// stuck to an endpoint that is gone are forgotten.
    pub fn set_endpoints(&mut self, endpoints: Vec<SocketAddrV4>) {
        if self.endpoints == endpoints {
            return;
        }
        self.sticky.retain(|_, s| endpoints.contains(&s.endpoint));
        self.active.retain(|e, _| endpoints.contains(e));
        self.endpoints = endpoints;
        self.index = 0;
    }

    /// The endpoint for a new connection of `client`, other than those in `tried`;
    /// `None` when there is none left.
    pub fn next(
        &mut self,
        client: Ipv4Addr,
        now: Instant,
        tried: &[SocketAddrV4],
    ) -> Option<SocketAddrV4> {
        if let Some(ttl) = self.affinity {
            if tried.is_empty() {
                if let Some(sticky) = self.sticky.get_mut(&client) {
                    if now.saturating_duration_since(sticky.last_used) < ttl {
                        sticky.last_used = now;
                        return Some(sticky.endpoint);
                    }
                }
            }
        }
        let chosen = self.schedule(client, tried)?;
        if self.affinity.is_some() {
            self.sticky.insert(
                client,
                Sticky {
                    endpoint: chosen,
                    last_used: now,
                },
            );
        }
        Some(chosen)
    }

    fn schedule(&mut self, client: Ipv4Addr, tried: &[SocketAddrV4]) -> Option<SocketAddrV4> {
        let n = self.endpoints.len();
        let untried = |e: &SocketAddrV4| !tried.contains(e);
        match self.scheduler {
            Scheduler::RoundRobin => {
                let offset = (0..n).find(|k| untried(&self.endpoints[(self.index + k) % n]))?;
                let chosen = self.endpoints[(self.index + offset) % n];
                self.index = (self.index + offset + 1) % n;
                Some(chosen)
            }
            Scheduler::DestinationHashing | Scheduler::SourceHashing => {
                let key = if self.scheduler == Scheduler::SourceHashing {
                    client
                } else {
                    self.destination
                };
                let start = bucket(key);
                (0..n)
                    .map(|k| self.endpoints[(start + k) % n])
                    .find(|e| untried(e))
            }
            Scheduler::LeastConnection | Scheduler::ShortestExpectedDelay => {
                self.least_loaded(tried)
            }
            Scheduler::NeverQueue => self
                .endpoints
                .iter()
                .copied()
                .find(|e| untried(e) && self.connections(e) == 0)
                .or_else(|| self.least_loaded(tried)),
        }
    }

    /// The first untried endpoint with the fewest connections: with weight 1 for all,
    /// both IPVS's `lc` overhead and `sed`'s (connections + 1) / weight order them so.
    fn least_loaded(&self, tried: &[SocketAddrV4]) -> Option<SocketAddrV4> {
        self.endpoints
            .iter()
            .copied()
            .filter(|e| !tried.contains(e))
            .min_by_key(|e| self.connections(e))
    }

    pub fn connections(&self, endpoint: &SocketAddrV4) -> usize {
        self.active.get(endpoint).copied().unwrap_or(0)
    }

    /// A connection to `endpoint` opened.
    pub fn connected(&mut self, endpoint: SocketAddrV4) {
        if self.endpoints.contains(&endpoint) {
            *self.active.entry(endpoint).or_default() += 1;
        }
    }

    /// A connection to `endpoint` closed.
    pub fn disconnected(&mut self, endpoint: SocketAddrV4) {
        if let Some(count) = self.active.get_mut(&endpoint) {
            *count = count.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(last: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, last), 8080)
    }

    fn balancer(scheduler: Scheduler, endpoints: &[u8]) -> Balancer {
        let mut b = Balancer::new(scheduler, Ipv4Addr::new(10, 96, 0, 20));
        b.set_endpoints(endpoints.iter().map(|l| ep(*l)).collect());
        b
    }

    fn client(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, 1, last)
    }

    /// The endpoints of `count` new connections from one client.
    fn picks(b: &mut Balancer, count: usize) -> Vec<SocketAddrV4> {
        let now = Instant::now();
        (0..count)
            .map(|_| b.next(client(1), now, &[]).expect("an endpoint"))
            .collect()
    }

    #[test]
    fn names_round_trip() {
        for name in Scheduler::NAMES {
            assert_eq!(name.parse::<Scheduler>().expect("known").to_string(), name);
        }
        assert!("wrr".parse::<Scheduler>().is_err());
    }

    #[test]
    fn no_endpoints_no_choice() {
        for name in Scheduler::NAMES {
            let mut b = balancer(name.parse().expect("known"), &[]);
            assert_eq!(b.next(client(1), Instant::now(), &[]), None, "{name}");
        }
    }

    #[test]
    fn round_robin_takes_turns_and_restarts_when_endpoints_change() {
        let mut b = balancer(Scheduler::RoundRobin, &[1, 2, 3]);
        assert_eq!(picks(&mut b, 4), [ep(1), ep(2), ep(3), ep(1)]);
        b.set_endpoints(vec![ep(1), ep(2), ep(3)]);
        assert_eq!(picks(&mut b, 1), [ep(2)], "same endpoints: no restart");
        b.set_endpoints(vec![ep(2), ep(4)]);
        assert_eq!(picks(&mut b, 3), [ep(2), ep(4), ep(2)]);
    }

    #[test]
    fn round_robin_retry_skips_what_failed() {
        let mut b = balancer(Scheduler::RoundRobin, &[1, 2, 3]);
        let now = Instant::now();
        assert_eq!(b.next(client(1), now, &[]), Some(ep(1)));
        assert_eq!(b.next(client(1), now, &[ep(2)]), Some(ep(3)));
        assert_eq!(b.next(client(1), now, &[ep(1), ep(2), ep(3)]), None);
        assert_eq!(b.next(client(1), now, &[]), Some(ep(1)));
    }

    #[test]
    fn client_ip_affinity_sticks_until_the_timeout() {
        let mut b = balancer(Scheduler::RoundRobin, &[1, 2, 3]);
        b.set_affinity(Some(Duration::from_secs(10)));
        let start = Instant::now();
        let first = b.next(client(1), start, &[]);
        assert_eq!(first, Some(ep(1)));
        assert_eq!(b.next(client(2), start, &[]), Some(ep(2)));
        for s in [1, 9, 18] {
            let at = start + Duration::from_secs(s);
            assert_eq!(b.next(client(1), at, &[]), first, "refreshed at {s}s");
        }
        let later = start + Duration::from_secs(29);
        assert_eq!(b.next(client(1), later, &[]), Some(ep(3)), "expired");
    }

    #[test]
    fn affinity_is_reset_by_a_failure_or_a_vanished_endpoint() {
        let mut b = balancer(Scheduler::RoundRobin, &[1, 2, 3]);
        b.set_affinity(Some(Duration::from_secs(10)));
        let now = Instant::now();
        assert_eq!(b.next(client(1), now, &[]), Some(ep(1)));
        assert_eq!(b.next(client(1), now, &[ep(1)]), Some(ep(2)));
        assert_eq!(
            b.next(client(1), now, &[]),
            Some(ep(2)),
            "sticks to the retry"
        );
        b.set_endpoints(vec![ep(1), ep(3)]);
        assert_eq!(b.next(client(1), now, &[]), Some(ep(1)));
        b.set_affinity(None);
        assert_eq!(picks(&mut b, 2), [ep(3), ep(1)]);
    }

    #[test]
    fn least_connection_picks_the_least_busy() {
        let mut b = balancer(Scheduler::LeastConnection, &[1, 2, 3]);
        let now = Instant::now();
        for _ in 0..3 {
            let e = b.next(client(1), now, &[]).expect("an endpoint");
            b.connected(e);
        }
        assert_eq!([1, 2, 3].map(|l| b.connections(&ep(l))), [1, 1, 1]);
        b.connected(ep(1));
        b.disconnected(ep(3));
        assert_eq!(b.next(client(1), now, &[]), Some(ep(3)));
        assert_eq!(b.next(client(1), now, &[ep(3)]), Some(ep(2)));
    }

    #[test]
    fn shortest_expected_delay_orders_by_connections_plus_one() {
        let mut b = balancer(Scheduler::ShortestExpectedDelay, &[1, 2]);
        b.connected(ep(1));
        assert_eq!(picks(&mut b, 2), [ep(2), ep(2)], "no connection opened");
        b.connected(ep(2));
        b.connected(ep(2));
        assert_eq!(picks(&mut b, 1), [ep(1)]);
    }

    #[test]
    fn never_queue_prefers_an_idle_endpoint() {
        let mut b = balancer(Scheduler::NeverQueue, &[1, 2, 3]);
        b.connected(ep(1));
        b.connected(ep(1));
        b.connected(ep(2));
        assert_eq!(picks(&mut b, 1), [ep(3)]);
        b.connected(ep(3));
        b.connected(ep(3));
        assert_eq!(picks(&mut b, 1), [ep(2)], "none idle: as sed");
        b.disconnected(ep(1));
        b.disconnected(ep(1));
        assert_eq!(picks(&mut b, 1), [ep(1)]);
    }

    #[test]
    fn source_hashing_pins_each_client_and_falls_back_on_failure() {
        let mut b = balancer(Scheduler::SourceHashing, &[1, 2, 3]);
        let now = Instant::now();
        let chosen: Vec<_> = (1..=40)
            .map(|c| b.next(client(c), now, &[]).expect("an endpoint"))
            .collect();
        let again: Vec<_> = (1..=40)
            .map(|c| b.next(client(c), now, &[]).expect("an endpoint"))
            .collect();
        assert_eq!(chosen, again);
        let spread: std::collections::BTreeSet<_> = chosen.iter().collect();
        assert_eq!(spread.len(), 3, "clients spread over every endpoint");
        let first = chosen[0];
        let retry = b.next(client(1), now, &[first]).expect("another endpoint");
        assert_ne!(retry, first);
    }

    #[test]
    fn destination_hashing_sends_every_client_to_one_endpoint() {
        let mut b = balancer(Scheduler::DestinationHashing, &[1, 2, 3]);
        let now = Instant::now();
        let chosen: std::collections::BTreeSet<_> = (1..=40)
            .map(|c| b.next(client(c), now, &[]).expect("an endpoint"))
            .collect();
        assert_eq!(chosen.len(), 1);
        let only = *chosen.first().expect("one");
        assert_ne!(b.next(client(1), now, &[only]), Some(only));
    }

    #[test]
    fn connections_to_vanished_endpoints_are_forgotten() {
        let mut b = balancer(Scheduler::LeastConnection, &[1, 2]);
        b.connected(ep(1));
        b.set_endpoints(vec![ep(2)]);
        b.disconnected(ep(1));
        b.connected(ep(1));
        assert_eq!(b.connections(&ep(1)), 0);
        b.set_endpoints(vec![ep(1), ep(2)]);
        assert_eq!(b.connections(&ep(1)), 0);
    }
}
