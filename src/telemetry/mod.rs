//! squadron's own observability: Prometheus metrics and the HTTP endpoints.

pub mod amapi;
pub mod controls_api;
pub mod http;
pub mod metrics;
pub mod web;
