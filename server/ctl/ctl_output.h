// What fleetpmuctl prints: one aligned text table per command, or the proto3 JSON mapping of
// the response with --json (docs/server.md "fleetpmuctl").
//
// Contract: pure functions of the responses (and of `now_unix_ns` where ages are shown);
// every table starts with a header line in capitals; an empty answer prints the header and
// a "(none)" line so that scripts and people can tell "nothing" from "failed". JSON keeps the
// proto field names (snake_case), prints enums by name and int64 as strings, as the proto3
// JSON mapping says.
#ifndef FLEETPMU_SERVER_CTL_CTL_OUTPUT_H_
#define FLEETPMU_SERVER_CTL_CTL_OUTPUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "fleetpmu/v1/query.pb.h"
#include "google/protobuf/message.h"

namespace fleetpmu::ctl {

// Columns separated by two spaces, each as wide as its widest cell.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header) : rows_{std::move(header)} {}
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// Counter list of a mask: bits 0..30 as ranges, the cycle counter as "C": 0x80000007 -> "0-2,C".
std::string FormatCounterMask(uint32_t mask);
// RFC 3339 UTC with milliseconds, "-" for 0.
std::string FormatTime(int64_t unix_ns);
// 0.875 -> "87.5%".
std::string FormatShare(double share);

std::string FormatOwnership(const fleetpmu::v1::GetCounterOwnershipResponse& response);
std::string FormatHosts(const fleetpmu::v1::ListHostsResponse& response);
std::string FormatOverflows(const fleetpmu::v1::ListOverflowEventsResponse& response);
std::string FormatLost(const fleetpmu::v1::GetLostOverflowSummaryResponse& response);
std::string FormatStats(const fleetpmu::v1::GetVcpuStatsResponse& response);
std::string FormatJson(const google::protobuf::Message& response);

}  // namespace fleetpmu::ctl

#endif  // FLEETPMU_SERVER_CTL_CTL_OUTPUT_H_
