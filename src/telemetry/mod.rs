//! What the service tells its operators: JSON log lines ([`logging`], formatted by [`jsonline`]) and
//! Prometheus metrics ([`metrics`]).

#[cfg(test)]
pub(crate) mod capture;
pub(crate) mod jsonline;
pub mod logging;
pub mod metrics;
