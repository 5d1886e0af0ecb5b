// The time arguments of fleetpmuctl: --since DUR and --at TIME (docs/server.md "fleetpmuctl").
//
//   DUR:  a Go-style duration as absl::ParseDuration reads it ("90s", "15m", "1h30m"), or a
//         whole number of days ("2d"). Must be > 0.
//   TIME: RFC 3339 ("2024-05-01T12:00:00Z", "2024-05-01T14:00:00+02:00"), "now", or
//         "@<unix seconds>" ("@1714564800", fractions allowed).
// Errors are InvalidArgument naming the flag and the value.
#ifndef FLEETPMU_SERVER_CTL_TIME_FLAGS_H_
#define FLEETPMU_SERVER_CTL_TIME_FLAGS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fleetpmu::ctl {

absl::StatusOr<absl::Duration> ParseSince(absl::string_view text);
absl::StatusOr<int64_t> ParseAt(absl::string_view text, absl::Time now);

}  // namespace fleetpmu::ctl

#endif  // FLEETPMU_SERVER_CTL_TIME_FLAGS_H_
