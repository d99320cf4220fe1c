// Training-mode BatchNorm2d (batch statistics) fused with SiLU, for channels-last float32 CPU tensors.
//
// Seen as a [M = N*H*W, C] row-major matrix, a channels-last activation lets one pass over memory serve every channel.
// PyTorch runs the same layer as BN statistics, BN normalisation and SiLU (forward) and SiLU backward, BN backward
// (backward), each a separate pass that writes a full-size tensor; at training sizes these tensors do not fit in the
// cache, so the passes are memory-bound. Here the forward reads x twice and writes y once, and the backward recomputes
// the SiLU input from x instead of storing it (reads x and dy twice, writes dx once).
//
// Statistics are accumulated per thread in float over blocks of 8 rows (vector-wide float adds), shifted by a
// per-channel reference value (the first row) so the variance does not come from the difference of two large sums,
// and the blocks are summed in double: as accurate as PyTorch's own float BN or more (tests/test_bn_silu.py compares
// both against float64).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RTMDET_AVX2 1
#endif

namespace {

constexpr int64_t kFlushRows = 8;

int64_t row_grain(int64_t C) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)); }

#ifdef RTMDET_AVX2
// exp of 8 floats: Cody-Waite range reduction by ln 2 and the degree-5 polynomial of Cephes' expf (~1 ulp).
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3365478515625f)), _mm256_set1_ps(88.3762626647949f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline __m256 sigmoid8(__m256 z) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), z))));
}
#endif

inline float sigmoid1(float z) { return 1.0f / (1.0f + std::exp(-z)); }

// out[s * C + c] = sum over rows m of row(m)'s s-th value for channel c (nsums values per channel), in double.
template <typename RowFn>
std::vector<double> channel_sums(int64_t M, int64_t C, int64_t nsums, const RowFn& row) {
  const int64_t width = nsums * C;
  const int nthreads = at::get_num_threads();
  std::vector<double> partial(static_cast<size_t>(nthreads * width), 0.0);
  at::parallel_for(0, M, row_grain(C), [&](int64_t begin, int64_t end) {
    double* acc = partial.data() + static_cast<size_t>(at::get_thread_num()) * width;
    std::vector<float> block(static_cast<size_t>(width), 0.0f);
    for (int64_t m = begin; m < end; ++m) {
      row(m, block.data());
      if ((m - begin) % kFlushRows == kFlushRows - 1 || m == end - 1) {
        for (int64_t i = 0; i < width; ++i) {
          acc[i] += block[i];
          block[i] = 0.0f;
        }
      }
    }
  });
  std::vector<double> out(static_cast<size_t>(width), 0.0);
  for (int t = 0; t < nthreads; ++t)
    for (int64_t i = 0; i < width; ++i) out[i] += partial[static_cast<size_t>(t * width + i)];
  return out;
}

// z = (x - mean) * scale + bias, with scale = weight * invstd. Subtracting the mean first keeps z exact to a few ulp
// even for channels whose mean is large against their spread (x * scale + (bias - mean * scale) cancels digits).
// y = silu(z), for one row of C values.
inline void silu_row(const float* x, const float* mean, const float* scale, const float* bias, float* y, int64_t C) {
  int64_t c = 0;
#ifdef RTMDET_AVX2
  for (; c + 8 <= C; c += 8) {
    const __m256 z = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(mean + c)),
                                     _mm256_loadu_ps(scale + c), _mm256_loadu_ps(bias + c));
    _mm256_storeu_ps(y + c, _mm256_mul_ps(z, sigmoid8(z)));
  }
  if (c < C) {  // the last C % 8 channels through a padded vector (C = 12, 24 in the stem): no scalar exp
    alignas(32) float t[4][8] = {};
    const int64_t n = C - c;
    std::copy(x + c, x + C, t[0]);
    std::copy(mean + c, mean + C, t[1]);
    std::copy(scale + c, scale + C, t[2]);
    std::copy(bias + c, bias + C, t[3]);
    silu_row(t[0], t[1], t[2], t[3], t[0], 8);
    std::copy(t[0], t[0] + n, y + c);
    return;
  }
#endif
  for (; c < C; ++c) {
    const float z = (x[c] - mean[c]) * scale[c] + bias[c];
    y[c] = z * sigmoid1(z);
  }
}

// dz = dy * silu'(z) with z as in silu_row, for one row of C values.
inline void silu_grad_row(const float* x, const float* dy, const float* mean, const float* scale, const float* bias,
                          float* dz, int64_t C) {
  int64_t c = 0;
#ifdef RTMDET_AVX2
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; c + 8 <= C; c += 8) {
    const __m256 z = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(mean + c)),
                                     _mm256_loadu_ps(scale + c), _mm256_loadu_ps(bias + c));
    const __m256 s = sigmoid8(z);
    const __m256 d = _mm256_mul_ps(s, _mm256_fmadd_ps(z, _mm256_sub_ps(one, s), one));
    _mm256_storeu_ps(dz + c, _mm256_mul_ps(_mm256_loadu_ps(dy + c), d));
  }
  if (c < C) {
    alignas(32) float t[5][8] = {};
    const int64_t n = C - c;
    std::copy(x + c, x + C, t[0]);
    std::copy(dy + c, dy + C, t[1]);
    std::copy(mean + c, mean + C, t[2]);
    std::copy(scale + c, scale + C, t[3]);
    std::copy(bias + c, bias + C, t[4]);
    silu_grad_row(t[0], t[1], t[2], t[3], t[4], t[0], 8);
    std::copy(t[0], t[0] + n, dz + c);
    return;
  }
#endif
  for (; c < C; ++c) {
    const float z = (x[c] - mean[c]) * scale[c] + bias[c];
    const float s = sigmoid1(z);
    dz[c] = dy[c] * s * (1.0f + z * (1.0f - s));
  }
}

// Rows per "wide row": few channels (12, 24 in the stem) make rows too short to vectorise, so k consecutive rows are
// treated as one row of k * C values with the per-channel constants repeated k times (k a power of 2 dividing M).
int64_t rows_per_wide_row(int64_t M, int64_t C) {
  int64_t k = 1;
  while (k * 2 * C <= 256 && M % (k * 2) == 0) k *= 2;
  return k;
}

std::vector<float> tiled(const std::vector<float>& v, int64_t k) {
  std::vector<float> out;
  out.reserve(v.size() * k);
  for (int64_t j = 0; j < k; ++j) out.insert(out.end(), v.begin(), v.end());
  return out;
}

// Per-channel totals of wide-row sums laid out [nsums][k][C].
std::vector<double> fold(const std::vector<double>& wide, int64_t nsums, int64_t k, int64_t C) {
  std::vector<double> out(static_cast<size_t>(nsums * C), 0.0);
  for (int64_t s = 0; s < nsums; ++s)
    for (int64_t j = 0; j < k; ++j)
      for (int64_t c = 0; c < C; ++c) out[s * C + c] += wide[(s * k + j) * C + c];
  return out;
}

void check(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32, name, " must be a float32 CPU tensor");
}

void check_activation(const torch::Tensor& t, const char* name) {
  check(t, name);
  TORCH_CHECK(t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast), name,
              " must be a 4-D channels-last tensor");
}

}  // namespace

// Returns (y, batch mean, batch invstd, biased batch variance); x is [N, C, H, W] channels-last.
std::vector<torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                   double eps) {
  check_activation(x, "x");
  check(weight, "weight");
  check(bias, "bias");
  const int64_t C = x.size(1), M = x.numel() / C;
  TORCH_CHECK(M > 0, "empty input");
  const int64_t k = rows_per_wide_row(M, C), W = k * C, rows = M / k;
  const float* px = x.data_ptr<float>();
  const std::vector<float> ref = tiled(std::vector<float>(px, px + C), k);  // shift of the shifted-data variance
  const std::vector<double> sums = fold(channel_sums(rows, W, 2, [&](int64_t m, float* acc) {
    const float* r = px + m * W;
    for (int64_t i = 0; i < W; ++i) {
      const float d = r[i] - ref[i];
      acc[i] += d;
      acc[W + i] += d * d;
    }
  }), 2, k, C);
  auto opts = x.options();
  torch::Tensor mean = torch::empty({C}, opts), invstd = torch::empty({C}, opts), var = torch::empty({C}, opts);
  std::vector<float> scale(C), mean_f(C);
  const float* w = weight.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double d = sums[c] / M;
    const double v = std::max(sums[C + c] / M - d * d, 0.0);
    const double mu = ref[c] + d;
    const double is = 1.0 / std::sqrt(v + eps);
    mean.data_ptr<float>()[c] = static_cast<float>(mu);
    invstd.data_ptr<float>()[c] = static_cast<float>(is);
    var.data_ptr<float>()[c] = static_cast<float>(v);
    scale[c] = static_cast<float>(w[c] * is);
    mean_f[c] = static_cast<float>(mu);
  }
  const std::vector<float> scale_w = tiled(scale, k), mean_w = tiled(mean_f, k);
  const std::vector<float> bias_w = tiled(std::vector<float>(b, b + C), k);
  torch::Tensor y = torch::empty_like(x);
  float* py = y.data_ptr<float>();
  at::parallel_for(0, rows, row_grain(W), [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m)
      silu_row(px + m * W, mean_w.data(), scale_w.data(), bias_w.data(), py + m * W, W);
  });
  return {y, mean, invstd, var};
}

// Returns (grad_x, grad_weight, grad_bias) from the forward's x, batch mean and invstd.
std::vector<torch::Tensor> backward(const torch::Tensor& dy, const torch::Tensor& x, const torch::Tensor& mean,
                                    const torch::Tensor& invstd, const torch::Tensor& weight,
                                    const torch::Tensor& bias) {
  check_activation(dy, "grad_output");
  check_activation(x, "x");
  TORCH_CHECK(dy.sizes() == x.sizes(), "grad_output and x differ in shape");
  const int64_t C = x.size(1), M = x.numel() / C;
  const float* px = x.data_ptr<float>();
  const float* pdy = dy.data_ptr<float>();
  const float* mu = mean.data_ptr<float>();
  const float* is = invstd.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  const int64_t k = rows_per_wide_row(M, C), W = k * C, rows = M / k;
  std::vector<float> scale(C);
  for (int64_t c = 0; c < C; ++c) scale[c] = w[c] * is[c];
  const std::vector<float> scale_w = tiled(scale, k), bias_w = tiled(std::vector<float>(b, b + C), k);
  const std::vector<float> mu_w = tiled(std::vector<float>(mu, mu + C), k);
  // Pass 1: sum(dz) and sum(dz * (x - mean)) per channel.
  const std::vector<double> sums = fold(channel_sums(rows, W, 2, [&](int64_t m, float* acc) {
    thread_local std::vector<float> dz;
    if (static_cast<int64_t>(dz.size()) < W) dz.resize(W);
    const float* r = px + m * W;
    silu_grad_row(r, pdy + m * W, mu_w.data(), scale_w.data(), bias_w.data(), dz.data(), W);
    for (int64_t i = 0; i < W; ++i) {
      acc[i] += dz[i];
      acc[W + i] += dz[i] * (r[i] - mu_w[i]);
    }
  }), 2, k, C);
  torch::Tensor grad_weight = torch::empty({C}, weight.options()), grad_bias = torch::empty({C}, weight.options());
  // Pass 2: dx = w * invstd * (dz - mean(dz) - (x - mean) * invstd^2 * mean(dz * (x - mean))).
  std::vector<float> k_out(C), k_mean(C), k_x(C);
  for (int64_t c = 0; c < C; ++c) {
    grad_bias.data_ptr<float>()[c] = static_cast<float>(sums[c]);
    grad_weight.data_ptr<float>()[c] = static_cast<float>(sums[C + c] * is[c]);
    k_out[c] = w[c] * is[c];
    k_mean[c] = static_cast<float>(sums[c] / M);
    k_x[c] = static_cast<float>(sums[C + c] / M * is[c] * is[c]);
  }
  const std::vector<float> k_out_w = tiled(k_out, k), k_mean_w = tiled(k_mean, k), k_x_w = tiled(k_x, k);
  torch::Tensor dx = torch::empty_like(x);
  float* pdx = dx.data_ptr<float>();
  at::parallel_for(0, rows, row_grain(W), [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      float* o = pdx + m * W;
      const float* r = px + m * W;
      silu_grad_row(r, pdy + m * W, mu_w.data(), scale_w.data(), bias_w.data(), o, W);
      for (int64_t i = 0; i < W; ++i) o[i] = k_out_w[i] * (o[i] - k_mean_w[i] - (r[i] - mu_w[i]) * k_x_w[i]);
    }
  });
  return {dx, grad_weight, grad_bias};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "BN (batch statistics) + SiLU forward: y, mean, invstd, biased var");
  m.def("backward", &backward, "BN (batch statistics) + SiLU backward: grad_x, grad_weight, grad_bias");
}
