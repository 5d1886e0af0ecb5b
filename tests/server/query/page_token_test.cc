#include "server/query/page_token.h"

#include "fleetpmu/v1/query.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetpmu::server {
namespace {

TEST(PageSizeTest, ZeroIsDefaultLargeIsClampedNegativeIsRefused) {
  EXPECT_EQ(*EffectivePageSize(0), 100);
  EXPECT_EQ(*EffectivePageSize(7), 7);
  EXPECT_EQ(*EffectivePageSize(5000), 1000);
  EXPECT_EQ(EffectivePageSize(-1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PageTokenTest, RoundTripsForTheSameRequestOnly) {
  fleetpmu::v1::ListOverflowEventsRequest request;
  request.set_tenant_id("tenant-a");
  request.set_page_size(10);
  const uint64_t fingerprint = RequestFingerprint(request);
  const std::string token = EncodePageToken({20, 5, 9}, fingerprint);

  // Paging fields do not change the fingerprint.
  request.set_page_size(50);
  request.set_page_token(token);
  absl::StatusOr<PageCursor> cursor = DecodePageToken(token, RequestFingerprint(request));
  ASSERT_TRUE(cursor.ok()) << cursor.status();
  EXPECT_EQ(cursor->offset, 20);
  EXPECT_EQ(cursor->start_unix_ns, 5);
  EXPECT_EQ(cursor->end_unix_ns, 9);

  // Another filter: the token does not apply.
  request.set_lost_only(true);
  EXPECT_EQ(DecodePageToken(token, RequestFingerprint(request)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(DecodePageToken("not a token", fingerprint).ok());
  EXPECT_FALSE(DecodePageToken("", fingerprint).ok());
}

}  // namespace
}  // namespace fleetpmu::server
