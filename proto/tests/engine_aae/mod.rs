//! Anti-entropy messages from peers are checked key by key: every key must belong to the
//! partition the message names and be within the key limit, or the message is refused
//! with a typed error before anything is read or written.

use shoal_proto::wire::{AaeRequest, PeerRequest, PeerResponse, Response};
use shoal_proto::{Command, Object, RequestError, MAX_KEY_BYTES};

use super::engine_harness::*;
use super::{a, five};

/// The only command is an answer to inbound 1 with this error.
fn refused(cmds: &[Command]) -> RequestError {
    match cmds {
        [Command::Respond {
            response: Response::Peer(PeerResponse::Error(e)),
            ..
        }] => e.clone(),
        other => panic!("expected a refusal and nothing else, got {other:?}"),
    }
}

#[test]
fn anti_entropy_messages_with_a_key_of_another_partition_are_refused() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let part = c.partition(&key);
    let peer = c.prefs(&key)[1].clone();
    // A key of another partition (whoever its replicas are).
    let foreign = (0..)
        .map(|i| format!("other-{i}").into_bytes())
        .find(|k| c.partition(k) != part)
        .expect("a key of another partition");
    let object = Object::default();
    let requests = [
        AaeRequest::Fetch {
            partition: part,
            keys: vec![key.clone(), foreign.clone()],
        },
        AaeRequest::Push {
            partition: part,
            objects: vec![(foreign.clone(), object.clone())],
        },
        AaeRequest::Digests {
            partition: part,
            keys: vec![foreign.clone()],
        },
        AaeRequest::Reap {
            partition: part,
            keys: vec![(foreign.clone(), 7)],
        },
    ];
    for req in requests {
        let cmds = c.peer(&a(), 1, &peer, PeerRequest::Aae(req.clone()));
        assert_eq!(
            refused(&cmds),
            RequestError::WrongPartition { partition: part.0 },
            "{req:?}"
        );
        assert!(c.stored(&a(), &foreign).is_none());
    }
    // Replica messages are held to the same rule, with the same error.
    let cmds = c.peer(&a(), 1, &peer, replicate(part, &foreign, &object, None));
    assert_eq!(
        refused(&cmds),
        RequestError::WrongPartition { partition: part.0 }
    );
}

#[test]
fn anti_entropy_messages_with_a_key_over_the_limit_or_empty_are_refused() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let part = c.partition(&key);
    let peer = c.prefs(&key)[1].clone();
    let long = vec![b'x'; MAX_KEY_BYTES + 1];
    let cmds = c.peer(
        &a(),
        1,
        &peer,
        PeerRequest::Aae(AaeRequest::Fetch {
            partition: part,
            keys: vec![long],
        }),
    );
    assert_eq!(
        refused(&cmds),
        RequestError::KeyTooLarge {
            len: MAX_KEY_BYTES + 1,
            max: MAX_KEY_BYTES
        }
    );
    let cmds = c.peer(
        &a(),
        1,
        &peer,
        PeerRequest::Aae(AaeRequest::Digests {
            partition: part,
            keys: vec![Vec::new()],
        }),
    );
    assert_eq!(refused(&cmds), RequestError::EmptyKey);
    // The node keeps serving: a well-formed fetch of the same partition goes to storage.
    let cmds = c.peer(
        &a(),
        2,
        &peer,
        PeerRequest::Aae(AaeRequest::Fetch {
            partition: part,
            keys: vec![key],
        }),
    );
    assert!(
        matches!(cmds.as_slice(), [Command::Storage { .. }]),
        "{cmds:?}"
    );
}

#[test]
fn a_segment_question_out_of_order_is_refused() {
    let mut c = five();
    let key = c.key_where(|p| p[0] == a());
    let part = c.partition(&key);
    let peer = c.prefs(&key)[1].clone();
    let ask = |segments: Vec<u32>| {
        PeerRequest::Aae(AaeRequest::Segments {
            partition: part,
            segments,
        })
    };
    // Replies stop at their byte bound in scan order, so questions must be ascending.
    let cmds = c.peer(&a(), 1, &peer, ask(vec![5, 3]));
    assert!(matches!(refused(&cmds), RequestError::Malformed(_)));
    let cmds = c.peer(&a(), 2, &peer, ask(vec![3, 3]));
    assert!(matches!(refused(&cmds), RequestError::Malformed(_)));
    let cmds = c.peer(&a(), 3, &peer, ask(vec![3, 5]));
    assert!(
        matches!(cmds.as_slice(), [Command::Storage { .. }]),
        "{cmds:?}"
    );
}

mod restore;
