// TraceInterpreter: executes register-level PMU traces (docs/pmu-trace.md has the grammar).
//
// A trace drives one host: `pmu` (re)creates it with one or more pCPUs, bare commands (`read`,
// `write`, `event`, `irq`) act on the current pCPU's hardware directly at the current exception
// level, and the vCPU commands (`vcpu`, `load`, `enter`, `guest ...`, `exit`, `put`, `hostirq`,
// `show`) go through the partitioned context switch exactly as the simulator does.
//
// Each Execute() call takes one line; output goes to the stream given at construction. Errors name
// the line number. With invariant checking on, new violations are printed after the line that
// caused them.
#ifndef FLEETPMU_HYPERVISOR_SHIM_TOOLS_TRACE_INTERPRETER_H_
#define FLEETPMU_HYPERVISOR_SHIM_TOOLS_TRACE_INTERPRETER_H_

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "hypervisor-shim/partition/partitioned_host.h"

namespace fleetpmu::tools {

class TraceInterpreter {
 public:
  struct Options {
    bool check_invariants = false;
  };
  TraceInterpreter(Options options, std::ostream& out);

  // Executes one line (comments and blank lines are fine). `line_number` is used in errors.
  absl::Status Execute(absl::string_view line, int line_number);
  // Executes a whole trace; stops at the first error.
  absl::Status ExecuteAll(absl::string_view text);

  uint64_t invariant_violations() const;
  const partition::PartitionedHost* host() const { return host_.get(); }

 private:
  absl::Status Dispatch(const std::vector<absl::string_view>& words);
  absl::Status Reinitialise(const std::vector<absl::string_view>& words);
  absl::Status CreateVcpu(const std::vector<absl::string_view>& words);
  absl::Status Guest(const std::vector<absl::string_view>& words);
  absl::Status Show(const std::vector<absl::string_view>& words);
  absl::Status RawAccess(const std::vector<absl::string_view>& words, bool is_write);
  absl::Status NeedHost() const;
  void PrintAccess(absl::string_view reg, const pmu::AccessResult& r);
  void ReportNewViolations();

  Options options_;
  std::ostream& out_;
  std::unique_ptr<partition::PartitionedHost> host_;
  pmu::PmuFeatures features_;
  pmu::ExceptionLevel el_ = pmu::ExceptionLevel::kEl0;
  int cpu_ = 0;
  bool auto_isb_ = true;
  size_t violations_reported_ = 0;
};

}  // namespace fleetpmu::tools

#endif  // FLEETPMU_HYPERVISOR_SHIM_TOOLS_TRACE_INTERPRETER_H_
