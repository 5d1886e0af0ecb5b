#include "server/security/tokens.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/identity.h"

namespace fleetpmu::server {
namespace {

constexpr absl::string_view kDigestPrefix = "sha256:";
constexpr absl::string_view kTenantPrefix = "tenant:";
constexpr size_t kMaxTokensFileBytes = 1 << 20;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<Sha256Digest> ParseDigest(absl::string_view hex) {
  if (hex.size() != 64) return std::nullopt;
  Sha256Digest digest;
  for (size_t i = 0; i < digest.size(); ++i) {
    const int high = HexValue(hex[2 * i]);
    const int low = HexValue(hex[2 * i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    digest[i] = static_cast<uint8_t>(high << 4 | low);
  }
  return digest;
}

}  // namespace

Sha256Digest Sha256(absl::string_view data) {
  Sha256Digest digest{};
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr);
  return digest;
}

std::string Sha256Hex(absl::string_view data) {
  static constexpr char kHex[] = "0123456789abcdef";
  const Sha256Digest digest = Sha256(data);
  std::string hex;
  hex.reserve(64);
  for (uint8_t byte : digest) {
    hex.push_back(kHex[byte >> 4]);
    hex.push_back(kHex[byte & 0xf]);
  }
  return hex;
}

absl::StatusOr<TokenStore> TokenStore::Parse(absl::string_view text, absl::string_view source) {
  TokenStore store;
  std::vector<std::string> problems;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const std::string where = absl::StrCat(source, ":", number, ": ");
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (fields.size() != 2) {
      problems.push_back(absl::StrCat(where,
                                      "want \"sha256:<64 hex digits> <admin|tenant:ID>\", got ",
                                      fields.size(), " fields"));
      continue;
    }
    if (!absl::StartsWith(fields[0], kDigestPrefix)) {
      // Never echo the field: it may be a plaintext token.
      problems.push_back(absl::StrCat(
          where,
          "the first field must be \"sha256:\" and the token's SHA-256 in hex; the file "
          "stores digests, not tokens (make one with: fleetpmuctl hash-token)"));
      continue;
    }
    std::optional<Sha256Digest> digest = ParseDigest(fields[0].substr(kDigestPrefix.size()));
    if (!digest.has_value()) {
      problems.push_back(absl::StrCat(where, "the digest is not 64 hex digits"));
      continue;
    }
    Principal principal;
    if (fields[1] == "admin") {
      principal = Principal::Admin();
    } else if (absl::StartsWith(fields[1], kTenantPrefix) &&
               IsValidIdentity(fields[1].substr(kTenantPrefix.size()))) {
      principal = Principal::Tenant(std::string(fields[1].substr(kTenantPrefix.size())));
    } else {
      problems.push_back(absl::StrCat(where, "role \"", fields[1],
                                      "\" is neither \"admin\" nor \"tenant:<tenant_id>\" with "
                                      "an id of 1..128 bytes of [A-Za-z0-9._-]"));
      continue;
    }
    bool duplicate = false;
    for (const Entry& entry : store.entries_) duplicate = duplicate || entry.digest == *digest;
    if (duplicate) {
      problems.push_back(absl::StrCat(where, "the same digest appears on an earlier line"));
      continue;
    }
    store.entries_.push_back(Entry{*digest, std::move(principal)});
  }
  if (!problems.empty()) return absl::InvalidArgumentError(absl::StrJoin(problems, "\n"));
  return store;
}

absl::StatusOr<TokenStore> TokenStore::LoadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(
        absl::StrCat("tokens_file ", path, ": cannot open: ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << file.rdbuf();
  if (text.str().size() > kMaxTokensFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat("tokens_file ", path, ": larger than 1 MiB"));
  }
  return Parse(text.str(), path);
}

std::optional<Principal> TokenStore::Authenticate(absl::string_view token) const {
  const Sha256Digest presented = Sha256(token);
  const Entry* match = nullptr;
  for (const Entry& entry : entries_) {
    // Every entry is compared, whatever matched before.
    if (CRYPTO_memcmp(entry.digest.data(), presented.data(), presented.size()) == 0) {
      match = &entry;
    }
  }
  if (match == nullptr) return std::nullopt;
  return match->principal;
}

}  // namespace fleetpmu::server
