//! Where notifications go besides the squad topics.

pub mod receivers;
