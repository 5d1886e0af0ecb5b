// TokenStore: who may ask the Query API what (DESIGN.md "Security": "an admin token sees all
// tenants, a tenant token only its own").
//
// The tokens file (ServerConfig.tokens_file; format in docs/server.md "Tokens file") stores
// SHA-256 digests, never tokens:
//
//     # operators
//     sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 admin
//     sha256:ecd71870d1963316a97e3ac3408c9835ad8cf0f3c1bc703527c30265534f75ae tenant:tenant-a
//
// one "<digest> <role>" per line; blank lines and lines starting with '#' are ignored.
// `fleetpmuctl hash-token` prints such a line for a token read from stdin.
//
// Contract:
//   * Parse/LoadFile check every line and report each bad one as "<file>:<line>: <why>"
//     (InvalidArgument); a plaintext token where a digest belongs is refused, not hashed.
//   * Authenticate hashes the presented token and compares it with every stored digest in
//     constant time (CRYPTO_memcmp, no early exit), so timing reveals neither which entry
//     matched nor how much of a digest did.
//   * Immutable after construction; thread-safe.
#ifndef FLEETPMU_SERVER_SECURITY_TOKENS_H_
#define FLEETPMU_SERVER_SECURITY_TOKENS_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleetpmu::server {

// Who presented a token.
struct Principal {
  bool admin = false;
  // The tenant of a tenant token; empty for admin.
  std::string tenant_id;

  static Principal Admin() { return Principal{true, ""}; }
  static Principal Tenant(std::string tenant) { return Principal{false, std::move(tenant)}; }
};

using Sha256Digest = std::array<uint8_t, 32>;

Sha256Digest Sha256(absl::string_view data);
// Lower-case hex of Sha256(data), 64 characters.
std::string Sha256Hex(absl::string_view data);

class TokenStore {
 public:
  // `source` names the file in errors.
  static absl::StatusOr<TokenStore> Parse(absl::string_view text, absl::string_view source);
  static absl::StatusOr<TokenStore> LoadFile(const std::string& path);

  // The principal of `token`, or nullopt when no entry matches.
  std::optional<Principal> Authenticate(absl::string_view token) const;

  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    Sha256Digest digest;
    Principal principal;
  };
  std::vector<Entry> entries_;
};

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_SECURITY_TOKENS_H_
