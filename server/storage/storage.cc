#include "server/storage/storage.h"

#include <optional>
#include <utility>

#include "absl/synchronization/notification.h"

namespace fleetpmu::server {
namespace {

// Submits through `submit` and waits for `done`.
template <typename Result, typename SubmitFn>
absl::StatusOr<Result> SubmitAndWait(SubmitFn submit) {
  absl::Notification finished;
  std::optional<absl::StatusOr<Result>> result;
  const absl::Status submitted = submit([&](absl::StatusOr<Result> value) {
    result = std::move(value);
    finished.Notify();
  });
  if (!submitted.ok()) return submitted;
  finished.WaitForNotification();
  return std::move(*result);
}

}  // namespace

absl::StatusOr<RegistrationResult> Storage::Register(AgentRegistration registration) {
  return SubmitAndWait<RegistrationResult>([&](RegistrationDone done) {
    return SubmitRegistration(std::move(registration), nullptr, std::move(done));
  });
}

absl::StatusOr<CommitResult> Storage::Commit(IngestCommit commit) {
  return SubmitAndWait<CommitResult>(
      [&](CommitDone done) { return SubmitCommit(std::move(commit), nullptr, std::move(done)); });
}

absl::StatusOr<RetentionResult> Storage::RunRetention(int64_t now_unix_ns) {
  return SubmitAndWait<RetentionResult>(
      [&](RetentionDone done) { return SubmitRetention(now_unix_ns, std::move(done)); });
}

}  // namespace fleetpmu::server
