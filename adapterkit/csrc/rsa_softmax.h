// Online softmax state of one query block, shared by the float and bfloat16 forwards.
#pragma once

#include "rsa_common.h"

namespace adapterkit::rsa {

// Query key0 - q0 + c > r is in the future of row r: its score becomes -inf.
template <typename T>
inline void mask_causal(T* s, int64_t ld, int64_t rows, int64_t cols, int64_t col0, int64_t key_off) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t first_hidden = std::max<int64_t>(0, r - key_off + 1);
    for (int64_t c = first_hidden; c < cols; ++c) s[r * ld + col0 + c] = neg_inf<T>();
  }
}

template <typename T>
struct OnlineSoftmax {
  std::vector<T> acc, row_max, row_sum;  // acc: (rows x D) un-normalised output
  int64_t D;

  OnlineSoftmax(int64_t rows, int64_t d) : acc(rows * d), row_max(rows), row_sum(rows), D(d) {}

  void reset(int64_t m) {
    std::fill(acc.begin(), acc.begin() + m * D, T(0));
    std::fill(row_max.begin(), row_max.begin() + m, neg_inf<T>());
    std::fill(row_sum.begin(), row_sum.begin() + m, T(0));
  }

  // Scores s (m x w) become probabilities p (m x w, may alias s when O == T):
  // p = exp(s * scale + bias - new running max); acc is rescaled to that max.
  // bias (0 or -inf per column) may be null when no key of the chunk is hidden.
  template <typename O>
  void update(const T* s, const T* bias, O* p, int64_t m, int64_t w, T scale) {
    for (int64_t r = 0; r < m; ++r) {
      const T* row = s + r * w;
      O* prow = p + r * w;
      const T new_max = std::max(row_max[r], scaled_max(row, bias, w, scale));
      if (new_max == neg_inf<T>()) {  // nothing visible yet in this row
        std::fill(prow, prow + w, O(0));
        continue;
      }
      const T alpha = std::exp(row_max[r] - new_max);
      row_sum[r] = row_sum[r] * alpha + exp_sum(row, bias, prow, w, scale, new_max);
      row_max[r] = new_max;
      if (alpha != T(1)) scale_row(acc.data() + r * D, D, alpha);
    }
  }

  // out rows = acc / sum (zero for rows that saw no key), lse = max + log(sum) or -inf.
  template <typename O, typename L>
  void finish(O* out, L* lse, int64_t m) const {
    for (int64_t r = 0; r < m; ++r) {
      const bool empty = row_sum[r] == T(0);  // only padding rows can be empty
      const T inv = empty ? T(0) : T(1) / row_sum[r];
      for (int64_t d = 0; d < D; ++d) out[r * D + d] = static_cast<O>(acc[r * D + d] * inv);
      lse[r] = empty ? neg_inf<L>() : static_cast<L>(row_max[r] + std::log(row_sum[r]));
    }
  }
};

}  // namespace adapterkit::rsa
