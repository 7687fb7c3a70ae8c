//! The Kv responses, each of which carries either a result or a routing
//! error ([`RegionError`]): one trait for every place that reads or sets
//! that error — the store that answers, the routers and test clients that
//! act on it.

use crate::errorpb::RegionError;
use crate::kvpb::*;

/// A Kv response: a result, or the routing error that replaced it.
pub trait KvResponse: Default {
    fn region_error(&self) -> Option<&RegionError>;
    fn set_region_error(&mut self, e: RegionError);

    /// A response carrying only `e`.
    fn refused(e: RegionError) -> Self {
        let mut r = Self::default();
        r.set_region_error(e);
        r
    }
}

macro_rules! kv_responses {
    ($($t:ty),*) => {$(
        impl KvResponse for $t {
            fn region_error(&self) -> Option<&RegionError> {
                self.region_error.as_ref()
            }
            fn set_region_error(&mut self, e: RegionError) {
                self.region_error = Some(e);
            }
        }
    )*};
}

kv_responses!(
    GetResponse,
    PutResponse,
    DeleteResponse,
    BatchGetResponse,
    BatchPutResponse,
    ScanResponse,
    CompareAndSwapResponse,
    DeleteRangeResponse
);
