//! Merkle trees as encoded: any bytes decode to a tree or a typed error; a decoded tree
//! re-encodes to bytes that decode to the same tree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::merkle::MerkleTree;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = MerkleTree::decode(data) {
        let again = MerkleTree::decode(&tree.encode()).expect("re-encoded tree decodes");
        assert_eq!(again.root(), tree.root());
        assert_eq!(again.encode(), tree.encode());
    }
});
