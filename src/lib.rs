//! squadron: alert noise reduction between monitoring systems and the squads
//! that own the services. See README.md for use and ARCHITECTURE.md for the map.
// Five audited exceptions: `cli::run::raise_open_file_limit`,
// `pipeline::polled::wakeup` (librdkafka's queue wakeups, for an idle producer
// that never polls on a clock), `pipeline::memory::release_free_memory`
// (glibc's malloc_trim), `cli::open_recording` (a recording mapped into
// memory, read only) and `decode::fast::simd::specials` (a call to SSE2
// code, which every x86_64 CPU runs).
#![deny(unsafe_code)]

pub mod cli;
pub mod compare;
pub mod control;
pub mod decode;
pub mod engine;
pub mod ingest;
pub mod model;
pub mod payload;
pub mod pipeline;
pub mod replay;
pub mod report;
pub mod rules;
pub mod ruletest;
pub mod sim;
pub mod sinks;
pub mod sources;
pub mod telemetry;
