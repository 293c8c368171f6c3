//! vdar: a streaming archiver for VMware virtual disks.
//!
//! Pipeline (one module per stage):
//! 1. [`input`]: parse descriptors and open every extent of every layer of a snapshot chain.
//! 2. [`chain`]: collapse the chain on the fly into ordered runs of the virtual disk (data or zero).
//! 3. [`blockio`]: read the data runs with a read-ahead pipeline (io_uring, pread fallback).
//!
//! [`san`] (LAN-free SAN mode) plugs into stage 1 as a [`input::SourceOpener`]: files come from
//! a block map and are read from the datastore's LUNs.
#![deny(missing_docs)]

pub mod blockio;
pub mod chain;
pub mod error;
pub mod fixture;
pub mod input;
pub mod san;

pub use error::{Error, Result};
