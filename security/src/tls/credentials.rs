//! What a client adds to every request: a user's bearer token, if it
//! authenticates with one (`authorization: Bearer tessera-…`). Every gRPC
//! client of every tessera process dials through [`Channel`]; for nodes,
//! routers and certificate users it adds nothing.

use std::sync::Arc;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;

use super::guard::{AUTHORIZATION, BEARER};
use crate::{Error, Result};

/// The channel type of every tessera gRPC client.
pub type Channel = InterceptedService<tonic::transport::Channel, Credentials>;

/// The token a client's requests carry, if any.
#[derive(Clone, Default)]
pub struct Credentials {
    header: Option<Arc<MetadataValue<Ascii>>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.write_str(if self.header.is_some() {
            "Credentials(bearer token)"
        } else {
            "Credentials(none)"
        })
    }
}

impl Credentials {
    pub fn none() -> Self {
        Credentials::default()
    }

    pub fn bearer(token: &str) -> Result<Self> {
        let mut value: MetadataValue<Ascii> = format!("{BEARER}{token}")
            .parse()
            .map_err(|_| Error::InvalidArgument("the token is not printable ASCII".into()))?;
        value.set_sensitive(true);
        Ok(Credentials {
            header: Some(Arc::new(value)),
        })
    }

    /// `channel` with these credentials on every request.
    pub fn wrap(&self, channel: tonic::transport::Channel) -> Channel {
        InterceptedService::new(channel, self.clone())
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.header {
            req.metadata_mut()
                .insert(AUTHORIZATION, MetadataValue::clone(value));
        }
        Ok(req)
    }
}
