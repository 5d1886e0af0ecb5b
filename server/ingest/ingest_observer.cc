#include "server/ingest/ingest_observer.h"

namespace fleetpmu::server {

absl::string_view RefusalReasonName(RefusalReason reason) {
  switch (reason) {
    case RefusalReason::kRateLimited:
      return "rate_limited";
    case RefusalReason::kStorageBusy:
      return "storage_busy";
    case RefusalReason::kStorageFailed:
      return "storage_failed";
    case RefusalReason::kAwaitingResend:
      return "awaiting_resend";
  }
  return "unknown";
}

}  // namespace fleetpmu::server
