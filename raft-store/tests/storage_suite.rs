//! The Raft log store (its own WAL) and the state machine against openraft's own storage suite.

use openraft::testing::{StoreBuilder, Suite};
use raft_store::log_store::LogStore;
use raft_store::state_machine::StateMachineStore;
use raft_store::types::{StorageError, TypeConfig};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = raft_store::open_storage(dir.path(), 16 << 20).expect("open storage");
        Ok((dir, log, sm))
    }
}

#[test]
fn log_store_and_state_machine_pass_openraft_suite() {
    Suite::test_all(Builder).expect("storage suite");
}
