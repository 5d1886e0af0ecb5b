#include "server/security/tokens.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/telemetry_fixtures.h"

namespace fleetpmu::server {
namespace {

using ::fleetpmu::server::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Line(absl::string_view token, absl::string_view role) {
  return "sha256:" + Sha256Hex(token) + " " + std::string(role) + "\n";
}

TEST(Sha256Test, MatchesTheKnownDigest) {
  // sha256("test"), as `printf %s test | sha256sum` prints it.
  EXPECT_EQ(Sha256Hex("test"), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
}

TEST(TokenStoreTest, AdminAndTenantTokensAuthenticate) {
  absl::StatusOr<TokenStore> store = TokenStore::Parse(
      "# operators\n\n" + Line("root-secret", "admin") + "  " + Line("a-secret", "tenant:tenant-a"),
      "tokens");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(store->size(), 2u);
  std::optional<Principal> admin = store->Authenticate("root-secret");
  ASSERT_TRUE(admin.has_value());
  EXPECT_TRUE(admin->admin);
  std::optional<Principal> tenant = store->Authenticate("a-secret");
  ASSERT_TRUE(tenant.has_value());
  EXPECT_FALSE(tenant->admin);
  EXPECT_EQ(tenant->tenant_id, "tenant-a");
  EXPECT_FALSE(store->Authenticate("a-secret ").has_value());
  EXPECT_FALSE(store->Authenticate("").has_value());
}

TEST(TokenStoreTest, PlaintextTokenIsRefusedWithoutEchoingIt) {
  absl::StatusOr<TokenStore> store = TokenStore::Parse("hunter2 admin\n", "/etc/tokens");
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(),
              AllOf(HasSubstr("/etc/tokens:1:"), HasSubstr("stores digests, not tokens"),
                    HasSubstr("fleetpmuctl hash-token"), Not(HasSubstr("hunter2"))));
}

TEST(TokenStoreTest, EveryBadLineIsReported) {
  const std::string text = Line("x", "root") + "sha256:abcd admin\n" + Line("y", "tenant:a/b") +
                           Line("z", "admin") + Line("z", "tenant:t") + "sha256:00 admin extra\n";
  absl::StatusOr<TokenStore> store = TokenStore::Parse(text, "tokens");
  ASSERT_FALSE(store.ok());
  const std::string message(store.status().message());
  EXPECT_THAT(message, HasSubstr("tokens:1: role \"root\""));
  EXPECT_THAT(message, HasSubstr("tokens:2: the digest is not 64 hex digits"));
  EXPECT_THAT(message, HasSubstr("tokens:3: role \"tenant:a/b\""));
  EXPECT_THAT(message, HasSubstr("tokens:5: the same digest appears on an earlier line"));
  EXPECT_THAT(message, HasSubstr("tokens:6: want"));
}

TEST(TokenStoreTest, LoadsAFileAndNamesAMissingOne) {
  TempDir dir;
  {
    std::ofstream file(dir.File("tokens"));
    file << Line("s3cret", "admin");
  }
  absl::StatusOr<TokenStore> store = TokenStore::LoadFile(dir.File("tokens"));
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE(store->Authenticate("s3cret").has_value());

  absl::StatusOr<TokenStore> missing = TokenStore::LoadFile(dir.File("nope"));
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr(dir.File("nope")));
}

}  // namespace
}  // namespace fleetpmu::server
