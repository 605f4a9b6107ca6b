//! The PostgreSQL server these machines run (127.0.0.1:5432, trust auth): a fresh database per
//! test. Like every peer, it fails (never skips) when the server is not there.

/// The database the admin connection opens to create the others.
pub(crate) const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A new, empty database named `{prefix}_{random}`; its URL.
pub(crate) async fn fresh_pg(prefix: &str) -> String {
    use sqlx::Executor;
    let name = format!("{prefix}_{:016x}", fastrand::u64(..));
    let admin = sqlx::PgPool::connect(PG_ADMIN)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must run at {PG_ADMIN} for these tests: {e}"));
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    admin.close().await;
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}
