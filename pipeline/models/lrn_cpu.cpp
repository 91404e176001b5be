// The fused CPU kernel of pipeline/models/lrn.py: local response normalisation in one pass over the maps.
//
//   y_c = x_c d_c^-beta,  d_c = k + alpha/n sum_{j in w(c)} x_j^2,  w(c) = [c - n/2, c + (n-1)/2] in a group
//   dx_j = g_j d_j^-beta - 2 beta alpha/n x_j sum_{c : j in w(c)} g_c x_c d_c^(-beta-1)
//
// The torch-op version makes ~19 passes over the maps (squares, window GEMM, powers, products, each its own
// tensor). Here a block of pixels is copied into a small buffer, goes through all of it while it is in the
// core's cache, and its result is copied out: the maps are read once and written once. Nothing but the input
// is kept for the backward, which recomputes d from x (cheaper than writing d out and reading it back).
// Arithmetic is in float (double for double input) whatever the storage dtype, so bfloat16 and float16 maps
// are normalised as accurately as one rounding of the exact result allows.
//
// One buffer geometry serves both layouts. A block holds `channels` maps (one group) at `pixels` pixels; the
// element (c, p) sits at origin + c * step + p * stride, and the slots between elements are zero (past a
// partial block's last pixel: an earlier block's values, which are never written out). NCHW: a channel's
// pixels are contiguous (step = pixels, stride = 1), so a block is whole rows copied as they are.
// channels_last: a pixel's channels are contiguous (step = 1, stride = channels + n - 1), each pixel's run
// followed by n - 1 zeros. Either way the window around c is the slots at +-step: every pass below is one
// flat loop over the buffer, contiguous, with no edge cases (the zeros are the window's padding) and no
// transposes. The build is compiled for the CPU it runs on (lrn_kernel.py), so the loops vectorise with it.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kBufferSlots = 32768;  // floats per buffer: the five buffers of a block fit in a core's L2

struct Settings {
  int64_t size;  // n
  double alpha_over_n, beta, k;
  int64_t groups;
};

// The tensor as [batch, channels, pixels] with its strides (pixels flattened: NCHW or channels_last only).
struct Maps {
  int64_t batch, channels, pixels, batch_stride, channel_stride, pixel_stride;
  explicit Maps(const at::Tensor& x)
      : batch(x.size(0)), channels(x.size(1)),
        pixels(x.numel() / std::max<int64_t>(1, x.size(0) * x.size(1))),
        batch_stride(x.stride(0)), channel_stride(x.stride(1)), pixel_stride(x.stride(-1)) {}
  bool channels_last() const { return channel_stride == 1 && channels > 1; }
};

// Where a block's elements sit in its buffers (see the top of the file).
struct Geometry {
  int64_t channels, pixels, step, stride, origin, slots;
  Geometry(const Maps& m, int64_t channels, int64_t size) : channels(channels) {
    const int64_t pad = size - 1;  // zeros on each side of a window: n - 1 is enough for either direction
    if (m.channels_last()) {
      step = 1, stride = channels + pad;
      pixels = std::max<int64_t>(1, std::min(m.pixels, kBufferSlots / stride));
    } else {
      pixels = std::max<int64_t>(1, std::min(m.pixels, kBufferSlots / (channels + 2 * pad) / 16 * 16));
      step = pixels, stride = 1;
    }
    origin = pad * step;
    slots = origin + (channels - 1) * step + (pixels - 1) * stride + 1 + pad * step;
  }
  // The flat range the passes run over: from the first element to the last, window reads stay in the buffer.
  int64_t begin() const { return origin; }
  int64_t end() const { return slots - origin; }
};

// Copies `count` pixels of a block between the tensor and a buffer, one contiguous run at a time.
template <typename from_t, typename to_t>
void copy_runs(const from_t* from, int64_t from_run_stride, to_t* to, int64_t to_run_stride, int64_t runs,
               int64_t run_length) {
  for (int64_t r = 0; r < runs; ++r) {
    const from_t* in = from + r * from_run_stride;
    to_t* out = to + r * to_run_stride;
    for (int64_t i = 0; i < run_length; ++i) out[i] = to_t(in[i]);
  }
}

// Every pass below walks the buffer's flat range in tiles of kTile slots: the tile's window sums are built in
// a small array that stays in registers or L1, and the work on them is done before the next tile, so a pass
// reads and writes the L2-resident buffers once.
constexpr int64_t kTile = 64;

// sum[t] = sum_{u = -before}^{after} in[j + t + u * step] for the tile at j.
template <typename acc_t>
inline void window_sum(const acc_t* in, int64_t j, int64_t count, int64_t step, int64_t before, int64_t after,
                       acc_t* sum) {
  for (int64_t t = 0; t < count; ++t) sum[t] = in[j + t - before * step];
  for (int64_t u = 1 - before; u <= after; ++u) {
    const acc_t* row = in + j + u * step;
    for (int64_t t = 0; t < count; ++t) sum[t] += row[t];
  }
}

// d = k + alpha/n * sum -> scale = d^-beta and, if over_d is given, over_d = d^(-beta-1). The paper's
// beta = 3/4 as r sqrt(r) with r = 1/sqrt(d): pow costs ~8x more per element.
template <typename acc_t>
inline void powers(const acc_t* sum, int64_t count, const Settings& s, acc_t* scale, acc_t* over_d) {
  const acc_t k = acc_t(s.k), alpha_over_n = acc_t(s.alpha_over_n), beta = acc_t(s.beta);
  if (s.beta == 0.75) {
    for (int64_t t = 0; t < count; ++t) {
      const acc_t d = k + alpha_over_n * sum[t];
      const acc_t r = acc_t(1) / std::sqrt(d);
      scale[t] = r * std::sqrt(r);
      if (over_d) over_d[t] = scale[t] * r * r;
    }
  } else {
    for (int64_t t = 0; t < count; ++t) {
      const acc_t d = k + alpha_over_n * sum[t];
      scale[t] = std::pow(d, -beta);
      if (over_d) over_d[t] = scale[t] / d;
    }
  }
}

// One thread's buffers, all starting zero: the block's x and gradient, x^2, d^-beta (backward), the result.
template <typename acc_t>
struct Block {
  Geometry g;
  std::vector<acc_t> x, grad, work, scale, result;
  explicit Block(const Geometry& g)
      : g(g), x(g.slots), grad(g.slots), work(g.slots), scale(g.slots), result(g.slots) {}

  // Tensor -> buffer (the zero slots stay zero) and back, for `count` pixels from `in` / to `out`.
  template <typename scalar_t>
  void load(const Maps& m, const scalar_t* in, int64_t count, std::vector<acc_t>& to) {
    if (g.step == 1) copy_runs(in, m.pixel_stride, to.data() + g.origin, g.stride, count, g.channels);
    else copy_runs(in, m.channel_stride, to.data() + g.origin, g.step, g.channels, count);
  }
  template <typename scalar_t>
  void store(const Maps& m, int64_t count, scalar_t* out) const {
    if (g.step == 1) copy_runs(result.data() + g.origin, g.stride, out, m.pixel_stride, count, g.channels);
    else copy_runs(result.data() + g.origin, g.step, out, m.channel_stride, g.channels, count);
  }

  void squares() {
    for (int64_t j = g.begin(); j < g.end(); ++j) work[j] = x[j] * x[j];
  }

  // result = x d^-beta
  void forward(const Settings& s) {
    squares();
    acc_t sum[kTile], scale_tile[kTile];
    for (int64_t j = g.begin(); j < g.end(); j += kTile) {
      const int64_t count = std::min(kTile, g.end() - j);
      window_sum(work.data(), j, count, g.step, s.size / 2, (s.size - 1) / 2, sum);
      powers<acc_t>(sum, count, s, scale_tile, nullptr);
      for (int64_t t = 0; t < count; ++t) result[j + t] = x[j + t] * scale_tile[t];
    }
  }

  // result = dL/dx: g d^-beta - 2 beta alpha/n x sum_{c : j in w(c)} g_c x_c d_c^(-beta-1)
  void backward(const Settings& s) {
    squares();
    acc_t sum[kTile], over_d[kTile];
    for (int64_t j = g.begin(); j < g.end(); j += kTile) {  // result = g x d^(-beta-1), the inner terms
      const int64_t count = std::min(kTile, g.end() - j);
      window_sum(work.data(), j, count, g.step, s.size / 2, (s.size - 1) / 2, sum);
      powers<acc_t>(sum, count, s, scale.data() + j, over_d);
      for (int64_t t = 0; t < count; ++t) result[j + t] = grad[j + t] * x[j + t] * over_d[t];
    }
    const acc_t factor = acc_t(-2.0 * s.beta * s.alpha_over_n);
    // The window reversed: dx_j sums the inner terms of c in [j - (n-1)/2, j + n/2].
    for (int64_t j = g.begin(); j < g.end(); j += kTile) {
      const int64_t count = std::min(kTile, g.end() - j);
      window_sum(result.data(), j, count, g.step, (s.size - 1) / 2, s.size / 2, sum);
      for (int64_t t = 0; t < count; ++t) {
        work[j + t] = grad[j + t] * scale[j + t] + factor * x[j + t] * sum[t];
      }
    }
    std::swap(work, result);  // both keep zeros outside the flat range, as the next block needs
  }
};

// Runs body(block, offset of the block's first element in the tensor, pixel count) over every block of
// every (image, group), in parallel.
template <typename acc_t, typename F>
void for_each_block(const Maps& m, const Settings& s, F body) {
  const Geometry geometry(m, m.channels / s.groups, s.size);
  const int64_t pixel_blocks = (m.pixels + geometry.pixels - 1) / geometry.pixels;
  at::parallel_for(0, m.batch * s.groups * pixel_blocks, 1, [&](int64_t begin, int64_t end) {
    Block<acc_t> block(geometry);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t image = i / (s.groups * pixel_blocks), group = i / pixel_blocks % s.groups;
      const int64_t first_pixel = i % pixel_blocks * geometry.pixels;
      const int64_t offset = image * m.batch_stride + group * geometry.channels * m.channel_stride +
                             first_pixel * m.pixel_stride;
      body(block, offset, std::min(geometry.pixels, m.pixels - first_pixel));
    }
  });
}

Settings settings(const at::Tensor& x, int64_t size, double alpha, double beta, double k, int64_t groups) {
  TORCH_CHECK(x.dim() >= 3 && size >= 1 && groups >= 1 && x.size(1) % groups == 0 && k > 0,
              "alexnet_lrn: expected [B, C, *spatial] with C divisible by groups, size >= 1 and k > 0");
  TORCH_CHECK(x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "alexnet_lrn: the maps must be contiguous, NCHW or channels_last");
  return Settings{size, alpha / double(size), beta, k, groups};
}

at::Tensor lrn_forward(const at::Tensor& x, int64_t size, double alpha, double beta, double k,
                       int64_t groups) {
  const Settings s = settings(x, size, alpha, beta, k, groups);
  at::Tensor y = at::empty_like(x);
  const Maps m(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "lrn_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    scalar_t* out = y.mutable_data_ptr<scalar_t>();
    for_each_block<acc_t>(m, s, [&](Block<acc_t>& b, int64_t offset, int64_t count) {
      b.load(m, in + offset, count, b.x);
      b.forward(s);
      b.store(m, count, out + offset);
    });
  });
  return y;
}

at::Tensor lrn_backward(const at::Tensor& grad, const at::Tensor& x, int64_t size, double alpha, double beta,
                        double k, int64_t groups) {
  const Settings s = settings(x, size, alpha, beta, k, groups);
  TORCH_CHECK(grad.strides() == x.strides() && grad.scalar_type() == x.scalar_type(),
              "alexnet_lrn: the gradient must have the maps' layout and dtype");
  at::Tensor grad_x = at::empty_like(x);
  const Maps m(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "lrn_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *in = x.const_data_ptr<scalar_t>(), *g = grad.const_data_ptr<scalar_t>();
    scalar_t* out = grad_x.mutable_data_ptr<scalar_t>();
    for_each_block<acc_t>(m, s, [&](Block<acc_t>& b, int64_t offset, int64_t count) {
      b.load(m, in + offset, count, b.x);
      b.load(m, g + offset, count, b.grad);
      b.backward(s);
      b.store(m, count, out + offset);
    });
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY(alexnet_lrn, m) {
  m.def("forward(Tensor x, int size, float alpha, float beta, float k, int groups) -> Tensor");
  m.def("backward(Tensor grad, Tensor x, int size, float alpha, float beta, float k, int groups) -> Tensor");
}

TORCH_LIBRARY_IMPL(alexnet_lrn, CPU, m) {
  m.impl("forward", &lrn_forward);
  m.impl("backward", &lrn_backward);
}
