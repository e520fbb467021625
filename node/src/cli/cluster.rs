//! `shoal cluster ...`: the layout's status, staging changes (join, leave, remove, replace,
//! unstage), previewing them (plan) and committing them, through the client config like
//! the other client commands.
//!
//! Every subcommand takes `--json` for one JSON object on one line. Exit codes: 0 done, 1
//! the cluster refused (any error a node answered, e.g. a refused layout change) or could
//! not be reached, 2 a usage or configuration error (nothing was sent).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Value};
use shoal_client::{
    Change, Client, ClientError, ClusterStatus, LayoutMemberState, MemberRole, NodeId, PlanId,
    PlanReport, TransferSummary,
};

use super::client::{connect, finish, resolve_config_path, Failure, DEFAULT_CONFIG_PATH};
use super::status::table;

/// `shoal cluster` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// The layout version, members (state, zone, weight, partitions owned) and
    /// candidates, transfers in progress and staged changes.
    Status,
    /// Stage the join of ID, a node that started and contacted the cluster (a candidate).
    Join {
        /// The node's id (its certificate's).
        id: String,
        /// Its failure domain (replicas of a key go to distinct zones when possible).
        #[arg(long)]
        zone: Option<String>,
        /// Its capacity weight: partitions are shared in proportion.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        weight: u32,
    },
    /// Stage the decommission of member ID: it hands its partitions over, then stops
    /// serving data.
    Leave {
        /// The member.
        id: String,
    },
    /// Stage the removal of member ID, dead for good: its partitions are rebuilt on the
    /// new owners from the surviving replicas.
    Remove {
        /// The member.
        id: String,
    },
    /// Stage the replacement of member OLD (down) by candidate NEW, which takes exactly
    /// OLD's partitions.
    Replace {
        /// The member replaced.
        old: String,
        /// The candidate taking its place.
        new: String,
    },
    /// Drop every staged change.
    Unstage,
    /// What the staged changes would move, the plan's id, and the command that commits
    /// exactly that plan.
    Plan,
    /// Apply the staged changes if the layout is still at version V (the plan's) and,
    /// with --plan, only if they are still plan ID.
    Commit {
        /// The layout version the plan was made on.
        #[arg(long, value_name = "V")]
        version: u64,
        /// The plan's id, as `shoal cluster plan` printed it (16 hex digits). The commit
        /// is refused, and nothing changes, if the changes staged now are another plan
        /// (another operator unstaged or restaged on that node since). Without it,
        /// whatever is staged when the commit arrives is committed.
        #[arg(long, value_name = "ID")]
        plan: Option<PlanId>,
    },
}

/// A checked command, ready to send.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Status,
    Join {
        id: NodeId,
        zone: Option<String>,
        weight: u32,
    },
    Leave(NodeId),
    Remove(NodeId),
    Replace {
        old: NodeId,
        new: NodeId,
    },
    Unstage,
    Plan,
    Commit {
        version: u64,
        plan: Option<PlanId>,
    },
}

fn node_id(what: &str, id: String) -> Result<NodeId, Failure> {
    NodeId::new(id).map_err(|e| Failure::Usage(format!("{what}: {e}")))
}

impl Action {
    fn from_command(cmd: ClusterCommand) -> Result<Action, Failure> {
        Ok(match cmd {
            ClusterCommand::Status => Action::Status,
            ClusterCommand::Join { id, zone, weight } => {
                if zone.as_deref().is_some_and(str::is_empty) {
                    return Err(Failure::Usage("--zone: the zone is empty".into()));
                }
                Action::Join {
                    id: node_id("ID", id)?,
                    zone,
                    weight,
                }
            }
            ClusterCommand::Leave { id } => Action::Leave(node_id("ID", id)?),
            ClusterCommand::Remove { id } => Action::Remove(node_id("ID", id)?),
            ClusterCommand::Replace { old, new } => {
                let (old, new) = (node_id("OLD", old)?, node_id("NEW", new)?);
                if old == new {
                    return Err(Failure::Usage(format!(
                        "OLD and NEW are both {old}: a node cannot replace itself"
                    )));
                }
                Action::Replace { old, new }
            }
            ClusterCommand::Unstage => Action::Unstage,
            ClusterCommand::Plan => Action::Plan,
            ClusterCommand::Commit { version, plan } => Action::Commit { version, plan },
        })
    }
}

/// Runs one `shoal cluster` command; returns the exit code. `config` is the --config
/// flag, repeated in the commit command that `plan` prints.
pub async fn run(cmd: ClusterCommand, json: bool, config: Option<PathBuf>) -> anyhow::Result<i32> {
    let flag = config.clone();
    let path = resolve_config_path(config);
    let explicit = path != Path::new(DEFAULT_CONFIG_PATH);
    let mut output = String::new();
    let mut note = None;
    let result = match Action::from_command(cmd) {
        Ok(action) => match connect(&path, explicit).await {
            Ok(client) => {
                let commit = matches!(action, Action::Commit { .. });
                let result = send(&client, action, json, flag.as_deref(), &mut output).await;
                if let (true, Err(error)) = (commit, &result) {
                    note = commit_refusal_note(&client, error).await;
                }
                client.close().await;
                result.map_err(|e| Failure::from_client(e, false))
            }
            Err(failure) => Err(failure),
        },
        Err(failure) => Err(failure),
    };
    let code = finish(output.as_bytes(), result)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    Ok(code)
}

/// After a commit the cluster refused: what to do next, from the cluster's status (best
/// effort; none for other failures).
async fn commit_refusal_note(client: &Client, error: &ClientError) -> Option<String> {
    if !matches!(
        error,
        ClientError::LayoutRefused(_) | ClientError::PlanChanged { .. }
    ) {
        return None;
    }
    let status = client.cluster_status().await.ok()?;
    Some(refusal_note(error, &status))
}

/// The note after a refused commit: the changes staged now when the plan changed, else
/// the version to plan on.
fn refusal_note(error: &ClientError, status: &ClusterStatus) -> String {
    if let ClientError::PlanChanged { .. } = error {
        let staged: Vec<String> = status.staged.iter().map(change_text).collect();
        let staged = if staged.is_empty() {
            "nothing".to_owned()
        } else {
            staged.join("; ")
        };
        return format!(
            "staged now on {}: {staged}; run `shoal cluster plan` to review them and commit the plan it prints",
            status.node
        );
    }
    format!(
        "the cluster's layout is at version {}; run `shoal cluster plan` and commit with the version it prints",
        status.version
    )
}

async fn send(
    client: &Client,
    action: Action,
    json: bool,
    config: Option<&Path>,
    out: &mut String,
) -> Result<(), ClientError> {
    let staged = match action {
        Action::Status => {
            let status = client.cluster_status().await?;
            let transfers = member_transfers(client, &status).await;
            out.push_str(&format_status(&status, &transfers, json));
            return Ok(());
        }
        Action::Plan => {
            let plan = client.plan().await?;
            out.push_str(&format_plan(&plan, json, config));
            return Ok(());
        }
        Action::Commit { version, plan } => {
            let new = match plan {
                Some(plan) => client.commit_plan(version, plan).await?,
                None => client.commit(version).await?,
            };
            out.push_str(&format_committed(version, plan, new, json));
            return Ok(());
        }
        Action::Join { id, zone, weight } => {
            client.stage_join(&id, zone.as_deref(), weight).await?
        }
        Action::Leave(id) => client.stage_leave(&id).await?,
        Action::Remove(id) => client.stage_remove(&id).await?,
        Action::Replace { old, new } => client.stage_replace(&old, &new).await?,
        Action::Unstage => client.unstage().await?,
    };
    out.push_str(&format_staged(&staged, json));
    Ok(())
}

/// The state `status` shows: `candidate`, or the member's layout state.
fn state_name(role: MemberRole) -> &'static str {
    match role {
        MemberRole::Candidate => "candidate",
        MemberRole::Member(LayoutMemberState::Joining) => "joining",
        MemberRole::Member(LayoutMemberState::Active) => "active",
        MemberRole::Member(LayoutMemberState::Leaving) => "leaving",
        MemberRole::Member(LayoutMemberState::Removed) => "removed",
    }
}

/// A staged change as JSON: `{"kind": "join"|"leave"|"remove"|"replace", ...}`.
fn change_json(change: &Change) -> Value {
    match change {
        Change::Join {
            id,
            addr,
            zone,
            weight,
        } => json!({"kind": "join", "id": id.as_str(), "addr": addr.to_string(),
                    "zone": zone, "weight": weight}),
        Change::Leave { id } => json!({"kind": "leave", "id": id.as_str()}),
        Change::Remove { id } => json!({"kind": "remove", "id": id.as_str()}),
        Change::Replace { old, new, addr } => json!({"kind": "replace", "old": old.as_str(),
                    "new": new.as_str(), "addr": addr.to_string()}),
    }
}

/// A staged change as one line of text.
fn change_text(change: &Change) -> String {
    match change {
        Change::Join {
            id,
            addr,
            zone,
            weight,
        } => format!(
            "join {id} at {addr} (zone {}, weight {weight})",
            zone.as_deref().unwrap_or("-")
        ),
        Change::Leave { id } => format!("leave {id}"),
        Change::Remove { id } => format!("remove {id}"),
        Change::Replace { old, new, addr } => format!("replace {old} by {new} at {addr}"),
    }
}

/// One JSON value on one line.
fn line(value: Value) -> String {
    format!("{value}\n")
}

/// Each member's own transfers (a node reports the partitions it pulls): the answering
/// node's from `status`, the others asked one by one; removed members are not asked,
/// and a member that does not answer is listed with its error.
async fn member_transfers(
    client: &Client,
    status: &ClusterStatus,
) -> Vec<(NodeId, Result<TransferSummary, String>)> {
    let mut out = Vec::new();
    for m in &status.members {
        if m.role == MemberRole::Member(LayoutMemberState::Removed)
            || m.role == MemberRole::Candidate
        {
            continue;
        }
        let transfers = if m.id == status.node {
            Ok(status.transfers)
        } else {
            client
                .cluster_status_of(&m.id)
                .await
                .map(|s| s.transfers)
                .map_err(|e| e.to_string())
        };
        out.push((m.id.clone(), transfers));
    }
    out
}

/// The sum of the members' transfers that answered.
fn total_transfers(by_node: &[(NodeId, Result<TransferSummary, String>)]) -> TransferSummary {
    by_node
        .iter()
        .filter_map(|(_, t)| t.as_ref().ok())
        .fold(TransferSummary::default(), |a, t| TransferSummary {
            pending: a.pending + t.pending,
            running: a.running + t.running,
            done: a.done + t.done,
            bytes_done: a.bytes_done + t.bytes_done,
            bytes_left: a.bytes_left + t.bytes_left,
        })
}

/// `status`: one JSON object, or a header, a member table, the transfers (summed over
/// the members, then per member where any) and the staged changes.
fn format_status(
    s: &ClusterStatus,
    by_node: &[(NodeId, Result<TransferSummary, String>)],
    json: bool,
) -> String {
    let t = &total_transfers(by_node);
    if json {
        let members: Vec<Value> = s
            .members
            .iter()
            .map(|m| {
                json!({"id": m.id.as_str(), "addr": m.addr.to_string(), "state": state_name(m.role),
                       "zone": m.zone, "weight": m.weight, "partitions": m.partitions, "up": m.up})
            })
            .collect();
        let nodes: Vec<Value> = by_node
            .iter()
            .map(|(id, t)| match t {
                Ok(t) => json!({"node": id.as_str(), "pending": t.pending, "running": t.running,
                                "done": t.done, "bytes_done": t.bytes_done, "bytes_left": t.bytes_left}),
                Err(e) => json!({"node": id.as_str(), "error": e}),
            })
            .collect();
        return line(json!({
            "node": s.node.as_str(),
            "version": s.version,
            "versions_in_use": s.versions_in_use,
            "cluster_id": s.settings.cluster_id,
            "partitions": s.settings.partitions,
            "n": s.settings.n,
            "members": members,
            "transfers": {"pending": t.pending, "running": t.running, "done": t.done,
                          "bytes_done": t.bytes_done, "bytes_left": t.bytes_left,
                          "by_node": nodes},
            "staged": s.staged.iter().map(change_json).collect::<Vec<_>>(),
        }));
    }
    let mut text = format!(
        "layout version {} of cluster {} ({} partitions, n = {}), as seen by {}\n",
        s.version, s.settings.cluster_id, s.settings.partitions, s.settings.n, s.node
    );
    if s.versions_in_use.len() > 1 {
        let versions: Vec<String> = s.versions_in_use.iter().map(u64::to_string).collect();
        let _ = writeln!(
            text,
            "change in progress: versions {} in use",
            versions.join(", ")
        );
    }
    let rows: Vec<[String; 7]> = s
        .members
        .iter()
        .map(|m| {
            [
                m.id.to_string(),
                m.addr.to_string(),
                state_name(m.role).to_owned(),
                m.zone.clone().unwrap_or_else(|| "-".into()),
                m.weight.to_string(),
                m.partitions.to_string(),
                if m.up { "up" } else { "down" }.to_owned(),
            ]
        })
        .collect();
    text.push_str(&table(
        [
            "NODE",
            "ADDRESS",
            "STATE",
            "ZONE",
            "WEIGHT",
            "PARTITIONS",
            "SEEN",
        ],
        &rows,
    ));
    let _ = writeln!(
        text,
        "transfers: {} pending, {} running, {} done; {} bytes moved, {} left (estimated)",
        t.pending, t.running, t.done, t.bytes_done, t.bytes_left
    );
    for (id, t) in by_node {
        match t {
            Ok(t) if *t == TransferSummary::default() => {}
            Ok(t) => {
                let _ = writeln!(
                    text,
                    "  {id}: {} pending, {} running, {} done; {} bytes moved, {} left",
                    t.pending, t.running, t.done, t.bytes_done, t.bytes_left
                );
            }
            Err(e) => {
                let _ = writeln!(text, "  {id}: no answer ({e}); not counted");
            }
        }
    }
    if s.staged.is_empty() {
        text.push_str("staged: nothing\n");
    } else {
        text.push_str("staged (see `shoal cluster plan`):\n");
        for c in &s.staged {
            let _ = writeln!(text, "  {}", change_text(c));
        }
    }
    text
}

/// What a stage or unstage prints: the changes staged now.
fn format_staged(staged: &[Change], json: bool) -> String {
    if json {
        return line(json!({"staged": staged.iter().map(change_json).collect::<Vec<_>>()}));
    }
    if staged.is_empty() {
        return "staged: nothing\n".into();
    }
    let mut text = String::from("staged:\n");
    for c in staged {
        let _ = writeln!(text, "  {}", change_text(c));
    }
    text.push_str("next: `shoal cluster plan` shows what they would move\n");
    text
}

/// The command that commits plan `plan` made on `version`, with the --config it was made
/// with.
fn commit_command(version: u64, plan: PlanId, config: Option<&Path>) -> String {
    match config {
        Some(path) => format!(
            "shoal --config {} cluster commit --version {version} --plan {plan}",
            path.display()
        ),
        None => format!("shoal cluster commit --version {version} --plan {plan}"),
    }
}

/// `plan`'s JSON form.
#[derive(Serialize)]
struct PlanNodeJson<'a> {
    id: &'a str,
    before: usize,
    after: usize,
}

/// `plan`: the plan's id, the changes, partitions per node before and after, moves,
/// bytes, balance and zones after, the resulting version and the exact commit command
/// (naming the plan).
fn format_plan(p: &PlanReport, json: bool, config: Option<&Path>) -> String {
    let command = commit_command(p.version, p.id(), config);
    if json {
        let nodes: Vec<PlanNodeJson<'_>> = p
            .partitions
            .iter()
            .map(|(id, before, after)| PlanNodeJson {
                id: id.as_str(),
                before: *before,
                after: *after,
            })
            .collect();
        return line(json!({
            "plan_id": p.id().to_string(),
            "version": p.version,
            "next_version": p.next_version,
            "changes": p.changes.iter().map(change_json).collect::<Vec<_>>(),
            "partitions": nodes,
            "moves": p.moves,
            "bytes_estimate": p.bytes_estimate,
            "balance": {"max": p.balance.0, "min": p.balance.1},
            "zones_after": p.zones_after,
            "commit_command": command,
        }));
    }
    let mut text = format!(
        "plan {} on layout version {} -> version {}\nchanges:\n",
        p.id(),
        p.version,
        p.next_version
    );
    for c in &p.changes {
        let _ = writeln!(text, "  {}", change_text(c));
    }
    let rows: Vec<[String; 4]> = p
        .partitions
        .iter()
        .map(|(id, before, after)| {
            let delta = *after as i64 - *before as i64;
            [
                id.to_string(),
                before.to_string(),
                after.to_string(),
                format!("{delta:+}"),
            ]
        })
        .collect();
    text.push_str(&table(["NODE", "BEFORE", "AFTER", "CHANGE"], &rows));
    let _ = writeln!(
        text,
        "moves: {} partitions, about {} bytes to stream",
        p.moves, p.bytes_estimate
    );
    let _ = writeln!(
        text,
        "after: {} to {} partitions per owner, {} zone{}",
        p.balance.1,
        p.balance.0,
        p.zones_after,
        if p.zones_after == 1 { "" } else { "s" }
    );
    let _ = writeln!(text, "to apply: {command}");
    text
}

/// What a commit prints (naming the plan when the commit named one).
fn format_committed(planned_on: u64, plan: Option<PlanId>, version: u64, json: bool) -> String {
    if json {
        let mut v = json!({"version": version, "previous_version": planned_on});
        if let Some(plan) = plan {
            v["plan_id"] = json!(plan.to_string());
        }
        return line(v);
    }
    let plan = plan.map(|p| format!(" plan {p}")).unwrap_or_default();
    format!(
        "committed{plan}: layout version {version} (was {planned_on}); follow the transfers with `shoal cluster status`\n"
    )
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
