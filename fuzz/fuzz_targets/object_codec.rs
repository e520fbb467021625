//! Stored objects: any bytes decode to an object or a typed error; a decoded object
//! re-encodes to bytes that decode to the same object, and merging it with itself
//! changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::Object;

fuzz_target!(|data: &[u8]| {
    if let Ok(object) = Object::decode(data) {
        let again = Object::decode(&object.encode()).expect("re-encoded object decodes");
        assert_eq!(again, object);
        let mut merged = object.clone();
        merged.merge(&again);
        assert_eq!(merged.encode(), object.encode(), "merge is not idempotent");
    }
});
