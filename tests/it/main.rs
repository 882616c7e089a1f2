//! Integration tests: one binary, real `copilot-edge` processes, real services on loopback.

mod alerts;
mod api;
mod clock;
mod common;
mod console;
mod engine;
mod faults;
mod gaps;
mod kb;
mod metrics;
mod notify;
mod remote_write;
mod report;
mod soak;
mod sparkplug;
mod spool;
mod tls;
mod trust;
mod victoria;
