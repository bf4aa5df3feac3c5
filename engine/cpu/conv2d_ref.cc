#include "engine/cpu/conv2d_ref.h"

#include <cstdint>
#include <vector>

namespace sparkle {
namespace {

// count elements of p.dtype → double (exact).
std::vector<double> Widen(DataType type, const void* data, int64_t count) {
  std::vector<float> widened(count);
  WidenToFloat(type, data, widened.data(), count);
  return std::vector<double>(widened.begin(), widened.end());
}

}  // namespace

void Conv2dRef(const Conv2dParams& p, const void* input_data, const void* weight_data,
               const void* bias_data, void* output_data, const void* residual_data) {
  const int64_t out_h = p.p(), out_w = p.q();
  const int64_t group_c = p.c / p.groups, group_k = p.k / p.groups;
  const bool nhwc = p.layout == Layout::kNHWC;
  const std::vector<double> input = Widen(p.dtype, input_data, p.input_elements());
  const std::vector<double> weight = Widen(p.dtype, weight_data, p.weight_elements());
  const std::vector<double> bias = Widen(p.dtype, bias_data, p.bias_elements());
  const std::vector<double> residual = Widen(p.dtype, residual_data, p.residual_elements());
  std::vector<float> output(p.output_elements());
  auto input_at = [&](int64_t n, int64_t c, int64_t y, int64_t x) {
    return nhwc ? input[((n * p.h + y) * p.w + x) * p.c + c]
                : input[((n * p.c + c) * p.h + y) * p.w + x];
  };
  auto output_index = [&](int64_t n, int64_t k, int64_t y, int64_t x) {
    return nhwc ? ((n * out_h + y) * out_w + x) * p.k + k : ((n * p.k + k) * out_h + y) * out_w + x;
  };

  // One output plane is accumulated at a time with the pixel loop innermost: the same sums as
  // the textbook 7-loop form, but fast enough (~1.4 GFLOP/s) to check the whole shape table.
  std::vector<double> plane(out_h * out_w);
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t k = 0; k < p.k; ++k) {
      const int64_t first_c = (k / group_k) * group_c;
      const double init = p.has_bias ? bias[k] : 0.0;
      plane.assign(plane.size(), init);
      for (int64_t ci = 0; ci < group_c; ++ci) {
        for (int64_t r = 0; r < p.r; ++r) {
          for (int64_t s = 0; s < p.s; ++s) {
            const double wv = weight[((k * group_c + ci) * p.r + r) * p.s + s];
            for (int64_t y = 0; y < out_h; ++y) {
              const int64_t iy = y * p.stride_h - p.pad_top + r * p.dilation_h;
              if (iy < 0 || iy >= p.h) continue;
              for (int64_t x = 0; x < out_w; ++x) {
                const int64_t ix = x * p.stride_w - p.pad_left + s * p.dilation_w;
                if (ix < 0 || ix >= p.w) continue;
                plane[y * out_w + x] += wv * input_at(n, first_c + ci, iy, ix);
              }
            }
          }
        }
      }
      for (int64_t y = 0; y < out_h; ++y) {
        for (int64_t x = 0; x < out_w; ++x) {
          const int64_t at = output_index(n, k, y, x);
          double v = plane[y * out_w + x];
          if (p.has_residual) v += residual[at];
          output[at] = static_cast<float>(ApplyActivation(p.activation, v, p.clip_min, p.clip_max));
        }
      }
    }
  }
  NarrowFromFloat(p.output_dtype, output.data(), output_data, p.output_elements());
}

}  // namespace sparkle
