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

// Packed K^T and V tiles of the key blocks of one (batch, head), per thread,
// packed on first use (block j is re-packed when the thread moves to another head).
class PackedBlocks {
 public:
  PackedBlocks(const at::Tensor& k, const at::Tensor& v, const Geometry& geo)
      : g(geo), tiles_per_block((geo.bs + kTile - 1) / kTile), d_chunks((geo.D + 63) / 64),
        ks_(k), vs_(v), k_(k.const_data_ptr<bf16>()), v_(v.const_data_ptr<bf16>()),
        kp_(geo.nqb * tiles_per_block * geo.D * kTile),
        vp_(geo.nqb * tiles_per_block * d_chunks * kTile * 64),
        tmp_(std::max<int64_t>(geo.D, kTile) * kTile), stamp_(geo.nqb, -1) {}

  const Geometry& g;
  const int64_t tiles_per_block, d_chunks;

  int64_t key0(int64_t j, int64_t t) const { return j * g.bs + t * kTile; }
  int64_t keys(int64_t j, int64_t t) const {  // real keys in the tile (0 = no such tile)
    const int64_t end = j * g.bs + g.block_rows(j);
    return std::max<int64_t>(0, std::min(kTile, end - key0(j, t)));
  }
  // Tile t of block j of (batch, head) bh: K^T packed (D x n16) and V panels (n16 x 64).
  const bf16* k_tile(int64_t bh, int64_t j, int64_t t) {
    ensure(bh, j);
    return kp_.data() + (j * tiles_per_block + t) * g.D * kTile;
  }
  const bf16* v_panel(int64_t j, int64_t t, int64_t dc) const {  // after k_tile(bh, j, t)
    return vp_.data() + ((j * tiles_per_block + t) * d_chunks + dc) * kTile * 64;
  }

 private:
  void ensure(int64_t bh, int64_t j) {
    if (stamp_[j] == bh) return;
    for (int64_t t = 0; t < tiles_per_block && keys(j, t) > 0; ++t) pack_tile(bh, j, t);
    stamp_[j] = bh;
  }

  void pack_tile(int64_t bh, int64_t j, int64_t t) {
    const int64_t n = keys(j, t), n16 = round16(n), D = g.D, b = bh / g.H, h = bh % g.H;
    const bf16* K = k_ + ks_.offset(b, h, key0(j, t));
    const bf16* V = v_ + vs_.offset(b, h, key0(j, t));
    bf16* kp = kp_.data() + (j * tiles_per_block + t) * D * kTile;
    if (n < n16) std::fill(tmp_.begin(), tmp_.end(), bf16(0));  // zero padding keys
    transpose_to(K, ks_.s, n, D, tmp_.data(), n16);              // (D x n16)
    at::native::cpublas::pack(D, n16, n16, n16, at::kBFloat16, at::kBFloat16, tmp_.data(), kp);
    for (int64_t dc = 0; dc < d_chunks; ++dc) {
      const int64_t nc = std::min<int64_t>(64, D - dc * 64);
      if (n < n16) std::fill(tmp_.begin(), tmp_.end(), bf16(0));
      for (int64_t r = 0; r < n; ++r)
        std::copy(V + r * vs_.s + dc * 64, V + r * vs_.s + dc * 64 + nc, tmp_.data() + r * nc);
      bf16* vp = vp_.data() + ((j * tiles_per_block + t) * d_chunks + dc) * kTile * 64;
      at::native::cpublas::pack(n16, nc, nc, nc, at::kBFloat16, at::kBFloat16, tmp_.data(), vp);
    }
  }

  Strides ks_, vs_;
  const bf16 *k_, *v_;
  std::vector<bf16> kp_, vp_, tmp_;
  std::vector<int64_t> stamp_;  // (batch, head) each block was packed for
};

struct Tile {
  int64_t block, tile, key0, n, n16, col;
  bool diagonal;
};

struct Bf16Scratch {  // per thread
  std::vector<float> s, bias;
  std::vector<bf16> p;
  std::vector<int64_t> blocks;
  std::vector<Tile> tiles;
  OnlineSoftmax<float> softmax;
  PackedBlocks kv;
  Bf16Scratch(const Geometry& g, const at::Tensor& k, const at::Tensor& v)
      : s(g.bs * kChunkCols), bias(kChunkCols), p(g.bs * kChunkCols), blocks(g.kmax),
        softmax(g.bs, g.D), kv(k, v, g) {}
};

void forward_item(const Geometry& g, const bf16* q, const Strides& qs, const int32_t* layout,
                  const bool* key_mask, bf16* out, float* lse, Bf16Scratch& sc, int64_t item) {
  PackedBlocks& kv = sc.kv;
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
      sc.tiles.push_back({j, t, kv.key0(j, t), n, round16(n), 0, j == i});
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
      at::native::cpublas::brgemm(m, t.n16, D, qs.s, t.n16, w, false, Q, kv.k_tile(bh, t.block, t.tile),
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
                                    kv.v_panel(t.block, t.tile, dc), sc.softmax.acc.data() + dc * 64, true);
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
  const bf16* qd = q.const_data_ptr<bf16>();
  const int32_t* lay = layout.const_data_ptr<int32_t>();
  bf16* od = out.data_ptr<bf16>();
  float* ld = lse.data_ptr<float>();
  Strides qs(q);
  run_items(
      g, [&] { return Bf16Scratch(g, k, v); },
      [&](Bf16Scratch& sc, int64_t item) { forward_item(g, qd, qs, lay, key_mask, od, ld, sc, item); },
      [](Bf16Scratch&) { at::native::cpublas::brgemm_release(true); });
  return true;
}

}  // namespace adapterkit::rsa
