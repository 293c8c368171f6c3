//! Snapshot-chain collapse.
