// Shared pieces of the CPU Random Sparse Attention kernels: problem geometry,
// the block layout, masks, small vectorised row operations and the block GEMM.
//
// Include this header FIRST in every CPU source: it picks the at::vec
// implementation that matches the compiler flags (setup.py builds with
// -march=native unless ADAPTERKIT_CPU_ARCH says otherwise).
#pragma once

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#elif defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#else
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

namespace adapterkit::rsa {

// Sizes of one call. q, k, v are (B, H, S, D); strides are in elements and the
// last dimension is contiguous. Work items are (batch, head, query block).
struct Geometry {
  int64_t B, H, S, D;
  int64_t bs;    // block size (queries and keys)
  int64_t nqb;   // number of query blocks = ceil(S / bs)
  int64_t kmax;  // columns of the layout (selected key blocks, -1 padded)
  bool causal;
  double scale;
  const bool* live = nullptr;  // (B, nqb): key block holds a real token; null = all do

  int64_t items() const { return B * H * nqb; }

  // Work items per parallel chunk: small problems run on the calling thread,
  // because waking a second thread costs more than they do (and a lot more on
  // a machine whose cores are busy with other processes).
  int64_t item_grain() const {
    const int64_t flops_per_item = 4 * bs * bs * D * std::max<int64_t>(1, kmax);
    return std::max<int64_t>(1, (int64_t{1} << 21) / std::max<int64_t>(1, flops_per_item));
  }
  int64_t block_rows(int64_t blk) const { return std::min(bs, S - blk * bs); }
};

// Element strides of a (B, H, S, D) tensor.
struct Strides {
  int64_t b, h, s;
  explicit Strides(const at::Tensor& t) : b(t.stride(0)), h(t.stride(1)), s(t.stride(2)) {}
  int64_t offset(int64_t bi, int64_t hi, int64_t si) const { return bi * b + hi * h + si * s; }
};

// The selected key blocks of (batch, head, query block), ascending; -1 ends a
// layout row. Skipped: blocks after the query block in causal mode, and blocks
// that hold only padding (they would contribute exp(-inf) = 0 everywhere).
inline int64_t selected_blocks(const int32_t* layout, const Geometry& g, int64_t b, int64_t h,
                               int64_t i, int64_t* out) {
  const int32_t* row = layout + (h * g.nqb + i) * g.kmax;
  const bool* live = g.live ? g.live + b * g.nqb : nullptr;
  int64_t n = 0;
  for (int64_t c = 0; c < g.kmax; ++c) {
    const int64_t j = row[c];
    if (j < 0) break;
    if ((g.causal && j > i) || (live && !live[j])) continue;
    out[n++] = j;
  }
  return n;
}

template <typename T>
constexpr T neg_inf() { return -std::numeric_limits<T>::infinity(); }

// bias[c] = 0 for a real key, -inf for padding or keys past the sequence end.
// Returns whether any key is hidden (if none, the bias can be skipped).
template <typename T>
inline bool key_bias(T* bias, int64_t key0, int64_t n, int64_t n_real, const bool* key_mask) {
  bool hidden = false;
  for (int64_t c = 0; c < n; ++c) {
    const bool ok = c < n_real && (key_mask == nullptr || key_mask[key0 + c]);
    bias[c] = ok ? T(0) : neg_inf<T>();
    hidden |= !ok;
  }
  return hidden;
}

// max over c of x[c] * scale + bias[c] (bias may be null: all zero).
template <typename T>
inline T scaled_max(const T* x, const T* bias, int64_t n, T scale) {
  using Vec = at::vec::Vectorized<T>;
  Vec vmax(neg_inf<T>()), vscale(scale);
  int64_t c = 0;
  for (; c + Vec::size() <= n; c += Vec::size()) {
    Vec y = Vec::loadu(x + c) * vscale;
    if (bias) y = y + Vec::loadu(bias + c);
    vmax = at::vec::maximum(vmax, y);
  }
  T m = at::vec::vec_reduce_all<T>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, vmax);
  for (; c < n; ++c) m = std::max(m, x[c] * scale + (bias ? bias[c] : T(0)));
  return m;
}

template <typename T>
inline at::vec::Vectorized<T> vexp(const at::vec::Vectorized<T>& x) {
  if constexpr (std::is_same_v<T, float>) {
    return x.exp_u20();  // polynomial exp, as in ATen's CPU flash attention
  } else {
    return x.map([](T v) { return std::exp(v); });
  }
}

// Two vectors of T into 2 * Vec::size() elements of O.
template <typename T, typename O>
inline void store_pair(O* p, const at::vec::Vectorized<T>& a, const at::vec::Vectorized<T>& b) {
  if constexpr (std::is_same_v<O, T>) {
    a.store(p);
    b.store(p + at::vec::Vectorized<T>::size());
  } else {
    at::vec::convert_float_bfloat16(a, b).store(p);
  }
}

// p[c] = exp(x[c] * scale + bias[c] - shift) (bias may be null); returns sum(p).
// p may alias x when O == T.
template <typename T, typename O>
inline T exp_sum(const T* x, const T* bias, O* p, int64_t n, T scale, T shift) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t V = Vec::size();
  Vec vsum(T(0)), vscale(scale), vshift(shift);
  int64_t c = 0;
  for (; c + 2 * V <= n; c += 2 * V) {
    Vec a = Vec::loadu(x + c) * vscale - vshift;
    Vec b = Vec::loadu(x + c + V) * vscale - vshift;
    if (bias) {
      a = a + Vec::loadu(bias + c);
      b = b + Vec::loadu(bias + c + V);
    }
    a = vexp<T>(a);
    b = vexp<T>(b);
    vsum += a + b;
    store_pair<T, O>(p + c, a, b);
  }
  T s = at::vec::vec_reduce_all<T>([](Vec& u, Vec& w) { return u + w; }, vsum);
  for (; c < n; ++c) {
    const T e = std::exp(x[c] * scale + (bias ? bias[c] : T(0)) - shift);
    s += e;
    p[c] = static_cast<O>(e);
  }
  return s;
}

// x[c] *= a
template <typename T>
inline void scale_row(T* x, int64_t n, T a) {
  using Vec = at::vec::Vectorized<T>;
  int64_t c = 0;
  for (; c + Vec::size() <= n; c += Vec::size()) (Vec::loadu(x + c) * Vec(a)).store(x + c);
  for (; c < n; ++c) x[c] *= a;
}

// C (M x N) = A (M x K) @ B (K x N) [+ C]; row-major with leading dimensions.
inline void block_gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                       int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.f);
    return;
  }
  at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, accumulate, A, B, C, /*is_vnni=*/false);
}

// float64 has no BLAS micro-kernel here; it exists for gradcheck on tiny shapes.
inline void block_gemm(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
                       int64_t ldb, double* C, int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < M; ++i) {
    double* c = C + i * ldc;
    if (!accumulate) std::fill(c, c + N, 0.0);
    for (int64_t k = 0; k < K; ++k) {
      double a = A[i * lda + k];
      const double* b = B + k * ldb;
      for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
    }
  }
}

// dst (cols x rows, ld_dst) = src (rows x cols, ld_src) transposed, in 16 x 16 tiles.
template <typename T>
inline void transpose_to(const T* src, int64_t ld_src, int64_t rows, int64_t cols, T* dst,
                         int64_t ld_dst) {
  for (int64_t r0 = 0; r0 < rows; r0 += 16)
    for (int64_t c0 = 0; c0 < cols; c0 += 16) {
      const int mr = static_cast<int>(std::min<int64_t>(16, rows - r0));
      const int nc = static_cast<int>(std::min<int64_t>(16, cols - c0));
      const T* from = src + r0 * ld_src + c0;
      T* to = dst + c0 * ld_dst + r0;
      if (mr == 16 && nc == 16) {
        at::vec::transpose_mxn<T, 16, 16>(from, ld_src, to, ld_dst);
      } else {
        at::vec::transpose_mxn<T>(from, ld_src, to, ld_dst, mr, nc);
      }
    }
}

// The key blocks of one (batch, head) transposed to (D x bs), prepared lazily
// per thread: block j of the current (batch, head) is transposed on first use.
// Per block rather than one D x S matrix: a row stride of S * 4 bytes makes the
// transposed stores and the GEMM loads collide in the same cache sets.
template <typename T>
class KeyBlocksT {
 public:
  KeyBlocksT(const at::Tensor& k, const Geometry& g)
      : g_(g), ks_(k), k_(k.const_data_ptr<T>()), kt_(g.nqb * g.D * g.bs), stamp_(g.nqb, -1) {}

  // Block j of (batch, head) bh as a (D x bs) row-major operand, leading dimension bs.
  const T* get(int64_t bh, int64_t j) {
    T* dst = kt_.data() + j * g_.D * g_.bs;
    if (stamp_[j] != bh) {
      const T* src = k_ + ks_.offset(bh / g_.H, bh % g_.H, j * g_.bs);
      transpose_to(src, ks_.s, g_.block_rows(j), g_.D, dst, g_.bs);
      stamp_[j] = bh;
    }
    return dst;
  }

 private:
  const Geometry& g_;
  Strides ks_;
  const T* k_;
  std::vector<T> kt_;
  std::vector<int64_t> stamp_;  // (batch, head) each block was prepared for
};

// Runs body(state, item) over every work item. Items are handed out in units of
// consecutive query blocks of one (batch, head), from a shared counter, so a
// thread that the OS pauses (other processes, causal rows of unequal cost)
// does not hold up the others; each thread builds its state with make() and
// ends with finish(state).
template <typename Make, typename Body, typename Finish>
void run_items(const Geometry& g, Make make, Body body, Finish finish) {
  const int64_t threads = at::get_num_threads(), heads = g.B * g.H;
  if (threads == 1 || g.items() <= g.item_grain() || at::in_parallel_region()) {
    auto state = make();
    for (int64_t item = 0; item < g.items(); ++item) body(state, item);
    finish(state);
    return;
  }
  const int64_t splits = std::max<int64_t>(1, (4 * threads + heads - 1) / heads);  // >= 4 units/thread
  const int64_t unit = std::max((g.nqb + splits - 1) / splits, std::min(g.nqb, g.item_grain()));
  const int64_t per_head = (g.nqb + unit - 1) / unit, units = heads * per_head;
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    auto state = make();
    for (int64_t u = next.fetch_add(1); u < units; u = next.fetch_add(1)) {
      const int64_t bh = u / per_head, first = (u % per_head) * unit;
      for (int64_t i = first; i < std::min(g.nqb, first + unit); ++i) body(state, bh * g.nqb + i);
    }
    finish(state);
  });
}

}  // namespace adapterkit::rsa
