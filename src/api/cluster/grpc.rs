//! ClusterService (cluster.proto) over gRPC; the admin credential is checked by `admin_call`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::flow;
use crate::api::app::App;
use crate::api::error::cluster_status;
use crate::api::grpc_util::{admin_call, reply};
use crate::proto::cluster_service_server::ClusterService;
use crate::proto::{
    AddLearnerRequest, ClusterStatus, GetClusterStatusRequest, InitClusterRequest, PromoteLearnerRequest,
    RemoveNodeRequest, TransferLeaderRequest,
};

pub struct ClusterGrpc {
    pub app: Arc<App>,
}

type Answer = Result<Response<ClusterStatus>, Status>;

#[tonic::async_trait]
impl ClusterService for ClusterGrpc {
    async fn init_cluster(&self, request: Request<InitClusterRequest>) -> Answer {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        Ok(reply(flow::init(&self.app).await.map_err(cluster_status)?, &transaction_id))
    }

    async fn get_cluster_status(&self, request: Request<GetClusterStatusRequest>) -> Answer {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        Ok(reply(flow::status(&self.app).await.map_err(cluster_status)?, &transaction_id))
    }

    async fn add_learner(&self, request: Request<AddLearnerRequest>) -> Answer {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        Ok(reply(flow::add_learner(&self.app, request.into_inner()).await.map_err(cluster_status)?, &transaction_id))
    }

    async fn promote_learner(&self, request: Request<PromoteLearnerRequest>) -> Answer {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let node_id = request.into_inner().node_id;
        Ok(reply(flow::promote(&self.app, node_id).await.map_err(cluster_status)?, &transaction_id))
    }

    async fn remove_node(&self, request: Request<RemoveNodeRequest>) -> Answer {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let node_id = request.into_inner().node_id;
        Ok(reply(flow::remove(&self.app, node_id).await.map_err(cluster_status)?, &transaction_id))
    }

    async fn transfer_leader(&self, request: Request<TransferLeaderRequest>) -> Answer {
        let transaction_id = admin_call(&self.app, request.metadata())?;
        let node_id = request.into_inner().node_id;
        Ok(reply(flow::transfer_leader(&self.app, node_id).await.map_err(cluster_status)?, &transaction_id))
    }
}
