//! RESP codec: turns network bytes into requests and replies into network bytes.
//!
//! This crate owns the wire format and nothing else. [`parse::RequestParser`] reads requests
//! (multibulk arrays and the inline form `redis-cli`/telnet send) incrementally out of a
//! `BytesMut` without copying argument bytes; [`frame::Frame`] is a reply, encoded in RESP2 or
//! RESP3 by [`frame::Frame::encode`]. It must never panic on any input: every malformed request is
//! a [`parse::ProtocolError`] whose text is Redis's `Protocol error: ...` message, and every
//! size it reads is bounded by [`parse::Limits`].

pub mod frame;
pub mod parse;

pub use frame::{Frame, Protocol};
pub use parse::{recycle_args, Limits, ProtocolError, RequestParser};
