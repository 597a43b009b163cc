//! The one road to a server: every request haul sends, whatever it is for.

pub(crate) mod hosts;
pub(crate) mod http;
pub(crate) mod rate;
pub(crate) mod retry;
