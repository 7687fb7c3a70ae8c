//! "Was the request sent?" — the question behind every retry of a write.
//!
//! A request that failed may still have been applied: the store may have
//! read it and then crashed, or the connection may have broken on the way
//! back. Only one failure proves it never left: the connection could not
//! be made. tonic reports that as a [`tonic::ConnectError`] somewhere in
//! the status's source chain, and that typed error is the only evidence
//! taken: a message that mentions "connect" ("connection reset",
//! "connection closed before message completed") says nothing either way.

use std::error::Error as StdError;

/// Whether a failed request may have reached its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// The connection could not be made: the request never left.
    No,
    /// It may have arrived, and a write may have applied.
    Maybe,
}

/// What `status` says about whether its request left.
pub fn sent(status: &tonic::Status) -> Sent {
    let mut source: Option<&(dyn StdError + 'static)> = StdError::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return Sent::No;
        }
        source = e.source();
    }
    Sent::Maybe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_typed_connect_error_proves_a_request_was_not_sent() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let connect = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(connect.code(), tonic::Code::Unavailable);
        assert_eq!(sent(&connect), Sent::No);
        for message in [
            "connection reset",
            "connection closed before message completed",
            "error trying to connect",
            "stopping",
        ] {
            assert_eq!(
                sent(&tonic::Status::unavailable(message)),
                Sent::Maybe,
                "{message}"
            );
        }
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        assert_eq!(
            sent(&tonic::Status::from_error(Box::new(reset))),
            Sent::Maybe
        );
    }
}
