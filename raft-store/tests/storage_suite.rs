//! The sled log store and state machine against openraft's own storage suite.

use openraft::testing::{StoreBuilder, Suite};
use raft_store::log_store::LogStore;
use raft_store::state_machine::StateMachineStore;
use raft_store::types::{StorageError, TypeConfig};
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = raft_store::open_storage(dir.path(), 16 << 20).expect("open sled");
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_storage_passes_openraft_suite() {
    Suite::test_all(SledBuilder).expect("storage suite");
}
