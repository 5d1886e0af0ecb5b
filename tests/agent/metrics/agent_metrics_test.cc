// The agent's /metrics, scraped over real HTTP and checked by the real promtool.
#include "agent/metrics/agent_metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace fleetpmu::agent {
namespace {

std::string HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)::write(fd, request.data(), request.size());
  std::string response;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) response.append(buf, static_cast<size_t>(n));
  ::close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

TEST(AgentMetrics, ScrapePassesPromtoolAndShowsTheSpool) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("fleetpmu-metrics-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto spool = Spool::Open({.path = (dir / "spool.db").string(), .new_epoch = 3});
  ASSERT_TRUE(spool.ok());
  v1::Batch batch;
  batch.add_reports()->set_host_id("h");
  ASSERT_TRUE((*spool)->Append(batch, 0).ok());
  ASSERT_TRUE((*spool)->Append(batch, 0).ok());

  auto metrics = AgentMetrics::Start("127.0.0.1:0", "arm-17", spool->get(), nullptr, nullptr);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const std::string body = HttpGet((*metrics)->port(), "/metrics");
  EXPECT_NE(body.find("fleetpmu_agent_spool_batches{host=\"arm-17\"} 2"), std::string::npos) << body;
  const std::filesystem::path file = dir / "scrape.txt";
  std::ofstream(file) << body;
  const std::string check = "promtool check metrics < " + file.string() + " > " + (dir / "promtool.out").string() + " 2>&1";
  const int rc = std::system(check.c_str());
  std::ifstream out(dir / "promtool.out");
  const std::string promtool((std::istreambuf_iterator<char>(out)), std::istreambuf_iterator<char>());
  EXPECT_EQ(rc, 0) << promtool;
  std::filesystem::remove_all(dir);
}

TEST(AgentMetrics, BusyPortIsAClearError) {
  auto first = AgentMetrics::Start("127.0.0.1:0", "h", nullptr, nullptr, nullptr);
  ASSERT_TRUE(first.ok());
  auto second = AgentMetrics::Start("127.0.0.1:" + std::to_string((*first)->port()), "h", nullptr, nullptr, nullptr);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("cannot listen"), absl::string_view::npos) << second.status();
}

}  // namespace
}  // namespace fleetpmu::agent
