// fleetpmu-pmu: runs a register-level PMU trace against the PMUv3 model and the partitioned
// context switch. The grammar is in docs/pmu-trace.md.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "absl/flags/flag.h"
#include "proto/fleetpmu/cli/program.h"
#include "hypervisor-shim/tools/trace_interpreter.h"

ABSL_FLAG(bool, check_invariants, false,
          "Run the PMU.md section 4 invariant checker after every command; print violations and "
          "exit with status 1 if there were any");

namespace {

constexpr char kUsage[] =
    "Usage: fleetpmu-pmu [--check-invariants] TRACE   (TRACE may be - for standard input)\n"
    "\n"
    "Executes a register-level PMU trace against the PMUv3 model and the partitioned context switch.\n"
    "\n"
    "One command a line, '#' starts a comment. Core commands:\n"
    "  pmu N=<0..31> [p5] [hpmn0] [fgt]   (re)initialise: every register 0, MDCR_EL2.HPMN = N\n"
    "  el <0|1|2>                         exception level of following accesses and events\n"
    "  write <REG> <value>                decimal or 0x hex\n"
    "  read <REG>                         prints \"<REG> = 0x%016x\" or \"<REG> = UNDEFINED\"\n"
    "  event <code> <count>               occurrences of an event at the current EL\n"
    "  irq                                prints \"irq = 0\" or \"irq = 1\"\n"
    "vCPU and context-switch commands (vcpu, load, enter, guest, exit, put, hostirq, show, perf,\n"
    "check, isb, autoisb, cpu, time): see docs/pmu-trace.md.\n"
    "\n"
    "Exit status: 0 done, 1 invariant violations (with --check-invariants), 2 bad trace or usage.";

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = fleetpmu::cli::InitProgram(argc, argv, kUsage);
  if (args.size() != 2) {
    std::cerr << "fleetpmu-pmu: expected exactly one TRACE argument (see --help)\n";
    return 2;
  }
  const std::string path = args[1];
  std::stringstream text;
  if (path == "-") {
    text << std::cin.rdbuf();
  } else {
    std::ifstream in(path);
    if (!in) {
      std::cerr << "fleetpmu-pmu: cannot open trace '" << path << "'\n";
      return 2;
    }
    text << in.rdbuf();
  }
  fleetpmu::tools::TraceInterpreter interpreter({.check_invariants = absl::GetFlag(FLAGS_check_invariants)},
                                                std::cout);
  absl::Status status = interpreter.ExecuteAll(text.str());
  std::cout.flush();
  if (!status.ok()) {
    std::cerr << "fleetpmu-pmu: " << path << ": " << status.message() << "\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_check_invariants)) {
    if (interpreter.invariant_violations() != 0) {
      std::cout << "invariant violations: " << interpreter.invariant_violations() << "\n";
      return 1;
    }
  }
  return 0;
}
