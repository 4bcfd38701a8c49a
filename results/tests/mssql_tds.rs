//! The SQL Server path without a SQL Server: tiberius's connection, TLS (encryption
//! required), login, the deadpool pool with our manager, and parameterised queries
//! (`sp_executesql` RPCs), against a real TDS server — pySQLbridge (PyPI
//! `pysqlbridge`), a read-only TDS server over CSV files, installed into a venv
//! under `.cache/` on first use.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tiberius::Query;
use visionq_results::mssql::{parse_config, pool};

const VERSION: &str = "2.1.3";
const PASSWORD: &str = "s3cret-Pa55;word";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The bridge's executable, installed into `.cache/pysqlbridge-venv` if missing —
/// once per test binary: the tests run on parallel threads.
fn bridge() -> PathBuf {
    static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(install_bridge).clone()
}

fn install_bridge() -> PathBuf {
    let venv = repo().join(".cache/pysqlbridge-venv");
    let exe = venv.join("bin/pysqlbridge");
    let pinned = venv.join(format!(".pysqlbridge-{VERSION}"));
    if exe.exists() && pinned.exists() {
        return exe;
    }
    let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", &format!("pysqlbridge=={VERSION}")])
            .status()
            .is_ok_and(|s| s.success());
    assert!(ok, "cannot install pysqlbridge=={VERSION} into {}", venv.display());
    std::fs::write(pinned, "").unwrap();
    exe
}

struct Bridge {
    child: Child,
    port: u16,
    _dir: PathBuf,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

async fn start_bridge() -> Bridge {
    let exe = bridge();
    let dir = std::env::temp_dir().join(format!("visionq-tds-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("detections.csv"),
        "frame_id,idx,station,class_id,class_name,score,x1,y1,x2,y2,x1_px,y1_px,x2_px,y2_px,chain\n\
         0192f0c2-0000-7000-8000-000000000001,0,cam1,16,dog,0.91,0.1,0.1,0.5,0.5,64,48,320,240,\n\
         0192f0c2-0000-7000-8000-000000000002,0,cam1,15,cat,0.42,0.1,0.1,0.5,0.5,64,48,320,240,\n\
         0192f0c2-0000-7000-8000-000000000003,0,cam2,16,dog,0.77,0.1,0.1,0.5,0.5,64,48,320,240,\n\
         0192f0c2-0000-7000-8000-000000000003,1,cam2,16,dog,0.35,0.1,0.1,0.5,0.5,64,48,320,240,\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("frames.csv"),
        "frame_id,station,status,error,width,height,model_name,model_version,timings_ms,captured_at,received_at,completed_at,batch_size\n\
         0192f0c2-0000-7000-8000-000000000001,cam1,ok,,640,480,yolov3-tiny,v1,{},,2026-01-01 00:00:01,2026-01-01 00:00:02,4\n\
         0192f0c2-0000-7000-8000-000000000002,cam1,ok,,640,480,yolov3-tiny,v1,{},,2026-01-01 00:10:01,2026-01-01 00:10:02,8\n\
         0192f0c2-0000-7000-8000-000000000003,cam2,ok,,640,480,yolov3-tiny,v1,{},,2026-01-01 01:00:01,2026-01-01 01:00:02,1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("bridge.json"),
        r#"{"logins": [{"user": "visionq", "password": "${env:VISIONQ_BRIDGE_PW}"}],
            "tables": [{"name": "detections", "csv": "detections.csv"}, {"name": "frames", "csv": "frames.csv"}]}"#,
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = std::fs::File::create(dir.join("bridge.log")).unwrap();
    let child = Command::new(exe)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--config"])
        .arg(dir.join("bridge.json"))
        .env("VISIONQ_BRIDGE_PW", PASSWORD)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("pysqlbridge starts");
    let t0 = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(60), "pysqlbridge did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Bridge { child, port, _dir: dir }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

fn url(port: u16, password: &str, extra: &str) -> String {
    let pw: String =
        password.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
    format!("mssql://visionq:{pw}@127.0.0.1:{port}/master?encrypt=required{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiberius_pool_tls_and_parameterised_queries_against_a_tds_server() {
    let b = start_bridge().await;
    let config = parse_config(&url(b.port, PASSWORD, "&trust_server_certificate=true")).unwrap();
    let pool = pool(config, 2, Duration::from_secs(20)).unwrap();

    // Two connections at once, each logged in over TLS.
    let (mut c1, mut c2) = tokio::try_join!(pool.get(), pool.get()).expect("two pooled connections");
    assert_eq!(pool.status().size, 2);

    let mut q =
        Query::new("SELECT frame_id, class_name, score FROM detections WHERE class_name = @P1 AND score >= @P2 ORDER BY score DESC");
    q.bind("dog");
    q.bind(0.5f64);
    let rows = q.query(&mut c1).await.unwrap().into_first_result().await.unwrap();
    let got: Vec<(String, f64)> = rows
        .iter()
        .map(|r| (r.try_get::<&str, _>("class_name").unwrap().unwrap().to_string(), r.try_get::<f64, _>("score").unwrap().unwrap()))
        .collect();
    assert_eq!(got, vec![("dog".to_string(), 0.91), ("dog".to_string(), 0.77)], "parameters bound, filter and order applied");

    let mut q = Query::new("SELECT COUNT(*) AS n FROM detections WHERE station = @P1");
    q.bind("cam2".to_string());
    let n = q.query(&mut c2).await.unwrap().into_row().await.unwrap().unwrap();
    assert_eq!(n.get::<i32, _>("n"), Some(2));

    // Back to the pool and out again: the manager recycles them (a `SELECT 1` each).
    drop((c1, c2));
    let mut c = pool.get().await.expect("a recycled connection");
    assert_eq!(pool.status().size, 2, "recycled, not reopened");
    let one = c.simple_query("SELECT 1 AS one").await.unwrap().into_row().await.unwrap().unwrap();
    assert_eq!(one.get::<i32, _>("one"), Some(1));
    drop(c);

    // TLS is verified: the bridge's self-signed certificate is refused unless trusted.
    let untrusted = pool_get_error(&url(b.port, PASSWORD, "")).await;
    assert!(untrusted.to_lowercase().contains("certificate") || untrusted.to_lowercase().contains("tls"), "{untrusted}");
    // And the login is checked.
    let wrong = pool_get_error(&url(b.port, "wrong", "&trust_server_certificate=true")).await;
    assert!(wrong.contains("Login failed"), "{wrong}");
}

async fn pool_get_error(url: &str) -> String {
    let p = pool(parse_config(url).unwrap(), 1, Duration::from_secs(20)).unwrap();
    match p.get().await {
        Ok(_) => panic!("connected with {url}"),
        Err(e) => format!("{e:?}"),
    }
}

/// The store's read statements (the T-SQL `mssql.rs` generates), with their
/// parameters bound as the store binds them, run on the bridge (which answers
/// SELECTs as SQL Server does) over CSV tables shaped like ours. The bridge cannot
/// read `datetime2` parameters, so time bounds go as text here; it keeps every
/// column as text or number, so rows are checked by value rather than read back
/// into results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stores_read_statements_run_on_a_tds_server() {
    use visionq_results::mssql::{COUNTS_SQL, detections_of_sql, history_sql};
    type Time = chrono::DateTime<chrono::Utc>;
    let b = start_bridge().await;
    let pool =
        pool(parse_config(&url(b.port, PASSWORD, "&trust_server_certificate=true")).unwrap(), 1, Duration::from_secs(20)).unwrap();
    let mut c = pool.get().await.unwrap();
    let id = |r: &tiberius::Row| r.try_get::<&str, _>("frame_id").unwrap().unwrap()[32..].to_string();

    let history = |class: Option<&str>| {
        let mut q = Query::new(history_sql());
        q.bind("cam1".to_string());
        q.bind(None::<Time>);
        q.bind(None::<Time>);
        q.bind(class.is_some());
        q.bind(class.map(str::to_string));
        q.bind(None::<f32>);
        q.bind(10i64);
        q.bind(None::<Time>);
        q.bind(None::<uuid::Uuid>);
        q.bind(None::<String>); // ?outcome=
        q
    };
    let rows = rows_of(&mut c, history(None)).await.unwrap();
    assert_eq!(rows.iter().map(id).collect::<Vec<_>>(), vec!["0002", "0001"], "the station's frames, newest first");
    let rows = rows_of(&mut c, history(Some("dog"))).await.unwrap();
    assert_eq!(rows.iter().map(id).collect::<Vec<_>>(), vec!["0001"], "only frames with the class");

    let mut q = Query::new(detections_of_sql(2));
    q.bind("0192f0c2-0000-7000-8000-000000000001".to_string());
    q.bind("0192f0c2-0000-7000-8000-000000000003".to_string());
    let rows = rows_of(&mut c, q).await.unwrap();
    let got: Vec<(String, f64)> = rows.iter().map(|r| (id(r), r.try_get::<f64, _>("score").unwrap().unwrap())).collect();
    assert_eq!(got, vec![("0001".into(), 0.91), ("0003".into(), 0.77), ("0003".into(), 0.35)], "by frame, then index");

    let mut q = Query::new(COUNTS_SQL);
    q.bind("cam1".to_string());
    q.bind(3600i64);
    q.bind("2026-01-01 00:00:00");
    q.bind("2026-01-02 00:00:00");
    q.bind(None::<f32>);
    let rows = rows_of(&mut c, q).await.unwrap();
    let int = |r: &tiberius::Row, c: &str| {
        r.try_get::<i64, _>(c).ok().flatten().or_else(|| r.try_get::<i32, _>(c).unwrap().map(i64::from)).unwrap()
    };
    let got: Vec<(i64, String, i64)> = rows
        .iter()
        .map(|r| (int(r, "bucket"), r.try_get::<&str, _>("class_name").unwrap().unwrap().to_string(), int(r, "n")))
        .collect();
    // 2026-01-01T00:00:00Z is hour 490896 since the epoch.
    assert_eq!(got, vec![(490_896, "cat".into(), 1), (490_896, "dog".into(), 1)]);
}

async fn rows_of(c: &mut visionq_results::mssql::TdsClient, q: Query<'_>) -> Result<Vec<tiberius::Row>, String> {
    let stream = q.query(c).await.map_err(|e| e.to_string())?;
    stream.into_first_result().await.map_err(|e| e.to_string())
}
