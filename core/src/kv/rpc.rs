//! The one shape of every KeyValue RPC, written once for all of them
//! (basic, batch, TTL, scan, atomic): take the call's preamble
//! ([`Call::begin`]: namespace, authorization, deadline, the store current
//! in the [`Slot`]), validate the message with the store's rules before
//! anything runs, run the store's operation, build the reply. The
//! interfaces (`service`, `scan`, `atomic`) say only what differs: which
//! check, which operation, which reply.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::Rules;
use crate::{Call, Scope, Slot};

/// The KeyValue interfaces served from the store current in a [`Slot`] (so
/// a re-initialize or a Vault rotation takes effect for the next request).
/// It implements each interface its store supports: basic, batch and TTL
/// for a [`super::Store`], Scan for a [`super::ScanStore`], the atomic
/// operations for an [`super::AtomicStore`].
pub struct KvService<S> {
    backend: Arc<Slot<S>>,
}

/// The Scan interface's name for [`KvService`] (a plugin registers
/// `KeyValueScanInterfaceServer::new(ScanService::new(slot))`).
pub type ScanService<S> = KvService<S>;

/// The atomic interface's name for [`KvService`].
pub type AtomicService<S> = KvService<S>;

impl<S> Clone for KvService<S> {
    fn clone(&self) -> Self {
        KvService {
            backend: self.backend.clone(),
        }
    }
}

impl<S> KvService<S> {
    /// A service reading the store from `backend` on every call.
    pub fn new(backend: Arc<Slot<S>>) -> Self {
        KvService { backend }
    }
}

impl<S: Rules + Send + Sync + 'static> KvService<S> {
    /// One RPC: the preamble, then `check` (the message against the store's
    /// rules: a bad request is refused before the store sees it), then `run`
    /// (the store's operation in the call's [`Scope`]), then `reply`. Every
    /// failure is the gRPC status its step answered.
    pub(super) async fn rpc<Req, Checked, Out, Reply>(
        &self,
        request: Request<Req>,
        check: impl FnOnce(Req, &S) -> Result<Checked, Status>,
        run: impl AsyncFnOnce(&S, Scope, Checked) -> Result<Out, Status>,
        reply: impl FnOnce(Out) -> Reply,
    ) -> Result<Response<Reply>, Status> {
        let (Call { backend, scope }, req) = Call::begin(&self.backend, request)?;
        let checked = check(req, &backend)?;
        let out = run(&backend, scope, checked).await?;
        Ok(Response::new(reply(out)))
    }
}

/// A key that passed the store's rules, handed on to the operation.
#[allow(clippy::result_large_err)]
pub(super) fn checked_key(key: String, rules: &impl Rules) -> Result<String, Status> {
    rules.check_key(&key)?;
    Ok(key)
}
