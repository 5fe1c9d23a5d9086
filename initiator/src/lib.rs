//! # iesp-initiator — minimal async iSCSI initiator (being written)
