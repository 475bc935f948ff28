//! A gRPC connection to a running server, authenticated with the admin credential.

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::RemoteArgs;
use crate::proto::admin_service_client::AdminServiceClient;

/// Adds `authorization: Bearer <admin token>` to every call.
#[derive(Clone)]
pub struct AdminAuth(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for AdminAuth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type AdminClient = AdminServiceClient<InterceptedService<Channel, AdminAuth>>;

pub async fn connect(args: &RemoteArgs) -> Result<(Channel, AdminAuth), String> {
    let path =
        args.admin_token_file.clone().unwrap_or_else(|| args.data_dir.join(crate::server::data_dir::ADMIN_TOKEN_FILE));
    let token = crate::server::data_dir::read_admin_token(&path)
        .map_err(|e| format!("cannot read the admin credential {}: {e}", path.display()))?;
    let value = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| format!("{} does not hold a valid admin credential", path.display()))?;
    let endpoint =
        Channel::from_shared(args.server.clone()).map_err(|e| format!("bad --server {:?}: {e}", args.server))?;
    let endpoint = match tls_config(args)? {
        Some(tls) => endpoint.tls_config(tls).map_err(|e| format!("TLS settings for {}: {e}", args.server))?,
        None => endpoint,
    };
    let channel = endpoint.connect().await.map_err(|e| format!("cannot reach the server at {}: {e}", args.server))?;
    Ok((channel, AdminAuth(value)))
}

/// TLS for an `https://` server: its CA, and the client certificate when one is given.
fn tls_config(args: &RemoteArgs) -> Result<Option<ClientTlsConfig>, String> {
    if !args.server.starts_with("https://") {
        return Ok(None);
    }
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let ca = args.server_ca_file.as_deref().ok_or("an https:// --server needs --server-ca-file")?;
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let (Some(cert), Some(key)) = (&args.client_cert_file, &args.client_key_file) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

pub async fn admin_client(args: &RemoteArgs) -> Result<AdminClient, String> {
    let (channel, auth) = connect(args).await?;
    Ok(AdminServiceClient::with_interceptor(channel, auth)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(16 * 1024 * 1024))
}

/// One line for a failed call.
pub fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
