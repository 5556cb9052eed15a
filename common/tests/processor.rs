//! The shared processor against a real MySQL/MariaDB, a fresh database per test.

use std::collections::HashSet;

use chrono::{Duration, Utc};
use common::domain::QueueType;
use common::domain::{CouponId, CouponIssueEvent, IssueStatus, QueuedEvent, UserId, FIRST_EPOCH};
use common::processor::{process_batch, process_batch_with, Holders};
use testkit::TestDb;

/// Events for `users` in order, at positions `1-<n>`.
fn events(coupon: CouponId, users: &[i64], first_position: u64) -> Vec<QueuedEvent> {
    events_in(FIRST_EPOCH, coupon, users, first_position)
}

/// [`events`] of queue epoch `epoch`.
fn events_in(epoch: u64, coupon: CouponId, users: &[i64], first_position: u64) -> Vec<QueuedEvent> {
    users
        .iter()
        .enumerate()
        .map(|(i, u)| QueuedEvent {
            event: CouponIssueEvent::in_epoch(coupon, UserId::try_from(*u).unwrap(), epoch),
            queue: QueueType::Redis,
            position: format!("1-{}", first_position + i as u64),
        })
        .collect()
}

/// Processes `users`' requests for `coupon` as one batch at positions from
/// `first_position` on.
async fn process(
    db: &TestDb,
    coupon: CouponId,
    users: &[i64],
    first_position: u64,
) -> common::processor::BatchOutcome {
    process_batch(&db.pool, &events(coupon, users, first_position))
        .await
        .unwrap()
}

/// [`process`] by a worker that remembers holders in `memory`.
async fn process_remembering(
    db: &TestDb,
    memory: &Holders,
    coupon: CouponId,
    users: &[i64],
    first_position: u64,
) -> Vec<IssueStatus> {
    let out = process_batch_with(
        &db.pool,
        Some(memory),
        &events(coupon, users, first_position),
    )
    .await
    .unwrap();
    statuses(&out)
}

fn statuses(outcome: &common::processor::BatchOutcome) -> Vec<IssueStatus> {
    outcome.results.iter().map(|r| r.status).collect()
}

async fn stock(db: &TestDb, coupon: CouponId) -> i32 {
    sqlx::query_scalar("SELECT stock FROM coupon WHERE coupon_id = ?")
        .bind(coupon.get())
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn result_rows(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM coupon_issue_result")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn holders(db: &TestDb, coupon: CouponId) -> Vec<i64> {
    sqlx::query_scalar("SELECT user_id FROM user_coupon WHERE coupon_id = ? ORDER BY user_id")
        .bind(coupon.get())
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn unknown_coupon_fails_validation_and_touches_no_stock() {
    let db = TestDb::new().await;
    let ghost = CouponId::try_from(987_654).unwrap();
    let out = process(&db, ghost, &[1, 2], 1).await;
    assert_eq!(statuses(&out), [IssueStatus::ValidationFailed; 2]);
    assert!(out.results[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("does not exist"));
}

#[tokio::test]
async fn requests_outside_the_issue_window_fail_validation() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let not_open = db.coupon(10).await;
    let closed = db.coupon(10).await;
    sqlx::query("UPDATE coupon SET issue_starts_at = ? WHERE coupon_id = ?")
        .bind((now + Duration::hours(1)).naive_utc())
        .bind(not_open.get())
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE coupon SET issue_starts_at = ?, issue_ends_at = ? WHERE coupon_id = ?")
        .bind((now - Duration::hours(2)).naive_utc())
        .bind((now - Duration::hours(1)).naive_utc())
        .bind(closed.get())
        .execute(&db.pool)
        .await
        .unwrap();
    for coupon in [not_open, closed] {
        let out = process(&db, coupon, &[1], 1).await;
        assert_eq!(statuses(&out), [IssueStatus::ValidationFailed]);
        assert_eq!(stock(&db, coupon).await, 10);
        assert!(holders(&db, coupon).await.is_empty());
    }
}

#[tokio::test]
async fn a_repeat_user_gets_duplicate_request_within_and_across_batches() {
    let db = TestDb::new().await;
    let coupon = db.coupon(10).await;
    let first = process(&db, coupon, &[7, 7], 1).await;
    assert_eq!(
        statuses(&first),
        [IssueStatus::Success, IssueStatus::DuplicateRequest]
    );
    let later = process(&db, coupon, &[7], 3).await;
    assert_eq!(statuses(&later), [IssueStatus::DuplicateRequest]);
    assert_eq!(holders(&db, coupon).await, [7]);
    assert_eq!(stock(&db, coupon).await, 9);
}

#[tokio::test]
async fn a_batch_that_straddles_the_last_unit_issues_exactly_the_stock_in_order() {
    let db = TestDb::new().await;
    let coupon = db.coupon(3).await;
    let out = process(&db, coupon, &[1, 2, 3, 4, 5], 1).await;
    assert_eq!(
        statuses(&out),
        [
            IssueStatus::Success,
            IssueStatus::Success,
            IssueStatus::Success,
            IssueStatus::OutOfStock,
            IssueStatus::OutOfStock
        ]
    );
    assert_eq!(stock(&db, coupon).await, 0);
    assert_eq!(holders(&db, coupon).await, [1, 2, 3]);
    let after = process(&db, coupon, &[6], 6).await;
    assert_eq!(statuses(&after), [IssueStatus::OutOfStock]);
}

#[tokio::test]
async fn the_same_batch_delivered_twice_changes_nothing() {
    let db = TestDb::new().await;
    let coupon = db.coupon(2).await;
    let batch = events(coupon, &[1, 2, 3], 1);
    let first = process_batch(&db.pool, &batch).await.unwrap();
    assert_eq!(first.results.len(), 3);
    let again = process_batch(&db.pool, &batch).await.unwrap();
    assert!(again.results.is_empty());
    assert_eq!(again.already_processed, 3);
    // What the repeat gate settles: the results that existed.
    assert_eq!(again.settled.len(), 3);
    assert_eq!(again.settled.iter().filter(|s| s.won).count(), 2);
    // A redelivery that overlaps new events: only the new ones are decided.
    let mut overlap = batch.clone();
    overlap.extend(events(coupon, &[4], 4));
    let third = process_batch(&db.pool, &overlap).await.unwrap();
    assert_eq!(statuses(&third), [IssueStatus::OutOfStock]);
    assert_eq!(third.already_processed, 3);
    assert_eq!(stock(&db, coupon).await, 0);
    assert_eq!(holders(&db, coupon).await, [1, 2]);
    assert_eq!(result_rows(&db).await, 4);
}

#[tokio::test]
async fn a_stock_set_by_plain_sql_is_honoured_by_the_next_batch() {
    let db = TestDb::new().await;
    let coupon = db.coupon(1).await;
    process(&db, coupon, &[1, 2], 1).await;
    sqlx::query("UPDATE coupon SET stock = 2 WHERE coupon_id = ?")
        .bind(coupon.get())
        .execute(&db.pool)
        .await
        .unwrap();
    let out = process(&db, coupon, &[2, 3, 4], 3).await;
    assert_eq!(
        statuses(&out),
        [
            IssueStatus::Success,
            IssueStatus::Success,
            IssueStatus::OutOfStock
        ]
    );
    assert_eq!(stock(&db, coupon).await, 0);
}

#[tokio::test]
async fn concurrent_batches_of_one_coupon_never_oversell() {
    let db = TestDb::new().await;
    let coupon = db.coupon(50).await;
    // One worker's memory of the holders, shared by its batches; each
    // batch's users overlap the next one's by half.
    let memory = std::sync::Arc::new(Holders::default());
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let pool = db.pool.clone();
        let memory = memory.clone();
        let users: Vec<i64> = (0..40).map(|i| (t * 20 + i + 1) as i64).collect();
        let batch = events(coupon, &users, t * 1000);
        tasks.push(tokio::spawn(async move {
            common::processor::process_batch_with_retry(
                &pool,
                Some(&memory),
                &batch,
                Default::default(),
                &Default::default(),
            )
            .await
            .unwrap()
        }));
    }
    let mut success = 0;
    for t in tasks {
        success += t
            .await
            .unwrap()
            .results
            .iter()
            .filter(|r| r.status == IssueStatus::Success)
            .count();
    }
    assert_eq!(success, 50);
    assert_eq!(stock(&db, coupon).await, 0);
    let distinct: HashSet<i64> = holders(&db, coupon).await.into_iter().collect();
    assert_eq!(distinct.len(), 50);
}

/// Two workers, each with its memory of the holders, on one coupon: each
/// sees the holders the other made, also once the coupon is sold out, after
/// an operator's restock by plain SQL, and after an operator's reset that
/// cleared the holders (`scripts/reset-db.sh`).
#[tokio::test]
async fn a_workers_memory_of_holders_sees_what_other_workers_issued() {
    let db = TestDb::new().await;
    let coupon = db.coupon(3).await;
    let (a, b) = (Holders::default(), Holders::default());
    use IssueStatus::{DuplicateRequest as Dup, OutOfStock as Out, Success as Won};

    assert_eq!(process_remembering(&db, &a, coupon, &[1], 1).await, [Won]);
    assert_eq!(
        process_remembering(&db, &b, coupon, &[2, 1], 2).await,
        [Won, Dup]
    );
    assert_eq!(
        process_remembering(&db, &a, coupon, &[2, 1, 3, 4], 4).await,
        [Dup, Dup, Won, Out]
    );
    // Sold out: only the holders get DUPLICATE_REQUEST.
    assert_eq!(
        process_remembering(&db, &b, coupon, &[3, 5, 1], 8).await,
        [Dup, Out, Dup]
    );
    assert_eq!(process(&db, coupon, &[2, 6], 11).await.results.len(), 2);

    sqlx::query("UPDATE coupon SET stock = 2 WHERE coupon_id = ?")
        .bind(coupon.get())
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        process_remembering(&db, &a, coupon, &[3, 6, 1], 13).await,
        [Dup, Won, Dup]
    );
    assert_eq!(
        process_remembering(&db, &b, coupon, &[6, 7, 8], 16).await,
        [Dup, Won, Out]
    );
    assert_eq!(holders(&db, coupon).await, [1, 2, 3, 6, 7]);
    assert_eq!(stock(&db, coupon).await, 0);

    // Worker a now remembers the five holders.
    assert_eq!(process_remembering(&db, &a, coupon, &[8], 19).await, [Out]);

    // The reset's statements: the holders go, and as many new ones come
    // through worker b as there were before.
    let reset = include_str!("../../scripts/reset-db.sh");
    assert!(reset.contains("holders_version = holders_version + 1"));
    let mut tx = db.pool.begin().await.unwrap();
    for sql in [
        "UPDATE coupon SET total_quantity = 5, stock = 5, holders_version = holders_version + 1 \
         WHERE coupon_id = ?",
        "DELETE FROM user_coupon WHERE coupon_id = ?",
    ] {
        sqlx::query(sql)
            .bind(coupon.get())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let b_wins = process_remembering(&db, &b, coupon, &[11, 12, 13, 14, 15], 20).await;
    assert_eq!(b_wins, [Won; 5]);
    // Worker a remembered 1, 2, 3, 6 and 7: as many holders as now.
    assert_eq!(
        process_remembering(&db, &a, coupon, &[1, 11, 16], 25).await,
        [Out, Dup, Out]
    );
    assert_eq!(holders(&db, coupon).await, [11, 12, 13, 14, 15]);
}

/// Gives `user` the coupon by hand, without raising its holders version.
async fn hold_by_hand(db: &TestDb, coupon: CouponId, user: i64) {
    sqlx::query(
        "INSERT INTO user_coupon (user_id, coupon_id, status, request_id, issued_at) \
         VALUES (?, ?, 'ISSUED', UUID(), NOW(6))",
    )
    .bind(user)
    .bind(coupon.get())
    .execute(&db.pool)
    .await
    .unwrap();
}

/// A holder added without raising the coupon's holders version (by hand
/// against the rule, or by a build from before the version): a memory that
/// missed it fails the batch that would issue to them twice, without
/// writing anything, and the next attempt reads the holders from the table.
/// Once the coupon is sold out, such a holder is told OUT_OF_STOCK by a
/// memory that missed them (what docs/operations.md's rule is for).
#[tokio::test]
async fn a_holder_the_memory_missed_is_never_issued_twice() {
    let db = TestDb::new().await;
    let coupon = db.coupon(5).await;
    let memory = Holders::default();
    process_remembering(&db, &memory, coupon, &[1], 1).await;
    hold_by_hand(&db, coupon, 9).await;
    let batch = events(coupon, &[2, 9], 2);
    assert!(process_batch_with(&db.pool, Some(&memory), &batch)
        .await
        .is_err());
    assert_eq!(stock(&db, coupon).await, 4);
    assert_eq!(result_rows(&db).await, 1);
    let out = process_batch_with(&db.pool, Some(&memory), &batch)
        .await
        .unwrap();
    assert_eq!(
        statuses(&out),
        [IssueStatus::Success, IssueStatus::DuplicateRequest]
    );
    assert_eq!(holders(&db, coupon).await, [1, 2, 9]);

    let sold_out = db.coupon(1).await;
    process_remembering(&db, &memory, sold_out, &[1, 2], 4).await;
    hold_by_hand(&db, sold_out, 3).await;
    assert_eq!(
        process_remembering(&db, &memory, sold_out, &[3, 1], 6).await,
        [IssueStatus::OutOfStock, IssueStatus::DuplicateRequest]
    );
    // Without a memory, the holders are read for each batch.
    assert_eq!(
        statuses(&process(&db, sold_out, &[3], 8).await),
        [IssueStatus::DuplicateRequest]
    );
}

/// A coupon row deleted and made again under the same id starts its
/// holders version again: a memory of the old row is not taken for the new
/// one, even at the same version.
#[tokio::test]
async fn a_coupon_made_again_under_its_id_is_not_taken_for_the_one_remembered() {
    let db = TestDb::new().await;
    let coupon = db.coupon(2).await;
    let memory = Holders::default();
    assert_eq!(
        process_remembering(&db, &memory, coupon, &[1], 1).await,
        [IssueStatus::Success]
    );
    for sql in [
        "DELETE FROM user_coupon WHERE coupon_id = ?",
        "DELETE FROM coupon_issue_result WHERE coupon_id = ?",
        "DELETE FROM coupon WHERE coupon_id = ?",
        "INSERT INTO coupon (coupon_id, name, total_quantity, stock) VALUES (?, 'again', 2, 2)",
    ] {
        sqlx::query(sql)
            .bind(coupon.get())
            .execute(&db.pool)
            .await
            .unwrap();
    }
    // Another worker issues one: the new row is at the version remembered.
    assert_eq!(
        statuses(&process(&db, coupon, &[2], 2).await),
        [IssueStatus::Success]
    );
    assert_eq!(
        process_remembering(&db, &memory, coupon, &[2, 1], 3).await,
        [IssueStatus::DuplicateRequest, IssueStatus::Success]
    );
    assert_eq!(holders(&db, coupon).await, [1, 2]);
}

#[tokio::test]
async fn a_batch_mixing_coupons_is_refused_whole() {
    let db = TestDb::new().await;
    let a = db.coupon(5).await;
    let b = db.coupon(5).await;
    let mut batch = events(a, &[1], 1);
    batch.extend(events(b, &[2], 2));
    assert!(process_batch(&db.pool, &batch).await.is_err());
    assert_eq!(stock(&db, a).await, 5);
}

async fn queue_epoch(db: &TestDb, coupon: CouponId) -> i64 {
    sqlx::query_scalar("SELECT queue_epoch FROM coupon WHERE coupon_id = ?")
        .bind(coupon.get())
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn stored_status(db: &TestDb, event: &QueuedEvent) -> String {
    sqlx::query_scalar("SELECT status FROM coupon_issue_result WHERE request_id = ?")
        .bind(event.event.event_id.to_string())
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Batches of a sold-out coupon: holders and everyone else told apart, the
/// fence still moved and kept, replays and redeliveries still told apart.
#[tokio::test]
async fn a_sold_out_coupon_refuses_and_keeps_the_fence() {
    let db = TestDb::new().await;
    let coupon = db.coupon(2).await;
    process(&db, coupon, &[1, 2], 1).await;
    assert_eq!(stock(&db, coupon).await, 0);

    // A holder is told so, everyone else (twice, too) that nothing is left.
    let out = process(&db, coupon, &[3, 1, 4, 3], 3).await;
    assert_eq!(
        statuses(&out),
        [
            IssueStatus::OutOfStock,
            IssueStatus::DuplicateRequest,
            IssueStatus::OutOfStock,
            IssueStatus::OutOfStock
        ]
    );
    assert!(out.sold_out);
    assert_eq!(out.settled.len(), 4);
    assert!(out.settled.iter().all(|s| !s.won));

    // The same batch again: nothing new is written.
    let batch = events(coupon, &[5, 6], 7);
    process_batch(&db.pool, &batch).await.unwrap();
    let again = process_batch(&db.pool, &batch).await.unwrap();
    assert!(again.results.is_empty());
    assert_eq!(again.already_processed, 2);
    // What the repeat gate settles: the results that exist.
    assert_eq!(again.settled.len(), 2);

    // An event of a later epoch moves the fence; one of the earlier epoch
    // that comes after it is late: forwarded, not decided.
    let later = events_in(2, coupon, &[7], 9);
    assert_eq!(
        statuses(&process_batch(&db.pool, &later).await.unwrap()),
        [IssueStatus::OutOfStock]
    );
    assert_eq!(queue_epoch(&db, coupon).await, 2);
    let early = process_batch(&db.pool, &events(coupon, &[8], 10))
        .await
        .unwrap();
    assert!(early.results.is_empty());
    assert_eq!(early.late.len(), 1);
    assert_eq!(queue_epoch(&db, coupon).await, 2, "the fence stays");

    // A SYSTEM_ERROR replayed from the dead-letter queue is decided again.
    let replay = events_in(2, coupon, &[9], 11);
    common::processor::record_system_errors(&db.pool, &replay, "the database was gone")
        .await
        .unwrap();
    let out = process_batch(&db.pool, &replay).await.unwrap();
    assert_eq!(statuses(&out), [IssueStatus::OutOfStock]);
    assert_eq!(stored_status(&db, &replay[0]).await, "OUT_OF_STOCK");

    assert_eq!(result_rows(&db).await, 2 + 4 + 2 + 1 + 1);
    assert_eq!(stock(&db, coupon).await, 0);
    assert_eq!(holders(&db, coupon).await, [1, 2]);
}
