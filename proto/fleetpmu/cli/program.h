// Command-line start-up shared by every fleetpmu binary.
//
// InitProgram(argc, argv, usage) is the first line of every main(). It promises:
//   * `--help` (also -h, --helpshort, --helppackage) prints the usage text and this program's
//     flags to stdout and exits 0; `--helpfull` also lists abseil's built-in flags.
//   * `--version` prints "<program> <version>" (e.g. "fleetpmu-agent 0.1.0", the CMake project
//     version) to stdout and exits 0.
//   * An unknown flag, a missing or malformed flag value, or `--noflag` on a non-bool flag
//     prints "<program>: <what is wrong>" and a hint to stderr and exits kExitUsage (2).
//     absl 20220623 would exit 1 for these and also for --help; we decide them first, with
//     absl's public flag reflection, so absl never reaches its own exits for them.
//   * Flag names may be spelled with dashes: --print-config is --print_config (absl's spelling).
//   * Otherwise it calls absl::ParseCommandLine and returns its result: argv[0] followed by
//     the positional arguments. The few cases we leave to absl (--flagfile that cannot be read,
//     --helpon/--helpmatch, --only_check_args) keep absl's behaviour and exit status.
//
// Exit statuses for the rest of main() are named below so that every binary agrees: 0 success,
// 1 runtime failure, 2 usage or configuration error.
//
// Call once per process, from the main thread, before any other thread starts (absl's usage
// message may be set only once). The returned pointers stay valid for the life of the process.
#ifndef FLEETPMU_PROTO_FLEETPMU_CLI_PROGRAM_H_
#define FLEETPMU_PROTO_FLEETPMU_CLI_PROGRAM_H_

#include <string>
#include <string_view>
#include <vector>

namespace fleetpmu::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// The project version compiled in from CMake (PROJECT_VERSION), e.g. "0.1.0".
std::string_view ProjectVersion();

// Basename of argv[0], e.g. "fleetpmu-agent".
std::string ProgramName(const char* argv0);

// See the file comment.
std::vector<char*> InitProgram(int argc, char** argv, std::string_view usage);

// Prints "<program>: <line>" for each line of `problem`, then the --help hint, to stderr and
// returns kExitUsage, for the usage errors main() finds after InitProgram (missing --config,
// an unexpected argument):
//   return fleetpmu::cli::UsageError(program, "missing --config FILE");
int UsageError(std::string_view program, std::string_view problem);

// Prints "<program>: <line>" for each line of `problem` to stderr and returns kExitUsage,
// without the --help hint: for a config file that does not load or validate, where the message
// already says what to fix.
int ConfigError(std::string_view program, std::string_view problem);

// --- The pieces InitProgram is made of, exposed for tests -------------------------------------

// What a command line asks for, decided from the flags this binary registered.
struct CommandLineVerdict {
  enum class Action { kRun, kPrintHelp, kPrintFullHelp, kPrintVersion, kUsageError };
  Action action = Action::kRun;
  // kUsageError: one line per problem, e.g. "unknown flag --bakend".
  std::string problems;
};

// argv with every flag name's '-' turned into '_' ("--check-invariants=1" becomes
// "--check_invariants=1"). Values are left alone, including the separate value of a non-bool
// flag ("--config my-file"), and so is everything after "--".
std::vector<std::string> NormalizeFlagNames(int argc, char** argv);

// Classifies argv[1..argc) without printing or exiting. Help wins over version, which wins over
// usage errors, so `prog --help --typo` still shows the help. Checking a flag value uses
// CommandLineFlag::ParseFrom, which also stores it; absl::ParseCommandLine stores the same value
// again right after, so that is harmless.
CommandLineVerdict ClassifyCommandLine(int argc, char** argv);

// The --help text: usage, then this program's flags (those not defined inside abseil), then the
// built-in --help/--helpfull/--version lines. With `all_flags`, abseil's flags too.
std::string HelpText(std::string_view program, std::string_view usage, bool all_flags);

// "<program> <ProjectVersion()>\n".
std::string VersionText(std::string_view program);

}  // namespace fleetpmu::cli

#endif  // FLEETPMU_PROTO_FLEETPMU_CLI_PROGRAM_H_
