#include "server/query/page_token.h"

#include <memory>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace fleetpmu::server {

absl::StatusOr<int32_t> EffectivePageSize(int32_t requested) {
  if (requested < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size ", requested, " is negative (0 = default 100, at most 1000)"));
  }
  if (requested == 0) return kDefaultPageSize;
  return std::min(requested, kMaxPageSize);
}

uint64_t RequestFingerprint(const google::protobuf::Message& request) {
  std::unique_ptr<google::protobuf::Message> copy(request.New());
  copy->CopyFrom(request);
  const google::protobuf::Descriptor* descriptor = copy->GetDescriptor();
  const google::protobuf::Reflection* reflection = copy->GetReflection();
  for (const char* name : {"page_size", "page_token"}) {
    if (const auto* field = descriptor->FindFieldByName(name))
      reflection->ClearField(copy.get(), field);
  }
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    copy->SerializeToCodedStream(&coded);
  }
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

std::string EncodePageToken(const PageCursor& cursor, uint64_t fingerprint) {
  return absl::WebSafeBase64Escape(absl::StrCat("v1.", cursor.offset, ".", cursor.start_unix_ns,
                                                ".", cursor.end_unix_ns, ".", fingerprint));
}

absl::StatusOr<PageCursor> DecodePageToken(absl::string_view token, uint64_t fingerprint) {
  const absl::Status invalid = absl::InvalidArgumentError(
      "page_token is not one this server issued for these request parameters; start again "
      "without page_token");
  std::string text;
  if (!absl::WebSafeBase64Unescape(token, &text)) return invalid;
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  PageCursor cursor;
  uint64_t bound = 0;
  if (parts.size() != 5 || parts[0] != "v1" || !absl::SimpleAtoi(parts[1], &cursor.offset) ||
      !absl::SimpleAtoi(parts[2], &cursor.start_unix_ns) ||
      !absl::SimpleAtoi(parts[3], &cursor.end_unix_ns) || !absl::SimpleAtoi(parts[4], &bound) ||
      bound != fingerprint || cursor.offset < 0) {
    return invalid;
  }
  return cursor;
}

}  // namespace fleetpmu::server
