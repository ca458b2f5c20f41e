//! The HTTP server: [`server`] (the accept loop and graceful shutdown), [`envelope`] (correlation id, CORS,
//! logs and metrics around every request), [`cors`] (the CORS headers), [`handlers`] (routing and the
//! endpoints), [`response`] (answers and the error shape), [`docs`] (OpenAPI and the docs page) and [`state`]
//! (what handlers can reach).
//!
//! Nothing here builds the service's parts: [`crate::app`] does, and hands them over in an [`AppState`].

mod balance;
pub mod cors;
pub mod docs;
pub mod envelope;
pub mod handlers;
pub mod response;
pub mod server;
pub mod state;

pub use state::AppState;
