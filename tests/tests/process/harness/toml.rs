//! Editing the TOML configs `shoal dev init` wrote, line by line (no TOML crate: the
//! edits are one-line `key = value` settings).

/// Merges `extra` into the TOML text `base`, line by line: each `key = value` line sets
/// that key in the table of the `[section]` header above it in `extra` (top level before
/// any header), replacing the key if the table has it and adding the table if `base` has
/// none. Blank lines and `#` comments are skipped. Only one-line values are supported;
/// any other line (an array table, a multi-line value) panics.
pub fn merge_toml(base: &str, extra: &str) -> String {
    let mut text = base.to_owned();
    let mut section = String::new();
    for line in extra.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        assert!(
            !t.starts_with("[["),
            "merge_toml: array tables unsupported: {t}"
        );
        if let Some(name) = table_header(t) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = t
            .split_once('=')
            .unwrap_or_else(|| panic!("merge_toml: not a `key = value` line: {t}"));
        text = set_toml(&text, &section, key.trim(), value.trim());
    }
    text
}

/// The name of a `[table]` header line (not an array table), if `line` is one.
fn table_header(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    if rest.starts_with('[') {
        return None;
    }
    rest.split_once(']').map(|(name, _)| name.trim())
}

/// Sets `key = value` (`value` as TOML source) in table `section` of `text` (`""`: the
/// top level), replacing the key if the table has it, adding the table if missing.
fn set_toml(text: &str, section: &str, key: &str, value: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // `None` inside an array table (`[[seeds]]`), whose keys are never ours to replace.
    let mut current: Option<String> = Some(String::new());
    let mut insert_at = section.is_empty().then_some(0);
    for (i, line) in lines.iter_mut().enumerate() {
        let t = line.trim();
        if t.starts_with("[[") {
            current = None;
            continue;
        }
        if let Some(name) = table_header(t) {
            if name == section {
                insert_at = Some(i + 1);
            }
            current = Some(name.to_owned());
            continue;
        }
        let is_key = t
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == key && !t.starts_with('#'));
        if current.as_deref() == Some(section) && is_key {
            *line = format!("{key} = {value}");
            return lines.join("\n") + "\n";
        }
    }
    match insert_at {
        Some(at) => lines.insert(at, format!("{key} = {value}")),
        None => {
            lines.push(String::new());
            lines.push(format!("[{section}]"));
            lines.push(format!("{key} = {value}"));
        }
    }
    lines.join("\n") + "\n"
}

/// The settings tests pass to [`super::Cluster::start`] replace the keys `shoal dev init`
/// wrote (`[aae] interval`), add missing tables, and leave array tables alone.
#[test]
fn merged_settings_replace_keys_add_tables_and_leave_array_tables_alone() {
    let base = "id = \"n1\"\n\n[[seeds]]\nid = \"n1\"\n\n[replication]\nn = 3\n\n[aae]\ninterval = \"10s\"\n";
    let extra = "id = \"n9\"\n# a comment\n[aae]\ninterval = \"2s\"\ntick = \"200ms\"\n\n[handoff]\nenabled = false\n";
    assert_eq!(
        merge_toml(base, extra),
        "id = \"n9\"\n\n[[seeds]]\nid = \"n1\"\n\n[replication]\nn = 3\n\n[aae]\n\
         tick = \"200ms\"\ninterval = \"2s\"\n\n[handoff]\nenabled = false\n"
    );
}

#[test]
fn set_toml_replaces_inserts_and_appends() {
    let text =
        "id = \"n1\"\npartitions = 64\n\n[[seeds]]\nid = \"n1\"\n\n[aae]\ninterval = \"10s\"\n";
    let text = set_toml(text, "", "partitions", "16");
    let text = set_toml(&text, "aae", "interval", "\"1h\"");
    let text = set_toml(&text, "aae", "tick", "\"100ms\"");
    let text = set_toml(&text, "handoff", "ttl", "\"5s\"");
    assert_eq!(
        text,
        "id = \"n1\"\npartitions = 16\n\n[[seeds]]\nid = \"n1\"\n\n[aae]\ntick = \"100ms\"\n\
         interval = \"1h\"\n\n[handoff]\nttl = \"5s\"\n"
    );
}
