// TextTable: left-aligned columns for sparklectl's human-readable output (status, bench).
// Columns are as wide as their widest cell; numeric formatting is the caller's business.
#pragma once

#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace sparkle::client {

class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header) : header_(std::move(header)) {}

  // A row with fewer cells than the header is padded with empty cells; extra cells are kept
  // and widen the table.
  void AddRow(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  bool empty() const { return rows_.empty(); }

  // Writes the header and the rows, each line prefixed by `indent`, columns separated by two
  // spaces, without trailing blanks.
  void Print(std::ostream& out, const std::string& indent = "") const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace sparkle::client
