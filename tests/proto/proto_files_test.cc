// The .proto files keep the documentation promises of docs/proto.md: every field has a comment
// (units, ranges, who sets it), and every file declares package fleetpmu.v1 in proto3.
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace {

const char* const kProtoFiles[] = {"telemetry.proto", "config.proto", "shim_telemetry.proto",
                                   "ingest.proto", "query.proto"};

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string Trim(const std::string& s) {
  const auto begin = s.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  return s.substr(begin, s.find_last_not_of(" \t") - begin + 1);
}

std::string ProtoPath(const char* file) {
  return std::string(FLEETPMU_SOURCE_DIR) + "/proto/fleetpmu/v1/" + file;
}

TEST(ProtoFilesTest, EveryFieldHasAComment) {
  // A field: optional label, a type (scalar, qualified message name or map<...>), a name, a
  // number. Enum values have no type and do not match.
  const std::regex field(
      R"(^\s*(repeated\s+|optional\s+)?(map<[^>]+>|[A-Za-z_][\w.]*)\s+\w+\s*=\s*\d+\s*;.*$)");
  int fields = 0;
  for (const char* file : kProtoFiles) {
    const std::vector<std::string> lines = ReadLines(ProtoPath(file));
    ASSERT_FALSE(lines.empty()) << ProtoPath(file);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (!std::regex_match(lines[i], field)) continue;
      ++fields;
      const bool trailing = lines[i].find("//") != std::string::npos;
      const bool above = i > 0 && Trim(lines[i - 1]).rfind("//", 0) == 0;
      EXPECT_TRUE(trailing || above)
          << file << ":" << i + 1 << ": field without a comment: " << Trim(lines[i]);
    }
  }
  EXPECT_GT(fields, 200) << "the field pattern no longer matches the files";
}

TEST(ProtoFilesTest, EveryFileIsProto3InPackageFleetpmuV1) {
  for (const char* file : kProtoFiles) {
    std::ifstream in(ProtoPath(file));
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_NE(text.str().find("syntax = \"proto3\";"), std::string::npos) << file;
    EXPECT_NE(text.str().find("package fleetpmu.v1;"), std::string::npos) << file;
  }
}

}  // namespace
