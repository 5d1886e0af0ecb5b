// The Prometheus exporter scraped over real HTTP, its body checked by the real promtool.
#include "server/metrics/metrics_exporter.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/storage/sqlite_storage.h"
#include "tests/server/subprocess.h"
#include "tests/server/telemetry_fixtures.h"

namespace fleetpmu::server {
namespace {

using ::fleetpmu::server::testing::kBaseUnixNs;
using ::fleetpmu::server::testing::kSecondNs;
using ::fleetpmu::server::testing::MakeBatch;
using ::fleetpmu::server::testing::MakeHostInfo;
using ::fleetpmu::server::testing::MakeReport;
using ::fleetpmu::server::testing::ProgramResult;
using ::fleetpmu::server::testing::RunProgram;
using ::fleetpmu::server::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;

// GET http://127.0.0.1:<port><path> with HTTP/1.0 (the server closes after answering).
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  std::string response;
  char buffer[8192];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0)
    response.append(buffer, static_cast<size_t>(n));
  close(fd);
  return response;
}

// The body of a scrape; fails the test on a non-200 answer.
std::string Scrape(int port) {
  const std::string response = HttpGet(port, "/metrics");
  EXPECT_THAT(response, HasSubstr(" 200 "));
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

class MetricsExporterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SqliteStorageOptions options;
    options.path = dir_.File("fleetpmu.db");
    auto storage = SqliteStorage::Open(options);
    ASSERT_TRUE(storage.ok()) << storage.status();
    storage_ = std::move(*storage);
  }

  // One host, two reports of tenant-a/vm-1, one rejection, one refusal.
  static void Feed(MetricsExporter& exporter) {
    exporter.StreamOpened();
    exporter.HelloAccepted("arm-1", MakeHostInfo("arm-1"));
    exporter.BatchStored("arm-1", MakeBatch("arm-1", 7, 1, kBaseUnixNs, 2),
                         kBaseUnixNs + 25 * kSecondNs);
    exporter.BatchDuplicate("arm-1");
    exporter.BatchRejected("arm-1", RejectReason::kUnknownVm);
    exporter.BatchRefused("arm-1", RefusalReason::kRateLimited);
  }

  TempDir dir_;
  std::unique_ptr<SqliteStorage> storage_;
};

TEST_F(MetricsExporterTest, RealScrapePassesPromtoolCheckMetrics) {
  MetricsExporter exporter(MetricsOptions{}, storage_.get());
  ASSERT_TRUE(exporter.Serve("127.0.0.1:0").ok());
  ASSERT_GT(exporter.port(), 0);
  Feed(exporter);
  const std::string body = Scrape(exporter.port());
  ASSERT_FALSE(body.empty());

  ProgramResult promtool = RunProgram({PROMTOOL, "check", "metrics"}, body);
  EXPECT_EQ(promtool.exit_code, 0) << promtool.out << promtool.err;
  EXPECT_EQ(promtool.out + promtool.err, "") << "promtool lint findings";
}

TEST_F(MetricsExporterTest, SeriesFollowDesignNamesAndLabels) {
  MetricsExporter exporter(MetricsOptions{}, storage_.get());
  ASSERT_TRUE(exporter.Serve("127.0.0.1:0").ok());
  Feed(exporter);
  const std::string body = Scrape(exporter.port());
  // The alert "overflows lost" reads this series per host and tenant.
  EXPECT_THAT(body, HasSubstr("fleetpmu_overflows_lost_total{host=\"arm-1\",owner_kind=\"guest\","
                              "reason=\"flag_cleared_unseen\",tenant=\"tenant-a\",vm=\"vm-1\"} 2"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_overflows_lost_total{host=\"arm-1\",owner_kind=\"host\","
                              "reason=\"host_clobbered\",tenant=\"\",vm=\"\"} 4"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_overflows_total{class=\"delivered\",host=\"arm-1\","
                              "owner_kind=\"guest\",tenant=\"tenant-a\",vm=\"vm-1\"} 40"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_vcpu_loads_total{host=\"arm-1\",tenant=\"tenant-a\","
                              "vm=\"vm-1\"} 400"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_swaps_total{host=\"arm-1\",result=\"skipped\","
                              "tenant=\"tenant-a\",vm=\"vm-1\"} 200"));
  // Per-bucket counts from the shim, cumulated by the exporter: 4 histograms of 70 fast
  // (<= 1us) and 5 slow (<= 10us) samples per phase and VM.
  EXPECT_THAT(body, HasSubstr("fleetpmu_swap_duration_seconds_bucket{host=\"arm-1\","
                              "phase=\"load\",tenant=\"tenant-a\",vm=\"vm-1\",le=\"1e-06\"} 280"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_swap_duration_seconds_bucket{host=\"arm-1\","
                              "phase=\"load\",tenant=\"tenant-a\",vm=\"vm-1\",le=\"1e-05\"} 300"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_vm_guest_counters{host=\"arm-1\",tenant=\"tenant-a\","
                              "vm=\"vm-1\"} 3"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_vm_guest_visible_counters{host=\"arm-1\","
                              "tenant=\"tenant-a\",vm=\"vm-1\"} 3"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_pmu_counters{host=\"arm-1\",pmu=\"armv8_pmuv3_0\"} 6"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_host_pcpus{host=\"arm-1\",pmu=\"armv8_pmuv3_0\"} 4"));
  // pCPU 0 half, pCPU 1 a quarter of two 10 s samples each: 7.5 s of 20 s.
  EXPECT_THAT(body,
              HasSubstr("fleetpmu_ownership_share{host=\"arm-1\",tenant=\"tenant-a\"} 0.375"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_agent_last_report_timestamp_seconds{host=\"arm-1\"} "
                              "1704067220"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_telemetry_dropped_total{host=\"arm-1\","
                              "stage=\"shim_ring\"} 6"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_ingest_batches_total{result=\"stored\"} 1"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_ingest_batches_total{result=\"duplicate\"} 1"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_ingest_batches_rejected_total{reason=\"unknown_vm\"} 1"));
  EXPECT_THAT(body,
              HasSubstr("fleetpmu_ingest_batches_rejected_total{reason=\"bad_histogram\"} 0"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_ingest_batches_refused_total{reason=\"rate_limited\"} 1"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_ingest_lag_seconds_count 1"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_ingest_streams 1"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_storage_queue_operations 0"));
  EXPECT_THAT(body, HasSubstr("fleetpmu_storage_transactions_total{result=\"committed\"}"));
  // Per-vCPU series are off by default.
  EXPECT_THAT(body, Not(HasSubstr("vcpu=\"")));
}

TEST_F(MetricsExporterTest, PerVcpuSeriesOnlyWhenEnabled) {
  MetricsOptions options;
  options.per_vcpu_series = true;
  MetricsExporter exporter(options, storage_.get());
  Feed(exporter);
  const std::string body = exporter.Render();
  EXPECT_THAT(body, HasSubstr("fleetpmu_vcpu_loads_total{host=\"arm-1\",tenant=\"tenant-a\","
                              "vcpu=\"1\",vm=\"vm-1\"} 200"));
  ProgramResult promtool = RunProgram({PROMTOOL, "check", "metrics"}, body);
  EXPECT_EQ(promtool.exit_code, 0) << promtool.out << promtool.err;
}

TEST_F(MetricsExporterTest, LabelSetsBeyondTheLimitAreCountedNotExported) {
  MetricsOptions options;
  options.max_series = 1;
  MetricsExporter exporter(options, storage_.get());
  fleetpmu::v1::Batch batch = MakeBatch("arm-1", 7, 1, kBaseUnixNs);
  *batch.add_reports() = MakeReport("arm-1", kBaseUnixNs + 10 * kSecondNs, "vm-2", "tenant-b");
  exporter.BatchStored("arm-1", batch, kBaseUnixNs + 30 * kSecondNs);
  const std::string body = exporter.Render();
  EXPECT_THAT(body, HasSubstr("vm=\"vm-1\""));
  EXPECT_THAT(body, Not(HasSubstr("vm=\"vm-2\"")));
  EXPECT_THAT(body, HasSubstr("fleetpmu_metrics_series_rejected_total{"
                              "family=\"fleetpmu_vcpu_loads_total\"} 2"));
}

TEST_F(MetricsExporterTest, ListenFailureIsAStatusNotAnException) {
  MetricsExporter first(MetricsOptions{}, storage_.get());
  ASSERT_TRUE(first.Serve("127.0.0.1:0").ok());
  MetricsExporter second(MetricsOptions{}, storage_.get());
  absl::Status busy = second.Serve("127.0.0.1:" + std::to_string(first.port()));
  EXPECT_FALSE(busy.ok());
  EXPECT_THAT(busy.message(), HasSubstr("cannot serve /metrics"));
  EXPECT_FALSE(second.Serve("unix:/tmp/x.sock").ok());
}

}  // namespace
}  // namespace fleetpmu::server
