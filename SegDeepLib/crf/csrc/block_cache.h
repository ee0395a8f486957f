// SegDeep CRF: a process-wide cache of large memory blocks, reused across CRF calls.
//
// A fresh large block costs page faults: glibc maps every block above 32 MB anew and trims freed
// heap memory, and the kernel faults in and zeroes each page on first touch (188 k faults, about
// 0.5 s of system time, per forward on a 128x256x256 volume). The C++ backend therefore takes its
// blocks of kCachedMin bytes or more (lattice tables, the build's key arrays and hash table, the
// filters' vertex buffers and scratch, and through empty_cached the mean-field buffers) from this
// cache: a block given back is kept, and the next request of about the same size gets it again,
// already faulted in.
//
// Policy: best fit among the kept blocks of size request .. request * 3/2 (page-rounded), else
// the head of the smallest bigger kept block, its tail unmapped (not on Windows: malloc); blocks
// not in use are kept up to a limit in bytes (set_limit; 0 disables the cache), the least
// recently given back freed first beyond it; a request that finds no block also frees the blocks
// idle for about two calls (evict_idle); release_all() frees every kept block. Blocks in use do
// not count towards the limit. Thread-safe (one mutex; a few hundred blocks, so the list is
// scanned). A reused block holds old data: every user writes a block fully before
// reading it (set_poison fills blocks with 0xff bytes when handed out, so that tests catch a read
// of unwritten memory).
//
// The instance is never destroyed: tensors may give their block back during interpreter exit.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#ifndef _WIN32
#include <sys/mman.h>
#endif

namespace segdeep {

constexpr size_t kCachedMin = size_t(1) << 16;  // default: smaller blocks come from malloc
constexpr size_t kPage = 4096;

// One block handed out: give it back with BlockCache::release.
struct Allocation {
  void* ptr = nullptr;
  size_t size = 0;    // bytes usable (at least the request)
  bool kept = false;  // a cache block (else malloc'd)
};

struct CacheStats {
  size_t held_bytes = 0;    // kept, not in use
  size_t held_blocks = 0;
  size_t in_use_bytes = 0;  // large blocks handed out and not given back yet
  size_t in_use_blocks = 0;
  size_t peak_in_use_blocks = 0;  // most large blocks in use at once (sets the idle horizon)
  size_t limit_bytes = 0;
  uint64_t fresh_blocks = 0;   // large blocks obtained from the system
  uint64_t reused_blocks = 0;  // requests served from the kept blocks
  uint64_t split_blocks = 0;   // of those, cut from a bigger kept block (its tail unmapped)
};

class BlockCache {
 public:
  static BlockCache& instance() {
    static BlockCache* cache = new BlockCache();  // intentionally leaked (see above)
    return *cache;
  }

  // A block of at least `bytes` bytes (uninitialised).
  Allocation acquire(size_t bytes) {
    Allocation a;
    if (bytes < min_block_ || bytes == 0) {
      a.size = bytes;
      a.ptr = std::malloc(bytes > 0 ? bytes : 1);
      if (a.ptr == nullptr) throw std::bad_alloc();
    } else {
      a.size = (bytes + kPage - 1) / kPage * kPage;
      a.kept = true;
      std::vector<Block> stale;
      a.ptr = take_kept(a.size, &a.size, stale);
      unmap(stale);
      if (a.ptr == nullptr) a.ptr = fresh(a.size);
    }
    if (poison_) std::memset(a.ptr, 0xff, a.size);
    return a;
  }

  void release(const Allocation& a) {
    if (!a.kept) {
      std::free(a.ptr);
      return;
    }
    std::vector<Block> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.in_use_bytes -= a.size;
      stats_.in_use_blocks -= 1;
      kept_.push_back(Block{a.ptr, a.size, ++clock_});
      stats_.held_bytes += a.size;
      evict_beyond(stats_.limit_bytes, evicted);
    }
    unmap(evicted);
  }

  void set_limit(size_t bytes) {
    std::vector<Block> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.limit_bytes = bytes;
      evict_beyond(bytes, evicted);
    }
    unmap(evicted);
  }

  void release_all() {
    std::vector<Block> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      evict_beyond(0, evicted);
    }
    unmap(evicted);
  }

  // Testing aids: fill every block with 0xff bytes when handed out (a read of unwritten memory
  // then shows), and take blocks from min_block bytes up (small volumes reach every call site).
  void set_debug(bool poison, size_t min_block) {
    poison_ = poison;
    min_block_ = min_block;
  }

  size_t min_block() const { return min_block_; }

  CacheStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    CacheStats s = stats_;
    s.held_blocks = kept_.size();
    return s;
  }

 private:
  struct Block {
    void* ptr;
    size_t size;
    uint64_t stamp;  // clock_ when it was given back (LRU order, idle time)
  };

  BlockCache() { stats_.limit_bytes = size_t(2) << 30; }

  // Best fit among the kept blocks of size want .. want * 3/2 (the most recent on ties). On a
  // miss, the blocks idle for long go to `stale`.
  void* take_kept(size_t want, size_t* size, std::vector<Block>& stale) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++clock_;
    size_t best = kept_.size();
    for (size_t i = 0; i < kept_.size(); ++i) {
      const Block& b = kept_[i];
      if (b.size < want || b.size > want + want / 2) continue;
      if (best == kept_.size() || b.size < kept_[best].size ||
          (b.size == kept_[best].size && b.stamp > kept_[best].stamp)) {
        best = i;
      }
    }
    bool split = false;
#ifndef _WIN32
    if (best == kept_.size()) {
      // No block of about the right size: cut the request from the smallest bigger kept block
      // and unmap its tail, rather than map a new block while that one sits idle (a call's
      // peak memory stays that of its largest live set, as without the cache).
      for (size_t i = 0; i < kept_.size(); ++i) {
        if (kept_[i].size > want && (best == kept_.size() || kept_[i].size < kept_[best].size)) best = i;
      }
      split = best != kept_.size();
    }
#endif
    if (best == kept_.size()) {
      evict_idle(stale);
      return nullptr;
    }
    Block b = kept_[best];
    kept_[best] = kept_.back();
    kept_.pop_back();
    stats_.held_bytes -= b.size;
    if (split) {
      stale.push_back(Block{static_cast<char*>(b.ptr) + want, b.size - want, 0});
      b.size = want;
      stats_.split_blocks += 1;
    }
    stats_.in_use_bytes += b.size;
    stats_.in_use_blocks += 1;
    stats_.peak_in_use_blocks = std::max(stats_.peak_in_use_blocks, stats_.in_use_blocks);
    stats_.reused_blocks += 1;
    *size = b.size;
    return b.ptr;
  }

  // A new block from the system; on failure the kept blocks are freed and it is tried again.
  void* fresh(size_t want) {
    void* p = map(want);
    if (p == nullptr) {
      release_all();
      p = map(want);
      if (p == nullptr) throw std::bad_alloc();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.in_use_bytes += want;
    stats_.in_use_blocks += 1;
    stats_.peak_in_use_blocks = std::max(stats_.peak_in_use_blocks, stats_.in_use_blocks);
    stats_.fresh_blocks += 1;
    return p;
  }

  // Moves the blocks no request has taken for about two calls' worth of cache events into `out`
  // (a call takes and gives back each of its blocks once, and holds most of them at once: about
  // 2 events per block, and at most peak_in_use_blocks blocks per call).
  // Done on a miss only, so repeated calls of one size never lose a block; a run of calls of
  // changing sizes (a grid search over bandwidths changes the lattice sizes) keeps the blocks
  // of the last sizes instead of filling the cache to its limit with blocks of earlier ones.
  void evict_idle(std::vector<Block>& out) {
    const uint64_t horizon = 4 * stats_.peak_in_use_blocks + 256;
    for (size_t i = 0; i < kept_.size();) {
      if (clock_ - kept_[i].stamp <= horizon) {
        ++i;
        continue;
      }
      out.push_back(kept_[i]);
      stats_.held_bytes -= kept_[i].size;
      kept_[i] = kept_.back();
      kept_.pop_back();
    }
  }

  // Moves the least recently given back blocks into `out` until at most `limit` bytes are kept.
  void evict_beyond(size_t limit, std::vector<Block>& out) {
    while (stats_.held_bytes > limit && !kept_.empty()) {
      size_t oldest = 0;
      for (size_t i = 1; i < kept_.size(); ++i) {
        if (kept_[i].stamp < kept_[oldest].stamp) oldest = i;
      }
      out.push_back(kept_[oldest]);
      stats_.held_bytes -= kept_[oldest].size;
      kept_[oldest] = kept_.back();
      kept_.pop_back();
    }
  }

  static void* map(size_t bytes) {
#ifdef _WIN32
    return std::malloc(bytes);
#else
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
#endif
  }

  static void unmap(const std::vector<Block>& blocks) {  // outside the lock
    for (const Block& b : blocks) {
#ifdef _WIN32
      std::free(b.ptr);
#else
      munmap(b.ptr, b.size);
#endif
    }
  }

  std::mutex mutex_;
  std::vector<Block> kept_;
  CacheStats stats_;
  uint64_t clock_ = 0;  // cache events (requests and give-backs of large blocks)
  std::atomic<bool> poison_{false};
  std::atomic<size_t> min_block_{kCachedMin};
};

// An uninitialised array of T from the cache (small ones from malloc), freed on destruction.
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t count) { allocate(count); }
  ~Buffer() { reset(); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& other) noexcept { swap(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    swap(other);
    return *this;
  }

  void allocate(size_t count) {  // drops the old contents
    reset();
    if (count == 0) return;
    block_ = BlockCache::instance().acquire(count * sizeof(T));
    data_ = static_cast<T*>(block_.ptr);
    size_ = count;
  }
  void reset() {
    if (data_ != nullptr) BlockCache::instance().release(block_);
    block_ = Allocation();
    data_ = nullptr;
    size_ = 0;
  }
  void swap(Buffer& other) noexcept {
    std::swap(block_, other.block_);
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }

 private:
  Allocation block_;
  T* data_ = nullptr;
  size_t size_ = 0;
};

// A Buffer that grows on push_back (capacity doubles; contents copied), like a std::vector of a
// trivially copyable T without value-initialisation.
template <typename T>
class GrowBuffer {
 public:
  void reserve(size_t count) {
    if (count <= buf_.size()) return;
    Buffer<T> bigger(count);
    if (size_ > 0) std::memcpy(static_cast<void*>(bigger.data()), buf_.data(), size_ * sizeof(T));
    buf_.swap(bigger);
  }
  void push_back(const T& value) {
    if (size_ == buf_.size()) reserve(size_ < 8 ? 16 : 2 * size_);
    buf_[size_++] = value;
  }
  void reset() {
    buf_.reset();
    size_ = 0;
  }
  T* data() { return buf_.data(); }
  const T* data() const { return buf_.data(); }
  size_t size() const { return size_; }
  T& operator[](size_t i) { return buf_[i]; }
  const T& operator[](size_t i) const { return buf_[i]; }

 private:
  Buffer<T> buf_;
  size_t size_ = 0;
};

}  // namespace segdeep
