//! Bulk email survives a crash and scales out without sending twice
//! (issue 14):
//!
//! - The real binary is SIGKILLed while it sends a 2,000-recipient bulk
//!   email to an SMTP sink that is slow to confirm, and restarted on the
//!   same data: every recipient gets the notification addressed to them,
//!   the batch ends with `sent == 2000`, and the only duplicates are
//!   notifications that were mid-send at the kill — at most `senders` of
//!   them, each with the Message-ID (the notification id) of its first
//!   copy. On SQLite, and on PostgreSQL (`STAGEWORKS_TEST_DATABASE_URL`,
//!   or the machine's server at 127.0.0.1:5432, database `test`).
//! - Two replicas on one PostgreSQL database and one Redis drain one bulk
//!   send accepted by the first replica: each recipient gets exactly one
//!   mail, and both replicas sent some; and still exactly one when a
//!   claim takes longer to work through than its lease (the other replica
//!   used to claim and send the rest of it too).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::binary::{command, spawn, wait_ready, Running};
use common::{admin_token, spawn_app_in, test_config, TestApp, TestDatabase};
use serde_json::{json, Value};
use testkit::{Mail, SmtpSink};

const LOCAL_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
const LOCAL_REDIS: &str = "redis://127.0.0.1:6379";

/// Concurrent sends of the email sender task (`senders`).
const SENDERS: usize = 8;
/// How many rows one claim of a sender takes (`delivery.rs`: `senders * 4`).
const CLAIM_SIZE: usize = SENDERS * 4;
/// The sink keeps a message at once and confirms it this much later: a kill
/// in that window leaves a message delivered but not settled as sent.
const SINK_CONFIRMS_AFTER: Duration = Duration::from_millis(40);
/// Generous on a loaded two-core machine: 2,000 mails at 8 in flight and
/// 40 ms each need 10 s at least.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(120);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn recipient(i: usize) -> String {
    format!("user{i}@example.com")
}

/// Creates an email template with a `{{n}}` variable; answers its name
/// (unique, so a database used before does not matter).
async fn create_numbered_template(client: &reqwest::Client, base: &str) -> String {
    let name = format!("crash_{}", uuid::Uuid::now_v7().simple());
    let created = client
        .post(format!("{base}/api/v1/notifications/templates"))
        .bearer_auth(admin_token())
        .json(&json!({"name": name, "channel": "email",
                      "subject": "Notice {{n}}", "body": "Hello, recipient {{n}}."}))
        .send()
        .await
        .expect("template creation answers");
    let status = created.status();
    let body = created.text().await.unwrap_or_default();
    assert_eq!(
        status, 201,
        "expected 201 creating template {name}, got {status}: {body}"
    );
    name
}

/// Sends `template` to `user0@example.com` … `user{n-1}`; answers the batch id.
async fn send_bulk(client: &reqwest::Client, base: &str, template: &str, n: usize) -> String {
    let recipients: Vec<Value> = (0..n)
        .map(|i| json!({"to": recipient(i), "data": {"n": i}}))
        .collect();
    let response = client
        .post(format!("{base}/api/v1/notifications/send-bulk"))
        .bearer_auth(admin_token())
        .json(&json!({"channel": "email", "template": template, "recipients": recipients}))
        .send()
        .await
        .expect("send-bulk answers");
    let status = response.status();
    let accepted: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(
        status, 202,
        "expected 202 from send-bulk, got {status}: {accepted}"
    );
    assert_eq!(
        accepted["accepted"], n,
        "expected all {n} recipients accepted, got {accepted}"
    );
    accepted["batch_id"]
        .as_str()
        .unwrap_or_else(|| panic!("expected a batch_id in {accepted}"))
        .to_owned()
}

/// `GET /batches/{id}`: `{id, total, queued, sending, sent, …}`.
async fn batch_progress(client: &reqwest::Client, base: &str, batch: &str) -> Value {
    let response = client
        .get(format!("{base}/api/v1/notifications/batches/{batch}"))
        .bearer_auth(admin_token())
        .send()
        .await
        .expect("the batch answers");
    let status = response.status();
    let progress: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(
        status, 200,
        "expected 200 for batch {batch}, got {status}: {progress}"
    );
    progress
}

/// What the sink received, grouped both ways.
struct Deliveries {
    mails: usize,
    /// Recipient → the Message-IDs of every mail they got (one per mail).
    message_ids_by_recipient: BTreeMap<String, Vec<String>>,
    /// Message-ID → the recipients of its copies.
    recipients_by_message_id: BTreeMap<String, BTreeSet<String>>,
}

impl Deliveries {
    fn of(mails: &[Mail]) -> Self {
        let mut message_ids_by_recipient: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut recipients_by_message_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for mail in mails {
            let message_id = mail
                .header("Message-ID")
                .unwrap_or_else(|| panic!("expected a Message-ID on every mail, got {mail:?}"));
            for to in &mail.to {
                message_ids_by_recipient
                    .entry(to.clone())
                    .or_default()
                    .push(message_id.clone());
                recipients_by_message_id
                    .entry(message_id.clone())
                    .or_default()
                    .insert(to.clone());
            }
        }
        Deliveries {
            mails: mails.len(),
            message_ids_by_recipient,
            recipients_by_message_id,
        }
    }

    /// Mails beyond the first copy of each notification.
    fn duplicates(&self) -> usize {
        self.mails - self.recipients_by_message_id.len()
    }

    fn reached_everyone(&self, n: usize) -> bool {
        (0..n).all(|i| self.message_ids_by_recipient.contains_key(&recipient(i)))
    }

    /// Every recipient got mail, all of it one notification (one
    /// Message-ID), and each notification went to one recipient: a
    /// duplicate is a copy of the same notification, never another one.
    fn assert_one_notification_per_recipient(&self, n: usize) {
        let missing: Vec<String> = (0..n)
            .map(recipient)
            .filter(|to| !self.message_ids_by_recipient.contains_key(to))
            .collect();
        assert!(
            missing.is_empty(),
            "expected every one of {n} recipients to get mail, {} got none: {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        let strangers: Vec<&String> = self
            .message_ids_by_recipient
            .keys()
            .filter(|to| !(0..n).any(|i| recipient(i) == **to))
            .collect();
        assert!(
            strangers.is_empty(),
            "expected mail only to the {n} recipients, also got mail: {strangers:?}"
        );
        for (to, ids) in &self.message_ids_by_recipient {
            let distinct: BTreeSet<&String> = ids.iter().collect();
            assert_eq!(
                distinct.len(),
                1,
                "expected {to}'s mails to be copies of one notification (one Message-ID), \
                 got {} mails with Message-IDs {distinct:?}",
                ids.len()
            );
        }
        for (message_id, recipients) in &self.recipients_by_message_id {
            assert_eq!(
                recipients.len(),
                1,
                "expected notification {message_id} to go to one recipient, it went to {recipients:?}"
            );
        }
        assert_eq!(
            self.recipients_by_message_id.len(),
            n,
            "expected {n} distinct notifications (Message-IDs), got {}",
            self.recipients_by_message_id.len()
        );
    }

    /// The Message-IDs that arrived more than once, with how many copies.
    fn duplicated_message_ids(&self) -> BTreeMap<&String, usize> {
        let mut copies: BTreeMap<&String, usize> = BTreeMap::new();
        for ids in self.message_ids_by_recipient.values() {
            for id in ids {
                *copies.entry(id).or_default() += 1;
            }
        }
        copies.retain(|_, n| *n > 1);
        copies
    }
}

/// Polls the sink and the batch until every recipient got mail and the
/// batch counts all `n` as sent; answers the last progress seen.
async fn wait_until_all_sent(
    client: &reqwest::Client,
    base: &str,
    batch: &str,
    sink: &SmtpSink,
    n: usize,
) -> Value {
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    loop {
        let progress = batch_progress(client, base, batch).await;
        let reached = Deliveries::of(&sink.mails()).reached_everyone(n);
        if reached && progress["sent"] == n {
            return progress;
        }
        assert!(
            Instant::now() < deadline,
            "expected all {n} recipients mailed and the batch sent == {n} within \
             {DELIVERY_DEADLINE:?}; the sink has {} mails, every recipient reached: {reached}, \
             batch: {progress}",
            sink.count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Nothing is left in any other state, and nothing more than the batch.
fn assert_batch_all_sent(progress: &Value, n: usize) {
    let expected = json!({"total": n, "queued": 0, "sending": 0, "sent": n,
                          "retrying": 0, "skipped": 0, "dead": 0});
    for (key, want) in expected.as_object().expect("an object") {
        assert_eq!(
            &progress[key], want,
            "expected batch {key} == {want}, got the batch {progress}"
        );
    }
}

// --- SIGKILL mid-send ------------------------------------------------------

const BULK_AT_KILL: usize = 2_000;
/// The kill comes once this many mails arrived: some hundreds, not all.
const KILL_ONCE_ARRIVED: usize = 400;

/// The binary with email to `sink`, `SENDERS` concurrent sends, no rate
/// limit to speak of and a short lease.
fn start_binary(data: &Path, database: Option<&TestDatabase>, sink: &SmtpSink) -> Running {
    let mut cmd = command(data);
    let port = sink.port().to_string();
    let senders = SENDERS.to_string();
    let env = [
        ("STAGEWORKS__TOKENS__JWT_SECRET", common::JWT_SECRET),
        ("STAGEWORKS__RATE_LIMIT__ENABLED", "false"),
        ("STAGEWORKS__LOG__LEVEL", "warn,stageworks=info"),
        ("STAGEWORKS__SERVICES__NOTIFICATIONS__SENDERS", &senders),
        ("STAGEWORKS__SERVICES__NOTIFICATIONS__LEASE", "5s"),
        ("STAGEWORKS__SERVICES__NOTIFICATIONS__EMAIL__TIMEOUT", "2s"),
        ("STAGEWORKS__SERVICES__NOTIFICATIONS__POLL_EVERY", "100ms"),
        (
            "STAGEWORKS__SERVICES__NOTIFICATIONS__EMAIL__HOST",
            "127.0.0.1",
        ),
        ("STAGEWORKS__SERVICES__NOTIFICATIONS__EMAIL__PORT", &port),
        (
            "STAGEWORKS__SERVICES__NOTIFICATIONS__EMAIL__SECURITY",
            "none",
        ),
        (
            "STAGEWORKS__SERVICES__NOTIFICATIONS__EMAIL__FROM",
            "noreply@crash.example.com",
        ),
        (
            "STAGEWORKS__SERVICES__NOTIFICATIONS__EMAIL__PER_SECOND",
            "100000",
        ),
    ];
    for (key, value) in env {
        cmd.env(key, value);
    }
    spawn(cmd, database)
}

fn sigkill(mut running: Running) {
    running.child.kill().expect("SIGKILL");
    running.child.wait().expect("the killed process is reaped");
}

/// Every email notification's `attempts`, by notification id (the app's
/// data dir and database are this test's: they are all the batch's).
async fn attempts_by_notification(client: &reqwest::Client, base: &str) -> BTreeMap<String, u64> {
    let mut attempts = BTreeMap::new();
    for page in 1.. {
        let response = client
            .get(format!(
                "{base}/api/v1/notifications?channel=email&limit=100&page={page}"
            ))
            .bearer_auth(admin_token())
            .send()
            .await
            .expect("the list answers");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status, 200,
            "expected 200 listing notifications, got {status}: {body}"
        );
        let items = body["data"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        for item in items {
            let id = item["id"].as_str().expect("a notification id").to_owned();
            attempts.insert(id, item["attempts"].as_u64().expect("attempts"));
        }
    }
    attempts
}

/// The notification id in a Message-ID `<id@host>`.
fn notification_id(message_id: &str) -> &str {
    message_id
        .trim_start_matches('<')
        .split('@')
        .next()
        .unwrap_or_default()
}

async fn a_bulk_send_killed_mid_send_reaches_everyone_once(database: Option<TestDatabase>) {
    let backend = if database.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let sink = SmtpSink::start()
        .await
        .expect("the SMTP sink starts")
        .with_data_reply_delay(SINK_CONFIRMS_AFTER);
    let data = tempfile::tempdir().expect("temp dir");
    let client = client();

    let first = start_binary(data.path(), database.as_ref(), &sink);
    wait_ready(&first.addr).await;
    let base = format!("http://{}", first.addr);
    let template = create_numbered_template(&client, &base).await;
    let sent_at = Instant::now();
    let batch = send_bulk(&client, &base, &template, BULK_AT_KILL).await;

    sink.wait_for(KILL_ONCE_ARRIVED, DELIVERY_DEADLINE).await;
    sigkill(first);
    let arrived_at_kill = sink.count();
    let killed_after = sent_at.elapsed();
    assert!(
        (KILL_ONCE_ARRIVED..BULK_AT_KILL).contains(&arrived_at_kill),
        "expected the kill to land mid-bulk ({KILL_ONCE_ARRIVED}..{BULK_AT_KILL} mails \
         arrived), {arrived_at_kill} had arrived"
    );

    let restarted_at = Instant::now();
    let second = start_binary(data.path(), database.as_ref(), &sink);
    wait_ready(&second.addr).await;
    let base = format!("http://{}", second.addr);
    let progress = wait_until_all_sent(&client, &base, &batch, &sink, BULK_AT_KILL).await;
    let caught_up_after = restarted_at.elapsed();
    // A send after the batch is all sent would be a bug too: give one a
    // moment to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_batch_all_sent(&batch_progress(&client, &base, &batch).await, BULK_AT_KILL);
    let deliveries = Deliveries::of(&sink.mails());
    deliveries.assert_one_notification_per_recipient(BULK_AT_KILL);

    // What the kill can leave behind, from delivery.rs: the one email
    // sender task claims `senders * 4` rows (status `sending`, an attempt
    // counted, held by this instance) and sends them `senders` at a time
    // (`for_each_concurrent`), claiming again only once all are settled.
    // So at the kill at most CLAIM_SIZE rows are held; the restarted
    // sender takes them back at once (same data dir, so the same instance
    // id: `take_back`) and claims them again, their second attempt. Of
    // those, at most SENDERS were in flight — possibly delivered without
    // being settled — and only those can arrive twice:
    // duplicates <= min(SENDERS, held at the kill).
    let attempts = attempts_by_notification(&client, &base).await;
    let unexpected: Vec<(&String, &u64)> = attempts
        .iter()
        .filter(|(_, n)| !(1..=2).contains(*n))
        .collect();
    assert!(
        unexpected.is_empty(),
        "expected every notification attempted once, or twice if held at the kill, got \
         (id, attempts) {unexpected:?}"
    );
    let held_at_kill = attempts.values().filter(|n| **n == 2).count();
    assert!(
        (1..=CLAIM_SIZE).contains(&held_at_kill),
        "expected 1..={CLAIM_SIZE} notifications held by the killed sender (the kill landed \
         mid-send; they are the ones attempted twice), got {held_at_kill}"
    );
    for (message_id, _) in deliveries.duplicated_message_ids() {
        let id = notification_id(message_id);
        assert_eq!(
            attempts.get(id),
            Some(&2),
            "expected duplicated notification {message_id} to be one held at the kill \
             (attempts 2), its attempts are {:?}",
            attempts.get(id)
        );
    }
    let duplicates = deliveries.duplicates();
    assert!(
        duplicates <= SENDERS.min(held_at_kill),
        "expected at most min(senders = {SENDERS}, held at the kill = {held_at_kill}) \
         duplicates, got {duplicates}: {:?}",
        deliveries.duplicated_message_ids()
    );
    eprintln!(
        "{backend}: killed {killed_after:?} after the bulk send with {arrived_at_kill} of \
         {BULK_AT_KILL} mails arrived; {held_at_kill} notifications were held \
         and caught up {caught_up_after:?} after it; {} mails, {duplicates} duplicates \
         (bound {SENDERS}); batch {progress}",
        deliveries.mails
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_email_killed_mid_send_reaches_everyone_once_on_sqlite() {
    a_bulk_send_killed_mid_send_reaches_everyone_once(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_email_killed_mid_send_reaches_everyone_once_on_postgres() {
    let admin = common::test_database_url().unwrap_or_else(|| LOCAL_POSTGRES.to_owned());
    a_bulk_send_killed_mid_send_reaches_everyone_once(Some(TestDatabase::create(&admin).await))
        .await;
}

// --- Two replicas ------------------------------------------------------------

const BULK_ON_REPLICAS: usize = 500;

/// The envelope sender of each replica: which one sent a mail.
fn replica_mailbox(replica: usize) -> String {
    format!("noreply@replica{replica}.example.com")
}

/// How the replicas hold and send what they claim.
struct SenderTimes {
    lease: &'static str,
    email_timeout: &'static str,
}

const ROOMY_LEASE: SenderTimes = SenderTimes {
    lease: "10s",
    email_timeout: "2s",
};

/// Two replicas of one deployment (one PostgreSQL database, one Redis key
/// prefix), both mailing through `sink`, each with its own envelope sender
/// (which also names the host of its Message-IDs).
async fn two_mailing_replicas(sink: &SmtpSink, times: &SenderTimes) -> (TestApp, TestApp) {
    let admin = common::test_database_url().unwrap_or_else(|| LOCAL_POSTGRES.to_owned());
    let database = TestDatabase::create(&admin).await;
    let prefix = format!("stageworks-test:{}:", uuid::Uuid::now_v7().simple());
    let url = database.url.clone();
    let replica = |number: usize, database: Option<TestDatabase>| {
        let (prefix, url) = (prefix.clone(), url.clone());
        async move {
            let data = tempfile::tempdir().expect("temp dir");
            let mut config = test_config(&data);
            config.database.url = url;
            config.redis.url = common::test_redis_url().unwrap_or_else(|| LOCAL_REDIS.to_owned());
            config.redis.key_prefix = prefix;
            let section = config.service_mut("notifications");
            let email = json!({"host": "127.0.0.1", "port": sink.port(), "security": "none",
                               "from": replica_mailbox(number), "per_second": 100_000,
                               "timeout": times.email_timeout});
            section.set("email", email).expect("email settings");
            section.set("senders", SENDERS).expect("senders");
            section.set("lease", times.lease).expect("lease");
            section.set("poll_every", "50ms").expect("poll_every");
            // No welcome mail to the users every test app signs in: the
            // event's template does not exist (the section's `events`
            // merge over the default mapping, so it cannot be emptied).
            let events = json!({"user.registered": "no_welcome_in_this_test"});
            section.set("events", events).expect("events");
            spawn_app_in(config, data, database).await
        }
    };
    // The database lives with the first replica (dropped after both stop).
    let first = replica(1, Some(database)).await;
    let second = replica(2, None).await;
    (first, second)
}

/// Both replicas drain the queue of one bulk send of `n` made on the first:
/// no kill, so no duplicate at all. Which replica sent a mail shows in its
/// envelope sender; with `both_send`, that both sent some is asserted.
async fn two_replicas_send_a_bulk_to_each_recipient_once(
    n: usize,
    sink_confirms_after: Duration,
    times: &SenderTimes,
    both_send: bool,
) {
    let sink = SmtpSink::start()
        .await
        .expect("the SMTP sink starts")
        .with_data_reply_delay(sink_confirms_after);
    let (one, two) = two_mailing_replicas(&sink, times).await;
    let client = client();
    let template = create_numbered_template(&client, &one.base).await;
    let started = Instant::now();
    let batch = send_bulk(&client, &one.base, &template, n).await;

    let progress = wait_until_all_sent(&client, &two.base, &batch, &sink, n).await;
    let drained_after = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_batch_all_sent(&batch_progress(&client, &one.base, &batch).await, n);
    let mails = sink.mails();
    let deliveries = Deliveries::of(&mails);
    deliveries.assert_one_notification_per_recipient(n);
    assert_eq!(
        deliveries.mails,
        n,
        "expected exactly one mail per recipient ({n}), got {} — duplicated: {:?}",
        deliveries.mails,
        deliveries.duplicated_message_ids()
    );
    let sent_by = |replica: usize| {
        let mailbox = replica_mailbox(replica);
        mails.iter().filter(|mail| mail.from == mailbox).count()
    };
    let (by_one, by_two) = (sent_by(1), sent_by(2));
    assert_eq!(
        by_one + by_two,
        n,
        "expected every mail from one of the two replicas, got {by_one} + {by_two}"
    );
    assert!(
        !both_send || (by_one > 0 && by_two > 0),
        "expected both replicas to send some of the bulk, replica one sent {by_one}, \
         replica two {by_two}"
    );
    eprintln!(
        "two replicas (lease {}): {n} mails in {drained_after:?}, replica one sent {by_one}, \
         replica two {by_two}; batch {progress}",
        times.lease
    );
    drop(two);
    drop(one);
}

/// 500 recipients at 40 ms a mail. That both replicas sent some is not a
/// race in practice: one replica alone needs 500 / 8 * 40 ms = 2.5 s at
/// least, while the other polls the shared queue every 50 ms.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_postgres_and_redis_send_a_bulk_to_each_recipient_once() {
    two_replicas_send_a_bulk_to_each_recipient_once(
        BULK_ON_REPLICAS,
        SINK_CONFIRMS_AFTER,
        &ROOMY_LEASE,
        true,
    )
    .await;
}

/// A claim (`senders * 4` rows, sent `senders` at a time) that takes longer
/// than its lease to work through: a bulk of one claim's size, taken whole
/// by one replica while the other polls, idle. At 800 ms a mail the claim's
/// fourth round would start 2.4 s after it and end at 3.2 s, past the 2.8 s
/// lease, when the idle replica claims those rows and sends them too.
/// Senders start a send only while the provider's call timeout (1.4 s + 1 s)
/// still fits in the lease, and put the rest back unsent. Which replica
/// sends what is then a race: not asserted.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_send_once_even_when_a_claim_outlasts_its_lease() {
    let short_lease = SenderTimes {
        lease: "2800ms",
        email_timeout: "1400ms",
    };
    let mail_takes = Duration::from_millis(800);
    two_replicas_send_a_bulk_to_each_recipient_once(CLAIM_SIZE, mail_takes, &short_lease, false)
        .await;
}
