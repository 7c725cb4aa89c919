// RoIAlign (He et al., Mask R-CNN, ICCV 2017) on LibTorch ops, with torchvision.ops.roi_align's
// sampling semantics, and torchvision's MultiScaleRoIAlign (FPN level mapping, Lin et al. 2017 eq. 1).
//
// On the CPU a native kernel (torchvision's arithmetic; bilinear samples computed once per RoI and
// shared by every channel) wrapped in an autograd function whose backward is the adjoint kernel
// (itself differentiable). Elsewhere differentiable tensor ops: bilinear interpolation is separable,
// so every RoI gathers the rows x columns its samples touch and contracts them with per-axis weight
// matrices (out = Wy · F · Wxᵀ).
#pragma once

#include <torch/torch.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "osteonet/core/error.hpp"
#include "osteonet/detection/box_ops.hpp"

namespace osteonet::detection {

namespace detail_roi {

/// Sample positions along one axis -> (indices K x P x (G*2), weights K x P x (G*2)) with
/// torchvision's bilinear rules (samples outside [-1, size] contribute 0; clamping at the border).
inline std::pair<torch::Tensor, torch::Tensor> axis_weights(const torch::Tensor& start, const torch::Tensor& bin,
                                                            int64_t pooled, int64_t grid, int64_t size) {
  auto opts = start.options();
  auto p = torch::arange(pooled, opts).view({1, pooled, 1});
  auto g = (torch::arange(grid, opts) + 0.5).view({1, 1, grid});
  // torchvision: start + p * bin + (g + .5) * bin / grid
  auto pos = start.view({-1, 1, 1}) + p * bin.view({-1, 1, 1}) + g * bin.view({-1, 1, 1}) / static_cast<double>(grid);
  auto valid = (pos >= -1.0).logical_and(pos <= static_cast<double>(size));
  pos = pos.clamp_min(0);
  auto low = pos.floor().to(torch::kLong);
  auto at_end = low >= size - 1;
  low = torch::where(at_end, torch::full_like(low, size - 1), low);
  auto high = torch::where(at_end, low, low + 1);
  pos = torch::where(at_end, low.to(pos.dtype()), pos);
  auto l = pos - low.to(pos.dtype());
  auto h = 1.0 - l;
  auto scale = valid.to(pos.dtype()) / static_cast<double>(grid);
  auto idx = torch::stack({low, high}, -1).flatten(2);               // K x P x 2G
  auto w = torch::stack({h * scale, l * scale}, -1).flatten(2);      // K x P x 2G
  return {idx, w};
}

/// RoIAlign for RoIs sharing one sampling grid (gh x gw). feat: (N*H*W) x C rows (channels last).
inline torch::Tensor roi_align_grid(const torch::Tensor& feat_rows, int64_t H, int64_t W, const torch::Tensor& rois,
                                    int64_t ph, int64_t pw, double spatial_scale, int64_t gh, int64_t gw,
                                    bool aligned) {
  const int64_t K = rois.size(0), C = feat_rows.size(1);
  const double offset = aligned ? 0.5 : 0.0;
  auto batch = rois.select(1, 0).to(torch::kLong);
  auto x1 = rois.select(1, 1) * spatial_scale - offset, y1 = rois.select(1, 2) * spatial_scale - offset;
  auto x2 = rois.select(1, 3) * spatial_scale - offset, y2 = rois.select(1, 4) * spatial_scale - offset;
  auto rw = x2 - x1, rh = y2 - y1;
  if (!aligned) {
    rw = rw.clamp_min(1.0);
    rh = rh.clamp_min(1.0);
  }
  auto [yi, wy] = axis_weights(y1, rh / static_cast<double>(ph), ph, gh, H);  // K x ph x 2gh
  auto [xi, wx] = axis_weights(x1, rw / static_cast<double>(pw), pw, gw, W);  // K x pw x 2gw
  const int64_t R = ph * 2 * gh, S = pw * 2 * gw;
  // Block-diagonal weight matrices: Wy[k, p, r] nonzero only for the r of bin p.
  auto eye_h = torch::eye(ph, wy.options()).view({1, ph, ph, 1});
  auto Wy = (eye_h * wy.unsqueeze(1)).reshape({K, ph, R});
  auto eye_w = torch::eye(pw, wx.options()).view({1, pw, pw, 1});
  auto Wx = (eye_w * wx.unsqueeze(1)).reshape({K, pw, S});
  auto rows = yi.reshape({K, R, 1}), cols = xi.reshape({K, 1, S});
  auto flat = (batch.view({K, 1, 1}) * H + rows) * W + cols;                    // K x R x S
  auto patch = feat_rows.index_select(0, flat.reshape(-1)).view({K, R, S, C});  // K x R x S x C
  auto t = torch::matmul(Wx.unsqueeze(1), patch);                               // K x R x pw x C
  auto out = torch::bmm(Wy, t.reshape({K, R, pw * C})).view({K, ph, pw, C});
  return out.permute({0, 3, 1, 2});
}

/// roi_align on differentiable tensor ops (any device; used off the CPU): gathers per RoI the rows x
/// columns its samples touch and contracts them with per-axis weights.
inline torch::Tensor roi_align_ops(const torch::Tensor& input, const torch::Tensor& rois, std::array<int64_t, 2> output_size,
                               double spatial_scale = 1.0, int64_t sampling_ratio = -1, bool aligned = false) {
  OSTEONET_CHECK(input.dim() == 4, "roi_align: input must be N x C x H x W, got shape ", input.sizes());
  OSTEONET_CHECK(rois.dim() == 2 && rois.size(1) == 5, "roi_align: rois must be K x 5, got shape ", rois.sizes());
  const int64_t C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t ph = output_size[0], pw = output_size[1];
  const int64_t K = rois.size(0);
  auto out = torch::zeros({K, C, ph, pw}, input.options());
  if (K == 0) return out;
  auto r = rois.detach().to(input.dtype());
  auto feat_rows = input.permute({0, 2, 3, 1}).reshape({-1, C});
  // RoIs processed in chunks to bound the gathered patch memory (~64 MB).
  auto run = [&](const torch::Tensor& sel, int64_t gh, int64_t gw) {
    const int64_t per_roi = ph * 2 * gh * pw * 2 * gw * C;
    const int64_t chunk = std::max<int64_t>(1, (int64_t{16} << 20) / std::max<int64_t>(per_roi, 1));
    std::vector<torch::Tensor> parts;
    for (int64_t s = 0; s < sel.size(0); s += chunk) {
      auto idx = sel.narrow(0, s, std::min(chunk, sel.size(0) - s));
      parts.push_back(detail_roi::roi_align_grid(feat_rows, H, W, r.index_select(0, idx), ph, pw, spatial_scale, gh,
                                                 gw, aligned));
    }
    return torch::cat(parts, 0);
  };
  auto all = torch::arange(K, torch::TensorOptions().dtype(torch::kLong).device(input.device()));
  if (sampling_ratio > 0) return run(all, sampling_ratio, sampling_ratio);
  // Adaptive grids: group RoIs by their (gh, gw).
  const double offset = aligned ? 0.5 : 0.0;
  auto rw = r.select(1, 3) * spatial_scale - offset - (r.select(1, 1) * spatial_scale - offset);
  auto rh = r.select(1, 4) * spatial_scale - offset - (r.select(1, 2) * spatial_scale - offset);
  if (!aligned) {
    rw = rw.clamp_min(1.0);
    rh = rh.clamp_min(1.0);
  }
  auto gh = torch::ceil(rh / static_cast<double>(ph)).to(torch::kLong).clamp_min(0);
  auto gw = torch::ceil(rw / static_cast<double>(pw)).to(torch::kLong).clamp_min(0);
  auto key = (gh * (int64_t{1} << 20) + gw).to(torch::kCPU).contiguous();
  std::map<int64_t, std::vector<int64_t>> groups;
  for (int64_t k = 0; k < K; ++k) groups[key.data_ptr<int64_t>()[k]].push_back(k);
  std::vector<torch::Tensor> results;
  std::vector<torch::Tensor> indices;
  for (const auto& [kk, members] : groups) {
    const int64_t g_h = kk >> 20, g_w = kk & ((int64_t{1} << 20) - 1);
    auto sel = torch::tensor(members, torch::kLong).to(input.device());
    if (g_h == 0 || g_w == 0) continue;  // empty grid: torchvision outputs 0 (count clamps to 1)
    results.push_back(run(sel, g_h, g_w));
    indices.push_back(sel);
  }
  if (results.empty()) return out;
  return out.index_copy(0, torch::cat(indices), torch::cat(results));
}

/// One bilinear sample of torchvision's RoIAlign: the four neighbour offsets into a H*W plane and
/// their weights (all 0 for samples outside [-1, size]).
template <typename T>
struct Sample {
  int64_t p1, p2, p3, p4;
  T w1, w2, w3, w4;
};

/// Geometry of one RoI, torchvision's arithmetic in the input's scalar type T.
template <typename T>
struct RoiGeometry {
  int64_t batch = 0, grid_h = 0, grid_w = 0;
  T start_h = 0, start_w = 0, bin_h = 0, bin_w = 0, count = 1;
};

template <typename T>
RoiGeometry<T> roi_geometry(const T* roi, T spatial_scale, int64_t ph, int64_t pw, int64_t sampling_ratio,
                            bool aligned) {
  RoiGeometry<T> g;
  g.batch = static_cast<int64_t>(roi[0]);
  const T offset = aligned ? static_cast<T>(0.5) : static_cast<T>(0.0);
  g.start_w = roi[1] * spatial_scale - offset;
  g.start_h = roi[2] * spatial_scale - offset;
  const T end_w = roi[3] * spatial_scale - offset, end_h = roi[4] * spatial_scale - offset;
  T roi_w = end_w - g.start_w, roi_h = end_h - g.start_h;
  if (!aligned) {
    roi_w = std::max(roi_w, static_cast<T>(1.));
    roi_h = std::max(roi_h, static_cast<T>(1.));
  }
  g.bin_h = static_cast<T>(roi_h) / static_cast<T>(ph);
  g.bin_w = static_cast<T>(roi_w) / static_cast<T>(pw);
  g.grid_h = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(roi_h / static_cast<T>(ph)));
  g.grid_w = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(roi_w / static_cast<T>(pw)));
  g.count = static_cast<T>(std::max<int64_t>(g.grid_h * g.grid_w, 1));
  return g;
}

/// Every sample of one RoI in (ph, pw, iy, ix) order, as torchvision's pre_calc_for_bilinear_interpolate.
template <typename T>
void roi_samples(const RoiGeometry<T>& g, int64_t H, int64_t W, int64_t ph, int64_t pw, std::vector<Sample<T>>& out) {
  out.clear();
  out.reserve(static_cast<size_t>(ph * pw * std::max<int64_t>(g.grid_h, 0) * std::max<int64_t>(g.grid_w, 0)));
  for (int64_t py = 0; py < ph; ++py)
    for (int64_t px = 0; px < pw; ++px)
      for (int64_t iy = 0; iy < g.grid_h; ++iy) {
        const T yy = g.start_h + static_cast<T>(py) * g.bin_h +
                     static_cast<T>(static_cast<float>(iy) + .5f) * g.bin_h / static_cast<T>(g.grid_h);
        for (int64_t ix = 0; ix < g.grid_w; ++ix) {
          const T xx = g.start_w + static_cast<T>(px) * g.bin_w +
                       static_cast<T>(static_cast<float>(ix) + .5f) * g.bin_w / static_cast<T>(g.grid_w);
          T x = xx, y = yy;
          if (y < -1.0 || y > static_cast<T>(H) || x < -1.0 || x > static_cast<T>(W)) {
            out.push_back({0, 0, 0, 0, 0, 0, 0, 0});
            continue;
          }
          if (y <= 0) y = 0;
          if (x <= 0) x = 0;
          auto y_low = static_cast<int64_t>(y), x_low = static_cast<int64_t>(x);
          int64_t y_high, x_high;
          if (y_low >= H - 1) {
            y_high = y_low = H - 1;
            y = static_cast<T>(y_low);
          } else {
            y_high = y_low + 1;
          }
          if (x_low >= W - 1) {
            x_high = x_low = W - 1;
            x = static_cast<T>(x_low);
          } else {
            x_high = x_low + 1;
          }
          const T ly = y - static_cast<T>(y_low), lx = x - static_cast<T>(x_low);
          const T hy = static_cast<T>(1.) - ly, hx = static_cast<T>(1.) - lx;
          out.push_back({y_low * W + x_low, y_low * W + x_high, y_high * W + x_low, y_high * W + x_high, hy * hx,
                         hy * lx, ly * hx, ly * lx});
        }
      }
}

/// Forward kernel on CPU tensors (rois K x 5 and output K x C x ph x pw contiguous): RoIs in parallel, samples
/// computed once per RoI and shared by all channels. `input` is N x C x H x W contiguous, or with
/// `channels_last` channels-last contiguous (element (n, c, h, w) at ((n H + h) W + w) C + c), where the four
/// neighbours of a sample are C contiguous values and the channel loop vectorises; per output element the
/// same operations in the same order either way.
template <typename T>
void roi_align_forward_cpu(const torch::Tensor& input, const torch::Tensor& rois, torch::Tensor& output, T scale,
                           int64_t ph, int64_t pw, int64_t sampling_ratio, bool aligned, bool channels_last = false) {
  const int64_t C = input.size(1), H = input.size(2), W = input.size(3), K = rois.size(0);
  const T* in = input.data_ptr<T>();
  const T* r = rois.data_ptr<T>();
  T* out = output.data_ptr<T>();
  at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
    std::vector<Sample<T>> samples;
    std::vector<T> acc(static_cast<size_t>(channels_last ? C : 0));
    for (int64_t k = begin; k < end; ++k) {
      const auto g = roi_geometry<T>(r + k * 5, scale, ph, pw, sampling_ratio, aligned);
      roi_samples<T>(g, H, W, ph, pw, samples);
      const int64_t per_bin = g.grid_h * g.grid_w;
      T* o = out + k * C * ph * pw;
      if (channels_last) {
        const T* image = in + g.batch * H * W * C;
        const Sample<T>* s = samples.data();
        for (int64_t b = 0; b < ph * pw; ++b) {
          T* v = acc.data();
          std::fill(acc.begin(), acc.end(), T(0));
          for (int64_t i = 0; i < per_bin; ++i, ++s) {
            const T *a1 = image + s->p1 * C, *a2 = image + s->p2 * C, *a3 = image + s->p3 * C, *a4 = image + s->p4 * C;
            const T w1 = s->w1, w2 = s->w2, w3 = s->w3, w4 = s->w4;
            for (int64_t c = 0; c < C; ++c) v[c] += w1 * a1[c] + w2 * a2[c] + w3 * a3[c] + w4 * a4[c];
          }
          for (int64_t c = 0; c < C; ++c) o[c * ph * pw + b] = v[c] / g.count;
        }
        continue;
      }
      for (int64_t c = 0; c < C; ++c, o += ph * pw) {
        const T* plane = in + (g.batch * C + c) * H * W;
        const Sample<T>* s = samples.data();
        for (int64_t b = 0; b < ph * pw; ++b) {
          T v = 0.;
          for (int64_t i = 0; i < per_bin; ++i, ++s)
            v += s->w1 * plane[s->p1] + s->w2 * plane[s->p2] + s->w3 * plane[s->p3] + s->w4 * plane[s->p4];
          o[b] = v / g.count;
        }
      }
    }
  });
}

/// Whether the channels-last kernels pay for a map of `shape` (N x C x H x W): it is stored channels-last
/// already, or the RoIs' bilinear taps (4 per sample) outnumber the map's elements per channel, so that one
/// transposition of the map costs less than the strided gathers (or scatters) it saves
/// (benchmarks/bench_training.py, cell roi_align).
inline bool roi_align_channels_last(torch::IntArrayRef shape, int64_t num_rois, int64_t ph, int64_t pw,
                                    int64_t sampling_ratio, bool stored_channels_last = false) {
  if (shape[1] < 8) return false;  // too few channels to vectorise
  if (stored_channels_last) return true;
  const int64_t samples = sampling_ratio > 0 ? sampling_ratio * sampling_ratio : 1;  // adaptive: at least one
  return num_rois * ph * pw * samples * 4 >= shape[0] * shape[2] * shape[3];
}

/// Backward kernel (adjoint of the forward): scatters grad (K x C x ph x pw) into grad_input (N x C x H x W
/// zeroed; channels-last contiguous with `channels_last`, where each sample's four neighbours are C contiguous
/// values). Channels in parallel (disjoint elements); per element the additions run in torchvision's order
/// (RoI, bin, sample) either way.
template <typename T>
void roi_align_backward_cpu(const torch::Tensor& grad, const torch::Tensor& rois, torch::Tensor& grad_input, T scale,
                            int64_t ph, int64_t pw, int64_t sampling_ratio, bool aligned, bool channels_last = false) {
  const int64_t C = grad_input.size(1), H = grad_input.size(2), W = grad_input.size(3), K = rois.size(0);
  const T* go = grad.data_ptr<T>();
  const T* r = rois.data_ptr<T>();
  T* gi = grad_input.data_ptr<T>();
  at::parallel_for(0, C, 1, [&](int64_t c_begin, int64_t c_end) {
    std::vector<Sample<T>> samples;
    std::vector<T> gb(static_cast<size_t>(channels_last ? c_end - c_begin : 0));
    for (int64_t k = 0; k < K; ++k) {
      const auto g = roi_geometry<T>(r + k * 5, scale, ph, pw, sampling_ratio, aligned);
      roi_samples<T>(g, H, W, ph, pw, samples);
      const int64_t per_bin = g.grid_h * g.grid_w;
      if (channels_last) {
        T* image = gi + g.batch * H * W * C + c_begin;
        const T* gk = go + (k * C + c_begin) * ph * pw;
        const int64_t n = c_end - c_begin;
        const Sample<T>* s = samples.data();
        for (int64_t b = 0; b < ph * pw; ++b) {
          for (int64_t c = 0; c < n; ++c) gb[c] = gk[c * ph * pw + b];
          for (int64_t i = 0; i < per_bin; ++i, ++s) {
            if (s->w1 == 0 && s->w2 == 0 && s->w3 == 0 && s->w4 == 0) continue;
            for (const auto& [pos, w] : {std::pair<int64_t, T>{s->p1, s->w1}, {s->p2, s->w2}, {s->p3, s->w3},
                                         {s->p4, s->w4}}) {
              T* dst = image + pos * C;
              for (int64_t c = 0; c < n; ++c) dst[c] += gb[c] * w / g.count;
            }
          }
        }
        continue;
      }
      for (int64_t c = c_begin; c < c_end; ++c) {
        T* plane = gi + (g.batch * C + c) * H * W;
        const T* gk = go + (k * C + c) * ph * pw;
        const Sample<T>* s = samples.data();
        for (int64_t b = 0; b < ph * pw; ++b) {
          const T gb = gk[b];
          for (int64_t i = 0; i < per_bin; ++i, ++s) {
            if (s->w1 == 0 && s->w2 == 0 && s->w3 == 0 && s->w4 == 0) continue;
            plane[s->p1] += gb * s->w1 / g.count;
            plane[s->p2] += gb * s->w2 / g.count;
            plane[s->p3] += gb * s->w3 / g.count;
            plane[s->p4] += gb * s->w4 / g.count;
          }
        }
      }
    }
  });
}

/// Parameters shared by the autograd functions.
struct RoiAlignParams {
  int64_t ph, pw, sampling_ratio;
  double spatial_scale;
  bool aligned;
};

inline torch::Tensor roi_align_forward_kernel(const torch::Tensor& input, const torch::Tensor& rois,
                                              const RoiAlignParams& p) {
  auto r = rois.to(input.dtype()).contiguous();
  auto out = torch::empty({r.size(0), input.size(1), p.ph, p.pw}, input.options());
  const bool channels_last = roi_align_channels_last(
      input.sizes(), r.size(0), p.ph, p.pw, p.sampling_ratio,
      input.is_contiguous(torch::MemoryFormat::ChannelsLast) && !input.is_contiguous());
  auto x = input.contiguous(channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "roi_align_forward", [&] {
    roi_align_forward_cpu<scalar_t>(x, r, out, static_cast<scalar_t>(p.spatial_scale), p.ph, p.pw, p.sampling_ratio,
                                    p.aligned, channels_last);
  });
  return out;
}

inline torch::Tensor roi_align_backward_kernel(const torch::Tensor& grad, const torch::Tensor& rois,
                                               torch::IntArrayRef input_shape, const RoiAlignParams& p) {
  auto g = grad.contiguous();
  auto r = rois.to(g.dtype()).contiguous();
  const bool channels_last = roi_align_channels_last(input_shape, r.size(0), p.ph, p.pw, p.sampling_ratio);
  // (torch::zeros drops a memory format given in its options; empty honours it)
  auto gi = torch::empty(input_shape, g.options(), channels_last ? torch::MemoryFormat::ChannelsLast
                                                                 : torch::MemoryFormat::Contiguous).zero_();
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "roi_align_backward", [&] {
    roi_align_backward_cpu<scalar_t>(g, r, gi, static_cast<scalar_t>(p.spatial_scale), p.ph, p.pw, p.sampling_ratio,
                                     p.aligned, channels_last);
  });
  return gi.contiguous();  // the layout the input gradient always had
}

inline RoiAlignParams params_of(torch::autograd::AutogradContext* ctx) {
  return {ctx->saved_data["ph"].toInt(), ctx->saved_data["pw"].toInt(), ctx->saved_data["sr"].toInt(),
          ctx->saved_data["scale"].toDouble(), ctx->saved_data["aligned"].toBool()};
}

inline void save_params(torch::autograd::AutogradContext* ctx, const RoiAlignParams& p) {
  ctx->saved_data["ph"] = p.ph;
  ctx->saved_data["pw"] = p.pw;
  ctx->saved_data["sr"] = p.sampling_ratio;
  ctx->saved_data["scale"] = p.spatial_scale;
  ctx->saved_data["aligned"] = p.aligned;
}

/// grad_output -> grad_input; its own backward is the forward (the map is linear), so second
/// derivatives exist.
class RoIAlignBackwardFunction : public torch::autograd::Function<RoIAlignBackwardFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& grad,
                               const torch::Tensor& rois, std::vector<int64_t> input_shape, int64_t ph, int64_t pw,
                               int64_t sampling_ratio, double spatial_scale, bool aligned);
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads);
};

/// Differentiable RoIAlign on the CPU kernels (gradients w.r.t. the input only).
class RoIAlignFunction : public torch::autograd::Function<RoIAlignFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& rois, int64_t ph, int64_t pw, int64_t sampling_ratio,
                               double spatial_scale, bool aligned) {
    const RoiAlignParams p{ph, pw, sampling_ratio, spatial_scale, aligned};
    save_params(ctx, p);
    ctx->saved_data["shape"] = input.sizes().vec();
    ctx->save_for_backward({rois});
    return roi_align_forward_kernel(input, rois, p);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto p = params_of(ctx);
    auto rois = ctx->get_saved_variables()[0];
    auto gi = RoIAlignBackwardFunction::apply(grads[0], rois, ctx->saved_data["shape"].toIntVector(), p.ph, p.pw,
                                              p.sampling_ratio, p.spatial_scale, p.aligned);
    return {gi, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

inline torch::Tensor RoIAlignBackwardFunction::forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& grad,
                                                       const torch::Tensor& rois, std::vector<int64_t> input_shape,
                                                       int64_t ph, int64_t pw, int64_t sampling_ratio,
                                                       double spatial_scale, bool aligned) {
  const RoiAlignParams p{ph, pw, sampling_ratio, spatial_scale, aligned};
  save_params(ctx, p);
  ctx->save_for_backward({rois});
  return roi_align_backward_kernel(grad, rois, input_shape, p);
}

inline torch::autograd::variable_list RoIAlignBackwardFunction::backward(torch::autograd::AutogradContext* ctx,
                                                                         torch::autograd::variable_list grads) {
  const auto p = params_of(ctx);
  auto rois = ctx->get_saved_variables()[0];
  auto gg = RoIAlignFunction::apply(grads[0], rois, p.ph, p.pw, p.sampling_ratio, p.spatial_scale, p.aligned);
  return {gg,
          torch::Tensor(),
          torch::Tensor(),
          torch::Tensor(),
          torch::Tensor(),
          torch::Tensor(),
          torch::Tensor(),
          torch::Tensor()};
}

}  // namespace detail_roi

/// torchvision.ops.roi_align: input N x C x H x W, rois K x 5 (batch index, x1, y1, x2, y2) in input
/// coordinates before `spatial_scale`; returns K x C x ph x pw. sampling_ratio <= 0: adaptive
/// (ceil(roi size / output size) samples per bin, per RoI). Gradients flow to `input` only (also
/// second order). On the CPU a native kernel with torchvision's arithmetic (samples precomputed
/// per RoI, shared by the channels); elsewhere differentiable tensor ops (detail_roi::roi_align_ops).
/// float16 / bfloat16 inputs are computed in float32 and returned in their dtype.
inline torch::Tensor roi_align(const torch::Tensor& input, const torch::Tensor& rois, std::array<int64_t, 2> output_size,
                               double spatial_scale = 1.0, int64_t sampling_ratio = -1, bool aligned = false) {
  OSTEONET_CHECK(input.dim() == 4, "roi_align: input must be N x C x H x W, got shape ", input.sizes());
  OSTEONET_CHECK(rois.dim() == 2 && rois.size(1) == 5, "roi_align: rois must be K x 5, got shape ", rois.sizes());
  OSTEONET_CHECK(output_size[0] > 0 && output_size[1] > 0, "roi_align: output_size must be positive, got output_size=(",
                 output_size[0], ", ", output_size[1], ")");
  if (input.scalar_type() == torch::kHalf || input.scalar_type() == torch::kBFloat16 ||
      rois.scalar_type() == torch::kHalf || rois.scalar_type() == torch::kBFloat16) {
    // Reduced precision (float16 / bfloat16 maps, e.g. under autocast): computed in float32 with autocast
    // off and returned in the input's dtype, as torchvision's autocast rule for roi_align does; box
    // coordinates never round to half precision.
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    return roi_align(input.to(torch::kFloat), rois.to(torch::kFloat), output_size, spatial_scale, sampling_ratio,
                     aligned)
        .to(input.scalar_type());
  }
  const bool kernel = input.device().is_cpu() && rois.device().is_cpu() &&
                      (input.scalar_type() == torch::kFloat || input.scalar_type() == torch::kDouble);
  if (!kernel) return detail_roi::roi_align_ops(input, rois, output_size, spatial_scale, sampling_ratio, aligned);
  if (rois.size(0) > 0) {
    auto b = rois.select(1, 0).detach().to(torch::kDouble);
    OSTEONET_CHECK(b.min().item<double>() >= 0 && b.max().item<double>() < static_cast<double>(input.size(0)),
                   "roi_align: rois' batch indices must lie in [0, ", input.size(0), ")");
  }
  return detail_roi::RoIAlignFunction::apply(input, rois.detach(), output_size[0], output_size[1], sampling_ratio,
                                             spatial_scale, aligned);
}

/// torchvision's LevelMapper: FPN level of each box, k0 = 4 at canonical size 224, clamped to
/// [k_min, k_max], returned relative to k_min.
inline torch::Tensor map_levels(const std::vector<torch::Tensor>& boxes, int64_t k_min, int64_t k_max,
                                double canonical_scale = 224, double canonical_level = 4, double eps = 1e-6) {
  std::vector<torch::Tensor> areas;
  for (const auto& b : boxes) areas.push_back(box_area(b));
  auto s = torch::sqrt(torch::cat(areas));
  auto lv = torch::floor(canonical_level + torch::log2(s / canonical_scale) + eps);
  lv = torch::clamp(lv, static_cast<double>(k_min), static_cast<double>(k_max));
  return lv.to(torch::kLong) - k_min;
}

/// Scale (a power of two) of a feature map relative to the (largest) image size.
inline double infer_scale(const torch::Tensor& feature, std::array<int64_t, 2> image_size) {
  // torchvision: 2 ** round(log2(float32(h / H))), from the height.
  const auto approx = static_cast<float>(static_cast<double>(feature.size(-2)) / static_cast<double>(image_size[0]));
  const float l = std::log2(approx);
  return std::pow(2.0, static_cast<double>(std::nearbyint(l)));
}

/// torchvision's MultiScaleRoIAlign: pools each box from the FPN level its size maps to (or from
/// the only level). `features` are the maps selected by name, finest first.
inline torch::Tensor multiscale_roi_align(const std::vector<torch::Tensor>& features,
                                          const std::vector<torch::Tensor>& boxes,
                                          const std::vector<std::array<int64_t, 2>>& image_sizes,
                                          int64_t output_size = 7, int64_t sampling_ratio = 2) {
  OSTEONET_CHECK(!features.empty(), "MultiScaleRoIAlign: no feature maps selected");
  int64_t max_h = 0, max_w = 0;
  for (const auto& s : image_sizes) {
    max_h = std::max(max_h, s[0]);
    max_w = std::max(max_w, s[1]);
  }
  std::vector<double> scales;
  for (const auto& f : features) scales.push_back(infer_scale(f, {max_h, max_w}));
  std::vector<torch::Tensor> rois_parts;
  for (size_t i = 0; i < boxes.size(); ++i) {
    auto ids = torch::full({boxes[i].size(0), 1}, static_cast<double>(i), boxes[i].options());
    rois_parts.push_back(torch::cat({ids, boxes[i]}, 1));
  }
  auto rois = torch::cat(rois_parts, 0);
  const std::array<int64_t, 2> out_sz{output_size, output_size};
  if (features.size() == 1) return roi_align(features[0], rois, out_sz, scales[0], sampling_ratio);
  const auto lvl_min = static_cast<int64_t>(-std::log2(scales.front()));
  const auto lvl_max = static_cast<int64_t>(-std::log2(scales.back()));
  auto levels = map_levels(boxes, lvl_min, lvl_max);
  const int64_t C = features[0].size(1);
  std::vector<torch::Tensor> level_idx;
  for (size_t l = 0; l < features.size(); ++l) level_idx.push_back(torch::where(levels == static_cast<int64_t>(l))[0]);
  for (size_t l = 0; l < features.size(); ++l)  // all RoIs on one level: no scatter needed
    if (level_idx[l].numel() == rois.size(0)) return roi_align(features[l], rois, out_sz, scales[l], sampling_ratio);
  // Every RoI maps to exactly one level, so every row of `result` is written.
  auto result = torch::empty({rois.size(0), C, output_size, output_size}, features[0].options());
  for (size_t l = 0; l < features.size(); ++l) {
    const auto& idx = level_idx[l];
    if (idx.numel() == 0) continue;
    auto r = roi_align(features[l], rois.index_select(0, idx), out_sz, scales[l], sampling_ratio);
    result.index_copy_(0, idx, r);  // in place: autograd records it, no copy of the whole result
  }
  return result;
}

}  // namespace osteonet::detection
