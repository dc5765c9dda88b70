// Schemas of the adapterkit ops and their CPU kernels.
//
// The schemas are declared once here (TORCH_LIBRARY); each backend registers
// its kernels per dispatch key (CPU below, CUDA in rsa_cuda.cu). The fake
// (meta) kernels and the autograd formula are registered from Python in
// adapterkit/ops/rsa.py, which is also where the pure-PyTorch reference lives.
#include "rsa_common.h"
#include "rsa_cpu.h"

#include <Python.h>
#include <torch/library.h>

#define ADAPTERKIT_STR2(x) #x
#define ADAPTERKIT_STR(x) ADAPTERKIT_STR2(x)

namespace adapterkit::rsa {
namespace {

at::Tensor last_dim_contiguous(const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

Geometry check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const at::Tensor& layout, const std::optional<at::Tensor>& key_mask,
                      int64_t block_size, bool causal, double scale) {
  TORCH_CHECK(q.dim() == 4, "rsa_attention: q must be (batch, heads, seq, head_dim), got ", q.sizes());
  TORCH_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(),
              "rsa_attention: q, k, v must have the same shape, got ", q.sizes(), ", ", k.sizes(),
              ", ", v.sizes());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "rsa_attention: q, k, v must have the same dtype");
  const auto dt = q.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kDouble,
              "rsa_attention: dtype must be float32, bfloat16 or float64, got ", dt);
  TORCH_CHECK(block_size > 0, "rsa_attention: block_size must be positive, got ", block_size);
  const int64_t B = q.size(0), H = q.size(1), S = q.size(2), D = q.size(3);
  const int64_t nqb = (S + block_size - 1) / block_size;
  TORCH_CHECK(layout.scalar_type() == at::kInt && layout.dim() == 3 && layout.size(0) == H &&
                  layout.size(1) == nqb,
              "rsa_attention: layout must be int32 (heads, ceil(seq / block_size), k) = (", H, ", ",
              nqb, ", k), got ", layout.scalar_type(), " ", layout.sizes());
  TORCH_CHECK(layout.numel() == 0 || layout.max().item<int32_t>() < nqb,
              "rsa_attention: layout names a key block past the end of the sequence");
  if (key_mask.has_value()) {
    TORCH_CHECK(key_mask->scalar_type() == at::kBool && key_mask->dim() == 2 &&
                    key_mask->size(0) == B && key_mask->size(1) == S,
                "rsa_attention: key_mask must be bool (batch, seq) = (", B, ", ", S, "), got ",
                key_mask->scalar_type(), " ", key_mask->sizes());
  }
  return Geometry{B, H, S, D, block_size, nqb, layout.size(2), causal, scale};
}

// (B, nqb) bool: whether each key block holds at least one real token.
at::Tensor live_blocks(const at::Tensor& key_mask, Geometry& g) {
  if (!key_mask.defined()) return at::Tensor();
  at::Tensor padded = at::zeros({g.B, g.nqb * g.bs}, key_mask.options());
  padded.narrow(1, 0, g.S).copy_(key_mask);
  at::Tensor live = padded.view({g.B, g.nqb, g.bs}).any(-1).contiguous();
  g.live = live.const_data_ptr<bool>();
  return live;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> rsa_fwd_cpu(const at::Tensor& q_in, const at::Tensor& k_in,
                                               const at::Tensor& v_in, const at::Tensor& layout_in,
                                               const std::optional<at::Tensor>& key_mask_in,
                                               int64_t block_size, bool causal, double scale) {
  Geometry g = check_inputs(q_in, k_in, v_in, layout_in, key_mask_in, block_size, causal, scale);
  at::Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in), v = last_dim_contiguous(v_in);
  at::Tensor layout = layout_in.contiguous();
  at::Tensor key_mask = key_mask_in.has_value() ? key_mask_in->contiguous() : at::Tensor();
  const bool* km = key_mask.defined() ? key_mask.const_data_ptr<bool>() : nullptr;
  const at::Tensor live = live_blocks(key_mask, g);
  const auto lse_type = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor out = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor lse = at::empty({g.B, g.H, g.S}, q.options().dtype(lse_type));
  if (q.numel() == 0) return {out, lse.fill_(-std::numeric_limits<double>::infinity())};
  if (q.scalar_type() != at::kBFloat16) {
    forward_cpu(q, k, v, layout, km, g, out, lse);
  } else if (!forward_bf16_packed(q, k, v, layout, km, g, out, lse)) {
    at::Tensor out32 = at::empty(q.sizes(), q.options().dtype(at::kFloat));
    forward_cpu(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), layout, km, g, out32, lse);
    out.copy_(out32);
  }
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rsa_bwd_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& q_in, const at::Tensor& k_in,
    const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& lse_in,
    const at::Tensor& layout_in, const std::optional<at::Tensor>& key_mask_in, int64_t block_size,
    bool causal, double scale) {
  Geometry g = check_inputs(q_in, k_in, v_in, layout_in, key_mask_in, block_size, causal, scale);
  TORCH_CHECK(grad_out_in.sizes() == q_in.sizes() && out_in.sizes() == q_in.sizes(),
              "rsa_attention backward: grad_out and out must have the shape of q");
  // bfloat16 gradients are computed in float32 (the backward is GEMM-light enough).
  const auto work = q_in.scalar_type() == at::kBFloat16 ? at::kFloat : q_in.scalar_type();
  auto prep = [&](const at::Tensor& t) { return last_dim_contiguous(t.to(work)); };
  at::Tensor go = prep(grad_out_in), q = prep(q_in), k = prep(k_in), v = prep(v_in), o = prep(out_in);
  at::Tensor lse = lse_in.to(work == at::kDouble ? at::kDouble : at::kFloat).contiguous();
  at::Tensor layout = layout_in.contiguous();
  at::Tensor key_mask = key_mask_in.has_value() ? key_mask_in->contiguous() : at::Tensor();
  const bool* km = key_mask.defined() ? key_mask.const_data_ptr<bool>() : nullptr;
  const at::Tensor live = live_blocks(key_mask, g);
  at::Tensor gq = at::zeros(q.sizes(), q.options());
  at::Tensor gk = at::zeros(q.sizes(), q.options());
  at::Tensor gv = at::zeros(q.sizes(), q.options());
  if (q.numel() > 0) backward_cpu(go, q, k, v, o, lse, layout, km, g, gq, gk, gv);
  const auto dt = q_in.scalar_type();
  return {gq.to(dt), gk.to(dt), gv.to(dt)};
}

std::string cpu_kernel_info() {
  const bool tiles = at::native::cpublas::could_pack(at::kBFloat16);
  return std::string("cpu[") + ADAPTERKIT_STR(CPU_CAPABILITY) + ", bf16 tiles: " +
         (tiles ? "yes" : "no") + ", threads: " + std::to_string(at::get_num_threads()) + "]";
}

}  // namespace adapterkit::rsa

TORCH_LIBRARY(adapterkit, m) {
  m.def(
      "rsa_fwd(Tensor q, Tensor k, Tensor v, Tensor layout, Tensor? key_mask, int block_size, "
      "bool causal, float scale) -> (Tensor out, Tensor lse)");
  m.def(
      "rsa_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor layout, Tensor? key_mask, int block_size, bool causal, float scale) "
      "-> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
  m.def("rsa_cpu_info() -> str", &adapterkit::rsa::cpu_kernel_info);
}

TORCH_LIBRARY_IMPL(adapterkit, CPU, m) {
  m.impl("rsa_fwd", &adapterkit::rsa::rsa_fwd_cpu);
  m.impl("rsa_bwd", &adapterkit::rsa::rsa_bwd_cpu);
}

// A plain Python module: importing adapterkit._C runs the registrations above.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "adapterkit compiled kernels", -1,
                               nullptr};
  return PyModule_Create(&module);
}
