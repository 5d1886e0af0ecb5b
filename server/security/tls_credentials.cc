#include "server/security/tls_credentials.h"

#include <grpcpp/security/server_credentials.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace fleetpmu::server {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& field, const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::FailedPreconditionError(
        absl::StrCat(field, " ", path, ": cannot read: ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << file.rdbuf();
  if (text.str().find("-----BEGIN ") == std::string::npos) {
    return absl::FailedPreconditionError(absl::StrCat(field, " ", path, ": not a PEM file"));
  }
  return text.str();
}

}  // namespace

absl::StatusOr<ListenerCredentials> MakeListenerCredentials(
    const fleetpmu::v1::ServerConfig& config) {
  ListenerCredentials out;
  if (!config.has_tls()) {
    out.ingest = out.query = out.shared = grpc::InsecureServerCredentials();
    return out;
  }
  const fleetpmu::v1::ServerTlsConfig& tls = config.tls();
  absl::StatusOr<std::string> cert = ReadPem("tls.cert_file", tls.cert_file());
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem("tls.key_file", tls.key_file());
  if (!key.ok()) return key.status();
  std::string roots;
  if (!tls.ca_file().empty()) {
    absl::StatusOr<std::string> ca = ReadPem("tls.ca_file", tls.ca_file());
    if (!ca.ok()) return ca.status();
    roots = *ca;
  }
  const bool require = tls.require_client_cert();
  out.identity_from_certificate = require;

  auto make = [&](grpc_ssl_client_certificate_request_type request) {
    grpc::SslServerCredentialsOptions options(request);
    options.pem_root_certs = roots;
    options.pem_key_cert_pairs.push_back({*key, *cert});
    return grpc::SslServerCredentials(options);
  };
  const auto optional_client_cert = roots.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                  : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
  out.ingest = make(require ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                            : optional_client_cert);
  out.query = make(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  out.shared = make(optional_client_cert);
  return out;
}

}  // namespace fleetpmu::server
