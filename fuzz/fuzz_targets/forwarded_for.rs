//! The rate limiter's client key behind trusted proxies (`ratelimit::client_addr`, the contract's
//! TRUSTED_PROXY_HOPS): for any X-Forwarded-For bytes and hop count it never panics, the key is the TCP peer or
//! an address written in the entry it uses, and whatever stands left of that entry (written by the client)
//! cannot change the key.
//!
//! Input: one byte of hops (255: u32::MAX, else 0 to 5); 16 bytes of TCP peer (IPv6, or IPv4 from the next
//! four bytes when the first is even); the X-Forwarded-For lines, separated by LF; optionally a NUL and other
//! client-written entries, put left of the used entry in place of what stood there.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use applicant_validator::fuzzing;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn forwarded(lines: &[Vec<u8>]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        let value = HeaderValue::from_bytes(line).expect("only header value bytes");
        headers.append("x-forwarded-for", value);
    }
    headers
}

/// The form the limiter keys an address by (mapped IPv4 as IPv4, IPv6 by its /64).
fn key(ip: IpAddr) -> IpAddr {
    fuzzing::client_addr(ip, &HeaderMap::new(), 0)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let hops = match data[0] {
        255 => u32::MAX,
        n => u32::from(n % 6),
    };
    let octets: [u8; 16] = data[1..17].try_into().expect("16 bytes");
    let peer = if octets[0] & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(octets[1], octets[2], octets[3], octets[4]))
    } else {
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    // Only bytes a header value can hold reach the service: hyper refuses the rest.
    let valid = |b: &u8| *b == b'\t' || (*b >= 0x20 && *b != 0x7f);
    let (lines, left) = match data[17..].iter().position(|b| *b == 0) {
        Some(at) => (&data[17..17 + at], Some(&data[17 + at + 1..])),
        None => (&data[17..], None),
    };
    let lines: Vec<Vec<u8>> = if lines.is_empty() {
        Vec::new()
    } else {
        lines
            .split(|b| *b == b'\n')
            .map(|line| line.iter().copied().filter(valid).collect())
            .collect()
    };

    let result = fuzzing::client_addr(peer, &forwarded(&lines), hops);
    let entries: Vec<&[u8]> = lines.iter().flat_map(|l| l.split(|b| *b == b',')).collect();
    if hops == 0 || entries.is_empty() {
        assert_eq!(result, key(peer), "lines {lines:?}");
        return;
    }
    let used = entries
        .len()
        .saturating_sub(usize::try_from(hops).unwrap_or(usize::MAX));
    let entry = std::str::from_utf8(entries[used]).map(str::trim).ok();
    let written = entry.and_then(|e| {
        e.parse::<IpAddr>()
            .ok()
            .or_else(|| e.parse::<SocketAddr>().ok().map(|a| a.ip()))
    });
    assert!(
        result == key(peer) || written.is_some_and(|ip| key(ip) == result),
        "{result} is neither the peer {peer} nor entry {used} of {lines:?}"
    );

    // The same entry and those right of it, with other client-written entries (or none) left of it. Only
    // where the proxies wrote all `hops` entries: with fewer, the left-most is used, and entries put left of it
    // would be used instead (the contract's rule for a request that came through fewer proxies).
    if entries.len() < usize::try_from(hops).unwrap_or(usize::MAX) {
        return;
    }
    let left: Vec<u8> = left
        .unwrap_or_default()
        .iter()
        .copied()
        .filter(valid)
        .collect();
    let mut line = left.clone();
    if !left.is_empty() {
        line.push(b',');
    }
    line.extend_from_slice(&entries[used..].join(&b","[..]));
    let moved = fuzzing::client_addr(peer, &forwarded(&[line]), hops);
    assert_eq!(
        moved,
        result,
        "the entries left of entry {used} of {lines:?} changed the key (replaced by {:?})",
        String::from_utf8_lossy(&left)
    );
});
