//! The registration RPC (tunnel.md §4) and the edge-initiated `CloudflaredServer` calls (§6) as plain Rust
//! values, with their capnp encoding for both sides.

use std::net::IpAddr;
use std::time::Duration;

use capnp::any_pointer;
use uuid::Uuid;

use crate::rpc::{CONFIGURATION_MANAGER_ID, REGISTRATION_SERVER_ID, RpcClient, RpcError, SESSION_MANAGER_ID};
use crate::tunnel_capnp::{configuration_manager, connection_response, registration_server, session_manager};
use tokio::io::{AsyncRead, AsyncWrite};

/// Features we announce (tunnel.md §4.3). Never `postquantum`, never the datagram v3 variants.
pub const FEATURES: [&str; 4] = [
    "serialized_headers",
    "support_quic_eof",
    "allow_remote_config",
    "support_datagram_v2",
];

/// Method ordinals of `RegistrationServer`.
pub const REGISTER_CONNECTION: u16 = 0;
pub const UNREGISTER_CONNECTION: u16 = 1;
pub const UPDATE_LOCAL_CONFIGURATION: u16 = 2;

/// Everything `registerConnection` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    pub account_tag: String,
    pub tunnel_secret: Vec<u8>,
    pub tunnel_id: Uuid,
    pub conn_index: u8,
    pub client_id: Uuid,
    pub features: Vec<String>,
    pub version: String,
    pub arch: String,
    pub origin_local_ip: Option<IpAddr>,
    pub replace_existing: bool,
    pub num_previous_attempts: u8,
}

/// A successful registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionDetails {
    pub uuid: Uuid,
    pub location: String,
    pub remotely_managed: bool,
}

/// A refused registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionError {
    pub cause: String,
    pub retry_after: Duration,
    pub should_retry: bool,
}

/// The `ConnectionResponse` union.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionResponse {
    Details(ConnectionDetails),
    Error(ConnectionError),
}

/// The Go arch string cloudflared sends (`linux_amd64`).
pub fn go_arch() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("{}_{arch}", std::env::consts::OS)
}

fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn uuid_from(bytes: &[u8]) -> capnp::Result<Uuid> {
    Uuid::from_slice(bytes)
        .map_err(|_| capnp::Error::failed(format!("expected 16 UUID bytes, got {}", bytes.len())))
}

impl RegisterRequest {
    /// Writes `registerConnection` params.
    pub fn write(&self, content: any_pointer::Builder<'_>) -> capnp::Result<()> {
        let mut p = content.init_as::<registration_server::register_connection_params::Builder>();
        {
            let mut auth = p.reborrow().init_auth();
            auth.set_account_tag(self.account_tag.as_str());
            auth.set_tunnel_secret(&self.tunnel_secret);
        }
        p.set_tunnel_id(self.tunnel_id.as_bytes());
        p.set_conn_index(self.conn_index);
        let mut opts = p.init_options();
        opts.set_replace_existing(self.replace_existing);
        opts.set_compression_quality(0);
        opts.set_num_previous_attempts(self.num_previous_attempts);
        if let Some(ip) = self.origin_local_ip {
            opts.set_origin_local_ip(&ip16(ip));
        }
        let mut client = opts.init_client();
        client.set_client_id(self.client_id.as_bytes());
        client.set_version(self.version.as_str());
        client.set_arch(self.arch.as_str());
        let mut features = client.init_features(self.features.len() as u32);
        for (i, f) in self.features.iter().enumerate() {
            features.set(i as u32, f.as_str());
        }
        Ok(())
    }

    /// Reads `registerConnection` params (edge side).
    pub fn read(content: any_pointer::Reader<'_>) -> capnp::Result<Self> {
        let p = content.get_as::<registration_server::register_connection_params::Reader>()?;
        let auth = p.get_auth()?;
        let opts = p.get_options()?;
        let client = opts.get_client()?;
        let ip = opts.get_origin_local_ip()?;
        let origin_local_ip = <[u8; 16]>::try_from(ip).ok().map(|b| {
            let v6 = std::net::Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        });
        let mut features = Vec::new();
        for f in client.get_features()?.iter() {
            features.push(f?.to_string()?);
        }
        Ok(Self {
            account_tag: auth.get_account_tag()?.to_string()?,
            tunnel_secret: auth.get_tunnel_secret()?.to_vec(),
            tunnel_id: uuid_from(p.get_tunnel_id()?)?,
            conn_index: p.get_conn_index(),
            client_id: uuid_from(client.get_client_id()?)?,
            features,
            version: client.get_version()?.to_string()?,
            arch: client.get_arch()?.to_string()?,
            origin_local_ip,
            replace_existing: opts.get_replace_existing(),
            num_previous_attempts: opts.get_num_previous_attempts(),
        })
    }
}

impl ConnectionResponse {
    /// Writes `registerConnection` results.
    pub fn write(&self, content: any_pointer::Builder<'_>) -> capnp::Result<()> {
        let r = content.init_as::<registration_server::register_connection_results::Builder>();
        let r = r.init_result();
        match self {
            Self::Details(d) => {
                let mut d2 = r.init_connection_details();
                d2.set_uuid(d.uuid.as_bytes());
                d2.set_location_name(d.location.as_str());
                d2.set_tunnel_is_remotely_managed(d.remotely_managed);
            }
            Self::Error(e) => {
                let mut e2 = r.init_error();
                e2.set_cause(e.cause.as_str());
                e2.set_retry_after(i64::try_from(e.retry_after.as_nanos()).unwrap_or(i64::MAX));
                e2.set_should_retry(e.should_retry);
            }
        }
        Ok(())
    }

    /// Reads `registerConnection` results.
    pub fn read(content: any_pointer::Reader<'_>) -> capnp::Result<Self> {
        let r = content
            .get_as::<registration_server::register_connection_results::Reader>()?
            .get_result()?;
        Ok(match r.which()? {
            connection_response::ConnectionDetails(d) => {
                let d = d?;
                Self::Details(ConnectionDetails {
                    uuid: uuid_from(d.get_uuid()?)?,
                    location: d.get_location_name()?.to_string()?,
                    remotely_managed: d.get_tunnel_is_remotely_managed(),
                })
            }
            connection_response::Error(e) => {
                let e = e?;
                Self::Error(ConnectionError {
                    cause: e.get_cause()?.to_string()?,
                    retry_after: Duration::from_nanos(u64::try_from(e.get_retry_after()).unwrap_or(0)),
                    should_retry: e.get_should_retry(),
                })
            }
        })
    }
}

/// A call the edge's `RegistrationServer` receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationCall {
    Register(Box<RegisterRequest>),
    Unregister,
    UpdateLocalConfiguration(Vec<u8>),
    Unknown { interface_id: u64, method_id: u16 },
}

impl RegistrationCall {
    /// Decodes a call on the edge side.
    pub fn decode(interface_id: u64, method_id: u16, params: any_pointer::Reader<'_>) -> capnp::Result<Self> {
        if interface_id != REGISTRATION_SERVER_ID {
            return Ok(Self::Unknown {
                interface_id,
                method_id,
            });
        }
        Ok(match method_id {
            REGISTER_CONNECTION => Self::Register(Box::new(RegisterRequest::read(params)?)),
            UNREGISTER_CONNECTION => Self::Unregister,
            UPDATE_LOCAL_CONFIGURATION => {
                let p = params.get_as::<registration_server::update_local_configuration_params::Reader>()?;
                Self::UpdateLocalConfiguration(p.get_config()?.to_vec())
            }
            _ => Self::Unknown {
                interface_id,
                method_id,
            },
        })
    }
}

/// A call the connector's `CloudflaredServer` receives on an edge-initiated RPC stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudflaredCall {
    UpdateConfiguration { version: i32, config: Vec<u8> },
    RegisterUdpSession,
    UnregisterUdpSession,
    Unknown { interface_id: u64, method_id: u16 },
}

impl CloudflaredCall {
    pub fn decode(interface_id: u64, method_id: u16, params: any_pointer::Reader<'_>) -> capnp::Result<Self> {
        Ok(match (interface_id, method_id) {
            (CONFIGURATION_MANAGER_ID, 0) => {
                let p = params.get_as::<configuration_manager::update_configuration_params::Reader>()?;
                Self::UpdateConfiguration {
                    version: p.get_version(),
                    config: p.get_config()?.to_vec(),
                }
            }
            (SESSION_MANAGER_ID, 0) => Self::RegisterUdpSession,
            (SESSION_MANAGER_ID, 1) => Self::UnregisterUdpSession,
            _ => Self::Unknown {
                interface_id,
                method_id,
            },
        })
    }
}

/// Error text we return to `registerUdpSession`.
pub const UDP_UNSUPPORTED: &str = "UDP sessions are not supported";

/// Writes `updateConfiguration` results.
pub fn write_update_configuration_result(
    content: any_pointer::Builder<'_>,
    latest: i32,
) -> capnp::Result<()> {
    let r = content.init_as::<configuration_manager::update_configuration_results::Builder>();
    r.init_result().set_latest_applied_version(latest);
    Ok(())
}

/// Writes `registerUdpSession` results with an error.
pub fn write_register_udp_session_error(content: any_pointer::Builder<'_>) -> capnp::Result<()> {
    let r = content.init_as::<session_manager::register_udp_session_results::Builder>();
    r.init_result().set_err(UDP_UNSUPPORTED);
    Ok(())
}

/// The edge's side of an edge-initiated RPC stream: what the connector answered to `updateConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateConfigurationAnswer {
    pub latest_applied_version: i32,
    pub err: String,
}

/// Edge side: calls `updateConfiguration` on a connector.
pub async fn call_update_configuration<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut RpcClient<S>,
    version: i32,
    config: &[u8],
) -> Result<UpdateConfigurationAnswer, RpcError> {
    client
        .call(
            CONFIGURATION_MANAGER_ID,
            0,
            |c| {
                let mut p = c.init_as::<configuration_manager::update_configuration_params::Builder>();
                p.set_version(version);
                p.set_config(config);
                Ok(())
            },
            |r| {
                let r = r
                    .get_as::<configuration_manager::update_configuration_results::Reader>()?
                    .get_result()?;
                Ok(UpdateConfigurationAnswer {
                    latest_applied_version: r.get_latest_applied_version(),
                    err: if r.has_err() {
                        r.get_err()?.to_string()?
                    } else {
                        String::new()
                    },
                })
            },
        )
        .await
}

/// Edge side: calls `registerUdpSession` and returns the `err` text of the answer.
pub async fn call_register_udp_session<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut RpcClient<S>,
) -> Result<String, RpcError> {
    client
        .call(
            SESSION_MANAGER_ID,
            0,
            |c| {
                let mut p = c.init_as::<session_manager::register_udp_session_params::Builder>();
                p.set_session_id(Uuid::new_v4().as_bytes());
                p.set_dst_ip(&[127, 0, 0, 1]);
                p.set_dst_port(53);
                p.set_close_after_idle_hint(5_000_000_000);
                Ok(())
            },
            |r| {
                let r = r
                    .get_as::<session_manager::register_udp_session_results::Reader>()?
                    .get_result()?;
                Ok(r.get_err()?.to_string()?)
            },
        )
        .await
}

/// The connector's control-stream session with the edge's `RegistrationServer`.
pub struct ControlSession<S> {
    client: RpcClient<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ControlSession<S> {
    /// Bootstraps and calls `registerConnection`.
    pub async fn register(io: S, req: &RegisterRequest) -> Result<(Self, ConnectionResponse), RpcError> {
        let mut client = RpcClient::bootstrap(io).await?;
        let resp = client
            .call(
                REGISTRATION_SERVER_ID,
                REGISTER_CONNECTION,
                |c| req.write(c),
                ConnectionResponse::read,
            )
            .await?;
        Ok((Self { client }, resp))
    }

    /// `updateLocalConfiguration(config)`; the result carries nothing.
    pub async fn update_local_configuration(&mut self, config: &[u8]) -> Result<(), RpcError> {
        self.client
            .call(
                REGISTRATION_SERVER_ID,
                UPDATE_LOCAL_CONFIGURATION,
                |c| {
                    c.init_as::<registration_server::update_local_configuration_params::Builder>()
                        .set_config(config);
                    Ok(())
                },
                |_| Ok(()),
            )
            .await
    }

    /// `unregisterConnection()`.
    pub async fn unregister(&mut self) -> Result<(), RpcError> {
        self.client
            .call(
                REGISTRATION_SERVER_ID,
                UNREGISTER_CONNECTION,
                |c| {
                    c.init_as::<registration_server::unregister_connection_params::Builder>();
                    Ok(())
                },
                |_| Ok(()),
            )
            .await
    }

    /// Resolves when the edge closes the control stream. Cancel-safe.
    pub async fn closed(&mut self) -> RpcError {
        self.client.closed().await
    }

    /// Releases the capability and closes our side of the stream.
    pub async fn close(self) {
        let _ = self.client.release().await;
    }
}
