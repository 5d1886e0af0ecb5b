#include "proto/fleetpmu/config/text_config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/text_format.h"

namespace fleetpmu::config {
namespace {

using google::protobuf::io::ColumnNumber;

// Keeps the first error the parser reports; the parser stops at the first one anyway, and a
// second message would only describe the fallout of the first.
class FirstErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  struct Error {
    int line;  // 0-based, as the parser reports it
    ColumnNumber column;
    std::string message;
  };

  void AddError(int line, ColumnNumber column, const std::string& message) override {
    if (!first_) first_ = Error{line, column, message};
  }
  // Warnings (deprecated fields) do not stop a daemon from starting.
  void AddWarning(int, ColumnNumber, const std::string&) override {}

  const std::optional<Error>& first() const { return first_; }

 private:
  std::optional<Error> first_;
};

class IgnoreErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int, ColumnNumber, const std::string&) override {}
};

bool Before(int line, ColumnNumber column, int other_line, ColumnNumber other_column) {
  return line < other_line || (line == other_line && column < other_column);
}

// What the tokens before an error position say about it.
struct ErrorContext {
  // Dotted path of the field whose value was being parsed, e.g. "sim.pcpu_groups.n_counters";
  // empty if none.
  std::string field_path;
  // The last token before the error position.
  bool has_previous = false;
  int previous_line = 0;
  ColumnNumber previous_column = 0;
  std::string previous_text;
};

// The text parser knows the field it was parsing but does not say it in value errors, and it
// reports some errors at the token after the culprit. We re-tokenize the text up to the error
// position, tracking field names and nesting, with the parser's own tokenizer settings so that
// comments, strings and column numbers (a tab advances to the next multiple of 8) agree.
ErrorContext ContextAt(absl::string_view text, int line, ColumnNumber column) {
  google::protobuf::io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  IgnoreErrors ignore;
  google::protobuf::io::Tokenizer tokenizer(&input, &ignore);
  tokenizer.set_allow_f_after_float(true);
  tokenizer.set_comment_style(google::protobuf::io::Tokenizer::SH_COMMENT_STYLE);
  tokenizer.set_require_space_after_number(false);
  tokenizer.set_allow_multiline_strings(true);

  ErrorContext context;
  std::vector<std::string> nesting;  // enclosing message fields
  std::string field;                 // field whose value follows, at the current depth
  std::string candidate;             // identifier that may be a field name
  bool after_colon = false;
  while (tokenizer.Next()) {
    const auto& token = tokenizer.current();
    if (!Before(token.line, token.column, line, column)) break;
    context.has_previous = true;
    context.previous_line = token.line;
    context.previous_column = token.column;
    context.previous_text = token.text;
    const std::string& text_token = token.text;
    if (token.type == google::protobuf::io::Tokenizer::TYPE_IDENTIFIER) {
      // An identifier after ':' is a value (enum name, true/false), not a field name.
      if (!after_colon) candidate = text_token;
      after_colon = false;
      continue;
    }
    if (text_token == ":") {
      if (!candidate.empty()) field = candidate;
      candidate.clear();
      after_colon = true;
      continue;
    }
    if (text_token == "{" || text_token == "<") {
      // "name {" or "name: {" or the next element of "name: [{...}, {...}]".
      nesting.push_back(!candidate.empty() ? candidate : field);
      candidate.clear();
      field.clear();
    } else if (text_token == "}" || text_token == ">") {
      if (!nesting.empty()) {
        field = nesting.back();
        nesting.pop_back();
      }
      candidate.clear();
    }
    after_colon = false;
  }
  if (!field.empty()) {
    nesting.push_back(field);
    context.field_path = absl::StrJoin(nesting, ".");
  }
  return context;
}

// Turns the parser's error into "<line>:<column>: <message>[ (field <path>)]", 1-based.
std::string Describe(absl::string_view text, const FirstErrorCollector::Error& error) {
  ErrorContext context = ContextAt(text, error.line, error.column);
  int line = error.line;
  ColumnNumber column = error.column;
  // "no field named "x"" and "Unknown enumeration value of "X"" are reported at the token
  // after the culprit (possibly on the next line); point at the culprit instead.
  if (context.has_previous &&
      absl::StrContains(error.message, absl::StrCat("\"", context.previous_text, "\""))) {
    line = context.previous_line;
    column = context.previous_column;
  }
  std::string message = error.message;
  const std::string leaf = context.field_path.substr(context.field_path.rfind('.') + 1);
  // Messages about an unknown field already name it (the path would name the field before),
  // and some value errors name their field already.
  if (!context.field_path.empty() &&
      !absl::StrContains(error.message, "no field named") &&
      !absl::StrContains(error.message, absl::StrCat("\"", leaf, "\""))) {
    absl::StrAppend(&message, " (field ", context.field_path, ")");
  }
  return absl::StrCat(line + 1, ":", column + 1, ": ", message);
}

}  // namespace

absl::Status ParseTextConfig(std::string_view text_in, std::string_view source_name_in,
                             google::protobuf::Message* config) {
  // Debian's abseil has its own string_view type, distinct from std::string_view.
  const absl::string_view text(text_in.data(), text_in.size());
  const absl::string_view source_name(source_name_in.data(), source_name_in.size());
  config->Clear();
  google::protobuf::TextFormat::Parser parser;
  FirstErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  // Field numbers in place of names would make configs unreadable; unknown fields are typos.
  parser.AllowFieldNumber(false);
  parser.AllowUnknownField(false);
  google::protobuf::io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  if (parser.Parse(&input, config)) return absl::OkStatus();
  if (!errors.first()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ": not a valid ", config->GetTypeName(), " text proto"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(source_name, ":", Describe(text, *errors.first())));
}

absl::Status LoadTextConfig(const std::string& path, google::protobuf::Message* config) {
  const std::string context = absl::StrCat("cannot read config ", path);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, context);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int saved = errno;
    ::close(fd);
    return absl::ErrnoToStatus(saved, context);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(context, ": not a regular file"));
  }
  if (static_cast<std::size_t>(st.st_size) > kMaxConfigBytes) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(context, ": ", st.st_size,
                                                   " bytes, more than the limit of ",
                                                   kMaxConfigBytes));
  }
  std::string text;
  char buffer[8192];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      ::close(fd);
      return absl::ErrnoToStatus(saved, context);
    }
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
    // The file may grow between fstat and read.
    if (text.size() > kMaxConfigBytes) {
      ::close(fd);
      return absl::InvalidArgumentError(
          absl::StrCat(context, ": more than the limit of ", kMaxConfigBytes, " bytes"));
    }
  }
  ::close(fd);
  return ParseTextConfig(text, path, config);
}

}  // namespace fleetpmu::config
