// The wire contract round-trips and names what PMU.md says it must name.
//
// Messages are filled by reflection, so a field added to any .proto is covered here without
// editing this file: EveryFieldIsFilled proves the filler reaches every field.
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "fleetpmu/v1/config.pb.h"
#include "fleetpmu/v1/ingest.pb.h"
#include "fleetpmu/v1/query.pb.h"
#include "fleetpmu/v1/shim_telemetry.pb.h"
#include "fleetpmu/v1/telemetry.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace fleetpmu::v1 {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using google::protobuf::util::MessageDifferencer;

const char* const kContractFiles[] = {
    "fleetpmu/v1/telemetry.proto", "fleetpmu/v1/config.proto",
    "fleetpmu/v1/shim_telemetry.proto", "fleetpmu/v1/ingest.proto",
    "fleetpmu/v1/query.proto",
};

const FileDescriptor* ContractFile(const char* name) {
  // Touch each generated file so that its descriptor is in the generated pool.
  TelemetryReport::descriptor();
  ShimConfig::descriptor();
  ShimMessage::descriptor();
  AgentMessage::descriptor();
  GetCounterOwnershipRequest::descriptor();
  return DescriptorPool::generated_pool()->FindFileByName(name);
}

bool IsSecondOneofMember(const FieldDescriptor* field) {
  const google::protobuf::OneofDescriptor* oneof = field->real_containing_oneof();
  return oneof != nullptr && oneof->field(0) != field;
}

// Sets every field of `message` to a non-default value: scalars get a value derived from the
// field number, enums their last value, repeated fields and maps two elements, messages are
// filled recursively (to `depth`, which no contract message needs more than). Of each oneof
// only the first member is set (setting another would clear it).
void Fill(Message* message, int depth = 0) {
  ASSERT_LT(depth, 10) << "recursive message " << message->GetTypeName();
  const Descriptor* descriptor = message->GetDescriptor();
  const Reflection* reflection = message->GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    if (IsSecondOneofMember(field)) continue;
    const int n = field->number();
    const int copies = field->is_repeated() ? 2 : 1;
    for (int copy = 0; copy < copies; ++copy) {
      const int v = n + copy;
      switch (field->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32:
          field->is_repeated() ? reflection->AddInt32(message, field, v)
                               : reflection->SetInt32(message, field, -v);
          break;
        case FieldDescriptor::CPPTYPE_INT64:
          field->is_repeated() ? reflection->AddInt64(message, field, v)
                               : reflection->SetInt64(message, field, int64_t{1} << 40 | v);
          break;
        case FieldDescriptor::CPPTYPE_UINT32:
          field->is_repeated() ? reflection->AddUInt32(message, field, v)
                               : reflection->SetUInt32(message, field, 0x80000000u | v);
          break;
        case FieldDescriptor::CPPTYPE_UINT64:
          field->is_repeated() ? reflection->AddUInt64(message, field, v)
                               : reflection->SetUInt64(message, field, uint64_t{1} << 63 | v);
          break;
        case FieldDescriptor::CPPTYPE_DOUBLE:
          field->is_repeated() ? reflection->AddDouble(message, field, v + 0.25)
                               : reflection->SetDouble(message, field, v + 0.25);
          break;
        case FieldDescriptor::CPPTYPE_FLOAT:
          field->is_repeated() ? reflection->AddFloat(message, field, v + 0.5f)
                               : reflection->SetFloat(message, field, v + 0.5f);
          break;
        case FieldDescriptor::CPPTYPE_BOOL:
          field->is_repeated() ? reflection->AddBool(message, field, true)
                               : reflection->SetBool(message, field, true);
          break;
        case FieldDescriptor::CPPTYPE_STRING: {
          std::string value = absl::StrCat(field->name(), "-", v, "-\xc3\xa9\"\n");
          field->is_repeated() ? reflection->AddString(message, field, value)
                               : reflection->SetString(message, field, value);
          break;
        }
        case FieldDescriptor::CPPTYPE_ENUM: {
          const EnumDescriptor* type = field->enum_type();
          const int value = type->value(type->value_count() - 1)->number();
          field->is_repeated() ? reflection->AddEnumValue(message, field, value)
                               : reflection->SetEnumValue(message, field, value);
          break;
        }
        case FieldDescriptor::CPPTYPE_MESSAGE: {
          Message* child = field->is_repeated() ? reflection->AddMessage(message, field)
                                                : reflection->MutableMessage(message, field);
          if (field->is_map()) {
            // Distinct keys, or the two entries collapse into one.
            const FieldDescriptor* key = child->GetDescriptor()->map_key();
            ASSERT_EQ(key->cpp_type(), FieldDescriptor::CPPTYPE_STRING);
            child->GetReflection()->SetString(child, key, absl::StrCat("key", copy));
            const FieldDescriptor* value = child->GetDescriptor()->map_value();
            if (value->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
              child->GetReflection()->SetString(child, value, absl::StrCat("value", copy));
            } else {
              child->GetReflection()->SetUInt64(child, value, 1000 + copy);
            }
          } else {
            Fill(child, depth + 1);
          }
          break;
        }
      }
    }
  }
}

// Names of the fields of `message` (recursively) that are unset, for EveryFieldIsFilled.
void CollectUnset(const Message& message, const std::string& prefix,
                  std::vector<std::string>* unset) {
  const Descriptor* descriptor = message.GetDescriptor();
  const Reflection* reflection = message.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    if (IsSecondOneofMember(field)) continue;
    const std::string path = absl::StrCat(prefix, field->name());
    if (field->is_repeated()) {
      if (reflection->FieldSize(message, field) == 0) unset->push_back(path);
      if (reflection->FieldSize(message, field) > 0 && !field->is_map() &&
          field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        CollectUnset(reflection->GetRepeatedMessage(message, field, 0), path + ".", unset);
      }
    } else if (!reflection->HasField(message, field)) {
      unset->push_back(path);
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      CollectUnset(reflection->GetMessage(message, field), path + ".", unset);
    }
  }
}

TEST(TelemetryTest, EveryFieldIsFilled) {
  TelemetryReport report;
  Fill(&report);
  std::vector<std::string> unset;
  CollectUnset(report, "", &unset);
  EXPECT_TRUE(unset.empty()) << "unset: " << ::testing::PrintToString(unset);
  // One interval of a host carries every record kind.
  EXPECT_EQ(report.vms_size(), 2);
  EXPECT_EQ(report.vcpu_stats_size(), 2);
  EXPECT_EQ(report.overflow_events_size(), 2);
  EXPECT_EQ(report.ownership_size(), 2);
  EXPECT_EQ(report.host_counters_size(), 2);
  EXPECT_EQ(report.drops_size(), 2);
  EXPECT_TRUE(report.has_host_info());
  EXPECT_EQ(report.vcpu_stats(0).lost_by_reason(0).reason(), LOST_REASON_NOT_COUNTED);
}

TEST(TelemetryTest, FullReportRoundTripsThroughBinary) {
  TelemetryReport report;
  Fill(&report);
  std::string wire;
  ASSERT_TRUE(report.SerializeToString(&wire));
  TelemetryReport parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  EXPECT_TRUE(MessageDifferencer::Equals(report, parsed));
}

TEST(TelemetryTest, FullReportRoundTripsThroughTextFormat) {
  TelemetryReport report;
  Fill(&report);
  std::string text;
  ASSERT_TRUE(google::protobuf::TextFormat::PrintToString(report, &text));
  TelemetryReport parsed;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &parsed)) << text;
  EXPECT_TRUE(MessageDifferencer::Equals(report, parsed));
}

TEST(TelemetryTest, ReportInsideBatchAndShimMessageRoundTrips) {
  AgentMessage agent_message;
  Batch* batch = agent_message.mutable_batch();
  batch->set_agent_epoch(1732500000000000000);
  batch->set_seq(1);
  Fill(batch->add_reports());
  Fill(batch->add_agent_drops());
  ShimMessage shim_message;
  *shim_message.mutable_report() = batch->reports(0);
  shim_message.set_seq(7);

  AgentMessage agent_parsed;
  ASSERT_TRUE(agent_parsed.ParseFromString(agent_message.SerializeAsString()));
  EXPECT_TRUE(MessageDifferencer::Equals(agent_message, agent_parsed));
  ShimMessage shim_parsed;
  ASSERT_TRUE(shim_parsed.ParseFromString(shim_message.SerializeAsString()));
  EXPECT_TRUE(MessageDifferencer::Equals(shim_message, shim_parsed));
  EXPECT_EQ(shim_parsed.body_case(), ShimMessage::kReport);
}

// Every message of the contract, not only the telemetry ones, survives both encodings.
TEST(TelemetryTest, EveryContractMessageRoundTrips) {
  int messages = 0;
  for (const char* file_name : kContractFiles) {
    const FileDescriptor* file = ContractFile(file_name);
    ASSERT_NE(file, nullptr) << file_name;
    for (int i = 0; i < file->message_type_count(); ++i) {
      const Descriptor* descriptor = file->message_type(i);
      SCOPED_TRACE(descriptor->full_name());
      const Message* prototype =
          google::protobuf::MessageFactory::generated_factory()->GetPrototype(descriptor);
      std::unique_ptr<Message> original(prototype->New());
      Fill(original.get());
      std::unique_ptr<Message> binary(prototype->New());
      ASSERT_TRUE(binary->ParseFromString(original->SerializeAsString()));
      EXPECT_TRUE(MessageDifferencer::Equals(*original, *binary));
      std::string text;
      ASSERT_TRUE(google::protobuf::TextFormat::PrintToString(*original, &text));
      std::unique_ptr<Message> from_text(prototype->New());
      ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(text, from_text.get()));
      EXPECT_TRUE(MessageDifferencer::Equals(*original, *from_text));
      ++messages;
    }
  }
  EXPECT_GT(messages, 40);
}

// PMU.md section 5 names these reasons; the kvm backend adds the last two.
TEST(TelemetryTest, LostReasonHasAValueForEveryReasonOfPmuMdSection5) {
  const char* const kReasons[] = {
      "flag_cleared_unseen",       "flag_left_for_other_owner", "interrupt_disabled_at_put",
      "counter_not_loaded",        "host_clobbered",
      // Not in section 5's list but needed by the kvm canary and by seed-v5 without FGT.
      "irq_missing",               "not_counted",
  };
  const EnumDescriptor* lost_reason = LostReason_descriptor();
  for (const char* reason : kReasons) {
    const std::string name = absl::StrCat("LOST_REASON_", absl::AsciiStrToUpper(reason));
    EXPECT_NE(lost_reason->FindValueByName(name), nullptr) << name;
  }
  EXPECT_EQ(lost_reason->value_count(), 1 + static_cast<int>(std::size(kReasons)))
      << "a new LostReason needs a line here and in docs/proto.md";
}

TEST(TelemetryTest, OverflowClassHasTheFourClassesOfPmuMdSection5) {
  for (const char* name : {"OVERFLOW_CLASS_DELIVERED", "OVERFLOW_CLASS_COALESCED",
                           "OVERFLOW_CLASS_LOST", "OVERFLOW_CLASS_PENDING"}) {
    EXPECT_NE(OverflowClass_descriptor()->FindValueByName(name), nullptr) << name;
  }
}

TEST(TelemetryTest, EveryEnumStartsWithUnspecifiedZero) {
  std::vector<const EnumDescriptor*> enums;
  for (const char* file_name : kContractFiles) {
    const FileDescriptor* file = ContractFile(file_name);
    ASSERT_NE(file, nullptr) << file_name;
    for (int i = 0; i < file->enum_type_count(); ++i) enums.push_back(file->enum_type(i));
    for (int i = 0; i < file->message_type_count(); ++i) {
      const Descriptor* message = file->message_type(i);
      for (int j = 0; j < message->enum_type_count(); ++j) {
        enums.push_back(message->enum_type(j));
      }
    }
  }
  ASSERT_FALSE(enums.empty());
  for (const EnumDescriptor* type : enums) {
    const google::protobuf::EnumValueDescriptor* zero = type->FindValueByNumber(0);
    ASSERT_NE(zero, nullptr) << type->full_name();
    EXPECT_TRUE(absl::EndsWith(zero->name(), "UNSPECIFIED")) << type->full_name();
  }
}

}  // namespace
}  // namespace fleetpmu::v1
