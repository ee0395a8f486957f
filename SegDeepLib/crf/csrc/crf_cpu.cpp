// SegDeep CRF: multi-threaded CPU permutohedral lattice and separable Gaussian (at::parallel_for).
//
// build_lattice(features (N, d) float64, weight_dtype, force_int64)
// build_lattice_grid(image (C, *spatial) float32/64, axis_scales [S], channel_scales [C],
//                    weight_dtype, force_int64)
//     -> (index (N, d+1), weight (N, d+1), neighbors (d+1, 2, M))
// lattice_filter(index, weight, neighbors, values (C, N), reverse, divide_before (N,) = None,
//                divide_after (N,) = None, out = None) -> (C, N)
// separable_filter(values (C, *spatial), bands [(n_axis, 2R+1)], scratch = None, out = None)
//     -> (C, *spatial)
// empty_cached(sizes, dtype), cache_stats(), cache_set_limit(bytes), cache_release(),
// cache_set_debug(poison, min_block): the block cache of block_cache.h, which keeps the lattice
// tables and every large internal array of the functions above between calls.
//
// The lattice math is the one of SegDeepLib/crf/lattice.py (Adams et al. 2010, Kraehenbuehl's
// rounding and ranking). The grid build computes the appearance features of the voxels on the fly
// (position index * axis_scale, intensity / channel_scale, as backends.bilateral_features does),
// so the (N, d) float64 feature array is never materialised.
//
// Index width: index and neighbors are int32 while the vertex count allows it, else int64
// (force_int64 selects the wide path for tests). Every offset (point * (d+1), vertex * channels)
// is computed in int64, so lattices beyond 2^31 vertices or values are handled.
//
// Build (deterministic, independent of the thread count): the points are cut into fixed chunks
// (their size depends on N only); each thread takes a contiguous run of chunks and dedupes the
// vertex keys of one chunk in a small table (sized from the previous chunk's vertex count, so it
// stays in cache whatever N is), behind a tiny direct-mapped cache of recent keys, with the table
// probes of 16 points prefetched before they are made. A key new to its chunk is looked up in the
// previous chunk's table, which the same thread still holds; only keys found in neither (about
// one per lattice vertex) reach the global table, which is sized from their exact count. Global
// ids follow chunk order, then first use inside a chunk (the same ids as a single-table build).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "block_cache.h"

namespace {

using segdeep::Buffer;

// An uninitialised contiguous CPU tensor; a large one lives in a block of the cache
// (segdeep::BlockCache) and gives it back when the tensor is freed.
torch::Tensor cached_empty(at::IntArrayRef sizes, c10::ScalarType dtype) {
  const auto options = torch::TensorOptions().dtype(dtype);
  int64_t numel = 1;
  for (int64_t s : sizes) {
    TORCH_CHECK(s >= 0, "negative size");
    numel *= s;
  }
  const size_t bytes = static_cast<size_t>(numel) * c10::elementSize(dtype);
  segdeep::BlockCache& cache = segdeep::BlockCache::instance();
  if (bytes < cache.min_block()) return torch::empty(sizes, options);
  const segdeep::Allocation block = cache.acquire(bytes);
  return torch::from_blob(
      block.ptr, sizes, [block](void*) { segdeep::BlockCache::instance().release(block); },
      options);
}

constexpr int64_t kGrain = 2048;
constexpr int kMaxDim = 16;
constexpr int kRecent = 1024;  // direct-mapped cache of recent keys (16 KiB: stays in L1)
constexpr int64_t kBatch = 16;  // points whose table probes are prefetched together

uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Open-addressing (linear probing) table of packed keys (>= 0) -> ids; load factor <= 1/2.
class KeyTable {
 public:
  void reset(int64_t expected) {
    size_t cap = 64;
    while (cap < 2 * static_cast<size_t>(std::max<int64_t>(expected, 1))) cap <<= 1;
    if (slots_.size() < cap || slots_.size() > 4 * cap) slots_.allocate(cap);
    cap = slots_.size();
    std::memset(static_cast<void*>(slots_.data()), 0xff, cap * sizeof(Slot));
    mask_ = cap - 1;
    count_ = 0;
  }
  // Id of key (hash h); inserts it with id new_id if absent (inserted = true).
  int64_t find_or_insert(int64_t key, uint64_t h, int64_t new_id, bool& inserted) {
    if (2 * (count_ + 1) > slots_.size()) grow();
    size_t pos = h & mask_;
    while (slots_[pos].key >= 0) {
      if (slots_[pos].key == key) {
        inserted = false;
        return slots_[pos].id;
      }
      pos = (pos + 1) & mask_;
    }
    slots_[pos] = Slot{key, new_id};
    ++count_;
    inserted = true;
    return new_id;
  }
  int64_t find(int64_t key, uint64_t h) const {
    if (slots_.empty()) return -1;
    for (size_t pos = h & mask_;; pos = (pos + 1) & mask_) {
      if (slots_[pos].key == key) return slots_[pos].id;
      if (slots_[pos].key < 0) return -1;
    }
  }
  // Hint: the slot of hash h will be probed soon (hides the cache miss of a large table).
  void prefetch(uint64_t h) const {
    if (!slots_.empty()) __builtin_prefetch(slots_.data() + (h & mask_));
  }

 private:
  struct Slot {
    int64_t key;  // -1: empty
    int64_t id;
  };
  void grow() {
    Buffer<Slot> old;
    old.swap(slots_);
    slots_.allocate(old.size() * 2);
    std::memset(static_cast<void*>(slots_.data()), 0xff, slots_.size() * sizeof(Slot));
    mask_ = slots_.size() - 1;
    for (size_t i = 0; i < old.size(); ++i) {
      const Slot& s = old[i];
      if (s.key < 0) continue;
      size_t pos = mix(static_cast<uint64_t>(s.key)) & mask_;
      while (slots_[pos].key >= 0) pos = (pos + 1) & mask_;
      slots_[pos] = s;
    }
  }
  Buffer<Slot> slots_;  // uninitialised until reset
  size_t mask_ = 0;
  int64_t count_ = 0;
};

struct RecentKeys {
  int64_t key[kRecent];
  int64_t id[kRecent];
  void clear() { std::fill(key, key + kRecent, int64_t(-1)); }
};

// Nearest integer of a double with |v| < 2^51 (exact: adding 1.5 * 2^52 leaves an ulp of 1);
// the per-point rounding below builds floor and ceil from it without libm calls or int
// conversions. make_geometry guarantees the bound for every elevated coordinate.
constexpr double kRoundMagic = 6755399441055744.0;
constexpr double kMaxElevated = 1125899906842624.0;  // 2^50
inline double round_nearest(double v) { return (v + kRoundMagic) - kRoundMagic; }

// Elevation onto the plane sum(x) = 0: el[j] = sum_k E[k, j] * scale[k] * f[k].
double elevation_coefficient(int k, int j, const double* scale) {
  if (k == j - 1) return -static_cast<double>(j) * scale[k];
  return k >= j ? scale[k] : 0.0;
}

// Per-build constants: elevation scales and the key packing (origin and stride per key
// coordinate, from bounds of the elevated coordinates with room for the neighbour offsets).
struct Geometry {
  int d = 0;
  double scale[kMaxDim];
  int64_t origin[kMaxDim], stride[kMaxDim];
  int64_t stride_sum = 0;
};

Geometry make_geometry(int d, const double* fmin, const double* fmax) {
  Geometry g;
  g.d = d;
  const double inv_std = (d + 1) * std::sqrt(2.0 / 3.0);
  for (int k = 0; k < d; ++k) g.scale[k] = inv_std / std::sqrt((k + 1.0) * (k + 2.0));
  double total = 1.0;
  int64_t acc = 1;
  const double pad = 4.0 * (d + 1);
  for (int j = 0; j < d; ++j) {
    double lo = 0.0, hi = 0.0;
    for (int k = 0; k < d; ++k) {
      const double c = elevation_coefficient(k, j, g.scale);
      lo += std::min(c * fmin[k], c * fmax[k]);
      hi += std::max(c * fmin[k], c * fmax[k]);
    }
    TORCH_CHECK(std::isfinite(lo) && std::isfinite(hi), "CRF lattice: non-finite features");
    const int64_t origin = static_cast<int64_t>(std::floor(lo - pad));
    const int64_t extent = static_cast<int64_t>(std::ceil(hi + pad)) - origin + 1;
    g.origin[j] = origin;
    g.stride[j] = acc;
    total *= static_cast<double>(extent);
    TORCH_CHECK(total < 4.0e18, "CRF lattice: feature range too large for packed lattice keys");
    acc *= extent;
  }
  for (int k = 0; k < d; ++k) g.stride_sum += g.stride[k];
  for (int j = 0; j <= d; ++j) {  // every elevated coordinate, for the rounding trick
    double bound = 0.0;
    for (int k = 0; k < d; ++k) {
      const double c = elevation_coefficient(k, j, g.scale);
      bound += std::max(std::abs(c * fmin[k]), std::abs(c * fmax[k]));
    }
    TORCH_CHECK(bound < kMaxElevated, "CRF lattice: feature range too large for packed lattice keys");
  }
  return g;
}

// Feature sources: the d scaled features of consecutive points (seek, then next per point).
struct DenseSource {
  const double* f;
  int d;
  int64_t n;
  int64_t i = 0;
  void seek(int64_t b) { i = b; }
  const double* next(double*) { return f + (i++) * d; }
  void bounds(double* lo, double* hi) const {
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(64, n / 65536));
    std::vector<double> plo(parts * d, INFINITY), phi(parts * d, -INFINITY);
    at::parallel_for(0, parts, 1, [&](int64_t pb, int64_t pe) {
      for (int64_t p = pb; p < pe; ++p) {
        const int64_t b = n * p / parts, e = n * (p + 1) / parts;
        double* l = plo.data() + p * d;
        double* h = phi.data() + p * d;
        for (int64_t q = b; q < e; ++q) {
          for (int k = 0; k < d; ++k) {
            l[k] = std::min(l[k], f[q * d + k]);
            h[k] = std::max(h[k], f[q * d + k]);
          }
        }
      }
    });
    for (int k = 0; k < d; ++k) {
      lo[k] = INFINITY;
      hi[k] = -INFINITY;
      for (int64_t p = 0; p < parts; ++p) {
        lo[k] = std::min(lo[k], plo[p * d + k]);
        hi[k] = std::max(hi[k], phi[p * d + k]);
      }
    }
  }
};

// Voxel grid in C order: features = (index along each axis * axis_scale, image[ch] / ch_scale).
template <typename T>
struct GridSource {
  int s = 0, c = 0;
  int64_t n = 0;
  int64_t shape[kMaxDim];
  double axis_scale[kMaxDim], ch_scale[kMaxDim];
  const T* image = nullptr;
  int64_t i = 0;
  int64_t coord[kMaxDim];
  void seek(int64_t b) {
    i = b;
    for (int a = s - 1; a >= 0; --a) {
      coord[a] = b % shape[a];
      b /= shape[a];
    }
  }
  const double* next(double* buf) {
    for (int a = 0; a < s; ++a) buf[a] = static_cast<double>(coord[a]) * axis_scale[a];
    for (int ch = 0; ch < c; ++ch) buf[s + ch] = static_cast<double>(image[ch * n + i]) / ch_scale[ch];
    ++i;
    for (int a = s - 1; a >= 0; --a) {
      if (++coord[a] < shape[a]) break;
      coord[a] = 0;
    }
    return buf;
  }
  void bounds(double* lo, double* hi) const {
    for (int a = 0; a < s; ++a) {
      lo[a] = 0.0;
      hi[a] = static_cast<double>(shape[a] - 1) * axis_scale[a];
    }
    for (int ch = 0; ch < c; ++ch) {
      const T* img = image + ch * n;
      const T init_lo = std::numeric_limits<T>::infinity(), init_hi = -init_lo;
      std::pair<T, T> r = at::parallel_reduce(
          0, n, 1 << 16, std::make_pair(init_lo, init_hi),
          [&](int64_t b, int64_t e, std::pair<T, T> acc) {
            for (int64_t q = b; q < e; ++q) {
              acc.first = std::min(acc.first, img[q]);
              acc.second = std::max(acc.second, img[q]);
            }
            return acc;
          },
          [](std::pair<T, T> a, std::pair<T, T> b) {
            return std::make_pair(std::min(a.first, b.first), std::max(a.second, b.second));
          });
      lo[s + ch] = static_cast<double>(r.first) / ch_scale[ch];
      hi[s + ch] = static_cast<double>(r.second) / ch_scale[ch];
    }
  }
};

// Simplex of one point (Kraehenbuehl's permutohedral.cpp rounding and ranking, written for this
// project): packed keys of its d+1 vertices and barycentric weights. DC = d if known at compile
// time.
template <int DC>
inline void simplex_keys(const double* f, const Geometry& g, int64_t* keys, double* bary) {
  const int d = DC > 0 ? DC : g.d;
  double elevated[kMaxDim + 1], rem0[kMaxDim + 1];
  int rank[kMaxDim + 1];
  double sm = 0.0;
  for (int i = d; i >= 1; --i) {
    const double cf = f[i - 1] * g.scale[i - 1];
    elevated[i] = sm - i * cf;
    sm += cf;
  }
  elevated[0] = sm;
  const double down_factor = 1.0 / (d + 1);
  int64_t total = 0;
  for (int i = 0; i <= d; ++i) {
    const double v = elevated[i] * down_factor;
    const double rn = round_nearest(v);
    const double up = (rn < v ? rn + 1.0 : rn) * (d + 1);  // ceil(v) * (d+1)
    const double dn = (rn > v ? rn - 1.0 : rn) * (d + 1);  // floor(v) * (d+1)
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
  // Fix the sum (branch-free): with total > 0 the `total` largest-ranked coordinates move down
  // by d+1, with total < 0 the -total smallest move up; ranks shift accordingly.
  const int tot = static_cast<int>(total);
  int by_rank[kMaxDim + 1];
  for (int i = 0; i <= d; ++i) {
    const int down = tot > 0 && rank[i] >= d + 1 - tot;
    const int up = tot < 0 && rank[i] < -tot;
    rem0[i] += (d + 1) * (up - down);
    rank[i] += tot + (d + 1) * (up - down);
    by_rank[rank[i]] = i;
  }
  // Barycentric weights: bary[j] = v(rank d - j) - v(rank d - j + 1), v = residual / (d+1)
  // (the same two terms the scatter form adds, so the same rounding).
  double vs[kMaxDim + 2];
  for (int k = 0; k <= d; ++k) vs[k] = (elevated[by_rank[k]] - rem0[by_rank[k]]) * down_factor;
  vs[d + 1] = 0.0;
  bary[d + 1] = -vs[0];
  for (int j = d; j >= 1; --j) bary[j] = vs[d - j] - vs[d - j + 1];
  bary[0] = vs[d] + (1.0 + bary[d + 1]);
  // Vertex r has key coordinates rem0[k] + r - (d+1) [rank[k] > d - r] (k < d); packed, vertex
  // r + 1 differs from vertex r by stride_sum - (d+1) stride[k] for the k of rank d - r.
  int64_t key = 0;
  for (int k = 0; k < d; ++k) key += (static_cast<int64_t>(rem0[k]) - g.origin[k]) * g.stride[k];
  keys[0] = key;
  for (int r = 1; r <= d; ++r) {
    const int k = by_rank[d - r + 1];
    key += g.stride_sum - (k < d ? (d + 1) * g.stride[k] : 0);
    keys[r] = key;
  }
}

// Keys first seen in one chunk, in order of first use, and for each the id it has in the
// previous chunk's table (-1: not there, or the previous chunk belongs to another thread).
// Cached blocks: together they hold about 12 bytes per point.
struct ChunkKeys {
  segdeep::GrowBuffer<int64_t> keys;
  segdeep::GrowBuffer<int32_t> link;
};

// Chunk length: a function of N only (the lattice does not depend on the thread count).
int64_t chunk_length(int64_t n) {
  const int64_t target = n / 16;
  return std::max<int64_t>(4096, std::min<int64_t>(int64_t(1) << 16, target));
}

// Local pass: simplex, weights and chunk-local vertex ids of every point.
template <int DC, typename Source, typename WT>
void local_pass(const Source& source, const Geometry& g, int64_t n, int64_t chunk, int32_t* idx,
                WT* w, std::vector<ChunkKeys>& chunks) {
  const int d = DC > 0 ? DC : g.d;
  const int64_t nchunks = static_cast<int64_t>(chunks.size());
  at::parallel_for(0, nchunks, 1, [&](int64_t tb, int64_t te) {
    Source src = source;
    KeyTable cur, prev;
    std::vector<RecentKeys> recent_buf(1);
    RecentKeys& recent = recent_buf[0];
    double fbuf[kMaxDim], bary[kMaxDim + 2];
    int64_t keys[kBatch * (kMaxDim + 1)];
    uint64_t hashes[kBatch * (kMaxDim + 1)];
    int64_t expected = chunk / 8 + 64;
    for (int64_t t = tb; t < te; ++t) {
      const int64_t b = t * chunk, e = std::min(n, b + chunk);
      ChunkKeys& ck = chunks[t];
      cur.reset(expected);
      recent.clear();
      ck.keys.reserve(expected);
      ck.link.reserve(expected);
      src.seek(b);
      for (int64_t i0 = b; i0 < e; i0 += kBatch) {
        const int64_t i1 = std::min(e, i0 + kBatch);
        // Simplices of a batch of points first, prefetching the table slots of keys that miss
        // the recent-key cache; then the lookups, in point order.
        for (int64_t i = i0; i < i1; ++i) {
          int64_t* k = keys + (i - i0) * (d + 1);
          simplex_keys<DC>(src.next(fbuf), g, k, bary);
          WT* out_w = w + i * (d + 1);
          for (int r = 0; r <= d; ++r) {
            out_w[r] = static_cast<WT>(bary[r]);
            const uint64_t h = mix(static_cast<uint64_t>(k[r]));
            hashes[(i - i0) * (d + 1) + r] = h;
            if (recent.key[(h >> 40) & (kRecent - 1)] != k[r]) {
              cur.prefetch(h);
              if (t > tb) prev.prefetch(h);
            }
          }
        }
        for (int64_t p = 0; p < (i1 - i0) * (d + 1); ++p) {
          const int64_t key = keys[p];
          const uint64_t h = hashes[p];
          const int slot = static_cast<int>((h >> 40) & (kRecent - 1));
          int64_t id;
          if (recent.key[slot] == key) {
            id = recent.id[slot];
          } else {
            bool inserted;
            id = cur.find_or_insert(key, h, static_cast<int64_t>(ck.keys.size()), inserted);
            if (inserted) {
              ck.keys.push_back(key);
              ck.link.push_back(t > tb ? static_cast<int32_t>(prev.find(key, h)) : -1);
            }
            recent.key[slot] = key;
            recent.id[slot] = id;
          }
          idx[i0 * (d + 1) + p] = static_cast<int32_t>(id);
        }
      }
      expected = static_cast<int64_t>(ck.keys.size()) * 5 / 4 + 64;
      std::swap(cur, prev);
    }
  });
}

template <typename Source, typename WT>
void run_local_pass(const Source& src, const Geometry& g, int64_t n, int64_t chunk, int32_t* idx,
                    WT* w, std::vector<ChunkKeys>& chunks) {
  switch (g.d) {
    case 2: local_pass<2>(src, g, n, chunk, idx, w, chunks); break;
    case 3: local_pass<3>(src, g, n, chunk, idx, w, chunks); break;
    case 4: local_pass<4>(src, g, n, chunk, idx, w, chunks); break;
    case 5: local_pass<5>(src, g, n, chunk, idx, w, chunks); break;
    default: local_pass<0>(src, g, n, chunk, idx, w, chunks); break;
  }
}

// Global ids of the chunk-local vertices (serial, chunk order): a key linked to the previous
// chunk takes that chunk's id, any other is looked up in (or added to) the global table. Each
// chunk's keys are replaced by their global ids (the remap of its local ids); the distinct keys,
// in id order, go to global_keys. Returns the vertex count.
int64_t merge_chunks(std::vector<ChunkKeys>& chunks, KeyTable& global,
                     Buffer<int64_t>& global_keys) {
  int64_t candidates = 0;
  for (const ChunkKeys& ck : chunks) {
    for (size_t a = 0; a < ck.link.size(); ++a) candidates += ck.link[a] < 0;
  }
  global.reset(candidates);
  global_keys.allocate(static_cast<size_t>(std::max<int64_t>(candidates, 1)));
  int64_t m = 0;
  for (size_t t = 0; t < chunks.size(); ++t) {
    ChunkKeys& ck = chunks[t];
    int64_t* rm = ck.keys.data();  // key in, global id out
    const size_t count = ck.keys.size();
    constexpr size_t kAhead = 32;  // prefetch distance (keys) into the global table
    for (size_t a = 0; a < std::min(count, kAhead); ++a) {
      if (ck.link[a] < 0) global.prefetch(mix(static_cast<uint64_t>(ck.keys[a])));
    }
    for (size_t a = 0; a < count; ++a) {
      if (a + kAhead < count && ck.link[a + kAhead] < 0) {
        global.prefetch(mix(static_cast<uint64_t>(ck.keys[a + kAhead])));
      }
      if (ck.link[a] >= 0) {
        rm[a] = chunks[t - 1].keys[ck.link[a]];
        continue;
      }
      const int64_t key = rm[a];
      bool inserted;
      rm[a] = global.find_or_insert(key, mix(static_cast<uint64_t>(key)), m, inserted);
      if (inserted) global_keys[m++] = key;
    }
    ck.link.reset();
  }
  return m;
}

// Local ids -> global ids (merge_chunks left each chunk's global ids in its keys).
template <typename IT>
void remap_index(const int32_t* local, IT* out, int64_t n, int d, int64_t chunk,
                 const std::vector<ChunkKeys>& remap) {
  at::parallel_for(0, static_cast<int64_t>(remap.size()), 1, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      const int64_t* rm = remap[t].keys.data();
      const int64_t b = t * chunk * (d + 1), e = std::min(n, (t + 1) * chunk) * (d + 1);
      for (int64_t p = b; p < e; ++p) out[p] = static_cast<IT>(rm[local[p]]);
    }
  });
}

template <typename IT>
void find_neighbors(const KeyTable& global, const int64_t* keys, int64_t m, const Geometry& g,
                    IT* nb) {
  const int d = g.d;
  int64_t shift[kMaxDim + 1];
  for (int j = 0; j <= d; ++j) {
    shift[j] = 0;
    for (int k = 0; k < d; ++k) shift[j] += (k == j ? d : -1) * g.stride[k];
  }
  constexpr int64_t kVerts = 8;  // vertices whose 2 (d+1) neighbour probes are prefetched together
  at::parallel_for(0, m, kGrain, [&](int64_t b, int64_t e) {
    uint64_t hashes[kVerts * 2 * (kMaxDim + 1)];
    for (int64_t v0 = b; v0 < e; v0 += kVerts) {
      const int64_t v1 = std::min(e, v0 + kVerts);
      for (int64_t v = v0; v < v1; ++v) {
        for (int q = 0; q < 2 * (d + 1); ++q) {
          const int64_t key = keys[v] + ((q & 1) == 0 ? shift[q / 2] : -shift[q / 2]);
          const uint64_t h = mix(static_cast<uint64_t>(key));
          hashes[(v - v0) * 2 * (d + 1) + q] = h;
          global.prefetch(h);
        }
      }
      for (int64_t v = v0; v < v1; ++v) {
        for (int q = 0; q < 2 * (d + 1); ++q) {
          const int64_t key = keys[v] + ((q & 1) == 0 ? shift[q / 2] : -shift[q / 2]);
          const int64_t found = global.find(key, hashes[(v - v0) * 2 * (d + 1) + q]);
          nb[static_cast<int64_t>(q) * m + v] = static_cast<IT>(found < 0 ? m : found);
        }
      }
    }
  });
}

template <typename Source>
std::vector<torch::Tensor> build_from(const Source& src, int64_t n, int d,
                                      c10::ScalarType weight_dtype, bool force_int64) {
  TORCH_CHECK(d >= 1 && d <= kMaxDim, "CRF lattice: 1 to 16 features supported");
  TORCH_CHECK(n > 0, "CRF lattice: no points");
  TORCH_CHECK(weight_dtype == torch::kFloat64 || weight_dtype == torch::kFloat32,
              "weights must be float32 or float64");
  double fmin[kMaxDim], fmax[kMaxDim];
  src.bounds(fmin, fmax);
  const Geometry g = make_geometry(d, fmin, fmax);
  const int64_t chunk = chunk_length(n);
  TORCH_CHECK(chunk * (d + 1) < std::numeric_limits<int32_t>::max(), "CRF lattice: chunk too big");
  std::vector<ChunkKeys> chunks((n + chunk - 1) / chunk);
  // Every element of index, weight and neighbors is written below (cached blocks hold old data).
  torch::Tensor index = cached_empty({n, d + 1}, torch::kInt32);
  torch::Tensor weight = cached_empty({n, d + 1}, weight_dtype);
  int32_t* idx = index.data_ptr<int32_t>();
  if (weight_dtype == torch::kFloat64) {
    run_local_pass(src, g, n, chunk, idx, weight.data_ptr<double>(), chunks);
  } else {
    run_local_pass(src, g, n, chunk, idx, weight.data_ptr<float>(), chunks);
  }
  KeyTable global;
  Buffer<int64_t> keys;
  const int64_t m = merge_chunks(chunks, global, keys);
  const bool wide = force_int64 || m + 1 > std::numeric_limits<int32_t>::max();
  torch::Tensor neighbors;
  if (wide) {
    torch::Tensor wide_index = cached_empty({n, d + 1}, torch::kInt64);
    remap_index(idx, wide_index.data_ptr<int64_t>(), n, d, chunk, chunks);
    index = wide_index;
    neighbors = cached_empty({d + 1, 2, m}, torch::kInt64);
    find_neighbors(global, keys.data(), m, g, neighbors.data_ptr<int64_t>());
  } else {
    remap_index(idx, idx, n, d, chunk, chunks);
    neighbors = cached_empty({d + 1, 2, m}, torch::kInt32);
    find_neighbors(global, keys.data(), m, g, neighbors.data_ptr<int32_t>());
  }
  return {index, weight, neighbors};
}

}  // namespace

std::vector<torch::Tensor> build_lattice(torch::Tensor features, c10::ScalarType weight_dtype,
                                         bool force_int64) {
  TORCH_CHECK(features.dim() == 2 && features.scalar_type() == torch::kFloat64,
              "features must be (N, d) float64");
  features = features.contiguous();
  DenseSource src{features.data_ptr<double>(), static_cast<int>(features.size(1)),
                  features.size(0)};
  return build_from(src, features.size(0), static_cast<int>(features.size(1)), weight_dtype,
                    force_int64);
}

std::vector<torch::Tensor> build_lattice_grid(torch::Tensor image, std::vector<double> axis_scales,
                                              std::vector<double> channel_scales,
                                              c10::ScalarType weight_dtype, bool force_int64) {
  const int s = static_cast<int>(axis_scales.size());
  const int c = static_cast<int>(channel_scales.size());
  TORCH_CHECK(image.dim() == s + 1 && image.size(0) == c,
              "image must be (C, *spatial) with one scale per axis and per channel");
  TORCH_CHECK(s + c <= kMaxDim, "CRF lattice: 1 to 16 features supported");
  image = image.contiguous();
  const int64_t n = image[0].numel();
  for (double v : axis_scales) TORCH_CHECK(v >= 0 && std::isfinite(v), "axis scales >= 0");
  for (double v : channel_scales) TORCH_CHECK(v > 0 && std::isfinite(v), "channel scales > 0");
  std::vector<torch::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "build_lattice_grid", [&] {
    GridSource<scalar_t> src;
    src.s = s;
    src.c = c;
    src.n = n;
    src.image = image.data_ptr<scalar_t>();
    for (int a = 0; a < s; ++a) {
      src.shape[a] = image.size(a + 1);
      src.axis_scale[a] = axis_scales[a];
    }
    for (int ch = 0; ch < c; ++ch) src.ch_scale[ch] = channel_scales[ch];
    out = build_from(src, n, s + c, weight_dtype, force_int64);
  });
  return out;
}

namespace {

// Splat: each thread adds its points into its own (m+1, c) buffer; the buffers are then summed.
// Those private copies cost (threads - 1) * (m + 1) * c values (26 GB with 64 threads, 14 labels
// and 8 M vertices), so they are capped by a budget in bytes (splat_budget): when only k <
// threads - 1 copies fit, the points are cut into k + 1 contiguous slabs, each added by one task
// into its own buffer (k = 0: one pass into the result, no copy). Same sums, grouped differently.
std::atomic<int64_t> g_splat_budget{-1};  // bytes; -1: SEGDEEP_CRF_SPLAT_MB or kSplatBudget
std::atomic<int64_t> g_last_copies{0};    // private copies the last splat used (tests)
constexpr int64_t kSplatBudget = int64_t(1) << 30;

int64_t splat_budget() {
  const int64_t set = g_splat_budget.load();
  if (set >= 0) return set;
  const char* env = std::getenv("SEGDEEP_CRF_SPLAT_MB");
  if (env != nullptr && *env != '\0') {
    char* end = nullptr;
    const double mb = std::strtod(env, &end);
    if (end != env && std::isfinite(mb) && mb >= 0) return static_cast<int64_t>(mb * 1048576.0);
  }
  return kSplatBudget;
}

template <typename T, typename IT, int DP>
void splat_impl(const IT* idx, const T* w, const T* vals, const T* div, int64_t n, int dp,
                int64_t c, int64_t m, T* lat) {
  const int D = DP > 0 ? DP : dp;
  const int nthreads = at::get_num_threads();
  const int64_t len = (m + 1) * c;
  const int64_t fit = splat_budget() / std::max<int64_t>(1, len * static_cast<int64_t>(sizeof(T)));
  const int copies = static_cast<int>(std::min<int64_t>(std::max(0, nthreads - 1), fit));
  g_last_copies.store(copies);
  Buffer<T> buffers(static_cast<size_t>(copies) * len);
  std::fill(buffers.data(), buffers.data() + buffers.size(), T(0));
  std::fill(lat, lat + len, T(0));
  auto add_points = [&](int64_t b, int64_t e, T* buf) {
    if (c == 1) {
      for (int64_t i = b; i < e; ++i) {
        const T x = div ? vals[i] / div[i] : vals[i];
        for (int r = 0; r < D; ++r) buf[idx[i * D + r]] += w[i * D + r] * x;
      }
      return;
    }
    for (int64_t i = b; i < e; ++i) {
      for (int r = 0; r < D; ++r) {
        T* dst = buf + static_cast<int64_t>(idx[i * D + r]) * c;
        const T wr = w[i * D + r];
        if (div) {
          for (int64_t ch = 0; ch < c; ++ch) dst[ch] += wr * (vals[ch * n + i] / div[i]);
        } else {
          for (int64_t ch = 0; ch < c; ++ch) dst[ch] += wr * vals[ch * n + i];
        }
      }
    }
  };
  auto buffer_of = [&](int64_t k) {
    return k == 0 ? lat : buffers.data() + static_cast<size_t>(k - 1) * len;
  };
  if (copies == nthreads - 1) {
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      add_points(b, e, buffer_of(at::get_thread_num()));
    });
  } else {
    const int64_t slabs = copies + 1;
    at::parallel_for(0, slabs, 1, [&](int64_t sb, int64_t se) {
      for (int64_t k = sb; k < se; ++k) add_points(n * k / slabs, n * (k + 1) / slabs, buffer_of(k));
    });
  }
  if (copies > 0) {
    at::parallel_for(0, len, kGrain, [&](int64_t b, int64_t e) {
      for (int t = 0; t < copies; ++t) {
        const T* src = buffers.data() + static_cast<size_t>(t) * len;
        for (int64_t p = b; p < e; ++p) lat[p] += src[p];
      }
    });
  }
}

template <typename T, typename IT>
void blur_impl(const IT* nb, int d, int64_t c, int64_t m, bool reverse, T*& lat, T*& tmp) {
  for (int step = 0; step <= d; ++step) {
    const int j = reverse ? d - step : step;
    const IT* n1 = nb + static_cast<int64_t>(j) * 2 * m;
    const IT* n2 = n1 + m;
    const T* src = lat;
    T* dst = tmp;
    at::parallel_for(0, m, kGrain, [&](int64_t b, int64_t e) {
      if (c == 1) {
        for (int64_t v = b; v < e; ++v) dst[v] = src[v] + T(0.5) * (src[n1[v]] + src[n2[v]]);
        return;
      }
      for (int64_t v = b; v < e; ++v) {
        const int64_t a = static_cast<int64_t>(n1[v]) * c, z = static_cast<int64_t>(n2[v]) * c;
        for (int64_t ch = 0; ch < c; ++ch)
          dst[v * c + ch] = src[v * c + ch] + T(0.5) * (src[a + ch] + src[z + ch]);
      }
    });
    for (int64_t ch = 0; ch < c; ++ch) dst[m * c + ch] = 0;
    std::swap(lat, tmp);
  }
}

template <typename T, typename IT, int DP>
void slice_impl(const IT* idx, const T* w, const T* lat, const T* div, int64_t n, int dp,
                int64_t c, T* out) {
  const int D = DP > 0 ? DP : dp;
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    if (c == 1) {
      for (int64_t i = b; i < e; ++i) {
        T s = 0;
        for (int r = 0; r < D; ++r) s += w[i * D + r] * lat[idx[i * D + r]];
        out[i] = div ? s / div[i] : s;
      }
      return;
    }
    for (int64_t i = b; i < e; ++i) {
      for (int64_t ch = 0; ch < c; ++ch) out[ch * n + i] = 0;
      for (int r = 0; r < D; ++r) {
        const T* src = lat + static_cast<int64_t>(idx[i * D + r]) * c;
        const T wr = w[i * D + r];
        for (int64_t ch = 0; ch < c; ++ch) out[ch * n + i] += wr * src[ch];
      }
      if (div) {
        for (int64_t ch = 0; ch < c; ++ch) out[ch * n + i] /= div[i];
      }
    }
  });
}

// Pointers of one filtering: values (c, n) are divided by div_before (n) before the splat and
// the result by div_after (n) after the slice (either may be null).
template <typename T, typename IT>
struct FilterArgs {
  const IT* idx;
  const T* w;
  const IT* nb;
  const T* vals;
  const T* div_before;
  const T* div_after;
  T* out;
  int64_t n, c, m;
  int d;
  bool reverse;
};

template <typename T, typename IT, int DP>
void filter_impl(const FilterArgs<T, IT>& a) {
  // The splat zeroes buf_a; every blur step writes all of its destination.
  Buffer<T> buf_a((a.m + 1) * a.c), buf_b((a.m + 1) * a.c);
  T* lat = buf_a.data();
  T* tmp = buf_b.data();
  splat_impl<T, IT, DP>(a.idx, a.w, a.vals, a.div_before, a.n, a.d + 1, a.c, a.m, lat);
  blur_impl<T, IT>(a.nb, a.d, a.c, a.m, a.reverse, lat, tmp);
  slice_impl<T, IT, DP>(a.idx, a.w, lat, a.div_after, a.n, a.d + 1, a.c, a.out);
}

template <typename T, typename IT>
void filter_dispatch(const FilterArgs<T, IT>& a) {
  switch (a.d) {
    case 2: filter_impl<T, IT, 3>(a); break;
    case 3: filter_impl<T, IT, 4>(a); break;
    case 4: filter_impl<T, IT, 5>(a); break;
    default: filter_impl<T, IT, 0>(a); break;
  }
}

// A caller's buffer that can hold a result shaped like values.
bool usable_buffer(const c10::optional<torch::Tensor>& buf, const torch::Tensor& values) {
  return buf.has_value() && buf->defined() && buf->sizes() == values.sizes() &&
         buf->scalar_type() == values.scalar_type() && buf->is_contiguous() &&
         buf->device() == values.device();
}

template <typename T>
const T* optional_ptr(const c10::optional<torch::Tensor>& t, int64_t n, c10::ScalarType dtype,
                      torch::Tensor& keep) {
  if (!t.has_value() || !t->defined()) return nullptr;
  keep = t->to(dtype).contiguous();
  TORCH_CHECK(keep.numel() == n, "normaliser must have one value per point");
  return keep.data_ptr<T>();
}

}  // namespace

torch::Tensor lattice_filter(torch::Tensor index, torch::Tensor weight, torch::Tensor neighbors,
                             torch::Tensor values, bool reverse,
                             c10::optional<torch::Tensor> divide_before,
                             c10::optional<torch::Tensor> divide_after,
                             c10::optional<torch::Tensor> out_buffer) {
  TORCH_CHECK(values.dim() == 2, "values must be (C, N)");
  TORCH_CHECK(index.scalar_type() == neighbors.scalar_type() &&
                  (index.scalar_type() == torch::kInt32 || index.scalar_type() == torch::kInt64),
              "index and neighbors must both be int32 or both int64");
  index = index.contiguous();
  neighbors = neighbors.contiguous();
  values = values.contiguous();
  weight = weight.to(values.scalar_type()).contiguous();
  const int64_t c = values.size(0), n = values.size(1);
  const int d = static_cast<int>(index.size(1)) - 1;
  const int64_t m = neighbors.size(2);
  TORCH_CHECK(index.size(0) == n && weight.size(0) == n, "index, weight and values: same N");
  // The splat reads all values before the slice writes: out_buffer may even be values itself.
  torch::Tensor out = usable_buffer(out_buffer, values)
                          ? *out_buffer
                          : torch::empty_like(values);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "lattice_filter", [&] {
    torch::Tensor keep_before, keep_after;
    const scalar_t* before = optional_ptr<scalar_t>(divide_before, n, values.scalar_type(), keep_before);
    const scalar_t* after = optional_ptr<scalar_t>(divide_after, n, values.scalar_type(), keep_after);
    if (index.scalar_type() == torch::kInt32) {
      filter_dispatch(FilterArgs<scalar_t, int32_t>{
          index.data_ptr<int32_t>(), weight.data_ptr<scalar_t>(), neighbors.data_ptr<int32_t>(),
          values.data_ptr<scalar_t>(), before, after, out.data_ptr<scalar_t>(), n, c, m, d,
          reverse});
    } else {
      filter_dispatch(FilterArgs<scalar_t, int64_t>{
          index.data_ptr<int64_t>(), weight.data_ptr<scalar_t>(), neighbors.data_ptr<int64_t>(),
          values.data_ptr<scalar_t>(), before, after, out.data_ptr<scalar_t>(), n, c, m, d,
          reverse});
    }
  });
  return out;
}

namespace {

constexpr int64_t kBlock = 1024;  // inner elements per tile of a band pass (cache blocking)
constexpr int64_t kLanes = 16;    // outputs accumulated in registers across all taps

// One 1D band pass along the middle axis of a contiguous (outer, n, inner) array, inner > 1:
// tiles of kBlock inner elements, so the 2R+1 input rows of a tile stay in cache, and kLanes
// outputs summed in registers over the taps (same order of additions as a plain loop).
template <typename T>
void band_pass_strided(const T* src, T* dst, const T* band, int64_t outer, int64_t n,
                       int64_t inner, int64_t width) {
  const int64_t radius = (width - 1) / 2;
  const int64_t blocks = (inner + kBlock - 1) / kBlock;
  at::parallel_for(0, outer * blocks, 1, [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; ++p) {
      const int64_t o = p / blocks, q0 = (p % blocks) * kBlock;
      const int64_t len = std::min(kBlock, inner - q0);
      const T* base = src + o * n * inner + q0;
      for (int64_t i = 0; i < n; ++i) {
        T* out = dst + (o * n + i) * inner + q0;
        const T* row = band + i * width;
        const int64_t t0 = std::max<int64_t>(0, radius - i);
        const int64_t t1 = std::min<int64_t>(width, n - i + radius);
        const T* first = base + (i + t0 - radius) * inner;
        int64_t q = 0;
        for (; q + kLanes <= len; q += kLanes) {
          T acc[kLanes] = {};
          const T* in = first + q;
          for (int64_t t = t0; t < t1; ++t, in += inner) {
            const T wt = row[t];
            for (int64_t k = 0; k < kLanes; ++k) acc[k] += wt * in[k];
          }
          for (int64_t k = 0; k < kLanes; ++k) out[q + k] = acc[k];
        }
        for (; q < len; ++q) {
          T acc = 0;
          for (int64_t t = t0; t < t1; ++t) acc += row[t] * first[(t - t0) * inner + q];
          out[q] = acc;
        }
      }
    }
  });
}

// Band pass along the last (contiguous) axis: per row, a zero-padded copy and the transposed band
// (tap-major), so the inner loop runs over consecutive outputs and vectorises.
template <typename T>
void band_pass_last(const T* src, T* dst, const T* band, int64_t outer, int64_t n, int64_t width) {
  const int64_t radius = (width - 1) / 2;
  std::vector<T> band_t(width * n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t t = 0; t < width; ++t) band_t[t * n + i] = band[i * width + t];
  }
  at::parallel_for(0, outer, 16, [&](int64_t ob, int64_t oe) {
    std::vector<T> pad(n + 2 * radius, T(0));
    for (int64_t o = ob; o < oe; ++o) {
      std::copy(src + o * n, src + (o + 1) * n, pad.begin() + radius);
      T* out = dst + o * n;
      for (int64_t i = 0; i < n; ++i) out[i] = 0;
      for (int64_t t = 0; t < width; ++t) {
        const T* bt = band_t.data() + t * n;
        const T* in = pad.data() + t;
        for (int64_t i = 0; i < n; ++i) out[i] += bt[i] * in[i];
      }
    }
  });
}

}  // namespace

// scratch: optional buffer shaped like values for the intermediate passes; out: optional buffer
// for the result (a new tensor otherwise: autograd may keep it). Neither may alias values. The
// passes ping-pong between the result and the scratch.
torch::Tensor separable_filter(torch::Tensor values, std::vector<torch::Tensor> bands,
                               c10::optional<torch::Tensor> scratch,
                               c10::optional<torch::Tensor> out_buffer) {
  TORCH_CHECK(static_cast<int64_t>(bands.size()) == values.dim() - 1, "one band per spatial axis");
  values = values.contiguous();
  const void* in = values.data_ptr();
  torch::Tensor out = usable_buffer(out_buffer, values) && out_buffer->data_ptr() != in
                          ? *out_buffer
                          : torch::empty_like(values);
  if (bands.empty()) return out.copy_(values);
  torch::Tensor tmp = usable_buffer(scratch, values) && scratch->data_ptr() != in &&
                              scratch->data_ptr() != out.data_ptr()
                          ? *scratch
                          : cached_empty(values.sizes(), values.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "separable_filter", [&] {
    const int64_t passes = static_cast<int64_t>(bands.size());
    const scalar_t* src = values.data_ptr<scalar_t>();
    for (int64_t axis = 0; axis < passes; ++axis) {
      // The last pass writes out: even distance to the end -> out, odd -> scratch.
      scalar_t* dst = ((passes - 1 - axis) % 2 == 0 ? out : tmp).data_ptr<scalar_t>();
      torch::Tensor band = bands[axis].to(values.scalar_type()).contiguous();
      const int64_t n = values.size(axis + 1);
      TORCH_CHECK(band.size(0) == n, "band size does not match the axis");
      int64_t outer = 1, inner = 1;
      for (int64_t k = 0; k <= axis; ++k) outer *= values.size(k);
      for (int64_t k = axis + 2; k < values.dim(); ++k) inner *= values.size(k);
      if (inner == 1) {
        band_pass_last<scalar_t>(src, dst, band.data_ptr<scalar_t>(), outer, n, band.size(1));
      } else {
        band_pass_strided<scalar_t>(src, dst, band.data_ptr<scalar_t>(), outer, n, inner,
                                    band.size(1));
      }
      src = dst;
    }
  });
  return out;
}

// The block cache, seen from Python (SegDeepLib/crf/memory.py).
torch::Tensor empty_cached(std::vector<int64_t> sizes, c10::ScalarType dtype) {
  return cached_empty(sizes, dtype);
}

py::dict cache_stats() {
  const segdeep::CacheStats s = segdeep::BlockCache::instance().stats();
  py::dict out;
  out["held_bytes"] = s.held_bytes;
  out["held_blocks"] = s.held_blocks;
  out["in_use_bytes"] = s.in_use_bytes;
  out["in_use_blocks"] = s.in_use_blocks;
  out["peak_in_use_blocks"] = s.peak_in_use_blocks;
  out["limit_bytes"] = s.limit_bytes;
  out["fresh_blocks"] = s.fresh_blocks;
  out["reused_blocks"] = s.reused_blocks;
  out["split_blocks"] = s.split_blocks;
  return out;
}

void cache_set_limit(int64_t bytes) {
  TORCH_CHECK(bytes >= 0, "cache limit must be >= 0 bytes");
  segdeep::BlockCache::instance().set_limit(static_cast<size_t>(bytes));
}

void cache_release() { segdeep::BlockCache::instance().release_all(); }

void set_splat_budget(int64_t bytes) { g_splat_budget.store(bytes < 0 ? -1 : bytes); }

py::dict splat_info() {
  py::dict out;
  out["budget_bytes"] = splat_budget();
  out["last_copies"] = g_last_copies.load();
  return out;
}

void cache_set_debug(bool poison, int64_t min_block) {
  TORCH_CHECK(min_block >= 0, "min_block must be >= 0 bytes");
  segdeep::BlockCache::instance().set_debug(poison, static_cast<size_t>(min_block));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("build_lattice", &build_lattice, "build a permutohedral lattice of (N, d) features (CPU)",
        py::arg("features"), py::arg("weight_dtype"), py::arg("force_int64") = false);
  m.def("build_lattice_grid", &build_lattice_grid,
        "build the lattice of a voxel grid's appearance features (CPU)", py::arg("image"),
        py::arg("axis_scales"), py::arg("channel_scales"), py::arg("weight_dtype"),
        py::arg("force_int64") = false);
  m.def("lattice_filter", &lattice_filter,
        "splat-blur-slice (CPU); reverse = adjoint; optional per-point divisors before/after",
        py::arg("index"), py::arg("weight"), py::arg("neighbors"), py::arg("values"),
        py::arg("reverse"), py::arg("divide_before") = py::none(),
        py::arg("divide_after") = py::none(), py::arg("out") = py::none());
  m.def("separable_filter", &separable_filter,
        "banded separable filter (CPU); optional scratch and output buffers", py::arg("values"),
        py::arg("bands"), py::arg("scratch") = py::none(), py::arg("out") = py::none());
  m.def("empty_cached", &empty_cached,
        "uninitialised contiguous CPU tensor; large ones live in the block cache",
        py::arg("sizes"), py::arg("dtype"));
  m.def("cache_stats", &cache_stats, "block cache counters (bytes and blocks kept, in use, ...)");
  m.def("cache_set_limit", &cache_set_limit, "most bytes the cache keeps (0: keep none)",
        py::arg("bytes"));
  m.def("cache_release", &cache_release, "free every block the cache keeps");
  m.def("set_splat_budget", &set_splat_budget,
        "most bytes of per-thread splat copies (-1: SEGDEEP_CRF_SPLAT_MB, else 1 GiB)",
        py::arg("bytes"));
  m.def("splat_info", &splat_info, "splat budget in bytes and the copies the last splat used");
  m.def("cache_set_debug", &cache_set_debug,
        "tests: fill blocks with 0xff bytes when handed out; cache blocks from min_block bytes",
        py::arg("poison"), py::arg("min_block") = static_cast<int64_t>(segdeep::kCachedMin));
}
