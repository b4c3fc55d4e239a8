//! The typed gRPC method table: one constant per rpc, generated from the schema's services.
//!
//! Clients call through a [`Method`], which ties a path to its request and response types;
//! servers dispatch on [`MethodDesc::path`] and look methods up with [`find`].

use std::fmt;
use std::marker::PhantomData;

/// How messages flow in one rpc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Streams in both directions (BatchCommands, Tso, QueryRegion).
    BidiStreaming,
}

/// Untyped description of one rpc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MethodDesc {
    /// The HTTP/2 `:path`, `/package.Service/Method`.
    pub path: &'static str,
    /// The fully qualified service name, `package.Service`.
    pub service: &'static str,
    /// The rpc name as the schema spells it.
    pub name: &'static str,
    /// Streaming shape.
    pub kind: MethodKind,
    /// Fully qualified protobuf name of the request message.
    pub request: &'static str,
    /// Fully qualified protobuf name of the response message.
    pub response: &'static str,
}

/// One rpc with its request type `Req` and response type `Resp`.
pub struct Method<Req, Resp> {
    /// The untyped description.
    pub desc: MethodDesc,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Method<Req, Resp> {
    /// Wraps a description; used by the generated table.
    pub const fn new(desc: MethodDesc) -> Self {
        Self {
            desc,
            _types: PhantomData,
        }
    }

    /// The HTTP/2 `:path` of the rpc.
    pub const fn path(&self) -> &'static str {
        self.desc.path
    }

    /// The streaming shape of the rpc.
    pub const fn kind(&self) -> MethodKind {
        self.desc.kind
    }
}

impl<Req, Resp> Clone for Method<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp> Copy for Method<Req, Resp> {}

impl<Req, Resp> fmt::Debug for Method<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Method").field(&self.desc.path).finish()
    }
}

/// Looks up a method by its `:path`; returns `None` for a path no service in the schema has.
pub fn find(path: &str) -> Option<&'static MethodDesc> {
    crate::SERVICES
        .iter()
        .flat_map(|methods| methods.iter())
        .find(|desc| desc.path == path)
}

/// Every method of every service in the schema.
pub fn all() -> impl Iterator<Item = &'static MethodDesc> {
    crate::SERVICES.iter().flat_map(|methods| methods.iter())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kvrpcpb, pdpb, tikvpb};

    #[test]
    fn typed_constants_carry_exact_paths() {
        let get: Method<kvrpcpb::GetRequest, kvrpcpb::GetResponse> = tikvpb::tikv::KV_GET;
        assert_eq!(get.path(), "/tikvpb.Tikv/KvGet");
        assert_eq!(get.kind(), MethodKind::Unary);
        assert_eq!(
            tikvpb::tikv::KV_PESSIMISTIC_ROLLBACK.path(),
            "/tikvpb.Tikv/KVPessimisticRollback"
        );
        assert_eq!(
            tikvpb::tikv::BATCH_COMMANDS.kind(),
            MethodKind::BidiStreaming
        );
        assert_eq!(pdpb::pd::TSO.kind(), MethodKind::BidiStreaming);
        assert_eq!(pdpb::pd::QUERY_REGION.kind(), MethodKind::BidiStreaming);
        assert_eq!(pdpb::pd::GET_REGION.path(), "/pdpb.PD/GetRegion");
    }

    #[test]
    fn find_by_path() {
        let desc = find("/tikvpb.Tikv/RawGet").map(|d| (d.request, d.response));
        assert_eq!(
            desc,
            Some(("kvrpcpb.RawGetRequest", "kvrpcpb.RawGetResponse"))
        );
        assert!(find("/tikvpb.Tikv/NoSuchMethod").is_none());
        assert!(find("/grpc.health.v1.Health/Check").is_some());
    }

    #[test]
    fn paths_are_unique() {
        let mut paths: Vec<_> = all().map(|d| d.path).collect();
        let total = paths.len();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), total);
    }
}
