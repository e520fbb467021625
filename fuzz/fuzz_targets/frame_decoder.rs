//! The frame reader: any bytes, cut into chunks of any size, give a frame or a typed
//! error, never a panic, and the chunking never changes the outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_transport::FrameDecoder;

/// A small limit, so that the fuzzer reaches "too large" as easily as "complete".
const MAX: usize = 4096;

fn decode(bytes: &[u8], chunk: usize) -> Result<Vec<u8>, String> {
    let mut decoder = FrameDecoder::new(MAX);
    for piece in bytes.chunks(chunk) {
        decoder.push(piece).map_err(|e| e.to_string())?;
    }
    decoder.finish().map_err(|e| e.to_string())
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let whole = decode(bytes, bytes.len().max(1));
    let chunked = decode(bytes, usize::from(chunk).max(1));
    assert_eq!(whole, chunked, "the chunking changed the outcome");
    if let Ok(payload) = whole {
        assert!(payload.len() <= MAX);
        assert_eq!(payload.len() + 4, bytes.len());
    }
});
