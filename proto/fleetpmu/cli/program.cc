#include "proto/fleetpmu/cli/program.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

#ifndef FLEETPMU_VERSION
#error "FLEETPMU_VERSION must be defined by the build (proto/fleetpmu/cli/CMakeLists.txt)"
#endif

namespace fleetpmu::cli {
namespace {

// Debian's abseil is built with its own string_view type, distinct from std::string_view; the
// public API speaks std::string_view and converts here.
absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Usage flags we answer ourselves (absl 20220623 exits 1 after printing help).
bool IsHelpFlag(absl::string_view name) {
  return name == "help" || name == "h" || name == "helpshort" || name == "helppackage" ||
         name == "?";
}

// Flags that absl handles while parsing and whose values we must not pre-set: setting
// --flagfile twice makes absl read the file twice; --helpon and friends are absl's to answer.
bool IsLeftToAbsl(absl::string_view name) {
  return name == "flagfile" || name == "fromenv" || name == "tryfromenv" || name == "undefok" ||
         name == "helpon" || name == "helpmatch" || name == "only_check_args";
}

bool IsAbseilFlag(const absl::CommandLineFlag& flag) {
  return absl::StrContains(flag.Filename(), "absl/");
}

std::string TypeName(const absl::CommandLineFlag& flag) {
  if (flag.IsOfType<bool>()) return "bool";
  if (flag.IsOfType<std::string>()) return "string";
  if (flag.IsOfType<int32_t>() || flag.IsOfType<int64_t>()) return "int";
  if (flag.IsOfType<uint32_t>() || flag.IsOfType<uint64_t>()) return "uint";
  if (flag.IsOfType<double>() || flag.IsOfType<float>()) return "number";
  if (flag.IsOfType<std::vector<std::string>>()) return "list";
  return "value";
}

void AppendFlagHelp(std::string* out, const absl::CommandLineFlag& flag) {
  std::string default_value = flag.DefaultValue();
  if (flag.IsOfType<std::string>()) default_value = absl::StrCat("\"", default_value, "\"");
  absl::StrAppend(out, "  --", flag.Name(), " <", TypeName(flag), ">\n      ", flag.Help(),
                  " (default: ", default_value, ")\n");
}

}  // namespace

std::string_view ProjectVersion() { return FLEETPMU_VERSION; }

std::string ProgramName(const char* argv0) {
  std::string_view name = argv0 == nullptr ? "" : argv0;
  std::size_t slash = name.rfind('/');
  if (slash != std::string_view::npos) name.remove_prefix(slash + 1);
  return name.empty() ? std::string("fleetpmu") : std::string(name);
}

std::string VersionText(std::string_view program) {
  return absl::StrCat(Absl(program), " ", Absl(ProjectVersion()), "\n");
}

std::string HelpText(std::string_view program, std::string_view usage, bool all_flags) {
  std::string out = absl::StrCat(Absl(usage), "\n");
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (flag->IsRetired()) continue;
    if (!all_flags && IsAbseilFlag(*flag)) continue;
    flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(),
            [](const absl::CommandLineFlag* a, const absl::CommandLineFlag* b) {
              return a->Name() < b->Name();
            });
  if (!flags.empty()) absl::StrAppend(&out, "\nFlags:\n");
  for (const absl::CommandLineFlag* flag : flags) AppendFlagHelp(&out, *flag);
  absl::StrAppend(&out, "\nAlso:\n",
                  "  --help, -h      print this help and exit 0\n",
                  "  --helpfull      also list the flags built into abseil\n",
                  "  --version       print \"", Absl(program), " ", Absl(ProjectVersion()),
                  "\" and exit 0\n",
                  "\nExit status: 0 success, 1 runtime failure, 2 usage or configuration "
                  "error.\n");
  return out;
}

std::vector<std::string> NormalizeFlagNames(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  bool next_is_value = false;
  for (int i = 1; i < argc; ++i) {
    std::string& arg = args[i];
    if (next_is_value) {
      next_is_value = false;
      continue;
    }
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    const std::size_t begin = arg[1] == '-' ? 2 : 1;
    const std::size_t end = std::min(arg.find('='), arg.size());
    std::replace(arg.begin() + begin, arg.begin() + end, '-', '_');
    if (end == arg.size()) {
      // "--flag VALUE": the next argument is a value, whatever it looks like.
      const absl::CommandLineFlag* flag =
          absl::FindCommandLineFlag(absl::string_view(arg).substr(begin));
      next_is_value = flag != nullptr && !flag->IsOfType<bool>();
    }
  }
  return args;
}

CommandLineVerdict ClassifyCommandLine(int argc, char** argv) {
  bool help = false;
  bool full_help = false;
  bool version = false;
  std::vector<std::string> problems;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;  // everything after is positional
    if (arg.size() < 2 || arg[0] != '-') continue;  // positional, or "-" (stdin)
    // absl accepts both -name and --name.
    absl::ConsumePrefix(&arg, "-");
    absl::ConsumePrefix(&arg, "-");
    absl::string_view name = arg;
    absl::string_view value;
    bool has_value = false;
    if (std::size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    if (IsHelpFlag(name)) {
      help = true;
      continue;
    }
    if (name == "helpfull") {
      full_help = true;
      continue;
    }
    if (name == "version") {
      version = true;
      continue;
    }
    if (IsLeftToAbsl(name)) {
      // Skip the separate value of "--flagfile FILE" so it is not taken for a flag.
      if (!has_value && name != "only_check_args" && i + 1 < argc) ++i;
      continue;
    }

    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    bool negated = false;
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      flag = absl::FindCommandLineFlag(name.substr(2));
      negated = flag != nullptr;
    }
    if (flag == nullptr || flag->IsRetired()) {
      problems.push_back(absl::StrCat("unknown flag --", name));
      continue;
    }
    const std::string shown = absl::StrCat("--", flag->Name());
    if (flag->IsOfType<bool>()) {
      if (negated && has_value) {
        problems.push_back(absl::StrCat("--", name, " takes no value; write ", shown, "=",
                                        value));
        continue;
      }
      if (!has_value) continue;  // --flag or --noflag
    } else {
      if (negated) {
        problems.push_back(absl::StrCat("--", name, ": only boolean flags have a --no form"));
        continue;
      }
      if (!has_value) {
        if (i + 1 >= argc) {
          problems.push_back(absl::StrCat(shown, " needs a value"));
          continue;
        }
        value = argv[++i];
      }
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      problems.push_back(absl::StrCat("bad value \"", value, "\" for ", shown, ": ", error));
    }
  }

  CommandLineVerdict verdict;
  if (full_help) {
    verdict.action = CommandLineVerdict::Action::kPrintFullHelp;
  } else if (help) {
    verdict.action = CommandLineVerdict::Action::kPrintHelp;
  } else if (version) {
    verdict.action = CommandLineVerdict::Action::kPrintVersion;
  } else if (!problems.empty()) {
    verdict.action = CommandLineVerdict::Action::kUsageError;
    verdict.problems = absl::StrJoin(problems, "\n");
  }
  return verdict;
}

std::vector<char*> InitProgram(int argc, char** argv, std::string_view usage) {
  const std::string program = ProgramName(argc > 0 ? argv[0] : nullptr);
  absl::SetProgramUsageMessage(Absl(usage));
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return !absl::StrContains(file, "absl/");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  usage_config.version_string = [program] { return VersionText(program); };
  absl::SetFlagsUsageConfig(usage_config);

  // absl keeps pointers into argv; the normalised copy lives as long as the process.
  static std::vector<std::string>* const normalized =
      new std::vector<std::string>(NormalizeFlagNames(argc, argv));
  static std::vector<char*>* const normalized_argv = [] {
    auto* pointers = new std::vector<char*>();
    for (std::string& arg : *normalized) pointers->push_back(arg.data());
    pointers->push_back(nullptr);
    return pointers;
  }();
  argv = normalized_argv->data();

  CommandLineVerdict verdict = ClassifyCommandLine(argc, argv);
  switch (verdict.action) {
    case CommandLineVerdict::Action::kPrintHelp:
    case CommandLineVerdict::Action::kPrintFullHelp:
      std::cout << HelpText(program, usage,
                            verdict.action == CommandLineVerdict::Action::kPrintFullHelp);
      std::cout.flush();
      std::exit(kExitOk);
    case CommandLineVerdict::Action::kPrintVersion:
      std::cout << VersionText(program);
      std::cout.flush();
      std::exit(kExitOk);
    case CommandLineVerdict::Action::kUsageError:
      std::exit(UsageError(program, verdict.problems));
    case CommandLineVerdict::Action::kRun:
      break;
  }
  return absl::ParseCommandLine(argc, argv);
}

int UsageError(std::string_view program, std::string_view problem) {
  for (absl::string_view line : absl::StrSplit(Absl(problem), '\n')) {
    std::cerr << program << ": " << line << "\n";
  }
  std::cerr << "Try '" << program << " --help' for more information.\n";
  return kExitUsage;
}

int ConfigError(std::string_view program, std::string_view problem) {
  for (absl::string_view line : absl::StrSplit(Absl(problem), '\n')) {
    std::cerr << program << ": " << line << "\n";
  }
  return kExitUsage;
}

}  // namespace fleetpmu::cli
