#include "proto/fleetpmu/cli/program.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_FLAG(std::string, test_config, "", "config file of the test program");
ABSL_FLAG(bool, test_verbose, false, "talk more");
ABSL_FLAG(int, test_count, 1, "how many");

namespace fleetpmu::cli {
namespace {

using Action = CommandLineVerdict::Action;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

// Owns the strings a char** command line points into.
class CommandLine {
 public:
  CommandLine(std::initializer_list<std::string> args) : storage_(args) {
    storage_.insert(storage_.begin(), "fleetpmu-test");
    for (std::string& arg : storage_) argv_.push_back(arg.data());
    argv_.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(storage_.size()); }
  char** argv() { return argv_.data(); }

 private:
  std::vector<std::string> storage_;
  std::vector<char*> argv_;
};

CommandLineVerdict Classify(std::initializer_list<std::string> args) {
  CommandLine line(args);
  return ClassifyCommandLine(line.argc(), line.argv());
}

TEST(ClassifyCommandLineTest, KnownFlagsAndPositionalsRun) {
  EXPECT_EQ(Classify({}).action, Action::kRun);
  EXPECT_EQ(Classify({"--test_config=a.textproto", "hosts"}).action, Action::kRun);
  EXPECT_EQ(Classify({"--test_config", "a.textproto", "-test_verbose"}).action, Action::kRun);
  EXPECT_EQ(Classify({"--notest_verbose", "--test_count=3"}).action, Action::kRun);
}

TEST(ClassifyCommandLineTest, HelpVariantsPrintHelp) {
  for (const char* flag : {"--help", "-h", "-help", "--helpshort", "--helppackage"}) {
    EXPECT_EQ(Classify({flag}).action, Action::kPrintHelp) << flag;
  }
  EXPECT_EQ(Classify({"--helpfull"}).action, Action::kPrintFullHelp);
}

TEST(ClassifyCommandLineTest, HelpWinsOverVersionAndOverErrors) {
  EXPECT_EQ(Classify({"--bakend=x", "--version", "--help"}).action, Action::kPrintHelp);
  EXPECT_EQ(Classify({"--bakend=x", "--version"}).action, Action::kPrintVersion);
}

TEST(ClassifyCommandLineTest, UnknownFlagIsAUsageErrorNamingIt) {
  CommandLineVerdict verdict = Classify({"--test_config=a", "--bakend=sim", "--nofoo"});
  EXPECT_EQ(verdict.action, Action::kUsageError);
  EXPECT_EQ(verdict.problems, "unknown flag --bakend\nunknown flag --nofoo");
}

TEST(ClassifyCommandLineTest, MissingAndMalformedValuesAreUsageErrors) {
  CommandLineVerdict missing = Classify({"--test_config"});
  EXPECT_EQ(missing.action, Action::kUsageError);
  EXPECT_EQ(missing.problems, "--test_config needs a value");

  CommandLineVerdict malformed = Classify({"--test_count=many"});
  EXPECT_EQ(malformed.action, Action::kUsageError);
  EXPECT_THAT(malformed.problems, HasSubstr("bad value \"many\" for --test_count"));

  CommandLineVerdict bool_value = Classify({"--test_verbose=maybe"});
  EXPECT_EQ(bool_value.action, Action::kUsageError);

  CommandLineVerdict negated = Classify({"--notest_count"});
  EXPECT_EQ(negated.action, Action::kUsageError);
  EXPECT_THAT(negated.problems, HasSubstr("only boolean flags have a --no form"));
}

TEST(ClassifyCommandLineTest, DoubleDashEndsFlags) {
  EXPECT_EQ(Classify({"--", "--bakend"}).action, Action::kRun);
  EXPECT_EQ(Classify({"-"}).action, Action::kRun) << "a lone dash is a positional argument";
}

TEST(NormalizeFlagNamesTest, DashesInFlagNamesBecomeUnderscores) {
  CommandLine line({"--test-config", "--my-file", "-test-count=-3", "--notest-verbose", "a-b",
                    "--", "--c-d"});
  EXPECT_EQ(NormalizeFlagNames(line.argc(), line.argv()),
            (std::vector<std::string>{"fleetpmu-test", "--test_config", "--my-file",
                                      "-test_count=-3", "--notest_verbose", "a-b", "--",
                                      "--c-d"}));
}

TEST(InitProgramDeathTest, AcceptsDashedFlagNames) {
  CommandLine line({"--test-count=7", "--test-config", "x-y.textproto"});
  EXPECT_EXIT(
      {
        InitProgram(line.argc(), line.argv(), "usage");
        const bool ok = absl::GetFlag(FLAGS_test_count) == 7 &&
                        absl::GetFlag(FLAGS_test_config) == "x-y.textproto";
        std::exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(ProgramTest, ProgramNameIsTheBasename) {
  EXPECT_EQ(ProgramName("/usr/bin/fleetpmu-agent"), "fleetpmu-agent");
  EXPECT_EQ(ProgramName("fleetpmuctl"), "fleetpmuctl");
  EXPECT_EQ(ProgramName(nullptr), "fleetpmu");
}

TEST(ProgramTest, VersionIsProgramAndProjectVersion) {
  EXPECT_THAT(std::string(ProjectVersion()), MatchesRegex("[0-9]+\\.[0-9]+\\.[0-9]+"));
  EXPECT_EQ(VersionText("fleetpmu-agent"),
            "fleetpmu-agent " + std::string(ProjectVersion()) + "\n");
}

TEST(ProgramTest, HelpListsThisProgramsFlagsButNotAbseilsUnlessFull) {
  const std::string help = HelpText("fleetpmu-test", "Usage: fleetpmu-test --test_config F", false);
  EXPECT_THAT(help, HasSubstr("Usage: fleetpmu-test --test_config F"));
  EXPECT_THAT(help, HasSubstr("--test_config <string>"));
  EXPECT_THAT(help, HasSubstr("config file of the test program"));
  EXPECT_THAT(help, HasSubstr("--test_count <int>"));
  EXPECT_THAT(help, HasSubstr("--version"));
  EXPECT_THAT(help, Not(HasSubstr("--flagfile")));
  EXPECT_THAT(HelpText("fleetpmu-test", "usage", true), HasSubstr("--flagfile"));
}

// InitProgram exits for these; each death test runs it in a child process.
TEST(InitProgramDeathTest, HelpAndVersionExitZero) {
  CommandLine help({"--help"});
  EXPECT_EXIT(InitProgram(help.argc(), help.argv(), "usage"), ::testing::ExitedWithCode(0),
              "");
  CommandLine version({"--version"});
  EXPECT_EXIT(InitProgram(version.argc(), version.argv(), "usage"),
              ::testing::ExitedWithCode(0), "");
}

TEST(InitProgramDeathTest, UnknownFlagExitsTwoWithAClearMessage) {
  CommandLine line({"--bakend=sim"});
  EXPECT_EXIT(InitProgram(line.argc(), line.argv(), "usage"),
              ::testing::ExitedWithCode(kExitUsage),
              "fleetpmu-test: unknown flag --bakend\nTry 'fleetpmu-test --help'");
}

TEST(InitProgramDeathTest, ValidCommandLineReturnsThePositionals) {
  CommandLine line({"--test_count=5", "hosts"});
  EXPECT_EXIT(
      {
        std::vector<char*> args = InitProgram(line.argc(), line.argv(), "usage");
        const bool ok = args.size() == 2 && std::string(args[1]) == "hosts" &&
                        absl::GetFlag(FLAGS_test_count) == 5;
        std::exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace fleetpmu::cli
