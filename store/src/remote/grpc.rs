//! The REAPI cache subset over gRPC (not written yet).
use super::Settings;

pub struct GrpcCache;

impl GrpcCache {
    pub fn new(
        _settings: &Settings,
        _rt: tokio::runtime::Handle,
    ) -> Result<super::http::HttpCache, String> {
        Err("grpc:// remotes are not supported yet".into())
    }
}
