//! The cancel-and-pay race (issue 13): `POST /orders/{id}/cancel` and
//! `POST /invoices/{iid}/pay` sent together, round after round, and what
//! every round must settle to once the events between the two services are
//! through. Shared by the single-app tests and the replica tests (cancel on
//! one replica, pay on the other).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::TestApp;

/// How the rounds came out: who answered 200, and how each settled.
#[derive(Debug, Default)]
pub struct RaceTally {
    /// Both the cancel and the payment answered 200: billing refunded.
    pub both_won: usize,
    pub cancel_won: usize,
    pub pay_won: usize,
}

/// Runs `rounds` races between a cancel sent to `cancel_on` and a payment
/// sent to `pay_on`, as `user`, and checks each round settles to a state
/// where no cancelled order keeps its money:
/// (cancelled, void), (cancelled, refunded) or (paid, paid).
pub async fn cancel_and_pay(
    cancel_on: &TestApp,
    pay_on: &TestApp,
    user: &str,
    rounds: usize,
) -> RaceTally {
    let mut tally = RaceTally::default();
    for round in 0..rounds {
        let order: Value = cancel_on
            .create_order(user, json!({"amount": 100 + round}))
            .await
            .json()
            .await
            .expect("order JSON");
        let order_id = order["id"].as_str().expect("order id").to_owned();
        let invoice = pay_on
            .eventually(
                &format!("/api/v1/invoices/by-order/{order_id}"),
                user,
                |_| true,
            )
            .await;
        let invoice_id = invoice["id"].as_str().expect("invoice id").to_owned();

        let cancel = cancel_on
            .as_user(
                Method::POST,
                &format!("/api/v1/orders/{order_id}/cancel"),
                user,
            )
            .send();
        let pay = pay_on
            .as_user(
                Method::POST,
                &format!("/api/v1/invoices/{invoice_id}/pay"),
                user,
            )
            .send();
        let (cancel, pay) = tokio::join!(cancel, pay);
        let (cancel, pay) = (
            cancel.expect("cancel answers").status().as_u16(),
            pay.expect("pay answers").status().as_u16(),
        );
        assert!(
            matches!((cancel, pay), (200, 200) | (200, 409) | (409, 200)),
            "round {round}: cancel {cancel}, pay {pay}"
        );
        let (order, invoice) = settled(cancel_on, user, &order_id, &invoice_id).await;
        match (cancel, pay) {
            (200, 200) => {
                tally.both_won += 1;
                assert_eq!(
                    (order.as_str(), invoice.as_str()),
                    ("cancelled", "refunded"),
                    "round {round}: both answered 200"
                );
            }
            (200, _) => {
                tally.cancel_won += 1;
                assert_eq!(order, "cancelled", "round {round}");
                assert!(
                    invoice == "void" || invoice == "refunded",
                    "round {round}: {invoice}"
                );
            }
            _ => {
                tally.pay_won += 1;
                assert_eq!(
                    (order.as_str(), invoice.as_str()),
                    ("paid", "paid"),
                    "round {round}"
                );
            }
        }
    }
    tally
}

/// The order's and the invoice's statuses once they agree: the events
/// between orders and billing are applied within seconds.
async fn settled(app: &TestApp, user: &str, order_id: &str, invoice_id: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let order = app
            .get_json(&format!("/api/v1/orders/{order_id}"), user)
            .await;
        let invoice = app
            .get_json(&format!("/api/v1/invoices/{invoice_id}"), user)
            .await;
        let statuses = (
            order["status"].as_str().unwrap_or("?").to_owned(),
            invoice["status"].as_str().unwrap_or("?").to_owned(),
        );
        let agreed = matches!(
            (statuses.0.as_str(), statuses.1.as_str()),
            ("cancelled", "void") | ("cancelled", "refunded") | ("paid", "paid")
        );
        if agreed {
            return statuses;
        }
        assert!(
            Instant::now() < deadline,
            "order {order_id} and invoice {invoice_id} never agreed: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
