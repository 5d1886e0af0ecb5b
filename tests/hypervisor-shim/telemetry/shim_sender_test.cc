// ShimSender against a real gRPC ShimTelemetry server on a unix socket (FakeAgent): exactly-once
// delivery in order, across agent restarts and agents that lose what they read; bounded buffers
// that drop the oldest and count it. The simulation side is the real one (HostSimulator +
// IntervalReporter at full speed), driven interval by interval as fleetpmu-shim does.
#include "hypervisor-shim/telemetry/shim_sender.h"

#include <stdlib.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "hypervisor-shim/sim/host_simulator.h"
#include "hypervisor-shim/telemetry/interval_reporter.h"
#include "tests/hypervisor-shim/telemetry/fake_agent.h"
#include "tests/hypervisor-shim/telemetry/test_host.h"

namespace fleetpmu::telemetry {
namespace {

using std::chrono::milliseconds;
using testing::FakeAgent;

constexpr int64_t kStartUnixNs = 1'700'000'000'000'000'000;
constexpr uint64_t kIntervalNs = 100'000'000;
constexpr uint64_t kEpoch = 0x5eed'0000'0000'0001;
constexpr absl::Duration kWait = absl::Seconds(20);  // generous: a condition, not a sleep

// A private directory for the socket, short enough for sun_path.
class TempDir {
 public:
  TempDir() {
    char path[] = "/tmp/fleetpmu-sender-XXXXXX";
    path_ = ::mkdtemp(path) != nullptr ? path : "/tmp";
  }
  ~TempDir() {
    ::unlink((path_ + "/agent.sock").c_str());
    ::rmdir(path_.c_str());
  }
  std::string socket() const { return path_ + "/agent.sock"; }

 private:
  std::string path_;
};

// The shim's simulation thread: the test host, its reporter and the reports it made.
class ShimUnderTest {
 public:
  explicit ShimUnderTest(const std::string& socket, ShimSenderOptions overrides = {}) {
    absl::StatusOr<v1::ShimConfig> config = testing::TestHostConfig(socket);
    EXPECT_TRUE(config.ok()) << config.status();
    absl::StatusOr<std::unique_ptr<sim::HostSimulator>> sim = sim::HostSimulator::Create(config->sim(), {});
    EXPECT_TRUE(sim.ok()) << sim.status();
    sim_ = std::move(*sim);
    reporter_ = std::make_unique<IntervalReporter>(
        sim_.get(), IntervalReporterOptions{.start_unix_ns = kStartUnixNs,
                                            .overflow_ring_capacity = config->telemetry_ring_capacity(),
                                            .shim_version = "0.0.0-test"});
    ShimSenderOptions options = std::move(overrides);
    options.agent_socket = socket;
    options.shim_id = config->shim_id();
    options.shim_epoch = kEpoch;
    options.backend = v1::BACKEND_SIM;
    options.host_info = reporter_->host_info();
    options.backoff_min = milliseconds(10);
    options.backoff_max = milliseconds(200);
    sender_ = std::make_unique<ShimSender>(std::move(options));
  }

  ShimSender& sender() { return *sender_; }
  const std::vector<std::string>& accepted() const { return accepted_; }
  uint64_t drops_reported() const { return drops_reported_; }

  // One report interval, as fleetpmu-shim's loop runs it. True if Submit took the report.
  bool RunInterval() {
    now_ns_ += kIntervalNs;
    EXPECT_TRUE(sim_->RunUntil(now_ns_).ok());
    const ShimSender::Drops drops = sender_->TakeDrops();
    reporter_->AddDrops(v1::DROP_STAGE_SHIM_SEND, drops.count, drops.bytes);
    drops_reported_ += drops.count;
    v1::TelemetryReport report = reporter_->TakeReport(now_ns_);
    std::string bytes = SerializeDeterministically(report);
    if (!sender_->Submit(std::move(report))) return false;
    accepted_.push_back(std::move(bytes));
    return true;
  }

 private:
  std::unique_ptr<sim::HostSimulator> sim_;
  std::unique_ptr<IntervalReporter> reporter_;
  std::unique_ptr<ShimSender> sender_;
  std::vector<std::string> accepted_;  // serialized reports Submit took, in order
  uint64_t drops_reported_ = 0;        // SHIM_SEND drops put into reports
  uint64_t now_ns_ = 0;
};

// Every accepted report is in the spool exactly once, in order, numbered 1, 2, 3, ... in one
// epoch.
void ExpectDeliveredExactlyOnceInOrder(const FakeAgent& agent, const std::vector<std::string>& accepted) {
  const std::vector<FakeAgent::Spooled> spooled = agent.spooled();
  ASSERT_EQ(spooled.size(), accepted.size());
  for (size_t i = 0; i < spooled.size(); ++i) {
    EXPECT_EQ(spooled[i].epoch, kEpoch);
    EXPECT_EQ(spooled[i].seq, i + 1);
    EXPECT_EQ(SerializeDeterministically(spooled[i].report), accepted[i]) << "report " << i + 1;
  }
  EXPECT_EQ(agent.duplicates(), 0u) << "a report the agent had acked was sent again";
  EXPECT_EQ(agent.gaps(), 0u);
}

TEST(ShimSender, DeliversEveryReportOnceInOrderAcrossAnAgentRestart) {
  TempDir dir;
  FakeAgent agent(dir.socket());
  ASSERT_TRUE(agent.Start().ok());
  ShimUnderTest shim(dir.socket());
  shim.sender().Start();

  for (int i = 0; i < 5; ++i) ASSERT_TRUE(shim.RunInterval());
  ASSERT_TRUE(agent.WaitForSpooled(5, kWait));
  ASSERT_TRUE(shim.sender().Flush(milliseconds(20000)));
  EXPECT_EQ(shim.sender().stats().acked_seq, 5u);

  agent.Stop();  // mid-run: the stream breaks under the sender
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(shim.RunInterval());  // the simulation does not wait
  EXPECT_FALSE(shim.sender().Flush(milliseconds(50)));  // nobody to ack them yet
  ASSERT_TRUE(agent.Start().ok());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(shim.RunInterval());
  ASSERT_TRUE(shim.sender().Flush(milliseconds(20000)));
  const ShimSenderStats stats = shim.sender().stats();
  shim.sender().Stop();

  ExpectDeliveredExactlyOnceInOrder(agent, shim.accepted());
  EXPECT_GE(agent.hellos().size(), 2u);
  EXPECT_GE(stats.handshakes, 2u);
  EXPECT_GE(stats.stream_failures, 1u);
  EXPECT_EQ(stats.acked_seq, 12u);
  EXPECT_EQ(stats.last_seq, 12u);
  EXPECT_EQ(stats.sent, 12u);
  EXPECT_EQ(stats.dropped, 0u);
  const v1::ShimHello hello = agent.hellos().front();
  EXPECT_EQ(hello.shim_id(), "test-shim");
  EXPECT_EQ(hello.shim_epoch(), kEpoch);
  EXPECT_EQ(hello.backend(), v1::BACKEND_SIM);
  EXPECT_EQ(hello.host_info().pcpus_size(), 3);
  // Only the first report carries HostInfo; the hello carries it on every stream.
  EXPECT_TRUE(agent.spooled().front().report.has_host_info());
}

TEST(ShimSender, ResendsWhatAnAgentReadButNeverSpooled) {
  TempDir dir;
  FakeAgent agent(dir.socket());
  agent.set_spooling(false);  // reads and forgets: a crash before commit
  ASSERT_TRUE(agent.Start().ok());
  ShimUnderTest shim(dir.socket());
  shim.sender().Start();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(shim.RunInterval());
  ASSERT_TRUE(agent.WaitForDiscarded(3, kWait));
  agent.Stop();
  agent.set_spooling(true);
  ASSERT_TRUE(agent.Start().ok());
  ASSERT_TRUE(shim.RunInterval());
  ASSERT_TRUE(shim.sender().Flush(milliseconds(20000)));
  const ShimSenderStats stats = shim.sender().stats();
  shim.sender().Stop();
  ExpectDeliveredExactlyOnceInOrder(agent, shim.accepted());
  EXPECT_EQ(stats.sent, 4u);
  EXPECT_EQ(stats.resent, 3u);
}

TEST(ShimSender, AgentThatNeverAcksTheHelloIsDroppedAndRetried) {
  TempDir dir;
  FakeAgent agent(dir.socket());
  agent.set_acks(FakeAgent::Acks::kNone);
  ASSERT_TRUE(agent.Start().ok());
  ShimSenderOptions options;
  options.handshake_timeout = milliseconds(100);
  ShimUnderTest shim(dir.socket(), std::move(options));
  shim.sender().Start();
  ASSERT_TRUE(shim.RunInterval());
  // The sender gave up on the silent stream and opened another.
  ASSERT_TRUE(agent.WaitForHellos(2, kWait));
  EXPECT_TRUE(agent.spooled().empty());  // nothing is sent before the agent says where to start
  agent.set_acks(FakeAgent::Acks::kAll);
  ASSERT_TRUE(shim.sender().Flush(milliseconds(20000)));
  shim.sender().Stop();
  ExpectDeliveredExactlyOnceInOrder(agent, shim.accepted());
  EXPECT_NE(shim.sender().stats().last_error.find("no ShimAck"), std::string::npos)
      << shim.sender().stats().last_error;
}

TEST(ShimSender, WithoutAnAgentTheOldestReportsAreDroppedAndCounted) {
  TempDir dir;
  ShimSenderOptions options;
  options.queue_capacity = 2;
  options.resend_capacity = 4;
  ShimUnderTest shim(dir.socket(), std::move(options));
  shim.sender().Start();
  constexpr int kReports = 20;
  int refused = 0;
  for (int i = 0; i < kReports; ++i) {
    if (!shim.RunInterval()) ++refused;  // never blocks: either taken or refused
  }
  FakeAgent agent(dir.socket());
  ASSERT_TRUE(agent.Start().ok());
  ASSERT_TRUE(shim.sender().Flush(milliseconds(20000)));
  const ShimSenderStats stats = shim.sender().stats();
  const ShimSender::Drops drops = shim.sender().TakeDrops();
  shim.sender().Stop();

  const std::vector<FakeAgent::Spooled> spooled = agent.spooled();
  ASSERT_FALSE(spooled.empty());
  EXPECT_LE(spooled.size(), 4u + 2u);  // the resend buffer plus what was still in the ring
  EXPECT_EQ(spooled.size() + stats.dropped, static_cast<size_t>(kReports));
  EXPECT_EQ(stats.submitted, static_cast<uint64_t>(kReports - refused));
  // Every drop is reported once: in a later report, or still to be taken.
  EXPECT_GT(stats.dropped, 0u);
  EXPECT_EQ(shim.drops_reported() + drops.count, stats.dropped);
  // The survivors are the newest accepted reports, in order, with increasing seq.
  const std::vector<std::string>& accepted = shim.accepted();
  for (size_t i = 0; i < spooled.size(); ++i) {
    EXPECT_EQ(SerializeDeterministically(spooled[i].report), accepted[accepted.size() - spooled.size() + i]);
    if (i > 0) {
      EXPECT_GT(spooled[i].seq, spooled[i - 1].seq);
    }
  }
}

TEST(ShimSender, StopReturnsPromptlyWhileTheAgentIsAway) {
  TempDir dir;
  ShimUnderTest shim(dir.socket());
  shim.sender().Start();
  ASSERT_TRUE(shim.RunInterval());
  EXPECT_FALSE(shim.sender().Flush(milliseconds(100)));
  const absl::Time before = absl::Now();
  shim.sender().Stop();
  EXPECT_LT(absl::Now() - before, absl::Seconds(5));
  EXPECT_FALSE(shim.sender().stats().connected);
  EXPECT_EQ(shim.sender().stats().acked_seq, 0u);
}

TEST(ShimSender, EpochsAreNonZeroAndDiffer) {
  const uint64_t a = NewShimEpoch();
  const uint64_t b = NewShimEpoch();
  EXPECT_NE(a, 0u);
  EXPECT_NE(b, 0u);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace fleetpmu::telemetry
