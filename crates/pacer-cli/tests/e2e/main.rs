//! End-to-end: the real `pacer` binary against the real simulated provider,
//! over HTTP on loopback. `support` is the harness.

mod adaptive;
mod batch;
mod batch_api;
mod dashboard;
mod durability;
mod flags;
mod hostile;
mod inputs;
mod money;
mod network;
mod providers;
mod redis;
mod redis_support;
mod report;
mod serve;
mod serve_support;
mod shared_jobs;
mod streams;
mod support;
