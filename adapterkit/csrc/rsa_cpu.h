// Entry points of the CPU Random Sparse Attention kernels (see rsa_ops.cpp for the schemas).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <tuple>

namespace adapterkit::rsa {

struct Geometry;

// float32 / float64: out (B, H, S, D) and lse (B, H, S) are preallocated, contiguous.
void forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const at::Tensor& layout, const bool* key_mask, const Geometry& g, at::Tensor& out,
                 at::Tensor& lse);

// bfloat16 with AMX/VNNI tiles; returns false (and does nothing) where the
// machine or the head size does not allow it, so the caller upcasts instead.
bool forward_bf16_packed(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& layout, const bool* key_mask, const Geometry& g,
                         at::Tensor& out, at::Tensor& lse);

// float32 / float64: grad_q, grad_k, grad_v preallocated, contiguous, zero-filled.
void backward_cpu(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                  const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                  const at::Tensor& layout, const bool* key_mask, const Geometry& g,
                  at::Tensor& grad_q, at::Tensor& grad_k, at::Tensor& grad_v);

// Op implementations registered for the CPU dispatch key.
std::tuple<at::Tensor, at::Tensor> rsa_fwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, const at::Tensor& layout,
                                               const std::optional<at::Tensor>& key_mask,
                                               int64_t block_size, bool causal, double scale);

std::tuple<at::Tensor, at::Tensor, at::Tensor> rsa_bwd_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const at::Tensor& layout,
    const std::optional<at::Tensor>& key_mask, int64_t block_size, bool causal, double scale);

// One line describing what this build can do ("avx512, bf16 tiles: yes").
std::string cpu_kernel_info();

}  // namespace adapterkit::rsa
