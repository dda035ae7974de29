//! End-to-end tests: one test binary, one module per topic.

mod bootstrap; // cairnd + cairn processes: bootstrap across two runs, warm, concurrency, missing, incremental, kill
mod crash; // the local store survives SIGKILL at any point of an ingest
mod hostile; // hostile archives are refused, each with its own error, and leave the store unchanged
mod service; // the daemon service without gRPC: multi-base resolve, fetch, trust, explicit-run import
mod storage; // storage backends against moto and a local dir: behaviour suite, ranged GETs, faults
mod store; // the local store: ingest vs `tar -x`, dedup, sidecars, single-flight, eviction, verify
