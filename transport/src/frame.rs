//! Framing: each direction of a request stream carries exactly one frame, a big-endian
//! `u32` payload length followed by the payload, then the end of the stream.

use crate::error::{StreamErrorCode, TransportError};

/// Bytes of the length prefix.
pub(crate) const PREFIX_BYTES: usize = 4;
/// Largest chunk read from the stream at once; the payload buffer grows as bytes arrive,
/// so a peer announcing a large frame and sending nothing costs no memory.
pub(crate) const READ_CHUNK_BYTES: usize = 64 * 1024;

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

/// A sans-IO decoder of one frame: a big-endian `u32` length, that many payload bytes,
/// then the end of the stream. It is fed whatever chunks the stream yields, so the
/// same checks run in the node and under a fuzzer. Payload memory grows with the bytes
/// received, never with the announced length.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    prefix: [u8; PREFIX_BYTES],
    prefix_filled: usize,
    /// The announced payload length, once the prefix is complete.
    len: Option<usize>,
    payload: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder for frames of at most `max` payload bytes.
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder {
            max,
            prefix: [0; PREFIX_BYTES],
            prefix_filled: 0,
            len: None,
            payload: Vec::new(),
        }
    }

    /// How many more bytes the frame needs (at least one while the prefix is
    /// incomplete; zero once the payload is complete).
    pub fn wanted(&self) -> usize {
        match self.len {
            None => PREFIX_BYTES - self.prefix_filled,
            Some(len) => len - self.payload.len(),
        }
    }

    /// The payload length the prefix announced, once the prefix is complete (and
    /// within the limit).
    pub fn announced_len(&self) -> Option<usize> {
        self.len
    }

    /// Takes the next bytes of the stream. Bytes beyond a complete frame are an error
    /// ([`TransportError::TrailingData`]); an announced length over the limit is
    /// [`TransportError::FrameTooLarge`] as soon as the prefix is complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), TransportError> {
        while !bytes.is_empty() {
            match self.len {
                None => {
                    let take = (PREFIX_BYTES - self.prefix_filled).min(bytes.len());
                    self.prefix[self.prefix_filled..self.prefix_filled + take]
                        .copy_from_slice(&bytes[..take]);
                    self.prefix_filled += take;
                    bytes = &bytes[take..];
                    if self.prefix_filled == PREFIX_BYTES {
                        let len = u32::from_be_bytes(self.prefix) as usize;
                        if len > self.max {
                            return Err(TransportError::FrameTooLarge {
                                len: len as u64,
                                max: self.max,
                            });
                        }
                        self.payload = Vec::with_capacity(len.min(READ_CHUNK_BYTES));
                        self.len = Some(len);
                    }
                }
                Some(len) => {
                    let take = len - self.payload.len();
                    if take == 0 {
                        return Err(TransportError::TrailingData);
                    }
                    let take = take.min(bytes.len());
                    self.payload.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                }
            }
        }
        Ok(())
    }

    /// The stream ended: the payload if the frame is complete, else
    /// [`TransportError::Truncated`] with how much arrived.
    pub fn finish(self) -> Result<Vec<u8>, TransportError> {
        match self.len {
            Some(len) if self.payload.len() == len => Ok(self.payload),
            Some(len) => Err(TransportError::Truncated {
                expected: (PREFIX_BYTES + len) as u64,
                received: (PREFIX_BYTES + self.payload.len()) as u64,
            }),
            None => Err(TransportError::Truncated {
                expected: PREFIX_BYTES as u64,
                received: self.prefix_filled as u64,
            }),
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
    let mut decoder = FrameDecoder::new(max);
    loop {
        // Ask for what the frame still needs; once it is complete, ask for one more
        // byte so that trailing data is seen instead of waiting for it.
        let want = decoder.wanted().clamp(1, READ_CHUNK_BYTES);
        match recv.read_chunk(want, true).await? {
            Some(chunk) => decoder.push(&chunk.bytes).map_err(ReadFrameError::Frame)?,
            None => return decoder.finish().map_err(ReadFrameError::Frame),
        }
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

#[cfg(test)]
mod decoder_tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    fn decode_in_chunks(bytes: &[u8], chunk: usize, max: usize) -> Result<Vec<u8>, TransportError> {
        let mut decoder = FrameDecoder::new(max);
        for piece in bytes.chunks(chunk.max(1)) {
            decoder.push(piece)?;
        }
        decoder.finish()
    }

    #[test]
    fn a_frame_decodes_whatever_the_chunking() {
        let payload: Vec<u8> = (0..=255).collect();
        let bytes = framed(&payload);
        for chunk in [1, 2, 3, 4, 5, 7, 64, 1000] {
            assert_eq!(decode_in_chunks(&bytes, chunk, 1024).unwrap(), payload);
        }
        assert_eq!(decode_in_chunks(&framed(b""), 1, 0).unwrap(), b"");
    }

    #[test]
    fn an_announced_length_over_the_limit_fails_at_the_prefix() {
        let mut decoder = FrameDecoder::new(10);
        let err = decoder.push(&11u32.to_be_bytes()).unwrap_err();
        assert!(matches!(
            err,
            TransportError::FrameTooLarge { len: 11, max: 10 }
        ));
        // A huge announced length reserves nothing up front.
        let mut decoder = FrameDecoder::new(usize::MAX);
        decoder.push(&u32::MAX.to_be_bytes()).unwrap();
        assert!(decoder.payload.capacity() <= READ_CHUNK_BYTES);
        assert_eq!(decoder.wanted(), u32::MAX as usize);
    }

    #[test]
    fn short_prefixes_and_payloads_are_truncated_with_the_counts() {
        let err = decode_in_chunks(&[0, 0], 1, 10).unwrap_err();
        assert!(matches!(
            err,
            TransportError::Truncated {
                expected: 4,
                received: 2
            }
        ));
        let mut bytes = framed(b"hello");
        bytes.truncate(7);
        let err = decode_in_chunks(&bytes, 3, 10).unwrap_err();
        assert!(matches!(
            err,
            TransportError::Truncated {
                expected: 9,
                received: 7
            }
        ));
    }

    #[test]
    fn bytes_after_the_frame_are_trailing_data() {
        let mut bytes = framed(b"hi");
        bytes.push(0);
        for chunk in [1, 2, 100] {
            assert!(matches!(
                decode_in_chunks(&bytes, chunk, 10),
                Err(TransportError::TrailingData)
            ));
        }
    }
}
