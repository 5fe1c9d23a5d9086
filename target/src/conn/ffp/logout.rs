//! Logout (§11.14): of the session, this connection or another one of
//! the session.

use super::{After, FullFeature};
use bytes::Bytes;
use iesp_proto::pdu::{LogoutReason, LogoutRequest, LogoutResponse, LogoutResponseCode, Pdu};

impl FullFeature {
    /// Reason 0 closes the session: every connection of it; reason 1 one
    /// connection, this one or (named by its CID) another of the session,
    /// which is told to close while this one goes on.
    pub(super) fn logout(&mut self, req: LogoutRequest) -> After {
        let (response, after) = match req.reason {
            LogoutReason::CLOSE_SESSION => {
                self.session
                    .close_all(self.conn_id, "session logged out on another connection");
                (LogoutResponseCode::SUCCESS, After::Close)
            }
            LogoutReason::CLOSE_CONNECTION if req.cid == self.cid => {
                (LogoutResponseCode::SUCCESS, After::Close)
            }
            LogoutReason::CLOSE_CONNECTION
                if self.session.close_cid(
                    req.cid,
                    self.conn_id,
                    "logged out from another connection of the session",
                ) =>
            {
                (LogoutResponseCode::SUCCESS, After::Continue)
            }
            LogoutReason::CLOSE_CONNECTION => (LogoutResponseCode::CID_NOT_FOUND, After::Continue),
            // Connection recovery needs ErrorRecoveryLevel 2.
            _ => (LogoutResponseCode::RECOVERY_NOT_SUPPORTED, After::Continue),
        };
        if after == After::Close {
            self.tasks.clear();
            self.logged_out = true;
        }
        let rsp = LogoutResponse {
            response,
            itt: req.itt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            time2wait: 0,
            time2retain: 0,
        };
        self.out
            .push(Pdu::LogoutResponse(rsp).encode(), Bytes::new());
        after
    }
}
