//! sipedge: a carrier-edge SIP Session Border Controller.
//!
//! The crate is split the way the data flows (see ARCHITECTURE.md):
//! - [`sip`]: sans-IO SIP — scanning, typed header views, writing, digest, transactions;
//! - [`registrar`]: registration policy and bindings for one shard;
//! - [`security`]: per-source bans and rate limits;
//! - [`runtime`]: the I/O shell — pinned workers, sockets, hand-off, timers;
//! - [`store`], [`config`], [`admin`]: the control plane, off the hot path.

pub mod admin;
pub mod call;
pub mod cdr;
pub mod cli;
pub mod config;
pub mod fasthash;
pub mod hugemem;
pub mod limits;
pub mod media;
pub mod prefetch;
pub mod registrar;
pub mod routing;
pub mod runtime;
pub mod security;
pub mod sip;
pub mod stats;
pub mod store;
pub mod timer;
