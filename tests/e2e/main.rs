//! End-to-end tests: one test binary, one module per topic.

mod activation; // systemd socket activation: cairnd serves on the socket passed as fd 3
mod bisect; // cairn bisect run over a submodule's history with runs missing: the first bad commit, skips, --nearest, an untouched repository, 0 bytes the second time, SIGINT; cairn prefetch, pin/unpin across restarts and gc
mod bootstrap; // cairnd + cairn processes: bootstrap across two runs, warm, concurrency, missing, incremental, kill
mod crash; // the local store survives SIGKILL at any point of an ingest
mod crash_daemon; // SIGKILL of cairnd during publish, fetch and gc: verify clean, records complete
mod faults; // the fault matrix: S3 faults through the proxy during publish, resolve and fetch
mod find; // cairn find/diff: Cairn records, GitHub runs (mock), pagination, rate limits, baselines, size diffs
mod full_disk; // the store on a small tmpfs: a clear no-space error, nothing partial, gc frees room
mod fuzz_seeded; // the fuzz targets' properties over seeded mutations and the fuzzers' regressions
mod hostile; // hostile archives are refused, each with its own error, and leave the store unchanged
mod hostile_bootstrap; // hostile archives the daemon accepts and bootstrap refuses: chained symlinks, non-stage relpaths, cairn's own names
mod hostile_corpus; // the checked-in hostile corpus: archives, topologies, names
mod integrity; // corruption never reaches a build dir silently: edited kept files rewritten, corrupt CAS blobs refused by --verify
mod interrupt; // SIGKILL/SIGINT/SIGTERM during A→B re-bootstraps: markers only over exact stage dirs, reruns complete
mod lifecycle; // cairnd serve: SIGTERM right after readiness is graceful, 200 times
mod metrics; // `cairnd serve --metrics`: Prometheus counters and `/status` after real gRPC traffic
mod non_utf8; // names that are not UTF-8 kept byte-exact: a CI archive from S3, a Unix push, a TCP push, each fetched back
mod quota; // a quota below the working set: fetches succeed, background eviction, online verify
mod security; // symlinks planted in build dirs and in the store, a damaged index rebuilt at start
mod service; // the daemon service without gRPC: multi-base resolve, fetch, trust, explicit-run import
mod soak; // a real cairnd through 20,000 distinct objects and fingerprints: in-flight maps empty, RSS near its baseline
mod storage; // storage backends against moto and a local dir: behaviour suite, ranged GETs, faults
mod store; // the local store: ingest vs `tar -x`, dedup, sidecars, single-flight, eviction, verify
mod therock_tree; // a bootstrap leaves exactly TheRock's tree: the checked-in listing made by TheRock's rules
mod trust; // socket mode, TCP bearer token, untrusted writes, credentials never logged
mod warmup; // predictive warm-up: a pushed run of a followed branch made local with no request, the next bootstrap downloads nothing; off by default; 90% of the quota; feed entries over the Unix socket and TCP
