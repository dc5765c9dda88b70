// CUDA kernels of Random Sparse Attention (same schemas as the CPU kernels, see rsa_ops.cpp).
//
// One thread block per (query block, batch * head); one thread per query row.
// Key blocks are walked in tiles of kTile keys staged in shared memory; each
// row keeps its online-softmax state and output accumulator in registers.
// The backward recomputes probabilities from the saved log-sum-exp; dQ stays
// per thread, and each block adds its dK / dV contribution of a key tile with
// one atomicAdd per (key, dim) into float accumulators.
//
// Written for correctness and portability (no tensor cores). NOTE: built only
// where torch has CUDA and a toolkit is found; it was not compiled or run on a
// GPU in the environment where it was written.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <Python.h>
#include <torch/library.h>

#include <limits>

namespace adapterkit::rsa::cuda {
namespace {

constexpr int kTile = 32;  // keys per shared-memory tile

struct Dims {
  int H, S, D, bs, nqb, kmax;
  bool causal;
};

template <typename acc_t>
__device__ __forceinline__ acc_t neg_inf() { return -std::numeric_limits<acc_t>::infinity(); }

template <typename scalar_t, typename acc_t>
__device__ void load_tile(const scalar_t* src, acc_t* dst, int rows, int D) {
  for (int x = threadIdx.x; x < rows * D; x += blockDim.x) dst[x] = static_cast<acc_t>(src[x]);
}

__device__ __forceinline__ bool visible(const bool* key_mask, int b, int S, int key, int query,
                                        bool causal) {
  return (key_mask == nullptr || key_mask[(int64_t)b * S + key]) && (!causal || key <= query);
}

template <typename scalar_t, typename acc_t, int DMAX>
__global__ void forward_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k,
                               const scalar_t* __restrict__ v, const int32_t* __restrict__ layout,
                               const bool* __restrict__ key_mask, scalar_t* __restrict__ out,
                               acc_t* __restrict__ lse, Dims g, acc_t scale) {
  extern __shared__ unsigned char smem[];
  acc_t* ks = reinterpret_cast<acc_t*>(smem);  // kTile x D
  acc_t* vs = ks + kTile * g.D;                // kTile x D
  const int i = blockIdx.x, bh = blockIdx.y, b = bh / g.H, h = bh % g.H;
  const int query = i * g.bs + threadIdx.x;
  const bool active = threadIdx.x < g.bs && query < g.S;
  const int64_t base = (int64_t)bh * g.S * g.D;

  acc_t qr[DMAX], acc[DMAX];
  for (int d = 0; d < g.D; ++d) {
    qr[d] = active ? static_cast<acc_t>(q[base + (int64_t)query * g.D + d]) : acc_t(0);
    acc[d] = 0;
  }
  acc_t m = neg_inf<acc_t>(), l = 0;
  const int32_t* row = layout + ((int64_t)h * g.nqb + i) * g.kmax;
  for (int c = 0; c < g.kmax; ++c) {
    const int j = row[c];  // the same for every thread of the block
    if (j < 0) break;
    if (g.causal && j > i) continue;
    const int key0 = j * g.bs, n = min(g.bs, g.S - key0);
    for (int t0 = 0; t0 < n; t0 += kTile) {
      const int tn = min(kTile, n - t0);
      __syncthreads();
      load_tile(k + base + (int64_t)(key0 + t0) * g.D, ks, tn, g.D);
      load_tile(v + base + (int64_t)(key0 + t0) * g.D, vs, tn, g.D);
      __syncthreads();
      if (!active) continue;
      for (int kk = 0; kk < tn; ++kk) {
        if (!visible(key_mask, b, g.S, key0 + t0 + kk, query, g.causal)) continue;
        acc_t s = 0;
        for (int d = 0; d < g.D; ++d) s += qr[d] * ks[kk * g.D + d];
        s *= scale;
        if (s > m) {
          const acc_t alpha = exp(m - s);
          l *= alpha;
          for (int d = 0; d < g.D; ++d) acc[d] *= alpha;
          m = s;
        }
        const acc_t p = exp(s - m);
        l += p;
        for (int d = 0; d < g.D; ++d) acc[d] += p * vs[kk * g.D + d];
      }
    }
  }
  if (!active) return;
  const acc_t inv = l > acc_t(0) ? acc_t(1) / l : acc_t(0);  // rows with no visible key: zeros
  for (int d = 0; d < g.D; ++d) out[base + (int64_t)query * g.D + d] = static_cast<scalar_t>(acc[d] * inv);
  lse[(int64_t)bh * g.S + query] = l > acc_t(0) ? m + log(l) : neg_inf<acc_t>();
}

template <typename scalar_t, typename acc_t, int DMAX>
__global__ void backward_kernel(const scalar_t* __restrict__ go, const scalar_t* __restrict__ q,
                                const scalar_t* __restrict__ k, const scalar_t* __restrict__ v,
                                const scalar_t* __restrict__ o, const acc_t* __restrict__ lse,
                                const int32_t* __restrict__ layout, const bool* __restrict__ key_mask,
                                scalar_t* __restrict__ gq, acc_t* __restrict__ gk,
                                acc_t* __restrict__ gv, Dims g, acc_t scale) {
  extern __shared__ unsigned char smem[];
  acc_t* ks = reinterpret_cast<acc_t*>(smem);  // kTile x D
  acc_t* vs = ks + kTile * g.D;                // kTile x D
  acc_t* ps = vs + kTile * g.D;                // blockDim x kTile probabilities
  acc_t* dss = ps + blockDim.x * kTile;        // blockDim x kTile score gradients
  const int i = blockIdx.x, bh = blockIdx.y, b = bh / g.H, h = bh % g.H;
  const int r = threadIdx.x, query = i * g.bs + r, q0 = i * g.bs;
  const int rows = min(g.bs, g.S - q0);
  const bool active = r < rows;
  const int64_t base = (int64_t)bh * g.S * g.D;

  acc_t qr[DMAX], gor[DMAX], dq[DMAX];
  acc_t delta = 0;
  for (int d = 0; d < g.D; ++d) {
    const int64_t at = base + (int64_t)query * g.D + d;
    qr[d] = active ? static_cast<acc_t>(q[at]) : acc_t(0);
    gor[d] = active ? static_cast<acc_t>(go[at]) : acc_t(0);
    delta += active ? gor[d] * static_cast<acc_t>(o[at]) : acc_t(0);
    dq[d] = 0;
  }
  acc_t L = active ? lse[(int64_t)bh * g.S + query] : acc_t(0);
  if (L == neg_inf<acc_t>()) L = std::numeric_limits<acc_t>::infinity();  // no key: p = 0

  const int32_t* row = layout + ((int64_t)h * g.nqb + i) * g.kmax;
  for (int c = 0; c < g.kmax; ++c) {
    const int j = row[c];
    if (j < 0) break;
    if (g.causal && j > i) continue;
    const int key0 = j * g.bs, n = min(g.bs, g.S - key0);
    for (int t0 = 0; t0 < n; t0 += kTile) {
      const int tn = min(kTile, n - t0);
      __syncthreads();
      load_tile(k + base + (int64_t)(key0 + t0) * g.D, ks, tn, g.D);
      load_tile(v + base + (int64_t)(key0 + t0) * g.D, vs, tn, g.D);
      __syncthreads();
      for (int kk = 0; kk < kTile; ++kk) {
        acc_t p = 0, ds = 0;
        if (active && kk < tn && visible(key_mask, b, g.S, key0 + t0 + kk, query, g.causal)) {
          acc_t s = 0, dp = 0;
          for (int d = 0; d < g.D; ++d) {
            s += qr[d] * ks[kk * g.D + d];
            dp += gor[d] * vs[kk * g.D + d];
          }
          p = exp(s * scale - L);
          ds = p * (dp - delta);
          for (int d = 0; d < g.D; ++d) dq[d] += ds * ks[kk * g.D + d];
        }
        ps[r * kTile + kk] = p;
        dss[r * kTile + kk] = ds;
      }
      __syncthreads();
      // dV[key] += sum_r p[r, key] dO[r]; dK[key] += scale * sum_r ds[r, key] Q[r]
      for (int x = threadIdx.x; x < tn * g.D; x += blockDim.x) {
        const int kk = x / g.D, d = x % g.D;
        acc_t sv = 0, sk = 0;
        for (int rr = 0; rr < rows; ++rr) {
          const int64_t at = base + (int64_t)(q0 + rr) * g.D + d;
          sv += ps[rr * kTile + kk] * static_cast<acc_t>(go[at]);
          sk += dss[rr * kTile + kk] * static_cast<acc_t>(q[at]);
        }
        const int64_t key_at = base + (int64_t)(key0 + t0 + kk) * g.D + d;
        atomicAdd(gv + key_at, sv);
        atomicAdd(gk + key_at, sk * scale);
      }
    }
  }
  if (!active) return;
  for (int d = 0; d < g.D; ++d) gq[base + (int64_t)query * g.D + d] = static_cast<scalar_t>(dq[d] * scale);
}

Dims check(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& layout,
           const std::optional<at::Tensor>& key_mask, int64_t block_size, bool causal) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(),
              "rsa_attention (CUDA): q, k, v must be (batch, heads, seq, head_dim) of one shape");
  TORCH_CHECK(q.is_cuda() && k.is_cuda() && v.is_cuda() && layout.is_cuda(),
              "rsa_attention (CUDA): all tensors must be on the GPU");
  TORCH_CHECK(q.size(3) <= 128, "rsa_attention (CUDA): head_dim must be <= 128, got ", q.size(3));
  TORCH_CHECK(block_size > 0 && block_size <= 1024, "rsa_attention (CUDA): block_size must be in [1, 1024]");
  const int S = q.size(2), nqb = (S + block_size - 1) / block_size;
  TORCH_CHECK(layout.scalar_type() == at::kInt && layout.dim() == 3 && layout.size(0) == q.size(1) &&
                  layout.size(1) == nqb,
              "rsa_attention (CUDA): layout must be int32 (heads, ceil(seq / block_size), k)");
  if (key_mask.has_value())
    TORCH_CHECK(key_mask->scalar_type() == at::kBool && key_mask->dim() == 2 &&
                    key_mask->size(0) == q.size(0) && key_mask->size(1) == S,
                "rsa_attention (CUDA): key_mask must be bool (batch, seq)");
  return Dims{(int)q.size(1), S, (int)q.size(3), (int)block_size, nqb, (int)layout.size(2), causal};
}

int threads_for(int bs) { return ((bs + 31) / 32) * 32; }

// Dynamic shared memory above 48 KiB must be requested per kernel.
template <typename Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> rsa_fwd_cuda(const at::Tensor& q_in, const at::Tensor& k_in,
                                                const at::Tensor& v_in, const at::Tensor& layout_in,
                                                const std::optional<at::Tensor>& key_mask_in,
                                                int64_t block_size, bool causal, double scale) {
  const Dims g = check(q_in, k_in, v_in, layout_in, key_mask_in, block_size, causal);
  const c10::cuda::CUDAGuard guard(q_in.device());
  at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  at::Tensor layout = layout_in.contiguous();
  at::Tensor key_mask = key_mask_in.has_value() ? key_mask_in->contiguous() : at::Tensor();
  const bool* km = key_mask.defined() ? key_mask.const_data_ptr<bool>() : nullptr;
  const auto lse_type = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor out = at::empty_like(q);
  at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(lse_type));
  if (q.numel() == 0) return {out, lse.fill_(-std::numeric_limits<double>::infinity())};
  const dim3 grid(g.nqb, q.size(0) * q.size(1));
  const int threads = threads_for(g.bs);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "rsa_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t smem = 2 * kTile * g.D * sizeof(acc_t);
    auto run = [&](auto kernel) {
      allow_shared_memory(kernel, smem);
      kernel<<<grid, threads, smem, stream>>>(q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(),
                                              v.const_data_ptr<scalar_t>(), layout.const_data_ptr<int32_t>(),
                                              km, out.data_ptr<scalar_t>(), lse.data_ptr<acc_t>(), g,
                                              static_cast<acc_t>(scale));
    };
    if (g.D <= 64) run(forward_kernel<scalar_t, acc_t, 64>);
    else run(forward_kernel<scalar_t, acc_t, 128>);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rsa_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const at::Tensor& out, const at::Tensor& lse_in, const at::Tensor& layout_in,
    const std::optional<at::Tensor>& key_mask_in, int64_t block_size, bool causal, double scale) {
  const Dims g = check(q_in, k_in, v_in, layout_in, key_mask_in, block_size, causal);
  const c10::cuda::CUDAGuard guard(q_in.device());
  at::Tensor go = grad_out.contiguous(), q = q_in.contiguous(), k = k_in.contiguous();
  at::Tensor v = v_in.contiguous(), o = out.contiguous(), layout = layout_in.contiguous();
  at::Tensor key_mask = key_mask_in.has_value() ? key_mask_in->contiguous() : at::Tensor();
  const bool* km = key_mask.defined() ? key_mask.const_data_ptr<bool>() : nullptr;
  const auto acc_type = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor lse = lse_in.to(acc_type).contiguous();
  at::Tensor gq = at::zeros_like(q);
  at::Tensor gk = at::zeros(q.sizes(), q.options().dtype(acc_type));
  at::Tensor gv = at::zeros(q.sizes(), q.options().dtype(acc_type));
  if (q.numel() > 0) {
    const dim3 grid(g.nqb, q.size(0) * q.size(1));
    const int threads = threads_for(g.bs);
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "rsa_bwd_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const size_t smem = (2 * kTile * g.D + 2 * threads * kTile) * sizeof(acc_t);
      auto run = [&](auto kernel) {
        allow_shared_memory(kernel, smem);
        kernel<<<grid, threads, smem, stream>>>(
            go.const_data_ptr<scalar_t>(), q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(),
            v.const_data_ptr<scalar_t>(), o.const_data_ptr<scalar_t>(), lse.const_data_ptr<acc_t>(),
            layout.const_data_ptr<int32_t>(), km, gq.data_ptr<scalar_t>(), gk.data_ptr<acc_t>(),
            gv.data_ptr<acc_t>(), g, static_cast<acc_t>(scale));
      };
      if (g.D <= 64) run(backward_kernel<scalar_t, acc_t, 64>);
      else run(backward_kernel<scalar_t, acc_t, 128>);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {gq, gk.to(q.scalar_type()), gv.to(q.scalar_type())};
}

}  // namespace adapterkit::rsa::cuda

TORCH_LIBRARY_IMPL(adapterkit, CUDA, m) {
  m.impl("rsa_fwd", &adapterkit::rsa::cuda::rsa_fwd_cuda);
  m.impl("rsa_bwd", &adapterkit::rsa::cuda::rsa_bwd_cuda);
}

// Importing adapterkit._C_cuda (after adapterkit._C, which declares the schemas) registers the kernels.
extern "C" PyObject* PyInit__C_cuda(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C_cuda", "adapterkit CUDA kernels", -1, nullptr};
  return PyModule_Create(&module);
}
