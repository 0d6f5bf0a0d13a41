//! The backend as core's [`AtomicStore`]: core's `AtomicService` serves
//! `KeyValueAtomicInterface` (preamble, validation, replies, the refused
//! counter's status); this hands each call to its one statement. No SQL here.

use prism_plugin_core::Scope;
use prism_plugin_core::kv::{AtomicStore, Counted, Counter, Swap, Swapped};
use tonic::Status;

use crate::backend::Backend;

#[tonic::async_trait]
impl AtomicStore for Backend {
    async fn compare_and_swap(&self, scope: Scope, swap: Swap) -> Result<Swapped, Status> {
        let swap = Backend::compare_and_swap(self, &scope.namespace, &swap, scope.deadline);
        Ok(swap.await?)
    }

    async fn increment(&self, scope: Scope, counter: Counter) -> Result<Counted, Status> {
        let increment = Backend::increment(self, &scope.namespace, &counter, scope.deadline);
        Ok(increment.await?)
    }
}
