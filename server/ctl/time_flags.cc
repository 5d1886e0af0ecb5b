#include "server/ctl/time_flags.h"

#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fleetpmu::ctl {

absl::StatusOr<absl::Duration> ParseSince(absl::string_view text) {
  absl::Duration duration;
  int64_t days = 0;
  if (!text.empty() && text.back() == 'd' &&
      absl::SimpleAtoi(text.substr(0, text.size() - 1), &days) && days > 0 && days <= 36500) {
    duration = absl::Hours(24 * days);
  } else if (!absl::ParseDuration(std::string(text), &duration)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--since \"", text, "\" is not a duration (examples: 90s, 15m, 1h30m, 2d)"));
  }
  if (duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("--since \"", text, "\" must be > 0"));
  }
  return duration;
}

absl::StatusOr<int64_t> ParseAt(absl::string_view text, absl::Time now) {
  if (text == "now") return absl::ToUnixNanos(now);
  if (!text.empty() && text.front() == '@') {
    double seconds = 0;
    if (absl::SimpleAtod(text.substr(1), &seconds) && seconds > 0) {
      return static_cast<int64_t>(seconds * 1e9);
    }
  } else {
    absl::Time time;
    std::string error;
    if (absl::ParseTime(absl::RFC3339_full, std::string(text), &time, &error)) {
      return absl::ToUnixNanos(time);
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--at \"", text, "\" is not a time (examples: 2024-05-01T12:00:00Z, @1714564800, now)"));
}

}  // namespace fleetpmu::ctl
