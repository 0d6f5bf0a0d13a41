//! [`Backend`]: the real server behind one plugin kind (PostgreSQL, Redis or
//! tansu), started by `prism-testkit`, and the variable that points the
//! plugin at it. The fault tests that run the same scenario against every
//! plugin start their backend through it.

use prism_testkit::{Kafka, Postgres, Redis};

use crate::Kind;

/// A running backend server.
#[derive(Debug)]
pub enum Backend {
    /// PostgreSQL, for `prism-postgres`.
    Postgres(Postgres),
    /// Redis, for `prism-redis`.
    Redis(Redis),
    /// tansu (Kafka protocol), for `prism-kafka`.
    Kafka(Kafka),
}

impl Backend {
    /// Starts the default server for `kind`; panics if it does not start.
    pub async fn start(kind: Kind) -> Backend {
        match kind {
            Kind::Postgres => Backend::Postgres(Postgres::start().await.expect("postgres starts")),
            Kind::Redis => Backend::Redis(Redis::start().await.expect("redis starts")),
            Kind::Kafka => Backend::Kafka(Kafka::start().await.expect("tansu starts")),
        }
    }

    /// The plugin kind this backend serves.
    pub fn kind(&self) -> Kind {
        match self {
            Backend::Postgres(_) => Kind::Postgres,
            Backend::Redis(_) => Kind::Redis,
            Backend::Kafka(_) => Kind::Kafka,
        }
    }

    /// Freezes the server (SIGSTOP to its process tree): connections stay
    /// open and nothing answers, like a network stall.
    pub fn pause(&mut self) {
        match self {
            Backend::Postgres(pg) => pg.pause(),
            Backend::Redis(redis) => redis.pause(),
            Backend::Kafka(kafka) => kafka.pause(),
        }
        .expect("SIGSTOP the backend");
    }

    /// Thaws a [`pause`](Self::pause)d server (SIGCONT).
    pub fn resume(&mut self) {
        match self {
            Backend::Postgres(pg) => pg.resume(),
            Backend::Redis(redis) => redis.resume(),
            Backend::Kafka(kafka) => kafka.resume(),
        }
        .expect("SIGCONT the backend");
    }

    /// The plugin's environment variable naming this server, and its value.
    pub fn address(&self) -> (&'static str, String) {
        match self {
            Backend::Postgres(pg) => ("DATABASE_URL", pg.url()),
            Backend::Redis(redis) => ("REDIS_ADDRESS", redis.addr()),
            Backend::Kafka(kafka) => ("KAFKA_BROKERS", kafka.bootstrap()),
        }
    }
}
