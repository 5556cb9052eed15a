//! The sale audit against a real MySQL/MariaDB: a correct sale passes, and
//! each check finds the fault it is there to find.

use common::audit::{audit_sale, Answers, AuditReport, Told};
use common::domain::QueueType;
use common::domain::{CouponId, CouponIssueEvent, IssueStatus, QueuedEvent, UserId};
use common::processor::process_batch;
use testkit::TestDb;
use uuid::Uuid;

const STOCK: i64 = 3;

/// A drained Redis sale of 3 units: users 1, 2, 3, 2 (again), 4 and 5 at
/// positions `1-1` to `1-6`, decided by the processor; the answers its
/// clients got, and the request ids in queue order.
async fn sale(db: &TestDb) -> (CouponId, Answers, Vec<Uuid>) {
    let coupon = db.coupon(STOCK as i32).await;
    let events: Vec<QueuedEvent> = [1, 2, 3, 2, 4, 5]
        .iter()
        .enumerate()
        .map(|(i, u)| QueuedEvent {
            event: CouponIssueEvent::new(coupon, UserId::try_from(*u).unwrap()),
            queue: QueueType::Redis,
            position: format!("1-{}", i + 1),
        })
        .collect();
    process_batch(&db.pool, &events).await.unwrap();
    let answers = Answers {
        accepted: events
            .iter()
            .map(|q| {
                let told = Told {
                    queue: q.queue,
                    position: q.position.clone(),
                };
                (q.event.event_id, Some(told))
            })
            .collect(),
        ..Answers::default()
    };
    let ids = events.iter().map(|q| q.event.event_id).collect();
    (coupon, answers, ids)
}

async fn audit(db: &TestDb, coupon: CouponId, answers: &Answers) -> AuditReport {
    audit_sale(&db.pool, coupon, STOCK, answers).await.unwrap()
}

/// The one violation of check `check`.
fn only(report: &AuditReport, check: &str) -> String {
    assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
    let v = report.violations[0].clone();
    assert!(v.starts_with(check), "{v}");
    v
}

async fn execute(db: &TestDb, sql: &str, id: Uuid) {
    sqlx::query(sql)
        .bind(id.to_string())
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_correct_sale_passes_every_check() {
    let db = TestDb::new().await;
    let (coupon, answers, _) = sale(&db).await;
    let report = audit(&db, coupon, &answers).await;
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert_eq!((report.issued, report.remaining_stock), (3, 0));
    assert_eq!(report.count(IssueStatus::Success), 3);
    assert_eq!(report.count(IssueStatus::DuplicateRequest), 1);
    assert_eq!(report.count(IssueStatus::OutOfStock), 2);
    assert_eq!(report.forwarded, 0);
}

#[tokio::test]
async fn stock_that_does_not_match_the_coupons_issued_is_caught() {
    let db = TestDb::new().await;
    let (coupon, answers, _) = sale(&db).await;
    sqlx::query("UPDATE coupon SET stock = 1 WHERE coupon_id = ?")
        .bind(coupon.get())
        .execute(&db.pool)
        .await
        .unwrap();
    only(&audit(&db, coupon, &answers).await, "1 stock");
}

#[tokio::test]
async fn a_result_of_a_request_never_accepted_and_an_accepted_one_without_result_are_caught() {
    let db = TestDb::new().await;
    let (coupon, mut answers, ids) = sale(&db).await;
    answers.accepted.remove(&ids[5]);
    only(&audit(&db, coupon, &answers).await, "2 answers");
    answers.accepted.insert(ids[5], None);
    answers.accepted.insert(Uuid::now_v7(), None);
    only(&audit(&db, coupon, &answers).await, "2 answers");
    // Unconfirmed requests may have a result or not.
    answers.accepted.remove(&ids[5]);
    answers.accepted.retain(|_, told| told.is_some());
    answers.unconfirmed.insert(ids[5]);
    answers.unconfirmed.insert(Uuid::now_v7());
    let report = audit(&db, coupon, &answers).await;
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert_eq!(report.unconfirmed_processed, 1);
}

#[tokio::test]
async fn a_result_stored_elsewhere_than_its_client_was_told_is_caught_unless_it_moved() {
    let db = TestDb::new().await;
    let (coupon, mut answers, ids) = sale(&db).await;
    let told = |position: &str, queue| {
        Some(Told {
            queue,
            position: position.into(),
        })
    };
    answers
        .accepted
        .insert(ids[4], told("1-60", QueueType::Redis));
    let v = only(&audit(&db, coupon, &answers).await, "3 places");
    assert!(v.contains("1-60") && v.contains("1-5"), "{v}");
    // Replayed from the dead-letter queue: a new position, which rules.
    answers.replayed.insert(ids[4]);
    assert!(audit(&db, coupon, &answers).await.violations.is_empty());
    // Forwarded after a switch: told Kafka, stored in Redis.
    answers.replayed.clear();
    answers
        .accepted
        .insert(ids[4], told("0:17", QueueType::Kafka));
    let report = audit(&db, coupon, &answers).await;
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert_eq!(report.forwarded, 1);
}

#[tokio::test]
async fn first_come_is_judged_on_the_positions_the_clients_were_told() {
    let db = TestDb::new().await;
    let (coupon, mut answers, ids) = sale(&db).await;
    // The worker wrote positions in which first-come holds, but the client
    // of the last SUCCESS (user 3, 1-3) was told a place behind an
    // OUT_OF_STOCK (user 4, 1-5).
    answers.accepted.insert(
        ids[2],
        Some(Told {
            queue: QueueType::Redis,
            position: "1-50".into(),
        }),
    );
    let report = audit(&db, coupon, &answers).await;
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.starts_with("6 first-come: a SUCCESS")),
        "{:#?}",
        report.violations
    );
}

#[tokio::test]
async fn a_duplicate_request_before_its_users_success_is_caught() {
    let db = TestDb::new().await;
    let (coupon, mut answers, ids) = sale(&db).await;
    // User 2's second request (DUPLICATE_REQUEST at 1-4) moved ahead of the
    // first (SUCCESS at 1-2), in the database and in what its client was told.
    execute(
        &db,
        "UPDATE coupon_issue_result SET queue_position = '1-0' WHERE request_id = ?",
        ids[3],
    )
    .await;
    answers.accepted.insert(
        ids[3],
        Some(Told {
            queue: QueueType::Redis,
            position: "1-0".into(),
        }),
    );
    only(
        &audit(&db, coupon, &answers).await,
        "6 first-come: 1 DUPLICATE_REQUEST",
    );
}

#[tokio::test]
async fn a_coupon_held_by_another_user_than_its_winner_is_caught() {
    let db = TestDb::new().await;
    let (coupon, answers, ids) = sale(&db).await;
    execute(
        &db,
        "UPDATE user_coupon SET user_id = 99 WHERE request_id = ?",
        ids[0],
    )
    .await;
    only(&audit(&db, coupon, &answers).await, "5 holders");
}
