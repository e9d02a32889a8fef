//! Classification, numbers and gateway selection for calls; sans-IO.
//!
//! Owns: dialled-number normalisation (SPEC §3.6), longest-prefix source matching used to
//! classify an INVITE (SPEC §3.3), and the order in which core gateways are tried plus their
//! qualify state (SPEC §3.4). Must not: touch sockets, clocks, DNS or the store, or allocate on
//! the per-call path — callers pass `now` and randomness in.

pub mod cidr;
pub mod classify;
pub mod gateways;
pub mod numbers;
