//! Insert: validates a batch of events (all of it, before anything is
//! written), gives events without an id a generated one, makes sure each
//! series topic exists, writes every event concurrently and reports how
//! many the broker acknowledged and which failed.

use std::collections::HashMap;

use futures::future::join_all;
use prism_plugin_core::proto::timeseries::{Event, InsertFailure, InsertResponse};
use tokio::time::Instant;

use crate::backend::{Backend, check_record_size, new_event_id};
use crate::config::check_topic;
use crate::error::Error;

/// Longest event id accepted: ids are kept in memory per timestamp while a
/// query removes copies.
const MAX_EVENT_ID_BYTES: usize = 1024;

/// Every problem of event `index`, as an INVALID_ARGUMENT (or
/// RESOURCE_EXHAUSTED for size) error.
fn validate(index: usize, event: &Event, max_bytes: usize) -> Result<(), Error> {
    let invalid = |what: String| Err(Error::InvalidArgument(format!("events[{index}]: {what}")));
    if event.series.is_empty() {
        return invalid("series must not be empty".into());
    }
    if let Err(problem) = check_topic(&event.series) {
        return invalid(format!("series: {problem}"));
    }
    if event.timestamp_ms < 0 {
        return invalid(format!(
            "timestamp_ms {} is before 1970 (Kafka record timestamps are ≥ 0)",
            event.timestamp_ms
        ));
    }
    if event.event_id.len() > MAX_EVENT_ID_BYTES {
        return invalid(format!("event_id is over {MAX_EVENT_ID_BYTES} bytes"));
    }
    let body = event.payload.len() + event.event_id.len();
    check_record_size(body, &event.tags, max_bytes)
}

/// Writes `events`; `Err` only when the request is invalid or nothing
/// could be written (then the first failure's status).
pub(crate) async fn insert(
    backend: &Backend,
    events: Vec<Event>,
    deadline: Option<Instant>,
) -> Result<InsertResponse, Error> {
    let config = backend.timeseries();
    if events.len() > config.max_batch {
        return Err(Error::InvalidArgument(format!(
            "{} events in one Insert; the limit is {} (backend.timeseries.max_batch)",
            events.len(),
            config.max_batch
        )));
    }
    for (index, event) in events.iter().enumerate() {
        validate(index, event, backend.max_payload_bytes())?;
    }
    let ids: Vec<String> = events
        .iter()
        .map(|e| {
            if e.event_id.is_empty() {
                new_event_id()
            } else {
                e.event_id.clone()
            }
        })
        .collect();
    let mut missing: HashMap<&str, Error> = HashMap::new();
    let mut series: Vec<&str> = events.iter().map(|e| e.series.as_str()).collect();
    series.sort_unstable();
    series.dedup();
    for name in series {
        let ensured =
            prism_plugin_core::within(deadline, backend.ensure_topic_with(name, config.partitions))
                .await
                .unwrap_or(Err(Error::Deadline("the series lookup")));
        if let Err(err) = ensured {
            missing.insert(name, err);
        }
    }
    let writes = events.iter().zip(&ids).enumerate().map(|(i, (event, id))| {
        let missing = &missing;
        async move {
            if let Some(err) = missing.get(event.series.as_str()) {
                return (i, Err(err.to_string()), None);
            }
            let write = backend.write_event(
                &event.series,
                event.timestamp_ms,
                id,
                &event.payload,
                &event.tags,
            );
            match prism_plugin_core::within(deadline, write).await {
                Some(Ok(())) => (i, Ok(()), None),
                Some(Err(err)) => (i, Err(err.to_string()), Some(err)),
                None => {
                    let err = Error::Deadline("an Insert write");
                    (i, Err(err.to_string()), Some(err))
                }
            }
        }
    });
    // One producer span for the batch (none unless the call is traced): its
    // context goes into every record, so a Query continues this trace.
    let span = events.first().map_or_else(tracing::Span::none, |event| {
        prism_plugin_core::otel::publish_span(&event.series)
    });
    let results = tracing::Instrument::instrument(join_all(writes), span).await;
    let mut failures = Vec::new();
    let mut first_error = None;
    for (index, result, err) in results {
        if let Err(text) = result {
            failures.push(InsertFailure {
                index: i32::try_from(index).unwrap_or(i32::MAX),
                error: text,
            });
            if first_error.is_none() {
                first_error = err;
            }
        }
    }
    let inserted = events.len() - failures.len();
    if inserted == 0 && !failures.is_empty() {
        let series_error = missing.into_values().next();
        return Err(first_error.or(series_error).unwrap_or(Error::Closed));
    }
    let error = match failures.first() {
        Some(first) => format!(
            "{} of {} events were not written; first (events[{}]): {}",
            failures.len(),
            events.len(),
            first.index,
            first.error
        ),
        None => String::new(),
    };
    Ok(InsertResponse {
        success: failures.is_empty(),
        error,
        inserted: i32::try_from(inserted).unwrap_or(i32::MAX),
        event_ids: ids,
        failures,
    })
}
