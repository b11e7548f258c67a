# Subset of the Cloudflare Tunnel wire schema that tunnelgate speaks (spec: shared/spec/tunnel.md §4–§6).
#
# Written from the layouts in the spec. Only interface ids, method ordinals, field ordinals/types/order,
# enum ordinals and union tags go on the wire; struct ids are ours. Regenerate the Rust code with
# `crates/tunnel/schema/regen.sh` (needs the `capnp` compiler, Debian package `capnproto`).
@0xb8d3a949251e12ce;

# ---- registration (control stream, tunnel.md §4) ----

struct TunnelAuth {
  accountTag @0 :Text;
  tunnelSecret @1 :Data;
}

struct ClientInfo {
  clientId @0 :Data;
  features @1 :List(Text);
  version @2 :Text;
  arch @3 :Text;
}

struct ConnectionOptions {
  client @0 :ClientInfo;
  originLocalIp @1 :Data;
  replaceExisting @2 :Bool;
  compressionQuality @3 :UInt8;
  numPreviousAttempts @4 :UInt8;
}

struct ConnectionResponse {
  union {
    error @0 :ConnectionError;
    connectionDetails @1 :ConnectionDetails;
  }
}

struct ConnectionError {
  cause @0 :Text;
  retryAfter @1 :Int64;   # nanoseconds
  shouldRetry @2 :Bool;
}

struct ConnectionDetails {
  uuid @0 :Data;
  locationName @1 :Text;
  tunnelIsRemotelyManaged @2 :Bool;
}

interface RegistrationServer @0xf71695ec7fe85497 {
  registerConnection @0 (auth :TunnelAuth, tunnelId :Data, connIndex :UInt8, options :ConnectionOptions)
      -> (result :ConnectionResponse);
  unregisterConnection @1 () -> ();
  updateLocalConfiguration @2 (config :Data) -> ();
}

# ---- edge-initiated RPC streams (tunnel.md §6) ----

struct UpdateConfigurationResponse {
  latestAppliedVersion @0 :Int32;
  err @1 :Text;
}

struct RegisterUdpSessionResponse {
  err @0 :Text;
  spans @1 :Data;
}

interface SessionManager @0x839445a59fb01686 {
  registerUdpSession @0 (sessionId :Data, dstIp :Data, dstPort :UInt16, closeAfterIdleHint :Int64,
      traceContext :Text) -> (result :RegisterUdpSessionResponse);
  unregisterUdpSession @1 (sessionId :Data, message :Text) -> ();
}

interface ConfigurationManager @0xb48edfbdaa25db04 {
  updateConfiguration @0 (version :Int32, config :Data) -> (result :UpdateConfigurationResponse);
}

interface CloudflaredServer @0xf548cef9dea2a4a1 extends(SessionManager, ConfigurationManager) {}

# ---- data streams (tunnel.md §5) ----

enum ConnectionType {
  http @0;
  websocket @1;
  tcp @2;
}

struct Metadata {
  key @0 :Text;
  val @1 :Text;
}

struct ConnectRequest {
  dest @0 :Text;
  type @1 :ConnectionType;
  metadata @2 :List(Metadata);
}

struct ConnectResponse {
  error @0 :Text;
  metadata @1 :List(Metadata);
}
