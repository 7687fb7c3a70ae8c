//! Failure messages: what the directory and every running store say about
//! a key's region, for a test that found the key wrong.

use crate::E2eCluster;

impl E2eCluster {
    /// What the directory and every store say about the region holding
    /// `key` (encoded): for failure messages.
    pub async fn diagnose_key(&self, key: &[u8]) -> String {
        use tessera_proto::adminpb::store_admin_client::StoreAdminClient;
        use tessera_proto::adminpb::RegionInfoRequest;
        use tessera_proto::directorypb::GetRegionRequest;
        let conn = self.directory_conn();
        let info = conn
            .call("get region", |mut c| {
                let req = GetRegionRequest { key: key.to_vec() };
                async move { c.get_region(req).await }
            })
            .await;
        let mut out = format!("directory: {info:?}\n");
        let Ok(info) = info else { return out };
        let Some(region) = info.region.and_then(|r| r.region) else {
            return out;
        };
        for s in self.stores.values() {
            if !s.proc.is_running() {
                continue;
            }
            let Ok(endpoint) =
                tonic::transport::Endpoint::from_shared(format!("http://{}", s.addr))
            else {
                continue;
            };
            let Ok(channel) = self.node_security().connect(endpoint).await else {
                continue;
            };
            let mut c = StoreAdminClient::new(channel);
            let r = c
                .region_info(RegionInfoRequest {
                    region_id: region.id,
                })
                .await;
            out.push_str(&format!(
                "{}: {:?}\n",
                s.proc.name,
                r.map(|r| r.into_inner())
            ));
        }
        out
    }
}
