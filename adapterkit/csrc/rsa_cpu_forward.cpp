// CPU forward of Random Sparse Attention for float32 / float64.
//
// One work item is (batch, head, query block). It walks the selected key blocks
// in chunks of up to kChunkCols columns: S = Q_i K_j^T for each block of the
// chunk, one online-softmax update per row for the whole chunk, then O += P V_j.
// Only a (block x chunk) score tile exists at any time; the n x n matrix never does.
#include "rsa_common.h"
#include "rsa_cpu.h"
#include "rsa_softmax.h"

namespace adapterkit::rsa {
namespace {

constexpr int64_t kChunkCols = 512;  // score columns per softmax update (64..512 measured similar)

template <typename T>
struct ForwardScratch {  // per thread
  std::vector<T> s, bias;
  std::vector<int64_t> blocks;
  OnlineSoftmax<T> softmax;
  KeyBlocksT<T> keys;
  ForwardScratch(const Geometry& g, const at::Tensor& k, int64_t cols)
      : s(g.bs * cols), bias(cols), blocks(g.kmax), softmax(g.bs, g.D), keys(k, g) {}
};

template <typename T>
struct ForwardArgs {
  const Geometry& g;
  const T *q, *v;
  Strides qs, vs;
  const int32_t* layout;
  const bool* key_mask;  // (B, S) or nullptr
  T* out;                // contiguous (B, H, S, D)
  T* lse;                // contiguous (B, H, S)
};

template <typename T>
void forward_item(const ForwardArgs<T>& a, ForwardScratch<T>& sc, int64_t item) {
  const Geometry& g = a.g;
  const int64_t bh = item / g.nqb, i = item % g.nqb, b = bh / g.H, h = bh % g.H;
  const int64_t q0 = i * g.bs, m = g.block_rows(i), D = g.D;
  const T* Q = a.q + a.qs.offset(b, h, q0);
  const bool* km = a.key_mask ? a.key_mask + b * g.S : nullptr;
  sc.softmax.reset(m);

  const int64_t nsel = selected_blocks(a.layout, g, b, h, i, sc.blocks.data());
  for (int64_t first = 0; first < nsel;) {
    int64_t last = first, w = 0;  // chunk = blocks [first, last), w columns
    bool hidden = false;          // any padded key in the chunk
    while (last < nsel && (w == 0 || w + g.block_rows(sc.blocks[last]) <= kChunkCols))
      w += g.block_rows(sc.blocks[last++]);
    for (int64_t c = first, col = 0; c < last; ++c) {
      const int64_t j = sc.blocks[c], key0 = j * g.bs, n = g.block_rows(j);
      block_gemm(m, n, D, Q, a.qs.s, sc.keys.get(bh, j), g.bs, sc.s.data() + col, w, false);
      hidden |= key_bias(sc.bias.data() + col, key0, n, n, km);
      if (g.causal && j == i) mask_causal(sc.s.data(), w, m, n, col, key0 - q0);
      col += n;
    }
    const T* bias = hidden ? sc.bias.data() : nullptr;
    sc.softmax.update(sc.s.data(), bias, sc.s.data(), m, w, static_cast<T>(g.scale));
    for (int64_t c = first, col = 0; c < last; ++c) {
      const int64_t j = sc.blocks[c], n = g.block_rows(j);
      const T* V = a.v + a.vs.offset(b, h, j * g.bs);
      block_gemm(m, D, n, sc.s.data() + col, w, V, a.vs.s, sc.softmax.acc.data(), D, true);
      col += n;
    }
    first = last;
  }
  sc.softmax.finish(a.out + (bh * g.S + q0) * D, a.lse + bh * g.S + q0, m);
}

template <typename T>
void forward_typed(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& layout, const bool* key_mask, const Geometry& g, at::Tensor& out,
                   at::Tensor& lse) {
  ForwardArgs<T> a{g,          q.const_data_ptr<T>(), v.const_data_ptr<T>(), Strides(q), Strides(v),
                   layout.const_data_ptr<int32_t>(), key_mask, out.data_ptr<T>(), lse.data_ptr<T>()};
  const int64_t cols = std::max(kChunkCols, g.bs);
  run_items(
      g, [&] { return ForwardScratch<T>(g, k, cols); },
      [&](ForwardScratch<T>& sc, int64_t item) { forward_item(a, sc, item); },
      [](ForwardScratch<T>&) {});
}

}  // namespace

void forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const at::Tensor& layout, const bool* key_mask, const Geometry& g, at::Tensor& out,
                 at::Tensor& lse) {
  if (q.scalar_type() == at::kDouble) {
    forward_typed<double>(q, k, v, layout, key_mask, g, out, lse);
  } else {
    forward_typed<float>(q, k, v, layout, key_mask, g, out, lse);
  }
}

}  // namespace adapterkit::rsa
