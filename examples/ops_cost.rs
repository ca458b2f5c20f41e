//! What metrics recording and rate limiting cost per request, measured in isolation so the figure does not
//! depend on the machine's other load: `cargo run --release --example ops_cost`.
//!
//! Each case runs the per-request calls the server makes (in-flight guard + request record, or one limiter
//! check) in a tight loop on one thread and on two threads at once (contended counters), and prints the
//! mean time per call.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use applicant_validator::ratelimit::{ClientKey, ClientLimiter};
use applicant_validator::routes::Route;
use applicant_validator::telemetry::metrics::Metrics;
use http::{Method, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

const CALLS: u32 = 2_000_000;

fn per_call(threads: u32, calls: u32, work: impl Fn(u32) + Sync) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let work = &work;
            scope.spawn(move || {
                for i in 0..calls {
                    work(t * calls + i);
                }
            });
        }
    });
    started.elapsed() / calls
}

fn report(name: &str, calls: u32, work: impl Fn(u32) + Sync) {
    let one = per_call(1, calls, &work);
    let two = per_call(2, calls, &work);
    println!(
        "{name:<44} {:>7.1} ns/call   2 threads: {:>7.1} ns/call",
        one.as_nanos() as f64,
        two.as_nanos() as f64
    );
}

fn main() {
    let metrics = Metrics::new();
    let post = Method::POST;
    report("metrics: in-flight guard + request record", CALLS, |i| {
        let _guard = metrics.in_flight();
        let status = if i % 10 == 0 {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        };
        metrics.request(
            Route::ApiValidate,
            &post,
            status,
            Duration::from_micros(u64::from(i % 5000)),
        );
    });
    // For comparison: the same record with prometheus-client's own Family and Histogram, which take an
    // RwLock on the family map and a write lock per observation.
    let family = Family::<[(&str, &str); 3], Counter>::default();
    let histogram = Histogram::new(exponential_buckets(0.001, 2.5, 13));
    report(
        "reference: prometheus-client Family + Histogram",
        CALLS,
        |i| {
            let status = if i % 10 == 0 { "422" } else { "200" };
            family
                .get_or_create(&[
                    ("route", "/api/v1/validate"),
                    ("method", "POST"),
                    ("status", status),
                ])
                .inc();
            histogram.observe(f64::from(i % 5000) / 1e6);
        },
    );
    report("metrics: upstream attempt record", CALLS, |i| {
        metrics.upstream_attempt("success", Duration::from_micros(u64::from(i % 50_000)));
    });
    report("metrics: encode (per scrape)", 2_000, |_| {
        black_box(metrics.encode());
    });

    let Some(limiter) = ClientLimiter::new(1_000_000, 1_000_000) else {
        return;
    };
    report("limiter: check, one client", CALLS, |_| {
        black_box(limiter.check(&ClientKey::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST))));
    });
    let Some(limiter) = ClientLimiter::new(100, 100) else {
        return;
    };
    report("limiter: check, 1,000 clients", CALLS, |i| {
        black_box(limiter.check(&ClientKey::Addr(IpAddr::V4(Ipv4Addr::from(i % 1000)))));
    });
    report("limiter: check, every call a new client", CALLS, |i| {
        black_box(limiter.check(&ClientKey::Addr(IpAddr::V4(Ipv4Addr::from(
            i.wrapping_add(1 << 24),
        )))));
    });
    println!("clients held after the flood: {}", limiter.clients());
}
