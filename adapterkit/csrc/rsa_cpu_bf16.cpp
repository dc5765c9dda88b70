// CPU forward of Random Sparse Attention for bfloat16 on matrix tiles (AMX / VNNI).
//
// oneDNN's bf16 micro-kernels (through at::native::cpublas::brgemm) want their
// right operand "packed" (VNNI layout) in panels of 16..64 columns. So each key
// block is cut into tiles of up to 64 keys, zero-padded to a multiple of 16,
// and K^T and V of every tile are packed once per call; every query block that
// selected the tile reuses them. Scores and the softmax stay in float32; the
// probabilities are rounded to bfloat16 for the P V product, as in ATen's
// flash attention. Where packing is unavailable the caller upcasts to float32.
#include "rsa_common.h"
#include "rsa_cpu.h"
#include "rsa_softmax.h"

namespace adapterkit::rsa {
namespace {

using bf16 = at::BFloat16;
constexpr int64_t kTile = 64;          // keys per packed tile
constexpr int64_t kChunkCols = 512;  // score columns per softmax update (64..512 measured similar)

int64_t round16(int64_t x) { return (x + 15) / 16 * 16; }

// Packed K^T and V of every (batch, head, key block, tile).
struct PackedKV {
  const Geometry& g;
  int64_t tiles_per_block, d_chunks;
  at::Tensor kp, vp;  // slots of D x 64 and 64 x D (d_chunks panels of 64 x 64), uninitialised

  explicit PackedKV(const Geometry& geo)
      : g(geo), tiles_per_block((geo.bs + kTile - 1) / kTile), d_chunks((geo.D + 63) / 64) {
    const int64_t slots = g.B * g.H * g.nqb * tiles_per_block;
    kp = at::empty({slots * g.D * kTile}, at::kBFloat16);
    vp = at::empty({slots * d_chunks * kTile * 64}, at::kBFloat16);
  }
  int64_t slot(int64_t bh, int64_t j, int64_t t) const { return (bh * g.nqb + j) * tiles_per_block + t; }
  int64_t key0(int64_t j, int64_t t) const { return j * g.bs + t * kTile; }
  int64_t keys(int64_t j, int64_t t) const {  // real keys in the tile (0 = no such tile)
    const int64_t end = j * g.bs + g.block_rows(j);
    return std::max<int64_t>(0, std::min(kTile, end - key0(j, t)));
  }
  bf16* k_tile(int64_t s) const { return kp.data_ptr<bf16>() + s * g.D * kTile; }
  bf16* v_panel(int64_t s, int64_t dc) const {
    return vp.data_ptr<bf16>() + (s * d_chunks + dc) * kTile * 64;
  }

  void pack_tile(const bf16* K, const bf16* V, int64_t ks, int64_t vs, int64_t n, int64_t s,
                 std::vector<bf16>& tmp) {
    const int64_t n16 = round16(n), D = g.D;
    if (n < n16) std::fill(tmp.begin(), tmp.end(), bf16(0));  // zero padding keys
    transpose_to(K, ks, n, D, tmp.data(), n16);  // (D x n16), zero columns past n
    at::native::cpublas::pack(D, n16, n16, n16, at::kBFloat16, at::kBFloat16, tmp.data(), k_tile(s));
    for (int64_t dc = 0; dc < d_chunks; ++dc) {
      const int64_t nc = std::min<int64_t>(64, D - dc * 64);
      if (n < n16) std::fill(tmp.begin(), tmp.end(), bf16(0));
      for (int64_t r = 0; r < n; ++r)
        std::copy(V + r * vs + dc * 64, V + r * vs + dc * 64 + nc, tmp.data() + r * nc);
      at::native::cpublas::pack(n16, nc, nc, nc, at::kBFloat16, at::kBFloat16, tmp.data(),
                                v_panel(s, dc));
    }
  }

  void pack_all(const at::Tensor& k, const at::Tensor& v) {
    Strides ks(k), vs(v);
    const bf16* kd = k.const_data_ptr<bf16>();
    const bf16* vd = v.const_data_ptr<bf16>();
    const int64_t per_bh = g.nqb * tiles_per_block;
    at::parallel_for(0, g.B * g.H * per_bh, g.block_grain(), [&](int64_t begin, int64_t end) {
      std::vector<bf16> tmp(std::max(g.D, kTile) * kTile);
      for (int64_t x = begin; x < end; ++x) {
        const int64_t bh = x / per_bh, j = (x % per_bh) / tiles_per_block, t = x % tiles_per_block;
        const int64_t n = keys(j, t), b = bh / g.H, h = bh % g.H;
        if (n == 0) continue;
        pack_tile(kd + ks.offset(b, h, key0(j, t)), vd + vs.offset(b, h, key0(j, t)), ks.s, vs.s,
                  n, slot(bh, j, t), tmp);
      }
    });
  }
};

struct Tile {
  int64_t slot, key0, n, n16, col;
  bool diagonal;
};

struct Bf16Scratch {
  std::vector<float> s, bias;
  std::vector<bf16> p;
  std::vector<int64_t> blocks;
  std::vector<Tile> tiles;
  OnlineSoftmax<float> softmax;
  explicit Bf16Scratch(const Geometry& g)
      : s(g.bs * kChunkCols), bias(kChunkCols), p(g.bs * kChunkCols), blocks(g.kmax),
        softmax(g.bs, g.D) {}
};

void forward_item(const PackedKV& kv, const bf16* q, const Strides& qs, const int32_t* layout,
                  const bool* key_mask, bf16* out, float* lse, Bf16Scratch& sc, int64_t item) {
  const Geometry& g = kv.g;
  const int64_t bh = item / g.nqb, i = item % g.nqb, b = bh / g.H, h = bh % g.H;
  const int64_t q0 = i * g.bs, m = g.block_rows(i), D = g.D;
  const bf16* Q = q + qs.offset(b, h, q0);
  const bool* km = key_mask ? key_mask + b * g.S : nullptr;
  sc.softmax.reset(m);

  sc.tiles.clear();  // the tiles of the selected blocks, in key order
  const int64_t nsel = selected_blocks(layout, g, b, h, i, sc.blocks.data());
  for (int64_t c = 0; c < nsel; ++c)
    for (int64_t t = 0; t < kv.tiles_per_block && kv.keys(sc.blocks[c], t) > 0; ++t) {
      const int64_t j = sc.blocks[c], n = kv.keys(j, t);
      sc.tiles.push_back({kv.slot(bh, j, t), kv.key0(j, t), n, round16(n), 0, j == i});
    }

  for (size_t first = 0; first < sc.tiles.size();) {
    size_t last = first;
    int64_t w = 0;
    bool hidden = false;  // any padded key in the chunk
    while (last < sc.tiles.size() && w + sc.tiles[last].n16 <= kChunkCols) {
      sc.tiles[last].col = w;
      w += sc.tiles[last++].n16;
    }
    for (size_t x = first; x < last; ++x) {
      const Tile& t = sc.tiles[x];
      at::native::cpublas::brgemm(m, t.n16, D, qs.s, t.n16, w, false, Q, kv.k_tile(t.slot),
                                  sc.s.data() + t.col, true);
      hidden |= key_bias(sc.bias.data() + t.col, t.key0, t.n16, t.n, km);
      if (g.causal && t.diagonal) mask_causal(sc.s.data(), w, m, t.n16, t.col, t.key0 - q0);
    }
    sc.softmax.update(sc.s.data(), hidden ? sc.bias.data() : nullptr, sc.p.data(), m, w,
                      static_cast<float>(g.scale));
    for (size_t x = first; x < last; ++x) {
      const Tile& t = sc.tiles[x];
      for (int64_t dc = 0; dc < kv.d_chunks; ++dc) {
        const int64_t nc = std::min<int64_t>(64, D - dc * 64);
        at::native::cpublas::brgemm(m, nc, t.n16, w, nc, D, true, sc.p.data() + t.col,
                                    kv.v_panel(t.slot, dc), sc.softmax.acc.data() + dc * 64, true);
      }
    }
    first = last;
  }
  sc.softmax.finish(out + (bh * g.S + q0) * D, lse + bh * g.S + q0, m);
}

}  // namespace

bool forward_bf16_packed(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& layout, const bool* key_mask, const Geometry& g,
                         at::Tensor& out, at::Tensor& lse) {
  if (g.D % 16 != 0 || g.D > 256 || !at::native::cpublas::could_pack(at::kBFloat16)) return false;
  PackedKV kv(g);
  kv.pack_all(k, v);
  const bf16* qd = q.const_data_ptr<bf16>();
  const int32_t* lay = layout.const_data_ptr<int32_t>();
  bf16* od = out.data_ptr<bf16>();
  float* ld = lse.data_ptr<float>();
  Strides qs(q);
  at::parallel_for(0, g.items(), g.item_grain(), [&](int64_t begin, int64_t end) {
    Bf16Scratch sc(g);
    for (int64_t item = begin; item < end; ++item)
      forward_item(kv, qd, qs, lay, key_mask, od, ld, sc, item);
    at::native::cpublas::brgemm_release(true);
  });
  return true;
}

}  // namespace adapterkit::rsa
