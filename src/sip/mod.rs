//! Sans-IO SIP: bytes in, decisions and bytes out. No sockets, threads or clocks here.

pub mod client_transaction;
pub mod digest;
mod find;
pub mod headers;
pub mod invite_server_transaction;
pub mod scan;
pub mod transaction;
pub mod write;
