//! fsx unit tests.
