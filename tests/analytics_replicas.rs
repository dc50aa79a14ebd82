//! Two replicas on one PostgreSQL (and Redis) run each scheduled job once
//! per tick: the `job_runs` lease row of a (job, tick) is taken by one of
//! them, and only that one runs it. Both apps live in this test process, so
//! their metrics share one recorder: the runs counted there, summed over
//! both, equal the ticks recorded, where two runs per tick would double it.
//!
//! Runs against `STAGEWORKS_TEST_DATABASE_URL` and `STAGEWORKS_TEST_REDIS_URL`,
//! or the machine's PostgreSQL and Redis when those are not set.

mod common;

use std::time::Duration;

use common::analytics::{fast_jobs, metric};
use common::{spawn_app_in, test_config, TestApp, TestDatabase};
use time::OffsetDateTime;

const LOCAL_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
const LOCAL_REDIS: &str = "redis://127.0.0.1:6379";

async fn two_replicas() -> (TestApp, TestApp, String) {
    let admin = common::test_database_url().unwrap_or_else(|| LOCAL_POSTGRES.to_owned());
    let database = TestDatabase::create(&admin).await;
    let prefix = format!("stageworks-test:{}:", uuid::Uuid::now_v7().simple());
    let replica = |database: Option<TestDatabase>, url: String| {
        let prefix = prefix.clone();
        async move {
            let data = tempfile::tempdir().unwrap();
            let mut config = test_config(&data);
            config.database.url = url;
            config.redis.url = common::test_redis_url().unwrap_or_else(|| LOCAL_REDIS.to_owned());
            config.redis.key_prefix = prefix;
            fast_jobs(&mut config);
            spawn_app_in(config, data, database).await
        }
    };
    let url = database.url.clone();
    let first = replica(Some(database), url.clone()).await;
    let second = replica(None, url.clone()).await;
    (first, second, url)
}

/// Sleeps until half a second past an odd second: the jobs tick on even
/// seconds and take milliseconds, so none is in flight then.
async fn between_ticks() {
    let now = OffsetDateTime::now_utc();
    let into = f64::from(now.second() % 2) + f64::from(now.nanosecond()) / 1e9;
    let wait = (1.5 - into).rem_euclid(2.0);
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
}

#[tokio::test]
async fn each_job_runs_once_per_tick_across_two_replicas() {
    let (one, two, url) = two_replicas().await;
    let settings = actors::storage::StorageSettings {
        url: Some(url),
        ..Default::default()
    };
    let store =
        actors::analytics::store::AnalyticsStore::open(std::path::Path::new("."), &settings)
            .await
            .expect("the analytics database opens");
    store.ensure_ready().await.expect("ready");
    // Several ticks with both replicas up.
    tokio::time::sleep(Duration::from_secs(7)).await;
    between_ticks().await;
    let metrics = one.metrics().await;
    for job in ["hourly_close", "daily_rollup", "purge"] {
        let ticks = store.runs(job).await.expect("runs counted");
        let ran = metric(
            &metrics,
            &format!("analytics_job_runs_total{{job=\"{job}\",outcome=\"ok\"}}"),
        ) + metric(
            &metrics,
            &format!("analytics_job_runs_total{{job=\"{job}\",outcome=\"error\"}}"),
        );
        assert!(ticks >= 3, "{job}: only {ticks} ticks recorded");
        assert_eq!(ran as i64, ticks, "{job}: {ran} runs for {ticks} ticks");
    }
    // Both replicas answer the same /jobs, from the shared rows.
    let jobs = |app: &TestApp| {
        app.as_admin(reqwest::Method::GET, "/api/v1/analytics/jobs")
            .send()
    };
    let (a, b) = (jobs(&one).await.unwrap(), jobs(&two).await.unwrap());
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let (a, b): (serde_json::Value, serde_json::Value) =
        (a.json().await.unwrap(), b.json().await.unwrap());
    assert_eq!(a, b, "the replicas disagree on /jobs");
    drop(two);
}
