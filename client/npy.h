// NumPy .npy files (format versions 1.0, 2.0 and 3.0) holding FP32 arrays: how sparklectl takes
// tensors in and hands results back without needing Python on the machine. Only what the wire
// carries is supported: dtype '<f4' (little-endian float32) in C order. Anything else (other
// dtypes, big-endian, fortran_order, object arrays) is rejected with INVALID_ARGUMENT naming the
// file and the fix, never converted silently. Spec:
// https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace sparkle::client {

// A dense FP32 array in C (row-major) order. `data` holds exactly NumElements() * 4 bytes,
// little-endian: the same bytes that go into raw_input_contents and come back in
// raw_output_contents, so no conversion happens between a file and the wire.
struct NpyArray {
  std::vector<int64_t> shape;  // empty for a 0-d (scalar) array
  std::string data;

  // Product of `shape` (1 for a scalar). Callers validate shapes before building an array, so
  // this does not check for overflow; ParseNpy does.
  int64_t NumElements() const;
  // The elements, copied out (for tests and checks; the hot paths move `data` as bytes).
  std::vector<float> ToFloats() const;
  // An array of `shape` holding `values`; INVALID_ARGUMENT if the counts differ.
  static absl::StatusOr<NpyArray> FromFloats(std::vector<int64_t> shape,
                                             absl::Span<const float> values);
};

// Parses the bytes of a whole .npy file. `name` (usually the path) prefixes every error message.
// INVALID_ARGUMENT for a bad magic string, an unknown format version, a malformed header, an
// unsupported dtype or order, or a data section whose size differs from the header's shape
// (truncated or with trailing bytes).
absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes, absl::string_view name);

// The bytes of a .npy file for `array`, as numpy.save writes them: format 1.0 (2.0 when the
// header exceeds 65535 bytes), header padded with spaces and a final '\n' so that the data
// starts at a multiple of 64 bytes. INVALID_ARGUMENT if data.size() != NumElements() * 4 or a
// dimension is negative.
absl::StatusOr<std::string> SerializeNpy(const NpyArray& array);

// ParseNpy over the file at `path`. NOT_FOUND / PERMISSION_DENIED / INTERNAL (I/O) name the path
// and the OS reason.
absl::StatusOr<NpyArray> ReadNpyFile(const std::string& path);

// SerializeNpy into `path`, replacing any existing file. Errors name the path and the reason.
absl::Status WriteNpyFile(const std::string& path, const NpyArray& array);

}  // namespace sparkle::client
