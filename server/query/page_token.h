// Paging of the Query API (docs/proto.md "The Query API"): page_size 0 means 100, values above
// 1000 are clamped to 1000, negative ones are refused; page tokens are opaque to callers.
//
// A token carries the offset of the next page and the time window the first page resolved
// (so "the last hour" does not slide between pages), bound to the request it came from by a
// fingerprint of the request without its paging fields: a token replayed with other
// parameters, or corrupted, is InvalidArgument. Pure functions; tokens do not survive a change
// of the request, and need nothing from the server's state.
#ifndef FLEETPMU_SERVER_QUERY_PAGE_TOKEN_H_
#define FLEETPMU_SERVER_QUERY_PAGE_TOKEN_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace fleetpmu::server {

inline constexpr int32_t kDefaultPageSize = 100;
inline constexpr int32_t kMaxPageSize = 1000;

struct PageCursor {
  int64_t offset = 0;
  int64_t start_unix_ns = 0;
  int64_t end_unix_ns = 0;
};

absl::StatusOr<int32_t> EffectivePageSize(int32_t requested);

// FNV-1a 64 of `request` serialized after clearing the fields named page_size and
// page_token. Stable across processes.
uint64_t RequestFingerprint(const google::protobuf::Message& request);

std::string EncodePageToken(const PageCursor& cursor, uint64_t fingerprint);
absl::StatusOr<PageCursor> DecodePageToken(absl::string_view token, uint64_t fingerprint);

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_QUERY_PAGE_TOKEN_H_
