//! Ways alerts enter squadron besides the input topics.

pub mod http;
