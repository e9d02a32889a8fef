//! Sans-IO SIP: bytes in, decisions and bytes out. No sockets, threads or clocks here.

pub mod digest;
pub mod headers;
pub mod scan;
pub mod transaction;
pub mod write;
