//! After faults stop, all replicas converge: no node holds hints any more, for every key
//! all N primary replicas store equal objects, and for every partition all its primaries
//! have equal Merkle trees (root and key count), each equal to a rebuild from storage.

use super::{show_object, FinalState, Violation};

/// The checker's name in violations.
pub const NAME: &str = "convergence";

/// Check the final state.
pub fn check(state: &FinalState) -> Vec<Violation> {
    let mut out = Vec::new();
    for (node, count) in &state.pending_hints {
        if *count > 0 {
            out.push(Violation::new(
                NAME,
                "*",
                format!("node {node} still holds {count} hints after the liveness phase"),
            ));
        }
    }
    for m in &state.tree_mismatches {
        out.push(Violation::new(
            NAME,
            "*",
            format!("an incremental Merkle tree disagrees with its storage: {m}"),
        ));
    }
    for (partition, trees) in &state.trees {
        let Some(first) = trees.first() else {
            continue;
        };
        if trees
            .iter()
            .any(|t| t.root != first.root || t.keys != first.keys)
        {
            let shown: Vec<String> = trees
                .iter()
                .map(|t| format!("{}: root {:016x} keys {}", t.node, t.root, t.keys))
                .collect();
            out.push(Violation::new(
                NAME,
                "*",
                format!(
                    "partition {partition}: Merkle trees of the primaries differ: {}",
                    shown.join("; ")
                ),
            ));
        }
    }
    for (key, ks) in &state.keys {
        let primaries: Vec<_> = ks.replicas.iter().filter(|r| r.primary).collect();
        let Some(first) = primaries.first() else {
            continue;
        };
        if primaries.iter().any(|r| r.object != first.object) {
            let copies: Vec<String> = primaries
                .iter()
                .map(|r| {
                    format!(
                        "{}: {}",
                        r.node,
                        r.object
                            .as_ref()
                            .map(show_object)
                            .unwrap_or_else(|| "<none>".into())
                    )
                })
                .collect();
            out.push(Violation::new(
                NAME,
                key,
                format!("primaries differ: {}", copies.join("; ")),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use shoal_proto::Dot;

    use super::*;
    use crate::checkers::fixtures::{object, state, A, B};

    #[test]
    fn diverged_primaries_are_reported() {
        let a = object(&[(Some("k=w0"), Dot::new(A, 1))], &[]);
        let b = object(&[(Some("k=w1"), Dot::new(B, 1))], &[]);
        let s = state("k", vec![Some(a.clone()), Some(a.clone()), Some(b)]);
        let v = check(&s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].checker, NAME);
        assert!(v[0].detail.contains("k=w1"));
        // A missing copy is a difference too.
        let s = state("k", vec![Some(a.clone()), Some(a.clone()), None]);
        assert_eq!(check(&s).len(), 1);
        let s = state("k", vec![Some(a.clone()), Some(a.clone()), Some(a)]);
        assert_eq!(check(&s), vec![]);
    }

    #[test]
    fn differing_merkle_roots_are_reported() {
        use crate::checkers::TreeCopy;
        let tree = |node: &str, root: u64| TreeCopy {
            node: node.into(),
            root,
            keys: 1,
        };
        let mut s = state("k", vec![None, None, None]);
        s.trees
            .insert(3, vec![tree("n0", 7), tree("n1", 7), tree("n2", 7)]);
        assert_eq!(check(&s), vec![]);
        s.trees
            .insert(4, vec![tree("n0", 7), tree("n1", 8), tree("n2", 7)]);
        let v = check(&s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("partition 4"), "{}", v[0].detail);
        s.tree_mismatches.push("n1 partition 4".into());
        assert_eq!(check(&s).len(), 2);
    }

    #[test]
    fn pending_hints_are_reported() {
        let mut s = state("k", vec![None, None, None]);
        s.pending_hints.insert("n1".into(), 2);
        s.pending_hints.insert("n2".into(), 0);
        let v = check(&s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("n1"));
    }
}
