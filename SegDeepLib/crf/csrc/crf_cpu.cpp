// SegDeep CRF: multi-threaded CPU permutohedral lattice and separable Gaussian (at::parallel_for).
//
// build_lattice(features (N, d) float64) -> (index (N, d+1) int64, weight (N, d+1) float64,
//                                           neighbors (d+1, 2, M) int64)
// lattice_filter(index, weight, neighbors, values (C, N), reverse) -> (C, N)
// separable_filter(values (C, *spatial), bands [(n_axis, 2R+1)]) -> (C, *spatial)
//
// The lattice math is the one of SegDeepLib/crf/lattice.py (Adams et al. 2010, Kraehenbuehl's
// rounding and ranking); all sizes and offsets are int64.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kGrain = 2048;
constexpr int kMaxDim = 16;

// Open-addressing hash table of packed int64 keys -> vertex ids (ids in insertion order).
class KeyTable {
 public:
  explicit KeyTable(int64_t expected = 0) {
    int64_t cap = 1024;
    while (cap < 2 * expected) cap <<= 1;
    slots_.assign(cap, Slot{0, -1});
  }
  int64_t insert(int64_t key) {
    if (2 * (keys_.size() + 1) > slots_.size()) grow();
    Slot& slot = slots_[find_slot(key)];
    if (slot.id < 0) {
      slot.key = key;
      slot.id = static_cast<int64_t>(keys_.size());
      keys_.push_back(key);
    }
    return slot.id;
  }
  int64_t find(int64_t key) const { return slots_[find_slot(key)].id; }
  const std::vector<int64_t>& keys() const { return keys_; }

 private:
  struct Slot {
    int64_t key;
    int64_t id;
  };
  static uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  }
  size_t find_slot(int64_t key) const {
    const uint64_t mask = slots_.size() - 1;
    uint64_t pos = mix(static_cast<uint64_t>(key)) & mask;
    while (slots_[pos].id >= 0 && slots_[pos].key != key) pos = (pos + 1) & mask;
    return pos;
  }
  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(old.size() * 2, Slot{0, -1});
    for (const Slot& s : old) {
      if (s.id >= 0) slots_[find_slot(s.key)] = s;
    }
  }
  std::vector<Slot> slots_;
  std::vector<int64_t> keys_;
};

// Elevation onto the plane sum(x) = 0: el[j] = sum_k E[k, j] * scale[k] * f[k].
double elevation_coefficient(int k, int j, const std::vector<double>& scale) {
  if (k == j - 1) return -static_cast<double>(j) * scale[k];
  return k >= j ? scale[k] : 0.0;
}

std::vector<double> elevation_scale(int d) {
  std::vector<double> scale(d);
  double inv_std = (d + 1) * std::sqrt(2.0 / 3.0);
  for (int k = 0; k < d; ++k) scale[k] = inv_std / std::sqrt((k + 1.0) * (k + 2.0));
  return scale;
}

// Simplex of one point: rounding to the nearest remainder-0 point, ranking, barycentric weights
// (Kraehenbuehl's permutohedral.cpp, written for this project). DC = d if known at compile time.
template <int DC>
inline void simplex_of_point(const double* f, int dd, const double* scale, int64_t* rem0_out,
                             int64_t* rank, double* bary) {
  const int d = DC > 0 ? DC : dd;
  double elevated[kMaxDim + 1], rem0[kMaxDim + 1];
  double sm = 0.0;
  for (int i = d; i >= 1; --i) {
    const double cf = f[i - 1] * scale[i - 1];
    elevated[i] = sm - i * cf;
    sm += cf;
  }
  elevated[0] = sm;
  const double down_factor = 1.0 / (d + 1);
  int64_t total = 0;
  for (int i = 0; i <= d; ++i) {
    const double v = elevated[i] * down_factor;
    const double up = std::ceil(v) * (d + 1);
    const double dn = std::floor(v) * (d + 1);
    rem0[i] = (up - elevated[i] < elevated[i] - dn) ? up : dn;
    total += static_cast<int64_t>(rem0[i]);
    rank[i] = 0;
  }
  total /= (d + 1);
  for (int i = 0; i < d; ++i) {
    for (int j = i + 1; j <= d; ++j) {
      const bool lower = elevated[i] - rem0[i] < elevated[j] - rem0[j];
      rank[i] += lower;
      rank[j] += !lower;
    }
  }
  if (total > 0) {
    for (int i = 0; i <= d; ++i) {
      if (rank[i] >= d + 1 - total) {
        rem0[i] -= d + 1;
        rank[i] += total - (d + 1);
      } else {
        rank[i] += total;
      }
    }
  } else if (total < 0) {
    for (int i = 0; i <= d; ++i) {
      if (rank[i] < -total) {
        rem0[i] += d + 1;
        rank[i] += (d + 1) + total;
      } else {
        rank[i] += total;
      }
    }
  }
  for (int i = 0; i <= d + 1; ++i) bary[i] = 0.0;
  for (int i = 0; i <= d; ++i) {
    const double v = (elevated[i] - rem0[i]) * down_factor;
    bary[d - rank[i]] += v;
    bary[d - rank[i] + 1] -= v;
  }
  bary[0] += 1.0 + bary[d + 1];
  for (int i = 0; i <= d; ++i) rem0_out[i] = static_cast<int64_t>(rem0[i]);
}

// Key packing: origin and stride per key coordinate, from bounds of the elevated coordinates
// derived from the feature ranges (interval arithmetic), with room for the neighbour offsets.
struct Packing {
  std::vector<int64_t> origin, stride;
};

Packing make_packing(const double* f, int64_t n, int d, const std::vector<double>& scale) {
  std::vector<double> fmin(d, INFINITY), fmax(d, -INFINITY);
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < d; ++k) {
      fmin[k] = std::min(fmin[k], f[i * d + k]);
      fmax[k] = std::max(fmax[k], f[i * d + k]);
    }
  }
  Packing pk{std::vector<int64_t>(d), std::vector<int64_t>(d)};
  double total = 1.0;
  int64_t acc = 1;
  const double pad = 4.0 * (d + 1);
  for (int j = 0; j < d; ++j) {
    double lo = 0.0, hi = 0.0;
    for (int k = 0; k < d; ++k) {
      const double c = elevation_coefficient(k, j, scale);
      lo += std::min(c * fmin[k], c * fmax[k]);
      hi += std::max(c * fmin[k], c * fmax[k]);
    }
    const int64_t origin = static_cast<int64_t>(std::floor(lo - pad));
    const int64_t extent = static_cast<int64_t>(std::ceil(hi + pad)) - origin + 1;
    pk.origin[j] = origin;
    pk.stride[j] = acc;
    total *= static_cast<double>(extent);
    TORCH_CHECK(total < 4.0e18, "CRF lattice: feature range too large for packed lattice keys");
    acc *= extent;
  }
  return pk;
}

// One pass per thread chunk: simplex, weights, packed keys deduplicated in a thread-local table
// (index holds local ids afterwards).
template <int DC, typename WT>
void local_pass(const double* f, int64_t n, int dd, const std::vector<double>& scale,
                const Packing& pk, int64_t* idx, WT* w, std::vector<KeyTable>& local,
                int64_t chunk) {
  const int d = DC > 0 ? DC : dd;
  const int nchunks = static_cast<int>(local.size());
  at::parallel_for(0, nchunks, 1, [&](int64_t tb, int64_t te) {
    int64_t rem0[kMaxDim + 1], rank[kMaxDim + 1];
    double bary[kMaxDim + 2];
    for (int64_t t = tb; t < te; ++t) {
      const int64_t b = t * chunk, e = std::min(n, b + chunk);
      KeyTable tab(std::max<int64_t>(0, e - b) / 32 + 16);
      // Neighbouring points (consecutive voxels) share most simplex vertices: check the previous
      // point's keys before the hash table.
      int64_t prev_key[kMaxDim + 1], prev_id[kMaxDim + 1], cur_key[kMaxDim + 1];
      for (int r = 0; r <= d; ++r) prev_key[r] = -1;
      for (int64_t i = b; i < e; ++i) {
        simplex_of_point<DC>(f + i * d, d, scale.data(), rem0, rank, bary);
        for (int r = 0; r <= d; ++r) {
          int64_t packed = 0;
          for (int k = 0; k < d; ++k) {
            const int64_t key = rem0[k] + r - ((rank[k] > d - r) ? (d + 1) : 0);
            packed += (key - pk.origin[k]) * pk.stride[k];
          }
          int64_t id = -1;
          for (int q = 0; q <= d; ++q) {
            if (prev_key[q] == packed) id = prev_id[q];
          }
          if (id < 0) id = tab.insert(packed);
          cur_key[r] = packed;
          idx[i * (d + 1) + r] = id;
          w[i * (d + 1) + r] = static_cast<WT>(bary[r]);
        }
        for (int r = 0; r <= d; ++r) {
          prev_key[r] = cur_key[r];
          prev_id[r] = idx[i * (d + 1) + r];
        }
      }
      local[t] = std::move(tab);
    }
  });
}

template <typename WT>
void run_local_pass(const double* f, int64_t n, int d, const std::vector<double>& scale,
                    const Packing& pk, int64_t* idx, WT* w, std::vector<KeyTable>& local,
                    int64_t chunk) {
  switch (d) {
    case 2: local_pass<2, WT>(f, n, d, scale, pk, idx, w, local, chunk); break;
    case 3: local_pass<3, WT>(f, n, d, scale, pk, idx, w, local, chunk); break;
    case 4: local_pass<4, WT>(f, n, d, scale, pk, idx, w, local, chunk); break;
    case 5: local_pass<5, WT>(f, n, d, scale, pk, idx, w, local, chunk); break;
    default: local_pass<0, WT>(f, n, d, scale, pk, idx, w, local, chunk); break;
  }
}

}  // namespace

// weight_dtype: the dtype of the returned barycentric weights (computed in float64).
std::vector<torch::Tensor> build_lattice(torch::Tensor features, c10::ScalarType weight_dtype) {
  TORCH_CHECK(features.dim() == 2 && features.scalar_type() == torch::kFloat64,
              "features must be (N, d) float64");
  features = features.contiguous();
  const int64_t n = features.size(0);
  const int d = static_cast<int>(features.size(1));
  TORCH_CHECK(d >= 1 && d <= kMaxDim, "CRF lattice: 1 to 16 features supported");
  const double* f = features.data_ptr<double>();
  const std::vector<double> scale = elevation_scale(d);
  const Packing pk = make_packing(f, n, d, scale);
  auto opts_l = torch::TensorOptions().dtype(torch::kInt64);
  torch::Tensor index = torch::empty({n, d + 1}, opts_l);
  TORCH_CHECK(weight_dtype == torch::kFloat64 || weight_dtype == torch::kFloat32,
              "weights must be float32 or float64");
  torch::Tensor weight = torch::empty({n, d + 1}, torch::TensorOptions().dtype(weight_dtype));
  int64_t* idx = index.data_ptr<int64_t>();
  // Chunks dedupe their own keys; local tables are merged in chunk order (deterministic for a
  // given thread count) and the ids remapped in parallel.
  const int nchunks = std::max(1, at::get_num_threads());
  const int64_t chunk = (n + nchunks - 1) / nchunks;
  std::vector<KeyTable> local(nchunks);
  if (weight_dtype == torch::kFloat64) {
    run_local_pass<double>(f, n, d, scale, pk, idx, weight.data_ptr<double>(), local, chunk);
  } else {
    run_local_pass<float>(f, n, d, scale, pk, idx, weight.data_ptr<float>(), local, chunk);
  }
  KeyTable table(n / 4 + 16);
  std::vector<std::vector<int64_t>> remap(nchunks);
  for (int t = 0; t < nchunks; ++t) {
    const std::vector<int64_t>& lk = local[t].keys();
    remap[t].resize(lk.size());
    for (size_t v = 0; v < lk.size(); ++v) remap[t][v] = table.insert(lk[v]);
    local[t] = KeyTable();
  }
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const std::vector<int64_t>& rm = remap[i / chunk];
      for (int r = 0; r <= d; ++r) idx[i * (d + 1) + r] = rm[idx[i * (d + 1) + r]];
    }
  });
  const std::vector<int64_t>& keys = table.keys();
  const int64_t m = static_cast<int64_t>(keys.size());
  torch::Tensor neighbors = torch::empty({d + 1, 2, m}, opts_l);
  int64_t* nb = neighbors.data_ptr<int64_t>();
  std::vector<int64_t> shift(d + 1, 0);
  for (int j = 0; j <= d; ++j) {
    for (int k = 0; k < d; ++k) shift[j] += (k == j ? d : -1) * pk.stride[k];
  }
  at::parallel_for(0, m, kGrain, [&](int64_t b, int64_t e) {
    for (int j = 0; j <= d; ++j) {
      for (int side = 0; side < 2; ++side) {
        const int64_t sgn = side == 0 ? 1 : -1;
        int64_t* out = nb + (static_cast<int64_t>(j) * 2 + side) * m;
        for (int64_t v = b; v < e; ++v) {
          const int64_t found = table.find(keys[v] + sgn * shift[j]);
          out[v] = found < 0 ? m : found;
        }
      }
    }
  });
  return {index, weight, neighbors};
}

namespace {

template <typename T>
void splat_impl(const int64_t* idx, const T* w, const T* vals, int64_t n, int d, int64_t c,
                int64_t m, T* lat) {
  int nthreads = at::get_num_threads();
  std::vector<T> buffers(static_cast<size_t>(nthreads) * (m + 1) * c, T(0));
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    T* buf = buffers.data() + static_cast<size_t>(at::get_thread_num()) * (m + 1) * c;
    for (int64_t i = b; i < e; ++i) {
      for (int r = 0; r <= d; ++r) {
        const int64_t v = idx[i * (d + 1) + r];
        const T wr = w[i * (d + 1) + r];
        for (int64_t ch = 0; ch < c; ++ch) buf[v * c + ch] += wr * vals[ch * n + i];
      }
    }
  });
  at::parallel_for(0, (m + 1) * c, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      T s = 0;
      for (int t = 0; t < nthreads; ++t) s += buffers[static_cast<size_t>(t) * (m + 1) * c + p];
      lat[p] = s;
    }
  });
}

template <typename T>
void blur_impl(const int64_t* nb, int d, int64_t c, int64_t m, bool reverse, T*& lat, T*& tmp) {
  for (int step = 0; step <= d; ++step) {
    const int j = reverse ? d - step : step;
    const int64_t* n1 = nb + static_cast<int64_t>(j) * 2 * m;
    const int64_t* n2 = n1 + m;
    const T* src = lat;
    T* dst = tmp;
    at::parallel_for(0, m, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t v = b; v < e; ++v) {
        const int64_t a = n1[v] * c, z = n2[v] * c;
        for (int64_t ch = 0; ch < c; ++ch)
          dst[v * c + ch] = src[v * c + ch] + T(0.5) * (src[a + ch] + src[z + ch]);
      }
    });
    for (int64_t ch = 0; ch < c; ++ch) dst[m * c + ch] = 0;
    std::swap(lat, tmp);
  }
}

template <typename T>
void slice_impl(const int64_t* idx, const T* w, const T* lat, int64_t n, int d, int64_t c, T* out) {
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      for (int64_t ch = 0; ch < c; ++ch) {
        T s = 0;
        for (int r = 0; r <= d; ++r) s += w[i * (d + 1) + r] * lat[idx[i * (d + 1) + r] * c + ch];
        out[ch * n + i] = s;
      }
    }
  });
}

}  // namespace

torch::Tensor lattice_filter(torch::Tensor index, torch::Tensor weight, torch::Tensor neighbors,
                             torch::Tensor values, bool reverse) {
  TORCH_CHECK(values.dim() == 2, "values must be (C, N)");
  index = index.contiguous();
  neighbors = neighbors.contiguous();
  values = values.contiguous();
  weight = weight.to(values.scalar_type()).contiguous();
  const int64_t c = values.size(0), n = values.size(1);
  const int d = static_cast<int>(index.size(1)) - 1;
  const int64_t m = neighbors.size(2);
  torch::Tensor out = torch::empty_like(values);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "lattice_filter", [&] {
    std::vector<scalar_t> a((m + 1) * c), b((m + 1) * c);
    scalar_t* lat = a.data();
    scalar_t* tmp = b.data();
    splat_impl<scalar_t>(index.data_ptr<int64_t>(), weight.data_ptr<scalar_t>(),
                         values.data_ptr<scalar_t>(), n, d, c, m, lat);
    blur_impl<scalar_t>(neighbors.data_ptr<int64_t>(), d, c, m, reverse, lat, tmp);
    slice_impl<scalar_t>(index.data_ptr<int64_t>(), weight.data_ptr<scalar_t>(), lat, n, d, c,
                         out.data_ptr<scalar_t>());
  });
  return out;
}

namespace {

// One 1D band pass along the middle axis of a (outer, n, inner) contiguous array.
template <typename T>
void band_pass(const T* src, T* dst, const T* band, int64_t outer, int64_t n, int64_t inner,
               int64_t width) {
  const int64_t radius = (width - 1) / 2;
  at::parallel_for(0, outer * n, 16, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const int64_t o = p / n, i = p % n;
      const int64_t t0 = std::max<int64_t>(0, radius - i);
      const int64_t t1 = std::min<int64_t>(width, n - i + radius);
      T* out = dst + (o * n + i) * inner;
      const T* row = band + i * width;
      if (inner == 1) {
        T s = 0;
        const T* in = src + o * n + i - radius;
        for (int64_t t = t0; t < t1; ++t) s += row[t] * in[t];
        out[0] = s;
        continue;
      }
      for (int64_t q = 0; q < inner; ++q) out[q] = 0;
      for (int64_t t = t0; t < t1; ++t) {
        const T wt = row[t];
        const T* in = src + (o * n + i + t - radius) * inner;
        for (int64_t q = 0; q < inner; ++q) out[q] += wt * in[q];
      }
    }
  });
}

}  // namespace

torch::Tensor separable_filter(torch::Tensor values, std::vector<torch::Tensor> bands) {
  TORCH_CHECK(static_cast<int64_t>(bands.size()) == values.dim() - 1, "one band per spatial axis");
  torch::Tensor cur = values.contiguous().clone();
  torch::Tensor tmp = torch::empty_like(cur);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "separable_filter", [&] {
    for (size_t axis = 0; axis < bands.size(); ++axis) {
      torch::Tensor band = bands[axis].to(values.scalar_type()).contiguous();
      const int64_t n = cur.size(axis + 1);
      TORCH_CHECK(band.size(0) == n, "band size does not match the axis");
      int64_t outer = 1, inner = 1;
      for (int64_t k = 0; k <= static_cast<int64_t>(axis); ++k) outer *= cur.size(k);
      for (int64_t k = axis + 2; k < cur.dim(); ++k) inner *= cur.size(k);
      band_pass<scalar_t>(cur.data_ptr<scalar_t>(), tmp.data_ptr<scalar_t>(),
                          band.data_ptr<scalar_t>(), outer, n, inner, band.size(1));
      std::swap(cur, tmp);
    }
  });
  return cur;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("build_lattice", &build_lattice, "build a permutohedral lattice (CPU)");
  m.def("lattice_filter", &lattice_filter, "splat-blur-slice (CPU); reverse = adjoint");
  m.def("separable_filter", &separable_filter, "banded separable filter (CPU)");
}
