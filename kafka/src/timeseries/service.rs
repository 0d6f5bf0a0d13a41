//! `prism.interfaces.timeseries.TimeSeriesBasicInterface` (Insert, Query):
//! validates a request, resolves the series and its partitions' offsets,
//! and hands a Query to a task tracked with the plugin's streams (so drain
//! ends it).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prism_plugin_core::Slot;
use prism_plugin_core::proto::timeseries::time_series_basic_interface_server::TimeSeriesBasicInterface;
use prism_plugin_core::proto::timeseries::{
    InsertRequest, InsertResponse, QueryRequest, QueryResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::cursor::{Cursor, fingerprint};
use super::insert;
use super::query::{self, Plan};
use crate::backend::Backend;
use crate::config::{TimeSeriesConfig, check_topic};
use crate::error::Error;
use crate::stream::StreamSet;

/// The TimeSeries service over the plugin's backend slot and stream set.
#[derive(Clone)]
pub(crate) struct TimeSeriesService {
    backend: Arc<Slot<Backend>>,
    streams: Arc<StreamSet>,
}

impl TimeSeriesService {
    /// A service over `backend`, running queries in `streams`.
    pub(crate) fn new(backend: Arc<Slot<Backend>>, streams: Arc<StreamSet>) -> Self {
        TimeSeriesService { backend, streams }
    }
}

type QueryStream = Pin<Box<dyn Stream<Item = Result<QueryResponse, Status>> + Send>>;

/// Checks a Query and turns it into a plan (the cursor's high-water marks
/// returned beside it).
fn plan(
    req: QueryRequest,
    config: &TimeSeriesConfig,
) -> Result<(Plan, Option<BTreeMap<i32, i64>>), Error> {
    let invalid = |what: String| Err(Error::InvalidArgument(what));
    if req.series.is_empty() {
        return invalid("series must not be empty".into());
    }
    check_topic(&req.series).map_err(|p| Error::InvalidArgument(format!("series: {p}")))?;
    if req.end_ms <= req.start_ms {
        return invalid(format!(
            "end_ms ({}) must be after start_ms ({}): the range is [start_ms, end_ms)",
            req.end_ms, req.start_ms
        ));
    }
    let limit = u64::try_from(req.limit).map_err(|_| {
        Error::InvalidArgument(format!("limit must not be negative (got {})", req.limit))
    })?;
    if let Some(max) = config.max_range {
        let span = u128::try_from(i128::from(req.end_ms) - i128::from(req.start_ms)).unwrap_or(0);
        if span > max.as_millis() {
            return invalid(format!(
                "the range is {span} ms; at most {} ms may be asked for (backend.timeseries.max_range)",
                max.as_millis()
            ));
        }
    }
    let tags: BTreeMap<String, String> = req.tags.into_iter().collect();
    let fingerprint = fingerprint(&req.series, req.start_ms, req.end_ms, &tags);
    let cursor = if req.cursor.is_empty() {
        None
    } else {
        Some(Cursor::decode(&req.cursor, fingerprint).map_err(Error::InvalidArgument)?)
    };
    let plan = Plan {
        topic: req.series,
        start_ms: req.start_ms,
        end_ms: req.end_ms,
        limit,
        tags,
        fingerprint,
        resume: cursor.as_ref().map(|c| c.after),
    };
    Ok((plan, cursor.map(|c| c.ends)))
}

#[tonic::async_trait]
impl TimeSeriesBasicInterface for TimeSeriesService {
    async fn insert(
        &self,
        request: Request<InsertRequest>,
    ) -> Result<Response<InsertResponse>, Status> {
        let deadline = prism_plugin_core::deadline(&request);
        let backend = self.backend.get().map_err(Status::from)?;
        let reply = insert::insert(&backend, request.into_inner().events, deadline).await?;
        Ok(Response::new(reply))
    }

    type QueryStream = QueryStream;

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<QueryStream>, Status> {
        let deadline = prism_plugin_core::deadline(&request);
        let backend = self.backend.get().map_err(Status::from)?;
        let (plan, ends) = plan(request.into_inner(), backend.timeseries())?;
        let setup = async {
            let partitions = backend.series_partitions(&plan.topic).await?;
            let from = plan.start_ms.max(plan.resume.map_or(i64::MIN, |k| k.ts));
            backend.series_spans(&plan.topic, &partitions, from).await
        };
        let mut spans = prism_plugin_core::within(deadline, setup)
            .await
            .unwrap_or(Err(Error::Deadline("the series offsets lookup")))?;
        if let Some(ends) = ends {
            // The first page's snapshot: partitions added since are not
            // read; a partition that shrank (recreated) ends where it ends.
            for span in &mut spans {
                span.end = ends
                    .get(&span.partition)
                    .map_or(span.start, |&e| e.min(span.end));
                span.start = span.start.min(span.end);
            }
        }
        let (tx, rx) = mpsc::channel(backend.stream_buffer());
        let cancel = self.streams.child_token();
        self.streams
            .spawn(query::run(backend, plan, spans, tx, cancel));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
