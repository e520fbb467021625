//! Unit tests of `shoal cluster`: argument checks and output formats.

use super::*;
use clap::Parser;
use shoal_client::{MemberReport, TransferSummary};
use shoal_proto::layout::ClusterSettings;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: ClusterCommand,
    #[arg(long, global = true)]
    json: bool,
}

fn parse(args: &[&str]) -> Result<(ClusterCommand, bool), clap::Error> {
    Cli::try_parse_from(std::iter::once("cluster").chain(args.iter().copied()))
        .map(|c| (c.cmd, c.json))
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

#[test]
fn every_subcommand_parses_with_json() {
    let cases: Vec<(&[&str], Action)> = vec![
        (&["status"], Action::Status),
        (
            &["join", "n4", "--zone", "b", "--weight", "3"],
            Action::Join {
                id: id("n4"),
                zone: Some("b".into()),
                weight: 3,
            },
        ),
        (
            &["join", "n4"],
            Action::Join {
                id: id("n4"),
                zone: None,
                weight: 1,
            },
        ),
        (&["leave", "n2"], Action::Leave(id("n2"))),
        (&["remove", "n2"], Action::Remove(id("n2"))),
        (
            &["replace", "n2", "n5"],
            Action::Replace {
                old: id("n2"),
                new: id("n5"),
            },
        ),
        (&["unstage"], Action::Unstage),
        (&["plan"], Action::Plan),
        (
            &["commit", "--version", "7"],
            Action::Commit {
                version: 7,
                plan: None,
            },
        ),
        (
            &["commit", "--version", "7", "--plan", "00abcdef01234567"],
            Action::Commit {
                version: 7,
                plan: Some(PlanId(0x00ab_cdef_0123_4567)),
            },
        ),
    ];
    for (args, want) in cases {
        let (cmd, json) = parse(args).unwrap();
        assert!(!json);
        assert_eq!(Action::from_command(cmd).unwrap(), want, "{args:?}");
        let with_json: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
        assert!(parse(&with_json).unwrap().1, "{args:?} --json");
    }
}

#[test]
fn malformed_command_lines_are_usage_errors_exiting_two() {
    for args in [
        &["join"][..],
        &["join", "n4", "--weight", "0"],
        &["join", "n4", "--weight", "x"],
        &["leave"],
        &["replace", "n1"],
        &["commit"],
        &["commit", "--version", "-1"],
        &["commit", "--version", "v3"],
        &["commit", "--plan", "00abcdef01234567"],
        &["commit", "--version", "3", "--plan"],
        &["commit", "--version", "3", "--plan", "xyz"],
        &["commit", "--version", "3", "--plan", "00abcdef012345678"],
        &["frobnicate"],
    ] {
        let err = parse(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
    }
    for (args, text) in [
        (&["join", "bad id!"][..], "ID"),
        (&["join", "n4", "--zone", ""], "--zone"),
        (&["leave", ""], "ID"),
        (&["replace", "n1", "n1"], "cannot replace itself"),
        (&["replace", "n1", "a/b"], "NEW"),
    ] {
        let (cmd, _) = parse(args).unwrap();
        let failure = Action::from_command(cmd).unwrap_err();
        assert_eq!(failure.exit_code(), 2, "{args:?}");
        assert!(failure.to_string().contains(text), "{args:?}: {failure}");
    }
}

fn status() -> ClusterStatus {
    let member = |name: &str, port: u16, role, partitions| MemberReport {
        id: id(name),
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        role,
        zone: (name == "n2").then(|| "b".to_owned()),
        weight: 1,
        partitions,
        up: name != "n3",
    };
    ClusterStatus {
        node: id("n1"),
        version: 2,
        settings: ClusterSettings {
            cluster_id: "shoal-0123".into(),
            partitions: 64,
            n: 3,
        },
        versions_in_use: vec![1, 2],
        members: vec![
            member(
                "n1",
                7001,
                MemberRole::Member(LayoutMemberState::Active),
                22,
            ),
            member(
                "n2",
                7002,
                MemberRole::Member(LayoutMemberState::Leaving),
                0,
            ),
            member(
                "n3",
                7003,
                MemberRole::Member(LayoutMemberState::Joining),
                21,
            ),
            member("n4", 7004, MemberRole::Candidate, 0),
            member(
                "n5",
                7005,
                MemberRole::Member(LayoutMemberState::Removed),
                0,
            ),
        ],
        transfers: TransferSummary {
            pending: 3,
            running: 1,
            done: 4,
            bytes_done: 100,
            bytes_left: 2048,
        },
        staged: vec![Change::Leave { id: id("n1") }],
    }
}

/// The members' own transfers as `shoal cluster status` collects them: the answering
/// node's, another member's, and one that did not answer.
fn by_node() -> Vec<(NodeId, Result<TransferSummary, String>)> {
    vec![
        (id("n1"), Ok(status().transfers)),
        (id("n2"), Err("timed out".into())),
        (
            id("n3"),
            Ok(TransferSummary {
                pending: 10,
                running: 2,
                done: 0,
                bytes_done: 0,
                bytes_left: 4096,
            }),
        ),
    ]
}

#[test]
fn status_json_has_the_documented_fields() {
    let text = format_status(&status(), &by_node(), true);
    assert_eq!(text.lines().count(), 1);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(v["versions_in_use"], json!([1, 2]));
    let states: Vec<&str> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["active", "leaving", "joining", "candidate", "removed"]
    );
    assert_eq!(
        v["members"][0],
        json!({"id": "n1", "addr": "127.0.0.1:7001", "state": "active", "zone": null,
               "weight": 1, "partitions": 22, "up": true})
    );
    assert_eq!(
        v["transfers"],
        json!({"pending": 13, "running": 3, "done": 4, "bytes_done": 100, "bytes_left": 6144,
        "by_node": [
            {"node": "n1", "pending": 3, "running": 1, "done": 4, "bytes_done": 100, "bytes_left": 2048},
            {"node": "n2", "error": "timed out"},
            {"node": "n3", "pending": 10, "running": 2, "done": 0, "bytes_done": 0, "bytes_left": 4096},
        ]})
    );
    assert_eq!(v["staged"], json!([{"kind": "leave", "id": "n1"}]));
}

#[test]
fn status_table_shows_version_members_transfers_and_staged_changes() {
    let text = format_status(&status(), &by_node(), false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "layout version 2 of cluster shoal-0123 (64 partitions, n = 3), as seen by n1"
    );
    assert_eq!(lines[1], "change in progress: versions 1, 2 in use");
    assert!(lines[2].starts_with("NODE  ADDRESS"), "{text}");
    let n3: Vec<&str> = lines[5].split_whitespace().collect();
    assert_eq!(
        n3,
        ["n3", "127.0.0.1:7003", "joining", "-", "1", "21", "down"]
    );
    let state = lines[2].find("STATE").unwrap();
    assert_eq!(&lines[6][state..state + 9], "candidate");
    assert!(
        text.contains(
            "transfers: 13 pending, 3 running, 4 done; 100 bytes moved, 6144 left (estimated)\n  \
             n1: 3 pending, 1 running, 4 done; 100 bytes moved, 2048 left\n  \
             n2: no answer (timed out); not counted\n  \
             n3: 10 pending, 2 running, 0 done; 0 bytes moved, 4096 left\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with("staged (see `shoal cluster plan`):\n  leave n1\n"),
        "{text}"
    );
}

fn plan() -> PlanReport {
    PlanReport {
        version: 3,
        next_version: 4,
        changes: vec![Change::Join {
            id: id("n4"),
            addr: "127.0.0.1:7004".parse().unwrap(),
            zone: Some("c".into()),
            weight: 2,
        }],
        partitions: vec![(id("n1"), 22, 16), (id("n4"), 0, 32)],
        moves: 32,
        bytes_estimate: 123_456,
        balance: (32, 16),
        zones_after: 2,
    }
}

#[test]
fn plan_names_before_after_moves_balance_and_the_exact_commit_command() {
    let id = plan().id();
    let text = format_plan(&plan(), false, None);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("plan {id} on layout version 3 -> version 4")
    );
    assert_eq!(lines[2], "  join n4 at 127.0.0.1:7004 (zone c, weight 2)");
    let n4: Vec<&str> = lines[5].split_whitespace().collect();
    assert_eq!(n4, ["n4", "0", "32", "+32"]);
    assert!(text.contains("moves: 32 partitions, about 123456 bytes to stream"));
    assert!(text.contains("after: 16 to 32 partitions per owner, 2 zones"));
    assert!(
        text.ends_with(&format!(
            "to apply: shoal cluster commit --version 3 --plan {id}\n"
        )),
        "{text}"
    );
    let with_config = format_plan(&plan(), false, Some(Path::new("/etc/shoal/client.toml")));
    assert!(with_config.ends_with(&format!(
        "to apply: shoal --config /etc/shoal/client.toml cluster commit --version 3 --plan {id}\n"
    )));
    // The printed command parses back to a commit of that plan.
    let command = lines
        .last()
        .unwrap()
        .trim_start_matches("to apply: shoal cluster ");
    let (cmd, _) = parse(&command.split(' ').collect::<Vec<_>>()).unwrap();
    assert_eq!(
        Action::from_command(cmd).unwrap(),
        Action::Commit {
            version: 3,
            plan: Some(id)
        }
    );

    let v: Value = serde_json::from_str(&format_plan(&plan(), true, None)).unwrap();
    assert_eq!(v["version"], 3);
    assert_eq!(v["next_version"], 4);
    assert_eq!(
        v["partitions"],
        json!([{"id": "n1", "before": 22, "after": 16}, {"id": "n4", "before": 0, "after": 32}])
    );
    assert_eq!(v["balance"], json!({"max": 32, "min": 16}));
    assert_eq!(v["plan_id"], id.to_string());
    assert_eq!(v["plan_id"].as_str().unwrap().len(), 16);
    assert_eq!(
        v["commit_command"],
        format!("shoal cluster commit --version 3 --plan {id}")
    );
    assert_eq!(
        v["changes"],
        json!([{"kind": "join", "id": "n4", "addr": "127.0.0.1:7004", "zone": "c", "weight": 2}])
    );
}

#[test]
fn staged_and_committed_outputs() {
    assert_eq!(format_staged(&[], false), "staged: nothing\n");
    let replace = Change::Replace {
        old: id("n2"),
        new: id("n5"),
        addr: "127.0.0.1:7005".parse().unwrap(),
    };
    let text = format_staged(std::slice::from_ref(&replace), false);
    assert!(
        text.starts_with("staged:\n  replace n2 by n5 at 127.0.0.1:7005\n"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&format_staged(&[replace], true)).unwrap();
    assert_eq!(v["staged"][0]["kind"], "replace");
    let v: Value = serde_json::from_str(&format_committed(3, None, 4, true)).unwrap();
    assert_eq!(v, json!({"version": 4, "previous_version": 3}));
    assert!(format_committed(3, None, 4, false).starts_with("committed: layout version 4 (was 3)"));
    let plan = Some(PlanId(0xab));
    let v: Value = serde_json::from_str(&format_committed(3, plan, 4, true)).unwrap();
    assert_eq!(
        v,
        json!({"version": 4, "previous_version": 3, "plan_id": "00000000000000ab"})
    );
    assert!(format_committed(3, plan, 4, false)
        .starts_with("committed plan 00000000000000ab: layout version 4 (was 3)"));
}

#[test]
fn a_refused_commit_notes_the_changes_staged_now_or_the_version_to_plan_on() {
    let changed = ClientError::PlanChanged {
        planned: PlanId(1),
        staged: PlanId(2),
    };
    assert_eq!(
        refusal_note(&changed, &status()),
        "staged now on n1: leave n1; run `shoal cluster plan` to review them and commit the plan it prints"
    );
    let unstaged = ClusterStatus {
        staged: Vec::new(),
        ..status()
    };
    assert!(refusal_note(&changed, &unstaged).starts_with("staged now on n1: nothing;"));
    let refused = ClientError::LayoutRefused("the layout is at version 2, not 1".into());
    assert!(refusal_note(&refused, &status()).starts_with("the cluster's layout is at version 2;"));
    // Refused by the cluster: exit code 1, as every refusal.
    assert_eq!(Failure::from_client(changed, false).exit_code(), 1);
}
