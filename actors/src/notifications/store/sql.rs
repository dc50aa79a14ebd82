//! The notifications SQL, written once for both backends ([`per_backend!`]):
//! the queue (enqueue, claim with a lease, settle), templates, preferences,
//! push subscriptions and the users it knows of.

use sqlx::{QueryBuilder, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Claimed, Directory, Enqueue, EventEffect, Settle, COLUMNS};
use crate::api::PageRequest;
use crate::events::inbox::InboxSql;
use crate::events::outbox::OutboxSql;
use crate::events::Event;
use crate::idempotency::IdempotencySql;
use crate::notifications::model::{
    Channel, Notification, NotificationFilter, Preferences, PushSubscription, Status, Template,
    TemplateInput, TemplateName,
};
use crate::storage::sql::{per_backend, Dialect};
use crate::storage::{unix_millis, StoreError};

/// Rows per multi-row insert: 14 binds each, far below either backend's limit.
const INSERT_CHUNK: usize = 500;

/// Ids per lookup statement: one bind each.
const LOOKUP_CHUNK: usize = 500;

/// The statuses a sender may still take a notification in.
const PENDING: &str = "('queued', 'retrying', 'sending')";

per_backend! {
    /// A row of `notifications`, in [`COLUMNS`] order.
    pub type NotificationRow = (
        <DB as Dialect>::Id,
        String,
        Option<String>,
        Option<<DB as Dialect>::Id>,
        Option<String>,
        Option<String>,
        String,
        i64,
        Option<String>,
        Option<<DB as Dialect>::Id>,
        <DB as Dialect>::Time,
        Option<<DB as Dialect>::Time>,
    );

    /// What a claim returns of each row it took.
    type ClaimedRow = (
        <DB as Dialect>::Id,
        Option<String>,
        Option<<DB as Dialect>::Id>,
        Option<String>,
        String,
        Option<String>,
        i64,
        Option<<DB as Dialect>::Id>,
    );

    type SubscriptionRow = (<DB as Dialect>::Id, String, String, String, <DB as Dialect>::Time);

    pub type TemplateRow = (
        String,
        String,
        Option<String>,
        String,
        Option<String>,
        <DB as Dialect>::Time,
        <DB as Dialect>::Time,
    );

    pub fn notification_from_row(row: NotificationRow) -> Result<Notification, StoreError> {
        let (id, channel, to, user_id, template, subject, status, attempts, last_error, batch_id, created_at, sent_at) = row;
        let id = DB::read_id(id, "notification id")?;
        Ok(Notification {
            id,
            channel: parse_channel(&channel)?,
            to,
            user_id: user_id.map(|u| DB::read_id(u, "notification user_id")).transpose()?,
            template,
            subject,
            status: Status::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("notification {id}: status `{status}`")))?,
            attempts: u32::try_from(attempts).unwrap_or(0),
            last_error,
            batch_id: batch_id.map(|b| DB::read_id(b, "notification batch_id")).transpose()?,
            created_at: DB::read_time(created_at, "notification created_at")?,
            sent_at: sent_at.map(|t| DB::read_time(t, "notification sent_at")).transpose()?,
        })
    }

    pub fn template_from_row(row: TemplateRow) -> Result<Template, StoreError> {
        let (name, channel, subject, body, html, created_at, updated_at) = row;
        Ok(Template {
            name: TemplateName::parse(&name)
                .map_err(|_| StoreError::Corrupt(format!("template name `{name}`")))?,
            channel: parse_channel(&channel)?,
            subject,
            body,
            html,
            created_at: DB::read_time(created_at, "template created_at")?,
            updated_at: DB::read_time(updated_at, "template updated_at")?,
        })
    }

    /// Inserts what [`Enqueue`] holds, its batch, its idempotency response
    /// and the effect of the event it answers, in one transaction.
    pub(in crate::notifications::store) async fn enqueue(
        db: &Db,
        enqueue: &Enqueue,
    ) -> Result<bool, StoreError> {
        let mut tx = db.writer().begin().await?;
        if let Some(event) = &enqueue.event {
            if !DB::record_in(&mut tx, event).await? {
                return Ok(false);
            }
        }
        if let Some(EventEffect::User { id, email, name }) = &enqueue.effect {
            sqlx::query(
                "INSERT INTO users (id, email, name) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET email = excluded.email, name = excluded.name",
            )
            .bind(DB::id(*id))
            .bind(email)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((batch, total)) = enqueue.batch {
            sqlx::query("INSERT INTO batches (id, total, created_at) VALUES ($1, $2, $3)")
                .bind(DB::id(batch))
                .bind(i64::try_from(total).unwrap_or(i64::MAX))
                .bind(DB::time(enqueue.now)?)
                .execute(&mut *tx)
                .await?;
        }
        insert_rows(&mut tx, enqueue).await?;
        if let Some((key, body)) = &enqueue.response {
            DB::complete_in(&mut tx, key, 202, body).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    #[allow(clippy::clone_on_copy)] // the time is a `String` on SQLite, `Copy` on PostgreSQL
    async fn insert_rows(
        tx: &mut Transaction<'_, DB>,
        enqueue: &Enqueue,
    ) -> Result<(), StoreError> {
        let due = unix_millis(enqueue.now);
        let now = DB::time(enqueue.now)?;
        for chunk in enqueue.rows.chunks(INSERT_CHUNK) {
            let mut insert = QueryBuilder::<DB>::new(
                "INSERT INTO notifications (id, channel, recipient, user_id, recipient_key, template,
                 subject, body, html, status, batch_id, created_at, next_attempt_at, attempts) ",
            );
            insert.push_values(chunk, |mut row, n| {
                row.push_bind(DB::id(n.id))
                    .push_bind(n.channel.as_str())
                    .push_bind(n.to.clone())
                    .push_bind(n.user_id.map(DB::id))
                    .push_bind(n.recipient_key.clone())
                    .push_bind(n.template.clone())
                    .push_bind(n.subject.clone())
                    .push_bind(n.body.clone())
                    .push_bind(n.html.clone())
                    .push_bind(n.status.as_str())
                    .push_bind(enqueue.batch.map(|(b, _)| DB::id(b)))
                    .push_bind(now.clone())
                    .push_bind(due)
                    .push_bind(0_i64);
            });
            insert.build().execute(&mut **tx).await?;
        }
        Ok(())
    }

    pub(in crate::notifications::store) async fn get(
        db: &Db,
        id: Uuid,
    ) -> Result<Option<Notification>, StoreError> {
        let mut conn = db.read().await?;
        let row: Option<NotificationRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM notifications WHERE id = $1"))
                .bind(DB::id(id))
                .fetch_optional(&mut *conn)
                .await?;
        row.map(notification_from_row).transpose()
    }

    /// One page, newest first, and the total.
    pub(in crate::notifications::store) async fn list(
        db: &Db,
        filter: &NotificationFilter,
        page: PageRequest,
    ) -> Result<(Vec<Notification>, i64), StoreError> {
        let mut conn = db.read().await?;
        let user = filter.user_id.map(DB::id);
        let status = filter.status.map(Status::as_str);
        let channel = filter.channel.map(Channel::as_str);
        const WHERE: &str = "WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR status = $2)
             AND ($3 IS NULL OR channel = $3)";
        let rows: Vec<NotificationRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM notifications {WHERE} ORDER BY id DESC LIMIT $4 OFFSET $5"
        ))
        .bind(&user)
        .bind(status)
        .bind(channel)
        .bind(i64::from(page.limit))
        .bind(page.offset())
        .fetch_all(&mut *conn)
        .await?;
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM notifications {WHERE}"))
            .bind(&user)
            .bind(status)
            .bind(channel)
            .fetch_one(&mut *conn)
            .await?;
        let list = rows.into_iter().map(notification_from_row).collect::<Result<_, _>>()?;
        Ok((list, total))
    }

    /// A batch's total, creation time and count per status.
    pub(in crate::notifications::store) async fn batch(
        db: &Db,
        id: Uuid,
    ) -> Result<Option<(i64, OffsetDateTime, Vec<(String, i64)>)>, StoreError> {
        let mut conn = db.read().await?;
        let batch: Option<(i64, <DB as Dialect>::Time)> =
            sqlx::query_as("SELECT total, created_at FROM batches WHERE id = $1")
                .bind(DB::id(id))
                .fetch_optional(&mut *conn)
                .await?;
        let Some((total, created_at)) = batch else {
            return Ok(None);
        };
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM notifications WHERE batch_id = $1 GROUP BY status",
        )
        .bind(DB::id(id))
        .fetch_all(&mut *conn)
        .await?;
        Ok(Some((total, DB::read_time(created_at, "batch created_at")?, counts)))
    }

    /// Notifications per status, for the queue-depth gauges.
    pub(in crate::notifications::store) async fn depth(db: &Db) -> Result<Vec<(String, i64)>, StoreError> {
        let mut conn = db.read().await?;
        Ok(sqlx::query_as("SELECT status, COUNT(*) FROM notifications GROUP BY status")
            .fetch_all(&mut *conn)
            .await?)
    }

    /// Takes up to `limit` due notifications of `channel` for `holder`
    /// until `lease_until`, counting an attempt each: queued or retrying
    /// ones, and sending ones whose holder's lease ran out (it died
    /// mid-send). A recipient's notifications go one at a time, oldest
    /// first: one is skipped while an older one of the same recipient is
    /// unfinished.
    pub(in crate::notifications::store) async fn claim(
        db: &Db,
        channel: Channel,
        holder: &str,
        limit: usize,
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let skip_locked = if DB::FOR_UPDATE.is_empty() { "" } else { " FOR UPDATE SKIP LOCKED" };
        let rows: Vec<ClaimedRow> =
            sqlx::query_as(&format!(
                "UPDATE notifications SET status = 'sending', attempts = attempts + 1,
                     lease_until = $1, lease_holder = $2
                 WHERE id IN (
                     SELECT n.id FROM notifications n
                     WHERE n.channel = $3 AND n.status IN {PENDING} AND n.next_attempt_at <= $4
                       AND (n.status <> 'sending' OR n.lease_until < $4)
                       AND NOT EXISTS (
                           SELECT 1 FROM notifications o
                           WHERE o.recipient_key = n.recipient_key AND o.status IN {PENDING}
                             AND o.id < n.id)
                     ORDER BY n.next_attempt_at, n.id LIMIT $5{skip_locked})
                 RETURNING id, recipient, user_id, subject, body, html, attempts, batch_id"
            ))
            .bind(lease_until)
            .bind(holder)
            .bind(channel.as_str())
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(db.writer())
            .await?;
        rows.into_iter()
            .map(|(id, to, user_id, subject, body, html, attempts, batch_id)| {
                Ok(Claimed {
                    id: DB::read_id(id, "notification id")?,
                    channel,
                    to,
                    user_id: user_id.map(|u| DB::read_id(u, "notification user_id")).transpose()?,
                    subject,
                    body,
                    html,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    batch_id: batch_id.map(|b| DB::read_id(b, "notification batch_id")).transpose()?,
                })
            })
            .collect()
    }

    /// Settles a claimed notification, if `holder` still holds it, with
    /// the event that announces it (sent, dead) in the same transaction.
    pub(in crate::notifications::store) async fn settle(
        db: &Db,
        id: Uuid,
        holder: &str,
        settle: &Settle,
        event: Option<&Event>,
    ) -> Result<bool, StoreError> {
        let mut tx = db.writer().begin().await?;
        let done = match settle {
            Settle::Sent { at } => sqlx::query(
                "UPDATE notifications SET status = 'sent', sent_at = $1, last_error = NULL,
                     lease_until = NULL, lease_holder = NULL
                 WHERE id = $2 AND lease_holder = $3 AND status = 'sending'",
            )
            .bind(DB::time(*at)?)
            .bind(DB::id(id))
            .bind(holder),
            Settle::Retry { error, at } => sqlx::query(
                "UPDATE notifications SET status = 'retrying', next_attempt_at = $1, last_error = $2,
                     lease_until = NULL, lease_holder = NULL
                 WHERE id = $3 AND lease_holder = $4 AND status = 'sending'",
            )
            .bind(*at)
            .bind(error)
            .bind(DB::id(id))
            .bind(holder),
            Settle::Dead { error } => sqlx::query(
                "UPDATE notifications SET status = 'dead', last_error = $1,
                     lease_until = NULL, lease_holder = NULL
                 WHERE id = $2 AND lease_holder = $3 AND status = 'sending'",
            )
            .bind(error)
            .bind(DB::id(id))
            .bind(holder),
            // Not tried (the provider's circuit is open): back to the queue
            // without spending the attempt the claim counted.
            Settle::NotTried { at } => sqlx::query(
                "UPDATE notifications SET attempts = attempts - 1, next_attempt_at = $1,
                     status = CASE WHEN attempts - 1 = 0 THEN 'queued' ELSE 'retrying' END,
                     lease_until = NULL, lease_holder = NULL
                 WHERE id = $2 AND lease_holder = $3 AND status = 'sending'",
            )
            .bind(*at)
            .bind(DB::id(id))
            .bind(holder),
        }
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if done {
            if let Some(event) = event {
                DB::append_in(&mut tx, event).await?;
            }
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Gives back what `holder` held when it stopped (a crash, a kill):
    /// due again now, the attempt it counted kept (it may have gone out).
    pub(in crate::notifications::store) async fn take_back(
        db: &Db,
        holder: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE notifications SET status = 'retrying', next_attempt_at = $1,
                 lease_until = NULL, lease_holder = NULL
             WHERE status = 'sending' AND lease_holder = $2",
        )
        .bind(now)
        .bind(holder)
        .execute(db.writer())
        .await?;
        Ok(done.rows_affected())
    }

    /// Queues a dead notification again with its attempts reset, and
    /// appends `event` with it.
    pub(in crate::notifications::store) async fn retry_dead(
        db: &Db,
        id: Uuid,
        now: i64,
        event: &Event,
    ) -> Result<bool, StoreError> {
        let mut tx = db.writer().begin().await?;
        let done = sqlx::query(
            "UPDATE notifications SET status = 'queued', attempts = 0, next_attempt_at = $1,
                 last_error = NULL
             WHERE id = $2 AND status = 'dead'",
        )
        .bind(now)
        .bind(DB::id(id))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if done {
            DB::append_in(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    pub(in crate::notifications::store) async fn templates(db: &Db) -> Result<Vec<Template>, StoreError> {
        let mut conn = db.read().await?;
        let rows: Vec<TemplateRow> = sqlx::query_as(
            "SELECT name, channel, subject, body, html, created_at, updated_at FROM templates ORDER BY name",
        )
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter().map(template_from_row).collect()
    }

    pub(in crate::notifications::store) async fn template(
        db: &Db,
        name: &str,
    ) -> Result<Option<Template>, StoreError> {
        let mut conn = db.read().await?;
        let row: Option<TemplateRow> = sqlx::query_as(
            "SELECT name, channel, subject, body, html, created_at, updated_at FROM templates WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(template_from_row).transpose()
    }

    /// Creates a template; `false` if one has the name. `seed`: a default,
    /// created only if it never was (its name recorded in `template_seeds`).
    pub(in crate::notifications::store) async fn create_template(
        db: &Db,
        input: &TemplateInput,
        now: OffsetDateTime,
        seed: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = db.writer().begin().await?;
        if seed {
            let first = sqlx::query("INSERT INTO template_seeds (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
                .bind(input.name.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if !first {
                return Ok(false);
            }
        }
        let created = sqlx::query(
            "INSERT INTO templates (name, channel, subject, body, html, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (name) DO NOTHING",
        )
        .bind(input.name.as_str())
        .bind(input.channel.as_str())
        .bind(&input.subject)
        .bind(&input.body)
        .bind(&input.html)
        .bind(DB::time(now)?)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        tx.commit().await?;
        Ok(created)
    }

    pub(in crate::notifications::store) async fn replace_template(
        db: &Db,
        input: &TemplateInput,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE templates SET channel = $1, subject = $2, body = $3, html = $4, updated_at = $5
             WHERE name = $6",
        )
        .bind(input.channel.as_str())
        .bind(&input.subject)
        .bind(&input.body)
        .bind(&input.html)
        .bind(DB::time(now)?)
        .bind(input.name.as_str())
        .execute(db.writer())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::notifications::store) async fn delete_template(
        db: &Db,
        name: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM templates WHERE name = $1")
            .bind(name)
            .execute(db.writer())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::notifications::store) async fn preferences(
        db: &Db,
        user: Uuid,
    ) -> Result<Option<Preferences>, StoreError> {
        let mut conn = db.read().await?;
        let row: Option<(bool, bool, bool, bool)> = sqlx::query_as(
            "SELECT email, sms, push, webhook FROM preferences WHERE user_id = $1",
        )
        .bind(DB::id(user))
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.map(|(email, sms, push, webhook)| Preferences { email, sms, push, webhook }))
    }

    pub(in crate::notifications::store) async fn put_preferences(
        db: &Db,
        user: Uuid,
        prefs: Preferences,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO preferences (user_id, email, sms, push, webhook) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, sms = excluded.sms,
                 push = excluded.push, webhook = excluded.webhook",
        )
        .bind(DB::id(user))
        .bind(prefs.email)
        .bind(prefs.sms)
        .bind(prefs.push)
        .bind(prefs.webhook)
        .execute(db.writer())
        .await?;
        Ok(())
    }

    /// The email address the service knows for `user`, if any.
    /// What the service knows of `users`, a few statements whatever their
    /// number (a bulk send names up to 10,000): addresses, opt-outs, and
    /// who has a push subscription.
    pub(in crate::notifications::store) async fn directory(
        db: &Db,
        users: &[Uuid],
    ) -> Result<Directory, StoreError> {
        let mut conn = db.read().await?;
        let mut found = Directory::default();
        for chunk in users.chunks(LOOKUP_CHUNK) {
            let emails: Vec<(<DB as Dialect>::Id, String)> =
                of_users("SELECT id, email FROM users WHERE id IN (", chunk)
                    .build_query_as()
                    .fetch_all(&mut *conn)
                    .await?;
            for (id, email) in emails {
                found.emails.insert(DB::read_id(id, "user id")?, email);
            }
            let preferences: Vec<(<DB as Dialect>::Id, bool, bool, bool, bool)> = of_users(
                "SELECT user_id, email, sms, push, webhook FROM preferences WHERE user_id IN (",
                chunk,
            )
            .build_query_as()
            .fetch_all(&mut *conn)
            .await?;
            for (id, email, sms, push, webhook) in preferences {
                let prefs = Preferences { email, sms, push, webhook };
                found.preferences.insert(DB::read_id(id, "preferences user_id")?, prefs);
            }
            let subscribed: Vec<(<DB as Dialect>::Id,)> = of_users(
                "SELECT DISTINCT user_id FROM push_subscriptions WHERE user_id IN (",
                chunk,
            )
            .build_query_as()
            .fetch_all(&mut *conn)
            .await?;
            for (id,) in subscribed {
                found.subscribed.insert(DB::read_id(id, "subscription user_id")?);
            }
        }
        Ok(found)
    }

    /// `select` (ending in `IN (`) with the ids of `users` bound, closed.
    fn of_users<'q>(select: &'q str, users: &[Uuid]) -> QueryBuilder<'q, DB> {
        let mut query = QueryBuilder::<DB>::new(select);
        let mut ids = query.separated(", ");
        for user in users {
            ids.push_bind(DB::id(*user));
        }
        query.push(")");
        query
    }

    pub(in crate::notifications::store) async fn email_of(
        db: &Db,
        user: Uuid,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = db.read().await?;
        Ok(sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
            .bind(DB::id(user))
            .fetch_optional(&mut *conn)
            .await?)
    }

    /// Adds (or, for the same endpoint, renews the keys of) a subscription.
    pub(in crate::notifications::store) async fn subscribe(
        db: &Db,
        sub: &PushSubscription,
    ) -> Result<PushSubscription, StoreError> {
        let row: (<DB as Dialect>::Id, <DB as Dialect>::Time) = sqlx::query_as(
            "INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (user_id, endpoint) DO UPDATE SET p256dh = excluded.p256dh, auth = excluded.auth
             RETURNING id, created_at",
        )
        .bind(DB::id(sub.id))
        .bind(DB::id(sub.user_id))
        .bind(&sub.endpoint)
        .bind(&sub.p256dh)
        .bind(&sub.auth)
        .bind(DB::time(sub.created_at)?)
        .fetch_one(db.writer())
        .await?;
        Ok(PushSubscription {
            id: DB::read_id(row.0, "subscription id")?,
            created_at: DB::read_time(row.1, "subscription created_at")?,
            ..sub.clone()
        })
    }

    pub(in crate::notifications::store) async fn subscriptions(
        db: &Db,
        user: Uuid,
    ) -> Result<Vec<PushSubscription>, StoreError> {
        let mut conn = db.read().await?;
        let rows: Vec<SubscriptionRow> = sqlx::query_as(
            "SELECT id, endpoint, p256dh, auth, created_at FROM push_subscriptions
             WHERE user_id = $1 ORDER BY id",
        )
        .bind(DB::id(user))
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter()
            .map(|(id, endpoint, p256dh, auth, created_at)| {
                Ok(PushSubscription {
                    id: DB::read_id(id, "subscription id")?,
                    user_id: user,
                    endpoint,
                    p256dh,
                    auth,
                    created_at: DB::read_time(created_at, "subscription created_at")?,
                })
            })
            .collect()
    }

    /// The owner of a subscription, if it exists.
    pub(in crate::notifications::store) async fn subscription_owner(
        db: &Db,
        id: Uuid,
    ) -> Result<Option<Uuid>, StoreError> {
        let mut conn = db.read().await?;
        let owner: Option<<DB as Dialect>::Id> =
            sqlx::query_scalar("SELECT user_id FROM push_subscriptions WHERE id = $1")
                .bind(DB::id(id))
                .fetch_optional(&mut *conn)
                .await?;
        owner.map(|o| DB::read_id(o, "subscription user_id")).transpose()
    }

    pub(in crate::notifications::store) async fn unsubscribe(
        db: &Db,
        id: Uuid,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM push_subscriptions WHERE id = $1")
            .bind(DB::id(id))
            .execute(db.writer())
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn parse_channel(value: &str) -> Result<Channel, StoreError> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("channel `{value}`")))
}
