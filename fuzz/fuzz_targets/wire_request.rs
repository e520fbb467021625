//! Client and peer requests: any bytes decode to a request or a typed error; a decoded
//! request re-encodes to bytes that decode to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::wire::{decode_request, encode_request};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_request(data) {
        let again = decode_request(&encode_request(&request)).expect("re-encoded request decodes");
        assert_eq!(again, request);
    }
});
