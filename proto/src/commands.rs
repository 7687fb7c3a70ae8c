//! The `BatchCommands` stream's envelope: which unary RPC each carried
//! request stands for (its access rule and admission are that RPC's), and
//! a gRPC status carried as data in the answer.

use crate::kvpb::batch_commands_request::request::Cmd;
use crate::kvpb::CommandStatus;
use crate::limits::{busy_retry_after, busy_status};

impl Cmd {
    /// The gRPC path of the unary RPC this request stands for.
    pub fn method(&self) -> &'static str {
        match self {
            Cmd::Get(_) => "/kvpb.Kv/Get",
            Cmd::Put(_) => "/kvpb.Kv/Put",
            Cmd::Delete(_) => "/kvpb.Kv/Delete",
            Cmd::BatchGet(_) => "/kvpb.Kv/BatchGet",
            Cmd::BatchPut(_) => "/kvpb.Kv/BatchPut",
            Cmd::Scan(_) => "/kvpb.Kv/Scan",
            Cmd::CompareAndSwap(_) => "/kvpb.Kv/CompareAndSwap",
            Cmd::DeleteRange(_) => "/kvpb.Kv/DeleteRange",
        }
    }
}

impl From<&tonic::Status> for CommandStatus {
    fn from(s: &tonic::Status) -> Self {
        CommandStatus {
            code: s.code() as i32,
            message: s.message().to_string(),
            retry_after_ms: busy_retry_after(s).map_or(0, |d| d.as_millis() as u64),
        }
    }
}

impl CommandStatus {
    /// The status a unary call would have ended with. A code that is not
    /// an error (0, or unknown to gRPC) becomes `Unknown`.
    pub fn into_status(self) -> tonic::Status {
        let code = match tonic::Code::from_i32(self.code) {
            tonic::Code::Ok => tonic::Code::Unknown,
            c => c,
        };
        if code == tonic::Code::ResourceExhausted && self.retry_after_ms > 0 {
            return busy_status(
                self.message,
                std::time::Duration::from_millis(self.retry_after_ms),
            );
        }
        tonic::Status::new(code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_carried_status_keeps_its_code_message_and_busy_wait() {
        let busy = busy_status("full", Duration::from_millis(70));
        let back = CommandStatus::from(&busy).into_status();
        assert_eq!(back.code(), tonic::Code::ResourceExhausted);
        assert_eq!(back.message(), "full");
        assert_eq!(busy_retry_after(&back), Some(Duration::from_millis(70)));
        let plain = CommandStatus::from(&tonic::Status::invalid_argument("bad key")).into_status();
        assert_eq!(plain.code(), tonic::Code::InvalidArgument);
        assert_eq!(busy_retry_after(&plain), None);
        // A hostile or broken peer's "success" status is still a failure.
        let ok = CommandStatus {
            code: 0,
            message: "fine".into(),
            retry_after_ms: 0,
        };
        assert_eq!(ok.into_status().code(), tonic::Code::Unknown);
        let odd = CommandStatus {
            code: 999,
            message: String::new(),
            retry_after_ms: 5,
        };
        assert_eq!(odd.into_status().code(), tonic::Code::Unknown);
    }
}
