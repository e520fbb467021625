//! Keys and values are encoded as byte strings (`serde_bytes`) for speed. Postcard writes a
//! byte string exactly as it writes a sequence of `u8` (a varint length, then the bytes),
//! so the wire and storage format did not change: these tests hold the real types to the
//! encoding of mirror types that use plain `Vec<u8>`, both ways.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use shoal_proto::wire::{ClientRequest, GetReply, ReadOptions, WriteOptions};
use shoal_proto::{CausalContext, SiblingValue, Time};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum PlainSibling {
    Data(Vec<u8>),
    Tombstone,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct PlainGetReply {
    found: bool,
    values: Vec<Vec<u8>>,
    context: CausalContext,
    written_at: Vec<Time>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum PlainClientRequest {
    Get {
        key: Vec<u8>,
        options: ReadOptions,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        context: Option<CausalContext>,
        options: WriteOptions,
    },
    Delete {
        key: Vec<u8>,
        context: Option<CausalContext>,
        options: WriteOptions,
    },
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..2_000)
}

fn same_encoding<A, B>(real: &A, plain: &B) -> Result<(), TestCaseError>
where
    A: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    B: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let a = postcard::to_stdvec(real).expect("encode");
    let b = postcard::to_stdvec(plain).expect("encode");
    prop_assert_eq!(&a, &b);
    prop_assert_eq!(&postcard::from_bytes::<A>(&b).expect("decode"), real);
    prop_assert_eq!(&postcard::from_bytes::<B>(&a).expect("decode"), plain);
    Ok(())
}

proptest! {
    #[test]
    fn a_data_sibling_encodes_as_before(v in bytes()) {
        same_encoding(&SiblingValue::Data(v.clone()), &PlainSibling::Data(v))?;
        same_encoding(&SiblingValue::Tombstone, &PlainSibling::Tombstone)?;
    }

    #[test]
    fn a_get_reply_encodes_as_before(values in prop::collection::vec(bytes(), 0..4), found: bool) {
        let written_at = vec![Time::from_micros(7); values.len()];
        let real = GetReply {
            found,
            values: values.clone(),
            context: CausalContext::default(),
            written_at: written_at.clone(),
        };
        let plain = PlainGetReply { found, values, context: CausalContext::default(), written_at };
        same_encoding(&real, &plain)?;
    }

    #[test]
    fn client_requests_encode_as_before(key in bytes(), value in bytes(), w in any::<Option<u8>>()) {
        let options = WriteOptions { w, ..WriteOptions::default() };
        same_encoding(
            &ClientRequest::Put {
                key: key.clone(),
                value: value.clone(),
                context: Some(CausalContext::default()),
                options: options.clone(),
            },
            &PlainClientRequest::Put {
                key: key.clone(),
                value,
                context: Some(CausalContext::default()),
                options: options.clone(),
            },
        )?;
        same_encoding(
            &ClientRequest::Get { key: key.clone(), options: ReadOptions::default() },
            &PlainClientRequest::Get { key: key.clone(), options: ReadOptions::default() },
        )?;
        same_encoding(
            &ClientRequest::Delete { key: key.clone(), context: None, options: options.clone() },
            &PlainClientRequest::Delete { key, context: None, options },
        )?;
    }
}

/// Anti-entropy sizes its messages, and the simulator its frames, from lengths computed
/// without encoding: they must be the encoded lengths. An answer over the frame limit is
/// replaced by a typed error (the node is alive; the transport would not send it).
#[test]
fn frame_lengths_match_the_encoding_and_oversized_answers_become_typed_errors() {
    use shoal_proto::wire::{
        encode_request, encode_response, fit_response, peer_request_len, request_len, response_len,
        AaeResponse, PeerRequest, PeerResponse, Request, Response,
    };
    use shoal_proto::{Object, RequestError};
    use shoal_ring::PartitionId;

    let peer = PeerRequest::Replicate {
        partition: PartitionId(300),
        key: vec![7; 5000],
        object: Object::default(),
        hint_for: None,
    };
    let request = Request::Peer(peer.clone());
    assert_eq!(request_len(&request), encode_request(&request).len());
    assert_eq!(peer_request_len(&peer), encode_request(&request).len());
    let response = Response::Peer(PeerResponse::Aae(AaeResponse::Objects(vec![
        (vec![1; 3000], None),
        (vec![2; 200], Some(Object::default())),
    ])));
    let len = encode_response(&response).len();
    assert_eq!(response_len(&response), len);
    assert_eq!(fit_response(response.clone(), len), response);
    assert_eq!(
        fit_response(response, len - 1),
        Response::Error(RequestError::ResponseTooLarge { len, max: len - 1 })
    );
}
