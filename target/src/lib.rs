//! # iesp-target — the reference iSCSI target (being written)
