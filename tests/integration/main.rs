//! The gateway's integration tests: one binary, a module per topic. Each test starts a
//! real gateway on 127.0.0.1 port 0 and talks to it over HTTP.

#![allow(clippy::expect_used, reason = "helpers fail the test by panicking")]
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "tests drive the gateway from outside: they time waits, read the environment, and tamper with the database as an attacker with file access would"
)]

mod support;

/// Admission control: buckets, quotas, reloadable limits, metrics.
mod admission;
/// One terminal audit event per request, and a verifiable chain.
mod audit;
/// The reviewer page in a real headless browser.
mod browser;
/// The command-line binary: config errors, `check`, `audit`.
mod cli;
/// The conformance profiles cover the reason-code registry.
mod conformance;
/// Human review of drafts: approve, reject, races, expiry, State Witness.
mod drafts;
/// Authentication and authorization along the pipeline's steps 2 to 12.
mod governance;
/// The MCP binding: discovery, calls, refusals, sessions, anonymous local access.
mod mcp;
/// Several nodes on one PostgreSQL: shared state, exactly once, propagation, audit chains.
mod multinode;
/// Plugins: hot load, replace, remove, refusals and the hostile fixtures.
mod plugins;
/// The shipped Cedar policy sets and their scenario files.
mod policies;
/// High-risk safeguards under repetition and concurrency.
mod safeguards;
/// The walking skeleton: envelope, manifest, governed reads, drafts, bad input.
mod skeleton;
/// The step order on every route: refusals that do not depend on the ids a request names.
mod steps;
/// TLS on both listeners: certificates from files, reloaded, and client certificates.
mod tls;
