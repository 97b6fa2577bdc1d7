//! Why a file or payload was refused, and where.

use std::fmt;

/// A refusal: what is wrong, and the byte offset (from the start of the file or payload) at
/// which reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub offset: usize,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The bytes end in the middle of something.
    Truncated,
    /// The bytes cannot be what they claim to be.
    Corrupt(String),
    /// A value of a type Moon does not hold (module data, a Redis 7.0 release candidate's
    /// function format): its name, as Redis would report it.
    Unsupported(String),
    /// The CRC64 at the end does not match the bytes before it.
    Checksum { stored: u64, computed: u64 },
    /// Not an RDB version this reader knows.
    Version(u32),
}

impl Error {
    pub(crate) fn corrupt(offset: usize, what: impl Into<String>) -> Error {
        Error {
            offset,
            kind: ErrorKind::Corrupt(what.into()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.offset;
        match &self.kind {
            ErrorKind::Truncated => write!(f, "truncated at offset {at}"),
            ErrorKind::Corrupt(what) => write!(f, "corrupt at offset {at}: {what}"),
            ErrorKind::Unsupported(what) => {
                write!(f, "unsupported at offset {at}: {what}")
            }
            ErrorKind::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch at offset {at}: the file says {stored:016x}, its bytes give {computed:016x}"
            ),
            ErrorKind::Version(v) => write!(
                f,
                "RDB version {v} at offset {at}: only versions {} to {} (up to Redis 7.4) are read",
                crate::MIN_VERSION,
                crate::MAX_VERSION
            ),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
