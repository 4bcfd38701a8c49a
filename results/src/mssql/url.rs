//! Which database URLs name SQL Server, and parsing one (URL, ADO.NET or JDBC
//! connection string) into a tiberius [`Config`], with its percent-decoding.

use std::time::Duration;

use tiberius::{AuthMethod, Config, EncryptionLevel};

use crate::store::StoreError;

/// Whether a database URL names SQL Server.
pub fn is_mssql_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("mssql://")
        || lower.starts_with("sqlserver://")
        || lower.starts_with("jdbc:sqlserver://")
        || (!lower.contains("://") && lower.contains(';') && (lower.contains("server=") || lower.contains("data source=")))
}

pub(super) fn bad_url(msg: impl Into<String>) -> StoreError {
    StoreError::BadUrl(msg.into())
}

pub(super) fn percent_decode(s: &str) -> Result<String, StoreError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| bad_url("truncated %-escape"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad_url("bad %-escape"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad_url("escape is not UTF-8"))
}

pub(super) fn truthy(v: &str) -> Result<bool, StoreError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err(bad_url(format!("`{v}` is not a boolean"))),
    }
}

/// Parses a SQL Server URL or connection string into a tiberius config. Encryption
/// defaults to required (TLS for the whole session), verified against the system's
/// roots unless `ca=PATH` or `trust_server_certificate=true` says otherwise.
pub fn parse_config(url: &str) -> Result<Config, StoreError> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("jdbc:sqlserver://") {
        return Config::from_jdbc_string(url).map_err(|e| bad_url(e.to_string()));
    }
    if !lower.starts_with("mssql://") && !lower.starts_with("sqlserver://") {
        return Config::from_ado_string(url).map_err(|e| bad_url(e.to_string()));
    }
    let rest = &url[url.find("://").expect("checked") + 3..];
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let mut config = Config::new();
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            (h, Some(p.parse::<u16>().map_err(|_| bad_url(format!("port `{p}`")))?))
        }
        _ => (hostport, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad_url("no host"));
    }
    // `host\instance` (as `host%5Cinstance` in a URL) names an instance.
    let host = percent_decode(host)?;
    match host.split_once('\\') {
        Some((h, instance)) => {
            config.host(h);
            config.instance_name(instance);
        }
        None => config.host(&host),
    }
    config.port(port.unwrap_or(1433));
    if !database.is_empty() {
        config.database(percent_decode(database)?);
    }
    if let Some(u) = userinfo {
        let (user, password) = u.split_once(':').unwrap_or((u, ""));
        config.authentication(AuthMethod::sql_server(percent_decode(user)?, percent_decode(password)?));
    }
    config.encryption(EncryptionLevel::Required);
    config.application_name("visionq");
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)?;
        match k.to_ascii_lowercase().replace('-', "_").as_str() {
            "encrypt" => config.encryption(match v.to_ascii_lowercase().as_str() {
                "required" | "true" | "yes" | "strict" => EncryptionLevel::Required,
                "on" => EncryptionLevel::On,
                "off" | "false" | "no" => EncryptionLevel::Off,
                "not_supported" | "none" => EncryptionLevel::NotSupported,
                other => return Err(bad_url(format!("encrypt=`{other}`: use required, on, off or not_supported"))),
            }),
            "trust_server_certificate" | "trustservercertificate" => {
                if truthy(&v)? {
                    config.trust_cert();
                }
            }
            "ca" | "trust_server_certificate_ca" => config.trust_cert_ca(v),
            "hostname_in_certificate" => config.hostname_in_certificate(v),
            "application_name" | "app" => config.application_name(v),
            "instance" => config.instance_name(v),
            "connect_timeout_s" => config
                .handshake_timeout(Some(Duration::from_secs(v.parse().map_err(|_| bad_url(format!("connect_timeout_s=`{v}`")))?))),
            other => return Err(bad_url(format!("unknown parameter `{other}`"))),
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_connection_strings_parse() {
        let c = parse_config("mssql://sa:p%40ss@db.example:1434/visionq?trust_server_certificate=true").unwrap();
        assert_eq!(c.get_addr(), "db.example:1434");
        let c = parse_config("sqlserver://sa:x@db.example/visionq").unwrap();
        assert_eq!(c.get_addr(), "db.example:1433");
        let c = parse_config("Server=tcp:db.example,1435;Database=visionq;User Id=sa;Password=x;Encrypt=true").unwrap();
        assert_eq!(c.get_addr(), "db.example:1435");
        assert!(parse_config("mssql://sa:x@db.example/visionq?encrypt=maybe").is_err());
        assert!(parse_config("mssql://sa:x@db.example/visionq?colour=blue").is_err());
        assert!(parse_config("mssql://sa:x@:1433/visionq").is_err());
        assert!(is_mssql_url("mssql://h/db"));
        assert!(is_mssql_url("Server=tcp:h,1433;Database=d"));
        assert!(!is_mssql_url("postgres://h/db"));
        assert!(!is_mssql_url("sqlite:///tmp/x.db"));
    }
}
