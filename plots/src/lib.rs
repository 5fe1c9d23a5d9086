//! # iesp-plots — charts for iesp-test results
//!
//! Renders the measurements of `iesp-test bench` (IOPS against queue depth,
//! latency CDF, time series) to PNG with `plotters`, and reads the
//! tab-separated `bs threads value` files of iESP's old gnuplot script so
//! existing results can be migrated. The rendering arrives with the bench
//! issue; this crate exists now so the workspace layout is settled.
