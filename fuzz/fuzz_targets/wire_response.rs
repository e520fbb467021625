//! Client and peer responses: any bytes decode to a response or a typed error; a decoded
//! response re-encodes to bytes that decode to the same response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::wire::{decode_context, decode_response, encode_context, encode_response};

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = decode_response(data) {
        let again =
            decode_response(&encode_response(&response)).expect("re-encoded response decodes");
        assert_eq!(again, response);
    }
    // Contexts travel inside responses and come back from clients as opaque bytes.
    if let Ok(context) = decode_context(data) {
        let again = decode_context(&encode_context(&context)).expect("re-encoded context decodes");
        assert_eq!(again, context);
    }
});
