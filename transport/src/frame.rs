//! Framing: each direction of a request stream carries exactly one frame, a big-endian
//! `u32` payload length followed by the payload, then the end of the stream.

use crate::error::{StreamErrorCode, TransportError};

/// Bytes of the length prefix.
pub(crate) const PREFIX_BYTES: usize = 4;
/// Largest chunk read from the stream at once; the payload buffer grows as bytes arrive,
/// so a peer announcing a large frame and sending nothing costs no memory.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why reading a frame failed: a frame error of ours, or the stream/connection failing.
#[derive(Debug)]
pub(crate) enum ReadFrameError {
    /// The frame itself is invalid: too large, truncated, or followed by more data.
    Frame(TransportError),
    /// The peer reset the stream with a code.
    Reset(quinn::VarInt),
    /// The connection was lost.
    Connection(quinn::ConnectionError),
    /// The stream was already closed locally (not expected in our usage).
    Stream(String),
}

impl ReadFrameError {
    /// The abort code to send back when the frame itself is invalid.
    pub(crate) fn abort_code(&self) -> Option<StreamErrorCode> {
        match self {
            ReadFrameError::Frame(TransportError::FrameTooLarge { .. }) => {
                Some(StreamErrorCode::FrameTooLarge)
            }
            ReadFrameError::Frame(TransportError::Truncated { .. }) => {
                Some(StreamErrorCode::Truncated)
            }
            ReadFrameError::Frame(_) => Some(StreamErrorCode::TrailingData),
            _ => None,
        }
    }
}

impl From<quinn::ReadError> for ReadFrameError {
    fn from(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::Reset(code) => ReadFrameError::Reset(code),
            quinn::ReadError::ConnectionLost(e) => ReadFrameError::Connection(e),
            other => ReadFrameError::Stream(other.to_string()),
        }
    }
}

/// Reads one frame of at most `max` payload bytes and checks that the stream ends after
/// it. On a frame error the caller must stop/reset the stream with
/// [`ReadFrameError::abort_code`].
pub(crate) async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Vec<u8>, ReadFrameError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    let mut filled = 0;
    while filled < PREFIX_BYTES {
        match recv.read(&mut prefix[filled..]).await? {
            Some(n) => filled += n,
            None => {
                return Err(ReadFrameError::Frame(TransportError::Truncated {
                    expected: PREFIX_BYTES as u64,
                    received: filled as u64,
                }))
            }
        }
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(ReadFrameError::Frame(TransportError::FrameTooLarge {
            len: len as u64,
            max,
        }));
    }
    let mut payload = Vec::with_capacity(len.min(READ_CHUNK_BYTES));
    while payload.len() < len {
        let want = (len - payload.len()).min(READ_CHUNK_BYTES);
        match recv.read_chunk(want, true).await? {
            Some(chunk) => payload.extend_from_slice(&chunk.bytes),
            None => {
                return Err(ReadFrameError::Frame(TransportError::Truncated {
                    expected: (PREFIX_BYTES + len) as u64,
                    received: (PREFIX_BYTES + payload.len()) as u64,
                }))
            }
        }
    }
    // Exactly one frame per direction: the stream must end here.
    match recv.read_chunk(1, true).await? {
        None => Ok(payload),
        Some(_) => Err(ReadFrameError::Frame(TransportError::TrailingData)),
    }
}

/// Why writing a frame failed.
#[derive(Debug)]
pub(crate) enum WriteFrameError {
    /// The peer stopped the stream with a code.
    Stopped(quinn::VarInt),
    /// The connection was lost.
    Connection(quinn::ConnectionError),
    /// The stream was already closed locally (not expected in our usage).
    Stream(String),
}

impl From<quinn::WriteError> for WriteFrameError {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::Stopped(code) => WriteFrameError::Stopped(code),
            quinn::WriteError::ConnectionLost(e) => WriteFrameError::Connection(e),
            other => WriteFrameError::Stream(other.to_string()),
        }
    }
}

/// Writes one frame and finishes the stream. The caller checks the payload size against
/// its limit first; a payload over `u32::MAX` bytes can never be framed.
pub(crate) async fn write_frame(
    send: &mut quinn::SendStream,
    payload: &[u8],
) -> Result<(), WriteFrameError> {
    let len = u32::try_from(payload.len())
        .map_err(|_| WriteFrameError::Stream("payload longer than u32::MAX".to_owned()))?;
    send.write_all(&len.to_be_bytes()).await?;
    send.write_all(payload).await?;
    send.finish()
        .map_err(|e| WriteFrameError::Stream(e.to_string()))?;
    Ok(())
}
