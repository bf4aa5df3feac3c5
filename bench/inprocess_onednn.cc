#include "bench/inprocess_onednn.h"

#include "oneapi/dnnl/dnnl.hpp"

namespace sparkle::bench {

using dnnl::memory;
using tag = memory::format_tag;

struct InProcessOneDnn::Impl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  dnnl::convolution_forward conv;
  dnnl::reorder src_reorder, dst_reorder;
  memory::desc user_src, user_dst;
  memory src, weights, dst;
  bool reorder_src = false, reorder_dst = false;
  std::string algorithm;
};

InProcessOneDnn::InProcessOneDnn(const Conv2dParams& p, const std::vector<float>& weight,
                                 bool winograd)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const memory::dims src_dims = {p.n, p.c, p.h, p.w}, dst_dims = {p.n, p.k, p.p(), p.q()};
  const memory::dims strides = {p.stride_h, p.stride_w};
  const memory::dims dilation = {p.dilation_h - 1, p.dilation_w - 1};
  const memory::dims pad_l = {p.pad_top, p.pad_left}, pad_r = {p.pad_bottom, p.pad_right};
  memory::dims w_dims = {p.k, p.c, p.r, p.s};
  tag w_tag = tag::oihw;
  if (p.groups > 1) {
    w_dims = {p.groups, p.k / p.groups, p.c / p.groups, p.r, p.s};
    w_tag = tag::goihw;
  }
  auto any = [](const memory::dims& d) { return memory::desc(d, memory::data_type::f32, tag::any); };
  auto make_pd = [&](dnnl::algorithm algo) {
    auto desc = dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, algo,
                                                any(src_dims), any(w_dims), any(dst_dims),
                                                strides, dilation, pad_l, pad_r);
    return dnnl::convolution_forward::primitive_desc(desc, m.engine);
  };
  dnnl::convolution_forward::primitive_desc pd;
  if (winograd) {
    try {
      pd = make_pd(dnnl::algorithm::convolution_winograd);
      m.algorithm = "winograd";
    } catch (const dnnl::error&) {
    }
  }
  if (!pd) {
    pd = make_pd(dnnl::algorithm::convolution_direct);
    m.algorithm = "direct";
  }
  m.algorithm += std::string(" (") + pd.impl_info_str() + ")";
  m.conv = dnnl::convolution_forward(pd);
  m.user_src = memory::desc(src_dims, memory::data_type::f32, tag::nchw);
  m.user_dst = memory::desc(dst_dims, memory::data_type::f32, tag::nchw);
  m.src = memory(pd.src_desc(), m.engine);
  m.dst = memory(pd.dst_desc(), m.engine);
  m.weights = memory(pd.weights_desc(), m.engine);
  memory user_w(memory::desc(w_dims, memory::data_type::f32, w_tag), m.engine,
                const_cast<float*>(weight.data()));
  dnnl::reorder(user_w, m.weights).execute(m.stream, user_w, m.weights);
  m.reorder_src = pd.src_desc() != m.user_src;
  m.reorder_dst = pd.dst_desc() != m.user_dst;
  if (m.reorder_src) m.src_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(m.engine, m.user_src, m.engine, pd.src_desc()));
  if (m.reorder_dst) m.dst_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(m.engine, pd.dst_desc(), m.engine, m.user_dst));
  m.stream.wait();
}

InProcessOneDnn::~InProcessOneDnn() = default;

void InProcessOneDnn::Run(const float* input, float* output) {
  Impl& m = *impl_;
  memory in(m.user_src, m.engine, const_cast<float*>(input));
  memory out(m.user_dst, m.engine, output);
  memory src = m.reorder_src ? m.src : in;
  memory dst = m.reorder_dst ? m.dst : out;
  if (m.reorder_src) m.src_reorder.execute(m.stream, in, m.src);
  m.conv.execute(m.stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, m.weights}, {DNNL_ARG_DST, dst}});
  if (m.reorder_dst) m.dst_reorder.execute(m.stream, m.dst, out);
  m.stream.wait();
}

const std::string& InProcessOneDnn::algorithm() const { return impl_->algorithm; }

}  // namespace sparkle::bench
