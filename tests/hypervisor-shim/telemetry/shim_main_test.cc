// fleetpmu-shim as a process (hypervisor-shim/shim_main.cc) against a fake agent on a unix
// socket: a run of sim.duration at speed 0 delivers every interval and exits 0; SIGTERM reports
// the last partial interval, flushes and exits 0; an agent that never acks bounds the flush;
// --run-for keeps working without an agent.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/hypervisor-shim/telemetry/fake_agent.h"
#include "tests/hypervisor-shim/telemetry/test_host.h"

extern char** environ;

namespace fleetpmu::telemetry {
namespace {

using testing::FakeAgent;

constexpr int64_t kIntervalNs = 100'000'000;  // test_host.h's report_interval
constexpr absl::Duration kWait = absl::Seconds(60);  // a bound on a condition, not a sleep

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class TempDir {
 public:
  TempDir() {
    char path[] = "/tmp/fleetpmu-shim-XXXXXX";
    path_ = ::mkdtemp(path) != nullptr ? path : "/tmp";
  }
  ~TempDir() {
    for (const char* name : {"agent.sock", "shim.textproto", "stdout", "stderr"}) {
      ::unlink(File(name).c_str());
    }
    ::rmdir(path_.c_str());
  }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// One fleetpmu-shim process with stdout and stderr going to files.
class ShimProcess {
 public:
  ShimProcess(std::vector<std::string> args, const std::string& stdout_path, const std::string& stderr_path) {
    args.insert(args.begin(), FLEETPMU_SHIM_BINARY);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    if (pid_ > 0) {
      exit_ = std::async(std::launch::async, [pid = pid_] {
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        return status;
      });
    }
  }
  ~ShimProcess() {
    if (pid_ > 0 && exit_.valid()) {
      ::kill(pid_, SIGKILL);
      exit_.wait();
    }
  }

  bool started() const { return pid_ > 0; }
  void Signal(int signal) { ::kill(pid_, signal); }

  // The wait status once the process has exited, or nullopt if it is still running after
  // `timeout` (it is then killed).
  std::optional<int> Wait(absl::Duration timeout) {
    if (!exit_.valid()) return std::nullopt;
    if (exit_.wait_for(absl::ToChronoMilliseconds(timeout)) != std::future_status::ready) {
      ::kill(pid_, SIGKILL);
      exit_.wait();
      exit_.get();
      return std::nullopt;
    }
    return exit_.get();
  }

 private:
  pid_t pid_ = -1;
  std::future<int> exit_;
};

std::string WriteConfig(const TempDir& dir, const std::string& sim_extra) {
  const std::string path = dir.File("shim.textproto");
  std::ofstream(path) << testing::TestHostText(dir.File("agent.sock"), /*seed=*/7, sim_extra);
  return path;
}

// Reports numbered 1..n in one epoch, intervals back to back, each a full report interval
// except possibly the last.
void ExpectContiguousReports(const FakeAgent& agent) {
  const std::vector<FakeAgent::Spooled> spooled = agent.spooled();
  ASSERT_FALSE(spooled.empty());
  for (size_t i = 0; i < spooled.size(); ++i) {
    SCOPED_TRACE("report " + std::to_string(i + 1));
    EXPECT_EQ(spooled[i].seq, i + 1);
    EXPECT_EQ(spooled[i].epoch, spooled[0].epoch);
    const v1::Interval& interval = spooled[i].report.interval();
    if (i > 0) {
      EXPECT_EQ(interval.start_unix_ns(), spooled[i - 1].report.interval().end_unix_ns());
    }
    const int64_t length = interval.end_unix_ns() - interval.start_unix_ns();
    EXPECT_GT(length, 0);
    if (i + 1 < spooled.size()) {
      EXPECT_EQ(length, kIntervalNs);
    } else {
      EXPECT_LE(length, kIntervalNs);
    }
    EXPECT_EQ(spooled[i].report.host_id(), "test-host");
  }
  EXPECT_EQ(agent.duplicates(), 0u);
  EXPECT_EQ(agent.gaps(), 0u);
}

TEST(ShimMain, RunsSimDurationAtFullSpeedAndExitsOnceEveryReportIsAcked) {
  TempDir dir;
  FakeAgent agent(dir.File("agent.sock"));
  ASSERT_TRUE(agent.Start().ok());
  const std::string config = WriteConfig(dir, "speed: 0 duration { nanos: 950000000 }");
  ShimProcess shim({"--config", config}, dir.File("stdout"), dir.File("stderr"));
  ASSERT_TRUE(shim.started());
  const std::optional<int> status = shim.Wait(kWait);
  const std::string log = ReadFile(dir.File("stderr"));
  ASSERT_TRUE(status.has_value()) << "fleetpmu-shim did not exit\n" << log;
  ASSERT_TRUE(WIFEXITED(*status)) << log;
  EXPECT_EQ(WEXITSTATUS(*status), 0) << log;

  ExpectContiguousReports(agent);
  const std::vector<FakeAgent::Spooled> spooled = agent.spooled();
  ASSERT_EQ(spooled.size(), 10u) << log;  // nine full intervals and the last 50 ms
  EXPECT_EQ(spooled.back().report.interval().end_unix_ns() - spooled.front().report.interval().start_unix_ns(),
            950'000'000);
  ASSERT_EQ(agent.hellos().size(), 1u);
  EXPECT_EQ(agent.hellos()[0].shim_id(), "test-shim");
  EXPECT_EQ(agent.hellos()[0].host_info().pcpus_size(), 3);
  EXPECT_TRUE(absl::StrContains(log, "10 reports, all acknowledged")) << log;
}

TEST(ShimMain, SigtermReportsTheLastPartialIntervalFlushesAndExitsZero) {
  TempDir dir;
  FakeAgent agent(dir.File("agent.sock"));
  ASSERT_TRUE(agent.Start().ok());
  const std::string config = WriteConfig(dir, "speed: 1");  // real time, until stopped
  ShimProcess shim({"--config", config}, dir.File("stdout"), dir.File("stderr"));
  ASSERT_TRUE(shim.started());
  // Running and streaming: two intervals have been spooled.
  ASSERT_TRUE(agent.WaitForSpooled(2, kWait)) << ReadFile(dir.File("stderr"));
  shim.Signal(SIGTERM);
  const std::optional<int> status = shim.Wait(kWait);
  const std::string log = ReadFile(dir.File("stderr"));
  ASSERT_TRUE(status.has_value()) << "fleetpmu-shim did not exit after SIGTERM\n" << log;
  ASSERT_TRUE(WIFEXITED(*status)) << log;
  EXPECT_EQ(WEXITSTATUS(*status), 0) << log;

  ExpectContiguousReports(agent);
  const size_t spooled = agent.spooled().size();
  EXPECT_GE(spooled, 2u);
  EXPECT_TRUE(absl::StrContains(log, "received Terminated")) << log;
  // Everything the shim reported, including the last interval cut short by the signal, was
  // acknowledged before it exited.
  EXPECT_TRUE(absl::StrContains(log, absl::StrCat(spooled, " reports, all acknowledged"))) << log;
}

TEST(ShimMain, ExitsZeroWithinTheFlushBoundWhenTheAgentNeverAcks) {
  TempDir dir;
  FakeAgent agent(dir.File("agent.sock"));
  agent.set_acks(FakeAgent::Acks::kHelloOnly);  // spools, never acks a report
  ASSERT_TRUE(agent.Start().ok());
  const std::string config = WriteConfig(dir, "speed: 1");
  ShimProcess shim({"--config", config}, dir.File("stdout"), dir.File("stderr"));
  ASSERT_TRUE(shim.started());
  ASSERT_TRUE(agent.WaitForSpooled(1, kWait)) << ReadFile(dir.File("stderr"));  // up and streaming
  const absl::Time signalled = absl::Now();
  shim.Signal(SIGINT);
  const std::optional<int> status = shim.Wait(kWait);
  const absl::Duration took = absl::Now() - signalled;
  const std::string log = ReadFile(dir.File("stderr"));
  ASSERT_TRUE(status.has_value()) << log;
  ASSERT_TRUE(WIFEXITED(*status)) << log;
  EXPECT_EQ(WEXITSTATUS(*status), 0) << log;
  EXPECT_LT(took, absl::Seconds(20)) << "the flush is bounded at 5 s";
  EXPECT_TRUE(absl::StrContains(log, "the agent acknowledged seq <= 0")) << log;
}

TEST(ShimMain, RunForStillSimulatesWithoutAnAgentAndPrintsJson) {
  TempDir dir;
  const std::string config = WriteConfig(dir, "speed: 1");
  ShimProcess shim({"--config", config, "--run-for=200ms"}, dir.File("stdout"), dir.File("stderr"));
  ASSERT_TRUE(shim.started());
  const std::optional<int> status = shim.Wait(kWait);
  ASSERT_TRUE(status.has_value());
  ASSERT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0) << ReadFile(dir.File("stderr"));
  const std::string json = ReadFile(dir.File("stdout"));
  EXPECT_TRUE(absl::StrContains(json, "\"virtual_seconds\":0.2")) << json;
  EXPECT_TRUE(absl::StrContains(json, "\"tenants\":[")) << json;
}

}  // namespace
}  // namespace fleetpmu::telemetry
