//! The integration suite, one test binary: the real service (in this process through the library's `serve`,
//! or as the built binary) against real fakes of its neighbours from the `testkit` crate.
//!
//! One binary links once instead of once per file, and its shared support module is used as a whole, so no
//! part of it needs to hide from the dead-code lint.

mod api;
mod auth;
mod binary;
mod diagnose;
mod limits;
mod metrics;
mod properties;
mod ratelimit;
mod ready_probe;
mod riskshield;
mod shutdown;
mod startup;
mod support;
mod trace;
mod vault;
