//! Calling RiskShield: the client ([`client`]), each worker's connections ([`pool`]) and the HTTP/1.1 answers read on them ([`h1`]), when to retry and how
//! long to wait ([`retry`]), reading its answer ([`answer`]) and the circuit breaker ([`breaker`]).

pub mod answer;
pub mod breaker;
pub mod client;
pub mod h1;
pub mod pool;
pub mod retry;

pub use client::{RiskShieldClient, Settings};
pub use pool::Pool;
