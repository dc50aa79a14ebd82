//! `GET /export.csv`: the entries a filter selects as RFC 4180 CSV, written
//! by the `csv` crate a keyset page (by seq) at a time into a bounded
//! channel that is the response body. Memory holds one page and the
//! channel's few chunks, whatever the number of rows; the header goes out
//! before the first query, so the first bytes come at once; a client that
//! goes away fails the next send, which ends the task and its queries.

use bytes::Bytes;
use http::HeaderValue;

use super::model::Filter;
use super::store::{AuditStore, Stored};
use crate::api::{BodyStream, ChunkSender, ClientGone};
use crate::storage::StoreError;

/// Chunks (pages) waiting for the client at most.
const CHANNEL_CHUNKS: usize = 4;

const HEADER: [&str; 9] = [
    "id",
    "seq",
    "occurred_at",
    "action",
    "actor_id",
    "resource_type",
    "resource_id",
    "request_id",
    "data",
];

/// Why an export ended before its last row.
#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error(transparent)]
    ClientGone(#[from] ClientGone),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("csv: {0}")]
    Csv(#[from] csv::Error),
    #[error("csv: {0}")]
    Io(#[from] std::io::Error),
}

/// How an export ended, as `audit_exports_total{outcome}` counts it.
const OUTCOMES: [&str; 3] = ["complete", "client_gone", "failed"];

/// The export counters at 0, so an alert on failed exports sees the first.
pub fn register_metrics() {
    for outcome in OUTCOMES {
        metrics::counter!("audit_exports_total", "outcome" => outcome).increment(0);
    }
    metrics::counter!("audit_export_rows_total").increment(0);
}

/// Starts the export's task; its body is the returned stream.
pub fn start(store: AuditStore, filter: Filter) -> BodyStream {
    let (sender, stream) = BodyStream::channel(
        HeaderValue::from_static("text/csv; charset=utf-8"),
        CHANNEL_CHUNKS,
    );
    tokio::spawn(async move {
        let mut rows = 0u64;
        let outcome = match run(&store, &filter, &sender, &mut rows).await {
            Ok(()) => "complete",
            Err(Stopped::ClientGone(_)) => {
                tracing::info!(rows, "audit export stopped: the client went away");
                "client_gone"
            }
            Err(err) => {
                // The response has started: the client sees a cut body.
                tracing::error!(rows, error = %err, "audit export failed");
                "failed"
            }
        };
        metrics::counter!("audit_exports_total", "outcome" => outcome).increment(1);
        metrics::counter!("audit_export_rows_total").increment(rows);
    });
    stream
}

async fn run(
    store: &AuditStore,
    filter: &Filter,
    sender: &ChunkSender,
    rows: &mut u64,
) -> Result<(), Stopped> {
    let mut csv = writer();
    csv.write_record(HEADER)?;
    send(csv, sender).await?;
    let mut after = 0;
    loop {
        let page = store.export_page(filter, after).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.seq;
        let mut csv = writer();
        for entry in &page {
            write(&mut csv, entry)?;
        }
        *rows += page.len() as u64;
        send(csv, sender).await?;
    }
}

/// A writer of one chunk (the header, or a page of rows).
fn writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(64 * 1024))
}

/// One row, each cell made safe for spreadsheets.
fn write(csv: &mut csv::Writer<Vec<u8>>, e: &Stored) -> Result<(), csv::Error> {
    let (id, seq) = (e.id.to_string(), e.seq.to_string());
    let occurred_at = e
        .occurred_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let actor = e.actor_id.map(|a| a.to_string()).unwrap_or_default();
    let cells = [
        id.as_str(),
        seq.as_str(),
        occurred_at.as_str(),
        e.action.as_str(),
        actor.as_str(),
        e.resource_type.as_str(),
        e.resource_id.as_deref().unwrap_or(""),
        e.request_id.as_deref().unwrap_or(""),
        e.data.as_str(),
    ];
    csv.write_record(cells.iter().map(|cell| defused(cell).into_owned()))
}

/// A cell a spreadsheet would read as a formula gets a leading `'`.
pub fn defused(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// Hands what the writer holds to the client, as one chunk.
async fn send(csv: csv::Writer<Vec<u8>>, sender: &ChunkSender) -> Result<(), Stopped> {
    let chunk = csv.into_inner().map_err(|e| e.into_error())?;
    sender.send(Bytes::from(chunk)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_defused() {
        assert_eq!(defused("=1+1"), "'=1+1");
        assert_eq!(defused("-5"), "'-5");
        assert_eq!(defused("@x"), "'@x");
        assert_eq!(defused("+x"), "'+x");
        assert_eq!(defused("{\"a\":1}"), "{\"a\":1}");
    }
}
