//! PostgreSQL over TLS: every `sslmode` against a PostgreSQL of the test's own —
//! started by the test on a free port with its own data directory (initdb,
//! pg_ctl), TLS on with a CA and a server certificate made here by openssl — so the
//! machine's shared server is left as it is. The certificate names `localhost`
//! only, which tells verify-full (checks the name) from verify-ca (does not).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::Utc;
use uuid::Uuid;
use visionq_contract::message::{ImageSize, Timings};
use visionq_contract::{FrameResult, ModelInfo, ResultStatus};
use visionq_results::pg_tls::{self, SslMode};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// PostgreSQL's programs (Debian keeps them out of PATH).
fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter().rev().map(|d| d.join(name)).find(|p| p.exists()).unwrap_or_else(|| PathBuf::from(name))
}

fn is_root() -> bool {
    String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap().trim() == "0"
}

/// A PostgreSQL program run as the `postgres` user when the test runs as root
/// (initdb and the server refuse root).
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// The test's own PostgreSQL with TLS on; stopped when dropped.
struct TlsServer {
    dir: PathBuf,
    port: u16,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = std::env::temp_dir().join(common::unique("pgtls"));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(&dir));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=visionq test CA",
        ]);
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=another CA",
        ]);
        openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
        std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir));
        }
        run(Command::new("chmod").args(["700"]).arg(&dir));
        run(Command::new("chmod").args(["600"]).arg(dir.join("server.key")));
        let data = dir.join("data");
        run(as_pg_user(&pg_bin("initdb")).args(["-D"]).arg(&data).args(["-U", "postgres", "--auth=trust", "--no-sync"]));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{d}'\nssl = on\n\
             ssl_cert_file = '{d}/server.crt'\nssl_key_file = '{d}/server.key'\nfsync = off\n",
            d = dir.display()
        );
        let mut all = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        all.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), all).unwrap();
        run(as_pg_user(&pg_bin("pg_ctl")).args(["-D"]).arg(&data).args(["-l"]).arg(dir.join("log")).args(["-w", "start"]));
        TlsServer { dir, port }
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    fn ca(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = as_pg_user(&pg_bin("pg_ctl")).args(["-D"]).arg(self.dir.join("data")).args(["-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connects as the store would; Ok(whether the session is encrypted, as the server sees it).
async fn session_ssl(url: &str) -> Result<bool, String> {
    let c = pg_tls::parse(url).map_err(|e| e.to_string())?;
    let (client, conn) = c.config.connect(c.tls).await.map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
    tokio::spawn(conn);
    let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn every_sslmode_against_a_tls_server() {
    let server = TlsServer::start();
    let ca = format!("sslrootcert={}", server.ca("ca.crt"));
    let other = format!("sslrootcert={}", server.ca("other-ca.crt"));

    // verify-full: the CA and the name both checked; the store works over it.
    let full = server.url("localhost", &format!("sslmode=verify-full&{ca}"));
    assert_eq!(session_ssl(&full).await, Ok(true));
    let store = visionq_results::open_store(&full).await.expect("the store migrates and runs over verify-full");
    let t = Utc::now();
    let r = FrameResult {
        frame_id: Uuid::now_v7(),
        station: "tls-cam".into(),
        status: ResultStatus::Ok,
        error: None,
        image: ImageSize { width: 8, height: 8 },
        model: ModelInfo::default(),
        detections: vec![],
        decision: None,
        review: None,
        timings_ms: Timings::new(),
        batch_size: None,
        captured_at: None,
        received_at: t,
        completed_at: t,
    };
    assert_eq!(store.write_batch(std::slice::from_ref(&r)).await.unwrap(), 1);
    assert_eq!(store.get(r.frame_id).await.unwrap().map(|x| x.station), Some("tls-cam".to_string()));
    // By address, the name (localhost only) does not match: refused.
    let by_ip = session_ssl(&server.url("127.0.0.1", &format!("sslmode=verify-full&{ca}"))).await;
    assert!(by_ip.as_ref().is_err_and(|e| e.contains("NotValidForName")), "{by_ip:?}");
    // verify-ca: the chain only.
    assert_eq!(session_ssl(&server.url("127.0.0.1", &format!("sslmode=verify-ca&{ca}"))).await, Ok(true));
    let wrong_ca = session_ssl(&server.url("localhost", &format!("sslmode=verify-ca&{other}"))).await;
    assert!(wrong_ca.as_ref().is_err_and(|e| e.contains("UnknownIssuer")), "another CA's server is refused: {wrong_ca:?}");
    let wrong_ca = session_ssl(&server.url("localhost", &format!("sslmode=verify-full&{other}"))).await;
    assert!(wrong_ca.is_err(), "{wrong_ca:?}");
    // require and prefer encrypt without checking; disable does not encrypt.
    assert_eq!(session_ssl(&server.url("127.0.0.1", "sslmode=require")).await, Ok(true));
    assert_eq!(session_ssl(&server.url("127.0.0.1", "sslmode=prefer")).await, Ok(true));
    assert_eq!(session_ssl(&server.url("127.0.0.1", "")).await, Ok(true), "prefer is the default");
    assert_eq!(session_ssl(&server.url("127.0.0.1", "sslmode=disable")).await, Ok(false));
    // require with a root certificate checks the chain, as libpq does.
    assert!(session_ssl(&server.url("localhost", &format!("sslmode=require&{other}"))).await.is_err());
    // A mode libpq does not have is refused with the reason.
    let bad = pg_tls::parse(&server.url("localhost", "sslmode=verify")).err().unwrap().to_string();
    assert!(bad.contains("sslmode `verify`"), "{bad}");
    assert_eq!(pg_tls::parse(&full).unwrap().mode, SslMode::VerifyFull);
}

/// The machine's shared server (TLS off, as Debian's cluster here is set up or
/// not): `require` must refuse to fall back, the default must still connect.
#[tokio::test]
async fn require_never_falls_back_to_plain_text() {
    let plain = session_ssl(&format!("{}?sslmode=disable", common::PG_ADMIN_URL)).await;
    assert_eq!(plain, Ok(false));
    let default = session_ssl(common::PG_ADMIN_URL).await;
    let required = session_ssl(&format!("{}?sslmode=require", common::PG_ADMIN_URL)).await;
    match default {
        // The shared server offers no TLS: prefer falls back, require refuses.
        Ok(false) => assert!(required.is_err(), "{required:?}"),
        // It offers TLS: both encrypt.
        Ok(true) => assert_eq!(required, Ok(true)),
        Err(e) => panic!("the default (prefer) connects: {e}"),
    }
}
