//! Free loopback port allocation for test servers.
//!
//! Ports are picked at random *below* the kernel's ephemeral range (read from
//! `/proc/sys/net/ipv4/ip_local_port_range`), so the outgoing connections that tests
//! open in parallel can never grab a port between the moment it is handed out and the
//! moment the server binds it, nor while a server is stopped for an outage test.
//! Every port handed out is remembered for the life of the process and never handed
//! out twice, so parallel tests in one test binary cannot collide either. Servers that
//! bind a second port at a fixed offset from the first (OpenBao's cluster listener,
//! Redis Cluster's bus) get both reserved together.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::error::{Error, Result};

/// Ports already handed out in this process.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Lowest port the random picker uses.
const RANGE_START: u16 = 10_000;
/// How many candidates to try before giving up.
const ATTEMPTS: u32 = 1_000;

/// Returns a port on 127.0.0.1 that is free right now and has never been returned
/// before in this process.
///
/// # Panics
///
/// Panics if no free port is found after many attempts (the loopback range is
/// exhausted), which is not something a test can recover from.
pub fn free_port() -> u16 {
    match reserve(&[0]) {
        Ok(port) => port,
        Err(err) => panic!("{err}"),
    }
}

/// Returns a port `p` such that both `p` and `p + 1` are free and reserved (OpenBao
/// binds its cluster listener on the API port plus one).
pub(crate) fn free_port_pair() -> Result<u16> {
    reserve(&[0, 1])
}

/// Returns a port `p` such that both `p` and `p + offset` are free and reserved
/// (a Redis Cluster node binds its cluster bus on its port plus 10000).
pub(crate) fn free_port_with_companion(offset: u16) -> Result<u16> {
    reserve(&[0, offset])
}

/// Reserves a port `p` such that `p + o` is free for every `o` in `offsets`, and
/// returns `p`. Every companion lies below the ephemeral range too.
fn reserve(offsets: &[u16]) -> Result<u16> {
    let reach = offsets.iter().copied().max().unwrap_or(0);
    let range = candidate_range().filter(|(low, high)| high - low > reach);
    let mut guard = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let taken = guard.get_or_insert_with(HashSet::new);
    for attempt in 0..ATTEMPTS {
        let first = match range {
            Some((low, high)) => {
                // The remainder is below `high - low`, so it always fits in a u16.
                let span = u64::from(high - low - reach);
                low + u16::try_from(random(attempt) % span).unwrap_or(0)
            }
            None => kernel_port()?,
        };
        let Some(ports) = offsets
            .iter()
            .map(|&o| first.checked_add(o))
            .collect::<Option<Vec<u16>>>()
        else {
            continue;
        };
        if ports.iter().any(|p| taken.contains(p)) {
            continue;
        }
        if ports.iter().all(|&p| bindable(p)) {
            taken.extend(ports);
            return Ok(first);
        }
    }
    Err(Error::NoFreePort(ATTEMPTS))
}

/// The range to pick from: `[RANGE_START, start of the ephemeral range)`, or `None`
/// (meaning "ask the kernel") if the ephemeral range starts too low.
fn candidate_range() -> Option<(u16, u16)> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    (ephemeral_start > RANGE_START + 1_000).then_some((RANGE_START, ephemeral_start))
}

/// A port chosen by the kernel (fallback when there is no room below the ephemeral
/// range).
fn kernel_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("binding 127.0.0.1:0", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading local address", e))?;
    Ok(addr.port())
}

/// Whether a listener can be bound on 127.0.0.1:`port` right now.
fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A pseudo-random number, different per call and per process.
fn random(attempt: u32) -> u64 {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    hasher.write_u32(std::process::id());
    if let Ok(now) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        for port in ports {
            assert!(bindable(port), "port {port} should be free");
        }
    }

    #[test]
    fn pairs_are_consecutive_and_reserved() {
        let first = free_port_pair().expect("pair");
        let guard = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = guard.as_ref().expect("set initialised");
        assert!(taken.contains(&first) && taken.contains(&(first + 1)));
    }

    #[test]
    fn companions_are_reserved_below_the_ephemeral_range() {
        let first = free_port_with_companion(10_000).expect("port with companion");
        let guard = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = guard.as_ref().expect("set initialised");
        assert!(taken.contains(&first) && taken.contains(&(first + 10_000)));
        if let Some((_, high)) = candidate_range() {
            assert!(
                first + 10_000 < high,
                "{first} + 10000 reaches the ephemeral range"
            );
        }
    }
}
