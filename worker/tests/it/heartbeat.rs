//! The worker's heartbeat row, against real MariaDB.

use common::domain::QueueType;
use testkit::TestDb;
use tokio_util::sync::CancellationToken;
use worker::heartbeat::Heartbeat;

async fn rows(db: &TestDb) -> Vec<(String, String, i64)> {
    sqlx::query_as(
        "SELECT worker_id, queue_type, CAST(pid AS SIGNED) FROM worker_heartbeat ORDER BY worker_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_worker_announces_itself_while_it_runs_and_leaves_when_stopped() {
    let db = TestDb::new().await;
    // A worker that died long ago is forgotten by the next beat.
    sqlx::query(
        "INSERT INTO worker_heartbeat VALUES ('worker-old', 'kafka', 'h', 1, \
         '2020-01-01 00:00:00', '2020-01-01 00:00:00')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let beat = Heartbeat::for_this_process("worker-test".into(), QueueType::Redis);
    let pid = i64::from(beat.pid);
    let cancel = CancellationToken::new();
    let task = beat.spawn(db.pool.clone(), cancel.clone());
    let expected = [("worker-test".to_string(), "redis".to_string(), pid)];
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen = rows(&db).await;
        if seen == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen,
        [("worker-test".to_string(), "redis".to_string(), pid)]
    );
    cancel.cancel();
    task.await.unwrap();
    assert!(
        rows(&db).await.is_empty(),
        "a stopped worker removes its row"
    );
}
