// SPDX-License-Identifier: Apache-2.0
// Memory keys (L_Key / R_Key): unguessable 32-bit keys that still give O(1) lookup.
//
// Threat model. A remote peer (or any process that can put frames on a rail connected to one of our
// QPs) sends RDMA READ/WRITE/atomic requests naming an R_Key. It may know R_Keys we gave it, may
// watch keys come and go (register, deregister, register again) and may try keys at line rate. It
// must not be able to (a) derive the R_Key of an MR it was not given from the keys it has, (b)
// reuse an R_Key after the MR behind it was deregistered (the slot being reused by a new MR must
// not revive the old key), or (c) learn anything about other processes' keys (each table has its
// own secret). 32 bits bound what can be achieved: a blind guess hits a live key with probability
// live_keys / 2^32, and under RC a bad R_Key is answered with a remote access error that takes the
// requester's QP to ERR, so every guess costs the attacker a reconnection. Local L_Keys are
// checked the same way (a local bug must not touch another PD's memory) but are not secret.
//
// Construction. A key is the encryption, under a per-table secret, of plain = slot | gen <<
// index_bits, where slot is the MR's table index and gen a per-slot generation bumped on every
// release. The cipher is a balanced Feistel network on two 16-bit halves (8 rounds) whose round
// function is a 64-bit multiply-xorshift mix of the half, the round key and a tweak that separates
// L_Keys from R_Keys; a Feistel network is a permutation for any round function, so distinct
// (slot, gen) give distinct keys and decryption recovers the slot in a few nanoseconds (hot path:
// one decrypt, one array index, one compare). The round keys come from getrandom(2) once when
// the table is created. This is a keyed pseudo-random permutation, not a vetted block cipher: it
// hides the sequence structure of slots and generations (nothing sequential, no fixed bits), and
// with 32-bit keys the brute-force bound above dominates anyway.
//
// Staleness. A released slot's generation is incremented, so its old keys decrypt to a stale
// generation and are refused. Free slots are reused first-in first-out, so one slot's generation
// advances only once per `capacity` releases on average; a key can repeat only after its slot
// wrapped all 2^gen_bits generations (with the default 65536 MRs: 16 generation bits).
//
// Threading: not synchronised. The owner (the device context) serialises allocate/release with
// lookups; see mr.hpp.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "tbv/result.hpp"

namespace tbv::verbs {

enum class KeyKind : std::uint8_t { local = 0, remote = 1 };

/// The per-table secret: one 64-bit key per Feistel round.
struct KeySecret {
    static constexpr unsigned kRounds = 8;
    std::array<std::uint64_t, kRounds> round_keys{};

    /// Fresh secret from getrandom(2) (blocks only before the kernel's pool is initialised).
    static Result<KeySecret> from_getrandom();
};

/// The keyed 32-bit permutation.
class KeyCipher {
public:
    explicit KeyCipher(const KeySecret& secret) noexcept : secret_(secret) {}
    std::uint32_t encrypt(std::uint32_t plain, KeyKind kind) const noexcept;
    std::uint32_t decrypt(std::uint32_t key, KeyKind kind) const noexcept;

private:
    std::uint16_t round(unsigned i, std::uint16_t half, KeyKind kind) const noexcept;
    KeySecret secret_;
};

struct KeyPair {
    std::uint32_t slot = 0;
    std::uint32_t lkey = 0;
    std::uint32_t rkey = 0;
};

/// Fixed-capacity table from keys to slots. Storage is allocated once at creation; allocate,
/// release and lookup never allocate.
class KeyTable {
public:
    /// capacity in 1 .. 2^24 (so at least 8 generation bits remain), EINVAL otherwise.
    static Result<KeyTable> create(std::uint32_t capacity);
    static Result<KeyTable> create(std::uint32_t capacity, const KeySecret& secret);

    /// Takes a free slot and returns its keys; ENOMEM when every slot is in use.
    Result<KeyPair> allocate();
    /// Frees a slot: its keys become stale at once. Slots not in use are ignored.
    void release(std::uint32_t slot) noexcept;

    /// The slot a key names if the key is current, or kNoSlot.
    std::uint32_t lookup(std::uint32_t key, KeyKind kind) const noexcept {
        const std::uint32_t plain = cipher_.decrypt(key, kind);
        const std::uint32_t slot = plain & index_mask_;
        if (slot >= slots_.size()) {
            return kNoSlot;
        }
        const Slot& s = slots_[slot];
        return (s.in_use && s.gen == (plain >> index_bits_)) ? slot : kNoSlot;
    }

    std::uint32_t capacity() const noexcept { return static_cast<std::uint32_t>(slots_.size()); }
    std::uint32_t in_use() const noexcept { return in_use_; }
    unsigned index_bits() const noexcept { return index_bits_; }

    static constexpr std::uint32_t kNoSlot = 0xffffffffu;

private:
    struct Slot {
        std::uint32_t gen = 0;
        bool in_use = false;
    };
    KeyTable(std::uint32_t capacity, const KeySecret& secret);

    KeyCipher cipher_;
    std::vector<Slot> slots_;
    std::vector<std::uint32_t> free_;  ///< FIFO ring of free slot numbers
    std::uint32_t free_head_ = 0;
    std::uint32_t free_count_ = 0;
    std::uint32_t in_use_ = 0;
    unsigned index_bits_ = 0;
    std::uint32_t index_mask_ = 0;
    std::uint32_t gen_mask_ = 0;
};

}  // namespace tbv::verbs
