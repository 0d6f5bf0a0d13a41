//! Kafka's TimeSeries abstraction (`TimeSeriesBasicInterface`): a series is
//! a topic, an event a record whose timestamp is the event time, whose key
//! is the event id and whose headers are its tags. Insert writes events;
//! Query returns those of a time range in (timestamp, partition, offset)
//! order, each (event id, timestamp) once, with bounded memory.
//!
//! Its settings are `backend.timeseries` (`crate::config::TimeSeriesConfig`).
//! Modules: `service` (the gRPC methods),
//! `insert`, `query` (the query task and its passes), `merge` (ordering,
//! bounded look-ahead, de-duplication; pure) and `cursor` (event order key,
//! resume cursor).

mod cursor;
mod insert;
mod merge;
mod query;
mod service;

pub(crate) use service::TimeSeriesService;
