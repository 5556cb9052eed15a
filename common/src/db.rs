//! MySQL access outside the processor: the pool, migrations, coupons and
//! result lookups.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{MySql, QueryBuilder};
use uuid::Uuid;

use crate::domain::{CouponId, IssueResult, IssueStatus, QueueType};
use crate::error::DbError;

/// The schema migrations shipped with this build.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool that connects on first use, so a process can start (and report
/// itself not ready) while the database is down.
pub fn pool(database_url: &str, max_connections: u32) -> Result<MySqlPool, DbError> {
    let options = MySqlConnectOptions::from_str(database_url)?;
    Ok(MySqlPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(options))
}

/// Applies pending migrations. Fails if the database carries a migration this
/// build does not know (the schema is newer than the code).
pub async fn migrate(pool: &MySqlPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// `SELECT 1`, for readiness.
pub async fn ping(pool: &MySqlPool) -> Result<(), DbError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// A coupon as the api shows it.
// Read with `FromRow`; its `DATETIME(6)` columns hold UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Coupon {
    pub coupon_id: i64,
    pub name: String,
    pub total_quantity: i32,
    #[sqlx(rename = "stock")]
    pub remaining_stock: i32,
    #[sqlx(rename = "issued")]
    pub issued_count: i64,
    pub issue_starts_at: Option<DateTime<Utc>>,
    pub issue_ends_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What an operator gives to create a coupon.
#[derive(Debug, Clone)]
pub struct NewCoupon {
    pub name: String,
    pub quantity: i32,
    pub issue_starts_at: Option<DateTime<Utc>>,
    pub issue_ends_at: Option<DateTime<Utc>>,
}

/// Every coupon's id and remaining stock, for the api's coupon cache.
pub async fn coupon_stocks(pool: &MySqlPool) -> Result<Vec<(i64, i64)>, DbError> {
    Ok(
        sqlx::query_as("SELECT coupon_id, CAST(stock AS SIGNED) FROM coupon")
            .fetch_all(pool)
            .await?,
    )
}

/// Coupons (`c`) with their issued counts, as [`Coupon`] reads them; the
/// caller adds the `WHERE`.
pub const SELECT_COUPONS: &str = "SELECT c.coupon_id, c.name, c.total_quantity, c.stock, \
     c.issue_starts_at, c.issue_ends_at, c.created_at, \
     (SELECT COUNT(*) FROM user_coupon uc WHERE uc.coupon_id = c.coupon_id) AS issued \
     FROM coupon c";

/// One coupon with its issued count, or `None`.
pub async fn find_coupon(pool: &MySqlPool, id: CouponId) -> Result<Option<Coupon>, DbError> {
    Ok(
        sqlx::query_as(&format!("{SELECT_COUPONS} WHERE c.coupon_id = ?"))
            .bind(id.get())
            .fetch_optional(pool)
            .await?,
    )
}

/// Inserts a coupon with its full quantity in stock and returns it.
pub async fn insert_coupon(pool: &MySqlPool, new: &NewCoupon) -> Result<Coupon, DbError> {
    let done = sqlx::query(
        "INSERT INTO coupon (name, total_quantity, stock, issue_starts_at, issue_ends_at) \
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&new.name)
    .bind(new.quantity)
    .bind(new.quantity)
    .bind(new.issue_starts_at.map(|t| t.naive_utc()))
    .bind(new.issue_ends_at.map(|t| t.naive_utc()))
    .execute(pool)
    .await
    .map_err(DbError::from_sqlx)?;
    let id = CouponId::try_from(done.last_insert_id() as i64)
        .map_err(|e| DbError::BadRow(format!("inserted coupon id {e}")))?;
    find_coupon(pool, id)
        .await?
        .ok_or(DbError::CouponVanished(id))
}

const SELECT_RESULTS: &str = "SELECT request_id, coupon_id, user_id, status, reason, \
     queue_position, queue_type, queue_epoch, requested_at, processed_at FROM coupon_issue_result";

/// The stored result of one request, or `None` while it is pending.
pub async fn find_result(
    pool: &MySqlPool,
    request_id: Uuid,
) -> Result<Option<IssueResult>, DbError> {
    Ok(
        sqlx::query_as(&format!("{SELECT_RESULTS} WHERE request_id = ?"))
            .bind(request_id.to_string())
            .fetch_optional(pool)
            .await?,
    )
}

/// The stored results of `ids`, in one query (a request without a result
/// is missing from the answer). Keep `ids` to a few thousand: each is a
/// placeholder.
pub async fn find_results(pool: &MySqlPool, ids: &[Uuid]) -> Result<Vec<IssueResult>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = QueryBuilder::<MySql>::new(format!("{SELECT_RESULTS} WHERE request_id IN "));
    q.push_tuples(ids, |mut b, id| {
        b.push_bind(id.to_string());
    });
    Ok(q.build_query_as().fetch_all(pool).await?)
}

/// Every result of one coupon (for audits and tests).
pub async fn results_for_coupon(
    pool: &MySqlPool,
    coupon_id: CouponId,
) -> Result<Vec<IssueResult>, DbError> {
    Ok(
        sqlx::query_as(&format!("{SELECT_RESULTS} WHERE coupon_id = ?"))
            .bind(coupon_id.get())
            .fetch_all(pool)
            .await?,
    )
}

/// Stores an enum with `as_str` and `FromStr` as its wire name in `VARCHAR`
/// columns: the SQL boundary reads and writes the enum, never a bare string.
macro_rules! sql_text {
    ($name:ty) => {
        impl sqlx::Type<sqlx::MySql> for $name {
            fn type_info() -> sqlx::mysql::MySqlTypeInfo {
                <str as sqlx::Type<sqlx::MySql>>::type_info()
            }

            fn compatible(ty: &sqlx::mysql::MySqlTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::MySql>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, sqlx::MySql> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut Vec<u8>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'_, sqlx::MySql>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::MySql> for $name {
            fn decode(
                value: sqlx::mysql::MySqlValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<&str as sqlx::Decode<'r, sqlx::MySql>>::decode(value)?.parse()?)
            }
        }
    };
}
sql_text!(IssueStatus);
sql_text!(QueueType);
