//! Crash safety of the local store (SIGKILL during ingest).
