//! The one schema migration runner: reads the versions a database has recorded in
//! `visionq_migrations`, applies each missing step in version order and records it.
//! Each dialect (SQLite, PostgreSQL, SQL Server) implements [`Dialect`] over a
//! connection it has already put inside the migrating transaction (holding its
//! lock against other replicas where it needs one), and commits after [`run`]
//! returns — the transaction, the lock and the version table's DDL are the
//! dialect's own.
//!
//! The runner is async; SQLite's implementation runs each call synchronously on its
//! connection (rusqlite), so its futures are ready when first polled.

/// One dialect's migrations, over a connection inside the migrating transaction.
pub(crate) trait Dialect {
    type Error;
    /// (version, SQL) in ascending version order; each is applied once.
    const STEPS: &'static [(i32, &'static str)];

    /// The versions recorded as applied.
    async fn applied(&mut self) -> Result<Vec<i32>, Self::Error>;
    /// Runs one step's statements.
    async fn apply(&mut self, sql: &str) -> Result<(), Self::Error>;
    /// Records `version` as applied.
    async fn record(&mut self, version: i32) -> Result<(), Self::Error>;
}

/// The steps not recorded as applied, in order.
pub(crate) fn pending<'a>(steps: &'a [(i32, &'a str)], applied: &[i32]) -> Vec<&'a (i32, &'a str)> {
    steps.iter().filter(|(version, _)| !applied.contains(version)).collect()
}

/// Brings the schema up to date: applies and records every missing step, in order,
/// and returns the versions applied now (none when the schema was current).
pub(crate) async fn run<D: Dialect>(db: &mut D) -> Result<Vec<i32>, D::Error> {
    let applied = db.applied().await?;
    let mut now = Vec::new();
    for &(version, sql) in pending(D::STEPS, &applied) {
        db.apply(sql).await?;
        db.record(version).await?;
        now.push(version);
    }
    Ok(now)
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    /// A database in memory: what it recorded, and every call in order.
    #[derive(Default)]
    struct Fake {
        recorded: Vec<i32>,
        calls: Vec<String>,
        fail_on: Option<&'static str>,
    }

    impl Dialect for Fake {
        type Error = String;
        const STEPS: &'static [(i32, &'static str)] = &[(1, "one"), (2, "two"), (3, "three"), (4, "four")];

        async fn applied(&mut self) -> Result<Vec<i32>, String> {
            Ok(self.recorded.clone())
        }
        async fn apply(&mut self, sql: &str) -> Result<(), String> {
            if self.fail_on == Some(sql) {
                return Err(format!("{sql} failed"));
            }
            self.calls.push(format!("apply {sql}"));
            Ok(())
        }
        async fn record(&mut self, version: i32) -> Result<(), String> {
            self.calls.push(format!("record {version}"));
            self.recorded.push(version);
            Ok(())
        }
    }

    fn migrate(db: &mut Fake) -> Result<Vec<i32>, String> {
        run(db).now_or_never().expect("the fake never waits")
    }

    #[test]
    fn a_new_database_gets_every_step_in_order_each_recorded_after_it_runs() {
        let mut db = Fake::default();
        assert_eq!(migrate(&mut db).unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(db.calls, ["apply one", "record 1", "apply two", "record 2", "apply three", "record 3", "apply four", "record 4"]);
    }

    #[test]
    fn an_older_database_gets_only_the_missing_steps_and_a_current_one_none() {
        let mut db = Fake { recorded: vec![1, 2], ..Fake::default() };
        assert_eq!(migrate(&mut db).unwrap(), vec![3, 4]);
        assert_eq!(db.calls, ["apply three", "record 3", "apply four", "record 4"]);
        db.calls.clear();
        assert_eq!(migrate(&mut db).unwrap(), Vec::<i32>::new(), "current: nothing to do");
        assert!(db.calls.is_empty());
        // Each missing step, not only those after the highest recorded one.
        assert_eq!(pending(Fake::STEPS, &[1, 3]), vec![&(2, "two"), &(4, "four")]);
    }

    #[test]
    fn a_failing_step_stops_the_run_unrecorded() {
        let mut db = Fake { fail_on: Some("three"), ..Fake::default() };
        assert_eq!(migrate(&mut db).unwrap_err(), "three failed");
        assert_eq!(db.recorded, vec![1, 2], "the failed step and those after it are not recorded");
    }

    /// The dialects' futures are `Send` (the trait's are not declared so): a store
    /// can still be opened, and migrated, inside a spawned task.
    #[test]
    fn opening_a_store_is_a_send_future() {
        fn send<T: Send>(_: &T) {}
        send(&crate::open_store("postgres://nowhere/db"));
        send(&crate::postgres::PgStore::connect("postgres://nowhere/db"));
        send(&crate::mssql::MssqlStore::connect("mssql://nowhere/db"));
        send(&crate::sqlite::SqliteStore::open("/nonexistent/x.db"));
    }
}
