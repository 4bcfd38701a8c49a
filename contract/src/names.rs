//! Names the configuration's tables and the API share: what a station id may be,
//! whether a table's list takes a name, and what is wrong with a named table. Its
//! own module so that the config and the tables it holds (alert rules, sinks, lines
//! and zones) both import it instead of each other; it imports nothing.

/// What is wrong with the name and the station list of a `[[rule]]`, `[[line]]` or
/// `[[zone]]` table (`kind` names it in the message), if anything.
pub fn named_table_problem(kind: &str, name: &str, stations: &[String]) -> Option<String> {
    if !valid_station_id(name) {
        return Some(format!("{kind} name `{name}` is not valid: use 1-64 of A-Z a-z 0-9 . _ -"));
    }
    let bad = stations.iter().find(|s| !valid_station_id(s))?;
    Some(format!("{kind} `{name}`: `{bad}` is not a station id"))
}

/// Whether a table's list of names (`stations`, `classes`) takes `name`: an empty
/// list takes every one.
pub fn listed(list: &[String], name: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x == name)
}

/// Station ids: 1–64 of `[A-Za-z0-9._-]`, so they are safe in routing keys, URLs and labels.
pub fn valid_station_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
