//! gRPC transport of the institution-user lookup (`InstitutionUserService`): the same flow as
//! REST, with ISR codes in the status message and a google.rpc.ErrorInfo.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::app::App;
use crate::api::error::{LookupError, grpc_status};
use crate::api::grpc_util::{metadata_values, reply, status};
use crate::api::lookup::flow::{self as users, InstitutionUserView, LookupCall};
use crate::api::wire::{self, Institution};
use crate::proto::institution_user_service_server::InstitutionUserService;
use crate::proto::{
    AdditionalInfoEntry, GetInstitutionUserRequest, InstitutionCustomer, InstitutionUser, InstitutionUserStatus,
};

pub struct InstitutionUserGrpc {
    pub app: Arc<App>,
}

fn lookup_status(error: LookupError, transaction_id: &str) -> Status {
    grpc_status(error.info(), Some(transaction_id))
}

fn message(v: InstitutionUserView) -> InstitutionUser {
    InstitutionUser {
        institution_user_id: v.institution_user_id,
        institution_id: v.institution_id,
        institution_user_type: v.institution_user_type.to_owned(),
        user_id: v.user_id,
        user_name: v.user_name,
        failed_login_count: v.failed_login_count,
        failed_password_reset_count: v.failed_password_reset_count,
        additional_info: v.additional_info.into_iter().map(|(key, value)| AdditionalInfoEntry { key, value }).collect(),
        user_status: Some(InstitutionUserStatus { active: v.active, locked: v.locked }),
        first_name: v.first_name.unwrap_or_default(),
        last_name: v.last_name.unwrap_or_default(),
        email: v.email.unwrap_or_default(),
        institution_customers: v
            .institution_customers
            .into_iter()
            .map(|c| InstitutionCustomer {
                institution_customer_id: c.institution_customer_id,
                member_number: c.member_number,
                member_name: c.member_name,
                customer_type: c.customer_type,
                primary: c.primary,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl InstitutionUserService for InstitutionUserGrpc {
    async fn get_institution_user(
        &self,
        request: Request<GetInstitutionUserRequest>,
    ) -> Result<Response<InstitutionUser>, Status> {
        let metadata = request.metadata();
        let transaction_id =
            wire::transaction_id(metadata_values(metadata, "transactionid")).map_err(|code| status(code, None))?;
        let r = request.get_ref();
        let call = LookupCall {
            bearer: wire::bearer_token(metadata_values(metadata, "authorization")).map(str::to_owned),
            institution: Institution::parse(metadata_values(metadata, "institutionid")),
            id: Ok(r.id.clone()),
            user_id_type: Ok((!r.user_id_type.is_empty()).then(|| r.user_id_type.clone())),
        };
        let view = users::lookup(&self.app, &call).map_err(|e| lookup_status(e, &transaction_id))?;
        Ok(reply(message(view), &transaction_id))
    }
}
