// TuningCache: which conv implementation won the tuning of each shape on one device model, in
// memory and, when a directory is given, in a small text file that survives restarts. Plain C++
// (no HIP): ConvKernels owns one per device.
//
// Shapes are keyed by N bucket (ShapeKey): the batch size rounded up to a power of two, so that
// a new batch size in a bucket already tuned does not tune again ("mb8_..." stands for N 5..8).
//
// File: <dir>/conv-tuning-<device name, [A-Za-z0-9._-] kept, other bytes as '_'>.txt
//   sparkle-conv-tuning 2
//   device <device name as the driver reports it>
//   <implementation>\t<microseconds per launch>\t<shape key>
// one line per shape, sorted by key. Format 1 (keys by exact N, before the buckets) is not read:
// it is ignored with a warning and replaced at the next Store, and its shapes are tuned again.
// Every Store rewrites the file atomically (a temporary file in the same directory, then
// rename), so a crash never leaves half a file. A file that does not
// parse, or that names another device, is ignored with a warning (and replaced at the next
// Store); it never fails the daemon.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "engine/core/conv2d_params.h"

namespace sparkle::hip {

class TuningCache {
 public:
  // dir "" = memory only. Loads the file for device_name from dir when it exists.
  TuningCache(std::string device_name, std::string dir);

  // The implementation chosen for shape_key, if any.
  std::optional<std::string> Lookup(const std::string& shape_key) const;

  // Records the choice (microseconds: the measured time per launch, >= 0) and, with a
  // directory, rewrites the file. The memory entry is kept even when the write fails; the
  // error (logged as a warning) is returned.
  absl::Status Store(const std::string& shape_key, const std::string& implementation,
                     double microseconds);

  // Forgets shape_key (an entry naming an implementation this build does not have).
  void Erase(const std::string& shape_key);

  // The file ("" when memory only) and why it was not loaded (OK when it was, or was absent).
  const std::string& path() const { return path_; }
  const absl::Status& load_status() const { return load_status_; }
  size_t size() const;

  // The N bucket of a batch size: the next power of two >= n (1, 2, 4, 8, ...). n >= 1.
  static int64_t NBucket(int64_t n);
  // The key of p's tuning entry: p.ToString() with n replaced by NBucket(p.n).
  static std::string ShapeKey(const Conv2dParams& p);

  // The file name for a device: "conv-tuning-<sanitised name>.txt".
  static std::string FileName(const std::string& device_name);

 private:
  struct Entry {
    std::string implementation;
    double microseconds = 0;
  };
  absl::Status Load();
  absl::Status WriteLocked() const;

  const std::string device_name_;
  const std::string path_;
  absl::Status load_status_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;  // guarded by mu_
};

}  // namespace sparkle::hip
