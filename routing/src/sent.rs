//! "Was the request sent?" — the question behind every retry of a write.
//!
//! A request that failed may still have been applied: the store may have
//! read it and then crashed, or the connection may have broken on the way
//! back. Only one failure proves it never left: the connection could not
//! be made. tonic reports that as a typed error somewhere in the status's
//! source chain, and typed errors are the only evidence taken: a message
//! that mentions "connect" ("connection reset", "connection closed before
//! message completed") says nothing either way. There are two:
//! - a [`tonic::ConnectError`]: dialing failed (refused, unreachable, the
//!   TLS handshake, or the plaintext connector's timeout);
//! - the connect timeout of a channel with a custom connector (every TLS
//!   channel, `tessera_security`): tonic applies it *outside* its own
//!   connector, so it is not a `ConnectError` but the `io::Error` of kind
//!   `TimedOut` wrapping tokio's `Elapsed` that `hyper-timeout`'s
//!   connector makes. Nothing else on a channel makes that pair (tonic's
//!   request deadline is a `DEADLINE_EXCEEDED` status, a dead connection's
//!   keep-alive a hyper error). Without this case a host that went silent
//!   (a cut link, a powered-off machine) turned every write aimed at it
//!   into an indeterminate one instead of a failover; the network tests
//!   (`tests/tests/network.rs`) found it.

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
        if e.is::<tonic::ConnectError>() || is_connect_timeout(e) {
            return Sent::No;
        }
        source = e.source();
    }
    Sent::Maybe
}

/// `hyper-timeout`'s connect timeout: `io::Error` of kind `TimedOut` around
/// tokio's `Elapsed` (see the module doc).
fn is_connect_timeout(e: &(dyn StdError + 'static)) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|io| {
        io.kind() == std::io::ErrorKind::TimedOut
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<tokio::time::error::Elapsed>())
    })
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
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        assert_eq!(
            sent(&tonic::Status::from_error(Box::new(timed_out))),
            Sent::Maybe,
            "a timeout that is not the connector's"
        );
    }

    /// The connect timeout of a TLS channel, as tonic reports it: not sent.
    #[tokio::test]
    async fn the_connect_timeout_of_a_custom_connector_proves_a_request_was_not_sent() {
        let elapsed = tokio::time::timeout(
            std::time::Duration::from_millis(1),
            std::future::pending::<()>(),
        )
        .await
        .unwrap_err();
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, elapsed);
        assert_eq!(
            sent(&tonic::Status::from_error(Box::new(timeout))),
            Sent::No
        );
    }

    /// End to end: a TLS channel to a listener that never accepts (the
    /// kernel completes the TCP handshake, the TLS handshake never ends, as
    /// with a host gone silent) fails at its connect timeout with an error
    /// `sent` calls not sent.
    #[tokio::test]
    async fn a_tls_channel_that_cannot_connect_in_time_did_not_send() {
        let dir = tempfile::tempdir().unwrap();
        tessera_security::certs::create_local_bundle(
            &tessera_security::certs::CertsDir::new(dir.path()),
            1,
        )
        .unwrap();
        let security =
            tessera_security::Security::client(dir.path(), Some("admin")).expect("client");
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            silent.local_addr().unwrap()
        ))
        .unwrap()
        .connect_timeout(std::time::Duration::from_millis(200));
        let channel = security.channel(endpoint);
        let mut client = tessera_proto::routerpb::router_client::RouterClient::new(channel);
        let status = client
            .get(tessera_proto::routerpb::GetRequest::default())
            .await
            .unwrap_err();
        assert_eq!(sent(&status), Sent::No, "{status:?}");
    }
}
