//! The billing store against both backends: every `check_*` function below
//! runs once on SQLite (a file in a temporary directory) and once on
//! PostgreSQL. It checks what the event flow relies on: an event applied
//! twice changes nothing, an order gets one invoice whatever the events say,
//! numbers have no gaps under concurrency, and every change has its event in
//! the outbox.
//!
//! PostgreSQL comes from `STAGEWORKS_TEST_DATABASE_URL`, or the machine's
//! server (see `common/`); each test creates a database of its own there
//! (`stageworks_test_<uuid>`) and drops it at the end, pass or fail.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use actors::api::PageRequest;
use actors::billing::model::{Invoice, InvoiceFilter, InvoiceStatus};
use actors::billing::store::{ApplyOutcome, BillingStore, PayOutcome};
use actors::events::{Event, Topic};
use actors::storage::StorageSettings;
use actors::ServiceError;
use actors::{billing, orders};
use common::Guard;
use serde_json::json;
use uuid::Uuid;

// ---------------------------------------------------------------- harness --

const PREFIX: &str = "INV-";

async fn sqlite_store() -> (BillingStore, Guard) {
    let (dir, guard) = common::sqlite_dir();
    let store = BillingStore::open(&dir, &StorageSettings::default(), PREFIX)
        .await
        .expect("SQLite store opens");
    store.ensure_ready().await.expect("ready");
    (store, guard)
}

async fn postgres_store() -> (BillingStore, Guard) {
    let (settings, guard) = common::postgres_database().await;
    let store = BillingStore::open(&std::env::temp_dir(), &settings, PREFIX)
        .await
        .expect("PostgreSQL store opens");
    store
        .ensure_ready()
        .await
        .expect("schema and migrations in place");
    (store, guard)
}

/// Runs each check on both backends, as `sqlite::<check>` and
/// `postgres::<check>`, on a runtime with two threads so that concurrent
/// applies really overlap.
macro_rules! on_both_backends {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (store, _guard) = super::sqlite_store().await;
                    super::$check(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (store, _guard) = super::postgres_store().await;
                    super::$check(&store).await;
                }
            )*
        }
    };
}

on_both_backends![
    check_redelivery_changes_nothing,
    check_concurrent_redelivery_applies_once,
    check_one_invoice_per_order,
    check_numbers_are_gap_free_under_concurrency,
    check_cancel_voids_an_open_invoice,
    check_cancel_of_a_paid_invoice_refunds_it,
    check_cancel_before_create_is_retried,
    check_pay,
    check_malformed_events_are_refused,
    check_list,
    check_purged_event_ids_still_make_one_invoice,
];

// ---------------------------------------------------------------- helpers --

/// An order event as orders publishes it: the order JSON as `data`, the
/// request and the acting user alongside.
fn order_event(topic: Topic, order_id: Uuid, user_id: Uuid, amount: i64) -> Event {
    let status = if topic == orders::topics::ORDER_CANCELLED {
        "cancelled"
    } else {
        "created"
    };
    let order = json!({
        "id": order_id,
        "user_id": user_id,
        "amount": amount,
        "currency": "EUR",
        "description": "two pots of tea",
        "status": status,
        "created_at": "2024-07-20T10:00:00.000000Z",
        "updated_at": "2024-07-20T10:00:00.000000Z",
    });
    let request_id = format!("req-{}", Uuid::now_v7().simple());
    Event::new(topic, Some(&request_id), Some(user_id), &order).expect("serializable")
}

fn created(order_id: Uuid, user_id: Uuid) -> Event {
    order_event(orders::topics::ORDER_CREATED, order_id, user_id, 5000)
}

fn cancelled(order_id: Uuid, user_id: Uuid) -> Event {
    order_event(orders::topics::ORDER_CANCELLED, order_id, user_id, 5000)
}

async fn apply(store: &BillingStore, event: &Event) -> ApplyOutcome {
    store.apply(event).await.expect("applies")
}

/// Invoices an order and answers its invoice.
async fn invoice(store: &BillingStore, order_id: Uuid, user_id: Uuid) -> Invoice {
    match apply(store, &created(order_id, user_id)).await {
        ApplyOutcome::Invoiced(invoice) => invoice,
        other => panic!("expected a new invoice, got {other:?}"),
    }
}

/// The events appended to the outbox since the last look (claimed for a
/// lease, so the next look does not see them again).
async fn new_events(store: &BillingStore) -> Vec<Event> {
    store
        .outbox()
        .claim("test", 1_000, Duration::from_secs(300))
        .await
        .expect("outbox")
        .into_iter()
        .map(|record| record.event)
        .collect()
}

fn data(event: &Event) -> Invoice {
    event.payload().expect("an invoice")
}

async fn by_order(store: &BillingStore, order_id: Uuid) -> Invoice {
    store
        .get_by_order(order_id)
        .await
        .expect("store")
        .expect("the order's invoice")
}

// ----------------------------------------------------------------- checks --

async fn check_redelivery_changes_nothing(store: &BillingStore) {
    let (order, user) = (Uuid::now_v7(), Uuid::now_v7());
    let event = created(order, user);
    let ApplyOutcome::Invoiced(first) = apply(store, &event).await else {
        panic!("first delivery invoices")
    };
    assert_eq!(first.number, "INV-000001");
    assert_eq!(first.order_id, order);
    assert_eq!(first.user_id, user);
    assert_eq!(first.amount, 5000);
    assert_eq!(first.currency, "EUR");
    assert_eq!(first.status, InvoiceStatus::Open);
    assert_eq!((first.paid_at, first.voided_at), (None, None));
    assert_eq!(
        by_order(store, order).await,
        first,
        "what is stored is what was returned"
    );
    assert_eq!(
        store.get(first.id).await.expect("store"),
        Some(first.clone())
    );

    assert_eq!(apply(store, &event).await, ApplyOutcome::AlreadyApplied);
    assert_eq!(apply(store, &event).await, ApplyOutcome::AlreadyApplied);
    assert_eq!(by_order(store, order).await, first);

    // One invoice.created, carrying the consumed event's request and actor.
    let events = new_events(store).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].topic, billing::topics::INVOICE_CREATED);
    assert_eq!(events[0].request_id, event.request_id);
    assert_eq!(events[0].actor_id, Some(user));
    assert_eq!(data(&events[0]), first);
}

async fn check_concurrent_redelivery_applies_once(store: &BillingStore) {
    for round in 1..=5 {
        let event = created(Uuid::now_v7(), Uuid::now_v7());
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (store, event) = (store.clone(), event.clone());
                tokio::spawn(async move { store.apply(&event).await })
            })
            .collect();
        let mut invoiced = Vec::new();
        for task in tasks {
            match task.await.expect("task").expect("applies") {
                ApplyOutcome::Invoiced(invoice) => invoiced.push(invoice),
                ApplyOutcome::AlreadyApplied => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(
            invoiced.len(),
            1,
            "round {round}: exactly one delivery applies"
        );
        assert_eq!(invoiced[0].number, format!("INV-{round:06}"));
    }
    assert_eq!(new_events(store).await.len(), 5);
}

async fn check_one_invoice_per_order(store: &BillingStore) {
    let (order, user) = (Uuid::now_v7(), Uuid::now_v7());
    let first = invoice(store, order, user).await;
    // Another event (another id) naming the same order: recorded, nothing created.
    let again = created(order, user);
    assert_eq!(
        apply(store, &again).await,
        ApplyOutcome::AlreadyInvoiced(first.clone())
    );
    assert_eq!(apply(store, &again).await, ApplyOutcome::AlreadyApplied);

    // Several events for one new order at once, round after round: one
    // invoice per order, and the numbers the others did not take are not lost.
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let order = Uuid::now_v7();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (store, event) = (store.clone(), created(order, user));
                tokio::spawn(async move { store.apply(&event).await })
            })
            .collect();
        let mut invoiced = Vec::new();
        for task in tasks {
            match task.await.expect("task").expect("applies") {
                ApplyOutcome::Invoiced(invoice) => invoiced.push(invoice),
                ApplyOutcome::AlreadyInvoiced(existing) => assert_eq!(existing.order_id, order),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(invoiced.len(), 1, "round {round}: {invoiced:?}");
        assert_eq!(invoiced[0].number, format!("INV-{:06}", round + 2));
    }
    assert_eq!(
        invoice(store, Uuid::now_v7(), user).await.number,
        format!("INV-{:06}", ROUNDS + 2)
    );

    let (_, total) = store
        .list(InvoiceFilter::All, PageRequest::default())
        .await
        .expect("list");
    assert_eq!(total, ROUNDS as u64 + 2);
    let events = new_events(store).await;
    assert_eq!(
        events.len(),
        ROUNDS + 2,
        "one invoice.created per invoice: {events:?}"
    );
    assert!(events
        .iter()
        .all(|e| e.topic == billing::topics::INVOICE_CREATED));
}

async fn check_numbers_are_gap_free_under_concurrency(store: &BillingStore) {
    const ORDERS: usize = 50;
    let user = Uuid::now_v7();
    let tasks: Vec<_> = (0..ORDERS)
        .map(|_| {
            let (store, event) = (store.clone(), created(Uuid::now_v7(), user));
            tokio::spawn(async move { store.apply(&event).await })
        })
        .collect();
    let mut numbers = BTreeSet::new();
    for task in tasks {
        match task.await.expect("task").expect("applies") {
            ApplyOutcome::Invoiced(invoice) => assert!(
                numbers.insert(invoice.number.clone()),
                "{} twice",
                invoice.number
            ),
            other => panic!("{other:?}"),
        }
    }
    let expected: BTreeSet<String> = (1..=ORDERS).map(|n| format!("INV-{n:06}")).collect();
    assert_eq!(numbers, expected);

    // What is stored agrees, and every invoice has its event.
    let page = PageRequest {
        page: 1,
        limit: 100,
    };
    let (stored, total) = store
        .list(InvoiceFilter::User(user), page)
        .await
        .expect("list");
    assert_eq!(total, ORDERS as u64);
    let stored: BTreeSet<String> = stored.into_iter().map(|i| i.number).collect();
    assert_eq!(stored, expected);
    let announced: BTreeSet<String> = new_events(store)
        .await
        .iter()
        .map(|e| data(e).number)
        .collect();
    assert_eq!(announced, expected);
}

async fn check_cancel_voids_an_open_invoice(store: &BillingStore) {
    let (order, user) = (Uuid::now_v7(), Uuid::now_v7());
    let open = invoice(store, order, user).await;
    new_events(store).await;

    let cancel = cancelled(order, user);
    let ApplyOutcome::Voided(voided) = apply(store, &cancel).await else {
        panic!("an open invoice is voided")
    };
    assert_eq!(voided.id, open.id);
    assert_eq!(voided.number, open.number);
    assert_eq!(voided.status, InvoiceStatus::Void);
    assert!(voided.voided_at.is_some());
    assert_eq!(voided.paid_at, None);
    assert_eq!(by_order(store, order).await, voided);

    let events = new_events(store).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].topic, billing::topics::INVOICE_VOIDED);
    assert_eq!(events[0].request_id, cancel.request_id);
    assert_eq!(events[0].actor_id, Some(user));
    assert_eq!(data(&events[0]), voided);

    // Redelivered: nothing; another cancellation of the order: recorded, nothing.
    assert_eq!(apply(store, &cancel).await, ApplyOutcome::AlreadyApplied);
    assert_eq!(
        apply(store, &cancelled(order, user)).await,
        ApplyOutcome::AlreadyClosed(voided.clone())
    );
    assert!(new_events(store).await.is_empty());
    // A void invoice cannot be paid.
    assert_eq!(
        store.pay(voided.id, "req-pay", user).await.expect("store"),
        PayOutcome::NotPayable(voided)
    );
}

async fn check_cancel_of_a_paid_invoice_refunds_it(store: &BillingStore) {
    let (order, user) = (Uuid::now_v7(), Uuid::now_v7());
    let open = invoice(store, order, user).await;
    let PayOutcome::Paid(paid) = store.pay(open.id, "req-pay", user).await.expect("store") else {
        panic!("an open invoice is paid")
    };
    new_events(store).await;

    let cancel = cancelled(order, user);
    let ApplyOutcome::Refunded(refunded) = apply(store, &cancel).await else {
        panic!("a cancel of a paid invoice refunds it")
    };
    assert_eq!(refunded.status, InvoiceStatus::Refunded);
    assert!(refunded.refunded_at.is_some());
    assert_eq!(
        refunded.paid_at, paid.paid_at,
        "when it was paid stays on record"
    );
    assert_eq!(by_order(store, order).await, refunded);
    let events = new_events(store).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].topic, billing::topics::INVOICE_REFUNDED);
    assert_eq!(events[0].request_id, cancel.request_id);
    assert_eq!(data(&events[0]), refunded);

    // Recorded: a redelivery is recognised; another cancel changes nothing;
    // a refunded invoice cannot be paid again.
    assert_eq!(apply(store, &cancel).await, ApplyOutcome::AlreadyApplied);
    assert_eq!(
        apply(store, &cancelled(order, user)).await,
        ApplyOutcome::AlreadyClosed(refunded.clone())
    );
    assert!(new_events(store).await.is_empty());
    assert_eq!(
        store
            .pay(refunded.id, "req-pay-again", user)
            .await
            .expect("store"),
        PayOutcome::NotPayable(refunded)
    );
}

async fn check_cancel_before_create_is_retried(store: &BillingStore) {
    let (order, user) = (Uuid::now_v7(), Uuid::now_v7());
    let cancel = cancelled(order, user);
    for _ in 0..2 {
        match store.apply(&cancel).await {
            Err(ServiceError::Conflict(message)) => {
                assert!(
                    message.contains(&format!("no invoice for order {order} yet")),
                    "{message}"
                )
            }
            other => panic!("expected a retryable conflict, got {other:?}"),
        }
    }
    assert_eq!(store.get_by_order(order).await.expect("store"), None);
    assert!(new_events(store).await.is_empty());

    // Once the order is invoiced, the same cancellation (not recorded before) applies.
    invoice(store, order, user).await;
    let ApplyOutcome::Voided(voided) = apply(store, &cancel).await else {
        panic!("the retried cancellation voids the invoice")
    };
    assert_eq!(voided.status, InvoiceStatus::Void);
    assert_eq!(apply(store, &cancel).await, ApplyOutcome::AlreadyApplied);
}

async fn check_pay(store: &BillingStore) {
    let (order, user, admin) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let open = invoice(store, order, user).await;
    new_events(store).await;

    let PayOutcome::Paid(paid) = store.pay(open.id, "req-pay-1", admin).await.expect("store")
    else {
        panic!("an open invoice is paid")
    };
    assert_eq!(paid.status, InvoiceStatus::Paid);
    assert!(paid.paid_at.is_some());
    assert_eq!(paid.voided_at, None);
    assert_eq!((paid.id, &paid.number), (open.id, &open.number));
    assert_eq!(store.get(open.id).await.expect("store"), Some(paid.clone()));

    let events = new_events(store).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].topic, billing::topics::INVOICE_PAID);
    assert_eq!(events[0].request_id.as_deref(), Some("req-pay-1"));
    assert_eq!(events[0].actor_id, Some(admin));
    assert_eq!(data(&events[0]), paid);

    // Twice: the second finds it paid and changes nothing.
    assert_eq!(
        store.pay(open.id, "req-pay-2", user).await.expect("store"),
        PayOutcome::NotPayable(paid.clone())
    );
    assert!(new_events(store).await.is_empty());
    assert_eq!(
        store
            .pay(Uuid::now_v7(), "req-pay-3", user)
            .await
            .expect("store"),
        PayOutcome::NotFound
    );

    // Two payments at once: exactly one pays.
    let id = invoice(store, Uuid::now_v7(), user).await.id;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.pay(id, "req-race", user).await })
        })
        .collect();
    let mut paid = 0;
    for task in tasks {
        match task.await.expect("task").expect("store") {
            PayOutcome::Paid(_) => paid += 1,
            PayOutcome::NotPayable(invoice) => assert_eq!(invoice.status, InvoiceStatus::Paid),
            PayOutcome::NotFound => panic!("not found"),
        }
    }
    assert_eq!(paid, 1);
    let paid_events = new_events(store)
        .await
        .into_iter()
        .filter(|e| e.topic == billing::topics::INVOICE_PAID)
        .count();
    assert_eq!(paid_events, 1);
}

async fn check_malformed_events_are_refused(store: &BillingStore) {
    let user = Uuid::now_v7();
    let mut bad = created(Uuid::now_v7(), user);
    bad.data = json!({"id": "not a uuid"});
    let mut zero = order_event(orders::topics::ORDER_CREATED, Uuid::now_v7(), user, 0);
    let mut foreign = created(Uuid::now_v7(), user);
    foreign.topic = actors::auth::topics::USER_REGISTERED;
    for event in [&bad, &zero, &foreign] {
        match store.apply(event).await {
            Err(ServiceError::Conflict(_)) => {}
            other => panic!("{}: expected a conflict, got {other:?}", event.data),
        }
    }
    // Nothing was recorded or created: a fixed event would still apply.
    zero.data["amount"] = json!(100);
    assert!(matches!(
        apply(store, &zero).await,
        ApplyOutcome::Invoiced(_)
    ));
    assert_eq!(new_events(store).await.len(), 1);
}

async fn check_list(store: &BillingStore) {
    let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let mut anns = Vec::new();
    for _ in 0..3 {
        anns.push(invoice(store, Uuid::now_v7(), ann).await);
    }
    let bobs = invoice(store, Uuid::now_v7(), bob).await;

    let first = PageRequest { page: 1, limit: 2 };
    let (page, total) = store
        .list(InvoiceFilter::User(ann), first)
        .await
        .expect("list");
    assert_eq!(total, 3);
    // Newest first.
    assert_eq!(page, vec![anns[2].clone(), anns[1].clone()]);
    let second = PageRequest { page: 2, limit: 2 };
    let (page, _) = store
        .list(InvoiceFilter::User(ann), second)
        .await
        .expect("list");
    assert_eq!(page, vec![anns[0].clone()]);

    let (all, total) = store
        .list(InvoiceFilter::All, PageRequest::default())
        .await
        .expect("list");
    assert_eq!(total, 4);
    assert_eq!(all.first(), Some(&bobs));
}

/// Old processed-event ids are purged; a (very) late redelivery of a purged
/// event still makes no second invoice, because an order has one.
async fn check_purged_event_ids_still_make_one_invoice(store: &BillingStore) {
    let (order, user) = (Uuid::now_v7(), Uuid::now_v7());
    let event = created(order, user);
    let ApplyOutcome::Invoiced(first) = apply(store, &event).await else {
        panic!("first delivery invoices")
    };
    let inbox = store.inbox();
    assert_eq!(
        inbox
            .purge(actors::events::inbox::RETENTION)
            .await
            .expect("purge"),
        0,
        "recent ids stay"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(inbox.purge(Duration::ZERO).await.expect("purge"), 1);
    assert_eq!(
        apply(store, &event).await,
        ApplyOutcome::AlreadyInvoiced(first.clone())
    );
    assert_eq!(by_order(store, order).await, first);
}
