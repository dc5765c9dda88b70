// CPU backward of Random Sparse Attention for float32 / float64 (FlashAttention-2 style).
//
// Probabilities are recomputed from the saved log-sum-exp. Per (batch, head,
// query block) and selected key block j, everything is computed transposed
// (keys as rows) so that all five GEMMs take their operands as stored:
//   S^T  = K_j Q_i^T            P^T = exp(scale S^T - lse)
//   dP^T = V_j dO_i^T           dS^T = P^T * (dP^T - rowsum(dO_i * O_i))
//   dV_j += P^T dO_i            dK_j += scale dS^T Q_i       dQ_i^T += scale K_j^T dS^T
// dK and dV of one (batch, head) are accumulated per thread and added to the
// output under a per-(batch, head) lock, so any split of the work items is safe.
#include "rsa_common.h"
#include "rsa_cpu.h"

#include <memory>
#include <mutex>

namespace adapterkit::rsa {
namespace {

template <typename T>
struct BackwardArgs {
  const Geometry& g;
  const T *q, *k, *v, *o, *go;
  Strides qs, ks, vs, os, gos;
  const T* lse;
  const int32_t* layout;
  const bool* key_mask;
  T *gq, *gk, *gv;  // contiguous (B, H, S, D)
  std::mutex* locks;  // one per (batch, head)
};

template <typename T>
struct BackwardScratch {
  std::vector<T> qt, got, delta, lse, st, dpt, gqt, gk_acc, gv_acc;
  std::vector<int64_t> blocks;
  KeyBlocksT<T> keys;
  int64_t bh = -1;  // (batch, head) whose dK/dV the accumulators hold
  BackwardScratch(const Geometry& g, const at::Tensor& k)
      : qt(g.D * g.bs), got(g.D * g.bs), delta(g.bs), lse(g.bs), st(g.bs * g.bs),
        dpt(g.bs * g.bs), gqt(g.D * g.bs), gk_acc(g.S * g.D), gv_acc(g.S * g.D),
        blocks(g.kmax), keys(k, g) {}
};

template <typename T>
void flush(const BackwardArgs<T>& a, BackwardScratch<T>& sc) {
  if (sc.bh < 0) return;
  const int64_t n = a.g.S * a.g.D;
  const T scale = static_cast<T>(a.g.scale);
  T* gk = a.gk + sc.bh * n;
  T* gv = a.gv + sc.bh * n;
  std::lock_guard<std::mutex> guard(a.locks[sc.bh]);
  for (int64_t x = 0; x < n; ++x) {
    gk[x] += scale * sc.gk_acc[x];
    gv[x] += sc.gv_acc[x];
  }
}

template <typename T>
void switch_head(const BackwardArgs<T>& a, BackwardScratch<T>& sc, int64_t bh) {
  if (sc.bh == bh) return;
  flush(a, sc);
  std::fill(sc.gk_acc.begin(), sc.gk_acc.end(), T(0));
  std::fill(sc.gv_acc.begin(), sc.gv_acc.end(), T(0));
  sc.bh = bh;
}

// Per query row: delta = rowsum(dO * O), lse (+inf for rows that saw no key,
// so that their probabilities are exp(-inf) = 0).
template <typename T>
void row_terms(const BackwardArgs<T>& a, BackwardScratch<T>& sc, int64_t b, int64_t h, int64_t q0,
               int64_t m) {
  const T* go = a.go + a.gos.offset(b, h, q0);
  const T* o = a.o + a.os.offset(b, h, q0);
  const T* lse = a.lse + (b * a.g.H + h) * a.g.S + q0;
  for (int64_t r = 0; r < m; ++r) {
    T d = 0;
    for (int64_t c = 0; c < a.g.D; ++c) d += go[r * a.gos.s + c] * o[r * a.os.s + c];
    sc.delta[r] = d;
    sc.lse[r] = lse[r] == neg_inf<T>() ? std::numeric_limits<T>::infinity() : lse[r];
  }
}

// P^T rows (one per key): exp(scale * s - lse), zero where the key is masked.
template <typename T>
void probabilities(BackwardScratch<T>& sc, int64_t n, int64_t m, int64_t key0, int64_t q0,
                   const bool* km, bool causal, T scale) {
  using Vec = at::vec::Vectorized<T>;
  for (int64_t c = 0; c < n; ++c) {
    T* p = sc.st.data() + c * m;
    if (km && !km[key0 + c]) {
      std::fill(p, p + m, T(0));
      continue;
    }
    int64_t r = 0;
    for (; r + Vec::size() <= m; r += Vec::size())
      vexp<T>(Vec::loadu(p + r) * Vec(scale) - Vec::loadu(sc.lse.data() + r)).store(p + r);
    for (; r < m; ++r) p[r] = std::exp(p[r] * scale - sc.lse[r]);
    if (causal) {  // query q0 + r sees key key0 + c only if key0 + c <= q0 + r
      const int64_t hidden = std::min(m, std::max<int64_t>(0, key0 + c - q0));
      std::fill(p, p + hidden, T(0));
    }
  }
}

// dS^T = P^T * (dP^T - delta), written over dP^T.
template <typename T>
void score_grads(BackwardScratch<T>& sc, int64_t n, int64_t m) {
  using Vec = at::vec::Vectorized<T>;
  for (int64_t c = 0; c < n; ++c) {
    const T* p = sc.st.data() + c * m;
    T* dp = sc.dpt.data() + c * m;
    int64_t r = 0;
    for (; r + Vec::size() <= m; r += Vec::size())
      (Vec::loadu(p + r) * (Vec::loadu(dp + r) - Vec::loadu(sc.delta.data() + r))).store(dp + r);
    for (; r < m; ++r) dp[r] = p[r] * (dp[r] - sc.delta[r]);
  }
}

template <typename T>
void backward_item(const BackwardArgs<T>& a, BackwardScratch<T>& sc, int64_t item) {
  const Geometry& g = a.g;
  const int64_t bh = item / g.nqb, i = item % g.nqb, b = bh / g.H, h = bh % g.H;
  const int64_t q0 = i * g.bs, m = g.block_rows(i), D = g.D;
  const T scale = static_cast<T>(g.scale);
  const bool* km = a.key_mask ? a.key_mask + b * g.S : nullptr;
  const T* Q = a.q + a.qs.offset(b, h, q0);
  const T* gO = a.go + a.gos.offset(b, h, q0);
  switch_head(a, sc, bh);
  transpose_to(Q, a.qs.s, m, D, sc.qt.data(), m);
  transpose_to(gO, a.gos.s, m, D, sc.got.data(), m);
  row_terms(a, sc, b, h, q0, m);
  std::fill(sc.gqt.begin(), sc.gqt.begin() + D * m, T(0));

  const int64_t nsel = selected_blocks(a.layout, g, b, h, i, sc.blocks.data());
  for (int64_t c = 0; c < nsel; ++c) {
    const int64_t j = sc.blocks[c], key0 = j * g.bs, n = g.block_rows(j);
    const T* K = a.k + a.ks.offset(b, h, key0);
    const T* V = a.v + a.vs.offset(b, h, key0);
    block_gemm(n, m, D, K, a.ks.s, sc.qt.data(), m, sc.st.data(), m, false);
    probabilities(sc, n, m, key0, q0, km, g.causal && j == i, scale);
    block_gemm(n, m, D, V, a.vs.s, sc.got.data(), m, sc.dpt.data(), m, false);
    score_grads(sc, n, m);
    block_gemm(n, D, m, sc.st.data(), m, gO, a.gos.s, sc.gv_acc.data() + key0 * D, D, true);
    block_gemm(n, D, m, sc.dpt.data(), m, Q, a.qs.s, sc.gk_acc.data() + key0 * D, D, true);
    block_gemm(D, m, n, sc.keys.get(bh, j), g.bs, sc.dpt.data(), m, sc.gqt.data(), m, true);
  }
  T* gq = a.gq + (bh * g.S + q0) * D;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t d = 0; d < D; ++d) gq[r * D + d] = scale * sc.gqt[d * m + r];
}

template <typename T>
void backward_typed(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                    const at::Tensor& layout, const bool* key_mask, const Geometry& g,
                    at::Tensor& grad_q, at::Tensor& grad_k, at::Tensor& grad_v) {
  auto locks = std::make_unique<std::mutex[]>(g.B * g.H);
  BackwardArgs<T> a{g,
                    q.const_data_ptr<T>(),
                    k.const_data_ptr<T>(),
                    v.const_data_ptr<T>(),
                    out.const_data_ptr<T>(),
                    grad_out.const_data_ptr<T>(),
                    Strides(q),
                    Strides(k),
                    Strides(v),
                    Strides(out),
                    Strides(grad_out),
                    lse.const_data_ptr<T>(),
                    layout.const_data_ptr<int32_t>(),
                    key_mask,
                    grad_q.data_ptr<T>(),
                    grad_k.data_ptr<T>(),
                    grad_v.data_ptr<T>(),
                    locks.get()};
  run_items(
      g, [&] { return BackwardScratch<T>(g, k); },
      [&](BackwardScratch<T>& sc, int64_t item) { backward_item(a, sc, item); },
      [&](BackwardScratch<T>& sc) { flush(a, sc); });
}

}  // namespace

void backward_cpu(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                  const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                  const at::Tensor& layout, const bool* key_mask, const Geometry& g,
                  at::Tensor& grad_q, at::Tensor& grad_k, at::Tensor& grad_v) {
  if (q.scalar_type() == at::kDouble) {
    backward_typed<double>(grad_out, q, k, v, out, lse, layout, key_mask, g, grad_q, grad_k, grad_v);
  } else {
    backward_typed<float>(grad_out, q, k, v, out, lse, layout, key_mask, g, grad_q, grad_k, grad_v);
  }
}

}  // namespace adapterkit::rsa
