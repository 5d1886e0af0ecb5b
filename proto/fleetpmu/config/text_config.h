// Reading configuration files written in protobuf text format.
//
// LoadTextConfig reads one file and parses it into a message of the caller's type. It never
// throws and never logs; on failure the returned status says what to fix without reading code:
//
//   file unreadable    NotFound / PermissionDenied / InvalidArgument:
//                      "cannot read config <path>: <reason>"
//   syntax or schema   InvalidArgument:
//                      "<path>:<line>:<column>: <parser message>[ (field <field path>)]"
//
// Line and column are 1-based (the protobuf parser's are 0-based) and point at the culprit: the
// parser reports an unknown field or enum value at the token after it, which may be on the next
// line, so we move the position back to the token the message quotes. The parser's own message
// names an unknown field ('Message type "fleetpmu.v1.ShimConfig" has no field named "bakend".')
// or an unknown enum value ('Unknown enumeration value of "X" for field "backend".'); for value
// errors that do not name the field ('Expected integer, got: "six"'), the dotted path of the
// field being parsed is appended, e.g. " (field sim.pcpu_groups.n_counters)". Only the first
// error is reported: the protobuf text parser stops there.
//
// Files larger than kMaxConfigBytes are refused: a config is small, a huge one is a mistake
// (a log or a binary passed by accident). Unknown fields are errors, not warnings, so that a
// typo never silently falls back to a default.
//
// Thread-safe: no global state.
#ifndef FLEETPMU_PROTO_FLEETPMU_CONFIG_TEXT_CONFIG_H_
#define FLEETPMU_PROTO_FLEETPMU_CONFIG_TEXT_CONFIG_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message.h"

namespace fleetpmu::config {

inline constexpr std::size_t kMaxConfigBytes = 1 << 20;

// Parses `text` into `*config` (cleared first). `source_name` is used as the file name in error
// messages. On error `*config` holds whatever was parsed before the error.
absl::Status ParseTextConfig(std::string_view text, std::string_view source_name,
                             google::protobuf::Message* config);

// Reads the file at `path` and parses it into `*config` (cleared first).
absl::Status LoadTextConfig(const std::string& path, google::protobuf::Message* config);

// Typed convenience: LoadTextConfig<fleetpmu::v1::ShimConfig>("shim.textproto").
template <typename ConfigT>
absl::StatusOr<ConfigT> LoadTextConfig(const std::string& path) {
  ConfigT config;
  absl::Status status = LoadTextConfig(path, &config);
  if (!status.ok()) return status;
  return config;
}

}  // namespace fleetpmu::config

#endif  // FLEETPMU_PROTO_FLEETPMU_CONFIG_TEXT_CONFIG_H_
