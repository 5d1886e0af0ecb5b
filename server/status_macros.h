// Early return on error for functions returning absl::Status or absl::StatusOr<T>, the two
// macros every abseil-style code base grows:
//   FLEETPMU_RETURN_IF_ERROR(db.Exec("BEGIN"));
//   FLEETPMU_ASSIGN_OR_RETURN(SqliteStatement* statement, db.Prepare(sql));
#ifndef FLEETPMU_SERVER_STATUS_MACROS_H_
#define FLEETPMU_SERVER_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FLEETPMU_RETURN_IF_ERROR(expr)                   \
  do {                                                   \
    const absl::Status fleetpmu_status_ = (expr);        \
    if (!fleetpmu_status_.ok()) return fleetpmu_status_; \
  } while (false)

#define FLEETPMU_STATUS_CONCAT_INNER_(a, b) a##b
#define FLEETPMU_STATUS_CONCAT_(a, b) FLEETPMU_STATUS_CONCAT_INNER_(a, b)

#define FLEETPMU_ASSIGN_OR_RETURN(lhs, expr) \
  FLEETPMU_ASSIGN_OR_RETURN_IMPL_(FLEETPMU_STATUS_CONCAT_(fleetpmu_statusor_, __LINE__), lhs, expr)

#define FLEETPMU_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                    \
  if (!statusor.ok()) return statusor.status();              \
  lhs = std::move(*statusor)

#endif  // FLEETPMU_SERVER_STATUS_MACROS_H_
