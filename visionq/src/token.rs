//! `visionq token new`: a fresh token and its tokens-file entry.

use visionq_contract::auth::{Scope, TokenEntry, new_token, token_hash};
use visionq_contract::config::valid_station_id;

#[derive(clap::Args)]
pub struct NewArgs {
    /// station (posts frames for --station), operator (read-only), reviewer (reads,
    /// and reviews the review queue) or admin.
    #[arg(long)]
    scope: Scope,
    /// A station the token may post for (repeat for several; station scope only).
    #[arg(long = "station")]
    stations: Vec<String>,
    /// The entry's name in logs; defaults to the first station, or the scope.
    #[arg(long)]
    name: Option<String>,
}

/// Prints the token on stdout (give it to its holder; it is not stored anywhere) and
/// the entry to append to the tokens file on stderr.
pub fn new(args: NewArgs) -> anyhow::Result<()> {
    match (args.scope, args.stations.is_empty()) {
        (Scope::Station, true) => anyhow::bail!("a station token needs --station ID (one or more)"),
        (Scope::Operator | Scope::Reviewer | Scope::Admin, false) => anyhow::bail!("--station only applies to --scope station"),
        _ => {}
    }
    if let Some(bad) = args.stations.iter().find(|s| !valid_station_id(s)) {
        anyhow::bail!("station id `{bad}` is not valid: 1-64 of A-Z a-z 0-9 . _ -");
    }
    let token = new_token();
    let entry = TokenEntry {
        name: args.name.unwrap_or_else(|| args.stations.first().cloned().unwrap_or_else(|| args.scope.name().into())),
        scope: args.scope,
        stations: args.stations,
        sha256: token_hash(&token),
    };
    #[derive(serde::Serialize)]
    struct File<'a> {
        token: [&'a TokenEntry; 1],
    }
    println!("{token}");
    eprintln!("# append to the tokens file (VISIONQ_TOKENS_FILE); the token above is shown only now");
    eprint!("{}", toml::to_string(&File { token: [&entry] })?);
    Ok(())
}
